package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/wire"
)

// TestOnlineLearning is issue 19's scenario against the real broker with two
// workers: 300 shoppers, spread over every partition, click a known item A
// and then a brand-new item X, twice each. A new shopper who clicks A — one
// on every partition, so both workers — must get X in a model top-10 within
// 60 s of X's first click: what one worker's partitions taught reached the
// other through the item-knowledge topic. Every click is still answered
// exactly once.
func TestOnlineLearning(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two workers for about 20 s; run without -short")
	}
	const partitions = 4
	c := newCluster(t, partitions)
	dir := t.TempDir()
	m := randomModel(2000, 16, 5)
	m.Version = "frozen"
	if err := model.Save(dir, m, model.Metadata{}); err != nil {
		t.Fatal(err)
	}
	args := []string{"--model-dir", dir, "--scorer", "go"}
	w1, w2 := c.worker(t, "w1", args...), c.worker(t, "w2", args...)
	defer w1.stop(t)
	defer w2.stop(t)

	ctx := testenv.Context(t, 3*time.Minute)
	cl, err := kgo.NewClient(append(c.kcfg.Opts("e2e-learn"), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const a, x = int64(17), int64(9_000_001) // x: not in the model's 1..2000
	sent := map[string]bool{}
	send := func(user string, part int32, item int64, seq int) {
		t.Helper()
		ev := event.Click{EventID: fmt.Sprintf("%s-%d", user, seq), UserID: user, SessionID: user, Type: event.View,
			ItemID: item, Category: "c1", TimestampMs: time.Now().UnixMilli()}
		sent[ev.EventID] = true
		r := &kgo.Record{Topic: string(c.topics.Events), Partition: part, Key: []byte(user), Value: ev.AppendJSON(nil)}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// Before X exists: the workers are up once a probe on each partition is
	// answered (they joined, restored and read the item knowledge).
	for p := range int32(partitions) {
		send(fmt.Sprintf("warm-%d", p), p, a, 0)
	}
	waitRecords(t, ctx, c, string(c.topics.Recs), partitions)

	first := time.Now()
	for i := range 300 {
		u, p := fmt.Sprintf("shopper-%d", i), int32(i%partitions)
		for j, it := range []int64{a, x, a, x} {
			send(u, p, it, j)
		}
	}

	// Probe every partition every second: a new shopper clicks A.
	rd, err := kgo.NewClient(append(c.kcfg.Opts("e2e-learn-reader"), kgo.ConsumeTopics(string(c.topics.Recs)),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	learned := map[int32]time.Duration{} // partition → when its probe first got X
	probes := map[string]int32{}
	for round := 0; len(learned) < partitions; round++ {
		if time.Since(first) > 60*time.Second {
			t.Fatalf("60 s after X's first click only partitions %v recommend it to a shopper who clicks A", learned)
		}
		for p := range int32(partitions) {
			if _, ok := learned[p]; !ok {
				u := fmt.Sprintf("probe-%d-%d", p, round)
				probes[u] = p
				send(u, p, a, 0)
			}
		}
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			pctx, cancel := context.WithDeadline(ctx, deadline)
			fs := rd.PollFetches(pctx)
			cancel()
			fs.EachRecord(func(r *kgo.Record) {
				p, ok := probes[string(r.Key)]
				if !ok {
					return
				}
				out, err := wire.DecodeRecommendation(r.Value)
				if err != nil {
					t.Fatal(err)
				}
				var ids []int64
				for _, it := range out.Items {
					ids = append(ids, it.ItemID)
				}
				if _, done := learned[p]; !done && out.Strategy == wire.StrategyModel && slices.Contains(ids, x) {
					learned[p] = time.Since(first)
					t.Logf("partition %d: X in the model top-10 of %s %v after its first click (%v)", p, r.Key, learned[p].Round(time.Millisecond), ids)
				}
			})
		}
	}

	// Exactly once: every click has one recommendation.
	waitFor(t, ctx, func() bool { return len(c.readAll(t, string(c.topics.Recs))) >= len(sent) })
	w1.stop(t)
	w2.stop(t)
	missing, dup, distinct := c.verdict(t, &countingSink{ids: sent})
	if missing != 0 || dup != 0 || distinct != len(sent) {
		t.Fatalf("%d clicks: %d missing, %d duplicated, %d distinct recommendations", len(sent), missing, dup, distinct)
	}
}
