package e2e

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/model/onnx"
	"github.com/clickrec/clickrec/model/registry"
	"github.com/clickrec/clickrec/wire"
)

// randomModel is a model over item ids 1..n (the synthetic shop's most popular
// items are among them) with random factors.
func randomModel(n, k int, seed uint64) *model.Model {
	r := rand.New(rand.NewPCG(seed, 3))
	m := &model.Model{K: k, Weighting: model.DefaultWeighting}
	for i := range n {
		m.ItemIDs = append(m.ItemIDs, int64(i+1))
		m.Prior = append(m.Prior, r.Float32()*0.1)
		for range k {
			m.Factors = append(m.Factors, r.Float32()-0.5)
			m.Projection = append(m.Projection, r.Float32()-0.5)
		}
	}
	return m
}

func registerModel(t *testing.T, reg *registry.Registry, version string, m *model.Model) {
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
	meta := registry.Metadata{Metadata: model.Metadata{Version: version, Items: m.NumItems(), Factors: m.K}}
	if err := reg.Register(testenv.Context(t, 10*time.Second), registry.Version{Meta: meta, Model: bin, ONNX: ob}, "e2e"); err != nil {
		t.Fatal(err)
	}
}

// TestModelPromotionHotSwap promotes a new model through the registry while two
// workers score clicks with ONNX Runtime: both switch to it without a restart,
// and no click loses or doubles its recommendation across the swap.
func TestModelPromotionHotSwap(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two workers with ONNX Runtime for about 20 s; run without -short")
	}
	lib := testenv.ORTLib(t)
	c := newCluster(t, 4)
	rs := startRedis(t, "")
	rc := redis.NewClient(&redis.Options{Addr: rs.addr()})
	defer rc.Close()
	reg := registry.New(rc)
	ctx := testenv.Context(t, 2*time.Minute)
	registerModel(t, reg, "v1", randomModel(2000, 16, 1))
	registerModel(t, reg, "v2", randomModel(2000, 16, 2))
	if _, err := reg.Promote(ctx, "v1", "e2e: first"); err != nil {
		t.Fatal(err)
	}
	args := []string{"--no-redis=false", "--redis-addr", rs.addr(), "--scorer", "onnx", "--onnxruntime-lib", lib}
	w1, w2 := c.worker(t, "w1", args...), c.worker(t, "w2", args...)

	const n, rate = 3000, 150.0 // 20 s of clicks
	producing := c.produceAsync(ctx, n, rate, 11)
	// Promote v2 once a third of the clicks have their recommendations.
	waitRecords(t, ctx, c, string(c.topics.Recs), n/3)
	if _, err := reg.Promote(ctx, "v2", "e2e: newer"); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	sent := (<-producing).must(t)
	waitFor(t, ctx, func() bool { return len(c.readAll(t, string(c.topics.Recs))) >= n })
	w1.stop(t)
	w2.stop(t)

	seen := map[string]int{}
	versions := map[string]int{}
	lastV1 := map[int32]time.Time{} // per partition: the last v1 recommendation's timestamp
	firstV2 := map[int32]bool{}
	for _, r := range c.readAll(t, string(c.topics.Recs)) {
		out, err := wire.DecodeRecommendation(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		seen[out.EventID]++
		versions[out.ModelVersion]++
		switch out.ModelVersion {
		case "v1":
			if firstV2[r.Partition] {
				t.Errorf("partition %d served v1 after v2: models must not flip back", r.Partition)
			}
			lastV1[r.Partition] = r.Timestamp
		case "v2":
			firstV2[r.Partition] = true
		}
	}
	missing, dup := 0, 0
	for id := range sent.ids {
		switch seen[id] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
	}
	if missing != 0 || dup != 0 {
		t.Fatalf("across the model swap: %d missing, %d duplicated of %d", missing, dup, n)
	}
	if len(firstV2) != 4 {
		t.Fatalf("v2 served on partitions %v, want all 4 (both workers)", firstV2)
	}
	var worst time.Duration
	for _, ts := range lastV1 {
		worst = max(worst, ts.Sub(promoted))
	}
	t.Logf("recommendations by version %v; 0 missing, 0 duplicated; last v1 click %v after the promotion", versions, worst.Round(time.Millisecond))
	hist, err := reg.History(ctx, 10)
	if err != nil || len(hist) == 0 || hist[0].Action != "promote" || hist[0].Version != "v2" || !strings.Contains(hist[0].Reason, "newer") {
		t.Fatalf("registry history %+v, %v", hist, err)
	}
}
