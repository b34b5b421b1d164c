package e2e

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/featurestore"
	"github.com/clickrec/clickrec/internal/testenv"

	"github.com/twmb/franz-go/pkg/kgo"
)

// redisServer is a private redis-server on a free loopback port, so a test can
// stop and restart it without disturbing other tests.
type redisServer struct {
	port string
	cmd  *exec.Cmd
	done chan struct{}
}

func startRedis(t *testing.T, port string) *redisServer {
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
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &redisServer{port: port, cmd: cmd, done: make(chan struct{})}
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

// TestRedisOutage stops Redis while clicks flow: recommendations keep coming
// (the stream never waits for Redis), and once Redis is back the feature store
// catches up with the newest state of every user who clicked meanwhile.
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
	counts := map[string]int{}
	sent := 0
	send := func(n int) {
		for range n {
			u := fmt.Sprintf("r%d", sent%20)
			counts[u]++
			click := event.Click{EventID: fmt.Sprintf("re-%d", sent), UserID: u, Type: event.View, ItemID: int64(1 + sent%50), Category: "c1", TimestampMs: base + int64(sent)}
			sent++
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: string(c.topics.Events), Key: []byte(u), Value: click.AppendJSON(nil)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(100)
	waitRecords(t, ctx, c, string(c.topics.Recs), 100)
	rs.stop()
	send(200) // Redis is down: the stream must not notice
	waitRecords(t, ctx, c, string(c.topics.Recs), 300)
	t.Log("300 recommendations committed; 200 of them while Redis was down")

	rs = startRedis(t, rs.port) // back, empty: no persistence
	rc := redis.NewClient(&redis.Options{Addr: rs.addr()})
	defer rc.Close()
	for {
		behind := 0
		for u, n := range counts {
			seq, err := rc.HGet(ctx, featurestore.UserKey(u), "seq").Int()
			if err != nil || seq != n {
				behind++
			}
		}
		if behind == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d of %d users not caught up in Redis", behind, len(counts))
		case <-time.After(200 * time.Millisecond): // polling an external store
		}
	}
	t.Logf("Redis caught up: all %d users at their newest state", len(counts))
}
