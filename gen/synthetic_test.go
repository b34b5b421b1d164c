package gen

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clickrec/clickrec/event"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

// sent is a record as a sink saw it, with the time it was stamped with.
type sent struct {
	Record
	now time.Time
}

// each takes up to n records from src, the i-th at t0 + i·step, and calls fn
// with each; r is reused.
func each(src Source, n int, step time.Duration, fn func(i int, r *Record, now time.Time)) {
	var r Record
	for i := range n {
		now := t0.Add(time.Duration(i) * step)
		if !src.Next(&r, now) {
			return
		}
		fn(i, &r, now)
	}
}

// generate takes up to n records from src, the i-th at t0 + i·step, and copies them.
func generate(src Source, n int, step time.Duration) []sent {
	out := make([]sent, 0, n)
	each(src, n, step, func(_ int, r *Record, now time.Time) {
		c := *r
		c.Key, c.Value = bytes.Clone(r.Key), bytes.Clone(r.Value)
		out = append(out, sent{c, now})
	})
	return out
}

func newSynthetic(t testing.TB, cfg Config) *Synthetic {
	t.Helper()
	s, err := NewSynthetic(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSyntheticDeterministic(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Seed, cfg.LateShare, cfg.InvalidShare = 42, 0.1, 0.1
	const n = 20_000
	a := generate(newSynthetic(t, cfg), n, 10*time.Millisecond)
	b := generate(newSynthetic(t, cfg), n, 10*time.Millisecond)
	ids := make(map[string]bool, n)
	for i := range a {
		if !bytes.Equal(a[i].Key, b[i].Key) || !bytes.Equal(a[i].Value, b[i].Value) || a[i].Kind != b[i].Kind {
			t.Fatalf("record %d differs between two runs with seed 42:\n%s %s\n%s %s", i, a[i].Key, a[i].Value, b[i].Key, b[i].Value)
		}
		if want := "42-" + strconv.Itoa(i); a[i].Click.EventID != want {
			t.Fatalf("record %d has event id %q, want %q", i, a[i].Click.EventID, want)
		}
		ids[a[i].Click.EventID] = true
	}
	if len(ids) != n {
		t.Fatalf("%d distinct event ids in %d records", len(ids), n)
	}
	cfg.Seed = 43
	c := generate(newSynthetic(t, cfg), n, 10*time.Millisecond)
	same := 0
	for i := range a {
		if a[i].Click.UserID == c[i].Click.UserID && a[i].Click.ItemID == c[i].Click.ItemID {
			same++
		}
	}
	if same > n/100 {
		t.Fatalf("seeds 42 and 43 agree on user and item of %d of %d records", same, n)
	}
}

// TestCatalogueSeed checks that two seeds with one CatalogueSeed click on the
// same catalogue (each item in the same category, the same items popular) but
// are different clickstreams, as a shop's history and its traffic are.
func TestCatalogueSeed(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Seed, cfg.LateShare, cfg.InvalidShare = 42, 0, 0
	const n = 50_000
	traffic := generate(newSynthetic(t, cfg), n, 10*time.Millisecond)
	hist := cfg
	hist.Seed, hist.CatalogueSeed = 1042, 42
	history := generate(newSynthetic(t, hist), n, 10*time.Millisecond)
	other := cfg
	other.Seed = 1042
	unrelated := generate(newSynthetic(t, other), n, 10*time.Millisecond)

	top := func(rs []sent) (map[int64]string, map[int64]bool) {
		cat, count := map[int64]string{}, map[int64]int{}
		for _, r := range rs {
			cat[r.Click.ItemID] = r.Click.Category
			count[r.Click.ItemID]++
		}
		top := map[int64]bool{}
		for id, c := range count {
			if c >= n/500 {
				top[id] = true
			}
		}
		return cat, top
	}
	tc, ttop := top(traffic)
	hc, htop := top(history)
	_, utop := top(unrelated)
	for id, c := range hc {
		if tc[id] != "" && tc[id] != c {
			t.Fatalf("item %d is in category %s in the traffic and %s in its history", id, tc[id], c)
		}
	}
	shared := func(a, b map[int64]bool) (k int) {
		for id := range a {
			if b[id] {
				k++
			}
		}
		return k
	}
	if len(ttop) < 20 || shared(ttop, htop) < len(ttop)*8/10 {
		t.Fatalf("history shares %d of the traffic's %d most popular items, want most", shared(ttop, htop), len(ttop))
	}
	if shared(ttop, utop) > len(ttop)/2 {
		t.Fatalf("another catalogue shares %d of the traffic's %d most popular items", shared(ttop, utop), len(ttop))
	}
	same := 0
	for i := range traffic {
		if traffic[i].Click.UserID == history[i].Click.UserID && traffic[i].Click.ItemID == history[i].Click.ItemID {
			same++
		}
	}
	if same > n/100 {
		t.Fatalf("history and traffic agree on user and item of %d of %d records", same, n)
	}
}

// TestSyntheticShape checks the shop against the behaviour it promises: Zipf
// views, the funnel, sessions in at most 3 categories, items in one category at
// one price, and realistic gaps when the rate is within what the users sustain.
func TestSyntheticShape(t *testing.T) {
	cfg := DefaultConfig()
	cfg.LateShare, cfg.InvalidShare = 0, 0
	s := newSynthetic(t, cfg)
	const n = 300_000
	step := 50 * time.Millisecond // 20 events/s, below the ~36/s 10,000 users sustain

	rankOf := make(map[int64]int, cfg.Items)
	for rank, id := range s.cat.itemID {
		rankOf[id] = rank
	}
	type sessState struct {
		viewed, carted map[int64]bool
		cats           map[string]bool
		user           string
		last           int64
	}
	var (
		byType     [4]int
		viewsRank  = make([]int, cfg.Items)
		sessions   = map[string]*sessState{}
		itemCat    = map[int64]string{}
		itemPrice  = map[int64]float64{}
		lastSess   = map[string]string{} // user → current session
		lastTime   = map[string]int64{}
		inGaps     []float64 // seconds
		breaks     []float64
		funnelMiss int
	)
	records := 0
	each(s, n, step, func(i int, r *Record, now time.Time) {
		records++
		c := r.Click
		if !r.Valid || r.Kind != KindOK {
			t.Fatalf("record %d is %s with no faults configured", i, r.Kind)
		}
		byType[c.Type]++
		if c.ItemID < 1 || c.ItemID > int64(cfg.Items) {
			t.Fatalf("item id %d outside 1..%d", c.ItemID, cfg.Items)
		}
		if k, err := strconv.Atoi(strings.TrimPrefix(c.Category, "c")); err != nil || k < 0 || k >= cfg.Categories || c.Category[0] != 'c' {
			t.Fatalf("category %q is not c0..c%d", c.Category, cfg.Categories-1)
		}
		if cat, ok := itemCat[c.ItemID]; ok && cat != c.Category {
			t.Fatalf("item %d is in categories %s and %s", c.ItemID, cat, c.Category)
		}
		itemCat[c.ItemID] = c.Category
		if p, ok := itemPrice[c.ItemID]; ok && p != c.Price {
			t.Fatalf("item %d has prices %v and %v", c.ItemID, p, c.Price)
		}
		itemPrice[c.ItemID] = c.Price
		if c.TimestampMs != now.UnixMilli() {
			t.Fatalf("on-time record stamped %d, sent at %d", c.TimestampMs, now.UnixMilli())
		}
		ss := sessions[c.SessionID]
		if ss == nil {
			ss = &sessState{viewed: map[int64]bool{}, carted: map[int64]bool{}, cats: map[string]bool{}, user: c.UserID}
			sessions[c.SessionID] = ss
			if prev, ok := lastSess[c.UserID]; ok {
				if prev == c.SessionID {
					t.Fatalf("session %s restarted", prev)
				}
				breaks = append(breaks, float64(c.TimestampMs-lastTime[c.UserID])/1000)
			}
			lastSess[c.UserID] = c.SessionID
		} else {
			if lastSess[c.UserID] != c.SessionID {
				t.Fatalf("user %s went back to session %s", c.UserID, c.SessionID)
			}
			inGaps = append(inGaps, float64(c.TimestampMs-ss.last)/1000)
		}
		if ss.user != c.UserID || !strings.HasPrefix(c.SessionID, c.UserID+"-s") {
			t.Fatalf("session %s of user %s", c.SessionID, c.UserID)
		}
		ss.last = c.TimestampMs
		lastTime[c.UserID] = c.TimestampMs
		switch c.Type {
		case event.View:
			viewsRank[rankOf[c.ItemID]]++
			ss.viewed[c.ItemID] = true
			ss.cats[c.Category] = true
			if len(ss.cats) > 3 {
				t.Fatalf("session %s dwells in %d categories", c.SessionID, len(ss.cats))
			}
		case event.Cart:
			if !ss.viewed[c.ItemID] {
				funnelMiss++
			}
			ss.carted[c.ItemID] = true
		case event.Purchase:
			if !ss.carted[c.ItemID] {
				funnelMiss++
			}
		}
	})
	if funnelMiss > 0 {
		t.Errorf("%d carts or purchases without a view or cart of the item earlier in the session", funnelMiss)
	}
	views, carts, buys := float64(byType[event.View]), float64(byType[event.Cart]), float64(byType[event.Purchase])
	t.Logf("%d records: %v views, %v carts, %v purchases in %d sessions of %d users", records, views, carts, buys, len(sessions), len(lastSess))
	within(t, "carts per view", carts/views, CartRate, 0.01)
	within(t, "purchases per cart", buys/carts, PurchaseRate, 0.03)
	within(t, "records per session", float64(records)/float64(len(sessions)), 11.3, 1.5)

	// Zipf: the top 1% of items get H(100)/H(10000) ≈ 53% of the views, the
	// top item 1/H(10000) ≈ 10%, and log(count) falls with slope -1 in log(rank).
	h := func(n int) (s float64) {
		for k := 1; k <= n; k++ {
			s += 1 / float64(k)
		}
		return s
	}
	top := 0
	for _, v := range viewsRank[:cfg.Items/100] {
		top += v
	}
	within(t, "view share of the top 1% of items", float64(top)/views, h(cfg.Items/100)/h(cfg.Items), 0.02)
	within(t, "view share of the top item", float64(viewsRank[0])/views, 1/h(cfg.Items), 0.01)
	within(t, "Zipf exponent (log-log slope over ranks 1-300)", -slope(viewsRank[:300]), ZipfExponent, 0.1)

	slices.Sort(inGaps)
	slices.Sort(breaks)
	medGap := inGaps[len(inGaps)/2]
	t.Logf("gaps in sessions: p5 %.1fs median %.1fs p95 %.1fs; breaks between sessions (%d): p1 %.0fs median %.0fs",
		inGaps[len(inGaps)*5/100], medGap, inGaps[len(inGaps)*95/100], len(breaks), breaks[len(breaks)/100], breaks[len(breaks)/2])
	within(t, "median gap in a session (s)", medGap, GapMedian.Seconds(), 2)
	if p99 := inGaps[len(inGaps)*99/100]; p99 < 30 || p99 > gapMax.Seconds() {
		t.Errorf("p99 gap %.0fs: want minutes, not seconds", p99)
	}
	if len(breaks) < 100 {
		t.Fatalf("only %d users came back for another session", len(breaks))
	}
	if short := breaks[0]; short < breakMin.Seconds() {
		t.Errorf("a break between sessions lasted %.0fs, under %v, with the rate within capacity", short, breakMin)
	}
}

func within(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol {
		t.Errorf("%s = %.4f, want %.4f ± %.4f", what, got, want, tol)
	} else {
		t.Logf("%s = %.4f (want %.4f ± %.4f)", what, got, want, tol)
	}
}

// slope fits log(counts[r]) = a + b·log(r+1) and returns b.
func slope(counts []int) float64 {
	var sx, sy, sxx, sxy, n float64
	for r, c := range counts {
		if c == 0 {
			continue
		}
		x, y := math.Log(float64(r+1)), math.Log(float64(c))
		sx, sy, sxx, sxy, n = sx+x, sy+y, sxx+x*x, sxy+x*y, n+1
	}
	return (n*sxy - sx*sy) / (n*sxx - sx*sx)
}

// TestSyntheticOverCapacity drives few users far faster than they click: the
// source must keep going, breaks and then gaps shrinking, sessions still
// numbered in order.
func TestSyntheticOverCapacity(t *testing.T) {
	cfg := Config{Seed: 5, Users: 3, Items: 50, Categories: 5}
	recs := generate(newSynthetic(t, cfg), 5000, time.Millisecond)
	users := map[string]bool{}
	for _, r := range recs {
		users[r.Click.UserID] = true
	}
	if len(recs) != 5000 || len(users) != 3 {
		t.Fatalf("%d records from %d users, want 5000 from 3", len(recs), len(users))
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no users", Config{Items: 1, Categories: 1}, "users must be at least 1"},
		{"no items", Config{Users: 1, Categories: 1}, "items must be at least 1"},
		{"too many categories", Config{Users: 1, Items: 3, Categories: 4}, "categories must be between 1 and items (3)"},
		{"shares", Config{Users: 1, Items: 1, Categories: 1, LateShare: 0.6, InvalidShare: 0.6}, "sum to at most 1"},
		{"negative share", Config{Users: 1, Items: 1, Categories: 1, LateShare: -0.1}, "must each be in [0, 1]"},
		{"negative new items", Config{Users: 1, Items: 1, Categories: 1, NewItems: -1}, "new items (-1) must not be negative"},
		{"new items at once", Config{Users: 1, Items: 1, Categories: 1, NewItems: 3}, "need a positive span"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSynthetic(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestTimeHeap(t *testing.T) {
	var h timeHeap
	in := []int64{5, 3, 9, 1, 3, 7, 2, 8, 0, 6}
	for i, at := range in {
		h.push(slot{at: at, u: int32(i)})
	}
	var got []string
	for len(h) > 0 {
		s := h.pop()
		got = append(got, fmt.Sprintf("%d/%d", s.at, s.u))
	}
	want := "0/8 1/3 2/6 3/1 3/4 5/0 6/9 7/5 8/7 9/2"
	if strings.Join(got, " ") != want {
		t.Fatalf("heap order %v, want %s", got, want)
	}
}

func BenchmarkSynthetic(b *testing.B) {
	for _, bc := range []struct {
		name           string
		late, invalid  float64
		users, catalog int
	}{
		{"clean", 0, 0, 10_000, 10_000},
		{"default-faults", 0.05, 0.01, 10_000, 10_000},
		{"1M-users-100k-items", 0.05, 0.01, 1_000_000, 100_000},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := newSynthetic(b, Config{Seed: 1, Users: bc.users, Items: bc.catalog, Categories: 50, LateShare: bc.late, InvalidShare: bc.invalid})
			var r Record
			now := t0
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				now = now.Add(time.Millisecond)
				s.Next(&r, now)
			}
		})
	}
}
