package model

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/clickrec/clickrec/event"
)

func TestWeights(t *testing.T) {
	w := Weighting{View: 1, Cart: 3, Purchase: 5, Decay: 0.5, MaxItems: 3}
	got := w.Weights([]event.Type{event.Purchase, event.View, event.Cart, event.View}, nil)
	// Oldest first: the purchase is beyond MaxItems; view 1·0.5², cart 3·0.5, view 1.
	want := []float32{0, 0.25, 1.5, 1}
	if !slices.Equal(got, want) {
		t.Fatalf("Weights = %v, want %v", got, want)
	}
	w.Normalize = true
	got = w.Weights([]event.Type{event.Purchase, event.View, event.Cart, event.View}, got)
	for i := range want {
		if d := got[i] - want[i]/2.75; math.Abs(float64(d)) > 1e-6 {
			t.Fatalf("normalised Weights = %v, want %v/2.75", got, want)
		}
	}
	if v := w.ViewWeights(4, nil); !slices.Equal(v, w.Weights(make([]event.Type, 4), nil)) {
		t.Fatalf("ViewWeights %v differs from Weights of unknown (view) types", v)
	}
	out := make([]float32, 0, 8)
	if got := SessionWeights([]event.Type{event.View, event.View}, out); &got[0] != &out[:1][0] {
		t.Fatal("SessionWeights did not reuse out")
	}
	if len(SessionWeights(nil, nil)) != 0 {
		t.Fatal("empty session has weights")
	}
	for _, bad := range []Weighting{{View: 0, Cart: 1, Purchase: 1, Decay: 1}, {View: 1, Cart: 1, Purchase: 1, Decay: 1.5}, {View: 1, Cart: 1, Purchase: 1, Decay: 1, MaxItems: -1}} {
		if bad.Validate() == nil {
			t.Errorf("%+v validated", bad)
		}
	}
}

// twoGroups is sessions drawn from two disjoint item groups (ids 1–5 and
// 11–15): ALS must put each group's items near each other.
func twoGroups(n int, seed uint64) []Session {
	r := rand.New(rand.NewPCG(seed, 1))
	var ss []Session
	for i := 0; i < n; i++ {
		base := int64(1)
		if i%2 == 1 {
			base = 11
		}
		s := Session{}
		for j := 0; j < 3+r.IntN(3); j++ {
			s.Items = append(s.Items, base+int64(r.IntN(5)))
		}
		ss = append(ss, s)
	}
	return ss
}

func TestALSRecoversGroups(t *testing.T) {
	c := newCorpus(twoGroups(200, 1), buildVocab(twoGroups(200, 1), 1))
	r := interactions(c, DefaultWeighting)
	cfg := alsConfig{factors: 4, iterations: 10, alpha: 10, lambda: 0.1, cgSteps: 3, workers: 2, seed: 7}
	var losses []float64
	for it := 1; it <= 3; it++ {
		cfg.iterations = it
		m, err := trainALS(context.Background(), r, cfg, discard())
		if err != nil {
			t.Fatal(err)
		}
		losses = append(losses, m.loss)
	}
	if !(losses[2] < losses[0]) {
		t.Fatalf("ALS loss did not decrease: %v", losses)
	}
	cfg.iterations = 10
	m, err := trainALS(context.Background(), r, cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	p, err := foldIn(m.y, 4, cfg.lambda)
	if err != nil {
		t.Fatal(err)
	}
	// Fold in a session of items 1 and 2 (indexes 0, 1): every item of group
	// one (indexes 0–4) must outscore every item of group two (5–9).
	k := 4
	u := make([]float64, k)
	for _, i := range []int{0, 1} {
		axpy(1, p[i*k:i*k+k], u)
	}
	score := func(i int) float64 { return dot(u, m.y[i*k:i*k+k]) }
	for a := 0; a < 5; a++ {
		for b := 5; b < 10; b++ {
			if score(a) <= score(b) {
				t.Fatalf("item %d (same group) scores %.3f ≤ item %d (other group) %.3f", a, score(a), b, score(b))
			}
		}
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// cyclic is sessions walking the items 1..n in order (wrapping), so the next
// item is always the current one + 1.
func cyclic(sessions, n int, seed uint64) []Session {
	r := rand.New(rand.NewPCG(seed, 2))
	ss := make([]Session, sessions)
	for i := range ss {
		start := r.IntN(n)
		for j := 0; j < 4; j++ {
			ss[i].Items = append(ss[i].Items, int64((start+j)%n+1))
		}
	}
	return ss
}

func smallConfig() Config {
	cfg := DefaultConfig()
	cfg.Factors = 8
	cfg.Iterations = 3
	cfg.Epochs = 6
	cfg.BatchSize = 32
	cfg.Negatives = 16
	cfg.LearningRate = 0.05
	cfg.ValidCases = 200
	cfg.Temperature = 0.1
	cfg.Workers = 2
	return cfg
}

func TestTrainLearnsNextItem(t *testing.T) {
	const n = 30
	for _, tied := range []bool{true, false} {
		cfg := smallConfig()
		cfg.Tied = tied
		cfg.Weighting.Decay = 0.3 // the last item decides
		m, rep, err := Train(context.Background(), cyclic(600, n, 1), cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Validation["hr@10"] < 0.9 {
			t.Errorf("tied=%v: validation %v, want HR@10 ≥ 0.9 on a deterministic sequence", tied, rep.Validation)
		}
		// Served with retrieval: the next item is a co-occurrence neighbour,
		// and the neighbour weight was chosen from the grid on validation.
		if !m.HasRetrieval() || rep.ValidationRetrieval["hr@10"] < 0.9 || !slices.Contains(cfg.Retrieval.NeighborWeights, rep.NeighborWeight) ||
			float64(m.NeighborWeight) != rep.NeighborWeight {
			t.Errorf("tied=%v: retrieval %v, validation %v, neighbour weight %v (model %v)", tied, m.HasRetrieval(), rep.ValidationRetrieval, rep.NeighborWeight, m.NeighborWeight)
		}
		sc, err := NewScorer(m)
		if err != nil {
			t.Fatal(err)
		}
		hits := 0
		out := make([][]Rec, 1)
		for i := 1; i <= n; i++ {
			prev := int64((i-2+n)%n + 1)
			a, _ := m.Index(prev)
			b, _ := m.Index(int64(i))
			in := Input{Items: []int32{a, b}, Weights: m.Weighting.ViewWeights(2, nil)}
			if err := sc.Score([]Input{in}, 3, out); err != nil {
				t.Fatal(err)
			}
			want := int64(i%n + 1)
			for _, r := range out[0] {
				if m.ItemIDs[r.Index] == want {
					hits++
				}
			}
		}
		if hits < n*8/10 {
			t.Errorf("tied=%v: next item in the top 3 for %d of %d prefixes", tied, hits, n)
		}
	}
}

func TestTrainDeterministic(t *testing.T) {
	ss := append(twoGroups(150, 3), cyclic(150, 20, 4)...)
	cfg := smallConfig()
	cfg.Epochs = 2
	var bins [][]byte
	for _, workers := range []int{1, 2, 2} {
		cfg.Workers = workers
		m, _, err := Train(context.Background(), ss, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		bins = append(bins, b)
	}
	if !bytes.Equal(bins[1], bins[2]) {
		t.Fatal("two runs with the same seed differ")
	}
	if !bytes.Equal(bins[0], bins[1]) {
		t.Fatal("1 and 2 workers give different models")
	}
	cfg.Seed++
	m, _, err := Train(context.Background(), ss, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := m.MarshalBinary()
	if bytes.Equal(b, bins[0]) {
		t.Fatal("a different seed gives the same model")
	}
}

func TestTrainErrors(t *testing.T) {
	cfg := smallConfig()
	cfg.Factors = 0
	if _, _, err := Train(context.Background(), cyclic(10, 5, 1), cfg, nil); err == nil {
		t.Fatal("factors 0 accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := Train(ctx, cyclic(100, 5, 1), smallConfig(), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled training: err = %v", err)
	}
	if _, _, err := Train(context.Background(), nil, smallConfig(), nil); err == nil {
		t.Fatal("no sessions accepted")
	}
}

// randomModel has small integer-valued factors so that many scores tie exactly.
func randomModel(r *rand.Rand, n, k int) *Model {
	m := &Model{K: k, ItemIDs: make([]int64, n), Factors: make([]float32, n*k), Projection: make([]float32, n*k), Prior: make([]float32, n), Weighting: DefaultWeighting}
	for i := range m.ItemIDs {
		m.ItemIDs[i] = int64(1000 + 3*i)
		m.Prior[i] = float32(r.IntN(3))
	}
	for i := range m.Factors {
		m.Factors[i] = float32(r.IntN(3) - 1)
		m.Projection[i] = float32(r.IntN(2))
	}
	return m
}

// bruteForce is the contract, spelled out: all scores, excluded items removed,
// sorted by score desc then index asc, first k.
func bruteForce(m *Model, in Input, k int) []Rec {
	u := make([]float32, m.K)
	for j, it := range in.Items {
		for d := 0; d < m.K; d++ {
			u[d] += in.Weights[j] * m.Projection[int(it)*m.K+d]
		}
	}
	var all []Rec
	for i := 0; i < m.NumItems(); i++ {
		if slices.Contains(in.Exclude, int32(i)) {
			continue
		}
		var s float32
		for d := 0; d < m.K; d++ {
			s += u[d] * m.Factors[i*m.K+d]
		}
		all = append(all, Rec{Index: int32(i), Score: s + m.Prior[i]})
	}
	slices.SortStableFunc(all, func(a, b Rec) int {
		if a.Score != b.Score {
			if a.Score > b.Score {
				return -1
			}
			return 1
		}
		return int(a.Index - b.Index)
	})
	return all[:min(k, len(all))]
}

func TestScorerMatchesBruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for trial := 0; trial < 30; trial++ {
		n := 1 + r.IntN(1500) // spans several score chunks
		k := 1 + r.IntN(8)
		m := randomModel(r, n, k)
		sc, err := NewScorer(m)
		if err != nil {
			t.Fatal(err)
		}
		batch := make([]Input, 1+r.IntN(5))
		for b := range batch {
			in := &batch[b]
			for j := 0; j < r.IntN(6); j++ {
				in.Items = append(in.Items, int32(r.IntN(n)))
				in.Weights = append(in.Weights, float32(r.IntN(4))) // small integers: exact sums
			}
			for j := 0; j < r.IntN(10); j++ {
				in.Exclude = append(in.Exclude, int32(r.IntN(n))) // duplicates allowed
			}
		}
		topk := []int{0, 1, 10, n, n + 5}[r.IntN(5)]
		out := make([][]Rec, len(batch))
		for round := 0; round < 2; round++ { // the second round reuses buffers
			if err := sc.Score(batch, topk, out); err != nil {
				t.Fatal(err)
			}
			for b, in := range batch {
				want := bruteForce(m, in, topk)
				if !slices.Equal(out[b], want) && !(len(out[b]) == 0 && len(want) == 0) {
					t.Fatalf("trial %d n=%d k=%d input %d: got %v, want %v", trial, n, topk, b, out[b], want)
				}
				for _, rec := range out[b] {
					if slices.Contains(in.Exclude, rec.Index) {
						t.Fatalf("excluded index %d returned", rec.Index)
					}
				}
			}
		}
	}
}

func TestScorerErrors(t *testing.T) {
	m := randomModel(rand.New(rand.NewPCG(1, 1)), 10, 4)
	sc, err := NewScorer(m)
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]Rec, 1)
	for name, in := range map[string]Input{
		"negative item":     {Items: []int32{-1}, Weights: []float32{1}},
		"item out of range": {Items: []int32{10}, Weights: []float32{1}},
		"weights mismatch":  {Items: []int32{1}, Weights: nil},
		"bad exclude":       {Exclude: []int32{10}},
	} {
		if err := sc.Score([]Input{in}, 5, out); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if err := sc.Score([]Input{{}}, 5, nil); err == nil {
		t.Error("len(out) != len(batch) accepted")
	}
	// An empty session ranks by prior alone.
	if err := sc.Score([]Input{{}}, 3, out); err != nil || !slices.Equal(out[0], bruteForce(m, Input{}, 3)) {
		t.Errorf("empty input: %v, %v", out[0], err)
	}
	sc.Close()
	if err := sc.Score([]Input{{}}, 3, out); err == nil {
		t.Error("closed scorer scored")
	}
	bad := randomModel(rand.New(rand.NewPCG(1, 1)), 10, 4)
	bad.Prior = bad.Prior[:9]
	if _, err := NewScorer(bad); err == nil {
		t.Error("short prior accepted")
	}
	bad = randomModel(rand.New(rand.NewPCG(1, 1)), 10, 4)
	bad.Factors[3] = float32(math.NaN())
	if _, err := NewScorer(bad); err == nil {
		t.Error("NaN factor accepted")
	}
}

func TestScorerAllocs(t *testing.T) {
	m := randomModel(rand.New(rand.NewPCG(2, 2)), 2000, 16)
	sc, _ := NewScorer(m)
	batch := []Input{{Items: []int32{1, 2, 3}, Weights: []float32{1, 1, 1}, Exclude: []int32{5, 9}}, {Items: []int32{7}, Weights: []float32{1}}}
	out := make([][]Rec, 2)
	if err := sc.Score(batch, 10, out); err != nil {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(20, func() { _ = sc.Score(batch, 10, out) }); a > 0 {
		t.Fatalf("Score allocates %.1f times per call in steady state", a)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	m := randomModel(rand.New(rand.NewPCG(3, 3)), 50, 6)
	m.Version = "v-test"
	m.Weighting.Decay = 0.7
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got Model
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if got.Version != m.Version || got.K != m.K || got.Weighting != m.Weighting || !slices.Equal(got.ItemIDs, m.ItemIDs) ||
		!slices.Equal(got.Factors, m.Factors) || !slices.Equal(got.Projection, m.Projection) || !slices.Equal(got.Prior, m.Prior) {
		t.Fatal("round trip changed the model")
	}
	if i, ok := got.Index(m.ItemIDs[7]); !ok || i != 7 {
		t.Fatalf("Index after load = %d, %v", i, ok)
	}
	for _, pos := range []int{20, len(b) / 2, len(b) - 1} {
		c := bytes.Clone(b)
		c[pos] ^= 1
		if err := new(Model).UnmarshalBinary(c); !errors.Is(err, ErrChecksum) {
			t.Errorf("flipped byte %d: err = %v, want ErrChecksum", pos, err)
		}
	}
	if err := new(Model).UnmarshalBinary(b[:len(b)-40]); err == nil {
		t.Error("truncated model accepted")
	}
	if err := new(Model).UnmarshalBinary([]byte("not a model at all, definitely not one")); err == nil {
		t.Error("garbage accepted")
	}
}

func TestSaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	m := randomModel(rand.New(rand.NewPCG(4, 4)), 30, 4)
	m.Version = "v1"
	md := NewMetadata(m, DefaultConfig(), &Report{Data: DataStats{Sessions: 3, Events: 9, Items: 30, FromMs: 1000, ToMs: 2000}, PriorWeight: 0.2}, "x.jsonl")
	md.OfflineMetrics = map[string]map[string]float64{"served": {"hr@20": 0.5}}
	if err := Save(dir, m, md); err != nil {
		t.Fatal(err)
	}
	got, gmd, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Factors, m.Factors) || gmd.Version != "v1" || gmd.OfflineMetrics["served"]["hr@20"] != 0.5 ||
		gmd.TrainingWindow == nil || gmd.TrainingWindow.To.UnixMilli() != 2000 || gmd.ModelSHA256 == "" || gmd.Items != 30 {
		t.Fatalf("Load: %+v", gmd)
	}
	// A model.bin that does not match the metadata is refused.
	other, _ := randomModel(rand.New(rand.NewPCG(9, 9)), 30, 4).MarshalBinary()
	if err := os.WriteFile(filepath.Join(dir, ModelFile), other, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(dir); !errors.Is(err, ErrChecksum) {
		t.Fatalf("mismatched model.bin: err = %v", err)
	}
}

func gz(t *testing.T, s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.Bytes()
}

func TestReadDiginetica(t *testing.T) {
	const text = "1 2\n\n3 4 5\n7 7\n"
	dir := t.TempDir()
	for name, b := range map[string][]byte{"plain.txt": []byte(text), "packed.gz": gz(t, text), "packed.txt": gz(t, text)} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		ss, st, err := ReadSessionsFile(p, FormatDiginetica)
		if err != nil {
			t.Fatal(name, err)
		}
		if len(ss) != 3 || !slices.Equal(ss[1].Items, []int64{3, 4, 5}) || ss[0].Types != nil {
			t.Fatalf("%s: %+v", name, ss)
		}
		if st.Sessions != 3 || st.Events != 7 || st.Items != 6 || st.Format != FormatDiginetica {
			t.Fatalf("%s: stats %+v", name, st)
		}
	}
	if _, err := ReadDiginetica(strings.NewReader("1 x\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("bad id: %v", err)
	}
	if _, _, err := ReadSessionsFile(filepath.Join(dir, "plain.txt"), "csv"); err == nil {
		t.Fatal("unknown format accepted")
	}
}

func TestReadEvents(t *testing.T) {
	const text = `{"event_id":"e2","user_id":"u1","session_id":"s1","event_type":"cart","item_id":20,"category":"c","price":1,"timestamp_ms":2000}
{"event_id":"e1","user_id":"u1","session_id":"s1","event_type":"view","item_id":10,"category":"c","price":1,"timestamp_ms":1000}
{"event_id":"e3","user_id":"u2","session_id":"","event_type":"view","item_id":30,"category":"c","price":1,"timestamp_ms":500}
{"event_id":"e1","user_id":"u1","session_id":"s1","event_type":"view","item_id":10,"category":"c","price":1,"timestamp_ms":1000}
{"event_id":"e4","user_id":"u3","event_type":"like","item_id":30,"timestamp_ms":500}
not json
{"event_id":"e5","user_id":"u1","session_id":"s1","event_type":"purchase","item_id":20,"category":"c","price":1,"timestamp_ms":3000}
`
	p := filepath.Join(t.TempDir(), "events.jsonl.gz")
	os.WriteFile(p, gz(t, text), 0o644)
	ss, st, err := ReadSessionsFile(p, FormatEvents)
	if err != nil {
		t.Fatal(err)
	}
	if st.Invalid != 2 || st.Duplicate != 1 || st.Sessions != 2 || st.Events != 4 || st.FromMs != 500 || st.ToMs != 3000 {
		t.Fatalf("stats %+v", st)
	}
	// Sessions by first event time: u2's (no session id) first.
	if ss[0].ID != "user:u2" || ss[0].Types != nil || !slices.Equal(ss[0].Items, []int64{30}) {
		t.Fatalf("first session %+v", ss[0])
	}
	s := ss[1]
	if !slices.Equal(s.Items, []int64{10, 20, 20}) || !slices.Equal(s.Types, []event.Type{event.View, event.Cart, event.Purchase}) || s.StartMs != 1000 || s.EndMs != 3000 {
		t.Fatalf("second session %+v", s)
	}
	if _, _, err := ReadEvents(strings.NewReader("garbage\n")); err == nil {
		t.Fatal("input without valid events accepted")
	}
	// Types flow into training: ALS confidence and the fold-in weights.
	c := newCorpus(ss, buildVocab(ss, 1))
	r := interactions(c, DefaultWeighting)
	cols, vals := r.row(1)
	if !slices.Equal(cols, []int32{0, 1}) || !slices.Equal(vals, []float32{1, 8}) {
		t.Fatalf("interactions row = %v %v, want items 10→1, 20→3+5", cols, vals)
	}
}

func TestExp32(t *testing.T) {
	for x := float32(-100); x <= 10; x += 0.37 {
		got, want := float64(exp32(x)), math.Exp(float64(x))
		if x < -80 { // near float32's smallest normal numbers: only small
			if got > 1e-34 {
				t.Fatalf("exp32(%v) = %v, want < 1e-34", x, got)
			}
			continue
		}
		if math.Abs(got-want) > (1e-7*math.Abs(float64(x))+3e-6)*want {
			t.Fatalf("exp32(%v) = %v, want %v", x, got, want)
		}
	}
}

func TestAliasSampler(t *testing.T) {
	w := []float64{1, 0, 3, 6}
	a := newAliasSampler(w)
	r := rand.New(rand.NewPCG(1, 2))
	cnt := make([]int, len(w))
	const n = 100000
	for i := 0; i < n; i++ {
		cnt[a.draw(r)]++
	}
	for i, c := range cnt {
		if want := w[i] / 10 * n; math.Abs(float64(c)-want) > 0.02*n {
			t.Fatalf("item %d drawn %d times, want ≈ %.0f", i, c, want)
		}
	}
}
