package itemknow

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
)

// A snapshot is a table's whole state in bytes, so a restarted worker loads
// it and reads only the item-knowledge topic's tail instead of its whole
// lookback (Global.Run). Varints and float bits, no compression: ≈ 20 B per
// pair, a table at its caps in about 25 MB.

const snapshotVersion = 1

// ErrSnapshot is returned for bytes that are not a snapshot of a table with
// the same learning configuration (half-life, epoch, caps, back weight).
var ErrSnapshot = errors.New("itemknow: not a snapshot of this configuration")

type enc struct{ b []byte }

func (e *enc) u(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) i(v int64)  { e.b = binary.AppendVarint(e.b, v) }
func (e *enc) f(v float64) {
	e.b = binary.LittleEndian.AppendUint64(e.b, math.Float64bits(v))
}
func (e *enc) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}

type dec struct {
	b   []byte
	err error
}

func (d *dec) u() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}
func (d *dec) i() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}
func (d *dec) f() float64 {
	if len(d.b) < 8 {
		d.fail()
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(d.b))
	d.b = d.b[8:]
	return v
}
func (d *dec) bool() bool {
	if len(d.b) < 1 {
		d.fail()
		return false
	}
	v := d.b[0] == 1
	d.b = d.b[1:]
	return v
}

// n reads a count that must not exceed limit (a corrupt count must not
// allocate gigabytes).
func (d *dec) n(limit int) int {
	v := d.u()
	if v > uint64(limit) {
		d.fail()
		return 0
	}
	return int(v)
}

func (d *dec) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated or corrupt", ErrSnapshot)
	}
	d.b = nil
}

// identity encodes what must match between the table that wrote a snapshot
// and the one loading it.
func (c Config) identity(e *enc) {
	e.i(c.HalfLife.Milliseconds())
	e.i(c.EpochMs)
	for _, v := range []int{c.MaxItems, c.MaxPairsPerItem, c.MaxPairs, c.MaxCategories, c.TopN} {
		e.u(uint64(v))
	}
	e.u(uint64(c.MaxSessionClicks))
	e.f(c.BackWeight)
}

// AppendSnapshot appends the table's state to b. It only reads the table,
// scratch space aside: the one goroutine that applies may call it while
// others query.
func (t *Table) AppendSnapshot(b []byte) []byte {
	e := &enc{b: append(b, snapshotVersion)}
	t.cfg.identity(e)
	e.i(t.epochMs)
	e.u(uint64(len(t.items)))
	for i := range t.items {
		it := &t.items[i]
		e.i(it.id)
		e.i(it.cat)
		e.i(it.catMs)
		e.f(it.pop)
		e.u(uint64(it.gen))
		e.u(uint64(it.sess))
		e.bool(it.est)
		e.bool(it.live)
		e.u(uint64(it.nEstNbr))
		e.u(uint64(len(it.nbrs)))
		for _, p := range it.nbrs {
			e.f(p.w)
			e.u(uint64(p.slot))
			e.u(uint64(p.gen))
			e.u(uint64(p.sess))
			e.bool(p.est)
		}
	}
	e.u(uint64(t.nEst))
	e.u(uint64(t.pairs))
	list := func(l *topList) {
		e.u(uint64(len(l.slots)))
		for _, s := range l.slots {
			e.u(uint64(s))
		}
	}
	list(&t.top)
	e.u(uint64(len(t.cats)))
	for _, k := range slices.Sorted(maps.Keys(t.cats)) { // deterministic bytes
		e.i(k)
		list(t.cats[k])
	}
	for _, v := range []int64{t.st.ItemEvictions, t.st.PairEvictions, t.st.Rejected, t.st.Capped, t.st.Applied, t.st.NewestMs} {
		e.i(v)
	}
	return e.b
}

// LoadSnapshot returns the table a snapshot holds. cfg must have the
// learning configuration of the table that wrote it (ErrSnapshot
// otherwise); its query settings (QueryProbation…) are cfg's.
func LoadSnapshot(cfg Config, b []byte) (*Table, error) {
	t := New(cfg)
	want := &enc{}
	t.cfg.identity(want)
	if len(b) < 1+len(want.b) || b[0] != snapshotVersion || string(b[1:1+len(want.b)]) != string(want.b) {
		return nil, ErrSnapshot
	}
	d := &dec{b: b[1+len(want.b):]}
	t.epochMs = d.i()
	n := d.n(t.cfg.MaxItems)
	t.items = make([]item, n)
	t.mark = make([]int32, n)
	slot := func() int32 {
		s := d.u()
		if s >= uint64(n) {
			d.fail()
			return 0
		}
		return int32(s)
	}
	for i := range t.items {
		it := &t.items[i]
		it.id, it.cat, it.catMs, it.pop = d.i(), d.i(), d.i(), d.f()
		it.gen, it.sess = uint32(d.u()), uint32(d.u())
		it.est, it.live = d.bool(), d.bool()
		it.nEstNbr = int(d.u())
		it.nbrs = make([]pair, d.n(t.cfg.MaxPairsPerItem))
		for j := range it.nbrs {
			p := &it.nbrs[j]
			p.w = d.f()
			p.slot = slot()
			p.gen, p.sess = uint32(d.u()), uint32(d.u())
			p.est = d.bool()
		}
		if it.live {
			t.index[it.id] = int32(i)
		}
	}
	t.nEst = d.n(t.cfg.MaxItems)
	t.pairs = d.n(t.cfg.MaxPairs)
	list := func(l *topList) {
		l.slots = make([]int32, d.n(t.cfg.TopN))
		for i := range l.slots {
			l.slots[i] = slot()
		}
	}
	list(&t.top)
	for range d.n(t.cfg.MaxCategories) {
		k := d.i()
		l := &topList{}
		list(l)
		t.cats[k] = l
	}
	for _, v := range []*int64{&t.st.ItemEvictions, &t.st.PairEvictions, &t.st.Rejected, &t.st.Capped, &t.st.Applied, &t.st.NewestMs} {
		*v = d.i()
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	if d.err != nil {
		return nil, d.err
	}
	return t, nil
}
