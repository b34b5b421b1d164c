package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/clickrec/clickrec/drift"
)

// Retry policies, as data. Activities return non-retryable application
// errors (ErrTypeBadInput, ErrTypeNoData) for what retrying cannot fix.
var (
	// retrySlow is for the long, file-producing steps of a retrain.
	retrySlow = &temporal.RetryPolicy{
		InitialInterval:    5 * time.Second,
		BackoffCoefficient: 2,
		MaximumInterval:    2 * time.Minute,
		MaximumAttempts:    5,
	}
	// retryQuick is for short registry and Redis operations.
	retryQuick = &temporal.RetryPolicy{
		InitialInterval:    time.Second,
		BackoffCoefficient: 2,
		MaximumInterval:    30 * time.Second,
		MaximumAttempts:    10,
	}
)

// quickActivity is the context of a short registry or Redis step.
func quickActivity(ctx workflow.Context, summary string) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 2 * time.Minute,
		RetryPolicy:         retryQuick,
		Summary:             summary,
	})
}

// a is the nil *Activities workflows call activity methods through; the
// worker registers a real value.
var a *Activities

// RetrainModel retrains the recommender and promotes it only if it is not
// worse than the version serving:
//
//  1. collect the training window from user_events (and the windows topic),
//  2. train the candidate on all but the most recent sessions (the holdout),
//  3. export it to ONNX,
//  4. evaluate candidate and current version on the holdout,
//  5. build the drift reference profiles,
//  6. register the candidate — steps 1–6 in one session, on one worker,
//     since they pass files —
//  7. the gate: promote only if HR@20 and MRR@20 are within the tolerance,
//  8. promote, observe for ObservationPeriod, check the new version's live
//     traffic for drift, and roll back (the promotion's compensation) if it
//     drifted. A run that fails or is cancelled after the promotion rolls
//     back too.
//
// The "state" query returns the RetrainState; the "promote-now" signal ends
// the observation early and keeps the candidate; "abort" stops the run and
// rolls back a promotion. The result is the final RetrainState; an error is
// returned only for failures (not for a rejected or skipped candidate).
func RetrainModel(ctx workflow.Context, params RetrainParams) (res *RetrainState, err error) {
	r := newRetrain(ctx, params)
	if err := workflow.SetQueryHandler(ctx, QueryState, func() (*RetrainState, error) { return r.st, nil }); err != nil {
		return nil, err
	}
	r.stage(StageCollecting)
	if err := r.validate(); err != nil {
		return r.st, err
	}
	r.handleSignals()

	ev, err := r.buildCandidate() // steps 1–6
	if err != nil || r.finished() {
		return r.st, err
	}
	r.applyGate(ev)
	if r.finished() {
		return r.st, nil
	}
	if err := r.promote(); err != nil || r.finished() {
		return r.st, err
	}
	// From here on, a run that fails or is cancelled rolls back.
	defer r.compensate(&err)
	if err := r.observe(); err != nil || r.finished() {
		return r.st, err
	}
	return r.st, r.checkOnline()
}

// gate decides whether the candidate may replace the current version: yes
// if nothing serves yet (and the candidate was evaluated at all), else only
// on a holdout of at least MinHoldoutCases where both HR@20 and MRR@20 are
// at least (1 − Tolerance) × the current version's.
func gate(ev *EvaluateOutput, p RetrainParams) (bool, string) {
	m := ev.Metrics
	if m.Cases == 0 || m.Candidate == nil {
		return false, "the holdout has no prefix → next item case to evaluate on"
	}
	if ev.Current == "" || m.Current == nil {
		return true, fmt.Sprintf("first model: nothing serves yet (candidate HR@20 %.4f, MRR@20 %.4f on %d cases)",
			m.Candidate[MetricHR20], m.Candidate[MetricMRR20], m.Cases)
	}
	if m.Cases < p.MinHoldoutCases {
		return false, fmt.Sprintf("the holdout has %d cases, fewer than the %d needed to compare with %s", m.Cases, p.MinHoldoutCases, ev.Current)
	}
	for _, k := range []string{MetricHR20, MetricMRR20} {
		c, cur := m.Candidate[k], m.Current[k]
		if c < cur*(1-p.Tolerance) {
			return false, fmt.Sprintf("worse than %s: %s %.4f < %.4f × (1 − %g) on %d cases", ev.Current, k, c, cur, p.Tolerance, m.Cases)
		}
	}
	return true, fmt.Sprintf("not worse than %s (tolerance %g): HR@20 %.4f vs %.4f, MRR@20 %.4f vs %.4f on %d cases", ev.Current, p.Tolerance,
		m.Candidate[MetricHR20], m.Current[MetricHR20], m.Candidate[MetricMRR20], m.Current[MetricMRR20], m.Cases)
}

// RefreshPopularity recomputes the cold-start popularity table — the top
// TopK items globally and per category, by time-decayed clicks of the last
// Window — and stores it in Redis (featurestore.PopularityKey), where the hot
// path reloads it. The table itself never enters the workflow's history.
func RefreshPopularity(ctx workflow.Context, params RefreshParams) (*PopularityOutput, error) {
	p := params.withDefaults()
	var out *PopularityOutput
	if err := workflow.SetQueryHandler(ctx, QueryState, func() (*PopularityOutput, error) { return out, nil }); err != nil {
		return nil, err
	}
	now := workflow.Now(ctx)
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 15 * time.Minute,
		HeartbeatTimeout:    time.Minute,
		RetryPolicy:         retrySlow,
		Summary:             fmt.Sprintf("top %d of the last %v, half-life %v", p.TopK, p.Window, p.HalfLife),
	})
	in := PopularityInput{
		Window:   Window{FromMs: now.Add(-p.Window).UnixMilli(), ToMs: now.UnixMilli()},
		HalfLife: p.HalfLife,
		TopK:     p.TopK,
		Version:  "pop-" + now.UTC().Format("20060102-150405"),
	}
	var res PopularityOutput
	if err := workflow.ExecuteActivity(actx, a.RefreshPopularityTable, in).Get(ctx, &res); err != nil {
		return nil, err
	}
	out = &res
	return out, nil
}

// CheckDrift compares the live traffic of the last Window (the hot path's
// live profiles, merged across instances) with the served version's
// reference profiles and exports recsys_drift_psi{feature}. If a feature
// drifts (PSI > 0.15 on enough data), a version promoted less than
// RecentPromotion ago is rolled back (the PSI goes into the registry
// history); otherwise a RetrainModel run is started — unless one is
// running already.
func CheckDrift(ctx workflow.Context, params DriftParams) (*DriftResult, error) {
	p := params.withDefaults()
	res := &DriftResult{Action: ActionNone}
	if err := workflow.SetQueryHandler(ctx, QueryState, func() (*DriftResult, error) { return res, nil }); err != nil {
		return nil, err
	}
	now := workflow.Now(ctx)
	rep, err := measureLiveDrift(ctx, p, now)
	if err != nil {
		return nil, err
	}
	res.Report = rep
	if len(rep.Alerting) == 0 {
		res.Detail = "no feature drifted"
		if rep.Note != "" {
			res.Detail = rep.Note
		}
		return res, nil
	}
	summary := rep.Summary()
	workflow.SetCurrentDetails(ctx, "**drift** on "+rep.Version+": "+summary)
	if !rep.PromotedAt.IsZero() && now.Sub(rep.PromotedAt) <= p.RecentPromotion {
		done, err := rollBackDrifted(ctx, res, now, summary)
		if err != nil {
			return nil, err
		}
		if done {
			return res, nil
		}
		// Nothing served before it: retraining is all that is left.
	}
	if err := requestRetrain(ctx, res, p.Retrain, summary); err != nil {
		return nil, err
	}
	return res, nil
}

// measureLiveDrift compares the live profiles of the last p.Window up to
// now with the served version's reference profiles.
func measureLiveDrift(ctx workflow.Context, p DriftParams, now time.Time) (*DriftReport, error) {
	to := drift.LiveMinute(now)
	from := to - max(1, int64(p.Window/time.Minute)) + 1
	var rep DriftReport
	if err := workflow.ExecuteActivity(quickActivity(ctx, fmt.Sprintf("compare the last %v of live profiles", p.Window)), a.MeasureDrift,
		MeasureInput{FromMinute: from, ToMinute: to, MinSamples: p.MinSamples}).Get(ctx, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

// rollBackDrifted rolls back the drifting, recently promoted version of
// res.Report and records what happened in res; done is false if nothing
// served before it, so that only retraining is left.
func rollBackDrifted(ctx workflow.Context, res *DriftResult, now time.Time, summary string) (done bool, err error) {
	rep := res.Report
	reason := fmt.Sprintf("drift %v after its promotion: %s", now.Sub(rep.PromotedAt).Round(time.Second), summary)
	var rb RollbackOutput
	if err := workflow.ExecuteActivity(quickActivity(ctx, "roll back "+rep.Version), a.RollbackModel,
		RollbackInput{Version: rep.Version, Reason: reason, Trigger: "drift"}).Get(ctx, &rb); err != nil {
		return false, err
	}
	res.Rollback = &rb
	switch {
	case rb.RolledBack:
		res.Action, res.Detail = ActionRolledBack, fmt.Sprintf("rolled back %s to %s: %s", rep.Version, rb.Serving, reason)
		return true, nil
	case rb.Serving != rep.Version:
		res.Action, res.Detail = ActionRollbackMissed, rb.Note
		return true, nil
	}
	return false, nil
}

// requestRetrain starts a RetrainModel run for the drift of res.Report
// (StartRetrain: none if one runs already) and records which in res.
func requestRetrain(ctx workflow.Context, res *DriftResult, retrain RetrainParams, summary string) error {
	retrain.Reason = "drift on " + res.Report.Version + ": " + summary
	var sr StartRetrainOutput
	if err := workflow.ExecuteActivity(quickActivity(ctx, "start a retrain"), a.StartRetrain, StartRetrainInput{Params: retrain}).Get(ctx, &sr); err != nil {
		return err
	}
	res.Retrain = &sr
	if sr.Started {
		res.Action, res.Detail = ActionRetrainStarted, fmt.Sprintf("started %s (%s): %s", sr.WorkflowID, sr.RunID, summary)
	} else {
		res.Action, res.Detail = ActionRetrainRunning, fmt.Sprintf("%s (%s) is already running: %s", sr.WorkflowID, sr.RunID, summary)
	}
	return nil
}
