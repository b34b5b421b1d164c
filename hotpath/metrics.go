package hotpath

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the hot path's Prometheus series (names in DESIGN.md; dashboards
// and alert rules in dashboards/ and deploy/ use exactly these).
type metrics struct {
	e2e         prometheus.Histogram
	events      *prometheus.CounterVec
	dlq         *prometheus.CounterVec
	batch       prometheus.Histogram
	inference   prometheus.Histogram
	scoreErrors prometheus.Counter
	txnCommit   prometheus.Histogram
	txns        *prometheus.CounterVec
	lag         *prometheus.GaugeVec
	wmLag       *prometheus.GaugeVec
	stateUsers  prometheus.Gauge
	recs        *prometheus.CounterVec
	modelVer    *prometheus.GaugeVec
	windows     prometheus.Counter
	refired     prometheus.Counter
	expired     prometheus.Counter
	restores    prometheus.Histogram
	redisWrites *prometheus.CounterVec
	redisQueue  prometheus.Gauge
	rewrites    prometheus.Counter
	newItems    prometheus.Counter
}

var latencyBuckets = []float64{.001, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .07, .075, .1, .15, .2, .3, .5, 1, 2, 5}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		e2e: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "recsys_hotpath_e2e_latency_seconds",
			Help: "Input record timestamp to output committed, per on-time click.", Buckets: latencyBuckets}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recsys_hotpath_events_total",
			Help: "Input records by outcome: on_time, late_updated, too_late, invalid, replayed (at-least-once: already in the state, answered again, not applied again; counted when processed; aborted transactions reprocess)."}, []string{"outcome"}),
		dlq: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recsys_hotpath_dlq_total",
			Help: "Invalid records sent to the dead-letter topic, by reason."}, []string{"reason"}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "recsys_hotpath_batch_size",
			Help: "Events scored together per transaction.", Buckets: prometheus.ExponentialBuckets(1, 2, 12)}),
		inference: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "recsys_hotpath_inference_seconds",
			Help: "Model scoring time per batch.", Buckets: latencyBuckets}),
		scoreErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "recsys_hotpath_scoring_errors_total",
			Help: "Batches the model failed to score; their clicks got the popularity fallback."}),
		txnCommit: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "recsys_hotpath_txn_commit_seconds",
			Help: "Time to flush and commit one transaction.", Buckets: latencyBuckets}),
		txns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recsys_hotpath_transactions_total",
			Help: "Transactions by result: committed or aborted."}, []string{"result"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "recsys_hotpath_consumer_lag",
			Help: "Records behind the partition's high watermark after the last poll."}, []string{"partition"}),
		wmLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "recsys_hotpath_watermark_lag_seconds",
			Help: "Processing time minus the partition's watermark."}, []string{"partition"}),
		stateUsers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "recsys_hotpath_state_users",
			Help: "Users held in state on this worker."}),
		recs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recsys_recommendations_total",
			Help: "Recommendations produced, by strategy."}, []string{"strategy"}),
		modelVer: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "recsys_model_version",
			Help: "1 for the model version this worker serves."}, []string{"version"}),
		windows: prometheus.NewCounter(prometheus.CounterOpts{Name: "recsys_hotpath_windows_total",
			Help: "Window results emitted (including re-fires)."}),
		refired: prometheus.NewCounter(prometheus.CounterOpts{Name: "recsys_hotpath_windows_refired_total",
			Help: "Window results re-emitted because a late event changed them."}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{Name: "recsys_hotpath_users_expired_total",
			Help: "Users forgotten after the session TTL."}),
		restores: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "recsys_hotpath_restore_seconds",
			Help: "Time to restore a partition's state from the changelog.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}),
		redisWrites: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recsys_hotpath_redis_writes_total",
			Help: "Feature store writes by result: ok or error (errors are retried)."}, []string{"result"}),
		redisQueue: prometheus.NewGauge(prometheus.GaugeOpts{Name: "recsys_hotpath_redis_pending_users",
			Help: "Users whose latest state is waiting to be written to Redis."}),
		rewrites: prometheus.NewCounter(prometheus.CounterOpts{Name: "recsys_hotpath_redis_rewrites_total",
			Help: "Restored users handed to the Redis writer again after a restore (--redis-rewrite-rate)."}),
		newItems: prometheus.NewCounter(prometheus.CounterOpts{Name: "recsys_itemknow_recommended_new_items_total",
			Help: "Items the serving model does not know that the online item knowledge put into recommendations."}),
	}
	if reg != nil {
		reg.MustRegister(m.e2e, m.events, m.dlq, m.batch, m.inference, m.scoreErrors, m.txnCommit, m.txns, m.lag, m.wmLag,
			m.stateUsers, m.recs, m.modelVer, m.windows, m.refired, m.expired, m.restores, m.redisWrites, m.redisQueue, m.rewrites, m.newItems)
	}
	return m
}
