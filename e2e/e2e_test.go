// Package e2e runs clickrec as its users do: the clickrec binary in separate
// processes against real servers (Apache Kafka in KRaft mode, redis-server, the
// Temporal dev server), with faults injected. Servers come from
// internal/testenv; under CI=true a missing server fails the suite.
package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/internal/testenv"
)

var clickrecBin string

func TestMain(m *testing.M) {
	if v := os.Getenv("CLICKREC_TEST_SERVERS"); v == "containers" {
		// The variable's old meaning: containers started from here. They are
		// now started by a runner around go test; running without it would
		// silently test against whatever runs locally.
		fmt.Fprintln(os.Stderr, "CLICKREC_TEST_SERVERS=containers is gone: run scripts/task test:containers (internal/testenv/containers starts the servers and runs go test ./e2e)")
		os.Exit(2)
	}
	dir, err := os.MkdirTemp("", "clickrec-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	clickrecBin = filepath.Join(dir, "clickrec")
	build := exec.Command("go", "build", "-o", clickrecBin, "../cmd/clickrec")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building clickrec:", err)
		os.Exit(1)
	}
	// The servers are local processes, or containers under the runner of
	// internal/testenv/containers (scripts/task test:containers): either way
	// internal/testenv finds them through the CLICKREC_TEST_* variables.
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a clickrec process started by a test. Its output goes to the test log
// with a prefix; it is killed when the test ends.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	return startCmd(t, name, exec.Command(clickrecBin, args...), nil)
}

// startCmd starts cmd, logs its warnings and errors (every line with -v),
// hands every line to onLine if set, and kills it when the test ends.
func startCmd(t *testing.T, name string, cmd *exec.Cmd, onLine func(string)) *proc {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 0, 64<<10), 16<<20) // a long line must not end the log
		for sc.Scan() {
			line := sc.Text()
			if onLine != nil {
				onLine(line)
			}
			if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") || testing.Verbose() {
				t.Logf("[%s] %s", name, line)
			}
		}
		io.Copy(io.Discard, out)
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

// kill sends SIGKILL: no shutdown hook runs, open transactions stay open.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits for a graceful exit.
func (p *proc) stop(t *testing.T) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not stop within 30s of SIGTERM", p.name)
		p.kill()
	}
}

type cluster struct {
	stateDir string // the workers' --state-dir: their local files stay in this test
	brokers  []string
	prefix   string
	topics   kafkautil.Topics
	group    string
	kcfg     kafkautil.Config
}

func newCluster(t *testing.T, partitions int) *cluster {
	t.Helper()
	brokers := testenv.KafkaBrokers(t)
	prefix := testenv.Name("e2e") + "-"
	topics, err := kafkautil.PrefixedTopics(prefix)
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{stateDir: t.TempDir(), brokers: brokers, prefix: prefix, topics: topics, group: prefix + "group",
		kcfg: kafkautil.Config{Brokers: brokers, Partitions: partitions, ReplicationFactor: 1, DialTimeout: 10 * time.Second}}
	cl, err := kgo.NewClient(c.kcfg.Opts("e2e-admin")...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := kafkautil.EnsureTopics(testenv.Context(t, 30*time.Second), &c.kcfg, cl, topics); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *cluster) worker(t *testing.T, instance string, extra ...string) *proc {
	return start(t, "hotpath-"+instance, c.hotpathArgs(instance, extra...)...)
}

// hotpathArgs are the arguments a test worker runs `clickrec hotpath` with.
func (c *cluster) hotpathArgs(instance string, extra ...string) []string {
	return append([]string{"hotpath",
		"--kafka-brokers", strings.Join(c.brokers, ","),
		"--kafka-partitions", fmt.Sprint(c.kcfg.Partitions),
		"--topic-prefix", c.prefix, "--group", c.group, "--instance-id", instance,
		"--no-redis", "--http-addr", "127.0.0.1:0",
		"--txn-timeout", "10s", "--session-timeout", "6s",
		"--state-dir", c.stateDir,
	}, extra...)
}

// readAll reads topic read_committed to its end, waiting for any transaction
// still open there to commit or abort.
func (c *cluster) readAll(t *testing.T, topic string) []*kgo.Record {
	t.Helper()
	return c.readTo(t, topic, kgo.ReadCommitted())
}

// readUncommitted reads every record of topic, whether its transaction
// committed, aborted or is still open, up to the high watermark.
func (c *cluster) readUncommitted(t *testing.T, topic string) []*kgo.Record {
	t.Helper()
	return c.readTo(t, topic, kgo.ReadUncommitted())
}

// readTo reads topic from the start with isolation up to its high watermarks.
func (c *cluster) readTo(t *testing.T, topic string, isolation kgo.IsolationLevel) []*kgo.Record {
	t.Helper()
	ctx := testenv.Context(t, 60*time.Second)
	cl, err := kgo.NewClient(append(c.kcfg.Opts("e2e-reader"),
		kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(isolation),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords(),
		kgo.FetchMaxWait(200*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	// The high watermark for both isolation levels: read_committed passes it
	// only once every transaction below it is resolved. The last stable
	// offset can stop short: the broker writes a transaction's markers
	// partition by partition, so a group's offsets may be committed while a
	// partition still holds the transaction open.
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	remaining := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			remaining[o.Partition] = o.Offset
		}
	})
	var out []*kgo.Record
	for len(remaining) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: %d partitions not read to their end", topic, len(remaining))
		}
		fs.EachRecord(func(r *kgo.Record) {
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
			if end, ok := remaining[r.Partition]; ok && r.Offset >= end-1 {
				delete(remaining, r.Partition)
			}
		})
	}
	return out
}
