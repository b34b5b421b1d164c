package workflows

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"github.com/stretchr/testify/suite"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"

	"github.com/clickrec/clickrec/drift"
)

type workflowSuite struct {
	suite.Suite
	testsuite.WorkflowTestSuite
	env *testsuite.TestWorkflowEnvironment
}

func TestWorkflows(t *testing.T) { suite.Run(t, new(workflowSuite)) }

var testStart = time.Date(2026, 3, 14, 2, 0, 0, 0, time.UTC)

func (s *workflowSuite) SetupTest() {
	s.env = s.NewTestWorkflowEnvironment()
	s.env.SetWorkerOptions(worker.Options{EnableSessionWorker: true})
	s.env.SetStartTime(testStart)
	s.env.RegisterActivity(&Activities{})
}

func (s *workflowSuite) AfterTest(_, _ string) { s.env.AssertExpectations(s.T()) }

// mockRetrainSteps mocks steps 1–6 of RetrainModel, with the given holdout
// metrics of candidate and current version.
func (s *workflowSuite) mockRetrainSteps(cand, cur map[string]float64) {
	env := s.env
	env.OnActivity(a.CollectWindow, mock.Anything, mock.Anything).Return(func(_ context.Context, in CollectInput) (*CollectOutput, error) {
		s.Equal(testStart.UnixMilli(), in.Window.ToMs)
		s.Equal(testStart.Add(-24*time.Hour).UnixMilli(), in.Window.FromMs)
		s.True(strings.HasPrefix(in.Version, "v20260314-020000-"), in.Version)
		return &CollectOutput{EventsFile: "/work/" + in.Version + "/events.jsonl", WindowsFile: "/work/w.jsonl", Window: in.Window, Events: 5000}, nil
	}).Maybe()
	env.OnActivity(a.TrainCandidate, mock.Anything, mock.Anything).Return(&TrainOutput{ModelDir: "/work/v/model", HoldoutFile: "/work/v/holdout.jsonl", Sessions: 900}, nil).Maybe()
	env.OnActivity(a.ExportONNX, mock.Anything, mock.Anything).Return(&ExportOutput{ONNXFile: "/work/v/model.onnx", Bytes: 1 << 20}, nil).Maybe()
	current := ""
	if cur != nil {
		current = "v-old"
	}
	env.OnActivity(a.EvaluateHoldout, mock.Anything, mock.Anything).Return(&EvaluateOutput{Current: current,
		Metrics: HoldoutMetrics{Cases: 1000, Candidate: cand, Current: cur}}, nil).Maybe()
	env.OnActivity(a.BuildReference, mock.Anything, mock.Anything).Return(&ReferenceOutput{ReferenceFile: "/work/v/reference.json"}, nil).Maybe()
	env.OnActivity(a.RegisterCandidate, mock.Anything, mock.Anything).Return(&RegisterOutput{}, nil).Maybe()
	env.OnActivity(a.CleanWorkDir, mock.Anything, mock.Anything).Return(nil).Maybe()
}

func (s *workflowSuite) mockPromote() {
	s.env.OnActivity(a.PromoteCandidate, mock.Anything, mock.Anything).Return(func(_ context.Context, in PromoteInput) (*PromoteOutput, error) {
		return &PromoteOutput{Previous: "v-old", PromotedAt: s.env.Now()}, nil
	}).Once()
}

func metrics(hr, mrr float64) map[string]float64 {
	return map[string]float64{MetricHR20: hr, MetricMRR20: mrr}
}

func (s *workflowSuite) result() *RetrainState {
	s.True(s.env.IsWorkflowCompleted())
	s.Require().NoError(s.env.GetWorkflowError())
	var st RetrainState
	s.Require().NoError(s.env.GetWorkflowResult(&st))
	return &st
}

func (s *workflowSuite) TestRetrainHappyPath() {
	s.mockRetrainSteps(metrics(0.50, 0.20), metrics(0.49, 0.20))
	s.mockPromote()
	s.env.OnActivity(a.MeasureDrift, mock.Anything, mock.Anything).Return(func(_ context.Context, in MeasureInput) (*DriftReport, error) {
		s.Equal(drift.LiveMinute(testStart), in.FromMinute)
		s.Equal(drift.LiveMinute(testStart.Add(time.Hour)), in.ToMinute)
		return &DriftReport{Version: in.Version, Results: []drift.Result{{Feature: drift.FeatureCategoryMix, PSI: 0.02, Verdict: drift.OK}}}, nil
	}).Once()
	s.env.ExecuteWorkflow(RetrainModel, RetrainParams{Reason: "test"})
	st := s.result()
	s.Equal(OutcomePromoted, st.Outcome)
	s.Equal(StageDone, st.Stage)
	s.Equal(st.Candidate, st.Serving)
	s.Equal("v-old", st.Previous)
	s.Contains(st.Gate, "not worse than v-old")
	s.NotNil(st.Online)
	s.Equal(testStart.Add(time.Hour), st.ObserveUntil)
	s.env.AssertActivityNotCalled(s.T(), "RollbackModel", mock.Anything, mock.Anything)
}

func (s *workflowSuite) TestRetrainFirstModel() {
	s.mockRetrainSteps(metrics(0.3, 0.1), nil)
	s.mockPromote()
	s.env.OnActivity(a.MeasureDrift, mock.Anything, mock.Anything).Return(func(_ context.Context, in MeasureInput) (*DriftReport, error) {
		return &DriftReport{Version: in.Version}, nil
	}).Once()
	s.env.ExecuteWorkflow(RetrainModel, RetrainParams{})
	st := s.result()
	s.Equal(OutcomePromoted, st.Outcome)
	s.Contains(st.Gate, "first model")
}

func (s *workflowSuite) TestRetrainActivityRetried() {
	calls := 0
	s.env.OnActivity(a.CollectWindow, mock.Anything, mock.Anything).Return(func(_ context.Context, in CollectInput) (*CollectOutput, error) {
		calls++
		if calls == 1 {
			return nil, errors.New("broker not reachable")
		}
		return &CollectOutput{Events: 100, EventsFile: "/e"}, nil
	}).Times(2)
	s.mockRetrainSteps(metrics(0.5, 0.2), metrics(0.5, 0.2))
	s.mockPromote()
	s.env.OnActivity(a.MeasureDrift, mock.Anything, mock.Anything).Return(&DriftReport{}, nil).Once()
	s.env.ExecuteWorkflow(RetrainModel, RetrainParams{})
	st := s.result()
	s.Equal(2, calls)
	s.Equal(100, st.Data.Events)
	// MeasureDrift reported another version serving: nothing to undo.
	s.Equal(OutcomePromoted, st.Outcome)
}

func (s *workflowSuite) TestRetrainNonRetryableFailsAtOnce() {
	s.env.OnActivity(a.CollectWindow, mock.Anything, mock.Anything).Return(&CollectOutput{Events: 100, EventsFile: "/e"}, nil).Once()
	s.env.OnActivity(a.TrainCandidate, mock.Anything, mock.Anything).
		Return(nil, temporal.NewNonRetryableApplicationError("events file: missing", ErrTypeBadInput, nil)).Once()
	s.env.ExecuteWorkflow(RetrainModel, RetrainParams{})
	s.True(s.env.IsWorkflowCompleted())
	s.ErrorContains(s.env.GetWorkflowError(), "events file: missing")
}

func (s *workflowSuite) TestRetrainSkippedWithoutData() {
	s.env.OnActivity(a.CollectWindow, mock.Anything, mock.Anything).Return(&CollectOutput{}, nil).Once()
	s.env.ExecuteWorkflow(RetrainModel, RetrainParams{})
	st := s.result()
	s.Equal(OutcomeSkipped, st.Outcome)
	s.Contains(st.Gate, "no events")
	s.env.AssertActivityNotCalled(s.T(), "TrainCandidate", mock.Anything, mock.Anything)
}

func (s *workflowSuite) TestRetrainSkippedOnTooFewSessions() {
	s.env.OnActivity(a.CollectWindow, mock.Anything, mock.Anything).Return(&CollectOutput{Events: 3, EventsFile: "/e"}, nil).Once()
	s.env.OnActivity(a.TrainCandidate, mock.Anything, mock.Anything).
		Return(nil, temporal.NewNonRetryableApplicationError("1 sessions are too few", ErrTypeNoData, nil)).Once()
	s.env.ExecuteWorkflow(RetrainModel, RetrainParams{})
	st := s.result()
	s.Equal(OutcomeSkipped, st.Outcome)
	s.Equal("1 sessions are too few", st.Gate)
}

func (s *workflowSuite) TestGateRejectsWorseCandidate() {
	s.mockRetrainSteps(metrics(0.40, 0.20), metrics(0.50, 0.20))
	s.env.ExecuteWorkflow(RetrainModel, RetrainParams{Tolerance: 0.05})
	st := s.result()
	s.Equal(OutcomeRejected, st.Outcome)
	s.Equal("v-old", st.Serving)
	s.Contains(st.Gate, "worse than v-old: hr@20 0.4000 < 0.5000")
	s.env.AssertActivityNotCalled(s.T(), "PromoteCandidate", mock.Anything, mock.Anything)
}

func (s *workflowSuite) TestRollbackWhenObservationShowsDrift() {
	s.mockRetrainSteps(metrics(0.5, 0.2), metrics(0.5, 0.2))
	s.mockPromote()
	s.env.OnActivity(a.MeasureDrift, mock.Anything, mock.Anything).Return(func(_ context.Context, in MeasureInput) (*DriftReport, error) {
		return &DriftReport{Version: in.Version, Alerting: []string{drift.FeatureCategoryMix}, Results: []drift.Result{{
			Feature: drift.FeatureCategoryMix, PSI: 0.46, Verdict: drift.Severe, RefN: 5000, LiveN: 3000,
			Top: &drift.BinShift{Bin: "c7", RefShare: 0.02, LiveShare: 0.21},
		}}}, nil
	}).Once()
	s.env.OnActivity(a.RollbackModel, mock.Anything, mock.Anything).Return(func(_ context.Context, in RollbackInput) (*RollbackOutput, error) {
		s.Equal("retrain", in.Trigger)
		s.Contains(in.Reason, "category_mix PSI 0.460 > 0.15 (bin c7 2.0% → 21.0%)")
		return &RollbackOutput{RolledBack: true, Serving: "v-old"}, nil
	}).Once()
	s.env.ExecuteWorkflow(RetrainModel, RetrainParams{})
	st := s.result()
	s.Equal(OutcomeRolledBack, st.Outcome)
	s.Equal("v-old", st.Serving)
}

func (s *workflowSuite) TestFailureAfterPromotionRollsBack() {
	s.mockRetrainSteps(metrics(0.5, 0.2), metrics(0.5, 0.2))
	s.mockPromote()
	s.env.OnActivity(a.MeasureDrift, mock.Anything, mock.Anything).
		Return(nil, temporal.NewNonRetryableApplicationError("reference does not decode", ErrTypeBadInput, nil)).Once()
	s.env.OnActivity(a.RollbackModel, mock.Anything, mock.Anything).Return(func(_ context.Context, in RollbackInput) (*RollbackOutput, error) {
		s.Equal("abort", in.Trigger)
		s.Contains(in.Reason, "did not finish")
		return &RollbackOutput{RolledBack: true, Serving: "v-old"}, nil
	}).Once()
	s.env.ExecuteWorkflow(RetrainModel, RetrainParams{})
	s.True(s.env.IsWorkflowCompleted())
	s.ErrorContains(s.env.GetWorkflowError(), "reference does not decode")
}

func (s *workflowSuite) TestQueryAndPromoteNowSignal() {
	s.mockRetrainSteps(metrics(0.5, 0.2), metrics(0.5, 0.2))
	s.mockPromote()
	queried := false
	s.env.RegisterDelayedCallback(func() {
		v, err := s.env.QueryWorkflow(QueryState)
		s.Require().NoError(err)
		var st RetrainState
		s.Require().NoError(v.Get(&st))
		s.Equal(StageObserving, st.Stage)
		s.Equal(testStart.Add(time.Hour), st.ObserveUntil)
		s.Equal(1000, st.Holdout.Cases)
		queried = true
		s.env.SignalWorkflow(SignalPromoteNow, nil)
	}, 10*time.Minute)
	s.env.ExecuteWorkflow(RetrainModel, RetrainParams{})
	st := s.result()
	s.True(queried)
	s.True(st.PromoteNow)
	s.Equal(OutcomePromoted, st.Outcome)
	s.Contains(st.Gate, "promote-now")
	s.env.AssertActivityNotCalled(s.T(), "MeasureDrift", mock.Anything, mock.Anything)
}

func (s *workflowSuite) TestAbortDuringObservationRollsBack() {
	s.mockRetrainSteps(metrics(0.5, 0.2), metrics(0.5, 0.2))
	s.mockPromote()
	s.env.OnActivity(a.RollbackModel, mock.Anything, mock.Anything).Return(func(_ context.Context, in RollbackInput) (*RollbackOutput, error) {
		s.Equal("abort", in.Trigger)
		s.Contains(in.Reason, "clicks look wrong")
		return &RollbackOutput{RolledBack: true, Serving: "v-old"}, nil
	}).Once()
	s.env.RegisterDelayedCallback(func() { s.env.SignalWorkflow(SignalAbort, "clicks look wrong") }, 5*time.Minute)
	s.env.ExecuteWorkflow(RetrainModel, RetrainParams{})
	st := s.result()
	s.Equal(OutcomeAborted, st.Outcome)
	s.Equal("clicks look wrong", st.AbortReason)
	s.Equal("v-old", st.Serving)
}

func (s *workflowSuite) TestAbortDuringTrainingCancelsIt() {
	s.env.OnActivity(a.CollectWindow, mock.Anything, mock.Anything).Return(&CollectOutput{Events: 100, EventsFile: "/e"}, nil).Once()
	s.env.OnActivity(a.TrainCandidate, mock.Anything, mock.Anything).After(time.Hour).Return(&TrainOutput{}, nil).Maybe()
	s.env.RegisterDelayedCallback(func() { s.env.SignalWorkflow(SignalAbort, nil) }, time.Minute)
	s.env.ExecuteWorkflow(RetrainModel, RetrainParams{})
	st := s.result()
	s.Equal(OutcomeAborted, st.Outcome)
	s.Equal("abort signal", st.AbortReason)
	s.Equal(StageDone, st.Stage)
	s.env.AssertActivityNotCalled(s.T(), "PromoteCandidate", mock.Anything, mock.Anything)
}

func (s *workflowSuite) TestRefreshPopularity() {
	calls := 0
	s.env.OnActivity(a.RefreshPopularityTable, mock.Anything, mock.Anything).Return(func(_ context.Context, in PopularityInput) (*PopularityOutput, error) {
		calls++
		if calls == 1 {
			return nil, errors.New("redis: connection refused")
		}
		s.Equal(testStart.Add(-30*time.Minute).UnixMilli(), in.Window.FromMs)
		s.Equal(10*time.Minute, in.HalfLife)
		s.Equal(10, in.TopK)
		return &PopularityOutput{Version: in.Version, Events: 42, Stored: true}, nil
	}).Times(2)
	s.env.ExecuteWorkflow(RefreshPopularity, RefreshParams{Window: 30 * time.Minute, HalfLife: 10 * time.Minute})
	s.True(s.env.IsWorkflowCompleted())
	s.Require().NoError(s.env.GetWorkflowError())
	var out PopularityOutput
	s.Require().NoError(s.env.GetWorkflowResult(&out))
	s.Equal("pop-20260314-020000", out.Version)
	s.Equal(42, out.Events)
}

func driftReport(version string, promotedAt time.Time, alerting bool) *DriftReport {
	r := &DriftReport{Version: version, PromotedAt: promotedAt, Profiles: 30,
		Results: []drift.Result{{Feature: drift.FeatureCategoryMix, PSI: 0.03, Verdict: drift.OK, RefN: 5000, LiveN: 4000}}}
	if alerting {
		r.Results[0].PSI, r.Results[0].Verdict = 0.31, drift.Severe
		r.Alerting = []string{drift.FeatureCategoryMix}
	}
	return r
}

func (s *workflowSuite) driftResult() *DriftResult {
	s.True(s.env.IsWorkflowCompleted())
	s.Require().NoError(s.env.GetWorkflowError())
	var r DriftResult
	s.Require().NoError(s.env.GetWorkflowResult(&r))
	return &r
}

func (s *workflowSuite) TestCheckDriftNoAlert() {
	s.env.OnActivity(a.MeasureDrift, mock.Anything, mock.Anything).Return(func(_ context.Context, in MeasureInput) (*DriftReport, error) {
		s.Equal(drift.LiveMinute(testStart), in.ToMinute)
		s.Equal(in.ToMinute-14, in.FromMinute)
		s.Equal(uint64(drift.DefaultMinSamples), in.MinSamples)
		return driftReport("v2", testStart.Add(-10*time.Minute), false), nil
	}).Once()
	s.env.ExecuteWorkflow(CheckDrift, DriftParams{})
	r := s.driftResult()
	s.Equal(ActionNone, r.Action)
}

func (s *workflowSuite) TestCheckDriftRollsBackRecentPromotion() {
	s.env.OnActivity(a.MeasureDrift, mock.Anything, mock.Anything).Return(driftReport("v2", testStart.Add(-20*time.Minute), true), nil).Once()
	s.env.OnActivity(a.RollbackModel, mock.Anything, mock.Anything).Return(func(_ context.Context, in RollbackInput) (*RollbackOutput, error) {
		s.Equal("v2", in.Version)
		s.Equal("drift", in.Trigger)
		s.Contains(in.Reason, "drift 20m0s after its promotion: category_mix PSI 0.310 > 0.15")
		return &RollbackOutput{RolledBack: true, Serving: "v1"}, nil
	}).Once()
	s.env.ExecuteWorkflow(CheckDrift, DriftParams{})
	r := s.driftResult()
	s.Equal(ActionRolledBack, r.Action)
	s.Contains(r.Detail, "rolled back v2 to v1")
	s.env.AssertActivityNotCalled(s.T(), "StartRetrain", mock.Anything, mock.Anything)
}

func (s *workflowSuite) TestCheckDriftRetrainsOldModel() {
	s.env.OnActivity(a.MeasureDrift, mock.Anything, mock.Anything).Return(driftReport("v2", testStart.Add(-3*time.Hour), true), nil).Once()
	s.env.OnActivity(a.StartRetrain, mock.Anything, mock.Anything).Return(func(_ context.Context, in StartRetrainInput) (*StartRetrainOutput, error) {
		s.Contains(in.Params.Reason, "drift on v2: category_mix PSI 0.310")
		s.Equal(2*time.Hour, in.Params.ObservationPeriod)
		return &StartRetrainOutput{Started: true, WorkflowID: RetrainWorkflowID, RunID: "r1"}, nil
	}).Once()
	s.env.ExecuteWorkflow(CheckDrift, DriftParams{Retrain: RetrainParams{ObservationPeriod: 2 * time.Hour}})
	r := s.driftResult()
	s.Equal(ActionRetrainStarted, r.Action)
	s.env.AssertActivityNotCalled(s.T(), "RollbackModel", mock.Anything, mock.Anything)
}

// TestCheckDriftSkipsRollbackWhenAnotherServes: v2 drifted, but v3 was
// promoted before the rollback ran; RollbackModel refuses (the registry's
// compare-and-set), and the check reports it without retraining.
func (s *workflowSuite) TestCheckDriftSkipsRollbackWhenAnotherServes() {
	s.env.OnActivity(a.MeasureDrift, mock.Anything, mock.Anything).Return(driftReport("v2", testStart.Add(-5*time.Minute), true), nil).Once()
	s.env.OnActivity(a.RollbackModel, mock.Anything, mock.Anything).Return(func(_ context.Context, in RollbackInput) (*RollbackOutput, error) {
		s.Equal("v2", in.Version, "the rollback must be conditional on the version judged")
		return &RollbackOutput{Serving: "v3", Note: `v2 no longer serves ("v3" does)`}, nil
	}).Once()
	s.env.ExecuteWorkflow(CheckDrift, DriftParams{})
	r := s.driftResult()
	s.Equal(ActionRollbackMissed, r.Action)
	s.Contains(r.Detail, "v2 no longer serves")
	s.env.AssertActivityNotCalled(s.T(), "StartRetrain", mock.Anything, mock.Anything)
}

func (s *workflowSuite) TestCheckDriftWithoutPreviousRetrains() {
	s.env.OnActivity(a.MeasureDrift, mock.Anything, mock.Anything).Return(driftReport("v1", testStart.Add(-time.Minute), true), nil).Once()
	s.env.OnActivity(a.RollbackModel, mock.Anything, mock.Anything).Return(&RollbackOutput{Serving: "v1", Note: "no version served before v1"}, nil).Once()
	s.env.OnActivity(a.StartRetrain, mock.Anything, mock.Anything).Return(&StartRetrainOutput{AlreadyRunning: true, WorkflowID: RetrainWorkflowID}, nil).Once()
	s.env.ExecuteWorkflow(CheckDrift, DriftParams{})
	r := s.driftResult()
	s.Equal(ActionRetrainRunning, r.Action)
}

func TestGate(t *testing.T) {
	p := DefaultRetrainParams()
	for _, tc := range []struct {
		name string
		ev   EvaluateOutput
		ok   bool
		why  string
	}{
		{"no cases", EvaluateOutput{Current: "v1"}, false, "no prefix"},
		{"first model", EvaluateOutput{Metrics: HoldoutMetrics{Cases: 3, Candidate: metrics(0.1, 0.05)}}, true, "first model"},
		{"small holdout", EvaluateOutput{Current: "v1", Metrics: HoldoutMetrics{Cases: 10, Candidate: metrics(0.9, 0.5), Current: metrics(0.1, 0.1)}}, false, "fewer than the 200"},
		{"within tolerance", EvaluateOutput{Current: "v1", Metrics: HoldoutMetrics{Cases: 500, Candidate: metrics(0.495, 0.2), Current: metrics(0.5, 0.2)}}, true, "not worse"},
		{"mrr worse", EvaluateOutput{Current: "v1", Metrics: HoldoutMetrics{Cases: 500, Candidate: metrics(0.6, 0.1), Current: metrics(0.5, 0.2)}}, false, "mrr@20 0.1000 < 0.2000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, why := gate(&tc.ev, p)
			require.Equal(t, tc.ok, ok, why)
			require.Contains(t, why, tc.why)
		})
	}
}

func TestLiveKey(t *testing.T) {
	for _, inst := range []string{"hotpath-0", "host:9464"} {
		m, got, ok := drift.ParseLiveKey(drift.LiveKey(29_000_000, inst))
		require.True(t, ok)
		require.Equal(t, int64(29_000_000), m)
		require.Equal(t, inst, got)
	}
	for _, bad := range []string{"drift:live:", "drift:live:x:y", "drift:live:12", "popularity:current"} {
		_, _, ok := drift.ParseLiveKey(bad)
		require.False(t, ok, bad)
	}
	require.Equal(t, "drift:live:7:*", drift.LiveKeyMinutePattern(7))
	require.Equal(t, int64(1), drift.LiveMinute(time.Unix(119, 0)))
}
