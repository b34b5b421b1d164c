// Package loadtest proves the hot path's SLA end to end, the way a shop would
// see it: an open-model generator sends clicks to user_events at a fixed
// arrival rate (every event has an intended send time, and latency counts
// from it, so a stalled system cannot hide behind a slowed-down generator); a
// read_committed reader of recommendations matches each recommendation to its
// click by event_id; after a drain it counts what is missing, doubled or
// should not exist, and judges the run against SLA thresholds (p95, p99,
// missing, duplicates), k6-style: the verdict decides the exit code.
//
// Scenarios: steady (one rate), ramp (steps of rising rate; finds the highest
// rate that still meets the SLA), burst (a base rate with periodic bursts),
// late (a share of out-of-order and invalid clicks), chaos (SIGKILLs and
// restarts of worker processes during the load, still demanding 0 missing and
// 0 duplicates), rolling (graceful restarts of the workers one by one, as a
// rolling update makes them), scale (workers added and stopped again) and
// redis-outage (Redis paused mid-run; --redis-outage adds that to any
// scenario); the last three are judged on the whole SLA and report the
// latency just after each change. After the drain, the feature-store check
// (CheckFeatureStore) compares every shopper's Redis entry with what Kafka
// committed. The warm-up lasts until its latency has settled (SettleRule). Traffic is gen's synthetic shop or a time-compressed replay
// of the real Taobao events.
//
// The load test either spawns the hot path workers itself, as child
// processes of the clickrec binary on fresh topics (--topic-prefix) and a
// fresh group, and stops them at the end, or targets workers already running.
// Spawned workers run the real pipeline by default: they serve a model (one
// the load test trains on the traffic's history first, or --model-dir) and
// write the Redis feature store; the report counts the recommendations by
// strategy, and a run whose workers fell back to popularity fails.
// It writes a text summary, a JSON report and two PNG plots (latency
// percentiles over time; the latency distribution).
package loadtest

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/clickrec/clickrec/gen"
	"github.com/clickrec/clickrec/hotpath"
	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/internal/redisutil"
)

// Scenarios.
const (
	ScenarioSteady = "steady"
	ScenarioRamp   = "ramp"
	ScenarioBurst  = "burst"
	ScenarioLate   = "late"
	ScenarioChaos  = "chaos"
	// ScenarioRolling restarts the spawned workers gracefully, one every
	// Config.RestartEvery, in turn (see RollingSchedule).
	ScenarioRolling = "rolling"
	// ScenarioScale starts with the spawned workers, adds workers up to
	// Config.ScaleTo and stops them again (see ScaleSchedule).
	ScenarioScale = "scale"
	// ScenarioRedisOutage is a steady run during which Redis is paused for
	// Config.RedisOutage (DefaultRedisOutage unless given); the feature
	// store must catch up after it (see CheckFeatureStore).
	ScenarioRedisOutage = "redis-outage"
)

// DefaultRedisOutage is the length of the redis-outage scenario's outage.
const DefaultRedisOutage = 5 * time.Second

// CheckMode says whether the feature store is checked after the drain.
type CheckMode uint8

// Check modes (Config.CheckRedis).
const (
	CheckAuto CheckMode = iota // check when the spawned workers write Redis
	CheckOn                    // check (running workers: the Redis at Config.Redis)
	CheckOff                   // do not check
)

// Config is one load test run. Start from DefaultConfig.
type Config struct {
	Scenario string // ScenarioSteady, …
	Source   string // "synthetic" or "taobao"

	Rate          float64       // steady, late, chaos: events/s; burst: the base rate
	Duration      time.Duration // steady, late, chaos, burst; taobao: cut the replay (0: all of it)
	Rates         []float64     // ramp steps, events/s
	StepDuration  time.Duration // ramp
	BurstRate     float64       // burst: events/s during a burst
	BurstEvery    time.Duration // burst: period
	BurstDuration time.Duration // burst: length of each burst

	Shop       gen.Config // synthetic shop, and the late and invalid shares of either source
	TaobaoFile string
	Speedup    float64 // taobao time compression

	// NewItems: the synthetic shop launches this many new items during the
	// measured run (gen.NewItem), over its first NewItemsSpan of it, and the
	// report measures how soon each is recommended (FreshnessReport). Not in
	// the warm-up, nor in the history the model is trained on.
	NewItems int

	// The warm-up sends synthetic events at WarmupRate (0: the run's first
	// phase's rate) until at least WarmupEvents were sent and answered and
	// the p95 of the last WarmupSettle.Windows windows of WarmupWindow
	// settled (see SettleRule), or for at most WarmupMax.
	WarmupEvents  int
	WarmupRate    float64
	WarmupWindow  time.Duration
	WarmupMax     time.Duration
	WarmupSettle  SettleRule
	ReadyTimeout  time.Duration // for workers to be ready and the warm-up to be answered
	DrainTimeout  time.Duration // for the last recommendations after the last send
	ProgressEvery time.Duration // progress log interval

	Kafka          kafkautil.Config // brokers; Partitions for the topics it creates
	KafkaFlags     []string         // further --kafka-* flags (SASL, TLS, …) passed on to spawned workers
	TopicPrefix    string           // "" with spawned workers: a fresh "loadtest-<time>-" prefix
	Group          string           // hot path consumer group ("" with spawned workers: <prefix>hotpath)
	KeepTopics     bool             // keep the topics of a spawned run (deleted by default)
	ProducerLinger time.Duration    // of the generator's producer

	SpawnWorkers int    // 0: target running workers
	ClickrecBin  string // binary to spawn ("": this executable)

	// What spawned workers serve and write. By default they serve a model the
	// load test trains on the traffic's history (TrainClicks clicks) and
	// write the Redis feature store at Redis.
	NoModel     bool   // serve no model and learn nothing online: every recommendation is the popularity fallback
	ModelDir    string // serve this saved model (clickrec train --out) instead of training one
	TrainClicks int    // history clicks to train on (0: DefaultTrainClicksPerItem × Shop.Items; taobao: the whole replay)
	NoRedis     bool   // run the workers with --no-redis
	Redis       redisutil.Config
	RedisFlags  []string // further --redis-* flags given (db, dial timeout), passed on to spawned workers
	// ExpectModel: the running workers (SpawnWorkers 0) serve a model, so
	// the model share is judged (spawned workers: unless NoModel).
	ExpectModel bool

	WorkerFlags  []string      // extra flags for spawned workers
	WorkerEnv    []string      // extra environment for spawned workers
	AtLeastOnce  bool          // spawned workers run --exactly-once=false (for comparison); external: what they run
	KillEvery    time.Duration // chaos: SIGKILL a worker this often
	KillAll      bool          // chaos: kill every worker at once
	RestartDelay time.Duration // chaos: wait this long before restarting a killed worker
	RestartEvery time.Duration // rolling: gracefully restart one worker this often
	ScaleTo      int           // scale: workers at the peak (from SpawnWorkers, and back)

	// CheckRedis: after the drain, compare every shopper's Redis entry with
	// what Kafka committed (CheckFeatureStore), waiting up to
	// CheckRedisTimeout for the asynchronous writes to converge. Any
	// mismatch fails the run.
	CheckRedis        CheckMode
	CheckRedisTimeout time.Duration
	// RedisOutage pauses Redis (CLIENT PAUSE ALL) for this long during the
	// measured run, from RedisOutageAt (0: centred on the run's middle).
	// 0: no outage, except in ScenarioRedisOutage (DefaultRedisOutage).
	RedisOutage   time.Duration
	RedisOutageAt time.Duration

	OutOfOrderness time.Duration // the workers' bounded out-of-orderness (see Classify)
	SLA            SLA
	OutDir         string // worker logs, the trained model
}

// DefaultTrainClicksPerItem sets how much history the load test trains its
// model on: 100 clicks per catalogue item, 1,000,000 for the default 10,000
// items. With Zipf popularity the rarest items are about 1/(items·H(items))
// of the clicks, so that many clicks see every item of the catalogue (the
// model then knows all of it), and plain ALS (no next-item epochs) trains
// them in about 6 s on 2 cores.
const DefaultTrainClicksPerItem = 100

// DefaultConfig returns a steady run of 1,000 synthetic events/s for 60 s
// against one spawned worker, judged by DefaultSLA.
func DefaultConfig() Config {
	shop := gen.DefaultConfig()
	shop.Users, shop.LateShare, shop.InvalidShare = 100_000, 0, 0.01
	return Config{
		Scenario: ScenarioSteady, Source: "synthetic",
		Rate: 1000, Duration: 60 * time.Second,
		Rates: []float64{1000, 2000, 5000, 10000, 20000, 30000}, StepDuration: 20 * time.Second,
		BurstRate: 10_000, BurstEvery: 15 * time.Second, BurstDuration: 2 * time.Second,
		Shop: shop, TaobaoFile: gen.DefaultTaobaoFile, Speedup: 60,
		WarmupEvents: 1000, WarmupWindow: time.Second, WarmupMax: 60 * time.Second, WarmupSettle: DefaultSettleRule(),
		CheckRedisTimeout: 30 * time.Second,
		ReadyTimeout:      90 * time.Second, DrainTimeout: 60 * time.Second,
		ProgressEvery:  5 * time.Second,
		Kafka:          kafkautil.Config{Partitions: 4, ReplicationFactor: 1, DialTimeout: 10 * time.Second},
		SpawnWorkers:   1,
		KillEvery:      15 * time.Second,
		RestartEvery:   8 * time.Second,
		ScaleTo:        3,
		OutOfOrderness: hotpath.DefaultConfig().OutOfOrderness,
		SLA:            DefaultSLA(),
		OutDir:         "out/loadtest",
		Redis:          redisutil.Config{Addr: "127.0.0.1:6379", DialTimeout: 5 * time.Second},
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	switch c.Scenario {
	case ScenarioSteady, ScenarioLate, ScenarioChaos, ScenarioRolling, ScenarioScale, ScenarioRedisOutage:
	case ScenarioRamp, ScenarioBurst:
		if c.Source != "synthetic" {
			bad("scenario %s needs the synthetic source: the Taobao replay keeps its own timing", c.Scenario)
		}
	default:
		bad("unknown scenario %q: want steady, ramp, burst, late, chaos, rolling, scale or redis-outage", c.Scenario)
	}
	if c.Source != "synthetic" && c.Source != "taobao" {
		bad("unknown source %q: want synthetic or taobao", c.Source)
	}
	if c.Source == "synthetic" && c.Scenario != ScenarioRamp {
		if !(c.Rate > 0) || math.IsInf(c.Rate, 0) {
			bad("rate must be a positive number of events/s, got %v", c.Rate)
		}
		if c.Duration <= 0 {
			bad("duration must be positive, got %v", c.Duration)
		}
	}
	if c.Scenario == ScenarioRamp {
		if len(c.Rates) == 0 {
			bad("a ramp needs at least one rate")
		}
		if c.StepDuration <= 0 {
			bad("step duration must be positive, got %v", c.StepDuration)
		}
	}
	if c.Scenario == ScenarioBurst && (c.BurstDuration <= 0 || c.BurstEvery <= c.BurstDuration || !(c.BurstRate > 0)) {
		bad("a burst needs a positive burst rate and 0 < burst duration (%v) < burst period (%v)", c.BurstDuration, c.BurstEvery)
	}
	if c.Source == "taobao" && !(c.Speedup > 0) {
		bad("the taobao replay needs a speedup above 0 (the load test is always paced), got %v", c.Speedup)
	}
	if err := c.Shop.Validate(); err != nil {
		errs = append(errs, err)
	}
	switch {
	case c.NewItems < 0:
		bad("--new-items must not be negative, got %d", c.NewItems)
	case c.NewItems > 0 && c.Source != "synthetic":
		bad("--new-items %d needs --source synthetic: the Taobao replay launches no items of its own", c.NewItems)
	}
	switch {
	case c.SLA.MaxFreshness < 0:
		bad("--sla-max-freshness must not be negative, got %v", c.SLA.MaxFreshness)
	case c.SLA.MaxFreshness > 0 && c.NewItems == 0:
		bad("--sla-max-freshness %v judges the new items the shop launches: give --new-items too (20, say)", c.SLA.MaxFreshness)
	}
	if c.Scenario == ScenarioChaos {
		if c.SpawnWorkers < 1 {
			bad("the chaos scenario kills worker processes it spawned itself: set spawn workers to 1 or more")
		}
		if c.KillEvery <= 0 {
			bad("kill interval must be positive, got %v", c.KillEvery)
		}
	}
	if c.Scenario == ScenarioRolling {
		if c.SpawnWorkers < 1 {
			bad("the rolling scenario restarts worker processes it spawned itself: set spawn workers to 1 or more")
		}
		if c.RestartEvery <= 0 {
			bad("restart interval must be positive, got %v", c.RestartEvery)
		}
	}
	if c.Scenario == ScenarioScale {
		if c.SpawnWorkers < 1 {
			bad("the scale scenario starts and stops worker processes itself: set spawn workers (the workers it starts with) to 1 or more")
		}
		if c.ScaleTo <= c.SpawnWorkers {
			bad("the scale scenario needs --scale-to (%d) above the workers it starts with (%d)", c.ScaleTo, c.SpawnWorkers)
		}
	}
	if c.SpawnWorkers < 0 {
		bad("spawn workers must be 0 (target running workers) or more, got %d", c.SpawnWorkers)
	}
	if c.SpawnWorkers == 0 && c.Group == "" {
		bad("with running workers (no spawned ones), the group must name theirs")
	}
	workerModel := hasFlag(c.WorkerFlags, "model-dir")
	switch {
	case c.NoModel && (c.ModelDir != "" || workerModel):
		bad("--no-model and --model-dir exclude each other")
	case c.ModelDir != "" && workerModel:
		bad("--model-dir is given twice, to the load test and in --worker-flag: give it once")
	case c.ModelDir != "" && c.SpawnWorkers == 0:
		bad("--model-dir is for spawned workers; running workers serve the model they were started with")
	}
	for _, name := range []string{"no-model", "no-redis"} {
		if hasFlag(c.WorkerFlags, name) {
			bad("pass --%s to the load test, not in --worker-flag: it decides what the workers are given and what the report says", name)
		}
	}
	if c.TrainClicks < 0 {
		bad("train clicks must not be negative, got %d", c.TrainClicks)
	}
	if c.TrainClicks > 0 && (c.NoModel || c.ModelDir != "" || workerModel || c.SpawnWorkers == 0) {
		bad("--train-clicks is for the model the load test trains for its spawned workers, not with --no-model, --model-dir or running workers")
	}
	if !(c.SLA.MinModelShare >= 0 && c.SLA.MinModelShare <= 1) {
		bad("the minimum model share must be in [0, 1], got %v", c.SLA.MinModelShare)
	}
	if c.SpawnWorkers > 0 && !c.NoRedis && c.Redis.Addr == "" {
		bad("--redis-addr is empty: give the address of a redis-server, or --no-redis")
	}
	if c.WarmupEvents < 1 || !(c.WarmupRate >= 0) || math.IsInf(c.WarmupRate, 0) {
		bad("warm-up needs at least 1 event at a positive rate (0: the run's)")
	}
	if c.WarmupWindow <= 0 || c.WarmupMax < c.WarmupWindow {
		bad("the warm-up window (%v) must be positive and the maximum warm-up (%v) at least one window", c.WarmupWindow, c.WarmupMax)
	}
	if err := c.WarmupSettle.Validate(); err != nil {
		errs = append(errs, err)
	}
	c.validateRedisChecks(bad)
	if c.ReadyTimeout <= 0 || c.DrainTimeout <= 0 {
		bad("ready and drain timeouts must be positive")
	}
	if c.OutOfOrderness <= 0 {
		bad("out-of-orderness must be positive, got %v", c.OutOfOrderness)
	}
	if _, err := kafkautil.PrefixedTopics(c.TopicPrefix); err != nil {
		errs = append(errs, err)
	}
	if err := c.Kafka.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// writesRedis reports whether the workers under test write a Redis the
// load test knows: spawned ones unless NoRedis; running ones when asked to
// check or pause it.
func (c *Config) writesRedis() bool {
	if c.SpawnWorkers > 0 {
		return !c.NoRedis
	}
	return c.CheckRedis == CheckOn || c.outage() > 0
}

// checksRedis reports whether the feature store is checked after the drain.
func (c *Config) checksRedis() bool {
	switch c.CheckRedis {
	case CheckOn:
		return true
	case CheckAuto:
		return c.SpawnWorkers > 0 && !c.NoRedis
	}
	return false
}

// outage returns the length of the Redis outage (0: none).
func (c *Config) outage() time.Duration {
	if c.RedisOutage == 0 && c.Scenario == ScenarioRedisOutage {
		return DefaultRedisOutage
	}
	return c.RedisOutage
}

// outageAt returns when the Redis outage begins in a run of length d.
func (c *Config) outageAt(d time.Duration) time.Duration {
	if c.RedisOutageAt > 0 {
		return c.RedisOutageAt
	}
	return max(d-c.outage(), 0) / 2
}

// validateRedisChecks checks the feature-store check and the Redis outage.
func (c *Config) validateRedisChecks(bad func(format string, a ...any)) {
	noRedis := c.SpawnWorkers > 0 && c.NoRedis
	if c.CheckRedis == CheckOn && noRedis {
		bad("--check-redis checks the Redis the workers write: not with --no-redis")
	}
	if c.CheckRedis == CheckOn && c.Redis.Addr == "" {
		bad("--check-redis needs --redis-addr, the Redis the workers write")
	}
	if c.CheckRedisTimeout <= 0 {
		bad("the feature-store check's timeout must be positive, got %v", c.CheckRedisTimeout)
	}
	d := c.outage()
	switch {
	case d < 0 || c.RedisOutageAt < 0:
		bad("--redis-outage (%v) and --redis-outage-at (%v) must not be negative", c.RedisOutage, c.RedisOutageAt)
	case d == 0 && c.RedisOutageAt > 0:
		bad("--redis-outage-at without --redis-outage (or --scenario redis-outage)")
	case d == 0:
	case noRedis:
		bad("a Redis outage needs workers that write Redis: not with --no-redis")
	case c.Redis.Addr == "":
		bad("a Redis outage needs --redis-addr, the Redis the workers write")
	case d%time.Millisecond != 0:
		bad("--redis-outage must be whole milliseconds (CLIENT PAUSE takes ms), got %v", d)
	case c.Source == "synthetic" && c.Scenario != ScenarioRamp && c.outageAt(c.Duration)+d >= c.Duration:
		bad("the Redis outage (%v from %v) must end before the run does (%v)", d, c.outageAt(c.Duration), c.Duration)
	}
}

// plan builds the schedule and the traffic source of the measured run.
func (c *Config) plan() (*Plan, gen.Source, error) {
	if c.Source == "taobao" {
		t, err := gen.OpenTaobao(c.TaobaoFile)
		if err != nil {
			return nil, nil, err
		}
		rp, err := gen.NewReplay(t, gen.ReplayConfig{Speedup: c.Speedup, Seed: c.Shop.Seed, LateShare: c.Shop.LateShare, InvalidShare: c.Shop.InvalidShare})
		if err != nil {
			return nil, nil, fmt.Errorf("cannot replay %s: %w", c.TaobaoFile, err)
		}
		n := int64(rp.Len())
		if c.Duration > 0 {
			n = int64(sort.Search(rp.Len(), func(i int) bool { return rp.Offset(int64(i)) >= c.Duration }))
		}
		p, err := ReplayPlan(rp, n)
		return p, rp, err
	}
	var (
		p   *Plan
		err error
	)
	switch c.Scenario {
	case ScenarioRamp:
		p, err = RampPlan(c.Rates, c.StepDuration)
	case ScenarioBurst:
		p, err = BurstPlan(c.Rate, c.BurstRate, c.BurstEvery, c.BurstDuration, c.Duration)
	default:
		p, err = SteadyPlan(c.Rate, c.Duration)
	}
	if err != nil {
		return nil, nil, err
	}
	shop := c.Shop
	if c.NewItems > 0 {
		shop.NewItems, shop.NewItemsOver = c.NewItems, NewItemsSpan(p.Duration())
	}
	src, err := gen.NewSynthetic(shop)
	if err != nil {
		return nil, nil, err
	}
	return p, src, nil
}

// NewItemsSpan is the part of a measured run of length d over which the
// new items are introduced (Config.NewItems): its first three quarters, so
// that the last item introduced has a quarter of the run to be learned and
// recommended before the clicks stop.
func NewItemsSpan(d time.Duration) time.Duration { return d * 3 / 4 }
