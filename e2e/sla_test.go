package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clickrec/clickrec/internal/testenv"
)

// slaReport is the part of `clickrec loadtest --json` this test judges.
type slaReport struct {
	Sent       *int64 `json:"sent"`
	Expected   *int64 `json:"expected"`
	Received   *int64 `json:"received"`
	Matched    *int64 `json:"matched"`
	Missing    *int64 `json:"missing"`
	Duplicates *int64 `json:"duplicates"`
	Unexpected *int64 `json:"unexpected"`
	Unknown    *int64 `json:"unknown"`
	Invalid    struct {
		Sent       int64 `json:"sent"`
		WithOutput int64 `json:"with_output"`
	} `json:"invalid"`
	Warmup struct {
		Sent       int64 `json:"sent"`
		Duplicates int64 `json:"duplicates"`
		Unexpected int64 `json:"unexpected"`
	} `json:"warmup"`
	Latency *struct {
		Count int64    `json:"count"`
		P50   *float64 `json:"p50"`
		P95   *float64 `json:"p95"`
		P99   *float64 `json:"p99"`
		Max   float64  `json:"max"`
	} `json:"latency_ms"`
	Drain struct {
		Complete bool    `json:"complete"`
		TookMs   float64 `json:"took_ms"`
		Detail   string  `json:"detail"`
	} `json:"drain"`
	Workers struct {
		Mode            string `json:"mode"`
		Count           int    `json:"count"`
		UnexpectedExits int    `json:"unexpected_exits"`
	} `json:"workers"`
	Model struct {
		Served         bool   `json:"served"`
		Source         string `json:"source"`
		Version        string `json:"version"`
		Items          int    `json:"items"`
		CatalogueItems int    `json:"catalogue_items"`
		CatalogueKnown int    `json:"catalogue_known"`
		Scorer         string `json:"scorer"`
	} `json:"model"`
	Redis struct {
		Used bool   `json:"used"`
		Addr string `json:"addr"`
	} `json:"redis"`
	Strategies map[string]int64 `json:"strategies"`
	ModelShare *float64         `json:"model_share"`
	CPU        struct {
		Load1Start  float64 `json:"load1_start"`
		Load1End    float64 `json:"load1_end"`
		CPUPressure float64 `json:"cpu_pressure_some_avg60"`
	} `json:"cpu"`
	SLA *struct {
		Passed   *bool    `json:"passed"`
		Breaches []string `json:"breaches"`
	} `json:"sla"`
	Interrupted bool     `json:"interrupted"`
	Error       string   `json:"error"`
	Plots       []string `json:"plots"`
}

// TestLoadtestSLA runs `clickrec loadtest` as users do — 500 clicks/s for
// 10 s against a hot path worker it spawns on fresh topics, serving the model
// the load test trains on the shop's history and writing Redis — and judges
// its JSON report: every on-time click exactly one recommendation (none
// missing, none duplicated), none for invalid clicks, nearly all from the
// model, and the latency SLA (p95 < 75 ms, p99 < 150 ms) through the tool's
// own exit code, unless the report shows the machine's CPUs starved during
// the run (see starvedPressure).
func TestLoadtestSLA(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	redisAddr := testenv.RedisAddr(t)
	dir := t.TempDir()
	report := filepath.Join(dir, "steady.json")
	ctx := testenv.Context(t, 100*time.Second)
	cmd := exec.CommandContext(ctx, clickrecBin, "loadtest", "--kafka-brokers", strings.Join(brokers, ","), "--redis-addr", redisAddr,
		"--rate", "500", "--duration", "10s", "--json", report, "--out", dir, "--drain-timeout", "30s", "--ready-timeout", "40s")
	// On the deadline: SIGTERM first, so the load test stops its worker and
	// deletes its topics; SIGKILL 15 s later.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	code := 0
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("clickrec loadtest: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("clickrec loadtest did not finish within the deadline (ran %v)\nstdout:\n%s\nstderr:\n%s", took.Round(time.Second), stdout.String(), stderr.String())
	}
	if code == 2 {
		t.Fatalf("clickrec loadtest: usage error (exit 2)\n%s", stderr.String())
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("no JSON report (exit %d): %v\nstdout:\n%s\nstderr:\n%s", code, err, stdout.String(), stderr.String())
	}
	var r slaReport
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("JSON report: %v", err)
	}
	for name, v := range map[string]*int64{"sent": r.Sent, "expected": r.Expected, "received": r.Received, "matched": r.Matched,
		"missing": r.Missing, "duplicates": r.Duplicates, "unexpected": r.Unexpected, "unknown": r.Unknown} {
		if v == nil {
			t.Fatalf("JSON report lacks %q:\n%s", name, b)
		}
	}
	if r.Latency == nil || r.Latency.P50 == nil || r.Latency.P95 == nil || r.Latency.P99 == nil || r.SLA == nil || r.SLA.Passed == nil {
		t.Fatalf("JSON report lacks latency_ms.p50/p95/p99 or sla.passed:\n%s", b)
	}
	p50, p95, p99 := *r.Latency.P50, *r.Latency.P95, *r.Latency.P99
	t.Logf("loadtest (exit %d, %v): sent %d, expected %d, matched %d, missing %d, duplicates %d, unexpected %d; "+
		"latency p50 %.1f ms, p95 %.1f ms, p99 %.1f ms, max %.1f ms; load %.1f → %.1f, CPU pressure %.0f%%; SLA passed %v %v",
		code, took.Round(100*time.Millisecond), *r.Sent, *r.Expected, *r.Matched, *r.Missing, *r.Duplicates, *r.Unexpected,
		p50, p95, p99, r.Latency.Max, r.CPU.Load1Start, r.CPU.Load1End, 100*r.CPU.CPUPressure, *r.SLA.Passed, r.SLA.Breaches)
	if r.Error != "" || r.Interrupted {
		t.Fatalf("the run failed: error %q, interrupted %v\nstderr:\n%s", r.Error, r.Interrupted, stderr.String())
	}

	// Exactly once, whatever the machine's load: these never depend on timing.
	if *r.Sent != 5000 || *r.Expected+r.Invalid.Sent != *r.Sent {
		t.Errorf("sent %d clicks (%d owed a recommendation, %d invalid); want 500/s × 10 s = 5000", *r.Sent, *r.Expected, r.Invalid.Sent)
	}
	if *r.Missing != 0 || *r.Duplicates != 0 || *r.Unexpected != 0 || *r.Unknown != 0 {
		t.Errorf("%d missing, %d duplicated, %d unexpected, %d unknown recommendations; want none", *r.Missing, *r.Duplicates, *r.Unexpected, *r.Unknown)
	}
	if *r.Matched != *r.Expected || *r.Received != *r.Matched || r.Latency.Count != *r.Matched {
		t.Errorf("matched %d of %d expected, received %d, latencies %d: every owed click must be answered once", *r.Matched, *r.Expected, *r.Received, r.Latency.Count)
	}
	if r.Invalid.WithOutput != 0 || r.Warmup.Duplicates != 0 || r.Warmup.Unexpected != 0 || r.Warmup.Sent == 0 {
		t.Errorf("invalid clicks answered %d; warm-up: %d sent, %d duplicated, %d unexpected", r.Invalid.WithOutput, r.Warmup.Sent, r.Warmup.Duplicates, r.Warmup.Unexpected)
	}
	if !r.Drain.Complete {
		t.Errorf("drain incomplete: %s", r.Drain.Detail)
	}
	if r.Workers.Mode != "spawned" || r.Workers.Count != 1 || r.Workers.UnexpectedExits != 0 {
		t.Errorf("workers: %+v; want 1 spawned worker that did not exit unexpectedly", r.Workers)
	}
	// The real pipeline: the model it trained knows the whole catalogue and
	// answers nearly every click (the others get the popularity fallback);
	// the worker wrote Redis.
	t.Logf("model %+v; strategies %v; redis %+v", r.Model, r.Strategies, r.Redis)
	if !r.Model.Served || r.Model.Source != "trained" || r.Model.Items == 0 || r.Model.CatalogueKnown != r.Model.CatalogueItems {
		t.Errorf("model %+v: want one trained on the shop's history that knows the whole catalogue", r.Model)
	}
	if r.ModelShare == nil || *r.ModelShare < 0.99 || r.Strategies["model"] == 0 {
		t.Errorf("model share %v (strategies %v): want nearly every recommendation from the model", r.ModelShare, r.Strategies)
	}
	if !r.Redis.Used || r.Redis.Addr != redisAddr {
		t.Errorf("redis %+v: want the workers writing %s", r.Redis, redisAddr)
	}
	if !(p50 > 0 && p50 <= p95 && p95 <= p99 && p99 <= r.Latency.Max) {
		t.Errorf("latency percentiles out of order: p50 %v, p95 %v, p99 %v, max %v", p50, p95, p99, r.Latency.Max)
	}
	for _, p := range r.Plots {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("plot %s: %v", p, err)
		}
	}
	if len(r.Plots) == 0 {
		t.Errorf("no plots written")
	}

	// The latency SLA: the tool judges it; its exit code and verdict must agree.
	if *r.SLA.Passed != (code == 0) {
		t.Errorf("sla.passed %v but exit code %d", *r.SLA.Passed, code)
	}
	if code != 0 {
		msg := fmt.Sprintf("clickrec loadtest exit %d: SLA breached: %v (p95 %.1f ms, p99 %.1f ms; load %.1f, CPU pressure %.0f%%)\nstdout:\n%s",
			code, r.SLA.Breaches, p95, p99, r.CPU.Load1End, 100*r.CPU.CPUPressure, stdout.String())
		if t.Failed() || r.CPU.CPUPressure < starvedPressure {
			t.Error(msg)
		} else {
			// Everything above held (none missing, none duplicated), and the
			// latency breach came while tasks waited for a CPU most of the
			// time: the 2 cores were starved (other jobs, parallel test
			// packages), which is no verdict on the pipeline. Say so loudly.
			t.Logf("LATENCY NOT JUDGED: CPU pressure %.0f%% ≥ %.0f%% during the run. %s", 100*r.CPU.CPUPressure, 100*starvedPressure, msg)
		}
	}
}

// starvedPressure is the share of time some task waited for a CPU (Linux
// PSI, as the load test reports it) above which a latency breach says more
// about the machine than about clickrec. Runs that met the SLA here saw 13–48 %.
const starvedPressure = 0.5
