package loadtest

import (
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/clickrec/clickrec/gen"
)

// Kind is what gen made an input event: on time, out of order, or invalid.
type Kind uint8

// Kinds of input events (gen.Record.Kind).
const (
	KindOK      Kind = iota // gen.KindOK: event time = intended send time
	KindLate                // gen.KindLate: event time 1–9 min before the send time
	KindInvalid             // gen.KindInvalid(reason): the worker must dead-letter it
)

// Expect is how many recommendations the hot path owes an input event.
type Expect uint8

// Expectations. See Classify for which event gets which.
const (
	// ExpectOne: exactly one recommendation. Missing if none, duplicated if more.
	ExpectOne Expect = iota
	// ExpectMaybe: none or one; which one depends on the partition's watermark
	// when the event is processed. Reported, never counted as missing or
	// unexpected; a second output is still a duplicate.
	ExpectMaybe
	// ExpectNone: no recommendation; one is counted as unexpected.
	ExpectNone
)

// Classify decides what the hot path owes the event in r, given the workers'
// bounded out-of-orderness (--out-of-orderness, 5 min by default):
//
//   - an invalid record must get no recommendation (it goes to the DLQ);
//   - an on-time record ("ok") must get exactly one: its event time is its
//     intended send time, and no record of its partition sent before it has a
//     later event time, so it is at or after the partition's watermark
//     (max event time − out-of-orderness);
//   - a late record whose event time lies at most out-of-orderness before its
//     send time must get exactly one too, for the same reason: max event
//     time ≤ its intended time, so its event time ≥ the watermark;
//   - a late record further behind may or may not be behind its partition's
//     watermark, depending on which records of the partition came before it
//     and on idle-partition watermark advances: it may get one or none.
//     (gen's lateness is at most 9 min, below out-of-orderness + allowed
//     lateness = 10 min, so with the default rules none is ever "too late".)
func Classify(r *gen.Record, outOfOrderness time.Duration) (Kind, Expect) {
	switch {
	case !r.Valid:
		return KindInvalid, ExpectNone
	case r.Lateness > outOfOrderness:
		return KindLate, ExpectMaybe
	case r.Lateness > 0:
		return KindLate, ExpectOne
	}
	return KindOK, ExpectOne
}

// entry is one input event. Times are nanoseconds since the tracker's origin.
type entry struct {
	intended int64 // when the schedule said to send it; latency counts from here
	sent     int64 // when the generator handed it to the producer
	first    int64 // when its first recommendation was read (n > 0)
	scored   int64 // processed_at_ms of the first recommendation (n > 0; 0 if absent)
	n        uint32
	kind     Kind
	expect   Expect
	warm     bool  // warm-up event, not measured
	strategy uint8 // of the first recommendation (n > 0): index into Tracker.strategies
}

// Tracker matches the recommendations read back to the events sent, by
// event_id. Add is called by the generator before an event is produced, so an
// output can never arrive before its input is known. Safe for concurrent use.
type Tracker struct {
	origin time.Time

	mu      sync.Mutex
	ids     map[string]int32
	ev      []entry
	unknown int64 // outputs whose event_id was never sent (or unreadable)
	reused  int64 // event ids sent twice; the later send is not tracked

	// strategies interns the strategy fields read ("model", …); entries
	// refer to them by index. The last slot takes every further name.
	strategies []string
	strategyOf map[string]uint8

	// progress since the last Live call
	live     *hdrhistogram.Histogram
	liveRecv int64
	liveSent int64
	mustSent int64 // ExpectOne events sent, warm-up included
	mustGot  int64 // of which answered
	lastSent int64 // intended time of the newest event sent

	// warm-up
	warmMust, warmGot int64
	warmSealed        bool
	warmDone          chan struct{}
}

// NewTracker returns a tracker whose times count from origin.
func NewTracker(origin time.Time, sizeHint int) *Tracker {
	return &Tracker{
		origin:     origin,
		ids:        make(map[string]int32, sizeHint),
		ev:         make([]entry, 0, sizeHint),
		live:       newLatencyHistogram(3),
		warmDone:   make(chan struct{}),
		strategyOf: map[string]uint8{},
	}
}

// maxStrategies bounds the distinct strategy names kept; a worker writing
// more than the hot path's three (and "" for none) is reported as "other".
const maxStrategies = 16

// strategyIndexLocked interns a strategy name. t.mu must be held.
func (t *Tracker) strategyIndexLocked(name []byte) uint8 {
	if i, ok := t.strategyOf[string(name)]; ok {
		return i
	}
	if len(t.strategies) == maxStrategies-1 {
		t.strategies = append(t.strategies, "other")
	}
	if len(t.strategies) == maxStrategies {
		return maxStrategies - 1
	}
	i := uint8(len(t.strategies))
	t.strategies = append(t.strategies, string(name))
	t.strategyOf[string(name)] = i
	return i
}

// Latencies are recorded in microseconds, from 1 µs to 10 minutes.
const (
	histMinUs = 1
	histMaxUs = int64(10 * time.Minute / time.Microsecond)
)

func newLatencyHistogram(sigfigs int) *hdrhistogram.Histogram {
	return hdrhistogram.New(histMinUs, histMaxUs, sigfigs)
}

func recordNs(h *hdrhistogram.Histogram, ns int64) {
	us := min(max(ns/int64(time.Microsecond), histMinUs), histMaxUs)
	_ = h.RecordValue(us) // cannot fail: us is within the trackable range
}

// Since returns t as nanoseconds since the tracker's origin.
func (t *Tracker) Since(at time.Time) int64 { return int64(at.Sub(t.origin)) }

// Add records a sent event: its id, the time it was due (intended) and the
// time it was handed to the producer. An id seen before is counted as
// reused and not tracked again.
func (t *Tracker) Add(id string, intended, sent time.Time, kind Kind, expect Expect, warm bool) {
	e := entry{intended: t.Since(intended), sent: t.Since(sent), kind: kind, expect: expect, warm: warm}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.ids[id]; dup {
		t.reused++
		return
	}
	t.ids[id] = int32(len(t.ev))
	t.ev = append(t.ev, e)
	t.liveSent++
	t.lastSent = e.intended
	if expect == ExpectOne {
		t.mustSent++
		if warm {
			t.warmMust++
		}
	}
}

// Output is a recommendation as read: its event id (nil if unreadable), the
// wall-clock time the worker stamped as processed_at_ms (0 if none) and its
// strategy field (empty if none).
type Output struct {
	EventID       []byte
	ProcessedAtMs int64
	Strategy      []byte
}

// Received records recommendations read at time at, given their event ids
// (nil for an output whose event_id could not be read).
func (t *Tracker) Received(ids [][]byte, at time.Time) {
	outs := make([]Output, len(ids))
	for i, id := range ids {
		outs[i].EventID = id
	}
	t.ReceivedOutputs(outs, at)
}

// ReceivedOutputs records recommendations read at time at.
func (t *Tracker) ReceivedOutputs(outs []Output, at time.Time) {
	now := t.Since(at)
	originWall := t.origin.UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, o := range outs {
		id := o.EventID
		i, ok := t.ids[string(id)]
		if id == nil || !ok {
			t.unknown++
			continue
		}
		e := &t.ev[i]
		e.n++
		if e.n > 1 {
			continue
		}
		e.first = now
		e.strategy = t.strategyIndexLocked(o.Strategy)
		if o.ProcessedAtMs > 0 {
			e.scored = o.ProcessedAtMs*int64(time.Millisecond) - originWall
		}
		t.liveRecv++
		if e.expect == ExpectNone {
			continue
		}
		if !e.warm {
			recordNs(t.live, now-e.intended)
		}
		if e.expect == ExpectOne {
			t.mustGot++
			if e.warm {
				t.warmGot++
				t.checkWarmLocked()
			}
		}
	}
}

// SealWarmup says that every warm-up event has been added; WarmupDone closes
// once each of them that must have a recommendation has one.
func (t *Tracker) SealWarmup() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.warmSealed = true
	t.checkWarmLocked()
}

func (t *Tracker) checkWarmLocked() {
	if t.warmSealed && t.warmGot == t.warmMust {
		select {
		case <-t.warmDone:
		default:
			close(t.warmDone)
		}
	}
}

// WarmupDone is closed once the sealed warm-up is fully answered.
func (t *Tracker) WarmupDone() <-chan struct{} { return t.warmDone }

// WarmupProgress returns how many warm-up events must be answered and how
// many are.
func (t *Tracker) WarmupProgress() (must, got int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.warmMust, t.warmGot
}

// Live is what progress reports show: since the previous call, events sent,
// first outputs read and the latency of the measured ones; overall, the
// events still owed a recommendation and how far behind the newest event is.
type Live struct {
	Sent, Received int64
	InFlight       int64 // ExpectOne events sent and not answered yet
	Unknown        int64
	Latency        *hdrhistogram.Histogram // latencies recorded since the last call
	LastIntended   time.Duration           // due time of the newest event sent, since origin
}

// Live returns the progress since the last call and resets the interval.
func (t *Tracker) Live() Live {
	fresh := newLatencyHistogram(3)
	t.mu.Lock()
	defer t.mu.Unlock()
	l := Live{Sent: t.liveSent, Received: t.liveRecv, InFlight: t.mustSent - t.mustGot, Unknown: t.unknown,
		Latency: t.live, LastIntended: time.Duration(t.lastSent)}
	t.live, t.liveSent, t.liveRecv = fresh, 0, 0
	return l
}

// Provisional judges the measured events due in [from, to) (offsets since
// the origin) as they stand: their latency percentiles, counting an event not
// answered yet as infinitely late (math.MaxInt64). The ramp uses it to stop
// at the first step that has clearly missed its SLA.
func (t *Tracker) Provisional(from, to int64) (n int64, p95, p99 time.Duration) {
	h := newLatencyHistogram(2)
	t.mu.Lock()
	defer t.mu.Unlock()
	lo := searchIntended(t.ev, from)
	var pending int64
	for i := lo; i < len(t.ev) && t.ev[i].intended < to; i++ {
		e := &t.ev[i]
		if e.warm || e.expect != ExpectOne {
			continue
		}
		n++
		if e.n == 0 {
			pending++
			continue
		}
		recordNs(h, e.first-e.intended)
	}
	if n == 0 {
		return 0, 0, 0
	}
	q := func(p float64) time.Duration {
		rank := int64(math.Ceil(p / 100 * float64(n)))
		if rank > h.TotalCount() { // the rank falls among the unanswered
			return time.Duration(math.MaxInt64)
		}
		return time.Duration(h.ValueAtPercentile(100*float64(rank)/float64(h.TotalCount()))) * time.Microsecond
	}
	return n, q(95), q(99)
}

// Window returns the measured events owed exactly one recommendation that
// are due in [from, to) (offsets since the origin): how many, how many are
// not answered (yet), and the latencies of the answered ones.
func (t *Tracker) Window(from, to int64) (clicks, unanswered int64, h *hdrhistogram.Histogram) {
	return t.window(from, to, false)
}

// WarmWindow is Window of the warm-up events.
func (t *Tracker) WarmWindow(from, to int64) (clicks, unanswered int64, h *hdrhistogram.Histogram) {
	return t.window(from, to, true)
}

func (t *Tracker) window(from, to int64, warm bool) (clicks, unanswered int64, h *hdrhistogram.Histogram) {
	h = newLatencyHistogram(3)
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := searchIntended(t.ev, from); i < len(t.ev) && t.ev[i].intended < to; i++ {
		e := &t.ev[i]
		if e.warm != warm || e.expect != ExpectOne {
			continue
		}
		clicks++
		if e.n == 0 {
			unanswered++
			continue
		}
		recordNs(h, e.first-e.intended)
	}
	return clicks, unanswered, h
}

// searchIntended returns the first index whose intended time is ≥ at. Events
// are added in schedule order, so intended times do not decrease.
func searchIntended(ev []entry, at int64) int {
	lo, hi := 0, len(ev)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if ev[m].intended < at {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// trackingSource adds every record of src to a tracker just before the
// generator produces it, with the intended time the pacer stamped it with
// (gen.Run passes it to Next) and the actual time.
// A valid click on a new item is also handed to fresh (if not nil), whose
// first click is logged.
type trackingSource struct {
	src            gen.Source
	tr             *Tracker
	outOfOrderness time.Duration
	warm           bool
	fresh          *freshTracker
	start          time.Time    // of the measured run, for the log
	log            *slog.Logger // nil: none
}

// Next implements gen.Source.
func (s *trackingSource) Next(r *gen.Record, at time.Time) bool {
	if !s.src.Next(r, at) {
		return false
	}
	kind, exp := Classify(r, s.outOfOrderness)
	s.tr.Add(r.Click.EventID, at, time.Now(), kind, exp, s.warm)
	if s.fresh != nil && r.Valid && s.fresh.isNew(r.Click.ItemID) && s.fresh.clicked(r.Click.ItemID, at) && s.log != nil {
		s.log.Info("a new item got its first click; its time to a first recommendation counts from here",
			"item", r.Click.ItemID, "t", at.Sub(s.start).Round(time.Millisecond), "user", r.Click.UserID)
	}
	return true
}
