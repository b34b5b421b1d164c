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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/gen"
	"github.com/clickrec/clickrec/internal/kafkautil"
)

// Run runs the load test and returns its report. The error is about running
// it (a broker that cannot be reached, workers that do not start); whether
// the SLA was met is in the report (Report.Err). When ctx ends the generator
// stops, the workers are stopped and the report says it was interrupted.
//
// Each step below has one job; what a step opens is closed when Run returns,
// in reverse order.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (*Report, error) {
	r, err := newRunner(cfg, log)
	if err != nil {
		return nil, err
	}
	defer r.close()
	// The servers first, so that a missing one fails in a second, not after
	// the model is trained.
	if err := r.checkFeatureStore(ctx); err != nil {
		return nil, err
	}
	if err := r.connectKafka(ctx); err != nil {
		return nil, err
	}
	if err := r.prepareTopics(ctx); err != nil {
		return nil, err
	}
	if err := r.startReader(ctx); err != nil {
		return nil, err
	}
	if err := r.startWorkers(ctx); err != nil {
		return nil, err
	}
	if err := r.startProducer(); err != nil {
		return nil, err
	}
	if err := r.warmUp(ctx); err != nil {
		return nil, err
	}
	m := r.measure(ctx)
	m.fs = r.verifyFeatureStore(ctx, m)
	return r.report(m), nil
}

// runner is one Run in progress: the configuration completed for it and what
// its steps set up for the later ones. A step registers what it opens with
// onClose; close undoes all of it in reverse order, as the defers of one
// function would.
type runner struct {
	cfg        Config
	log        *slog.Logger
	plan       *Plan
	src        gen.Source // the measured run's traffic
	warmSrc    gen.Source // the warm-up's traffic
	spawn      bool       // the load test starts its own workers
	autoTopics bool       // the run's topics are its own, under a fresh prefix
	topics     kafkautil.Topics
	notes      []string // for the report

	clock      *gen.SystemClock // of the warm-up's and the measured run's pacers
	admCl      *kgo.Client
	adm        *kadm.Client
	tr         *Tracker
	fresh      *freshTracker // the new items of the measured run (nil: none)
	reader     *outputReader
	stopReader func() // stops the reader and waits until it has returned
	fleet      *Fleet // nil: running workers
	workers    WorkerReport
	modelRep   ModelReport
	redisRep   RedisReport
	warm       WarmupReport
	sink       *gen.KafkaSink

	closers []func()
}

// runSeq numbers the runs of this process that name their own topics.
var runSeq atomic.Int64

// newRunner validates cfg, builds the plan and the traffic of the warm-up
// and the measured run, and completes the configuration: spawned workers get
// a fresh topic prefix, the group defaults to the prefix's, and the run's
// topics are named.
func newRunner(cfg Config, log *slog.Logger) (*runner, error) {
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
	r := &runner{cfg: cfg, log: log, plan: plan, src: src, spawn: cfg.SpawnWorkers > 0, clock: &gen.SystemClock{}}
	if s, ok := src.(*gen.Synthetic); ok {
		r.fresh = newFreshTracker(s.NewItems())
	}
	r.autoTopics = r.spawn && r.cfg.TopicPrefix == ""
	if r.autoTopics {
		r.cfg.TopicPrefix = fmt.Sprintf("loadtest-%s-%d-", time.Now().UTC().Format("20060102-150405"), os.Getpid())
		if n := runSeq.Add(1); n > 1 {
			// Runs of one process started in the same second (parallel
			// tests) must not share topics and a group: the first to end
			// deletes the topics under the others.
			r.cfg.TopicPrefix = fmt.Sprintf("loadtest-%s-%d-%d-", time.Now().UTC().Format("20060102-150405"), os.Getpid(), n)
		}
	}
	if r.cfg.Group == "" {
		r.cfg.Group = r.cfg.TopicPrefix + "hotpath"
	}
	if r.topics, err = kafkautil.PrefixedTopics(r.cfg.TopicPrefix); err != nil {
		return nil, err
	}
	r.warmSrc, err = gen.NewSynthetic(gen.Config{Seed: cfg.Shop.Seed ^ 0x5eed_0f_3a11, CatalogueSeed: catalogueSeed(cfg.Shop),
		Users: cfg.Shop.Users, Items: cfg.Shop.Items, Categories: cfg.Shop.Categories})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// onClose registers f to run when the run ends.
func (r *runner) onClose(f func()) { r.closers = append(r.closers, f) }

// close runs what onClose registered, the latest first.
func (r *runner) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
}

// checkFeatureStore checks the Redis that spawned workers will write; the
// load test knows nothing of running workers' Redis.
func (r *runner) checkFeatureStore(ctx context.Context) error {
	r.redisRep = RedisReport{Detail: "running workers: not known to the load test"}
	if !r.spawn && !r.cfg.writesRedis() {
		return nil
	}
	var err error
	r.redisRep, err = checkRedis(ctx, &r.cfg)
	return err
}

// connectKafka connects the admin client to the brokers, after starting an
// embedded broker if none are given.
func (r *runner) connectKafka(ctx context.Context) error {
	if len(r.cfg.Kafka.Brokers) == 0 {
		emb, err := kafkautil.StartEmbedded(&r.cfg.Kafka, r.topics)
		if err != nil {
			return err
		}
		r.onClose(emb.Close)
		r.log.Warn("no --kafka-brokers given: using an embedded in-process broker (kfake); its latency says nothing about a real cluster", "addr", r.cfg.Kafka.Brokers.String())
		r.notes = append(r.notes, "embedded in-process broker (kfake), not a real Kafka: latencies are not representative")
		r.cfg.KafkaFlags = nil // it speaks plaintext only
	}
	admCl, err := kgo.NewClient(r.cfg.Kafka.Opts("clickrec-loadtest-admin")...)
	if err != nil {
		return fmt.Errorf("creating the Kafka admin client: %w", err)
	}
	r.onClose(admCl.Close)
	r.admCl, r.adm = admCl, kadm.NewClient(admCl)
	return kafkautil.Ping(ctx, &r.cfg.Kafka, admCl)
}

// prepareTopics creates the run's topics; the ones it named itself are
// deleted when the run ends, unless asked to keep them.
func (r *runner) prepareTopics(ctx context.Context) error {
	if r.autoTopics && !r.cfg.KeepTopics {
		r.onClose(func() { deleteTopics(context.WithoutCancel(ctx), r.adm, r.topics, r.log) })
	}
	if err := ensureTopics(ctx, &r.cfg.Kafka, r.admCl, r.topics); err != nil {
		return fmt.Errorf("preparing topics: %w", err)
	}
	return nil
}

// startReader starts the tracker and, before any click is sent, the
// read_committed reader that matches recommendations to their clicks.
func (r *runner) startReader(ctx context.Context) error {
	r.tr = NewTracker(time.Now(), int(r.plan.Events())+r.cfg.WarmupEvents)
	reader, err := newOutputReader(ctx, &r.cfg.Kafka, r.adm, string(r.topics.Recs), r.tr, r.log)
	if err != nil {
		return err
	}
	reader.fresh = r.fresh
	r.onClose(reader.close)
	r.reader = reader
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { reader.run(rctx); close(done) }()
	r.stopReader = func() { cancel(); <-done }
	r.onClose(r.stopReader)
	return nil
}

// startWorkers spawns the workers, with the model they are to serve, and
// waits until they are ready; running workers are only described.
func (r *runner) startWorkers(ctx context.Context) error {
	r.workers = WorkerReport{Mode: "external", ExactlyOnce: !r.cfg.AtLeastOnce}
	r.modelRep = ModelReport{Source: ModelExternal}
	if !r.spawn {
		return nil
	}
	var (
		modelArgs []string
		err       error
	)
	if r.modelRep, modelArgs, err = prepareModel(ctx, &r.cfg, r.log); err != nil {
		return err
	}
	if r.cfg.NoModel && r.cfg.NoRedis {
		r.notes = append(r.notes, "--no-model and --no-redis: the broker path only (no scoring, no feature store), every recommendation the popularity fallback")
	}
	fc, err := r.fleetConfig(modelArgs)
	if err != nil {
		return err
	}
	fleet, err := StartFleet(fc, r.log)
	if err != nil {
		return err
	}
	r.onClose(fleet.Stop)
	r.fleet = fleet
	rctx, cancel := context.WithTimeout(ctx, r.cfg.ReadyTimeout)
	err = fleet.WaitReady(rctx)
	cancel()
	if err != nil {
		return err
	}
	r.workers = WorkerReport{Mode: "spawned", ExactlyOnce: !r.cfg.AtLeastOnce, Count: r.cfg.SpawnWorkers, Instances: fleet.Instances(), Logs: fleet.Logs()}
	return nil
}

// fleetConfig says how to spawn the workers: the clickrec binary, with flags
// and environment that point them at the run's brokers, topics, group, Redis
// and model.
func (r *runner) fleetConfig(modelArgs []string) (FleetConfig, error) {
	cfg := &r.cfg
	bin := cfg.ClickrecBin
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return FleetConfig{}, fmt.Errorf("finding the clickrec binary (set --clickrec-bin): %w", err)
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
	return FleetConfig{
		Bin: bin, Count: cfg.SpawnWorkers, Args: append(args, cfg.WorkerFlags...), Env: env,
		LogDir: filepath.Join(cfg.OutDir, "workers-"+strings.TrimSuffix(cfg.TopicPrefix, "-")), Instance: cfg.TopicPrefix,
	}, nil
}

// startProducer creates the generator's producer and the sink that the
// warm-up and the measured run send through.
func (r *runner) startProducer() error {
	prod, err := kgo.NewClient(append(r.cfg.Kafka.Opts("clickrec-loadtest-gen"),
		kgo.DefaultProduceTopic(string(r.topics.Events)),
		kgo.MaxBufferedRecords(gen.MaxInFlight),
		kgo.ProducerLinger(r.cfg.ProducerLinger),
		kgo.RecordDeliveryTimeout(time.Minute),
	)...)
	if err != nil {
		return fmt.Errorf("creating the generator's producer: %w", err)
	}
	r.onClose(prod.Close)
	r.sink = gen.NewKafkaSink(prod, string(r.topics.Events))
	return nil
}

// measured is what the measured run leaves for the report.
type measured struct {
	start       time.Time
	genErr      error // the generator's
	interrupted bool  // ctx ended before the run and its drain completed
	drain       DrainReport
	cpu         CPUReport

	mu      sync.Mutex // guards the rest while the scenario's goroutines run
	kills   []Kill
	members []MemberEvent
	outages []Outage
	fs      *FeatureStoreCheck // after the drain (nil: not checked)
	extra   []string           // problems that fail the run
	stopped string             // why the ramp stopped before its last step
}

// measure runs the measured part: the generator on the plan's schedule, with
// the progress log and the scenario's actions beside it, then the drain; it
// stops the reader and reads the CPU the whole window took.
func (r *runner) measure(ctx context.Context) *measured {
	mark := r.markCPU()
	m := &measured{start: time.Now()}
	r.log.Info("loadtest started", "scenario", r.cfg.Scenario, "source", r.cfg.Source, "events", r.plan.Events(),
		"duration", r.plan.Duration(), "rate_mean", math.Round(r.plan.MeanRate()), "rate_peak", r.plan.PeakRate())
	gctx, stopGen := context.WithCancel(ctx)
	defer stopGen()
	progCtx, stopProgress := context.WithCancel(ctx)
	defer stopProgress()
	var (
		side sync.WaitGroup // the progress log, the latency watches, the ramp's judge
		ops  sync.WaitGroup // kills, membership changes
	)
	phaseOf := func() string {
		if gctx.Err() != nil {
			return "drain"
		}
		return r.plan.Phases[r.plan.PhaseAt(time.Since(m.start))].Name
	}
	side.Go(func() { progress(progCtx, r.tr, m.start, r.cfg.ProgressEvery, phaseOf, r.log) })
	r.startChanges(ctx, gctx, &ops, r.latencyWatch(progCtx, &side, m.start), m)
	if r.cfg.Scenario == ScenarioRamp && len(r.plan.Phases) > 1 {
		side.Go(func() { r.judgeRamp(gctx, stopGen, m) })
	}
	st, genErr := gen.Run(gctx, gen.RunConfig{
		Source: &trackingSource{src: r.src, tr: r.tr, outOfOrderness: r.cfg.OutOfOrderness, fresh: r.fresh, start: m.start, log: r.log},
		Pacer:  gen.NewPacer(r.clock, m.start, r.plan.Schedule()),
		Sink:   r.sink, Count: r.plan.Events(),
	})
	stopGen()
	ops.Wait()
	m.genErr = genErr
	r.drainOutputs(ctx, m, st.Sent)
	stopProgress()
	side.Wait()
	r.stopReader()
	m.cpu = r.cpuReport(mark, time.Since(m.start))
	return m
}

// latencyWatch returns the function with which the scenario's actions have
// the latency of the clicks due just after an event (a kill, a membership
// change) logged, once they had time to be answered.
func (r *runner) latencyWatch(ctx context.Context, side *sync.WaitGroup, start time.Time) func(at time.Duration, what string) {
	grace := max(time.Second, 2*r.cfg.SLA.P99, 2*r.cfg.SLA.P95)
	return func(at time.Duration, what string) {
		side.Go(func() { watchAfter(ctx, r.tr, start, at, r.plan.Duration(), grace, what, r.log) })
	}
}

// startChanges starts, in ops, the changes the scenario makes to the workers
// while the generator runs (until gctx ends): the chaos scenario's kills, the
// rolling and scale scenarios' membership changes, and the Redis outage.
func (r *runner) startChanges(ctx, gctx context.Context, ops *sync.WaitGroup, watch func(at time.Duration, what string), m *measured) {
	if r.cfg.Scenario == ScenarioChaos {
		ops.Go(func() {
			k, e := runChaos(gctx, r.fleet, r.cfg, m.start, r.plan.Duration(), watch, r.log)
			m.mu.Lock()
			m.kills, m.extra = k, append(m.extra, e...)
			m.mu.Unlock()
		})
	}
	var changes []Change
	switch r.cfg.Scenario {
	case ScenarioRolling:
		changes = RollingSchedule(r.cfg.SpawnWorkers, r.cfg.RestartEvery, r.plan.Duration())
	case ScenarioScale:
		changes = ScaleSchedule(r.cfg.SpawnWorkers, r.cfg.ScaleTo, r.plan.Duration())
	}
	if d := r.cfg.outage(); d > 0 {
		at := r.cfg.outageAt(r.plan.Duration())
		ops.Go(func() {
			o, e := runOutage(gctx, r.cfg.Redis, m.start, at, d, watch, r.log)
			m.mu.Lock()
			if o != nil {
				m.outages = append(m.outages, *o)
			}
			m.extra = append(m.extra, e...)
			m.mu.Unlock()
		})
	}
	if len(changes) > 0 {
		ops.Go(func() {
			ev, e := runMembership(ctx, gctx, r.fleet, changes, m.start, r.cfg.ReadyTimeout, watch, r.log)
			m.mu.Lock()
			m.members, m.extra = ev, append(m.extra, e...)
			m.mu.Unlock()
		})
	}
}

// judgeRamp judges the ramp's steps as they end and stops the generator at
// the first that misses the SLA.
func (r *runner) judgeRamp(gctx context.Context, stopGen context.CancelFunc, m *measured) {
	if why := watchRamp(gctx, r.tr, r.plan, m.start, r.cfg.SLA, r.log); why != "" {
		m.mu.Lock()
		m.stopped = why
		m.mu.Unlock()
		stopGen()
	}
}

// drainOutputs waits, after the generator stopped, for the last
// recommendations of the sent clicks, unless the run was interrupted.
func (r *runner) drainOutputs(ctx context.Context, m *measured, sent int64) {
	m.interrupted = ctx.Err() != nil
	if m.genErr != nil {
		r.log.Error("generator failed", "err", m.genErr)
	}
	if m.interrupted {
		return
	}
	r.log.Info("loadtest draining", "timeout", r.cfg.DrainTimeout, "sent", sent)
	m.drain = drain(ctx, r.adm, r.cfg.Group, string(r.topics.Events), r.reader, time.Now().Add(r.cfg.DrainTimeout))
	m.interrupted = ctx.Err() != nil
}

// cpuMark is the CPU counters at the start of the measured run.
type cpuMark struct {
	self, fleet time.Duration
	load1       float64
}

// markCPU reads the CPU counters at the start of the measured run.
func (r *runner) markCPU() cpuMark {
	c := cpuMark{self: selfCPU()}
	c.load1, _ = machineLoad()
	if r.fleet != nil {
		c.fleet, _ = r.fleet.CPU()
	}
	return c
}

// cpuReport says how many cores the load test and the spawned workers used
// in the window since mark, and the machine's load.
func (r *runner) cpuReport(mark cpuMark, window time.Duration) CPUReport {
	rep := CPUReport{Cores: runtime.NumCPU(), WindowS: round3(window.Seconds()), Load1Start: mark.load1,
		LoadtestCores: round3(float64(selfCPU()-mark.self) / float64(window))}
	rep.Load1End, rep.CPUPressure = machineLoad()
	if r.fleet != nil {
		if c, ok := r.fleet.CPU(); ok {
			x := round3(float64(c-mark.fleet) / float64(window))
			rep.WorkersCores = &x
		}
	}
	return rep
}

// report analyzes what the tracker saw, adds what the run did and judges it.
func (r *runner) report(m *measured) *Report {
	cfg := &r.cfg
	ramp := cfg.Scenario == ScenarioRamp
	rep := analyze(r.tr, r.plan, m.start, ramp, cfg.SLA)
	if r.fresh != nil {
		lastSend := time.Duration(-1)
		if rep.Sent > 0 {
			lastSend = time.Duration(rep.ElapsedS * float64(time.Second))
		}
		rep.Freshness = r.fresh.report(m.start, lastSend)
	}
	rep.Scenario, rep.Source, rep.StartedAt = cfg.Scenario, cfg.Source, m.start.UTC()
	rep.Brokers = cfg.Kafka.Brokers
	rep.EventsTopic, rep.RecsTopic, rep.Group = string(r.topics.Events), string(r.topics.Recs), cfg.Group
	rep.Workers = r.workers
	rep.ExactlyOnce = r.workers.ExactlyOnce
	rep.Model, rep.Redis = r.modelRep, r.redisRep
	rep.judgeModel = r.modelRep.Served || !r.spawn && cfg.ExpectModel
	extra := m.extra
	if r.fleet != nil {
		rep.Workers.Instances, rep.Workers.Logs = r.fleet.Instances(), r.fleet.Logs() // with those the scale scenario added
		rep.Workers.Restarts, rep.Workers.UnexpectedExits = r.fleet.Stats()
		if rep.Workers.UnexpectedExits > 0 {
			extra = append(extra, fmt.Sprintf("%d worker exit(s) nobody asked for (see the worker logs)", rep.Workers.UnexpectedExits))
		}
	}
	rep.Generator.Acked = r.sink.Acked()
	rep.Generator.Stopped = m.stopped
	rep.Drain = m.drain
	rep.CPU = m.cpu
	notes := r.afterChanges(m)
	rep.Kills, rep.Membership, rep.RedisOutages = m.kills, m.members, m.outages
	rep.Warmup.TookS, rep.Warmup.RateTarget, rep.Warmup.Settled = r.warm.TookS, r.warm.RateTarget, r.warm.Settled
	rep.Warmup.WindowS, rep.Warmup.WindowP95Ms = r.warm.WindowS, r.warm.WindowP95Ms
	if rep.FeatureStore = m.fs; m.fs != nil {
		if b := m.fs.breach(); b != "" {
			extra = append(extra, b)
		}
	}
	rep.Notes = append(r.notes, notes...)
	if m.interrupted {
		rep.Interrupted = true
		rep.Drain = DrainReport{Detail: "interrupted"}
		extra = append(extra, "interrupted before the run and its drain completed")
	}
	if m.genErr != nil {
		rep.Error = m.genErr.Error()
		extra = append(extra, "generator: "+m.genErr.Error())
	}
	if rep.Unknown > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d recommendations for event ids this run never sent (another producer on %s?)", rep.Unknown, r.topics.Events))
	}
	rep.judge(ramp, extra)
	return rep
}

// afterChanges measures the latency just after each kill and membership
// change, and returns notes on the workers that had to be SIGKILLed on a
// stop.
func (r *runner) afterChanges(m *measured) (notes []string) {
	// Chaos judges the whole run's latency only if asked to, but how soon
	// the SLA holds again after a kill always against a latency SLA.
	recoverSLA := r.cfg.SLA
	if recoverSLA.P95 == 0 && recoverSLA.P99 == 0 {
		recoverSLA.P95, recoverSLA.P99 = DefaultSLA().P95, DefaultSLA().P99
	}
	for i := range m.kills {
		m.kills[i].After = afterEvent(r.tr, m.start, time.Duration(m.kills[i].AtS*float64(time.Second)), r.plan.Duration(), recoverSLA)
	}
	for i := range m.outages {
		o := &m.outages[i]
		o.After = afterEvent(r.tr, m.start, time.Duration(o.AtS*float64(time.Second)), r.plan.Duration(), r.cfg.SLA)
	}
	for i := range m.members {
		e := &m.members[i]
		e.After = afterEvent(r.tr, m.start, time.Duration(e.AtS*float64(time.Second)), r.plan.Duration(), r.cfg.SLA)
		if e.Killed {
			notes = append(notes, fmt.Sprintf("%s of %s at %.1f s: the worker did not exit within %v of SIGTERM and was SIGKILLed", e.Action, e.Instance, e.AtS, r.fleet.cfg.StopTimeout))
		}
	}
	return notes
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
	names := []string{string(t.Events), string(t.Recs), string(t.Changelog), string(t.Late), string(t.DLQ), string(t.Windows), string(t.Knowledge)}
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
