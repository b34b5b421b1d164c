package hotpath

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/drift"
	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/internal/testenv"
)

// TestPublishLive checks that the live drift profile of the current minute is
// rewritten with everything counted so far (never reset within the minute, so
// nothing is lost or counted twice), that a new minute starts empty once the
// old one got its final counts, and that the minute so far is written once
// more on shutdown. The clock is the test's: no waiting for a minute boundary.
func TestPublishLive(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	defer rc.Close()
	cfg := DefaultConfig()
	cfg.InstanceID = testenv.Name("live")
	w, err := New(cfg, kafkautil.Config{}, Options{Redis: rc})
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64 // unix ms
	clock.Store(time.Date(2026, 12, 5, 10, 30, 20, 0, time.UTC).UnixMilli())
	w.now = func() time.Time { return time.UnixMilli(clock.Load()) }
	ref := drift.ReferenceSet{drift.FeatureCategoryMix: drift.NewCategoricalReference(map[string]uint64{"shoes": 3, "hats": 2}, 0)}
	w.live = ref.NewLive()
	count := func(key string) uint64 {
		b, err := rc.Get(context.Background(), key).Bytes()
		if err != nil {
			return 0
		}
		var got drift.LiveSet
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		return got[drift.FeatureCategoryMix].N()
	}
	observe := func(n uint64) {
		w.liveMu.Lock()
		w.live.ObserveCategorical(drift.FeatureCategoryMix, "shoes", n)
		w.liveMu.Unlock()
	}
	key := drift.LiveKey(drift.LiveMinute(w.now()), cfg.InstanceID)
	next := drift.LiveKey(drift.LiveMinute(w.now().Add(time.Minute)), cfg.InstanceID)
	t.Cleanup(func() { rc.Del(context.Background(), key, next) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.publishLive(ctx, 20*time.Millisecond); close(done) }()
	wait := func(key string, want uint64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for count(key) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s holds %d observations, want %d", key, count(key), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	observe(5)
	wait(key, 5)
	observe(7)
	wait(key, 12) // the minute's key grows; earlier counts are kept
	// The next minute: what was counted before the change is the old
	// minute's; the new minute starts empty.
	observe(1)
	clock.Add(time.Minute.Milliseconds())
	wait(key, 13)
	// Observe only once the publisher has started the new minute (its live
	// profile is empty again), or the next count could still go to the old.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		w.liveMu.Lock()
		n := w.live[drift.FeatureCategoryMix].N()
		w.liveMu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the publisher never started the new minute")
		}
	}
	observe(2)
	wait(next, 2)
	if got := count(key); got != 13 {
		t.Fatalf("the closed minute holds %d observations, want 13", got)
	}
	cancel()
	<-done

	// With an interval that never fires, only the write on shutdown publishes.
	ctx, cancel = context.WithCancel(context.Background())
	done = make(chan struct{})
	go func() { w.publishLive(ctx, time.Hour); close(done) }()
	observe(4)
	cancel()
	<-done
	if got := count(next); got != 6 {
		t.Fatalf("after shutdown %d observations, want 6", got)
	}
}
