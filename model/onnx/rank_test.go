package onnx

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/clickrec/clickrec/model"
)

// withRetrieval gives m random neighbour lists (nb per item, some rows short)
// and a popular list, ranking at most maxCands candidates.
func withRetrieval(rng *rand.Rand, m *model.Model, nb, maxCands int) *model.Model {
	n := m.NumItems()
	m.NumNeighbors, m.MaxCandidates = nb, maxCands
	m.Neighbors = make([]int32, n*nb)
	for i := range n {
		short := nb
		if rng.IntN(4) == 0 {
			short = rng.IntN(nb + 1)
		}
		for r := range nb {
			m.Neighbors[i*nb+r] = -1
			if r < short {
				m.Neighbors[i*nb+r] = int32(rng.IntN(n))
			}
		}
	}
	m.Popular = []int32{3, 1, 4, 15, 9, 2, 6}
	m.NeighborWeight = 0.4
	return m
}

// refRank is the candidate-ranking reference: the session's candidates
// (model.Candidates, tested in package model) scored in float64 with their
// neighbourhood scores, best first, ties by lower index; and every candidate's
// score.
func refRank(m *model.Model, in model.Input, k, maxLen int) ([]model.Rec, map[int32]float64) {
	all := refScores(m, in, maxLen)
	cands, bias := model.NewCandidates(m).Build(&in, nil, nil)
	scores := map[int32]float64{}
	for i, c := range cands {
		all[c] += float64(bias[i])
		scores[c] = all[c]
	}
	slices.SortFunc(cands, func(a, b int32) int {
		if c := cmp.Compare(all[b], all[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	cands = cands[:min(k, len(cands))]
	out := make([]model.Rec, len(cands))
	for i, c := range cands {
		out[i] = model.Rec{Index: c, Score: float32(all[c])}
	}
	return out, scores
}

// checkRank holds got to want as checkTopK does, with candidate scores: every
// returned item is a candidate, returned once, with its candidate score; at
// each rank the score is want's (within tol). It returns how many ranks differ
// in item (ties within tol).
func checkRank(t *testing.T, got, want []model.Rec, scores map[int32]float64, where string) int {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d recs, want %d\ngot  %v\nwant %v", where, len(got), len(want), got, want)
	}
	seen := map[int32]bool{}
	differ := 0
	for r, g := range got {
		sc, ok := scores[g.Index]
		switch {
		case !ok || seen[g.Index]:
			t.Fatalf("%s: rank %d item %d is not a candidate, or repeated", where, r, g.Index)
		case math.Abs(float64(g.Score)-float64(want[r].Score)) > tol(float64(want[r].Score)):
			t.Fatalf("%s: rank %d score %v, want %v", where, r, g.Score, want[r].Score)
		case math.Abs(float64(g.Score)-sc) > tol(sc):
			t.Fatalf("%s: rank %d item %d scored %v, its score is %v", where, r, g.Index, g.Score, sc)
		}
		seen[g.Index] = true
		if g.Index != want[r].Index {
			differ++
		}
	}
	return differ
}

func TestRankScorerMatchesReference(t *testing.T) {
	const n, k, maxLen, top = 2000, 32, 20, 10
	for seed := uint64(1); seed <= 3; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		m := withRetrieval(rng, randomModel(rng, n, k), 12, 40+int(seed)*50)
		mb, err := Export(m, ExportOptions{MaxSessionLen: maxLen})
		if err != nil {
			t.Fatal(err)
		}
		md, err := ReadMetadata(mb)
		if err != nil || md.Format != FormatRank || md.MaxCandidates != m.MaxCandidates {
			t.Fatalf("metadata %+v, %v: want format %s with %d candidates", md, err, FormatRank, m.MaxCandidates)
		}
		s := newTestScorer(t, m, ExportOptions{MaxSessionLen: maxLen}, ScorerOptions{MaxBatch: 16, Model: m})
		gs, err := model.NewScorer(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, bs := range []int{1, 7, 40} {
			batch := randomSessions(rng, n, bs, 25)
			for i := range batch {
				batch[i] = truncated(batch[i], maxLen)
			}
			out, gout := outs(bs), outs(bs)
			if err := s.Score(batch, top, out); err != nil {
				t.Fatal(err)
			}
			if err := gs.Score(batch, top, gout); err != nil {
				t.Fatal(err)
			}
			for i := range batch {
				where := fmt.Sprintf("seed %d batch %d session %d (len %d, %d excluded)", seed, bs, i, len(batch[i].Items), len(batch[i].Exclude))
				want, scores := refRank(m, batch[i], top, maxLen)
				if d := checkRank(t, out[i], want, scores, where+" onnx"); d > 1 {
					t.Errorf("%s: onnx differs from the reference in %d ranks", where, d)
				}
				if d := checkRank(t, gout[i], want, scores, where+" go"); d > 1 {
					t.Errorf("%s: go differs from the reference in %d ranks", where, d)
				}
			}
		}
		gs.Close()
	}
}

func TestRankScorerNeedsItsModel(t *testing.T) {
	lib := ortLib(t)
	rng := rand.New(rand.NewPCG(5, 5))
	m := withRetrieval(rng, randomModel(rng, 300, 8), 5, 64)
	mb, err := Export(m, ExportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewScorer(mb, ScorerOptions{LibraryPath: lib}); err == nil {
		t.Fatal("a candidate-ranking graph loaded without its model")
	}
	other := withRetrieval(rng, randomModel(rng, 300, 8), 5, 64)
	other.ItemIDs[0]++ // another item table
	if _, err := NewScorer(mb, ScorerOptions{LibraryPath: lib, Model: other}); err == nil {
		t.Fatal("a candidate-ranking graph loaded with another item table")
	}
	s, err := NewScorer(mb, ScorerOptions{LibraryPath: lib, Model: m})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A session the model knows nothing of gets the popular items, best first
	// by score, never an excluded one.
	out := outs(1)
	if err := s.Score([]model.Input{{Exclude: []int32{3}}}, 10, out); err != nil {
		t.Fatal(err)
	}
	if len(out[0]) != len(m.Popular)-1 {
		t.Fatalf("empty session: %d recs, want the %d popular items but the excluded one", len(out[0]), len(m.Popular)-1)
	}
	for _, r := range out[0] {
		if r.Index == 3 || !slices.Contains(m.Popular, r.Index) {
			t.Fatalf("empty session got item %d: want only popular, not excluded items", r.Index)
		}
	}
}

// A steady Score call of the candidate-ranking graph allocates nothing.
func TestRankScorerAllocs(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	m := withRetrieval(rng, randomModel(rng, 5000, 16), 30, 256)
	s := newTestScorer(t, m, ExportOptions{}, ScorerOptions{Model: m})
	batch := benchSessions(rng, 5000, 10)
	out := outs(10)
	for i := range out {
		out[i] = make([]model.Rec, 0, 10)
	}
	if err := s.Score(batch, 10, out); err != nil {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(20, func() {
		if err := s.Score(batch, 10, out); err != nil {
			t.Fatal(err)
		}
	}); a > 0 {
		t.Fatalf("%v allocations per Score call, want 0", a)
	}
}
