package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/drift"
	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/model/onnx"
	"github.com/clickrec/clickrec/model/registry"
	"github.com/clickrec/clickrec/workflows"
)

// registerWithReference registers m as version with reference drift profiles,
// as a retrain would.
func registerWithReference(t *testing.T, reg *registry.Registry, version string, m *model.Model, ref drift.ReferenceSet) {
	t.Helper()
	m.Version = version
	bin, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	ob, err := onnx.Export(m, onnx.ExportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := json.Marshal(ref)
	if err != nil {
		t.Fatal(err)
	}
	meta := registry.Metadata{Metadata: model.Metadata{Version: version, Items: m.NumItems(), Factors: m.K}, Reference: rb}
	if err := reg.Register(testenv.Context(t, 10*time.Second), registry.Version{Meta: meta, Model: bin, ONNX: ob}, "e2e"); err != nil {
		t.Fatal(err)
	}
}

// TestDriftRollback promotes a model whose reference profile says shoppers
// browse categories c1..c5, then has a hot path worker serve it to shoppers
// who all browse one other category. The worker publishes its live profile to
// Redis (drift.LiveKey, here every second); CheckDrift, run by a `clickrec worker`
// and started with `clickrec workflows drift-check`, finds the category mix
// drifted, rolls the registry back to the previous version, and the running
// hot path worker switches back to it without a restart.
func TestDriftRollback(t *testing.T) {
	c := newCluster(t, 2)
	rs := startRedis(t, "")
	rc := redis.NewClient(&redis.Options{Addr: rs.addr()})
	defer rc.Close()
	reg := registry.New(rc)
	ctx := testenv.Context(t, 2*time.Minute)

	// Both versions were trained on shoppers browsing c1..c5 evenly.
	ref := drift.ReferenceSet{drift.FeatureCategoryMix: drift.NewCategoricalReference(
		map[string]uint64{"c1": 1000, "c2": 1000, "c3": 1000, "c4": 1000, "c5": 1000}, 0)}
	registerWithReference(t, reg, "v1", randomModel(500, 8, 1), ref)
	registerWithReference(t, reg, "v2", randomModel(500, 8, 2), ref)
	if _, err := reg.Promote(ctx, "v1", "e2e: first"); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Promote(ctx, "v2", "e2e: newer"); err != nil {
		t.Fatal(err)
	}
	// One-second windows and watermarks one second behind, so the windows
	// that feed the live category mix close as the clicks arrive.
	hp := c.worker(t, "w1", "--scorer", "go", "--no-redis=false", "--redis-addr", rs.addr(),
		"--window", "1s", "--out-of-orderness", "1s", "--drift-publish-every", "1s")
	hpStarted := time.Now()
	reader := c.recsReader(t)
	producer := c.clickProducer(t)

	// 600 clicks of 40 shoppers over the last minute of event time, all in
	// category z9, which the reference never saw.
	const n = 600
	base := time.Now().Add(-time.Minute).UnixMilli()
	clicks := make([]event.Click, n)
	ids := make([]string, n)
	for i := range clicks {
		ids[i] = fmt.Sprintf("dr-%d", i)
		clicks[i] = event.Click{EventID: ids[i], UserID: fmt.Sprintf("dr-u%d", i%40), Type: event.View,
			ItemID: int64(1 + (i*37)%500), Category: "z9", TimestampMs: base + int64(i)*100}
	}
	producer.send(t, ctx, clicks...)
	versions := map[string]int{}
	for _, r := range reader.await(t, ctx, ids...) {
		versions[r.ModelVersion]++
	}
	if versions["v2"] != n {
		t.Fatalf("recommendations by model version %v; want all %d by v2, the promoted one", versions, n)
	}

	// The worker's first live profile, counted against v2's reference.
	var live drift.LiveSet
	var liveKey string
	eventually(t, ctx, func() (bool, string) {
		keys, err := rc.Keys(ctx, drift.LiveKeyPattern).Result()
		if err != nil || len(keys) == 0 {
			return false, fmt.Sprintf("no %s key %v after the hot path started (%v)", drift.LiveKeyPattern, time.Since(hpStarted).Round(time.Second), err)
		}
		liveKey = keys[0]
		b, err := rc.Get(ctx, liveKey).Bytes()
		if err == nil {
			err = json.Unmarshal(b, &live)
		}
		if err != nil {
			return false, fmt.Sprintf("%s: %v", liveKey, err)
		}
		// The minute's key is rewritten every second with all counted so far.
		m := live[drift.FeatureCategoryMix]
		return m != nil && m.N() >= n/2, fmt.Sprintf("%s: %d of %d clicks counted so far", liveKey, m.N(), n)
	})
	mix := live[drift.FeatureCategoryMix]
	if mix == nil || mix.Ref != ref[drift.FeatureCategoryMix].Fingerprint() || mix.N() < n/2 {
		t.Fatalf("live profile %s: %+v; want most of the %d clicks counted in category_mix against v2's reference", liveKey, mix, n)
	}
	t.Logf("live profile %s published %v after the hot path started: category_mix %v (bins %v + other)",
		liveKey, time.Since(hpStarted).Round(time.Second), mix.Counts, ref[drift.FeatureCategoryMix].Categories)

	// CheckDrift on the last 5 minutes: it must roll v2 back to v1.
	slow := c.slowWorker(t, rs.addr())
	var res workflows.DriftResult
	slow.run(t, ctx, "drift-check", &res, "--drift-window", "5m", "--drift-min-samples", "100", "--drift-rollback-window", "1h")
	if res.Action != workflows.ActionRolledBack || res.Rollback == nil || !res.Rollback.RolledBack || res.Rollback.Serving != "v1" {
		t.Fatalf("drift check: action %q (%s), rollback %+v; want v2 rolled back to v1", res.Action, res.Detail, res.Rollback)
	}
	if res.Report == nil || res.Report.Version != "v2" || res.Report.Profiles < 1 || !slices.Contains(res.Report.Alerting, drift.FeatureCategoryMix) {
		t.Fatalf("drift report %+v; want v2's category_mix alerting on the worker's live profile", res.Report)
	}
	cur, err := reg.Current(ctx)
	if err != nil || cur != "v1" {
		t.Fatalf("registry serves %q (%v) after the rollback, want v1", cur, err)
	}
	hist, err := reg.History(ctx, 1)
	if err != nil || len(hist) != 1 || hist[0].Action != "rollback" || hist[0].Version != "v1" || hist[0].Previous != "v2" ||
		!strings.Contains(hist[0].Reason, drift.FeatureCategoryMix) {
		t.Fatalf("registry history %+v (%v); want the rollback v2 → v1 with the drifting feature in its reason", hist, err)
	}
	t.Logf("registry: %s %s (from %s): %s", hist[0].Action, hist[0].Version, hist[0].Previous, hist[0].Reason)

	// The running worker switches back: a click soon gets a v1
	// recommendation, and from then on every click does.
	rolledBack := time.Now()
	probe := 0
	for {
		id := fmt.Sprintf("dr-probe-%d", probe)
		producer.send(t, ctx, event.Click{EventID: id, UserID: "dr-probe", Type: event.View, ItemID: 7, Category: "c1", TimestampMs: time.Now().UnixMilli()})
		r := reader.await(t, ctx, id)[0]
		if r.ModelVersion == "v1" {
			break
		}
		if r.ModelVersion != "v2" {
			t.Fatalf("probe recommendation by %q, want v2 or v1", r.ModelVersion)
		}
		probe++
		select {
		case <-ctx.Done():
			t.Fatal("the hot path worker still serves v2 after the rollback")
		case <-time.After(200 * time.Millisecond): // it swaps models between batches
		}
	}
	t.Logf("the worker served v1 %v after the rollback (%d probes by v2 before)", time.Since(rolledBack).Round(time.Millisecond), probe)
	after := make([]event.Click, 100)
	afterIDs := make([]string, len(after))
	for i := range after {
		afterIDs[i] = fmt.Sprintf("dr-after-%d", i)
		after[i] = event.Click{EventID: afterIDs[i], UserID: fmt.Sprintf("dr-u%d", i%40), Type: event.View,
			ItemID: int64(1 + i), Category: "c2", TimestampMs: time.Now().UnixMilli()}
	}
	producer.send(t, ctx, after...)
	for _, r := range reader.await(t, ctx, afterIDs...) {
		if r.ModelVersion != "v1" || r.Strategy != "model" {
			t.Fatalf("after the switch back: %s recommended by %q (%s), want the v1 model", r.EventID, r.ModelVersion, r.Strategy)
		}
	}
	slow.proc.stop(t)
	hp.stop(t)
}
