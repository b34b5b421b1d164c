package e2e

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/loadtest"

	"github.com/twmb/franz-go/pkg/kgo"
)

// redisServer is a private redis-server on a free loopback port, so a test can
// stop and restart it without disturbing other tests.
type redisServer struct {
	port string
	dir  string // its data directory; persistent: an append-only file there
	cmd  *exec.Cmd
	done chan struct{}
}

// startRedis starts a redis-server without persistence: a restart is empty.
func startRedis(t *testing.T, port string) *redisServer {
	t.Helper()
	return startRedisIn(t, port, "")
}

// startRedisIn starts a redis-server. With dir it persists every write to an
// append-only file there, so a server stopped and started again on the same
// dir comes back with its data, as a production Redis does.
func startRedisIn(t *testing.T, port, dir string) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		testenv.Missing(t, "redis-server", "apt-get install redis-server (scripts/deps.sh installs it)")
	}
	if port == "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
	}
	args := []string{"--bind", "127.0.0.1", "--port", port, "--save", ""}
	if dir == "" {
		args = append(args, "--appendonly", "no", "--dir", t.TempDir())
	} else {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always", "--dir", dir)
	}
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &redisServer{port: port, dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(s.done) }()
	t.Cleanup(s.stop)
	rc := redis.NewClient(&redis.Options{Addr: s.addr()})
	defer rc.Close()
	ctx := testenv.Context(t, 10*time.Second)
	for rc.Ping(ctx).Err() != nil {
		select {
		case <-ctx.Done():
			t.Fatal("redis-server did not start")
		case <-time.After(50 * time.Millisecond):
		}
	}
	return s
}

func (s *redisServer) addr() string { return "127.0.0.1:" + s.port }

func (s *redisServer) stop() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// shutdown stops the server with SIGTERM (it writes what it must first).
func (s *redisServer) shutdown(t *testing.T) {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("redis-server did not stop within 10 s of SIGTERM")
	}
}

// TestRedisOutage stops Redis while clicks flow and brings it back empty (no
// persistence): recommendations keep coming (the stream never waits for
// Redis), and once Redis is back every shopper's entry is whole again — those
// who clicked meanwhile and those who did not (the workers see Redis's new
// run_id and write every user they own again).
func TestRedisOutage(t *testing.T) {
	c := newCluster(t, 2)
	rs := startRedis(t, "")
	w := c.worker(t, "w1", "--scorer", "go", "--no-redis=false", "--redis-addr", rs.addr())
	defer w.stop(t)
	ctx := testenv.Context(t, 90*time.Second)
	cl, err := kgo.NewClient(c.kcfg.Opts("e2e-redis-producer")...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	base := time.Now().UnixMilli()
	sent := 0
	send := func(n, users int) {
		for range n {
			u := fmt.Sprintf("r%d", sent%users)
			click := event.Click{EventID: fmt.Sprintf("re-%d", sent), UserID: u, Type: event.View, ItemID: int64(1 + sent%50), Category: "c1", TimestampMs: base + int64(sent)}
			sent++
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: string(c.topics.Events), Key: []byte(u), Value: click.AppendJSON(nil)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(100, 20)
	waitRecords(t, ctx, c, string(c.topics.Recs), 100)
	check := func(what string) {
		t.Helper()
		rc := redis.NewClient(&redis.Options{Addr: rs.addr()})
		defer rc.Close()
		res, err := loadtest.CheckFeatureStore(ctx, &c.kcfg, c.topics, rc, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if res.Users != 20 || res.Match != 20 {
			t.Fatalf("%s: %d of %d shoppers match Kafka (%d stale, %d missing); examples %+v",
				what, res.Match, res.Users, res.Stale, res.Missing, res.Examples)
		}
	}
	check("before the outage") // every write made: the restart loses them
	rs.stop()
	send(200, 10) // Redis is down: the stream must not notice; r10…r19 do not click
	waitRecords(t, ctx, c, string(c.topics.Recs), 300)
	t.Log("300 recommendations committed; 200 of them while Redis was down")

	rs = startRedis(t, rs.port) // back, empty: no persistence
	check("after Redis came back empty")
	t.Log("Redis caught up: all 20 shoppers hold their newest state and last recommendation")
}

// TestRedisOutageAndKill: while clicks flow, Redis is paused for 3 s (writes
// time out and go-redis retries them, running again what Redis had queued),
// then stopped for 4 s (writes fail and wait in the writer's queue), and while
// it is down a worker is SIGKILLed and restarted, its queue lost with it.
// Kafka stays exactly once; once the workers have caught up, every shopper's
// Redis entry holds what Kafka committed last for them (the latest state's
// seq, and byte for byte the last recommendation): the load test's
// feature-store check finds 0 stale, 0 missing, 0 resurrected.
func TestRedisOutageAndKill(t *testing.T) {
	if testing.Short() {
		t.Skip("pauses Redis and kills a worker during 20 s of clicks; run without -short")
	}
	c := newCluster(t, 4)
	rs := startRedisIn(t, "", t.TempDir())
	rc := redis.NewClient(&redis.Options{Addr: rs.addr()})
	defer rc.Close()
	ids := []string{"w1", "w2"}
	// The restarted worker waits for Redis at startup up to the dial timeout.
	args := []string{"--scorer", "go", "--no-redis=false", "--redis-addr", rs.addr(), "--redis-dial-timeout", "20s"}
	workers := map[string]*proc{}
	for _, id := range ids {
		workers[id] = c.worker(t, id, args...)
	}
	const n, rate = 4000, 200.0 // 20 s of clicks from 500 shoppers
	ctx := testenv.Context(t, 3*time.Minute)
	producing := c.produceAsync(ctx, n, rate, 11)
	begin := time.Now()

	// The faults, at fixed points of the run (not synchronisation): Redis
	// paused at 3 s for 3 s, stopped at 8 s, w1 killed at 9 s and restarted,
	// Redis back at 12 s.
	at := func(d time.Duration) {
		t.Helper()
		select {
		case <-time.After(time.Until(begin.Add(d))):
		case p := <-producing:
			p.must(t)
			t.Fatal("the clicks were all sent before the faults")
		}
	}
	at(3 * time.Second)
	if err := rc.Do(ctx, "CLIENT", "PAUSE", "3000", "ALL").Err(); err != nil {
		t.Fatalf("pausing Redis: %v", err)
	}
	at(8 * time.Second)
	rs.shutdown(t)
	at(9 * time.Second)
	workers["w1"].kill()
	workers["w1"] = c.worker(t, "w1", args...)
	at(12 * time.Second)
	rs = startRedisIn(t, rs.port, rs.dir)
	sent := (<-producing).must(t)
	select {
	case <-workers["w1"].done:
		t.Fatal("w1, restarted while Redis was paused, exited (it should wait --redis-dial-timeout for Redis at startup)")
	default:
	}

	recsTopic := string(c.topics.Recs)
	waitFor(t, ctx, func() bool { return len(c.readAll(t, recsTopic)) >= n })
	if missing, dup, distinct := c.verdict(t, sent); distinct != n || missing != 0 || dup != 0 {
		t.Fatalf("Kafka: %d events with recommendations for %d clicks: %d missing, %d duplicated", distinct, n, missing, dup)
	}
	res, err := loadtest.CheckFeatureStore(ctx, &c.kcfg, c.topics, rc, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("feature store: %d shoppers, %d match, %d stale, %d missing, %d resurrected, %d unexpected (converged after %.0f ms)",
		res.Users, res.Match, res.Stale, res.Missing, res.Resurrected, res.Unexpected, derefOr(res.ConvergedMs, -1))
	if res.Users != len(sent.perUser) || res.Match != res.Users || res.Stale+res.Missing+res.Resurrected+res.Unexpected != 0 {
		t.Fatalf("the feature store does not tell Kafka's story for %d shoppers sent; examples: %+v", len(sent.perUser), res.Examples)
	}
}

func derefOr(p *float64, or float64) float64 {
	if p == nil {
		return or
	}
	return *p
}
