package main

import (
	"context"
	"flag"
	"fmt"
	"github.com/clickrec/clickrec/loadtest"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"

	"github.com/clickrec/clickrec/internal/cli"
)

func init() {
	register(command{name: "loadtest", synopsis: "load-test the hot path end to end and judge its SLA (exit code 1 on breach)", run: func(ctx context.Context, args []string) error {
		return loadtestCommand(ctx, args, os.Stdout)
	}})
}

const loadtestUsage = `Load-test the hot path end to end and judge the SLA, k6-style: exit code 0
when every threshold holds, 1 when one is breached (or the run failed), 2 for
a usage error.

An open-model generator sends clicks to user_events at a fixed arrival rate:
every event has an intended send time and latency counts from it, so a
stalled system cannot hide behind a slowed-down generator. A read_committed
reader of recommendations matches each recommendation to its click by
event_id. After the last send it drains (until the hot path group has
committed every input and the reader has read to the end of the topic, every
transaction in it resolved; at most --drain-timeout), then counts:

  missing      on-time clicks without a recommendation
  duplicates   recommendations beyond the first for one click
  unexpected   recommendations for invalid clicks (they belong in the DLQ)

What a click is owed: an on-time click exactly one recommendation; a late
click (event time 1-9 min before it is sent) exactly one if it is at most
--out-of-orderness late (it cannot be behind its partition's watermark),
otherwise none or one depending on the watermark (reported, not judged); an
invalid click none.

Scenarios:
  steady  --rate events/s for --duration
  ramp    one step of --step-duration per rate in --rates; a step that
          misses the latency SLA stops the ramp; reports the highest rate that
          met it (passes if one did, and that rate is at least --sla-min-rate)
  burst   --rate, and --burst-rate for the last --burst-duration of every
          --burst-every
  late    steady, with --late-share 0.2 and --invalid-share 0.05 unless given
  chaos   steady, SIGKILLing a spawned worker every --kill-every (round
          robin, or all with --kill-all) and restarting it with the same
          instance id; demands 0 missing and 0 duplicates; the latency
          thresholds apply only if given explicitly
  rolling steady, restarting the spawned workers (--spawn-workers, 2 unless
          given) gracefully one after the other, one every --restart-every,
          as a rolling update does: SIGTERM, wait for the exit (SIGKILL
          after 15 s), start it again with the same instance id, wait until
          its /readyz answers, then the next; the whole SLA applies
  scale   steady, scaling out and in: starts with --spawn-workers (1), starts
          workers with new instance ids up to --scale-to (3) in the first
          half of the run and stops them again (SIGTERM, newest first) in
          the second: 1 -> 2 -> 3 -> 2 -> 1 at 1/4, 2/4 and 3/4 of the run
          and 5 s before its end (at 7/8 in a run under 40 s); the whole
          SLA applies
  redis-outage  steady, pausing Redis (CLIENT PAUSE ALL) for --redis-outage
          (5s unless given) in the middle of the run (--redis-outage-at);
          the stream must not notice and the feature store must catch up
  --redis-outage D adds the same outage to any other scenario (chaos,
  rolling, scale, ...)
  rolling and scale report every change (when, which worker, how long its
  stop took, when the new process was ready) with the p99 and the maximum
  latency of the clicks due in the 5 s after it; chaos does so for its kills,
  and every scenario for a Redis outage

Warm-up: before the clock starts, synthetic clicks (another seed) at
--warmup-rate (default the run's rate) until at least --warmup-events were
sent and answered and the p95 of the last 3 one-second windows agree within
20 % (or 2 ms): a broker started seconds before answers slower for its first
10 s. At most --warmup-max (60s), then the run starts anyway with a warning.

Feature-store check (--check-redis; on when spawned workers write Redis):
after the drain it reads the changelog and recommendations topics from the
start (read_committed) and every shopper's user:{id} hash from Redis, and
counts the users whose entry matches what Kafka committed last, is stale
(an older state or recommendation), missing, resurrected (a live entry of a
user the stream expired) or unexpected (ahead of Kafka). Redis writes follow
the commits asynchronously, so the users that do not match are read again
until all do or --check-redis-timeout (30s) passes; any mismatch then fails
the run. With running workers --check-redis checks the Redis at --redis-addr.

Workers: with --spawn-workers N (default 1) the load test runs N
"clickrec hotpath" child processes (--clickrec-bin, default this binary) on
fresh topics (--topic-prefix, default loadtest-<time>-<pid>-, deleted at the
end unless --keep-topics) and a fresh group, each with its own --instance-id
and --http-addr, logging to --out; it stops them at the end and on Ctrl-C.
With --spawn-workers 0 it targets workers already running: give their
--group and --topic-prefix.

What the spawned workers run is the real pipeline: they serve a model and
write the Redis feature store. The model is --model-dir DIR (a saved model,
clickrec train --out) or, by default, one the load test trains before the run
on the traffic's own history (the synthetic shop's past: the same catalogue,
other clicks; --train-clicks, by default enough to know every item of the
catalogue; a few seconds) and saves to <out>/model-<topic prefix>. Redis is
--redis-addr (CLICKREC_REDIS_ADDR, default 127.0.0.1:6379); the load test
stops at once if it does not answer. The workers write user:{id} keys there
(no per-run prefix). --no-model and --no-redis take either out; both together
measure the broker path alone.

The report counts the recommendations by strategy (model, category_popular,
global_popular). When a model is served, a run in which less than
--sla-min-model-share (default 0.5) of them came from it fails: the workers
fell back to popularity, and the latencies would not be the model's.

Freshness (--new-items N, typically 20; synthetic source only): the shop
launches N new items during the measured run, evenly over its first three
quarters, with ids after the catalogue's (--items + 1, ...), so the model
the workers serve does not know them. Each trends from its introduction: a
shopper views its anchor (a popular item of its category) and then, about
2 s later, the new item, about 3.5 times a second per item at 1,000
clicks/s. The report gives, per item and as p50/p95/max, the time from the
intended send time of its first click to the read of the first
recommendation (any shopper's) with strategy model or online that lists it,
and the items never recommended before the drain ended.
--sla-max-freshness D fails the run if that p95 exceeds D or a new item
clicked was never recommended.

Output: a summary on stdout, progress on stderr every --progress-every,
--json FILE with the full report, and next to it (or in --out)
<name>-latency-over-time.png and <name>-latency-distribution.png.

Examples:
  clickrec loadtest --kafka-brokers 127.0.0.1:9092 --rate 1000 --duration 60s --json out/loadtest/steady.json
  clickrec loadtest --kafka-brokers 127.0.0.1:9092 --model-dir out/model --redis-addr 127.0.0.1:6379
  clickrec loadtest --kafka-brokers 127.0.0.1:9092 --no-model --no-redis     # the broker path alone
  clickrec loadtest --kafka-brokers 127.0.0.1:9092 --new-items 20 --duration 60s   # freshness of new items
  clickrec loadtest --kafka-brokers 127.0.0.1:9092 --scenario ramp --rates 1000,5000,10000,20000
  clickrec loadtest --kafka-brokers 127.0.0.1:9092 --scenario chaos --spawn-workers 2 --kill-every 10s
  clickrec loadtest --kafka-brokers 127.0.0.1:9092 --scenario rolling --restart-every 8s
  clickrec loadtest --kafka-brokers 127.0.0.1:9092 --scenario scale --duration 60s
  clickrec loadtest --kafka-brokers 127.0.0.1:9092 --scenario redis-outage --duration 30s
  clickrec loadtest --kafka-brokers 127.0.0.1:9092 --scenario chaos --spawn-workers 2 --redis-outage 5s
  clickrec loadtest --kafka-brokers 127.0.0.1:9092 --source taobao --speedup 120`

type loadtestFlags struct {
	cfg      loadtest.Config
	rates    string
	workerFl multiFlag
	workerEv multiFlag
	jsonPath string
	cpuProf  string
	log      cli.Logging
	set      map[string]bool
	envs     map[string]string // flag → environment variable
}

// multiFlag is a flag that may be given more than once.
type multiFlag []string

// String implements flag.Value.
func (m *multiFlag) String() string { return strings.Join(*m, " ") }

// Set implements flag.Value.
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func (f *loadtestFlags) register(fs *cli.FlagSet) {
	c := &f.cfg
	*c = loadtest.DefaultConfig()
	f.envs = map[string]string{}
	env := func(name string) {
		v := "CLICKREC_LOADTEST_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		fs.Env(name, v)
		f.envs[name] = v
	}
	fs.StringVar(&c.Scenario, "scenario", c.Scenario, "steady, ramp, burst, late, chaos, rolling, scale or redis-outage (see above)")
	env("scenario")
	fs.StringVar(&c.Source, "source", c.Source, "traffic: synthetic (gen's shop, paced by --rate) or taobao (a time-compressed replay of --taobao-file, paced by --speedup; not with ramp or burst)")
	env("source")
	fs.Float64Var(&c.Rate, "rate", c.Rate, "events per second (steady, late, chaos, rolling, scale; the base rate of burst)")
	env("rate")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "length of the measured run (taobao: cut the replay after this much; 0 = all of it)")
	env("duration")
	fs.StringVar(&f.rates, "rates", joinRates(c.Rates), "ramp: comma-separated step rates in events per second")
	env("rates")
	fs.DurationVar(&c.StepDuration, "step-duration", c.StepDuration, "ramp: length of each step")
	env("step-duration")
	fs.Float64Var(&c.BurstRate, "burst-rate", c.BurstRate, "burst: events per second during a burst")
	env("burst-rate")
	fs.DurationVar(&c.BurstEvery, "burst-every", c.BurstEvery, "burst: one burst at the end of every such period")
	env("burst-every")
	fs.DurationVar(&c.BurstDuration, "burst-duration", c.BurstDuration, "burst: length of a burst")
	env("burst-duration")
	fs.Float64Var(&c.Shop.LateShare, "late-share", c.Shop.LateShare, "share (0-1) of clicks sent 1-9 minutes after their event time (0.2 in the late scenario unless given)")
	env("late-share")
	fs.Float64Var(&c.Shop.InvalidShare, "invalid-share", c.Shop.InvalidShare, "share (0-1) of invalid clicks, which must get no recommendation (0.05 in the late scenario unless given)")
	env("invalid-share")
	fs.IntVar(&c.Shop.Users, "users", c.Shop.Users, "synthetic shoppers")
	env("users")
	fs.IntVar(&c.Shop.Items, "items", c.Shop.Items, "synthetic catalogue size")
	env("items")
	fs.IntVar(&c.Shop.Categories, "categories", c.Shop.Categories, "synthetic categories")
	env("categories")
	fs.Uint64Var(&c.Shop.Seed, "seed", c.Shop.Seed, "random seed of the traffic")
	env("seed")
	fs.IntVar(&c.NewItems, "new-items", 0, "synthetic: launch this many new items (ids after the catalogue's, unknown to the model) over the first 3/4 of the measured run, and report freshness: each item's time from its first click to its first model recommendation (typical: 20; 0: off)")
	env("new-items")
	fs.StringVar(&c.TaobaoFile, "taobao-file", c.TaobaoFile, "Taobao UserBehavior CSV for --source taobao (relative to the working directory)")
	env("taobao-file")
	fs.Float64Var(&c.Speedup, "speedup", c.Speedup, "taobao: time compression (60 plays the 1.92 h slice in 1m55s at ~830 events/s mean)")
	env("speedup")
	fs.IntVar(&c.WarmupEvents, "warmup-events", c.WarmupEvents, "the least synthetic events sent before measuring; all must be answered (proves every partition is assigned and restored), and the warm-up goes on until the latency has settled")
	env("warmup-events")
	fs.Float64Var(&c.WarmupRate, "warmup-rate", c.WarmupRate, "events per second of the warm-up (0: the run's rate, the first step's in a ramp)")
	env("warmup-rate")
	fs.DurationVar(&c.WarmupMax, "warmup-max", c.WarmupMax, "the longest warm-up: if the latency has not settled by then, the run starts anyway and the report warns")
	env("warmup-max")
	fs.DurationVar(&c.ReadyTimeout, "ready-timeout", c.ReadyTimeout, "how long workers may take to become ready and answer the warm-up")
	env("ready-timeout")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", c.DrainTimeout, "how long to wait after the last send for the last recommendations")
	env("drain-timeout")
	fs.DurationVar(&c.ProgressEvery, "progress-every", c.ProgressEvery, "progress log interval on stderr (0: none)")
	env("progress-every")
	c.Kafka.Register(fs)
	fs.StringVar(&c.TopicPrefix, "topic-prefix", "", "prefix of the topic names (as the workers' --topic-prefix); with spawned workers default a fresh loadtest-<time>-<pid>- whose topics are deleted at the end")
	env("topic-prefix")
	fs.StringVar(&c.Group, "group", "", "the hot path consumer group (spawned workers: default <topic-prefix>hotpath; running workers: default clickrec-hotpath)")
	env("group")
	fs.BoolVar(&c.KeepTopics, "keep-topics", false, "keep the fresh topics of a spawned run")
	env("keep-topics")
	fs.DurationVar(&c.ProducerLinger, "producer-linger", 0, "linger of the generator's producer (franz-go's default is 10ms; a click producer should not hold clicks back)")
	env("producer-linger")
	fs.IntVar(&c.SpawnWorkers, "spawn-workers", c.SpawnWorkers, "hot path workers to run as child processes (at most --kafka-partitions useful; rolling: 2 unless given; scale: the workers it starts with); 0 targets workers already running")
	env("spawn-workers")
	fs.StringVar(&c.ClickrecBin, "clickrec-bin", "", "clickrec binary to spawn workers from (default: this executable)")
	env("clickrec-bin")
	fs.Var(&f.workerFl, "worker-flag", "extra flag for spawned workers, e.g. --worker-flag=--max-poll-records=500 (repeatable)")
	fs.BoolFunc("exactly-once", "spawned workers run exactly-once (default true); false runs them with --exactly-once=false, at-least-once, to measure what exactly-once costs (with running workers: say what they run)", func(v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", v)
		}
		c.AtLeastOnce = !b
		return nil
	})
	env("exactly-once")
	fs.Var(&f.workerEv, "worker-env", "extra NAME=value environment for spawned workers (repeatable)")
	fs.StringVar(&c.ModelDir, "model-dir", "", "spawned workers serve this saved model (clickrec train --out) instead of one the load test trains on the traffic's history")
	env("model-dir")
	fs.BoolVar(&c.NoModel, "no-model", false, "spawned workers serve no model and learn nothing online (--learn=false): every recommendation is the popularity fallback (with --no-redis: the broker path alone)")
	env("no-model")
	fs.IntVar(&c.TrainClicks, "train-clicks", 0, fmt.Sprintf("clicks of the traffic's history the load test trains its model on (0: %d per catalogue item, which covers the whole synthetic catalogue; taobao: the whole replay)", loadtest.DefaultTrainClicksPerItem))
	env("train-clicks")
	c.Redis.Register(fs)
	fs.BoolVar(&c.NoRedis, "no-redis", false, "spawned workers run with --no-redis: no Redis feature store writes (and no check that Redis is up)")
	env("no-redis")
	fs.BoolFunc("check-redis", "after the drain, check that every shopper's Redis entry matches what Kafka committed; a mismatch fails the run (default true when spawned workers write Redis; with running workers it checks --redis-addr)", func(v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", v)
		}
		c.CheckRedis = loadtest.CheckOff
		if b {
			c.CheckRedis = loadtest.CheckOn
		}
		return nil
	})
	env("check-redis")
	fs.DurationVar(&c.CheckRedisTimeout, "check-redis-timeout", c.CheckRedisTimeout, "how long after the drain the Redis writes may take to match Kafka (the workers retry a failed write with up to 5s back-off)")
	env("check-redis-timeout")
	fs.DurationVar(&c.RedisOutage, "redis-outage", 0, "pause Redis (CLIENT PAUSE ALL) this long during the run, in any scenario (redis-outage: 5s unless given; 0: none)")
	env("redis-outage")
	fs.DurationVar(&c.RedisOutageAt, "redis-outage-at", 0, "when the Redis outage begins, since the start of the measured run (0: centred on the run's middle)")
	env("redis-outage-at")
	fs.DurationVar(&c.KillEvery, "kill-every", c.KillEvery, "chaos: SIGKILL a worker this often")
	env("kill-every")
	fs.BoolVar(&c.KillAll, "kill-all", false, "chaos: kill every worker at once instead of one at a time")
	env("kill-all")
	fs.DurationVar(&c.RestartDelay, "restart-delay", 0, "chaos: wait this long before restarting a killed worker")
	env("restart-delay")
	fs.DurationVar(&c.RestartEvery, "restart-every", c.RestartEvery, "rolling: gracefully restart the next worker this often (later if the previous one is not ready yet)")
	env("restart-every")
	fs.IntVar(&c.ScaleTo, "scale-to", c.ScaleTo, "scale: workers at the peak (at most --kafka-partitions useful: a worker without a partition is never ready)")
	env("scale-to")
	fs.DurationVar(&c.OutOfOrderness, "out-of-orderness", c.OutOfOrderness, "the workers' --out-of-orderness (spawned workers get it): late clicks within it are owed a recommendation")
	env("out-of-orderness")
	fs.DurationVar(&c.SLA.P95, "sla-p95", c.SLA.P95, "p95 latency must stay below this (0: not judged)")
	env("sla-p95")
	fs.DurationVar(&c.SLA.P99, "sla-p99", c.SLA.P99, "p99 latency must stay below this (0: not judged)")
	env("sla-p99")
	fs.DurationVar(&c.SLA.Recover, "sla-recover", c.SLA.Recover, "chaos: after each SIGKILL the latency SLA (--sla-p95/--sla-p99, or 75ms/150ms where those are not judged) must hold again for the clicks due from this long after the worker's restart (0: not judged)")
	env("sla-recover")
	fs.Int64Var(&c.SLA.MaxMissing, "sla-max-missing", 0, "on-time clicks allowed to go without a recommendation")
	env("sla-max-missing")
	fs.Int64Var(&c.SLA.MaxDuplicates, "sla-max-duplicates", 0, "duplicate recommendations allowed")
	env("sla-max-duplicates")
	fs.Int64Var(&c.SLA.MaxUnexpected, "sla-max-unexpected", 0, "recommendations for invalid clicks allowed")
	env("sla-max-unexpected")
	fs.Float64Var(&c.SLA.MinRate, "sla-min-rate", 0, "ramp: the highest rate meeting the SLA must be at least this (0: any step)")
	env("sla-min-rate")
	fs.DurationVar(&c.SLA.MaxFreshness, "sla-max-freshness", 0, "with --new-items: the p95 of the new items' time from first click to first model recommendation must not exceed this, and every new item clicked must be recommended before the drain ends (0: reported, not judged)")
	env("sla-max-freshness")
	fs.Float64Var(&c.SLA.MinModelShare, "sla-min-model-share", c.SLA.MinModelShare, "when the workers serve a model, at least this share (0-1) of the recommendations must have strategy model, else the run fails (not judged with --no-model; with running workers only if given)")
	env("sla-min-model-share")
	fs.StringVar(&f.jsonPath, "json", "", "write the JSON report to this file, and the plots next to it")
	env("json")
	fs.StringVar(&c.OutDir, "out", c.OutDir, "directory of worker logs, and of the report and plots without --json")
	env("out")
	fs.StringVar(&f.cpuProf, "cpu-profile", "", "write a CPU profile of the load test process itself (generator and reader) to this file, to check it is not the bottleneck")
	env("cpu-profile")
	f.log.Register(fs)
}

func joinRates(r []float64) string {
	s := make([]string, len(r))
	for i, x := range r {
		s[i] = strconv.FormatFloat(x, 'f', -1, 64)
	}
	return strings.Join(s, ",")
}

func parseRates(s string) ([]float64, error) {
	var out []float64
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		x, err := strconv.ParseFloat(p, 64)
		if err != nil || !(x > 0) {
			return nil, fmt.Errorf("%q is not a positive rate", p)
		}
		out = append(out, x)
	}
	return out, nil
}

// apply fills what depends on other flags.
func (f *loadtestFlags) apply() error {
	c := &f.cfg
	rates, err := parseRates(f.rates)
	if err != nil {
		return cli.Usagef("--rates: %v", err)
	}
	c.Rates = rates
	c.WorkerFlags, c.WorkerEnv = f.workerFl, f.workerEv
	if c.Scenario == loadtest.ScenarioLate {
		if !f.set["late-share"] {
			c.Shop.LateShare = 0.2
		}
		if !f.set["invalid-share"] {
			c.Shop.InvalidShare = 0.05
		}
	}
	if c.Scenario == loadtest.ScenarioChaos {
		if !f.set["sla-p95"] {
			c.SLA.P95 = 0
		}
		if !f.set["sla-p99"] {
			c.SLA.P99 = 0
		}
	}
	if c.Scenario == loadtest.ScenarioRolling && !f.set["spawn-workers"] {
		c.SpawnWorkers = 2 // a rolling restart of one worker is an outage
	}
	if c.SpawnWorkers == 0 && c.Group == "" {
		c.Group = "clickrec-hotpath"
	}
	// Running workers serve what they were started with: their model share
	// is judged only when asked for.
	c.ExpectModel = c.SpawnWorkers == 0 && f.set["sla-min-model-share"]
	if c.Source == "taobao" && !f.set["duration"] {
		c.Duration = 0
	}
	if err := c.Validate(); err != nil {
		return cli.Usagef("%v", err)
	}
	if c.ModelDir != "" {
		if _, err := os.Stat(c.ModelDir); err != nil {
			return cli.Usagef("--model-dir: %v", err)
		}
	}
	if c.Source == "taobao" {
		if _, err := os.Stat(c.TaobaoFile); err != nil {
			return cli.Usagef("--taobao-file: %v (run scripts/data.sh and run from the repository root, or set --taobao-file / CLICKREC_LOADTEST_TAOBAO_FILE)", err)
		}
	}
	return nil
}

// loadtestCommand runs `clickrec loadtest` with args (without the command name),
// writing the summary to stdout and progress to stderr. Flag mistakes and
// unreachable brokers are *cli.UsageError (exit 2); a breached SLA is an
// error wrapping ErrSLA (exit 1).
func loadtestCommand(ctx context.Context, args []string, stdout io.Writer) error {
	var f loadtestFlags
	fs := cli.NewFlagSet("loadtest", loadtestUsage)
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	f.set = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	for name, v := range f.envs { // a flag set through its variable counts as given
		if _, ok := os.LookupEnv(v); ok {
			f.set[name] = true
		}
	}
	fs.Visit(func(fl *flag.Flag) { // connection settings the spawned workers need too
		switch {
		case strings.HasPrefix(fl.Name, "kafka-") && fl.Name != "kafka-brokers" && fl.Name != "kafka-partitions":
			f.cfg.KafkaFlags = append(f.cfg.KafkaFlags, "--"+fl.Name+"="+fl.Value.String())
		case fl.Name == "redis-db" || fl.Name == "redis-dial-timeout":
			// The address is always passed; the password goes in the
			// environment; --redis-outage* are the load test's own.
			f.cfg.RedisFlags = append(f.cfg.RedisFlags, "--"+fl.Name+"="+fl.Value.String())
		}
	})
	if err := f.apply(); err != nil {
		return err
	}
	log, err := f.log.Logger()
	if err != nil {
		return err
	}
	if f.cpuProf != "" {
		pf, err := os.Create(f.cpuProf)
		if err != nil {
			return cli.Usagef("--cpu-profile: %v", err)
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return fmt.Errorf("starting the CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	return loadtest.Execute(ctx, f.cfg, f.jsonPath, log, stdout)
}
