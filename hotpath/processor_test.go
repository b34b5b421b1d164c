package hotpath

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/event"
)

// newTestProcessor returns a processor with one partition and a fixed clock.
func newTestProcessor(t *testing.T) (*processor, *partition) {
	t.Helper()
	cfg := DefaultConfig()
	p := newProcessor(&cfg, newMetrics(nil))
	p.now = func() time.Time { return time.UnixMilli(10_000_000_000) }
	part := newPartition(0)
	p.parts[0] = part
	return p, part
}

const minute = int64(60_000)

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
	out, err := p.finish()
	if err != nil {
		t.Fatal(err)
	}
	byTopic := map[string][]*kgo.Record{}
	for _, r := range out {
		byTopic[r.Topic] = append(byTopic[r.Topic], r)
	}
	return byTopic
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
	if len(wins) != 1 || !strings.Contains(string(wins[0].Value), fmt.Sprintf(`"window_start_ms":%d`, base)) ||
		!strings.Contains(string(wins[0].Value), `"revision":1`) {
		t.Fatalf("windows %q, want [base, base+1m) with revision 1", values(wins))
	}

	// Late by 3 min, inside the allowed 5: state and its (fired) window update
	// and re-fire; no recommendation.
	out = run(t, p, part, rec("c", "u", event.Cart, 3, "c2", base+30_000))
	if len(out["recommendations"]) != 0 || len(out["user_events_late"]) != 0 {
		t.Fatalf("late-within-lateness event: %d recs, %d side outputs; want none", len(out["recommendations"]), len(out["user_events_late"]))
	}
	wins = out["user_session_windows"]
	if len(wins) != 1 || !strings.Contains(string(wins[0].Value), `"revision":2`) || !strings.Contains(string(wins[0].Value), `"events":2`) {
		t.Fatalf("re-fired window %q, want revision 2 with 2 events", values(wins))
	}
	if u := part.users["u"]; u.seq != 3 || len(u.recent) != 3 || u.recent[1].item != 3 {
		t.Fatalf("state after a late event: seq %d, recent %+v; want the late item inserted in event-time order", u.seq, u.recent)
	}

	// Beyond the allowed lateness: to the side output unchanged, state untouched.
	tooLate := rec("d", "u", event.View, 4, "c1", base-1*minute)
	out = run(t, p, part, tooLate)
	if l := out["user_events_late"]; len(l) != 1 || string(l[0].Value) != string(tooLate.Value) {
		t.Fatalf("too-late event: side output %q", values(l))
	}
	if len(out["recommendations"])+len(out["user_session_windows"])+len(out["hotpath-changelog"]) != 0 {
		t.Fatalf("too-late event changed something: %v", out)
	}
	if part.users["u"].seq != 3 {
		t.Fatal("too-late event reached the state")
	}
}

func TestSessionTTLExpiry(t *testing.T) {
	p, part := newTestProcessor(t)
	base := int64(9_000_000_000)
	run(t, p, part, rec("a", "old", event.View, 1, "c1", base))
	// Another user's clicks move the watermark past old's last event + 1 h.
	out := run(t, p, part, rec("b", "new", event.View, 1, "c1", base+66*minute))
	if _, ok := part.users["old"]; ok {
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
	u := part.users["u"]
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
	// The changelog value of a user with 20 recent events stays compact.
	t.Logf("changelog value of a user with 20 events, %d windows: %d bytes", len(u.windows), len(last))
	if len(last) > 512 {
		t.Fatalf("state is %d bytes, budget 512", len(last))
	}
	var feat map[string]any
	if err := json.Unmarshal(u.appendFeatures(nil, part.wm), &feat); err != nil {
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
// events (go test -run MemoryPerUser -v ./hotpath). It asserts only a loose
// bound; the figure is for the README.
func TestMemoryPerUser(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 100k users")
	}
	const users = 100_000
	cfg := DefaultConfig()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	part := newPartition(0)
	base := int64(9_000_000_000)
	var c event.Click
	for i := range users {
		c = event.Click{UserID: fmt.Sprintf("user-%07d", i), SessionID: "s", Type: event.View, Category: "c12"}
		u := &userState{id: c.UserID}
		for j := range 20 {
			c.ItemID, c.TimestampMs = int64(1_000_000+i*20+j), base+int64(j)*15_000
			u.apply(&c, &cfg)
		}
		u.dropClosedWindows(base + 20*15_000) // the windows a minute-old session no longer needs
		part.users[u.id] = u
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / users
	t.Logf("heap per user with 20 recent events: %.0f bytes (%d users)", per, users)
	if per > 4096 {
		t.Fatalf("%.0f bytes per user", per)
	}
	runtime.KeepAlive(part)
}
