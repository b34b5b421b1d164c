package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clickrec/clickrec/internal/testenv"
)

// TestScaleOutAndIn runs `clickrec loadtest --scenario scale`: the hot path
// grows from 1 to 3 workers and shrinks back to 1 (clean SIGTERM stops) under
// 500 clicks/s, serving a model and writing Redis. Every click must be
// answered exactly once, and the partitions of a stopped worker must move at
// once: the clicks after each stop may not wait anywhere near the 10 s
// session timeout, which is what a static member that does not leave the
// group costs (measured before the hand-over: p99 21.9 s over a scale run).
func TestScaleOutAndIn(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	redisAddr := testenv.RedisAddr(t)
	dir := t.TempDir()
	report := filepath.Join(dir, "scale.json")
	ctx := testenv.Context(t, 120*time.Second)
	cmd := exec.CommandContext(ctx, clickrecBin, "loadtest", "--kafka-brokers", strings.Join(brokers, ","), "--redis-addr", redisAddr,
		"--scenario", "scale", "--rate", "500", "--duration", "16s", "--json", report, "--out", dir,
		"--drain-timeout", "30s", "--ready-timeout", "40s")
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("clickrec loadtest: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("clickrec loadtest did not finish within the deadline\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("no JSON report: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	var r struct {
		Expected, Matched, Missing, Duplicates, Unexpected int64
		Drain                                              struct {
			Complete bool   `json:"complete"`
			Detail   string `json:"detail"`
		} `json:"drain"`
		Workers struct {
			UnexpectedExits int `json:"unexpected_exits"`
		} `json:"workers"`
		Membership []struct {
			Action   string  `json:"action"`
			Instance string  `json:"instance"`
			AtS      float64 `json:"at_s"`
			Workers  int     `json:"workers"`
			After    *struct {
				Clicks  int64   `json:"clicks"`
				Missing int64   `json:"missing"`
				P99     float64 `json:"p99_ms"`
				Max     float64 `json:"max_ms"`
			} `json:"after"`
		} `json:"membership"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("JSON report: %v", err)
	}
	t.Logf("scale run: expected %d, matched %d, missing %d, duplicates %d; %s", r.Expected, r.Matched, r.Missing, r.Duplicates, stdout.String())
	if r.Expected == 0 || r.Matched != r.Expected || r.Missing != 0 || r.Duplicates != 0 || r.Unexpected != 0 {
		t.Errorf("expected %d, matched %d, missing %d, duplicated %d, unexpected %d: every click must be answered exactly once",
			r.Expected, r.Matched, r.Missing, r.Duplicates, r.Unexpected)
	}
	if !r.Drain.Complete || r.Workers.UnexpectedExits != 0 {
		t.Errorf("drain complete %v (%s), unexpected worker exits %d", r.Drain.Complete, r.Drain.Detail, r.Workers.UnexpectedExits)
	}
	var actions []string
	for _, m := range r.Membership {
		actions = append(actions, m.Action)
		if m.Action == "stop" && m.After != nil && m.After.Max > 5000 {
			t.Errorf("after stopping %s at %.1f s the clicks waited up to %.0f ms: its partitions were not handed over (a static member that does not leave keeps them for the session timeout)",
				m.Instance, m.AtS, m.After.Max)
		}
	}
	if got := strings.Join(actions, ","); got != "start,start,stop,stop" {
		t.Errorf("membership changes %q, want start,start,stop,stop (1 → 3 → 1 workers)", got)
	}
}
