package workflows

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"

	"github.com/clickrec/clickrec/internal/redisutil/redistest"
	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/model/registry"
)

// TestRollbackModelLeavesAnotherPromotion: the drift check judged v2, an
// operator promotes v3 before the rollback writes; RollbackModel must report
// that v2 no longer serves and leave v3 serving, the history untouched.
func TestRollbackModelLeavesAnotherPromotion(t *testing.T) {
	rc := testRedis(t, redisDBActivities)
	ctx := testenv.Context(t, 20*time.Second)
	reg := registry.New(rc)
	for _, v := range []string{"v1", "v2", "v3"} {
		require.NoError(t, reg.Register(ctx, registry.Version{Meta: registry.Metadata{Metadata: model.Metadata{Version: v}}, Model: []byte("m-" + v)}, "test"))
	}
	for _, v := range []string{"v1", "v2"} {
		_, err := reg.Promote(ctx, v, "test")
		require.NoError(t, err)
	}
	other := redis.NewClient(&redis.Options{Addr: rc.Options().Addr, DB: rc.Options().DB})
	defer other.Close()
	hook := redistest.BeforeFirstScript(func(ctx context.Context) error {
		_, err := registry.New(other).Promote(ctx, "v3", "promoted by an operator")
		return err
	})
	hooked := redis.NewClient(&redis.Options{Addr: rc.Options().Addr, DB: rc.Options().DB})
	defer hooked.Close()
	hooked.AddHook(hook)

	acts := &Activities{Redis: hooked, Metrics: NewMetrics(prometheus.NewRegistry())}
	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	env.RegisterActivity(acts)
	rb := execute[RollbackOutput](t, env, acts.RollbackModel, RollbackInput{Version: "v2", Reason: "PSI 0.4", Trigger: "drift"})
	require.NoError(t, hook.Err())
	require.True(t, hook.Fired(), "the promotion in between did not happen")

	require.False(t, rb.RolledBack, "rolled back %+v", rb)
	require.Equal(t, "v3", rb.Serving)
	require.Contains(t, rb.Note, "v2 no longer serves")
	cur, err := reg.Current(ctx)
	require.NoError(t, err)
	require.Equal(t, "v3", cur, "the operator's promotion was rolled back")
	hist, err := reg.History(ctx, 10)
	require.NoError(t, err)
	require.Equal(t, "promote", hist[0].Action)
	require.Equal(t, "v3", hist[0].Version)
	for _, e := range hist {
		require.NotEqual(t, "rollback", e.Action, "history %+v", hist)
	}
	require.Zero(t, testutil.ToFloat64(acts.Metrics.rollbacks.WithLabelValues("drift")))

	// v3 is judged now and still serves: it is rolled back.
	rb = execute[RollbackOutput](t, env, acts.RollbackModel, RollbackInput{Version: "v3", Reason: "PSI 0.5", Trigger: "drift"})
	require.True(t, rb.RolledBack)
	require.Equal(t, "v2", rb.Serving)
	require.Equal(t, 1.0, testutil.ToFloat64(acts.Metrics.rollbacks.WithLabelValues("drift")))
}
