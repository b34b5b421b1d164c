package eval

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/clickrec/clickrec/model"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestAccumulator(t *testing.T) {
	var a Accumulator
	for _, r := range []int{1, 3, 15, 0, 21} {
		a.Add(r)
	}
	m := a.Metrics()
	want := Metrics{
		HR10:   2.0 / 5,
		HR20:   3.0 / 5,
		MRR20:  (1 + 1.0/3 + 1.0/15) / 5,
		NDCG10: (1 + 1/math.Log2(4)) / 5,
	}
	if !near(m.HR10, want.HR10) || !near(m.HR20, want.HR20) || !near(m.MRR20, want.MRR20) || !near(m.NDCG10, want.NDCG10) {
		t.Fatalf("metrics %+v, want %+v", m, want)
	}
	if (&Accumulator{}).Metrics() != (Metrics{}) {
		t.Fatal("empty accumulator not zero")
	}
	if Rank([]int64{5, 6, 7}, 7) != 3 || Rank([]int64{5}, 9) != 0 {
		t.Fatal("Rank")
	}
}

func gzBytes(s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.Bytes()
}

func TestReadCases(t *testing.T) {
	const text = "1 2 3\t4\n\n5\t6\n"
	dir := t.TempDir()
	for name, b := range map[string][]byte{"cases.tsv": []byte(text), "cases.tsv.gz": gzBytes(text)} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		cs, err := ReadCasesFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) != 2 || !slices.Equal(cs[0].Prefix, []int64{1, 2, 3}) || cs[0].Target != 4 || cs[1].Target != 6 {
			t.Fatalf("%s: %+v", name, cs)
		}
	}
	for _, bad := range []string{"1 2 3\n", "1 x\t2\n", "1\ty\n", "\t3\n"} {
		if _, err := ReadCases(strings.NewReader(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	cs := CasesFromSessions([]model.Session{{Items: []int64{1, 2, 3}}, {Items: []int64{9}}})
	if len(cs) != 2 || !slices.Equal(cs[1].Prefix, []int64{1, 2}) || cs[1].Target != 3 {
		t.Fatalf("CasesFromSessions: %+v", cs)
	}
}

// fixed recommends the same list to everyone and counts its forks.
type fixed struct {
	list  []int64
	forks *int
}

func (f fixed) Recommend(prefixes [][]int64, k int, out [][]int64) error {
	for i := range prefixes {
		out[i] = append(out[i][:0], f.list[:min(k, len(f.list))]...)
	}
	return nil
}

func (f fixed) Fork() (Recommender, error) { *f.forks++; return f, nil }

func TestRun(t *testing.T) {
	list := make([]int64, 30)
	for i := range list {
		list[i] = int64(i + 1)
	}
	cases := []Case{{Prefix: []int64{1}, Target: 1}, {Prefix: []int64{1}, Target: 12}, {Prefix: []int64{1}, Target: 25}, {Prefix: []int64{1}, Target: 99}}
	forks := 0
	res, err := Run(context.Background(), cases, map[string]Recommender{"fixed": fixed{list: list, forks: &forks}}, Options{Workers: 2, BatchSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	m := res.Models["fixed"]
	// Ranks 1, 12, (25 beyond the cut-off of 20), absent.
	if res.Cases != 4 || !near(m.HR10, 0.25) || !near(m.HR20, 0.5) || !near(m.MRR20, (1+1.0/12)/4) || !near(m.NDCG10, 0.25) {
		t.Fatalf("result %+v", res)
	}
	if forks != 1 {
		t.Fatalf("forked %d times for 2 workers", forks)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Run(ctx, cases, map[string]Recommender{"fixed": fixed{list: list, forks: &forks}}, Options{}); err == nil {
		t.Fatal("cancelled run succeeded")
	}
}

var train = []model.Session{
	{Items: []int64{1, 2, 3}},
	{Items: []int64{1, 2}},
	{Items: []int64{2, 4}},
	{Items: []int64{3, 5, 3}},
	{Items: []int64{2, 1}},
}

func recommend(t *testing.T, r Recommender, prefix ...int64) []int64 {
	t.Helper()
	out := make([][]int64, 1)
	if err := r.Recommend([][]int64{prefix}, 4, out); err != nil {
		t.Fatal(err)
	}
	return out[0]
}

func TestBaselines(t *testing.T) {
	x := NewIndex(train)
	// Clicks: 1→3, 2→4, 3→3, 4→1, 5→1.
	if got := recommend(t, NewPop(x), 5); !slices.Equal(got, []int64{2, 1, 3, 4}) {
		t.Errorf("POP = %v", got)
	}
	// S-POP: 5 twice, then 4 once (ties by global popularity), then popularity.
	if got := recommend(t, NewSPop(x), 5, 4, 5); !slices.Equal(got, []int64{5, 4, 2, 1}) {
		t.Errorf("S-POP = %v", got)
	}
	// Item-kNN from 1 (sessions 0, 1, 4): co(1,2) = 3, co(1,3) = 1;
	// sim(1,2) = 3/(√(3·4)+λ), sim(1,3) = 1/(√(3·2)+λ); with λ = 0, 2 then 3,
	// then popularity fills with 1 and 4.
	if got := recommend(t, NewItemKNN(x, 0), 9, 1); !slices.Equal(got, []int64{2, 3, 1, 4}) {
		t.Errorf("item-kNN = %v", got)
	}
	// Unknown last item: popularity.
	if got := recommend(t, NewItemKNN(x, 0), 77); !slices.Equal(got, []int64{2, 1, 3, 4}) {
		t.Errorf("item-kNN, unknown item = %v", got)
	}
}

func TestVSKNNByHand(t *testing.T) {
	x := NewIndex(train)
	v := NewVSKNN(x, VSKNNConfig{K: 2, Sample: 3})
	// Prefix 3 2: weights 3→1/2, 2→2/2 = 1; 2 distinct items. Candidate
	// sessions holding 3 or 2, newest first: 4 {1,2}, 3 {3,5}, 2 {2,4}
	// (Sample = 3 drops sessions 1 and 0). Similarities: s4 = 1/2, s3 = 0.5/2,
	// s2 = 1/2. K = 2 keeps s4 and s2 (tie: newer first). Votes, matched via
	// item 2, the last one (step 1, decay 1): s4 → 1, 2 += 1/2; s2 → 2, 4 += 1/2.
	// Scores: 2 = 1, 1 = 0.5, 4 = 0.5; then popularity fills with 3.
	if got := recommend(t, v, 3, 2); !slices.Equal(got, []int64{2, 1, 4, 3}) {
		t.Errorf("V-SKNN = %v", got)
	}
	// Decay: prefix 2 3 matches session 3 {3,5} through its last item but
	// sessions 4 and 2 only through 2 (step 2, decay 1/2).
	// Weights: 2→1/2, 3→1. Sims: s4 = 0.25, s3 = 0.5, s2 = 0.25. Top 2: s3, s4.
	// Votes: s3 (decay 1) → 3, 5 += 0.5; s4 (decay 1/2) → 1, 2 += 0.125.
	if got := recommend(t, v, 2, 3); !slices.Equal(got, []int64{3, 5, 1, 2}) {
		t.Errorf("V-SKNN with decay = %v", got)
	}
	f, _ := v.Fork()
	if got := recommend(t, f, 2, 3); !slices.Equal(got, []int64{3, 5, 1, 2}) {
		t.Errorf("fork = %v", got)
	}
	if got := recommend(t, v, 42); !slices.Equal(got, []int64{2, 1, 3, 4}) {
		t.Errorf("V-SKNN, unknown items = %v", got)
	}
}

func TestServed(t *testing.T) {
	// A hand-made model whose fold-in is the identity: u = Σ w·e_item, Y = I,
	// so the items of the session score their weights; prior breaks the rest.
	m := &model.Model{K: 3, ItemIDs: []int64{10, 20, 30}, Weighting: model.DefaultWeighting,
		Factors:    []float32{1, 0, 0, 0, 1, 0, 0, 0, 1},
		Projection: []float32{1, 0, 0, 0, 1, 0, 0, 0, 1},
		Prior:      []float32{0, 0, 0.1},
	}
	s, err := NewServed(m, GoScorer)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := recommend(t, s, 10, 99, 20); !slices.Equal(got, []int64{20, 10, 30}) {
		t.Errorf("served = %v (newest item first, unknown 99 skipped)", got)
	}
	if got := recommend(t, s, 99); !slices.Equal(got, []int64{30, 10, 20}) {
		t.Errorf("served, no known item = %v (prior order)", got)
	}
	f, err := s.Fork()
	if err != nil {
		t.Fatal(err)
	}
	defer f.(*Served).Close()
	if got := recommend(t, f, 10); got[0] != 10 {
		t.Errorf("fork = %v", got)
	}
}

// TestDigineticaSmall is a small real run: a model trained on the 10,000 most
// recent real Diginetica training sessions, evaluated with the baselines on
// 500 real dev cases.
func TestDigineticaSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("trains on real data (a few seconds)")
	}
	const dir = "../../data/diginetica" // scripts/data.sh
	trainPath, testPath := filepath.Join(dir, "train_sessions.txt.gz"), filepath.Join(dir, "test_cases.dev.tsv.gz")
	if _, err := os.Stat(trainPath); err != nil {
		t.Skip("Diginetica data not present (scripts/data.sh):", err)
	}
	ss, _, err := model.ReadSessionsFile(trainPath, model.FormatDiginetica)
	if err != nil {
		t.Fatal(err)
	}
	ss = ss[len(ss)-10000:]
	cases, err := ReadCasesFile(testPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) != 30504 {
		t.Fatalf("%d dev cases, want 30504", len(cases))
	}
	cases = cases[:500]
	cfg := model.DefaultConfig()
	cfg.Iterations, cfg.Epochs, cfg.Factors, cfg.Negatives, cfg.ValidCases, cfg.Refit = 3, 2, 16, 256, 300, false
	m, _, err := model.Train(context.Background(), ss, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	served, err := NewServed(m, GoScorer)
	if err != nil {
		t.Fatal(err)
	}
	defer served.Close()
	x := NewIndex(ss)
	res, err := Run(context.Background(), cases, map[string]Recommender{"pop": NewPop(x), "spop": NewSPop(x), "served": served}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res.Models)
	if res.Models["served"].HR20 <= res.Models["spop"].HR20 || res.Models["spop"].HR20 <= res.Models["pop"].HR20 {
		t.Errorf("served %+v should beat S-POP %+v, which should beat POP %+v", res.Models["served"], res.Models["spop"], res.Models["pop"])
	}
}

// TestMetricsMap: the names of Map are the report's JSON names, so metadata
// and the eval report spell a metric the same way.
func TestMetricsMap(t *testing.T) {
	m := Metrics{HR10: 0.1, HR20: 0.2, MRR20: 0.3, NDCG10: 0.4}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var fromJSON map[string]float64
	if err := json.Unmarshal(b, &fromJSON); err != nil {
		t.Fatal(err)
	}
	got := m.Map()
	if len(got) != len(fromJSON) {
		t.Fatalf("Map() = %v, want the JSON fields %v", got, fromJSON)
	}
	for k, v := range fromJSON {
		if got[k] != v {
			t.Fatalf("Map()[%q] = %v, want %v (Map() = %v)", k, got[k], v, got)
		}
	}
}
