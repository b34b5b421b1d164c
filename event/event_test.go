package event

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

var now = time.UnixMilli(1_700_000_000_000)

func valid() Click {
	return Click{EventID: "e1", UserID: "u1", SessionID: "s1", Type: Cart, ItemID: 42, Category: "c7", Price: 9.5, TimestampMs: now.UnixMilli() - 1000}
}

func TestRoundTrip(t *testing.T) {
	c := valid()
	b := c.AppendJSON(nil)
	var std Click
	if err := json.Unmarshal(b, &std); err != nil {
		t.Fatalf("AppendJSON output is not valid JSON: %v\n%s", err, b)
	}
	got, err := Decode(b, now, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if got != c || std != c {
		t.Fatalf("round trip changed the click:\n got %+v\nwant %+v", got, c)
	}
}

func TestDecodeRejects(t *testing.T) {
	long := strings.Repeat("x", 200)
	tests := []struct {
		name, in string
		reason   Reason
		detail   string
	}{
		{"empty", ``, ReasonMalformedJSON, "not a JSON object"},
		{"array", `[1,2]`, ReasonMalformedJSON, "not a JSON object"},
		{"truncated", `{"event_id":"e1"`, ReasonMalformedJSON, "unexpected end"},
		{"wrong type item", `{"event_id":"e","user_id":"u","event_type":"view","item_id":"abc","timestamp_ms":1}`, ReasonWrongType, "item_id"},
		{"wrong type ts", `{"event_id":"e","user_id":"u","event_type":"view","item_id":1,"timestamp_ms":"now"}`, ReasonWrongType, "timestamp_ms"},
		{"unknown type", `{"event_id":"e","user_id":"u","event_type":"like","item_id":1,"timestamp_ms":1}`, ReasonUnknownType, `"like"`},
		{"missing user", `{"event_id":"e","event_type":"view","item_id":1,"timestamp_ms":1}`, ReasonMissingField, "user_id"},
		{"missing event id", `{"user_id":"u","event_type":"view","item_id":1,"timestamp_ms":1}`, ReasonMissingField, "event_id"},
		{"missing type", `{"event_id":"e","user_id":"u","item_id":1,"timestamp_ms":1}`, ReasonMissingField, "event_type"},
		{"missing item", `{"event_id":"e","user_id":"u","event_type":"view","timestamp_ms":1}`, ReasonMissingField, "item_id"},
		{"missing ts", `{"event_id":"e","user_id":"u","event_type":"view","item_id":1}`, ReasonMissingField, "timestamp_ms"},
		{"negative item", `{"event_id":"e","user_id":"u","event_type":"view","item_id":-3,"timestamp_ms":1}`, ReasonBadValue, "negative"},
		{"negative price", `{"event_id":"e","user_id":"u","event_type":"view","item_id":3,"price":-1,"timestamp_ms":1}`, ReasonBadValue, "price"},
		{"long id", `{"event_id":"e","user_id":"` + long + `","event_type":"view","item_id":3,"timestamp_ms":1}`, ReasonBadValue, "user_id is 200 bytes"},
		{"future", `{"event_id":"e","user_id":"u","event_type":"view","item_id":3,"timestamp_ms":1700000600000}`, ReasonFutureTime, "ahead of now"},
		{"oversize", `{"event_id":"` + strings.Repeat("y", 20000) + `"}`, ReasonOversize, "limit 16384"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.in), now, DefaultLimits)
			if err == nil {
				t.Fatal("accepted an invalid record")
			}
			if r := ReasonOf(err); r != tt.reason {
				t.Fatalf("reason %q, want %q (%v)", r, tt.reason, err)
			}
			if !strings.Contains(err.Error(), tt.detail) {
				t.Fatalf("error %q does not mention %q", err, tt.detail)
			}
		})
	}
}

func TestCheckKey(t *testing.T) {
	c := valid()
	if err := c.CheckKey([]byte("u1")); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckKey(nil); err != nil {
		t.Fatal(err)
	}
	if ReasonOf(c.CheckKey([]byte("u2"))) != ReasonKeyMismatch {
		t.Fatal("accepted a record keyed by another user")
	}
}

func FuzzDecode(f *testing.F) {
	c := valid()
	f.Add(c.AppendJSON(nil))
	f.Add([]byte(`{"event_id":"e","user_id":"u","event_type":"purchase","item_id":1,"timestamp_ms":1}`))
	f.Add([]byte(`{"event_type":null}`))
	f.Add([]byte(`{"item_id":1e400}`))
	f.Add([]byte("\x00{"))
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := Decode(in, now, DefaultLimits)
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		// Whatever is accepted re-encodes to something that decodes to the same click.
		again, err := Decode(got.AppendJSON(nil), now, DefaultLimits)
		if err != nil || again != got {
			t.Fatalf("accepted %q but its re-encoding %q gives %+v, %v", in, got.AppendJSON(nil), again, err)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	c := valid()
	in := c.AppendJSON(nil)
	var out Click
	b.ReportAllocs()
	for b.Loop() {
		if err := DecodeInto(&out, in, now, DefaultLimits); err != nil {
			b.Fatal(err)
		}
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", "quote\"back\\slash", "ctl\x01\x1f\n\t\r", "utf8 ✓ é", "bad\xffutf8", "\u2028"} {
		var got string
		b := AppendJSONString(nil, s)
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q encodes to invalid JSON %s: %v", s, b, err)
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if got != want {
			t.Fatalf("%q round-trips to %q", s, got)
		}
	}
}

// FuzzDecodeFast checks the fast path against encoding/json: whatever it
// accepts, json.Unmarshal accepts too and decodes to the same click.
func FuzzDecodeFast(f *testing.F) {
	c := valid()
	f.Add(c.AppendJSON(nil))
	f.Add([]byte(`{"event_id":"e","user_id":"u","event_type":"purchase","item_id":-0,"price":1e3,"timestamp_ms":1}`))
	f.Add([]byte(` { "price" : 0.5e-3 , "category":"\u00e9" } `))
	f.Add([]byte(`{"item_id":01}`))
	f.Add([]byte(`{"Event_ID":"x"}`))
	f.Add([]byte(`{"event_id":"a","event_id":"b"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var fast Click
		if !decodeFast(&fast, in) {
			return
		}
		var ref Click
		if err := json.Unmarshal(in, &ref); err != nil {
			t.Fatalf("fast path accepted %q, encoding/json rejects it: %v", in, err)
		}
		if fast != ref && !(fast.Price != fast.Price && ref.Price != ref.Price) {
			t.Fatalf("%q: fast path %+v, encoding/json %+v", in, fast, ref)
		}
	})
}

func TestDecodeFastFallsBack(t *testing.T) {
	for _, in := range []string{
		`{"event_id":"a\"b"}`, `{"Event_ID":"x"}`, `{"event_id":"a","event_id":"b"}`, `{"item_id":1.5}`,
		`{"item_id":"1"}`, `{"event_type":"like"}`, `{"price":null}`, `{"x":1}`, `{"item_id":01}`,
		`{"category":"` + "\xff" + `"}`, `{"item_id":99999999999999999999}`, `{} x`,
	} {
		var c Click
		if decodeFast(&c, []byte(in)) {
			t.Errorf("fast path accepted %s as %+v; it must leave it to encoding/json", in, c)
		}
	}
	c := valid()
	var got Click
	if !decodeFast(&got, c.AppendJSON(nil)) || got != c {
		t.Fatalf("fast path on a plain click: %+v, want %+v", got, c)
	}
}
