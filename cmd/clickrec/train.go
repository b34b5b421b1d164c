package main

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"time"

	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/model"
)

func init() {
	register(command{name: "train", synopsis: "train the recommender (implicit ALS + next-item refinement) and save it", run: runTrain})
}

// trainFlags registers the model.Config flags on fs, each with the
// environment variable envPrefix+NAME, and returns a function that copies the
// parsed values into cfg and validates them.
func trainFlags(fs *cli.FlagSet, cfg *model.Config, envPrefix string) func() error {
	d := model.DefaultConfig()
	*cfg = d
	var (
		view, cart, purchase, decay = f64(d.Weighting.View), f64(d.Weighting.Cart), f64(d.Weighting.Purchase), f64(d.Weighting.Decay)
		priors, gammas              cli.Strings
		seed                        = strconv.FormatUint(d.Seed, 10)
	)
	for _, b := range d.PriorWeights {
		priors = append(priors, strconv.FormatFloat(b, 'g', -1, 64))
	}
	for _, g := range d.Retrieval.NeighborWeights {
		gammas = append(gammas, strconv.FormatFloat(g, 'g', -1, 64))
	}
	env := func(name, variable string) { fs.Env(name, envPrefix+variable) }
	fs.IntVar(&cfg.Factors, "factors", d.Factors, "latent dimension K")
	env("factors", "FACTORS")
	fs.IntVar(&cfg.Iterations, "iterations", d.Iterations, "ALS iterations")
	env("iterations", "ITERATIONS")
	fs.Float64Var(&cfg.Alpha, "alpha", d.Alpha, "ALS confidence scale: c = 1 + alpha·r")
	env("alpha", "ALPHA")
	fs.Float64Var(&cfg.Lambda, "lambda", d.Lambda, "ALS L2 regularisation")
	env("lambda", "LAMBDA")
	fs.IntVar(&cfg.CGSteps, "cg-steps", d.CGSteps, "conjugate-gradient steps per row in each ALS half-iteration")
	env("cg-steps", "CG_STEPS")
	fs.IntVar(&cfg.Epochs, "epochs", d.Epochs, "epochs of next-item refinement after ALS (0: serve the plain ALS fold-in)")
	env("epochs", "EPOCHS")
	fs.IntVar(&cfg.BatchSize, "batch-size", d.BatchSize, "refinement examples per step")
	env("batch-size", "BATCH_SIZE")
	fs.IntVar(&cfg.Negatives, "negatives", d.Negatives, "negatives sampled per refinement step")
	env("negatives", "NEGATIVES")
	fs.Float64Var(&cfg.LearningRate, "learning-rate", d.LearningRate, "Adam step size of the refinement")
	env("learning-rate", "LEARNING_RATE")
	fs.Float64Var(&cfg.NegExponent, "neg-exponent", d.NegExponent, "negatives are drawn in proportion to count^x")
	env("neg-exponent", "NEG_EXPONENT")
	fs.Float64Var(&cfg.L2, "l2", d.L2, "L2 weight on the refined rows")
	env("l2", "L2")
	fs.BoolVar(&cfg.Tied, "tied", d.Tied, "refine one unit-norm embedding per item (P = E, Y = E/temperature) instead of P and Y apart")
	env("tied", "TIED")
	fs.Float64Var(&cfg.Temperature, "temperature", d.Temperature, "softmax temperature of the tied model")
	env("temperature", "TEMPERATURE")
	fs.Float64Var(&view, "view-weight", view, "weight of a view event")
	env("view-weight", "VIEW_WEIGHT")
	fs.Float64Var(&cart, "cart-weight", cart, "weight of a cart event")
	env("cart-weight", "CART_WEIGHT")
	fs.Float64Var(&purchase, "purchase-weight", purchase, "weight of a purchase event")
	env("purchase-weight", "PURCHASE_WEIGHT")
	fs.Float64Var(&decay, "decay", decay, "recency decay of the session weights per step of age, in (0, 1]")
	env("decay", "DECAY")
	fs.IntVar(&cfg.Weighting.MaxItems, "max-items", d.Weighting.MaxItems, "only the newest N events of a session count (0: all)")
	env("max-items", "MAX_ITEMS")
	fs.IntVar(&cfg.MinCount, "min-count", d.MinCount, "drop items seen fewer times")
	env("min-count", "MIN_COUNT")
	fs.Float64Var(&cfg.ValidFraction, "valid-fraction", d.ValidFraction, "most recent fraction of the sessions held out to tune the prior weight (0: none)")
	env("valid-fraction", "VALID_FRACTION")
	fs.IntVar(&cfg.ValidCases, "valid-cases", d.ValidCases, "at most this many validation cases")
	env("valid-cases", "VALID_CASES")
	fs.Var(&priors, "prior-weights", "comma-separated grid of prior weights β (Prior = β·log(1+count)) to choose from on the validation split")
	env("prior-weights", "PRIOR_WEIGHTS")
	fs.BoolVar(&cfg.Refit, "refit", d.Refit, "after tuning, retrain on all sessions including the validation split")
	env("refit", "REFIT")
	r := &cfg.Retrieval
	fs.IntVar(&r.Neighbors, "neighbors", d.Retrieval.Neighbors, "retrieval: neighbours kept per item, co-occurrence and embedding together (0: no retrieval, every click scores the whole catalogue)")
	env("neighbors", "NEIGHBORS")
	fs.IntVar(&r.Embedding, "embedding-neighbors", d.Retrieval.Embedding, "retrieval: embedding neighbours computed per item and interleaved with the co-occurrence ones (0: none)")
	env("embedding-neighbors", "EMBEDDING_NEIGHBORS")
	fs.IntVar(&r.EmbeddingPool, "embedding-pool", d.Retrieval.EmbeddingPool, "retrieval: embedding neighbours are searched among this many most popular items (0: all; the cost is items × pool × factors)")
	env("embedding-pool", "EMBEDDING_POOL")
	fs.IntVar(&r.Window, "cooccurrence-window", d.Retrieval.Window, "retrieval: events at most this many positions apart in a session co-occur")
	env("cooccurrence-window", "COOCCURRENCE_WINDOW")
	fs.IntVar(&r.Popular, "popular-candidates", d.Retrieval.Popular, "retrieval: most popular items added to every session's candidates")
	env("popular-candidates", "POPULAR_CANDIDATES")
	fs.IntVar(&r.MaxCandidates, "max-candidates", d.Retrieval.MaxCandidates, "retrieval: candidates ranked per click at most")
	env("max-candidates", "MAX_CANDIDATES")
	fs.Var(&gammas, "neighbor-weights", "retrieval: comma-separated grid of neighbourhood-score weights to choose from on the validation split")
	env("neighbor-weights", "NEIGHBOR_WEIGHTS")
	fs.StringVar(&seed, "seed", seed, "random seed (training is deterministic for a seed)")
	env("seed", "SEED")
	fs.IntVar(&cfg.Workers, "workers", 0, "parallel workers (0: all CPUs)")
	env("workers", "WORKERS")
	return func() error {
		cfg.Weighting.View, cfg.Weighting.Cart, cfg.Weighting.Purchase = float32(view), float32(cart), float32(purchase)
		cfg.Weighting.Decay = float32(decay)
		s, err := strconv.ParseUint(seed, 10, 64)
		if err != nil {
			return cli.Usagef("--seed %q: want a non-negative integer", seed)
		}
		cfg.Seed = s
		cfg.PriorWeights = cfg.PriorWeights[:0:0]
		for _, p := range priors {
			v, err := strconv.ParseFloat(p, 64)
			if err != nil {
				return cli.Usagef("--prior-weights: %q is not a number", p)
			}
			cfg.PriorWeights = append(cfg.PriorWeights, v)
		}
		r.NeighborWeights = nil
		for _, g := range gammas {
			v, err := strconv.ParseFloat(g, 64)
			if err != nil {
				return cli.Usagef("--neighbor-weights: %q is not a number", g)
			}
			r.NeighborWeights = append(r.NeighborWeights, v)
		}
		if err := cfg.Validate(); err != nil {
			return cli.Usagef("%v", err)
		}
		return nil
	}
}

// f64 widens a float32 flag default without binary noise (0.6, not 0.6000000238).
func f64(v float32) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(float64(v), 'g', -1, 32), 64)
	return f
}

// limitProcs caps GOMAXPROCS at workers (when positive) for a one-shot
// command: gonum's matrix products size their parallelism by GOMAXPROCS.
func limitProcs(workers int) {
	if workers > 0 && workers < runtime.GOMAXPROCS(0) {
		runtime.GOMAXPROCS(workers)
	}
}

func runTrain(ctx context.Context, args []string) error {
	fs := newFlagSet("train", `Train the recommender on sessions and save it to a directory (model.bin + metadata.json).

Training is implicit-feedback ALS (Hu, Koren & Volinsky 2008) on session × item
interactions weighted by event type, then a next-item refinement of the fold-in
(sampled softmax over u = Σ w_j·P[item_j]), then a prior weight chosen on the
most recent sessions. Input: --format events (click-event JSON lines) or
diginetica (one session per line, space-separated item ids), gzip or plain.`)
	var (
		data, format, out, version string
		synthetic                  int
		lg                         cli.Logging
		cfg                        model.Config
	)
	fs.StringVar(&data, "data", "", "training data file (required unless --synthetic-items)")
	fs.Env("data", "CLICKREC_TRAIN_DATA")
	fs.StringVar(&format, "format", model.FormatEvents, "data format: events or diginetica")
	fs.Env("format", "CLICKREC_TRAIN_FORMAT")
	fs.StringVar(&out, "out", "", "output directory (required)")
	fs.Env("out", "CLICKREC_TRAIN_OUT")
	fs.StringVar(&version, "version", "", "model version to record (default v<UTC time>)")
	fs.Env("version", "CLICKREC_TRAIN_VERSION")
	fs.IntVar(&synthetic, "synthetic-items", 0, "train nothing: save a random model of this many items (ids 1..N, gen's synthetic catalogue) with the retrieval flags' shape, to measure what a catalogue of that size costs; it recommends nothing meaningful")
	fs.Env("synthetic-items", "CLICKREC_TRAIN_SYNTHETIC_ITEMS")
	apply := trainFlags(fs, &cfg, "CLICKREC_TRAIN_")
	lg.Register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := lg.Logger()
	if err != nil {
		return err
	}
	switch {
	case synthetic < 0:
		return cli.Usagef("--synthetic-items must not be negative")
	case synthetic > 0 && data != "":
		return cli.Usagef("--synthetic-items makes a random model: it takes no --data")
	case data == "" && synthetic == 0:
		return cli.Usagef("--data is required (see clickrec train --help)")
	case out == "":
		return cli.Usagef("--out is required (see clickrec train --help)")
	case format != model.FormatEvents && format != model.FormatDiginetica:
		return cli.Usagef("--format %q: want events or diginetica", format)
	}
	if err := apply(); err != nil {
		return err
	}
	limitProcs(cfg.Workers)
	t0 := time.Now()
	if synthetic > 0 {
		m, err := model.Synthetic(synthetic, cfg.Factors, cfg.Retrieval, cfg.Seed)
		if err != nil {
			return cli.Usagef("%v", err)
		}
		if version != "" {
			m.Version = version
		}
		if err := model.Save(out, m, model.NewMetadata(m, cfg, nil, fmt.Sprintf("synthetic:%d", synthetic))); err != nil {
			return err
		}
		log.Info("saved a synthetic model", "dir", out, "version", m.Version, "items", m.NumItems(), "factors", m.K, "took", time.Since(t0).Round(time.Millisecond))
		return nil
	}
	sessions, stats, err := model.ReadSessionsFile(data, format)
	if err != nil {
		return fmt.Errorf("read training data: %w", err)
	}
	log.Info("read training data", "file", data, "sessions", stats.Sessions, "events", stats.Events, "items", stats.Items,
		"invalid", stats.Invalid, "duplicate", stats.Duplicate, "took", time.Since(t0).Round(time.Millisecond))
	m, rep, err := model.Train(ctx, sessions, cfg, log)
	if err != nil {
		return err
	}
	rep.Data = stats
	if version == "" {
		version = "v" + time.Now().UTC().Format("20060102-150405")
	}
	m.Version = version
	md := model.NewMetadata(m, cfg, rep, data)
	if rep.Validation != nil {
		md.OfflineMetrics = map[string]map[string]float64{"validation": rep.Validation}
	}
	if err := model.Save(out, m, md); err != nil {
		return err
	}
	log.Info("saved model", "dir", out, "version", version, "items", m.NumItems(), "factors", m.K,
		"prior_weight", rep.PriorWeight, "neighbor_weight", m.NeighborWeight, "took", time.Since(t0).Round(time.Millisecond))
	return nil
}
