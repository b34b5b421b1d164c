package hotpath

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/clickrec/clickrec/drift"
	"github.com/clickrec/clickrec/featurestore"
	"github.com/clickrec/clickrec/itemknow"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/wire"
)

// Serving is the model the hot path scores with: the catalogue, a scorer over it
// and the registry version stamped on every recommendation it makes.
type Serving struct {
	Version string
	Model   *model.Model
	Scorer  model.Scorer
	// Reference are the drift reference profiles recorded when the model was
	// trained; the worker counts its live profiles against them. Nil: no
	// live profiles.
	Reference drift.ReferenceSet
}

// fallback returns up to k items for a shopper without usable history: the
// category's top items, then the overall ones, each time the online item
// knowledge's recent popularity (liveCat, liveAll; decayed click counts)
// before the popularity table p's; excluded items (bought, the current one)
// are skipped. strategy says which kind of list supplied the first item.
func fallback(p *featurestore.Popularity, liveCat, liveAll []itemknow.Scored, category string, k int, bought []int64, current int64) ([]featurestore.Scored, string) {
	out := make([]featurestore.Scored, 0, k)
	add := func(id int64, score float32) bool {
		if len(out) == k {
			return false
		}
		if id == current || slices.Contains(bought, id) || slices.ContainsFunc(out, func(o featurestore.Scored) bool { return o.ItemID == id }) {
			return true
		}
		out = append(out, featurestore.Scored{ItemID: id, Score: score})
		return true
	}
	for _, it := range liveCat {
		if !add(it.Item, float32(it.Score)) {
			break
		}
	}
	if p != nil {
		for _, it := range p.ByCategory[category] {
			if !add(it.ItemID, it.Score) {
				break
			}
		}
	}
	strategy := wire.StrategyGlobalPopular
	if len(out) > 0 {
		strategy = wire.StrategyCategoryPopular
	}
	for _, it := range liveAll {
		if !add(it.Item, float32(it.Score)) {
			break
		}
	}
	if p != nil {
		for _, it := range p.Global {
			if !add(it.ItemID, it.Score) {
				break
			}
		}
	}
	return out, strategy
}

// PopularityFromModel derives a global table from a model's prior, for when no
// popularity table has been published yet.
func PopularityFromModel(m *model.Model, k int) *featurestore.Popularity {
	idx := make([]int, m.NumItems())
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		if c := cmp.Compare(m.Prior[b], m.Prior[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	p := &featurestore.Popularity{Version: "model-prior", ByCategory: map[string][]featurestore.Scored{}}
	for _, i := range idx[:min(k*4, len(idx))] {
		p.Global = append(p.Global, featurestore.Scored{ItemID: m.ItemIDs[i], Score: m.Prior[i]})
	}
	return p
}

// swapper hands a new model or popularity table to the processing loop, which
// picks it up between batches. It closes every scorer replaced: the one in use
// when the loop takes its successor, and one replaced before the loop ever
// took it (two swaps within a batch).
type swapper struct {
	mu      sync.Mutex
	pending *Serving // the latest SetServing
	inUse   *Serving // what the loop took last
	pop     atomic.Pointer[featurestore.Popularity]
}

// set makes s the serving the loop takes next.
func (sw *swapper) set(s *Serving) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if old := sw.pending; old != nil && old != s && old != sw.inUse {
		old.close() // never taken
	}
	sw.pending = s
}

// take returns the serving to score with, closing the one in use if it is
// replaced.
func (sw *swapper) take() *Serving {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.pending != sw.inUse {
		if sw.inUse != nil {
			sw.inUse.close()
		}
		sw.inUse = sw.pending
	}
	return sw.inUse
}

func (s *Serving) close() {
	if s != nil && s.Scorer != nil {
		_ = s.Scorer.Close()
	}
}
