package hotpath

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/featurestore"
)

// redisEffect is what a committed transaction asks of the feature store for one
// user: the newest state, or its removal after the TTL. born and seq order
// the effects of one user across owners, restarts and incarnations.
type redisEffect struct {
	born     int64
	seq      uint64
	features []byte
	events   []byte
	recs     []byte // nil: keep the stored recommendations
	expire   bool
}

// Both scripts act only if their (born, seq) is not older than the stored
// one: a replay after a crash writes the same value, a slow former owner of
// the partition cannot overwrite what the new owner wrote, and an old
// incarnation's expiry cannot delete a user who came back (born later).
const redisNewer = `
local born = tonumber(redis.call('HGET', KEYS[1], '` + featurestore.FieldBorn + `') or '0')
local cur = tonumber(redis.call('HGET', KEYS[1], '` + featurestore.FieldSeq + `') or '0')
local b, s = tonumber(ARGV[1]), tonumber(ARGV[2])
if b < born or (b == born and s < cur) then return 0 end
`

// writeIfNewer stores a user's entry: ARGV born, seq, features, events, recs
// (empty: keep the stored ones), TTL in ms, user id.
var writeIfNewer = redis.NewScript(redisNewer + `
redis.call('HSET', KEYS[1], '` + featurestore.FieldBorn + `', ARGV[1], '` + featurestore.FieldSeq + `', ARGV[2], '` + featurestore.FieldFeatures + `', ARGV[3], '` + featurestore.FieldEvents + `', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], '` + featurestore.FieldRecs + `', ARGV[5]) end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if ARGV[5] ~= '' then redis.call('PUBLISH', '` + featurestore.RecsChannelPrefix + `' .. ARGV[7], ARGV[5]) end
return 1
`)

// deleteIfNewer removes a user's entry: ARGV born, seq of the expired state.
var deleteIfNewer = redis.NewScript(redisNewer + `
redis.call('DEL', KEYS[1])
return 1
`)

// redisWriter writes committed effects to Redis in the background. Writes are
// coalesced per user (only the newest matters), so while Redis is down the
// backlog is bounded by the number of users, nothing blocks the stream, and
// everything is caught up when Redis returns.
type redisWriter struct {
	rc  *redis.Client
	ttl time.Duration
	m   *metrics
	log *slog.Logger

	mu      sync.Mutex
	pending map[string]redisEffect
	wake    chan struct{}
}

func newRedisWriter(rc *redis.Client, ttl time.Duration, m *metrics, log *slog.Logger) *redisWriter {
	return &redisWriter{rc: rc, ttl: ttl, m: m, log: log, pending: map[string]redisEffect{}, wake: make(chan struct{}, 1)}
}

// enqueue hands over the effects of a committed transaction. It never blocks.
func (w *redisWriter) enqueue(effects map[string]redisEffect) {
	if w == nil || len(effects) == 0 {
		return
	}
	w.mu.Lock()
	for u, e := range effects {
		if old, ok := w.pending[u]; ok && e.recs == nil && !e.expire {
			e.recs = old.recs // keep a not-yet-written recommendation
		}
		w.pending[u] = e
	}
	n := len(w.pending)
	w.mu.Unlock()
	w.m.redisQueue.Set(float64(n))
	w.signal()
}

// enqueueMissing hands over the effects of users not already waiting: a
// restored user written again must not delay, or drop the recommendation of,
// a newer effect that is pending.
func (w *redisWriter) enqueueMissing(effects map[string]redisEffect) {
	if len(effects) == 0 {
		return
	}
	w.requeue(effects)
	w.signal()
}

// signal wakes the writer if it waits.
func (w *redisWriter) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run writes pending effects until ctx ends, then makes one last attempt.
func (w *redisWriter) run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			w.flush(fctx)
			cancel()
			return
		case <-w.wake:
		}
		for {
			if err := w.flush(ctx); err == nil {
				backoff = 50 * time.Millisecond
				break
			} else if ctx.Err() != nil {
				break
			} else {
				w.log.Warn("redis write failed; retrying in the background", "err", err, "backoff", backoff)
			}
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
		}
	}
}

const redisBatch = 256

func (w *redisWriter) flush(ctx context.Context) error {
	for {
		w.mu.Lock()
		batch := make(map[string]redisEffect, min(len(w.pending), redisBatch))
		for u, e := range w.pending {
			batch[u] = e
			delete(w.pending, u)
			if len(batch) == redisBatch {
				break
			}
		}
		w.mu.Unlock()
		if len(batch) == 0 {
			w.m.redisQueue.Set(0)
			return nil
		}
		pipe := w.rc.Pipeline()
		ttl := w.ttl.Milliseconds()
		for u, e := range batch {
			if e.expire {
				deleteIfNewer.Run(ctx, pipe, []string{featurestore.UserKey(u)}, e.born, e.seq)
				continue
			}
			writeIfNewer.Run(ctx, pipe, []string{featurestore.UserKey(u)}, e.born, e.seq, e.features, e.events, e.recs, ttl, u)
		}
		_, err := pipe.Exec(ctx)
		if err != nil && !isNoScript(err) {
			w.m.redisWrites.WithLabelValues("error").Add(float64(len(batch)))
			w.requeue(batch)
			return err
		}
		if err != nil { // the scripts were not cached yet: load them and retry the batch
			for _, sc := range []*redis.Script{writeIfNewer, deleteIfNewer} {
				if lerr := sc.Load(ctx, w.rc).Err(); lerr != nil {
					w.requeue(batch)
					return lerr
				}
			}
			w.requeue(batch)
			continue
		}
		w.m.redisWrites.WithLabelValues("ok").Add(float64(len(batch)))
	}
}

// requeue puts effects back (a failed batch, restored users) unless a newer
// effect of the same user is waiting.
func (w *redisWriter) requeue(batch map[string]redisEffect) {
	w.mu.Lock()
	for u, e := range batch {
		if _, newer := w.pending[u]; !newer {
			w.pending[u] = e
		}
	}
	n := len(w.pending)
	w.mu.Unlock()
	w.m.redisQueue.Set(float64(n))
}

func isNoScript(err error) bool { return redis.HasErrorPrefix(err, "NOSCRIPT") }
