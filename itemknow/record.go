package itemknow

import (
	"encoding/binary"
	"fmt"
)

// A record of the item-knowledge topic carries the increments of one input
// partition's clicks in one transaction: each increment's encoding
// (Increment.AppendBinary) behind its length as a uvarint. Batching them
// keeps the topic's record count at one per partition per transaction
// whatever the click rate.

// AppendRecord appends inc, length-prefixed, to a record value being built.
func AppendRecord(b []byte, inc Increment) []byte {
	n := len(b)
	b = append(b, 0) // the length: every encoding is shorter than 128 bytes
	b, err := inc.AppendBinary(b)
	if err != nil { // NPrev > MaxPrev: NewIncrement never makes one
		return b[:n]
	}
	b[n] = byte(len(b) - n - 1)
	return b
}

// DecodeRecord calls fn with each increment of a record value built by
// AppendRecord, in order, and returns how many it decoded. A malformed
// increment stops it with an error (the ones before it were handed over).
func DecodeRecord(v []byte, fn func(Increment)) (int, error) {
	n := 0
	for len(v) > 0 {
		l, k := binary.Uvarint(v)
		if k <= 0 || l > uint64(len(v)-k) {
			return n, fmt.Errorf("increment %d: %w", n, ErrBadIncrement)
		}
		inc, err := Decode(v[k : k+int(l)])
		if err != nil {
			return n, fmt.Errorf("increment %d: %w", n, err)
		}
		fn(inc)
		n++
		v = v[k+int(l):]
	}
	return n, nil
}

// CategoryKey maps a category name to Increment.Category and PopularIn's
// key (FNV-1a, 64 bits); "" is 0, "unknown".
func CategoryKey(name string) int64 {
	if name == "" {
		return 0
	}
	if k := int64(fnv64a(name)); k != 0 {
		return k
	}
	return 1
}

// fnv64a is FNV-1a over s, 64 bits, without hash.Hash's allocation.
func fnv64a(s string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime
	}
	return h
}
