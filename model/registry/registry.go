// Package registry is clickrec's model registry in Redis: model versions (the
// model bytes, the ONNX graph and metadata with offline metrics and reference
// drift profiles), the pointer to the version being served, and the history of
// promotions and rollbacks with their reasons. Promote and Rollback publish the
// new current version on a pub/sub channel; every hot path worker swaps models
// between two batches when it hears it.
//
// Redis layout (all under the "model:" prefix):
//
//	model:versions        sorted set of versions, scored by registration time (ms)
//	model:{v}:bin         the model (model.Model.MarshalBinary)
//	model:{v}:onnx        the ONNX graph the hot path runs
//	model:{v}:meta        JSON Metadata
//	model:current         the served version
//	model:history         list of JSON Events, newest first
//	model:updated         pub/sub channel; message = the new current version
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/model"
)

// Redis keys and channel.
const (
	keyVersions = "model:versions"
	keyCurrent  = "model:current"
	keyHistory  = "model:history"
	// Channel carries the version that became current.
	Channel = "model:updated"
)

func keyBin(v string) string  { return "model:{" + v + "}:bin" }
func keyONNX(v string) string { return "model:{" + v + "}:onnx" }
func keyMeta(v string) string { return "model:{" + v + "}:meta" }

// ErrNotFound is returned for a version the registry does not hold.
var ErrNotFound = errors.New("model version not found")

// ErrNoPrevious is returned by Rollback when no earlier version was served.
var ErrNoPrevious = errors.New("no previous version to roll back to")

// Metadata is what the registry keeps about a version besides its bytes.
type Metadata struct {
	model.Metadata
	RegisteredAt time.Time `json:"registered_at"`
	// Holdout are the metrics of this version on the holdout it was compared on.
	Holdout map[string]float64 `json:"holdout,omitempty"`
	// Reference holds the reference feature profiles for drift checks (JSON of
	// a drift profile set), recorded when the version was trained.
	Reference json.RawMessage `json:"reference_profiles,omitempty"`
	ONNXBytes int             `json:"onnx_bytes"`
}

// Event is one entry of the promotion history.
type Event struct {
	Time     time.Time `json:"time"`
	Action   string    `json:"action"` // register, promote, rollback
	Version  string    `json:"version"`
	Previous string    `json:"previous,omitempty"` // the version served before
	Reason   string    `json:"reason"`
}

// Version is a registered version with its bytes.
type Version struct {
	Meta  Metadata
	Model []byte
	ONNX  []byte
}

// Registry reads and writes the registry.
type Registry struct{ rc *redis.Client }

// New returns a registry over rc.
func New(rc *redis.Client) *Registry { return &Registry{rc: rc} }

// Register stores a new version. It does not serve it: Promote does.
func (r *Registry) Register(ctx context.Context, v Version, reason string) error {
	name := v.Meta.Version
	if name == "" {
		return errors.New("registry: the version has no name")
	}
	if v.Meta.RegisteredAt.IsZero() {
		v.Meta.RegisteredAt = time.Now().UTC()
	}
	v.Meta.ONNXBytes = len(v.ONNX)
	meta, err := json.Marshal(v.Meta)
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	ev, _ := json.Marshal(Event{Time: v.Meta.RegisteredAt, Action: "register", Version: name, Reason: reason})
	_, err = r.rc.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, keyBin(name), v.Model, 0)
		p.Set(ctx, keyONNX(name), v.ONNX, 0)
		p.Set(ctx, keyMeta(name), meta, 0)
		p.ZAdd(ctx, keyVersions, redis.Z{Score: float64(v.Meta.RegisteredAt.UnixMilli()), Member: name})
		p.LPush(ctx, keyHistory, ev)
		return nil
	})
	if err != nil {
		return fmt.Errorf("registry: registering %s: %w", name, err)
	}
	return nil
}

// promoteScript sets the current version if it exists and records the event;
// it returns the previous version. Atomic, so two promotions cannot interleave.
var promoteScript = redis.NewScript(`
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then return redis.error_reply('NOTFOUND') end
local prev = redis.call('GET', KEYS[2]) or ''
redis.call('SET', KEYS[2], ARGV[1])
local ev = cjson.decode(ARGV[2])
ev['previous'] = prev
redis.call('LPUSH', KEYS[3], cjson.encode(ev))
redis.call('PUBLISH', ARGV[3], ARGV[1])
return prev
`)

// Promote makes version the one served and tells the workers. It returns the
// version served before ("" if none).
func (r *Registry) Promote(ctx context.Context, version, reason string) (string, error) {
	return r.setCurrent(ctx, "promote", version, reason)
}

func (r *Registry) setCurrent(ctx context.Context, action, version, reason string) (string, error) {
	ev, _ := json.Marshal(Event{Time: time.Now().UTC(), Action: action, Version: version, Reason: reason})
	prev, err := promoteScript.Run(ctx, r.rc, []string{keyVersions, keyCurrent, keyHistory}, version, ev, Channel).Text()
	if err != nil {
		if redis.HasErrorPrefix(err, "NOTFOUND") {
			return "", fmt.Errorf("registry: %s %s: %w", action, version, ErrNotFound)
		}
		return "", fmt.Errorf("registry: %s %s: %w", action, version, err)
	}
	return prev, nil
}

// Rollback serves again the version that was current before the current one
// was promoted, and records why. It returns the version now served.
func (r *Registry) Rollback(ctx context.Context, reason string) (string, error) {
	cur, err := r.Current(ctx)
	if err != nil {
		return "", err
	}
	if cur == "" {
		return "", ErrNoPrevious
	}
	hist, err := r.History(ctx, 1000)
	if err != nil {
		return "", err
	}
	// The newest promotion of cur names what was served before it; rolling back
	// twice walks back along the promotions (it does not toggle).
	for _, e := range hist {
		if e.Version == cur && e.Action == "promote" {
			if e.Previous == "" {
				return "", ErrNoPrevious
			}
			if _, err := r.setCurrent(ctx, "rollback", e.Previous, reason); err != nil {
				return "", err
			}
			return e.Previous, nil
		}
	}
	return "", ErrNoPrevious
}

// Current returns the served version, "" if none was promoted yet.
func (r *Registry) Current(ctx context.Context) (string, error) {
	v, err := r.rc.Get(ctx, keyCurrent).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("registry: %w", err)
	}
	return v, nil
}

// Get returns a version with its bytes.
func (r *Registry) Get(ctx context.Context, version string) (*Version, error) {
	res, err := r.rc.MGet(ctx, keyMeta(version), keyBin(version), keyONNX(version)).Result()
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	if res[0] == nil || res[1] == nil {
		return nil, fmt.Errorf("registry: %s: %w", version, ErrNotFound)
	}
	v := &Version{Model: []byte(res[1].(string))}
	if res[2] != nil {
		v.ONNX = []byte(res[2].(string))
	}
	if err := json.Unmarshal([]byte(res[0].(string)), &v.Meta); err != nil {
		return nil, fmt.Errorf("registry: %s metadata: %w", version, err)
	}
	return v, nil
}

// Meta returns a version's metadata without its bytes.
func (r *Registry) Meta(ctx context.Context, version string) (*Metadata, error) {
	b, err := r.rc.Get(ctx, keyMeta(version)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("registry: %s: %w", version, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	var md Metadata
	if err := json.Unmarshal(b, &md); err != nil {
		return nil, fmt.Errorf("registry: %s metadata: %w", version, err)
	}
	return &md, nil
}

// List returns the registered versions, oldest first.
func (r *Registry) List(ctx context.Context) ([]string, error) {
	v, err := r.rc.ZRange(ctx, keyVersions, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	return v, nil
}

// History returns up to n events, newest first.
func (r *Registry) History(ctx context.Context, n int) ([]Event, error) {
	raw, err := r.rc.LRange(ctx, keyHistory, 0, int64(n-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	out := make([]Event, 0, len(raw))
	for _, s := range raw {
		var e Event
		if err := json.Unmarshal([]byte(s), &e); err != nil {
			return nil, fmt.Errorf("registry: history entry %q: %w", s, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// Watch calls load with the current version whenever it differs from the one
// loaded last (at first: loaded, "" for none) — at start, on a pub/sub message,
// and periodically as a safety net against a missed message — until ctx ends.
// A failing load is retried at the next message or check.
func (r *Registry) Watch(ctx context.Context, every time.Duration, loaded string, load func(ctx context.Context, version string) error) {
	sub := r.rc.Subscribe(ctx, Channel)
	defer sub.Close()
	msgs := sub.Channel()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if cur, err := r.Current(ctx); err == nil && cur != "" && cur != loaded {
			if load(ctx, cur) == nil {
				loaded = cur
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-msgs:
		case <-t.C:
		}
	}
}
