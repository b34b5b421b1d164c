package hotpath

import (
	"encoding/binary"
	"math"

	"github.com/clickrec/clickrec/wire"
)

// The last recommendation committed for a user is part of the user's state,
// so that whatever writes the user's feature store entry — the batch that
// committed it, a later batch without a recommendation (a late click, a
// window firing), the rewrite after a restore — writes the same
// recommendation that the recommendations topic holds last for the user.
//
// It is kept compact (the user id is the state's key, a score is its float32
// bits): a click's record is about 450 bytes of JSON, its state form about
// 140. AppendJSON of the decoded form gives the committed record's value back
// byte for byte.

// appendLastRec appends r, answering the user's click number seq, in the
// state's form.
func appendLastRec(b []byte, seq uint64, r *wire.Recommendation) []byte {
	b = binary.AppendUvarint(b, seq)
	b = appendString(b, r.EventID)
	b = appendString(b, r.Strategy)
	b = appendString(b, r.ModelVersion)
	b = binary.AppendVarint(b, r.EventTimeMs)
	b = binary.AppendVarint(b, r.ProcessedAtMs)
	b = binary.AppendUvarint(b, uint64(len(r.Items)))
	for _, it := range r.Items {
		b = binary.AppendVarint(b, it.ItemID)
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(it.Score))
	}
	return b
}

// decodeLastRec reads a recommendation written by appendLastRec into r (its
// item slice reused), for user. It returns the click number it answers.
func decodeLastRec(b []byte, user string, r *wire.Recommendation) (seq uint64, err error) {
	d := &decoder{b: b}
	seq = d.uvarint()
	r.EventID, r.UserID = d.str(), user
	r.Strategy, r.ModelVersion = d.cat(), d.cat() // few distinct values: shared strings
	r.EventTimeMs, r.ProcessedAtMs = d.varint(), d.varint()
	n := d.count(len(d.b))
	r.Items = r.Items[:0]
	for range n {
		id := d.varint()
		if d.err == nil && len(d.b) < 4 {
			d.err = errCorruptState
		}
		if d.err != nil {
			break
		}
		r.Items = append(r.Items, wire.Item{ItemID: id, Score: math.Float32frombits(binary.LittleEndian.Uint32(d.b))})
		d.b = d.b[4:]
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errCorruptState
	}
	return seq, d.err
}
