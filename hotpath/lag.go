package hotpath

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// watchLag sets recsys_hotpath_consumer_lag for every partition of the
// events topic from the group's committed offsets, every period, whatever
// the processing loop is doing. The loop also sets it from the records it
// fetches, but a worker that is stuck, or whose group has no live member for
// a partition, fetches nothing: without this the gauge would freeze at its
// last healthy value and ClickrecConsumerLagHigh (max by partition) would not
// fire.
func (w *Worker) watchLag(ctx context.Context, every time.Duration) {
	cl, err := kgo.NewClient(w.kafka.Opts("clickrec-hotpath-lag-" + w.cfg.InstanceID)...)
	if err != nil {
		w.log.Warn("consumer lag from committed offsets: no client; the lag gauge follows fetched records only", "err", err)
		return
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		qctx, cancel := context.WithTimeout(ctx, every)
		err := w.updateLag(qctx, adm)
		cancel()
		if err != nil && ctx.Err() == nil {
			w.log.Warn("consumer lag from committed offsets", "err", err)
		}
	}
}

// updateLag sets the lag gauge of every partition of the events topic to its
// end offset minus the group's committed offset (its start offset when the
// group has committed nothing there).
func (w *Worker) updateLag(ctx context.Context, adm *kadm.Client) error {
	topic := string(w.cfg.Topics.Events)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("listing end offsets of %s: %w", topic, err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("listing start offsets of %s: %w", topic, err)
	}
	committed, err := adm.FetchOffsets(ctx, w.cfg.Group)
	if err == nil {
		err = committed.Error()
	}
	if errors.Is(err, kerr.GroupIDNotFound) { // nothing committed yet
		committed, err = nil, nil
	}
	if err != nil {
		return fmt.Errorf("fetching the committed offsets of group %s: %w", w.cfg.Group, err)
	}
	ends.Each(func(end kadm.ListedOffset) {
		from := int64(0)
		if s, ok := starts.Lookup(topic, end.Partition); ok {
			from = s.Offset
		}
		if c, ok := committed.Lookup(topic, end.Partition); ok && c.At >= 0 {
			from = max(from, c.At)
		}
		w.m.lag.WithLabelValues(strconv.Itoa(int(end.Partition))).Set(float64(max(end.Offset-from, 0)))
	})
	return nil
}
