package wire

import (
	"bytes"
	"reflect"
	"testing"
)

func FuzzDecodeRecommendation(f *testing.F) {
	f.Add([]byte(goldenRecJSON))
	f.Add([]byte(`{"event_id":"e","items":null}`))
	f.Add([]byte(`{"event_id":"\ud800x","items":[{"item_id":1,"score":1.0000001}]}`))
	f.Add([]byte(`{"event_id":"e","items":[{"item_id":1,"score":-0}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecommendation(b)
		if err != nil {
			return
		}
		enc := r.AppendJSON(nil)
		r2, err := DecodeRecommendation(enc)
		if err != nil {
			t.Fatalf("%s decodes, but its re-encoding %s does not: %v", b, enc, err)
		}
		// Scores are written with 6 significant digits: the first encoding
		// may round them, after which the value is stable.
		if want := normalRec(r); !reflect.DeepEqual(r2, want) {
			t.Fatalf("%s: re-encoded as %s, decoded as %+v, want %+v", b, enc, r2, want)
		}
		if enc2 := r2.AppendJSON(nil); !bytes.Equal(enc2, enc) {
			t.Fatalf("%s: encoded as %s, then as %s", b, enc, enc2)
		}
	})
}

func FuzzDecodeWindow(f *testing.F) {
	f.Add([]byte(goldenWinJSON))
	f.Add([]byte(`{"user_id":"u","by_category":{}}`))
	f.Add([]byte(`{"user_id":"u","by_category":{"a":1,"b":2,"\u00e9":3},"by_type":{"cart":2}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := DecodeWindow(b)
		if err != nil {
			return
		}
		enc := w.AppendJSON(nil)
		w2, err := DecodeWindow(enc)
		if err != nil {
			t.Fatalf("%s decodes, but its re-encoding %s does not: %v", b, enc, err)
		}
		if !reflect.DeepEqual(w2, w) {
			t.Fatalf("%s: re-encoded as %s, decoded as %+v, want %+v", b, enc, w2, w)
		}
	})
}
