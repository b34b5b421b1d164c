package hotpath

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/featurestore"
)

// redisEffect is what a committed transaction asks of the feature store for one
// user: the newest state, or its removal after the TTL. born and seq order
// the effects of one user across owners, restarts and incarnations. An
// effect is whole: it carries the user's last recommendation too, whatever
// produced it, so the newest effect of a user is all the writer needs.
type redisEffect struct {
	born     int64
	seq      uint64
	features []byte
	events   []byte
	recs     []byte // the last recommendation's record value; nil: none yet
	rseq     uint64 // the click recs answers
	expire   bool
}

// The field names in the scripts.
const (
	luaBorn     = "'" + featurestore.FieldBorn + "'"
	luaSeq      = "'" + featurestore.FieldSeq + "'"
	luaRecs     = "'" + featurestore.FieldRecs + "'"
	luaRecSeq   = "'" + featurestore.FieldRecSeq + "'"
	luaGone     = "'" + featurestore.FieldGone + "'"
	luaFeatures = "'" + featurestore.FieldFeatures + "'"
	luaEvents   = "'" + featurestore.FieldEvents + "'"
)

// Both scripts act only if their (born, seq) is newer than the stored one,
// or equal to a live entry's: a replay after a crash writes the same value,
// a slow former owner of the partition cannot overwrite what the new owner
// wrote, an old incarnation's expiry cannot delete a user who came back
// (born later), and nothing of the incarnation a tombstone ended comes back.
const redisNewer = `
local h = redis.call('HMGET', KEYS[1], ` + luaBorn + `, ` + luaSeq + `, ` + luaRecSeq + `, ` + luaGone + `)
local born, cur = tonumber(h[1] or '0'), tonumber(h[2] or '0')
local b, s = tonumber(ARGV[1]), tonumber(ARGV[2])
if b < born or (b == born and (s < cur or (s == cur and h[4]))) then return 0 end
`

// writeIfNewer stores a user's entry: ARGV born, seq, features, events, recs
// (empty: none yet), the click recs answers, TTL in ms, user id. The
// recommendation is stored if it is not older than the stored one, and
// published only if it is newer: a write Redis ran before its reply was lost,
// run again, does not push the same recommendation twice.
var writeIfNewer = redis.NewScript(redisNewer + `
local rseq = tonumber(h[3] or '0')
if b > born or h[4] then
  redis.call('HDEL', KEYS[1], ` + luaRecs + `, ` + luaRecSeq + `, ` + luaGone + `)
  rseq = 0
end
redis.call('HSET', KEYS[1], ` + luaBorn + `, ARGV[1], ` + luaSeq + `, ARGV[2], ` + luaFeatures + `, ARGV[3], ` + luaEvents + `, ARGV[4])
local rs = tonumber(ARGV[6])
if ARGV[5] ~= '' and rs >= rseq then
  redis.call('HSET', KEYS[1], ` + luaRecs + `, ARGV[5], ` + luaRecSeq + `, ARGV[6])
  if rs > rseq then redis.call('PUBLISH', '` + featurestore.RecsChannelPrefix + `' .. ARGV[8], ARGV[5]) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return 1
`)

// deleteIfNewer replaces a user's entry with a tombstone for the TTL: ARGV
// born, seq of the expired state, TTL in ms. The tombstone keeps (born, seq),
// so a former owner's delayed write of that incarnation cannot recreate the
// entry; the user's next incarnation (born later) replaces it.
var deleteIfNewer = redis.NewScript(redisNewer + `
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], ` + luaBorn + `, ARGV[1], ` + luaSeq + `, ARGV[2], ` + luaGone + `, '1')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
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

	// Redis's run_id as last seen. A new one means Redis restarted or
	// failed over and may have lost what it held: lost tells the worker to
	// write every user it owns again (see Worker.rewriteRestored).
	runID      string
	lost       atomic.Bool
	checkEvery time.Duration
}

func newRedisWriter(rc *redis.Client, ttl time.Duration, m *metrics, log *slog.Logger) *redisWriter {
	return &redisWriter{rc: rc, ttl: ttl, m: m, log: log, pending: map[string]redisEffect{}, wake: make(chan struct{}, 1),
		checkEvery: 5 * time.Second}
}

// enqueue hands over the effects of a committed transaction. It never blocks.
func (w *redisWriter) enqueue(effects map[string]redisEffect) {
	if w == nil || len(effects) == 0 {
		return
	}
	w.mu.Lock()
	for u, e := range effects {
		w.pending[u] = e // whole and newer: nothing of the pending one is needed
	}
	n := len(w.pending)
	w.mu.Unlock()
	w.m.redisQueue.Set(float64(n))
	w.signal()
}

// enqueueMissing hands over the effects of users not already waiting: a
// restored user written again must not replace a newer effect that is
// pending.
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
// Every checkEvery, and when writes succeed again after failing, it checks
// whether Redis restarted.
func (w *redisWriter) run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	w.checkRestart(ctx)
	tick := time.NewTicker(w.checkEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			w.flush(fctx)
			cancel()
			return
		case <-tick.C:
			w.checkRestart(ctx)
			continue
		case <-w.wake:
		}
		failed := false
		for {
			if err := w.flush(ctx); err == nil {
				backoff = 50 * time.Millisecond
				if failed {
					w.checkRestart(ctx)
				}
				break
			} else if ctx.Err() != nil {
				break
			} else {
				failed = true
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
				deleteIfNewer.Run(ctx, pipe, []string{featurestore.UserKey(u)}, e.born, e.seq, ttl)
				continue
			}
			writeIfNewer.Run(ctx, pipe, []string{featurestore.UserKey(u)}, e.born, e.seq, e.features, e.events, e.recs, e.rseq, ttl, u)
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

// checkRestart reads Redis's run_id. A changed one means a restart or a
// failover: what Redis held may be gone (no persistence, a replica that
// lagged), so every user the worker owns is to be written again.
func (w *redisWriter) checkRestart(ctx context.Context) {
	info, err := w.rc.Info(ctx, "server").Result()
	if err != nil {
		return // the writes report Redis's trouble
	}
	_, rest, ok := strings.Cut(info, "run_id:")
	if !ok {
		return
	}
	id, _, _ := strings.Cut(rest, "\r\n")
	id = strings.TrimSpace(id)
	if w.runID != "" && id != w.runID {
		w.lost.Store(true)
		w.log.Warn("Redis restarted or failed over (its run_id changed) and may have lost entries; every user this worker owns is written again, at --redis-rewrite-rate",
			"run_id", id, "was", w.runID)
	}
	w.runID = id
}

// requeue puts effects back (a failed batch, restored users) unless an
// effect of the same user is waiting: it comes from a later commit, and is
// whole (it carries the last recommendation too).
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
