// Package registry is clickrec's model registry in Redis: model versions (the
// model bytes, the ONNX graph and metadata with offline metrics and reference
// drift profiles), the pointer to the version being served, and the history of
// promotions and rollbacks with their reasons. Promote, Rollback and
// RollbackFrom publish the new current version on a pub/sub channel; every hot
// path worker swaps models between two batches when it hears it. Each of them
// changes the current pointer, the history and the notification in one Lua
// script, so they never interleave with each other.
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
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/drift"
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

// ErrNoPrevious is returned by Rollback and RollbackFrom when no earlier
// version was served: there is nothing to roll back to, and nothing changed.
var ErrNoPrevious = errors.New("no previous version to roll back to")

// ErrInvalidReference is returned (wrapped, with a reason naming the
// feature) by Register when a version's reference profiles do not decode or
// do not fit the drift features this code counts (drift.ReferenceSet.Validate),
// such as a numeric profile for a categorical feature. Nothing is registered;
// retrying cannot help: the reference must be rebuilt.
var ErrInvalidReference = errors.New("invalid drift reference profiles")

// ErrNotCurrent is matched (errors.Is) by the *NotCurrentError RollbackFrom
// returns when the version it was to roll back from no longer serves.
// Nothing changed; the caller should report it, not retry.
var ErrNotCurrent = errors.New("the version no longer serves")

// NotCurrentError says that RollbackFrom found another version serving than
// the one expected, and changed nothing.
type NotCurrentError struct {
	Expected string // the version the caller wanted to roll back from
	Current  string // the version serving instead; "" if none
}

func (e *NotCurrentError) Error() string {
	return fmt.Sprintf("registry: not rolling back %s: it no longer serves (%q does)", e.Expected, e.Current)
}

// Unwrap returns ErrNotCurrent.
func (e *NotCurrentError) Unwrap() error { return ErrNotCurrent }

// Metadata is what the registry keeps about a version besides its bytes.
type Metadata struct {
	model.Metadata
	RegisteredAt time.Time `json:"registered_at"`
	// Holdout are the metrics of this version on the holdout it was compared on.
	Holdout map[string]float64 `json:"holdout,omitempty"`
	// Reference holds the reference feature profiles for drift checks (JSON of
	// a drift.ReferenceSet), recorded when the version was trained. Register
	// refuses one that does not validate; decoding it into a drift.ReferenceSet
	// validates it again (against the reader's own feature kinds).
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

// Register stores a new version. It does not serve it: Promote does. A
// version with reference profiles that do not validate is refused with
// ErrInvalidReference.
func (r *Registry) Register(ctx context.Context, v Version, reason string) error {
	name := v.Meta.Version
	if name == "" {
		return errors.New("registry: the version has no name")
	}
	if v.Meta.RegisteredAt.IsZero() {
		v.Meta.RegisteredAt = time.Now().UTC()
	}
	if len(v.Meta.Reference) > 0 {
		var ref drift.ReferenceSet
		if err := json.Unmarshal(v.Meta.Reference, &ref); err != nil {
			return fmt.Errorf("registry: cannot register %s: %w: %w", name, ErrInvalidReference, err)
		}
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

// rollbackScript rolls back from the current version, atomically: if
// ARGV[1] is not empty and is not the current version, nothing changes and
// the error NOTCURRENT <current> comes back. Otherwise the newest promotion
// of the current version names the version served before it; that one
// becomes current, the rollback event (ARGV[2], completed here) goes on the
// history and the new current version is published on ARGV[3]. Pointer,
// history and notification change together or not at all.
//
// KEYS: versions, current, history.
var rollbackScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[2]) or ''
if ARGV[1] ~= '' and cur ~= ARGV[1] then return redis.error_reply('NOTCURRENT ' .. cur) end
if cur == '' then return redis.error_reply('NOPREVIOUS') end
local prev = nil
local n = redis.call('LLEN', KEYS[3])
local i = 0
while prev == nil and i < n do
  for _, s in ipairs(redis.call('LRANGE', KEYS[3], i, i + 99)) do
    local e = cjson.decode(s)
    if e['version'] == cur and e['action'] == 'promote' then
      prev = e['previous'] or ''
      break
    end
  end
  i = i + 100
end
if prev == nil or prev == '' then return redis.error_reply('NOPREVIOUS') end
if redis.call('ZSCORE', KEYS[1], prev) == false then return redis.error_reply('NOTFOUND') end
redis.call('SET', KEYS[2], prev)
local ev = cjson.decode(ARGV[2])
ev['version'] = prev
ev['previous'] = cur
redis.call('LPUSH', KEYS[3], cjson.encode(ev))
redis.call('PUBLISH', ARGV[3], prev)
return prev
`)

// Rollback serves again the version that was current before the current one
// was promoted, and records why. It returns the version now served. The
// version rolled back is whichever serves when the rollback runs (it is read
// and replaced in one atomic step); a caller that judged a particular
// version — a drift check, a workflow's compensation — uses RollbackFrom, so
// that a promotion landing in between is not rolled back by mistake.
func (r *Registry) Rollback(ctx context.Context, reason string) (string, error) {
	return r.rollback(ctx, "", reason)
}

// RollbackFrom is Rollback on condition that expected is the version served:
// in one atomic step (a Lua script) it checks that expected is current,
// switches the current pointer to the version served before expected was
// promoted, records the rollback in the history and publishes it on Channel.
//
// If another version serves — someone promoted or rolled back after the
// caller read the current version — nothing changes and the error is a
// *NotCurrentError (errors.Is(err, ErrNotCurrent)) naming the version that
// does serve; callers report that expected "no longer serves" and must not
// retry with the new current version, which nobody judged. ErrNoPrevious
// means expected serves but nothing was served before its promotion.
func (r *Registry) RollbackFrom(ctx context.Context, expected, reason string) (string, error) {
	if expected == "" {
		return "", errors.New("registry: rollback needs the version expected to serve")
	}
	return r.rollback(ctx, expected, reason)
}

func (r *Registry) rollback(ctx context.Context, expected, reason string) (string, error) {
	// Version and Previous are filled in by the script, which alone knows them.
	ev, _ := json.Marshal(Event{Time: time.Now().UTC(), Action: "rollback", Reason: reason})
	now, err := rollbackScript.Run(ctx, r.rc, []string{keyVersions, keyCurrent, keyHistory}, expected, ev, Channel).Text()
	switch {
	case err == nil:
		return now, nil
	case redis.HasErrorPrefix(err, "NOTCURRENT"):
		cur := strings.TrimSpace(strings.TrimPrefix(err.Error(), "NOTCURRENT"))
		return "", &NotCurrentError{Expected: expected, Current: cur}
	case redis.HasErrorPrefix(err, "NOPREVIOUS"):
		return "", ErrNoPrevious
	case redis.HasErrorPrefix(err, "NOTFOUND"):
		return "", fmt.Errorf("registry: rollback: the previous version: %w", ErrNotFound)
	}
	return "", fmt.Errorf("registry: cannot roll back: %w", err)
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
