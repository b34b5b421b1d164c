package model

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Synthetic returns a random model of n items with ids 1..n (gen's synthetic
// catalogue), dimension k and retrieval tables of cfg's shape: neighbours drawn
// near each item's index (so lists overlap, as co-occurrence lists do), priors
// falling with the index (gen's most popular items have the lowest ranks, not
// ids; this is only a shape). It recommends nothing meaningful: it exists to
// measure what a catalogue of n items costs (memory, load time, scoring)
// without training one. Deterministic for a seed.
func Synthetic(n, k int, cfg RetrievalConfig, seed uint64) (*Model, error) {
	if n < 1 || k < 1 {
		return nil, fmt.Errorf("synthetic model: %d items × %d factors, want both positive", n, k)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, 0x5e7))
	m := &Model{
		Version:    fmt.Sprintf("synthetic-%d", n),
		K:          k,
		ItemIDs:    make([]int64, n),
		Factors:    make([]float32, n*k),
		Projection: make([]float32, n*k),
		Prior:      make([]float32, n),
		Weighting:  DefaultWeighting,
	}
	sd := 1 / math.Sqrt(float64(k))
	for i := range n {
		m.ItemIDs[i] = int64(i + 1)
		m.Prior[i] = float32(-0.1 * math.Log1p(float64(i)))
		row := m.Factors[i*k : i*k+k]
		for d := range row {
			row[d] = float32(rng.NormFloat64() * sd)
		}
		copy(m.Projection[i*k:i*k+k], row)
	}
	if cfg.Neighbors == 0 {
		return m, nil
	}
	nb := cfg.Neighbors
	m.NumNeighbors, m.MaxCandidates = nb, cfg.MaxCandidates
	m.Neighbors = make([]int32, n*nb)
	for i := range n {
		row := m.Neighbors[i*nb : i*nb+nb]
		for r := range row {
			j := i + int(rng.NormFloat64()*float64(4*nb))
			row[r] = int32(((j % n) + n) % n)
		}
	}
	m.Popular = make([]int32, min(cfg.Popular, n))
	for i := range m.Popular {
		m.Popular[i] = int32(i)
	}
	return m, nil
}
