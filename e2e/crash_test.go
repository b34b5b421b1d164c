package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/gen"
	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/wire"
)

// produceShop sends n valid, in-order clicks of the synthetic shop at rate/s to
// the events topic and returns what it sent. Tests call it from a goroutine, so
// it reports failures as an error, not through t.
func (c *cluster) produceShop(ctx context.Context, n int, rate float64, seed uint64) (*countingSink, error) {
	cfg := gen.DefaultConfig()
	cfg.Seed, cfg.Users, cfg.LateShare, cfg.InvalidShare = seed, 500, 0, 0
	src, err := gen.NewSynthetic(cfg)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(c.kcfg.Opts("e2e-producer")...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	sink := gen.NewKafkaSink(cl, string(c.topics.Events))
	clock := &gen.SystemClock{}
	counter := &countingSink{Sink: sink, perUser: map[string]int{}, ids: map[string]bool{}}
	st, err := gen.Run(ctx, gen.RunConfig{Source: src, Sink: counter, Count: int64(n),
		Pacer: gen.NewPacer(clock, clock.Now(), gen.ConstantRate(rate))})
	if err != nil {
		return nil, err
	}
	if st.Sent != int64(n) || sink.Acked() != int64(n) {
		return nil, fmt.Errorf("sent %d, acked %d of %d events", st.Sent, sink.Acked(), n)
	}
	return counter, nil
}

// produceAsync runs produceShop in the background.
func (c *cluster) produceAsync(ctx context.Context, n int, rate float64, seed uint64) <-chan produced {
	ch := make(chan produced, 1)
	go func() {
		s, err := c.produceShop(ctx, n, rate, seed)
		ch <- produced{s, err}
	}()
	return ch
}

type produced struct {
	sent *countingSink
	err  error
}

// wait returns what was sent, failing the test if producing failed.
func (p produced) must(t *testing.T) *countingSink {
	t.Helper()
	if p.err != nil {
		t.Fatalf("producing clicks: %v", p.err)
	}
	return p.sent
}

type countingSink struct {
	gen.Sink
	perUser map[string]int
	ids     map[string]bool
}

func (s *countingSink) Send(ctx context.Context, r *gen.Record) error {
	s.perUser[r.Click.UserID]++
	s.ids[r.Click.EventID] = true
	return s.Sink.Send(ctx, r)
}

// TestKillWorkersExactlyOnce kills hot path workers with SIGKILL, again and
// again, while clicks flow, restarting each under its instance id. Every click
// must get exactly one recommendation, and the state the changelog holds at the
// end must count every click of every user exactly once, as an uninterrupted
// run would.
func TestKillWorkersExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts processes for about a minute; run without -short")
	}
	c := newCluster(t, 4)
	ids := []string{"w1", "w2"}
	// w2 keeps its state on disk (Pebble): a killed worker leaves its store
	// behind, and the restarted one must rebuild it from the changelog.
	flags := map[string][]string{
		"w1": {"--scorer", "go"},
		"w2": {"--scorer", "go", "--state-store", "pebble", "--state-dir", t.TempDir()},
	}
	workers := map[string]*proc{}
	for _, id := range ids {
		workers[id] = c.worker(t, id, flags[id]...)
	}
	const n, rate = 6000, 200.0 // 30 s of clicks
	ctx := testenv.Context(t, 3*time.Minute)
	producing := c.produceAsync(ctx, n, rate, 7)

	r := rand.New(rand.NewPCG(1, 2))
	kills := 0
	var sent *countingSink
loop:
	for {
		select {
		case p := <-producing:
			sent = p.must(t)
			break loop
		case <-time.After(time.Duration(2000+r.IntN(2000)) * time.Millisecond):
			id := ids[r.IntN(len(ids))]
			workers[id].kill()
			kills++
			workers[id] = c.worker(t, id, flags[id]...)
		}
	}
	t.Logf("produced %d clicks at %.0f/s, killed a worker %d times", n, rate, kills)

	// Let the workers finish, then stop them gracefully and read what committed.
	recsTopic := string(c.topics.Recs)
	waitFor(t, ctx, func() bool { return len(c.readAll(t, recsTopic)) >= n })
	for _, id := range ids {
		workers[id].stop(t)
	}
	missing, dup, distinct := c.verdict(t, sent)
	if distinct != n || missing != 0 || dup != 0 {
		t.Fatalf("%d events with recommendations for %d clicks: %d missing, %d duplicated", distinct, n, missing, dup)
	}

	// The changelog's last value per user counts that user's clicks exactly once.
	state := c.changelogState(t)
	for u, want := range sent.perUser {
		if got := state[u]; got != uint64(want) {
			t.Fatalf("user %s: state counts %d clicks, %d were sent", u, got, want)
		}
	}
	t.Logf("exactly once: %d recommendations, 0 missing, 0 duplicated, state of %d users matches", n, len(sent.perUser))
}

// waitFor polls cond (which reads from Kafka) until it holds or ctx ends.
func waitFor(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not met before the deadline")
		case <-time.After(time.Second):
		}
	}
}

// verdict reads every committed recommendation and counts, against the clicks
// sent, how many got none (missing) and how many got more than one (dup).
func (c *cluster) verdict(t *testing.T, sent *countingSink) (missing, dup, distinct int) {
	t.Helper()
	seen := map[string]int{}
	for _, r := range c.readAll(t, string(c.topics.Recs)) {
		out, err := wire.DecodeRecommendation(r.Value)
		if err != nil {
			t.Fatalf("unreadable recommendation: %v", err)
		}
		seen[out.EventID]++
	}
	for id := range sent.ids {
		switch seen[id] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
	}
	return missing, dup, len(seen)
}
