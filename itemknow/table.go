// Package itemknow is online item knowledge learned from clicks: which items
// exist, which follow which in sessions, and which are popular now, overall
// and per category, all with exponential time decay. It is the first step of
// "the stream learns" (issue 19): the hot path's model is frozen at the
// nightly retrain, this table is not.
//
// The only mutator is Apply(Increment), an increment being a small value
// derived from one click. The state is a set of decayed sums stored relative
// to a fixed epoch, w·2^((t−epoch)/halfLife), so adding is commutative: every
// table that applies the same increments, in any interleaving, holds the same
// sums (up to float rounding) as long as no cap evicts anything. That is what
// lets a Kafka topic of increments, read by every worker, act as a global
// table. Comparing two stored sums compares their decayed values at any common
// time, so the lists need no decay pass: a sum only ever grows, and the lists
// stay sorted by bubbling the entry that grew.
//
// Memory is bounded by Config's caps. A junk flood (random ids) cannot push
// established knowledge out: an item or a pair becomes established only once
// a second session has clicked it, only probationary entries are evicted to
// make room for new ones, and a reserve of slots is kept for probation. One
// session contributes at most MaxSessionClicks clicks.
//
// A Table is not safe for concurrent use, queries included (they share
// scratch space).
package itemknow

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// Config bounds and tunes a Table. Every worker of one deployment must use
// the same Config.
type Config struct {
	// HalfLife of every decayed sum.
	HalfLife time.Duration
	// EpochMs anchors the stored sums (Unix ms); the table moves its epoch
	// forward by whole multiples of 256 half-lives from here, so tables with
	// the same EpochMs agree whatever they applied first.
	EpochMs int64
	// MaxItems bounds the items known; an eighth of them is kept for
	// items on probation (clicked in one session only).
	MaxItems int
	// MaxPairsPerItem bounds each item's neighbour list; a quarter of it is
	// kept for pairs on probation. MaxPairs bounds the pairs in total.
	MaxPairsPerItem int
	MaxPairs        int
	// MaxCategories bounds the categories with a popularity list; TopN is
	// the length of the overall and per-category popularity lists.
	MaxCategories int
	TopN          int
	// MaxSessionClicks: increments with Seq at or past it are ignored.
	MaxSessionClicks uint32
	// BackWeight weighs the backward pair X→A of a click on X after A (the
	// forward pair A→X weighs 1/distance).
	BackWeight float64
	// QueryProbation lets queries see pairs on probation (one session only).
	QueryProbation bool
	// QueryProbationItems lets queries propose items on probation (clicked
	// in one session only). Off by default: an id one session made up (a
	// bot, a broken client) is never a candidate, while a new item a second
	// shopper clicks is.
	QueryProbationItems bool
}

// DefaultConfig returns the defaults: a 2-hour half-life, 100,000 items, 32
// neighbours per item, 1M pairs, 10,000 categories, lists of 100.
func DefaultConfig() Config {
	return Config{
		HalfLife:         2 * time.Hour,
		MaxItems:         100_000,
		MaxPairsPerItem:  32,
		MaxPairs:         1 << 20,
		MaxCategories:    10_000,
		TopN:             100,
		MaxSessionClicks: 50,
		BackWeight:       0.5,
		QueryProbation:   true,
	}
}

// Scored is an item with a score.
type Scored struct {
	Item  int64
	Score float64
}

// Stats describe a table, for metrics.
type Stats struct {
	Items, Established int   // items known, of them established
	Pairs              int   // neighbour entries held (stale ones included until reused)
	Categories         int   // categories with a popularity list
	ItemEvictions      int64 // items evicted to make room
	PairEvictions      int64 // pairs evicted to make room
	Rejected           int64 // items or pairs not admitted (no room)
	Capped             int64 // increments ignored by MaxSessionClicks
	Applied            int64 // increments applied
	NewestMs           int64 // newest increment time
}

type item struct {
	id      int64
	cat     int64
	catMs   int64
	pop     float64 // decayed clicks, scaled
	gen     uint32  // bumped when the slot is reused
	sess    uint32  // first session (low bits of its hash)
	est     bool
	live    bool
	nbrs    []pair // best first
	nEstNbr int
}

type pair struct {
	w    float64
	slot int32
	gen  uint32
	sess uint32
	est  bool
}

type topList struct{ slots []int32 } // best first

// Table is the online item knowledge.
type Table struct {
	cfg        Config
	hlMs       float64
	epochMs    int64
	items      []item
	index      map[int64]int32
	nEst       int
	estCap     int
	pairEstCap int
	pairs      int
	top        topList
	cats       map[int64]*topList
	st         Stats
	mark       []int32  // Candidates' scratch: slot → position+1 in out
	srcs       []source // Candidates' and Score's scratch: the session's sources
	marked     []int32  // Candidates' scratch: the slots it marked, to unmark
}

// New returns an empty table.
func New(cfg Config) *Table {
	d := DefaultConfig()
	if cfg.HalfLife <= 0 {
		cfg.HalfLife = d.HalfLife
	}
	if cfg.MaxItems <= 0 {
		cfg.MaxItems = d.MaxItems
	}
	if cfg.MaxPairsPerItem <= 0 {
		cfg.MaxPairsPerItem = d.MaxPairsPerItem
	}
	if cfg.MaxPairs <= 0 {
		cfg.MaxPairs = d.MaxPairs
	}
	if cfg.MaxCategories <= 0 {
		cfg.MaxCategories = d.MaxCategories
	}
	if cfg.TopN <= 0 {
		cfg.TopN = d.TopN
	}
	if cfg.MaxSessionClicks == 0 {
		cfg.MaxSessionClicks = d.MaxSessionClicks
	}
	return &Table{
		cfg:        cfg,
		hlMs:       float64(cfg.HalfLife.Milliseconds()),
		epochMs:    cfg.EpochMs,
		index:      make(map[int64]int32),
		estCap:     cfg.MaxItems - max(1, cfg.MaxItems/8),
		pairEstCap: cfg.MaxPairsPerItem - max(1, cfg.MaxPairsPerItem/4),
		cats:       make(map[int64]*topList),
	}
}

// Config returns the table's configuration, defaults filled in.
func (t *Table) Config() Config { return t.cfg }

// renormSpan is how many half-lives the epoch moves at a time: stored sums
// stay below 2^renormSpan times a click's weight, far from float64's range,
// and scaling by a power of two is exact, so renormalising commutes with
// adding.
const renormSpan = 256

// scale returns 2^((tMs−epoch)/halfLife), moving the epoch first if tMs is
// more than renormSpan half-lives past it.
func (t *Table) scale(tMs int64) float64 {
	span := int64(renormSpan * t.hlMs)
	if d := tMs - t.epochMs; d > span {
		k := d / span
		t.epochMs += k * span
		f := -int(k) * renormSpan
		for i := range t.items {
			it := &t.items[i]
			it.pop = math.Ldexp(it.pop, f)
			for j := range it.nbrs {
				it.nbrs[j].w = math.Ldexp(it.nbrs[j].w, f)
			}
		}
	}
	return math.Exp2(float64(tMs-t.epochMs) / t.hlMs)
}

// decay converts a stored sum to its decayed value at tMs.
func (t *Table) decay(v float64, tMs int64) float64 {
	return v * math.Exp2(float64(t.epochMs-tMs)/t.hlMs)
}

// Apply learns one increment.
func (t *Table) Apply(inc Increment) {
	t.st.Applied++
	if inc.Seq >= t.cfg.MaxSessionClicks {
		t.st.Capped++
		return
	}
	if inc.TimeMs > t.st.NewestMs {
		t.st.NewestMs = inc.TimeMs
	}
	v := t.scale(inc.TimeMs)
	sess := uint32(inc.Session)
	x, isNew, ok := t.admit(inc.Item)
	if !ok {
		return
	}
	it := &t.items[x]
	if isNew {
		it.sess = sess
	}
	if inc.Category != 0 && (inc.TimeMs > it.catMs || inc.TimeMs == it.catMs && inc.Category > it.cat) {
		if it.est && it.cat != inc.Category {
			t.dropTop(x)
			it.cat = inc.Category
			it.catMs = inc.TimeMs
			t.pushTop(x)
		}
		it.cat, it.catMs = inc.Category, inc.TimeMs
	}
	it.pop += v
	if !it.est && it.sess != sess {
		t.promote(x)
	}
	if t.items[x].est {
		t.pushTop(x)
	}
	for i, p := range inc.Prev[:min(int(inc.NPrev), MaxPrev)] {
		// A previous item the table does not know yet (its own increment
		// not applied yet, or evicted) is admitted, so the pair does not
		// depend on the order increments arrive in.
		y, isNew, ok := t.admit(p)
		if !ok || y == x || t.items[x].id != inc.Item {
			continue // no room, or the room was x's
		}
		if isNew {
			t.items[y].sess = sess
		}
		w := v / float64(i+1)
		t.addPair(y, x, w, sess)
		if t.cfg.BackWeight > 0 {
			t.addPair(x, y, w*t.cfg.BackWeight, sess)
		}
	}
}

// admit returns the slot of id, making one for a new item: a new slot below
// MaxItems, else the slot of the weakest item on probation among a
// deterministic sample (8 slots, up to 64 until one is on probation).
func (t *Table) admit(id int64) (x int32, isNew, ok bool) {
	if x, ok := t.index[id]; ok {
		return x, false, true
	}
	switch {
	case len(t.items) < t.cfg.MaxItems:
		t.items = append(t.items, item{})
		t.mark = append(t.mark, 0)
		x = int32(len(t.items) - 1)
	default:
		x = -1
		h := uint64(id)*0x9E3779B97F4A7C15 + 1
		for i := 0; i < 64 && (x < 0 || i < 8); i++ {
			h ^= h >> 29
			h *= 0xBF58476D1CE4E5B9
			c := int32(h % uint64(len(t.items)))
			if it := &t.items[c]; !it.est && (x < 0 || it.pop < t.items[x].pop) {
				x = c
			}
		}
		if x < 0 {
			t.st.Rejected++
			return 0, false, false
		}
		t.evict(x)
		t.st.ItemEvictions++
	}
	it := &t.items[x]
	gen := it.gen + 1
	nb := it.nbrs[:0]
	*it = item{id: id, gen: gen, live: true, nbrs: nb}
	t.index[id] = x
	return x, true, true
}

// evict forgets the item in slot x (not established).
func (t *Table) evict(x int32) {
	it := &t.items[x]
	delete(t.index, it.id)
	t.pairs -= len(it.nbrs)
	it.nbrs = it.nbrs[:0]
	it.nEstNbr = 0
	it.live = false
}

// promote establishes the item in slot x, demoting the weakest sampled
// established item if the established share is full and that one is weaker.
func (t *Table) promote(x int32) {
	it := &t.items[x]
	if t.nEst < t.estCap {
		it.est = true
		t.nEst++
		return
	}
	weak := int32(-1)
	h := uint64(it.id)*0x9E3779B97F4A7C15 + 7
	for range 8 {
		h ^= h >> 29
		h *= 0xBF58476D1CE4E5B9
		c := int32(h % uint64(len(t.items)))
		if o := &t.items[c]; o.est && (weak < 0 || o.pop < t.items[weak].pop) {
			weak = c
		}
	}
	if weak >= 0 && t.items[weak].pop < it.pop {
		t.dropTop(weak)
		t.items[weak].est = false
		it.est = true
	}
}

// addPair adds w to the pair from slot a to slot b.
func (t *Table) addPair(a, b int32, w float64, sess uint32) {
	it := &t.items[a]
	bg := t.items[b].gen
	j := -1
	stale := -1
	for i := range it.nbrs {
		p := &it.nbrs[i]
		if p.slot == b && p.gen == bg {
			j = i
			break
		}
		if stale < 0 && (t.items[p.slot].gen != p.gen || !t.items[p.slot].live) {
			stale = i
		}
	}
	if j >= 0 {
		p := &it.nbrs[j]
		p.w += w
		if !p.est && p.sess != sess {
			t.promotePair(it, j)
		}
		t.fix(it.nbrs, j)
		return
	}
	np := pair{w: w, slot: b, gen: bg, sess: sess}
	switch {
	case stale >= 0:
		if it.nbrs[stale].est {
			it.nEstNbr--
		}
		j = stale
	case len(it.nbrs) < t.cfg.MaxPairsPerItem && t.pairs < t.cfg.MaxPairs:
		it.nbrs = append(it.nbrs, np)
		t.pairs++
		j = len(it.nbrs) - 1
	default:
		// The weakest pair on probation makes room.
		for i := len(it.nbrs) - 1; i >= 0; i-- {
			if !it.nbrs[i].est {
				j = i
				break
			}
		}
		if j < 0 {
			t.st.Rejected++
			return
		}
		t.st.PairEvictions++
	}
	it.nbrs[j] = np
	t.fix(it.nbrs, j)
}

// promotePair establishes it.nbrs[j], demoting the list's weakest
// established pair if the established share is full and that one is weaker.
func (t *Table) promotePair(it *item, j int) {
	if it.nEstNbr < t.pairEstCap {
		it.nbrs[j].est = true
		it.nEstNbr++
		return
	}
	for i := len(it.nbrs) - 1; i >= 0; i-- {
		if it.nbrs[i].est {
			if it.nbrs[i].w < it.nbrs[j].w {
				it.nbrs[i].est = false
				it.nbrs[j].est = true
			}
			return
		}
	}
}

// fix restores the order of ps (weight descending, then slot ascending)
// after ps[j] changed.
func (t *Table) fix(ps []pair, j int) {
	for j > 0 && t.pairBefore(ps[j], ps[j-1]) {
		ps[j], ps[j-1] = ps[j-1], ps[j]
		j--
	}
	for j+1 < len(ps) && t.pairBefore(ps[j+1], ps[j]) {
		ps[j], ps[j+1] = ps[j+1], ps[j]
		j++
	}
}

// pairBefore orders a neighbour list: heavier first, equal weights by item
// id (not by slot: slots depend on the order items arrived in, and two
// workers must list the same neighbours in the same order).
func (t *Table) pairBefore(a, b pair) bool {
	return a.w > b.w || a.w == b.w && t.items[a.slot].id < t.items[b.slot].id
}

func (t *Table) itemBefore(a, b int32) bool {
	x, y := &t.items[a], &t.items[b]
	return x.pop > y.pop || x.pop == y.pop && x.id < y.id
}

// pushTop puts the established item in slot x into the overall and its
// category's popularity lists, or moves it up there.
func (t *Table) pushTop(x int32) {
	t.pushList(&t.top, x)
	if c := t.items[x].cat; c != 0 {
		l := t.cats[c]
		if l == nil {
			if len(t.cats) >= t.cfg.MaxCategories {
				return
			}
			l = &topList{}
			t.cats[c] = l
		}
		t.pushList(l, x)
	}
}

func (t *Table) pushList(l *topList, x int32) {
	j := slices.Index(l.slots, x)
	if j < 0 {
		if len(l.slots) < t.cfg.TopN {
			l.slots = append(l.slots, x)
		} else if t.itemBefore(x, l.slots[len(l.slots)-1]) {
			l.slots[len(l.slots)-1] = x
		} else {
			return
		}
		j = len(l.slots) - 1
	}
	for j > 0 && t.itemBefore(l.slots[j], l.slots[j-1]) {
		l.slots[j], l.slots[j-1] = l.slots[j-1], l.slots[j]
		j--
	}
}

// dropTop removes the item in slot x from the popularity lists.
func (t *Table) dropTop(x int32) {
	drop := func(l *topList) {
		if j := slices.Index(l.slots, x); j >= 0 {
			l.slots = slices.Delete(l.slots, j, j+1)
		}
	}
	drop(&t.top)
	if l := t.cats[t.items[x].cat]; l != nil {
		drop(l)
	}
}

// Known reports whether the table knows item.
func (t *Table) Known(id int64) bool { _, ok := t.index[id]; return ok }

// Popularity returns item's decayed click count at tMs (0 if unknown).
func (t *Table) Popularity(id int64, tMs int64) float64 {
	x, ok := t.index[id]
	if !ok {
		return 0
	}
	return t.decay(t.items[x].pop, tMs)
}

// Neighbours appends to out[:0] the item's top n neighbours (both
// directions, forward weighing more) with their decayed weights at tMs,
// best first.
func (t *Table) Neighbours(id int64, n int, tMs int64, out []Scored) []Scored {
	out = out[:0]
	x, ok := t.index[id]
	if !ok {
		return out
	}
	f := t.decay(1, tMs)
	for _, p := range t.items[x].nbrs {
		if len(out) >= n {
			break
		}
		if !t.usable(p) {
			continue
		}
		out = append(out, Scored{Item: t.items[p.slot].id, Score: p.w * f})
	}
	return out
}

func (t *Table) usable(p pair) bool {
	o := &t.items[p.slot]
	return o.live && o.gen == p.gen && (p.est || t.cfg.QueryProbation) && (o.est || t.cfg.QueryProbationItems)
}

// Popular appends to out[:0] the n most popular established items at tMs
// with their decayed click counts, best first.
func (t *Table) Popular(n int, tMs int64, out []Scored) []Scored {
	return t.list(&t.top, n, tMs, out[:0])
}

// PopularIn is Popular within category cat.
func (t *Table) PopularIn(cat int64, n int, tMs int64, out []Scored) []Scored {
	l := t.cats[cat]
	if l == nil {
		return out[:0]
	}
	return t.list(l, n, tMs, out[:0])
}

func (t *Table) list(l *topList, n int, tMs int64, out []Scored) []Scored {
	f := t.decay(1, tMs)
	for _, x := range l.slots[:min(n, len(l.slots))] {
		out = append(out, Scored{Item: t.items[x].id, Score: t.items[x].pop * f})
	}
	return out
}

// sessionWeight weighs the session item d places from the newest.
func sessionWeight(d int) float64 { return 1 / float64(d+1) }

// Candidates appends to out[:0] the n items that best follow the session
// (item ids, oldest first), by Score, best first (ties to the lower id).
// Scores are ratios of decayed sums, so they do not depend on the time
// asked at. Session items are not excluded.
func (t *Table) Candidates(session []int64, n int, out []Scored) []Scored {
	out = out[:0]
	for _, src := range t.sources(session) {
		for _, p := range t.items[src.slot].nbrs {
			if !t.usable(p) {
				continue
			}
			s := src.r * p.w
			if m := t.mark[p.slot]; m > 0 {
				out[m-1].Score += s
				continue
			}
			out = append(out, Scored{Item: t.items[p.slot].id, Score: s})
			t.mark[p.slot] = int32(len(out))
			t.marked = append(t.marked, p.slot)
		}
	}
	for _, x := range t.marked {
		t.mark[x] = 0
	}
	t.marked = t.marked[:0]
	better := func(a, b Scored) int {
		if c := cmp.Compare(b.Score, a.Score); c != 0 {
			return c
		}
		return cmp.Compare(a.Item, b.Item)
	}
	if len(out) > 2*n {
		// Only the best n are wanted: move them to the front first
		// (quickselect), then sort those.
		selectBest(out, n, better)
		out = out[:n]
	}
	slices.SortFunc(out, better)
	return out[:min(n, len(out))]
}

// selectBest reorders s so that its first n elements are the n smallest by
// cmp (in any order): Hoare's quickselect with a median-of-three pivot.
func selectBest(s []Scored, n int, cmp func(a, b Scored) int) {
	lo, hi := 0, len(s)-1
	for lo < hi {
		mid := lo + (hi-lo)/2
		if cmp(s[mid], s[lo]) < 0 {
			s[mid], s[lo] = s[lo], s[mid]
		}
		if cmp(s[hi], s[lo]) < 0 {
			s[hi], s[lo] = s[lo], s[hi]
		}
		if cmp(s[hi], s[mid]) < 0 {
			s[hi], s[mid] = s[mid], s[hi]
		}
		pivot := s[mid]
		i, j := lo, hi
		for i <= j {
			for cmp(s[i], pivot) < 0 {
				i++
			}
			for cmp(pivot, s[j]) < 0 {
				j--
			}
			if i <= j {
				s[i], s[j] = s[j], s[i]
				i++
				j--
			}
		}
		switch {
		case n-1 <= j:
			hi = j
		case n-1 >= i:
			lo = i
		default:
			return
		}
	}
}

// Score is the Candidates score of one candidate: Σ over the session's
// newest MaxPrev known items s (d places from the newest) of
// w(s→candidate) / (d+1) / popularity(s).
func (t *Table) Score(session []int64, candidate int64) float64 {
	c, ok := t.index[candidate]
	if !ok {
		return 0
	}
	cg := t.items[c].gen
	var sum float64
	for _, src := range t.sources(session) {
		for _, p := range t.items[src.slot].nbrs {
			if p.slot == c && p.gen == cg && t.usable(p) {
				sum += src.r * p.w
				break
			}
		}
	}
	return sum
}

// source is a session item the table knows, with the weight of its
// neighbours: 1/(d+1) for the d-th newest such item, over its popularity.
type source struct {
	slot int32
	r    float64
}

// sources returns the session's newest MaxPrev known items with a
// popularity, newest first, in the table's scratch (valid until the next
// call).
func (t *Table) sources(session []int64) []source {
	t.srcs = t.srcs[:0]
	for i := len(session) - 1; i >= 0 && len(t.srcs) < MaxPrev; i-- {
		x, ok := t.index[session[i]]
		if !ok || t.items[x].pop == 0 {
			continue
		}
		t.srcs = append(t.srcs, source{slot: x, r: sessionWeight(len(t.srcs)) / t.items[x].pop})
	}
	return t.srcs
}

// Stats returns the table's counters.
func (t *Table) Stats() Stats {
	s := t.st
	s.Items = len(t.index)
	s.Established = t.nEst
	s.Pairs = t.pairs
	s.Categories = len(t.cats)
	return s
}
