package workflows

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/clickrec/clickrec/drift"
	"github.com/clickrec/clickrec/model/registry"
)

// MeasureInput says which live profiles to compare with which reference.
type MeasureInput struct {
	// Version is the version expected to serve; "" means whichever serves.
	// If another version serves, nothing is compared (Note says so).
	Version string `json:"version,omitempty"`
	// FromMinute and ToMinute bound the unix minutes of the live profiles
	// merged, both included.
	FromMinute int64  `json:"from_minute"`
	ToMinute   int64  `json:"to_minute"`
	MinSamples uint64 `json:"min_samples"`
}

// DriftReport is a comparison of the served version's live traffic with
// its reference profiles.
type DriftReport struct {
	Version string `json:"version,omitempty"`
	// PromotedAt is when Version was promoted; zero if it came back by a
	// rollback (rolling back again would walk further back) or is unknown.
	PromotedAt time.Time `json:"promoted_at,omitzero"`
	FromMinute int64     `json:"from_minute"`
	ToMinute   int64     `json:"to_minute"`
	// Profiles is the number of live profiles merged (instances × minutes);
	// Skipped the number left out because they were counted against another
	// reference (another version, or a reference that changed).
	Profiles int `json:"profiles"`
	Skipped  int `json:"skipped,omitempty"`
	// Results are per feature, the most drifted first.
	Results []drift.Result `json:"results,omitempty"`
	// Alerting names the features with PSI > drift.AlertThreshold on enough data.
	Alerting []string `json:"alerting,omitempty"`
	// Note explains a report without results.
	Note string `json:"note,omitempty"`
}

// Worst returns the most drifted alerting result, nil if none alerts.
func (r *DriftReport) Worst() *drift.Result {
	for i := range r.Results {
		if r.Results[i].Alerting() {
			return &r.Results[i]
		}
	}
	return nil
}

// Summary is a one-line description of the alerting features, for reasons
// in the registry history: "category_mix PSI 0.462 (top bin c7 2.0% → 21.3%), …".
func (r *DriftReport) Summary() string {
	var parts []string
	for _, res := range r.Results {
		if !res.Alerting() {
			continue
		}
		s := fmt.Sprintf("%s PSI %.3f > %.2f", res.Feature, res.PSI, drift.AlertThreshold)
		if res.Top != nil {
			s += fmt.Sprintf(" (bin %s %.1f%% → %.1f%%)", res.Top.Bin, 100*res.Top.RefShare, 100*res.Top.LiveShare)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// MeasureDrift merges the live profiles the hot path instances published
// (drift.LiveKey: drift:live:<minute>:<instance>) for the minutes asked,
// skipping every profile set whose fingerprints do not match the served
// version's reference, compares the sum with the reference (registry
// metadata) and exports recsys_drift_psi{feature} for the features with
// enough data. It only reads, so retries are harmless.
func (a *Activities) MeasureDrift(ctx context.Context, in MeasureInput) (*DriftReport, error) {
	reg, err := a.registry()
	if err != nil {
		return nil, err
	}
	rep := &DriftReport{FromMinute: in.FromMinute, ToMinute: in.ToMinute}
	cur, err := reg.Current(ctx)
	if err != nil {
		return nil, err
	}
	rep.Version = cur
	switch {
	case cur == "":
		rep.Note = "no version serves"
		return rep, nil
	case in.Version != "" && cur != in.Version:
		rep.Note = fmt.Sprintf("%s no longer serves (%s does)", in.Version, cur)
		return rep, nil
	}
	ref, note, err := servedReference(ctx, reg, cur)
	if err != nil {
		return nil, err
	}
	if note != "" {
		rep.Note = note
		return rep, nil
	}
	if rep.PromotedAt, err = promotedAt(ctx, reg, cur); err != nil {
		return nil, err
	}
	live, profiles, skipped, err := a.mergeLive(ctx, ref, in.FromMinute, in.ToMinute)
	if err != nil {
		return nil, err
	}
	rep.Profiles, rep.Skipped = profiles, skipped
	results := drift.Config{MinSamples: in.MinSamples}.Compare(ref, live)
	rep.Results = drift.Worst(results)
	for _, r := range rep.Results {
		if r.Alerting() {
			rep.Alerting = append(rep.Alerting, r.Feature)
		}
	}
	a.Metrics.setDrift(rep, time.Now())
	return rep, nil
}

// servedReference returns the reference profiles of the served version,
// or a note saying why there are none to compare with.
func servedReference(ctx context.Context, reg *registry.Registry, version string) (ref drift.ReferenceSet, note string, err error) {
	md, err := reg.Meta(ctx, version)
	if err != nil {
		return nil, "", err
	}
	if len(md.Reference) == 0 {
		return nil, version + " has no reference profiles", nil
	}
	// Decoding validates the set against the features counted.
	if err := json.Unmarshal(md.Reference, &ref); err != nil {
		return nil, fmt.Sprintf("the reference profiles of %s are not usable: %v", version, err), nil
	}
	return ref, "", nil
}

// promotedAt is when version was promoted, from the registry history; zero
// if it serves again through a rollback (newer than its promotion), or
// neither is among the last 1,000 entries.
func promotedAt(ctx context.Context, reg *registry.Registry, version string) (time.Time, error) {
	hist, err := reg.History(ctx, 1000)
	if err != nil {
		return time.Time{}, err
	}
	for _, e := range hist {
		if e.Version == version && (e.Action == "promote" || e.Action == "rollback") {
			if e.Action == "promote" {
				return e.Time, nil
			}
			break
		}
	}
	return time.Time{}, nil
}

// mergeLive sums the live profiles of the minutes [from, to] across
// instances. A set is merged only if every one of its features was counted
// against ref's bins (same fingerprint); others are skipped.
func (a *Activities) mergeLive(ctx context.Context, ref drift.ReferenceSet, from, to int64) (drift.LiveSet, int, int, error) {
	fps := make(map[string]string, len(ref))
	for name, r := range ref {
		fps[name] = r.Fingerprint()
	}
	var keys []string
	iter := a.Redis.Scan(ctx, 0, drift.LiveKeyPattern, 1000).Iterator()
	for iter.Next(ctx) {
		if m, _, ok := drift.ParseLiveKey(iter.Val()); ok && m >= from && m <= to {
			keys = append(keys, iter.Val())
		}
	}
	if err := iter.Err(); err != nil {
		return nil, 0, 0, fmt.Errorf("cannot scan %s: %w", drift.LiveKeyPattern, err)
	}
	merged := ref.NewLive()
	profiles, skipped := 0, 0
	for len(keys) > 0 {
		chunk := keys[:min(len(keys), 200)]
		keys = keys[len(chunk):]
		vals, err := a.Redis.MGet(ctx, chunk...).Result()
		if err != nil {
			return nil, 0, 0, fmt.Errorf("cannot read live profiles: %w", err)
		}
		for i, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue // expired between SCAN and MGET
			}
			var set drift.LiveSet
			if err := json.Unmarshal([]byte(s), &set); err != nil {
				activity.GetLogger(ctx).Warn("live profile does not decode; skipped", "key", chunk[i], "err", err)
				skipped++
				continue
			}
			if !matches(set, fps) {
				skipped++
				continue
			}
			if err := merged.Merge(set); err != nil {
				skipped++
				continue
			}
			profiles++
		}
	}
	return merged, profiles, skipped, nil
}

// matches reports whether every profile of set was counted against the
// reference with the given fingerprints.
func matches(set drift.LiveSet, fps map[string]string) bool {
	if len(set) == 0 {
		return false
	}
	for name, l := range set {
		if l == nil {
			continue
		}
		if fp, ok := fps[name]; !ok || l.Ref != fp {
			return false
		}
	}
	return true
}

// StartRetrainInput parameterises the RetrainModel run to start.
type StartRetrainInput struct {
	Params RetrainParams `json:"params"`
}

// StartRetrainOutput names the run started, or the one already running.
type StartRetrainOutput struct {
	Started        bool   `json:"started"`
	AlreadyRunning bool   `json:"already_running,omitempty"`
	WorkflowID     string `json:"workflow_id"`
	RunID          string `json:"run_id,omitempty"`
}

// StartRetrain starts a RetrainModel run with the fixed id RetrainWorkflowID
// and the id conflict policy Fail, so the server refuses a second run while
// one is running; it also looks for a running RetrainModel on the same task
// queue started by the nightly schedule (whose ids carry a timestamp) and
// starts nothing then.
// The run is independent of the caller: it outlives the CheckDrift that
// asked for it. Retrying is safe: a retry after a successful start finds
// that run running.
func (a *Activities) StartRetrain(ctx context.Context, in StartRetrainInput) (*StartRetrainOutput, error) {
	if a.Temporal == nil {
		return nil, temporal.NewNonRetryableApplicationError("the worker has no Temporal client to start a retrain with", ErrTypeBadInput, nil)
	}
	id := a.RetrainWorkflowID
	if id == "" {
		id = RetrainWorkflowID
	}
	info := activity.GetInfo(ctx)
	// Visibility is eventually consistent and may not support this query
	// everywhere; the fixed id below is what guarantees one run at a time.
	resp, err := a.Temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Namespace: info.WorkflowNamespace,
		PageSize:  10,
		Query:     fmt.Sprintf("WorkflowType = 'RetrainModel' AND ExecutionStatus = 'Running' AND TaskQueue = '%s'", info.TaskQueue),
	})
	if err != nil {
		activity.GetLogger(ctx).Warn("cannot list running retrains; relying on the workflow id alone", "err", err)
	} else if len(resp.Executions) > 0 {
		e := resp.Executions[0].Execution
		return &StartRetrainOutput{AlreadyRunning: true, WorkflowID: e.GetWorkflowId(), RunID: e.GetRunId()}, nil
	}
	run, err := a.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                                       id,
		TaskQueue:                                info.TaskQueue,
		WorkflowIDConflictPolicy:                 enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowIDReusePolicy:                    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		StaticSummary:                            "retrain: " + in.Params.Reason,
	}, RetrainModel, in.Params)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &started) {
		return &StartRetrainOutput{AlreadyRunning: true, WorkflowID: id, RunID: started.RunId}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot start %s: %w", id, err)
	}
	return &StartRetrainOutput{Started: true, WorkflowID: run.GetID(), RunID: run.GetRunID()}, nil
}
