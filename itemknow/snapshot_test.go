package itemknow

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// TestSnapshotRoundTrip: a table loaded from a snapshot is the table that
// wrote it — the same answers now, and the same answers after both learn
// the same further clicks, evictions included (small caps).
func TestSnapshotRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	incs := clicks(1_700_000_000_000, randomSessions(r, 3000, 2000))
	cfg := DefaultConfig()
	cfg.MaxItems, cfg.MaxPairsPerItem, cfg.MaxPairs = 800, 8, 4000 // evictions happen
	a := New(cfg)
	half := len(incs) / 2
	for _, inc := range incs[:half] {
		a.Apply(inc)
	}
	snap := a.AppendSnapshot(nil)
	b, err := LoadSnapshot(cfg, snap)
	if err != nil {
		t.Fatal(err)
	}
	check := func(stage string) {
		t.Helper()
		if !reflect.DeepEqual(a.Stats(), b.Stats()) {
			t.Fatalf("%s: stats %+v vs %+v", stage, a.Stats(), b.Stats())
		}
		now := incs[len(incs)-1].TimeMs
		if x, y := a.Popular(50, now, nil), b.Popular(50, now, nil); !reflect.DeepEqual(x, y) {
			t.Fatalf("%s: popular %v vs %v", stage, x, y)
		}
		for id := int64(1); id <= 2000; id += 13 {
			if x, y := a.Candidates([]int64{id + 1, id}, 20, nil), b.Candidates([]int64{id + 1, id}, 20, nil); !reflect.DeepEqual(x, y) {
				t.Fatalf("%s: candidates after %d: %v vs %v", stage, id, x, y)
			}
		}
	}
	check("loaded")
	for _, inc := range incs[half:] {
		a.Apply(inc)
		b.Apply(inc)
	}
	if a.Stats().ItemEvictions == 0 {
		t.Fatal("no eviction: the caps are too large for the test to mean anything")
	}
	check("after learning on")
	if !reflect.DeepEqual(a.AppendSnapshot(nil), b.AppendSnapshot(nil)) {
		t.Fatal("the two tables' snapshots differ after the same clicks")
	}

	// Another learning configuration, or damaged bytes, are refused.
	other := cfg
	other.HalfLife = time.Minute
	if _, err := LoadSnapshot(other, snap); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("another half-life: %v, want ErrSnapshot", err)
	}
	if _, err := LoadSnapshot(cfg, snap[:len(snap)-3]); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("truncated: %v, want ErrSnapshot", err)
	}
}

func FuzzLoadSnapshot(f *testing.F) {
	cfg := DefaultConfig()
	cfg.MaxItems, cfg.MaxPairsPerItem, cfg.MaxPairs = 64, 4, 256
	tab := New(cfg)
	for _, inc := range clicks(1_700_000_000_000, randomSessions(rand.New(rand.NewPCG(1, 1)), 20, 50)) {
		tab.Apply(inc)
	}
	f.Add(tab.AppendSnapshot(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		tab, err := LoadSnapshot(cfg, b)
		if err != nil {
			return
		}
		// Whatever loaded must answer queries without panicking.
		tab.Candidates([]int64{1, 2, 3}, 10, nil)
		tab.Popular(10, 0, nil)
	})
}
