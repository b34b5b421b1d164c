package e2e

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/loadtest"
)

// TestFeatureStoreAfterFaults runs two workers writing a private Redis while
// clicks flow, freezes Redis (SIGSTOP: connections hang, writes time out and
// back off) for 4 s, and SIGKILLs one worker during the freeze, restarting
// it under its instance id once Redis answers again (a worker pings Redis
// at start-up and exits if it does not answer). Its pending writes die with
// it: the partitions' next owner must write their users again. Once every
// click is answered, every shopper's feature-store
// entry must match what Kafka committed (loadtest.CheckFeatureStore): none
// stale, missing, resurrected or ahead of the changelog.
func TestFeatureStoreAfterFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two workers and freezes Redis for about 30 s; run without -short")
	}
	c := newCluster(t, 4)
	rs := startRedis(t, "")
	flags := []string{"--scorer", "go", "--no-redis=false", "--redis-addr", rs.addr()}
	workers := map[string]*proc{"w1": c.worker(t, "w1", flags...), "w2": c.worker(t, "w2", flags...)}
	const n, rate = 4000, 200.0 // 20 s of clicks
	ctx := testenv.Context(t, 3*time.Minute)
	producing := c.produceAsync(ctx, n, rate, 11)

	// The faults, at fixed times into the run: Redis frozen from 4 s to 8 s,
	// w2 killed at 6 s and restarted at 8 s.
	faults := time.NewTimer(4 * time.Second)
	defer faults.Stop()
	step := 0
	var sent *countingSink
loop:
	for {
		select {
		case p := <-producing:
			sent = p.must(t)
			break loop
		case <-faults.C:
			switch step {
			case 0:
				if err := rs.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
				t.Log("redis frozen (SIGSTOP)")
				faults.Reset(2 * time.Second)
			case 1:
				workers["w2"].kill()
				t.Log("w2 killed (SIGKILL)")
				faults.Reset(2 * time.Second)
			case 2:
				if err := rs.cmd.Process.Signal(syscall.SIGCONT); err != nil {
					t.Fatal(err)
				}
				workers["w2"] = c.worker(t, "w2", flags...)
				t.Log("redis thawed (SIGCONT), w2 restarted")
			}
			step++
		}
	}
	if step < 3 {
		t.Fatalf("the clicks were all sent before the faults were (step %d)", step)
	}
	recsTopic := string(c.topics.Recs)
	waitFor(t, ctx, func() bool { return len(c.readAll(t, recsTopic)) >= n })
	if missing, dup, _ := c.verdict(t, sent); missing != 0 || dup != 0 {
		t.Fatalf("%d missing, %d duplicated recommendations", missing, dup)
	}

	rc := redis.NewClient(&redis.Options{Addr: rs.addr()})
	defer rc.Close()
	check, err := loadtest.CheckFeatureStore(ctx, &c.kcfg, c.topics, rc, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conv := "not converged"
	if check.ConvergedMs != nil {
		conv = fmt.Sprintf("converged %.0f ms after the first look", *check.ConvergedMs)
	}
	t.Logf("feature store: %d users, %d match, %d mismatched at first, %s (%d rounds)", check.Users, check.Match, check.FirstMismatches, conv, check.Rounds)
	if check.Users < len(sent.perUser) || check.Stale != 0 || check.Missing != 0 || check.Resurrected != 0 || check.Unexpected != 0 {
		t.Fatalf("feature store after a Redis freeze and a SIGKILL: %d users, %d stale, %d missing, %d resurrected, %d unexpected; examples %+v",
			check.Users, check.Stale, check.Missing, check.Resurrected, check.Unexpected, check.Examples)
	}
	for _, w := range workers {
		w.stop(t)
	}
}
