package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/wire"
)

// TestBadInputFromKcat sends malformed records with a third-party client (kcat)
// and checks that every one lands in the dead-letter topic with its reason,
// nothing else is produced for them, and a valid click after them still gets
// its recommendation: bad input neither crashes nor blocks a partition.
func TestBadInputFromKcat(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		testenv.Missing(t, "kcat", "apt-get install kcat (scripts/deps.sh installs it)")
	}
	c := newCluster(t, 2)
	w := c.worker(t, "w1", "--scorer", "go")
	defer w.stop(t)

	now := time.Now().UnixMilli()
	huge := `{"event_id":"big","user_id":"u1","event_type":"view","item_id":1,"timestamp_ms":1,"pad":"` + strings.Repeat("x", 20000) + `"}`
	bad := []struct {
		key, value string
		reason     event.Reason
	}{
		{"u1", `{"event_id":"b1","user_id":"u1","event_type":"view","item_id":1`, event.ReasonMalformedJSON},
		{"u1", `{"event_id":"b2","user_id":"u1","event_type":"view","item_id":"one","timestamp_ms":1}`, event.ReasonWrongType},
		{"u1", huge, event.ReasonOversize},
		{"u1", `{"event_id":"b4","user_id":"u1","event_type":"wishlist","item_id":1,"timestamp_ms":1}`, event.ReasonUnknownType},
		{"u1", `{"event_id":"b5","event_type":"view","item_id":1,"timestamp_ms":1}`, event.ReasonMissingField},
		{"u2", `{"event_id":"b6","user_id":"u1","event_type":"view","item_id":1,"timestamp_ms":1}`, event.ReasonKeyMismatch},
		{"u1", `{"event_id":"b7","user_id":"u1","event_type":"view","item_id":1,"timestamp_ms":` + itoa(now+3_600_000) + `}`, event.ReasonFutureTime},
	}
	var in bytes.Buffer
	for _, b := range bad {
		in.WriteString(b.key + "\t" + b.value + "\n")
	}
	good := event.Click{EventID: "good-1", UserID: "u1", Type: event.View, ItemID: 7, Category: "c1", TimestampMs: now}
	in.WriteString("u1\t" + string(good.AppendJSON(nil)) + "\n")
	cmd := exec.Command(kcat, "-P", "-b", strings.Join(c.brokers, ","), "-t", string(c.topics.Events), "-K", "\t", "-X", "message.max.bytes=1000000")
	cmd.Stdin = &in
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat: %v\n%s", err, out)
	}

	ctx := testenv.Context(t, 60*time.Second)
	recs := waitRecords(t, ctx, c, string(c.topics.Recs), 1)
	if rec, err := wire.DecodeRecommendation(recs[0].Value); err != nil || rec.EventID != "good-1" {
		t.Fatalf("recommendation %s, want one for good-1 only", recs[0].Value)
	}
	dlq := waitRecords(t, ctx, c, string(c.topics.DLQ), len(bad))
	w.stop(t)
	if got := c.readAll(t, string(c.topics.Recs)); len(got) != 1 {
		t.Fatalf("%d recommendations, want exactly 1 (for the valid click)", len(got))
	}
	if got := c.readAll(t, string(c.topics.DLQ)); len(got) != len(bad) {
		t.Fatalf("%d dead letters for %d bad records", len(got), len(bad))
	}
	// Dead letters of different keys may sit in different partitions: match
	// each to what was sent by its unchanged key and value.
	want := map[string]event.Reason{}
	for _, b := range bad {
		want[b.key+"\t"+b.value] = b.reason
	}
	for i, r := range dlq {
		dl, err := wire.DeadLetterOf(r.Headers)
		if err != nil {
			t.Errorf("dead letter %d: %v", i, err)
			continue
		}
		reason, ok := want[string(r.Key)+"\t"+string(r.Value)]
		if !ok {
			t.Errorf("dead letter %d does not carry an original key and value: %.80q", i, r.Value)
			continue
		}
		delete(want, string(r.Key)+"\t"+string(r.Value))
		if dl.Reason != string(reason) {
			t.Errorf("dead letter %d: reason %q (%s), want %q", i, dl.Reason, dl.Detail, reason)
		}
		if dl.Source.Topic != string(c.topics.Events) {
			t.Errorf("record %d: source header %q", i, dl.Source)
		}
	}
	for _, topic := range []string{string(c.topics.Late), string(c.topics.Windows)} {
		if got := c.readAll(t, topic); len(got) != 0 {
			t.Errorf("%s has %d records; bad input must not reach it", topic, len(got))
		}
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// waitRecords reads topic read_committed from the start until n records arrived.
func waitRecords(t *testing.T, ctx context.Context, c *cluster, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append(c.kcfg.Opts("e2e-wait"), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s: %d of %d records before the deadline", topic, len(out), n)
		}
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}
