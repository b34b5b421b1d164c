package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/wire"
)

// slowSide is a `clickrec worker` process — the Temporal worker of the
// workflows — on a task queue of its own and without schedules, reading the
// cluster's prefixed topics and the given Redis. Runs are started with
// `clickrec workflows` on the same queue, so a test sees only its own runs.
type slowSide struct {
	temporal string
	queue    string
	proc     *proc
}

func (c *cluster) slowWorker(t *testing.T, redisAddr string, extra ...string) *slowSide {
	t.Helper()
	s := &slowSide{temporal: testenv.TemporalAddr(t), queue: testenv.Name("e2e-queue")}
	// Registered before the process starts, so it runs after the process is
	// stopped: a run left behind by a failed test must not wait forever on a
	// queue nobody polls (a retrain would also hold the fixed retrain id).
	t.Cleanup(func() { s.terminateRunning(t) })
	args := append([]string{"worker", "--temporal-addr", s.temporal, "--task-queue", s.queue, "--no-schedules",
		"--kafka-brokers", strings.Join(c.brokers, ","), "--kafka-partitions", fmt.Sprint(c.kcfg.Partitions),
		"--topic-prefix", c.prefix, "--redis-addr", redisAddr,
		"--http-addr", "127.0.0.1:0", "--work-dir", t.TempDir(), "--stop-timeout", "5s",
	}, extra...)
	s.proc = start(t, "worker", args...)
	return s
}

// run starts a workflow with `clickrec workflows <verb>` on the worker's task
// queue, waits for its result and decodes the JSON it prints into out.
func (s *slowSide) run(t *testing.T, ctx context.Context, verb string, out any, extra ...string) {
	t.Helper()
	args := append([]string{"workflows", verb, "--temporal-addr", s.temporal, "--task-queue", s.queue, "--log-level", "warn"}, extra...)
	cmd := exec.CommandContext(ctx, clickrecBin, args...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("clickrec workflows %s: %v (ctx: %v)\nstdout: %s\nstderr: %s", verb, err, ctx.Err(), stdout.String(), stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		t.Fatalf("clickrec workflows %s printed %q: %v", verb, stdout.String(), err)
	}
	t.Logf("clickrec workflows %s took %v: %s", verb, time.Since(start).Round(time.Millisecond), strings.Join(strings.Fields(stdout.String()), " "))
}

// terminateRunning ends every run still open on the worker's task queue.
func (s *slowSide) terminateRunning(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.DialContext(ctx, client.Options{HostPort: s.temporal})
	if err != nil {
		t.Logf("cleanup: cannot reach Temporal: %v", err)
		return
	}
	defer c.Close()
	resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Query: fmt.Sprintf("TaskQueue = '%s' AND ExecutionStatus = 'Running'", s.queue),
	})
	if err != nil {
		t.Logf("cleanup: cannot list the runs of %s: %v", s.queue, err)
		return
	}
	for _, e := range resp.Executions {
		id, run := e.GetExecution().GetWorkflowId(), e.GetExecution().GetRunId()
		if err := c.TerminateWorkflow(ctx, id, run, "e2e test ended"); err != nil {
			t.Logf("cleanup: terminating %s: %v", id, err)
		} else {
			t.Logf("cleanup: terminated %s (%s), left running on %s", id, run, s.queue)
		}
	}
}

// rec is a record of the recommendations topic.
type rec = wire.Recommendation

// itemIDs returns the ids of r's items, best first.
func itemIDs(r rec) []int64 {
	ids := make([]int64, len(r.Items))
	for i, it := range r.Items {
		ids[i] = it.ItemID
	}
	return ids
}

// recsReader follows the recommendations topic read_committed from its
// start, keeping every record by event id.
type recsReader struct {
	cl      *kgo.Client
	byEvent map[string][]rec
}

func (c *cluster) recsReader(t *testing.T) *recsReader {
	t.Helper()
	cl, err := kgo.NewClient(append(c.kcfg.Opts("e2e-recs-reader"), kgo.ConsumeTopics(string(c.topics.Recs)),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &recsReader{cl: cl, byEvent: map[string][]rec{}}
}

// await reads until every event id has a recommendation and returns the
// first recommendation of each.
func (r *recsReader) await(t *testing.T, ctx context.Context, ids ...string) []rec {
	t.Helper()
	for {
		missing := 0
		for _, id := range ids {
			if len(r.byEvent[id]) == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		fs := r.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%d of %d clicks without a recommendation before the deadline", missing, len(ids))
		}
		fs.EachRecord(func(kr *kgo.Record) {
			out, err := wire.DecodeRecommendation(kr.Value)
			if err != nil {
				t.Fatalf("unreadable recommendation: %v", err)
			}
			r.byEvent[out.EventID] = append(r.byEvent[out.EventID], out)
		})
	}
	out := make([]rec, len(ids))
	for i, id := range ids {
		out[i] = r.byEvent[id][0]
	}
	return out
}

// clickProducer sends hand-made clicks to the cluster's events topic.
type clickProducer struct {
	c  *cluster
	cl *kgo.Client
}

func (c *cluster) clickProducer(t *testing.T) *clickProducer {
	t.Helper()
	cl, err := kgo.NewClient(c.kcfg.Opts("e2e-click-producer")...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &clickProducer{c: c, cl: cl}
}

// send produces the clicks, keyed by user id, and waits for their acks.
func (p *clickProducer) send(t *testing.T, ctx context.Context, clicks ...event.Click) {
	t.Helper()
	recs := make([]*kgo.Record, len(clicks))
	for i := range clicks {
		recs[i] = &kgo.Record{Topic: string(p.c.topics.Events), Key: []byte(clicks[i].UserID), Value: clicks[i].AppendJSON(nil)}
	}
	if err := p.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("producing %d clicks: %v", len(clicks), err)
	}
}
