package hotpath

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// pebbleStore keeps a partition's users on local disk in Pebble, encoded as in
// the changelog, for state larger than memory: the heap holds only the users
// of the current batch and Pebble's block cache. The directory is a cache of
// the changelog, never the source of truth: it is wiped when the partition is
// opened (the worker restores it from the changelog) and when it is closed,
// and Pebble's own write-ahead log is off — the changelog is the log. A batch's
// writes stay in an indexed Pebble batch until its transaction ends: Commit
// applies it, Rollback drops it.
type pebbleStore struct {
	db    *pebble.DB
	dir   string
	batch *pebble.Batch // indexed: reads see what the batch wrote
	live  map[string]*userState
	fresh map[string]bool       // added in this batch, not yet saved
	n     int                   // users, including the batch's
	added int                   // users the batch added (negative: removed)
	err   atomic.Pointer[error] // the first failure (Pebble's background work reports here too)
}

// fail records the store's first error; later operations do nothing.
func (s *pebbleStore) fail(err error) {
	err = fmt.Errorf("pebble state store in %s: %w", s.dir, err)
	s.err.CompareAndSwap(nil, &err)
}

func (s *pebbleStore) failed() bool { return s.err.Load() != nil }

// Err implements Store.
func (s *pebbleStore) Err() error {
	if e := s.err.Load(); e != nil {
		return *e
	}
	return nil
}

// restoreFlushBytes bounds the batch a restore builds before committing it.
const restoreFlushBytes = 32 << 20

func openPebbleStore(dir string, cacheBytes int64) (*pebbleStore, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("clearing the state directory %s: %w", dir, err)
	}
	cache := pebble.NewCache(cacheBytes)
	defer cache.Unref()
	s := &pebbleStore{dir: dir, live: map[string]*userState{}, fresh: map[string]bool{}}
	db, err := pebble.Open(dir, &pebble.Options{
		Cache:        cache,
		DisableWAL:   true,
		MemTableSize: 16 << 20,
		Logger:       pebbleLogger{s},
	})
	if err != nil {
		return nil, fmt.Errorf("opening the state store in %s: %w", dir, err)
	}
	s.db, s.batch = db, db.NewIndexedBatch()
	return s, nil
}

func (s *pebbleStore) read(id string) ([]byte, bool) {
	if s.failed() {
		return nil, false
	}
	v, closer, err := s.batch.Get([]byte(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false
	}
	if err != nil {
		s.fail(fmt.Errorf("reading the state of %q: %w", id, err))
		return nil, false
	}
	b := append([]byte(nil), v...)
	closer.Close()
	return b, true
}

func (s *pebbleStore) Get(id string) *userState {
	if u := s.live[id]; u != nil {
		return u
	}
	b, ok := s.read(id)
	if !ok {
		return nil
	}
	u, err := decodeState(id, b)
	if err != nil {
		// Only bytes this process encoded or validated on Restore are
		// stored: the disk returned something else.
		s.fail(err)
		return nil
	}
	s.live[id] = u
	return u
}

func (s *pebbleStore) Add(u *userState) {
	s.live[u.id] = u
	s.fresh[u.id] = true
}

func (s *pebbleStore) Save(u *userState, encoded []byte) {
	if s.failed() {
		return
	}
	if err := s.batch.Set([]byte(u.id), encoded, nil); err != nil {
		s.fail(fmt.Errorf("writing the state of %q: %w", u.id, err))
		return
	}
	if s.fresh[u.id] {
		delete(s.fresh, u.id)
		s.n++
		s.added++
	}
}

func (s *pebbleStore) Delete(id string) {
	delete(s.live, id)
	if s.fresh[id] {
		delete(s.fresh, id)
		return
	}
	if _, ok := s.read(id); !ok {
		return
	}
	if err := s.batch.Delete([]byte(id), nil); err != nil {
		s.fail(fmt.Errorf("deleting the state of %q: %w", id, err))
		return
	}
	s.n--
	s.added--
}

func (s *pebbleStore) commit() {
	if s.failed() || s.batch.Empty() {
		return
	}
	if err := testHookPebbleCommit(); err != nil {
		s.fail(fmt.Errorf("committing: %w", err))
		return
	}
	if err := s.batch.Commit(pebble.NoSync); err != nil {
		s.fail(fmt.Errorf("committing: %w", err))
		return
	}
	s.batch.Close()
	s.batch = s.db.NewIndexedBatch()
}

func (s *pebbleStore) Commit() {
	s.commit()
	s.added = 0
	clear(s.live)
	clear(s.fresh)
}

func (s *pebbleStore) Rollback() {
	s.batch.Reset() // still indexed: Reset keeps the index
	s.n -= s.added
	s.added = 0
	clear(s.live)
	clear(s.fresh)
}

func (s *pebbleStore) Len() int { return s.n + len(s.fresh) }

func (s *pebbleStore) Range(fn func(u *userState)) {
	s.commit()
	if s.failed() {
		return
	}
	it, err := s.db.NewIter(nil)
	if err != nil {
		s.fail(fmt.Errorf("iterating: %w", err))
		return
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		id := string(it.Key())
		u := s.live[id]
		if u == nil {
			var err error
			if u, err = decodeState(id, it.Value()); err != nil {
				s.fail(err)
				return
			}
		}
		fn(u)
	}
	if err := it.Error(); err != nil {
		s.fail(fmt.Errorf("iterating: %w", err))
		return
	}
	for id, u := range s.live {
		if s.fresh[id] {
			fn(u)
		}
	}
}

func (s *pebbleStore) Restore(id string, value []byte) error {
	if _, err := decodeState(id, value); err != nil {
		return err
	}
	if _, ok := s.read(id); !ok {
		s.n++
	}
	if err := s.batch.Set([]byte(id), value, nil); err != nil {
		return fmt.Errorf("writing restored state to %s: %w", s.dir, err)
	}
	delete(s.live, id)
	if s.batch.Len() > restoreFlushBytes {
		s.commit()
	}
	return s.Err()
}

func (s *pebbleStore) Close() error {
	s.batch.Close()
	err := s.db.Close()
	if rerr := os.RemoveAll(s.dir); err == nil {
		err = rerr
	}
	return err
}

// testHookPebbleCommit, replaced by a test, fails a store's commit (a full
// disk, say).
var testHookPebbleCommit = func() error { return nil }

// pebbleLogger keeps Pebble's informational lines out of the worker's log
// and turns its fatal errors into the store's error: the worker aborts the
// batch and rebuilds the state in a new session instead of crashing.
type pebbleLogger struct{ s *pebbleStore }

func (pebbleLogger) Infof(string, ...any) {}
func (pebbleLogger) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pebble: "+format+"\n", args...)
}
func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.s.fail(fmt.Errorf(format, args...))
}
