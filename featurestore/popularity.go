package featurestore

import (
	"context"
	"encoding/json"

	"github.com/redis/go-redis/v9"
)

// Redis names of the popularity table, written by the RefreshPopularity workflow.
const (
	PopularityKey     = "popularity:current" // JSON of a Popularity
	PopularityChannel = "popularity:updated" // a message here makes workers reload at once
)

// Scored is an item with a score, as in a popularity table.
type Scored struct {
	ItemID int64   `json:"item_id"`
	Score  float32 `json:"score"`
}

// Popularity is the cold-start fallback: top items per category and overall.
// Tables are replaced whole (atomically), never mutated.
type Popularity struct {
	Version    string              `json:"version"`
	Global     []Scored            `json:"global"`
	ByCategory map[string][]Scored `json:"by_category"`
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
