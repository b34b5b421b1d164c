package gen

import (
	"math/rand/v2"
	"time"
)

// New items (Config.NewItems). A shop launches products while it runs; a
// recommender that learns only from yesterday's clicks cannot recommend them
// until the next training. The synthetic shop launches Config.NewItems of
// them, with ids after the catalogue's (Items+1, Items+2, …), so no model
// trained on the shop's history knows them.
//
// Each new item belongs to a category and has an anchor: one of the five
// most popular items of that category, fixed for the item and different
// for each (as long as there are enough), the page on which the shop
// promotes it. From its introduction on, a new item trends: a shopper's
// view is, with probability NewItemShare for each new item introduced so
// far (at most MaxNewItemsShare for all of them), a view of the anchor, and
// the shopper's next click, a LaunchGapMedian-ish gap later, a view of the
// new item. So the pair anchor → new item repeats across many shoppers'
// sessions, the co-occurrence an online learner needs. At 1,000 clicks/s
// (about 880 of them views) each new item gets about 3.5 clicks a second,
// each from a shopper chosen as any other click's.
//
// New items are drawn from their own random streams (the catalogue seed's
// for the items and anchors, the seed's for the launches), so a shop with
// new items clicks exactly as the same shop without them until the first
// is introduced.
const (
	NewItemShare     = 0.004 // share of views that launch a given new item (anchor view, then the item's)
	MaxNewItemsShare = 0.2   // cap on the share of views that launch any new item
	LaunchGapMedian  = 2 * time.Second

	launchGapSigma = 0.5
	launchGapMax   = 10 * time.Second
	anchorTop      = 5 // anchors are among the category's this many most popular items
)

// NewItem is an item the synthetic shop launches while it runs.
type NewItem struct {
	ID       int64         // after the catalogue's ids: Items+1, …
	Category string        // its anchor's
	Anchor   int64         // the catalogue item viewed just before each view of it
	At       time.Duration // introduced this long after the source's first click
}

// launches are the new items of a shop and how far the run has come in
// introducing them.
type launches struct {
	items   []launchItem // by introduction time
	rng     *rand.Rand
	started bool
	origin  int64 // time of the source's first click, Unix ns
	live    int   // items[:live] have been introduced
}

type launchItem struct {
	NewItem
	anchor int32 // the anchor's rank
	at     int64 // introduction, ns after origin
}

func newLaunches(cat *catalogue, cfg Config, catSeed uint64) launches {
	if cfg.NewItems <= 0 {
		return launches{}
	}
	l := launches{items: make([]launchItem, cfg.NewItems), rng: rand.New(rand.NewPCG(cfg.Seed, streamLaunch))}
	rng := rand.New(rand.NewPCG(catSeed, streamNewItems))
	used := map[int32]bool{}
	for i := range l.items {
		var k, anchor int32
		for try := 0; try < 20; try++ { // a distinct anchor, if one comes up
			k = cat.sampleCategory(rng)
			top := cat.items[k][:min(anchorTop, len(cat.items[k]))]
			anchor = top[rng.IntN(len(top))]
			if !used[anchor] {
				break
			}
		}
		used[anchor] = true
		at := time.Duration((float64(i) + 0.5) / float64(cfg.NewItems) * float64(cfg.NewItemsOver))
		l.items[i] = launchItem{
			NewItem: NewItem{ID: int64(len(cat.itemID) + 1 + i), Category: cat.names[k], Anchor: cat.itemID[anchor], At: at},
			anchor:  anchor, at: int64(at),
		}
	}
	return l
}

// begin notes the time of a click: the first one's is the origin of the
// introduction times.
func (l *launches) begin(t int64) {
	if !l.started {
		l.started, l.origin = true, t
	}
}

// pick returns, for a view at time t, the new item whose launch it is (the
// view then is of its anchor), or -1 for an ordinary view.
func (l *launches) pick(t int64) int {
	if len(l.items) == 0 {
		return -1
	}
	for l.live < len(l.items) && l.items[l.live].at <= t-l.origin {
		l.live++
	}
	if l.live == 0 {
		return -1
	}
	p := min(float64(l.live)*NewItemShare, MaxNewItemsShare)
	x := l.rng.Float64()
	if x >= p {
		return -1
	}
	return min(int(x/p*float64(l.live)), l.live-1)
}

// NewItems returns the items the shop launches (Config.NewItems), in the
// order they are introduced; nil if none.
func (s *Synthetic) NewItems() []NewItem {
	if len(s.launch.items) == 0 {
		return nil
	}
	out := make([]NewItem, len(s.launch.items))
	for i, it := range s.launch.items {
		out[i] = it.NewItem
	}
	return out
}
