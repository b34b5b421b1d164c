package workflows

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// Metrics are the worker's Prometheus metrics. A nil *Metrics is valid and
// records nothing (tests).
type Metrics struct {
	psi          *prometheus.GaugeVec
	liveN        *prometheus.GaugeVec
	driftChecked prometheus.Gauge
	rollbacks    *prometheus.CounterVec
	runs         *prometheus.CounterVec
	activities   *prometheus.CounterVec
	actSeconds   *prometheus.HistogramVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not registered):
//
//	recsys_drift_psi{feature}                          PSI of the served model's live traffic, set only when the comparison had enough data
//	recsys_drift_live_observations{feature}            live observations behind the last comparison
//	recsys_drift_last_check_timestamp_seconds          when the last comparison ran
//	recsys_model_rollbacks_total{trigger}              rollbacks done by a workflow (retrain, drift, abort)
//	recsys_workflow_runs_total{workflow,result}        workflow runs this worker finished (completed, failed, canceled)
//	recsys_workflow_activities_total{activity,result}  activity attempts (completed, failed, canceled)
//	recsys_workflow_activity_duration_seconds{activity} activity attempt durations
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		psi: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "recsys_drift_psi",
			Help: "Population stability index of the served model's live traffic against its reference profile, per feature; absent while a side has fewer observations than the minimum sample.",
		}, []string{"feature"}),
		liveN: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "recsys_drift_live_observations",
			Help: "Live observations per feature behind the last drift comparison.",
		}, []string{"feature"}),
		driftChecked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "recsys_drift_last_check_timestamp_seconds",
			Help: "Unix time of the last drift comparison.",
		}),
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "recsys_model_rollbacks_total",
			Help: "Model rollbacks done by workflows, by trigger (retrain: the online check after a promotion; drift: CheckDrift; abort: the abort signal or a failed run).",
		}, []string{"trigger"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "recsys_workflow_runs_total",
			Help: "Workflow runs finished on this worker, by workflow type and result (completed, failed, canceled).",
		}, []string{"workflow", "result"}),
		activities: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "recsys_workflow_activities_total",
			Help: "Activity attempts finished on this worker, by activity and result (completed, failed, canceled).",
		}, []string{"activity", "result"}),
		actSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "recsys_workflow_activity_duration_seconds",
			Help:    "Duration of activity attempts on this worker.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10), // 10 ms … 43 min
		}, []string{"activity"}),
	}
	if reg != nil {
		reg.MustRegister(m.psi, m.liveN, m.driftChecked, m.rollbacks, m.runs, m.activities, m.actSeconds)
	}
	return m
}

// Interceptor returns the worker interceptor that counts workflow runs and
// activity attempts. Add it to worker.Options.Interceptors.
func (m *Metrics) Interceptor() interceptor.WorkerInterceptor { return &metricsInterceptor{m: m} }

func (m *Metrics) rollback(trigger string) {
	if m != nil {
		m.rollbacks.WithLabelValues(trigger).Inc()
	}
}

// setDrift exports a drift report: the PSI of features with enough data, and
// removes the PSI of the others so that a stale value cannot keep an alert
// firing once the data is gone.
func (m *Metrics) setDrift(r *DriftReport, now time.Time) {
	if m == nil {
		return
	}
	m.driftChecked.Set(float64(now.UnixNano()) / 1e9)
	for _, res := range r.Results {
		m.liveN.WithLabelValues(res.Feature).Set(float64(res.LiveN))
		if res.Sufficient() {
			m.psi.WithLabelValues(res.Feature).Set(res.PSI)
		} else {
			m.psi.DeleteLabelValues(res.Feature)
		}
	}
}

func resultLabel(err error) string {
	switch {
	case err == nil:
		return "completed"
	case temporal.IsCanceledError(err), err == context.Canceled:
		return "canceled"
	default:
		return "failed"
	}
}

type metricsInterceptor struct {
	interceptor.WorkerInterceptorBase
	m *Metrics
}

func (i *metricsInterceptor) InterceptActivity(ctx context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	return &activityMetrics{ActivityInboundInterceptorBase: interceptor.ActivityInboundInterceptorBase{Next: next}, m: i.m}
}

func (i *metricsInterceptor) InterceptWorkflow(ctx workflow.Context, next interceptor.WorkflowInboundInterceptor) interceptor.WorkflowInboundInterceptor {
	return &workflowMetrics{WorkflowInboundInterceptorBase: interceptor.WorkflowInboundInterceptorBase{Next: next}, m: i.m}
}

type activityMetrics struct {
	interceptor.ActivityInboundInterceptorBase
	m *Metrics
}

func (a *activityMetrics) ExecuteActivity(ctx context.Context, in *interceptor.ExecuteActivityInput) (any, error) {
	start := time.Now()
	res, err := a.Next.ExecuteActivity(ctx, in)
	if a.m != nil {
		name := activity.GetInfo(ctx).ActivityType.Name
		a.m.activities.WithLabelValues(name, resultLabel(err)).Inc()
		a.m.actSeconds.WithLabelValues(name).Observe(time.Since(start).Seconds())
	}
	return res, err
}

type workflowMetrics struct {
	interceptor.WorkflowInboundInterceptorBase
	m *Metrics
}

func (w *workflowMetrics) ExecuteWorkflow(ctx workflow.Context, in *interceptor.ExecuteWorkflowInput) (any, error) {
	res, err := w.Next.ExecuteWorkflow(ctx, in)
	// Counted once, when the run finishes live: a replay of a finished
	// history (cache eviction, a query) does not count it again.
	if w.m != nil && !workflow.IsReplaying(ctx) {
		w.m.runs.WithLabelValues(workflow.GetInfo(ctx).WorkflowType.Name, resultLabel(err)).Inc()
	}
	return res, err
}
