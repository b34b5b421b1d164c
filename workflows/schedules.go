package workflows

import (
	"context"
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
)

// ScheduleConfig describes the three schedules `clickrec worker` keeps.
type ScheduleConfig struct {
	// TaskQueue the scheduled runs go to; "" means TaskQueue.
	TaskQueue string
	// IDPrefix starts the schedule ids ("<prefix>-retrain-nightly",
	// "<prefix>-refresh-popularity", "<prefix>-check-drift"); "" means "clickrec".
	IDPrefix string
	// RetrainEvery and RetrainOffset place the nightly retrain: every
	// RetrainEvery, shifted by RetrainOffset from the Unix epoch (24h and 2h:
	// 02:00 UTC every day).
	RetrainEvery, RetrainOffset time.Duration
	// RefreshEvery and DriftEvery are the intervals of RefreshPopularity and CheckDrift.
	RefreshEvery, DriftEvery time.Duration
	// Arguments of the scheduled runs.
	Retrain RetrainParams
	Refresh RefreshParams
	Drift   DriftParams
}

// DefaultScheduleConfig returns the defaults: retrain daily at 02:00 UTC,
// popularity every 5 minutes, drift every 15 minutes.
func DefaultScheduleConfig() ScheduleConfig {
	return ScheduleConfig{
		RetrainEvery:  24 * time.Hour,
		RetrainOffset: 2 * time.Hour,
		RefreshEvery:  5 * time.Minute,
		DriftEvery:    15 * time.Minute,
		Retrain:       DefaultRetrainParams(),
		Refresh:       DefaultRefreshParams(),
		Drift:         DefaultDriftParams(),
	}
}

// ScheduleIDs returns the ids of the retrain, refresh and drift schedules.
func (c ScheduleConfig) ScheduleIDs() (retrain, refresh, drift string) {
	p := c.IDPrefix
	if p == "" {
		p = "clickrec"
	}
	return p + "-retrain-nightly", p + "-refresh-popularity", p + "-check-drift"
}

type scheduleDef struct {
	id       string
	every    time.Duration
	offset   time.Duration
	catchup  time.Duration
	action   *client.ScheduleWorkflowAction
	describe string
}

func (c ScheduleConfig) defs() []scheduleDef {
	q := c.TaskQueue
	if q == "" {
		q = TaskQueue
	}
	retrainID, refreshID, driftID := c.ScheduleIDs()
	return []scheduleDef{
		{
			id: retrainID, every: c.RetrainEvery, offset: c.RetrainOffset, catchup: time.Hour,
			describe: fmt.Sprintf("RetrainModel every %v (offset %v)", c.RetrainEvery, c.RetrainOffset),
			action: &client.ScheduleWorkflowAction{
				ID: retrainID, Workflow: RetrainModel, Args: []any{c.Retrain}, TaskQueue: q,
				WorkflowRunTimeout: 20 * time.Hour,
			},
		},
		{
			id: refreshID, every: c.RefreshEvery, catchup: time.Minute,
			describe: fmt.Sprintf("RefreshPopularity every %v", c.RefreshEvery),
			action: &client.ScheduleWorkflowAction{
				ID: refreshID, Workflow: RefreshPopularity, Args: []any{c.Refresh}, TaskQueue: q,
				WorkflowRunTimeout: 20 * time.Minute,
			},
		},
		{
			id: driftID, every: c.DriftEvery, catchup: time.Minute,
			describe: fmt.Sprintf("CheckDrift every %v", c.DriftEvery),
			action: &client.ScheduleWorkflowAction{
				ID: driftID, Workflow: CheckDrift, Args: []any{c.Drift}, TaskQueue: q,
				WorkflowRunTimeout: 20 * time.Minute,
			},
		},
	}
}

// EnsureSchedules makes the three schedules exist with c's intervals and
// arguments: it creates a missing schedule, and updates the spec, action and
// policies of an existing one (keeping its state, so a schedule paused in
// the UI stays paused). Calling it again is harmless. Runs of one schedule
// never overlap (a run due while the previous one runs is skipped), and a
// run missed while the server was down is taken only within a short catch-up
// window. It returns "created" or "updated" per schedule id.
func EnsureSchedules(ctx context.Context, sc client.ScheduleClient, c ScheduleConfig) (map[string]string, error) {
	done := map[string]string{}
	for _, d := range c.defs() {
		if d.every <= 0 {
			return done, fmt.Errorf("schedule %s: interval %v must be positive", d.id, d.every)
		}
		spec := client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: d.every, Offset: d.offset}}}
		policy := client.SchedulePolicies{Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_SKIP, CatchupWindow: d.catchup}
		_, err := sc.Create(ctx, client.ScheduleOptions{
			ID:            d.id,
			Spec:          spec,
			Action:        d.action,
			Overlap:       policy.Overlap,
			CatchupWindow: policy.CatchupWindow,
			Note:          "managed by clickrec worker: " + d.describe,
		})
		if err == nil {
			done[d.id] = "created"
			continue
		}
		if !errors.Is(err, temporal.ErrScheduleAlreadyRunning) {
			return done, fmt.Errorf("cannot create schedule %s: %w", d.id, err)
		}
		err = sc.GetHandle(ctx, d.id).Update(ctx, client.ScheduleUpdateOptions{
			DoUpdate: func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
				s := in.Description.Schedule
				s.Spec, s.Action, s.Policy = &spec, d.action, &policy
				return &client.ScheduleUpdate{Schedule: &s}, nil
			},
		})
		if err != nil {
			return done, fmt.Errorf("cannot update schedule %s: %w", d.id, err)
		}
		done[d.id] = "updated"
	}
	return done, nil
}
