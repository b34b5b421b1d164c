package hotpath

import (
	"errors"
	"fmt"
	"os"

	"github.com/cockroachdb/pebble/v2"
)

// pebbleStore keeps a partition's users on local disk in Pebble, encoded as in
// the changelog, for state larger than memory: the heap holds only the users
// of the current batch and Pebble's block cache. The directory is a cache of
// the changelog, never the source of truth: it is wiped when the partition is
// opened (the worker restores it from the changelog) and when it is closed,
// and Pebble's own write-ahead log is off — the changelog is the log.
type pebbleStore struct {
	db    *pebble.DB
	dir   string
	batch *pebble.Batch // indexed: reads see what the batch wrote
	live  map[string]*userState
	fresh map[string]bool // added in this batch, not yet saved
	n     int
}

// restoreFlushBytes bounds the batch a restore builds before committing it.
const restoreFlushBytes = 32 << 20

func openPebbleStore(dir string, cacheBytes int64) (*pebbleStore, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("clearing the state directory %s: %w", dir, err)
	}
	cache := pebble.NewCache(cacheBytes)
	defer cache.Unref()
	db, err := pebble.Open(dir, &pebble.Options{
		Cache:        cache,
		DisableWAL:   true,
		MemTableSize: 16 << 20,
		Logger:       quietLogger{},
	})
	if err != nil {
		return nil, fmt.Errorf("opening the state store in %s: %w", dir, err)
	}
	return &pebbleStore{db: db, dir: dir, batch: db.NewIndexedBatch(),
		live: map[string]*userState{}, fresh: map[string]bool{}}, nil
}

func (s *pebbleStore) read(id string) ([]byte, bool) {
	v, closer, err := s.batch.Get([]byte(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false
	}
	if err != nil {
		panic(fmt.Sprintf("hotpath: reading state of %q from %s: %v", id, s.dir, err))
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
		// Only bytes this process encoded or validated on Restore are stored.
		panic(fmt.Sprintf("hotpath: pebble state store: %v", err))
	}
	s.live[id] = u
	return u
}

func (s *pebbleStore) Add(u *userState) {
	s.live[u.id] = u
	s.fresh[u.id] = true
}

func (s *pebbleStore) Save(u *userState, encoded []byte) {
	if err := s.batch.Set([]byte(u.id), encoded, nil); err != nil {
		panic(fmt.Sprintf("hotpath: writing state to %s: %v", s.dir, err))
	}
	if s.fresh[u.id] {
		delete(s.fresh, u.id)
		s.n++
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
		panic(fmt.Sprintf("hotpath: deleting state in %s: %v", s.dir, err))
	}
	s.n--
}

func (s *pebbleStore) commit() {
	if s.batch.Empty() {
		return
	}
	if err := s.batch.Commit(pebble.NoSync); err != nil {
		panic(fmt.Sprintf("hotpath: committing state to %s: %v", s.dir, err))
	}
	s.batch.Close()
	s.batch = s.db.NewIndexedBatch()
}

func (s *pebbleStore) EndBatch() {
	s.commit()
	clear(s.live)
	clear(s.fresh)
}

func (s *pebbleStore) Len() int { return s.n + len(s.fresh) }

func (s *pebbleStore) Range(fn func(u *userState)) {
	s.commit()
	it, err := s.db.NewIter(nil)
	if err != nil {
		panic(fmt.Sprintf("hotpath: iterating state in %s: %v", s.dir, err))
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		id := string(it.Key())
		u := s.live[id]
		if u == nil {
			var err error
			if u, err = decodeState(id, it.Value()); err != nil {
				panic(fmt.Sprintf("hotpath: pebble state store: %v", err))
			}
		}
		fn(u)
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
	return nil
}

func (s *pebbleStore) Close() error {
	s.batch.Close()
	err := s.db.Close()
	if rerr := os.RemoveAll(s.dir); err == nil {
		err = rerr
	}
	return err
}

// quietLogger keeps Pebble's informational lines out of the worker's log.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}
func (quietLogger) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pebble: "+format+"\n", args...)
}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("pebble: "+format, args...))
}
