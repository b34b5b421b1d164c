package itemknow

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

func items(s []Scored) []int64 {
	var ids []int64
	for _, x := range s {
		ids = append(ids, x.Item)
	}
	return ids
}

func TestBlend(t *testing.T) {
	model := []Scored{{1, 9}, {2, 7}, {3, 5}, {4, 1}} // normalised: 1, .75, .5, 0
	online := []Scored{{4, 3}, {99, 2}, {5, 1}}       // normalised: 1, .5, 0
	known := func(id int64) bool { return id != 99 }

	// Without weights the model's order stands; the table's items trail.
	if got := items(Blend(model, online, known, Weights{}, 10, nil)); !slices.Equal(got, []int64{1, 2, 3, 4, 99, 5}) {
		t.Fatalf("zero weights: %v", got)
	}
	// λ lifts an item both lists hold: 4 scores 0 + 1·1.
	if got := items(Blend(model, online, known, Weights{Known: 1}, 3, nil)); !slices.Equal(got, []int64{1, 4, 2}) {
		t.Fatalf("λ 1: %v, want [1 4 2]", got)
	}
	// μ places a new item (99, online .5) against the model's scores.
	if got := items(Blend(model, online, known, Weights{New: 1.8}, 2, nil)); !slices.Equal(got, []int64{1, 99}) {
		t.Fatalf("μ 1.8: %v, want [1 99]", got)
	}
	// A model list alone is the model's top k.
	if got := items(Blend(model, nil, known, DefaultWeights(), 2, nil)); !slices.Equal(got, []int64{1, 2}) {
		t.Fatalf("no online candidates: %v", got)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	incs := []Increment{
		NewIncrement(1_700_000_000_000, 42, CategoryKey("shoes"), SessionHash("u1"), []int64{7, 8, 42, 9, 10, 11}),
		NewIncrement(1_700_000_000_001, -5, 0, SessionHash("u2"), nil),
	}
	var v []byte
	for _, inc := range incs {
		v = AppendRecord(v, inc)
	}
	var got []Increment
	n, err := DecodeRecord(v, func(inc Increment) { got = append(got, inc) })
	if err != nil || n != 2 || !slices.Equal(got, incs) {
		t.Fatalf("decoded %d %+v (%v), want %+v", n, got, err, incs)
	}
	// A truncated record hands over what precedes the damage, then errs.
	got = got[:0]
	n, err = DecodeRecord(v[:len(v)-1], func(inc Increment) { got = append(got, inc) })
	if n != 1 || !errors.Is(err, ErrBadIncrement) {
		t.Fatalf("truncated: %d increments, %v; want 1 and ErrBadIncrement", n, err)
	}
	if CategoryKey("") != 0 || CategoryKey("shoes") == CategoryKey("shirts") {
		t.Fatal("CategoryKey: empty must be 0, distinct names distinct")
	}
}

func TestSelectBest(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	cmpScore := func(a, b Scored) int {
		switch {
		case a.Score > b.Score:
			return -1
		case a.Score < b.Score:
			return 1
		}
		return int(a.Item - b.Item)
	}
	for trial := range 500 {
		m := 1 + r.IntN(200)
		s := make([]Scored, m)
		for i := range s {
			s[i] = Scored{Item: int64(i), Score: float64(r.IntN(20))} // ties on purpose
		}
		want := slices.Clone(s)
		slices.SortFunc(want, cmpScore)
		n := 1 + r.IntN(m)
		selectBest(s, n, cmpScore)
		got := slices.Clone(s[:n])
		slices.SortFunc(got, cmpScore)
		if !slices.Equal(got, want[:n]) {
			t.Fatalf("trial %d: m %d n %d: best %v, want %v", trial, m, n, got, want[:n])
		}
	}
}
