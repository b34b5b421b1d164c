package model

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// Retrieval, then ranking. A model trained with retrieval carries, for every
// item, its nearest neighbours by session co-occurrence (computed at training
// time), and a short list of the most popular items. A session is ranked among
// its candidates only: its own items (newest first), their neighbours and the
// popular items, deduplicated and without excluded items, at most
// MaxCandidates of them. Both scorers (pure Go and ONNX Runtime) rank the same
// candidates, built by Candidates, so the cost of a click no longer grows with
// the catalogue.

// RetrievalConfig configures the candidate retrieval built at training time.
type RetrievalConfig struct {
	// Neighbors is the number of co-occurrence neighbours kept per item; 0
	// trains a model without retrieval (every click scores the whole catalogue).
	Neighbors int `json:"neighbors"`
	// Window is how many positions apart two events of a session may be and
	// still count as co-occurring; pairs are weighted 1/distance, and an item
	// seen after another counts Forward times as much as one seen before it.
	Window  int     `json:"window"`
	Forward float64 `json:"forward"`
	// Normalize divides a pair's weight by count(neighbour)^Normalize, so that
	// merely popular items do not crowd every list (0: raw co-occurrence).
	Normalize float64 `json:"normalize"`
	// Embedding is the number of embedding neighbours computed per item: the
	// items the model itself ranks highest after that item alone (P[i]·Y[j] +
	// Prior[j]), interleaved with the co-occurrence neighbours (0: none). The
	// search is exact over the EmbeddingPool most popular items (0: all).
	Embedding     int `json:"embedding"`
	EmbeddingPool int `json:"embedding_pool"`
	// Popular is the number of most popular items added to every session's
	// candidates (and the whole list of a session the model knows nothing of).
	Popular int `json:"popular"`
	// MaxCandidates bounds the candidates ranked per session.
	MaxCandidates int `json:"max_candidates"`
	// SessionItems is how many of a session's newest items retrieval starts
	// from (0: all the fold-in weighs, Weighting.MaxItems).
	SessionItems int `json:"session_items"`
	// NeighborWeights is the grid of Model.NeighborWeight to choose from on
	// the validation split (without one, the first value is taken).
	NeighborWeights []float64 `json:"neighbor_weights"`
}

// DefaultRetrieval is the retrieval DefaultConfig trains (chosen on the
// Diginetica validation split; see Config).
//
// On the last 10% of the Diginetica training sessions (23,176 next-item cases,
// a model fitted on the first 90%), ranking the whole catalogue scores HR@20
// 0.5164, MRR@20 0.1818. Ranking candidates: 100 co-occurrence neighbours
// (window 5) 0.5149 / 0.1821, candidate recall 0.75; window 10 0.5156 /
// 0.1821; 50 + 25 embedding neighbours 0.5170 / 0.1819
// (recall 0.74); 100 + 50 0.5165 / 0.1818 (recall 0.81); 64 + 32 with
// neighbour weight 0.5: 0.5182 / 0.1825; the weight at 1, 2, 4: HR@20 up to
// 0.520, MRR@20 down to 0.161. An embedding pool of the 20,000 most popular
// items instead of all 43,097: 0.5169 / 0.1827. With the weight at 0.5, 256,
// 192 or 128 candidates: 0.5172–0.5174 / 0.1827–0.1828 (recall 0.76, 0.76,
// 0.74); 48 + 24 neighbours and 128 candidates: 0.5173 / 0.1828.
// With 128, 96 or 64 candidates: 0.5174 / 0.1828, 0.5179 / 0.1828, 0.5174 /
// 0.1829; 64 candidates retrieved from the newest 3, 5, 8 or 12 session items
// (instead of 20): 0.5178, 0.5186, 0.5181, 0.5177 / 0.1829–0.1830. Fewer
// candidates and fewer items to start from cost less per click (the rows are
// gathered from memory) and lose nothing here.
var DefaultRetrieval = RetrievalConfig{Neighbors: 64, Embedding: 32, EmbeddingPool: 20_000, Window: 5, Forward: 2, Normalize: 0.25,
	Popular: 32, MaxCandidates: 64, SessionItems: 5, NeighborWeights: []float64{0, 0.25, 0.5, 1}}

// Validate reports an unusable retrieval configuration.
func (r RetrievalConfig) Validate() error {
	switch {
	case r.Neighbors < 0:
		return fmt.Errorf("retrieval: neighbors %d must not be negative", r.Neighbors)
	case r.Neighbors == 0:
		return nil
	case r.Window < 1:
		return fmt.Errorf("retrieval: window %d must be positive", r.Window)
	case !(r.Forward >= 0) || math.IsInf(r.Forward, 0):
		return fmt.Errorf("retrieval: forward weight %v must be finite and not negative", r.Forward)
	case !(r.Normalize >= 0 && r.Normalize <= 1):
		return fmt.Errorf("retrieval: normalize %v must be in [0, 1]", r.Normalize)
	case r.Embedding < 0 || r.EmbeddingPool < 0:
		return fmt.Errorf("retrieval: embedding %d and embedding pool %d must not be negative", r.Embedding, r.EmbeddingPool)
	case r.Popular < 0:
		return fmt.Errorf("retrieval: popular %d must not be negative", r.Popular)
	case r.MaxCandidates < 1:
		return fmt.Errorf("retrieval: max candidates %d must be positive", r.MaxCandidates)
	case r.SessionItems < 0:
		return fmt.Errorf("retrieval: session items %d must not be negative", r.SessionItems)
	}
	for _, g := range r.NeighborWeights {
		if !(g >= 0) || math.IsInf(g, 0) {
			return fmt.Errorf("retrieval: neighbour weight %v must be finite and not negative", g)
		}
	}
	return nil
}

// HasRetrieval reports whether m ranks candidates (true) or the whole
// catalogue (false: a model trained without neighbours, or before they
// existed).
func (m *Model) HasRetrieval() bool { return m.NumNeighbors > 0 }

// Neighbours returns item i's neighbour row: best first, padded with -1.
func (m *Model) Neighbours(i int32) []int32 {
	k := m.NumNeighbors
	return m.Neighbors[int(i)*k : int(i)*k+k]
}

// checkRetrieval reports retrieval tables that do not match the model.
func (m *Model) checkRetrieval() error {
	n := m.NumItems()
	if m.NumNeighbors == 0 {
		if len(m.Neighbors) != 0 || len(m.Popular) != 0 || m.MaxCandidates != 0 || m.NeighborWeight != 0 || m.RetrievalItems != 0 {
			return errors.New("model: retrieval tables without NumNeighbors")
		}
		return nil
	}
	switch {
	case m.NumNeighbors < 0:
		return fmt.Errorf("model: %d neighbours per item", m.NumNeighbors)
	case len(m.Neighbors) != n*m.NumNeighbors:
		return fmt.Errorf("model: %d neighbour entries, want %d×%d", len(m.Neighbors), n, m.NumNeighbors)
	case m.MaxCandidates < 1 || m.RetrievalItems < 0:
		return fmt.Errorf("model: max candidates %d, retrieval items %d", m.MaxCandidates, m.RetrievalItems)
	case !(m.NeighborWeight >= 0) || math.IsInf(float64(m.NeighborWeight), 0):
		return fmt.Errorf("model: neighbour weight %v", m.NeighborWeight)
	}
	for i, v := range m.Neighbors {
		if v < -1 || int(v) >= n {
			return fmt.Errorf("model: neighbour entry %d = %d outside [-1, %d)", i, v, n)
		}
	}
	for i, v := range m.Popular {
		if v < 0 || int(v) >= n {
			return fmt.Errorf("model: popular entry %d = %d outside [0, %d)", i, v, n)
		}
	}
	return nil
}

// Candidates builds the candidate lists of a model with retrieval. It marks
// what a build has seen in a small open-addressing table (a few KB, stamped,
// so nothing is cleared between builds) rather than in an array over the
// whole catalogue: at a million items such an array is 8 MB, and every
// neighbour looked up in it was a cache miss. Nothing is allocated per
// session once the table has grown to the largest build. Not safe for
// concurrent use.
type Candidates struct {
	m     *Model
	slots []seenSlot // len is a power of two
	shift uint       // 32 - log2(len(slots))
	cur   uint32
}

// seenSlot is one item seen by the current build (stamp == Candidates.cur):
// a candidate at pos, or excluded (pos -1).
type seenSlot struct {
	stamp uint32
	item  int32
	pos   int32
}

// NewCandidates returns a candidate builder for m (which must have retrieval).
func NewCandidates(m *Model) *Candidates {
	c := &Candidates{m: m}
	c.grow(m.MaxCandidates + 64)
	return c
}

// grow sizes the table for n marked items at a load of at most 1/4.
func (c *Candidates) grow(n int) {
	size := 64
	for size < 4*n {
		size *= 2
	}
	if size <= len(c.slots) {
		return
	}
	c.slots = make([]seenSlot, size)
	c.shift = uint(32 - bits.Len(uint(size-1)))
	c.cur = 0
}

// slot returns item's slot: marked by this build (stamp == cur) or the free
// slot where it belongs.
func (c *Candidates) slot(item int32) *seenSlot {
	mask := uint32(len(c.slots) - 1)
	for i := (uint32(item) * 0x9E3779B1) >> c.shift; ; i = (i + 1) & mask {
		if s := &c.slots[i]; s.stamp != c.cur || s.item == item {
			return s
		}
	}
}

// Build appends to dst[:0] the candidates of in, and to bias[:0] each one's
// neighbourhood score, in order: the session's items newest first, their
// neighbours (rank by rank: every item's best neighbour, newest item first,
// then every item's second best, …), then the popular items; never an
// excluded item and never one twice; at most MaxCandidates. A candidate's
// neighbourhood score is NeighborWeight · Σ_j w_j / (1 + rank of the candidate
// in session item j's neighbour list): how strongly the session's own items
// point at it. in's indexes must be in range (the scorers check before
// building).
func (c *Candidates) Build(in *Input, dst []int32, bias []float32) ([]int32, []float32) {
	m := c.m
	dst, bias = dst[:0], bias[:0]
	max := m.MaxCandidates
	c.grow(max + len(in.Exclude))
	c.cur++
	if c.cur == 0 { // wrapped: old stamps could collide
		clear(c.slots)
		c.cur = 1
	}
	cur := c.cur
	for _, x := range in.Exclude {
		*c.slot(x) = seenSlot{cur, x, -1}
	}
	items, weights := in.Items, in.Weights
	mx := m.Weighting.MaxItems
	if m.RetrievalItems > 0 {
		mx = m.RetrievalItems
	}
	if mx > 0 && len(items) > mx {
		items = items[len(items)-mx:]
		if len(weights) > mx {
			weights = weights[len(weights)-mx:]
		}
	}
	for j := len(items) - 1; j >= 0 && len(dst) < max; j-- {
		it := items[j]
		if s := c.slot(it); s.stamp != cur {
			*s = seenSlot{cur, it, int32(len(dst))}
			dst = append(dst, it)
			bias = append(bias, 0)
		}
	}
	k, gamma := m.NumNeighbors, m.NeighborWeight
	for r := 0; r < k; r++ {
		if gamma == 0 && len(dst) == max {
			break
		}
		more := false
		f := gamma / float32(r+1)
		for j := len(items) - 1; j >= 0; j-- {
			nb := m.Neighbors[int(items[j])*k+r]
			if nb < 0 {
				continue
			}
			more = true
			w := f
			if j < len(weights) {
				w *= weights[j]
			}
			switch s := c.slot(nb); {
			case s.stamp == cur:
				if s.pos >= 0 {
					bias[s.pos] += w
				}
			case len(dst) < max:
				*s = seenSlot{cur, nb, int32(len(dst))}
				dst = append(dst, nb)
				bias = append(bias, w)
			}
		}
		if !more {
			break
		}
	}
	for _, p := range m.Popular {
		if len(dst) == max {
			break
		}
		if s := c.slot(p); s.stamp != cur {
			*s = seenSlot{cur, p, int32(len(dst))}
			dst = append(dst, p)
			bias = append(bias, 0)
		}
	}
	return dst, bias
}

// buildRetrieval fills m's retrieval tables from the first n sessions of c.
func buildRetrieval(m *Model, c *corpus, n int, cfg RetrievalConfig, workers int) {
	if cfg.Neighbors == 0 {
		return
	}
	m.NumNeighbors, m.MaxCandidates, m.RetrievalItems = cfg.Neighbors, cfg.MaxCandidates, cfg.SessionItems
	m.NeighborWeight = 0
	if len(cfg.NeighborWeights) > 0 {
		m.NeighborWeight = float32(cfg.NeighborWeights[0])
	}
	m.Neighbors = cooccurrenceNeighbours(c, n, cfg, workers)
	counts := countItems(c, n)
	idx := make([]int32, len(counts))
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(a, b int32) int {
		if r := cmp.Compare(counts[b], counts[a]); r != 0 {
			return r
		}
		return cmp.Compare(a, b)
	})
	m.Popular = slices.Clone(idx[:min(cfg.Popular, len(idx))])
	if cfg.Embedding > 0 {
		pool := idx
		if cfg.EmbeddingPool > 0 && cfg.EmbeddingPool < len(pool) {
			pool = pool[:cfg.EmbeddingPool]
		}
		emb := embeddingNeighbours(m, pool, cfg.Embedding, workers)
		m.Neighbors = interleave(m.Neighbors, cfg.Neighbors, emb, cfg.Embedding)
	}
}

// interleave merges two neighbour tables row by row (a[0], b[0], a[1], b[1],
// …), without repeats, into rows of ka entries padded with -1.
func interleave(a []int32, ka int, b []int32, kb int) []int32 {
	n := len(a) / ka
	out := make([]int32, len(a))
	row := make([]int32, 0, ka)
	for i := range n {
		ra, rb := a[i*ka:i*ka+ka], b[i*kb:i*kb+kb]
		row = row[:0]
		for r := 0; r < max(ka, kb) && len(row) < ka; r++ {
			for _, v := range [2]int32{get(ra, r), get(rb, r)} {
				if v >= 0 && len(row) < ka && !slices.Contains(row, v) {
					row = append(row, v)
				}
			}
		}
		o := out[i*ka : i*ka+ka]
		copy(o, row)
		for r := len(row); r < ka; r++ {
			o[r] = -1
		}
	}
	return out
}

func get(s []int32, i int) int32 {
	if i < len(s) {
		return s[i]
	}
	return -1
}

// embeddingNeighbours returns, for every item i, the cnt items j of pool with
// the highest P[i]·Y[j] + Prior[j] (j ≠ i), best first, padded with -1: what
// the model ranks highest for a session of i alone. Blocks of items are
// scored against the pool with one matrix product each, in parallel.
func embeddingNeighbours(m *Model, pool []int32, cnt, workers int) []int32 {
	n, k, h := m.NumItems(), m.K, len(pool)
	yp := make([]float32, h*k)
	prior := make([]float32, h)
	for r, j := range pool {
		copy(yp[r*k:r*k+k], m.Factors[int(j)*k:int(j)*k+k])
		prior[r] = m.Prior[j]
	}
	out := make([]int32, n*cnt)
	const block = 64
	bufs := sync.Pool{New: func() any { s := make([]float32, block*h); return &s }}
	parallelFor(n, block, workers, func(_, lo, hi int) {
		sp := bufs.Get().(*[]float32)
		defer bufs.Put(sp)
		s := (*sp)[:(hi-lo)*h]
		P := blas32.General{Rows: hi - lo, Cols: k, Stride: k, Data: m.Projection[lo*k : hi*k]}
		Y := blas32.General{Rows: h, Cols: k, Stride: k, Data: yp}
		S := blas32.General{Rows: hi - lo, Cols: h, Stride: h, Data: s}
		blas32.Gemm(blas.NoTrans, blas.Trans, 1, P, Y, 0, S)
		var heap topK
		for i := lo; i < hi; i++ {
			heap.reset(cnt)
			for r, v := range s[(i-lo)*h : (i-lo+1)*h] {
				j := pool[r]
				if int(j) == i {
					continue
				}
				rec := Rec{Index: j, Score: v + prior[r]}
				if len(heap.recs) < heap.k {
					heap.push(rec)
				} else if worse(heap.recs[0], rec) {
					heap.replaceTop(rec)
				}
			}
			recs := heap.sorted(nil)
			row := out[i*cnt : i*cnt+cnt]
			for r := range row {
				row[r] = -1
				if r < len(recs) {
					row[r] = recs[r].Index
				}
			}
		}
	})
	return out
}

// cooccurrenceNeighbours returns, for every item, the cfg.Neighbors items that
// co-occur with it most in the first n sessions of c (within cfg.Window
// positions, weighted 1/distance, forward pairs ×cfg.Forward, divided by the
// neighbour's count^cfg.Normalize), best first, padded with -1. Items are
// processed in parallel through an item → occurrences index; the result does
// not depend on the number of workers.
func cooccurrenceNeighbours(c *corpus, n int, cfg RetrievalConfig, workers int) []int32 {
	nItems := len(c.itemIDs)
	end := int(c.offsets[n])
	// Occurrences of each item: positions into c.items, with their session.
	occStart := make([]int32, nItems+1)
	for _, it := range c.items[:end] {
		occStart[it+1]++
	}
	for i := range nItems {
		occStart[i+1] += occStart[i]
	}
	occ := make([]int32, end)  // position
	sess := make([]int32, end) // session of that position
	fill := slices.Clone(occStart[:nItems])
	for s := 0; s < n; s++ {
		for p := c.offsets[s]; p < c.offsets[s+1]; p++ {
			it := c.items[p]
			occ[fill[it]], sess[fill[it]] = p, int32(s)
			fill[it]++
		}
	}
	norm := make([]float32, nItems)
	for i := range nItems {
		norm[i] = float32(math.Pow(float64(occStart[i+1]-occStart[i]), -cfg.Normalize))
	}
	k := cfg.Neighbors
	out := make([]int32, nItems*k)
	for i := range out {
		out[i] = -1
	}
	type scoredItem struct {
		idx   int32
		score float32
	}
	win, fwd := int32(cfg.Window), float32(cfg.Forward)
	parallelFor(nItems, 256, workers, func(_, lo, hi int) {
		acc := make([]float32, nItems)
		var touched []int32
		var cand []scoredItem
		for i := lo; i < hi; i++ {
			touched = touched[:0]
			for o := occStart[i]; o < occStart[i+1]; o++ {
				p, s := occ[o], sess[o]
				from, to := max(c.offsets[s], p-win), min(c.offsets[s+1], p+win+1)
				for q := from; q < to; q++ {
					j := c.items[q]
					if j == int32(i) {
						continue
					}
					w := float32(1)
					d := q - p
					if d < 0 {
						d = -d
					} else {
						w = fwd
					}
					if w == 0 {
						continue
					}
					w /= float32(d)
					if acc[j] == 0 {
						touched = append(touched, j)
					}
					acc[j] += w
				}
			}
			cand = cand[:0]
			for _, j := range touched {
				if acc[j] > 0 {
					cand = append(cand, scoredItem{j, acc[j] * norm[j]})
				}
				acc[j] = 0
			}
			slices.SortFunc(cand, func(a, b scoredItem) int {
				if r := cmp.Compare(b.score, a.score); r != 0 {
					return r
				}
				return cmp.Compare(a.idx, b.idx)
			})
			row := out[i*k : i*k+k]
			for r, cd := range cand[:min(k, len(cand))] {
				row[r] = cd.idx
			}
		}
	})
	return out
}

// WithoutRetrieval returns a copy of m (sharing its factors) that scores the
// whole catalogue: what retrieval changes, side by side.
func (m *Model) WithoutRetrieval() *Model {
	c := *m
	c.NumNeighbors, c.Neighbors, c.Popular, c.MaxCandidates, c.NeighborWeight, c.RetrievalItems = 0, nil, nil, 0, 0, 0
	return &c
}

// AddRetrieval (re)builds m's retrieval tables from sessions, with items m does
// not know dropped; it gives a model trained without retrieval, or with another
// configuration, the candidates cfg describes.
func AddRetrieval(m *Model, sessions []Session, cfg RetrievalConfig, workers int) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Neighbors == 0 {
		*m = *m.WithoutRetrieval()
		return nil
	}
	c := newCorpus(sessions, m.ItemIDs)
	if c.numSessions() == 0 {
		return errors.New("retrieval: no session has an item the model knows")
	}
	buildRetrieval(m, c, c.numSessions(), cfg, workers)
	return nil
}
