package workflows

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.temporal.io/sdk/testsuite"

	"github.com/clickrec/clickrec/drift"
	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/featurestore"
	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/model/registry"
)

func execute[T any](t *testing.T, env *testsuite.TestActivityEnvironment, fn any, args ...any) *T {
	t.Helper()
	v, err := env.ExecuteActivity(fn, args...)
	require.NoError(t, err)
	var out T
	require.NoError(t, v.Get(&out))
	return &out
}

func eventIDs(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var ids []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var c event.Click
		require.NoError(t, json.Unmarshal(sc.Bytes(), &c), sc.Text())
		ids = append(ids, c.EventID)
	}
	require.NoError(t, sc.Err())
	return ids
}

// TestCollectWindow reads a time window of two topics from the embedded
// broker and from a real one: only records of the window, only valid clicks,
// only committed windows (a transaction marker ends the windows topic), and
// a retry resumes from its heartbeat without duplicates.
func TestCollectWindow(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		testCollectWindow(t, embeddedKafka(t, 2), kafkautil.DefaultTopics)
	})
	t.Run("real", func(t *testing.T) {
		kc := kafkautil.Config{Brokers: testenv.KafkaBrokers(t), Partitions: 2, ReplicationFactor: 1, DialTimeout: 10 * time.Second}
		base := testenv.Name("wf")
		topics, err := kafkautil.PrefixedTopics(base + "-")
		if err != nil {
			t.Fatal(err)
		}
		cl, err := kgo.NewClient(kc.Opts("test-admin")...)
		require.NoError(t, err)
		defer cl.Close()
		ctx := testenv.Context(t, 30*time.Second)
		require.NoError(t, kafkautil.EnsureTopics(ctx, &kc, cl, topics))
		t.Cleanup(func() {
			_, _ = kadm.NewClient(cl).DeleteTopics(context.Background(), string(topics.Events), string(topics.Recs),
				string(topics.Changelog), string(topics.Late), string(topics.DLQ), string(topics.Windows))
		})
		testCollectWindow(t, kc, topics)
	})
}

func testCollectWindow(t *testing.T, kc kafkautil.Config, topics kafkautil.Topics) {
	ctx := testenv.Context(t, 30*time.Second)
	evTopic, winTopic := string(topics.Events), string(topics.Windows)
	t0 := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	w := Window{FromMs: t0.Add(10 * time.Minute).UnixMilli(), ToMs: t0.Add(50 * time.Minute).UnixMilli()}

	clicks := shopClicks(t, 600, t0, 6*time.Second, smallShop()) // 60 minutes
	var recs []*kgo.Record
	inWindow := map[int32][]event.Click{}
	for i := range clicks {
		p := int32(i % 2)
		r := clickRecord(&clicks[i], p)
		r.Topic = evTopic
		recs = append(recs, r)
		if clicks[i].TimestampMs >= w.FromMs && clicks[i].TimestampMs < w.ToMs {
			inWindow[p] = append(inWindow[p], clicks[i])
		}
	}
	// Invalid records inside the window are left out.
	bad := &kgo.Record{Topic: evTopic, Partition: 0, Key: []byte("u1"), Value: []byte(`{"event_id":`), Timestamp: t0.Add(20 * time.Minute)}
	recs = append(recs, bad)
	produce(t, ctx, producer(t, kc), recs...)

	// Windows: committed, aborted, committed; the last is outside the window.
	tx := producer(t, kc, kgo.TransactionalID(testenv.Name("test-windows")))
	for i, commit := range []bool{true, false, true} {
		require.NoError(t, tx.BeginTransaction())
		ts := t0.Add(time.Duration(20+i*10) * time.Minute)
		if i == 2 {
			ts = t0.Add(55 * time.Minute)
		}
		v := fmt.Sprintf(`{"user_id":"u%d","window_start_ms":%d,"window_end_ms":%d,"events":3,"by_type":{"view":3},"by_category":{"c1":3},"session_events":3,"session_length_ms":%d,"revision":1}`,
			i, ts.UnixMilli(), ts.UnixMilli()+60000, 1000*i)
		produce(t, ctx, tx, &kgo.Record{Topic: winTopic, Partition: 0, Key: []byte("u"), Value: []byte(v), Timestamp: ts})
		end := kgo.TryAbort
		if commit {
			end = kgo.TryCommit
		}
		require.NoError(t, tx.EndTransaction(ctx, end))
	}

	acts := &Activities{Kafka: kc, Topics: topics, WorkDir: t.TempDir(), ReadIdle: 5 * time.Second}
	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	env.RegisterActivity(acts)
	out := execute[CollectOutput](t, env, acts.CollectWindow, CollectInput{Version: "v1", Window: w})
	want := len(inWindow[0]) + len(inWindow[1])
	require.Equal(t, want, out.Events)
	require.Equal(t, 1, out.Invalid)
	require.Equal(t, 1, out.Windows, "one committed window in the time range")
	require.Zero(t, out.Incomplete)
	require.Len(t, eventIDs(t, out.EventsFile), want)

	// A retry after completion returns the finished result.
	again := execute[CollectOutput](t, env, acts.CollectWindow, CollectInput{Version: "v1", Window: w})
	require.Equal(t, out, again)

	// A retry after a heartbeat: partition 0 was read to its end and written,
	// then a torn write followed; the retry cuts it off and reads partition 1.
	dir := filepath.Join(acts.WorkDir, "v2")
	writeEvents(t, filepath.Join(dir, fileEvents), inWindow[0])
	st, err := os.Stat(filepath.Join(dir, fileEvents))
	require.NoError(t, err)
	f, err := os.OpenFile(filepath.Join(dir, fileEvents), os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(`{"event_id":"torn`)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	end0 := recs[len(recs)-1].Offset + 1 // the invalid record was the last of partition 0
	env2 := s.NewTestActivityEnvironment()
	env2.RegisterActivity(acts)
	env2.SetHeartbeatDetails(collectProgress{
		Next:   offsets[int64]{evTopic: {0: end0}},
		Sizes:  map[string]int64{fileEvents: st.Size()},
		Events: len(inWindow[0]), Invalid: 1,
	})
	resumed := execute[CollectOutput](t, env2, acts.CollectWindow, CollectInput{Version: "v2", Window: w})
	require.Equal(t, want, resumed.Events)
	require.Equal(t, 1, resumed.Invalid)
	ids := eventIDs(t, resumed.EventsFile)
	require.Len(t, ids, want)
	seen := map[string]bool{}
	for _, id := range ids {
		require.False(t, seen[id], "event %s collected twice", id)
		seen[id] = true
	}
}

// TestRetrainActivities runs the file-passing steps of a retrain and the
// registry steps on real Redis: train, export, evaluate, profile, register,
// promote (twice: idempotent) and roll back (twice: idempotent).
func TestRetrainActivities(t *testing.T) {
	rc := testRedis(t, redisDBActivities)
	ctx := testenv.Context(t, 60*time.Second)
	reg := registry.New(rc)
	t0 := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	clicks := shopClicks(t, 6000, t0, time.Second, smallShop())
	acts := &Activities{Redis: rc, WorkDir: t.TempDir(), Train: tinyTraining(), Metrics: NewMetrics(nil)}
	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	env.RegisterActivity(acts)

	retrain := func(version string) (*TrainOutput, *EvaluateOutput) {
		dir := filepath.Join(acts.WorkDir, version)
		events := filepath.Join(dir, fileEvents)
		writeEvents(t, events, clicks)
		windows := filepath.Join(dir, fileWindows)
		require.NoError(t, os.WriteFile(windows, []byte(`{"user_id":"u1","events":4,"by_type":{"view":4},"by_category":{"c1":4},"session_length_ms":120000,"revision":1}`+"\n"), 0o644))

		tr := execute[TrainOutput](t, env, acts.TrainCandidate, TrainInput{Version: version, EventsFile: events, HoldoutFraction: 0.2})
		require.Greater(t, tr.HoldoutSessions, 10)
		require.Equal(t, tr.Sessions, tr.TrainSessions+tr.HoldoutSessions)
		again := execute[TrainOutput](t, env, acts.TrainCandidate, TrainInput{Version: version, EventsFile: events, HoldoutFraction: 0.2})
		require.Equal(t, tr, again, "a retry returns the saved result")

		ex := execute[ExportOutput](t, env, acts.ExportONNX, ExportInput{ModelDir: tr.ModelDir})
		require.Greater(t, ex.Bytes, 1000)
		ev := execute[EvaluateOutput](t, env, acts.EvaluateHoldout, EvaluateInput{ModelDir: tr.ModelDir, HoldoutFile: tr.HoldoutFile})
		require.Greater(t, ev.Metrics.Cases, 100)
		require.Greater(t, ev.Metrics.Candidate[MetricHR20], 0.0)

		ref := execute[ReferenceOutput](t, env, acts.BuildReference, ReferenceInput{ModelDir: tr.ModelDir, EventsFile: events, WindowsFile: windows, HoldoutFile: tr.HoldoutFile})
		require.Equal(t, uint64(len(clicks)), ref.Features[drift.FeatureCategoryMix])
		require.Equal(t, uint64(len(clicks)), ref.Features[drift.FeatureEventTypeMix])
		require.Equal(t, uint64(1), ref.Features[drift.FeatureSessionLength])
		require.Greater(t, ref.Features[drift.FeatureTop1Score], uint64(100))
		require.NotContains(t, ref.Features, drift.FeatureStrategyMix)

		in := RegisterInput{Version: version, ModelDir: tr.ModelDir, ONNXFile: ex.ONNXFile, ReferenceFile: ref.ReferenceFile, Holdout: ev.Metrics, Reason: "test"}
		require.False(t, execute[RegisterOutput](t, env, acts.RegisterCandidate, in).AlreadyRegistered)
		require.True(t, execute[RegisterOutput](t, env, acts.RegisterCandidate, in).AlreadyRegistered)
		md, err := reg.Meta(ctx, version)
		require.NoError(t, err)
		require.Equal(t, ev.Metrics.Candidate, md.Holdout)
		var set drift.ReferenceSet
		require.NoError(t, json.Unmarshal(md.Reference, &set))
		require.Contains(t, set, drift.FeatureTop1Score)
		require.NoError(t, mustExec(env, acts.CleanWorkDir, version))
		_, err = os.Stat(dir)
		require.ErrorIs(t, err, os.ErrNotExist)
		return tr, ev
	}

	_, ev1 := retrain("v1")
	require.Empty(t, ev1.Current)
	require.Nil(t, ev1.Metrics.Current)
	p1 := execute[PromoteOutput](t, env, acts.PromoteCandidate, PromoteInput{Version: "v1", Reason: "first"})
	require.Empty(t, p1.Previous)

	_, ev2 := retrain("v2")
	require.Equal(t, "v1", ev2.Current)
	// Same data, same seed: the same model, so the same metrics.
	require.InDelta(t, ev2.Metrics.Candidate[MetricHR20], ev2.Metrics.Current[MetricHR20], 1e-9)
	p2 := execute[PromoteOutput](t, env, acts.PromoteCandidate, PromoteInput{Version: "v2", Reason: "not worse"})
	require.Equal(t, "v1", p2.Previous)
	p2again := execute[PromoteOutput](t, env, acts.PromoteCandidate, PromoteInput{Version: "v2", Reason: "retry"})
	require.Equal(t, "v1", p2again.Previous)
	require.Equal(t, p2.PromotedAt.Unix(), p2again.PromotedAt.Unix())

	rb := execute[RollbackOutput](t, env, acts.RollbackModel, RollbackInput{Version: "v2", Reason: "PSI 0.4", Trigger: "retrain"})
	require.True(t, rb.RolledBack)
	require.Equal(t, "v1", rb.Serving)
	rb = execute[RollbackOutput](t, env, acts.RollbackModel, RollbackInput{Version: "v2", Reason: "retry", Trigger: "retrain"})
	require.False(t, rb.RolledBack)
	require.Equal(t, "v1", rb.Serving)
	require.Contains(t, rb.Note, "no longer serves")
	rb = execute[RollbackOutput](t, env, acts.RollbackModel, RollbackInput{Version: "v1", Reason: "nothing before", Trigger: "drift"})
	require.False(t, rb.RolledBack)
	require.Contains(t, rb.Note, "no version served before v1")
	require.Equal(t, 1.0, testutil.ToFloat64(acts.Metrics.rollbacks.WithLabelValues("retrain")))

	hist, err := reg.History(ctx, 10)
	require.NoError(t, err)
	require.Equal(t, "rollback", hist[0].Action)
	require.Equal(t, "PSI 0.4", hist[0].Reason)
}

func mustExec(env *testsuite.TestActivityEnvironment, fn any, args ...any) error {
	_, err := env.ExecuteActivity(fn, args...)
	return err
}

func TestTrainCandidateBadInput(t *testing.T) {
	acts := &Activities{WorkDir: t.TempDir(), Train: tinyTraining()}
	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	env.RegisterActivity(acts)
	for _, tc := range []struct {
		in   TrainInput
		want string
	}{
		{TrainInput{Version: "../x", EventsFile: "/e", HoldoutFraction: 0.1}, "not a plain name"},
		{TrainInput{Version: "v1", EventsFile: "/nonexistent", HoldoutFraction: 0.1}, "events file"},
		{TrainInput{Version: "v1", EventsFile: "/e", HoldoutFraction: 0.7}, "holdout fraction"},
	} {
		_, err := env.ExecuteActivity(acts.TrainCandidate, tc.in)
		require.ErrorContains(t, err, tc.want)
	}
}

// TestMeasureDrift compares live profiles in Redis with the served
// version's reference: profiles of other minutes and of other references are
// left out, a shifted category mix alerts, and the PSI gauge is set only for
// features with enough data.
func TestMeasureDrift(t *testing.T) {
	rc := testRedis(t, redisDBActivities)
	ctx := testenv.Context(t, 30*time.Second)
	reg := registry.New(rc)
	t0 := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	clicks := shopClicks(t, 8000, t0, time.Second, smallShop())
	ref := referenceFrom(clicks[:4000])
	refJSON, err := json.Marshal(ref)
	require.NoError(t, err)
	require.NoError(t, reg.Register(ctx, registry.Version{Meta: registry.Metadata{Metadata: model.Metadata{Version: "v1"}, Reference: refJSON}, Model: []byte("m")}, "test"))
	_, err = reg.Promote(ctx, "v1", "test")
	require.NoError(t, err)

	m := NewMetrics(prometheus.NewRegistry())
	acts := &Activities{Redis: rc, Metrics: m}
	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	env.RegisterActivity(acts)

	const minute = 29_000_000
	live := clicks[4000:]
	// Three instances over two minutes, unshifted; one instance on another
	// reference; and a shifted profile outside the minutes compared.
	publishLive(t, ctx, rc, minute, liveFrom(ref, live[:1000], ""), liveFrom(ref, live[1000:2000], ""), liveFrom(ref, live[2000:3000], ""))
	publishLive(t, ctx, rc, minute+1, liveFrom(ref, live[3000:4000], ""))
	other := referenceFrom(clicks[:100])
	other[drift.FeatureCategoryMix].Categories = append(other[drift.FeatureCategoryMix].Categories, "zz")
	other[drift.FeatureCategoryMix].Counts = append(other[drift.FeatureCategoryMix].Counts, 1)
	b, _ := json.Marshal(liveFrom(other, live, ""))
	require.NoError(t, rc.Set(ctx, drift.LiveKey(minute+1, "old-model"), b, time.Hour).Err())
	publishLive(t, ctx, rc, minute-1, liveFrom(ref, live, "c3"))

	rep := execute[DriftReport](t, env, acts.MeasureDrift, MeasureInput{FromMinute: minute, ToMinute: minute + 1})
	require.Equal(t, "v1", rep.Version)
	require.False(t, rep.PromotedAt.IsZero())
	require.Equal(t, 4, rep.Profiles)
	require.Equal(t, 1, rep.Skipped)
	require.Empty(t, rep.Alerting, "%+v", rep.Results)
	require.Len(t, rep.Results, 2)
	for _, r := range rep.Results {
		require.Equal(t, uint64(4000), r.LiveN, r.Feature)
		require.True(t, r.Sufficient(), r.Feature)
		require.InDelta(t, r.PSI, testutil.ToFloat64(m.psi.WithLabelValues(r.Feature)), 1e-12)
	}

	// The shifted minute alone: the category mix alerts.
	rep = execute[DriftReport](t, env, acts.MeasureDrift, MeasureInput{FromMinute: minute - 1, ToMinute: minute - 1})
	require.Equal(t, []string{drift.FeatureCategoryMix}, rep.Alerting)
	require.Contains(t, rep.Summary(), "category_mix PSI")
	require.Contains(t, rep.Summary(), "bin c3")

	// Too little data: the PSI gauge goes away instead of going stale.
	rep = execute[DriftReport](t, env, acts.MeasureDrift, MeasureInput{FromMinute: minute + 1, ToMinute: minute + 1, MinSamples: 5000})
	require.Empty(t, rep.Alerting)
	require.Equal(t, 0, testutil.CollectAndCount(m.psi))

	// Another version expected: nothing compared.
	rep = execute[DriftReport](t, env, acts.MeasureDrift, MeasureInput{Version: "v9", FromMinute: minute, ToMinute: minute + 1})
	require.Contains(t, rep.Note, "v9 no longer serves")
	require.Empty(t, rep.Results)
}

// TestRefreshPopularityTable counts decayed clicks from the embedded broker
// and stores the table in Redis; an empty window keeps the stored table.
func TestRefreshPopularityTable(t *testing.T) {
	rc := testRedis(t, redisDBActivities)
	ctx := testenv.Context(t, 30*time.Second)
	kc := embeddedKafka(t, 2)
	end := time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)
	click := func(id string, item int64, cat string, age time.Duration) *kgo.Record {
		c := event.Click{EventID: id, UserID: "u" + id, SessionID: "s", Type: event.View, ItemID: item, Category: cat, TimestampMs: end.Add(-age).UnixMilli()}
		return clickRecord(&c, int32(item%2))
	}
	var recs []*kgo.Record
	// Item 1: three clicks two half-lives old (0.75); item 2: a fresh click
	// and one three half-lives old (1.125); item 3: two clicks one half-life
	// old (1.0); item 4 in another category (0.93); one click before the
	// window and one invalid record.
	for i := range 3 {
		recs = append(recs, click(fmt.Sprint("a", i), 1, "c1", 20*time.Minute))
	}
	recs = append(recs, click("b", 2, "c1", time.Second), click("b1", 2, "c1", 30*time.Minute), click("c0", 3, "c1", 10*time.Minute), click("c1", 3, "c1", 10*time.Minute),
		click("d", 4, "c2", time.Minute), click("old", 1, "c1", 2*time.Hour))
	recs = append(recs, &kgo.Record{Topic: "user_events", Partition: 1, Value: []byte("not json"), Timestamp: end.Add(-time.Minute)})
	produce(t, ctx, producer(t, kc), recs...)

	acts := &Activities{Kafka: kc, Redis: rc, ReadIdle: 5 * time.Second}
	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	env.RegisterActivity(acts)
	sub := rc.Subscribe(ctx, featurestore.PopularityChannel)
	defer sub.Close()
	_, err := sub.Receive(ctx)
	require.NoError(t, err)

	in := PopularityInput{Window: Window{FromMs: end.Add(-time.Hour).UnixMilli(), ToMs: end.UnixMilli()}, HalfLife: 10 * time.Minute, TopK: 3, Version: "pop-test"}
	out := execute[PopularityOutput](t, env, acts.RefreshPopularityTable, in)
	require.True(t, out.Stored)
	require.Equal(t, 8, out.Events)
	require.Equal(t, 1, out.Invalid)
	require.Equal(t, 2, out.Categories)
	require.Equal(t, []int64{2, 3, 4}, out.Global)
	msg, err := sub.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.Equal(t, "pop-test", msg.Payload)
	p, err := featurestore.LoadPopularity(ctx, rc)
	require.NoError(t, err)
	require.Equal(t, "pop-test", p.Version)
	var c1 []int64
	for _, s := range p.ByCategory["c1"] {
		c1 = append(c1, s.ItemID)
	}
	require.Equal(t, []int64{2, 3, 1}, c1)
	require.InDelta(t, 0.75, p.ByCategory["c1"][2].Score, 1e-6)

	// A window without clicks leaves the table alone.
	in.Window = Window{FromMs: end.Add(time.Hour).UnixMilli(), ToMs: end.Add(2 * time.Hour).UnixMilli()}
	in.Version = "pop-empty"
	out = execute[PopularityOutput](t, env, acts.RefreshPopularityTable, in)
	require.False(t, out.Stored)
	p, err = featurestore.LoadPopularity(ctx, rc)
	require.NoError(t, err)
	require.Equal(t, "pop-test", p.Version)
}
