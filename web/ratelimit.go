package web

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// clientLimiter is a token bucket per client address. Buckets that have been
// idle long enough to be full again are dropped, so memory follows the number
// of recently active clients.
type clientLimiter struct {
	limit rate.Limit
	burst int

	mu        sync.Mutex
	clients   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newClientLimiter(limit rate.Limit, burst int) *clientLimiter {
	return &clientLimiter{limit: limit, burst: burst, clients: map[string]*bucket{}}
}

// allow takes a token from client's bucket at now. When there is none it
// reports how long until there is one.
func (l *clientLimiter) allow(client string, now time.Time) (ok bool, retryAfter time.Duration) {
	if l == nil || l.limit == rate.Inf {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b := l.clients[client]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.clients[client] = b
	}
	b.seen = now
	r := b.lim.ReserveN(now, 1)
	if !r.OK() { // burst 0: never
		return false, time.Minute
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep drops the buckets idle for longer than refilling takes, at most once
// a minute. Called with l.mu held.
func (l *clientLimiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < time.Minute {
		return
	}
	l.lastSweep = now
	full := time.Minute
	if l.limit > 0 {
		full = max(full, time.Duration(float64(l.burst)/float64(l.limit)*float64(time.Second)))
	}
	for c, b := range l.clients {
		if now.Sub(b.seen) > full {
			delete(l.clients, c)
		}
	}
}

// size returns the number of clients with a bucket.
func (l *clientLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.clients)
}
