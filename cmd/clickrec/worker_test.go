package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.temporal.io/sdk/client"

	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/workflows"
)

func TestWorkerUsageErrors(t *testing.T) {
	down := []string{"--temporal-addr", "127.0.0.1:1", "--temporal-dial-timeout", "2s"}
	for name, args := range map[string][]string{
		"no brokers":        {"worker"},
		"bad scorer":        {"worker", "--kafka-brokers", "127.0.0.1:9092", "--eval-scorer", "gpu"},
		"offset too large":  {"worker", "--kafka-brokers", "127.0.0.1:9092", "--retrain-offset", "25h"},
		"bad tolerance":     {"worker", "--kafka-brokers", "127.0.0.1:9092", "--gate-tolerance", "1.5"},
		"bad holdout":       {"worker", "--kafka-brokers", "127.0.0.1:9092", "--holdout-fraction", "0.6"},
		"zero interval":     {"worker", "--kafka-brokers", "127.0.0.1:9092", "--refresh-every", "0s"},
		"unreachable":       append([]string{"worker", "--kafka-brokers", "127.0.0.1:9092"}, down...),
		"no verb":           {"workflows"},
		"unknown verb":      {"workflows", "train"},
		"trigger no server": append([]string{"workflows", "refresh"}, down...),
		"bad top":           {"workflows", "refresh", "--popularity-top", "0"},
	} {
		if code := run(args); code != 2 {
			t.Errorf("%s: exit %d, want 2", name, code)
		}
	}
	f := &workerFlags{temporal: temporalFlags{addr: "127.0.0.1:1", namespace: "default", queue: "q", dialTimeout: time.Second}}
	_, err := f.temporal.dial(context.Background(), slog.New(slog.DiscardHandler))
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "--temporal-addr") {
		t.Fatalf("unreachable Temporal: %v; want one line naming --temporal-addr", err)
	}
}

// TestWorkerDevServer runs `clickrec worker` against the Temporal dev server
// (embedded Kafka, real Redis), triggers a refresh and a drift check with
// `clickrec workflows`, reads /healthz and /metrics, and stops it.
func TestWorkerDevServer(t *testing.T) {
	addr := testenv.TemporalAddr(t)
	redisAddr := testenv.RedisAddr(t)
	kc := kafkautil.Config{Partitions: 2, ReplicationFactor: 1, DialTimeout: 5 * time.Second}
	e, err := kafkautil.StartEmbedded(&kc, kafkautil.DefaultTopics)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	rc := redis.NewClient(&redis.Options{Addr: redisAddr, DB: 13})
	defer rc.Close()
	t.Cleanup(func() { rc.FlushDB(context.Background()) })

	queue, prefix := testenv.Name("clickrec-cmd"), testenv.Name("clickrec-cmd")
	f, err := parseWorkerFlags([]string{"--temporal-addr", addr, "--task-queue", queue, "--schedule-prefix", prefix,
		"--kafka-brokers", kc.Brokers[0], "--redis-addr", redisAddr, "--redis-db", "13", "--http-addr", "127.0.0.1:0",
		"--work-dir", t.TempDir(), "--stop-timeout", "5s", "--log-level", "warn"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := client.Dial(client.Options{HostPort: addr})
		if err != nil {
			return
		}
		defer c.Close()
		for _, id := range []string{prefix + "-retrain-nightly", prefix + "-refresh-popularity", prefix + "-check-drift"} {
			_ = c.ScheduleClient().GetHandle(context.Background(), id).Delete(context.Background())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	httpAddr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- serveWorker(ctx, f, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), func(a string) { httpAddr <- a })
	}()
	var base string
	select {
	case a := <-httpAddr:
		base = "http://" + a
	case err := <-done:
		t.Fatalf("worker stopped: %v", err)
	}
	get := func(path string) string {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s %s", path, resp.Status, b)
		}
		return string(b)
	}
	if got := get("/healthz"); got != "ok\n" {
		t.Fatalf("/healthz = %q", got)
	}

	var out, errOut bytes.Buffer
	workflowsOut, workflowsErr = &out, &errOut
	defer func() { workflowsOut, workflowsErr = os.Stdout, os.Stderr }()
	common := []string{"--temporal-addr", addr, "--task-queue", queue, "--log-level", "warn"}
	if code := run(append([]string{"workflows", "refresh"}, common...)); code != 0 {
		t.Fatalf("workflows refresh: exit %d: %s", code, errOut.String())
	}
	var pop workflows.PopularityOutput
	if err := json.Unmarshal(out.Bytes(), &pop); err != nil {
		t.Fatalf("workflows refresh printed %q: %v", out.String(), err)
	}
	if pop.Stored || pop.Events != 0 || !strings.HasPrefix(pop.Version, "pop-") {
		t.Fatalf("refresh of an empty topic: %+v", pop)
	}
	if !strings.Contains(errOut.String(), "/namespaces/default/workflows/clickrec-refresh-popularity-manual-") {
		t.Fatalf("no UI link in %q", errOut.String())
	}
	out.Reset()
	if code := run(append([]string{"workflows", "drift-check"}, common...)); code != 0 {
		t.Fatalf("workflows drift-check: exit %d: %s", code, errOut.String())
	}
	var dr workflows.DriftResult
	if err := json.Unmarshal(out.Bytes(), &dr); err != nil || dr.Action != workflows.ActionNone || dr.Detail != "no version serves" {
		t.Fatalf("drift-check printed %q (%v)", out.String(), err)
	}

	metrics := get("/metrics")
	for _, want := range []string{
		`recsys_workflow_runs_total{result="completed",workflow="RefreshPopularity"} 1`,
		`recsys_workflow_runs_total{result="completed",workflow="CheckDrift"} 1`,
		`recsys_workflow_activities_total{activity="RefreshPopularityTable",result="completed"} 1`,
		`recsys_workflow_activities_total{activity="MeasureDrift",result="completed"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("worker shutdown: %v", err)
	}
}
