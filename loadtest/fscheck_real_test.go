package loadtest

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/featurestore"
	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/internal/testenv"
)

// privateRedis starts a redis-server of its own on a free loopback port, so
// that pausing it disturbs no other test, and returns its address.
func privateRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		testenv.Missing(t, "redis-server", "apt-get install redis-server (scripts/deps.sh installs it)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	addr := "127.0.0.1:" + port
	rc := redis.NewClient(&redis.Options{Addr: addr})
	defer rc.Close()
	ctx := testenv.Context(t, 10*time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for rc.Ping(ctx).Err() != nil {
		select {
		case <-ctx.Done():
			t.Fatal("redis-server did not start")
		case <-done:
			t.Fatal("redis-server exited")
		case <-tick.C: // polling a process we started for its port
		}
	}
	return addr
}

// TestRedisOutageOnRealKafka pauses a private Redis for 2 s under load from
// a spawned worker on the real broker: the stream does not notice, and after
// the drain every shopper's feature-store entry matches what Kafka committed.
// Then it breaks two entries by hand: CheckFeatureStore must find exactly
// those, as stale and missing (CI=true fails without the broker or
// redis-server).
func TestRedisOutageOnRealKafka(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("spawns a worker against a real broker")
	}
	brokers := testenv.KafkaBrokers(t)
	redisAddr := privateRedis(t)
	cfg := testConfig(t, kafkautil.Config{Brokers: brokers, Partitions: 4, ReplicationFactor: 1, DialTimeout: 10 * time.Second})
	cfg.Scenario, cfg.SpawnWorkers = ScenarioRedisOutage, 1
	cfg.RedisOutage, cfg.RedisOutageAt = 2*time.Second, 2*time.Second
	cfg.NoModel, cfg.NoRedis, cfg.Redis.Addr = true, false, redisAddr
	cfg.Rate, cfg.Duration = 500, 6*time.Second
	cfg.KeepTopics = true // for the second check; deleted below
	cfg.CheckRedisTimeout = 20 * time.Second
	cfg.ClickrecBin = os.Args[0]
	cfg.WorkerEnv = []string{workerEnv + "=1"}
	cfg.SLA = SLA{} // 0 missing, 0 duplicates, 0 unexpected; the latency of a shared machine is not judged
	r, err := Run(testenv.Context(t, 150*time.Second), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	topics, err := kafkautil.PrefixedTopics(strings.TrimSuffix(r.EventsTopic, "user_events"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cl, err := kgo.NewClient(cfg.Kafka.Opts("loadtest-test-cleanup")...)
		if err != nil {
			return
		}
		defer cl.Close()
		deleteTopics(testenv.Context(t, 20*time.Second), kadm.NewClient(cl), topics, testLogger(t))
	})
	var out bytes.Buffer
	_ = r.WriteText(&out)
	t.Log(out.String())
	if r.Sent != 3000 || r.Missing != 0 || r.Duplicates != 0 || r.Unexpected != 0 || !r.Drain.Complete || !r.SLA.Passed {
		t.Fatalf("sent %d missing %d dup %d unexpected %d drain %+v verdict %+v", r.Sent, r.Missing, r.Duplicates, r.Unexpected, r.Drain, r.SLA)
	}
	if len(r.RedisOutages) != 1 || r.RedisOutages[0].Note != "" || r.RedisOutages[0].EndS-r.RedisOutages[0].AtS < 1.9 {
		t.Fatalf("outages %+v: want one of 2 s", r.RedisOutages)
	}
	fs := r.FeatureStore
	if fs == nil || !fs.Passed() || fs.Users == 0 || fs.Match != fs.Users || fs.WithRecs == 0 {
		t.Fatalf("feature store %+v: want every user matched", fs)
	}
	if !r.Warmup.Settled || r.Warmup.Sent < int64(cfg.WarmupEvents) || len(r.Warmup.WindowP95Ms) < cfg.WarmupSettle.Windows {
		t.Fatalf("warm-up %+v: want settled after at least %d events", r.Warmup, cfg.WarmupEvents)
	}

	// Break two entries: one gets another recommendation, one is deleted.
	rc := cfg.Redis.Client()
	defer rc.Close()
	ctx := testenv.Context(t, 60*time.Second)
	keys, _, err := rc.Scan(ctx, 0, "user:{*}", 100).Result()
	if err != nil || len(keys) < 2 {
		t.Fatalf("scan: %v %v", keys, err)
	}
	if err := rc.HSet(ctx, keys[0], featurestore.FieldRecs, `{"event_id":"forged"}`).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Del(ctx, keys[1]).Err(); err != nil {
		t.Fatal(err)
	}
	c, err := CheckFeatureStore(ctx, &cfg.Kafka, topics, rc, 600*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if c.Stale != 1 || c.Missing != 1 || c.Match != c.Users-2 || c.ConvergedMs != nil || c.Passed() || len(c.Examples) != 2 || c.Rounds < 1 {
		t.Fatalf("check after breaking two entries: %+v", c)
	}
	t.Logf("found: %+v", c.Examples)
}
