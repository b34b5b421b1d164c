package web

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/internal/kafkautil"
)

// MemoryOptions shape a MemoryStore.
type MemoryOptions struct {
	MaxUsers     int // users kept in memory; the least recently active are forgotten first
	RecentEvents int // events kept per user
	Logger       *slog.Logger
}

// DefaultMemoryOptions keep 100,000 users and 20 events each (the hot path's
// default --recent-items).
var DefaultMemoryOptions = MemoryOptions{MaxUsers: 100_000, RecentEvents: 20}

// MemoryStore is the Store used without Redis: it follows the recommendations
// and user_events topics (read_committed, from their ends when Run starts)
// and keeps, in memory, each user's latest recommendation and recent valid
// clicks. It knows only what was committed after it started. Unlike the
// feature store, its events include clicks that the hot path will find too
// late to use.
type MemoryStore struct {
	kcfg   kafkautil.Config
	topics kafkautil.Topics
	opts   MemoryOptions
	hub    *hub
	ready  chan struct{} // closed once Run follows both topics
	// observe, if set (by tests) before Run, is called after each record is applied.
	observe func(*kgo.Record)

	mu    sync.Mutex
	users map[string]*list.Element // of *memUser, most recently active at the front
	lru   list.List
}

type memUser struct {
	id     string
	recs   []byte
	events []memEvent // event-time order, newest last
}

// memEvent has the fields of an event in the feature store's events array.
type memEvent struct {
	ItemID      int64      `json:"item_id"`
	Category    string     `json:"category"`
	Type        event.Type `json:"event_type"`
	TimestampMs int64      `json:"timestamp_ms"`
}

// NewMemoryStore returns a store that follows topics on the cluster kcfg
// describes once Run is called.
func NewMemoryStore(kcfg kafkautil.Config, topics kafkautil.Topics, opts MemoryOptions) *MemoryStore {
	if opts.MaxUsers <= 0 {
		opts.MaxUsers = DefaultMemoryOptions.MaxUsers
	}
	if opts.RecentEvents <= 0 {
		opts.RecentEvents = DefaultMemoryOptions.RecentEvents
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &MemoryStore{kcfg: kcfg, topics: topics, opts: opts, hub: newHub(), ready: make(chan struct{}), users: map[string]*list.Element{}}
}

// Run follows the topics until ctx ends; call it once. It starts at the last
// stable offset of every partition, so a Subscribe that returned sees every
// recommendation committed afterwards.
func (m *MemoryStore) Run(ctx context.Context) error {
	recs, evs := string(m.topics.Recs), string(m.topics.Events)
	admin, err := kgo.NewClient(m.kcfg.Opts("clickrec-web-admin")...)
	if err != nil {
		return fmt.Errorf("creating the Kafka admin client: %w", err)
	}
	offsets, err := kadm.NewClient(admin).ListCommittedOffsets(ctx, recs, evs)
	admin.Close()
	if err == nil {
		err = offsets.Error()
	}
	if err != nil {
		return fmt.Errorf("listing the end offsets of %s and %s: %w", recs, evs, err)
	}
	start := map[string]map[int32]kgo.Offset{}
	offsets.Each(func(o kadm.ListedOffset) {
		if start[o.Topic] == nil {
			start[o.Topic] = map[int32]kgo.Offset{}
		}
		start[o.Topic][o.Partition] = kgo.NewOffset().At(o.Offset)
	})
	for _, t := range []string{recs, evs} {
		if len(start[t]) == 0 {
			return fmt.Errorf("topic %s has no partitions (does it exist?)", t)
		}
	}
	cl, err := kgo.NewClient(append(m.kcfg.Opts("clickrec-web-follower"),
		kgo.ConsumePartitions(start),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(250*time.Millisecond))...)
	if err != nil {
		return fmt.Errorf("creating the Kafka consumer: %w", err)
	}
	defer cl.Close()
	close(m.ready)
	m.opts.Logger.Info("following recommendations and clicks", "recs_topic", recs, "events_topic", evs)
	var c event.Click
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fs.EachError(func(t string, p int32, err error) {
			m.opts.Logger.Warn("fetch error; retrying", "topic", t, "partition", p, "err", err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			switch r.Topic {
			case recs:
				m.addRecs(string(r.Key), r.Value)
			case evs:
				if event.DecodeInto(&c, r.Value, time.Time{}, event.DefaultLimits) == nil && c.CheckKey(r.Key) == nil {
					m.addEvent(&c)
				}
			}
			if m.observe != nil {
				m.observe(r)
			}
		})
	}
}

// user returns the entry of id, created if needed, and marks it active.
// Called with m.mu held.
func (m *MemoryStore) user(id string) *memUser {
	if e, ok := m.users[id]; ok {
		m.lru.MoveToFront(e)
		return e.Value.(*memUser)
	}
	u := &memUser{id: id}
	m.users[id] = m.lru.PushFront(u)
	for len(m.users) > m.opts.MaxUsers {
		old := m.lru.Back()
		m.lru.Remove(old)
		delete(m.users, old.Value.(*memUser).id)
	}
	return u
}

func (m *MemoryStore) addRecs(user string, value []byte) {
	if user == "" {
		return
	}
	m.mu.Lock()
	m.user(user).recs = value
	m.mu.Unlock()
	m.hub.publish(user, value)
}

func (m *MemoryStore) addEvent(c *event.Click) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.user(c.UserID)
	ev := memEvent{ItemID: c.ItemID, Category: c.Category, Type: c.Type, TimestampMs: c.TimestampMs}
	i, _ := slices.BinarySearchFunc(u.events, ev.TimestampMs+1, func(e memEvent, ts int64) int {
		if e.TimestampMs < ts {
			return -1
		}
		return 1
	})
	u.events = slices.Insert(u.events, i, ev)
	if n := len(u.events) - m.opts.RecentEvents; n > 0 {
		u.events = slices.Delete(u.events, 0, n)
	}
}

// Latest implements Store.
func (m *MemoryStore) Latest(_ context.Context, user string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.users[user]; ok && e.Value.(*memUser).recs != nil {
		return e.Value.(*memUser).recs, nil
	}
	return nil, ErrNotFound
}

// Events implements Store.
func (m *MemoryStore) Events(_ context.Context, user string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.users[user]
	if !ok || len(e.Value.(*memUser).events) == 0 {
		return nil, ErrNotFound
	}
	b, err := json.Marshal(e.Value.(*memUser).events)
	if err != nil {
		return nil, fmt.Errorf("encoding events of %s: %w", user, err)
	}
	return b, nil
}

// Ping implements Store: it fails until Run follows the topics.
func (m *MemoryStore) Ping(context.Context) error {
	select {
	case <-m.ready:
		return nil
	default:
		return errors.New("not yet following the Kafka topics")
	}
}

// Subscribe implements Store: it returns once Run follows the topics.
func (m *MemoryStore) Subscribe(ctx context.Context, user string) (*Subscription, error) {
	select {
	case <-m.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting to follow the recommendations topic: %w", ctx.Err())
	}
	sub, _ := m.hub.add(user)
	sub.close = func() { m.hub.remove(user, sub) }
	return sub, nil
}
