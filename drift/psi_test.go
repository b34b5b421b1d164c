package drift

import (
	"math"
	"slices"
	"testing"
)

func near(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-6 {
		t.Errorf("%s = %.9f, want %.9f", what, got, want)
	}
}

func TestPSIHandComputed(t *testing.T) {
	cases := []struct {
		name      string
		ref, live []uint64
		want      float64
	}{
		{
			// Shares: reference .5 .3 .2, live .3 .3 .4.
			// (.3−.5)·ln(.3/.5) = (−.2)(−0.510825624) = 0.102165125
			// (.3−.3)·ln(1)     = 0
			// (.4−.2)·ln(.4/.2) = (.2)(0.693147181)   = 0.138629436
			// PSI = 0.240794561
			name: "three bins", ref: []uint64{50, 30, 20}, live: []uint64{30, 30, 40}, want: 0.240794561,
		},
		{
			// Shares: reference 1 and 0 (raised to ε = 1e-4), live .9 and .1.
			// (.9−1)·ln(.9/1)            = (−.1)(−0.105360516) = 0.010536052
			// (.1−.0001)·ln(.1/.0001)    = (.0999)(6.907755279) = 0.690084752
			// PSI = 0.700620804
			name: "empty reference bin gets epsilon", ref: []uint64{100, 0}, live: []uint64{90, 10}, want: 0.700620804,
		},
		{
			// Shares: reference .25 .25 .25 .25, live .5 .5 0 0 (raised to ε).
			// two bins: (.5−.25)·ln(2)           = 2 × 0.173286795 = 0.346573590
			// two bins: (.0001−.25)·ln(.0001/.25) = 2 × (−.2499)(−7.824046011) = 2 × 1.955229098 = 3.910458196
			// PSI = 4.257031786
			name: "empty live bins get epsilon", ref: []uint64{1, 1, 1, 1}, live: []uint64{7, 7, 0, 0}, want: 4.257031786,
		},
		{name: "identical shares", ref: []uint64{10, 20, 70}, live: []uint64{1, 2, 7}, want: 0},
		{name: "both empty bins contribute nothing", ref: []uint64{10, 0, 10}, live: []uint64{5, 0, 5}, want: 0},
		{name: "empty live side", ref: []uint64{10, 10}, live: []uint64{0, 0}, want: 0},
		{name: "different bin counts", ref: []uint64{10, 10}, live: []uint64{1, 1, 1}, want: 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { near(t, "PSI", PSI(c.ref, c.live), c.want) })
	}
}

func TestNumericPSIHandComputed(t *testing.T) {
	// Reference 1..10 in 5 quantile bins: cut points at ranks ⌈k·10/5⌉ = 2, 4,
	// 6, 8 → edges 2 4 6 8, bins (−∞,2] (2,4] (4,6] (6,8] (8,+∞), 2 values each.
	ref := NewNumericReference([]float64{5, 3, 1, 9, 7, 2, 4, 6, 8, 10}, 5)
	if want := []float64{2, 4, 6, 8}; !slices.Equal(ref.Edges, want) {
		t.Fatalf("edges %v, want %v", ref.Edges, want)
	}
	if want := []uint64{2, 2, 2, 2, 2}; !slices.Equal(ref.Counts, want) {
		t.Fatalf("counts %v, want %v", ref.Counts, want)
	}
	// Live 1 1 1 3 5 7 9 9 9 9 → counts 3 1 1 1 4 → shares .3 .1 .1 .1 .4 vs .2 each:
	// (.3−.2)·ln(1.5) = 0.040546511
	// 3 × (.1−.2)·ln(.5) = 3 × 0.069314718 = 0.207944154
	// (.4−.2)·ln(2) = 0.138629436
	// PSI = 0.387120101
	live := ref.NewLive()
	for _, x := range []float64{1, 1, 1, 3, 5, 7, 9, 9, 9, 9} {
		live.Observe(x)
	}
	if want := []uint64{3, 1, 1, 1, 4}; !slices.Equal(live.Counts, want) {
		t.Fatalf("live counts %v, want %v", live.Counts, want)
	}
	res := Config{MinSamples: 10}.CompareFeature("x", ref, live)
	near(t, "PSI", res.PSI, 0.387120101)
	if res.Verdict != Severe || !res.Alerting() || res.RefN != 10 || res.LiveN != 10 {
		t.Errorf("result %+v", res)
	}
	// The bin contributing most is the top one: .4 live vs .2 reference.
	if res.Top == nil || res.Top.Bin != "(8, +inf)" || res.Top.RefShare != 0.2 || res.Top.LiveShare != 0.4 {
		t.Errorf("top %+v", res.Top)
	}
	near(t, "top contribution", res.Top.Contribution, 0.138629436)
}

func TestCategoricalPSIHandComputed(t *testing.T) {
	// Top 2 of {a:50, b:30, c:15, d:5} → bins a, b, other(c+d = 20).
	ref := NewCategoricalReference(map[string]uint64{"a": 50, "b": 30, "c": 15, "d": 5}, 2)
	if !slices.Equal(ref.Categories, []string{"a", "b"}) || !slices.Equal(ref.Counts, []uint64{50, 30, 20}) {
		t.Fatalf("reference %+v", ref)
	}
	// Live a:30 b:30 c:10 and the unseen z:30 → other = 40 → the first case of
	// TestPSIHandComputed: PSI = 0.240794561.
	live := ref.NewLive()
	live.ObserveCategory("a", 30)
	live.ObserveCategory("b", 30)
	live.ObserveCategory("c", 10)
	live.ObserveCategory("z", 30)
	if !slices.Equal(live.Counts, []uint64{30, 30, 40}) {
		t.Fatalf("live counts %v", live.Counts)
	}
	res := Config{MinSamples: 100}.CompareFeature("cat", ref, live)
	near(t, "PSI", res.PSI, 0.240794561)
	if res.Verdict != Alert || res.Top.Bin != OtherLabel {
		t.Errorf("result %+v top %+v", res, res.Top)
	}
}

func TestVerdicts(t *testing.T) {
	for _, c := range []struct {
		psi  float64
		want Verdict
	}{
		{0, OK}, {0.1, OK}, {0.10001, Watch}, {0.15, Watch}, {0.15001, Alert}, {0.25, Alert}, {0.25001, Severe}, {3, Severe},
	} {
		if got := VerdictFor(c.psi); got != c.want {
			t.Errorf("VerdictFor(%v) = %s, want %s", c.psi, got, c.want)
		}
	}
}

func TestMinimumSample(t *testing.T) {
	ref := NewCategoricalReference(map[string]uint64{"a": 500, "b": 500}, 0)
	live := ref.NewLive()
	live.ObserveCategory("a", 999) // PSI is large, but one side is below the minimum
	res := CompareFeature("f", ref, live)
	if res.Verdict != InsufficientData || res.Alerting() || res.Sufficient() || res.PSI < SevereThreshold {
		t.Errorf("below minimum: %+v", res)
	}
	if res.MinSamples != DefaultMinSamples {
		t.Errorf("MinSamples %d", res.MinSamples)
	}
	live.ObserveCategory("a", 1)
	if res := CompareFeature("f", ref, live); res.Verdict != Severe {
		t.Errorf("at minimum: %+v", res)
	}
	// The reference side counts too.
	small := NewCategoricalReference(map[string]uint64{"a": 5, "b": 5}, 0)
	big := small.NewLive()
	big.ObserveCategory("a", 5000)
	if res := CompareFeature("f", small, big); res.Verdict != InsufficientData {
		t.Errorf("small reference: %+v", res)
	}
}

func TestCompareEmptyAndMismatch(t *testing.T) {
	refs := ReferenceSet{
		"num": NewNumericReference([]float64{1, 2, 3}, 0),
		"cat": NewCategoricalReference(map[string]uint64{"x": 3}, 0),
	}
	other := NewNumericReference([]float64{10, 20, 30}, 0)
	live := LiveSet{
		"num":   other.NewLive(), // counted against other bins
		"extra": other.NewLive(), // no reference
	}
	live["num"].Observe(1)
	got := Config{MinSamples: 1}.Compare(refs, live)
	if len(got) != 3 {
		t.Fatalf("results %v", got)
	}
	if r := got["cat"]; r.Verdict != InsufficientData || r.LiveN != 0 || r.PSI != 0 || r.Top != nil {
		t.Errorf("missing live profile: %+v", r)
	}
	if r := got["num"]; r.Verdict != Mismatch {
		t.Errorf("other bins: %+v", r)
	}
	if r := got["extra"]; r.Verdict != Mismatch || r.Sufficient() {
		t.Errorf("no reference: %+v", r)
	}
	// Empty live profile of the right reference.
	if r := CompareFeature("num", refs["num"], refs["num"].NewLive()); r.Verdict != InsufficientData || r.PSI != 0 {
		t.Errorf("empty live: %+v", r)
	}
}

func TestWorst(t *testing.T) {
	order := Worst(map[string]Result{
		"a": {Feature: "a", PSI: 0.05, Verdict: OK},
		"b": {Feature: "b", PSI: 0.9, Verdict: InsufficientData},
		"c": {Feature: "c", PSI: 0.3, Verdict: Severe},
		"d": {Feature: "d", Verdict: Mismatch},
		"e": {Feature: "e", PSI: 0.12, Verdict: Watch},
	})
	var names string
	for _, r := range order {
		names += r.Feature
	}
	if names != "ceabd" {
		t.Errorf("order %s, want ceabd", names)
	}
}
