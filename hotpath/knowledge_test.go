package hotpath

import (
	"fmt"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/itemknow"
	"github.com/clickrec/clickrec/wire"
)

// newLearningProcessor is newModelProcessor with online item knowledge,
// fed by hand: learnFrom applies a batch's item-knowledge records, as the
// worker's reader does once the transaction commits.
func newLearningProcessor(t *testing.T) (*processor, *partition) {
	t.Helper()
	p, part := newModelProcessor(t)
	p.ik = itemknow.NewGlobal(itemknow.GlobalConfig{Table: p.cfg.Knowledge})
	return p, part
}

func learnFrom(t *testing.T, p *processor, out map[string][]*kgo.Record) {
	t.Helper()
	for _, r := range out[string(p.cfg.Topics.Knowledge)] {
		if err := p.ik.ApplyRecord(r.Value); err != nil {
			t.Fatal(err)
		}
	}
}

// teach has n shoppers click item a, then item x, reps times each, in one
// batch, and applies what the batch taught.
func teach(t *testing.T, p *processor, part *partition, a, x int64, n, reps int) {
	t.Helper()
	ts := p.now().UnixMilli()
	var clicks []*kgo.Record
	for i := range n {
		u := fmt.Sprintf("s%d", i)
		for r := range reps {
			clicks = append(clicks,
				rec(fmt.Sprintf("%s-%da", u, r), u, event.View, a, "c1", ts+int64(4*i+2*r)),
				rec(fmt.Sprintf("%s-%dx", u, r), u, event.View, x, "c1", ts+int64(4*i+2*r+1)))
		}
	}
	learnFrom(t, p, run(t, p, part, clicks...))
}

func recItems(o wire.Recommendation) []int64 {
	var ids []int64
	for _, it := range o.Items {
		ids = append(ids, it.ItemID)
	}
	return ids
}

// TestLearnsNewItem is issue 19's scenario in one processor: shoppers click a
// known item A, then a brand-new item X. Once what that batch taught is
// applied (and not before), a new shopper who clicks A gets X in a model
// top-10, and one who clicks X gets A's world.
func TestLearnsNewItem(t *testing.T) {
	p, part := newLearningProcessor(t)
	a, x := p.serving.Model.ItemIDs[3], int64(777_777)
	ts := p.now().UnixMilli()
	var clicks []*kgo.Record
	for i := range 30 {
		u := fmt.Sprintf("s%d", i)
		for r := range 2 {
			clicks = append(clicks,
				rec(fmt.Sprintf("%s-%da", u, r), u, event.View, a, "c1", ts+int64(4*i+2*r)),
				rec(fmt.Sprintf("%s-%dx", u, r), u, event.View, x, "c1", ts+int64(4*i+2*r+1)))
		}
	}
	out := run(t, p, part, clicks...)
	kn := out[string(p.cfg.Topics.Knowledge)]
	if len(kn) != 1 || kn[0].Partition != part.id {
		t.Fatalf("%d item-knowledge records, want 1 for the batch, on its partition", len(kn))
	}
	n, err := itemknow.DecodeRecord(kn[0].Value, func(itemknow.Increment) {})
	if err != nil || n != len(clicks) {
		t.Fatalf("the record holds %d increments (%v), want one per click (%d)", n, err, len(clicks))
	}

	// Not applied yet: the new shopper gets the model alone.
	out = run(t, p, part, rec("n0", "n0", event.View, a, "c1", ts+100))
	if o := decodeRec(t, out[string(p.cfg.Topics.Recs)][0]); slices.Contains(recItems(o), x) {
		t.Fatalf("X recommended before anything taught it: %v", recItems(o))
	}

	learnFrom(t, p, byTopic(kn))
	out = run(t, p, part, rec("n1", "n1", event.View, a, "c1", ts+200))
	o := decodeRec(t, out[string(p.cfg.Topics.Recs)][0])
	if o.Strategy != wire.StrategyModel || !slices.Contains(recItems(o), x) || len(o.Items) != p.cfg.TopK {
		t.Fatalf("a new shopper who clicks A: strategy %s, items %v; want X (%d) in a model top-%d", o.Strategy, recItems(o), x, p.cfg.TopK)
	}
	if got := testutil.ToFloat64(p.m.newItems); got < 1 {
		t.Fatalf("recsys_itemknow_recommended_new_items_total %v, want ≥ 1", got)
	}

	// A session of X alone: the model knows none of it, the online
	// knowledge proposes A.
	out = run(t, p, part, rec("n2", "n2", event.View, x, "c1", ts+300))
	o = decodeRec(t, out[string(p.cfg.Topics.Recs)][0])
	if o.Strategy != wire.StrategyOnline || len(o.Items) == 0 || o.Items[0].ItemID != a {
		t.Fatalf("a new shopper who clicks X: strategy %s, items %v; want online, A (%d) first", o.Strategy, recItems(o), a)
	}
	if slices.Contains(recItems(o), x) {
		t.Fatalf("the clicked item is recommended: %v", recItems(o))
	}
}

// TestAbortedBatchTeachesNothing: the increments of a batch that rolled
// back are not produced with the batch that reads its records again.
func TestAbortedBatchTeachesNothing(t *testing.T) {
	p, part := newLearningProcessor(t)
	ts := p.now().UnixMilli()
	p.begin()
	p.process(part, rec("e1", "u1", event.View, 1001, "c1", ts))
	p.rollback()
	out := run(t, p, part, rec("e2", "u2", event.View, 1002, "c1", ts+1))
	var items []int64
	for _, r := range out[string(p.cfg.Topics.Knowledge)] {
		if _, err := itemknow.DecodeRecord(r.Value, func(inc itemknow.Increment) { items = append(items, inc.Item) }); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(items, []int64{1002}) {
		t.Fatalf("the batch taught items %v, want [1002] (not the rolled-back click's 1001)", items)
	}
}

// TestLearnOff: with --learn=false no item-knowledge record is produced.
func TestLearnOff(t *testing.T) {
	p, part := newModelProcessor(t)
	p.cfg.Learn = false
	out := run(t, p, part, rec("e1", "u1", event.View, 1001, "c1", p.now().UnixMilli()))
	if n := len(out[string(p.cfg.Topics.Knowledge)]); n != 0 {
		t.Fatalf("%d item-knowledge records with learning off", n)
	}
}

// TestJunkIDsNotRecommended: a bot clicks a known item and then hundreds of
// made-up ids. The table learns them (on probation), but no shopper who
// clicks that item is recommended one: an item becomes a candidate once a
// second shopper clicks it.
func TestJunkIDsNotRecommended(t *testing.T) {
	p, part := newLearningProcessor(t)
	a := p.serving.Model.ItemIDs[3]
	ts := p.now().UnixMilli()
	var clicks []*kgo.Record
	for i := range 300 {
		item := a
		if i%2 == 1 {
			item = 5_000_000 + int64(i)
		}
		clicks = append(clicks, rec(fmt.Sprintf("bot-%d", i), "bot", event.View, item, "c1", ts+int64(i)))
	}
	learnFrom(t, p, run(t, p, part, clicks...))
	if !p.ik.Lock().Known(5_000_001) {
		t.Fatal("the table did not learn the bot's ids at all: the test proves nothing")
	}
	p.ik.Unlock()
	out := run(t, p, part, rec("n1", "n1", event.View, a, "c1", ts+1000))
	o := decodeRec(t, out[string(p.cfg.Topics.Recs)][0])
	for _, id := range recItems(o) {
		if id >= 5_000_000 {
			t.Fatalf("a made-up id one bot clicked is recommended: %v", recItems(o))
		}
	}
}

// TestPromotionFoldsIn: once a model that knows the new item X is served
// (the nightly retraining learned it), X's online evidence weighs λ, not μ:
// the model's view of X decides, and the online knowledge no longer lifts
// it over the model's best.
func TestPromotionFoldsIn(t *testing.T) {
	p, part := newLearningProcessor(t)
	a, x := p.serving.Model.ItemIDs[3], int64(777_777)
	ts := p.now().UnixMilli()
	teach(t, p, part, a, x, 30, 1)
	out := run(t, p, part, rec("n1", "n1", event.View, a, "c1", ts+100))
	if o := decodeRec(t, out[string(p.cfg.Topics.Recs)][0]); !slices.Contains(recItems(o), x) {
		t.Fatalf("before the promotion X is not recommended: %v", recItems(o))
	}

	// The retrained model knows X, and scores it below everything else.
	m := randomModel(50, 4, 7)
	m.Version = "retrained"
	m.ItemIDs = append(m.ItemIDs, x)
	m.Prior = append(m.Prior, -100)
	m.Factors = append(m.Factors, 0, 0, 0, 0)
	m.Projection = append(m.Projection, 0, 0, 0, 0)
	p.serving = &Serving{Version: m.Version, Model: m, Scorer: bruteScorer{m}}
	out = run(t, p, part, rec("n2", "n2", event.View, a, "c1", ts+200))
	if o := decodeRec(t, out[string(p.cfg.Topics.Recs)][0]); slices.Contains(recItems(o), x) {
		t.Fatalf("after a promotion of a model that knows X and ranks it last, the online knowledge still lifts it: %v", recItems(o))
	}
}
