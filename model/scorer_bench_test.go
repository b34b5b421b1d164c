package model

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkGoScorer scores batches of 10 sessions of 20 items (top 10, K = 64,
// two excluded items each) against catalogues of 1k, 10k and 50k items, the
// shape of the hot path's micro-batches. ns/event is the cost per session.
func BenchmarkGoScorer(b *testing.B) {
	const k, batchSize, sessionLen, topK = 64, 10, 20, 10
	for _, n := range []int{1000, 10000, 50000} {
		b.Run(fmt.Sprintf("items=%d", n), func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, uint64(n)))
			m := &Model{K: k, ItemIDs: make([]int64, n), Factors: make([]float32, n*k), Projection: make([]float32, n*k), Prior: make([]float32, n), Weighting: DefaultWeighting}
			for i := range m.ItemIDs {
				m.ItemIDs[i] = int64(i + 1)
				m.Prior[i] = r.Float32()
			}
			for i := range m.Factors {
				m.Factors[i] = r.Float32() - 0.5
				m.Projection[i] = r.Float32() - 0.5
			}
			sc, err := NewScorer(m)
			if err != nil {
				b.Fatal(err)
			}
			batch := make([]Input, batchSize)
			for i := range batch {
				for j := 0; j < sessionLen; j++ {
					batch[i].Items = append(batch[i].Items, int32(r.IntN(n)))
				}
				batch[i].Weights = m.Weighting.ViewWeights(sessionLen, nil)
				batch[i].Exclude = []int32{batch[i].Items[0], batch[i].Items[1]}
			}
			out := make([][]Rec, batchSize)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := sc.Score(batch, topK, out); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batchSize), "ns/event")
		})
	}
}
