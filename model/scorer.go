package model

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// GoScorer is the pure-Go Scorer: the reference the ONNX Runtime scorer is
// tested against. It computes u = Σ_j w_j·P[item_j], scores every item as
// u·Y[i] + Prior[i], skips excluded items and keeps the top k with a small
// heap; equal scores rank the lower index first. It walks the catalogue in
// cache-sized chunks, scoring the whole batch against each chunk, and reuses
// its buffers, so a steady stream of batches does not allocate.
type GoScorer struct {
	m      *Model
	k      int // latent dimension
	cands  *Candidates
	cbuf   []int32
	bbuf   []float32
	u      []float32
	chunk  []float32
	heaps  []topK
	excl   [][]int32
	exPos  []int
	closed bool
}

// scoreChunk is the number of items scored per pass over the batch: 512 rows
// of K = 64 floats keep the chunk of Y (128 KiB) in L2.
const scoreChunk = 512

// NewScorer returns a GoScorer for m after checking its shape.
func NewScorer(m *Model) (*GoScorer, error) {
	if err := m.Check(); err != nil {
		return nil, err
	}
	s := &GoScorer{m: m, k: m.K}
	if m.HasRetrieval() {
		s.cands = NewCandidates(m)
	}
	return s, nil
}

// Check reports a model whose slices do not match its K and item count, or
// whose numbers are not finite.
func (m *Model) Check() error {
	n, k := m.NumItems(), m.K
	switch {
	case k < 1:
		return fmt.Errorf("model: K = %d", k)
	case n < 1:
		return errors.New("model: no items")
	case len(m.Factors) != n*k:
		return fmt.Errorf("model: %d factors, want %d×%d", len(m.Factors), n, k)
	case len(m.Projection) != n*k:
		return fmt.Errorf("model: %d projection values, want %d×%d", len(m.Projection), n, k)
	case len(m.Prior) != n:
		return fmt.Errorf("model: %d prior values, want %d", len(m.Prior), n)
	}
	for name, s := range map[string][]float32{"factors": m.Factors, "projection": m.Projection, "prior": m.Prior} {
		for i, v := range s {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("model: %s[%d] = %v", name, i, v)
			}
		}
	}
	return m.checkRetrieval()
}

// Score implements Scorer.
func (s *GoScorer) Score(batch []Input, k int, out [][]Rec) error {
	if s.closed {
		return errors.New("scorer: closed")
	}
	if len(out) != len(batch) {
		return fmt.Errorf("scorer: %d outputs for %d inputs", len(out), len(batch))
	}
	if k < 0 {
		return fmt.Errorf("scorer: k = %d", k)
	}
	m, dim, n := s.m, s.k, s.m.NumItems()
	b := len(batch)
	s.u = growF(s.u, b*dim)
	clear(s.u)
	for len(s.heaps) < b {
		s.heaps = append(s.heaps, topK{})
		s.excl = append(s.excl, nil)
		s.exPos = append(s.exPos, 0)
	}
	for r, in := range batch {
		if len(in.Weights) != len(in.Items) {
			return fmt.Errorf("scorer: input %d has %d items and %d weights", r, len(in.Items), len(in.Weights))
		}
		u := s.u[r*dim : r*dim+dim]
		for j, it := range in.Items {
			if it < 0 || int(it) >= n {
				return fmt.Errorf("scorer: input %d: item index %d out of range [0, %d)", r, it, n)
			}
			saxpy(in.Weights[j], m.Projection[int(it)*dim:int(it)*dim+dim], u)
		}
		ex := append(s.excl[r][:0], in.Exclude...)
		for _, it := range ex {
			if it < 0 || int(it) >= n {
				return fmt.Errorf("scorer: input %d: excluded index %d out of range [0, %d)", r, it, n)
			}
		}
		slices.Sort(ex)
		s.excl[r] = slices.Compact(ex)
		s.exPos[r] = 0
		s.heaps[r].reset(min(k, n))
	}
	if k > 0 && s.cands != nil {
		s.rankCandidates(batch)
	} else if k > 0 {
		s.chunk = growF(s.chunk, scoreChunk)
		impl := blas32.Implementation()
		for lo := 0; lo < n; lo += scoreChunk {
			hi := min(lo+scoreChunk, n)
			rows := hi - lo
			y := m.Factors[lo*dim : hi*dim]
			prior := m.Prior[lo:hi]
			for r := 0; r < b; r++ {
				// scores = Y[lo:hi]·u (a matrix-vector product, no goroutines).
				sc := s.chunk[:rows]
				impl.Sgemv(blas.NoTrans, rows, dim, 1, y, dim, s.u[r*dim:r*dim+dim], 1, 0, sc, 1)
				h := &s.heaps[r]
				ex, p := s.excl[r], s.exPos[r]
				for i, v := range sc {
					idx := int32(lo + i)
					if p < len(ex) && ex[p] == idx {
						p++
						continue
					}
					v += prior[i]
					if len(h.recs) < h.k {
						h.push(Rec{Index: idx, Score: v})
					} else if v > h.recs[0].Score {
						// Items arrive in ascending index, so an equal score
						// never beats the heap's worst.
						h.replaceTop(Rec{Index: idx, Score: v})
					}
				}
				s.exPos[r] = p
			}
		}
	}
	for r := range batch {
		out[r] = s.heaps[r].sorted(out[r][:0])
	}
	return nil
}

// rankCandidates fills the heaps of a model with retrieval: each session's
// candidates (Candidates.Build) scored as u·Y[c] + Prior[c] + their
// neighbourhood score.
func (s *GoScorer) rankCandidates(batch []Input) {
	m, dim := s.m, s.k
	for r := range batch {
		s.cbuf, s.bbuf = s.cands.Build(&batch[r], s.cbuf, s.bbuf)
		u := s.u[r*dim : r*dim+dim]
		h := &s.heaps[r]
		for i, c := range s.cbuf {
			y := m.Factors[int(c)*dim : int(c)*dim+dim]
			v := m.Prior[c] + s.bbuf[i]
			for j, x := range y {
				v += x * u[j]
			}
			if len(h.recs) < h.k {
				h.push(Rec{Index: c, Score: v})
			} else if worse(h.recs[0], Rec{Index: c, Score: v}) {
				h.replaceTop(Rec{Index: c, Score: v})
			}
		}
	}
}

// Close implements Scorer; a closed scorer refuses to score.
func (s *GoScorer) Close() error {
	s.closed = true
	s.u, s.chunk, s.heaps, s.excl = nil, nil, nil, nil
	return nil
}

// topK is a min-heap of the k best Recs seen so far; its root is the worst:
// the lowest score, and among equal scores the highest index.
type topK struct {
	k    int
	recs []Rec
}

func (h *topK) reset(k int) {
	h.k = k
	if cap(h.recs) < k {
		h.recs = make([]Rec, 0, k)
	}
	h.recs = h.recs[:0]
}

// worse reports whether a ranks below b.
func worse(a, b Rec) bool {
	return a.Score < b.Score || (a.Score == b.Score && a.Index > b.Index)
}

func (h *topK) push(r Rec) {
	h.recs = append(h.recs, r)
	i := len(h.recs) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !worse(h.recs[i], h.recs[p]) {
			break
		}
		h.recs[i], h.recs[p] = h.recs[p], h.recs[i]
		i = p
	}
}

func (h *topK) replaceTop(r Rec) {
	h.recs[0] = r
	h.down(0, len(h.recs))
}

func (h *topK) down(i, n int) {
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		c := l
		if r := l + 1; r < n && worse(h.recs[r], h.recs[l]) {
			c = r
		}
		if !worse(h.recs[c], h.recs[i]) {
			return
		}
		h.recs[i], h.recs[c] = h.recs[c], h.recs[i]
		i = c
	}
}

// sorted appends the heap's Recs to out best first, emptying the heap.
func (h *topK) sorted(out []Rec) []Rec {
	// Heap sort: repeatedly move the worst to the end of the heap area.
	for n := len(h.recs); n > 1; n-- {
		h.recs[0], h.recs[n-1] = h.recs[n-1], h.recs[0]
		h.down(0, n-1)
	}
	out = append(out, h.recs...)
	h.recs = h.recs[:0]
	return out
}
