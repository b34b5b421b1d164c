package hotpath

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/internal/testenv"
)

// BenchmarkRedisWrite measures the feature store writer: per user effect,
// the writer's CPU in this process (writer-cpu-µs/op: encoding, the client,
// the GC) and redis-server's CPU running the script (redis-µs/op, from INFO
// cpu); ns/op is the wall time, mostly waiting for Redis, in pipelines of 256 effects of
// the sizes a shopper with 20 recent events and 10 recommended items has.
// Every write is newer than the stored one, as in a running worker.
func BenchmarkRedisWrite(b *testing.B) {
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(b)})
	defer rc.Close()
	ctx := context.Background()
	w := newRedisWriter(rc, time.Hour, newMetrics(nil), slog.Default())
	const users = 10_000
	prefix := testenv.Name("bench")
	features := []byte(`{"session_id":"s-123456","session_events":20,"session_length_ms":285000,"last_event_ms":1796600000000,"recency_ms":15000,"events_total":20,"time_per_category_ms":{"c1":60000,"c2":45000,"c3":90000,"c4":75000}}`)
	events := []byte("[" + strings.Repeat(`{"item_id":1234567,"category":"c12","event_type":"view","timestamp_ms":1796600000000},`, 19) + `{"item_id":1234567,"category":"c12","event_type":"view","timestamp_ms":1796600000000}]`)
	recs := []byte(`{"event_id":"e-1796600000000-123456","user_id":"u-123456","items":[` + strings.Repeat(`{"item_id":123456,"score":0.834567},`, 9) + `{"item_id":123456,"score":0.834567}],"strategy":"model","model_version":"v20261207T000000","event_time_ms":1796600000000,"processed_at_ms":1796600000012}`)
	ids := make([]string, users)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-u%d", prefix, i)
	}
	b.Cleanup(func() {
		for i := 0; i < users; i += 500 {
			keys := make([]string, 0, 500)
			for _, id := range ids[i:min(i+500, users)] {
				keys = append(keys, "user:{"+id+"}")
			}
			rc.Del(ctx, keys...)
		}
	})
	redisCPU := func() float64 {
		info := rc.Info(ctx, "cpu").Val()
		total := 0.0
		for _, line := range strings.Split(info, "\r\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
				f, _ := strconv.ParseFloat(v, 64)
				total += f
			}
		}
		return total
	}
	batch := make(map[string]redisEffect, redisBatch)
	seq := uint64(0)
	b.ReportAllocs()
	cpu0, own0 := redisCPU(), processCPU()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		i := n % users
		if i == 0 {
			seq++
		}
		batch[ids[i]] = benchEffect(seq, features, events, recs)
		n++
		if len(batch) == redisBatch {
			w.enqueue(batch)
			if err := w.flush(ctx); err != nil {
				b.Fatal(err)
			}
			clear(batch)
		}
	}
	b.StopTimer()
	b.ReportMetric((processCPU()-own0)*1e6/float64(n), "writer-cpu-µs/op")
	b.ReportMetric((redisCPU()-cpu0)*1e6/float64(n), "redis-µs/op")
}

// processCPU is this process's user+system CPU time, seconds.
func processCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func benchEffect(seq uint64, features, events, recs []byte) redisEffect {
	return redisEffect{born: 1, seq: seq, features: features, events: events, recs: recs, rseq: seq}
}
