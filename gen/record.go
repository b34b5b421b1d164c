// Package gen generates clickstream traffic for clickrec: a synthetic shop
// (Synthetic) and a replay of the Taobao UserBehavior data (Replay), both
// producing Records — a Kafka key and JSON value plus the click they carry —
// with a configurable share of out-of-order ("late") and invalid records.
// A Pacer sends them on an open-model schedule (event i is due at start +
// offset(i), whatever the sink does) and Run drives a Source into a Sink
// (stdout JSON lines or Kafka) with progress logs.
//
// Sources are deterministic: the same seed and the same sequence of times passed
// to Next give byte-identical records. Sources and sinks are not safe for
// concurrent use; one goroutine drives them.
package gen

import (
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/clickrec/clickrec/event"
)

// Record kinds. Invalid records have the kind "invalid:<reason>", where reason
// is the event.Reason the consumer reports for them (KindInvalid returns it).
const (
	KindOK   = "ok"
	KindLate = "late"
)

// KindInvalid returns the Kind of an invalid record rejected with reason.
func KindInvalid(reason event.Reason) string { return "invalid:" + string(reason) }

// InvalidReasons are the kinds of invalid records the generators produce, in
// equal shares: a truncated record or one with a raw newline in a string
// (malformed_json), an event_type outside view/cart/purchase, a record without
// user_id (missing_field), a number sent as a string (wrong_field_type), a
// record over event.DefaultLimits.MaxRecordBytes (oversize_record) and a valid
// value whose Kafka key is not its user_id (key_mismatch). event.Decode rejects
// all but the last; Click.CheckKey rejects the last.
var InvalidReasons = [...]event.Reason{
	event.ReasonMalformedJSON,
	event.ReasonUnknownType,
	event.ReasonMissingField,
	event.ReasonWrongType,
	event.ReasonOversize,
	event.ReasonKeyMismatch,
}

var invalidKinds = func() (k [len(InvalidReasons)]string) {
	for i, r := range InvalidReasons {
		k[i] = KindInvalid(r)
	}
	return k
}()

// Lateness of out-of-order records: the event time is uniformly between
// MinLateness and MaxLateness before the time the record is sent, the way a
// mobile app syncs clicks it buffered offline. With the stream worker's
// allowed lateness of 5 minutes about half of them are still accepted.
const (
	MinLateness = time.Minute
	MaxLateness = 9 * time.Minute
)

// Record is one generated Kafka record and what it stands for.
//
// A Source owns nothing of a Record: Next overwrites every field and reuses the
// Key and Value buffers, so a caller that keeps them past the next call to Next
// with the same Record must copy them.
type Record struct {
	Key   []byte // the user id (for key_mismatch records, something else)
	Value []byte // JSON; Click.AppendJSON for valid records

	// Click is the click the record carries. For an invalid record it is the
	// click before it was broken, with the intended (not late) timestamp.
	Click event.Click
	// Valid is true for kinds "ok" and "late": event.Decode accepts Value and
	// Click.CheckKey accepts Key.
	Valid bool
	// Kind is KindOK, KindLate or KindInvalid(Reason).
	Kind string
	// Reason is the rejection reason of an invalid record, "" for a valid one.
	Reason event.Reason
	// Lateness is how far the event time lies before the send time (late records only).
	Lateness time.Duration
	// Seq numbers the records of a source from 0.
	Seq int64
}

// Source produces records. Next fills r with the next record, stamping it with
// event time now (minus the lateness of a late record), and reports false when
// the source is exhausted.
type Source interface {
	Next(r *Record, now time.Time) bool
}

// faults turns a complete click into a record: on time, late or invalid. It has
// its own random stream, so changing the shares does not change the clicks.
type faults struct {
	late, invalid float64
	rng           *rand.Rand
	num           []byte // scratch for formatting numbers
}

// Stream identifiers of the PCG generators derived from a seed.
const (
	streamBehaviour = 0x9e3779b97f4a7c15
	streamFaults    = 0xc2b2ae3d27d4eb4f
	streamCatalogue = 0x165667b19e3779f9
	streamNewItems  = 0x27d4eb2f165667c5 // of the catalogue seed: the new items and their anchors
	streamLaunch    = 0x85ebca6bc2b2ae35 // of the seed: which views launch a new item
)

func newFaults(late, invalid float64, seed uint64) faults {
	return faults{late: late, invalid: invalid, rng: rand.New(rand.NewPCG(seed, streamFaults))}
}

// finish stamps r.Click with nowMs, decides the record's kind and encodes Key
// and Value. Every other field of r.Click must be set.
func (f *faults) finish(r *Record, nowMs int64) {
	c := &r.Click
	c.TimestampMs = nowMs
	r.Key = append(r.Key[:0], c.UserID...)
	r.Lateness, r.Reason = 0, ""
	u := f.rng.Float64()
	switch {
	case u < f.invalid:
		f.corrupt(r)
		return
	case u < f.invalid+f.late:
		late := MinLateness + time.Duration(f.rng.Int64N(int64((MaxLateness-MinLateness)/time.Millisecond)))*time.Millisecond
		c.TimestampMs -= late.Milliseconds()
		r.Lateness, r.Kind = late, KindLate
	default:
		r.Kind = KindOK
	}
	r.Valid = true
	r.Value = c.AppendJSON(r.Value[:0])
}

// unknownTypes are event_type values a buggy or newer client might send.
var unknownTypes = [...]string{"click", "add_to_cart", "like", "wishlist", "VIEW"}

// oversizePad makes a record larger than event.DefaultLimits.MaxRecordBytes on its own.
var oversizePad = func() []byte {
	b := make([]byte, event.DefaultLimits.MaxRecordBytes)
	for i := range b {
		b[i] = 'x'
	}
	return b
}()

// corrupt makes r an invalid record of a random kind. r.Click keeps the click
// that was broken, with its on-time timestamp.
func (f *faults) corrupt(r *Record) {
	k := f.rng.IntN(len(InvalidReasons))
	r.Valid, r.Reason, r.Kind = false, InvalidReasons[k], invalidKinds[k]
	c := &r.Click
	b := r.Value[:0]
	switch r.Reason {
	case event.ReasonMalformedJSON:
		if f.rng.IntN(2) == 0 {
			// Cut off in transit: every strict prefix of an object is invalid JSON.
			b = c.AppendJSON(b)
			b = b[:1+f.rng.IntN(len(b)-1)]
		} else {
			// A raw line break inside a string, which JSON forbids.
			b = append(b, `{"event_id":"`...)
			b = append(b, c.EventID...)
			b = append(b, "\n\""...)
			b = f.appendFrom(b, c, fieldUserID, false)
		}
	case event.ReasonUnknownType:
		b = f.appendUpTo(b, c, fieldType)
		b = append(b, `,"event_type":"`...)
		b = append(b, unknownTypes[f.rng.IntN(len(unknownTypes))]...)
		b = append(b, '"')
		b = f.appendFrom(b, c, fieldItem, false)
	case event.ReasonMissingField:
		b = append(b, `{"event_id":`...)
		b = event.AppendJSONString(b, c.EventID)
		b = f.appendFrom(b, c, fieldSession, false)
	case event.ReasonWrongType:
		// One number field sent as a string, as a client written in a
		// loosely typed language might.
		fld := [...]field{fieldItem, fieldPrice, fieldTimestamp}[f.rng.IntN(3)]
		b = f.appendUpTo(b, c, fld)
		b = f.appendFrom(b, c, fld, true)
	case event.ReasonOversize:
		b = c.AppendJSON(b)
		b = append(b[:len(b)-1], `,"debug":"`...)
		b = append(b, oversizePad...)
		b = append(b, `"}`...)
	case event.ReasonKeyMismatch:
		// A producer that keys by session or by item instead of by user.
		if f.rng.IntN(2) == 0 && c.SessionID != c.UserID {
			r.Key = append(r.Key[:0], c.SessionID...)
		} else {
			r.Key = strconv.AppendInt(r.Key[:0], c.ItemID, 10)
			if string(r.Key) == c.UserID {
				r.Key = append(r.Key, "-item"...)
			}
		}
		b = c.AppendJSON(b)
	}
	r.Value = b
}

// field names the fields of a click in the order AppendJSON writes them.
type field int

const (
	fieldEventID field = iota
	fieldUserID
	fieldSession
	fieldType
	fieldItem
	fieldCategory
	fieldPrice
	fieldTimestamp
	numFields
)

// appendUpTo appends "{" and the fields before stop, in AppendJSON's order.
func (f *faults) appendUpTo(b []byte, c *event.Click, stop field) []byte {
	b = append(b, '{')
	for fld := fieldEventID; fld < stop; fld++ {
		if fld > fieldEventID {
			b = append(b, ',')
		}
		b = f.appendField(b, c, fld, false)
	}
	return b
}

// appendFrom appends the fields from start on and the closing brace; with
// quoteFirst the first of them is written as a JSON string.
func (f *faults) appendFrom(b []byte, c *event.Click, start field, quoteFirst bool) []byte {
	for fld := start; fld < numFields; fld++ {
		if fld > fieldEventID {
			b = append(b, ',')
		}
		b = f.appendField(b, c, fld, fld == start && quoteFirst)
	}
	return append(b, '}')
}

func (f *faults) appendField(b []byte, c *event.Click, fld field, quoted bool) []byte {
	num := func(b []byte, name string, n []byte) []byte {
		b = append(b, name...)
		if quoted {
			b = append(b, '"')
			b = append(b, n...)
			return append(b, '"')
		}
		return append(b, n...)
	}
	switch fld {
	case fieldEventID:
		return event.AppendJSONString(append(b, `"event_id":`...), c.EventID)
	case fieldUserID:
		return event.AppendJSONString(append(b, `"user_id":`...), c.UserID)
	case fieldSession:
		return event.AppendJSONString(append(b, `"session_id":`...), c.SessionID)
	case fieldType:
		b = append(b, `"event_type":"`...)
		b = append(b, c.Type.String()...)
		return append(b, '"')
	case fieldItem:
		f.num = strconv.AppendInt(f.num[:0], c.ItemID, 10)
		return num(b, `"item_id":`, f.num)
	case fieldCategory:
		return event.AppendJSONString(append(b, `"category":`...), c.Category)
	case fieldPrice:
		f.num = strconv.AppendFloat(f.num[:0], c.Price, 'f', -1, 64)
		return num(b, `"price":`, f.num)
	case fieldTimestamp:
		f.num = strconv.AppendInt(f.num[:0], c.TimestampMs, 10)
		return num(b, `"timestamp_ms":`, f.num)
	}
	return b
}
