package main

import (
	"context"
	"strings"
	"testing"

	"github.com/clickrec/clickrec/internal/cli"
)

// TestHotpathNoModel: --no-model and --model-dir contradict each other, and
// the worker says so before it dials anything.
func TestHotpathNoModel(t *testing.T) {
	err := runHotpath(context.Background(), []string{"--kafka-brokers", "127.0.0.1:1", "--no-redis", "--no-model", "--model-dir", t.TempDir()})
	if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), "--no-model and --model-dir") {
		t.Fatalf("runHotpath = %v (exit code %d), want a usage error naming both flags", err, cli.ExitCode(err))
	}
}
