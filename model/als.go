package model

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"gonum.org/v1/gonum/mat"
)

// csr is a sparse matrix in compressed sparse row form; data holds the raw
// interaction strength r (sum of event-type weights).
type csr struct {
	rows, cols int
	indptr     []int32
	indices    []int32
	data       []float32
}

func (m *csr) row(i int) ([]int32, []float32) {
	lo, hi := m.indptr[i], m.indptr[i+1]
	return m.indices[lo:hi], m.data[lo:hi]
}

// transpose returns mᵀ with each row's columns in ascending order.
func (m *csr) transpose() *csr {
	t := &csr{rows: m.cols, cols: m.rows, indptr: make([]int32, m.cols+1), indices: make([]int32, len(m.indices)), data: make([]float32, len(m.data))}
	for _, j := range m.indices {
		t.indptr[j+1]++
	}
	for j := 0; j < m.cols; j++ {
		t.indptr[j+1] += t.indptr[j]
	}
	next := slices.Clone(t.indptr[:m.cols])
	for i := 0; i < m.rows; i++ {
		cols, vals := m.row(i)
		for k, j := range cols {
			p := next[j]
			t.indices[p] = int32(i)
			t.data[p] = vals[k]
			next[j]++
		}
	}
	return t
}

// interactions builds the session × item matrix of a corpus: r[s,i] is the sum
// of the type weights of session s's events on item i.
func interactions(c *corpus, w Weighting) *csr {
	n := c.numSessions()
	m := &csr{rows: n, cols: len(c.itemIDs), indptr: make([]int32, 1, n+1)}
	acc := map[int32]float32{}
	var keys []int32
	for s := 0; s < n; s++ {
		items, types := c.session(s)
		clear(acc)
		keys = keys[:0]
		for j, it := range items {
			tw := w.View
			if types != nil {
				tw = w.TypeWeight(types[j])
			}
			if _, ok := acc[it]; !ok {
				keys = append(keys, it)
			}
			acc[it] += tw
		}
		slices.Sort(keys)
		for _, it := range keys {
			m.indices = append(m.indices, it)
			m.data = append(m.data, acc[it])
		}
		m.indptr = append(m.indptr, int32(len(m.indices)))
	}
	return m
}

// alsConfig holds the implicit-feedback ALS hyperparameters.
type alsConfig struct {
	factors    int
	iterations int
	alpha      float64 // confidence c = 1 + alpha·r
	lambda     float64 // L2 regularisation
	cgSteps    int
	workers    int
	seed       uint64
}

// alsModel is the result of ALS: row factors X (sessions) and item factors Y,
// both row-major float64.
type alsModel struct {
	k    int
	x, y []float64
	loss float64
}

// trainALS fits implicit-feedback ALS (Hu, Koren & Volinsky 2008) to r:
// minimise Σ c_ui (p_ui − x_u·y_i)² + λ(Σ‖x_u‖² + Σ‖y_i‖²) over all cells, with
// p_ui = 1 and c_ui = 1 + α·r_ui where r_ui > 0, p = 0 and c = 1 elsewhere. Each
// half-step solves every row's least-squares problem with a few warm-started
// conjugate-gradient steps (the approach of Takács et al. 2011), in parallel
// over rows. The result depends only on the seed, not on the worker count.
func trainALS(ctx context.Context, r *csr, cfg alsConfig, log *slog.Logger) (*alsModel, error) {
	k := cfg.factors
	rng := rand.New(rand.NewPCG(cfg.seed, 0xa15))
	m := &alsModel{k: k, x: make([]float64, r.rows*k), y: make([]float64, r.cols*k)}
	scale := 0.01
	for i := range m.x {
		m.x[i] = rng.NormFloat64() * scale
	}
	for i := range m.y {
		m.y[i] = rng.NormFloat64() * scale
	}
	rt := r.transpose()
	for it := 1; it <= cfg.iterations; it++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("als: %w", err)
		}
		t0 := time.Now()
		alsHalfStep(r, m.x, m.y, k, cfg)
		alsHalfStep(rt, m.y, m.x, k, cfg)
		m.loss = alsLoss(r, m.x, m.y, k, cfg)
		if math.IsNaN(m.loss) || math.IsInf(m.loss, 0) {
			return nil, fmt.Errorf("als: loss diverged at iteration %d", it)
		}
		log.Info("als iteration", "iter", it, "of", cfg.iterations, "loss", m.loss, "took", time.Since(t0).Round(time.Millisecond))
	}
	return m, nil
}

// gram returns FᵀF + reg·I (k×k, row-major) for the n×k factors f.
func gram(f []float64, k int, reg float64) []float64 {
	n := len(f) / k
	fm := mat.NewDense(n, k, f)
	var g mat.SymDense
	g.SymOuterK(1, fm.T())
	out := make([]float64, k*k)
	for i := 0; i < k; i++ {
		for j := 0; j < k; j++ {
			out[i*k+j] = g.At(i, j)
		}
		out[i*k+i] += reg
	}
	return out
}

// alsHalfStep recomputes every row of x from the fixed factors y.
func alsHalfStep(r *csr, x, y []float64, k int, cfg alsConfig) {
	g := gram(y, k, cfg.lambda)
	alpha := cfg.alpha
	steps := cfg.cgSteps
	parallelFor(r.rows, 256, cfg.workers, func(_, lo, hi int) {
		rv := make([]float64, k)
		p := make([]float64, k)
		ap := make([]float64, k)
		for u := lo; u < hi; u++ {
			cols, vals := r.row(u)
			xu := x[u*k : u*k+k]
			// r = Yᵀ C p − (YᵀY + λI + Yᵀ(C − I)Y) x
			symv(g, xu, rv, k)
			for i := range rv {
				rv[i] = -rv[i]
			}
			for n, j := range cols {
				yj := y[int(j)*k : int(j)*k+k]
				c := 1 + alpha*float64(vals[n])
				axpy(c-(c-1)*dot(yj, xu), yj, rv)
			}
			copy(p, rv)
			rsold := dot(rv, rv)
			if rsold < 1e-20 {
				continue
			}
			for it := 0; it < steps; it++ {
				symv(g, p, ap, k)
				for n, j := range cols {
					yj := y[int(j)*k : int(j)*k+k]
					c := 1 + alpha*float64(vals[n])
					axpy((c-1)*dot(yj, p), yj, ap)
				}
				a := rsold / dot(p, ap)
				axpy(a, p, xu)
				axpy(-a, ap, rv)
				rsnew := dot(rv, rv)
				if rsnew < 1e-20 {
					break
				}
				beta := rsnew / rsold
				for i := range p {
					p[i] = rv[i] + beta*p[i]
				}
				rsold = rsnew
			}
		}
	})
}

// alsLoss is the ALS objective divided by the total confidence mass, as in the
// implicit library: (Σ_all c(p − x·y)² + λ(‖X‖² + ‖Y‖²)) / (Σ c over all cells).
func alsLoss(r *csr, x, y []float64, k int, cfg alsConfig) float64 {
	g := gram(y, k, 0)
	const block = 1024
	parts := make([]float64, (r.rows+block-1)/block)
	conf := make([]float64, len(parts))
	parallelFor(r.rows, block, cfg.workers, func(b, lo, hi int) {
		gx := make([]float64, k)
		var loss, tc float64
		for u := lo; u < hi; u++ {
			xu := x[u*k : u*k+k]
			symv(g, xu, gx, k)
			loss += dot(xu, gx) + cfg.lambda*dot(xu, xu)
			cols, vals := r.row(u)
			for n, j := range cols {
				c := 1 + cfg.alpha*float64(vals[n])
				pr := dot(xu, y[int(j)*k:int(j)*k+k])
				loss += c*(1-pr)*(1-pr) - pr*pr
				tc += c - 1
			}
		}
		parts[b], conf[b] = loss, tc
	})
	var loss, tc float64
	for b := range parts {
		loss += parts[b]
		tc += conf[b]
	}
	loss += cfg.lambda * dotSelf(y)
	return loss / (tc + float64(r.rows)*float64(r.cols))
}

func dot(a, b []float64) float64 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

func dotSelf(a []float64) float64 { return dot(a, a) }

// axpy: y += a·x.
func axpy(a float64, x, y []float64) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] += a * v
	}
}

// symv: out = g·v for the k×k row-major matrix g.
func symv(g, v, out []float64, k int) {
	for i := 0; i < k; i++ {
		out[i] = dot(g[i*k:i*k+k], v)
	}
}

// foldIn returns the ALS fold-in projection P = Y (YᵀY + λI)⁻¹ (n×k): for a
// session with interaction weights w_j and uniform confidence, the ALS user
// solve gives u = (YᵀY + λI)⁻¹ Σ_j w_j y_j = Σ_j w_j P[j].
func foldIn(y []float64, k int, lambda float64) ([]float64, error) {
	n := len(y) / k
	g := gram(y, k, lambda)
	var ch mat.Cholesky
	if ok := ch.Factorize(mat.NewSymDense(k, g)); !ok {
		return nil, fmt.Errorf("fold-in: YᵀY + λI is not positive definite")
	}
	var inv mat.SymDense
	if err := ch.InverseTo(&inv); err != nil {
		return nil, fmt.Errorf("fold-in: invert YᵀY + λI: %w", err)
	}
	var p mat.Dense
	p.Mul(mat.NewDense(n, k, y), &inv)
	return p.RawMatrix().Data, nil
}
