package hotpath

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/itemknow"
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

// BenchmarkLearn is BenchmarkProcess (memory store) without and with online
// item knowledge: learn=on adds building each click's increment, the
// batch's item-knowledge records, applying them to the table (what the
// worker's reader does, for this worker's clicks) and blending the model's
// top 20 with the table's candidates.
func BenchmarkLearn(b *testing.B) {
	for _, learn := range []bool{false, true} {
		b.Run(fmt.Sprintf("learn=%v", learn), func(b *testing.B) { benchmarkProcessWith(b, StoreMemory, learn, true) })
	}
}

func benchmarkProcess(b *testing.B, store string) { benchmarkProcessWith(b, store, false, false) }

// benchmarkProcessWith: with newItems, one click in ten is on one of 200
// items the model does not know.
func benchmarkProcessWith(b *testing.B, store string, learn, newItems bool) {
	cfg := DefaultConfig()
	cfg.Learn = learn
	p := newProcessor(&cfg, newMetrics(nil))
	if learn {
		p.ik = itemknow.NewGlobal(itemknow.GlobalConfig{Table: cfg.Knowledge})
	}
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
		item := int64(1000 + (i*7)%1000)
		if newItems && i%10 == 0 {
			item = int64(5000 + i%200) // items the model does not know (new items), clicked by several users
		}
		c := event.Click{EventID: fmt.Sprintf("e%d", i), UserID: u, SessionID: "s" + u, Type: event.Type(1 + i%3), ItemID: item, Category: "c1", Price: 1, TimestampMs: base + int64(i)*10}
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
			out := p.finish()
			if p.scoreErr != nil {
				b.Fatal(p.scoreErr)
			}
			p.commit()
			for _, r := range out {
				if r.Topic == string(cfg.Topics.Knowledge) {
					if err := p.ik.ApplyRecord(r.Value); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
	}
}

// BenchmarkAbort compares what a transaction that does not commit costs the
// worker, at 100k and 1M users per partition: before, it forgot every
// partition's state and restored it from the changelog (restore: the store
// filled from the users' changelog values and the timers rebuilt; reading the
// changelog from Kafka comes on top); now it undoes what its batch touched
// (batch+rollback, beside batch+commit for a batch that commits). A batch is
// 100 clicks of users who exist already, each with 10 recent events.
func BenchmarkAbort(b *testing.B) {
	for _, users := range []int{100_000, 1_000_000} {
		values := changelogValues(users, 10)
		for _, kind := range []string{StoreMemory, StorePebble} {
			name := fmt.Sprintf("store=%s/users=%dk", kind, users/1000)
			b.Run(name+"/restore", func(b *testing.B) {
				cfg := DefaultConfig()
				cfg.StateStore, cfg.StateDir = kind, b.TempDir()
				b.ReportAllocs()
				for b.Loop() {
					st, err := openStore(&cfg, 0)
					if err != nil {
						b.Fatal(err)
					}
					part := newPartitionWith(0, st)
					for i, v := range values {
						if err := part.restoreRecord(&cfg, []byte(userID(i)), v); err != nil {
							b.Fatal(err)
						}
					}
					part.restored(&cfg, false)
					if part.users.Len() != users {
						b.Fatalf("%d users restored", part.users.Len())
					}
					b.StopTimer()
					if err := part.users.Close(); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
			})
			for _, commit := range []bool{true, false} {
				end := "batch+rollback"
				if commit {
					end = "batch+commit"
				}
				b.Run(name+"/"+end, func(b *testing.B) {
					cfg := DefaultConfig()
					p := newProcessor(&cfg, newMetrics(nil))
					part := newPartitionWith(0, testStore(b, kind))
					for i, v := range values {
						if err := part.restoreRecord(&cfg, []byte(userID(i)), v); err != nil {
							b.Fatal(err)
						}
					}
					part.restored(&cfg, false)
					p.parts[0] = part
					base := int64(9_000_000_000) + 10*15_000
					recs := make([]*kgo.Record, 100)
					n := 0
					b.ReportAllocs()
					for b.Loop() {
						for i := range recs { // new records: the clicks of a batch read again are new records too
							u := userID((n*7919 + i*104729) % users)
							c := event.Click{EventID: fmt.Sprintf("e%d", n*100+i), UserID: u, SessionID: "s", Type: event.View, ItemID: int64(n), Category: "c1", TimestampMs: base + int64(n)}
							recs[i] = &kgo.Record{Key: []byte(u), Value: c.AppendJSON(nil), Timestamp: time.Now()}
						}
						n++
						p.begin()
						for _, r := range recs {
							p.process(part, r)
						}
						p.finish()
						if commit {
							p.commit()
						} else {
							p.rollback()
						}
					}
					if err := part.users.Err(); err != nil {
						b.Fatal(err)
					}
				})
			}
		}
	}
}

func userID(i int) string { return fmt.Sprintf("user-%07d", i) }

// changelogValues returns the changelog values of n users with events
// recent events each, in a minute-old session.
func changelogValues(n, events int) [][]byte {
	cfg := DefaultConfig()
	base := int64(9_000_000_000)
	out := make([][]byte, n)
	var c event.Click
	for i := range n {
		c = event.Click{UserID: userID(i), SessionID: "s", Type: event.View}
		u := &userState{id: c.UserID}
		for j := range events {
			c.Category = fmt.Sprintf("c%d", (i+j)%40)
			c.ItemID, c.TimestampMs = int64(1_000_000+i*events+j), base+int64(j)*15_000
			u.apply(&c, &cfg)
		}
		u.dropClosedWindows(base + int64(events)*15_000)
		out[i] = u.appendBinary(nil)
	}
	return out
}
