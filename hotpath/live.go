package hotpath

import (
	"context"
	"encoding/json"
	"time"

	"github.com/clickrec/clickrec/drift"
)

// publishLive writes the committed live profile to Redis once per interval and
// starts a new one. Publishing never blocks processing: the loop only takes the
// lock to merge a committed batch.
func (w *Worker) publishLive(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			w.liveMu.Lock()
			if w.live == nil {
				w.liveMu.Unlock()
				continue
			}
			snap := w.live.Clone()
			w.live.Reset()
			w.liveMu.Unlock()
			// The value is a drift.LiveSet; its fingerprints name the reference
			// (and so the model version) its counts belong to.
			b, err := json.Marshal(snap)
			if err != nil {
				w.log.Warn("encoding the live drift profile", "err", err)
				continue
			}
			// Keyed by the wall-clock minute (drift.LiveKey); the CheckDrift
			// workflow adds up the minutes of every worker.
			key := drift.LiveKey(drift.LiveMinute(now), w.cfg.InstanceID)
			if err := w.rw.rc.Set(ctx, key, b, drift.LiveKeyTTL).Err(); err != nil && ctx.Err() == nil {
				w.log.Warn("publishing the live drift profile failed; this minute is lost to drift checks", "err", err)
			}
		}
	}
}
