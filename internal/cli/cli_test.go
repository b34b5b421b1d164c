package cli

import (
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

func TestEnvFallback(t *testing.T) {
	newFS := func() (*FlagSet, *string, *time.Duration) {
		fs := NewFlagSet("x", "test")
		s := fs.String("brokers", "", "brokers")
		fs.Env("brokers", "CLICKREC_TEST_BROKERS")
		d := fs.Duration("ttl", time.Hour, "ttl")
		fs.Env("ttl", "CLICKREC_TEST_TTL")
		return fs, s, d
	}
	t.Setenv("CLICKREC_TEST_BROKERS", "env:9092")
	t.Setenv("CLICKREC_TEST_TTL", "5m")
	fs, s, d := newFS()
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if *s != "env:9092" || *d != 5*time.Minute {
		t.Fatalf("env not applied: %q %v", *s, *d)
	}
	fs, s, _ = newFS()
	if err := fs.Parse([]string{"--brokers", "flag:9092"}); err != nil {
		t.Fatal(err)
	}
	if *s != "flag:9092" {
		t.Fatalf("flag did not win over env: %q", *s)
	}
	t.Setenv("CLICKREC_TEST_TTL", "soon")
	fs, _, _ = newFS()
	err := fs.Parse(nil)
	if ExitCode(err) != 2 || err == nil || !strings.Contains(err.Error(), "CLICKREC_TEST_TTL") {
		t.Fatalf("bad env value: got %v (exit %d), want a usage error naming the variable", err, ExitCode(err))
	}
}

func TestUsageErrors(t *testing.T) {
	fs := NewFlagSet("x", "test")
	fs.Int("n", 1, "n")
	for _, args := range [][]string{{"--nope"}, {"--n", "abc"}, {"stray"}} {
		err := fs.Parse(args)
		if ExitCode(err) != 2 {
			t.Fatalf("%v: exit %d (%v), want 2", args, ExitCode(err), err)
		}
	}
	if ExitCode(errors.New("boom")) != 1 || ExitCode(nil) != 0 || ExitCode(flag.ErrHelp) != 0 {
		t.Fatal("exit codes")
	}
}
