package onnx

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/clickrec/clickrec/model"
)

// newTestScorer exports m and loads it.
func newTestScorer(t testing.TB, m *model.Model, eo ExportOptions, so ScorerOptions) *Scorer {
	t.Helper()
	so.LibraryPath = ortLib(t)
	b, err := Export(m, eo)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewScorer(b, so)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func outs(n int) [][]model.Rec { return make([][]model.Rec, n) }

func rec(index int32, score float32) model.Rec { return model.Rec{Index: index, Score: score} }

func TestScorerMatchesReference(t *testing.T) {
	const n, k, maxLen, top = 1000, 32, 20, 10
	for seed := uint64(1); seed <= 3; seed++ {
		rng := rand.New(rand.NewPCG(seed, 99))
		m := randomModel(rng, n, k)
		for _, maxBatch := range []int{0, 5} { // default, and splitting into sub-batches
			s := newTestScorer(t, m, ExportOptions{MaxSessionLen: maxLen}, ScorerOptions{MaxBatch: maxBatch})
			differ, total := 0, 0
			for _, bs := range []int{1, 7, 64, 100} {
				for rep := range 3 {
					batch := randomSessions(rng, n, bs, 25)
					out := outs(bs)
					if err := s.Score(batch, top, out); err != nil {
						t.Fatal(err)
					}
					gos := goTopK(t, m, batch, top, maxLen)
					for i := range batch {
						where := fmt.Sprintf("seed %d maxBatch %d batch %d rep %d session %d (len %d, %d excluded)",
							seed, maxBatch, bs, rep, i, len(batch[i].Items), len(batch[i].Exclude))
						// The ONNX scorer against model.GoScorer, and both against
						// the float64 reference in this package's tests.
						differ += checkTopK(t, m, batch[i], maxLen, out[i], gos[i], where+" vs GoScorer")
						checkTopK(t, m, batch[i], maxLen, out[i], refTopK(m, batch[i], top, maxLen), where+" vs float64 reference")
						checkTopK(t, m, batch[i], maxLen, gos[i], refTopK(m, batch[i], top, maxLen), where+": GoScorer vs float64 reference")
						total += len(out[i])
					}
				}
			}
			if differ > 0 {
				t.Logf("seed %d: %d of %d ranks hold a different item of a tied score", seed, differ, total)
			}
		}
	}
}

// TestScorerTruncatesToMostRecent: a session longer than L scores like its
// last L items.
func TestScorerTruncatesToMostRecent(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	m := randomModel(rng, 300, 16)
	s := newTestScorer(t, m, ExportOptions{MaxSessionLen: 5}, ScorerOptions{})
	long := randomSessions(rng, 300, 1, 0)[0]
	for range 12 {
		long.Items = append(long.Items, int32(rng.IntN(300)))
		long.Weights = append(long.Weights, rng.Float32())
	}
	short := model.Input{Items: long.Items[7:], Weights: long.Weights[7:], Exclude: long.Exclude}
	out := outs(2)
	if err := s.Score([]model.Input{long, short}, 10, out); err != nil {
		t.Fatal(err)
	}
	for r := range out[0] {
		if out[0][r] != out[1][r] {
			t.Fatalf("rank %d: long session %v, its last 5 items %v", r, out[0][r], out[1][r])
		}
	}
	checkTopK(t, m, long, 5, out[0], refTopK(m, long, 10, 5), "long session")
}

// TestScorerStructured checks hand-computed answers on a tiny model.
func TestScorerStructured(t *testing.T) {
	// 5 items, K = 2. P = Y, item i's factor points at angle i; prior favours item 4.
	m := &model.Model{
		K:       2,
		ItemIDs: []int64{10, 11, 12, 13, 14},
		Factors: []float32{
			1, 0,
			0, 1,
			-1, 0,
			0, -1,
			0.5, 0.5,
		},
		Prior: []float32{0, 0, 0, 0, 0.25},
	}
	m.Projection = append([]float32(nil), m.Factors...)
	s := newTestScorer(t, m, ExportOptions{MaxSessionLen: 3}, ScorerOptions{})

	batch := []model.Input{
		{}, // empty session: the prior alone; ties keep index order
		{Items: []int32{0}, Weights: []float32{2}},                                   // u = (2,0)
		{Items: []int32{0}, Weights: []float32{2}, Exclude: []int32{0, 0, 4}},        // same, 0 and 4 excluded
		{Items: []int32{1, 1, 3}, Weights: []float32{1, 1, 0.5}},                     // u = (0,1.5)
		{Items: []int32{2, 0, 1, 1}, Weights: []float32{9, 1, 1, 1}},                 // last 3: u = (1,2)
		{Items: []int32{0}, Weights: []float32{1}, Exclude: []int32{0, 1, 2, 3}},     // only item 4 left
		{Items: []int32{4}, Weights: []float32{-1}, Exclude: []int32{4, 3, 2, 1, 0}}, // nothing left
	}
	want := [][]model.Rec{
		{rec(4, 0.25), rec(0, 0), rec(1, 0)},
		{rec(0, 2), rec(4, 1.25), rec(1, 0)},
		{rec(1, 0), rec(3, 0), rec(2, -2)},
		{rec(1, 1.5), rec(4, 1), rec(0, 0)},
		{rec(1, 2), rec(4, 1.75), rec(0, 1)},
		{rec(4, 0.75)},
		{},
	}
	out := outs(len(batch))
	if err := s.Score(batch, 3, out); err != nil {
		t.Fatal(err)
	}
	gos := goTopK(t, m, batch, 3, 3)
	for i := range want {
		if fmt.Sprint(out[i]) != fmt.Sprint(want[i]) {
			t.Errorf("session %d: got %v, want %v", i, out[i], want[i])
		}
		if fmt.Sprint(gos[i]) != fmt.Sprint(want[i]) {
			t.Errorf("session %d: model.GoScorer says %v, want %v", i, gos[i], want[i])
		}
	}

	// k larger than the catalogue returns every allowed item.
	if err := s.Score(batch[:1], 50, out[:1]); err != nil {
		t.Fatal(err)
	}
	if len(out[0]) != 5 {
		t.Errorf("k=50 on 5 items: %v", out[0])
	}
	// k = 0 returns nothing (and reuses the slices).
	if err := s.Score(batch, 0, out); err != nil {
		t.Fatal(err)
	}
	for i := range out {
		if len(out[i]) != 0 {
			t.Errorf("k=0: session %d got %v", i, out[i])
		}
	}
}

// sameRecs: the same items in the same order, scores equal but for rounding
// (ONNX Runtime's MatMul takes another kernel for a single row).
func sameRecs(a, b []model.Rec) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Index != b[i].Index || math.Abs(float64(a[i].Score-b[i].Score)) > 1e-6*math.Max(1, math.Abs(float64(b[i].Score))) {
			return false
		}
	}
	return true
}

// TestScorerDynamicBatch: one scorer serves every batch size, and a session's
// answer does not depend on the batch it is in.
func TestScorerDynamicBatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	m := randomModel(rng, 500, 16)
	s := newTestScorer(t, m, ExportOptions{}, ScorerOptions{MaxBatch: 32})
	batch := randomSessions(rng, 500, 100, 25)
	all := outs(len(batch))
	if err := s.Score(batch, 10, all); err != nil {
		t.Fatal(err)
	}
	for _, bs := range []int{1, 3, 32, 33, 2, 1} {
		for start := 0; start+bs <= len(batch); start += 17 * bs {
			out := outs(bs)
			if err := s.Score(batch[start:start+bs], 10, out); err != nil {
				t.Fatal(err)
			}
			for i := range out {
				if !sameRecs(out[i], all[start+i]) {
					t.Fatalf("batch %d, session %d: %v alone, %v in the full batch", bs, start+i, out[i], all[start+i])
				}
			}
		}
	}
	if len(s.views) == 0 || len(s.views) > 20 {
		t.Errorf("%d tensor views cached", len(s.views))
	}
}

func TestScorerRejectsBadInput(t *testing.T) {
	m := randomModel(rand.New(rand.NewPCG(13, 14)), 100, 8)
	s := newTestScorer(t, m, ExportOptions{}, ScorerOptions{})
	ok := model.Input{Items: []int32{1, 2}, Weights: []float32{1, 1}}
	cases := map[string]model.Input{
		"negative item":     {Items: []int32{1, -1}, Weights: []float32{1, 1}},
		"item N":            {Items: []int32{100}, Weights: []float32{1}},
		"negative excluded": {Items: []int32{1}, Weights: []float32{1}, Exclude: []int32{-1}},
		"excluded N":        {Exclude: []int32{100}},
		"weights mismatch":  {Items: []int32{1, 2}, Weights: []float32{1}},
	}
	for name, bad := range cases {
		out := [][]model.Rec{{rec(7, 7)}, nil}
		err := s.Score([]model.Input{ok, bad}, 10, out)
		if !errors.Is(err, ErrBadInput) {
			t.Errorf("%s: err = %v, want ErrBadInput", name, err)
		}
		if out[1] != nil {
			t.Errorf("%s: output written despite the error: %v", name, out)
		}
	}
	if err := s.Score([]model.Input{ok}, 10, outs(2)); !errors.Is(err, ErrBadInput) {
		t.Errorf("len(out) != len(batch): err = %v", err)
	}
	if err := s.Score([]model.Input{ok}, -1, outs(1)); !errors.Is(err, ErrBadInput) {
		t.Errorf("k = -1: err = %v", err)
	}
	// The scorer still works after rejecting input.
	out := outs(1)
	if err := s.Score([]model.Input{ok}, 10, out); err != nil || len(out[0]) != 10 {
		t.Fatalf("after bad input: %v %v", out, err)
	}
}

// TestScorerLifecycle: several scorers share the process-wide environment;
// closing one leaves the others working; Close is idempotent.
func TestScorerLifecycle(t *testing.T) {
	lib := ortLib(t)
	rng := rand.New(rand.NewPCG(15, 16))
	m1, m2 := randomModel(rng, 200, 8), randomModel(rng, 300, 8)
	b1, err := Export(m1, ExportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b2, err := Export(m2, ExportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s1, err := NewScorer(b1, ScorerOptions{LibraryPath: lib})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := NewScorer(b2, ScorerOptions{LibraryPath: lib, IntraOpThreads: 2})
	if err != nil {
		t.Fatal(err)
	}
	in := []model.Input{{Items: []int32{5}, Weights: []float32{1}}}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s1.Score(in, 10, outs(1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Score after Close: %v", err)
	}
	out := outs(1)
	if err := s2.Score(in, 10, out); err != nil {
		t.Fatal(err)
	}
	checkTopK(t, m2, in[0], 20, out[0], goTopK(t, m2, in, 10, 20)[0], "second scorer")
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := NewScorer([]byte("not a model"), ScorerOptions{LibraryPath: lib}); err == nil {
		t.Fatal("NewScorer accepted garbage")
	}
}

// TestScorerMetadataThroughORT: ONNX Runtime reads the metadata Export wrote.
func TestScorerMetadataThroughORT(t *testing.T) {
	m := randomModel(rand.New(rand.NewPCG(17, 18)), 64, 4)
	m.Version = "v-meta"
	s := newTestScorer(t, m, ExportOptions{MaxSessionLen: 9}, ScorerOptions{})
	if md := s.Metadata(); md.ModelVersion != "v-meta" || md.NumItems != 64 || md.K != 4 || md.MaxSessionLen != 9 {
		t.Fatalf("scorer metadata %+v", md)
	}
	b, err := Export(m, ExportOptions{MaxSessionLen: 9})
	if err != nil {
		t.Fatal(err)
	}
	om, err := ort.GetModelMetadataWithONNXData(b)
	if err != nil {
		t.Fatal(err)
	}
	defer om.Destroy()
	for key, want := range map[string]string{
		MetaModelVersion:  "v-meta",
		MetaK:             "4",
		MetaNumItems:      "64",
		MetaMaxSessionLen: "9",
		MetaItemIDsSHA256: ItemIDsHash(m.ItemIDs),
	} {
		got, ok, err := om.LookupCustomMetadataMap(key)
		if err != nil || !ok || got != want {
			t.Errorf("ORT metadata %s = %q (found %v, %v), want %q", key, got, ok, err, want)
		}
	}
}

func TestLibraryPathMissing(t *testing.T) {
	_, err := LibraryPath("/nonexistent/libonnxruntime.so.1")
	if !errors.Is(err, ErrNoLibrary) {
		t.Fatalf("err = %v, want ErrNoLibrary", err)
	}
	if _, err := NewScorer(nil, ScorerOptions{LibraryPath: "/nonexistent/libonnxruntime.so.1"}); err == nil {
		t.Fatal("NewScorer without a model or library: no error")
	}
}

// TestTrimHeap: where this process runs on glibc and the package was built
// with cgo, malloc_trim must be found, or ONNX Runtime's freed sessions
// would never give their memory back; elsewhere trimHeap must say it did
// nothing.
func TestTrimHeap(t *testing.T) {
	maps, err := os.ReadFile("/proc/self/maps")
	glibc := err == nil && bytes.Contains(maps, []byte("/libc.so.6"))
	got := trimHeap()
	switch {
	case glibc && trimWithCgo && !got:
		t.Fatal("glibc is loaded but malloc_trim was not found")
	case !trimWithCgo && got:
		t.Fatal("trimHeap reports a trim in a build without cgo")
	case !glibc:
		t.Logf("no glibc in this process (trimHeap: %v)", got)
	}
}
