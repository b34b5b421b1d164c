package itemknow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	Log      *slog.Logger
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

	records   atomic.Int64 // records applied
	bad       atomic.Int64 // records that did not decode
	newestMs  atomic.Int64 // newest increment time applied
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
	p := Progress{Records: g.records.Load(), Bad: g.bad.Load(), NewestMs: g.newestMs.Load()}
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
	offsets := map[int32]kgo.Offset{}
	targets := map[int32]int64{}
	for p, e := range ends[topic] {
		s := e.Offset
		if so, ok := starts.Lookup(topic, p); ok && so.Offset >= 0 && so.Offset < s {
			s = so.Offset
		}
		offsets[p] = kgo.NewOffset().At(s)
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
	lastLog := start
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
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
			if t, ok := targets[r.Partition]; ok && r.Offset >= t-1 {
				delete(targets, r.Partition)
				if len(targets) == 0 {
					g.cfg.Log.Info("item knowledge caught up", "records", g.records.Load(), "took", time.Since(start).Round(time.Millisecond))
					close(g.ready)
				}
			}
		})
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
	newest := int64(0)
	_, err := DecodeRecord(v, func(inc Increment) {
		t.Apply(inc)
		newest = max(newest, inc.TimeMs)
	})
	g.Unlock()
	g.records.Add(1)
	if err != nil {
		g.bad.Add(1)
	}
	if newest > g.newestMs.Load() {
		g.newestMs.Store(newest)
	}
	g.appliedAt.Store(time.Now().UnixMilli())
	return err
}
