package hotpath

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/drift"
	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/internal/testenv"
)

// TestPublishLive checks that the live drift profile of the current minute is
// rewritten with everything counted so far (never reset within the minute, so
// nothing is lost or counted twice) and written once more on shutdown.
func TestPublishLive(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	defer rc.Close()
	cfg := DefaultConfig()
	cfg.InstanceID = testenv.Name("live")
	w, err := New(cfg, kafkautil.Config{}, Options{Redis: rc})
	if err != nil {
		t.Fatal(err)
	}
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
	// Stay clear of a minute boundary: the test reads one minute's key.
	if s := time.Now().Second(); s > 50 {
		time.Sleep(time.Duration(61-s) * time.Second)
	}
	key := drift.LiveKey(drift.LiveMinute(time.Now()), cfg.InstanceID)
	defer rc.Del(context.Background(), key)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.publishLive(ctx, 20*time.Millisecond); close(done) }()
	wait := func(want uint64) {
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
	wait(5)
	observe(7)
	wait(12) // the minute's key grows; earlier counts are kept
	cancel()
	<-done

	// With an interval that never fires, only the write on shutdown publishes.
	ctx, cancel = context.WithCancel(context.Background())
	done = make(chan struct{})
	go func() { w.publishLive(ctx, time.Hour); close(done) }()
	observe(4)
	cancel()
	<-done
	if got := count(key); got != 16 {
		t.Fatalf("after shutdown %d observations, want 16", got)
	}
}
