package itemknow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// GlobalConfig configures a Global.
type GlobalConfig struct {
	Table Config
	// Topic is the item-knowledge topic; Opts connect to its cluster
	// (brokers, security, client id).
	Topic string
	Opts  []kgo.Opt
	// Lookback is how far back a starting Global reads the topic: what is
	// older has decayed to 2^(−Lookback/HalfLife) of its weight.
	Lookback time.Duration
	// SnapshotPath, if set, is a local file the Global writes its table and
	// the offsets it has read to every SnapshotEvery and when Run ends; a
	// Run that finds one (of the same topic and learning configuration)
	// starts from it and reads only what came after, instead of Lookback.
	SnapshotPath  string
	SnapshotEvery time.Duration
	Log           *slog.Logger
}

// Global is a Table fed from the item-knowledge topic: every partition, read
// committed, so every worker holds what every worker's committed
// transactions taught, and nothing an aborted one did. Increments are
// commutative, so the order in which partitions are read does not matter.
//
// The table is shared by Run, which applies, and the hot path, which
// queries: both hold Lock. Run holds it for one record at a time (the
// increments of one partition's transaction, microseconds), so a query
// waits at most that long.
type Global struct {
	cfg   GlobalConfig
	mu    sync.Mutex
	t     *Table
	ready chan struct{}

	next    map[int32]int64 // per partition, the offset after the last record read (Run's)
	snapBuf []byte

	records   atomic.Int64 // records applied
	bad       atomic.Int64 // records that did not decode
	appliedAt atomic.Int64 // wall clock of the last record applied, Unix ms
}

// NewGlobal returns a Global; it reads nothing until Run.
func NewGlobal(cfg GlobalConfig) *Global {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Global{cfg: cfg, t: New(cfg.Table), ready: make(chan struct{})}
}

// Lock locks the table and returns it; Unlock releases it. Hold it briefly.
func (g *Global) Lock() *Table { g.mu.Lock(); return g.t }

// Unlock releases the table.
func (g *Global) Unlock() { g.mu.Unlock() }

// Ready is closed once Run has read the topic up to its end offsets as of
// Run's start: the table holds what was committed before this worker began.
func (g *Global) Ready() <-chan struct{} { return g.ready }

// Progress is what a Global has read, for metrics.
type Progress struct {
	Records, Bad int64
	// NewestMs is the newest increment's click time (0: none yet);
	// AppliedAt the wall clock of the last record applied.
	NewestMs  int64
	AppliedAt time.Time
}

// Progress returns what the Global has read so far.
func (g *Global) Progress() Progress {
	p := Progress{Records: g.records.Load(), Bad: g.bad.Load(), NewestMs: g.Lock().Stats().NewestMs}
	g.Unlock()
	if ms := g.appliedAt.Load(); ms > 0 {
		p.AppliedAt = time.UnixMilli(ms)
	}
	return p
}

// Run reads the topic from Lookback ago until ctx ends, closing Ready once
// it has caught up. It returns nil when ctx ends, an error if it cannot read
// the topic at all.
func (g *Global) Run(ctx context.Context) error {
	start := time.Now()
	cl, err := kgo.NewClient(g.cfg.Opts...)
	if err != nil {
		return fmt.Errorf("creating the item-knowledge client: %w", err)
	}
	adm := kadm.NewClient(cl)
	topic := g.cfg.Topic
	var ends, starts kadm.ListedOffsets
	for {
		ends, err = adm.ListEndOffsets(ctx, topic)
		if err == nil {
			starts, err = adm.ListOffsetsAfterMilli(ctx, start.Add(-g.cfg.Lookback).UnixMilli(), topic)
		}
		if err == nil {
			err = ends.Error()
		}
		if err == nil {
			err = starts.Error()
		}
		if err == nil && len(ends[topic]) > 0 {
			break
		}
		if err == nil {
			err = errors.New("no partitions")
		}
		g.cfg.Log.Warn("listing the item-knowledge topic's offsets; retrying", "topic", topic, "err", err)
		select {
		case <-ctx.Done():
			cl.Close()
			return nil
		case <-time.After(time.Second):
		}
	}
	g.next = map[int32]int64{}
	if g.cfg.SnapshotPath != "" {
		g.loadSnapshot(ends[topic])
	}
	offsets := map[int32]kgo.Offset{}
	targets := map[int32]int64{}
	for p, e := range ends[topic] {
		s := e.Offset
		if so, ok := starts.Lookup(topic, p); ok && so.Offset >= 0 && so.Offset < s {
			s = so.Offset
		}
		if n, ok := g.next[p]; ok {
			s = n // the snapshot covers what precedes
		}
		offsets[p] = kgo.NewOffset().At(s)
		g.next[p] = s
		if e.Offset > s {
			targets[p] = e.Offset
		}
	}
	cl.Close() // listed: the consumer starts at those offsets
	cl, err = kgo.NewClient(append(g.cfg.Opts,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), // the last record below an end offset may be a transaction marker
		// The broker answers a fetch after 250 ms or 1 MiB: a few fetches a
		// second rather than one per transaction of every worker (each
		// commit would wake a long poll), for ≤ 250 ms of staleness.
		kgo.FetchMaxWait(250*time.Millisecond),
		kgo.FetchMinBytes(1<<20),
	)...)
	if err != nil {
		return fmt.Errorf("creating the item-knowledge consumer: %w", err)
	}
	defer cl.Close()
	g.cfg.Log.Info("reading the item knowledge", "topic", topic, "partitions", len(offsets), "lookback", g.cfg.Lookback)
	if len(targets) == 0 {
		close(g.ready)
	}
	lastLog, lastSnap := start, time.Now()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			g.writeSnapshot(topic)
			return nil
		}
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				g.cfg.Log.Warn("reading the item knowledge", "topic", t, "partition", p, "err", err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			if !r.Attrs.IsControl() {
				g.apply(r)
			}
			g.next[r.Partition] = r.Offset + 1
			if t, ok := targets[r.Partition]; ok && r.Offset >= t-1 {
				delete(targets, r.Partition)
				if len(targets) == 0 {
					g.cfg.Log.Info("item knowledge caught up", "records", g.records.Load(), "took", time.Since(start).Round(time.Millisecond))
					close(g.ready)
				}
			}
		})
		if g.cfg.SnapshotEvery > 0 && time.Since(lastSnap) >= g.cfg.SnapshotEvery {
			lastSnap = time.Now()
			g.writeSnapshot(topic)
		}
		if len(targets) > 0 && time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			g.cfg.Log.Info("reading the item knowledge: catching up", "records", g.records.Load(), "partitions_left", len(targets))
		}
	}
}

func (g *Global) apply(r *kgo.Record) {
	if err := g.ApplyRecord(r.Value); err != nil {
		g.cfg.Log.Warn("an item-knowledge record does not decode; its increments from the bad one on are skipped",
			"partition", r.Partition, "offset", r.Offset, "err", err)
	}
}

// ApplyRecord applies the increments of one item-knowledge record value
// (Run does, for every committed record; tests feed it directly). A record
// that does not decode is applied up to its bad increment, counted, and
// its error returned.
func (g *Global) ApplyRecord(v []byte) error {
	t := g.Lock()
	_, err := DecodeRecord(v, t.Apply)
	g.Unlock()
	g.records.Add(1)
	if err != nil {
		g.bad.Add(1)
	}
	g.appliedAt.Store(time.Now().UnixMilli())
	return err
}

// The snapshot file: a version byte, the topic, the partitions with the
// offset after the last record the table holds, then Table.AppendSnapshot.
const snapshotFileVersion = 1

// writeSnapshot writes the table and the offsets it covers to
// SnapshotPath, atomically (a temporary file renamed). Run's goroutine is
// the table's only writer, so it reads the table without the lock while
// the hot path queries. A failure is logged: the next start reads more.
func (g *Global) writeSnapshot(topic string) {
	if g.cfg.SnapshotPath == "" {
		return
	}
	start := time.Now()
	e := &enc{b: append(g.snapBuf[:0], snapshotFileVersion)}
	e.u(uint64(len(topic)))
	e.b = append(e.b, topic...)
	e.u(uint64(len(g.next)))
	for _, p := range slices.Sorted(maps.Keys(g.next)) {
		e.u(uint64(p))
		e.i(g.next[p])
	}
	b := g.t.AppendSnapshot(e.b)
	g.snapBuf = b
	err := os.MkdirAll(filepath.Dir(g.cfg.SnapshotPath), 0o755)
	if err == nil {
		tmp := g.cfg.SnapshotPath + ".tmp"
		if err = os.WriteFile(tmp, b, 0o644); err == nil {
			err = os.Rename(tmp, g.cfg.SnapshotPath)
		}
	}
	if err != nil {
		g.cfg.Log.Warn("writing the item knowledge's snapshot; a restart reads the topic's lookback instead", "path", g.cfg.SnapshotPath, "err", err)
		return
	}
	g.cfg.Log.Debug("wrote the item knowledge's snapshot", "bytes", len(b), "took", time.Since(start))
}

// loadSnapshot replaces the table and g.next by SnapshotPath's, if it is a
// snapshot of this topic and configuration whose offsets the topic still
// has (none beyond its end: a topic deleted and created again starts
// afresh).
func (g *Global) loadSnapshot(ends map[int32]kadm.ListedOffset) {
	b, err := os.ReadFile(g.cfg.SnapshotPath)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	ignore := func(why string, err error) {
		g.cfg.Log.Warn("ignoring the item knowledge's snapshot; reading the topic's lookback instead", "path", g.cfg.SnapshotPath, "why", why, "err", err)
	}
	if err != nil {
		ignore("unreadable", err)
		return
	}
	if len(b) < 1 || b[0] != snapshotFileVersion {
		ignore("unknown format", nil)
		return
	}
	d := &dec{b: b[1:]}
	tl := d.n(len(d.b))
	if d.err != nil || string(d.b[:tl]) != g.cfg.Topic {
		ignore("another topic", d.err)
		return
	}
	d.b = d.b[tl:]
	next := map[int32]int64{}
	for range d.n(1 << 20) {
		p, o := int32(d.u()), d.i()
		if e, ok := ends[p]; !ok || o > e.Offset {
			ignore("offsets beyond the topic's end (was it recreated?)", nil)
			return
		}
		next[p] = o
	}
	if d.err != nil {
		ignore("corrupt", d.err)
		return
	}
	t, err := LoadSnapshot(g.cfg.Table, d.b)
	if err != nil {
		ignore("another configuration or corrupt", err)
		return
	}
	g.mu.Lock()
	g.t = t
	g.mu.Unlock()
	g.next = next
	g.cfg.Log.Info("loaded the item knowledge's snapshot; reading only what came after it", "path", g.cfg.SnapshotPath, "items", len(t.index))
}
