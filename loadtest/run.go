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
