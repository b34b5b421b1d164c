package hotpath

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/model"
)

// BenchmarkProcess measures the hot path's per-event work outside Kafka: decode,
// state update, window bookkeeping, model input, scoring (pure Go, 1k items),
// output and changelog encoding, in batches of 100 events over 1,000 users.
func BenchmarkProcess(b *testing.B) {
	for _, kind := range storeKinds {
		b.Run("store="+kind, func(b *testing.B) { benchmarkProcess(b, kind) })
	}
}

func benchmarkProcess(b *testing.B, store string) {
	cfg := DefaultConfig()
	p := newProcessor(&cfg, newMetrics(nil))
	m := randomModel(1000, 32, 7)
	sc, err := model.NewScorer(m)
	if err != nil {
		b.Fatal(err)
	}
	p.serving = &Serving{Version: "bench", Model: m, Scorer: sc}
	p.parts[0] = newPartitionWith(0, testStore(b, store))
	base := time.Now().Add(-time.Hour).UnixMilli()
	recs := make([]*kgo.Record, 10_000)
	for i := range recs {
		u := fmt.Sprintf("u%d", i%1000)
		c := event.Click{EventID: fmt.Sprintf("e%d", i), UserID: u, SessionID: "s" + u, Type: event.Type(1 + i%3), ItemID: int64(1000 + (i*7)%1000), Category: "c1", Price: 1, TimestampMs: base + int64(i)*10}
		recs[i] = &kgo.Record{Key: []byte(u), Value: c.AppendJSON(nil), Timestamp: time.Now()}
	}
	const batch = 100
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if i%batch == 0 {
			p.begin()
		}
		p.process(p.parts[0], recs[i%len(recs)])
		i++
		if i%batch == 0 {
			if p.finish(); p.scoreErr != nil {
				b.Fatal(p.scoreErr)
			}
		}
	}
}
