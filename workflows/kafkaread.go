package workflows

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/internal/kafkautil"
)

// offsetRange is the offsets [Start, End) of one partition to read.
type offsetRange struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
}

// offsets maps topic → partition → a value.
type offsets[T any] map[string]map[int32]T

func (o offsets[T]) set(topic string, p int32, v T) {
	if o[topic] == nil {
		o[topic] = map[int32]T{}
	}
	o[topic][p] = v
}

// timeRanges returns, for every partition of the topics, the offsets to read
// for the records with timestamps in w: from the first offset at or after
// w.FromMs − slack to the first offset at or after w.ToMs + slack (Kafka's
// offset-for-timestamp rule), capped at the last stable offset (a
// read_committed reader cannot go past it). Record timestamps are not in
// offset order — a mobile client's late click carries its old time — so the
// slack widens the offsets, and readRanges drops what lies outside w. Topics
// that do not exist are left out.
func timeRanges(ctx context.Context, adm *kadm.Client, w Window, slack time.Duration, topics ...string) (offsets[offsetRange], error) {
	from, to := w.FromMs-slack.Milliseconds(), w.ToMs+slack.Milliseconds()
	starts, err := adm.ListOffsetsAfterMilli(ctx, from, topics...)
	if err != nil {
		return nil, fmt.Errorf("cannot list offsets at %d ms: %w", from, err)
	}
	ends, err := adm.ListOffsetsAfterMilli(ctx, to, topics...)
	if err != nil {
		return nil, fmt.Errorf("cannot list offsets at %d ms: %w", to, err)
	}
	stable, err := adm.ListCommittedOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("cannot list last stable offsets: %w", err)
	}
	out := offsets[offsetRange]{}
	var errs []error
	starts.Each(func(s kadm.ListedOffset) {
		if s.Partition < 0 { // a topic that does not exist
			if !errors.Is(s.Err, kerr.UnknownTopicOrPartition) {
				errs = append(errs, fmt.Errorf("topic %s: %w", s.Topic, s.Err))
			}
			return
		}
		e, okE := ends.Lookup(s.Topic, s.Partition)
		l, okL := stable.Lookup(s.Topic, s.Partition)
		switch {
		case s.Err != nil:
			errs = append(errs, fmt.Errorf("%s/%d: %w", s.Topic, s.Partition, s.Err))
		case !okE || e.Err != nil || !okL || l.Err != nil:
			errs = append(errs, fmt.Errorf("%s/%d: cannot list its end offsets: %w", s.Topic, s.Partition, errors.Join(e.Err, l.Err)))
		default:
			end := min(e.Offset, l.Offset)
			out.set(s.Topic, s.Partition, offsetRange{Start: s.Offset, End: max(end, s.Offset)})
		}
	})
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// readRanges reads every partition of ranges from Start to End, read_committed,
// and calls fn with each committed data record whose timestamp is in w, in
// offset order within a partition. Control records (transaction markers) are fetched too — they
// are what tells the reader it has reached End when a transaction marker is
// the partition's last record before it — but not passed to fn.
//
// progress, if not nil, is called after each batch of records with the next
// offset to read of every partition that has started (its map is reused; copy
// what you keep). A reader resumes by passing those offsets as Start.
//
// It returns when every partition has reached End, when ctx ends (with its
// error), or when no record arrives for idle: that happens only if a
// partition's last records before End are of a transaction that aborted after
// a later one began, which read_committed never delivers. incomplete is then
// the number of partitions that did not reach End.
func readRanges(ctx context.Context, kc *kafkautil.Config, clientID string, ranges offsets[offsetRange], w Window, idle time.Duration,
	fn func(*kgo.Record) error, progress func(next offsets[int64])) (incomplete int, err error) {
	start, left := startOffsets(ranges)
	if left == 0 {
		return 0, nil
	}
	opts := append(kc.Opts(clientID),
		kgo.ConsumePartitions(start),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return left, fmt.Errorf("cannot create the Kafka reader: %w", err)
	}
	defer cl.Close()
	done := offsets[bool]{}
	next := offsets[int64]{}
	for left > 0 {
		pctx, cancel := context.WithTimeout(ctx, idle)
		fs := cl.PollFetches(pctx)
		timedOut := errors.Is(pctx.Err(), context.DeadlineExceeded)
		cancel()
		if err := ctx.Err(); err != nil {
			return left, err
		}
		if err := fetchErrors(fs); err != nil {
			return left, err
		}
		if fs.NumRecords() == 0 && timedOut {
			return left, nil
		}
		pause := map[string][]int32{}
		for r := range fs.RecordsAll() {
			rg, ok := ranges[r.Topic][r.Partition]
			if !ok || done[r.Topic][r.Partition] {
				continue
			}
			if r.Offset >= rg.End {
				done.set(r.Topic, r.Partition, true)
				pause[r.Topic] = append(pause[r.Topic], r.Partition)
				left--
				continue
			}
			if ts := r.Timestamp.UnixMilli(); !r.Attrs.IsControl() && ts >= w.FromMs && ts < w.ToMs {
				if err := fn(r); err != nil {
					return left, err
				}
			}
			next.set(r.Topic, r.Partition, r.Offset+1)
			if r.Offset+1 >= rg.End {
				done.set(r.Topic, r.Partition, true)
				pause[r.Topic] = append(pause[r.Topic], r.Partition)
				left--
			}
		}
		if len(pause) > 0 {
			cl.PauseFetchPartitions(pause)
		}
		if progress != nil {
			progress(next)
		}
	}
	return 0, nil
}

// startOffsets is where the reader starts in each partition with offsets
// left to read, and how many such partitions there are.
func startOffsets(ranges offsets[offsetRange]) (start map[string]map[int32]kgo.Offset, left int) {
	start = map[string]map[int32]kgo.Offset{}
	for t, ps := range ranges {
		for p, r := range ps {
			if r.Start >= r.End {
				continue
			}
			if start[t] == nil {
				start[t] = map[int32]kgo.Offset{}
			}
			start[t][p] = kgo.NewOffset().At(r.Start)
			left++
		}
	}
	return start, left
}

// fetchErrors joins the errors of a poll, leaving out those of the poll's
// own deadline or cancellation.
func fetchErrors(fs kgo.Fetches) error {
	var errs []error
	fs.EachError(func(t string, p int32, e error) {
		if !errors.Is(e, context.DeadlineExceeded) && !errors.Is(e, context.Canceled) {
			errs = append(errs, fmt.Errorf("cannot fetch %s/%d: %w", t, p, e))
		}
	})
	return errors.Join(errs...)
}
