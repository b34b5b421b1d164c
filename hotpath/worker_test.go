package hotpath

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/featurestore"
	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/wire"
)

// bruteScorer is a reference scorer for tests: u = Σ w P[item]; score = u·Y + prior.
type bruteScorer struct{ m *model.Model }

func (s bruteScorer) Score(batch []model.Input, k int, out [][]model.Rec) error {
	K := s.m.K
	for b, in := range batch {
		u := make([]float32, K)
		for j, it := range in.Items {
			for d := range K {
				u[d] += in.Weights[j] * s.m.Projection[int(it)*K+d]
			}
		}
		var all []model.Rec
		for i := range s.m.NumItems() {
			skip := false
			for _, e := range in.Exclude {
				skip = skip || int(e) == i
			}
			if skip {
				continue
			}
			sc := s.m.Prior[i]
			for d := range K {
				sc += u[d] * s.m.Factors[i*K+d]
			}
			all = append(all, model.Rec{Index: int32(i), Score: sc})
		}
		sort.SliceStable(all, func(a, c int) bool { return all[a].Score > all[c].Score })
		out[b] = append(out[b][:0], all[:min(k, len(all))]...)
	}
	return nil
}
func (bruteScorer) Close() error { return nil }

func randomModel(n, k int, seed uint64) *model.Model {
	r := rand.New(rand.NewPCG(seed, 1))
	m := &model.Model{Version: "test-v1", K: k, Weighting: model.DefaultWeighting}
	for i := range n {
		m.ItemIDs = append(m.ItemIDs, int64(1000+i))
		m.Prior = append(m.Prior, r.Float32()*0.1)
		for range k {
			m.Factors = append(m.Factors, r.Float32()-0.5)
			m.Projection = append(m.Projection, r.Float32()-0.5)
		}
	}
	return m
}

type harness struct {
	t      *testing.T
	kcfg   kafkautil.Config
	cfg    Config
	topics kafkautil.Topics
	cl     *kgo.Client
	emb    *kafkautil.Embedded // nil against a real broker
}

func newHarness(t *testing.T, brokers []string, partitions int) *harness {
	t.Helper()
	kcfg := kafkautil.Config{Brokers: brokers, Partitions: partitions, ReplicationFactor: 1, DialTimeout: 10 * time.Second}
	var emb *kafkautil.Embedded
	if len(brokers) == 0 {
		e, err := kafkautil.StartEmbedded(&kcfg, kafkautil.DefaultTopics)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Close)
		emb = e
	}
	p := testenv.Name("hp")
	topics, err := kafkautil.PrefixedTopics(p + "-")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kcfg.Opts("hotpath-test")...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	if err := kafkautil.EnsureTopics(testenv.Context(t, 30*time.Second), &kcfg, cl, topics); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Group = p + "-group"
	cfg.Topics = topics
	cfg.TxnTimeout = 5 * time.Second
	cfg.SessionTimeout = 6 * time.Second
	cfg.StateDir = t.TempDir() // the test's own model cache and item-knowledge snapshots
	return &harness{t: t, kcfg: kcfg, cfg: cfg, topics: topics, cl: cl, emb: emb}
}

// startWorker runs a worker until the returned stop function is called.
func (h *harness) startWorker(instance string, m *model.Model) (stop func()) {
	return h.startWorkerWith(instance, m, Options{})
}

func (h *harness) startWorkerWith(instance string, m *model.Model, opts Options) (stop func()) {
	h.t.Helper()
	cfg := h.cfg
	cfg.InstanceID = instance
	w, err := New(cfg, h.kcfg, opts)
	if err != nil {
		h.t.Fatal(err)
	}
	if m != nil {
		w.SetServing(&Serving{Version: m.Version, Model: m, Scorer: bruteScorer{m}})
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := w.Run(ctx); err != nil {
			h.t.Errorf("worker %s: %v", instance, err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	h.t.Cleanup(stop)
	return stop
}

func (h *harness) produce(recs ...*kgo.Record) {
	h.t.Helper()
	for _, r := range recs {
		if r.Topic == "" {
			r.Topic = string(h.topics.Events)
		}
	}
	if err := h.cl.ProduceSync(testenv.Context(h.t, 20*time.Second), recs...).FirstErr(); err != nil {
		h.t.Fatal(err)
	}
}

// readUntil consumes topic read_committed until done returns true for what was read.
func (h *harness) readUntil(topic kafkautil.Stream, timeout time.Duration, done func([]*kgo.Record) bool) []*kgo.Record {
	h.t.Helper()
	cl, err := kgo.NewClient(append(h.kcfg.Opts("hotpath-test-reader"),
		kgo.ConsumeTopics(string(topic)), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))...)
	if err != nil {
		h.t.Fatal(err)
	}
	defer cl.Close()
	ctx := testenv.Context(h.t, timeout)
	var got []*kgo.Record
	for !done(got) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			// The workers run in this process: their stacks say where they are stuck.
			var stacks strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			h.t.Logf("goroutines at the timeout:\n%s", stacks.String())
			if h.emb != nil {
				for _, pi := range h.emb.PartitionInfos(string(topic)) {
					h.t.Logf("embedded %s[%d]: %+v", topic, pi.Partition, *pi)
				}
			}
			h.t.Fatalf("reading %s: got %d records before timeout", topic, len(got))
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, r) })
	}
	return got
}

func click(id, user string, typ event.Type, item int64, cat string, ts int64) *kgo.Record {
	c := event.Click{EventID: id, UserID: user, SessionID: "s-" + user, Type: typ, ItemID: item, Category: cat, Price: 1, TimestampMs: ts}
	return &kgo.Record{Key: []byte(user), Value: c.AppendJSON(nil)}
}

func TestWorkerOutputs(t *testing.T) {
	h := newHarness(t, nil, 2)
	m := randomModel(50, 8, 1)
	h.startWorker("w1", m)

	base := time.Now().Add(-time.Hour).UnixMilli()
	minute := int64(60_000)
	h.produce(
		click("e1", "alice", event.View, 1001, "c1", base),
		click("e2", "alice", event.Cart, 1002, "c1", base+1000),
		click("e3", "bob", event.View, 99999, "c2", base+2000),       // unknown item: popularity
		click("e4", "alice", event.View, 1003, "c1", base+10*minute), // advances alice's partition watermark to base+5min
		click("e5", "alice", event.View, 1004, "c1", base+3*minute),  // late (behind the watermark), within lateness
		click("e6", "alice", event.View, 1005, "c1", base-1*minute),  // too late: before watermark − 5 min
		&kgo.Record{Key: []byte("carol"), Value: []byte(`{"event_id":"bad1","user_id":"carol","event_type":"like","item_id":1,"timestamp_ms":1}`)},
		&kgo.Record{Key: []byte("carol"), Value: []byte(`not json`)},
	)
	recs := h.readUntil(h.topics.Recs, 30*time.Second, func(r []*kgo.Record) bool { return len(r) >= 4 })
	byEvent := map[string]wire.Recommendation{}
	for _, r := range recs {
		o := decodeRec(t, r)
		if _, dup := byEvent[o.EventID]; dup {
			t.Fatalf("two recommendations for %s", o.EventID)
		}
		if string(r.Key) != o.UserID {
			t.Fatalf("recommendation keyed %q for user %q", r.Key, o.UserID)
		}
		byEvent[o.EventID] = o
	}
	for _, id := range []string{"e1", "e2", "e3", "e4"} {
		if _, ok := byEvent[id]; !ok {
			t.Fatalf("no recommendation for on-time event %s; got %v", id, byEvent)
		}
	}
	for _, id := range []string{"e5", "e6"} {
		if _, ok := byEvent[id]; ok {
			t.Fatalf("late event %s got a recommendation", id)
		}
	}
	if o := byEvent["e2"]; o.Strategy != wire.StrategyModel || len(o.Items) != 10 || o.ModelVersion != "test-v1" {
		t.Fatalf("e2: %+v, want 10 model items of test-v1", o)
	}
	for _, it := range byEvent["e2"].Items {
		if it.ItemID == 1002 {
			t.Fatal("recommended the item being carted")
		}
	}
	if o := byEvent["e3"]; o.Strategy != wire.StrategyGlobalPopular || len(o.Items) != 10 {
		t.Fatalf("e3 (unknown item, no history): %+v, want 10 popular items", o)
	}
	late := h.readUntil(h.topics.Late, 10*time.Second, func(r []*kgo.Record) bool { return len(r) >= 1 })
	if len(late) != 1 || !strings.Contains(string(late[0].Value), `"e6"`) {
		t.Fatalf("late topic: %d records, want e6 only", len(late))
	}
	if d, err := wire.DeadLetterOf(late[0].Headers); err != nil || d.Reason != wire.ReasonTooLate || !d.HasWatermark || d.Source.Topic != string(h.topics.Events) {
		t.Fatalf("late record headers: %+v (%v)", d, err)
	}
	dlq := h.readUntil(h.topics.DLQ, 10*time.Second, func(r []*kgo.Record) bool { return len(r) >= 2 })
	reasons := map[string]bool{}
	for _, r := range dlq {
		d, err := wire.DeadLetterOf(r.Headers)
		if err != nil {
			t.Fatal(err)
		}
		reasons[d.Reason] = true
	}
	if !reasons[string(event.ReasonUnknownType)] || !reasons[string(event.ReasonMalformedJSON)] {
		t.Fatalf("DLQ reasons %v, want unknown_event_type and malformed_json", reasons)
	}
	// alice's window [base, base+1m) is past the watermark: it fired, and the late
	// event e5 falls in a later window that the watermark has passed too.
	wins := h.readUntil(h.topics.Windows, 10*time.Second, func(r []*kgo.Record) bool { return len(r) >= 1 })
	if w, err := wire.DecodeWindow(wins[0].Value); err != nil || w.UserID != "alice" {
		t.Fatalf("first window result %s: %v", wins[0].Value, err)
	}
}

// TestWorkerRestartExactlyOnce stops and restarts workers while events flow and
// checks that every event got exactly one recommendation.
func TestWorkerRestartExactlyOnce(t *testing.T) {
	t.Run("embedded", func(t *testing.T) { restartExactlyOnce(t, nil, StoreMemory) })
	t.Run("embedded-encoded-store", func(t *testing.T) { restartExactlyOnce(t, nil, StoreEncoded) })
	t.Run("embedded-pebble-store", func(t *testing.T) { restartExactlyOnce(t, nil, StorePebble) })
	t.Run("kafka", func(t *testing.T) { restartExactlyOnce(t, testenv.KafkaBrokers(t), StoreMemory) })
}

func restartExactlyOnce(t *testing.T, brokers []string, store string) {
	h := newHarness(t, brokers, 4)
	h.cfg.StateStore, h.cfg.StateDir = store, t.TempDir()
	m := randomModel(200, 8, 2)
	const n = 600
	base := time.Now().Add(-time.Minute).UnixMilli()
	var all []*kgo.Record
	for i := range n {
		u := fmt.Sprintf("u%d", i%37)
		all = append(all, click(fmt.Sprintf("ev%d", i), u, event.View, int64(1000+i%200), "c1", base+int64(i)))
	}
	stop1 := h.startWorker("a", m)
	h.produce(all[:200]...)
	h.readUntil(h.topics.Recs, 30*time.Second, func(r []*kgo.Record) bool { return len(r) >= 50 })
	stop1()
	stop2 := h.startWorker("b", m)
	h.produce(all[200:400]...)
	h.startWorker("a", m)
	h.produce(all[400:]...)
	recs := h.readUntil(h.topics.Recs, 60*time.Second, func(r []*kgo.Record) bool { return len(r) >= n })
	stop2()
	seen := map[string]int{}
	for _, r := range recs {
		o := decodeRec(t, r)
		seen[o.EventID]++
	}
	for i := range n {
		if c := seen[fmt.Sprintf("ev%d", i)]; c != 1 {
			t.Fatalf("event ev%d has %d recommendations, want 1", i, c)
		}
	}
	if len(recs) != n {
		t.Fatalf("%d recommendations for %d events", len(recs), n)
	}
}

// TestFeatureStore checks that committed state reaches Redis: recent events,
// features and the latest recommendation per user.
func TestFeatureStore(t *testing.T) {
	addr := testenv.RedisAddr(t)
	rc := redis.NewClient(&redis.Options{Addr: addr})
	defer rc.Close()
	h := newHarness(t, nil, 2)
	m := randomModel(30, 4, 3)
	h.startWorkerWith("w1", m, Options{Redis: rc})
	user := testenv.Name("fs-user")
	base := time.Now().Add(-time.Minute).UnixMilli()
	ctx := testenv.Context(t, 20*time.Second)
	defer rc.Del(context.Background(), featurestore.UserKey(user))
	// The feature store publishes each user's new recommendations after writing them.
	sub := rc.Subscribe(ctx, "recs:"+user)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	h.produce(click("f1", user, event.View, 1001, "c1", base), click("f2", user, event.Cart, 1002, "c2", base+5000))
	for {
		msg, err := sub.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("no recommendation for f2 published: %v", err)
		}
		if strings.Contains(msg.Payload, `"event_id":"f2"`) {
			break
		}
	}
	fields, err := rc.HGetAll(ctx, featurestore.UserKey(user)).Result()
	if err != nil {
		t.Fatal(err)
	}
	if fields["seq"] != "2" {
		t.Fatalf("seq %q, want 2", fields["seq"])
	}
	var events []map[string]any
	if err := json.Unmarshal([]byte(fields["events"]), &events); err != nil || len(events) != 2 {
		t.Fatalf("events field %q: %v", fields["events"], err)
	}
	if rec, err := wire.DecodeRecommendation([]byte(fields["recs"])); err != nil || rec.EventID != "f2" {
		t.Fatalf("recs field holds %q (%v), want the recommendation for f2", fields["recs"], err)
	}
	var feat map[string]any
	if err := json.Unmarshal([]byte(fields["features"]), &feat); err != nil {
		t.Fatal(err)
	}
	// recency_ms: how long before f2 the shopper's previous event (f1) was.
	if feat["session_events"].(float64) != 2 || feat["session_length_ms"].(float64) != 5000 || feat["recency_ms"] != 5000.0 {
		t.Fatalf("features %v", feat)
	}
	if ttl := rc.PTTL(ctx, featurestore.UserKey(user)).Val(); ttl <= 0 {
		t.Fatalf("user entry has no TTL (%v)", ttl)
	}
}

// TestWorkerAtLeastOnce runs the comparison mode (--exactly-once=false): with
// graceful stops nothing is lost, and outputs carry the same content as in
// exactly-once mode.
func TestWorkerAtLeastOnce(t *testing.T) {
	h := newHarness(t, nil, 2)
	h.cfg.AtLeastOnce = true
	m := randomModel(100, 8, 3)
	const n = 300
	base := time.Now().Add(-time.Minute).UnixMilli()
	var all []*kgo.Record
	for i := range n {
		all = append(all, click(fmt.Sprintf("ev%d", i), fmt.Sprintf("u%d", i%17), event.View, int64(1000+i%100), "c1", base+int64(i)))
	}
	stop := h.startWorker("a", m)
	h.produce(all[:150]...)
	h.readUntil(h.topics.Recs, 30*time.Second, func(r []*kgo.Record) bool { return len(r) >= 150 })
	stop()
	h.startWorker("a", m)
	h.produce(all[150:]...)
	recs := h.readUntil(h.topics.Recs, 30*time.Second, func(r []*kgo.Record) bool { return len(r) >= n })
	seen := map[string]int{}
	for _, r := range recs {
		o := decodeRec(t, r)
		if o.Strategy != wire.StrategyModel || len(o.Items) != 10 {
			t.Fatalf("%s: %+v, want 10 model items", o.EventID, o)
		}
		seen[o.EventID]++
	}
	for i := range n {
		if seen[fmt.Sprintf("ev%d", i)] == 0 {
			t.Fatalf("event ev%d has no recommendation", i)
		}
	}
}

// TestAtLeastOnceReplayAppliesOnce: in at-least-once mode a batch whose
// outputs and changelog were flushed but whose offsets did not commit is read
// again by a new session over the restored state. Its clicks are answered
// again (duplicates that mode allows) but counted once: each user's state
// ends at one seq per click.
func TestAtLeastOnceReplayAppliesOnce(t *testing.T) {
	h := newHarness(t, nil, 2)
	h.cfg.AtLeastOnce = true
	var failed atomic.Bool
	testHookCommitOffsets = func() error {
		if failed.CompareAndSwap(false, true) {
			return errors.New("injected offset commit failure")
		}
		return nil
	}
	t.Cleanup(func() { testHookCommitOffsets = nil })
	m := randomModel(100, 8, 3)
	const n, users = 200, 13
	base := time.Now().Add(-time.Minute).UnixMilli()
	var all []*kgo.Record
	perUser := map[string]uint64{}
	for i := range n {
		u := fmt.Sprintf("u%d", i%users)
		perUser[u]++
		all = append(all, click(fmt.Sprintf("ev%d", i), u, event.View, int64(1000+i%100), "c1", base+int64(i)))
	}
	h.startWorker("a", m)
	h.produce(all...)
	seen := map[string]bool{}
	read := 0
	h.readUntil(h.topics.Recs, 30*time.Second, func(r []*kgo.Record) bool {
		for ; read < len(r); read++ { // duplicates allowed: count event ids
			seen[decodeRec(t, r[read]).EventID] = true
		}
		return len(seen) == n
	})
	if !failed.Load() {
		t.Fatal("the offset commit never failed: the test proved nothing")
	}
	// Every offset committed: the replay is over, its changelog flushed.
	adm := kadm.NewClient(h.cl)
	ctx := testenv.Context(t, 30*time.Second)
	for {
		ends, err := adm.ListEndOffsets(ctx, string(h.topics.Events))
		if err != nil {
			t.Fatal(err)
		}
		committed, err := adm.FetchOffsets(ctx, h.cfg.Group)
		if err != nil {
			t.Fatal(err)
		}
		done := true
		ends.Each(func(e kadm.ListedOffset) {
			c, ok := committed.Lookup(e.Topic, e.Partition)
			done = done && ok && c.At == e.Offset
		})
		if done {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the worker never committed every offset")
		case <-time.After(20 * time.Millisecond):
		}
	}
	final := map[string]uint64{}
	cends, err := adm.ListEndOffsets(ctx, string(h.topics.Changelog))
	if err != nil {
		t.Fatal(err)
	}
	changelogEnd := 0
	cends.Each(func(e kadm.ListedOffset) { changelogEnd += int(e.Offset) }) // no transactions: one offset a record
	h.readUntil(kafkautil.Stream(h.topics.Changelog), 30*time.Second, func(r []*kgo.Record) bool {
		clear(final)
		for _, rec := range r {
			if s, ok, err := DecodeChangelog(rec.Key, rec.Value); err == nil && ok {
				final[s.User] = s.Seq
			}
		}
		return len(r) >= changelogEnd
	})
	for u, want := range perUser {
		if final[u] != want {
			t.Fatalf("user %s: state at seq %d after %d clicks (more: the replayed batch was applied twice)", u, final[u], want)
		}
	}
}

// TestDuplicateInstanceIDIsFatal runs two workers with the same instance id:
// they fence each other's transactions at once (well within the transaction
// timeout), which is a deployment error, and one of them stops saying so.
func TestDuplicateInstanceIDIsFatal(t *testing.T) {
	h := newHarness(t, testenv.KafkaBrokers(t), 2)
	m := randomModel(50, 4, 5)
	base := time.Now().Add(-time.Minute).UnixMilli()
	errs := make(chan error, 2)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for range 2 {
		cfg := h.cfg
		cfg.InstanceID = "same"
		w, err := New(cfg, h.kcfg, Options{})
		if err != nil {
			t.Fatal(err)
		}
		w.SetServing(&Serving{Version: m.Version, Model: m, Scorer: bruteScorer{m}})
		wg.Add(1)
		go func() { defer wg.Done(); errs <- w.Run(ctx) }()
	}
	deadline := time.After(60 * time.Second)
	for i := 0; ; i++ {
		h.produce(click(fmt.Sprintf("d%d", i), fmt.Sprintf("u%d", i%5), event.View, 1001, "c1", base+int64(i)))
		select {
		case err := <-errs:
			if err == nil || !strings.Contains(err.Error(), "is --instance-id unique?") {
				t.Fatalf("a worker with a duplicated instance id stopped with %v; want the fencing error naming --instance-id", err)
			}
			return
		case <-deadline:
			t.Fatal("two workers with one instance id ran side by side for 60 s")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestJoinBeforeSessionSetup lets the group assign partitions before the
// session has finished setting up (the client joins in the background as soon
// as it exists; under CPU pressure the join can win). Every event must still
// get its recommendation: a session that skipped records it had no state for
// committed their offsets and lost them.
func TestJoinBeforeSessionSetup(t *testing.T) {
	h := newHarness(t, nil, 4)
	testHookSessionClient = func(w *Worker) {
		deadline := time.Now().Add(10 * time.Second)
		for !w.joined.Load() && time.Now().Before(deadline) {
			runtime.Gosched()
		}
	}
	t.Cleanup(func() { testHookSessionClient = nil })
	const n = 100
	var all []*kgo.Record
	base := time.Now().Add(-time.Minute).UnixMilli()
	for i := range n {
		all = append(all, click(fmt.Sprintf("ev%d", i), fmt.Sprintf("u%d", i%13), event.View, int64(1000+i%50), "c1", base+int64(i)))
	}
	h.produce(all...)
	h.startWorker("a", randomModel(50, 8, 3))
	recs := h.readUntil(h.topics.Recs, 30*time.Second, func(r []*kgo.Record) bool { return len(r) >= n })
	if len(recs) != n {
		t.Fatalf("%d recommendations for %d events", len(recs), n)
	}
}

// TestRestoreWaitsForOpenTransactions restores state while another producer
// holds a transaction open on the changelog, and commits that transaction
// right after the restore listed the changelog's offsets: the restore must
// include it. (The broker writes a transaction's markers partition by
// partition; a restore that stopped at the last stable offset listed before
// the changelog's marker lost the state of a transaction whose input offsets
// were already committed.) The open transaction deletes a user's state, so
// the user's next click is a cold start if, and only if, it was restored.
func TestRestoreWaitsForOpenTransactions(t *testing.T) {
	t.Run("embedded", func(t *testing.T) { restoreWaitsForOpenTransactions(t, nil) })
	t.Run("kafka", func(t *testing.T) { restoreWaitsForOpenTransactions(t, testenv.KafkaBrokers(t)) })
}

func restoreWaitsForOpenTransactions(t *testing.T, brokers []string) {
	h := newHarness(t, brokers, 1)
	m := randomModel(50, 8, 4)
	base := time.Now().Add(-time.Minute).UnixMilli()
	stop := h.startWorker("a", m)
	h.produce(click("e1", "zed", event.View, 1001, "c1", base), click("e2", "zed", event.View, 1002, "c1", base+1))
	recs := h.readUntil(h.topics.Recs, 30*time.Second, func(r []*kgo.Record) bool { return len(r) >= 2 })
	if o := decodeRec(t, recs[1]); o.Strategy != wire.StrategyModel {
		t.Fatalf("e2 with history: strategy %q, want %q", o.Strategy, wire.StrategyModel)
	}
	stop()

	other, err := kgo.NewClient(append(h.kcfg.Opts("other-producer"), kgo.TransactionalID(h.cfg.Group+"-other"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx := testenv.Context(t, 30*time.Second)
	if err := other.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	tombstone := &kgo.Record{Topic: string(h.topics.Changelog), Partition: 0, Key: []byte("zed")}
	if err := other.ProduceSync(ctx, tombstone).FirstErr(); err != nil {
		t.Fatal(err)
	}
	committed := make(chan error, 1)
	testHookRestoreListed = func() {
		testHookRestoreListed = nil
		committed <- other.EndTransaction(ctx, kgo.TryCommit)
	}
	t.Cleanup(func() { testHookRestoreListed = nil })
	h.startWorker("b", m)
	h.produce(click("e3", "zed", event.View, 99999, "c1", base+2)) // an item the model does not know: only history makes it "model"
	recs = h.readUntil(h.topics.Recs, 30*time.Second, func(r []*kgo.Record) bool { return len(r) >= 3 })
	if err := <-committed; err != nil {
		t.Fatalf("committing the other transaction: %v", err)
	}
	if o := decodeRec(t, recs[2]); o.EventID != "e3" || o.Strategy == wire.StrategyModel {
		t.Fatalf("%s: strategy %q; the restore missed the transaction that deleted zed's state", o.EventID, o.Strategy)
	}
}

func decodeRec(t *testing.T, r *kgo.Record) wire.Recommendation {
	t.Helper()
	o, err := wire.DecodeRecommendation(r.Value)
	if err != nil {
		t.Fatalf("unreadable recommendation: %v", err)
	}
	return o
}

// countingScorer counts its Close calls.
type countingScorer struct {
	bruteScorer
	closed *int
}

func (s countingScorer) Close() error { *s.closed++; return nil }

// TestSwapClosesReplacedScorers: every replaced scorer is closed exactly once,
// including one replaced before the loop ever took it; the one in use is not.
func TestSwapClosesReplacedScorers(t *testing.T) {
	m := randomModel(10, 4, 1)
	closed := map[string]*int{}
	serving := func(v string) *Serving {
		closed[v] = new(int)
		return &Serving{Version: v, Model: m, Scorer: countingScorer{bruteScorer{m}, closed[v]}}
	}
	var sw swapper
	a, b, c := serving("a"), serving("b"), serving("c")
	sw.set(a)
	if got := sw.take(); got != a {
		t.Fatalf("took %v, want a", got.Version)
	}
	if got := sw.take(); got != a || *closed["a"] != 0 {
		t.Fatalf("taking again: %v, a closed %d times", got.Version, *closed["a"])
	}
	sw.set(b) // replaced before the loop took it
	sw.set(c)
	if *closed["b"] != 1 || *closed["a"] != 0 {
		t.Fatalf("after two swaps within a batch: b closed %d times (want 1), a %d (want 0: in use)", *closed["b"], *closed["a"])
	}
	if got := sw.take(); got != c || *closed["a"] != 1 || *closed["c"] != 0 {
		t.Fatalf("took %v; a closed %d times (want 1), c %d (want 0)", got.Version, *closed["a"], *closed["c"])
	}
	sw.set(c) // the same serving again changes nothing
	if got := sw.take(); got != c || *closed["c"] != 0 {
		t.Fatalf("setting the serving in use again closed it")
	}
}

// TestCleanStopHandsPartitionsOver: a worker stopped cleanly leaves the group
// (its static membership removed by instance id), so the other worker answers
// its partitions' clicks long before the session timeout would have moved them.
func TestCleanStopHandsPartitionsOver(t *testing.T) {
	t.Run("embedded", func(t *testing.T) { cleanStopHandsOver(t, nil) })
	t.Run("kafka", func(t *testing.T) { cleanStopHandsOver(t, testenv.KafkaBrokers(t)) })
}

func cleanStopHandsOver(t *testing.T, brokers []string) {
	h := newHarness(t, brokers, 4)
	// Without leaving, the stopped worker's partitions would wait this long.
	h.cfg.SessionTimeout = 45 * time.Second
	m := randomModel(50, 8, 3)
	base := time.Now().Add(-time.Minute).UnixMilli()
	batch := func(from, n int) []*kgo.Record { return viewClicks(from, n, 41, 50, base) }
	stopA := h.startWorker("a", m)
	h.startWorker("b", m)
	h.produce(batch(0, 200)...)
	h.readUntil(h.topics.Recs, 60*time.Second, func(r []*kgo.Record) bool { return len(r) >= 200 })
	stopA()
	h.produce(batch(200, 200)...)
	// Well inside the 45 s session timeout: only a hand-over gets here.
	recs := h.readUntil(h.topics.Recs, 20*time.Second, func(r []*kgo.Record) bool { return len(r) >= 400 })
	checkOncePerEvent(t, recs, 400)
}

// TestLagFromCommittedOffsets: the lag gauge follows the group's committed
// offsets even when no worker fetches anything (a stuck or absent worker).
func TestLagFromCommittedOffsets(t *testing.T) {
	h := newHarness(t, nil, 4)
	w, err := New(h.cfg, h.kcfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	for i := range 40 {
		recs = append(recs, click(fmt.Sprintf("ev%d", i), fmt.Sprintf("u%d", i), event.View, 1000, "c1", 1))
	}
	h.produce(recs...)
	adm := kadm.NewClient(h.cl)
	ctx := testenv.Context(t, 20*time.Second)
	total := func() float64 {
		if err := w.updateLag(ctx, adm); err != nil {
			t.Fatal(err)
		}
		sum := 0.0
		for p := range 4 {
			sum += testutil.ToFloat64(w.m.lag.WithLabelValues(strconv.Itoa(p)))
		}
		return sum
	}
	if got := total(); got != 40 {
		t.Fatalf("lag %v with nothing committed, want 40", got)
	}
	// Commit partition 0 to its end: its lag goes to 0, the others stay.
	ends, err := adm.ListEndOffsets(ctx, string(h.topics.Events))
	if err != nil {
		t.Fatal(err)
	}
	end0, _ := ends.Lookup(string(h.topics.Events), 0)
	var offs kadm.Offsets
	offs.Add(kadm.Offset{Topic: string(h.topics.Events), Partition: 0, At: end0.Offset})
	if _, err := adm.CommitOffsets(ctx, h.cfg.Group, offs); err != nil {
		t.Fatal(err)
	}
	if got := total(); got != float64(40-end0.Offset) {
		t.Fatalf("lag %v after committing partition 0 (%d records), want %d", got, end0.Offset, 40-end0.Offset)
	}
}

// TestStoreFailureRebuildsState: a Pebble commit that fails (a full disk,
// injected) neither panics nor publishes what the batch computed: the batch
// is aborted, a new session rebuilds the state from the changelog, and every
// click is still answered exactly once.
func TestStoreFailureRebuildsState(t *testing.T) {
	h := newHarness(t, nil, 2)
	h.cfg.StateStore, h.cfg.StateDir = StorePebble, t.TempDir()
	var armed, fired atomic.Bool
	testHookPebbleCommit = func() error {
		if armed.CompareAndSwap(true, false) {
			fired.Store(true)
			return errors.New("injected: no space left on device")
		}
		return nil
	}
	t.Cleanup(func() { testHookPebbleCommit = func() error { return nil } })
	m := randomModel(50, 8, 4)
	base := time.Now().Add(-time.Minute).UnixMilli()
	batch := func(from, n int) []*kgo.Record { return viewClicks(from, n, 13, 50, base) }
	h.startWorker("a", m)
	h.produce(batch(0, 100)...)
	h.readUntil(h.topics.Recs, 30*time.Second, func(r []*kgo.Record) bool { return len(r) >= 100 })
	armed.Store(true)
	h.produce(batch(100, 100)...)
	recs := h.readUntil(h.topics.Recs, 60*time.Second, func(r []*kgo.Record) bool { return len(r) >= 200 })
	if !fired.Load() {
		t.Fatal("the injected store failure never happened")
	}
	checkOncePerEvent(t, recs, 200)
}

// TestFailedRestoreLosesNothing: a restore that fails while the poll holds
// records must not skip them (the next commit would include their offsets):
// the worker starts a new session from the committed offsets and answers
// every click exactly once. The same in at-least-once mode.
func TestFailedRestoreLosesNothing(t *testing.T) {
	for _, atLeastOnce := range []bool{false, true} {
		t.Run(fmt.Sprintf("at-least-once=%v", atLeastOnce), func(t *testing.T) {
			h := newHarness(t, nil, 2)
			h.cfg.AtLeastOnce = atLeastOnce
			var fired atomic.Bool
			testHookSync = func(records int) error {
				if records > 0 && fired.CompareAndSwap(false, true) {
					return errors.New("injected restore failure")
				}
				return nil
			}
			t.Cleanup(func() { testHookSync = nil })
			var recs []*kgo.Record
			base := time.Now().Add(-time.Minute).UnixMilli()
			for i := range 100 {
				recs = append(recs, click(fmt.Sprintf("ev%d", i), fmt.Sprintf("u%d", i%7), event.View, 1000+int64(i%20), "c1", base+int64(i)))
			}
			h.produce(recs[:50]...)
			h.startWorker("a", randomModel(20, 4, 5))
			h.produce(recs[50:]...)
			got := h.readUntil(h.topics.Recs, 30*time.Second, func(r []*kgo.Record) bool { return len(r) >= 100 })
			if !fired.Load() {
				t.Fatal("the injected failure never happened")
			}
			checkOncePerEvent(t, got, 100)
		})
	}
}

// viewClicks returns n view clicks with event ids ev<from>…, of users
// u0…u<users-1> and items 1000…, at event times base+i ms.
func viewClicks(from, n, users, items int, base int64) []*kgo.Record {
	var out []*kgo.Record
	for i := from; i < from+n; i++ {
		out = append(out, click(fmt.Sprintf("ev%d", i), fmt.Sprintf("u%d", i%users), event.View, int64(1000+i%items), "c1", base+int64(i)))
	}
	return out
}

// checkOncePerEvent fails unless events ev0…ev<n-1> each have exactly one
// recommendation in recs.
func checkOncePerEvent(t *testing.T, recs []*kgo.Record, n int) {
	t.Helper()
	seen := map[string]int{}
	for _, r := range recs {
		o := decodeRec(t, r)
		seen[o.EventID]++
	}
	for i := range n {
		if c := seen[fmt.Sprintf("ev%d", i)]; c != 1 {
			t.Fatalf("event ev%d has %d recommendations, want 1", i, c)
		}
	}
}

// failProduceOnce makes the embedded broker fail the worker's next
// produce request to the recommendations topic once armed: every partition of it answers with a
// non-retriable error, so the worker's transaction cannot commit.
func failProduceOnce(h *harness, armed, fired *atomic.Bool) {
	recs := h.emb.TopicInfo(string(h.topics.Recs))
	if recs == nil {
		h.t.Fatalf("no topic %s", h.topics.Recs)
	}
	h.emb.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		r := req.(*kmsg.ProduceRequest)
		toRecs := slices.ContainsFunc(r.Topics, func(t kmsg.ProduceRequestTopic) bool {
			return t.Topic == recs.Topic || t.TopicID == recs.TopicID // names up to v12, ids from v13
		})
		if !toRecs || !armed.Load() || !fired.CompareAndSwap(false, true) {
			return nil, nil, false
		}
		h.emb.DropControl()
		resp := r.ResponseKind().(*kmsg.ProduceResponse)
		resp.Version = r.Version
		for _, t := range r.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, p := range t.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, kerr.InvalidRecord.Code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil, true
	})
}

// TestAbortUndoesOnlyTheBatch: a transaction that does not commit (here a
// produce the broker rejects) undoes what its batch changed and reads the
// batch again, without restoring the partitions from the changelog; every
// click is answered once and every user's state counts each of its clicks
// once. In at-least-once mode the abort rewinds through a new session, and
// nothing is lost.
func TestAbortUndoesOnlyTheBatch(t *testing.T) {
	for _, atLeastOnce := range []bool{false, true} {
		t.Run(fmt.Sprintf("at-least-once=%v", atLeastOnce), func(t *testing.T) {
			h := newHarness(t, nil, 2)
			h.cfg.AtLeastOnce = atLeastOnce
			var armed, fired atomic.Bool
			failProduceOnce(h, &armed, &fired)
			reg := prometheus.NewRegistry()
			const users = 13
			base := time.Now().Add(-time.Minute).UnixMilli()
			h.startWorkerWith("a", randomModel(50, 8, 4), Options{Registry: reg})
			h.produce(viewClicks(0, 100, users, 50, base)...)
			h.readUntil(h.topics.Recs, 30*time.Second, func(r []*kgo.Record) bool { return len(r) >= 100 })
			restores := histogramCount(t, reg, "recsys_hotpath_restore_seconds")
			armed.Store(true)
			h.produce(viewClicks(100, 100, users, 50, base)...)
			recs := h.readUntil(h.topics.Recs, 60*time.Second, func(r []*kgo.Record) bool { return len(r) >= 200 })
			if !fired.Load() {
				t.Fatal("the injected produce failure never happened")
			}
			if atLeastOnce {
				seen := map[string]bool{}
				for _, r := range recs {
					seen[decodeRec(t, r).EventID] = true
				}
				if len(seen) != 200 {
					t.Fatalf("%d of 200 clicks answered", len(seen))
				}
				return
			}
			checkOncePerEvent(t, recs, 200)
			if got := histogramCount(t, reg, "recsys_hotpath_restore_seconds"); got != restores {
				t.Fatalf("%d restores after the abort, %d before: the abort should undo the batch, not restore", got, restores)
			}
			// Each user's newest changelog record counts its 200/13 clicks once.
			want := map[string]uint64{}
			for i := range 200 {
				want[fmt.Sprintf("u%d", i%users)]++
			}
			last := map[string]uint64{}
			h.readUntil(kafkautil.Stream(h.topics.Changelog), 30*time.Second, func(rs []*kgo.Record) bool {
				for _, r := range rs {
					if s, ok, err := DecodeChangelog(r.Key, r.Value); err == nil && ok {
						last[s.User] = s.Seq
					}
				}
				for u, n := range want {
					if last[u] < n {
						return false
					}
				}
				return true
			})
			for u, n := range want {
				if last[u] != n {
					t.Fatalf("user %s: state counts %d clicks, want %d", u, last[u], n)
				}
			}
		})
	}
}

// histogramCount is the sample count of histogram name in reg.
func histogramCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestRedisOrdersIncarnations: Redis writes and expiries act only if their
// (born, seq) is not older than the stored entry's, so a user forgotten after
// the session TTL who comes back (born later, seq from 1) is neither blocked
// by the old entry nor deleted by the old incarnation's expiry.
func TestRedisOrdersIncarnations(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	defer rc.Close()
	ctx := testenv.Context(t, 20*time.Second)
	user := testenv.Name("incarnation")
	defer rc.Del(context.Background(), featurestore.UserKey(user))
	w := newRedisWriter(rc, time.Hour, newMetrics(nil), slog.Default())
	apply := func(e redisEffect) {
		t.Helper()
		w.enqueue(map[string]redisEffect{user: e})
		if err := w.flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	stored := func() string {
		t.Helper()
		f, err := rc.HMGet(ctx, featurestore.UserKey(user), "born", "seq").Result()
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%v/%v", f[0], f[1])
	}
	write := func(born int64, seq uint64) redisEffect {
		return redisEffect{born: born, seq: seq, features: []byte(`{}`), events: []byte(`[]`)}
	}
	for _, step := range []struct {
		what string
		e    redisEffect
		want string // born/seq stored after it
	}{
		{"first write", write(100, 5), "100/5"},
		{"an older write of the same incarnation is ignored", write(100, 4), "100/5"},
		{"a replayed write is idempotent", write(100, 5), "100/5"},
		{"an older incarnation's write is ignored", write(50, 9), "100/5"},
		{"an older incarnation's expiry does not delete", redisEffect{expire: true, born: 50, seq: 9}, "100/5"},
		{"the user comes back: a later incarnation writes from seq 1", write(200, 1), "200/1"},
		{"the expiry of the incarnation before does not delete it", redisEffect{expire: true, born: 100, seq: 5}, "200/1"},
		{"its own expiry leaves a tombstone (TestRedisTombstone)", redisEffect{expire: true, born: 200, seq: 1}, "200/1"},
	} {
		apply(step.e)
		if got := stored(); got != step.want {
			t.Fatalf("%s: stored born+seq %q, want %q", step.what, got, step.want)
		}
	}
}

// TestRestoreRewritesRedis: what a worker committed but never wrote to Redis
// (it crashed, say) is written by whoever restores the partitions next: the
// state and the last recommendation.
func TestRestoreRewritesRedis(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	defer rc.Close()
	h := newHarness(t, nil, 2)
	const users = 9
	prefix := testenv.Name("rw")
	want := map[string]string{}
	var recs []*kgo.Record
	base := time.Now().Add(-time.Minute).UnixMilli()
	for i := range 40 {
		u := fmt.Sprintf("%s-u%d", prefix, i%users)
		recs = append(recs, click(fmt.Sprintf("ev%d", i), u, event.View, int64(1000+i%7), "c1", base+int64(i)))
		want[u] = strconv.Itoa(i/users + 1)
	}
	t.Cleanup(func() {
		for u := range want {
			rc.Del(context.Background(), featurestore.UserKey(u))
		}
	})
	ctx := testenv.Context(t, 30*time.Second)
	lastRec := map[string]string{} // the last recommendation on the topic, by user
	// waitFor polls Redis until every user has its final seq and last
	// recommendation.
	waitFor := func(what string) {
		t.Helper()
		for {
			ok := true
			for u, seq := range want {
				f, _ := rc.HMGet(ctx, featurestore.UserKey(u), featurestore.FieldSeq, featurestore.FieldRecs).Result()
				if len(f) != 2 || f[0] != seq || f[1] != lastRec[u] {
					ok = false
				}
			}
			if ok {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s: Redis never held every user's state", what)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	m := randomModel(20, 4, 3)
	stop := h.startWorkerWith("w1", m, Options{Redis: rc})
	h.produce(recs...)
	for _, r := range h.readUntil(h.topics.Recs, 30*time.Second, func(r []*kgo.Record) bool { return len(r) >= len(recs) }) {
		lastRec[string(r.Key)] = string(r.Value) // a user's records are in offset order
	}
	waitFor("first owner")
	stop()
	// The writes are lost, as if the worker had crashed before making them.
	for u := range want {
		rc.Del(ctx, featurestore.UserKey(u))
	}
	h.startWorkerWith("w2", m, Options{Redis: rc})
	waitFor("after the restore")
}
