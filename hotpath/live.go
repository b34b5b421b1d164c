package hotpath

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// LiveProfileTTL is how long a published live profile stays in Redis.
const LiveProfileTTL = 2 * time.Hour

// LiveProfileKey is the Redis key of the live drift profile a worker publishes
// for one minute of processing time: "drift:live:<unix minute>:<instance>".
// The CheckDrift workflow merges the keys of the last minutes across workers.
func LiveProfileKey(minute int64, instance string) string {
	return fmt.Sprintf("drift:live:%d:%s", minute, instance)
}

// LiveProfilePattern matches every LiveProfileKey (for SCAN).
const LiveProfilePattern = "drift:live:*"

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
			minute := now.Unix() / 60
			if err := w.rw.rc.Set(ctx, LiveProfileKey(minute, w.cfg.InstanceID), b, LiveProfileTTL).Err(); err != nil && ctx.Err() == nil {
				w.log.Warn("publishing the live drift profile failed; this minute is lost to drift checks", "err", err)
			}
		}
	}
}
