package loadtest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/clickrec/clickrec/internal/redisutil"
)

// A Redis outage during the measured run (--redis-outage, the redis-outage
// scenario): the stream must not notice (latency and counts as always) and
// the feature store must catch up afterwards (the feature-store check).

// Outage is one Redis outage made during the measured run.
type Outage struct {
	AtS  float64 `json:"at_s"`  // since the start of the measured run
	EndS float64 `json:"end_s"` // when Redis answered again (planned: the pause's end)
	// Method: "CLIENT PAUSE ALL" (every client's commands wait, the
	// workers' time out and retry with back-off).
	Method string `json:"method"`
	Note   string `json:"note,omitempty"` // what went wrong, if anything
	// After is the latency of the clicks due in the AfterEventWindow from AtS.
	After *AfterEvent `json:"after,omitempty"`
}

// runOutage pauses the Redis at rcfg for d from at (since start), unless
// gen ends first: CLIENT PAUSE <ms> ALL, which the server lifts by itself,
// so an interrupted load test cannot leave Redis paused. It returns once
// Redis answers again.
func runOutage(gen context.Context, rcfg redisutil.Config, start time.Time, at, d time.Duration,
	watch func(at time.Duration, what string), log *slog.Logger) (*Outage, []string) {
	t := time.NewTimer(time.Until(start.Add(at)))
	select {
	case <-gen.Done():
		t.Stop()
		return nil, nil
	case <-t.C:
	}
	rc := rcfg.Client()
	defer rc.Close()
	o := &Outage{AtS: round3(time.Since(start).Seconds()), Method: "CLIENT PAUSE ALL"}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(gen), 5*time.Second)
	defer cancel()
	if err := rc.Do(ctx, "CLIENT", "PAUSE", d.Milliseconds(), "ALL").Err(); err != nil {
		o.Note = fmt.Sprintf("cannot pause Redis at %s: %v", rcfg.Addr, err)
		return o, []string{"redis outage: " + o.Note}
	}
	log.Warn("loadtest redis outage: Redis paused", "addr", rcfg.Addr, "for", d, "t", time.Since(start).Round(100*time.Millisecond))
	watch(time.Duration(o.AtS*float64(time.Second)), "Redis outage")
	// Wait for the pause to end: this PING waits behind it.
	pctx, cancel2 := context.WithTimeout(context.WithoutCancel(gen), d+10*time.Second)
	defer cancel2()
	for {
		err := rc.Ping(pctx).Err()
		if err == nil {
			break
		}
		if pctx.Err() != nil {
			o.Note = fmt.Sprintf("Redis did not answer within %v of the pause's end: %v", 10*time.Second, err)
			return o, []string{"redis outage: " + o.Note}
		}
	}
	o.EndS = round3(time.Since(start).Seconds())
	log.Info("loadtest redis outage over", "t", time.Since(start).Round(100*time.Millisecond))
	return o, nil
}

// verifyFeatureStore runs the feature-store check after the drain, if the
// run asks for it and was not interrupted.
func (r *runner) verifyFeatureStore(ctx context.Context, m *measured) *FeatureStoreCheck {
	if !r.cfg.checksRedis() || m.interrupted {
		return nil
	}
	rc := r.cfg.Redis.Client()
	defer rc.Close()
	r.log.Info("loadtest checking the feature store", "redis", r.cfg.Redis.Addr, "timeout", r.cfg.CheckRedisTimeout)
	c, err := CheckFeatureStore(ctx, &r.cfg.Kafka, r.topics, rc, r.cfg.CheckRedisTimeout)
	if err != nil {
		c.Error = err.Error()
		r.log.Error("feature-store check failed", "err", err)
		return &c
	}
	conv := "no"
	if c.ConvergedMs != nil {
		conv = fmt.Sprintf("%.0fms", *c.ConvergedMs)
	}
	r.log.Info("loadtest feature store checked", "users", c.Users, "match", c.Match, "stale", c.Stale, "missing", c.Missing,
		"resurrected", c.Resurrected, "unexpected", c.Unexpected, "first_mismatches", c.FirstMismatches, "converged", conv)
	return &c
}

// breach says why the check fails the run ("" if it passes).
func (c *FeatureStoreCheck) breach() string {
	switch {
	case c.Error != "":
		return "feature-store check: " + c.Error
	case c.Mismatches() > 0:
		return fmt.Sprintf("feature store: %d of %d users do not match Kafka %.0f s after the drain (%s)", c.Mismatches(), c.Users, c.TimeoutMs/1000, c.counts())
	}
	return ""
}

// counts formats the classes with a count.
func (c *FeatureStoreCheck) counts() string {
	parts := []string{fmt.Sprintf("%d match", c.Match)}
	for _, x := range []struct {
		n    int
		name string
	}{{c.Stale, EntryStale}, {c.Missing, EntryMissing}, {c.Resurrected, EntryResurrected}, {c.Unexpected, EntryUnexpected}} {
		parts = append(parts, fmt.Sprintf("%d %s", x.n, x.name))
	}
	return strings.Join(parts, ", ")
}
