package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/drift"
	"github.com/clickrec/clickrec/hotpath"
	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/model/onnx"
	"github.com/clickrec/clickrec/model/registry"
)

// modelFlags choose the model a worker serves and how it scores.
type modelFlags struct {
	file       string
	scorer     string
	ortLib     string
	ortThreads int
	watch      time.Duration
}

func (m *modelFlags) register(fs *cli.FlagSet) {
	fs.StringVar(&m.file, "model-dir", "", "serve the model saved in this directory (clickrec train --out) instead of the registry's current version")
	fs.Env("model-dir", "CLICKREC_MODEL_DIR")
	fs.StringVar(&m.scorer, "scorer", "onnx", "onnx (ONNX Runtime, the production path) or go (the pure-Go reference scorer)")
	fs.Env("scorer", "CLICKREC_SCORER")
	fs.StringVar(&m.ortLib, "onnxruntime-lib", "", "absolute path of libonnxruntime.so.1 (default: "+onnx.LibraryEnv+", then the file scripts/onnxruntime.sh installs)")
	fs.Env("onnxruntime-lib", onnx.LibraryEnv)
	fs.IntVar(&m.ortThreads, "onnxruntime-threads", 1, "ONNX Runtime intra-op threads per worker")
	fs.Env("onnxruntime-threads", "CLICKREC_ONNXRUNTIME_THREADS")
	fs.DurationVar(&m.watch, "model-check-interval", 30*time.Second, "how often to re-check the registry's current version besides listening on its pub/sub channel")
	fs.Env("model-check-interval", "CLICKREC_MODEL_CHECK_INTERVAL")
}

func (m *modelFlags) validate() error {
	if m.scorer != "onnx" && m.scorer != "go" {
		return cli.Usagef("--scorer %q: want onnx or go", m.scorer)
	}
	if m.scorer == "onnx" {
		if _, err := onnx.LibraryPath(m.ortLib); err != nil {
			return cli.Usagef("--scorer onnx: %v (or use --scorer go)", err)
		}
	}
	return cli.Positive("onnxruntime-threads", m.ortThreads)
}

// serving builds what the hot path scores with from a model and its ONNX graph
// (exported on the fly when the registry has none). The ONNX session is warmed
// before it is returned.
func (m *modelFlags) serving(version string, mdl *model.Model, onnxBytes []byte) (*hotpath.Serving, error) {
	mdl.Version = version
	if m.scorer == "go" {
		s, err := model.NewScorer(mdl)
		if err != nil {
			return nil, err
		}
		return &hotpath.Serving{Version: version, Model: mdl, Scorer: s}, nil
	}
	if len(onnxBytes) > 0 {
		// A graph of the other contract (a registry version exported before
		// the model had retrieval tables, or without them) is exported anew.
		if md, err := onnx.ReadMetadata(onnxBytes); err == nil && (md.Format == onnx.FormatRank) != mdl.HasRetrieval() {
			onnxBytes = nil
		}
	}
	if len(onnxBytes) == 0 {
		var err error
		if onnxBytes, err = onnx.Export(mdl, onnx.ExportOptions{}); err != nil {
			return nil, fmt.Errorf("exporting %s to ONNX: %w", version, err)
		}
	}
	// NewScorer checks that the graph was exported for this item table.
	s, err := onnx.NewScorer(onnxBytes, onnx.ScorerOptions{LibraryPath: m.ortLib, IntraOpThreads: m.ortThreads, Model: mdl})
	if err != nil {
		return nil, fmt.Errorf("loading %s into ONNX Runtime: %w", version, err)
	}
	// ONNX Runtime holds its own copy of the factors; the worker needs only
	// the ids, the prior and the retrieval tables. At 1M items this and
	// returning the garbage of loading and exporting (the file, the graph's
	// bytes) halve the worker's memory.
	mdl.Factors, mdl.Projection = nil, nil
	debug.FreeOSMemory()
	return &hotpath.Serving{Version: version, Model: mdl, Scorer: s}, nil
}

// load serves --model-dir, or else follows the registry's current version:
// loaded now if there is one, and hot-swapped whenever it changes.
func (m *modelFlags) load(ctx context.Context, w *hotpath.Worker, rc *redis.Client, reg prometheus.Registerer, log *slog.Logger) error {
	if err := m.validate(); err != nil {
		return err
	}
	if m.file != "" {
		start := time.Now()
		mdl, md, err := model.Load(m.file)
		if err != nil {
			return cli.Usagef("--model-dir %s: %v", m.file, err)
		}
		v := md.Version
		if v == "" {
			v = "file:" + m.file
		}
		s, err := m.serving(v, mdl, nil)
		if err != nil {
			return err
		}
		w.SetServing(s)
		log.Info("model loaded", "dir", m.file, "version", v, "items", mdl.NumItems(), "retrieval", mdl.HasRetrieval(),
			"scorer", m.scorer, "took", time.Since(start).Round(time.Millisecond))
		return nil
	}
	if rc == nil {
		log.Warn("no model: neither --model-dir nor a Redis registry; serving the popularity fallback only")
		return nil
	}
	r := registry.New(rc)
	loadVersion := func(ctx context.Context, version string) error {
		start := time.Now()
		v, err := r.Get(ctx, version)
		if err == nil {
			mdl := new(model.Model)
			if err = mdl.UnmarshalBinary(v.Model); err == nil {
				var s *hotpath.Serving
				if s, err = m.serving(version, mdl, v.ONNX); err == nil {
					if len(v.Meta.Reference) > 0 {
						var ref drift.ReferenceSet
						if jerr := json.Unmarshal(v.Meta.Reference, &ref); jerr != nil {
							log.Warn("the model's drift reference profiles are unreadable; no live profiles", "version", version, "err", jerr)
						} else {
							s.Reference = ref
						}
					}
					w.SetServing(s)
					log.Info("model loaded from the registry; swapping at the next batch", "version", version, "items", mdl.NumItems(), "took", time.Since(start).Round(time.Millisecond))
					return nil
				}
			}
		}
		log.Error("loading the registry's current model failed; keeping the one served", "version", version, "err", err)
		return err
	}
	// Load the current version before the worker starts, so its first clicks
	// are scored by the model; then follow promotions and rollbacks.
	cur, err := r.Current(ctx)
	if err != nil {
		return err
	}
	loaded := ""
	if cur != "" && loadVersion(ctx, cur) == nil {
		loaded = cur
	}
	if cur == "" {
		log.Warn("the registry has no current model yet; serving the popularity fallback until one is promoted")
	}
	go r.Watch(ctx, m.watch, loaded, loadVersion)
	return nil
}
