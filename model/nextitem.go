package model

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// nextItemConfig holds the hyperparameters of the next-item refinement.
type nextItemConfig struct {
	epochs    int
	batch     int
	negatives int
	lr        float64
	negExp    float64
	l2        float64
	workers   int
	seed      uint64
	weighting Weighting
	// tied shares one embedding E between the session and the items:
	// P = Ê and Y = Ê/temperature, Ê being E with unit rows.
	tied        bool
	temperature float64
	// lrDecay lowers the step size linearly to a tenth over the training.
	lrDecay bool
}

// factors are the trainable parameters, n×k: projection P and item factors Y,
// or, when tied, the one embedding E (in y; p is nil).
type factors struct {
	n, k        int
	p, y        []float32
	tied        bool
	temperature float32
}

// serving returns the P and Y the online formula uses: for tied factors
// P = Ê and Y = Ê/temperature with Ê the row-normalised E.
func (f *factors) serving() (p, y []float32) {
	if !f.tied {
		return f.p, f.y
	}
	k := f.k
	p = make([]float32, len(f.y))
	y = make([]float32, len(f.y))
	for i := 0; i < f.n; i++ {
		e := f.y[i*k : i*k+k]
		inv := invNorm(e)
		for j, v := range e {
			p[i*k+j] = v * inv
			y[i*k+j] = v * inv / f.temperature
		}
	}
	return p, y
}

// invNorm is 1/‖e‖ (0 for a zero row).
func invNorm(e []float32) float32 {
	var ss float32
	for _, v := range e {
		ss += v * v
	}
	if ss == 0 {
		return 0
	}
	return float32(1 / math.Sqrt(float64(ss)))
}

// examples are the (prefix, next item) pairs of a corpus: the prefix of
// example e is items[start[e]:pos[e]] and its target items[pos[e]].
type examples struct {
	start, pos []int32
}

func makeExamples(c *corpus, sessions int, maxItems int) examples {
	var ex examples
	for s := 0; s < sessions; s++ {
		lo, hi := int(c.offsets[s]), int(c.offsets[s+1])
		for t := lo + 1; t < hi; t++ {
			st := lo
			if maxItems > 0 && t-st > maxItems {
				st = t - maxItems
			}
			ex.start = append(ex.start, int32(st))
			ex.pos = append(ex.pos, int32(t))
		}
	}
	return ex
}

// aliasSampler draws item indexes from a fixed discrete distribution in O(1).
type aliasSampler struct {
	prob  []float64
	alias []int32
}

func newAliasSampler(w []float64) *aliasSampler {
	n := len(w)
	var sum float64
	for _, v := range w {
		sum += v
	}
	a := &aliasSampler{prob: make([]float64, n), alias: make([]int32, n)}
	scaled := make([]float64, n)
	var small, large []int32
	for i, v := range w {
		scaled[i] = v / sum * float64(n)
		if scaled[i] < 1 {
			small = append(small, int32(i))
		} else {
			large = append(large, int32(i))
		}
	}
	for len(small) > 0 && len(large) > 0 {
		s, l := small[len(small)-1], large[len(large)-1]
		small = small[:len(small)-1]
		a.prob[s] = scaled[s]
		a.alias[s] = l
		scaled[l] += scaled[s] - 1
		if scaled[l] < 1 {
			large = large[:len(large)-1]
			small = append(small, l)
		}
	}
	for _, i := range large {
		a.prob[i] = 1
	}
	for _, i := range small {
		a.prob[i] = 1
	}
	return a
}

func (a *aliasSampler) draw(r *rand.Rand) int32 {
	i := r.IntN(len(a.prob))
	if r.Float64() < a.prob[i] {
		return int32(i)
	}
	return a.alias[i]
}

// adam is a lazy (row-sparse) Adam optimiser over an n×k parameter matrix:
// only rows with a gradient in a step are updated, as in LazyAdam.
type adam struct {
	k    int
	m, v []float32
}

func newAdam(n, k int) *adam { return &adam{k: k, m: make([]float32, n*k), v: make([]float32, n*k)} }

const (
	adamB1  = 0.9
	adamB2  = 0.999
	adamEps = 1e-8
)

// update applies gradient g (k floats) to row r of param with step size lr
// (already bias-corrected).
func (o *adam) update(param []float32, r int, g []float32, lr float32) {
	k := o.k
	m := o.m[r*k : r*k+k]
	v := o.v[r*k : r*k+k]
	p := param[r*k : r*k+k]
	for i, gi := range g[:k] {
		mi := adamB1*m[i] + (1-adamB1)*gi
		vi := adamB2*v[i] + (1-adamB2)*gi*gi
		m[i], v[i] = mi, vi
		p[i] -= lr * mi / (float32(math.Sqrt(float64(vi))) + adamEps)
	}
}

// nextItemTrainer learns the factors so that softmax_i(u·Y[i]) with
// u = Σ_j w_j P[item_j] predicts the next item of a session prefix. The
// softmax is sampled: each batch scores its own targets plus negatives drawn
// from count^negExp, with every candidate's logit corrected by the log of its
// probability of being in the candidate set (Jean et al. 2015; Yi et al. 2019).
// Tied factors are the CORE-ave encoder (Hou et al. 2022): P and Y are the
// same unit-norm item embeddings, the logits their dot product over a
// temperature.
type nextItemTrainer struct {
	cfg     nextItemConfig
	c       *corpus
	f       *factors
	ex      examples
	sampler *aliasSampler
	logPi   []float32 // log inclusion probability of each item as a candidate
	optP    *adam
	optY    *adam
	step    int
	steps   int // total steps of the run

	// per-batch buffers
	u, yc, logits, du, dyc []float32
	yct, gt, ut            []float32
	nrm, inv, gs           []float32 // tied: unit rows, 1/‖E‖ and gradients per slot
	gp                     []float32 // untied: P gradients per slot
	cand                   []int32   // candidate items (columns)
	tcol                   []int32   // each example's target column
	mark, stamp            []int32   // item → column, valid when stamp == step
	slot, pstamp           []int32   // item → slot, valid when pstamp == step
	touched                []int32   // slot → item
	w                      [][]float32
	lossPart               []float64
}

func newNextItemTrainer(c *corpus, sessions int, f *factors, cfg nextItemConfig) *nextItemTrainer {
	n := f.n
	ex := makeExamples(c, sessions, cfg.weighting.MaxItems)
	cnt := make([]float64, n)
	for e := range ex.pos {
		cnt[c.items[ex.pos[e]]]++
	}
	q := make([]float64, n)
	var qs float64
	for i, v := range cnt {
		q[i] = math.Pow(max(v, 1), cfg.negExp)
		qs += q[i]
	}
	t := &nextItemTrainer{cfg: cfg, c: c, f: f, ex: ex, sampler: newAliasSampler(q), logPi: make([]float32, n),
		optY: newAdam(n, f.k), mark: make([]int32, n), stamp: make([]int32, n), slot: make([]int32, n), pstamp: make([]int32, n)}
	if !cfg.tied {
		t.optP = newAdam(n, f.k)
	}
	total := float64(len(ex.pos))
	for i := range q {
		// P(item i is among the batch's targets or the sampled negatives).
		notNeg := math.Pow(1-q[i]/qs, float64(cfg.negatives))
		notTgt := math.Pow(1-cnt[i]/total, float64(cfg.batch))
		pi := 1 - notNeg*notTgt
		t.logPi[i] = float32(math.Log(max(pi, 1e-12)))
	}
	return t
}

// run trains for cfg.epochs epochs, calling after(epoch, loss) after each.
func (t *nextItemTrainer) run(ctx context.Context, log *slog.Logger, after func(epoch int, loss float64) error) error {
	ne := len(t.ex.pos)
	if ne == 0 {
		return fmt.Errorf("next-item: no session has two or more events")
	}
	order := make([]int32, ne)
	for i := range order {
		order[i] = int32(i)
	}
	t.steps = t.cfg.epochs * ((ne + t.cfg.batch - 1) / t.cfg.batch)
	for ep := 1; ep <= t.cfg.epochs; ep++ {
		t0 := time.Now()
		rng := rand.New(rand.NewPCG(t.cfg.seed, uint64(ep)))
		rng.Shuffle(ne, func(i, j int) { order[i], order[j] = order[j], order[i] })
		var loss float64
		nb := 0
		lastLog := time.Now()
		for lo := 0; lo < ne; lo += t.cfg.batch {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("next-item: %w", err)
			}
			hi := min(lo+t.cfg.batch, ne)
			loss += t.batch(order[lo:hi], rng)
			nb++
			if time.Since(lastLog) > 15*time.Second {
				log.Info("next-item progress", "epoch", ep, "done", fmt.Sprintf("%.0f%%", 100*float64(hi)/float64(ne)), "loss", loss/float64(nb))
				lastLog = time.Now()
			}
		}
		loss /= float64(nb)
		log.Info("next-item epoch", "epoch", ep, "of", t.cfg.epochs, "sampled_softmax_loss", loss, "examples", ne, "took", time.Since(t0).Round(time.Millisecond))
		if after != nil {
			if err := after(ep, loss); err != nil {
				return err
			}
		}
	}
	return nil
}

func growF(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

// batch performs one optimisation step on the examples idx and returns the
// mean sampled-softmax loss.
func (t *nextItemTrainer) batch(idx []int32, rng *rand.Rand) float64 {
	k, c := t.f.k, t.c
	b := len(idx)
	t.step++
	st := int32(t.step)

	// Candidates: the batch's targets first, then sampled negatives, unique.
	t.cand = t.cand[:0]
	t.tcol = t.tcol[:0]
	add := func(it int32) int32 {
		if t.stamp[it] != st {
			t.stamp[it] = st
			t.mark[it] = int32(len(t.cand))
			t.cand = append(t.cand, it)
		}
		return t.mark[it]
	}
	for _, e := range idx {
		t.tcol = append(t.tcol, add(c.items[t.ex.pos[e]]))
	}
	for s := 0; s < t.cfg.negatives; s++ {
		add(t.sampler.draw(rng))
	}
	m := len(t.cand)

	// Fold-in weights of every prefix.
	if len(t.w) < b {
		t.w = append(t.w, make([][]float32, b-len(t.w))...)
	}
	wt := t.cfg.weighting
	for r, e := range idx {
		lo, hi := t.ex.start[e], t.ex.pos[e]
		if c.types == nil {
			t.w[r] = wt.ViewWeights(int(hi-lo), t.w[r])
		} else {
			t.w[r] = wt.Weights(c.types[lo:hi], t.w[r])
		}
	}

	// Session vectors U (b×k) and candidate rows Yc (m×k).
	t.u = growF(t.u, b*k)
	clear(t.u)
	alpha := float32(1)
	if t.cfg.tied {
		alpha = 1 / t.f.temperature
		t.gatherTied(idx, st)
	} else {
		t.yc = growF(t.yc, m*k)
		for j, it := range t.cand {
			copy(t.yc[j*k:j*k+k], t.f.y[int(it)*k:int(it)*k+k])
		}
		for r, e := range idx {
			ur := t.u[r*k : r*k+k]
			for j, it := range c.items[t.ex.start[e]:t.ex.pos[e]] {
				saxpy(t.w[r][j], t.f.p[int(it)*k:int(it)*k+k], ur)
			}
		}
	}

	loss := t.forwardBackward(b, m, alpha)

	base := t.cfg.lr
	if t.cfg.lrDecay && t.steps > 0 {
		base *= 1 - 0.9*float64(t.step-1)/float64(t.steps)
	}
	lr := float32(base * math.Sqrt(1-math.Pow(adamB2, float64(t.step))) / (1 - math.Pow(adamB1, float64(t.step))))
	if t.cfg.tied {
		t.updateTied(idx, lr)
	} else {
		t.updateUntied(idx, st, lr)
	}
	return loss / float64(b)
}

// slotOf returns item it's slot in this step, adding it to touched if new.
func (t *nextItemTrainer) slotOf(it int32, st int32) (s int32, isNew bool) {
	if t.pstamp[it] != st {
		t.pstamp[it] = st
		t.slot[it] = int32(len(t.touched))
		t.touched = append(t.touched, it)
		return t.slot[it], true
	}
	return t.slot[it], false
}

// gatherTied normalises the rows of every item the step touches: the
// candidates first (so slot == column and nrm[:m·k] is Yc), then the prefix
// items; and folds the prefixes into U.
func (t *nextItemTrainer) gatherTied(idx []int32, st int32) {
	k, c, e := t.f.k, t.c, t.f.y
	t.touched = t.touched[:0]
	for _, it := range t.cand {
		t.slotOf(it, st)
	}
	for _, x := range idx {
		for _, it := range c.items[t.ex.start[x]:t.ex.pos[x]] {
			t.slotOf(it, st)
		}
	}
	ns := len(t.touched)
	t.nrm = growF(t.nrm, ns*k)
	t.inv = growF(t.inv, ns)
	for s, it := range t.touched {
		row := e[int(it)*k : int(it)*k+k]
		inv := invNorm(row)
		t.inv[s] = inv
		dst := t.nrm[s*k : s*k+k]
		for j, v := range row {
			dst[j] = v * inv
		}
	}
	t.yc = t.nrm[:len(t.cand)*k]
	for r, x := range idx {
		ur := t.u[r*k : r*k+k]
		for j, it := range c.items[t.ex.start[x]:t.ex.pos[x]] {
			s := int(t.slot[it])
			saxpy(t.w[r][j], t.nrm[s*k:s*k+k], ur)
		}
	}
}

// forwardBackward computes the logits alpha·U·Ycᵀ, the sampled softmax, its
// mean loss (returned, summed over rows) and the gradients dU and dYc.
// Every product is an A·Bᵀ product, gonum's fastest form.
func (t *nextItemTrainer) forwardBackward(b, m int, alpha float32) float64 {
	k := t.f.k
	t.logits = growF(t.logits, b*m)
	U := blas32.General{Rows: b, Cols: k, Stride: k, Data: t.u}
	Yc := blas32.General{Rows: m, Cols: k, Stride: k, Data: t.yc}
	L := blas32.General{Rows: b, Cols: m, Stride: m, Data: t.logits}
	blas32.Gemm(blas.NoTrans, blas.Trans, alpha, U, Yc, 0, L)
	const rowBlock = 16
	nparts := (b + rowBlock - 1) / rowBlock
	if cap(t.lossPart) < nparts {
		t.lossPart = make([]float64, nparts)
	}
	t.lossPart = t.lossPart[:nparts]
	invB := 1 / float32(b)
	parallelFor(b, rowBlock, t.cfg.workers, func(blk, lo, hi int) {
		var loss float64
		for r := lo; r < hi; r++ {
			row := t.logits[r*m : r*m+m]
			mx := float32(math.Inf(-1))
			for j, it := range t.cand {
				v := row[j] - t.logPi[it]
				row[j] = v
				mx = max(mx, v)
			}
			var sum float32
			for j, v := range row {
				e := exp32(v - mx)
				row[j] = e
				sum += e
			}
			tc := t.tcol[r]
			loss += math.Log(float64(sum)) - math.Log(max(float64(row[tc]), 1e-30))
			inv := invB / sum
			for j := range row {
				row[j] *= inv
			}
			row[tc] -= invB
		}
		t.lossPart[blk] = loss
	})
	var loss float64
	for _, l := range t.lossPart {
		loss += l
	}
	// dU = alpha·G·Yc = alpha·G·(Ycᵀ)ᵀ and dYc = alpha·Gᵀ·U = alpha·Gᵀ·(Uᵀ)ᵀ.
	t.yct = growF(t.yct, k*m)
	transpose(t.yc, m, k, t.yct)
	t.gt = growF(t.gt, m*b)
	transpose(t.logits, b, m, t.gt)
	t.ut = growF(t.ut, k*b)
	transpose(t.u, b, k, t.ut)
	t.du = growF(t.du, b*k)
	t.dyc = growF(t.dyc, m*k)
	dU := blas32.General{Rows: b, Cols: k, Stride: k, Data: t.du}
	dYc := blas32.General{Rows: m, Cols: k, Stride: k, Data: t.dyc}
	blas32.Gemm(blas.NoTrans, blas.Trans, alpha, L, blas32.General{Rows: k, Cols: m, Stride: m, Data: t.yct}, 0, dU)
	blas32.Gemm(blas.NoTrans, blas.Trans, alpha, blas32.General{Rows: m, Cols: b, Stride: b, Data: t.gt},
		blas32.General{Rows: k, Cols: b, Stride: b, Data: t.ut}, 0, dYc)
	return loss
}

// updateTied back-propagates the gradients through the row normalisation and
// applies Adam to every touched row of E.
func (t *nextItemTrainer) updateTied(idx []int32, lr float32) {
	k, c := t.f.k, t.c
	ns, m := len(t.touched), len(t.cand)
	t.gs = growF(t.gs, ns*k)
	copy(t.gs, t.dyc[:m*k])
	clear(t.gs[m*k:])
	for r, x := range idx {
		for j, it := range c.items[t.ex.start[x]:t.ex.pos[x]] {
			s := int(t.slot[it])
			saxpy(t.w[r][j], t.du[r*k:r*k+k], t.gs[s*k:s*k+k])
		}
	}
	l2 := float32(t.cfg.l2)
	parallelFor(ns, 64, t.cfg.workers, func(_, lo, hi int) {
		for s := lo; s < hi; s++ {
			g := t.gs[s*k : s*k+k]
			y := t.nrm[s*k : s*k+k]
			// d‖e‖-normalised/de: (I − ŷŷᵀ)/‖e‖.
			var d float32
			for j, v := range g {
				d += v * y[j]
			}
			inv := t.inv[s]
			for j := range g {
				g[j] = (g[j] - d*y[j]) * inv
			}
			it := int(t.touched[s])
			if l2 > 0 {
				saxpy(l2, t.f.y[it*k:it*k+k], g)
			}
			t.optY.update(t.f.y, it, g, lr)
		}
	})
}

// updateUntied scatters dU into the prefix items' P rows and applies Adam to
// the touched rows of P and the candidate rows of Y.
func (t *nextItemTrainer) updateUntied(idx []int32, st int32, lr float32) {
	k, c := t.f.k, t.c
	t.touched = t.touched[:0]
	for r, x := range idx {
		for j, it := range c.items[t.ex.start[x]:t.ex.pos[x]] {
			s, isNew := t.slotOf(it, st)
			if isNew {
				t.gp = extendF(t.gp, len(t.touched)*k)
				clear(t.gp[int(s)*k:])
			}
			saxpy(t.w[r][j], t.du[r*k:r*k+k], t.gp[int(s)*k:int(s)*k+k])
		}
	}
	m := len(t.cand)
	l2 := float32(t.cfg.l2)
	parallelFor(len(t.touched)+m, 64, t.cfg.workers, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			if i < len(t.touched) {
				it := int(t.touched[i])
				g := t.gp[i*k : i*k+k]
				if l2 > 0 {
					saxpy(l2, t.f.p[it*k:it*k+k], g)
				}
				t.optP.update(t.f.p, it, g, lr)
				continue
			}
			j := i - len(t.touched)
			it := int(t.cand[j])
			g := t.dyc[j*k : j*k+k]
			if l2 > 0 {
				saxpy(l2, t.f.y[it*k:it*k+k], g)
			}
			t.optY.update(t.f.y, it, g, lr)
		}
	})
}

// extendF returns b resized to n, keeping its contents.
func extendF(b []float32, n int) []float32 {
	if cap(b) >= n {
		return b[:n]
	}
	nb := make([]float32, n, max(n, 2*cap(b)))
	copy(nb, b)
	return nb
}

// saxpy: y += a·x (float32).
func saxpy(a float32, x, y []float32) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] += a * v
	}
}

// transpose writes the r×c row-major matrix a into at as c×r, in cache blocks.
func transpose(a []float32, r, c int, at []float32) {
	const bs = 32
	for i0 := 0; i0 < r; i0 += bs {
		i1 := min(i0+bs, r)
		for j0 := 0; j0 < c; j0 += bs {
			j1 := min(j0+bs, c)
			for i := i0; i < i1; i++ {
				row := a[i*c : i*c+c]
				for j := j0; j < j1; j++ {
					at[j*r+i] = row[j]
				}
			}
		}
	}
}

// exp32 is e^x in float32 for x ≤ 88, with a relative error below
// 1e-7·|x| + 3e-6 (0 below −87): precise enough for softmax gradients and
// several times faster than math.Exp.
func exp32(x float32) float32 {
	if x < -87 {
		return 0
	}
	t := x * 1.4426950408889634 // log2(e)
	n := int32(t)
	if float32(n) > t {
		n--
	}
	f := t - float32(n) // [0, 1)
	// 2^f by its Taylor series in f·ln2, degree 7.
	const (
		c1 = 0.6931471805599453
		c2 = 0.2402265069591007
		c3 = 0.05550410866482158
		c4 = 0.009618129107628477
		c5 = 0.0013333558146428443
		c6 = 0.00015403530393381606
		c7 = 1.525273380405984e-05
	)
	p := 1 + f*(c1+f*(c2+f*(c3+f*(c4+f*(c5+f*(c6+f*c7))))))
	return p * math.Float32frombits(uint32(n+127)<<23)
}
