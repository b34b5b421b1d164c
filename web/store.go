package web

import (
	"context"
	"errors"
	"sync"
)

// ErrNotFound is returned by a Store that has nothing for the user.
var ErrNotFound = errors.New("not found")

// Store is where the server reads a user's state and follows their new
// recommendations: the Redis feature store (RedisStore) or, without Redis,
// the Kafka topics themselves (MemoryStore).
type Store interface {
	// Latest returns the user's latest recommendation record, the JSON the hot
	// path writes, or ErrNotFound.
	Latest(ctx context.Context, user string) ([]byte, error)
	// Events returns the user's recent events as a JSON array, newest last, or
	// ErrNotFound.
	Events(ctx context.Context, user string) ([]byte, error)
	// Subscribe follows the user's new recommendations. It returns once every
	// recommendation committed from then on will be delivered, or with an
	// error when ctx ends first. The caller must Close the subscription.
	Subscribe(ctx context.Context, user string) (*Subscription, error)
	// Ping reports whether the store can answer.
	Ping(ctx context.Context) error
}

// subscriptionBuffer is how many undelivered recommendations a subscription
// holds; beyond that the oldest is dropped (only the newest matters).
const subscriptionBuffer = 16

// Subscription is a stream of one user's recommendation records.
type Subscription struct {
	// C delivers the recommendation records (JSON) in commit order. A slow
	// reader loses the oldest undelivered ones, never the newest.
	C <-chan []byte

	ch    chan []byte
	once  sync.Once
	close func()
}

// Close ends the subscription. It is safe to call more than once.
func (s *Subscription) Close() { s.once.Do(s.close) }

// hub fans recommendations out to the subscriptions of their user.
type hub struct {
	mu   sync.Mutex
	subs map[string]map[*Subscription]struct{}
}

func newHub() *hub { return &hub{subs: map[string]map[*Subscription]struct{}{}} }

// add registers a new subscription of user; first reports whether it is the
// user's only one.
func (h *hub) add(user string) (s *Subscription, first bool) {
	ch := make(chan []byte, subscriptionBuffer)
	s = &Subscription{C: ch, ch: ch}
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.subs[user]
	if m == nil {
		m = map[*Subscription]struct{}{}
		h.subs[user] = m
	}
	m[s] = struct{}{}
	return s, len(m) == 1
}

// remove unregisters s; last reports whether user has no subscription left.
func (h *hub) remove(user string, s *Subscription) (last bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.subs[user]
	if _, ok := m[s]; !ok {
		return false
	}
	delete(m, s)
	if len(m) == 0 {
		delete(h.subs, user)
		return true
	}
	return false
}

// publish hands msg to every subscription of user without blocking: a full
// subscription drops its oldest record to make room.
func (h *hub) publish(user string, msg []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[user] {
		for {
			select {
			case s.ch <- msg:
			default:
				select {
				case <-s.ch:
				default:
				}
				continue
			}
			break
		}
	}
}

// users returns the number of users with at least one subscription.
func (h *hub) users() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}
