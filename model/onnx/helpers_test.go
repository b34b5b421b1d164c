package onnx

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/model"
)

// ortLib returns the ONNX Runtime library, skipping the test without it — or
// failing it under CI=true (internal/testenv), with how to install it.
func ortLib(t testing.TB) string {
	t.Helper()
	return testenv.ORTLib(t)
}

// randomModel returns a model with n items, dimension k and random values.
func randomModel(rng *rand.Rand, n, k int) *model.Model {
	m := &model.Model{
		Version:    "vtest",
		K:          k,
		ItemIDs:    make([]int64, n),
		Factors:    make([]float32, n*k),
		Projection: make([]float32, n*k),
		Prior:      make([]float32, n),
	}
	for i := range m.ItemIDs {
		m.ItemIDs[i] = int64(1_000_000 + 7*i)
		m.Prior[i] = float32(rng.NormFloat64() * 0.5)
	}
	for i := range m.Factors {
		m.Factors[i] = float32(rng.NormFloat64() * 0.3)
		m.Projection[i] = float32(rng.NormFloat64() * 0.3)
	}
	return m
}

// randomSessions returns count sessions over n items with 0..maxLen items,
// positive weights and a few exclusions (now and then many).
func randomSessions(rng *rand.Rand, n, count, maxLen int) []model.Input {
	out := make([]model.Input, count)
	for i := range out {
		l := rng.IntN(maxLen + 1)
		in := model.Input{Items: make([]int32, l), Weights: make([]float32, l)}
		for j := range l {
			in.Items[j] = int32(rng.IntN(n))
			in.Weights[j] = 0.1 + rng.Float32()
		}
		e := rng.IntN(6)
		if rng.IntN(8) == 0 {
			e = 20 + rng.IntN(30)
		}
		for range e {
			in.Exclude = append(in.Exclude, int32(rng.IntN(n)))
		}
		// Excluding what the session touched is the common case (purchases).
		if l > 0 && rng.IntN(2) == 0 {
			in.Exclude = append(in.Exclude, in.Items[rng.IntN(l)])
		}
		out[i] = in
	}
	return out
}

// refScores computes every item's score for in the straightforward way, in
// float64, folding in the last maxLen items only.
func refScores(m *model.Model, in model.Input, maxLen int) []float64 {
	k, n := m.K, m.NumItems()
	items, weights := in.Items, in.Weights
	if len(items) > maxLen {
		items, weights = items[len(items)-maxLen:], weights[len(weights)-maxLen:]
	}
	u := make([]float64, k)
	for j, it := range items {
		for d := range k {
			u[d] += float64(weights[j]) * float64(m.Projection[int(it)*k+d])
		}
	}
	s := make([]float64, n)
	for i := range n {
		dot := float64(m.Prior[i])
		for d := range k {
			dot += u[d] * float64(m.Factors[i*k+d])
		}
		s[i] = dot
	}
	return s
}

// refTopK is the reference scorer: the top k non-excluded items of in, best
// first, ties by lower index.
func refTopK(m *model.Model, in model.Input, k, maxLen int) []model.Rec {
	s := refScores(m, in, maxLen)
	excluded := map[int32]bool{}
	for _, e := range in.Exclude {
		excluded[e] = true
	}
	idx := make([]int32, 0, len(s))
	for i := range s {
		if !excluded[int32(i)] {
			idx = append(idx, int32(i))
		}
	}
	slices.SortFunc(idx, func(a, b int32) int {
		if c := cmp.Compare(s[b], s[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	idx = idx[:min(k, len(idx))]
	out := make([]model.Rec, len(idx))
	for i, it := range idx {
		out[i] = model.Rec{Index: it, Score: float32(s[it])}
	}
	return out
}

// tol is the allowed score difference: 1e-4 relative, 1e-4 absolute near 0.
func tol(ref float64) float64 { return 1e-4 * math.Max(1, math.Abs(ref)) }

// truncated returns in with only its last maxLen items: what the ONNX graph
// folds in. (model.GoScorer folds in every item it is given.)
func truncated(in model.Input, maxLen int) model.Input {
	if len(in.Items) > maxLen {
		in.Items, in.Weights = in.Items[len(in.Items)-maxLen:], in.Weights[len(in.Weights)-maxLen:]
	}
	return in
}

// goTopK scores batch with the project's pure-Go scorer (model.GoScorer),
// after truncating every session to maxLen items.
func goTopK(t *testing.T, m *model.Model, batch []model.Input, k, maxLen int) [][]model.Rec {
	t.Helper()
	gs, err := model.NewScorer(m)
	if err != nil {
		t.Fatal(err)
	}
	defer gs.Close()
	in := make([]model.Input, len(batch))
	for i := range batch {
		in[i] = truncated(batch[i], maxLen)
	}
	out := make([][]model.Rec, len(batch))
	if err := gs.Score(in, k, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkTopK holds got, the answer for session in, to want: the same number of
// items; at each rank the same score (within tol); each returned item really
// has the score returned (recomputed in float64), is not excluded and appears
// once. Items may differ from want only where scores tie within tol
// (summation order). It returns how many ranks differ in item.
func checkTopK(t *testing.T, m *model.Model, in model.Input, maxLen int, got, want []model.Rec, where string) int {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d recs, want %d\ngot  %v\nwant %v", where, len(got), len(want), got, want)
	}
	all := refScores(m, in, maxLen)
	excluded := map[int32]bool{}
	for _, e := range in.Exclude {
		excluded[e] = true
	}
	seen := map[int32]bool{}
	differ := 0
	for r := range got {
		g, w := got[r], want[r]
		if d := math.Abs(float64(g.Score) - float64(w.Score)); d > tol(float64(w.Score)) {
			t.Fatalf("%s: rank %d score %v, want %v (item %d, want %d)", where, r, g.Score, w.Score, g.Index, w.Index)
		}
		if g.Index < 0 || int(g.Index) >= m.NumItems() || excluded[g.Index] || seen[g.Index] {
			t.Fatalf("%s: rank %d item %d is out of range, excluded or repeated", where, r, g.Index)
		}
		seen[g.Index] = true
		if d := math.Abs(float64(g.Score) - all[g.Index]); d > tol(all[g.Index]) {
			t.Fatalf("%s: rank %d item %d scored %v, its score is %v", where, r, g.Index, g.Score, all[g.Index])
		}
		if g.Index != w.Index {
			differ++
		}
	}
	return differ
}
