package hotpath

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"reflect"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/featurestore"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/wire"
)

// newTestProcessor returns a processor with one partition and a fixed clock.
func newTestProcessor(t *testing.T) (*processor, *partition) {
	t.Helper()
	cfg := DefaultConfig()
	p := newProcessor(&cfg, newMetrics(nil))
	p.now = func() time.Time { return time.UnixMilli(10_000_000_000) }
	part := newPartition(0, StoreMemory)
	p.parts[0] = part
	return p, part
}

const minute = int64(60_000)

// storeKinds are the state stores every store test runs on.
var storeKinds = []string{StoreMemory, StoreEncoded, StorePebble}

// testStore opens a store of kind for a test; a pebble store lives in a
// temporary directory and is closed when the test ends.
func testStore(tb testing.TB, kind string) Store {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.StateStore, cfg.StateDir = kind, tb.TempDir()
	s, err := openStore(&cfg, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	})
	return s
}

func rec(id, user string, typ event.Type, item int64, cat string, ts int64) *kgo.Record {
	c := event.Click{EventID: id, UserID: user, SessionID: "s", Type: typ, ItemID: item, Category: cat, TimestampMs: ts}
	return &kgo.Record{Topic: "user_events", Key: []byte(user), Value: c.AppendJSON(nil)}
}

// run processes one batch and returns its output records by topic.
func run(t *testing.T, p *processor, part *partition, recs ...*kgo.Record) map[string][]*kgo.Record {
	t.Helper()
	p.begin()
	for _, r := range recs {
		p.process(part, r)
	}
	out := p.finish()
	if p.scoreErr != nil {
		t.Fatal(p.scoreErr)
	}
	p.commit()
	return byTopic(out)
}

// byTopic groups output records by topic.
func byTopic(out []*kgo.Record) map[string][]*kgo.Record {
	m := map[string][]*kgo.Record{}
	for _, r := range out {
		m[r.Topic] = append(m[r.Topic], r)
	}
	return m
}

func TestWatermarkLatenessAndWindows(t *testing.T) {
	p, part := newTestProcessor(t)
	base := int64(9_000_000_000) // a minute boundary: 150,000 minutes
	out := run(t, p, part,
		rec("a", "u", event.View, 1, "c1", base),
		rec("b", "u", event.View, 2, "c1", base+10*minute), // watermark → base+5m: window [base, base+1m) fires
	)
	if len(out["recommendations"]) != 2 {
		t.Fatalf("%d recommendations, want 2 (both on time)", len(out["recommendations"]))
	}
	if part.wm != base+5*minute {
		t.Fatalf("watermark %d, want max event time − 5 min = %d", part.wm, base+5*minute)
	}
	wins := out["user_session_windows"]
	if len(wins) != 1 {
		t.Fatalf("windows %q, want 1", values(wins))
	}
	want := wire.Window{UserID: "u", WindowStartMs: base, WindowEndMs: base + minute, Events: 1, ByType: wire.TypeCounts{View: 1},
		ByCategory: wire.Categories{{Category: "c1", N: 1}}, SessionEvents: 2, SessionLengthMs: 10 * minute, Revision: 1}
	if w, err := wire.DecodeWindow(wins[0].Value); err != nil || !reflect.DeepEqual(w, want) {
		t.Fatalf("window %s (%v), want %+v", wins[0].Value, err, want)
	}

	// Late by 3 min, inside the allowed 5: state and its (fired) window update
	// and re-fire; no recommendation.
	out = run(t, p, part, rec("c", "u", event.Cart, 3, "c2", base+30_000))
	if len(out["recommendations"]) != 0 || len(out["user_events_late"]) != 0 {
		t.Fatalf("late-within-lateness event: %d recs, %d side outputs; want none", len(out["recommendations"]), len(out["user_events_late"]))
	}
	wins = out["user_session_windows"]
	if len(wins) != 1 {
		t.Fatalf("re-fired windows %q, want 1", values(wins))
	}
	want.Events, want.ByType.Cart, want.ByCategory = 2, 1, wire.Categories{{Category: "c1", N: 1}, {Category: "c2", N: 1}}
	want.SessionEvents, want.Revision = 3, 2
	if w, err := wire.DecodeWindow(wins[0].Value); err != nil || !reflect.DeepEqual(w, want) {
		t.Fatalf("re-fired window %s (%v), want %+v", wins[0].Value, err, want)
	}
	if u := part.users.Get("u"); u.seq != 3 || len(u.recent) != 3 || u.recent[1].item != 3 {
		t.Fatalf("state after a late event: seq %d, recent %+v; want the late item inserted in event-time order", u.seq, u.recent)
	}

	// Beyond the allowed lateness: to the side output unchanged, state untouched.
	tooLate := rec("d", "u", event.View, 4, "c1", base-1*minute)
	out = run(t, p, part, tooLate)
	if l := out["user_events_late"]; len(l) != 1 || string(l[0].Value) != string(tooLate.Value) {
		t.Fatalf("too-late event: side output %q", values(l))
	}
	if d, err := wire.DeadLetterOf(out["user_events_late"][0].Headers); err != nil || d.Reason != wire.ReasonTooLate || d.WatermarkMs != part.wm || !d.HasWatermark {
		t.Fatalf("too-late event: headers %+v (%v), want reason too_late and watermark %d", d, err, part.wm)
	}
	if len(out["recommendations"])+len(out["user_session_windows"])+len(out["hotpath-changelog"]) != 0 {
		t.Fatalf("too-late event changed something: %v", out)
	}
	if part.users.Get("u").seq != 3 {
		t.Fatal("too-late event reached the state")
	}
}

func TestSessionTTLExpiry(t *testing.T) {
	p, part := newTestProcessor(t)
	base := int64(9_000_000_000)
	run(t, p, part, rec("a", "old", event.View, 1, "c1", base))
	// Another user's clicks move the watermark past old's last event + 1 h.
	out := run(t, p, part, rec("b", "new", event.View, 1, "c1", base+66*minute))
	if part.users.Get("old") != nil {
		t.Fatal("user past the TTL is still in state")
	}
	var tomb bool
	for _, r := range out["hotpath-changelog"] {
		tomb = tomb || (string(r.Key) == "old" && r.Value == nil)
	}
	if !tomb || !p.effects["old"].expire {
		t.Fatalf("expiry wrote no changelog tombstone (%v) or no Redis delete (%v)", tomb, p.effects["old"].expire)
	}
}

func TestStateRoundTripAndSize(t *testing.T) {
	p, part := newTestProcessor(t)
	base := int64(9_000_000_000)
	var recs []*kgo.Record
	for i := range 25 {
		recs = append(recs, rec(fmt.Sprint(i), "u", event.Type(1+i%3), int64(100000+i), fmt.Sprintf("c%d", i%4), base+int64(i)*20_000))
	}
	out := run(t, p, part, recs...)
	u := part.users.Get("u")
	var last []byte
	for _, r := range out["hotpath-changelog"] {
		if string(r.Key) == "u" {
			last = r.Value
		}
	}
	got, err := decodeState("u", last)
	if err != nil {
		t.Fatal(err)
	}
	if got.seq != u.seq || len(got.recent) != 20 || got.recent[19] != u.recent[19] || got.lastTs != u.lastTs ||
		len(got.windows) != len(u.windows) || len(got.purchased) != len(u.purchased) || len(got.catTime) != len(u.catTime) {
		t.Fatalf("decoded state differs:\n got %+v\nwant %+v", got, u)
	}
	if _, err := decodeState("u", last[:len(last)-3]); err == nil {
		t.Fatal("truncated state decoded without error")
	}
	// The changelog value of a user with 20 recent events stays compact; the
	// last recommendation (here a fallback without items) is budgeted apart.
	session := len(last) - len(u.rec)
	t.Logf("changelog value of a user with 20 events, %d windows: %d bytes and %d of the last recommendation", len(u.windows), session, len(u.rec))
	if session > 512 {
		t.Fatalf("state without its last recommendation is %d bytes, budget 512", session)
	}
	var feat map[string]any
	if err := json.Unmarshal(u.appendFeatures(nil), &feat); err != nil {
		t.Fatalf("features are not JSON: %v", err)
	}
	var evs []map[string]any
	if err := json.Unmarshal(u.appendRecentJSON(nil), &evs); err != nil || len(evs) != 20 {
		t.Fatalf("recent events JSON: %v (%d)", err, len(evs))
	}
}

func values(rs []*kgo.Record) []string {
	var out []string
	for _, r := range rs {
		out = append(out, string(r.Value))
	}
	return out
}

// TestMemoryPerUser reports the heap held per user in state with 20 recent
// events, for each store, and the process's RSS
// (go test -run MemoryPerUser -v ./hotpath; CLICKREC_STATE_USERS=1000000 for
// a million users). It asserts only loose bounds; the figures are for the
// README.
func TestMemoryPerUser(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 100k users")
	}
	users := 100_000
	if v := os.Getenv("CLICKREC_STATE_USERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("CLICKREC_STATE_USERS=%q: want a positive number", v)
		}
		users = n
	}
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			cfg := DefaultConfig()
			var before, after runtime.MemStats
			debug.FreeOSMemory() // RSS from the previous subtest goes back to the OS
			runtime.ReadMemStats(&before)
			rssBefore := rssBytes()
			part := newPartitionWith(0, testStore(t, kind))
			base := int64(9_000_000_000)
			var c event.Click
			var buf []byte
			for i := range users {
				// Ids and categories as the event decoder makes them: fresh strings.
				c = event.Click{UserID: fmt.Sprintf("user-%07d", i), SessionID: "s", Type: event.View}
				u := &userState{id: c.UserID}
				part.users.Add(u)
				for j := range 20 {
					c.Category = fmt.Sprintf("c%d", (i+j)%40)
					c.ItemID, c.TimestampMs = int64(1_000_000+i*20+j), base+int64(j)*15_000
					u.apply(&c, &cfg)
				}
				u.dropClosedWindows(base + 20*15_000) // the windows a minute-old session no longer needs
				buf = u.appendBinary(buf[:0])
				part.users.Save(u, buf)
				part.users.Commit()
			}
			debug.FreeOSMemory()
			runtime.ReadMemStats(&after)
			per := float64(after.HeapAlloc-before.HeapAlloc) / float64(users)
			rss := float64(rssBytes()-rssBefore) / float64(users)
			disk := ""
			if ps, ok := part.users.(*pebbleStore); ok {
				disk = fmt.Sprintf(", on disk %.0f bytes per user", float64(ps.db.Metrics().DiskSpaceUsage())/float64(users))
			}
			t.Logf("%s store: heap per user with 20 recent events %.0f bytes, RSS growth per user %.0f bytes%s (%d users, encoded state %d bytes)",
				kind, per, rss, disk, users, len(buf))
			if per > 4096 {
				t.Fatalf("%.0f bytes per user", per)
			}
			if part.users.Len() != users {
				t.Fatalf("store holds %d users, want %d", part.users.Len(), users)
			}
			if u := part.users.Get("user-0000007"); u == nil || len(u.recent) != 20 || u.recent[19].item != 1_000_000+7*20+19 {
				t.Fatalf("user-0000007 reads back as %+v", u)
			}
			part.users.Commit()
			runtime.KeepAlive(part)
		})
	}
}

// rssBytes is the resident set size of this process (0 where /proc is missing).
func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// randomBatches returns 60 batches of 50 clicks of 40 users, some late, some
// too late, with a two-hour gap after batch 40 so that every user expires.
func randomBatches() [][]*kgo.Record {
	rng := rand.New(rand.NewPCG(1, 2))
	ts := int64(9_000_000_000)
	var batches [][]*kgo.Record
	for batch := range 60 {
		var recs []*kgo.Record
		for i := range 50 {
			ts += rng.Int64N(20_000)
			t := ts
			if rng.IntN(10) == 0 {
				t -= rng.Int64N(12 * minute) // some late, some too late
			}
			u := fmt.Sprintf("u%d", rng.IntN(40))
			recs = append(recs, rec(fmt.Sprintf("e%d-%d", batch, i), u, event.Type(1+rng.IntN(3)), int64(rng.IntN(300)), fmt.Sprintf("c%d", rng.IntN(6)), t))
		}
		if batch == 40 {
			ts += 2 * 60 * minute // everyone expires
		}
		batches = append(batches, recs)
	}
	return batches
}

// outputLines flattens a batch's outputs into comparable lines, in a fixed
// order (the changelog's users are written in map order).
func outputLines(out map[string][]*kgo.Record) []string {
	var all []string
	for _, topic := range slices.Sorted(maps.Keys(out)) {
		keys := make([]string, 0, len(out[topic]))
		for _, r := range out[topic] {
			keys = append(keys, topic+"|"+string(r.Key)+"|"+string(r.Value))
		}
		if topic == "hotpath-changelog" {
			slices.Sort(keys)
		}
		all = append(all, keys...)
	}
	return all
}

// stateLines is every user's encoded state, sorted.
func stateLines(s Store) []string {
	var all []string
	s.Range(func(u *userState) { all = append(all, u.id+"|"+string(u.appendBinary(nil))) })
	slices.Sort(all)
	return all
}

func newFixedProcessor(t *testing.T, kind string) (*processor, *partition) {
	cfg := DefaultConfig()
	p := newProcessor(&cfg, newMetrics(nil))
	p.now = func() time.Time { return time.UnixMilli(10_000_000_000) }
	part := newPartitionWith(0, testStore(t, kind))
	p.parts[0] = part
	return p, part
}

// TestStoresAgree runs the same clicks (late ones, expiries, many users)
// through a processor on each store: every output record must be identical.
func TestStoresAgree(t *testing.T) {
	outputs := map[string][]string{}
	for _, kind := range storeKinds {
		p, part := newFixedProcessor(t, kind)
		var all []string
		for _, recs := range randomBatches() {
			all = append(all, outputLines(run(t, p, part, recs...))...)
		}
		if part.users.Len() == 0 {
			t.Fatalf("%s: no users left at the end", kind)
		}
		outputs[kind] = all
	}
	a := outputs[StoreMemory]
	for _, kind := range storeKinds[1:] {
		b := outputs[kind]
		if len(a) != len(b) {
			t.Fatalf("memory store: %d output records, %s store: %d", len(a), kind, len(b))
		}
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("output %d differs:\nmemory %s\n%s %s", i, a[i], kind, b[i])
			}
		}
	}
}

// TestRollbackUndoesBatch: a batch whose transaction does not commit is
// undone (users it created, changed or expired, the watermark, the timers it
// fired) and read again. Every batch is processed, rolled back and processed
// again, on each store: the outputs and the state must be those of a
// processor that saw every batch once.
func TestRollbackUndoesBatch(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			ref, refPart := newFixedProcessor(t, kind)
			p, part := newFixedProcessor(t, kind)
			for i, recs := range randomBatches() {
				want := outputLines(run(t, ref, refPart, recs...))
				before, wm := stateLines(part.users), part.wm
				p.begin()
				for _, r := range recs {
					p.process(part, r)
				}
				aborted := outputLines(byTopic(p.finish()))
				p.rollback()
				if got := stateLines(part.users); !slices.Equal(got, before) || part.wm != wm {
					t.Fatalf("batch %d: after the rollback the state differs from the last commit (%d users, want %d; watermark %d, want %d)",
						i, len(got), len(before), part.wm, wm)
				}
				if part.users.Len() != len(stateLines(part.users)) {
					t.Fatalf("batch %d: Len %d after the rollback, Range gives %d", i, part.users.Len(), len(stateLines(part.users)))
				}
				got := outputLines(run(t, p, part, recs...))
				if !slices.Equal(got, want) || !slices.Equal(aborted, want) {
					t.Fatalf("batch %d: outputs differ after a rollback:\ngot  %q\nwant %q", i, got, want)
				}
			}
			if got, want := stateLines(part.users), stateLines(refPart.users); !slices.Equal(got, want) || len(got) == 0 {
				t.Fatalf("final state: %d users, want %d (equal: %v)", len(got), len(want), slices.Equal(got, want))
			}
		})
	}
}

// failingScorer fails every batch.
type failingScorer struct{}

func (failingScorer) Score([]model.Input, int, [][]model.Rec) error {
	return errors.New("injected scoring failure")
}
func (failingScorer) Close() error { return nil }

// TestScoringErrorServesFallback: a batch the model cannot score is not
// aborted and retried forever: its clicks get the popularity fallback, the
// error is counted, and the next batch scores again.
func TestScoringErrorServesFallback(t *testing.T) {
	p, part := newTestProcessor(t)
	m := randomModel(20, 4, 9)
	p.pop = &featurestore.Popularity{Global: []featurestore.Scored{{ItemID: 1005, Score: 1}, {ItemID: 1006, Score: 0.5}}}
	p.serving = &Serving{Version: "broken", Model: m, Scorer: failingScorer{}}
	ts := p.now().UnixMilli()
	p.begin()
	p.process(part, rec("e1", "u1", event.View, 1001, "c1", ts))
	p.process(part, rec("e2", "u2", event.View, 1002, "c1", ts))
	out := byTopic(p.finish())
	if p.scoreErr == nil || testutil.ToFloat64(p.m.scoreErrors) != 1 {
		t.Fatalf("scoreErr %v, counted %v: want the injected failure, counted once", p.scoreErr, testutil.ToFloat64(p.m.scoreErrors))
	}
	recs := out[string(p.cfg.Topics.Recs)]
	if len(recs) != 2 {
		t.Fatalf("%d recommendations for 2 clicks", len(recs))
	}
	for _, r := range recs {
		o := decodeRec(t, r)
		if o.Strategy != wire.StrategyGlobalPopular || len(o.Items) == 0 || o.Items[0].ItemID != 1005 {
			t.Fatalf("recommendation %s: strategy %s, items %v; want the global popular list", o.EventID, o.Strategy, o.Items)
		}
	}
	// The next batch, with a working scorer, uses the model again.
	p.serving = &Serving{Version: "ok", Model: m, Scorer: bruteScorer{m}}
	out = run(t, p, part, rec("e3", "u1", event.View, 1003, "c1", ts+1))
	if o := decodeRec(t, out[string(p.cfg.Topics.Recs)][0]); o.Strategy != wire.StrategyModel || p.scoreErr != nil {
		t.Fatalf("after recovery: strategy %s, scoreErr %v", o.Strategy, p.scoreErr)
	}
}

// TestDecodesOlderStates: a changelog written before born existed (state
// version 1), or before the input offset and the last recommendation
// (version 2), still restores, with what it lacks unknown (born 0, offset
// -1, no recommendation).
func TestDecodesOlderStates(t *testing.T) {
	p, part := newTestProcessor(t)
	ts := p.now().UnixMilli()
	run(t, p, part, rec("e1", "u1", event.View, 1001, "c1", ts), rec("e2", "u1", event.Cart, 1002, "c2", ts+1000))
	u := part.users.Get("u1")
	if u.born != ts || len(u.rec) == 0 {
		t.Fatalf("born %d, want the first event's time %d; last recommendation %q", u.born, ts, u.rec)
	}
	v3 := u.appendBinary(nil)
	// Version 2: version 3 without its tail (offset, last recommendation).
	tail := len(binary.AppendVarint(nil, u.offset)) + len(binary.AppendUvarint(nil, uint64(len(u.rec)))) + len(u.rec)
	v2 := append([]byte{2}, v3[1:len(v3)-tail]...)
	// Version 1: the version byte, seq, then what follows born in version 2.
	seqLen := len(binary.AppendUvarint(nil, u.seq))
	v1 := append([]byte{1}, v2[1:1+seqLen]...)
	v1 = append(v1, v2[1+seqLen+len(binary.AppendVarint(nil, u.born)):]...)
	want := *u
	want.offset, want.rec = -1, nil
	for _, c := range []struct {
		v    []byte
		born int64
	}{{v2, u.born}, {v1, 0}} {
		got, err := decodeState("u1", c.v)
		if err != nil {
			t.Fatalf("version %d: %v", c.v[0], err)
		}
		want.born = c.born
		if g, w := got.appendBinary(nil), want.appendBinary(nil); !bytes.Equal(g, w) {
			t.Fatalf("version %d decodes as %+v, want %+v", c.v[0], *got, want)
		}
	}
	if _, err := decodeState("u1", append([]byte{4}, v3[1:]...)); err == nil {
		t.Fatal("version 4 decoded: want an error")
	}
}
