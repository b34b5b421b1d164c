// Package workflows is clickrec's slow side on Temporal: RetrainModel (nightly
// retraining to ONNX with an offline gate, a promotion, an observation period
// and a rollback as its compensation), RefreshPopularity (the cold-start
// top-10 tables, every few minutes) and CheckDrift (PSI of live traffic
// against the served model's reference profiles, every 15 minutes, rolling
// back a fresh promotion or starting a retrain when a feature drifts).
//
// Workflows only decide; activities (methods of Activities) touch Kafka,
// Redis, the model registry and the local work directory. Large data — the
// training window, the model, the holdout — moves between activities as
// files in the work directory (the file-passing activities of one retrain run
// in one Temporal session, so on one worker) or as Redis keys, never as
// workflow payloads. Schedules (EnsureSchedules), not cron loops, start the
// workflows; `clickrec worker` runs them and `clickrec workflows` triggers
// them by hand. README.md in this folder says what each workflow shows in
// the Temporal UI.
package workflows

import (
	"fmt"
	"strings"
	"time"

	"github.com/clickrec/clickrec/drift"
)

// TaskQueue is the Temporal task queue of the clickrec worker; workflows and
// activities share it.
const TaskQueue = "clickrec"

// RetrainWorkflowID is the fixed workflow id of a retrain started by hand
// (`clickrec workflows retrain`) or by CheckDrift. With the id conflict policy
// Fail, the server refuses a second run while one is running, so at most one
// such retrain runs at a time.
const RetrainWorkflowID = "clickrec-retrain"

// Query and signal names, usable from the Temporal UI and CLI.
const (
	// QueryState returns a RetrainState (RetrainModel), or the result so far
	// of RefreshPopularity and CheckDrift.
	QueryState = "state"
	// SignalPromoteNow ends RetrainModel's observation period at once and
	// keeps the promoted candidate without the online check. Sent before the
	// observation it makes the observation zero-length; it never overrides
	// the offline gate.
	SignalPromoteNow = "promote-now"
	// SignalAbort stops RetrainModel: a running step is cancelled, nothing
	// more is promoted, and a candidate already promoted is rolled back. The
	// optional payload is a reason string.
	SignalAbort = "abort"
)

// Error types of non-retryable application errors (temporal.ApplicationError.Type).
const (
	// ErrTypeBadInput marks parameters or files that no retry can fix.
	ErrTypeBadInput = "BadInput"
	// ErrTypeNoData marks a window without usable events.
	ErrTypeNoData = "NoData"
)

// Stages of RetrainModel, in order, as RetrainState.Stage shows them.
const (
	StageCollecting  = "collecting"  // reading the training window from Kafka
	StageTraining    = "training"    // model.Train on all but the holdout
	StageExporting   = "exporting"   // ONNX export
	StageEvaluating  = "evaluating"  // candidate and current on the holdout
	StageProfiling   = "profiling"   // drift reference profiles
	StageRegistering = "registering" // registry.Register
	StageGate        = "gate"        // offline comparison
	StagePromoting   = "promoting"   // registry.Promote
	StageObserving   = "observing"   // waiting, signals accepted
	StageChecking    = "checking"    // online drift check of the new version
	StageRollingBack = "rolling_back"
	StageDone        = "done"
)

// Outcomes of RetrainModel.
const (
	OutcomePromoted   = "promoted"    // the candidate serves and passed observation
	OutcomeRejected   = "rejected"    // the gate kept the current version
	OutcomeRolledBack = "rolled_back" // promoted, then rolled back
	OutcomeAborted    = "aborted"     // stopped by the abort signal
	OutcomeSkipped    = "skipped"     // nothing to train on
)

// Actions of CheckDrift.
const (
	ActionNone           = "none"             // no feature alerts (or no model / no data)
	ActionRolledBack     = "rolled_back"      // a recent promotion was undone
	ActionRollbackMissed = "rollback_skipped" // the drifting version no longer serves, or has no predecessor
	ActionRetrainStarted = "retrain_started"  // a RetrainModel run was started
	ActionRetrainRunning = "retrain_running"  // one was already running; none started
)

// Metric names of holdout evaluations (registry Metadata.Holdout keys).
const (
	MetricHR20   = "hr@20"
	MetricMRR20  = "mrr@20"
	MetricHR10   = "hr@10"
	MetricNDCG10 = "ndcg@10"
)

// RetrainParams parameterise RetrainModel. Zero fields take the defaults of
// DefaultRetrainParams.
type RetrainParams struct {
	// TrainingWindow is how far back from the workflow's start events are
	// read from user_events (by record timestamp).
	TrainingWindow time.Duration `json:"training_window"`
	// HoldoutFraction is the share of sessions, the most recent by start
	// time, kept out of training to compare candidate and current.
	HoldoutFraction float64 `json:"holdout_fraction"`
	// Tolerance is the relative drop of HR@20 and MRR@20 the gate accepts:
	// the candidate is promoted if both are at least (1 − Tolerance) × the
	// current version's on the same holdout. (Zero means the default; a
	// strict gate is a tiny value such as 1e-9.)
	Tolerance float64 `json:"tolerance"`
	// MinHoldoutCases is the smallest holdout (prefix → next item cases) on
	// which the gate trusts a comparison; with fewer it keeps the current
	// version (a first model is promoted regardless).
	MinHoldoutCases int `json:"min_holdout_cases"`
	// ObservationPeriod is how long a promoted candidate is watched before
	// the online check decides whether it stays.
	ObservationPeriod time.Duration `json:"observation_period"`
	// MinSamples is the minimum number of live observations per feature for
	// the online check (drift.Config.MinSamples).
	MinSamples uint64 `json:"min_samples"`
	// Reason says why the run started (recorded in the registry history).
	Reason string `json:"reason,omitempty"`
}

// DefaultRetrainParams returns the defaults: a day of events, 10 % holdout,
// 2 % tolerance, 200 holdout cases, one hour of observation, 1,000 samples.
func DefaultRetrainParams() RetrainParams {
	return RetrainParams{
		TrainingWindow:    24 * time.Hour,
		HoldoutFraction:   0.1,
		Tolerance:         0.02,
		MinHoldoutCases:   200,
		ObservationPeriod: time.Hour,
		MinSamples:        drift.DefaultMinSamples,
		Reason:            "scheduled",
	}
}

func (p RetrainParams) withDefaults() RetrainParams {
	d := DefaultRetrainParams()
	if p.TrainingWindow <= 0 {
		p.TrainingWindow = d.TrainingWindow
	}
	if p.HoldoutFraction <= 0 {
		p.HoldoutFraction = d.HoldoutFraction
	}
	if p.Tolerance <= 0 {
		p.Tolerance = d.Tolerance
	}
	if p.MinHoldoutCases <= 0 {
		p.MinHoldoutCases = d.MinHoldoutCases
	}
	if p.ObservationPeriod <= 0 {
		p.ObservationPeriod = d.ObservationPeriod
	}
	if p.MinSamples == 0 {
		p.MinSamples = d.MinSamples
	}
	if p.Reason == "" {
		p.Reason = d.Reason
	}
	return p
}

// Validate reports parameters no run can succeed with.
func (p RetrainParams) Validate() error {
	switch {
	case p.HoldoutFraction >= 0.5:
		return fmt.Errorf("holdout fraction %v must be below 0.5", p.HoldoutFraction)
	case p.Tolerance >= 1:
		return fmt.Errorf("tolerance %v must be below 1", p.Tolerance)
	case p.TrainingWindow < time.Minute:
		return fmt.Errorf("training window %v is shorter than a minute", p.TrainingWindow)
	}
	return nil
}

// Window is a span of time in Unix milliseconds, [FromMs, ToMs).
type Window struct {
	FromMs int64 `json:"from_ms"`
	ToMs   int64 `json:"to_ms"`
}

// String formats the window as two RFC 3339 times.
func (w Window) String() string {
	return time.UnixMilli(w.FromMs).UTC().Format(time.RFC3339) + " – " + time.UnixMilli(w.ToMs).UTC().Format(time.RFC3339)
}

// HoldoutMetrics are the offline metrics of the candidate and of the version
// served when the run started, on the same holdout cases.
type HoldoutMetrics struct {
	Cases     int                `json:"cases"`
	Candidate map[string]float64 `json:"candidate"`
	Current   map[string]float64 `json:"current,omitempty"` // nil when nothing was served
}

// RetrainState is what RetrainModel's "state" query returns, and its result.
type RetrainState struct {
	Stage     string `json:"stage"`
	Outcome   string `json:"outcome,omitempty"`
	Candidate string `json:"candidate"`          // the version this run trains
	Previous  string `json:"previous,omitempty"` // the version served when the run started
	Serving   string `json:"serving,omitempty"`  // the version served when the run ended
	Reason    string `json:"reason"`
	Window    Window `json:"window"`
	// Data counts what was read and trained on.
	Data *CollectOutput `json:"data,omitempty"`
	// Training summarises the fit.
	Training *TrainOutput `json:"training,omitempty"`
	// Holdout are the gate's inputs; Gate its verdict.
	Holdout *HoldoutMetrics `json:"holdout,omitempty"`
	Gate    string          `json:"gate,omitempty"`
	// PromotedAt and ObserveUntil bound the observation period.
	PromotedAt   time.Time `json:"promoted_at,omitzero"`
	ObserveUntil time.Time `json:"observe_until,omitzero"`
	// Online is the drift check at the end of the observation period.
	Online *DriftReport `json:"online,omitempty"`
	// Signals received.
	PromoteNow  bool   `json:"promote_now,omitempty"`
	AbortReason string `json:"abort_reason,omitempty"`
	// Error is the last step's error, if the run failed.
	Error string `json:"error,omitempty"`
}

// RefreshParams parameterise RefreshPopularity. Zero fields take the
// defaults of DefaultRefreshParams.
type RefreshParams struct {
	// Window is how far back events are read from user_events.
	Window time.Duration `json:"window"`
	// HalfLife is the age at which an event counts half: an event of age a
	// counts 2^(−a/HalfLife).
	HalfLife time.Duration `json:"half_life"`
	// TopK is the length of every list (global and per category).
	TopK int `json:"top_k"`
}

// DefaultRefreshParams returns the defaults: the last hour, a 15-minute
// half-life, top 10.
func DefaultRefreshParams() RefreshParams {
	return RefreshParams{Window: time.Hour, HalfLife: 15 * time.Minute, TopK: 10}
}

func (p RefreshParams) withDefaults() RefreshParams {
	d := DefaultRefreshParams()
	if p.Window <= 0 {
		p.Window = d.Window
	}
	if p.HalfLife <= 0 {
		p.HalfLife = d.HalfLife
	}
	if p.TopK <= 0 {
		p.TopK = d.TopK
	}
	return p
}

// DriftParams parameterise CheckDrift. Zero fields take the defaults of
// DefaultDriftParams.
type DriftParams struct {
	// Window is how many minutes of live profiles are merged (the keys
	// drift:live:<minute>:<instance> of the last Window, across instances).
	Window time.Duration `json:"window"`
	// RecentPromotion: a drifting version promoted less than this long ago is
	// rolled back; an older one is retrained instead.
	RecentPromotion time.Duration `json:"recent_promotion"`
	// MinSamples is the minimum number of observations per side
	// (drift.Config.MinSamples).
	MinSamples uint64 `json:"min_samples"`
	// Retrain parameterises the RetrainModel run CheckDrift may start.
	Retrain RetrainParams `json:"retrain"`
}

// DefaultDriftParams returns the defaults: 15 minutes of live profiles, a
// promotion within the last hour is rolled back, 1,000 samples.
func DefaultDriftParams() DriftParams {
	return DriftParams{Window: 15 * time.Minute, RecentPromotion: time.Hour, MinSamples: drift.DefaultMinSamples}
}

func (p DriftParams) withDefaults() DriftParams {
	d := DefaultDriftParams()
	if p.Window <= 0 {
		p.Window = d.Window
	}
	if p.RecentPromotion <= 0 {
		p.RecentPromotion = d.RecentPromotion
	}
	if p.MinSamples == 0 {
		p.MinSamples = d.MinSamples
	}
	return p
}

// DriftResult is CheckDrift's result (and its "state" query).
type DriftResult struct {
	Report *DriftReport `json:"report,omitempty"`
	Action string       `json:"action"`
	// Detail explains the action: the drifting features and what was done.
	Detail string `json:"detail,omitempty"`
	// Rollback and Retrain are the outcomes of the action taken, if any.
	Rollback *RollbackOutput     `json:"rollback,omitempty"`
	Retrain  *StartRetrainOutput `json:"retrain,omitempty"`
}

// versionName is the registry version of a retrain run: its start time and
// the last 8 hex digits of its run id (the random part; version 7 run ids
// begin with the time), so every activity of the run, and every retry, names
// the same version, and two runs never do.
func versionName(start time.Time, runID string) string {
	id := strings.ReplaceAll(runID, "-", "")
	if len(id) > 8 {
		id = id[len(id)-8:]
	}
	return "v" + start.UTC().Format("20060102-150405") + "-" + id
}
