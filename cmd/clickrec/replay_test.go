package main

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/clickrec/clickrec/internal/cli"
)

func TestIsReplay(t *testing.T) {
	f := func(args []string, want bool, rest []string) {
		t.Helper()
		got, r := isReplay(args)
		if got != want || !slices.Equal(r, rest) {
			t.Fatalf("isReplay(%q) = %v, %q; want %v, %q", args, got, r, want, rest)
		}
	}
	f([]string{"--train", "x"}, false, []string{"--train", "x"})
	f([]string{"--json", "-", "--replay", "--clicks", "a"}, true, []string{"--json", "-", "--clicks", "a"})
	f([]string{"--replay=true", "--clicks", "a"}, true, []string{"--clicks", "a"})
	f([]string{"--replay=false", "--train", "x"}, false, []string{"--train", "x"})
}

func TestReplayNeedsClicks(t *testing.T) {
	err := runEval(context.Background(), []string{"--replay", "--json", "-"})
	var u *cli.UsageError
	if err == nil || !errors.As(err, &u) {
		t.Fatalf("got %v, want a usage error", err)
	}
}
