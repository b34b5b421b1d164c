package loadtest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/clickrec/clickrec/gen"
	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/internal/shoptrain"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/model/onnx"
)

// checkRedis pings the Redis the spawned workers are to write, so that a
// missing server fails the run at once with what to do about it.
func checkRedis(ctx context.Context, cfg *Config) (RedisReport, error) {
	if cfg.NoRedis {
		return RedisReport{Detail: "--no-redis: the workers write no feature store"}, nil
	}
	timeout := cfg.Redis.DialTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	unreachable := func(err error) error {
		return cli.Usagef("cannot reach Redis at %s (%v): start it with scripts/redis.sh start, point --redis-addr at one, or pass --no-redis to load-test without the feature store",
			cfg.Redis.Addr, err)
	}
	// A plain dial first: go-redis retries a refused connection five times
	// and logs each round on stderr.
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", cfg.Redis.Addr)
	if err != nil {
		return RedisReport{}, unreachable(err)
	}
	conn.Close()
	rc := cfg.Redis.Client()
	defer rc.Close()
	if err := rc.Ping(dctx).Err(); err != nil { // AUTH and SELECT too
		return RedisReport{}, unreachable(err)
	}
	return RedisReport{Used: true, Addr: cfg.Redis.Addr, DB: cfg.Redis.DB,
		Detail: "the workers write user:{<user id>} hashes (no per-run key prefix; they expire after an hour)"}, nil
}

// prepareModel decides what the spawned workers serve: nothing (NoModel), a
// saved model (ModelDir, or --model-dir among the worker flags) or, by
// default, a model it trains on the traffic's history and saves under
// OutDir. It returns the report and the flags the workers need for it.
func prepareModel(ctx context.Context, cfg *Config, log *slog.Logger) (ModelReport, []string, error) {
	if cfg.NoModel {
		return ModelReport{Source: ModelNone}, []string{"--no-model", "--learn=false"}, nil
	}
	rep := ModelReport{Served: true, Source: ModelTrained, Dir: cfg.ModelDir}
	switch {
	case cfg.ModelDir != "":
		rep.Source = ModelDir
	case hasFlag(cfg.WorkerFlags, "model-dir"):
		rep.Source, rep.Dir = ModelWorkerFlag, flagValue(cfg.WorkerFlags, "model-dir")
	}
	var (
		m   *model.Model
		err error
	)
	if rep.Source == ModelTrained {
		rep.Dir = filepath.Join(cfg.OutDir, "model-"+strings.TrimSuffix(cfg.TopicPrefix, "-"))
		if m, err = trainModel(ctx, cfg, &rep, log); err != nil {
			return rep, nil, err
		}
	} else {
		var md model.Metadata
		if m, md, err = model.Load(rep.Dir); err != nil {
			return rep, nil, cli.Usagef("--model-dir %s: %v", rep.Dir, err)
		}
		rep.Version = md.Version
		if rep.Version == "" {
			rep.Version = "file:" + rep.Dir // as the worker names it
		}
	}
	if abs, err := filepath.Abs(rep.Dir); err == nil {
		rep.Dir = abs
	}
	rep.Items = m.NumItems()
	if rep.CatalogueItems, rep.CatalogueKnown, err = catalogueCoverage(cfg, m); err != nil {
		return rep, nil, err
	}
	var args []string
	if rep.Source != ModelWorkerFlag {
		args = append(args, "--model-dir", rep.Dir)
	}
	rep.Scorer = flagValue(cfg.WorkerFlags, "scorer")
	if rep.Scorer == "" {
		rep.Scorer = "onnx"
		if _, err := onnx.LibraryPath(flagValue(cfg.WorkerFlags, "onnxruntime-lib")); err != nil {
			rep.Scorer = "go"
			args = append(args, "--scorer", "go")
			rep.Note = "ONNX Runtime library not found, so the workers score with the pure-Go scorer; " + onnx.InstallHint
			log.Warn("loadtest: ONNX Runtime library not found; the workers score with the pure-Go scorer, not the production path", "hint", onnx.InstallHint)
		}
	}
	log.Info("loadtest: model for the workers", "source", rep.Source, "version", rep.Version, "items", rep.Items,
		"catalogue_items", rep.CatalogueItems, "catalogue_known", rep.CatalogueKnown, "scorer", rep.Scorer, "dir", rep.Dir)
	return rep, args, nil
}

// trainModel trains a model on the traffic's history, the way the demo
// does but on enough clicks to know the whole catalogue, and saves it to
// rep.Dir. The synthetic shop's history is its past (the same catalogue,
// another seed); a Taobao replay is its own history.
func trainModel(ctx context.Context, cfg *Config, rep *ModelReport, log *slog.Logger) (*model.Model, error) {
	var (
		src    gen.Source
		n      = cfg.TrainClicks
		source string
	)
	if cfg.Source == "taobao" {
		t, err := gen.OpenTaobao(cfg.TaobaoFile)
		if err != nil {
			return nil, err
		}
		if src, err = gen.NewReplay(t, gen.ReplayConfig{}); err != nil {
			return nil, err
		}
		if n == 0 {
			n = t.Len()
		}
		source = "loadtest: Taobao replay " + cfg.TaobaoFile
	} else {
		h, err := shoptrain.History(cfg.Shop)
		if err != nil {
			return nil, err
		}
		src = h
		if n == 0 {
			n = DefaultTrainClicksPerItem * cfg.Shop.Items
		}
		source = fmt.Sprintf("loadtest: synthetic shop history (seed %d, catalogue seed %d, %d items)", cfg.Shop.Seed+shoptrain.HistorySeedOffset, catalogueSeed(cfg.Shop), cfg.Shop.Items)
	}
	tcfg := trainConfig()
	log.Info("loadtest: training a model on the traffic's history (--model-dir DIR serves a saved one, --no-model none)",
		"clicks", n, "factors", tcfg.Factors, "out", rep.Dir)
	// Single-click sessions too: they teach the model nothing about the next
	// item, but put their item in its catalogue (a fifth of a Taobao slice's
	// items appear only in such sessions).
	m, trep, st, err := shoptrain.Train(ctx, src, n, 1, tcfg, log.With("component", "train"))
	if err != nil {
		return nil, err
	}
	m.Version = "loadtest-" + time.Now().UTC().Format("20060102-150405")
	if err := model.Save(rep.Dir, m, model.NewMetadata(m, tcfg, trep, source)); err != nil {
		return nil, fmt.Errorf("saving the trained model: %w", err)
	}
	rep.Version, rep.TrainClicks, rep.TrainSessions, rep.TrainS = m.Version, st.Clicks, st.Sessions, round3(st.Took.Seconds())
	log.Info("loadtest: model trained", "version", m.Version, "items", m.NumItems(), "sessions", st.Sessions, "took", st.Took.Round(time.Millisecond))
	return m, nil
}

// trainConfig is the load test's training: the production model's shape
// (factors, weighting), so scoring costs what it costs in production, but
// plain ALS without the next-item epochs and without a refit, which would
// take minutes and change the recommendations, not their cost.
func trainConfig() model.Config {
	cfg := model.DefaultConfig()
	cfg.Epochs, cfg.Refit = 0, false
	return cfg
}

// catalogueCoverage returns the size of the catalogue the traffic clicks on
// and how many of its items m knows.
func catalogueCoverage(cfg *Config, m *model.Model) (items, known int, err error) {
	if cfg.Source != "taobao" {
		for id := range int64(cfg.Shop.Items) {
			if _, ok := m.Index(id + 1); ok {
				known++
			}
		}
		return cfg.Shop.Items, known, nil
	}
	t, err := gen.OpenTaobao(cfg.TaobaoFile)
	if err != nil {
		return 0, 0, err
	}
	rp, err := gen.NewReplay(t, gen.ReplayConfig{})
	if err != nil {
		return 0, 0, err
	}
	seen := map[int64]bool{}
	var r gen.Record
	now := time.Now()
	for rp.Next(&r, now) {
		if !seen[r.Click.ItemID] {
			seen[r.Click.ItemID] = true
			if _, ok := m.Index(r.Click.ItemID); ok {
				known++
			}
		}
	}
	return len(seen), known, nil
}

// catalogueSeed is the seed of the synthetic shop's catalogue.
func catalogueSeed(shop gen.Config) uint64 {
	if shop.CatalogueSeed != 0 {
		return shop.CatalogueSeed
	}
	return shop.Seed
}

// flagValue returns the value of flag name among flags ("--name=value", or
// "--name" followed by the value), or "".
func flagValue(flags []string, name string) string {
	for i, f := range flags {
		f = strings.TrimLeft(f, "-")
		if v, ok := strings.CutPrefix(f, name+"="); ok {
			return v
		}
		if f == name && i+1 < len(flags) {
			return flags[i+1]
		}
	}
	return ""
}
