package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/hotpath"
	"github.com/clickrec/clickrec/internal/cli"
)

// modelFlags choose the model a worker serves.
type modelFlags struct {
	file string
}

func (m *modelFlags) register(fs *cli.FlagSet) {
	fs.StringVar(&m.file, "model-file", "", "serve the model saved at this path (clickrec train --out); empty serves the popularity fallback until a model is registered")
	fs.Env("model-file", "CLICKREC_MODEL_FILE")
}

func (m *modelFlags) load(ctx context.Context, w *hotpath.Worker, rc *redis.Client, reg prometheus.Registerer, log *slog.Logger) error {
	if m.file != "" {
		return cli.Usagef("--model-file: loading saved models is not wired into this build yet")
	}
	return nil
}
