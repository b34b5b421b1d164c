package workflows

import (
	"errors"
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
	p := params.withDefaults()
	info := workflow.GetInfo(ctx)
	start := info.WorkflowStartTime
	st := &RetrainState{
		Stage:     StageCollecting,
		Candidate: versionName(start, info.WorkflowExecution.RunID),
		Reason:    p.Reason,
		Window:    Window{FromMs: start.Add(-p.TrainingWindow).UnixMilli(), ToMs: start.UnixMilli()},
	}
	if err := workflow.SetQueryHandler(ctx, QueryState, func() (*RetrainState, error) { return st, nil }); err != nil {
		return nil, err
	}
	stage := func(s string) {
		st.Stage = s
		workflow.SetCurrentDetails(ctx, fmt.Sprintf("**%s** · candidate `%s` · %s", s, st.Candidate, st.Reason))
	}
	stage(StageCollecting)
	if err := p.Validate(); err != nil {
		st.Error = err.Error()
		return st, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeBadInput, nil)
	}

	// Signals: promote-now ends the observation; abort cancels the running
	// step (workCtx) and is acted on between steps.
	workCtx, cancelWork := workflow.WithCancel(ctx)
	promoteCh := workflow.GetSignalChannel(ctx, SignalPromoteNow)
	abortCh := workflow.GetSignalChannel(ctx, SignalAbort)
	workflow.Go(ctx, func(ctx workflow.Context) {
		for {
			sel := workflow.NewSelector(ctx)
			sel.AddReceive(promoteCh, func(c workflow.ReceiveChannel, _ bool) {
				c.Receive(ctx, nil)
				st.PromoteNow = true
			})
			sel.AddReceive(abortCh, func(c workflow.ReceiveChannel, _ bool) {
				var v any
				c.Receive(ctx, &v)
				if st.AbortReason == "" {
					st.AbortReason = "abort signal"
					if s, ok := v.(string); ok && s != "" {
						st.AbortReason = s
					}
				}
				cancelWork()
			})
			sel.Select(ctx)
		}
	})
	aborted := func() bool { return st.AbortReason != "" }
	finish := func(outcome, serving string) (*RetrainState, error) {
		st.Outcome, st.Serving = outcome, serving
		stage(StageDone)
		return st, nil
	}
	failed := func(err error) (*RetrainState, error) {
		if aborted() {
			return finish(OutcomeAborted, st.Previous)
		}
		var ae *temporal.ApplicationError
		if errors.As(err, &ae) && ae.Type() == ErrTypeNoData {
			st.Gate = ae.Message()
			return finish(OutcomeSkipped, st.Previous)
		}
		st.Error = err.Error()
		return st, err
	}

	// Steps 1–6 pass files, so they run in one session: on one worker.
	sctx, err := workflow.CreateSession(workCtx, &workflow.SessionOptions{
		CreationTimeout:  10 * time.Minute,
		ExecutionTimeout: 12 * time.Hour,
		HeartbeatTimeout: time.Minute,
	})
	if err != nil {
		return failed(err)
	}
	sessionOpen := true
	closeSession := func() {
		if sessionOpen {
			workflow.CompleteSession(sctx)
			sessionOpen = false
		}
	}
	defer closeSession()
	long := func(summary string, timeout time.Duration) workflow.Context {
		return workflow.WithActivityOptions(sctx, workflow.ActivityOptions{
			StartToCloseTimeout: timeout,
			HeartbeatTimeout:    time.Minute,
			RetryPolicy:         retrySlow,
			Summary:             summary,
		})
	}

	var col CollectOutput
	if err := workflow.ExecuteActivity(long("read the training window from Kafka", 2*time.Hour), a.CollectWindow,
		CollectInput{Version: st.Candidate, Window: st.Window}).Get(sctx, &col); err != nil {
		return failed(err)
	}
	st.Data = &col
	if col.Events == 0 {
		st.Gate = "no events in the training window " + st.Window.String()
		return finish(OutcomeSkipped, "")
	}

	stage(StageTraining)
	var tr TrainOutput
	if err := workflow.ExecuteActivity(long("train the candidate", 6*time.Hour), a.TrainCandidate,
		TrainInput{Version: st.Candidate, EventsFile: col.EventsFile, HoldoutFraction: p.HoldoutFraction}).Get(sctx, &tr); err != nil {
		return failed(err)
	}
	st.Training = &tr

	stage(StageExporting)
	var ex ExportOutput
	if err := workflow.ExecuteActivity(long("export the candidate to ONNX", 30*time.Minute), a.ExportONNX,
		ExportInput{ModelDir: tr.ModelDir}).Get(sctx, &ex); err != nil {
		return failed(err)
	}

	stage(StageEvaluating)
	var ev EvaluateOutput
	if err := workflow.ExecuteActivity(long("evaluate candidate and current version on the holdout", 2*time.Hour), a.EvaluateHoldout,
		EvaluateInput{ModelDir: tr.ModelDir, HoldoutFile: tr.HoldoutFile}).Get(sctx, &ev); err != nil {
		return failed(err)
	}
	st.Previous, st.Holdout = ev.Current, &ev.Metrics

	stage(StageProfiling)
	var ref ReferenceOutput
	if err := workflow.ExecuteActivity(long("build the drift reference profiles", time.Hour), a.BuildReference,
		ReferenceInput{ModelDir: tr.ModelDir, EventsFile: col.EventsFile, WindowsFile: col.WindowsFile, HoldoutFile: tr.HoldoutFile}).Get(sctx, &ref); err != nil {
		return failed(err)
	}

	stage(StageRegistering)
	var reg RegisterOutput
	if err := workflow.ExecuteActivity(long("register the candidate", 5*time.Minute), a.RegisterCandidate, RegisterInput{
		Version: st.Candidate, ModelDir: tr.ModelDir, ONNXFile: ex.ONNXFile, ReferenceFile: ref.ReferenceFile,
		Holdout: ev.Metrics, Reason: "retrain: " + p.Reason,
	}).Get(sctx, &reg); err != nil {
		return failed(err)
	}
	// The registry holds the version now; its files are no longer needed.
	cleanCtx := workflow.WithActivityOptions(sctx, workflow.ActivityOptions{StartToCloseTimeout: 5 * time.Minute, RetryPolicy: retryQuick})
	if err := workflow.ExecuteActivity(cleanCtx, a.CleanWorkDir, st.Candidate).Get(sctx, nil); err != nil {
		workflow.GetLogger(ctx).Warn("cannot clean the work directory", "version", st.Candidate, "err", err)
	}
	closeSession()

	stage(StageGate)
	ok, why := gate(&ev, p)
	st.Gate = why
	if !ok {
		return finish(OutcomeRejected, ev.Current)
	}
	if aborted() {
		return finish(OutcomeAborted, ev.Current)
	}

	stage(StagePromoting)
	quick := func(ctx workflow.Context, summary string) workflow.Context {
		return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			StartToCloseTimeout: 2 * time.Minute,
			RetryPolicy:         retryQuick,
			Summary:             summary,
		})
	}
	rolledBack := false
	rollback := func(ctx workflow.Context, reason, trigger string) (*RollbackOutput, error) {
		stage(StageRollingBack)
		var rb RollbackOutput
		err := workflow.ExecuteActivity(quick(ctx, "roll back "+st.Candidate), a.RollbackModel,
			RollbackInput{Version: st.Candidate, Reason: reason, Trigger: trigger}).Get(ctx, &rb)
		if err == nil {
			rolledBack = true
		}
		return &rb, err
	}
	var pr PromoteOutput
	if err := workflow.ExecuteActivity(quick(workCtx, "promote "+st.Candidate), a.PromoteCandidate,
		PromoteInput{Version: st.Candidate, Reason: "retrain: " + why}).Get(workCtx, &pr); err != nil {
		if !aborted() {
			return failed(err)
		}
		// The promotion was cancelled mid-way and may have happened: undo it
		// if so (RollbackModel changes nothing unless the candidate serves).
		rb, err := rollback(ctx, "retrain aborted: "+st.AbortReason, "abort")
		if err != nil {
			st.Error = err.Error()
			return st, err
		}
		return finish(OutcomeAborted, rb.Serving)
	}
	st.Previous, st.PromotedAt = pr.Previous, pr.PromotedAt

	// The compensation of the promotion, for a run that fails or is
	// cancelled from here on: serve the previous version again. It runs on a
	// disconnected context, so a cancelled run still rolls back.
	defer func() {
		if err == nil || rolledBack {
			return
		}
		dctx, _ := workflow.NewDisconnectedContext(ctx)
		if _, rerr := rollback(dctx, fmt.Sprintf("retrain %s did not finish: %v", st.Candidate, err), "abort"); rerr != nil {
			err = errors.Join(err, fmt.Errorf("cannot roll back %s: %w", st.Candidate, rerr))
		}
		st.Error = err.Error()
	}()

	stage(StageObserving)
	now := workflow.Now(ctx)
	st.ObserveUntil = now.Add(p.ObservationPeriod)
	if _, err := workflow.AwaitWithOptions(ctx, workflow.AwaitOptions{
		Timeout:      p.ObservationPeriod,
		TimerOptions: workflow.TimerOptions{Summary: "observe " + st.Candidate},
	}, func() bool { return st.PromoteNow || aborted() }); err != nil {
		st.Error = err.Error()
		return st, err
	}
	if aborted() {
		rb, err := rollback(ctx, "retrain aborted: "+st.AbortReason, "abort")
		if err != nil {
			st.Error = err.Error()
			return st, err
		}
		return finish(OutcomeAborted, rb.Serving)
	}
	if st.PromoteNow {
		st.Gate += "; kept by the promote-now signal without the online check"
		return finish(OutcomePromoted, st.Candidate)
	}

	stage(StageChecking)
	now = workflow.Now(ctx)
	var online DriftReport
	if err := workflow.ExecuteActivity(quick(ctx, "check the live traffic of "+st.Candidate), a.MeasureDrift, MeasureInput{
		Version:    st.Candidate,
		FromMinute: drift.LiveMinute(st.PromotedAt),
		ToMinute:   drift.LiveMinute(now),
		MinSamples: p.MinSamples,
	}).Get(ctx, &online); err != nil {
		st.Error = err.Error()
		return st, err
	}
	st.Online = &online
	if online.Version != st.Candidate {
		return finish(OutcomePromoted, online.Version) // someone else moved on; nothing to undo
	}
	if len(online.Alerting) > 0 {
		rb, err := rollback(ctx, fmt.Sprintf("retrain %s: live traffic drifted during observation: %s", st.Candidate, online.Summary()), "retrain")
		if err != nil {
			st.Error = err.Error()
			return st, err
		}
		return finish(OutcomeRolledBack, rb.Serving)
	}
	return finish(OutcomePromoted, st.Candidate)
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
	to := drift.LiveMinute(now)
	from := to - max(1, int64(p.Window/time.Minute)) + 1
	quick := func(summary string) workflow.Context {
		return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			StartToCloseTimeout: 2 * time.Minute,
			RetryPolicy:         retryQuick,
			Summary:             summary,
		})
	}
	var rep DriftReport
	if err := workflow.ExecuteActivity(quick(fmt.Sprintf("compare the last %v of live profiles", p.Window)), a.MeasureDrift,
		MeasureInput{FromMinute: from, ToMinute: to, MinSamples: p.MinSamples}).Get(ctx, &rep); err != nil {
		return nil, err
	}
	res.Report = &rep
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
		reason := fmt.Sprintf("drift %v after its promotion: %s", now.Sub(rep.PromotedAt).Round(time.Second), summary)
		var rb RollbackOutput
		if err := workflow.ExecuteActivity(quick("roll back "+rep.Version), a.RollbackModel,
			RollbackInput{Version: rep.Version, Reason: reason, Trigger: "drift"}).Get(ctx, &rb); err != nil {
			return nil, err
		}
		res.Rollback = &rb
		switch {
		case rb.RolledBack:
			res.Action, res.Detail = ActionRolledBack, fmt.Sprintf("rolled back %s to %s: %s", rep.Version, rb.Serving, reason)
			return res, nil
		case rb.Serving != rep.Version:
			res.Action, res.Detail = ActionRollbackMissed, rb.Note
			return res, nil
		}
		// Nothing served before it: retraining is all that is left.
	}
	retrain := p.Retrain
	retrain.Reason = "drift on " + rep.Version + ": " + summary
	var sr StartRetrainOutput
	if err := workflow.ExecuteActivity(quick("start a retrain"), a.StartRetrain, StartRetrainInput{Params: retrain}).Get(ctx, &sr); err != nil {
		return nil, err
	}
	res.Retrain = &sr
	if sr.Started {
		res.Action, res.Detail = ActionRetrainStarted, fmt.Sprintf("started %s (%s): %s", sr.WorkflowID, sr.RunID, summary)
	} else {
		res.Action, res.Detail = ActionRetrainRunning, fmt.Sprintf("%s (%s) is already running: %s", sr.WorkflowID, sr.RunID, summary)
	}
	return res, nil
}
