// Package serving turns a model — a version in the registry, or a directory
// written by `clickrec train` — into what the hot path scores with
// (hotpath.Serving): the scorer (ONNX Runtime, the production path, or the
// pure-Go reference), the graph checked against the model's item table, and
// the drift reference the live profiles are counted against. Follow keeps a
// worker serving the registry's current version as it is promoted or rolled
// back.
package serving

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/clickrec/clickrec/drift"
	"github.com/clickrec/clickrec/hotpath"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/model/onnx"
	"github.com/clickrec/clickrec/model/registry"
)

// Scorer kinds.
const (
	ScorerONNX = "onnx" // ONNX Runtime
	ScorerGo   = "go"   // the pure-Go reference scorer
)

// Options say how a model is scored.
type Options struct {
	Scorer     string // ScorerONNX or ScorerGo
	ORTLib     string // libonnxruntime.so.1; empty: onnx.LibraryEnv, then the installed one
	ORTThreads int    // ONNX Runtime intra-op threads; 0 means 1
	// CacheDir: where Follow keeps the version it served last (see
	// cache.go); empty: no cache.
	CacheDir string
}

// Validate checks the options and says what to fix.
func (o Options) Validate() error {
	switch o.Scorer {
	case ScorerGo:
	case ScorerONNX:
		if _, err := onnx.LibraryPath(o.ORTLib); err != nil {
			return fmt.Errorf("scorer onnx: %w (or use the go scorer)", err)
		}
	default:
		return fmt.Errorf("scorer %q: want %s or %s", o.Scorer, ScorerONNX, ScorerGo)
	}
	if o.ORTThreads < 0 {
		return fmt.Errorf("ONNX Runtime threads must not be negative, got %d", o.ORTThreads)
	}
	return nil
}

func (o Options) scorerOptions(m *model.Model) onnx.ScorerOptions {
	return onnx.ScorerOptions{LibraryPath: o.ORTLib, IntraOpThreads: max(o.ORTThreads, 1), Model: m}
}

// NewScorer returns m's scorer of the kind o asks for, its ONNX graph
// exported now. It is the one factory of scorers: the hot path, the
// evaluation and the workflows' quality gate score alike.
func (o Options) NewScorer(m *model.Model) (model.Scorer, error) {
	if o.Scorer == ScorerGo {
		return model.NewScorer(m)
	}
	return onnx.NewModelScorer(m, o.scorerOptions(m))
}

// Build returns what the hot path serves for model m under version, scoring
// with onnxGraph when it fits m (exported anew when it is missing or was
// exported for the other graph contract). ONNX Runtime checks that the graph
// was exported for m's item table. With ONNX Runtime the worker keeps only
// what it needs of m (ids, prior, retrieval tables): at 1M items this halves
// its memory.
func (o Options) Build(version string, m *model.Model, onnxGraph []byte) (*hotpath.Serving, error) {
	m.Version = version
	if o.Scorer == ScorerGo {
		s, err := model.NewScorer(m)
		if err != nil {
			return nil, err
		}
		return &hotpath.Serving{Version: version, Model: m, Scorer: s}, nil
	}
	if len(onnxGraph) > 0 {
		// A graph of the other contract (a registry version exported before
		// the model had retrieval tables, or without them) is exported anew.
		if md, err := onnx.ReadMetadata(onnxGraph); err == nil && (md.Format == onnx.FormatRank) != m.HasRetrieval() {
			onnxGraph = nil
		}
	}
	if len(onnxGraph) == 0 {
		var err error
		if onnxGraph, err = onnx.Export(m, onnx.ExportOptions{}); err != nil {
			return nil, fmt.Errorf("exporting %s to ONNX: %w", version, err)
		}
	}
	s, err := onnx.NewScorer(onnxGraph, o.scorerOptions(m))
	if err != nil {
		return nil, fmt.Errorf("loading %s into ONNX Runtime: %w", version, err)
	}
	// ONNX Runtime holds its own copy of the factors. Dropping ours and
	// returning the garbage of loading and exporting (the file, the graph's
	// bytes) to the system halves the worker's memory at 1M items.
	m.Factors, m.Projection = nil, nil
	debug.FreeOSMemory()
	return &hotpath.Serving{Version: version, Model: m, Scorer: s}, nil
}

// FromDir returns what the hot path serves for the model saved in dir; its
// version is the saved one, or "file:<dir>".
func (o Options) FromDir(dir string) (*hotpath.Serving, error) {
	m, md, err := model.Load(dir)
	if err != nil {
		return nil, err
	}
	v := md.Version
	if v == "" {
		v = "file:" + dir
	}
	return o.Build(v, m, nil)
}

// FromRegistry returns what the hot path serves for a registry version,
// with the drift reference profiles saved beside it (none if they are
// unreadable: the model is still served, and the reason logged).
func (o Options) FromRegistry(ctx context.Context, r *registry.Registry, version string, log *slog.Logger) (*hotpath.Serving, error) {
	v, err := r.Get(ctx, version)
	if err != nil {
		return nil, err
	}
	return o.fromVersion(version, v, log)
}

func (o Options) fromVersion(version string, v *registry.Version, log *slog.Logger) (*hotpath.Serving, error) {
	m := new(model.Model)
	if err := m.UnmarshalBinary(v.Model); err != nil {
		return nil, fmt.Errorf("model %s: %w", version, err)
	}
	s, err := o.Build(version, m, v.ONNX)
	if err != nil {
		return nil, err
	}
	if len(v.Meta.Reference) > 0 {
		var ref drift.ReferenceSet
		if err := json.Unmarshal(v.Meta.Reference, &ref); err != nil {
			log.Warn("the model's drift reference profiles are unreadable; no live profiles", "version", version, "err", err)
		} else {
			s.Reference = ref
		}
	}
	return s, nil
}

// Follow serves the registry's current version through set: it loads the
// current one before it returns (so the first clicks are scored by the
// model), then follows promotions and rollbacks, from the registry's pub/sub
// channel and a check every interval, until ctx ends. A version that fails
// to load is logged and the one served is kept. With a CacheDir, a registry
// that does not answer at the start is no error if a version was served
// before: that one is served, and the registry followed once it answers.
func (o Options) Follow(ctx context.Context, r *registry.Registry, every time.Duration, set func(*hotpath.Serving), log *slog.Logger) error {
	load := func(ctx context.Context, version string) error {
		start := time.Now()
		v, err := r.Get(ctx, version)
		var s *hotpath.Serving
		if err == nil {
			s, err = o.fromVersion(version, v, log)
		}
		if err != nil {
			log.Error("loading the registry's current model failed; keeping the one served", "version", version, "err", err)
			return err
		}
		set(s)
		log.Info("model loaded from the registry; swapping at the next batch", "version", version, "items", s.Model.NumItems(),
			"took", time.Since(start).Round(time.Millisecond))
		if err := o.saveCache(version, v); err != nil {
			log.Warn("keeping the served model on local disk failed; a restart while Redis is down will wait for it", "err", err)
		}
		return nil
	}
	cctx, cancel := ctx, context.CancelFunc(func() {})
	cachedVer, cached, hasCache, cerr := o.loadCache()
	if cerr != nil {
		log.Warn("the model cache is unreadable; ignoring it", "err", cerr)
	}
	if hasCache { // no need to wait long for the registry: Watch catches up
		cctx, cancel = context.WithTimeout(ctx, 500*time.Millisecond)
	}
	cur, err := r.Current(cctx)
	cancel()
	if err != nil {
		if !hasCache {
			return err
		}
		if cachedVer == "" { // it served no model last time either
			log.Warn("the registry does not answer, and this worker served no model before; serving the popularity fallback until it answers", "err", err)
			go r.Watch(ctx, every, "", load)
			return nil
		}
		s, berr := o.fromVersion(cachedVer, &cached, log)
		if berr != nil {
			return fmt.Errorf("the registry does not answer (%w) and the cached model does not load: %w", err, berr)
		}
		set(s)
		log.Warn("the registry does not answer; serving the model this worker served last, from its local cache, until it does",
			"version", cachedVer, "dir", o.CacheDir, "err", err)
		go r.Watch(ctx, every, cachedVer, load)
		return nil
	}
	loaded := ""
	switch {
	case cur == "":
		log.Warn("the registry has no current model yet; serving the popularity fallback until one is promoted")
		if err := o.saveCache("", &registry.Version{}); err != nil {
			log.Warn("keeping the served model on local disk failed; a restart while Redis is down will wait for it", "err", err)
		}
	case load(ctx, cur) == nil:
		loaded = cur
	}
	go r.Watch(ctx, every, loaded, load)
	return nil
}
