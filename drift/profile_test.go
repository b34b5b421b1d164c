package drift

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/clickrec/clickrec/wire"
)

func TestNumericReferenceDeciles(t *testing.T) {
	v := make([]float64, 100)
	for i := range v {
		v[i] = float64(100 - i) // 100..1, unsorted order on purpose
	}
	ref := NewNumericReference(v, 0)
	if want := []float64{10, 20, 30, 40, 50, 60, 70, 80, 90}; !slices.Equal(ref.Edges, want) {
		t.Fatalf("edges %v, want %v", ref.Edges, want)
	}
	for i, c := range ref.Counts {
		if c != 10 {
			t.Fatalf("bin %d holds %d, want 10 (counts %v)", i, c, ref.Counts)
		}
	}
	if v[0] != 100 {
		t.Error("input was modified")
	}
	// A value on an edge belongs to the bin below it.
	l := ref.NewLive()
	l.Observe(10)
	l.Observe(10.5)
	l.Observe(-1e9)
	l.Observe(1e9)
	l.Observe(math.Inf(1))
	l.Observe(math.NaN()) // ignored
	if want := []uint64{2, 1, 0, 0, 0, 0, 0, 0, 0, 2}; !slices.Equal(l.Counts, want) {
		t.Errorf("live counts %v, want %v", l.Counts, want)
	}
	if got := ref.BinLabel(0) + " " + ref.BinLabel(1) + " " + ref.BinLabel(9); got != "(-inf, 10] (10, 20] (90, +inf)" {
		t.Errorf("labels %q", got)
	}
}

func TestNumericReferenceAllEqual(t *testing.T) {
	ref := NewNumericReference([]float64{5, 5, 5, 5, 5, math.NaN(), math.Inf(1)}, 10)
	// Bins: below 5, exactly 5, above 5.
	if len(ref.Edges) != 2 || ref.Edges[1] != 5 || !(ref.Edges[0] < 5) || ref.Edges[0] != math.Nextafter(5, 0) {
		t.Fatalf("edges %v", ref.Edges)
	}
	if !slices.Equal(ref.Counts, []uint64{0, 5, 0}) {
		t.Fatalf("counts %v", ref.Counts)
	}
	same := ref.NewLive()
	for range 2000 {
		same.Observe(5)
	}
	if r := (Config{MinSamples: 5}).CompareFeature("x", ref, same); r.PSI != 0 || r.Verdict != OK {
		t.Errorf("same constant: %+v", r)
	}
	for _, x := range []float64{4, 6} {
		moved := ref.NewLive()
		for range 2000 {
			moved.Observe(x)
		}
		// All live mass in a bin the reference left empty:
		// (1−ε)·ln(1/ε) + (ε−1)·ln(ε/1) = 2·(1−ε)·ln(1e4) = 18.419...
		r := Config{MinSamples: 5}.CompareFeature("x", ref, moved)
		near(t, "PSI", r.PSI, 2*(1-Epsilon)*math.Log(1/Epsilon))
		if r.Verdict != Severe {
			t.Errorf("moved to %v: %+v", x, r)
		}
	}
}

func TestNumericReferencePointMassAtMinimum(t *testing.T) {
	// 40 % zeros (one-event sessions): the lowest bin is exactly 0 and values
	// below it get their own bin; higher deciles stay separate.
	var v []float64
	for i := range 100 {
		if i < 40 {
			v = append(v, 0)
		} else {
			v = append(v, float64(i))
		}
	}
	ref := NewNumericReference(v, 10)
	want := []float64{math.Nextafter(0, -1), 0, 49, 59, 69, 79, 89}
	if !slices.Equal(ref.Edges, want) {
		t.Fatalf("edges %v, want %v", ref.Edges, want)
	}
	if !slices.Equal(ref.Counts, []uint64{0, 40, 10, 10, 10, 10, 10, 10}) {
		t.Fatalf("counts %v", ref.Counts)
	}
}

func TestNumericReferenceEmpty(t *testing.T) {
	ref := NewNumericReference(nil, 10)
	if len(ref.Edges) != 0 || !slices.Equal(ref.Counts, []uint64{0}) || ref.Validate() != nil {
		t.Fatalf("empty reference %+v", ref)
	}
	l := ref.NewLive()
	l.Observe(3)
	if r := CompareFeature("x", ref, l); r.Verdict != InsufficientData || r.PSI != 0 {
		t.Errorf("%+v", r)
	}
}

func TestCategoricalReferenceTopAndOther(t *testing.T) {
	counts := map[string]uint64{"b": 5, "a": 5, "c": 9, "d": 1, "zero": 0}
	ref := NewCategoricalReference(counts, 2)
	// c first (9), then a and b tie at 5: a wins by name; b and d are other.
	if !slices.Equal(ref.Categories, []string{"c", "a"}) || !slices.Equal(ref.Counts, []uint64{9, 5, 6}) {
		t.Fatalf("reference %+v", ref)
	}
	all := NewCategoricalReference(counts, 10)
	if !slices.Equal(all.Categories, []string{"c", "a", "b", "d"}) || !slices.Equal(all.Counts, []uint64{9, 5, 5, 1, 0}) {
		t.Fatalf("reference %+v", all)
	}
	// A category never seen in the reference lands in other, whose reference
	// share is 0 (raised to ε), so a new category shows up strongly.
	l := all.NewLive()
	l.ObserveCategory("c", 9)
	l.ObserveCategory("a", 5)
	l.ObserveCategory("b", 5)
	l.ObserveCategory("d", 1)
	l.ObserveCategory("brand-new", 20)
	if !slices.Equal(l.Counts, []uint64{9, 5, 5, 1, 20}) {
		t.Fatalf("live counts %v", l.Counts)
	}
	r := Config{MinSamples: 1}.CompareFeature("cat", all, l)
	if r.Top.Bin != OtherLabel || r.Top.RefShare != 0 || r.Top.LiveShare != 0.5 || r.Verdict != Severe {
		t.Errorf("%+v top %+v", r, r.Top)
	}
	empty := NewCategoricalReference(nil, 0)
	if len(empty.Categories) != 0 || !slices.Equal(empty.Counts, []uint64{0}) || empty.Validate() != nil {
		t.Errorf("empty categorical %+v", empty)
	}
}

func TestObservePanicsOnMisuse(t *testing.T) {
	num := NewNumericReference([]float64{1, 2}, 0).NewLive()
	cat := NewCategoricalReference(map[string]uint64{"a": 1}, 0).NewLive()
	var decoded Live
	if err := json.Unmarshal(mustJSON(t, num), &decoded); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func(){
		"numeric on categorical": func() { cat.Observe(1) },
		"categorical on numeric": func() { num.ObserveCategory("a", 1) },
		"decoded":                func() { decoded.Observe(1) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func TestObserveDoesNotAllocate(t *testing.T) {
	v := make([]float64, 1000)
	for i := range v {
		v[i] = float64(i)
	}
	refs := ReferenceSet{
		FeatureSessionLength: NewNumericReference(v, 0),
		FeatureCategoryMix:   NewCategoricalReference(map[string]uint64{"shoes": 3, "hats": 2}, 0),
	}
	live := refs.NewLive()
	cat := "shoes"
	allocs := testing.AllocsPerRun(1000, func() {
		live.ObserveNumeric(FeatureSessionLength, 123.5)
		live.ObserveCategorical(FeatureCategoryMix, cat, 2)
		live.ObserveCategorical(FeatureCategoryMix, "unseen", 1)
		live.ObserveNumeric(FeatureTop1Score, 0.5) // no such profile: ignored
		ObserveStrategy(live, StrategyModel, 0.9, true)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per observation round", allocs)
	}
}

func randomLive(r *rand.Rand, ref *Reference) *Live {
	l := ref.NewLive()
	for i := range l.Counts {
		l.Counts[i] = r.Uint64N(1000)
	}
	return l
}

func TestMergeAssociativeAndCommutative(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	refs := ReferenceSet{
		"n": NewNumericReference([]float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 0),
		"c": NewCategoricalReference(map[string]uint64{"x": 2, "y": 1}, 0),
	}
	mk := func() LiveSet {
		s := LiveSet{}
		for name, ref := range refs {
			s[name] = randomLive(r, ref)
		}
		return s
	}
	a, b, c := mk(), mk(), mk()
	merge := func(x, y LiveSet) LiveSet {
		out := x.Clone()
		if err := out.Merge(y); err != nil {
			t.Fatal(err)
		}
		return out
	}
	left := merge(merge(a, b), c)
	right := merge(a, merge(b, c))
	swapped := merge(merge(c, a), b)
	for name := range refs {
		if !slices.Equal(left[name].Counts, right[name].Counts) || !slices.Equal(left[name].Counts, swapped[name].Counts) {
			t.Errorf("%s: (a+b)+c %v, a+(b+c) %v, (c+a)+b %v", name, left[name].Counts, right[name].Counts, swapped[name].Counts)
		}
		for i := range left[name].Counts {
			if left[name].Counts[i] != a[name].Counts[i]+b[name].Counts[i]+c[name].Counts[i] {
				t.Fatalf("%s bin %d is not the sum", name, i)
			}
		}
	}
	// Merging into an empty set copies; the merged set can still observe.
	empty := LiveSet{}
	if err := empty.Merge(a); err != nil || !slices.Equal(empty["n"].Counts, a["n"].Counts) {
		t.Fatalf("merge into empty: %v", err)
	}
	before := a["n"].Counts[0]
	empty["n"].Observe(0)
	if a["n"].Counts[0] != before || empty["n"].Counts[0] != before+1 {
		t.Error("merged copy shares counts with its source")
	}
	// Decoded profiles (from other workers) merge into a bound one.
	var decoded LiveSet
	if err := json.Unmarshal(mustJSON(t, b), &decoded); err != nil {
		t.Fatal(err)
	}
	sum := refs.NewLive()
	if err := sum.Merge(a); err != nil {
		t.Fatal(err)
	}
	if err := sum.Merge(decoded); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sum["c"].Counts, merge(a, b)["c"].Counts) {
		t.Error("decoded merge differs")
	}
	sum["c"].ObserveCategory("x", 1)
}

func TestMergeRejectsOtherReferences(t *testing.T) {
	r1 := NewNumericReference([]float64{1, 2, 3}, 0)
	r2 := NewNumericReference([]float64{1, 2, 4}, 0) // same number of bins, other edges
	a := LiveSet{"x": r1.NewLive(), "y": r1.NewLive()}
	a["x"].Observe(1)
	b := LiveSet{"x": r1.NewLive(), "y": r2.NewLive()}
	b["x"].Observe(1)
	err := a.Merge(b)
	if err == nil || !strings.Contains(err.Error(), "feature y") {
		t.Fatalf("err = %v", err)
	}
	if a["x"].N() != 1 {
		t.Error("a failed merge changed the set")
	}
	if err := a["x"].Merge(NewCategoricalReference(map[string]uint64{"a": 1, "b": 1}, 0).NewLive()); err == nil {
		t.Error("numeric merged with categorical")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestJSONRoundTrip(t *testing.T) {
	s := NewSample()
	r := rand.New(rand.NewPCG(1, 1))
	for range 5000 {
		ObserveWindow(s, &Window{
			Events:          uint64(1 + r.IntN(5)),
			ByType:          wire.TypeCounts{View: uint64(1 + r.IntN(4)), Cart: uint64(r.IntN(2))},
			ByCategory:      wire.Categories{{Category: []string{"a", "b", "c"}[r.IntN(3)], N: 1}},
			SessionLengthMs: int64(r.IntN(600_000)),
			Revision:        1,
		})
		ObserveStrategy(s, StrategyModel, r.Float64(), true)
	}
	refs, err := s.Build(Config{})
	if err != nil {
		t.Fatal(err)
	}
	var refs2 ReferenceSet
	if err := json.Unmarshal(mustJSON(t, refs), &refs2); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(refs, refs2) {
		t.Fatalf("reference set changed in JSON:\n%+v\n%+v", refs, refs2)
	}
	for name, ref := range refs {
		if ref.Fingerprint() != refs2[name].Fingerprint() {
			t.Errorf("%s fingerprint changed", name)
		}
	}

	live := refs.NewLive()
	live.ObserveNumeric(FeatureSessionLength, 1234)
	live.ObserveCategorical(FeatureCategoryMix, "b", 3)
	var live2 LiveSet
	if err := json.Unmarshal(mustJSON(t, live), &live2); err != nil {
		t.Fatal(err)
	}
	for name, l := range live {
		l2 := live2[name]
		if l2 == nil || l2.Kind != l.Kind || l2.Ref != l.Ref || !slices.Equal(l2.Counts, l.Counts) {
			t.Errorf("%s: %+v became %+v", name, l, l2)
		}
	}
	// The decoded live set compares exactly like the original.
	if a, b := Compare(refs, live), Compare(refs2, live2); !reflect.DeepEqual(a, b) {
		t.Errorf("compare differs after JSON:\n%v\n%v", a, b)
	}
	// Results serialise too (workflow results, alerts).
	res := Compare(refs, live)
	var res2 map[string]Result
	if err := json.Unmarshal(mustJSON(t, res), &res2); err != nil || !reflect.DeepEqual(res, res2) {
		t.Errorf("results changed in JSON: %v", err)
	}
}

func TestReferenceJSONValidates(t *testing.T) {
	for _, bad := range []string{
		`{"kind":"numeric","edges":[2,1],"counts":[0,0,0]}`,
		`{"kind":"numeric","edges":[1,2],"counts":[0,0]}`,
		`{"kind":"categorical","categories":["a","a"],"counts":[0,0,0]}`,
		`{"kind":"categorical","categories":["a"],"counts":[1]}`,
		`{"kind":"histogram","counts":[1]}`,
	} {
		var r Reference
		if err := json.Unmarshal([]byte(bad), &r); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	var r Reference
	if err := json.Unmarshal([]byte(`{"kind":"categorical","categories":["a"],"counts":[3,1]}`), &r); err != nil || r.N() != 4 {
		t.Errorf("good reference: %v %+v", err, r)
	}
}

// TestReferenceSetJSONValidates: a reference set that would make the hot
// path panic on its first observation (a feature of the wrong kind, a null
// profile) or whose bins are broken does not decode, and the error names the
// feature.
func TestReferenceSetJSONValidates(t *testing.T) {
	f := func(set string, wantInErr ...string) {
		t.Helper()
		var refs ReferenceSet
		err := json.Unmarshal([]byte(set), &refs)
		if err == nil {
			t.Fatalf("accepted %s", set)
		}
		for _, want := range wantInErr {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("decoding %s: %q does not mention %q", set, err, want)
			}
		}
	}
	// The wrong kind for a feature the code observes.
	f(`{"category_mix":{"kind":"numeric","edges":[1,2],"counts":[5,3,1]}}`, "feature category_mix", "numeric", "categorical")
	f(`{"top1_score":{"kind":"categorical","categories":["a"],"counts":[1,1]}}`, "feature top1_score", "categorical", "numeric")
	// Broken bins, an unknown kind, a null profile.
	f(`{"session_length_ms":{"kind":"numeric","edges":[3,1],"counts":[0,0,0]}}`, "feature session_length_ms", "edges not strictly increasing")
	f(`{"window_events":{"kind":"numeric","edges":[1,2],"counts":[1,1]}}`, "feature window_events", "2 counts for 2 edges")
	f(`{"strategy_mix":{"kind":"categorical","categories":["model","model"],"counts":[1,1,1]}}`, "feature strategy_mix", "listed twice")
	f(`{"my_feature":{"kind":"histogram","counts":[1]}}`, "feature my_feature", "unknown kind")
	f(`{"event_type_mix":null}`, "feature event_type_mix", "null")
	f(`{"category_mix":{"kind":"categorical","counts":"many"}}`, "feature category_mix")
	// Every problem is reported.
	f(`{"category_mix":{"kind":"numeric","counts":[1]},"top1_score":{"kind":"categorical","counts":[1]}}`, "feature category_mix", "feature top1_score")

	// Standard features of the right kind, one missing, and a feature this
	// code does not know are fine.
	var refs ReferenceSet
	ok := `{"category_mix":{"kind":"categorical","categories":["shoes"],"counts":[3,1]},` +
		`"session_length_ms":{"kind":"numeric","edges":[0,60000],"counts":[1,2,3]},` +
		`"dwell_ms":{"kind":"numeric","counts":[4]}}`
	if err := json.Unmarshal([]byte(ok), &refs); err != nil || len(refs) != 3 {
		t.Fatalf("good reference set: %v, %v", refs, err)
	}
	live := refs.NewLive()
	ObserveWindow(live, &Window{ByCategory: wire.Categories{{Category: "shoes", N: 2}}, SessionLengthMs: 100, Revision: 1})
	if live[FeatureCategoryMix].N() != 2 || live[FeatureSessionLength].N() != 1 {
		t.Fatalf("live profiles of a good set: %+v", live)
	}
}

// TestReferenceSetValidate checks sets built in code the same way.
func TestReferenceSetValidate(t *testing.T) {
	f := func(refs ReferenceSet, wantInErr string) {
		t.Helper()
		err := refs.Validate()
		switch {
		case wantInErr == "" && err != nil:
			t.Fatalf("valid set rejected: %v", err)
		case wantInErr != "" && (err == nil || !strings.Contains(err.Error(), wantInErr)):
			t.Fatalf("got %v, want an error mentioning %q", err, wantInErr)
		}
	}
	f(ReferenceSet{}, "")
	f(ReferenceSet{FeatureWindowEvents: NewNumericReference([]float64{1, 2, 3}, 0)}, "")
	f(ReferenceSet{FeatureWindowEvents: NewCategoricalReference(map[string]uint64{"3": 1}, 0)}, "feature window_events: the reference profile is categorical")
	f(ReferenceSet{FeatureEventTypeMix: nil}, "feature event_type_mix: no reference profile")
	f(ReferenceSet{FeatureTop1Score: {Kind: Numeric, Edges: []float64{0, math.NaN()}, Counts: []uint64{1, 1, 1}}}, "feature top1_score: edge 1 is NaN")
	f(ReferenceSet{FeatureStrategyMix: {Kind: Categorical, Categories: []string{"model"}, Counts: []uint64{1}}}, "feature strategy_mix: 1 counts for 1 categories")
}

func TestObserveWindowFromTopicRecord(t *testing.T) {
	// A record as hotpath's emitWindow writes it.
	rec := `{"user_id":"u1","window_start_ms":60000,"window_end_ms":120000,"events":4,` +
		`"by_type":{"view":3,"cart":1,"purchase":0},"by_category":{"shoes":3,"hats":1},` +
		`"session_events":9,"session_length_ms":250000,"revision":1}`
	w, err := wire.DecodeWindow([]byte(rec))
	if err != nil {
		t.Fatal(err)
	}
	s := NewSample()
	ObserveWindow(s, &w)
	refire := w
	refire.Revision = 2
	ObserveWindow(s, &refire) // skipped
	rr, err := wire.DecodeRecommendation([]byte(`{"event_id":"e","user_id":"u1","items":[{"item_id":4711,"score":0.83},{"item_id":1,"score":0.5}],"strategy":"model","model_version":"v1"}`))
	if err != nil {
		t.Fatal(err)
	}
	ObserveRecommendation(s, &rr)
	ObserveRecommendation(s, &Recommendation{Strategy: "category_popular"})
	refs, err := s.Build(Config{})
	if err != nil {
		t.Fatal(err)
	}
	kinds := StandardFeatures()
	if len(refs) != len(kinds) {
		t.Fatalf("features %v", refs)
	}
	for name, k := range kinds {
		if refs[name] == nil || refs[name].Kind != k {
			t.Errorf("%s: %+v, want kind %s", name, refs[name], k)
		}
	}
	check := func(name string, cats []string, counts []uint64) {
		t.Helper()
		if r := refs[name]; !slices.Equal(r.Categories, cats) || !slices.Equal(r.Counts, counts) {
			t.Errorf("%s: %+v", name, r)
		}
	}
	check(FeatureCategoryMix, []string{"shoes", "hats"}, []uint64{3, 1, 0})
	check(FeatureEventTypeMix, []string{"view", "cart"}, []uint64{3, 1, 0})
	check(FeatureStrategyMix, []string{"category_popular", "model"}, []uint64{1, 1, 0})
	if r := refs[FeatureSessionLength]; r.N() != 1 || r.Edges[1] != 250000 {
		t.Errorf("session length %+v", r)
	}
	if r := refs[FeatureWindowEvents]; r.N() != 1 || r.Edges[1] != 4 {
		t.Errorf("window events %+v", r)
	}
	// The score is a float32, as the hot path passes it to ObserveStrategy.
	if r := refs[FeatureTop1Score]; r.N() != 1 || r.Edges[1] != float64(float32(0.83)) {
		t.Errorf("top-1 score %+v", r)
	}
}

func TestSampleReservoir(t *testing.T) {
	s := NewSample()
	s.Limit = 1000
	for i := range 100_000 {
		s.ObserveNumeric("x", float64(i))
	}
	s.ObserveNumeric("x", math.NaN())
	refs, err := s.Build(Config{Bins: 4})
	if err != nil {
		t.Fatal(err)
	}
	r := refs["x"]
	if r.N() != 1000 || len(r.Edges) != 3 {
		t.Fatalf("%+v", r)
	}
	// A uniform sample of 0..99,999: quartiles near 25,000, 50,000, 75,000.
	for i, want := range []float64{25_000, 50_000, 75_000} {
		if math.Abs(r.Edges[i]-want) > 5_000 {
			t.Errorf("edge %d = %v, want ≈ %v", i, r.Edges[i], want)
		}
	}
	s.ObserveCategorical("x", "a", 1)
	if _, err := s.Build(Config{}); err == nil {
		t.Error("a feature both numeric and categorical built")
	}
}

func TestLiveSetResetAndClone(t *testing.T) {
	refs := ReferenceSet{"n": NewNumericReference([]float64{1, 2, 3}, 0)}
	live := refs.NewLive()
	live.ObserveNumeric("n", 2)
	c := live.Clone()
	live.Reset()
	if live["n"].N() != 0 || c["n"].N() != 1 {
		t.Errorf("reset %v clone %v", live["n"].Counts, c["n"].Counts)
	}
	c.ObserveNumeric("n", 3)
	if c["n"].N() != 2 {
		t.Error("clone cannot observe")
	}
}

func BenchmarkObserveNumeric(b *testing.B) {
	v := make([]float64, 10_000)
	for i := range v {
		v[i] = float64(i * i)
	}
	live := ReferenceSet{FeatureSessionLength: NewNumericReference(v, 0)}.NewLive()
	x := 0.0
	for b.Loop() {
		live.ObserveNumeric(FeatureSessionLength, x)
		x += 997
	}
}

func BenchmarkObserveCategorical(b *testing.B) {
	counts := map[string]uint64{}
	cats := []string{}
	for i := range 100 {
		c := "category-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		counts[c] = uint64(100 - i)
		cats = append(cats, c)
	}
	live := ReferenceSet{FeatureCategoryMix: NewCategoricalReference(counts, 0)}.NewLive()
	i := 0
	for b.Loop() {
		live.ObserveCategorical(FeatureCategoryMix, cats[i%len(cats)], 1)
		i++
	}
}

func TestLiveSetNilEntries(t *testing.T) {
	var decoded LiveSet
	if err := json.Unmarshal([]byte(`{"x":null}`), &decoded); err != nil {
		t.Fatal(err)
	}
	s := LiveSet{}
	if err := s.Merge(decoded); err != nil || len(s) != 0 {
		t.Errorf("merge of a null entry: %v %v", err, s)
	}
	decoded.Reset()
	if c := decoded.Clone(); len(c) != 0 {
		t.Errorf("clone %v", c)
	}
	decoded.ObserveNumeric("x", 1)
}
