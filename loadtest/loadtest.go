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
// rolling update makes them) and scale (workers added and stopped again);
// the last two are judged on the whole SLA and report the latency just after
// each change. Traffic is gen's synthetic shop or a time-compressed replay
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
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

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

	WarmupEvents  int           // synthetic events sent and answered before measuring
	WarmupRate    float64       // events/s of the warm-up
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
	NoModel     bool   // serve no model: every recommendation is the popularity fallback
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
		WarmupEvents: 1000, WarmupRate: 1000, ReadyTimeout: 90 * time.Second, DrainTimeout: 60 * time.Second,
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
	case ScenarioSteady, ScenarioLate, ScenarioChaos, ScenarioRolling, ScenarioScale:
	case ScenarioRamp, ScenarioBurst:
		if c.Source != "synthetic" {
			bad("scenario %s needs the synthetic source: the Taobao replay keeps its own timing", c.Scenario)
		}
	default:
		bad("unknown scenario %q: want steady, ramp, burst, late, chaos, rolling or scale", c.Scenario)
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
	if c.WarmupEvents < 1 || !(c.WarmupRate > 0) {
		bad("warm-up needs at least 1 event at a positive rate")
	}
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
	src, err := gen.NewSynthetic(c.Shop)
	if err != nil {
		return nil, nil, err
	}
	var p *Plan
	switch c.Scenario {
	case ScenarioRamp:
		p, err = RampPlan(c.Rates, c.StepDuration)
	case ScenarioBurst:
		p, err = BurstPlan(c.Rate, c.BurstRate, c.BurstEvery, c.BurstDuration, c.Duration)
	default:
		p, err = SteadyPlan(c.Rate, c.Duration)
	}
	return p, src, err
}

// Run runs the load test and returns its report. The error is about running
// it (a broker that cannot be reached, workers that do not start); whether
// the SLA was met is in the report (Report.Err). When ctx ends the generator
// stops, the workers are stopped and the report says it was interrupted.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (*Report, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	plan, src, err := cfg.plan()
	if err != nil {
		return nil, err
	}
	spawn := cfg.SpawnWorkers > 0
	autoTopics := spawn && cfg.TopicPrefix == ""
	if autoTopics {
		cfg.TopicPrefix = fmt.Sprintf("loadtest-%s-%d-", time.Now().UTC().Format("20060102-150405"), os.Getpid())
	}
	if cfg.Group == "" {
		cfg.Group = cfg.TopicPrefix + "hotpath"
	}
	topics, err := kafkautil.PrefixedTopics(cfg.TopicPrefix)
	if err != nil {
		return nil, err
	}
	var notes []string
	// The servers first, so that a missing one fails in a second, not after
	// the model is trained.
	redisRep := RedisReport{Detail: "running workers: not known to the load test"}
	if spawn {
		if redisRep, err = checkRedis(ctx, &cfg); err != nil {
			return nil, err
		}
	}
	if len(cfg.Kafka.Brokers) == 0 {
		emb, err := kafkautil.StartEmbedded(&cfg.Kafka, topics)
		if err != nil {
			return nil, err
		}
		defer emb.Close()
		log.Warn("no --kafka-brokers given: using an embedded in-process broker (kfake); its latency says nothing about a real cluster", "addr", cfg.Kafka.Brokers.String())
		notes = append(notes, "embedded in-process broker (kfake), not a real Kafka: latencies are not representative")
		cfg.KafkaFlags = nil // it speaks plaintext only
	}
	admCl, err := kgo.NewClient(cfg.Kafka.Opts("clickrec-loadtest-admin")...)
	if err != nil {
		return nil, fmt.Errorf("creating the Kafka admin client: %w", err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	if err := kafkautil.Ping(ctx, &cfg.Kafka, admCl); err != nil {
		return nil, err
	}
	if autoTopics && !cfg.KeepTopics {
		defer deleteTopics(context.WithoutCancel(ctx), adm, topics, log)
	}
	if err := ensureTopics(ctx, &cfg.Kafka, admCl, topics); err != nil {
		return nil, fmt.Errorf("preparing topics: %w", err)
	}

	warmSrc, err := gen.NewSynthetic(gen.Config{Seed: cfg.Shop.Seed ^ 0x5eed_0f_3a11, CatalogueSeed: catalogueSeed(cfg.Shop),
		Users: cfg.Shop.Users, Items: cfg.Shop.Items, Categories: cfg.Shop.Categories})
	if err != nil {
		return nil, err
	}
	tr := NewTracker(time.Now(), int(plan.Events())+cfg.WarmupEvents)
	reader, err := newOutputReader(ctx, &cfg.Kafka, adm, string(topics.Recs), tr, log)
	if err != nil {
		return nil, err
	}
	defer reader.close()
	rctx, stopReader := context.WithCancel(ctx)
	readerDone := make(chan struct{})
	go func() { reader.run(rctx); close(readerDone) }()
	defer func() { stopReader(); <-readerDone }()

	var (
		fleet   *Fleet
		workers = WorkerReport{Mode: "external", ExactlyOnce: !cfg.AtLeastOnce}
	)
	modelRep := ModelReport{Source: ModelExternal}
	if spawn {
		var modelArgs []string
		if modelRep, modelArgs, err = prepareModel(ctx, &cfg, log); err != nil {
			return nil, err
		}
		if cfg.NoModel && cfg.NoRedis {
			notes = append(notes, "--no-model and --no-redis: the broker path only (no scoring, no feature store), every recommendation the popularity fallback")
		}
		bin := cfg.ClickrecBin
		if bin == "" {
			if bin, err = os.Executable(); err != nil {
				return nil, fmt.Errorf("finding the clickrec binary (set --clickrec-bin): %w", err)
			}
		}
		args := []string{
			"--kafka-brokers", cfg.Kafka.Brokers.String(), "--kafka-partitions", strconv.Itoa(cfg.Kafka.Partitions),
			"--group", cfg.Group, "--topic-prefix", cfg.TopicPrefix,
			"--out-of-orderness", cfg.OutOfOrderness.String(),
			"--exactly-once=" + strconv.FormatBool(!cfg.AtLeastOnce),
		}
		args = append(args, cfg.KafkaFlags...)
		env := cfg.WorkerEnv
		if cfg.NoRedis {
			args = append(args, "--no-redis")
		} else {
			args = append(args, "--no-redis=false", "--redis-addr", cfg.Redis.Addr)
			args = append(args, cfg.RedisFlags...)
			if cfg.Redis.Password != "" { // in the environment, not on a command line others can read
				env = append(slices.Clip(env), "CLICKREC_REDIS_PASSWORD="+cfg.Redis.Password)
			}
		}
		args = append(args, modelArgs...)
		fleet, err = StartFleet(FleetConfig{
			Bin: bin, Count: cfg.SpawnWorkers, Args: append(args, cfg.WorkerFlags...), Env: env,
			LogDir: filepath.Join(cfg.OutDir, "workers-"+strings.TrimSuffix(cfg.TopicPrefix, "-")), Instance: cfg.TopicPrefix,
		}, log)
		if err != nil {
			return nil, err
		}
		defer fleet.Stop()
		rctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
		err = fleet.WaitReady(rctx)
		cancel()
		if err != nil {
			return nil, err
		}
		workers = WorkerReport{Mode: "spawned", ExactlyOnce: !cfg.AtLeastOnce, Count: cfg.SpawnWorkers, Instances: fleet.Instances(), Logs: fleet.Logs()}
	}

	prod, err := kgo.NewClient(append(cfg.Kafka.Opts("clickrec-loadtest-gen"),
		kgo.DefaultProduceTopic(string(topics.Events)),
		kgo.MaxBufferedRecords(gen.MaxInFlight),
		kgo.ProducerLinger(cfg.ProducerLinger),
		kgo.RecordDeliveryTimeout(time.Minute),
	)...)
	if err != nil {
		return nil, fmt.Errorf("creating the generator's producer: %w", err)
	}
	defer prod.Close()
	sink := gen.NewKafkaSink(prod, string(topics.Events))

	// Warm-up: every partition assigned, restored and answering before the clock starts.
	log.Info("loadtest warm-up", "events", cfg.WarmupEvents, "rate", cfg.WarmupRate, "topic", topics.Events, "group", cfg.Group)
	wctx, cancelWarm := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancelWarm()
	clock := &gen.SystemClock{}
	if _, err := gen.Run(wctx, gen.RunConfig{
		Source: &trackingSource{src: warmSrc, tr: tr, outOfOrderness: cfg.OutOfOrderness, warm: true},
		Pacer:  gen.NewPacer(clock, clock.Now(), gen.ConstantRate(cfg.WarmupRate)),
		Sink:   sink, Count: int64(cfg.WarmupEvents),
	}); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	tr.SealWarmup()
	select {
	case <-tr.WarmupDone():
	case <-wctx.Done():
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		must, got := tr.WarmupProgress()
		return nil, fmt.Errorf("the hot path answered %d of %d warm-up events within %v (is it running, on topic %s, in group %s?%s)",
			got, must, cfg.ReadyTimeout, topics.Events, cfg.Group, logHint(fleet))
	}
	cancelWarm()

	// The measured run.
	cpu0 := selfCPU()
	load0, _ := machineLoad()
	var fleetCPU0 time.Duration
	if fleet != nil {
		fleetCPU0, _ = fleet.CPU()
	}
	start := time.Now()
	log.Info("loadtest started", "scenario", cfg.Scenario, "source", cfg.Source, "events", plan.Events(),
		"duration", plan.Duration(), "rate_mean", math.Round(plan.MeanRate()), "rate_peak", plan.PeakRate())
	gctx, stopGen := context.WithCancel(ctx)
	defer stopGen()
	var (
		side    sync.WaitGroup
		mu      sync.Mutex
		kills   []Kill
		members []MemberEvent
		extra   []string
		stopped string
	)
	progCtx, stopProgress := context.WithCancel(ctx)
	defer stopProgress()
	phaseOf := func() string {
		if gctx.Err() != nil {
			return "drain"
		}
		return plan.Phases[plan.PhaseAt(time.Since(start))].Name
	}
	side.Go(func() { progress(progCtx, tr, start, cfg.ProgressEvery, phaseOf, log) })
	// watch logs the latency of the clicks due just after an event (a kill,
	// a membership change) once they had time to be answered.
	grace := max(time.Second, 2*cfg.SLA.P99, 2*cfg.SLA.P95)
	watch := func(at time.Duration, what string) {
		side.Go(func() { watchAfter(progCtx, tr, start, at, plan.Duration(), grace, what, log) })
	}
	var ops sync.WaitGroup // kills, membership changes
	if cfg.Scenario == ScenarioChaos {
		ops.Go(func() {
			k, e := runChaos(gctx, fleet, cfg, start, plan.Duration(), watch, log)
			mu.Lock()
			kills, extra = k, append(extra, e...)
			mu.Unlock()
		})
	}
	var changes []Change
	switch cfg.Scenario {
	case ScenarioRolling:
		changes = RollingSchedule(cfg.SpawnWorkers, cfg.RestartEvery, plan.Duration())
	case ScenarioScale:
		changes = ScaleSchedule(cfg.SpawnWorkers, cfg.ScaleTo, plan.Duration())
	}
	if len(changes) > 0 {
		ops.Go(func() {
			ev, e := runMembership(ctx, gctx, fleet, changes, start, cfg.ReadyTimeout, watch, log)
			mu.Lock()
			members, extra = ev, append(extra, e...)
			mu.Unlock()
		})
	}
	if cfg.Scenario == ScenarioRamp && len(plan.Phases) > 1 {
		side.Go(func() {
			if why := watchRamp(gctx, tr, plan, start, cfg.SLA, log); why != "" {
				mu.Lock()
				stopped = why
				mu.Unlock()
				stopGen()
			}
		})
	}
	st, genErr := gen.Run(gctx, gen.RunConfig{
		Source: &trackingSource{src: src, tr: tr, outOfOrderness: cfg.OutOfOrderness},
		Pacer:  gen.NewPacer(clock, start, plan.Schedule()),
		Sink:   sink, Count: plan.Events(),
	})
	stopGen()
	ops.Wait()
	interrupted := ctx.Err() != nil
	if genErr != nil {
		log.Error("generator failed", "err", genErr)
	}
	var dr DrainReport
	if !interrupted {
		log.Info("loadtest draining", "timeout", cfg.DrainTimeout, "sent", st.Sent)
		dr = drain(ctx, adm, cfg.Group, string(topics.Events), reader, time.Now().Add(cfg.DrainTimeout))
		interrupted = ctx.Err() != nil
	}
	stopProgress()
	side.Wait()
	stopReader()
	<-readerDone
	window := time.Since(start)
	cpuRep := CPUReport{Cores: runtime.NumCPU(), WindowS: round3(window.Seconds()), Load1Start: load0,
		LoadtestCores: round3(float64(selfCPU()-cpu0) / float64(window))}
	cpuRep.Load1End, cpuRep.CPUPressure = machineLoad()
	if fleet != nil {
		if c, ok := fleet.CPU(); ok {
			x := round3(float64(c-fleetCPU0) / float64(window))
			cpuRep.WorkersCores = &x
		}
	}

	ramp := cfg.Scenario == ScenarioRamp
	r := analyze(tr, plan, start, ramp, cfg.SLA)
	r.Scenario, r.Source, r.StartedAt = cfg.Scenario, cfg.Source, start.UTC()
	r.Brokers = cfg.Kafka.Brokers
	r.EventsTopic, r.RecsTopic, r.Group = string(topics.Events), string(topics.Recs), cfg.Group
	r.Workers = workers
	r.ExactlyOnce = workers.ExactlyOnce
	r.Model, r.Redis = modelRep, redisRep
	r.judgeModel = modelRep.Served || !spawn && cfg.ExpectModel
	if fleet != nil {
		r.Workers.Instances, r.Workers.Logs = fleet.Instances(), fleet.Logs() // with those the scale scenario added
		r.Workers.Restarts, r.Workers.UnexpectedExits = fleet.Stats()
		if r.Workers.UnexpectedExits > 0 {
			extra = append(extra, fmt.Sprintf("%d worker exit(s) nobody asked for (see the worker logs)", r.Workers.UnexpectedExits))
		}
	}
	r.Generator.Acked = sink.Acked()
	r.Generator.Stopped = stopped
	r.Drain = dr
	r.CPU = cpuRep
	// Chaos judges the whole run's latency only if asked to, but how soon
	// the SLA holds again after a kill always against a latency SLA.
	recoverSLA := cfg.SLA
	if recoverSLA.P95 == 0 && recoverSLA.P99 == 0 {
		recoverSLA.P95, recoverSLA.P99 = DefaultSLA().P95, DefaultSLA().P99
	}
	for i := range kills {
		kills[i].After = afterEvent(tr, start, time.Duration(kills[i].AtS*float64(time.Second)), plan.Duration(), recoverSLA)
	}
	r.Kills = kills
	for i := range members {
		m := &members[i]
		m.After = afterEvent(tr, start, time.Duration(m.AtS*float64(time.Second)), plan.Duration(), cfg.SLA)
		if m.Killed {
			notes = append(notes, fmt.Sprintf("%s of %s at %.1f s: the worker did not exit within %v of SIGTERM and was SIGKILLed", m.Action, m.Instance, m.AtS, fleet.cfg.StopTimeout))
		}
	}
	r.Membership = members
	r.Notes = notes
	if interrupted {
		r.Interrupted = true
		r.Drain = DrainReport{Detail: "interrupted"}
		extra = append(extra, "interrupted before the run and its drain completed")
	}
	if genErr != nil {
		r.Error = genErr.Error()
		extra = append(extra, "generator: "+genErr.Error())
	}
	if r.Unknown > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d recommendations for event ids this run never sent (another producer on %s?)", r.Unknown, topics.Events))
	}
	r.judge(ramp, extra)
	return r, nil
}

func hasFlag(flags []string, name string) bool {
	for _, f := range flags {
		f = strings.TrimLeft(f, "-")
		if f == name || strings.HasPrefix(f, name+"=") {
			return true
		}
	}
	return false
}

func logHint(f *Fleet) string {
	if f == nil {
		return ""
	}
	return " worker logs: " + strings.Join(f.Logs(), ", ")
}

// progress logs, every interval until ctx ends, what the run is doing: the
// phase, rates, recommendations still owed, the running latency and how far
// the generator is behind its schedule.
func progress(ctx context.Context, tr *Tracker, start time.Time, every time.Duration, phase func() string, log *slog.Logger) {
	if every <= 0 {
		return
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	tr.Live() // reset the interval to the start of the measured run
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			l := tr.Live()
			dt := now.Sub(last).Seconds()
			last = now
			h := l.Latency
			p := func(q float64) string {
				if h.TotalCount() == 0 {
					return "-"
				}
				return strconv.FormatFloat(float64(h.ValueAtPercentile(q))/1000, 'f', 1, 64) + "ms"
			}
			behind := time.Duration(0)
			if l.LastIntended > 0 {
				behind = max(now.Sub(tr.origin.Add(l.LastIntended)), 0)
			}
			log.Info("loadtest progress", "t", now.Sub(start).Round(time.Second), "phase", phase(),
				"sent_rate", fmt.Sprintf("%.0f/s", float64(l.Sent)/dt), "answered_rate", fmt.Sprintf("%.0f/s", float64(l.Received)/dt),
				"in_flight", l.InFlight, "p50", p(50), "p95", p(95), "p99", p(99), "newest_sent", behind.Round(time.Millisecond))
		}
	}
}

// watchRamp judges each step except the last once it has ended and its
// stragglers had time to arrive (twice the p99 threshold, at least 1 s).
// It returns why the ramp should stop, or "" once the last step is reached
// or ctx ends.
func watchRamp(ctx context.Context, tr *Tracker, plan *Plan, start time.Time, sla SLA, log *slog.Logger) string {
	grace := max(time.Second, 2*sla.P99, 2*sla.P95)
	base := tr.Since(start)
	for k, ph := range plan.Phases[:len(plan.Phases)-1] {
		t := time.NewTimer(time.Until(start.Add(ph.End + grace)))
		select {
		case <-ctx.Done():
			t.Stop()
			return ""
		case <-t.C:
		}
		n, p95, p99 := tr.Provisional(base+int64(ph.Start), base+int64(ph.End))
		fail := n == 0 || sla.P95 > 0 && p95 >= sla.P95 || sla.P99 > 0 && p99 >= sla.P99
		show := func(d time.Duration) string {
			if d == time.Duration(math.MaxInt64) {
				return "unanswered"
			}
			return d.Round(10 * time.Microsecond).String()
		}
		log.Info("loadtest ramp step", "step", k+1, "rate", ph.Rate, "events", n, "p95", show(p95), "p99", show(p99), "met_sla", !fail)
		if fail {
			return fmt.Sprintf("%s (%.0f ev/s) missed the SLA %v after it ended (p95 %s, p99 %s, unanswered events counted as infinitely late); later steps were not run",
				ph.Name, ph.Rate, grace, show(p95), show(p99))
		}
	}
	return ""
}

// runChaos SIGKILLs workers (one by one, round robin, or all at once) every
// KillEvery during the measured run and restarts each with the same
// instance id after RestartDelay.
func runChaos(ctx context.Context, f *Fleet, cfg Config, start time.Time, d time.Duration, watch func(at time.Duration, what string), log *slog.Logger) ([]Kill, []string) {
	var (
		mu       sync.Mutex // guards the *Kill fields the readiness goroutines set
		ready    sync.WaitGroup
		kills    []*Kill
		problems []string
		next     int
	)
	result := func() ([]Kill, []string) {
		ready.Wait()
		mu.Lock()
		defer mu.Unlock()
		out := make([]Kill, len(kills))
		for i, k := range kills {
			out[i] = *k
		}
		return out, problems
	}
	for at := cfg.KillEvery; at < d; at += cfg.KillEvery {
		t := time.NewTimer(time.Until(start.Add(at)))
		select {
		case <-ctx.Done():
			t.Stop()
			return result()
		case <-t.C:
		}
		victims := []int{next % cfg.SpawnWorkers}
		if cfg.KillAll {
			victims = victims[:0]
			for i := range cfg.SpawnWorkers {
				victims = append(victims, i)
			}
		}
		next++
		type killed struct {
			i int
			k *Kill
		}
		var round []killed
		for _, i := range victims {
			at := time.Since(start)
			if err := f.Kill(i); err != nil {
				problems = append(problems, err.Error())
				continue
			}
			k := &Kill{AtS: round3(at.Seconds()), Instance: f.Instances()[i]}
			kills = append(kills, k)
			watch(at, "SIGKILL of "+k.Instance)
			round = append(round, killed{i, k})
		}
		if cfg.RestartDelay > 0 {
			t := time.NewTimer(cfg.RestartDelay)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
		for _, v := range round {
			if err := f.Restart(v.i); err != nil {
				problems = append(problems, err.Error())
				v.k.ReadyNote = "not restarted: " + err.Error()
				continue
			}
			v.k.RestartS = round3(time.Since(start).Seconds())
			ready.Go(func() {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ReadyTimeout)
				defer cancel()
				took, err := f.waitReady(rctx, v.i)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					v.k.ReadyNote = err.Error()
					return
				}
				v.k.ReadyMs = float64(took.Microseconds()) / 1000
				log.Info("restarted worker ready", "instance", v.k.Instance, "after", took.Round(time.Millisecond))
			})
		}
	}
	return result()
}

// ensureTopics creates the topics, retrying for up to 10 s while a topic
// just created is not yet known to the broker that describes it.
func ensureTopics(ctx context.Context, kcfg *kafkautil.Config, cl *kgo.Client, t kafkautil.Topics) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := kafkautil.EnsureTopics(ctx, kcfg, cl, t)
		if err == nil || !(errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, kerr.LeaderNotAvailable)) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// deleteTopics removes the topics of a run that created its own.
func deleteTopics(ctx context.Context, adm *kadm.Client, t kafkautil.Topics, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	names := []string{string(t.Events), string(t.Recs), string(t.Changelog), string(t.Late), string(t.DLQ), string(t.Windows)}
	resp, err := adm.DeleteTopics(ctx, names...)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		log.Warn("could not delete the run's topics", "topics", names, "err", err)
		return
	}
	log.Info("deleted the run's topics", "prefix", strings.TrimSuffix(names[0], "user_events"))
}
