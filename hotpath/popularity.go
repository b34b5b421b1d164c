package hotpath

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/featurestore"
)

// WatchPopularity keeps the worker's cold-start table in step with Redis: it
// loads the table at start, on every message on
// featurestore.PopularityChannel, and every interval as a safety net. It
// never blocks the processing loop: the table is swapped atomically and
// picked up between batches. It returns when ctx ends.
func (w *Worker) WatchPopularity(ctx context.Context, rc *redis.Client, interval time.Duration) {
	sub := rc.Subscribe(ctx, featurestore.PopularityChannel)
	defer sub.Close()
	msgs := sub.Channel()
	t := time.NewTicker(interval)
	defer t.Stop()
	var version string
	for {
		p, err := featurestore.LoadPopularity(ctx, rc)
		switch {
		case err == nil && p.Version != version:
			version = p.Version
			w.SetPopularity(p)
			w.log.Info("popularity table loaded", "version", p.Version, "categories", len(p.ByCategory), "global", len(p.Global))
		case err != nil && !errors.Is(err, redis.Nil) && ctx.Err() == nil:
			w.log.Warn("loading the popularity table failed; keeping the current one", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-msgs:
		case <-t.C:
		}
	}
}

// Logger returns the worker's logger.
func (w *Worker) Logger() *slog.Logger { return w.log }
