package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/clickrec/clickrec/event"
)

// Window is a record of the user_session_windows topic: one user's activity
// in a tumbling event-time window, written when the watermark passes the
// window's end and again (Revision > 1) when a late event changes it. The
// record's key is the user id.
type Window struct {
	UserID        string     `json:"user_id"` // never empty
	WindowStartMs int64      `json:"window_start_ms"`
	WindowEndMs   int64      `json:"window_end_ms"` // exclusive
	Events        uint64     `json:"events"`        // events in the window: the sum of ByType
	ByType        TypeCounts `json:"by_type"`
	// ByCategory counts the window's events per category, in the order the
	// categories first appeared in the window.
	ByCategory Categories `json:"by_category"`
	// SessionEvents and SessionLengthMs describe the user's session (not only
	// this window) when the window was written.
	SessionEvents   uint64 `json:"session_events"`
	SessionLengthMs int64  `json:"session_length_ms"`
	// Revision is 1 for the first result of a window and counts up with
	// every re-fire; a reader keeps the highest.
	Revision uint64 `json:"revision"`
}

// TypeCounts counts a window's events by type.
type TypeCounts struct {
	View     uint64 `json:"view"`
	Cart     uint64 `json:"cart"`
	Purchase uint64 `json:"purchase"`
}

// CategoryCount is the number of a window's events in one category.
type CategoryCount struct {
	Category string
	N        uint64
}

// Categories is the by_category object of a window. It is a list rather
// than a map so that the order the hot path wrote survives a decode and a
// re-encode (a Go map would reorder it, and a reader comparing records byte
// for byte would see a change that is none). On the wire it is a JSON
// object from category to count; a category appears at most once.
type Categories []CategoryCount

// AppendJSON appends w as JSON, fields in the order of the struct and
// by_category in its list order, and returns the extended buffer. It
// allocates only to grow b.
func (w *Window) AppendJSON(b []byte) []byte {
	b = append(b, `{"user_id":`...)
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
	b = append(b, `},"by_category":`...)
	b = w.ByCategory.appendJSON(b)
	b = append(b, `,"session_events":`...)
	b = strconv.AppendUint(b, w.SessionEvents, 10)
	b = append(b, `,"session_length_ms":`...)
	b = strconv.AppendInt(b, w.SessionLengthMs, 10)
	b = append(b, `,"revision":`...)
	b = strconv.AppendUint(b, w.Revision, 10)
	return append(b, '}')
}

func (cs Categories) appendJSON(b []byte) []byte {
	b = append(b, '{')
	for i, c := range cs {
		if i > 0 {
			b = append(b, ',')
		}
		b = event.AppendJSONString(b, c.Category)
		b = append(b, ':')
		b = strconv.AppendUint(b, c.N, 10)
	}
	return append(b, '}')
}

// MarshalJSON writes the categories as a JSON object in list order.
func (cs Categories) MarshalJSON() ([]byte, error) {
	return cs.appendJSON(nil), nil
}

// UnmarshalJSON reads a JSON object from category to count, keeping the
// document's order. null leaves the list as it is; a category given twice
// or a count that is not a non-negative integer is an error.
func (cs *Categories) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("by_category is %.40s, want an object", b)
	}
	var out Categories
	var seen map[string]struct{} // only for long lists
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("by_category: %w", err)
		}
		cat := t.(string) // object keys are strings
		var n uint64
		if err := dec.Decode(&n); err != nil {
			return fmt.Errorf("by_category: category %q: count: %w", cat, err)
		}
		if out.dup(cat, &seen) {
			return fmt.Errorf("by_category: category %q appears twice", cat)
		}
		out = append(out, CategoryCount{Category: cat, N: n})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return fmt.Errorf("by_category: %w", err)
	}
	*cs = out
	return nil
}

// dup reports whether cat is in cs, using a set once the list is long.
func (cs Categories) dup(cat string, seen *map[string]struct{}) bool {
	const linear = 16
	if len(cs) < linear {
		for _, c := range cs {
			if c.Category == cat {
				return true
			}
		}
		return false
	}
	if *seen == nil {
		*seen = make(map[string]struct{}, 2*len(cs))
		for _, c := range cs {
			(*seen)[c.Category] = struct{}{}
		}
	}
	if _, ok := (*seen)[cat]; ok {
		return true
	}
	(*seen)[cat] = struct{}{}
	return false
}

// Count returns the count of category cat, 0 if it has none.
func (cs Categories) Count(cat string) uint64 {
	for _, c := range cs {
		if c.Category == cat {
			return c.N
		}
	}
	return 0
}

// DecodeWindow parses a record of the user_session_windows topic. It fails
// on malformed JSON, on a field of the wrong type, on a by_category that
// names a category twice and on a missing or empty user_id; unknown fields
// and missing counts (0) are accepted. An empty by_category decodes as nil.
func DecodeWindow(b []byte) (Window, error) {
	var w Window
	if err := json.Unmarshal(b, &w); err != nil {
		return Window{}, fmt.Errorf("wire: cannot decode window %.80q: %w", b, err)
	}
	if w.UserID == "" {
		return Window{}, fmt.Errorf("wire: window %.80q: no user_id", b)
	}
	if len(w.ByCategory) == 0 {
		w.ByCategory = nil
	}
	return w, nil
}
