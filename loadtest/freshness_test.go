package loadtest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clickrec/clickrec/gen"
	"github.com/clickrec/clickrec/wire"
)

func recValue(strategy string, ids ...int64) []byte {
	r := wire.Recommendation{EventID: "1-1", UserID: "u1", Strategy: strategy, ModelVersion: "v1", EventTimeMs: 1, ProcessedAtMs: 2}
	for i, id := range ids {
		r.Items = append(r.Items, wire.Item{ItemID: id, Score: float32(len(ids) - i)})
	}
	return r.AppendJSON(nil)
}

func TestEachItemID(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []int64
	}{
		{string(recValue("model", 10001, 100010, 7)), []int64{10001, 100010, 7}},
		{string(recValue("model")), nil},
		{`{"items":[{"item_id": 42,"score":1},{"item_id":"43"},{"item_id":}]}`, []int64{42}},
		{`{"item_id":12`, []int64{12}},
	} {
		var got []int64
		eachItemID([]byte(tt.in), func(id int64) { got = append(got, id) })
		if !slices.Equal(got, tt.want) {
			t.Errorf("eachItemID(%s) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// TestFreshTracker feeds clicks and recommendation records to a tracker of
// four new items: counted only from model and online recommendations, once
// per strategy, the delays from the first click, the item never seen and
// the one not introduced reported and judged.
func TestFreshTracker(t *testing.T) {
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return start.Add(time.Duration(ms) * time.Millisecond) }
	items := []gen.NewItem{
		{ID: 101, Category: "c1", Anchor: 5, At: time.Second},
		{ID: 102, Category: "c2", Anchor: 6, At: 2 * time.Second},
		{ID: 103, Category: "c1", Anchor: 7, At: 3 * time.Second},
		{ID: 104, Category: "c3", Anchor: 8, At: 9 * time.Second},
	}
	f := newFreshTracker(items)
	if newFreshTracker(nil) != nil {
		t.Fatal("a tracker of no items")
	}
	for _, c := range []struct {
		id int64
		ms int
	}{{101, 1500}, {101, 1700}, {5, 1800}, {102, 2500}, {103, 3500}, {103, 3600}} {
		if f.isNew(c.id) {
			f.clicked(c.id, at(c.ms))
		}
	}
	var found []sighting
	recv := func(ms int, strategy string, ids ...int64) []sighting {
		found = f.received(recValue(strategy, ids...), []byte(strategy), at(ms), found[:0])
		return found
	}
	if got := recv(1600, wire.StrategyCategoryPopular, 5, 101, 102); len(got) != 0 {
		t.Fatalf("a popularity fallback counted: %+v", got)
	}
	if got := recv(2500, wire.StrategyModel, 5, 101, 1010); len(got) != 1 || got[0].item.ID != 101 || got[0].after != time.Second || got[0].strategy != "model" {
		t.Fatalf("first model recommendation of 101: %+v", got)
	}
	if got := recv(3000, wire.StrategyModel, 101); len(got) != 0 {
		t.Fatalf("101 seen twice in model recommendations: %+v", got)
	}
	if got := recv(4000, wire.StrategyOnline, 102, 101); len(got) != 2 || got[0].item.ID != 102 || got[0].after != 1500*time.Millisecond || got[1].strategy != "online" {
		t.Fatalf("first online recommendation of 102 and 101: %+v", got)
	}
	if got := recv(4100, wire.StrategyModel, 104); len(got) != 1 || got[0].clicked {
		t.Fatalf("104, never clicked: %+v", got)
	}

	r := f.report(start, 8*time.Second)
	if r.NewItems != 4 || r.Introduced != 3 || r.Clicked != 3 || r.Seen != 2 || r.NeverSeen != 1 || r.KnownBeforeClick != 1 {
		t.Fatalf("report %+v: want 4 new, 3 introduced, 3 clicked, 2 seen, 1 never, 1 known before its click", r)
	}
	if *r.P50Ms != 1000 || *r.P95Ms != 1500 || *r.MaxMs != 1500 {
		t.Fatalf("p50 %v p95 %v max %v ms, want 1000, 1500, 1500", *r.P50Ms, *r.P95Ms, *r.MaxMs)
	}
	want := map[string]FreshnessDelays{"model": {Seen: 1, P50Ms: 1000, P95Ms: 1000, MaxMs: 1000}, "online": {Seen: 2, P50Ms: 1500, P95Ms: 2500, MaxMs: 2500}}
	if len(r.ByStrategy) != 2 || r.ByStrategy["model"] != want["model"] || r.ByStrategy["online"] != want["online"] {
		t.Fatalf("by strategy %+v, want %+v", r.ByStrategy, want)
	}
	it := r.Items[0]
	if it.ItemID != 101 || it.Clicks != 2 || *it.FirstClickS != 1.5 || *it.FirstRecS != 2.5 || *it.DelayMs != 1000 || it.Strategy != "model" || it.IntroducedS != 1 || it.AnchorItemID != 5 {
		t.Fatalf("item 101: %+v", it)
	}
	if it := r.Items[2]; it.FirstClickS == nil || it.FirstRecS != nil || it.DelayMs != nil {
		t.Fatalf("item 103, clicked and never seen: %+v", it)
	}
	if it := r.Items[3]; it.FirstClickS != nil || it.FirstRecS == nil || it.DelayMs != nil {
		t.Fatalf("item 104, seen and never clicked: %+v", it)
	}

	if b := r.judge(0, nil); len(b) != 0 {
		t.Errorf("judged without a threshold: %v", b)
	}
	if b := r.judge(2*time.Second, nil); len(b) != 1 || !strings.Contains(b[0], "1 of 3 new items clicked never appeared in a model recommendation (103)") {
		t.Errorf("breaches at 2s: %v", b)
	}
	if b := r.judge(1200*time.Millisecond, nil); len(b) != 2 || b[1] != "freshness p95 1500 ms > 1.2s" {
		t.Errorf("breaches at 1.2s: %v", b)
	}
	var sb strings.Builder
	r.write(func(format string, a ...any) { fmt.Fprintf(&sb, format, a...) })
	for _, s := range []string{"4 new items launched, 3 clicked: 2 recommended", "p50 1,000  p95 1,500  max 1,500 ms", "1 NEVER (103)",
		"by strategy: model 1 (p50 1,000, p95 1,000 ms) · online 2 (p50 1,500, p95 2,500 ms)", "1 new items not introduced", "1 new items were recommended before their first click"} {
		if !strings.Contains(sb.String(), s) {
			t.Errorf("summary lacks %q:\n%s", s, sb.String())
		}
	}
}

// TestFreshnessNoneSeen: new items clicked but never recommended are said
// to be so, and fail a run judged on freshness.
func TestFreshnessNoneSeen(t *testing.T) {
	start := time.Now()
	f := newFreshTracker([]gen.NewItem{{ID: 11, At: time.Second}, {ID: 12, At: 2 * time.Second}})
	f.clicked(11, start.Add(1200*time.Millisecond))
	f.clicked(12, start.Add(2200*time.Millisecond))
	f.received(recValue(wire.StrategyGlobalPopular, 11, 12), []byte(wire.StrategyGlobalPopular), start.Add(3*time.Second), nil)
	r := f.report(start, 5*time.Second)
	if r.Seen != 0 || r.NeverSeen != 2 || r.P50Ms != nil || r.ByStrategy != nil {
		t.Fatalf("report %+v: want none seen", r)
	}
	var sb strings.Builder
	r.write(func(format string, a ...any) { fmt.Fprintf(&sb, format, a...) })
	if !strings.Contains(sb.String(), "NONE appeared in a model or online recommendation") {
		t.Errorf("summary: %s", sb.String())
	}
	if b := r.judge(time.Minute, nil); len(b) != 1 || b[0] != "none of the 2 new items clicked appeared in a model recommendation" {
		t.Errorf("breaches: %v", b)
	}
	if b := newFreshTracker([]gen.NewItem{{ID: 11}}).report(start, time.Second).judge(time.Minute, nil); len(b) != 1 || !strings.Contains(b[0], "none of the 1 new items was clicked") {
		t.Errorf("breaches without a click: %v", b)
	}
}

func TestFreshnessPercentiles(t *testing.T) {
	ds := make([]float64, 20)
	for i := range ds {
		ds[i] = float64(20 - i)
	}
	if p50, p95, mx := delays(ds); p50 != 10 || p95 != 19 || mx != 20 {
		t.Fatalf("1..20: p50 %v p95 %v max %v, want 10, 19, 20", p50, p95, mx)
	}
	if p50, p95, mx := delays([]float64{7.3}); p50 != 7.3 || p95 != 7.3 || mx != 7.3 {
		t.Fatalf("one: %v %v %v", p50, p95, mx)
	}
	if d := delayMs(1085763578 * time.Nanosecond); d != 1085.8 {
		t.Fatalf("delayMs(1.085763578s) = %v, want 1085.8", d)
	}
}

func TestValidateNewItems(t *testing.T) {
	for _, tt := range []struct {
		name string
		set  func(c *Config)
		want string
	}{
		{"taobao", func(c *Config) { c.Source, c.NewItems = "taobao", 20 }, "--new-items 20 needs --source synthetic"},
		{"negative", func(c *Config) { c.NewItems = -1 }, "--new-items must not be negative"},
		{"threshold alone", func(c *Config) { c.SLA.MaxFreshness = 5 * time.Second }, "--sla-max-freshness 5s judges the new items the shop launches: give --new-items too"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.set(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
	c := DefaultConfig()
	c.NewItems, c.SLA.MaxFreshness = 20, 10*time.Second
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	p, src, err := c.plan()
	if err != nil {
		t.Fatal(err)
	}
	items := src.(*gen.Synthetic).NewItems()
	if len(items) != 20 || items[19].At >= p.Duration()*3/4 || items[19].At < p.Duration()*7/10 || items[0].ID != int64(c.Shop.Items)+1 {
		t.Fatalf("new items of a %v run: %d, the last at %v, the first id %d", p.Duration(), len(items), items[19].At, items[0].ID)
	}
}

// BenchmarkFreshScan is the reader's cost per recommendation with 20 new
// items: a model recommendation of 10 catalogue items (most of them), and
// one listing a new item already seen.
func BenchmarkFreshScan(b *testing.B) {
	items := make([]gen.NewItem, 20)
	for i := range items {
		items[i] = gen.NewItem{ID: int64(10_001 + i)}
	}
	for _, bc := range []struct {
		name string
		ids  []int64
	}{
		{"catalogue", []int64{4711, 17, 9020, 3, 822, 5120, 64, 1999, 7345, 250}},
		{"seen", []int64{4711, 17, 10_005, 3, 822, 5120, 64, 1999, 7345, 250}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f := newFreshTracker(items)
			f.clicked(10_005, time.Now())
			v, s := recValue(wire.StrategyModel, bc.ids...), []byte(wire.StrategyModel)
			now := time.Now()
			var found []sighting
			b.SetBytes(int64(len(v)))
			b.ReportAllocs()
			for b.Loop() {
				found = f.received(v, s, now, found[:0])
			}
		})
	}
}
