package model

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// tinyRetrieval is a 10-item model whose neighbour lists are written by hand.
func tinyRetrieval(maxCands int) *Model {
	m := randomModel(rand.New(rand.NewPCG(1, 2)), 10, 4)
	m.NumNeighbors, m.MaxCandidates = 3, maxCands
	m.Neighbors = []int32{
		1, 2, 3, // 0
		0, 4, -1, // 1
		5, 6, 7, // 2
		-1, -1, -1, // 3
		8, 1, -1, // 4
		-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, // 5..9
	}
	m.Popular = []int32{9, 0, 8}
	return m
}

func TestCandidatesOrder(t *testing.T) {
	m := tinyRetrieval(100)
	c := NewCandidates(m)
	for _, tc := range []struct {
		name string
		in   Input
		want []int32
	}{
		{"empty session: the popular items", Input{}, []int32{9, 0, 8}},
		// Session items newest first, then rank 1 of each (newest first), rank 2, …, then popular.
		{"two items", Input{Items: []int32{0, 4}}, []int32{4, 0, 8, 1, 2, 3, 9}},
		{"excluded never appear", Input{Items: []int32{0, 4}, Exclude: []int32{8, 2, 4}}, []int32{0, 1, 3, 9}},
		{"a repeated item once", Input{Items: []int32{1, 1, 0}}, []int32{0, 1, 2, 4, 3, 9, 8}},
	} {
		got, _ := c.Build(&tc.in, nil, nil)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: candidates %v, want %v", tc.name, got, tc.want)
		}
	}
	// The cap holds, and the stamps of one build do not leak into the next.
	m.MaxCandidates = 3
	if got, _ := c.Build(&Input{Items: []int32{0, 4}}, nil, nil); !slices.Equal(got, []int32{4, 0, 8}) {
		t.Errorf("capped: %v, want [4 0 8]", got)
	}
	if got, _ := c.Build(&Input{Items: []int32{0, 4}}, nil, nil); !slices.Equal(got, []int32{4, 0, 8}) {
		t.Errorf("capped, built again: %v, want [4 0 8]", got)
	}
	// Only the newest Weighting.MaxItems items count.
	m.MaxCandidates, m.Weighting.MaxItems = 100, 1
	if got, _ := c.Build(&Input{Items: []int32{0, 4}}, nil, nil); !slices.Equal(got, []int32{4, 8, 1, 9, 0}) {
		t.Errorf("MaxItems 1: %v, want [4 8 1 9 0]", got)
	}
}

func TestCooccurrenceNeighbours(t *testing.T) {
	// Item 1 is followed by 2 in three sessions and preceded by 3 in one; 4
	// co-occurs with 1 only beyond the window.
	ss := []Session{
		{Items: []int64{1, 2}}, {Items: []int64{1, 2}}, {Items: []int64{5, 1, 2}},
		{Items: []int64{3, 1, 6, 6, 6, 4}},
	}
	ids := buildVocab(ss, 1) // 1 2 3 4 5 6 → 0..5
	c := newCorpus(ss, ids)
	cfg := RetrievalConfig{Neighbors: 4, Window: 2, Forward: 2, Normalize: 0, Popular: 2, MaxCandidates: 10}
	m := &Model{ItemIDs: ids}
	buildRetrieval(m, c, c.numSessions(), cfg, 2)
	// Item 1 (index 0): 2 forward thrice (w 2 each = 6), 6 forward at distance 1 and 2
	// (2 + 1 = 3), 3 and 5 backward at distance 1 (1 each); 4 is 4 apart.
	row := m.Neighbours(0)
	if want := []int32{1, 5, 2, 4}; !slices.Equal(row, want) {
		t.Fatalf("neighbours of item 1: %v, want %v (ids 2, 6, 3, 5)", row, want)
	}
	// Item 3 (index 2) sees 1 and 6 only.
	if got, want := m.Neighbours(2), []int32{0, 5, -1, -1}; !slices.Equal(got, want) {
		t.Fatalf("neighbours of item 3: %v, want %v", got, want)
	}
	if want := []int32{0, 1}; !slices.Equal(m.Popular, want) { // 1 occurs 4 times, 2 and 6 thrice (ties: lower index)
		t.Fatalf("popular %v, want %v", m.Popular, want)
	}
	// Any number of workers builds the same tables.
	m1 := &Model{ItemIDs: ids}
	buildRetrieval(m1, c, c.numSessions(), cfg, 1)
	if !slices.Equal(m1.Neighbors, m.Neighbors) {
		t.Fatal("neighbours depend on the number of workers")
	}
}

// A model with retrieval round-trips through the binary format, and a format 1
// file (written before retrieval existed) still loads, without retrieval.
func TestMarshalRetrieval(t *testing.T) {
	m := tinyRetrieval(64)
	m.Weighting = DefaultWeighting
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got Model
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if got.NumNeighbors != 3 || got.MaxCandidates != 64 || !slices.Equal(got.Neighbors, m.Neighbors) || !slices.Equal(got.Popular, m.Popular) {
		t.Fatalf("round trip: %d neighbours, max %d, %v, popular %v", got.NumNeighbors, got.MaxCandidates, got.Neighbors, got.Popular)
	}

	// Format 1: the same arrays without the retrieval tables, header format 1.
	hdr, _ := json.Marshal(binHeader{Format: 1, Version: "old", K: m.K, Items: m.NumItems(), Weighting: m.Weighting})
	v1 := []byte(binMagic)
	v1 = binary.LittleEndian.AppendUint32(v1, uint32(len(hdr)))
	v1 = append(v1, hdr...)
	for _, id := range m.ItemIDs {
		v1 = binary.LittleEndian.AppendUint64(v1, uint64(id))
	}
	for _, s := range [][]float32{m.Factors, m.Projection, m.Prior} {
		for _, f := range s {
			v1 = binary.LittleEndian.AppendUint32(v1, math.Float32bits(f))
		}
	}
	sum := sha256.Sum256(v1)
	v1 = append(v1, sum[:]...)
	var old Model
	if err := old.UnmarshalBinary(v1); err != nil {
		t.Fatalf("format 1: %v", err)
	}
	if old.HasRetrieval() || old.Version != "old" || !slices.Equal(old.Factors, m.Factors) {
		t.Fatalf("format 1 loaded as %+v", old)
	}

	// Neighbour entries outside the catalogue are refused.
	m.Neighbors[4] = 10
	if _, err := m.MarshalBinary(); err == nil {
		t.Fatal("neighbour index 10 of 10 items accepted")
	}
}

// With retrieval the Go scorer ranks exactly the candidates, by score.
func TestGoScorerRanksCandidates(t *testing.T) {
	m := tinyRetrieval(5)
	s, err := NewScorer(m)
	if err != nil {
		t.Fatal(err)
	}
	in := Input{Items: []int32{0, 4}, Weights: []float32{0.5, 1}, Exclude: []int32{8}}
	cands, _ := NewCandidates(m).Build(&in, nil, nil) // 4 0 1 2 3
	out := make([][]Rec, 1)
	if err := s.Score([]Input{in}, 10, out); err != nil {
		t.Fatal(err)
	}
	if len(out[0]) != len(cands) {
		t.Fatalf("%d recs, want all %d candidates", len(out[0]), len(cands))
	}
	for i, r := range out[0] {
		if !slices.Contains(cands, r.Index) {
			t.Fatalf("rec %d (item %d) is not a candidate %v", i, r.Index, cands)
		}
		if i > 0 && r.Score > out[0][i-1].Score {
			t.Fatalf("recs not best first: %v", out[0])
		}
	}
}
