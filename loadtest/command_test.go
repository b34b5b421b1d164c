package loadtest

import (
	"bytes"
	"context"
	"flag"
	"testing"
	"time"

	"github.com/clickrec/clickrec/internal/cli"
)

// parse runs the flag layer of Command without running anything.
func parse(t *testing.T, args ...string) (*flags, error) {
	t.Helper()
	var f flags
	fs := cli.NewFlagSet("loadtest", usageText)
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	f.set = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	return &f, f.apply()
}

func TestScenarioDefaults(t *testing.T) {
	f, err := parse(t, "--scenario", "chaos")
	if err != nil {
		t.Fatal(err)
	}
	if f.cfg.SLA.P95 != 0 || f.cfg.SLA.P99 != 0 || f.cfg.SLA.MaxMissing != 0 || f.cfg.SLA.MaxDuplicates != 0 {
		t.Fatalf("chaos SLA %+v: want no latency thresholds, 0 missing, 0 duplicates", f.cfg.SLA)
	}
	if f, err = parse(t, "--scenario", "chaos", "--sla-p95", "500ms"); err != nil || f.cfg.SLA.P95 != 500*time.Millisecond {
		t.Fatalf("chaos with --sla-p95: %v %+v", err, f.cfg.SLA)
	}
	if f, err = parse(t, "--scenario", "late"); err != nil || f.cfg.Shop.LateShare != 0.2 || f.cfg.Shop.InvalidShare != 0.05 {
		t.Fatalf("late: %v %+v", err, f.cfg.Shop)
	}
	if f, err = parse(t, "--scenario", "late", "--late-share", "0.1"); err != nil || f.cfg.Shop.LateShare != 0.1 {
		t.Fatalf("late with --late-share: %v %+v", err, f.cfg.Shop)
	}
	if f, err = parse(t); err != nil || f.cfg.SLA != DefaultSLA() || f.cfg.Shop.LateShare != 0 || f.cfg.Group != "" {
		t.Fatalf("steady: %v %+v", err, f.cfg)
	}
	if f, err = parse(t, "--spawn-workers", "0"); err != nil || f.cfg.Group != "clickrec-hotpath" {
		t.Fatalf("running workers: %v group %q", err, f.cfg.Group)
	}
	if f, err = parse(t, "--scenario", "ramp", "--rates", "100, 2000,5e3"); err != nil || len(f.cfg.Rates) != 3 || f.cfg.Rates[2] != 5000 {
		t.Fatalf("ramp rates: %v %v", err, f.cfg.Rates)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--scenario", "soak"},
		{"--rate", "0"},
		{"--scenario", "ramp", "--rates", "10,x"},
		{"--scenario", "chaos", "--spawn-workers", "0"},
		{"--scenario", "burst", "--source", "taobao"},
		{"--topic-prefix", "a b"},
		{"--late-share", "0.7", "--invalid-share", "0.5"},
		{"--no-such-flag"},
		{"--source", "taobao", "--taobao-file", "/nonexistent/UserBehavior.csv"},
	} {
		err := Command(context.Background(), args, &bytes.Buffer{})
		if cli.ExitCode(err) != 2 {
			t.Errorf("%v: %v (exit code %d), want a usage error", args, err, cli.ExitCode(err))
		}
	}
}
