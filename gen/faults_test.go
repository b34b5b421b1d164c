package gen

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/clickrec/clickrec/event"
)

// checkRecords asserts the contract of every record against the consumer's
// decoder: valid ones decode to exactly their Click with the key accepted, late
// ones lie 1–9 minutes back, invalid ones are rejected with their Reason. It
// returns the number of records by kind.
func checkRecords(t *testing.T, src Source, n int, step time.Duration) map[string]int {
	t.Helper()
	kinds := map[string]int{}
	var lateWithin5 int
	each(src, n, step, func(i int, r *Record, now time.Time) {
		kinds[r.Kind]++
		c, err := event.Decode(r.Value, now, event.DefaultLimits)
		if r.Valid {
			if err != nil {
				t.Fatalf("record %d (%s) rejected: %v\n%s", i, r.Kind, err, r.Value)
			}
			if err := c.CheckKey(r.Key); err != nil {
				t.Fatalf("record %d (%s): %v", i, r.Kind, err)
			}
			if c != r.Click {
				t.Fatalf("record %d decodes to\n%+v, want\n%+v", i, c, r.Click)
			}
			if bytes.IndexByte(r.Value, '\n') >= 0 {
				t.Fatalf("valid record %d has a line break: %q", i, r.Value)
			}
		}
		switch r.Kind {
		case KindOK:
			if r.Lateness != 0 || c.TimestampMs != now.UnixMilli() {
				t.Fatalf("on-time record %d: lateness %v, timestamp %d at %d", i, r.Lateness, c.TimestampMs, now.UnixMilli())
			}
		case KindLate:
			if r.Lateness < MinLateness || r.Lateness >= MaxLateness {
				t.Fatalf("late record %d is %v late, want [%v, %v)", i, r.Lateness, MinLateness, MaxLateness)
			}
			if want := now.Add(-r.Lateness).UnixMilli(); c.TimestampMs != want {
				t.Fatalf("late record %d stamped %d, want %d", i, c.TimestampMs, want)
			}
			if r.Lateness <= 5*time.Minute {
				lateWithin5++
			}
		default:
			if r.Valid || r.Kind != KindInvalid(r.Reason) {
				t.Fatalf("record %d: kind %q, valid %v, reason %q", i, r.Kind, r.Valid, r.Reason)
			}
			if r.Reason == event.ReasonKeyMismatch {
				if err != nil {
					t.Fatalf("key_mismatch record %d must decode: %v", i, err)
				}
				err = c.CheckKey(r.Key)
			}
			if got := event.ReasonOf(err); got != r.Reason {
				t.Fatalf("invalid record %d rejected with %q (%v), want %q\nkey %q value %.300q", i, got, err, r.Reason, r.Key, r.Value)
			}
			if r.Reason == event.ReasonOversize && len(r.Value) <= event.DefaultLimits.MaxRecordBytes {
				t.Fatalf("oversize record %d is %d bytes", i, len(r.Value))
			}
			if r.Reason != event.ReasonKeyMismatch && string(r.Key) != r.Click.UserID {
				t.Fatalf("invalid record %d: key %q, user %q", i, r.Key, r.Click.UserID)
			}
		}
	})
	if late := kinds[KindLate]; late > 0 {
		within(t, "share of late records within 5 minutes", float64(lateWithin5)/float64(late), 0.5, 0.05)
	}
	return kinds
}

func checkShares(t *testing.T, kinds map[string]int, late, invalid float64) {
	t.Helper()
	total := 0
	for _, n := range kinds {
		total += n
	}
	// Shares are binomial: allow 4.5 standard deviations.
	tol := func(p float64) float64 { return 4.5 * math.Sqrt(p*(1-p)/float64(total)) }
	inv := 0
	for _, r := range InvalidReasons {
		k := kinds[KindInvalid(r)]
		inv += k
		p := invalid / float64(len(InvalidReasons))
		within(t, "share of "+KindInvalid(r), float64(k)/float64(total), p, tol(p))
	}
	within(t, "share of late records", float64(kinds[KindLate])/float64(total), late, tol(late))
	within(t, "share of invalid records", float64(inv)/float64(total), invalid, tol(invalid))
}

func TestSyntheticFaults(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Seed, cfg.LateShare, cfg.InvalidShare = 9, 0.1, 0.12
	kinds := checkRecords(t, newSynthetic(t, cfg), 60_000, 20*time.Millisecond)
	checkShares(t, kinds, cfg.LateShare, cfg.InvalidShare)
}

func TestReplayFaults(t *testing.T) {
	tb := openTaobao(t, userTail2k)
	p, err := NewReplay(tb, ReplayConfig{Speedup: 60, Seed: 3, LateShare: 0.2, InvalidShare: 0.3})
	if err != nil {
		t.Fatal(err)
	}
	kinds := checkRecords(t, p, tb.Len(), time.Millisecond)
	checkShares(t, kinds, 0.2, 0.3)
}

// TestFaultSharesDoNotChangeClicks checks that the fault stream is separate: the
// same seed with other shares gives the same clicks.
func TestFaultSharesDoNotChangeClicks(t *testing.T) {
	a := DefaultConfig()
	b := a
	b.LateShare, b.InvalidShare = 0.3, 0.3
	ra := generate(newSynthetic(t, a), 2000, time.Second)
	rb := generate(newSynthetic(t, b), 2000, time.Second)
	for i := range ra {
		ca, cb := ra[i].Click, rb[i].Click
		ca.TimestampMs, cb.TimestampMs = 0, 0
		if ca != cb {
			t.Fatalf("click %d differs with other fault shares:\n%+v\n%+v", i, ca, cb)
		}
	}
}

func TestInvalidValues(t *testing.T) {
	// One of each kind, by hand, to see what the consumer gets.
	f := newFaults(0, 1, 1)
	seen := map[event.Reason]string{}
	for i := 0; len(seen) < len(InvalidReasons) && i < 1000; i++ {
		r := Record{Click: event.Click{EventID: "1-7", UserID: "u5", SessionID: "u5-s2", Type: event.Cart, ItemID: 42, Category: "c3", Price: 9.99}}
		f.finish(&r, t0.UnixMilli())
		if _, ok := seen[r.Reason]; !ok {
			v := string(r.Value)
			if len(v) > 200 {
				v = v[:200] + "…"
			}
			seen[r.Reason] = v
			t.Logf("%-20s key %-8q %s", r.Reason, r.Key, v)
		}
	}
	if len(seen) != len(InvalidReasons) {
		t.Fatalf("saw %d kinds of invalid record, want %d", len(seen), len(InvalidReasons))
	}
	if !strings.Contains(seen[event.ReasonMissingField], `"session_id":"u5-s2"`) || strings.Contains(seen[event.ReasonMissingField], "user_id") {
		t.Errorf("missing_field record: %s", seen[event.ReasonMissingField])
	}
}
