package workflows

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"

	"github.com/clickrec/clickrec/drift"
	"github.com/clickrec/clickrec/featurestore"
	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/model/registry"
)

// TestDevServer runs the workflows on the real Temporal dev server with a
// worker in this process, real Redis and the embedded Kafka broker: the
// schedules, a popularity refresh, two retrains (the second compared with
// the first), a drift check that rolls the second back after injected
// drift, and one that starts a retrain which the abort signal stops.
//
// The runs' histories are what workflows/testdata holds for the replay test;
// go test -v prints their ids, and README.md in this folder says how to
// record them again.
func TestDevServer(t *testing.T) {
	if testing.Short() {
		t.Skip("runs workflows on the Temporal dev server")
	}
	addr := testenv.TemporalAddr(t)
	rc := testRedis(t, redisDBIntegration)
	kc := embeddedKafka(t, 2)
	ctx := testenv.Context(t, 90*time.Second)
	reg := registry.New(rc)

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := client.Dial(client.Options{HostPort: addr, Logger: tlog.NewStructuredLogger(log)})
	require.NoError(t, err)
	t.Cleanup(c.Close)

	// An hour of a small shop's clicks, ending now.
	now := time.Now()
	clicks := shopClicks(t, 8000, now.Add(-time.Hour), 450*time.Millisecond, smallShop())
	var recs []*kgo.Record
	for i := range clicks {
		recs = append(recs, clickRecord(&clicks[i], int32(i%2)))
	}
	produce(t, ctx, producer(t, kc), recs...)

	queue := testenv.Name("clickrec-test")
	retrainID := testenv.Name("clickrec-retrain")
	acts := &Activities{
		Kafka: kc, Redis: rc, Temporal: c, RetrainWorkflowID: retrainID,
		WorkDir: t.TempDir(), Train: tinyTraining(), ReadIdle: 5 * time.Second, Metrics: NewMetrics(nil),
	}
	w := worker.New(c, queue, worker.Options{EnableSessionWorker: true})
	w.RegisterWorkflow(RetrainModel)
	w.RegisterWorkflow(RefreshPopularity)
	w.RegisterWorkflow(CheckDrift)
	w.RegisterActivity(acts)
	require.NoError(t, w.Start())
	t.Cleanup(w.Stop)

	start := func(id string, fn any, arg any) client.WorkflowRun {
		t.Helper()
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: queue}, fn, arg)
		require.NoError(t, err)
		t.Logf("started %s: workflow id %s run %s", id, run.GetID(), run.GetRunID())
		return run
	}

	t.Run("EnsureSchedules", func(t *testing.T) {
		cfg := DefaultScheduleConfig()
		cfg.TaskQueue, cfg.IDPrefix = queue, testenv.Name("clickrec-test")
		ids := []string{}
		done, err := EnsureSchedules(ctx, c.ScheduleClient(), cfg)
		require.NoError(t, err)
		for id, what := range done {
			ids = append(ids, id)
			require.Equal(t, "created", what, id)
		}
		t.Cleanup(func() {
			for _, id := range ids {
				_ = c.ScheduleClient().GetHandle(context.Background(), id).Delete(context.Background())
			}
		})
		require.Len(t, ids, 3)
		cfg.RefreshEvery = 7 * time.Minute
		done, err = EnsureSchedules(ctx, c.ScheduleClient(), cfg)
		require.NoError(t, err)
		_, refreshID, _ := cfg.ScheduleIDs()
		require.Equal(t, "updated", done[refreshID])
		d, err := c.ScheduleClient().GetHandle(ctx, refreshID).Describe(ctx)
		require.NoError(t, err)
		require.Equal(t, 7*time.Minute, d.Schedule.Spec.Intervals[0].Every)
		action, ok := d.Schedule.Action.(*client.ScheduleWorkflowAction)
		require.True(t, ok)
		require.Equal(t, "RefreshPopularity", action.Workflow)
		require.Equal(t, queue, action.TaskQueue)
	})

	t.Run("RefreshPopularity", func(t *testing.T) {
		run := start(testenv.Name("refresh-popularity"), RefreshPopularity, RefreshParams{})
		var out PopularityOutput
		require.NoError(t, run.Get(ctx, &out))
		require.True(t, out.Stored)
		require.Greater(t, out.Events, 7000)
		require.Len(t, out.Global, 10)
		p, err := featurestore.LoadPopularity(ctx, rc)
		require.NoError(t, err)
		require.Equal(t, out.Version, p.Version)
		require.Len(t, p.ByCategory, out.Categories)
	})

	retrain := RetrainParams{ObservationPeriod: 2 * time.Second, MinHoldoutCases: 10, Reason: "integration test"}
	var first, second RetrainState
	t.Run("RetrainModel", func(t *testing.T) {
		run := start(testenv.Name("retrain-first"), RetrainModel, retrain)
		require.NoError(t, run.Get(ctx, &first))
		require.Equal(t, OutcomePromoted, first.Outcome, "%+v", first)
		require.Contains(t, first.Gate, "first model")
		run = start(testenv.Name("retrain-second"), RetrainModel, retrain)
		require.NoError(t, run.Get(ctx, &second))
		require.Equal(t, OutcomePromoted, second.Outcome, "%+v", second)
		require.Equal(t, first.Candidate, second.Previous)
		require.Contains(t, second.Gate, "not worse than "+first.Candidate)
		v, err := c.QueryWorkflow(ctx, run.GetID(), run.GetRunID(), QueryState)
		require.NoError(t, err)
		var st RetrainState
		require.NoError(t, v.Get(&st))
		require.Equal(t, StageDone, st.Stage)
		cur, err := reg.Current(ctx)
		require.NoError(t, err)
		require.Equal(t, second.Candidate, cur)
	})
	if t.Failed() {
		return
	}

	// shiftLive publishes live profiles of the serving version in which half
	// of the clicks moved to one category.
	shiftLive := func(t *testing.T, version string) {
		md, err := reg.Meta(ctx, version)
		require.NoError(t, err)
		var ref drift.ReferenceSet
		require.NoError(t, json.Unmarshal(md.Reference, &ref))
		m := drift.LiveMinute(time.Now())
		publishLive(t, ctx, rc, m, liveFrom(ref, clicks[:3000], "c5"), liveFrom(ref, clicks[3000:6000], "c5"))
	}

	t.Run("CheckDriftRollsBack", func(t *testing.T) {
		shiftLive(t, second.Candidate)
		run := start(testenv.Name("check-drift-rollback"), CheckDrift, DriftParams{})
		var res DriftResult
		require.NoError(t, run.Get(ctx, &res))
		require.Equal(t, ActionRolledBack, res.Action, "%+v", res)
		require.Contains(t, res.Report.Alerting, drift.FeatureCategoryMix)
		cur, err := reg.Current(ctx)
		require.NoError(t, err)
		require.Equal(t, first.Candidate, cur)
		hist, err := reg.History(ctx, 1)
		require.NoError(t, err)
		require.Equal(t, "rollback", hist[0].Action)
		require.Contains(t, hist[0].Reason, "category_mix PSI")
	})

	t.Run("CheckDriftStartsOneRetrain", func(t *testing.T) {
		// The first version came back by a rollback: drift on it retrains.
		shiftLive(t, first.Candidate)
		params := DriftParams{Retrain: RetrainParams{ObservationPeriod: 10 * time.Minute, MinHoldoutCases: 10}}
		var res DriftResult
		require.NoError(t, start(testenv.Name("check-drift-retrain"), CheckDrift, params).Get(ctx, &res))
		require.Equal(t, ActionRetrainStarted, res.Action, "%+v", res)
		require.Equal(t, retrainID, res.Retrain.WorkflowID)
		require.Contains(t, res.Detail, "category_mix")

		// While it runs, another check starts nothing.
		var again DriftResult
		require.NoError(t, start(testenv.Name("check-drift-running"), CheckDrift, params).Get(ctx, &again))
		require.Equal(t, ActionRetrainRunning, again.Action, "%+v", again)

		// Wait until the retrain observes its promotion (its observation
		// timer starts), then abort it: it rolls the promotion back.
		iter := c.GetWorkflowHistory(ctx, retrainID, "", true, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for observing := false; !observing; {
			require.True(t, iter.HasNext(), "the retrain ended before observing")
			ev, err := iter.Next()
			require.NoError(t, err)
			if ev.GetEventType() == enumspb.EVENT_TYPE_TIMER_STARTED {
				v, err := c.QueryWorkflow(ctx, retrainID, "", QueryState)
				require.NoError(t, err)
				var st RetrainState
				require.NoError(t, v.Get(&st))
				observing = st.Stage == StageObserving
			}
		}
		require.NoError(t, c.SignalWorkflow(ctx, retrainID, "", SignalAbort, "integration test: abort"))
		var st RetrainState
		require.NoError(t, c.GetWorkflow(ctx, retrainID, "").Get(ctx, &st))
		require.Equal(t, OutcomeAborted, st.Outcome, "%+v", st)
		require.True(t, strings.HasPrefix(st.Reason, "drift on "+first.Candidate), st.Reason)
		cur, err := reg.Current(ctx)
		require.NoError(t, err)
		require.Equal(t, first.Candidate, cur, "the aborted retrain's promotion is rolled back")
		t.Logf("drift-started retrain: workflow id %s", retrainID)
	})
}
