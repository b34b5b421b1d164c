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
// A store changes in batches, one per Kafka transaction. Within a batch the
// processor mutates the *userState that Get or Add gave it, and calls Save
// with the user's new changelog encoding for every changed user. When the
// transaction has ended, Commit makes the batch the store's state, or Rollback
// returns the store to what it held at the last Commit: an aborted transaction
// (a rebalance, a failed produce) costs what its batch touched, not a restore
// of the partition. A store may keep users in any form between batches:
// decoded on the heap (memoryStore), as their encoded bytes (encodedStore,
// about a quarter of the memory), or on local disk (pebbleStore: the encoding
// under the user id, decoded on Get).
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
	// Commit ends a batch whose transaction committed: its Adds, Saves and
	// Deletes are the state now, and the users handed out may be released.
	Commit()
	// Rollback ends a batch whose transaction did not commit: the store
	// holds again exactly what it held at the last Commit, and the users
	// handed out must not be used.
	Rollback()
	// Len is the number of users.
	Len() int
	// Range calls fn for every user, outside a batch (a restore, or a
	// rewrite after Redis lost its data: it may decode them all).
	Range(fn func(u *userState))
	// Restore applies one changelog value (never a tombstone: see Delete),
	// outside a batch; Commit ends the restore.
	Restore(id string, value []byte) error
	// Close releases the store when its partition is dropped (revoked, or
	// forgotten when a session ends).
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
	return &memoryStore{users: map[string]*userState{}}
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

// undoLog keeps the pre-images of the users a batch changed: their encoding
// at the last Commit, or nil for a user that did not exist. The bytes live in
// one arena reused from batch to batch, so a batch that commits allocates
// nothing for its undo.
type undoLog struct {
	pre   map[string][]byte
	arena []byte
}

// has reports whether id's pre-image is kept already.
func (l *undoLog) has(id string) bool {
	_, ok := l.pre[id]
	return ok
}

func (l *undoLog) init() {
	if l.pre == nil {
		l.pre, l.arena = map[string][]byte{}, make([]byte, 0, 4096)
	}
}

// keepAbsent records that id did not exist.
func (l *undoLog) keepAbsent(id string) {
	l.init()
	l.pre[id] = nil
}

// keepBytes records id's encoded pre-image b (never empty).
func (l *undoLog) keepBytes(id string, b []byte) {
	l.init()
	start := len(l.arena)
	l.arena = append(l.arena, b...)
	l.pre[id] = l.arena[start:len(l.arena):len(l.arena)]
}

// keepUser records u's pre-image, encoded now.
func (l *undoLog) keepUser(u *userState) {
	l.init()
	start := len(l.arena)
	l.arena = u.appendBinary(l.arena)
	l.pre[u.id] = l.arena[start:len(l.arena):len(l.arena)]
}

// reset forgets the batch (Commit, or after Rollback replayed it).
func (l *undoLog) reset() {
	clear(l.pre)
	if cap(l.arena) > 64<<20 { // an unusually large batch: do not hold its memory
		l.arena = make([]byte, 0, 4096)
	}
	l.arena = l.arena[:0]
}

// memoryStore keeps every user decoded: the fastest, ≈ 1 KB per user with 20
// recent events. Users are mutated in place, so the first Get of a user in a
// batch encodes its pre-image for Rollback.
type memoryStore struct {
	users map[string]*userState
	undo  undoLog
	err   error
}

func (s *memoryStore) Get(id string) *userState {
	u := s.users[id]
	if u != nil && !s.undo.has(id) {
		s.undo.keepUser(u)
	}
	return u
}

func (s *memoryStore) Add(u *userState) {
	if !s.undo.has(u.id) {
		s.undo.keepAbsent(u.id)
	}
	s.users[u.id] = u
}

func (s *memoryStore) Save(*userState, []byte) {}

func (s *memoryStore) Delete(id string) {
	if s.Get(id) != nil { // keeps the pre-image
		delete(s.users, id)
	}
}

func (s *memoryStore) Commit() { s.undo.reset() }

func (s *memoryStore) Rollback() {
	for id, pre := range s.undo.pre {
		if pre == nil {
			delete(s.users, id)
			continue
		}
		u, err := decodeState(id, pre)
		if err != nil { // this process encoded it a moment ago: memory went bad
			if s.err == nil {
				s.err = fmt.Errorf("memory state store: undoing a batch: %w", err)
			}
			delete(s.users, id)
			continue
		}
		s.users[id] = u
	}
	s.undo.reset()
}

func (s *memoryStore) Len() int     { return len(s.users) }
func (s *memoryStore) Err() error   { return s.err }
func (s *memoryStore) Close() error { return nil }

func (s *memoryStore) Range(fn func(u *userState)) {
	for _, u := range s.users {
		fn(u)
	}
}

func (s *memoryStore) Restore(id string, value []byte) error {
	u, err := decodeState(id, value)
	if err != nil {
		return err
	}
	s.users[id] = u
	return nil
}

// encodedStore keeps users between batches as their changelog encoding (≈ 500
// bytes with 20 recent events) and decodes the ones a batch touches.
type encodedStore struct {
	data map[string][]byte
	live map[string]*userState // decoded in this batch
	undo undoLog               // data of the users Save or Delete changed
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

// keepPre records id's bytes before a Save or Delete changes them.
func (s *encodedStore) keepPre(id string) {
	if s.undo.has(id) {
		return
	}
	if b, ok := s.data[id]; ok {
		s.undo.keepBytes(id, b)
	} else {
		s.undo.keepAbsent(id)
	}
}

func (s *encodedStore) Save(u *userState, encoded []byte) {
	s.keepPre(u.id)
	b := s.data[u.id]
	if cap(b) < len(encoded) || cap(b) > 2*len(encoded)+64 {
		b = make([]byte, 0, len(encoded)+len(encoded)/4)
	}
	s.data[u.id] = append(b[:0], encoded...)
}

func (s *encodedStore) Delete(id string) {
	s.keepPre(id)
	delete(s.data, id)
	delete(s.live, id)
}

func (s *encodedStore) Commit() {
	clear(s.live)
	s.undo.reset()
}

func (s *encodedStore) Rollback() {
	for id, pre := range s.undo.pre {
		if pre == nil {
			delete(s.data, id)
		} else {
			s.data[id] = append(s.data[id][:0], pre...)
		}
	}
	s.undo.reset()
	clear(s.live)
}

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
	for id, b := range s.data {
		u, err := decodeState(id, b)
		if err != nil {
			if s.err == nil {
				s.err = fmt.Errorf("encoded state store: %w", err)
			}
			return
		}
		fn(u)
	}
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
