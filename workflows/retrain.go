package workflows

import (
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/clickrec/clickrec/drift"
)

// The steps of RetrainModel. Each step is workflow code: deterministic,
// on workflow.Context, issuing its commands in the order RetrainModel always
// did, so recorded histories replay (replay_test.go).
//
// A step that ends the run records the outcome (finish) and returns nil, or
// records the failure (fail) and returns it; RetrainModel returns the state
// as soon as a step ended the run or failed.

// retrain is one RetrainModel run: its parameters, the state the "state"
// query returns, and the contexts its steps run on.
type retrain struct {
	ctx        workflow.Context // the run's context
	work       workflow.Context // ctx, cancelled by the abort signal (see handleSignals)
	cancelWork workflow.CancelFunc
	p          RetrainParams
	st         *RetrainState
	rolledBack bool // the promotion has been undone
}

// newRetrain sets up the state of a run: the candidate's version name and
// training window come from the run's start time and id.
func newRetrain(ctx workflow.Context, params RetrainParams) *retrain {
	p := params.withDefaults()
	info := workflow.GetInfo(ctx)
	start := info.WorkflowStartTime
	return &retrain{ctx: ctx, p: p, st: &RetrainState{
		Stage:     StageCollecting,
		Candidate: versionName(start, info.WorkflowExecution.RunID),
		Reason:    p.Reason,
		Window:    Window{FromMs: start.Add(-p.TrainingWindow).UnixMilli(), ToMs: start.UnixMilli()},
	}}
}

// stage records the stage the run is in, for the query and the UI.
func (r *retrain) stage(s string) {
	r.st.Stage = s
	workflow.SetCurrentDetails(r.ctx, fmt.Sprintf("**%s** · candidate `%s` · %s", s, r.st.Candidate, r.st.Reason))
}

// validate rejects parameters no retry can fix, as a non-retryable BadInput error.
func (r *retrain) validate() error {
	if err := r.p.Validate(); err != nil {
		r.st.Error = err.Error()
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeBadInput, nil)
	}
	return nil
}

// handleSignals receives the signals for the rest of the run: promote-now
// marks the state (it ends the observation); abort records its reason and
// cancels the running step through r.work, which it creates. Both are acted
// on between steps.
func (r *retrain) handleSignals() {
	r.work, r.cancelWork = workflow.WithCancel(r.ctx)
	promoteCh := workflow.GetSignalChannel(r.ctx, SignalPromoteNow)
	abortCh := workflow.GetSignalChannel(r.ctx, SignalAbort)
	workflow.Go(r.ctx, func(ctx workflow.Context) {
		for {
			sel := workflow.NewSelector(ctx)
			sel.AddReceive(promoteCh, func(c workflow.ReceiveChannel, _ bool) {
				c.Receive(ctx, nil)
				r.st.PromoteNow = true
			})
			sel.AddReceive(abortCh, func(c workflow.ReceiveChannel, _ bool) {
				var v any
				c.Receive(ctx, &v)
				if r.st.AbortReason == "" {
					r.st.AbortReason = "abort signal"
					if s, ok := v.(string); ok && s != "" {
						r.st.AbortReason = s
					}
				}
				r.cancelWork()
			})
			sel.Select(ctx)
		}
	})
}

// aborted reports whether the abort signal arrived.
func (r *retrain) aborted() bool { return r.st.AbortReason != "" }

// finished reports whether a step ended the run with an outcome.
func (r *retrain) finished() bool { return r.st.Outcome != "" }

// finish ends the run with outcome, serving the given version.
func (r *retrain) finish(outcome, serving string) error {
	r.st.Outcome, r.st.Serving = outcome, serving
	r.stage(StageDone)
	return nil
}

// fail records err as the run's error and returns it.
func (r *retrain) fail(err error) error {
	r.st.Error = err.Error()
	return err
}

// failed handles a failed step before the promotion: an aborted run ends
// aborted, a NoData error ends it skipped, anything else fails it.
func (r *retrain) failed(err error) error {
	if r.aborted() {
		return r.finish(OutcomeAborted, r.st.Previous)
	}
	var ae *temporal.ApplicationError
	if errors.As(err, &ae) && ae.Type() == ErrTypeNoData {
		r.st.Gate = ae.Message()
		return r.finish(OutcomeSkipped, r.st.Previous)
	}
	return r.fail(err)
}

// buildCandidate runs steps 1–6 in one session, on one worker, since they
// pass files: collect, train, export, evaluate, profile, register. It
// returns the holdout evaluation the gate decides on; a window without
// events or a failed step ends the run instead.
func (r *retrain) buildCandidate() (*EvaluateOutput, error) {
	sctx, err := workflow.CreateSession(r.work, &workflow.SessionOptions{
		CreationTimeout:  10 * time.Minute,
		ExecutionTimeout: 12 * time.Hour,
		HeartbeatTimeout: time.Minute,
	})
	if err != nil {
		return nil, r.failed(err)
	}
	defer workflow.CompleteSession(sctx)

	col, err := r.collect(sctx)
	if err != nil {
		return nil, r.failed(err)
	}
	if col.Events == 0 {
		r.st.Gate = "no events in the training window " + r.st.Window.String()
		return nil, r.finish(OutcomeSkipped, "")
	}
	tr, err := r.train(sctx, col)
	if err != nil {
		return nil, r.failed(err)
	}
	ex, err := r.export(sctx, tr)
	if err != nil {
		return nil, r.failed(err)
	}
	ev, err := r.evaluate(sctx, tr)
	if err != nil {
		return nil, r.failed(err)
	}
	ref, err := r.profile(sctx, col, tr)
	if err != nil {
		return nil, r.failed(err)
	}
	if err := r.register(sctx, tr, ex, ev, ref); err != nil {
		return nil, r.failed(err)
	}
	r.cleanWorkDir(sctx)
	return ev, nil
}

// longActivity is the context of a long, file-producing session step.
func longActivity(sctx workflow.Context, summary string, timeout time.Duration) workflow.Context {
	return workflow.WithActivityOptions(sctx, workflow.ActivityOptions{
		StartToCloseTimeout: timeout,
		HeartbeatTimeout:    time.Minute,
		RetryPolicy:         retrySlow,
		Summary:             summary,
	})
}

// collect reads the training window from Kafka into the work directory
// (step 1).
func (r *retrain) collect(sctx workflow.Context) (*CollectOutput, error) {
	var col CollectOutput
	if err := workflow.ExecuteActivity(longActivity(sctx, "read the training window from Kafka", 2*time.Hour), a.CollectWindow,
		CollectInput{Version: r.st.Candidate, Window: r.st.Window}).Get(sctx, &col); err != nil {
		return nil, err
	}
	r.st.Data = &col
	return &col, nil
}

// train trains the candidate on all but the holdout (step 2).
func (r *retrain) train(sctx workflow.Context, col *CollectOutput) (*TrainOutput, error) {
	r.stage(StageTraining)
	var tr TrainOutput
	if err := workflow.ExecuteActivity(longActivity(sctx, "train the candidate", 6*time.Hour), a.TrainCandidate,
		TrainInput{Version: r.st.Candidate, EventsFile: col.EventsFile, HoldoutFraction: r.p.HoldoutFraction}).Get(sctx, &tr); err != nil {
		return nil, err
	}
	r.st.Training = &tr
	return &tr, nil
}

// export exports the candidate to ONNX (step 3).
func (r *retrain) export(sctx workflow.Context, tr *TrainOutput) (*ExportOutput, error) {
	r.stage(StageExporting)
	var ex ExportOutput
	if err := workflow.ExecuteActivity(longActivity(sctx, "export the candidate to ONNX", 30*time.Minute), a.ExportONNX,
		ExportInput{ModelDir: tr.ModelDir}).Get(sctx, &ex); err != nil {
		return nil, err
	}
	return &ex, nil
}

// evaluate measures the candidate and the current version on the holdout
// (step 4).
func (r *retrain) evaluate(sctx workflow.Context, tr *TrainOutput) (*EvaluateOutput, error) {
	r.stage(StageEvaluating)
	var ev EvaluateOutput
	if err := workflow.ExecuteActivity(longActivity(sctx, "evaluate candidate and current version on the holdout", 2*time.Hour), a.EvaluateHoldout,
		EvaluateInput{ModelDir: tr.ModelDir, HoldoutFile: tr.HoldoutFile}).Get(sctx, &ev); err != nil {
		return nil, err
	}
	r.st.Previous, r.st.Holdout = ev.Current, &ev.Metrics
	return &ev, nil
}

// profile builds the drift reference profiles of the candidate (step 5).
func (r *retrain) profile(sctx workflow.Context, col *CollectOutput, tr *TrainOutput) (*ReferenceOutput, error) {
	r.stage(StageProfiling)
	var ref ReferenceOutput
	if err := workflow.ExecuteActivity(longActivity(sctx, "build the drift reference profiles", time.Hour), a.BuildReference,
		ReferenceInput{ModelDir: tr.ModelDir, EventsFile: col.EventsFile, WindowsFile: col.WindowsFile, HoldoutFile: tr.HoldoutFile}).Get(sctx, &ref); err != nil {
		return nil, err
	}
	return &ref, nil
}

// register stores the candidate in the registry without serving it (step 6).
func (r *retrain) register(sctx workflow.Context, tr *TrainOutput, ex *ExportOutput, ev *EvaluateOutput, ref *ReferenceOutput) error {
	r.stage(StageRegistering)
	var reg RegisterOutput
	return workflow.ExecuteActivity(longActivity(sctx, "register the candidate", 5*time.Minute), a.RegisterCandidate, RegisterInput{
		Version: r.st.Candidate, ModelDir: tr.ModelDir, ONNXFile: ex.ONNXFile, ReferenceFile: ref.ReferenceFile,
		Holdout: ev.Metrics, Reason: "retrain: " + r.p.Reason,
	}).Get(sctx, &reg)
}

// cleanWorkDir removes the candidate's files, which the registry holds now;
// failing to is only logged.
func (r *retrain) cleanWorkDir(sctx workflow.Context) {
	cleanCtx := workflow.WithActivityOptions(sctx, workflow.ActivityOptions{StartToCloseTimeout: 5 * time.Minute, RetryPolicy: retryQuick})
	if err := workflow.ExecuteActivity(cleanCtx, a.CleanWorkDir, r.st.Candidate).Get(sctx, nil); err != nil {
		workflow.GetLogger(r.ctx).Warn("cannot clean the work directory", "version", r.st.Candidate, "err", err)
	}
}

// applyGate records the gate's verdict on the evaluation (step 7) and ends
// the run if the candidate is rejected, or if the run was aborted before
// the promotion.
func (r *retrain) applyGate(ev *EvaluateOutput) {
	r.stage(StageGate)
	ok, why := gate(ev, r.p)
	r.st.Gate = why
	if !ok {
		r.finish(OutcomeRejected, ev.Current)
		return
	}
	if r.aborted() {
		r.finish(OutcomeAborted, ev.Current)
	}
}

// promote serves the candidate (step 8). An abort that cancels the
// promotion midway undoes whatever of it happened and ends the run.
func (r *retrain) promote() error {
	r.stage(StagePromoting)
	var pr PromoteOutput
	if err := workflow.ExecuteActivity(quickActivity(r.work, "promote "+r.st.Candidate), a.PromoteCandidate,
		PromoteInput{Version: r.st.Candidate, Reason: "retrain: " + r.st.Gate}).Get(r.work, &pr); err != nil {
		if !r.aborted() {
			return r.failed(err)
		}
		// The promotion was cancelled mid-way and may have happened: undo it
		// if so (RollbackModel changes nothing unless the candidate serves).
		return r.rollBackAndFinish("retrain aborted: "+r.st.AbortReason, "abort", OutcomeAborted)
	}
	r.st.Previous, r.st.PromotedAt = pr.Previous, pr.PromotedAt
	return nil
}

// observe waits ObservationPeriod after the promotion. The promote-now
// signal ends the wait and the run, keeping the candidate; abort ends both
// and rolls back.
func (r *retrain) observe() error {
	r.stage(StageObserving)
	now := workflow.Now(r.ctx)
	r.st.ObserveUntil = now.Add(r.p.ObservationPeriod)
	if _, err := workflow.AwaitWithOptions(r.ctx, workflow.AwaitOptions{
		Timeout:      r.p.ObservationPeriod,
		TimerOptions: workflow.TimerOptions{Summary: "observe " + r.st.Candidate},
	}, func() bool { return r.st.PromoteNow || r.aborted() }); err != nil {
		return r.fail(err)
	}
	if r.aborted() {
		return r.rollBackAndFinish("retrain aborted: "+r.st.AbortReason, "abort", OutcomeAborted)
	}
	if r.st.PromoteNow {
		r.st.Gate += "; kept by the promote-now signal without the online check"
		return r.finish(OutcomePromoted, r.st.Candidate)
	}
	return nil
}

// checkOnline compares the candidate's live traffic since its promotion
// with its reference profiles and ends the run: promoted, or rolled back
// if it drifted.
func (r *retrain) checkOnline() error {
	r.stage(StageChecking)
	now := workflow.Now(r.ctx)
	var online DriftReport
	if err := workflow.ExecuteActivity(quickActivity(r.ctx, "check the live traffic of "+r.st.Candidate), a.MeasureDrift, MeasureInput{
		Version:    r.st.Candidate,
		FromMinute: drift.LiveMinute(r.st.PromotedAt),
		ToMinute:   drift.LiveMinute(now),
		MinSamples: r.p.MinSamples,
	}).Get(r.ctx, &online); err != nil {
		return r.fail(err)
	}
	r.st.Online = &online
	if online.Version != r.st.Candidate {
		return r.finish(OutcomePromoted, online.Version) // someone else moved on; nothing to undo
	}
	if len(online.Alerting) > 0 {
		return r.rollBackAndFinish(fmt.Sprintf("retrain %s: live traffic drifted during observation: %s", r.st.Candidate, online.Summary()), "retrain", OutcomeRolledBack)
	}
	return r.finish(OutcomePromoted, r.st.Candidate)
}

// rollback serves the version before the candidate again (RollbackModel,
// a no-op unless the candidate serves), on ctx.
func (r *retrain) rollback(ctx workflow.Context, reason, trigger string) (*RollbackOutput, error) {
	r.stage(StageRollingBack)
	var rb RollbackOutput
	err := workflow.ExecuteActivity(quickActivity(ctx, "roll back "+r.st.Candidate), a.RollbackModel,
		RollbackInput{Version: r.st.Candidate, Reason: reason, Trigger: trigger}).Get(ctx, &rb)
	if err == nil {
		r.rolledBack = true
	}
	return &rb, err
}

// rollBackAndFinish rolls back and ends the run with outcome, or fails it
// if the rollback fails.
func (r *retrain) rollBackAndFinish(reason, trigger, outcome string) error {
	rb, err := r.rollback(r.ctx, reason, trigger)
	if err != nil {
		return r.fail(err)
	}
	return r.finish(outcome, rb.Serving)
}

// compensate is the compensation of the promotion, deferred once it
// happened: if the run ends with *err (failed or cancelled) and has not
// rolled back, the previous version serves again. It runs on a disconnected
// context, so a cancelled run still rolls back; a failed rollback joins *err.
func (r *retrain) compensate(err *error) {
	if *err == nil || r.rolledBack {
		return
	}
	dctx, _ := workflow.NewDisconnectedContext(r.ctx)
	if _, rerr := r.rollback(dctx, fmt.Sprintf("retrain %s did not finish: %v", r.st.Candidate, *err), "abort"); rerr != nil {
		*err = errors.Join(*err, fmt.Errorf("cannot roll back %s: %w", r.st.Candidate, rerr))
	}
	r.st.Error = (*err).Error()
}
