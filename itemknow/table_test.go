package itemknow

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

const hourMs = int64(time.Hour / time.Millisecond)

// clicks turns sessions (item lists) into increments, a click a second.
func clicks(t0 int64, sessions map[string][]int64) []Increment {
	var out []Increment
	ts := t0
	for id, items := range sessions {
		h := SessionHash(id)
		for i, it := range items {
			out = append(out, NewIncrement(ts, it, it%7+1, h, items[:i]))
			ts += 1000
		}
	}
	return out
}

func TestIncrementRoundTrip(t *testing.T) {
	f := func(inc Increment) {
		t.Helper()
		b, err := inc.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(b)
		if err != nil || got != inc {
			t.Fatalf("Decode(%x) = %+v, %v; want %+v", b, got, err, inc)
		}
	}
	f(Increment{})
	f(NewIncrement(1_700_000_000_000, 214716935, 3, SessionHash("s1"), []int64{1, 2, 2, 3, 214716935, 5}))
	f(Increment{TimeMs: -1, Item: math.MinInt64, Category: math.MaxInt64, Session: math.MaxUint64, Seq: math.MaxUint32,
		Prev: [MaxPrev]int64{math.MaxInt64, math.MinInt64, 0, 1}, NPrev: MaxPrev})
	if _, err := Decode([]byte{incrementVersion, 0}); err == nil {
		t.Fatal("Decode of a truncated increment: no error")
	}
}

func TestNewIncrementPrev(t *testing.T) {
	inc := NewIncrement(0, 9, 0, 1, []int64{1, 2, 9, 3, 2, 4})
	if inc.NPrev != 4 || inc.Prev != [MaxPrev]int64{4, 2, 3, 1} || inc.Seq != 6 {
		t.Fatalf("got %+v", inc)
	}
}

func FuzzDecode(f *testing.F) {
	b, _ := NewIncrement(1_700_000_000_000, 42, 7, 99, []int64{40, 41}).AppendBinary(nil)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		inc, err := Decode(b)
		if err != nil {
			return
		}
		b2, err := inc.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		inc2, err := Decode(b2)
		if err != nil || inc2 != inc {
			t.Fatalf("re-decode: %+v, %v; want %+v", inc2, err, inc)
		}
	})
}

// randomSessions makes n sessions of 2-8 clicks over a catalogue of items,
// skewed toward low ids.
func randomSessions(r *rand.Rand, n, items int) map[string][]int64 {
	ss := map[string][]int64{}
	for s := range n {
		k := 2 + r.IntN(7)
		var its []int64
		for range k {
			its = append(its, int64(1+int(float64(items)*r.Float64()*r.Float64())))
		}
		ss[fmt.Sprint("s", s)] = its
	}
	return ss
}

func TestCommutative(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	incs := clicks(1_700_000_000_000, randomSessions(r, 2000, 300))
	cfg := DefaultConfig()
	cfg.HalfLife = time.Hour
	cfg.MaxPairsPerItem = 1024 // below every cap: nothing evicted
	a, b := New(cfg), New(cfg)
	for _, inc := range incs {
		a.Apply(inc)
	}
	perm := r.Perm(len(incs))
	for _, i := range perm {
		b.Apply(incs[i])
	}
	if a.Stats().Items != b.Stats().Items || a.Stats().Pairs != b.Stats().Pairs {
		t.Fatalf("stats differ: %+v vs %+v", a.Stats(), b.Stats())
	}
	now := incs[len(incs)-1].TimeMs
	same := func(what string, x, y []Scored) {
		t.Helper()
		if len(x) != len(y) {
			t.Fatalf("%s: %d vs %d entries", what, len(x), len(y))
		}
		for i := range x {
			// Scores agree to float addition order; items too, except
			// where two scores tie within that tolerance (then their
			// order may follow the last bit of the sums).
			tie := i+1 < len(x) && math.Abs(x[i].Score-x[i+1].Score) <= 1e-9*math.Abs(x[i].Score) ||
				i > 0 && math.Abs(x[i].Score-x[i-1].Score) <= 1e-9*math.Abs(x[i].Score)
			if (x[i].Item != y[i].Item && !tie) || math.Abs(x[i].Score-y[i].Score) > 1e-9*math.Abs(x[i].Score) {
				t.Fatalf("%s[%d]: %+v vs %+v", what, i, x[i], y[i])
			}
		}
	}
	same("popular", a.Popular(50, now, nil), b.Popular(50, now, nil))
	same("popular in 3", a.PopularIn(3, 20, now, nil), b.PopularIn(3, 20, now, nil))
	for id := int64(1); id <= 300; id += 7 {
		same(fmt.Sprint("neighbours of ", id), a.Neighbours(id, 20, now, nil), b.Neighbours(id, 20, now, nil))
		same(fmt.Sprint("candidates after ", id), a.Candidates([]int64{id + 1, id}, 20, nil), b.Candidates([]int64{id + 1, id}, 20, nil))
	}
}

func TestRenormalisationCommutes(t *testing.T) {
	cfg := Config{HalfLife: time.Minute}
	a, b := New(cfg), New(cfg)
	// Two clicks 600 half-lives apart force the epoch forward twice.
	i1 := NewIncrement(1000, 1, 0, 1, nil)
	i2 := NewIncrement(1000+600*60_000, 1, 0, 2, nil)
	a.Apply(i1)
	a.Apply(i2)
	b.Apply(i2)
	b.Apply(i1)
	for _, tm := range []int64{i2.TimeMs, i2.TimeMs + 60_000} {
		if pa, pb := a.Popularity(1, tm), b.Popularity(1, tm); pa != pb || math.Abs(pa-math.Pow(0.5, float64(tm-i2.TimeMs)/60_000)) > 1e-12 {
			t.Fatalf("at %d: %v vs %v", tm, pa, pb)
		}
	}
}

func TestTrendMovesNow(t *testing.T) {
	cfg := DefaultConfig()
	cfg.HalfLife = time.Hour
	tb := New(cfg)
	t0 := int64(1_700_000_000_000)
	// Yesterday: A is followed by B in 50 sessions.
	for s := range 50 {
		h := SessionHash(fmt.Sprint("old", s))
		tb.Apply(NewIncrement(t0, 1, 1, h, nil))
		tb.Apply(NewIncrement(t0+1000, 2, 1, h, []int64{1}))
	}
	// Today, 24 h later: a new item N follows A in 5 sessions.
	now := t0 + 24*hourMs
	for s := range 5 {
		h := SessionHash(fmt.Sprint("new", s))
		tb.Apply(NewIncrement(now, 1, 1, h, nil))
		tb.Apply(NewIncrement(now+1000, 99, 1, h, []int64{1}))
	}
	nb := tb.Neighbours(1, 2, now, nil)
	if len(nb) != 2 || nb[0].Item != 99 {
		t.Fatalf("neighbours of 1 now: %+v; want the new item 99 first", nb)
	}
	if c := tb.Candidates([]int64{1}, 1, nil); len(c) != 1 || c[0].Item != 99 {
		t.Fatalf("candidates after 1: %+v", c)
	}
	// Yesterday's 50 clicks on 2 weigh 50·2⁻²⁴ now: today's 5 on 99 beat them.
	if p := tb.Popular(3, now+1000, nil); len(p) != 3 || p[0].Item != 99 || p[1].Item != 1 || p[2].Item != 2 {
		t.Fatalf("popular: %+v", p)
	}
	if p := tb.PopularIn(1, 3, now, nil); len(p) != 3 || p[0].Item != 99 {
		t.Fatalf("popular in 1: %+v", p)
	}
	if tb.Score([]int64{1}, 99) <= tb.Score([]int64{1}, 2) {
		t.Fatal("Score does not rank the trend first")
	}
}

// TestJunkFlood: a bot clicking random ids, in sessions of its own, must not
// grow the table past its caps nor push established items and pairs out.
func TestJunkFlood(t *testing.T) {
	cfg := Config{HalfLife: time.Hour, MaxItems: 1000, MaxPairsPerItem: 16, MaxPairs: 8000, TopN: 20}
	tb := New(cfg)
	r := rand.New(rand.NewPCG(3, 4))
	t0 := int64(1_700_000_000_000)
	incs := clicks(t0, randomSessions(r, 3000, 200))
	for _, inc := range incs {
		tb.Apply(inc)
	}
	now := incs[len(incs)-1].TimeMs
	before := map[int64][]Scored{}
	for id := int64(1); id <= 20; id++ {
		before[id] = tb.Neighbours(id, 5, now, nil)
	}
	popBefore := tb.Popular(10, now, nil)
	// The flood: 200,000 random ids, in 2,000 bot sessions, over one minute,
	// clicked after the real traffic (so newer, hence heavier per click).
	var prev []int64
	for i := range 200_000 {
		if i%100 == 0 {
			prev = prev[:0]
		}
		id := 1_000_000 + r.Int64N(1<<40)
		tb.Apply(NewIncrement(now+int64(i)/4, id, 1+r.Int64N(5), SessionHash(fmt.Sprint("bot", i/100)), prev))
		prev = append(prev, id)
	}
	st := tb.Stats()
	if st.Items > cfg.MaxItems || st.Pairs > cfg.MaxPairs {
		t.Fatalf("caps exceeded: %+v", st)
	}
	if st.Capped == 0 {
		t.Fatal("no bot click capped by MaxSessionClicks")
	}
	for id := int64(1); id <= 20; id++ {
		if !tb.Known(id) {
			t.Fatalf("established item %d evicted", id)
		}
		for _, p := range before[id] {
			if tb.Score([]int64{id}, p.Item) == 0 {
				t.Fatalf("neighbour %d of %d lost", p.Item, id)
			}
		}
	}
	popAfter := tb.Popular(10, now, nil)
	for i := range popBefore {
		if popAfter[i].Item != popBefore[i].Item {
			t.Fatalf("popular changed: %+v -> %+v", popBefore, popAfter)
		}
	}
	// Memory: the Go heap after the flood stays near a table filled once.
	runtime.GC()
	t.Logf("after flood: %+v", st)
}

func TestQueriesDoNotAllocate(t *testing.T) {
	tb := New(DefaultConfig())
	r := rand.New(rand.NewPCG(5, 6))
	incs := clicks(1_700_000_000_000, randomSessions(r, 2000, 500))
	for _, inc := range incs {
		tb.Apply(inc)
	}
	now := incs[len(incs)-1].TimeMs
	out := make([]Scored, 0, 256)
	sess := []int64{3, 1, 2}
	if n := testing.AllocsPerRun(100, func() {
		out = tb.Candidates(sess, 20, out)
		out = tb.Neighbours(1, 20, now, out)
		out = tb.Popular(20, now, out)
		out = tb.PopularIn(2, 20, now, out)
		_ = tb.Score(sess, 5)
	}); n != 0 {
		t.Fatalf("queries allocate %v times", n)
	}
}
