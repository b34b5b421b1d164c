package main

import (
	"bytes"
	"context"
	"flag"
	"github.com/clickrec/clickrec/loadtest"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clickrec/clickrec/internal/cli"
)

// parseLoadtest runs the flag layer of loadtestCommand without running anything.
func parseLoadtest(t *testing.T, args ...string) (*loadtestFlags, error) {
	t.Helper()
	var f loadtestFlags
	fs := cli.NewFlagSet("loadtest", loadtestUsage)
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	f.set = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	return &f, f.apply()
}

func TestLoadtestScenarioDefaults(t *testing.T) {
	f, err := parseLoadtest(t, "--scenario", "chaos")
	if err != nil {
		t.Fatal(err)
	}
	if f.cfg.SLA.P95 != 0 || f.cfg.SLA.P99 != 0 || f.cfg.SLA.MaxMissing != 0 || f.cfg.SLA.MaxDuplicates != 0 {
		t.Fatalf("chaos SLA %+v: want no latency thresholds, 0 missing, 0 duplicates", f.cfg.SLA)
	}
	if f, err = parseLoadtest(t, "--scenario", "chaos", "--sla-p95", "500ms"); err != nil || f.cfg.SLA.P95 != 500*time.Millisecond {
		t.Fatalf("chaos with --sla-p95: %v %+v", err, f.cfg.SLA)
	}
	if f, err = parseLoadtest(t, "--scenario", "late"); err != nil || f.cfg.Shop.LateShare != 0.2 || f.cfg.Shop.InvalidShare != 0.05 {
		t.Fatalf("late: %v %+v", err, f.cfg.Shop)
	}
	if f, err = parseLoadtest(t, "--scenario", "late", "--late-share", "0.1"); err != nil || f.cfg.Shop.LateShare != 0.1 {
		t.Fatalf("late with --late-share: %v %+v", err, f.cfg.Shop)
	}
	if f, err = parseLoadtest(t); err != nil || f.cfg.SLA != loadtest.DefaultSLA() || f.cfg.Shop.LateShare != 0 || f.cfg.Group != "" {
		t.Fatalf("steady: %v %+v", err, f.cfg)
	}
	if f, err = parseLoadtest(t, "--spawn-workers", "0"); err != nil || f.cfg.Group != "clickrec-hotpath" {
		t.Fatalf("running workers: %v group %q", err, f.cfg.Group)
	}
	if f, err = parseLoadtest(t, "--scenario", "ramp", "--rates", "100, 2000,5e3"); err != nil || len(f.cfg.Rates) != 3 || f.cfg.Rates[2] != 5000 {
		t.Fatalf("ramp rates: %v %v", err, f.cfg.Rates)
	}
	// rolling and scale are judged on the whole SLA.
	if f, err = parseLoadtest(t, "--scenario", "rolling"); err != nil || f.cfg.SpawnWorkers != 2 || f.cfg.RestartEvery != 8*time.Second || f.cfg.SLA != loadtest.DefaultSLA() {
		t.Fatalf("rolling: %v workers %d every %v SLA %+v", err, f.cfg.SpawnWorkers, f.cfg.RestartEvery, f.cfg.SLA)
	}
	if f, err = parseLoadtest(t, "--scenario", "rolling", "--spawn-workers", "3", "--restart-every", "5s"); err != nil || f.cfg.SpawnWorkers != 3 || f.cfg.RestartEvery != 5*time.Second {
		t.Fatalf("rolling with flags: %v %+v", err, f.cfg)
	}
	// redis-outage pauses Redis for 5 s in the middle of a steady run, and
	// checks the feature store after it, as every run that writes Redis.
	if f, err = parseLoadtest(t, "--scenario", "redis-outage", "--duration", "30s"); err != nil || f.cfg.RedisOutage != 0 || f.cfg.CheckRedis != loadtest.CheckAuto {
		t.Fatalf("redis-outage: %v %+v", err, f.cfg)
	}
	if f, err = parseLoadtest(t, "--scenario", "chaos", "--redis-outage", "3s", "--redis-outage-at", "10s", "--check-redis=false"); err != nil ||
		f.cfg.RedisOutage != 3*time.Second || f.cfg.RedisOutageAt != 10*time.Second || f.cfg.CheckRedis != loadtest.CheckOff {
		t.Fatalf("chaos with a Redis outage: %v %+v", err, f.cfg)
	}
	if f, err = parseLoadtest(t, "--spawn-workers", "0", "--check-redis"); err != nil || f.cfg.CheckRedis != loadtest.CheckOn {
		t.Fatalf("running workers with --check-redis: %v %+v", err, f.cfg)
	}
	if f, err = parseLoadtest(t, "--scenario", "scale"); err != nil || f.cfg.SpawnWorkers != 1 || f.cfg.ScaleTo != 3 || f.cfg.SLA != loadtest.DefaultSLA() {
		t.Fatalf("scale: %v workers %d to %d SLA %+v", err, f.cfg.SpawnWorkers, f.cfg.ScaleTo, f.cfg.SLA)
	}
}

func TestLoadtestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--scenario", "soak"},
		{"--rate", "0"},
		{"--scenario", "ramp", "--rates", "10,x"},
		{"--scenario", "chaos", "--spawn-workers", "0"},
		{"--scenario", "rolling", "--spawn-workers", "0"},
		{"--scenario", "rolling", "--restart-every", "0s"},
		{"--scenario", "scale", "--spawn-workers", "0"},
		{"--scenario", "scale", "--scale-to", "1"},
		{"--scenario", "scale", "--spawn-workers", "3", "--scale-to", "3"},
		{"--scenario", "burst", "--source", "taobao"},
		{"--topic-prefix", "a b"},
		{"--late-share", "0.7", "--invalid-share", "0.5"},
		{"--no-such-flag"},
		{"--source", "taobao", "--taobao-file", "/nonexistent/UserBehavior.csv"},
		// What the workers serve and write.
		{"--no-model", "--model-dir", "."},
		{"--no-model", "--worker-flag=--model-dir=."},
		{"--model-dir", ".", "--worker-flag=--model-dir=."},
		{"--model-dir", ".", "--spawn-workers", "0"},
		{"--model-dir", "/nonexistent/model"},
		{"--worker-flag=--no-redis"},
		{"--worker-flag=--no-model"},
		{"--train-clicks", "-1"},
		{"--train-clicks", "1000", "--no-model"},
		{"--sla-min-model-share", "1.5"},
		{"--redis-addr", ""},
		// The feature-store check and the Redis outage need a Redis.
		{"--check-redis", "--no-redis"},
		{"--scenario", "redis-outage", "--no-redis"},
		{"--redis-outage", "5s", "--no-redis"},
		{"--redis-outage", "5s", "--duration", "5s"},
		{"--redis-outage", "-1s"},
		{"--redis-outage-at", "3s"},
		{"--redis-outage", "1500us"},
		{"--check-redis-timeout", "0s"},
		{"--check-redis=maybe"},
		{"--warmup-max", "0s"},
		// Freshness: new items only in the synthetic shop, judged only with them.
		{"--new-items", "-1"},
		{"--sla-max-freshness", "10s"},
		{"--new-items", "20", "--sla-max-freshness", "-1s"},
	} {
		err := loadtestCommand(context.Background(), args, &bytes.Buffer{})
		if cli.ExitCode(err) != 2 {
			t.Errorf("%v: %v (exit code %d), want a usage error", args, err, cli.ExitCode(err))
		}
	}
}

// TestNewItemsFlags: --new-items reaches the configuration; with the
// Taobao replay it is a usage error naming the flag.
func TestNewItemsFlags(t *testing.T) {
	f, err := parseLoadtest(t, "--new-items", "20", "--sla-max-freshness", "15s")
	if err != nil || f.cfg.NewItems != 20 || f.cfg.SLA.MaxFreshness != 15*time.Second {
		t.Fatalf("--new-items 20 --sla-max-freshness 15s: %v, %d new items, max %v", err, f.cfg.NewItems, f.cfg.SLA.MaxFreshness)
	}
	if f, err = parseLoadtest(t); err != nil || f.cfg.NewItems != 0 || f.cfg.SLA.MaxFreshness != 0 {
		t.Fatalf("default: %v %d %v", err, f.cfg.NewItems, f.cfg.SLA.MaxFreshness)
	}
	err = loadtestCommand(context.Background(), []string{"--source", "taobao", "--new-items", "20"}, &bytes.Buffer{})
	if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), "--new-items 20 needs --source synthetic") {
		t.Fatalf("--source taobao --new-items 20: %v (exit code %d), want a usage error naming --new-items", err, cli.ExitCode(err))
	}
}

// TestModelAndRedisFlags: by default the spawned workers serve a trained
// model and write the Redis at CLICKREC_REDIS_ADDR (or 127.0.0.1:6379); the
// model share is judged at 0.5, for running workers only when asked.
func TestLoadtestModelAndRedisFlags(t *testing.T) {
	f, err := parseLoadtest(t)
	if err != nil {
		t.Fatal(err)
	}
	c := f.cfg
	if c.NoModel || c.NoRedis || c.ModelDir != "" || c.Redis.Addr != "127.0.0.1:6379" || c.SLA.MinModelShare != loadtest.DefaultMinModelShare || c.ExpectModel {
		t.Fatalf("defaults: %+v", c)
	}
	t.Setenv("CLICKREC_REDIS_ADDR", "10.0.0.1:6380")
	if f, err = parseLoadtest(t); err != nil || f.cfg.Redis.Addr != "10.0.0.1:6380" {
		t.Fatalf("CLICKREC_REDIS_ADDR: %v %q", err, f.cfg.Redis.Addr)
	}
	if f, err = parseLoadtest(t, "--redis-addr", "127.0.0.1:7000", "--redis-db", "3"); err != nil || f.cfg.Redis.Addr != "127.0.0.1:7000" || f.cfg.Redis.DB != 3 {
		t.Fatalf("--redis-addr: %v %+v", err, f.cfg.Redis)
	}
	dir := t.TempDir()
	if f, err = parseLoadtest(t, "--model-dir", dir, "--no-redis"); err != nil || f.cfg.ModelDir != dir || !f.cfg.NoRedis {
		t.Fatalf("--model-dir --no-redis: %v %+v", err, f.cfg)
	}
	if f, err = parseLoadtest(t, "--no-model", "--no-redis"); err != nil || !f.cfg.NoModel || !f.cfg.NoRedis {
		t.Fatalf("--no-model --no-redis: %v", err)
	}
	if f, err = parseLoadtest(t, "--worker-flag=--model-dir="+dir); err != nil || !slices.Contains(f.cfg.WorkerFlags, "--model-dir="+dir) {
		t.Fatalf("--worker-flag --model-dir: %v %v", err, f.cfg.WorkerFlags)
	}
	if f, err = parseLoadtest(t, "--spawn-workers", "0"); err != nil || f.cfg.ExpectModel {
		t.Fatalf("running workers: %v, expect model %v", err, f.cfg.ExpectModel)
	}
	if f, err = parseLoadtest(t, "--spawn-workers", "0", "--sla-min-model-share", "0.9"); err != nil || !f.cfg.ExpectModel || f.cfg.SLA.MinModelShare != 0.9 {
		t.Fatalf("running workers with --sla-min-model-share: %v %+v", err, f.cfg.SLA)
	}
}

// TestRedisDownFailsFast: an unreachable Redis stops the run before
// anything else, with one line that says what to do.
func TestLoadtestRedisDownFailsFast(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	start := time.Now()
	err = loadtestCommand(context.Background(), []string{"--redis-addr", addr, "--out", t.TempDir()}, &bytes.Buffer{})
	if cli.ExitCode(err) != 2 {
		t.Fatalf("Command = %v (exit code %d), want a usage error", err, cli.ExitCode(err))
	}
	msg := err.Error()
	for _, want := range []string{addr, "scripts/redis.sh start", "--no-redis"} {
		if !strings.Contains(msg, want) || strings.Contains(msg, "\n") {
			t.Errorf("message %q: want one line naming %q", msg, want)
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v to notice", took)
	}
}
