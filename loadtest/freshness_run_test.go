package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/wire"
)

// learner answers every valid click with one model recommendation, which
// lists the items outside the catalogue it has seen clicked twice, except
// the one it ignores: a stand-in for a hot path that learns new items.
func learner(ctx context.Context, t *testing.T, kcfg kafkautil.Config, topics kafkautil.Topics, group string, catalogue, ignore int64) {
	cl, err := standInClient(kcfg, topics, group, "learner")
	if err != nil {
		t.Error(err)
		return
	}
	defer cl.Close()
	clicks := map[int64]int{}
	var learned []wire.Item
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		var out []*kgo.Record
		fs.EachRecord(func(r *kgo.Record) {
			var c event.Click
			if event.DecodeInto(&c, r.Value, time.Now(), event.DefaultLimits) != nil || c.CheckKey(r.Key) != nil {
				return
			}
			if c.ItemID > catalogue && c.ItemID != ignore {
				if clicks[c.ItemID]++; clicks[c.ItemID] == 2 {
					learned = append(learned, wire.Item{ItemID: c.ItemID, Score: 0.5})
				}
			}
			rec := wire.Recommendation{EventID: c.EventID, UserID: c.UserID, Strategy: wire.StrategyModel,
				Items: append([]wire.Item{{ItemID: 1, Score: 1}}, learned...)}
			out = append(out, &kgo.Record{Topic: string(topics.Recs), Key: r.Key, Value: rec.AppendJSON(nil)})
		})
		if err := cl.ProduceSync(ctx, out...).FirstErr(); err != nil && ctx.Err() == nil {
			t.Error(err)
			return
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil && ctx.Err() == nil {
			t.Error(err)
			return
		}
	}
}

// TestFreshnessOnEmbeddedBroker runs a load test with new items against
// the learner: the items it learns are reported with their delays, the one
// it ignores as never recommended, which fails --sla-max-freshness.
func TestFreshnessOnEmbeddedBroker(t *testing.T) {
	t.Parallel()
	kcfg, topics := embedded(t, "lt-fresh-", 2)
	cfg := testConfig(t, kcfg)
	cfg.SpawnWorkers, cfg.TopicPrefix, cfg.Group = 0, "lt-fresh-", "lt-fresh-group"
	cfg.Rate, cfg.Duration = 500, 6*time.Second
	cfg.NewItems, cfg.SLA.MaxFreshness = 3, time.Minute
	ignore := int64(cfg.Shop.Items) + 3
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { learner(ctx, t, kcfg, topics, cfg.Group, int64(cfg.Shop.Items), ignore) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	var out bytes.Buffer
	jsonPath := filepath.Join(cfg.OutDir, "fresh.json")
	err := Execute(testenv.Context(t, 90*time.Second), cfg, jsonPath, testLogger(t), &out)
	t.Log(out.String())
	if !errors.Is(err, ErrSLA) || cli.ExitCode(err) != 1 {
		t.Fatalf("Execute = %v (exit code %d), want an SLA breach with exit code 1", err, cli.ExitCode(err))
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	f := r.Freshness
	if f == nil || f.NewItems != 3 || f.Introduced != 3 || f.Clicked != 3 || f.Seen != 2 || f.NeverSeen != 1 || f.P95Ms == nil {
		t.Fatalf("freshness %+v: want 3 new items clicked, 2 recommended, 1 never", f)
	}
	for _, it := range f.Items[:2] {
		if it.DelayMs == nil || *it.DelayMs <= 0 || *it.FirstRecS < *it.FirstClickS || *it.FirstClickS < it.IntroducedS || it.Strategy != "model" {
			t.Errorf("item %+v: want a positive delay after its first click, after its introduction", it)
		}
	}
	if f.Items[2].ItemID != ignore || f.Items[2].FirstRecS != nil {
		t.Errorf("ignored item: %+v", f.Items[2])
	}
	if r.SLA.Thresholds.MaxFreshnessMs == nil || len(r.SLA.Breaches) != 1 || !strings.Contains(r.SLA.Breaches[0], "never appeared in a model recommendation") {
		t.Fatalf("verdict %+v: want the one breach of the item never recommended", r.SLA)
	}
	if !strings.Contains(out.String(), "freshness ....... 3 new items launched, 3 clicked: 2 recommended") {
		t.Error("the summary has no freshness line")
	}
}
