package loadtest

import (
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/featurestore"
	"github.com/clickrec/clickrec/wire"
)

func TestClassifyEntry(t *testing.T) {
	recA := (&wire.Recommendation{EventID: "e-a", UserID: "u1", EventTimeMs: 1000}).AppendJSON(nil)
	recB := (&wire.Recommendation{EventID: "e-b", UserID: "u1", EventTimeMs: 2000}).AppendJSON(nil)
	live := Expected{Known: true, Born: 1000, Seq: 7, Recs: recB}
	f := func(name string, want Expected, got Stored, class, whyContains string) {
		t.Helper()
		c, why := ClassifyEntry(want, got)
		if c != class || !strings.Contains(why, whyContains) || (c == EntryMatch) != (why == "") {
			t.Errorf("%s: got %s %q, want %s containing %q", name, c, why, class, whyContains)
		}
	}
	f("same state and recs", live, Stored{Exists: true, Born: 1000, Seq: 7, Recs: recB, RecSeq: 7}, EntryMatch, "")
	f("older recs", live, Stored{Exists: true, Born: 1000, Seq: 7, Recs: recA}, EntryStale, "recs of event e-a")
	f("seq behind", live, Stored{Exists: true, Born: 1000, Seq: 6, Recs: recB}, EntryStale, "seq 6, want born 1000 seq 7")
	f("former incarnation", live, Stored{Exists: true, Born: 500, Seq: 9, Recs: recB}, EntryStale, "born 500")
	f("seq ahead", live, Stored{Exists: true, Born: 1000, Seq: 8, Recs: recB}, EntryUnexpected, "ahead")
	f("newer incarnation", live, Stored{Exists: true, Born: 3000, Seq: 1}, EntryUnexpected, "ahead")
	f("no entry", live, Stored{}, EntryMissing, "no entry")
	f("tombstone", live, Stored{Exists: true, Gone: true, Born: 1000, Seq: 7}, EntryMissing, "tombstone")
	f("no recs", live, Stored{Exists: true, Born: 1000, Seq: 7}, EntryMissing, "no recs, want of event e-b")
	f("recs where none", Expected{Known: true, Born: 1000, Seq: 2}, Stored{Exists: true, Born: 1000, Seq: 2, Recs: recA}, EntryStale, "want none")
	f("no recs where none", Expected{Known: true, Born: 1000, Seq: 2}, Stored{Exists: true, Born: 1000, Seq: 2}, EntryMatch, "")
	gone := Expected{Known: true, Gone: true}
	f("gone and absent", gone, Stored{}, EntryMatch, "")
	f("gone and tombstone", gone, Stored{Exists: true, Gone: true, Born: 1000, Seq: 7}, EntryMatch, "")
	f("gone but live", gone, Stored{Exists: true, Born: 1000, Seq: 7, Recs: recB}, EntryResurrected, "expired")
	f("unknown user", Expected{}, Stored{}, EntryMatch, "")
	f("recs without changelog", Expected{Recs: recA}, Stored{}, EntryUnexpected, "no changelog record")
	f("unreadable", live, Stored{Exists: true, Born: 1000, Seq: 7, Recs: recB, Bad: "seq=x"}, EntryStale, "seq=x")
}

func TestStoredOf(t *testing.T) {
	s := storedOf(map[string]string{featurestore.FieldBorn: "1000", featurestore.FieldSeq: "7", featurestore.FieldRecs: "{}", featurestore.FieldRecSeq: "6"})
	if !s.Exists || s.Gone || s.Born != 1000 || s.Seq != 7 || string(s.Recs) != "{}" || s.RecSeq != 6 || s.Bad != "" {
		t.Fatalf("live entry: %+v", s)
	}
	s = storedOf(map[string]string{featurestore.FieldBorn: "1000", featurestore.FieldSeq: "7", featurestore.FieldGone: "1"})
	if !s.Exists || !s.Gone || s.Recs != nil {
		t.Fatalf("tombstone: %+v", s)
	}
	if s = storedOf(map[string]string{}); s.Exists {
		t.Fatalf("absent: %+v", s)
	}
	if s = storedOf(map[string]string{featurestore.FieldSeq: "x"}); s.Bad != "seq=x" {
		t.Fatalf("bad seq: %+v", s)
	}
}

// TestKafkaTruthRecs keeps a user's last recommendation by offset order,
// forgets it with a tombstone, and keeps only the new incarnation's after.
func TestKafkaTruthRecs(t *testing.T) {
	k := &kafkaTruth{recs: "recs", changelog: "changelog", state: map[string]hotpathState{}, gone: map[string]bool{}, last: map[string]lastRec{}}
	touched := map[string]struct{}{}
	rec := func(id string, ms int64) *kgo.Record {
		return &kgo.Record{Topic: "recs", Key: []byte("u1"), Value: (&wire.Recommendation{EventID: id, UserID: "u1", EventTimeMs: ms}).AppendJSON(nil)}
	}
	for _, r := range []*kgo.Record{rec("e1", 1000), rec("e2", 1500)} {
		if err := k.apply(r, touched); err != nil {
			t.Fatal(err)
		}
	}
	if w := k.expected("u1"); w.Known || string(wire.PeekEventID(w.Recs)) != "e2" {
		t.Fatalf("before any changelog record: %+v", w)
	}
	if err := k.apply(&kgo.Record{Topic: "changelog", Key: []byte("u1")}, touched); err != nil {
		t.Fatal(err)
	}
	if w := k.expected("u1"); !w.Known || !w.Gone {
		t.Fatalf("after the tombstone: %+v", w)
	}
	k.state["u1"] = hotpathState{User: "u1", Born: 2000, Seq: 1} // as a changelog record would set it
	delete(k.gone, "u1")
	if w := k.expected("u1"); w.Recs != nil || w.Born != 2000 {
		t.Fatalf("new incarnation, no recommendation of it yet: %+v", w)
	}
	if err := k.apply(rec("e0", 900), touched); err != nil { // a late one of the former incarnation
		t.Fatal(err)
	}
	if err := k.apply(rec("e3", 2000), touched); err != nil {
		t.Fatal(err)
	}
	if w := k.expected("u1"); string(wire.PeekEventID(w.Recs)) != "e3" {
		t.Fatalf("new incarnation: %+v", w)
	}
	if _, ok := touched["u1"]; !ok || len(touched) != 1 {
		t.Fatalf("touched %v", touched)
	}
}

func TestMergeUsers(t *testing.T) {
	got := strings.Join(mergeUsers([]string{"b", "a"}, []string{"c", "a"}), ",")
	if got != "a,b,c" {
		t.Fatalf("got %s", got)
	}
}
