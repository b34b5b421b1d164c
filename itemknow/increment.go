package itemknow

import (
	"encoding/binary"
	"errors"
)

// MaxPrev is the most previous session items an Increment carries.
const MaxPrev = 4

// incrementVersion is the first byte of an encoded Increment.
const incrementVersion = 1

// Increment is what one click teaches the table, derived deterministically
// from the click and its session: the only thing Apply accepts, so every
// worker applying the same increments holds the same knowledge. It is a
// value type of fixed size; the future item-knowledge topic carries it in
// AppendBinary's encoding.
type Increment struct {
	TimeMs   int64  // click time, Unix ms
	Item     int64  // clicked item
	Category int64  // its category, 0 when unknown
	Session  uint64 // hash of the session id (SessionHash): tells sessions apart for admission
	// Seq is the click's position in its session (0 for the first click);
	// Apply ignores clicks past Config.MaxSessionClicks, so one session (a
	// bot) cannot contribute more than that.
	Seq uint32
	// Prev holds the session's previous distinct items, newest first; NPrev
	// of them are set.
	Prev  [MaxPrev]int64
	NPrev uint8
}

// SessionHash hashes a session id for Increment.Session (FNV-1a, 64 bits;
// never 0, which means "no session").
func SessionHash(id string) uint64 {
	if s := fnv64a(id); s != 0 {
		return s
	}
	return 1
}

// NewIncrement derives the increment of a click on item at timeMs from the
// session's items before it (oldest first): the newest MaxPrev distinct
// ones other than item go into Prev.
func NewIncrement(timeMs int64, item, category int64, session uint64, before []int64) Increment {
	inc := Increment{TimeMs: timeMs, Item: item, Category: category, Session: session, Seq: uint32(len(before))}
	for i := len(before) - 1; i >= 0 && int(inc.NPrev) < MaxPrev; i-- {
		p := before[i]
		if p == item {
			continue
		}
		dup := false
		for _, q := range inc.Prev[:inc.NPrev] {
			if q == p {
				dup = true
				break
			}
		}
		if !dup {
			inc.Prev[inc.NPrev] = p
			inc.NPrev++
		}
	}
	return inc
}

// ErrBadIncrement is returned by Decode for bytes that are not an encoded
// Increment.
var ErrBadIncrement = errors.New("itemknow: malformed increment")

// AppendBinary appends the increment's encoding to b: a version byte, then
// varints (time, item, category, session, seq, the number of previous items
// and each of them as a difference from Item, which keeps neighbouring ids
// short). 12–60 bytes.
func (inc Increment) AppendBinary(b []byte) ([]byte, error) {
	if inc.NPrev > MaxPrev {
		return b, ErrBadIncrement
	}
	b = append(b, incrementVersion)
	b = binary.AppendVarint(b, inc.TimeMs)
	b = binary.AppendVarint(b, inc.Item)
	b = binary.AppendVarint(b, inc.Category)
	b = binary.AppendUvarint(b, inc.Session)
	b = binary.AppendUvarint(b, uint64(inc.Seq))
	b = append(b, inc.NPrev)
	for _, p := range inc.Prev[:inc.NPrev] {
		b = binary.AppendVarint(b, p-inc.Item)
	}
	return b, nil
}

// Decode decodes an increment encoded by AppendBinary; trailing bytes are an
// error.
func Decode(b []byte) (Increment, error) {
	var inc Increment
	if len(b) < 1 || b[0] != incrementVersion {
		return inc, ErrBadIncrement
	}
	b = b[1:]
	var ok bool
	varint := func() int64 {
		v, n := binary.Varint(b)
		if n <= 0 {
			ok = false
			return 0
		}
		b = b[n:]
		return v
	}
	uvarint := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			ok = false
			return 0
		}
		b = b[n:]
		return v
	}
	ok = true
	inc.TimeMs = varint()
	inc.Item = varint()
	inc.Category = varint()
	inc.Session = uvarint()
	seq := uvarint()
	if !ok || seq > 1<<32-1 || len(b) < 1 || b[0] > MaxPrev {
		return Increment{}, ErrBadIncrement
	}
	inc.Seq = uint32(seq)
	inc.NPrev = b[0]
	b = b[1:]
	for i := range int(inc.NPrev) {
		inc.Prev[i] = varint() + inc.Item
	}
	if !ok || len(b) != 0 {
		return Increment{}, ErrBadIncrement
	}
	return inc, nil
}
