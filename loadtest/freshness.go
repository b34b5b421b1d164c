package loadtest

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clickrec/clickrec/gen"
	"github.com/clickrec/clickrec/wire"
)

// Freshness (Config.NewItems): the synthetic shop launches new items during
// the measured run (gen.NewItem: ids outside the catalogue, so unknown to
// the model), and the load test measures how soon the hot path recommends
// each: from the intended send time of the item's first (valid) click to
// the time the reader read the first recommendation, of any shopper, whose
// items contain it. The read time, not the record's processed_at_ms: it is
// when a shop reading recommendations (read_committed) could first show the
// item, on the same clock as the latency figures, and millisecond-exact
// processed_at_ms would only move the figure by the commit's few ms.
//
// Only recommendations of the model count, strategy "model" (blended with
// the online item knowledge) or "online" (from the online item knowledge
// alone): a popularity fallback that lists a new item has not learned it.

// freshStrategies are the strategies whose recommendations count, by index.
var freshStrategies = [...]string{wire.StrategyModel, wire.StrategyOnline}

// freshTracker follows the new items of a run: their first click (from the
// generator) and their first recommendation (from the reader). Safe for
// concurrent use.
type freshTracker struct {
	items  []gen.NewItem
	lo, hi int64 // the range of their ids, for a cheap test of any item id
	index  map[int64]int

	// seen[i][k]: item i was read in a recommendation of freshStrategies[k];
	// read without the lock, so the reader locks only for a first sighting.
	seen [][len(freshStrategies)]atomic.Bool

	mu    sync.Mutex
	state []freshState
}

// freshState is what happened to one new item; zero times: not yet.
type freshState struct {
	clicks     int64
	firstClick time.Time                       // intended send time of its first valid click
	firstRec   [len(freshStrategies)]time.Time // read time of its first recommendation, per strategy
}

// newFreshTracker returns the tracker of items, or nil if there are none.
func newFreshTracker(items []gen.NewItem) *freshTracker {
	if len(items) == 0 {
		return nil
	}
	f := &freshTracker{items: items, lo: math.MaxInt64, hi: math.MinInt64, index: make(map[int64]int, len(items)),
		seen: make([][len(freshStrategies)]atomic.Bool, len(items)), state: make([]freshState, len(items))}
	for i, it := range items {
		f.lo, f.hi = min(f.lo, it.ID), max(f.hi, it.ID)
		f.index[it.ID] = i
	}
	return f
}

// isNew reports whether id may be a new item's (a range test, no lookup).
func (f *freshTracker) isNew(id int64) bool { return id >= f.lo && id <= f.hi }

// clicked records a valid click on item id, due at intended; a click on any
// other item is ignored.
func (f *freshTracker) clicked(id int64, intended time.Time) (first bool) {
	i, ok := f.index[id]
	if !ok {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &f.state[i]
	s.clicks++
	if s.firstClick.IsZero() {
		s.firstClick = intended
		return true
	}
	return false
}

// freshStrategy returns the index of strategy in freshStrategies, or -1 if
// its recommendations do not count.
func freshStrategy(strategy []byte) int {
	for k, s := range freshStrategies {
		if string(strategy) == s {
			return k
		}
	}
	return -1
}

// sighting is a new item read in a recommendation for the first time (in
// its strategy).
type sighting struct {
	item     gen.NewItem
	strategy string
	after    time.Duration // since its first click (negative: before it)
	clicked  bool          // it had been clicked
}

// received scans a recommendation read at time at for the new items'
// ids, and returns the items it shows for the first time in its strategy
// (appended to found, which it may reuse). Recommendations of other
// strategies are not scanned.
func (f *freshTracker) received(value, strategy []byte, at time.Time, found []sighting) []sighting {
	k := freshStrategy(strategy)
	if k < 0 {
		return found
	}
	eachItemID(value, func(id int64) {
		if !f.isNew(id) {
			return
		}
		i, ok := f.index[id]
		if !ok || f.seen[i][k].Load() {
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.seen[i][k].Load() {
			return
		}
		f.seen[i][k].Store(true)
		s := &f.state[i]
		s.firstRec[k] = at
		found = append(found, sighting{item: f.items[i], strategy: freshStrategies[k], after: at.Sub(s.firstClick), clicked: !s.firstClick.IsZero()})
	})
	return found
}

// itemIDKey is how wire.Recommendation.AppendJSON writes an item's id.
var itemIDKey = []byte(`"item_id":`)

// eachItemID calls fn with every integer following "item_id": in b. It
// does not parse the JSON: in a recommendation the key only occurs in its
// items. About 10 bytes.Index calls for a list of 10 items.
func eachItemID(b []byte, fn func(id int64)) {
	for {
		i := bytes.Index(b, itemIDKey)
		if i < 0 {
			return
		}
		b = b[i+len(itemIDKey):]
		j := 0
		for j < len(b) && b[j] == ' ' {
			j++
		}
		var id int64
		start := j
		for ; j < len(b) && b[j] >= '0' && b[j] <= '9' && j-start < 18; j++ {
			id = id*10 + int64(b[j]-'0')
		}
		if j > start && (j == len(b) || b[j] < '0' || b[j] > '9') {
			fn(id)
		}
		b = b[j:]
	}
}

// FreshnessReport says how soon the hot path recommended the items the
// shop launched during the run (--new-items). Delays are from the intended
// send time of an item's first click to the read of the first model (or
// online) recommendation of any shopper that contained it; the percentiles
// are over the items seen (nearest rank; null: none seen).
type FreshnessReport struct {
	NewItems int `json:"new_items"` // launched during the run, as planned
	// Introduced: their introduction time came before the last click
	// (a ramp stopped early introduces fewer).
	Introduced int `json:"introduced"`
	Clicked    int `json:"clicked"` // with at least one valid click
	Seen       int `json:"seen"`    // of the clicked, in a model or online recommendation
	// NeverSeen: clicked, but in no model or online recommendation read
	// before the drain ended.
	NeverSeen int `json:"never_seen"`
	// KnownBeforeClick: in a recommendation before their first click
	// (running workers that learned them in an earlier run?); not in the
	// percentiles.
	KnownBeforeClick int      `json:"known_before_click,omitempty"`
	P50Ms            *float64 `json:"p50_ms"`
	P95Ms            *float64 `json:"p95_ms"`
	MaxMs            *float64 `json:"max_ms"`
	// ByStrategy: the same, counting only the recommendations of one
	// strategy (model, online), for those that showed a new item.
	ByStrategy map[string]FreshnessDelays `json:"by_strategy,omitempty"`
	Measured   string                     `json:"measured"`
	Items      []FreshItem                `json:"items"`
}

// FreshnessDelays are the delays of the new items one strategy showed.
type FreshnessDelays struct {
	Seen  int     `json:"seen"`
	P50Ms float64 `json:"p50_ms"`
	P95Ms float64 `json:"p95_ms"`
	MaxMs float64 `json:"max_ms"`
}

// FreshItem is one new item: when it was introduced, first clicked and
// first recommended (seconds since the start of the measured run; null:
// not), and the delay between the last two.
type FreshItem struct {
	ItemID       int64    `json:"item_id"`
	Category     string   `json:"category"`
	AnchorItemID int64    `json:"anchor_item_id"`
	IntroducedS  float64  `json:"introduced_s"`
	Clicks       int64    `json:"clicks"`
	FirstClickS  *float64 `json:"first_click_s"`
	FirstRecS    *float64 `json:"first_rec_s"`
	Strategy     string   `json:"first_rec_strategy,omitempty"`
	DelayMs      *float64 `json:"delay_ms"`
}

// freshnessMeasured says in the report what the delays measure.
const freshnessMeasured = "from the intended send time of a new item's first click to the read (read_committed) of the first model or online recommendation containing it"

// report summarises the new items for a run that started at start and
// sent its last click lastSend after it (negative: none).
func (f *freshTracker) report(start time.Time, lastSend time.Duration) *FreshnessReport {
	f.mu.Lock()
	defer f.mu.Unlock()
	rep := &FreshnessReport{NewItems: len(f.items), Measured: freshnessMeasured, Items: make([]FreshItem, len(f.items))}
	secs := func(t time.Time) *float64 {
		if t.IsZero() {
			return nil
		}
		x := round3(t.Sub(start).Seconds())
		return &x
	}
	var all []float64
	per := make([][]float64, len(freshStrategies))
	for i, it := range f.items {
		s := &f.state[i]
		fi := FreshItem{ItemID: it.ID, Category: it.Category, AnchorItemID: it.Anchor, IntroducedS: round3(it.At.Seconds()),
			Clicks: s.clicks, FirstClickS: secs(s.firstClick)}
		if it.At <= lastSend {
			rep.Introduced++
		}
		first, k := time.Time{}, -1
		for j, t := range s.firstRec {
			if !t.IsZero() && (first.IsZero() || t.Before(first)) {
				first, k = t, j
			}
		}
		if !first.IsZero() {
			fi.FirstRecS, fi.Strategy = secs(first), freshStrategies[k]
		}
		switch {
		case s.firstClick.IsZero():
		case first.IsZero():
			rep.Clicked++
			rep.NeverSeen++
		case first.Before(s.firstClick):
			rep.Clicked++
			rep.KnownBeforeClick++
			d := delayMs(first.Sub(s.firstClick))
			fi.DelayMs = &d
		default:
			rep.Clicked++
			rep.Seen++
			d := delayMs(first.Sub(s.firstClick))
			fi.DelayMs = &d
			all = append(all, d)
			for j, t := range s.firstRec {
				if !t.IsZero() {
					per[j] = append(per[j], delayMs(t.Sub(s.firstClick)))
				}
			}
		}
		if s.firstClick.IsZero() && !first.IsZero() {
			rep.KnownBeforeClick++
		}
		rep.Items[i] = fi
	}
	if len(all) > 0 {
		p50, p95, mx := delays(all)
		rep.P50Ms, rep.P95Ms, rep.MaxMs = &p50, &p95, &mx
	}
	for j, ds := range per {
		if len(ds) == 0 {
			continue
		}
		if rep.ByStrategy == nil {
			rep.ByStrategy = map[string]FreshnessDelays{}
		}
		p50, p95, mx := delays(ds)
		rep.ByStrategy[freshStrategies[j]] = FreshnessDelays{Seen: len(ds), P50Ms: p50, P95Ms: p95, MaxMs: mx}
	}
	return rep
}

// delayMs is d in ms, rounded to 0.1 ms.
func delayMs(d time.Duration) float64 { return math.Round(ms(d)*10) / 10 }

// delays returns the p50, p95 (nearest rank) and maximum of ds; it sorts
// ds.
func delays(ds []float64) (p50, p95, mx float64) {
	sort.Float64s(ds)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p/100*float64(len(ds)))) - 1
		return ds[min(max(i, 0), len(ds)-1)]
	}
	return rank(50), rank(95), ds[len(ds)-1]
}

// neverSeen returns the ids of the clicked items no recommendation showed.
func (r *FreshnessReport) neverSeen() []string {
	var ids []string
	for _, it := range r.Items {
		if it.FirstClickS != nil && it.FirstRecS == nil {
			ids = append(ids, fmt.Sprint(it.ItemID))
		}
	}
	return ids
}

// judge appends a breach to b if the new items took longer than limit
// (p95) to be recommended, or one clicked never was. 0: not judged.
func (r *FreshnessReport) judge(limit time.Duration, b []string) []string {
	if r == nil || limit <= 0 {
		return b
	}
	switch {
	case r.Clicked == 0:
		return append(b, fmt.Sprintf("none of the %d new items was clicked, so freshness could not be measured", r.NewItems))
	case r.Seen == 0:
		return append(b, fmt.Sprintf("none of the %d new items clicked appeared in a model recommendation", r.Clicked))
	}
	if r.NeverSeen > 0 {
		b = append(b, fmt.Sprintf("%d of %d new items clicked never appeared in a model recommendation (%s)", r.NeverSeen, r.Clicked, strings.Join(r.neverSeen(), ", ")))
	}
	if *r.P95Ms > ms(limit) {
		b = append(b, fmt.Sprintf("freshness p95 %.0f ms > %v", *r.P95Ms, limit))
	}
	return b
}

// write writes the freshness line of the summary.
func (r *FreshnessReport) write(p printer) {
	if r == nil {
		return
	}
	p("  freshness ....... %d new items launched, %d clicked: ", r.NewItems, r.Clicked)
	switch {
	case r.Clicked == 0:
		p("NOT MEASURED: no new item was clicked (too short a run?)\n")
		return
	case r.Seen == 0:
		p("NONE appeared in a model or online recommendation before the drain ended: the workers did not learn them\n")
	default:
		p("%d recommended, first click → first recommendation p50 %s  p95 %s  max %s ms",
			r.Seen, thousands(*r.P50Ms), thousands(*r.P95Ms), thousands(*r.MaxMs))
		if r.NeverSeen > 0 {
			p("; %d NEVER (%s)", r.NeverSeen, strings.Join(r.neverSeen(), ", "))
		}
		p("\n")
	}
	if len(r.ByStrategy) > 0 {
		names := make([]string, 0, len(r.ByStrategy))
		for name := range r.ByStrategy {
			names = append(names, name)
		}
		slices.Sort(names)
		parts := make([]string, len(names))
		for i, name := range names {
			d := r.ByStrategy[name]
			parts[i] = fmt.Sprintf("%s %d (p50 %s, p95 %s ms)", name, d.Seen, thousands(d.P50Ms), thousands(d.P95Ms))
		}
		p("                    by strategy: %s\n", strings.Join(parts, " · "))
	}
	if n := r.NewItems - r.Introduced; n > 0 {
		p("                    %d new items not introduced: the run stopped before their time\n", n)
	}
	if r.KnownBeforeClick > 0 {
		p("                    %d new items were recommended before their first click (not counted): did the workers learn them in an earlier run?\n", r.KnownBeforeClick)
	}
}
