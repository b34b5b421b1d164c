package hotpath

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/drift"
	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/featurestore"
	"github.com/clickrec/clickrec/itemknow"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/wire"
)

// Outcome labels of recsys_hotpath_events_total.
const (
	outcomeOnTime  = "on_time"
	outcomeLate    = "late_updated"
	outcomeTooLate = "too_late"
	outcomeInvalid = "invalid"
	// outcomeReplayed: at-least-once mode read again a click its state holds
	// already (the batch's offsets did not commit). Not applied twice; an
	// on-time one is answered again, a duplicate that mode allows.
	outcomeReplayed = "replayed"
)

// watermarkKey is the changelog key of a partition's watermark. User ids cannot
// contain control characters (event.Validate), so it never collides with a user.
const watermarkKey = "\x00watermark"

// partition is the state of one assigned user_events partition.
type partition struct {
	id     int32
	users  Store
	maxTs  int64 // newest event time seen
	wm     int64 // watermark, ms; math.MinInt64 before the first event
	timers timerHeap

	lastRecord time.Time // processing time of the last record, for idleness
	wmDirty    bool      // watermark changed in this batch
	touched    map[string]struct{}

	// What a rollback needs besides the store's own undo: the watermark at
	// the last commit and the timers the batch popped. Timers the batch
	// pushed stay: they are hints, checked against the state when they pop.
	committedMaxTs, committedWm int64
	popped                      []timer

	// Restored users still to be written to Redis again (--redis-rewrite-rate).
	rewrite []string
}

func newPartition(id int32, store string) *partition {
	return newPartitionWith(id, newStore(store))
}

// drop forgets partition id and releases its store.
func (p *processor) drop(id int32) {
	if part := p.parts[id]; part != nil {
		if err := part.users.Close(); err != nil {
			slog.Warn("closing a partition's state store", "partition", id, "err", err)
		}
		delete(p.parts, id)
	}
}

// rewriteRestored returns the Redis effects of at most n restored users, from
// their state now (never older than what a committed transaction wrote); nil
// if none is left. Between batches only.
func (p *processor) rewriteRestored(n int) map[string]redisEffect {
	var effects map[string]redisEffect
	for _, part := range p.parts {
		if len(part.rewrite) == 0 || len(effects) == n {
			continue
		}
		if effects == nil {
			effects = make(map[string]redisEffect, n)
		}
		for len(part.rewrite) > 0 && len(effects) < n {
			id := part.rewrite[len(part.rewrite)-1]
			part.rewrite = part.rewrite[:len(part.rewrite)-1]
			if u := part.users.Get(id); u != nil { // nil: expired since
				e := redisEffect{born: u.born, seq: u.seq, features: u.appendFeatures(nil), events: u.appendRecentJSON(nil)}
				e.recs, e.rseq = p.lastRecJSON(u, false)
				effects[id] = e
			}
		}
		if len(part.rewrite) == 0 {
			part.rewrite = nil
		}
		part.users.Commit() // read, not changed: releases what Get decoded
	}
	return effects
}

// rewriteAll queues every user of every partition to be written to Redis
// again (Redis lost its data). Between batches only.
func (p *processor) rewriteAll() {
	for _, part := range p.parts {
		part.rewrite = part.rewrite[:0]
		part.users.Range(func(u *userState) { part.rewrite = append(part.rewrite, u.id) })
	}
}

// storeErr returns the first error of any partition's state store.
func (p *processor) storeErr() error {
	for id, part := range p.parts {
		if err := part.users.Err(); err != nil {
			return fmt.Errorf("partition %d: %w", id, err)
		}
	}
	return nil
}

// dropAll forgets every partition.
func (p *processor) dropAll() {
	for id := range p.parts {
		p.drop(id)
	}
}

func newPartitionWith(id int32, s Store) *partition {
	return &partition{id: id, users: s, maxTs: math.MinInt64, wm: math.MinInt64, touched: map[string]struct{}{},
		committedMaxTs: math.MinInt64, committedWm: math.MinInt64}
}

// commit makes the batch the partition's state: its transaction committed.
func (part *partition) commit() {
	part.users.Commit()
	part.committedMaxTs, part.committedWm = part.maxTs, part.wm
	part.popped = part.popped[:0]
}

// rollback returns the partition to its state at the last commit: the
// batch's transaction did not commit, and its records are read again. It
// costs what the batch touched, whatever the number of users.
func (part *partition) rollback() {
	part.users.Rollback()
	part.maxTs, part.wm, part.wmDirty = part.committedMaxTs, part.committedWm, false
	for _, t := range part.popped {
		part.timers.add(t)
	}
	part.popped = part.popped[:0]
	clear(part.touched)
}

// commit ends a batch whose transaction committed.
func (p *processor) commit() {
	for _, part := range p.parts {
		part.commit()
	}
}

// rollback ends a batch whose transaction did not commit.
func (p *processor) rollback() {
	for _, part := range p.parts {
		part.rollback()
	}
}

// pendingRec is an on-time click waiting for the batch to be scored.
type pendingRec struct {
	click     event.Click
	recordTs  time.Time
	part      int32
	user      *userState
	itemsOff  int // into processor.items/weights
	itemsLen  int
	exclOff   int
	exclLen   int
	useModel  bool
	seqAtTime uint64
	sessOff   int // into processor.sess: the session's items for the online knowledge
	sessLen   int
}

// processor turns one poll's records into the transaction's output records and
// the Redis writes to run once it commits. It owns no Kafka client, so it is
// tested directly. Not safe for concurrent use.
type processor struct {
	cfg     *Config
	parts   map[int32]*partition
	serving *Serving
	pop     *featurestore.Popularity
	ik      *itemknow.Global // nil: no online item knowledge to rank with
	now     func() time.Time
	m       *metrics

	out     []*kgo.Record // records of the current transaction
	pending []pendingRec
	items   []int32
	weights []float32
	excl    []int32
	inputs  []model.Input
	scored  [][]model.Rec
	effects map[string]redisEffect // by user, the latest wins
	click   event.Click
	buf     []byte
	// rec and win are the records being written, reused (items and
	// categories too) so encoding allocates nothing.
	rec wire.Recommendation
	win wire.Window
	// arena holds every byte slice of the current transaction's records and
	// Redis effects. A fresh one per transaction (sized by the last), so the
	// slices handed to the Kafka client and the Redis writer are never reused.
	arena     []byte
	arenaLast int
	types     []event.Type
	wscratch  []float32
	// live drift profile of the current transaction, merged into the worker's
	// profile only when it commits (nil without a reference).
	live drift.LiveSet
	// e2e latency samples: input record timestamps of the batch's on-time events.
	recordTimes []time.Time
	// scoreErr is the scoring error of the current batch, if any: its clicks
	// got the popularity fallback (the loop logs it).
	scoreErr error

	// learned is the item-knowledge record of this batch's clicks
	// (itemknow.AppendRecord), produced with the batch to the partition
	// learnedPart, the first input partition of the batch that taught
	// something: one record per transaction, whatever its partitions, so a
	// transaction spans one item-knowledge partition only.
	learned     []byte
	learnedPart int32

	// The online item knowledge's scratch: the pending clicks' session
	// items, one click's increment history, and the lists of one ranking.
	sess                     []int64
	before                   []int64
	mlist, olist, blend, liv []itemknow.Scored
	known                    func(int64) bool // the serving model knows an item id
	knownModel               *model.Model
}

func newProcessor(cfg *Config, m *metrics) *processor {
	return &processor{cfg: cfg, parts: map[int32]*partition{}, now: time.Now, m: m, effects: map[string]redisEffect{}}
}

// begin resets the per-transaction buffers.
func (p *processor) begin() {
	clear(p.out)
	p.out = p.out[:0]
	p.pending = p.pending[:0]
	p.items = p.items[:0]
	p.weights = p.weights[:0]
	p.excl = p.excl[:0]
	p.sess = p.sess[:0]
	p.learned = p.learned[:0]
	clear(p.effects)
	p.recordTimes = p.recordTimes[:0]
	p.arenaLast = max(p.arenaLast, len(p.arena))
	p.arena = make([]byte, 0, max(4096, p.arenaLast+p.arenaLast/4))
}

// keep copies b into the arena and returns the copy.
func (p *processor) keep(b []byte) []byte {
	start := len(p.arena)
	p.arena = append(p.arena, b...)
	return p.arena[start:len(p.arena):len(p.arena)]
}

// keepString is keep for a string.
func (p *processor) keepString(s string) []byte {
	start := len(p.arena)
	p.arena = append(p.arena, s...)
	return p.arena[start:len(p.arena):len(p.arena)]
}

// process handles one input record of partition part (already restored).
func (p *processor) process(part *partition, r *kgo.Record) {
	now := p.now()
	part.lastRecord = now
	c := &p.click
	err := event.DecodeInto(c, r.Value, now, event.Limits{
		MaxRecordBytes: p.cfg.Limits.MaxRecordBytes, MaxFutureSkew: p.cfg.Limits.MaxFutureSkew, MaxIDLen: event.DefaultLimits.MaxIDLen,
	})
	if err == nil {
		err = c.CheckKey(r.Key)
	}
	if err != nil {
		p.deadLetter(r, err)
		return
	}
	ts := c.TimestampMs
	lateBound := part.wm - p.cfg.AllowedLateness.Milliseconds()
	if part.wm != math.MinInt64 && ts < lateBound {
		p.m.events.WithLabelValues(outcomeTooLate).Inc()
		p.out = append(p.out, &kgo.Record{Topic: string(p.cfg.Topics.Late), Key: r.Key, Value: r.Value, Timestamp: r.Timestamp, Headers: []kgo.RecordHeader{
			{Key: wire.HeaderReason, Value: []byte(wire.ReasonTooLate)},
			{Key: wire.HeaderWatermarkMs, Value: strconv.AppendInt(nil, part.wm, 10)},
			{Key: wire.HeaderSource, Value: sourceOf(r)},
		}})
		return
	}
	onTime := ts >= part.wm
	u := part.users.Get(c.UserID)
	if u != nil && p.cfg.AtLeastOnce && r.Offset <= u.offset {
		p.replayed(part, u, c, r)
		return
	}
	if u == nil {
		// A new incarnation: a user forgotten after --session-ttl who comes
		// back is born later than the one forgotten (the TTL exceeds the
		// allowed lateness), which orders their Redis writes.
		u = &userState{id: c.UserID, born: ts}
		part.users.Add(u)
	}
	u.offset = r.Offset
	u.dropClosedWindows(part.wm - p.cfg.AllowedLateness.Milliseconds() - p.cfg.Window.Milliseconds())
	prevLast := u.lastTs
	w := u.apply(c, p.cfg)
	if p.cfg.Learn {
		p.learn(part, u, c)
	}
	part.touched[c.UserID] = struct{}{}
	if w.fired == 0 && w.events() == 1 {
		part.timers.add(timer{at: w.start + p.cfg.Window.Milliseconds(), kind: timerFire, user: u.id, arg: w.start})
	}
	if u.lastTs != prevLast {
		part.timers.add(timer{at: u.lastTs + p.cfg.SessionTTL.Milliseconds(), kind: timerExpire, user: u.id})
	}
	if !onTime {
		p.m.events.WithLabelValues(outcomeLate).Inc()
		if w.fired > 0 { // its result is out already: re-fire with the late event counted
			p.emitWindow(part, u, w)
		}
	} else {
		p.m.events.WithLabelValues(outcomeOnTime).Inc()
		p.enqueueRec(part, u, c, r.Timestamp)
	}
	if ts > part.maxTs {
		part.maxTs = ts
		if wm := ts - p.cfg.OutOfOrderness.Milliseconds(); wm > part.wm {
			part.wm = wm
			part.wmDirty = true
		}
	}
}

// learn adds what click c (just applied to u) teaches about items to the
// partition's item-knowledge record: its item, its category and the
// session's items before it in event time.
func (p *processor) learn(part *partition, u *userState, c *event.Click) {
	p.before = p.before[:0]
	for _, re := range u.recent { // c among them: NewIncrement skips its item
		if re.ts >= u.sessionStart && re.ts <= c.TimestampMs {
			p.before = append(p.before, re.item)
		}
	}
	inc := itemknow.NewIncrement(c.TimestampMs, c.ItemID, itemknow.CategoryKey(c.Category), itemknow.SessionHash(c.UserID), p.before)
	inc.Seq = u.sessionEvts - 1
	if len(p.learned) == 0 {
		p.learnedPart = part.id
	}
	p.learned = itemknow.AppendRecord(p.learned, inc)
}

// replayed handles a click that u's state holds already: at-least-once mode
// flushed the batch's changelog, then failed to commit its offsets, and a new
// session reads the batch again over the restored state. Applying it twice
// would count it twice (seq, windows, dwell); instead the state stays, and an
// on-time click is answered again (its first answer may not have been
// flushed: at-least-once duplicates, never loses).
func (p *processor) replayed(part *partition, u *userState, c *event.Click, r *kgo.Record) {
	p.m.events.WithLabelValues(outcomeReplayed).Inc()
	if c.TimestampMs >= part.wm {
		part.touched[u.id] = struct{}{} // its last recommendation changes
		p.enqueueRec(part, u, c, r.Timestamp)
	}
}

func sourceOf(r *kgo.Record) []byte {
	return wire.AppendSource(nil, r.Topic, r.Partition, r.Offset)
}

func (p *processor) deadLetter(r *kgo.Record, err error) {
	p.m.events.WithLabelValues(outcomeInvalid).Inc()
	reason := event.ReasonOf(err)
	p.m.dlq.WithLabelValues(string(reason)).Inc()
	detail := err.Error()
	if len(detail) > wire.MaxDetailBytes {
		detail = detail[:wire.MaxDetailBytes]
	}
	p.out = append(p.out, &kgo.Record{Topic: string(p.cfg.Topics.DLQ), Key: r.Key, Value: r.Value, Timestamp: r.Timestamp, Headers: []kgo.RecordHeader{
		{Key: wire.HeaderReason, Value: []byte(reason)},
		{Key: wire.HeaderDetail, Value: []byte(detail)},
		{Key: wire.HeaderSource, Value: sourceOf(r)},
	}})
}

// dropClosedWindows forgets windows that no event can reach any more.
func (u *userState) dropClosedWindows(beforeStart int64) {
	i := 0
	for i < len(u.windows) && u.windows[i].start < beforeStart && u.windows[i].fired > 0 {
		i++
	}
	if i > 0 {
		u.windows = slices.Delete(u.windows, 0, i)
	}
}

// enqueueRec snapshots the session as model input; the batch is scored in finish.
func (p *processor) enqueueRec(part *partition, u *userState, c *event.Click, recordTs time.Time) {
	pr := pendingRec{click: *c, recordTs: recordTs, part: part.id, user: u, seqAtTime: u.seq}
	s := p.serving
	pr.itemsOff, pr.exclOff = len(p.items), len(p.excl)
	if s != nil {
		// Fold in the session's items the model knows, weighted by event type and
		// recency exactly as the model was trained (m.Weighting).
		p.types = p.types[:0]
		for _, re := range u.recent {
			if idx, ok := s.Model.Index(re.item); ok {
				p.items = append(p.items, idx)
				p.types = append(p.types, re.typ)
			}
		}
		p.wscratch = s.Model.Weighting.Weights(p.types, p.wscratch)
		p.weights = append(p.weights, p.wscratch...)
		for _, it := range u.purchased {
			if idx, ok := s.Model.Index(it); ok {
				p.excl = append(p.excl, idx)
			}
		}
		if idx, ok := s.Model.Index(c.ItemID); ok {
			p.excl = append(p.excl, idx)
		}
	}
	pr.itemsLen, pr.exclLen = len(p.items)-pr.itemsOff, len(p.excl)-pr.exclOff
	pr.useModel = pr.itemsLen > 0
	if p.ik != nil {
		pr.sessOff = len(p.sess)
		for _, re := range u.recent {
			p.sess = append(p.sess, re.item)
		}
		pr.sessLen = len(p.sess) - pr.sessOff
	}
	p.pending = append(p.pending, pr)
}

// finish scores the batch, appends the recommendation records, the changelog
// records of every touched user and partition, and the window results the
// watermarks release. It returns the records of the transaction. A batch the
// model fails to score gets the popularity fallback (p.scoreErr says why).
func (p *processor) finish() []*kgo.Record {
	p.scoreBatch()
	for _, part := range p.parts {
		p.fireTimers(part)
		p.writeChangelog(part)
	}
	if len(p.learned) > 0 {
		p.out = append(p.out, &kgo.Record{Topic: string(p.cfg.Topics.Knowledge), Partition: p.learnedPart, Value: p.keep(p.learned)})
		p.learned = p.learned[:0]
	}
	return p.out
}

func (p *processor) scoreBatch() {
	nowMs := p.now().UnixMilli()
	k := p.cfg.TopK
	pool := k // what the model brings: its top k, or more to blend from
	if p.ik != nil {
		pool = 2 * k
	}
	p.inputs = p.inputs[:0]
	for i := range p.pending {
		pr := &p.pending[i]
		if pr.useModel {
			p.inputs = append(p.inputs, model.Input{
				Items:   p.items[pr.itemsOff : pr.itemsOff+pr.itemsLen],
				Weights: p.weights[pr.itemsOff : pr.itemsOff+pr.itemsLen],
				Exclude: p.excl[pr.exclOff : pr.exclOff+pr.exclLen],
			})
		}
	}
	for len(p.scored) < len(p.inputs) {
		p.scored = append(p.scored, make([]model.Rec, 0, pool))
	}
	p.scoreErr = nil
	if len(p.inputs) > 0 {
		start := time.Now()
		if err := p.serving.Scorer.Score(p.inputs, pool, p.scored[:len(p.inputs)]); err != nil {
			// Retrying the batch would fail the same way, forever: its clicks
			// get the popularity fallback instead, and the error is counted.
			p.scoreErr = err
			p.m.scoreErrors.Inc()
			for i := range p.pending {
				p.pending[i].useModel = false
			}
		} else {
			p.m.inference.Observe(time.Since(start).Seconds())
			p.m.batch.Observe(float64(len(p.inputs)))
		}
	}
	var t *itemknow.Table
	if p.ik != nil {
		// One lock for the batch's queries: the reader applies other
		// workers' increments a record at a time between them.
		t = p.ik.Lock()
		defer p.ik.Unlock()
	}
	if t != nil && p.serving != nil && p.knownModel != p.serving.Model {
		p.knownModel = p.serving.Model
		m := p.knownModel
		p.known = func(id int64) bool { _, ok := m.Index(id); return ok }
	}
	j := 0
	for i := range p.pending {
		pr := &p.pending[i]
		rec := &p.rec
		rec.Items = rec.Items[:0]
		var strategy, version string
		if p.serving != nil {
			version = p.serving.Version
		}
		online := p.onlineCandidates(t, pr, pool)
		top1, hasTop1 := 0.0, false
		switch {
		case pr.useModel:
			recs := p.scored[j]
			j++
			strategy = wire.StrategyModel
			if hasTop1 = len(recs) > 0; hasTop1 {
				top1 = float64(recs[0].Score)
			}
			if len(online) == 0 {
				for _, r := range recs[:min(k, len(recs))] {
					rec.Items = append(rec.Items, wire.Item{ItemID: p.serving.Model.ItemIDs[r.Index], Score: r.Score})
				}
				break
			}
			p.mlist = p.mlist[:0]
			for _, r := range recs {
				p.mlist = append(p.mlist, itemknow.Scored{Item: p.serving.Model.ItemIDs[r.Index], Score: float64(r.Score)})
			}
			p.blend = itemknow.Blend(p.mlist, online, p.known, p.cfg.Blend, k, p.blend)
			p.appendItems(rec, p.blend)
		default:
			var items []featurestore.Scored
			items, strategy = p.fallback(t, pr, nowMs)
			if len(online) > 0 {
				// The drift profile counts what the model alone would have
				// done (the fallback): the reference knows no online lists.
				if p.live != nil {
					drift.ObserveStrategy(p.live, strategy, 0, false)
				}
				strategy = wire.StrategyOnline
				p.appendItems(rec, online[:min(k, len(online))])
			}
			for _, it := range items {
				if len(rec.Items) == k {
					break
				}
				if !slices.ContainsFunc(rec.Items, func(x wire.Item) bool { return x.ItemID == it.ItemID }) {
					rec.Items = append(rec.Items, wire.Item{ItemID: it.ItemID, Score: it.Score})
				}
			}
		}
		p.m.recs.WithLabelValues(strategy).Inc()
		if p.live != nil && strategy != wire.StrategyOnline {
			drift.ObserveStrategy(p.live, strategy, top1, hasTop1)
		}
		rec.EventID, rec.UserID = pr.click.EventID, pr.click.UserID
		rec.Strategy, rec.ModelVersion = strategy, version
		rec.EventTimeMs, rec.ProcessedAtMs = pr.click.TimestampMs, nowMs
		b := rec.AppendJSON(p.buf[:0])
		p.buf = b
		val := p.keep(b)
		// Like Kafka Streams, an output carries its input's timestamp: a reader of
		// recommendations sees click→recommendation latency as now − timestamp.
		p.out = append(p.out, &kgo.Record{Topic: string(p.cfg.Topics.Recs), Key: p.keepString(pr.click.UserID), Value: val, Timestamp: pr.recordTs})
		p.recordTimes = append(p.recordTimes, pr.recordTs)
		// The batch's clicks are in offset order, so is this loop: the user's
		// last recommendation here is the last the topic holds for them,
		// whatever later (late) events the batch has.
		u := pr.user
		u.rec = appendLastRec(u.rec[:0], pr.seqAtTime, rec)
		e := p.effects[u.id]
		e.recs, e.rseq = val, pr.seqAtTime
		p.effects[u.id] = e
	}
}

// onlineCandidates returns the online item knowledge's candidates for a
// pending click's session (pool of them, best first), without the clicked
// item and the shopper's purchases; nil without a table.
func (p *processor) onlineCandidates(t *itemknow.Table, pr *pendingRec, pool int) []itemknow.Scored {
	if t == nil || pr.sessLen == 0 {
		return nil
	}
	p.olist = t.Candidates(p.sess[pr.sessOff:pr.sessOff+pr.sessLen], pool+1+len(pr.user.purchased), p.olist)
	n := 0
	for _, o := range p.olist {
		if o.Item != pr.click.ItemID && !slices.Contains(pr.user.purchased, o.Item) && n < pool {
			p.olist[n] = o
			n++
		}
	}
	p.olist = p.olist[:n]
	if p.known == nil && n > 0 { // no model: every item is new to it
		p.known = func(int64) bool { return false }
	}
	return p.olist
}

// fallback is the popularity fallback of a pending click: the online item
// knowledge's recent popularity first (the click's category, then
// overall), topped up from the popularity table.
func (p *processor) fallback(t *itemknow.Table, pr *pendingRec, nowMs int64) ([]featurestore.Scored, string) {
	k := p.cfg.TopK
	var liveCat, liveAll []itemknow.Scored
	if t != nil {
		n := k + 1 + len(pr.user.purchased)
		p.liv = t.PopularIn(itemknow.CategoryKey(pr.click.Category), n, nowMs, p.liv)
		liveCat = p.liv
		p.blend = t.Popular(n, nowMs, p.blend)
		liveAll = p.blend
	}
	return fallback(p.pop, liveCat, liveAll, pr.click.Category, k, pr.user.purchased, pr.click.ItemID)
}

// appendItems appends scored items to rec.
func (p *processor) appendItems(rec *wire.Recommendation, items []itemknow.Scored) {
	for _, it := range items {
		rec.Items = append(rec.Items, wire.Item{ItemID: it.Item, Score: float32(it.Score)})
		if !p.known(it.Item) {
			p.m.newItems.Inc()
		}
	}
}

// lastRecJSON returns u's last recommendation as its record's value (in the
// transaction's arena if inArena, else a fresh slice) and the click number it
// answers; nil if u has none.
func (p *processor) lastRecJSON(u *userState, inArena bool) ([]byte, uint64) {
	if len(u.rec) == 0 {
		return nil, 0
	}
	seq, err := decodeLastRec(u.rec, u.id, &p.rec)
	if err != nil { // decodeState does not look inside: a bug wrote it
		slog.Error("the state's last recommendation does not decode; the feature store keeps the one it has", "user", u.id, "err", err)
		return nil, 0
	}
	p.buf = p.rec.AppendJSON(p.buf[:0])
	if !inArena {
		return slices.Clone(p.buf), seq
	}
	return p.keep(p.buf), seq
}

// fireTimers emits the windows and expires the users the watermark has passed.
func (p *processor) fireTimers(part *partition) {
	for {
		t, ok := part.timers.popDue(part.wm)
		if !ok {
			return
		}
		part.popped = append(part.popped, t)
		u := part.users.Get(t.user)
		if u == nil {
			continue
		}
		switch t.kind {
		case timerFire:
			i, found := slices.BinarySearchFunc(u.windows, t.arg, func(w window, s int64) int { return cmpInt(w.start, s) })
			if found && u.windows[i].fired == 0 {
				p.emitWindow(part, u, &u.windows[i])
				part.touched[u.id] = struct{}{}
			}
		case timerExpire:
			if u.lastTs+p.cfg.SessionTTL.Milliseconds() <= part.wm {
				part.users.Delete(u.id)
				delete(part.touched, u.id)
				p.out = append(p.out, &kgo.Record{Topic: string(p.cfg.Topics.Changelog), Partition: part.id, Key: []byte(u.id)})
				p.effects[u.id] = redisEffect{expire: true, born: u.born, seq: u.seq}
				p.m.expired.Inc()
			}
		}
	}
}

// emitWindow writes a window result: its counts so far and how often it fired.
func (p *processor) emitWindow(part *partition, u *userState, w *window) {
	w.fired++
	w.dirty = false
	out := &p.win
	*out = wire.Window{
		UserID:          u.id,
		WindowStartMs:   w.start,
		WindowEndMs:     w.start + p.cfg.Window.Milliseconds(),
		Events:          uint64(w.events()),
		ByType:          wire.TypeCounts{View: uint64(w.byType[0]), Cart: uint64(w.byType[1]), Purchase: uint64(w.byType[2])},
		ByCategory:      out.ByCategory[:0],
		SessionEvents:   uint64(u.sessionEvts),
		SessionLengthMs: u.lastTs - u.sessionStart,
		Revision:        uint64(w.fired),
	}
	for _, c := range w.byCat {
		out.ByCategory = append(out.ByCategory, wire.CategoryCount{Category: c.cat, N: uint64(c.n)})
	}
	b := out.AppendJSON(p.buf[:0])
	p.buf = b
	p.out = append(p.out, &kgo.Record{Topic: string(p.cfg.Topics.Windows), Key: p.keepString(u.id), Value: p.keep(b)})
	p.m.windows.Inc()
	if w.fired > 1 {
		p.m.refired.Inc()
	} else if p.live != nil { // a re-fired window is not counted twice
		for _, c := range w.byCat {
			p.live.ObserveCategorical(drift.FeatureCategoryMix, c.cat, uint64(c.n))
		}
		for i, n := range w.byType {
			if n > 0 {
				p.live.ObserveCategorical(drift.FeatureEventTypeMix, event.Type(i+1).String(), uint64(n))
			}
		}
		p.live.ObserveNumeric(drift.FeatureSessionLength, float64(u.lastTs-u.sessionStart))
		p.live.ObserveNumeric(drift.FeatureWindowEvents, float64(w.events()))
	}
}

// writeChangelog appends the new state of every user touched in this batch and
// the partition's watermark, to the partition of the changelog with the same
// number as the input partition (the topics are co-partitioned).
func (p *processor) writeChangelog(part *partition) {
	for id := range part.touched {
		u := part.users.Get(id)
		if u == nil {
			continue
		}
		p.buf = u.appendBinary(p.buf[:0])
		part.users.Save(u, p.buf)
		p.out = append(p.out, &kgo.Record{Topic: string(p.cfg.Topics.Changelog), Partition: part.id, Key: p.keepString(id), Value: p.keep(p.buf)})
		e := p.effects[id]
		e.born, e.seq = u.born, u.seq
		if e.recs == nil { // no click of the batch was answered: the last answer stays
			e.recs, e.rseq = p.lastRecJSON(u, true)
		}
		p.buf = u.appendFeatures(p.buf[:0])
		e.features = p.keep(p.buf)
		p.buf = u.appendRecentJSON(p.buf[:0])
		e.events = p.keep(p.buf)
		p.effects[id] = e
	}
	clear(part.touched)
	if part.wmDirty {
		v := binary.AppendVarint(nil, part.maxTs)
		v = binary.AppendVarint(v, part.wm)
		p.out = append(p.out, &kgo.Record{Topic: string(p.cfg.Topics.Changelog), Partition: part.id, Key: []byte(watermarkKey), Value: v})
		part.wmDirty = false
	}
}

// advanceIdle moves the watermark of partitions without records for
// IdleTimeout up to the most advanced watermark of this worker, so an idle
// partition does not hold its windows and expiries back forever.
func (p *processor) advanceIdle() bool {
	now := p.now()
	maxWm := int64(math.MinInt64)
	for _, part := range p.parts {
		maxWm = max(maxWm, part.wm)
	}
	moved := false
	for _, part := range p.parts {
		if part.wm < maxWm && now.Sub(part.lastRecord) >= p.cfg.IdleTimeout {
			part.wm = maxWm
			part.wmDirty = true
			moved = true
		}
	}
	return moved
}

// restoreRecord applies one changelog record during restore.
func (part *partition) restoreRecord(cfg *Config, key, value []byte) error {
	if string(key) == watermarkKey {
		d := &decoder{b: value}
		maxTs, wm := d.varint(), d.varint()
		if d.err != nil {
			return d.err
		}
		part.maxTs, part.wm = maxTs, wm
		return nil
	}
	if value == nil {
		part.users.Delete(string(key))
		return nil
	}
	return part.users.Restore(string(key), value)
}

// restored ends a restore: it recreates the partition's timers from the
// restored state, which is the state a rollback returns to until the next
// commit, and with rewrite queues every user to be written to Redis again.
func (part *partition) restored(cfg *Config, rewrite bool) {
	defer part.commit()
	part.timers = part.timers[:0]
	part.users.Range(func(u *userState) {
		if rewrite {
			part.rewrite = append(part.rewrite, u.id)
		}
		part.timers = append(part.timers, timer{at: u.lastTs + cfg.SessionTTL.Milliseconds(), kind: timerExpire, user: u.id})
		for _, w := range u.windows {
			if w.fired == 0 {
				part.timers = append(part.timers, timer{at: w.start + cfg.Window.Milliseconds(), kind: timerFire, user: u.id, arg: w.start})
			}
		}
	})
	heapInit(&part.timers)
}
