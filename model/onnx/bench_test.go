package onnx

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/clickrec/clickrec/model"
)

// benchSessions returns count sessions of exactly 20 items with 2 exclusions
// each: the hot path's steady state.
func benchSessions(rng *rand.Rand, n, count int) []model.Input {
	out := make([]model.Input, count)
	for i := range out {
		in := model.Input{Items: make([]int32, 20), Weights: make([]float32, 20)}
		for j := range in.Items {
			in.Items[j] = int32(rng.IntN(n))
			in.Weights[j] = rng.Float32()
		}
		in.Exclude = []int32{in.Items[19], int32(rng.IntN(n))}
		out[i] = in
	}
	return out
}

// BenchmarkScore: top-10, K = 64, sessions of 20 items with 2 exclusions,
// 1 intra-op thread; "ort" is this package's Scorer, "go" is model.GoScorer
// on the same model and sessions. ns/event is the cost per scored session;
// allocs/op is per Score call.
func BenchmarkScore(b *testing.B) {
	lib := ortLib(b)
	for _, n := range []int{1_000, 10_000, 50_000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(uint64(n), 1))
			m := randomModel(rng, n, 64)
			mb, err := Export(m, ExportOptions{})
			if err != nil {
				b.Fatal(err)
			}
			s, err := NewScorer(mb, ScorerOptions{LibraryPath: lib})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			gs, err := model.NewScorer(m)
			if err != nil {
				b.Fatal(err)
			}
			for _, bs := range []int{10, 100} {
				batch := benchSessions(rng, n, bs)
				for _, sc := range []struct {
					name string
					s    model.Scorer
				}{{"ort", s}, {"go", gs}} {
					b.Run(fmt.Sprintf("batch=%d/%s", bs, sc.name), func(b *testing.B) {
						out := make([][]model.Rec, bs)
						for i := range out {
							out[i] = make([]model.Rec, 0, 10)
						}
						if err := sc.s.Score(batch, 10, out); err != nil { // first run of this shape
							b.Fatal(err)
						}
						b.ReportAllocs()
						b.ResetTimer()
						for b.Loop() {
							if err := sc.s.Score(batch, 10, out); err != nil {
								b.Fatal(err)
							}
						}
						b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*bs), "ns/event")
					})
				}
			}
		})
	}
}

// BenchmarkNewScorer: what a model swap costs — session creation from the
// exported bytes plus the warm-up Run (N = 50,000, K = 64).
func BenchmarkNewScorer(b *testing.B) {
	lib := ortLib(b)
	mb, err := Export(randomModel(rand.New(rand.NewPCG(3, 3)), 50_000, 64), ExportOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		s, err := NewScorer(mb, ScorerOptions{LibraryPath: lib})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(mb))/1e6, "MB/model")
}

// BenchmarkRank: retrieval then ranking on synthetic catalogues (model.Synthetic
// with model.DefaultRetrieval, K = 64), top-10, sessions of 20 items with 2
// exclusions, batches of 10 (and 100, with 1 and 2 intra-op threads), one
// intra-op thread. Each call scores the next batch of a pool of 8,192 distinct
// sessions, so the rows a batch gathers are not still in the cache from the
// previous call (with one batch repeated, a 1M catalogue looked 2× cheaper).
// ns/event is the cost per click, candidate building included.
func BenchmarkRank(b *testing.B) {
	lib := ortLib(b)
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			m, err := model.Synthetic(n, 64, model.DefaultRetrieval, uint64(n))
			if err != nil {
				b.Fatal(err)
			}
			s, err := NewModelScorer(m, ScorerOptions{LibraryPath: lib})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			s2, err := NewModelScorer(m, ScorerOptions{LibraryPath: lib, IntraOpThreads: 2})
			if err != nil {
				b.Fatal(err)
			}
			defer s2.Close()
			gs, err := model.NewScorer(m)
			if err != nil {
				b.Fatal(err)
			}
			const poolSize = 8192
			pool := benchSessions(rand.New(rand.NewPCG(uint64(n), 2)), n, poolSize)
			for _, sc := range []struct {
				name string
				bs   int
				s    model.Scorer
			}{{"ort", 10, s}, {"go", 10, gs}, {"ort", 100, s}, {"ort-2threads", 100, s2}} {
				bs := sc.bs
				b.Run(fmt.Sprintf("batch=%d/%s", bs, sc.name), func(b *testing.B) {
					out := make([][]model.Rec, bs)
					for i := range out {
						out[i] = make([]model.Rec, 0, 10)
					}
					if err := sc.s.Score(pool[:bs], 10, out); err != nil {
						b.Fatal(err)
					}
					b.ReportAllocs()
					b.ResetTimer()
					next := 0
					for b.Loop() {
						if next+bs > poolSize {
							next = 0
						}
						if err := sc.s.Score(pool[next:next+bs], 10, out); err != nil {
							b.Fatal(err)
						}
						next += bs
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*bs), "ns/event")
				})
			}
		})
	}
}
