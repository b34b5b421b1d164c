package hotpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/clickrec/clickrec/event"
)

// userState is everything the hot path remembers about one shopper. It lives in
// memory on the worker that owns the shopper's partition, and every change is
// written to the compacted changelog in the same transaction as the outputs it
// caused, so a restarted or new owner restores exactly the committed state.
type userState struct {
	id           string
	seq          uint64 // events applied; orders Redis writes across owners
	born         int64  // ms, event time of this incarnation's first event (0: unknown, a version 1 record)
	session      string
	sessionStart int64 // ms, event time of the session's first event
	lastTs       int64 // ms, newest event time seen
	sessionEvts  uint32
	recent       []recentEvent // newest last, at most cfg.RecentItems
	catTime      []catDwell    // dwell per category in this session, ms
	purchased    []int64       // recently bought items, never recommended
	windows      []window      // open 1-minute windows, by start
	// offset is the input offset of the last click applied (-1: unknown, a
	// record before version 3). At-least-once mode replays a batch whose
	// offsets did not commit over state that may hold it already: a click
	// at or below it is not applied again.
	offset int64
	// rec is the last recommendation committed for this incarnation, in
	// appendLastRec's form (nil: none yet). See lastrec.go.
	rec []byte
}

type recentEvent struct {
	item int64
	cat  string
	typ  event.Type
	ts   int64
}

type catDwell struct {
	cat string
	ms  int64
}

type catCount struct {
	cat string
	n   uint32
}

// window is one 1-minute tumbling event-time window of a user.
type window struct {
	start  int64
	byType [3]uint32 // view, cart, purchase
	byCat  []catCount
	fired  uint32 // times emitted; >1 means late updates re-fired it
	dirty  bool   // changed since last emitted (not persisted: recomputed as fired==0)
}

func (w *window) events() uint32 { return w.byType[0] + w.byType[1] + w.byType[2] }

func (w *window) add(typ event.Type, cat string) {
	w.byType[typ-1]++
	for i := range w.byCat {
		if w.byCat[i].cat == cat {
			w.byCat[i].n++
			return
		}
	}
	w.byCat = append(w.byCat, catCount{cat, 1})
}

const (
	maxPurchased  = 16
	maxCategories = 32
)

// apply adds an accepted click to the state. It returns the window the click fell in.
func (u *userState) apply(c *event.Click, cfg *Config) *window {
	u.seq++
	ts := c.TimestampMs
	gap := ts - u.lastTs
	newSession := u.sessionEvts == 0 ||
		(c.SessionID != "" && c.SessionID != u.session) ||
		(c.SessionID == "" && gap > cfg.SessionGap.Milliseconds())
	if newSession && ts >= u.lastTs {
		u.session = c.SessionID
		u.sessionStart = ts
		u.sessionEvts = 0
		u.catTime = u.catTime[:0]
	} else if gap > 0 && len(u.recent) > 0 {
		// Time spent on the previous item counts for its category, capped: a
		// shopper who left the tab open did not shop for an hour.
		prev := u.recent[len(u.recent)-1]
		d := min(gap, cfg.DwellCap.Milliseconds())
		u.addDwell(prev.cat, d)
	}
	if ts < u.sessionStart {
		u.sessionStart = ts
	}
	u.sessionEvts++
	if ts > u.lastTs {
		u.lastTs = ts
	}

	// Recent events stay in event-time order: a late event is inserted, not
	// appended. The slice never grows beyond RecentItems: a full list drops its
	// oldest event to make room (or the new one, if it is older than all).
	cat := cats.str(c.Category)
	re := recentEvent{item: c.ItemID, cat: cat, typ: c.Type, ts: ts}
	i := len(u.recent)
	for i > 0 && u.recent[i-1].ts > ts {
		i--
	}
	switch n := len(u.recent); {
	case n >= cfg.RecentItems:
		if over := n - cfg.RecentItems; over > 0 { // RecentItems lowered since the state was written
			u.recent = slices.Delete(u.recent, 0, over)
			i = max(i-over, 0)
		}
		if i > 0 {
			copy(u.recent[:i-1], u.recent[1:i])
			u.recent[i-1] = re
		}
	case n == cap(u.recent):
		grown := make([]recentEvent, n+1, min(max(4, 2*n), cfg.RecentItems))
		copy(grown, u.recent[:i])
		grown[i] = re
		copy(grown[i+1:], u.recent[i:])
		u.recent = grown
	default:
		u.recent = slices.Insert(u.recent, i, re)
	}
	if c.Type == event.Purchase && !slices.Contains(u.purchased, c.ItemID) {
		u.purchased = append(u.purchased, c.ItemID)
		if len(u.purchased) > maxPurchased {
			u.purchased = slices.Delete(u.purchased, 0, 1)
		}
	}

	start := ts - mod(ts, cfg.Window.Milliseconds())
	j, found := slices.BinarySearchFunc(u.windows, start, func(w window, s int64) int { return cmpInt(w.start, s) })
	if !found {
		u.windows = slices.Insert(u.windows, j, window{start: start})
	}
	w := &u.windows[j]
	w.add(c.Type, cat)
	w.dirty = true
	return w
}

func (u *userState) addDwell(cat string, ms int64) {
	for i := range u.catTime {
		if u.catTime[i].cat == cat {
			u.catTime[i].ms += ms
			return
		}
	}
	if len(u.catTime) < maxCategories {
		u.catTime = append(u.catTime, catDwell{cat, ms})
	}
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Changelog value encoding: a version byte, then varints and length-prefixed
// strings. Compact (state is rewritten on every event) and versioned so a future
// layout can still read today's changelog. Version 2 added born after seq;
// version 3 the input offset and the last recommendation at the end.
const stateVersion = 3

func (u *userState) appendBinary(b []byte) []byte {
	b = append(b, stateVersion)
	b = binary.AppendUvarint(b, u.seq)
	b = binary.AppendVarint(b, u.born)
	b = appendString(b, u.session)
	b = binary.AppendVarint(b, u.sessionStart)
	b = binary.AppendVarint(b, u.lastTs)
	b = binary.AppendUvarint(b, uint64(u.sessionEvts))
	b = binary.AppendUvarint(b, uint64(len(u.recent)))
	for _, r := range u.recent {
		b = binary.AppendVarint(b, r.item)
		b = appendString(b, r.cat)
		b = append(b, byte(r.typ))
		b = binary.AppendVarint(b, r.ts)
	}
	b = binary.AppendUvarint(b, uint64(len(u.catTime)))
	for _, c := range u.catTime {
		b = appendString(b, c.cat)
		b = binary.AppendVarint(b, c.ms)
	}
	b = binary.AppendUvarint(b, uint64(len(u.purchased)))
	for _, p := range u.purchased {
		b = binary.AppendVarint(b, p)
	}
	b = binary.AppendUvarint(b, uint64(len(u.windows)))
	for _, w := range u.windows {
		b = binary.AppendVarint(b, w.start)
		for _, n := range w.byType {
			b = binary.AppendUvarint(b, uint64(n))
		}
		b = binary.AppendUvarint(b, uint64(w.fired))
		b = binary.AppendUvarint(b, uint64(len(w.byCat)))
		for _, c := range w.byCat {
			b = appendString(b, c.cat)
			b = binary.AppendUvarint(b, uint64(c.n))
		}
	}
	b = binary.AppendVarint(b, u.offset)
	b = binary.AppendUvarint(b, uint64(len(u.rec)))
	return append(b, u.rec...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

var errCorruptState = errors.New("corrupt changelog state")

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorruptState
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errCorruptState
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) count(max int) int {
	n := d.uvarint()
	if n > uint64(max) {
		d.err = errCorruptState
		return 0
	}
	return int(n)
}

func (d *decoder) str() string {
	n := d.count(len(d.b))
	if d.err != nil {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// cat reads a category name, shared with every other use of the same name.
func (d *decoder) cat() string {
	n := d.count(len(d.b))
	if d.err != nil {
		return ""
	}
	s := cats.bytes(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) byte1() byte {
	if d.err != nil || len(d.b) == 0 {
		d.err = errCorruptState
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func decodeState(id string, b []byte) (*userState, error) {
	d := &decoder{b: b}
	v := d.byte1()
	if d.err == nil && (v < 1 || v > stateVersion) {
		return nil, fmt.Errorf("%w: version %d, this build reads 1 to %d", errCorruptState, v, stateVersion)
	}
	u := &userState{id: id}
	u.seq = d.uvarint()
	if v >= 2 {
		u.born = d.varint()
	}
	u.session = d.str()
	u.sessionStart = d.varint()
	u.lastTs = d.varint()
	u.sessionEvts = uint32(d.uvarint())
	n := d.count(1 << 16)
	if n > 0 {
		u.recent = make([]recentEvent, 0, n)
	}
	for range n {
		r := recentEvent{item: d.varint(), cat: d.cat(), typ: event.Type(d.byte1()), ts: d.varint()}
		if r.typ < event.View || r.typ > event.Purchase {
			d.err = errCorruptState
		}
		u.recent = append(u.recent, r)
	}
	n = d.count(1 << 16)
	for range n {
		u.catTime = append(u.catTime, catDwell{cat: d.cat(), ms: d.varint()})
	}
	n = d.count(1 << 16)
	for range n {
		u.purchased = append(u.purchased, d.varint())
	}
	n = d.count(1 << 16)
	for range n {
		w := window{start: d.varint()}
		for k := range w.byType {
			w.byType[k] = uint32(d.uvarint())
		}
		w.fired = uint32(d.uvarint())
		m := d.count(1 << 16)
		for range m {
			w.byCat = append(w.byCat, catCount{cat: d.cat(), n: uint32(d.uvarint())})
		}
		u.windows = append(u.windows, w)
	}
	u.offset = -1
	if v >= 3 {
		u.offset = d.varint()
		if n := d.count(len(d.b)); n > 0 && d.err == nil {
			u.rec = slices.Clone(d.b[:n])
			d.b = d.b[n:]
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errCorruptState
	}
	if d.err != nil {
		return nil, fmt.Errorf("user %q: %w", id, d.err)
	}
	return u, nil
}

// StateSummary is what tests and tools may read of a changelog record.
type StateSummary struct {
	User        string
	Seq         uint64 // events applied to this user
	Born        int64  // event time (ms) of this incarnation's first event
	RecentItems []int64
	LastEventMs int64
}

// DecodeChangelog decodes a user's changelog value. ok is false for the
// partition watermark record (not a user).
func DecodeChangelog(key, value []byte) (s StateSummary, ok bool, err error) {
	if string(key) == watermarkKey {
		return s, false, nil
	}
	u, err := decodeState(string(key), value)
	if err != nil {
		return s, false, err
	}
	s = StateSummary{User: u.id, Seq: u.seq, Born: u.born, LastEventMs: u.lastTs}
	for _, r := range u.recent {
		s.RecentItems = append(s.RecentItems, r.item)
	}
	return s, true, nil
}
