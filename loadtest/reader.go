package loadtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/wire"
)

// outputReader follows the recommendations topic as the web backend would:
// read_committed, so only recommendations of committed transactions count.
// It keeps control records (transaction markers) to know its position exactly:
// the last record of a partition is either data or a marker.
type outputReader struct {
	cl    *kgo.Client
	tr    *Tracker
	topic string
	pos   []atomic.Int64 // next offset to read, per partition
	log   *slog.Logger
	fresh *freshTracker // scans recommendations for the new items (nil: no new items)
}

// newOutputReader starts reading topic at its current end, so that only
// recommendations produced from now on are seen.
func newOutputReader(ctx context.Context, kcfg *kafkautil.Config, adm *kadm.Client, topic string, tr *Tracker, log *slog.Logger) (*outputReader, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("listing the end offsets of %s: %w", topic, err)
	}
	if err := ends.Error(); err != nil {
		return nil, fmt.Errorf("listing the end offsets of %s: %w", topic, err)
	}
	n := int32(0)
	ends.Each(func(o kadm.ListedOffset) { n = max(n, o.Partition+1) })
	if n == 0 {
		return nil, fmt.Errorf("topic %s has no partitions", topic)
	}
	r := &outputReader{tr: tr, topic: topic, pos: make([]atomic.Int64, n), log: log}
	offsets := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		offsets[o.Partition] = kgo.NewOffset().At(o.Offset)
		r.pos[o.Partition].Store(o.Offset)
	})
	r.cl, err = kgo.NewClient(append(kcfg.Opts("clickrec-loadtest-reader"),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(250*time.Millisecond),
	)...)
	if err != nil {
		return nil, fmt.Errorf("creating the recommendations reader: %w", err)
	}
	return r, nil
}

// run reads until ctx ends, handing every recommendation's event id to the
// tracker with the time its fetch returned.
func (r *outputReader) run(ctx context.Context) {
	var (
		outs  []Output
		found []sighting
	)
	for {
		fs := r.cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		now := time.Now()
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				r.log.Warn("reading recommendations", "topic", t, "partition", p, "err", err)
			}
		})
		outs, found = outs[:0], found[:0]
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if int(p.Partition) >= len(r.pos) {
				return
			}
			for _, rec := range p.Records {
				r.pos[p.Partition].Store(rec.Offset + 1)
				if rec.Attrs.IsControl() {
					continue
				}
				o := Output{EventID: wire.PeekEventID(rec.Value), ProcessedAtMs: wire.PeekProcessedAtMs(rec.Value), Strategy: wire.PeekStrategy(rec.Value)}
				outs = append(outs, o)
				if r.fresh != nil {
					found = r.fresh.received(rec.Value, o.Strategy, now, found)
				}
			}
		})
		if len(outs) > 0 {
			r.tr.ReceivedOutputs(outs, now)
		}
		for _, s := range found {
			if !s.clicked {
				r.log.Warn("a new item was recommended before its first click; it is not counted", "item", s.item.ID, "strategy", s.strategy)
				continue
			}
			r.log.Info("a new item appeared in a recommendation for the first time", "item", s.item.ID, "strategy", s.strategy,
				"after_first_click", s.after.Round(time.Millisecond), "anchor", s.item.Anchor)
		}
	}
}

// behind returns how many offsets the reader still has to read to reach
// the given offsets.
func (r *outputReader) behind(target kadm.ListedOffsets) int64 {
	var n int64
	target.Each(func(o kadm.ListedOffset) {
		if int(o.Partition) < len(r.pos) {
			n += max(o.Offset-r.pos[o.Partition].Load(), 0)
		}
	})
	return n
}

func (r *outputReader) close() { r.cl.Close() }

// drain waits, until deadline, for the system to finish: first for the hot
// path group to commit offsets past every input record (its transactions
// commit outputs and offsets together, so every output has been appended
// then), then for the reader to reach the recommendations' high watermark.
// Not their last stable offset: the broker writes a transaction's markers to
// each partition in turn, so the group's offsets can be committed while a
// recommendations partition still holds the transaction open, and an LSO
// listed then stops short of its outputs (seen on a starved machine: the
// drain "completed" without 1,232 committed recommendations). A
// read_committed reader reaches the high watermark only once every
// transaction below it is resolved. It polls the brokers every 50 ms.
func drain(ctx context.Context, adm *kadm.Client, group, events string, r *outputReader, deadline time.Time) DrainReport {
	start := time.Now()
	rep := func(complete bool, detail string) DrainReport {
		return DrainReport{Complete: complete, TookMs: float64(time.Since(start).Microseconds()) / 1000, Detail: detail}
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	wait := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
			return true
		}
	}
	ends, err := adm.ListEndOffsets(ctx, events)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return rep(false, fmt.Sprintf("listing the end offsets of %s: %v", events, err))
	}
	var lag int64
	for {
		committed, err := adm.FetchOffsets(ctx, group)
		if err == nil {
			err = committed.Error()
		}
		if err == nil {
			lag = 0
			ends.Each(func(o kadm.ListedOffset) {
				c, ok := committed.Lookup(events, o.Partition)
				at := int64(0)
				if ok {
					at = c.At
				}
				lag += max(o.Offset-at, 0)
			})
			if lag == 0 {
				break
			}
		}
		if !wait() {
			if err != nil {
				return rep(false, fmt.Sprintf("fetching the offsets of group %s: %v", group, err))
			}
			return rep(false, fmt.Sprintf("group %s has not committed %d input records of %s", group, lag, events))
		}
	}
	hwm, err := adm.ListEndOffsets(ctx, r.topic)
	if err == nil {
		err = hwm.Error()
	}
	if err != nil {
		return rep(false, fmt.Sprintf("listing the end offsets of %s: %v", r.topic, err))
	}
	for {
		n := r.behind(hwm)
		if n == 0 {
			return rep(true, "")
		}
		if !wait() {
			return rep(false, fmt.Sprintf("the reader is %d records short of the end of %s", n, r.topic))
		}
	}
}
