package model

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// Config holds the training hyperparameters. DefaultConfig gives the values
// tuned on a validation split of the Diginetica training sessions.
type Config struct {
	// Factors is the latent dimension K.
	Factors int `json:"factors"`
	// Iterations, Alpha, Lambda and CGSteps configure implicit-feedback ALS:
	// confidence c = 1 + Alpha·r, L2 weight Lambda, CGSteps conjugate-gradient
	// steps per row and half-iteration.
	Iterations int     `json:"iterations"`
	Alpha      float64 `json:"alpha"`
	Lambda     float64 `json:"lambda"`
	CGSteps    int     `json:"cg_steps"`
	// Weighting weighs events by type (in ALS's r and in the fold-in) and by
	// recency (in the fold-in). The trained Model carries it.
	Weighting Weighting `json:"weighting"`
	// MinCount drops items seen fewer times from the catalogue.
	MinCount int `json:"min_count"`

	// Epochs of next-item refinement of P and Y, starting from the ALS factors
	// and fold-in; 0 keeps the plain ALS fold-in P = Y(YᵀY + λI)⁻¹.
	Epochs int `json:"epochs"`
	// BatchSize, Negatives, LearningRate, NegExponent and L2 configure the
	// sampled-softmax refinement: examples per step, negatives sampled per step
	// from count^NegExponent, Adam step size, L2 weight on touched rows.
	BatchSize    int     `json:"batch_size"`
	Negatives    int     `json:"negatives"`
	LearningRate float64 `json:"learning_rate"`
	// LRDecay lowers the learning rate linearly to a tenth over the epochs.
	LRDecay     bool    `json:"lr_decay"`
	NegExponent float64 `json:"neg_exponent"`
	L2          float64 `json:"l2"`
	// InitScale multiplies the ALS fold-in P that starts an untied refinement.
	InitScale float64 `json:"init_scale"`
	// Tied refines one unit-norm embedding Ê per item, started from the ALS
	// item factors, and serves P = Ê, Y = Ê/Temperature (CORE-ave, Hou et al.
	// 2022); untied refines P and Y separately from the ALS fold-in.
	Tied        bool    `json:"tied"`
	Temperature float64 `json:"temperature"`

	// ValidFraction of the sessions (the last ones, i.e. the most recent) is
	// held out to tune the prior weight and report validation metrics; at most
	// ValidCases prefix→next cases are drawn from them.
	ValidFraction float64 `json:"valid_fraction"`
	ValidCases    int     `json:"valid_cases"`
	// PriorWeights is the grid of β in Prior = β·log(1 + count) to choose from.
	PriorWeights []float64 `json:"prior_weights"`
	// Refit retrains on all sessions (validation included) after tuning, with
	// the same settings and the chosen β.
	Refit bool `json:"refit"`

	// Retrieval configures the candidates a served session is ranked among
	// (Retrieval.Neighbors = 0: rank the whole catalogue).
	Retrieval RetrievalConfig `json:"retrieval"`

	// Seed makes training deterministic; Workers bounds the parallelism
	// (0: GOMAXPROCS). The result does not depend on Workers.
	Seed    uint64 `json:"seed"`
	Workers int    `json:"workers"`
}

// DefaultConfig returns the defaults, chosen on a validation split of the
// Diginetica training sessions (fit on the first 90%, 4,000 next-item cases
// from the last 10%; V-SKNN scores HR@20 0.490, MRR@20 0.175 there). After 3
// epochs: tied, temperature 0.07, decay 0.6, lr 0.01 decayed: 0.506 / 0.180;
// decay 0.8: 0.496 / 0.173; decay 0.9: 0.488 / 0.169; temperature 0.05 or 0.1:
// 0.482–0.484 / 0.166–0.170; untied P and Y: 0.397 / 0.119 after 2 epochs;
// plain ALS fold-in (epochs 0): 0.24 / 0.06. Starting the refinement from the
// ALS factors or from random ones ends within noise (0.491 vs 0.490).
func DefaultConfig() Config {
	return Config{
		Factors:       64,
		Iterations:    5,
		Alpha:         10,
		Lambda:        0.1,
		CGSteps:       3,
		Weighting:     DefaultWeighting,
		MinCount:      1,
		Epochs:        3,
		BatchSize:     256,
		Negatives:     1024,
		LearningRate:  0.01,
		LRDecay:       true,
		NegExponent:   0.5,
		L2:            0,
		InitScale:     1,
		Tied:          true,
		Temperature:   0.07,
		ValidFraction: 0.1,
		ValidCases:    4000,
		PriorWeights:  []float64{0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1},
		Refit:         true,
		Retrieval:     DefaultRetrieval,
		Seed:          1,
	}
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	switch {
	case c.Factors < 1:
		return fmt.Errorf("factors %d must be positive", c.Factors)
	case c.Iterations < 0:
		return fmt.Errorf("iterations %d must not be negative", c.Iterations)
	case c.Iterations == 0 && c.Epochs == 0:
		return errors.New("iterations and epochs are both 0: nothing to train")
	case !(c.Alpha >= 0):
		return fmt.Errorf("alpha %v must not be negative", c.Alpha)
	case !(c.Lambda > 0):
		return fmt.Errorf("lambda %v must be positive", c.Lambda)
	case c.CGSteps < 1:
		return fmt.Errorf("cg steps %d must be positive", c.CGSteps)
	case c.MinCount < 1:
		return fmt.Errorf("min count %d must be positive", c.MinCount)
	case c.Epochs < 0:
		return fmt.Errorf("epochs %d must not be negative", c.Epochs)
	case c.Epochs > 0 && c.BatchSize < 1:
		return fmt.Errorf("batch size %d must be positive", c.BatchSize)
	case c.Epochs > 0 && c.Negatives < 0:
		return fmt.Errorf("negatives %d must not be negative", c.Negatives)
	case c.Epochs > 0 && !(c.LearningRate > 0):
		return fmt.Errorf("learning rate %v must be positive", c.LearningRate)
	case !(c.NegExponent >= 0 && c.NegExponent <= 1):
		return fmt.Errorf("negative-sampling exponent %v must be in [0, 1]", c.NegExponent)
	case !(c.L2 >= 0):
		return fmt.Errorf("l2 %v must not be negative", c.L2)
	case !(c.InitScale > 0):
		return fmt.Errorf("init scale %v must be positive", c.InitScale)
	case c.Tied && !(c.Temperature > 0):
		return fmt.Errorf("temperature %v must be positive", c.Temperature)
	case !(c.ValidFraction >= 0 && c.ValidFraction < 1):
		return fmt.Errorf("validation fraction %v must be in [0, 1)", c.ValidFraction)
	case c.ValidFraction > 0 && c.ValidCases < 1:
		return fmt.Errorf("validation cases %d must be positive", c.ValidCases)
	case c.Workers < 0:
		return fmt.Errorf("workers %d must not be negative", c.Workers)
	}
	for _, b := range c.PriorWeights {
		if math.IsNaN(b) || math.IsInf(b, 0) {
			return fmt.Errorf("prior weight %v is not finite", b)
		}
	}
	if err := c.Weighting.Validate(); err != nil {
		return err
	}
	return c.Retrieval.Validate()
}

// Report describes a training run.
type Report struct {
	Data          DataStats `json:"data"`
	FitSessions   int       `json:"fit_sessions"`
	ValidSessions int       `json:"valid_sessions"`
	ValidCases    int       `json:"valid_cases"`
	ALSLoss       float64   `json:"als_loss"`
	// Epochs holds the refinement's per-epoch loss and validation metrics.
	Epochs []EpochStats `json:"epochs,omitempty"`
	// PriorWeight is the chosen β of Prior = β·log(1 + count).
	PriorWeight float64 `json:"prior_weight"`
	// NeighborWeight is the chosen Model.NeighborWeight; ValidationRetrieval
	// the served model (candidates ranked) on the validation cases with it.
	NeighborWeight      float64            `json:"neighbor_weight,omitempty"`
	ValidationRetrieval map[string]float64 `json:"validation_retrieval,omitempty"`
	// ValidationALS is the plain ALS fold-in on the validation cases (with its
	// own best β), for comparison; Validation is the final model's.
	ValidationALS map[string]float64 `json:"validation_als,omitempty"`
	Validation    map[string]float64 `json:"validation,omitempty"`
	Seconds       float64            `json:"seconds"`
}

// EpochStats is one refinement epoch.
type EpochStats struct {
	Epoch int     `json:"epoch"`
	Loss  float64 `json:"loss"`
	HR20  float64 `json:"hr@20"`
	MRR20 float64 `json:"mrr@20"`
}

func (c Config) workers() int {
	if c.Workers > 0 {
		return c.Workers
	}
	return runtime.GOMAXPROCS(0)
}

// Train fits a model to sessions, given in time order (the last
// ValidFraction of them are the validation split). Progress goes to log.
func Train(ctx context.Context, sessions []Session, cfg Config, log *slog.Logger) (*Model, *Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, fmt.Errorf("train: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t0 := time.Now()
	ids := buildVocab(sessions, cfg.MinCount)
	if len(ids) == 0 {
		return nil, nil, errors.New("train: no items")
	}
	c := newCorpus(sessions, ids)
	rep := &Report{Data: StatsOf(sessions)}
	nAll := c.numSessions()
	nFit := nAll
	if cfg.ValidFraction > 0 {
		nFit = nAll - int(math.Round(cfg.ValidFraction*float64(nAll)))
	}
	if nFit < 1 {
		return nil, nil, fmt.Errorf("train: %d sessions leave none to fit", nAll)
	}
	rep.FitSessions, rep.ValidSessions = nFit, nAll-nFit
	log.Info("training data", "sessions", nAll, "events", len(c.items), "items", len(ids), "fit_sessions", nFit, "valid_sessions", nAll-nFit)

	var val *validator
	if nFit < nAll {
		val = newValidator(c, nFit, cfg)
		rep.ValidCases = len(val.ex.pos)
		if rep.ValidCases == 0 {
			val = nil
		}
	}

	f, alsLoss, res, err := fit(ctx, c, nFit, cfg, val, rep, log)
	if err != nil {
		return nil, nil, err
	}
	rep.ALSLoss = alsLoss
	beta := 0.0
	if val != nil {
		bi := bestBeta(res)
		beta = val.betas[bi]
		rep.PriorWeight = beta
		rep.Validation = res[bi].asMap()
		log.Info("validation", "prior_weight", beta, "hr@20", res[bi].hr20, "mrr@20", res[bi].mrr20, "cases", rep.ValidCases)
	}
	gamma := -1.0
	if val != nil && cfg.Retrieval.Neighbors > 0 && len(cfg.Retrieval.NeighborWeights) > 1 {
		// Choose the neighbour weight on the validation split, ranking
		// candidates built from the fit sessions only.
		mf := serveModel(f, c, nFit, cfg, beta)
		buildRetrieval(mf, c, nFit, cfg.Retrieval, cfg.workers())
		best := -1.0
		for _, g := range cfg.Retrieval.NeighborWeights {
			mf.NeighborWeight = float32(g)
			r := val.evalServed(mf)
			log.Info("validation (retrieval)", "neighbor_weight", g, "hr@20", r.hr20, "mrr@20", r.mrr20)
			if r.hr20+r.mrr20 > best {
				best, gamma = r.hr20+r.mrr20, g
				rep.NeighborWeight, rep.ValidationRetrieval = g, r.asMap()
			}
		}
	}
	if cfg.Refit && nFit < nAll {
		log.Info("refit on all sessions", "sessions", nAll)
		f, alsLoss, _, err = fit(ctx, c, nAll, cfg, nil, nil, log)
		if err != nil {
			return nil, nil, err
		}
		rep.ALSLoss = alsLoss
	}
	nServe := nAll
	if !cfg.Refit {
		nServe = nFit
	}
	m := serveModel(f, c, nServe, cfg, beta)
	if cfg.Retrieval.Neighbors > 0 {
		tr := time.Now()
		buildRetrieval(m, c, nServe, cfg.Retrieval, cfg.workers())
		if gamma >= 0 {
			m.NeighborWeight = float32(gamma)
		}
		log.Info("retrieval built", "neighbors", cfg.Retrieval.Neighbors, "embedding", cfg.Retrieval.Embedding,
			"max_candidates", cfg.Retrieval.MaxCandidates, "neighbor_weight", m.NeighborWeight, "took", time.Since(tr).Round(time.Millisecond))
	}
	rep.Seconds = time.Since(t0).Seconds()
	log.Info("training done", "items", len(ids), "factors", cfg.Factors, "took", time.Since(t0).Round(time.Millisecond))
	return m, rep, nil
}

// serveModel is the model served from factors f: prior β·log(1 + count) over
// the first n sessions of c.
func serveModel(f *factors, c *corpus, n int, cfg Config, beta float64) *Model {
	fp, fy := f.serving()
	m := &Model{K: cfg.Factors, ItemIDs: c.itemIDs, Factors: fy, Projection: fp, Prior: make([]float32, len(c.itemIDs)), Weighting: cfg.Weighting}
	for i, cnt := range countItems(c, n) {
		m.Prior[i] = float32(beta * math.Log1p(cnt))
	}
	return m
}

func countItems(c *corpus, sessions int) []float64 {
	n := make([]float64, len(c.itemIDs))
	for _, it := range c.items[:c.offsets[sessions]] {
		n[it]++
	}
	return n
}

// fit trains ALS and the next-item refinement on the first n sessions of c.
// With a validator it evaluates after ALS and after every epoch into rep, and
// returns the last evaluation (one entry per prior weight).
func fit(ctx context.Context, c *corpus, n int, cfg Config, val *validator, rep *Report, log *slog.Logger) (*factors, float64, []valMetrics, error) {
	k := cfg.Factors
	nItems := len(c.itemIDs)
	f := &factors{n: nItems, k: k, tied: cfg.Tied, temperature: float32(cfg.Temperature)}
	var (
		loss float64
		last []valMetrics
	)
	sub := &corpus{itemIDs: c.itemIDs, items: c.items, types: c.types, offsets: c.offsets[:n+1]}
	if cfg.Iterations > 0 {
		r := interactions(sub, cfg.Weighting)
		als, err := trainALS(ctx, r, alsConfig{factors: k, iterations: cfg.Iterations, alpha: cfg.Alpha, lambda: cfg.Lambda,
			cgSteps: cfg.CGSteps, workers: cfg.workers(), seed: cfg.Seed}, log)
		if err != nil {
			return nil, 0, nil, err
		}
		loss = als.loss
		p, err := foldIn(als.y, k, cfg.Lambda)
		if err != nil {
			return nil, 0, nil, err
		}
		alsF := &factors{n: nItems, k: k, p: toF32(p, 1), y: toF32(als.y, 1)}
		if val != nil {
			res := val.eval(alsF)
			last = res
			bi := bestBeta(res)
			rep.ValidationALS = res[bi].asMap()
			rep.ValidationALS["prior_weight"] = val.betas[bi]
			log.Info("validation (ALS fold-in)", "prior_weight", val.betas[bi], "hr@20", res[bi].hr20, "mrr@20", res[bi].mrr20)
		}
		if cfg.Epochs == 0 {
			return alsF, loss, last, nil
		}
		if cfg.Tied {
			// Start from the ALS directions at unit length: the refinement
			// works on normalised rows, and tiny rows of rare items would
			// otherwise take outsized relative steps.
			f.y = slices.Clone(alsF.y)
			for i := 0; i < nItems; i++ {
				row := f.y[i*k : i*k+k]
				inv := invNorm(row)
				if inv == 0 {
					row[0], inv = 1, 1
				}
				for j := range row {
					row[j] *= inv
				}
			}
		} else {
			f.y = alsF.y
			f.p = toF32(p, cfg.InitScale)
		}
	} else {
		rng := rand.New(rand.NewPCG(cfg.Seed, 0x1a17))
		f.y = make([]float32, nItems*k)
		if !cfg.Tied {
			f.p = make([]float32, nItems*k)
		}
		sd := 1 / math.Sqrt(float64(k))
		for i := range f.y {
			f.y[i] = float32(rng.NormFloat64() * sd)
			if f.p != nil {
				f.p[i] = float32(rng.NormFloat64() * sd)
			}
		}
	}
	tr := newNextItemTrainer(sub, n, f, nextItemConfig{epochs: cfg.Epochs, batch: cfg.BatchSize, negatives: cfg.Negatives,
		lr: cfg.LearningRate, negExp: cfg.NegExponent, l2: cfg.L2, workers: cfg.workers(), seed: cfg.Seed, weighting: cfg.Weighting,
		tied: cfg.Tied, temperature: cfg.Temperature, lrDecay: cfg.LRDecay})
	err := tr.run(ctx, log, func(ep int, l float64) error {
		if val == nil {
			return nil
		}
		res := val.eval(f)
		last = res
		bi := bestBeta(res)
		rep.Epochs = append(rep.Epochs, EpochStats{Epoch: ep, Loss: l, HR20: res[bi].hr20, MRR20: res[bi].mrr20})
		log.Info("validation", "epoch", ep, "prior_weight", val.betas[bi], "hr@20", res[bi].hr20, "mrr@20", res[bi].mrr20)
		return nil
	})
	if err != nil {
		return nil, 0, nil, err
	}
	return f, loss, last, nil
}

func toF32(x []float64, scale float64) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(v * scale)
	}
	return out
}

// validator scores held-out prefix→next cases of a corpus with full ranking.
type validator struct {
	c       *corpus
	ex      examples
	lp      []float32 // log(1 + count) over the fit sessions
	betas   []float64
	w       Weighting
	workers int
}

func newValidator(c *corpus, nFit int, cfg Config) *validator {
	v := &validator{c: c, betas: cfg.PriorWeights, w: cfg.Weighting, workers: cfg.workers()}
	if len(v.betas) == 0 {
		v.betas = []float64{0}
	}
	tail := &corpus{itemIDs: c.itemIDs, items: c.items, types: c.types, offsets: c.offsets[nFit:]}
	all := makeExamples(tail, tail.numSessions(), 0)
	idx := make([]int, len(all.pos))
	for i := range idx {
		idx[i] = i
	}
	if len(idx) > cfg.ValidCases {
		rng := rand.New(rand.NewPCG(cfg.Seed, 0x7a11d))
		rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		idx = idx[:cfg.ValidCases]
		slices.Sort(idx)
	}
	for _, i := range idx {
		st := all.start[i]
		if mx := int32(cfg.Weighting.MaxItems); mx > 0 && all.pos[i]-st > mx {
			st = all.pos[i] - mx
		}
		v.ex.start = append(v.ex.start, st)
		v.ex.pos = append(v.ex.pos, all.pos[i])
	}
	cnt := countItems(c, nFit)
	v.lp = make([]float32, len(cnt))
	for i, n := range cnt {
		v.lp[i] = float32(math.Log1p(n))
	}
	return v
}

type valMetrics struct{ hr20, mrr20, hr10, ndcg10 float64 }

func (m valMetrics) asMap() map[string]float64 {
	return map[string]float64{"hr@10": m.hr10, "hr@20": m.hr20, "mrr@20": m.mrr20, "ndcg@10": m.ndcg10}
}

// bestBeta picks the prior weight with the highest HR@20 + MRR@20.
func bestBeta(res []valMetrics) int {
	best := 0
	for i, r := range res {
		if r.hr20+r.mrr20 > res[best].hr20+res[best].mrr20 {
			best = i
		}
	}
	return best
}

// evalServed scores every case with the pure-Go scorer, as the hot path
// serves m (with retrieval: among the session's candidates), and returns the
// metrics of the target's rank in the top 20.
func (v *validator) evalServed(m *Model) valMetrics {
	nc := len(v.ex.pos)
	const block = 64
	nb := (nc + block - 1) / block
	ranks := make([]int32, nc)
	parallelFor(nb, 1, v.workers, func(_, lo, hi int) {
		s, err := NewScorer(m)
		if err != nil {
			panic(err) // m was built here and is valid
		}
		in := make([]Input, block)
		out := make([][]Rec, block)
		for b := lo; b < hi; b++ {
			first, last := b*block, min((b+1)*block, nc)
			for r := first; r < last; r++ {
				st, pos := v.ex.start[r], v.ex.pos[r]
				x := &in[r-first]
				x.Items = v.c.items[st:pos]
				if v.c.types == nil {
					x.Weights = v.w.ViewWeights(int(pos-st), x.Weights)
				} else {
					x.Weights = v.w.Weights(v.c.types[st:pos], x.Weights)
				}
			}
			if err := s.Score(in[:last-first], 20, out[:last-first]); err != nil {
				panic(err)
			}
			for r := first; r < last; r++ {
				tgt := v.c.items[v.ex.pos[r]]
				ranks[r] = 0
				for i, rec := range out[r-first] {
					if rec.Index == tgt {
						ranks[r] = int32(i + 1)
						break
					}
				}
			}
		}
	})
	var mt valMetrics
	for _, r := range ranks {
		if r == 0 {
			continue
		}
		mt.hr20++
		mt.mrr20 += 1 / float64(r)
		if r <= 10 {
			mt.hr10++
			mt.ndcg10 += 1 / math.Log2(float64(r)+1)
		}
	}
	if nc > 0 {
		mt.hr20 /= float64(nc)
		mt.mrr20 /= float64(nc)
		mt.hr10 /= float64(nc)
		mt.ndcg10 /= float64(nc)
	}
	return mt
}

// eval ranks every case's target among all items (ties to the lower index, as
// the scorer does) for each prior weight and returns the metrics per weight.
func (v *validator) eval(f *factors) []valMetrics {
	k, n := f.k, f.n
	fp, fy := f.serving()
	nc := len(v.ex.pos)
	nb := len(v.betas)
	ranks := make([]int32, nc*nb)
	const block = 64
	u := make([]float32, block*k)
	s := make([]float32, block*n)
	var w []float32
	for lo := 0; lo < nc; lo += block {
		hi := min(lo+block, nc)
		b := hi - lo
		clear(u)
		for r := 0; r < b; r++ {
			st, pos := v.ex.start[lo+r], v.ex.pos[lo+r]
			if v.c.types == nil {
				w = v.w.ViewWeights(int(pos-st), w)
			} else {
				w = v.w.Weights(v.c.types[st:pos], w)
			}
			for j, it := range v.c.items[st:pos] {
				saxpy(w[j], fp[int(it)*k:int(it)*k+k], u[r*k:r*k+k])
			}
		}
		U := blas32.General{Rows: b, Cols: k, Stride: k, Data: u[:b*k]}
		Y := blas32.General{Rows: n, Cols: k, Stride: k, Data: fy}
		S := blas32.General{Rows: b, Cols: n, Stride: n, Data: s[:b*n]}
		blas32.Gemm(blas.NoTrans, blas.Trans, 1, U, Y, 0, S)
		parallelFor(b*nb, 8, v.workers, func(_, l, h int) {
			for x := l; x < h; x++ {
				r, bi := x/nb, x%nb
				row := s[r*n : r*n+n]
				tgt := int(v.c.items[v.ex.pos[lo+r]])
				beta := float32(v.betas[bi])
				ts := row[tgt] + beta*v.lp[tgt]
				rank := int32(1)
				for i, sc := range row {
					sc += beta * v.lp[i]
					if sc > ts || (sc == ts && i < tgt) {
						rank++
					}
				}
				ranks[(lo+r)*nb+bi] = rank
			}
		})
	}
	out := make([]valMetrics, nb)
	for bi := range out {
		var m valMetrics
		for c := 0; c < nc; c++ {
			r := float64(ranks[c*nb+bi])
			if r <= 20 {
				m.hr20++
				m.mrr20 += 1 / r
			}
			if r <= 10 {
				m.hr10++
				m.ndcg10 += 1 / math.Log2(r+1)
			}
		}
		if nc > 0 {
			m.hr20 /= float64(nc)
			m.mrr20 /= float64(nc)
			m.hr10 /= float64(nc)
			m.ndcg10 /= float64(nc)
		}
		out[bi] = m
	}
	return out
}
