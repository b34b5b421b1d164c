package loadtest

import (
	"strings"
	"testing"
	"time"
)

func TestSettleRule(t *testing.T) {
	rule := SettleRule{Windows: 3, Tolerance: 0.2, Slack: 2 * time.Millisecond} // last 3 windows within 20 % or 2 ms
	f := func(want bool, p95ms ...float64) {
		t.Helper()
		p := make([]time.Duration, len(p95ms))
		for i, x := range p95ms {
			p[i] = time.Duration(x * float64(time.Millisecond))
			if x < 0 {
				p[i] = unsettled
			}
		}
		if got := rule.Settled(p); got != want {
			t.Errorf("Settled(%v) = %v, want %v", p95ms, got, want)
		}
	}
	f(false)                         // no window yet
	f(false, 12, 12)                 // fewer windows than the rule compares
	f(true, 12, 12, 12)              // flat
	f(false, 59, 40, 25)             // a broker warming up
	f(false, 59, 40, 25, 18, 14)     // still falling: 18/14 > 1.2 and 4 ms apart
	f(true, 59, 40, 25, 14, 13, 12)  // settled: 14/12 ≤ 1.2
	f(true, 5, 6.5, 4.8)             // 35 % apart, but within 2 ms
	f(false, 12, 12, -1)             // a window with an unanswered click
	f(false, -1, -1, -1)             // nothing answered
	f(true, -1, 100, 12, 12.5, 13.9) // only the last three count
	f(false, 10, 12.5, 10)           // 25 % and 2.5 ms apart

	if err := (SettleRule{Windows: 1, Tolerance: 0.2}).Validate(); err == nil || !strings.Contains(err.Error(), "at least 2 windows") {
		t.Fatalf("one window: %v", err)
	}
	if err := DefaultSettleRule().Validate(); err != nil {
		t.Fatal(err)
	}
	if !DefaultSettleRule().Settled([]time.Duration{14 * time.Millisecond, 18 * time.Millisecond, 13 * time.Millisecond}) {
		t.Fatal("the default rule: 13-18 ms is settled (within 5 ms)")
	}
}

func TestP95List(t *testing.T) {
	a, b := 59.1, 12.0
	if got := p95List([]*float64{&a, nil, &b}); got != "59.1, –, 12.0" {
		t.Fatalf("got %q", got)
	}
}

// TestRedisOutagePlan: the outage is centred on the run unless placed, and
// the feature store is checked by default only where the spawned workers
// write Redis.
func TestRedisOutagePlan(t *testing.T) {
	c := DefaultConfig()
	c.Scenario, c.Duration = ScenarioRedisOutage, 30*time.Second
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if d, at := c.outage(), c.outageAt(c.Duration); d != DefaultRedisOutage || at != 12500*time.Millisecond {
		t.Fatalf("outage %v at %v, want 5s at 12.5s", d, at)
	}
	c.RedisOutage, c.RedisOutageAt = 2*time.Second, 3*time.Second
	if d, at := c.outage(), c.outageAt(c.Duration); d != 2*time.Second || at != 3*time.Second {
		t.Fatalf("outage %v at %v", d, at)
	}
	f := func(spawn int, noRedis bool, mode CheckMode, want bool) {
		t.Helper()
		c := DefaultConfig()
		c.SpawnWorkers, c.NoRedis, c.CheckRedis = spawn, noRedis, mode
		if got := c.checksRedis(); got != want {
			t.Errorf("spawn %d no-redis %v mode %d: checks %v, want %v", spawn, noRedis, mode, got, want)
		}
	}
	f(1, false, CheckAuto, true)
	f(1, true, CheckAuto, false)
	f(0, false, CheckAuto, false)
	f(0, false, CheckOn, true)
	f(1, false, CheckOff, false)
}
