package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/clickrec/clickrec/internal/testenv"
)

// privateBroker runs scripts/kafka.sh on its own ports, so a test can restart
// the broker without disturbing other tests. It is stopped when the test ends.
type privateBroker struct {
	t    *testing.T
	port string
}

func startPrivateBroker(t *testing.T, port string, fresh bool) *privateBroker {
	t.Helper()
	if _, err := exec.LookPath("java"); err != nil {
		testenv.Missing(t, "java", "install a JDK 17+ (scripts/deps.sh)")
	}
	b := &privateBroker{t: t, port: port}
	b.run("start", fresh)
	t.Cleanup(func() {
		b.run("stop", false)
		if t.Failed() {
			b.logTail()
		}
	})
	return b
}

// logTail logs the last 4 KB of the broker's log (scripts/kafka.sh writes it
// to $CLICKREC_RUN/kafka-PORT.log).
func (b *privateBroker) logTail() {
	run := os.Getenv("CLICKREC_RUN")
	if run == "" {
		return
	}
	if data, err := os.ReadFile(filepath.Join(run, "kafka-"+b.port+".log")); err == nil {
		b.t.Logf("broker log (last 4 KB):\n%s", data[max(0, len(data)-4096):])
	}
}

func (b *privateBroker) run(verb string, fresh bool) {
	b.t.Helper()
	cmd := exec.Command("../scripts/kafka.sh", verb)
	cmd.Env = append(os.Environ(), "CLICKREC_KAFKA_PORT="+b.port)
	if fresh {
		cmd.Env = append(cmd.Env, "CLICKREC_KAFKA_FRESH=1")
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.t.Fatalf("scripts/kafka.sh %s (port %s): %v\n%s", verb, b.port, err, out)
	}
	if bytes.Contains(out, []byte("still up, killing")) {
		// Not a clean shutdown: what follows is recovery from a crash.
		b.t.Logf("scripts/kafka.sh %s (port %s) had to kill the broker:\n%s", verb, b.port, out)
	}
}

// TestBrokerRestart restarts the Kafka broker in the middle of the load: the
// workers ride it out (the client reconnects, open transactions abort and are
// replayed) and every click still gets exactly one recommendation.
func TestBrokerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and restarts its own Kafka broker; run without -short")
	}
	// Its own port and run directory (pid file, data, log), so that it runs
	// beside another checkout's tests.
	t.Setenv("CLICKREC_RUN", t.TempDir())
	port := strconv.Itoa(freePort(t))
	broker := startPrivateBroker(t, port, true)
	t.Setenv("CLICKREC_TEST_KAFKA_BROKERS", "127.0.0.1:"+port)
	c := newCluster(t, 2)
	w := c.worker(t, "w1", "--scorer", "go")
	ctx := testenv.Context(t, 3*time.Minute)
	const n, rate = 3000, 100.0 // 30 s of clicks
	producing := c.produceAsync(ctx, n, rate, 13)
	waitRecords(t, ctx, c, string(c.topics.Recs), n/4)
	start := time.Now()
	broker.run("stop", false)
	broker.run("start", false)
	t.Logf("broker restarted in %v", time.Since(start).Round(100*time.Millisecond))
	sent := (<-producing).must(t)
	waitFor(t, ctx, func() bool { return len(c.readAll(t, string(c.topics.Recs))) >= n })
	w.stop(t)
	missing, dup, distinct := c.verdict(t, sent)
	if missing != 0 || dup != 0 || distinct != n {
		t.Fatalf("after a broker restart: %d missing, %d duplicated, %d distinct of %d", missing, dup, distinct, n)
	}
	t.Logf("broker restart: %d clicks, 0 missing, 0 duplicated", n)
}
