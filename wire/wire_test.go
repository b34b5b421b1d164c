package wire

import (
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/event"
)

// goldenRec and goldenRecJSON are a recommendation and its bytes in the
// format the hot path has always written: a change here breaks readers.
var goldenRec = Recommendation{
	EventID: `7-"12"`, UserID: "ü\n\x01", Strategy: "model", ModelVersion: "v3",
	Items: []Item{
		{ItemID: 4711, Score: 0.83}, {ItemID: -1, Score: float32(math.NaN())},
		{ItemID: 2, Score: 123456789}, {ItemID: 3, Score: 1e-7}, {ItemID: 4, Score: float32(math.Inf(-1))},
	},
	EventTimeMs: 1700000000000, ProcessedAtMs: 1700000000042,
}

const goldenRecJSON = `{"event_id":"7-\"12\"","user_id":"ü\n\u0001","items":[` +
	`{"item_id":4711,"score":0.83},{"item_id":-1,"score":0},{"item_id":2,"score":1.23457e+08},` +
	`{"item_id":3,"score":1e-07},{"item_id":4,"score":0}],` +
	`"strategy":"model","model_version":"v3","event_time_ms":1700000000000,"processed_at_ms":1700000000042}`

var goldenWin = Window{
	UserID: "u1", WindowStartMs: 60000, WindowEndMs: 120000, Events: 4,
	ByType:        TypeCounts{View: 3, Cart: 1},
	ByCategory:    Categories{{"shoes", 3}, {`h"ats`, 1}},
	SessionEvents: 9, SessionLengthMs: 250000, Revision: 1,
}

const goldenWinJSON = `{"user_id":"u1","window_start_ms":60000,"window_end_ms":120000,"events":4,` +
	`"by_type":{"view":3,"cart":1,"purchase":0},"by_category":{"shoes":3,"h\"ats":1},` +
	`"session_events":9,"session_length_ms":250000,"revision":1}`

func TestGolden(t *testing.T) {
	if got := string(goldenRec.AppendJSON(nil)); got != goldenRecJSON {
		t.Errorf("recommendation:\n got %s\nwant %s", got, goldenRecJSON)
	}
	if got := string(goldenWin.AppendJSON(nil)); got != goldenWinJSON {
		t.Errorf("window:\n got %s\nwant %s", got, goldenWinJSON)
	}
	// AppendJSON appends.
	if got := string(goldenWin.AppendJSON([]byte("x"))); got != "x"+goldenWinJSON {
		t.Errorf("AppendJSON does not append: %s", got)
	}
}

// TestSameBytesAsBefore compares AppendJSON with the encoders the hot path
// had before this package existed (legacyRec, legacyWindow) over many
// records.
func TestSameBytesAsBefore(t *testing.T) {
	strs := []string{"", "u1", "ü", "a\"b\\c", "\x00\t\n\r\x1f", "\xff\xfe", "日本語", "\u2028"}
	scores := []float32{0, -0.5, 0.83, 1, 1e-7, 1e-45, 3.4e38, 123456789, float32(math.NaN()), float32(math.Inf(1))}
	for i := range 200 {
		r := Recommendation{
			EventID: strs[i%len(strs)], UserID: strs[(i/3)%len(strs)], ModelVersion: strs[(i/7)%len(strs)],
			Strategy:    []string{"model", "category_popular", "global_popular"}[i%3],
			EventTimeMs: int64(i) * 1_000_003, ProcessedAtMs: math.MaxInt64 - int64(i),
		}
		for j := range i % 12 {
			r.Items = append(r.Items, Item{ItemID: int64(i*j - 50), Score: scores[(i+j)%len(scores)]})
		}
		if got, want := string(r.AppendJSON(nil)), legacyRec(&r); got != want {
			t.Fatalf("recommendation %d:\n got %s\nwant %s", i, got, want)
		}
		w := Window{
			UserID: strs[i%len(strs)], WindowStartMs: int64(i) * 60000, WindowEndMs: int64(i+1) * 60000,
			Events: uint64(i), ByType: TypeCounts{uint64(i), uint64(i / 2), uint64(i / 3)},
			SessionEvents: uint64(i * 3), SessionLengthMs: int64(i) * 1234, Revision: uint64(1 + i%3),
		}
		for j := range i % 5 {
			w.ByCategory = append(w.ByCategory, CategoryCount{strs[(i+j)%len(strs)] + strconv.Itoa(j), uint64(j + 1)})
		}
		if got, want := string(w.AppendJSON(nil)), legacyWindow(&w); got != want {
			t.Fatalf("window %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

// legacyRec is the hot path's scoreBatch encoding before package wire.
func legacyRec(r *Recommendation) string {
	b := append([]byte(nil), `{"event_id":`...)
	b = event.AppendJSONString(b, r.EventID)
	b = append(b, `,"user_id":`...)
	b = event.AppendJSONString(b, r.UserID)
	b = append(b, `,"items":[`...)
	for n, it := range r.Items {
		if n > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"item_id":`...)
		b = strconv.AppendInt(b, it.ItemID, 10)
		b = append(b, `,"score":`...)
		score := it.Score
		if math.IsInf(float64(score), 0) || math.IsNaN(float64(score)) {
			score = 0
		}
		b = strconv.AppendFloat(b, float64(score), 'g', 6, 32)
		b = append(b, '}')
	}
	b = append(b, `],"strategy":"`...)
	b = append(b, r.Strategy...)
	b = append(b, `","model_version":`...)
	b = event.AppendJSONString(b, r.ModelVersion)
	b = append(b, `,"event_time_ms":`...)
	b = strconv.AppendInt(b, r.EventTimeMs, 10)
	b = append(b, `,"processed_at_ms":`...)
	b = strconv.AppendInt(b, r.ProcessedAtMs, 10)
	return string(append(b, '}'))
}

// legacyWindow is the hot path's emitWindow encoding before package wire.
func legacyWindow(w *Window) string {
	b := append([]byte(nil), `{"user_id":`...)
	b = event.AppendJSONString(b, w.UserID)
	b = append(b, `,"window_start_ms":`...)
	b = strconv.AppendInt(b, w.WindowStartMs, 10)
	b = append(b, `,"window_end_ms":`...)
	b = strconv.AppendInt(b, w.WindowEndMs, 10)
	b = append(b, `,"events":`...)
	b = strconv.AppendUint(b, w.Events, 10)
	b = append(b, `,"by_type":{"view":`...)
	b = strconv.AppendUint(b, w.ByType.View, 10)
	b = append(b, `,"cart":`...)
	b = strconv.AppendUint(b, w.ByType.Cart, 10)
	b = append(b, `,"purchase":`...)
	b = strconv.AppendUint(b, w.ByType.Purchase, 10)
	b = append(b, `},"by_category":{`...)
	for i, c := range w.ByCategory {
		if i > 0 {
			b = append(b, ',')
		}
		b = event.AppendJSONString(b, c.Category)
		b = append(b, ':')
		b = strconv.AppendUint(b, c.N, 10)
	}
	b = append(b, `},"session_events":`...)
	b = strconv.AppendUint(b, w.SessionEvents, 10)
	b = append(b, `,"session_length_ms":`...)
	b = strconv.AppendInt(b, w.SessionLengthMs, 10)
	b = append(b, `,"revision":`...)
	b = strconv.AppendUint(b, w.Revision, 10)
	return string(append(b, '}'))
}

func TestRecommendationRoundTrip(t *testing.T) {
	for _, r := range []Recommendation{
		{EventID: "e"},
		{EventID: "ü-1", UserID: "日本語 \"quoted\" \\ \t\u2028", Strategy: "global_popular", EventTimeMs: -5},
		{EventID: "e2", UserID: "u", Items: []Item{{1, 0.5}, {math.MaxInt64, -0.25}, {math.MinInt64, 1e-7}},
			Strategy: "model", ModelVersion: "v/1", EventTimeMs: 1, ProcessedAtMs: 2},
		{EventID: "nan", Items: []Item{{7, float32(math.NaN())}, {8, float32(math.Inf(1))}}},
		goldenRec,
	} {
		got, err := DecodeRecommendation(r.AppendJSON(nil))
		if err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
		if want := normalRec(r); !reflect.DeepEqual(got, want) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
		}
	}
}

// normalRec is r as it reads after a round trip: scores with 6 significant
// digits, NaN and infinities 0, invalid UTF-8 replaced, no items nil.
func normalRec(r Recommendation) Recommendation {
	r.EventID, r.UserID = strings.ToValidUTF8(r.EventID, "\uFFFD"), strings.ToValidUTF8(r.UserID, "\uFFFD")
	r.Strategy, r.ModelVersion = strings.ToValidUTF8(r.Strategy, "\uFFFD"), strings.ToValidUTF8(r.ModelVersion, "\uFFFD")
	items := r.Items
	r.Items = nil
	for _, it := range items {
		f, _ := strconv.ParseFloat(string(appendScore(nil, it.Score)), 32)
		r.Items = append(r.Items, Item{it.ItemID, float32(f)})
	}
	return r
}

func TestWindowRoundTrip(t *testing.T) {
	many := Window{UserID: "many"}
	for i := range 40 { // past the linear duplicate check
		many.ByCategory = append(many.ByCategory, CategoryCount{"c" + strconv.Itoa(39-i), uint64(i)})
	}
	for _, w := range []Window{
		{UserID: "u"},
		{UserID: "ü \"x\"\n", WindowStartMs: -60000, WindowEndMs: 0, Events: math.MaxUint64, ByType: TypeCounts{1, 2, 3},
			ByCategory: Categories{{"z", 1}, {"a", 2}, {"", 0}, {"日本", 5}}, SessionEvents: 1, SessionLengthMs: -1, Revision: 7},
		goldenWin,
		many,
	} {
		got, err := DecodeWindow(w.AppendJSON(nil))
		if err != nil {
			t.Fatalf("%+v: %v", w, err)
		}
		if !reflect.DeepEqual(got, w) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, w)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct{ in, wantInErr string }{
		{`not json`, "cannot decode recommendation"},
		{`{"event_id":"e"`, "cannot decode recommendation"},
		{`{"event_id":"e"} x`, "cannot decode recommendation"},
		{`{"user_id":"u","items":[]}`, "no event_id"},
		{`{"event_id":""}`, "no event_id"},
		{`{"event_id":7}`, "event_id"},
		{`{"event_id":"e","items":[{"item_id":1.5}]}`, "item_id"},
		{`{"event_id":"e","items":[{"item_id":1,"score":1e39}]}`, "score"},
		{`{"event_id":"e","items":{}}`, "items"},
	} {
		_, err := DecodeRecommendation([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.wantInErr) {
			t.Errorf("DecodeRecommendation(%s) = %v, want an error mentioning %q", tc.in, err, tc.wantInErr)
		}
	}
	for _, tc := range []struct{ in, wantInErr string }{
		{`[]`, "cannot decode window"},
		{`{"window_start_ms":1}`, "no user_id"},
		{`{"user_id":"u","by_category":{"a":1,"a":2}}`, `category "a" appears twice`},
		{`{"user_id":"u","by_category":{"a":1,"\u0061":2}}`, `category "a" appears twice`},
		{`{"user_id":"u","by_category":{"a":-1}}`, `category "a": count`},
		{`{"user_id":"u","by_category":{"a":1.5}}`, `category "a": count`},
		{`{"user_id":"u","by_category":["a"]}`, "want an object"},
		{`{"user_id":"u","by_type":{"view":-1}}`, "view"},
	} {
		_, err := DecodeWindow([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.wantInErr) {
			t.Errorf("DecodeWindow(%s) = %v, want an error mentioning %q", tc.in, err, tc.wantInErr)
		}
	}
}

// TestDecodeTolerates: what readers written against today's records must
// keep accepting — unknown fields, other field orders, missing counts.
func TestDecodeTolerates(t *testing.T) {
	r, err := DecodeRecommendation([]byte(`{"strategy":"model","new_field":{"x":[1]},"event_id":"e","items":[{"score":0.5,"item_id":3}]}`))
	if err != nil || r.EventID != "e" || r.Strategy != "model" || len(r.Items) != 1 || r.Items[0] != (Item{3, 0.5}) {
		t.Fatalf("got %+v, %v", r, err)
	}
	w, err := DecodeWindow([]byte(`{"user_id":"u1","events":4,"by_type":{"view":4},"by_category":{"c1":4},"session_length_ms":120000,"revision":1,"later":true}`))
	if err != nil || w.ByType != (TypeCounts{View: 4}) || w.ByCategory.Count("c1") != 4 || w.ByCategory.Count("c2") != 0 || w.SessionLengthMs != 120000 {
		t.Fatalf("got %+v, %v", w, err)
	}
	w, err = DecodeWindow([]byte(`{"user_id":"u1","by_category":null}`))
	if err != nil || w.ByCategory != nil {
		t.Fatalf("null by_category: %+v, %v", w, err)
	}
}

func TestAppendJSONAllocs(t *testing.T) {
	buf := make([]byte, 0, 4096)
	r, w := goldenRec, goldenWin
	if n := testing.AllocsPerRun(100, func() { buf = r.AppendJSON(buf[:0]) }); n != 0 {
		t.Errorf("Recommendation.AppendJSON: %v allocations, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { buf = w.AppendJSON(buf[:0]) }); n != 0 {
		t.Errorf("Window.AppendJSON: %v allocations, want 0", n)
	}
}

func TestDeadLetterOf(t *testing.T) {
	hs := func(kv ...string) []kgo.RecordHeader {
		var h []kgo.RecordHeader
		for i := 0; i < len(kv); i += 2 {
			h = append(h, kgo.RecordHeader{Key: kv[i], Value: []byte(kv[i+1])})
		}
		return h
	}
	d, err := DeadLetterOf(hs(HeaderReason, "malformed_json", HeaderDetail, "unexpected end", HeaderSource, "user_events/3/42", "other", "x"))
	if want := (DeadLetter{Reason: "malformed_json", Detail: "unexpected end", Source: Source{"user_events", 3, 42}}); err != nil || d != want {
		t.Fatalf("dead letter: %+v, %v; want %+v", d, err, want)
	}
	d, err = DeadLetterOf(hs(HeaderReason, ReasonTooLate, HeaderWatermarkMs, "-17", HeaderSource, "pre.user_events/0/0"))
	if want := (DeadLetter{Reason: ReasonTooLate, Source: Source{"pre.user_events", 0, 0}, WatermarkMs: -17, HasWatermark: true}); err != nil || d != want {
		t.Fatalf("late: %+v, %v; want %+v", d, err, want)
	}
	if s := d.Source.String(); s != "pre.user_events/0/0" {
		t.Fatalf("Source.String() = %q", s)
	}
	for _, tc := range []struct {
		h         []kgo.RecordHeader
		wantInErr string
	}{
		{nil, "no reason header among 0 headers"},
		{hs(HeaderReason, ""), "no reason header"},
		{hs(HeaderReason, ReasonTooLate, HeaderWatermarkMs, "1.5"), `header watermark_ms "1.5" is not an integer`},
		{hs(HeaderReason, "x", HeaderSource, "t/1"), `source "t/1" is not topic/partition/offset`},
		{hs(HeaderReason, "x", HeaderSource, "t/-1/2"), `partition "-1"`},
		{hs(HeaderReason, "x", HeaderSource, "t/1/z"), `offset "z"`},
	} {
		if _, err := DeadLetterOf(tc.h); err == nil || !strings.Contains(err.Error(), tc.wantInErr) {
			t.Errorf("DeadLetterOf(%v) = %v, want an error mentioning %q", tc.h, err, tc.wantInErr)
		}
	}
}

func TestPeek(t *testing.T) {
	for _, tc := range []struct{ in, id, strategy string }{
		{goldenRecJSON, `7-"12"`, "model"},
		{`{"event_id":"7-12","user_id":"u1","items":[{"item_id":3,"score":0.5}],"strategy":"model","model_version":"v1","event_time_ms":1}`, "7-12", "model"},
		{`{"user_id":"u1","event_id":"tb-3"}`, "tb-3", ""},
		{`{"event_id":"a\"b","user_id":"u1","items":[],"strategy":"global_popular","model_version":""}`, `a"b`, "global_popular"},
		{`{"event_id" : "e", "strategy" : "category_popular"}`, "e", "category_popular"},
		{`{"user_id":"u1","strategy":"model"}`, "", ""}, // no event id: not a recommendation
		{`{"event_id":"","strategy":"model"}`, "", "model"},
		{`not json`, "", ""},
	} {
		if got := PeekEventID([]byte(tc.in)); string(got) != tc.id || (tc.id == "") != (got == nil) {
			t.Errorf("PeekEventID(%s) = %q, want %q", tc.in, got, tc.id)
		}
		if got := PeekStrategy([]byte(tc.in)); string(got) != tc.strategy || (tc.strategy == "") != (got == nil) {
			t.Errorf("PeekStrategy(%s) = %q, want %q", tc.in, got, tc.strategy)
		}
	}
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{goldenRecJSON, 1700000000042},
		{`{"event_id":"1-2","items":[],"event_time_ms":5,"processed_at_ms":1700000000123}`, 1700000000123},
		{`{"processed_at_ms":7,"event_id":"1-2"}`, 7},
		{`{"event_id":"1-2","processed_at_ms":9223372036854775807}`, math.MaxInt64},
		{`{"event_id":"1-2"}`, 0},
		{`{"processed_at_ms":7}`, 0},
	} {
		if got := PeekProcessedAtMs([]byte(tc.in)); got != tc.want {
			t.Errorf("PeekProcessedAtMs(%s) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestWrittenScore(t *testing.T) {
	for _, tc := range []struct {
		score float32
		want  float64
	}{
		{0.83, 0.83}, {1e-7, 1e-7}, {123456789, 1.23457e8}, {1e-45, 1.4013e-45},
		{float32(math.NaN()), 0}, {float32(math.Inf(-1)), 0}, {-0.5, -0.5},
	} {
		if got := (Item{Score: tc.score}).WrittenScore(); got != tc.want {
			t.Errorf("WrittenScore(%v) = %v, want %v", tc.score, got, tc.want)
		}
	}
}
