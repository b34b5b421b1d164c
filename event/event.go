// Package event defines the click event that flows through clickrec: its JSON
// form on the user_events topic, and validation that says precisely why a record
// is rejected. Rejected records go to the dead-letter topic with that reason.
package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Type is what the shopper did with an item.
type Type uint8

// Event types, in funnel order. The zero value is not a valid type.
const (
	View Type = iota + 1
	Cart
	Purchase
)

var typeNames = [...]string{View: "view", Cart: "cart", Purchase: "purchase"}

// String returns the wire name of t ("view", "cart", "purchase").
func (t Type) String() string {
	if t >= View && t <= Purchase {
		return typeNames[t]
	}
	return "unknown(" + strconv.Itoa(int(t)) + ")"
}

// ParseType maps a wire name to a Type.
func ParseType(s string) (Type, bool) {
	switch s {
	case "view":
		return View, true
	case "cart":
		return Cart, true
	case "purchase":
		return Purchase, true
	}
	return 0, false
}

// MarshalText implements encoding.TextMarshaler.
func (t Type) MarshalText() ([]byte, error) {
	if t < View || t > Purchase {
		return nil, fmt.Errorf("event type %d has no name", t)
	}
	return []byte(typeNames[t]), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (t *Type) UnmarshalText(b []byte) error {
	v, ok := ParseType(string(b))
	if !ok {
		return &InvalidError{Reason: ReasonUnknownType, Detail: fmt.Sprintf("event_type %q is not one of view, cart, purchase", b)}
	}
	*t = v
	return nil
}

// Click is one shopper interaction. On Kafka it is a JSON object keyed by UserID.
type Click struct {
	EventID     string  `json:"event_id"`
	UserID      string  `json:"user_id"`
	SessionID   string  `json:"session_id"`
	Type        Type    `json:"event_type"`
	ItemID      int64   `json:"item_id"`
	Category    string  `json:"category"`
	Price       float64 `json:"price"`
	TimestampMs int64   `json:"timestamp_ms"`
}

// Time returns the event time.
func (c *Click) Time() time.Time { return time.UnixMilli(c.TimestampMs) }

// Reason is a stable, machine-readable cause of rejection. It is the value of the
// dead-letter record's "reason" header and the label of rejection metrics.
type Reason string

// Rejection reasons.
const (
	ReasonOversize       Reason = "oversize_record"
	ReasonMalformedJSON  Reason = "malformed_json"
	ReasonWrongType      Reason = "wrong_field_type"
	ReasonMissingField   Reason = "missing_field"
	ReasonUnknownType    Reason = "unknown_event_type"
	ReasonBadValue       Reason = "bad_value"
	ReasonFutureTime     Reason = "timestamp_in_future"
	ReasonKeyMismatch    Reason = "key_mismatch"
	ReasonUnknownVersion Reason = "unknown_schema"
)

// InvalidError says why a record is not a valid click.
type InvalidError struct {
	Reason Reason
	Detail string // human-readable, names the field and the value
}

func (e *InvalidError) Error() string { return string(e.Reason) + ": " + e.Detail }

// ReasonOf returns the rejection reason carried by err, or "" if err is not an
// *InvalidError.
func ReasonOf(err error) Reason {
	var ie *InvalidError
	if errors.As(err, &ie) {
		return ie.Reason
	}
	return ""
}

// Limits bound what Validate accepts.
type Limits struct {
	MaxRecordBytes int           // larger records are rejected before parsing
	MaxFutureSkew  time.Duration // event time may be at most this far ahead of now
	MaxIDLen       int           // event_id, user_id, session_id, category
}

// DefaultLimits are the limits used when none are configured.
var DefaultLimits = Limits{
	MaxRecordBytes: 16 << 10,
	MaxFutureSkew:  time.Minute,
	MaxIDLen:       128,
}

// Decode parses and validates one record value. now is the processing time used
// for the future-timestamp check. It never panics; every failure is an
// *InvalidError.
func Decode(value []byte, now time.Time, lim Limits) (Click, error) {
	var c Click
	err := DecodeInto(&c, value, now, lim)
	return c, err
}

// DecodeInto is Decode into a caller-owned Click, so a hot loop can reuse one.
func DecodeInto(c *Click, value []byte, now time.Time, lim Limits) error {
	*c = Click{}
	if lim.MaxRecordBytes > 0 && len(value) > lim.MaxRecordBytes {
		return &InvalidError{Reason: ReasonOversize, Detail: fmt.Sprintf("record is %d bytes, limit %d", len(value), lim.MaxRecordBytes)}
	}
	value = bytes.TrimSpace(value)
	if len(value) == 0 || value[0] != '{' {
		return &InvalidError{Reason: ReasonMalformedJSON, Detail: "record is not a JSON object"}
	}
	if decodeFast(c, value) {
		return c.Validate(now, lim)
	}
	*c = Click{} // the fast path may have filled some fields before giving up
	if err := json.Unmarshal(value, c); err != nil {
		var ie *InvalidError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &ie):
			return ie
		case errors.As(err, &te):
			return &InvalidError{Reason: ReasonWrongType, Detail: fmt.Sprintf("field %s: got JSON %s, want %s", te.Field, te.Value, te.Type)}
		default:
			return &InvalidError{Reason: ReasonMalformedJSON, Detail: err.Error()}
		}
	}
	return c.Validate(now, lim)
}

// Validate checks required fields and value ranges.
func (c *Click) Validate(now time.Time, lim Limits) error {
	missing := func(f string) error {
		return &InvalidError{Reason: ReasonMissingField, Detail: "field " + f + " is missing or empty"}
	}
	switch {
	case c.EventID == "":
		return missing("event_id")
	case c.UserID == "":
		return missing("user_id")
	case c.Type == 0:
		return missing("event_type")
	case c.ItemID == 0:
		return missing("item_id")
	case c.TimestampMs == 0:
		return missing("timestamp_ms")
	}
	if lim.MaxIDLen > 0 {
		for _, f := range [...]struct{ name, v string }{
			{"event_id", c.EventID}, {"user_id", c.UserID}, {"session_id", c.SessionID}, {"category", c.Category},
		} {
			if len(f.v) > lim.MaxIDLen {
				return &InvalidError{Reason: ReasonBadValue, Detail: fmt.Sprintf("field %s is %d bytes, limit %d", f.name, len(f.v), lim.MaxIDLen)}
			}
		}
	}
	for i := 0; i < len(c.UserID); i++ {
		if c.UserID[i] < 0x20 {
			return &InvalidError{Reason: ReasonBadValue, Detail: "user_id contains a control character"}
		}
	}
	if c.ItemID < 0 {
		return &InvalidError{Reason: ReasonBadValue, Detail: fmt.Sprintf("item_id %d is negative", c.ItemID)}
	}
	if c.Price < 0 || c.Price != c.Price {
		return &InvalidError{Reason: ReasonBadValue, Detail: fmt.Sprintf("price %v is not a non-negative number", c.Price)}
	}
	if c.TimestampMs < 0 {
		return &InvalidError{Reason: ReasonBadValue, Detail: fmt.Sprintf("timestamp_ms %d is negative", c.TimestampMs)}
	}
	if lim.MaxFutureSkew > 0 && !now.IsZero() {
		if ahead := time.Duration(c.TimestampMs-now.UnixMilli()) * time.Millisecond; ahead > lim.MaxFutureSkew {
			return &InvalidError{Reason: ReasonFutureTime, Detail: fmt.Sprintf("timestamp_ms %d is %v ahead of now, limit %v", c.TimestampMs, ahead, lim.MaxFutureSkew)}
		}
	}
	return nil
}

// CheckKey rejects a click whose record key is not its user id: the topic is
// partitioned by user, so a wrong key would put the user's state on two workers.
// An empty key is accepted (the user id decides).
func (c *Click) CheckKey(key []byte) error {
	if len(key) > 0 && string(key) != c.UserID {
		return &InvalidError{Reason: ReasonKeyMismatch, Detail: fmt.Sprintf("record key %q is not user_id %q", key, c.UserID)}
	}
	return nil
}

// AppendJSON appends the JSON encoding of c to b. It allocates nothing beyond b's growth.
func (c *Click) AppendJSON(b []byte) []byte {
	b = append(b, `{"event_id":`...)
	b = AppendJSONString(b, c.EventID)
	b = append(b, `,"user_id":`...)
	b = AppendJSONString(b, c.UserID)
	b = append(b, `,"session_id":`...)
	b = AppendJSONString(b, c.SessionID)
	b = append(b, `,"event_type":"`...)
	b = append(b, c.Type.String()...)
	b = append(b, `","item_id":`...)
	b = strconv.AppendInt(b, c.ItemID, 10)
	b = append(b, `,"category":`...)
	b = AppendJSONString(b, c.Category)
	b = append(b, `,"price":`...)
	b = strconv.AppendFloat(b, c.Price, 'f', -1, 64)
	b = append(b, `,"timestamp_ms":`...)
	b = strconv.AppendInt(b, c.TimestampMs, 10)
	return append(b, '}')
}
