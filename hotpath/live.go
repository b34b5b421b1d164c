package hotpath

import (
	"context"
	"encoding/json"
	"time"

	"github.com/clickrec/clickrec/drift"
)

// publishLive writes the committed live profile of the current wall-clock
// minute to Redis every interval: each write replaces that minute's key
// (drift.LiveKey) with everything counted in the minute so far, so a short
// interval makes drift visible sooner without counting anything twice. When
// the minute changes, its final counts are written and a new minute starts;
// on shutdown the minute so far is written too. Publishing never blocks
// processing: the loop only takes the lock to merge a committed batch.
func (w *Worker) publishLive(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	now := w.now
	if now == nil {
		now = time.Now
	}
	minute := drift.LiveMinute(now())
	publish := func(ctx context.Context, at time.Time) {
		w.liveMu.Lock()
		if w.live == nil {
			w.liveMu.Unlock()
			return
		}
		key := drift.LiveKey(minute, w.cfg.InstanceID)
		snap := w.live.Clone()
		if m := drift.LiveMinute(at); m != minute {
			// Counts merged since the last write belong to the closing minute
			// (at most one interval late); the new minute starts empty.
			w.live.Reset()
			minute = m
		}
		w.liveMu.Unlock()
		// The value is a drift.LiveSet; its fingerprints name the reference
		// (and so the model version) its counts belong to. The CheckDrift
		// workflow adds up the minutes of every worker.
		b, err := json.Marshal(snap)
		if err != nil {
			w.log.Warn("encoding the live drift profile", "err", err)
			return
		}
		if err := w.rw.rc.Set(ctx, key, b, drift.LiveKeyTTL).Err(); err != nil && ctx.Err() == nil {
			w.log.Warn("publishing the live drift profile failed; its counts are lost to drift checks", "err", err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			publish(fctx, now())
			cancel()
			return
		case <-t.C:
			publish(ctx, now())
		}
	}
}
