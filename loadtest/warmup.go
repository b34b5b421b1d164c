package loadtest

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/clickrec/clickrec/gen"
)

// The warm-up ends when the latency has settled, not after a fixed number of
// clicks: on a broker started seconds before, the first 1,000 clicks/s
// measured p95 59 ms, falling to about 12 ms over 10 s while the broker's JVM
// warmed up. The warm-up sends at the run's rate in windows (1 s) and ends
// once at least Config.WarmupEvents were sent and every window's clicks were
// answered, and the p95 of the last few windows agree (SettleRule); or,
// with a warning, after Config.WarmupMax.

// SettleRule decides when the warm-up's latency has settled.
type SettleRule struct {
	// Windows: the last this many windows are compared (at least 2).
	Windows int
	// Tolerance: their p95 agree when the highest is at most (1 +
	// Tolerance) × the lowest …
	Tolerance float64
	// Slack: … or at most Slack above it (a few ms of jitter on a p95 of a
	// few ms is not a trend).
	Slack time.Duration
}

// DefaultSettleRule compares the last 3 windows: their p95 within 20 % (or
// 5 ms) of each other. The slack keeps a p95 of 10–15 ms, jittering by a few
// ms on a shared machine, from holding the warm-up to its maximum (a run on
// 2 busy cores needed 40 s to see three 1 s windows within 20 % and 2 ms).
func DefaultSettleRule() SettleRule {
	return SettleRule{Windows: 3, Tolerance: 0.2, Slack: 5 * time.Millisecond}
}

// Validate checks the rule.
func (s SettleRule) Validate() error {
	if s.Windows < 2 || !(s.Tolerance >= 0) || math.IsInf(s.Tolerance, 0) || s.Slack < 0 {
		return fmt.Errorf("the warm-up settle rule needs at least 2 windows and a tolerance and slack ≥ 0, got %d windows, %v, %v", s.Windows, s.Tolerance, s.Slack)
	}
	return nil
}

// Settled reports whether the latency has settled, given the p95 of every
// window so far, oldest first; a window with an unanswered click (or none
// at all) has p95 +Inf and never agrees with another.
func (s SettleRule) Settled(p95 []time.Duration) bool {
	if len(p95) < s.Windows {
		return false
	}
	lo, hi := time.Duration(math.MaxInt64), time.Duration(0)
	for _, p := range p95[len(p95)-s.Windows:] {
		if p == unsettled {
			return false
		}
		lo, hi = min(lo, p), max(hi, p)
	}
	return float64(hi) <= (1+s.Tolerance)*float64(lo) || hi-lo <= s.Slack
}

// unsettled is the p95 of a window with an unanswered click or no click.
const unsettled = time.Duration(math.MaxInt64)

// WarmupReport says how the warm-up went.
type WarmupReport struct {
	Sent       int64 `json:"sent"`
	Duplicates int64 `json:"duplicates"`
	Unexpected int64 `json:"unexpected"`
	// TookS is how long it sent; RateTarget at which rate.
	TookS      float64 `json:"took_s"`
	RateTarget float64 `json:"rate_target"`
	// Settled: it ended because the latency settled (false: after
	// WarmupMax, with a warning note).
	Settled bool `json:"settled"`
	// WindowS and WindowP95Ms: the p95 of the clicks due in each window, in
	// ms (null: a click of the window was not answered when it was judged).
	WindowS     float64    `json:"window_s"`
	WindowP95Ms []*float64 `json:"window_p95_ms"`
}

// warmUp sends the warm-up clicks until the latency has settled (or
// WarmupMax) and waits until every one is answered: every partition
// assigned, restored and answering, at the latency it will keep, before the
// clock starts.
func (r *runner) warmUp(ctx context.Context) error {
	cfg := &r.cfg
	rate := cfg.WarmupRate
	if rate == 0 {
		rate = r.plan.Phases[0].Rate
	}
	r.warm = WarmupReport{RateTarget: round3(rate), WindowS: cfg.WarmupWindow.Seconds()}
	r.log.Info("loadtest warm-up", "min_events", cfg.WarmupEvents, "rate", rate, "max", cfg.WarmupMax, "topic", r.topics.Events, "group", cfg.Group)
	sctx, stopSending := context.WithCancel(ctx)
	defer stopSending()
	start := r.clock.Now()
	type result struct {
		st  gen.Stats
		err error
	}
	sent := make(chan result, 1)
	go func() {
		st, err := gen.Run(sctx, gen.RunConfig{
			Source: &trackingSource{src: r.warmSrc, tr: r.tr, outOfOrderness: cfg.OutOfOrderness, warm: true},
			Pacer:  gen.NewPacer(r.clock, start, gen.ConstantRate(rate)),
			Sink:   r.sink,
		})
		sent <- result{st, err}
	}()
	settled, err := r.watchWarmup(sctx, start, rate)
	stopSending()
	res := <-sent
	r.warm.TookS = round3(time.Since(start).Seconds())
	r.warm.Settled = settled
	if err == nil && res.err != nil {
		err = fmt.Errorf("warm-up: %w", res.err)
	}
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if !settled {
		r.notes = append(r.notes, fmt.Sprintf("warning: the warm-up's latency had not settled after %v (p95 by window: %s ms); measured anyway", cfg.WarmupMax, p95List(r.warm.WindowP95Ms)))
		r.log.Warn("loadtest warm-up did not settle; measuring anyway", "after", cfg.WarmupMax, "p95_ms", p95List(r.warm.WindowP95Ms))
	}
	r.tr.SealWarmup()
	wctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()
	select {
	case <-r.tr.WarmupDone():
		r.log.Info("loadtest warm-up done", "took", time.Since(start).Round(time.Millisecond), "events", res.st.Sent, "settled", settled, "p95_ms", p95List(r.warm.WindowP95Ms))
		return nil
	case <-wctx.Done():
		if ctx.Err() != nil {
			return ctx.Err()
		}
		must, got := r.tr.WarmupProgress()
		return fmt.Errorf("the hot path answered %d of %d warm-up events within %v of the last (is it running, on topic %s, in group %s?%s)",
			got, must, cfg.ReadyTimeout, r.topics.Events, cfg.Group, logHint(r.fleet))
	}
}

// watchWarmup judges each window of the warm-up once its clicks had time to
// be answered (half a window after it ends) and returns true once at least
// WarmupEvents were sent, all answered, and the latency has settled; false
// after WarmupMax. It fails if nothing was answered within ReadyTimeout.
func (r *runner) watchWarmup(ctx context.Context, start time.Time, rate float64) (bool, error) {
	cfg := &r.cfg
	w := cfg.WarmupWindow
	grace := w / 2
	base := r.tr.Since(start)
	var p95s []time.Duration
	minWindows := int(math.Ceil(float64(cfg.WarmupEvents) / (rate * w.Seconds())))
	for k := 0; ; k++ {
		end := time.Duration(k+1) * w
		if end > cfg.WarmupMax {
			return false, nil
		}
		t := time.NewTimer(time.Until(start.Add(end + grace)))
		select {
		case <-ctx.Done():
			t.Stop()
			return false, nil
		case <-t.C:
		}
		n, unanswered, h := r.tr.WarmWindow(base+int64(end-w), base+int64(end))
		p95 := unsettled
		if n > 0 && unanswered == 0 {
			p95 = time.Duration(h.ValueAtPercentile(95)) * time.Microsecond
			v := float64(p95.Microseconds()) / 1000
			r.warm.WindowP95Ms = append(r.warm.WindowP95Ms, &v)
		} else {
			r.warm.WindowP95Ms = append(r.warm.WindowP95Ms, nil)
		}
		p95s = append(p95s, p95)
		if _, got := r.tr.WarmupProgress(); got == 0 && end+grace >= cfg.ReadyTimeout {
			return false, fmt.Errorf("no warm-up event was answered within %v (is the hot path running, on topic %s, in group %s?%s)", cfg.ReadyTimeout, r.topics.Events, cfg.Group, logHint(r.fleet))
		}
		if k+1 >= minWindows && cfg.WarmupSettle.Settled(p95s) {
			return true, nil
		}
	}
}

// p95List formats the warm-up's window p95s: "59.1, 40.2, –, 12.0".
func p95List(p95 []*float64) string {
	s := ""
	for i, p := range p95 {
		if i > 0 {
			s += ", "
		}
		if p == nil {
			s += "–"
			continue
		}
		s += fmt.Sprintf("%.1f", *p)
	}
	return s
}
