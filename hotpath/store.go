package hotpath

import (
	"fmt"
	"net/url"
	"path/filepath"
	"sync"
)

// Store holds the state of the users of one partition. The worker keeps one per
// assigned partition and fills it from the changelog when the partition is
// assigned; the changelog stays the source of truth, a Store is a cache of it.
//
// Within a batch the processor mutates the *userState that Get or Add gave it;
// at the end of the batch it calls Save with the user's new changelog encoding
// for every changed user, then EndBatch. A store may therefore keep users in
// any form between batches: decoded on the heap (memoryStore), as their
// encoded bytes (encodedStore, about a quarter of the memory), or on local
// disk (pebbleStore: the encoding under the user id, decoded on Get).
type Store interface {
	// Get returns the user's state, or nil if the user is unknown. Within a
	// batch, repeated calls return the same pointer.
	Get(id string) *userState
	// Add makes a new user known; Get returns it from now on.
	Add(u *userState)
	// Save records u's state at the end of a batch; encoded is its changelog
	// value, valid only during the call.
	Save(u *userState, encoded []byte)
	// Delete forgets a user (TTL expiry, changelog tombstone).
	Delete(id string)
	// EndBatch ends a batch: users handed out may be released.
	EndBatch()
	// Len is the number of users.
	Len() int
	// Range calls fn for every user (restore only: it may decode them all).
	Range(fn func(u *userState))
	// Restore applies one changelog value (never a tombstone: see Delete).
	Restore(id string, value []byte) error
	// Close releases the store when its partition is dropped (revoked, or
	// forgotten after a transaction that did not commit).
	Close() error
	// Err is the first error the store met (an I/O error, a full disk, bytes
	// that no longer decode), nil if none. A failed store answers Get with
	// nil and ignores writes: the worker checks Err before it commits a batch,
	// aborts that batch and rebuilds the state from the changelog in a new
	// session, so nothing computed from a failed store becomes visible.
	Err() error
}

// Store kinds for --state-store.
const (
	StoreMemory  = "memory"
	StoreEncoded = "encoded"
	StorePebble  = "pebble"
)

// newStore returns an in-memory store of kind (memory or encoded).
func newStore(kind string) Store {
	if kind == StoreEncoded {
		return &encodedStore{data: map[string][]byte{}, live: map[string]*userState{}}
	}
	return memoryStore{}
}

// openStore returns the store cfg asks for, for partition id.
func openStore(cfg *Config, id int32) (Store, error) {
	if cfg.StateStore == StorePebble {
		// Per instance: two workers on one host never share a partition's
		// directory, even while the partition moves between them.
		dir := filepath.Join(cfg.StateDir, url.PathEscape(cfg.InstanceID), fmt.Sprintf("%s-%d", cfg.Topics.Changelog, id))
		return openPebbleStore(dir, 32<<20)
	}
	return newStore(cfg.StateStore), nil
}

// memoryStore keeps every user decoded: the fastest, ≈ 1 KB per user with 20
// recent events.
type memoryStore map[string]*userState

func (s memoryStore) Get(id string) *userState { return s[id] }
func (s memoryStore) Add(u *userState)         { s[u.id] = u }
func (s memoryStore) Save(*userState, []byte)  {}
func (s memoryStore) Delete(id string)         { delete(s, id) }
func (s memoryStore) EndBatch()                {}
func (s memoryStore) Len() int                 { return len(s) }
func (memoryStore) Err() error                 { return nil }
func (s memoryStore) Close() error             { return nil }
func (s memoryStore) Range(fn func(u *userState)) {
	for _, u := range s {
		fn(u)
	}
}

func (s memoryStore) Restore(id string, value []byte) error {
	u, err := decodeState(id, value)
	if err != nil {
		return err
	}
	s[id] = u
	return nil
}

// encodedStore keeps users between batches as their changelog encoding (≈ 500
// bytes with 20 recent events) and decodes the ones a batch touches.
type encodedStore struct {
	data map[string][]byte
	live map[string]*userState // decoded in this batch
	err  error
}

func (s *encodedStore) Err() error { return s.err }

func (s *encodedStore) Get(id string) *userState {
	if u := s.live[id]; u != nil {
		return u
	}
	b, ok := s.data[id]
	if !ok {
		return nil
	}
	u, err := decodeState(id, b)
	if err != nil {
		// Only bytes this process encoded or validated on Restore are
		// stored: memory went bad. The batch is aborted (see Store.Err).
		if s.err == nil {
			s.err = fmt.Errorf("encoded state store: %w", err)
		}
		return nil
	}
	s.live[id] = u
	return u
}

func (s *encodedStore) Add(u *userState) { s.live[u.id] = u }

func (s *encodedStore) Save(u *userState, encoded []byte) {
	b := s.data[u.id]
	if cap(b) < len(encoded) || cap(b) > 2*len(encoded)+64 {
		b = make([]byte, 0, len(encoded)+len(encoded)/4)
	}
	s.data[u.id] = append(b[:0], encoded...)
}

func (s *encodedStore) Delete(id string) {
	delete(s.data, id)
	delete(s.live, id)
}

func (s *encodedStore) EndBatch() { clear(s.live) }

func (s *encodedStore) Close() error { return nil }

func (s *encodedStore) Len() int {
	n := len(s.data)
	for id := range s.live {
		if _, ok := s.data[id]; !ok {
			n++
		}
	}
	return n
}

func (s *encodedStore) Range(fn func(u *userState)) {
	for id := range s.data {
		fn(s.Get(id))
	}
	for id, u := range s.live {
		if _, ok := s.data[id]; !ok {
			fn(u)
		}
	}
	s.EndBatch()
}

func (s *encodedStore) Restore(id string, value []byte) error {
	if _, err := decodeState(id, value); err != nil {
		return err
	}
	s.data[id] = append([]byte(nil), value...)
	delete(s.live, id)
	return nil
}

// interner shares the strings that repeat across users and events (category
// names): one copy per distinct value instead of one per event in state.
type interner struct {
	mu sync.Mutex
	m  map[string]string
}

const maxInterned = 1 << 17

var cats = interner{m: map[string]string{}}

func (in *interner) bytes(b []byte) string {
	in.mu.Lock()
	defer in.mu.Unlock()
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(in.m) < maxInterned {
		in.m[s] = s
	}
	return s
}

func (in *interner) str(s string) string {
	in.mu.Lock()
	defer in.mu.Unlock()
	if v, ok := in.m[s]; ok {
		return v
	}
	if len(in.m) < maxInterned {
		in.m[s] = s
	}
	return s
}
