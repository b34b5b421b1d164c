package web

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/featurestore"
)

// errStoreClosed is returned by a closed store.
var errStoreClosed = errors.New("store closed")

// RedisStore reads the feature store the hot path writes (hash user:{id},
// fields recs and events) and follows new recommendations on the pub/sub
// channels recs:<id>. All subscriptions share one Redis connection: a channel
// is subscribed while at least one client follows its user.
//
// The hot path coalesces Redis writes per user, so a user who clicks faster
// than Redis is written may see only the newest of several recommendations.
type RedisStore struct {
	rc   *redis.Client
	ps   *redis.PubSub
	hub  *hub
	done chan struct{}

	mu     sync.Mutex
	chans  map[string]*redisChan
	closed bool
}

// redisChan is the subscription state of one channel. At most one SUBSCRIBE
// or UNSUBSCRIBE is in flight per channel, and Redis confirms commands in
// order, so a confirmation always answers the command in flight (or is a
// resubscription after a reconnect, which changes nothing).
type redisChan struct {
	n          int    // local subscriptions
	subscribed bool   // Redis confirmed the subscription
	inflight   string // "", "subscribe" or "unsubscribe"
	gate       *gate  // opens when the subscription is confirmed
}

// gate is closed once; err is set before it closes.
type gate struct {
	c   chan struct{}
	err error
}

func newGate() *gate { return &gate{c: make(chan struct{})} }

func (g *gate) open(err error) {
	select {
	case <-g.c:
	default:
		g.err = err
		close(g.c)
	}
}

// NewRedisStore returns a store over rc and starts receiving pub/sub messages.
// Close stops it; rc stays open.
func NewRedisStore(rc *redis.Client) *RedisStore {
	s := &RedisStore{rc: rc, ps: rc.Subscribe(context.Background()), hub: newHub(), done: make(chan struct{}), chans: map[string]*redisChan{}}
	msgs := s.ps.ChannelWithSubscriptions(redis.WithChannelSize(256))
	go func() {
		defer close(s.done)
		for m := range msgs {
			switch m := m.(type) {
			case *redis.Subscription:
				s.confirmed(m.Kind, m.Channel)
			case *redis.Message:
				if user, ok := strings.CutPrefix(m.Channel, featurestore.RecsChannelPrefix); ok {
					s.hub.publish(user, []byte(m.Payload))
				}
			}
		}
	}()
	return s
}

// Close unsubscribes everything and releases the pub/sub connection.
func (s *RedisStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for ch, st := range s.chans {
		st.gate.open(errStoreClosed)
		delete(s.chans, ch)
	}
	s.mu.Unlock()
	err := s.ps.Close()
	<-s.done
	return err
}

// Latest implements Store.
func (s *RedisStore) Latest(ctx context.Context, user string) ([]byte, error) {
	return s.field(ctx, user, featurestore.FieldRecs)
}

// Events implements Store.
func (s *RedisStore) Events(ctx context.Context, user string) ([]byte, error) {
	return s.field(ctx, user, featurestore.FieldEvents)
}

func (s *RedisStore) field(ctx context.Context, user, field string) ([]byte, error) {
	b, err := s.rc.HGet(ctx, featurestore.UserKey(user), field).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s of %s from Redis: %w", field, featurestore.UserKey(user), err)
	}
	return b, nil
}

// Ping implements Store.
func (s *RedisStore) Ping(ctx context.Context) error {
	if err := s.rc.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

// Subscribe implements Store: it returns once Redis has confirmed the
// subscription to the user's channel.
func (s *RedisStore) Subscribe(ctx context.Context, user string) (*Subscription, error) {
	ch := featurestore.RecsChannel(user)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errStoreClosed
	}
	st := s.chans[ch]
	if st == nil {
		st = &redisChan{gate: newGate()}
		s.chans[ch] = st
	}
	st.n++
	g := st.gate
	sub, _ := s.hub.add(user)
	sub.close = func() { s.release(user, sub, st) }
	s.sync(ch, st)
	s.mu.Unlock()

	select {
	case <-g.c:
		if g.err != nil {
			sub.Close()
			return nil, g.err
		}
		return sub, nil
	case <-ctx.Done():
		sub.Close()
		return nil, fmt.Errorf("subscribing to Redis channel %s: %w", ch, ctx.Err())
	}
}

func (s *RedisStore) release(user string, sub *Subscription, st *redisChan) {
	s.hub.remove(user, sub)
	ch := featurestore.RecsChannel(user)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.chans[ch] != st { // failed or closed meanwhile
		return
	}
	st.n--
	s.sync(ch, st)
}

// sync sends the command that moves Redis towards the wanted state of ch,
// unless one is in flight. Called with s.mu held.
func (s *RedisStore) sync(ch string, st *redisChan) {
	if st.inflight != "" || s.closed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	switch want := st.n > 0; {
	case want && !st.subscribed:
		st.inflight = "subscribe"
		if err := s.ps.Subscribe(ctx, ch); err != nil {
			st.gate.open(fmt.Errorf("subscribing to Redis channel %s: %w", ch, err))
			delete(s.chans, ch)
			_ = s.ps.Unsubscribe(ctx, ch) // forget it, so a reconnect does not resubscribe
		}
	case !want && st.subscribed:
		st.inflight = "unsubscribe"
		st.subscribed = false
		st.gate = newGate() // a subscriber arriving now waits for the resubscription
		if err := s.ps.Unsubscribe(ctx, ch); err != nil {
			delete(s.chans, ch) // the connection was reset: nothing is subscribed
		}
	case !want:
		delete(s.chans, ch)
	}
}

// confirmed handles Redis's confirmation of a SUBSCRIBE or UNSUBSCRIBE.
func (s *RedisStore) confirmed(kind, ch string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.chans[ch]
	if st == nil {
		return
	}
	switch kind {
	case "subscribe":
		if st.inflight == "unsubscribe" { // a resubscription sent before our UNSUBSCRIBE
			return
		}
		st.inflight, st.subscribed = "", true
		if st.n > 0 {
			st.gate.open(nil)
		}
	case "unsubscribe":
		if st.inflight == "subscribe" { // sent before our SUBSCRIBE
			return
		}
		if st.subscribed {
			st.gate = newGate()
		}
		st.inflight, st.subscribed = "", false
	default:
		return
	}
	s.sync(ch, st)
}
