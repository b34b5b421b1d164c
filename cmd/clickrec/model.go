package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/hotpath"
	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/model/onnx"
	"github.com/clickrec/clickrec/model/registry"
	"github.com/clickrec/clickrec/serving"
)

// modelFlags choose the model a worker serves and how it scores.
type modelFlags struct {
	file  string
	opts  serving.Options
	watch time.Duration
}

func (m *modelFlags) register(fs *cli.FlagSet) {
	fs.StringVar(&m.file, "model-dir", "", "serve the model saved in this directory (clickrec train --out) instead of the registry's current version")
	fs.Env("model-dir", "CLICKREC_MODEL_DIR")
	fs.StringVar(&m.opts.Scorer, "scorer", serving.ScorerONNX, "onnx (ONNX Runtime, the production path) or go (the pure-Go reference scorer)")
	fs.Env("scorer", "CLICKREC_SCORER")
	fs.StringVar(&m.opts.ORTLib, "onnxruntime-lib", "", "absolute path of libonnxruntime.so.1 (default: "+onnx.LibraryEnv+", then the file scripts/onnxruntime.sh installs)")
	fs.Env("onnxruntime-lib", onnx.LibraryEnv)
	fs.IntVar(&m.opts.ORTThreads, "onnxruntime-threads", 1, "ONNX Runtime intra-op threads per worker")
	fs.Env("onnxruntime-threads", "CLICKREC_ONNXRUNTIME_THREADS")
	fs.DurationVar(&m.watch, "model-check-interval", 30*time.Second, "how often to re-check the registry's current version besides listening on its pub/sub channel")
	fs.Env("model-check-interval", "CLICKREC_MODEL_CHECK_INTERVAL")
}

func (m *modelFlags) validate() error {
	if err := m.opts.Validate(); err != nil {
		return cli.Usagef("%v", err)
	}
	return cli.Positive("onnxruntime-threads", m.opts.ORTThreads)
}

// load serves --model-dir, or else follows the registry's current version:
// loaded now if there is one, and hot-swapped whenever it changes.
func (m *modelFlags) load(ctx context.Context, w *hotpath.Worker, rc *redis.Client, log *slog.Logger) error {
	if err := m.validate(); err != nil {
		return err
	}
	if m.file != "" {
		start := time.Now()
		s, err := m.opts.FromDir(m.file)
		if err != nil {
			return cli.Usagef("--model-dir %s: %v", m.file, err)
		}
		w.SetServing(s)
		log.Info("model loaded", "dir", m.file, "version", s.Version, "items", s.Model.NumItems(), "retrieval", s.Model.HasRetrieval(),
			"scorer", m.opts.Scorer, "took", time.Since(start).Round(time.Millisecond))
		return nil
	}
	if rc == nil {
		log.Warn("no model: neither --model-dir nor a Redis registry; serving the popularity fallback only")
		return nil
	}
	return m.opts.Follow(ctx, registry.New(rc), m.watch, w.SetServing, log)
}
