package workflows

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/model/eval"
	"github.com/clickrec/clickrec/model/registry"
)

// Activities holds what the activities need: Kafka, Redis (registry,
// popularity tables, live drift profiles), the Temporal client (to start a
// retrain from CheckDrift) and a local work directory. Register one value
// with the worker; workflows call its methods through a nil *Activities.
// Every activity is safe to retry: it either finds its result from an
// earlier attempt (files in the work directory, the registry) or redoes
// the same work.
type Activities struct {
	// Kafka is the cluster user_events and user_session_windows live on.
	Kafka kafkautil.Config
	// Topics names the topics; the zero value means kafkautil.DefaultTopics.
	Topics kafkautil.Topics
	// Redis holds the model registry, the popularity table and the live
	// drift profiles.
	Redis *redis.Client
	// Temporal starts RetrainModel runs (StartRetrain); nil disables that.
	Temporal client.Client
	// RetrainWorkflowID is the id StartRetrain uses; "" means RetrainWorkflowID.
	RetrainWorkflowID string
	// WorkDir holds one directory per retrain version: the training window,
	// the model, its ONNX graph, the holdout and the reference profiles.
	WorkDir string
	// KeepWorkDir keeps a version's directory after it is registered
	// (otherwise CleanWorkDir removes it).
	KeepWorkDir bool
	// Train is the training configuration; the zero value means
	// model.DefaultConfig().
	Train model.Config
	// NewScorer makes the scorer the holdout evaluation runs through; nil
	// means the pure-Go reference scorer (eval.GoScorer).
	NewScorer eval.NewScorerFunc
	// MaxHoldoutCases caps the evaluation cases (taken evenly from the
	// holdout); 0 means 20,000.
	MaxHoldoutCases int
	// ReadIdle is how long a Kafka read may see no record before it stops
	// short of its end offsets (see readRanges); 0 means 10 s.
	ReadIdle time.Duration
	// TimestampSlack is how far out of order record timestamps may be: reads
	// of a time window start and end this much wider in offsets and keep
	// only the records inside the window; 0 means 10 minutes (the hot path's
	// 5-minute bounded out-of-orderness plus its 5-minute allowed lateness).
	TimestampSlack time.Duration
	// Metrics receives drift and rollback metrics; nil records nothing.
	Metrics *Metrics
	// Log receives training progress; nil discards it.
	Log *slog.Logger
}

// heartbeatEvery is how often long activities heartbeat.
const heartbeatEvery = 5 * time.Second

// topics is Topics or its default, kafkautil.DefaultTopics.
func (a *Activities) topics() kafkautil.Topics {
	if a.Topics.Events == "" {
		return kafkautil.DefaultTopics
	}
	return a.Topics
}

// readIdle is ReadIdle or its default, 10 s.
func (a *Activities) readIdle() time.Duration {
	if a.ReadIdle > 0 {
		return a.ReadIdle
	}
	return 10 * time.Second
}

// slack is TimestampSlack or its default, 10 minutes.
func (a *Activities) slack() time.Duration {
	if a.TimestampSlack > 0 {
		return a.TimestampSlack
	}
	return 10 * time.Minute
}

// maxHoldoutCases is MaxHoldoutCases or its default, 20,000.
func (a *Activities) maxHoldoutCases() int {
	if a.MaxHoldoutCases > 0 {
		return a.MaxHoldoutCases
	}
	return 20000
}

// newScorer is NewScorer or its default, eval.GoScorer.
func (a *Activities) newScorer() eval.NewScorerFunc {
	if a.NewScorer != nil {
		return a.NewScorer
	}
	return eval.GoScorer
}

// trainConfig is Train or its default, model.DefaultConfig().
func (a *Activities) trainConfig() model.Config {
	if a.Train.Factors == 0 {
		return model.DefaultConfig()
	}
	return a.Train
}

// log is Log or a logger that discards.
func (a *Activities) log() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.New(slog.DiscardHandler)
}

// registry is the model registry in Redis; without a Redis client it is
// a BadInput error.
func (a *Activities) registry() (*registry.Registry, error) {
	if a.Redis == nil {
		return nil, temporal.NewNonRetryableApplicationError("the worker has no Redis client", ErrTypeBadInput, nil)
	}
	return registry.New(a.Redis), nil
}

// badInput is a non-retryable BadInput error: the input is wrong, and a
// retry would not change that.
func badInput(format string, args ...any) error {
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, args...), ErrTypeBadInput, nil)
}

// noData is a non-retryable NoData error: there is nothing to train on;
// RetrainModel ends skipped.
func noData(format string, args ...any) error {
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, args...), ErrTypeNoData, nil)
}

// keepAlive heartbeats every heartbeatEvery until the returned stop is
// called, for steps that cannot report progress themselves (training,
// evaluation). Cancellation of the activity reaches ctx through these
// heartbeats.
func keepAlive(ctx context.Context, step string) (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(stopped)
		t := time.NewTicker(heartbeatEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				activity.RecordHeartbeat(ctx, fmt.Sprintf("%s for %v", step, time.Since(start).Round(time.Second)))
			}
		}
	}()
	return func() { close(done); <-stopped }
}
