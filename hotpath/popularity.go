package hotpath

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis names of the popularity table, written by the RefreshPopularity workflow.
const (
	PopularityKey     = "popularity:current" // JSON of a Popularity
	PopularityChannel = "popularity:updated" // a message here makes workers reload at once
)

// WatchPopularity keeps the worker's cold-start table in step with Redis: it
// loads the table at start, on every message on PopularityChannel, and every
// interval as a safety net. It never blocks the processing loop: the table is
// swapped atomically and picked up between batches. It returns when ctx ends.
func (w *Worker) WatchPopularity(ctx context.Context, rc *redis.Client, interval time.Duration) {
	sub := rc.Subscribe(ctx, PopularityChannel)
	defer sub.Close()
	msgs := sub.Channel()
	t := time.NewTicker(interval)
	defer t.Stop()
	var version string
	for {
		p, err := LoadPopularity(ctx, rc)
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

// LoadPopularity reads the current popularity table; redis.Nil if none exists.
func LoadPopularity(ctx context.Context, rc *redis.Client) (*Popularity, error) {
	b, err := rc.Get(ctx, PopularityKey).Bytes()
	if err != nil {
		return nil, err
	}
	var p Popularity
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// StorePopularity publishes a popularity table and tells the workers.
func StorePopularity(ctx context.Context, rc *redis.Client, p *Popularity) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := rc.Set(ctx, PopularityKey, b, 0).Err(); err != nil {
		return err
	}
	return rc.Publish(ctx, PopularityChannel, p.Version).Err()
}

// Logger returns the worker's logger.
func (w *Worker) Logger() *slog.Logger { return w.log }
