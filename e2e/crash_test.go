package e2e

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/gen"
	"github.com/clickrec/clickrec/hotpath"
	"github.com/clickrec/clickrec/internal/testenv"
)

// produceShop sends n valid, in-order clicks of the synthetic shop at rate/s to
// the events topic and returns what it sent.
func (c *cluster) produceShop(ctx context.Context, t *testing.T, n int, rate float64, seed uint64) *countingSink {
	cfg := gen.DefaultConfig()
	cfg.Seed, cfg.Users, cfg.LateShare, cfg.InvalidShare = seed, 500, 0, 0
	src, err := gen.NewSynthetic(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(c.kcfg.Opts("e2e-producer")...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sink := gen.NewKafkaSink(cl, string(c.topics.Events))
	clock := &gen.SystemClock{}
	counter := &countingSink{Sink: sink, perUser: map[string]int{}, ids: map[string]bool{}}
	st, err := gen.Run(ctx, gen.RunConfig{Source: src, Sink: counter, Count: int64(n),
		Pacer: gen.NewPacer(clock, clock.Now(), gen.ConstantRate(rate))})
	if err != nil {
		t.Fatal(err)
	}
	if st.Sent != int64(n) || sink.Acked() != int64(n) {
		t.Fatalf("sent %d, acked %d of %d events", st.Sent, sink.Acked(), n)
	}
	return counter
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
	workers := map[string]*proc{}
	for _, id := range ids {
		workers[id] = c.worker(t, id, "--scorer", "go")
	}
	const n, rate = 6000, 200.0 // 30 s of clicks
	ctx := testenv.Context(t, 3*time.Minute)
	produced := make(chan *countingSink, 1)
	go func() { produced <- c.produceShop(ctx, t, n, rate, 7) }()

	r := rand.New(rand.NewPCG(1, 2))
	kills := 0
	var sent *countingSink
loop:
	for {
		select {
		case sent = <-produced:
			break loop
		case <-time.After(time.Duration(2000+r.IntN(2000)) * time.Millisecond):
			id := ids[r.IntN(len(ids))]
			workers[id].kill()
			kills++
			workers[id] = c.worker(t, id, "--scorer", "go")
		}
	}
	t.Logf("produced %d clicks at %.0f/s, killed a worker %d times", n, rate, kills)

	// Let the workers finish, then stop them gracefully and read what committed.
	recsTopic := string(c.topics.Recs)
	waitFor(t, ctx, func() bool { return len(c.readAll(t, recsTopic)) >= n })
	for _, id := range ids {
		workers[id].stop(t)
	}
	seen := map[string]int{}
	for _, rec := range c.readAll(t, recsTopic) {
		var out struct {
			EventID string `json:"event_id"`
		}
		if err := json.Unmarshal(rec.Value, &out); err != nil {
			t.Fatalf("recommendation is not JSON: %s", rec.Value)
		}
		seen[out.EventID]++
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
	if len(seen) != n || missing != 0 || dup != 0 {
		t.Fatalf("%d events with recommendations for %d clicks: %d missing, %d duplicated", len(seen), n, missing, dup)
	}

	// The changelog's last value per user counts that user's clicks exactly once.
	state := map[string]uint64{}
	for _, rec := range c.readAll(t, string(c.topics.Changelog)) {
		if rec.Value == nil {
			delete(state, string(rec.Key))
			continue
		}
		s, ok, err := hotpath.DecodeChangelog(rec.Key, rec.Value)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			state[s.User] = s.Seq
		}
	}
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
