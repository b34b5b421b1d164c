package hotpath

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/featurestore"
	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/wire"
)

// The tests of this file prove the feature store's guarantee: after any
// fault, a user's Redis entry holds the last recommendation committed for
// them on the recommendations topic, their latest committed state, or a
// tombstone when the stream forgot them. Each injects one fault.

// newModelProcessor is newTestProcessor serving a model.
func newModelProcessor(t *testing.T) (*processor, *partition) {
	t.Helper()
	p, part := newTestProcessor(t)
	m := randomModel(50, 4, 7)
	p.serving = &Serving{Version: m.Version, Model: m, Scorer: bruteScorer{m}}
	return p, part
}

// batchEffects runs one committed batch and returns its recommendation
// records and a copy of its Redis effects.
func batchEffects(t *testing.T, p *processor, part *partition, recs ...*kgo.Record) ([]*kgo.Record, map[string]redisEffect) {
	t.Helper()
	out := run(t, p, part, recs...)
	return out["recommendations"], maps.Clone(p.effects)
}

// failPipelines makes the next n pipelines of a client fail before they reach
// Redis, as a timeout or a failover would.
type failPipelines struct{ n atomic.Int32 }

var errInjected = errors.New("injected Redis failure")

func (h *failPipelines) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *failPipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *failPipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.n.Add(-1) >= 0 {
			for _, c := range cmds {
				c.SetErr(errInjected)
			}
			return errInjected
		}
		return next(ctx, cmds)
	}
}

func testWriter(t *testing.T, rc *redis.Client) *redisWriter {
	return newRedisWriter(rc, time.Hour, newMetrics(nil), slog.Default())
}

// TestFailedWriteKeepsRecommendation: a write that fails is retried after a
// newer effect of the same user without a recommendation of its own (a late
// click) committed; the recommendation the failed write carried is still
// the one Redis ends up with, since it is the last the topic holds.
func TestFailedWriteKeepsRecommendation(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	defer rc.Close()
	fail := &failPipelines{}
	rc.AddHook(fail)
	ctx := testenv.Context(t, 20*time.Second)
	user := testenv.Name("failed-write")
	defer rc.Del(context.Background(), featurestore.UserKey(user))
	w := testWriter(t, rc)

	p, part := newModelProcessor(t)
	ts := p.now().UnixMilli()
	recs, effects := batchEffects(t, p, part, rec("e1", user, event.View, 1001, "c1", ts))
	if len(recs) != 1 {
		t.Fatalf("%d recommendations, want 1", len(recs))
	}
	fail.n.Store(1)
	w.enqueue(effects)
	if err := w.flush(ctx); !errors.Is(err, errInjected) {
		t.Fatalf("flush: %v, want the injected failure", err)
	}
	// A late click (behind the watermark, within the allowed lateness): no
	// recommendation, a newer state.
	late := ts - p.cfg.OutOfOrderness.Milliseconds() - 1000
	if r, e := batchEffects(t, p, part, rec("e2", user, event.View, 1002, "c1", late)); len(r) != 0 || e[user].seq != 2 {
		t.Fatalf("the late click: %d recommendations, effect seq %d; want 0 and 2", len(r), e[user].seq)
	} else {
		w.enqueue(e)
	}
	if err := w.flush(ctx); err != nil {
		t.Fatal(err)
	}
	f := rc.HGetAll(ctx, featurestore.UserKey(user)).Val()
	if f[featurestore.FieldSeq] != "2" || f[featurestore.FieldRecs] != string(recs[0].Value) {
		t.Fatalf("Redis holds seq %q, recs %q; want seq 2 and e1's recommendation %q", f[featurestore.FieldSeq], f[featurestore.FieldRecs], recs[0].Value)
	}
}

// TestLateClickKeepsBatchRecommendation: a batch with an on-time click and
// then a late one of the same user: the recommendation of the on-time click
// is the user's last on the topic, so it is the one for Redis.
func TestLateClickKeepsBatchRecommendation(t *testing.T) {
	p, part := newModelProcessor(t)
	ts := p.now().UnixMilli()
	run(t, p, part, rec("e0", "u", event.View, 1001, "c1", ts))
	late := ts - p.cfg.OutOfOrderness.Milliseconds() - 1000
	recs, effects := batchEffects(t, p, part, rec("e1", "u", event.View, 1002, "c1", ts+1000), rec("e2", "u", event.View, 1003, "c1", late))
	if len(recs) != 1 {
		t.Fatalf("%d recommendations, want 1 (e1's)", len(recs))
	}
	if e := effects["u"]; !bytes.Equal(e.recs, recs[0].Value) || e.rseq != 2 || e.seq != 3 {
		t.Fatalf("effect recs %q (click %d), seq %d; want e1's %q (click 2), seq 3", e.recs, e.rseq, e.seq, recs[0].Value)
	}
}

// TestLastRecommendationRoundTrip: the state's form of a recommendation gives
// its record's value back byte for byte.
func TestLastRecommendationRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	scores := []float32{0, 1, -1, 0.83, 1e-9, 3.4e38, float32(math.Inf(1)), float32(math.NaN()), math.SmallestNonzeroFloat32}
	var got wire.Recommendation
	for i := range 200 {
		in := wire.Recommendation{EventID: fmt.Sprintf("ev-%d-\"é", i), UserID: "u-1", Strategy: wire.StrategyModel,
			ModelVersion: "v20261207", EventTimeMs: r.Int64N(1 << 42), ProcessedAtMs: r.Int64N(1 << 42)}
		for j := range r.IntN(12) {
			s := r.Float32()*2 - 1
			if j < len(scores) && i%3 == 0 {
				s = scores[j]
			}
			in.Items = append(in.Items, wire.Item{ItemID: r.Int64N(1<<40) - 5, Score: s})
		}
		b := appendLastRec(nil, uint64(i), &in)
		seq, err := decodeLastRec(b, "u-1", &got)
		if err != nil || seq != uint64(i) {
			t.Fatalf("decode: seq %d, %v", seq, err)
		}
		if want, have := in.AppendJSON(nil), got.AppendJSON(nil); !bytes.Equal(want, have) {
			t.Fatalf("round trip:\n got %s\nwant %s", have, want)
		}
		if len(in.Items) == 10 {
			t.Logf("10 items: %d bytes in state, %d as JSON", len(b), len(in.AppendJSON(nil)))
		}
		if _, err := decodeLastRec(b[:len(b)-1], "u-1", &got); err == nil && len(b) > 0 {
			t.Fatal("a truncated recommendation decoded")
		}
	}
}

// TestRecencyFeature: recency_ms is the time since the user's previous event,
// null for a first event.
func TestRecencyFeature(t *testing.T) {
	p, part := newTestProcessor(t)
	ts := p.now().UnixMilli()
	for i, c := range []struct {
		ts   int64
		want string
	}{{ts, `"recency_ms":null`}, {ts + 1500, `"recency_ms":1500`}, {ts + 1600, `"recency_ms":100`}} {
		run(t, p, part, rec(fmt.Sprint(i), "u", event.View, 1001, "c1", c.ts))
		if f := p.effects["u"].features; !bytes.Contains(f, []byte(c.want)) {
			t.Fatalf("click %d: features %s, want %s", i, f, c.want)
		}
	}
}

// TestRedisTombstone: an expiry leaves a tombstone holding the expired
// incarnation's (born, seq): a former owner's delayed write of that
// incarnation does not bring the user back; the next incarnation replaces it.
func TestRedisTombstone(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	defer rc.Close()
	ctx := testenv.Context(t, 20*time.Second)
	user := testenv.Name("tombstone")
	key := featurestore.UserKey(user)
	defer rc.Del(context.Background(), key)
	w := testWriter(t, rc)
	apply := func(e redisEffect) {
		t.Helper()
		w.enqueue(map[string]redisEffect{user: e})
		if err := w.flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	write := func(born int64, seq uint64) redisEffect {
		return redisEffect{born: born, seq: seq, features: []byte(`{}`), events: []byte(`[]`), recs: []byte(fmt.Sprintf(`{"seq":%d}`, seq)), rseq: seq}
	}
	apply(write(100, 7))
	apply(redisEffect{expire: true, born: 100, seq: 7})
	for _, late := range []redisEffect{write(100, 7), write(100, 6), {expire: true, born: 100, seq: 7}} {
		apply(late)
		f := rc.HGetAll(ctx, key).Val()
		if len(f) != 3 || f[featurestore.FieldGone] != "1" || f[featurestore.FieldBorn] != "100" || f[featurestore.FieldSeq] != "7" {
			t.Fatalf("after the expiry and a delayed %+v, the entry is %v; want only the tombstone born 100 seq 7", late, f)
		}
		if ttl := rc.PTTL(ctx, key).Val(); ttl <= 0 {
			t.Fatalf("the tombstone has no TTL (%v)", ttl)
		}
	}
	apply(write(200, 1))
	f := rc.HGetAll(ctx, key).Val()
	if f[featurestore.FieldGone] != "" || f[featurestore.FieldBorn] != "200" || f[featurestore.FieldRecs] != `{"seq":1}` {
		t.Fatalf("the next incarnation's write left %v", f)
	}
}

// TestRecommendationPublishedOnce: a write Redis ran but whose reply was lost
// is run again (the writer requeues the batch), and so is a batch whose
// scripts Redis had forgotten (NOSCRIPT): subscribers get each
// recommendation once.
func TestRecommendationPublishedOnce(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	defer rc.Close()
	ctx := testenv.Context(t, 20*time.Second)
	user := testenv.Name("publish-once")
	defer rc.Del(context.Background(), featurestore.UserKey(user))
	sub := rc.Subscribe(ctx, featurestore.RecsChannel(user))
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	w := testWriter(t, rc)
	e := func(seq, rseq uint64) redisEffect {
		return redisEffect{born: 100, seq: seq, features: []byte(`{}`), events: []byte(`[]`), recs: []byte(fmt.Sprintf(`r%d`, rseq)), rseq: rseq}
	}
	for _, step := range []struct {
		e        redisEffect
		flushFst bool // SCRIPT FLUSH before it: the writer meets NOSCRIPT
	}{
		{e(5, 5), false},
		{e(5, 5), false}, // the same write again: a requeued batch Redis had run
		{e(5, 5), true},
		{e(6, 5), false}, // a newer state, the same last recommendation (a late click)
		{e(7, 7), true},
		{e(7, 7), false},
	} {
		if step.flushFst {
			if err := rc.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		w.enqueue(map[string]redisEffect{user: step.e})
		if err := w.flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := rc.Publish(ctx, featurestore.RecsChannel(user), "end").Err(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		m, err := sub.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		if m.Payload == "end" {
			break
		}
		got = append(got, m.Payload)
	}
	if fmt.Sprint(got) != "[r5 r7]" {
		t.Fatalf("published %v, want [r5 r7]: each recommendation once", got)
	}
}
