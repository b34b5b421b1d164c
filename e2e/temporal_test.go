package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/workflows"
)

// privateTemporal runs scripts/temporal.sh on a port of its own with its
// SQLite file in a directory of the test, so a test can stop and restart it
// without disturbing other tests; a restart keeps the workflows, as the file
// stays. It is stopped when the test ends.
type privateTemporal struct {
	t    *testing.T
	port string
	run  string // CLICKREC_RUN of the script: the db file, log and pid file
}

func startPrivateTemporal(t *testing.T) *privateTemporal {
	t.Helper()
	// The temporal CLI, built once into the cache (scripts/deps.sh does it).
	if out, err := exec.Command("../scripts/temporal.sh", "install").CombinedOutput(); err != nil {
		testenv.Missing(t, "the temporal CLI", fmt.Sprintf("scripts/temporal.sh install failed: %v: %s", err, out))
	}
	s := &privateTemporal{t: t, run: t.TempDir()}
	// The dev server listens on port and on port+1000 (the UI).
	for s.port == "" {
		p := freePort(t)
		if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1000))); err == nil {
			ln.Close()
			s.port = strconv.Itoa(p)
		}
	}
	s.do("start")
	t.Cleanup(func() {
		s.do("stop")
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(s.run, "temporal-"+s.port+".log")); err == nil {
				t.Logf("temporal log (last 4 KB):\n%s", b[max(0, len(b)-4096):])
			}
		}
	})
	return s
}

func (s *privateTemporal) addr() string { return "127.0.0.1:" + s.port }

func (s *privateTemporal) do(verb string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "../scripts/temporal.sh", verb)
	// One partition per task queue. With the server's default of four, a
	// task queue's first task after a restart sometimes waited for a poller
	// until the pollers' 60 s long polls expired (3 of 25 restarts here,
	// also with a plain SDK worker; 0 of 14 with one partition): a delay of
	// Temporal's matching, not of clickrec, that would only make this test slow.
	cmd.Env = append(os.Environ(), "CLICKREC_TEMPORAL_PORT="+s.port, "CLICKREC_RUN="+s.run,
		"CLICKREC_TEMPORAL_ARGS=--dynamic-config-value matching.numTaskqueueReadPartitions=1 --dynamic-config-value matching.numTaskqueueWritePartitions=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("scripts/temporal.sh %s (port %s): %v\n%s", verb, s.port, err, out)
	}
}

// TestTemporalOutage stops the Temporal server while clicks flow. The hot
// path does not depend on it: recommendations keep being committed during the
// outage, and every click gets exactly one. The slow side waits it out: a
// RefreshPopularity run started just before the outage (with a start delay,
// so it is still pending when the server stops) is kept in the server's
// database and, once the server is back, executed by the same `clickrec
// worker` process — which reconnected on its own — and so is a run started
// after the outage.
func TestTemporalOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts, stops and restarts its own Temporal dev server; run without -short")
	}
	temporal := startPrivateTemporal(t)
	t.Setenv("CLICKREC_TEST_TEMPORAL_ADDR", temporal.addr())
	c := newCluster(t, 2)
	rs := startRedis(t, "")
	ctx := testenv.Context(t, 2*time.Minute)

	hp := c.worker(t, "w1", "--scorer", "go")
	slow := c.slowWorker(t, rs.addr())
	const n, rate = 3000, 100.0 // 30 s of clicks
	producing := c.produceAsync(ctx, n, rate, 31)
	waitRecords(t, ctx, c, string(c.topics.Recs), n/10)

	// The slow side works before the outage.
	var before workflows.PopularityOutput
	slow.run(t, ctx, "refresh", &before, "--popularity-window", "15m")
	if !before.Stored || before.Events < n/10 {
		t.Fatalf("refresh before the outage: %+v; want the table stored from at least %d clicks", before, n/10)
	}

	// A run that is still pending when the server stops: it starts 10 s from
	// now; stopping the server takes about 3 s, and the outage 8 s more.
	tc, err := client.DialContext(ctx, client.Options{HostPort: temporal.addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	pending, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: testenv.Name("e2e-refresh-across-outage"), TaskQueue: slow.queue, StartDelay: 10 * time.Second,
	}, workflows.RefreshPopularity, workflows.RefreshParams{Window: 15 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	startedAt := time.Now()

	// The outage.
	temporal.do("stop")
	stopped := time.Now()
	t.Logf("temporal stopped %v after the delayed run was started", stopped.Sub(startedAt).Round(100*time.Millisecond))
	if conn, err := net.DialTimeout("tcp", temporal.addr(), time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after the server was stopped", temporal.addr())
	}
	// The hot path keeps committing recommendations: 800 more, 8 s of clicks.
	atStop := len(c.readAll(t, string(c.topics.Recs)))
	waitRecords(t, ctx, c, string(c.topics.Recs), atStop+800)
	downFor := time.Since(stopped)
	t.Logf("%d recommendations committed while Temporal was down (%d before; %v down)", 800, atStop, downFor.Round(100*time.Millisecond))
	select {
	case <-slow.proc.done:
		t.Fatal("clickrec worker exited during the Temporal outage; it should wait for the server")
	default:
	}
	select {
	case <-hp.done:
		t.Fatal("the hot path worker exited during the Temporal outage")
	default:
	}
	clicksAtRestart, err := c.eventsProduced(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Back, with the same database.
	restarted := time.Now()
	temporal.do("start")
	t.Logf("temporal restarted in %v", time.Since(restarted).Round(100*time.Millisecond))
	var across workflows.PopularityOutput
	waitCtx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	if err := tc.GetWorkflow(waitCtx, pending.GetID(), pending.GetRunID()).Get(waitCtx, &across); err != nil {
		t.Fatalf("the run started before the outage did not complete after the restart: %v", err)
	}
	info, err := tc.DescribeWorkflowExecution(ctx, pending.GetID(), pending.GetRunID())
	if err != nil {
		t.Fatal(err)
	}
	ex := info.GetWorkflowExecutionInfo()
	if ct := ex.GetCloseTime().AsTime(); !ct.After(restarted) {
		t.Fatalf("%s closed at %v, before the restart (%v): it did not wait out the outage", pending.GetID(), ct, restarted)
	}
	// It ran after the restart, so it counted every click produced before it.
	if !across.Stored || across.Events < clicksAtRestart {
		t.Fatalf("the run across the outage: %+v; want the table stored from at least the %d clicks produced before the restart", across, clicksAtRestart)
	}
	t.Logf("the run started before the outage (%s) completed %v after the restart: %d clicks, table %s",
		pending.GetID(), ex.GetCloseTime().AsTime().Sub(restarted).Round(100*time.Millisecond), across.Events, across.Version)

	// Every click gets exactly one recommendation, and a run started after
	// the outage counts them all.
	sent := (<-producing).must(t)
	waitFor(t, ctx, func() bool { return len(c.readAll(t, string(c.topics.Recs))) >= n })
	var after workflows.PopularityOutput
	slow.run(t, ctx, "refresh", &after, "--popularity-window", "15m")
	if !after.Stored || after.Events != n || after.Invalid != 0 || after.Incomplete != 0 {
		t.Fatalf("refresh after the outage: %+v; want all %d clicks counted and the table stored", after, n)
	}
	logRuns(t, ctx, tc, slow.queue)
	slow.proc.stop(t)
	hp.stop(t)
	missing, dup, distinct := c.verdict(t, sent)
	if missing != 0 || dup != 0 || distinct != n {
		t.Fatalf("across the Temporal outage: %d missing, %d duplicated, %d distinct of %d clicks", missing, dup, distinct, n)
	}
	t.Logf("Temporal down for %v: %d clicks, 0 missing, 0 duplicated; the pending run and a new one completed after the restart", downFor.Round(100*time.Millisecond), n)
}

// logRuns logs, for every run on queue, when its history's events happened
// relative to its start: where a run waited, if it did.
func logRuns(t *testing.T, ctx context.Context, tc client.Client, queue string) {
	t.Helper()
	resp, err := tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: fmt.Sprintf("TaskQueue = '%s'", queue)})
	if err != nil {
		t.Logf("listing the runs of %s: %v", queue, err)
		return
	}
	for _, e := range resp.GetExecutions() {
		id, run := e.GetExecution().GetWorkflowId(), e.GetExecution().GetRunId()
		start := e.GetStartTime().AsTime()
		var b strings.Builder
		it := tc.GetWorkflowHistory(ctx, id, run, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for it.HasNext() {
			ev, err := it.Next()
			if err != nil {
				fmt.Fprintf(&b, " (%v)", err)
				break
			}
			fmt.Fprintf(&b, " %s+%v", strings.TrimPrefix(ev.GetEventType().String(), "EVENT_TYPE_"), ev.GetEventTime().AsTime().Sub(start).Round(time.Millisecond))
		}
		t.Logf("run %s started %s:%s", id, start.Format("15:04:05.000"), b.String())
	}
}

// eventsProduced is the number of records on the events topic.
func (c *cluster) eventsProduced(ctx context.Context) (int, error) {
	cl, err := kgo.NewClient(c.kcfg.Opts("e2e-offsets")...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, string(c.topics.Events))
	if err != nil {
		return 0, err
	}
	total := 0
	for _, ps := range ends {
		for _, o := range ps {
			if o.Err != nil {
				return 0, fmt.Errorf("end offset of %s/%d: %w", o.Topic, o.Partition, o.Err)
			}
			total += int(o.Offset)
		}
	}
	return total, nil
}
