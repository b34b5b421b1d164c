package main

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/clickrec/clickrec/hotpath"
	"github.com/clickrec/clickrec/internal/admin"
	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/internal/redisutil"
)

func init() {
	register(command{name: "hotpath", synopsis: "run a stream worker: clicks in, top-10 recommendations out, exactly once", run: runHotpath})
}

type hotpathFlags struct {
	log      cli.Logging
	kafka    kafkautil.Config
	redis    redisutil.Config
	noRedis  bool
	noModel  bool
	cfg      hotpath.Config
	httpAddr string
	pprof    bool
	model    modelFlags
	// serving, when set (the demo's model), is served instead of
	// --model-dir or the registry's current version.
	serving *hotpath.Serving
}

func (f *hotpathFlags) register(fs *cli.FlagSet) {
	f.cfg = hotpath.DefaultConfig()
	f.log.Register(fs)
	f.kafka.Register(fs)
	f.redis.Register(fs)
	fs.BoolVar(&f.noRedis, "no-redis", false, "run without the Redis feature store (recommendations still go to Kafka)")
	fs.Env("no-redis", "CLICKREC_NO_REDIS")
	f.cfg.Register(fs)
	fs.StringVar(&f.httpAddr, "http-addr", "127.0.0.1:9464", "address of /metrics, /healthz and /readyz (ready once every owned partition is restored)")
	fs.Env("http-addr", "CLICKREC_HTTP_ADDR")
	fs.BoolVar(&f.pprof, "pprof", false, "also serve Go's profiler on --http-addr under /debug/pprof/")
	fs.Env("pprof", "CLICKREC_PPROF")
	f.model.register(fs)
	fs.BoolVar(&f.noModel, "no-model", false, "serve no model, neither --model-dir nor the registry's: every recommendation is the popularity fallback (to measure the path without scoring)")
	fs.Env("no-model", "CLICKREC_NO_MODEL")
}

func runHotpath(ctx context.Context, args []string) error {
	var f hotpathFlags
	fs := newFlagSet("hotpath", `Run a hot path worker. It joins the hot path consumer group on user_events,
keeps per-user session state (restored from hotpath-changelog), scores each
on-time click with the serving model (or the popularity fallback) and writes,
in one Kafka transaction per poll: recommendations, window results, late and
dead-letter side outputs, the state changelog and the consumed offsets.
After each commit it updates the Redis feature store (user:{id}).

Start as many workers as user_events has partitions, each with its own
--instance-id (stable across restarts).

Garbage collection: unless GOGC is set, the hot path runs with GOGC=400. Its
heap is mostly long-lived user state that every collection scans; collecting
a quarter as often cut the worker's CPU at 20,000 clicks/s by about a fifth
(README, "Load test"). Set GOMEMLIMIT to the container's memory to keep the
extra headroom bounded.`)
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := f.kafka.Validate(); err != nil {
		return err
	}
	if err := f.cfg.Validate(); err != nil {
		return err
	}
	log, err := f.log.Logger()
	if err != nil {
		return err
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(hotpathGOGC)
	}
	if len(f.kafka.Brokers) == 0 {
		return cli.Usagef("--kafka-brokers is required for hotpath (the embedded broker lives only inside `clickrec demo`)")
	}
	return serveHotpath(ctx, &f, log, nil)
}

// resolveGroupProtocol turns --group-protocol auto into consumer (KIP-848) on
// Kafka 4.3+ and classic otherwise, and refuses consumer on brokers that do
// not serve it.
func resolveGroupProtocol(ctx context.Context, kcl *kgo.Client, cfg *hotpath.Config, log *slog.Logger) error {
	if cfg.GroupProtocol == hotpath.GroupProtocolClassic {
		return nil
	}
	support, err := kafkautil.ConsumerProtocol(ctx, kcl)
	if err != nil {
		return err
	}
	switch {
	case cfg.GroupProtocol == hotpath.GroupProtocolConsumer && support == kafkautil.ConsumerProtocolNone:
		return cli.Usagef("--group-protocol consumer: the brokers do not serve the consumer group protocol (KIP-848, Kafka 4.0+ with \"consumer\" in group.coordinator.rebalance.protocols); use --group-protocol classic")
	case cfg.GroupProtocol == hotpath.GroupProtocolConsumer && support == kafkautil.ConsumerProtocolEarly:
		log.Warn("the consumer group protocol on brokers older than Kafka 4.3: an offset commit that races a member-epoch bump can fail (KIP-1251) and abort its transaction")
	case cfg.GroupProtocol == hotpath.GroupProtocolAuto && support == kafkautil.ConsumerProtocolFull:
		cfg.GroupProtocol = hotpath.GroupProtocolConsumer
	case cfg.GroupProtocol == hotpath.GroupProtocolAuto:
		cfg.GroupProtocol = hotpath.GroupProtocolClassic
		log.Info("using the classic group protocol: the brokers are older than Kafka 4.3 (--group-protocol auto); a join or leave pauses the group while it rebalances")
	}
	return nil
}

// hotpathGOGC is the hot path's GOGC unless the environment sets one.
const hotpathGOGC = 400

// serveHotpath runs a worker with its HTTP endpoints until ctx ends. ready, if
// not nil, is called with the worker once it is created.
func serveHotpath(ctx context.Context, f *hotpathFlags, log *slog.Logger, ready func(*hotpath.Worker)) error {
	if f.noModel && f.model.file != "" {
		return cli.Usagef("--no-model and --model-dir %s exclude each other", f.model.file)
	}
	kcl, err := kgo.NewClient(f.kafka.Opts("clickrec-hotpath-admin")...)
	if err != nil {
		return err
	}
	defer kcl.Close()
	if err := kafkautil.Ping(ctx, &f.kafka, kcl); err != nil {
		return err
	}
	if err := kafkautil.EnsureTopics(ctx, &f.kafka, kcl, f.cfg.Topics); err != nil {
		return err
	}
	if err := resolveGroupProtocol(ctx, kcl, &f.cfg, log); err != nil {
		return err
	}
	need := kafkautil.GroupNeeds{SessionTimeout: f.cfg.SessionTimeout, ConsumerProtocol: f.cfg.GroupProtocol == hotpath.GroupProtocolConsumer}
	if !f.cfg.AtLeastOnce {
		need.TxnTimeout = f.cfg.TxnTimeout
	}
	findings, err := kafkautil.CheckBrokerSettings(ctx, kcl, need)
	if err != nil {
		return err
	}
	for _, fd := range findings {
		log.Warn("a broker setting slows membership changes down", "setting", fd.Setting, "value", fd.Value, "why", fd.Why)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts := hotpath.Options{Logger: log, Registry: reg}
	// This instance's local files, beside its Pebble stores: the marker
	// that it reached Redis and the model it served last (none without
	// --state-dir).
	var marker string
	if f.cfg.StateDir != "" {
		local := filepath.Join(f.cfg.StateDir, url.PathEscape(f.cfg.InstanceID))
		marker, f.model.opts.CacheDir = filepath.Join(local, "redis-reached"), filepath.Join(local, "model-cache")
	}
	if !f.noRedis {
		rc := f.redis.Client()
		defer rc.Close()
		if err := pingRedis(ctx, &f.redis, rc, marker, log); err != nil {
			return err
		}
		opts.Redis = rc
	}
	w, err := hotpath.New(f.cfg, f.kafka, opts)
	if err != nil {
		return err
	}
	switch {
	case f.serving != nil:
		w.SetServing(f.serving)
	case f.noModel:
		log.Info("no model (--no-model): serving the popularity fallback only")
	default:
		if err := f.model.load(ctx, w, opts.Redis, log); err != nil {
			return err
		}
	}
	if ready != nil {
		ready(w)
	}
	adm, err := admin.Listen(f.httpAddr, admin.Options{Metrics: reg, Pprof: f.pprof, Ready: func() error {
		if !w.Ready() {
			return errors.New("restoring state or not yet assigned")
		}
		return nil
	}})
	if err != nil {
		return cli.Usagef("--http-addr %s: %v", f.httpAddr, err)
	}
	log.Info("serving metrics and health", "addr", "http://"+adm.Addr())

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return adm.Serve(gctx) })
	if opts.Redis != nil {
		g.Go(func() error { w.WatchPopularity(gctx, opts.Redis, 30*time.Second); return nil })
	}
	g.Go(func() error {
		err := w.Run(gctx)
		if err == nil {
			err = context.Canceled // stop the other goroutines
		}
		return err
	})
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("hot path worker stopped")
	return nil
}

// pingRedis checks that Redis answers. A worker that reached this Redis
// before (the marker file holds its address) starts without it after a
// short try: it was restarted during an outage, its writes wait in the
// background, and its model comes from its local cache. A first start still
// waits --redis-dial-timeout and fails with a usage error: a wrong address
// is found at once, not after the first outage.
func pingRedis(ctx context.Context, cfg *redisutil.Config, rc *redis.Client, marker string, log *slog.Logger) error {
	var reached bool
	if marker != "" {
		before, _ := os.ReadFile(marker)
		reached = string(before) == cfg.Addr
	}
	try := *cfg
	if reached {
		try.DialTimeout = min(try.DialTimeout, 500*time.Millisecond)
	}
	if err := redisutil.Ping(ctx, &try, rc); err != nil {
		if !reached {
			return err
		}
		log.Warn("Redis does not answer; this worker reached it before, so it starts anyway: its writes wait and are retried in the background",
			"addr", cfg.Addr, "err", err)
		return nil
	}
	if !reached && marker != "" {
		if err := os.MkdirAll(filepath.Dir(marker), 0o755); err == nil {
			_ = os.WriteFile(marker, []byte(cfg.Addr), 0o644)
		}
	}
	return nil
}
