package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/featurestore"
	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/wire"
	"github.com/clickrec/clickrec/workflows"
)

// TestFullLoop runs the platform's whole loop as separate processes: the
// synthetic shop's generator and hand-made clicks go to Kafka; a `clickrec
// hotpath` worker (with its own redis-server) answers every click with
// exactly one committed recommendation and keeps user:{id} in Redis; a
// `clickrec worker` runs RefreshPopularity (started with `clickrec workflows
// refresh`), which counts those clicks, writes popularity:current and
// publishes it; and a brand-new shopper then gets cold-start recommendations
// from exactly that table.
func TestFullLoop(t *testing.T) {
	c := newCluster(t, 2)
	rs := startRedis(t, "")
	rc := redis.NewClient(&redis.Options{Addr: rs.addr()})
	defer rc.Close()
	ctx := testenv.Context(t, 80*time.Second)
	// --learn=false: this test follows the slow side's tables (popularity,
	// model) through Redis into the recommendations; the online knowledge's
	// own popularity would serve before them (TestOnlineLearning and the
	// hot path's tests cover it).
	hp := c.worker(t, "w1", "--scorer", "go", "--no-redis=false", "--redis-addr", rs.addr(), "--learn=false")
	reader := c.recsReader(t)
	producer := c.clickProducer(t)

	// The shop's traffic, and a category of our own with known counts: item
	// 7000001 clicked 40 times, 7000002 30, 7000003 20, 7000004 10, by 10
	// shoppers (item ids far above the shop's catalogue).
	const cat = "fl-crafted"
	producing := c.produceAsync(ctx, 200, 100, 21)
	counts := []struct {
		item int64
		n    int
	}{{7000001, 40}, {7000002, 30}, {7000003, 20}, {7000004, 10}}
	base := time.Now().Add(-5 * time.Second).UnixMilli()
	var crafted []event.Click
	for _, ic := range counts {
		for range ic.n {
			i := len(crafted)
			u := fmt.Sprintf("fl-u%d", i%10)
			crafted = append(crafted, event.Click{EventID: fmt.Sprintf("fl-%d", i), UserID: u, Type: event.View,
				ItemID: ic.item, Category: cat, TimestampMs: base + int64(i)})
		}
	}
	producer.send(t, ctx, crafted...)
	sent := (<-producing).must(t)
	lastOf := map[string]string{} // crafted user → event id of its last click
	for _, cl := range crafted {
		sent.ids[cl.EventID] = true
		sent.perUser[cl.UserID]++
		lastOf[cl.UserID] = cl.EventID
	}
	total := len(sent.ids)

	// Kafka: every click exactly one committed recommendation. Nothing serves
	// yet — no model, no popularity table — so each is an empty global_popular.
	waitFor(t, ctx, func() bool { return len(c.readAll(t, string(c.topics.Recs))) >= total })
	missing, dup, distinct := c.verdict(t, sent)
	if missing != 0 || dup != 0 || distinct != total {
		t.Fatalf("recommendations: %d missing, %d duplicated, %d distinct of %d clicks", missing, dup, distinct, total)
	}
	ids := make([]string, 0, total)
	for id := range sent.ids {
		ids = append(ids, id)
	}
	for _, r := range reader.await(t, ctx, ids...) {
		if r.Strategy != wire.StrategyGlobalPopular || len(r.Items) != 0 || r.ModelVersion != "" {
			t.Fatalf("before any table or model: recommendation %+v, want an empty %s", r, wire.StrategyGlobalPopular)
		}
	}

	// Redis: every shopper's entry counts all its clicks, and a crafted
	// shopper's latest recommendation is the one for its last click.
	eventually(t, ctx, func() (bool, string) {
		behind := 0
		for u, n := range sent.perUser {
			if seq, err := rc.HGet(ctx, featurestore.UserKey(u), "seq").Int(); err != nil || seq != n {
				behind++
			}
		}
		return behind == 0, fmt.Sprintf("%d of %d users not caught up in Redis", behind, len(sent.perUser))
	})
	for u, last := range lastOf {
		var r rec
		b, err := rc.HGet(ctx, featurestore.UserKey(u), "recs").Bytes()
		if err == nil {
			r, err = wire.DecodeRecommendation(b)
		}
		if err != nil || r.EventID != last || r.UserID != u {
			t.Fatalf("%s in Redis: recs %s (%v), want the recommendation for %s", featurestore.UserKey(u), b, err, last)
		}
	}
	t.Logf("%d clicks (%d from the generator, %d crafted): %d recommendations in Kafka, 0 missing, 0 duplicated; %d users up to date in Redis",
		total, total-len(crafted), len(crafted), distinct, len(sent.perUser))

	// RefreshPopularity, through a worker on our topics and Redis.
	sub := rc.Subscribe(ctx, featurestore.PopularityChannel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	published := sub.Channel()
	slow := c.slowWorker(t, rs.addr())
	var pop workflows.PopularityOutput
	slow.run(t, ctx, "refresh", &pop, "--popularity-window", "15m")
	if !pop.Stored || pop.Events != total || pop.Invalid != 0 || pop.Incomplete != 0 {
		t.Fatalf("refresh: %+v; want the %d clicks counted and the table stored", pop, total)
	}
	if len(pop.Global) < 2 || pop.Global[0] != 7000001 || pop.Global[1] != 7000002 {
		t.Fatalf("refresh: global top %v, want 7000001 (40 clicks) and 7000002 (30) first", pop.Global)
	}
	select {
	case m := <-published:
		if m.Payload != pop.Version {
			t.Fatalf("%s announced %q, want %q", featurestore.PopularityChannel, m.Payload, pop.Version)
		}
	case <-ctx.Done():
		t.Fatalf("the refresh did not announce %s on %s", pop.Version, featurestore.PopularityChannel)
	}
	table, err := featurestore.LoadPopularity(ctx, rc)
	if err != nil {
		t.Fatal(err)
	}
	ids64 := func(s []featurestore.Scored) []int64 {
		out := make([]int64, len(s))
		for i, x := range s {
			out[i] = x.ItemID
		}
		return out
	}
	if table.Version != pop.Version || !slices.Equal(ids64(table.Global), pop.Global) {
		t.Fatalf("%s: version %s, global %v; the refresh reported %s, %v", featurestore.PopularityKey, table.Version, ids64(table.Global), pop.Version, pop.Global)
	}
	if got, want := ids64(table.ByCategory[cat]), []int64{7000001, 7000002, 7000003, 7000004}; !slices.Equal(got, want) {
		t.Fatalf("table for %s: %v, want %v (by clicks)", cat, got, want)
	}
	if len(table.ByCategory) != pop.Categories || pop.Categories < 2 {
		t.Fatalf("table has %d categories, the refresh reported %d", len(table.ByCategory), pop.Categories)
	}

	// Cold start: a shopper never seen before clicks 7000003 in the crafted
	// category. The hot path reloads the table when it is announced; until
	// then a new shopper still gets the empty fallback, so each attempt is a
	// brand-new shopper.
	want := []int64{7000001, 7000002, 7000004} // the category's top, without the item being viewed
	for _, id := range pop.Global {
		if len(want) < 10 && id != 7000003 && !slices.Contains(want, id) {
			want = append(want, id)
		}
	}
	coldStart := func(user, category string, item int64) rec {
		id := "fl-cold-" + user
		producer.send(t, ctx, event.Click{EventID: id, UserID: user, Type: event.View, ItemID: item, Category: category, TimestampMs: time.Now().UnixMilli()})
		return reader.await(t, ctx, id)[0]
	}
	var cold rec
	var coldUser string
	for attempt := 0; ; attempt++ {
		coldUser = fmt.Sprintf("fl-new-%d", attempt)
		cold = coldStart(coldUser, cat, 7000003)
		if len(cold.Items) > 0 {
			t.Logf("cold start answered from the new table at attempt %d", attempt+1)
			break
		}
		if cold.Strategy != wire.StrategyGlobalPopular {
			t.Fatalf("cold start without a table: %+v", cold)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the hot path never served popularity table %s to a new shopper", pop.Version)
		case <-time.After(200 * time.Millisecond): // the worker swaps tables between batches
		}
	}
	if cold.Strategy != wire.StrategyCategoryPopular || !slices.Equal(itemIDs(cold), want) {
		t.Fatalf("cold start in %s: %s %v, want %s %v (the category's top, then the global top)", cat, cold.Strategy, itemIDs(cold), wire.StrategyCategoryPopular, want)
	}
	// A new shopper in a category the table does not know gets the global top.
	global := coldStart("fl-new-global", "fl-nowhere", 7999999)
	if global.Strategy != wire.StrategyGlobalPopular || !slices.Equal(itemIDs(global), pop.Global[:min(10, len(pop.Global))]) {
		t.Fatalf("cold start in an unknown category: %s %v, want %s %v", global.Strategy, itemIDs(global), wire.StrategyGlobalPopular, pop.Global)
	}
	// The feature store has the new shopper's recommendation too.
	eventually(t, ctx, func() (bool, string) {
		var r rec
		b, err := rc.HGet(ctx, featurestore.UserKey(coldUser), "recs").Bytes()
		if err == nil {
			r, err = wire.DecodeRecommendation(b)
		}
		return err == nil && r.EventID == cold.EventID && slices.Equal(itemIDs(r), want),
			fmt.Sprintf("%s recs in Redis: %s (%v)", featurestore.UserKey(coldUser), b, err)
	})
	t.Logf("cold start from table %s: %s %v in %s; %s %v elsewhere", pop.Version, cold.Strategy, itemIDs(cold), cat, global.Strategy, itemIDs(global))

	slow.proc.stop(t)
	hp.stop(t)
}
