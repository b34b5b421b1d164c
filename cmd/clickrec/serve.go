package main

import (
	"context"
	"errors"
	"log/slog"
	"net"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/clickrec/clickrec/gen"
	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/internal/redisutil"
	"github.com/clickrec/clickrec/web"
)

func init() {
	register(command{name: "serve", synopsis: "web API over the feature store, live recommendation streams and the storefront page", run: runServe})
}

// webFlags are the web server's own flags, shared by serve and demo.
type webFlags struct {
	addr       string
	rateLimit  float64
	rateBurst  int
	maxStreams int
	maxBody    int64
	shop       gen.Config
}

// register adds the flags; addrFlag names the listen address flag (serve's
// --http-addr, demo's --web-addr, whose --http-addr is the worker's metrics).
func (f *webFlags) register(fs *cli.FlagSet, addrFlag string) {
	def := web.DefaultConfig()
	fs.StringVar(&f.addr, addrFlag, "127.0.0.1:8080", "address of the web API and the storefront page")
	fs.Env(addrFlag, "CLICKREC_WEB_ADDR")
	fs.Float64Var(&f.rateLimit, "rate-limit", float64(def.RateLimit), "API requests per second per client address (token bucket); over it the answer is 429")
	fs.Env("rate-limit", "CLICKREC_WEB_RATE_LIMIT")
	fs.IntVar(&f.rateBurst, "rate-burst", def.RateBurst, "burst of the per-client rate limit")
	fs.Env("rate-burst", "CLICKREC_WEB_RATE_BURST")
	fs.IntVar(&f.maxStreams, "max-streams", def.MaxStreams, "concurrent recommendation streams (server-sent events), all clients together")
	fs.Env("max-streams", "CLICKREC_WEB_MAX_STREAMS")
	fs.Int64Var(&f.maxBody, "max-body-bytes", def.MaxBodyBytes, "largest POST body; larger ones get 413")
	fs.Env("max-body-bytes", "CLICKREC_WEB_MAX_BODY_BYTES")
	f.shop = gen.DefaultConfig()
	fs.Uint64Var(&f.shop.Seed, "shop-seed", f.shop.Seed, "seed of the synthetic shop whose catalogue the storefront shows (same as clickrec gen --seed)")
	fs.Env("shop-seed", "CLICKREC_GEN_SEED")
	fs.IntVar(&f.shop.Items, "shop-items", f.shop.Items, "items of the synthetic shop (same as clickrec gen --items)")
	fs.Env("shop-items", "CLICKREC_GEN_ITEMS")
	fs.IntVar(&f.shop.Categories, "shop-categories", f.shop.Categories, "categories of the synthetic shop (same as clickrec gen --categories)")
	fs.Env("shop-categories", "CLICKREC_GEN_CATEGORIES")
}

func (f *webFlags) config() (web.Config, error) {
	cfg := web.DefaultConfig()
	if err := cli.Positive("rate-limit", f.rateLimit); err != nil {
		return cfg, err
	}
	if err := cli.Positive("rate-burst", f.rateBurst); err != nil {
		return cfg, err
	}
	if err := cli.Positive("max-streams", f.maxStreams); err != nil {
		return cfg, err
	}
	if err := cli.Positive("max-body-bytes", f.maxBody); err != nil {
		return cfg, err
	}
	if err := f.shop.Validate(); err != nil {
		return cfg, cli.Usagef("--shop-*: %v", err)
	}
	cfg.RateLimit, cfg.RateBurst, cfg.MaxStreams, cfg.MaxBodyBytes = rate.Limit(f.rateLimit), f.rateBurst, f.maxStreams, f.maxBody
	cfg.EventLimits.MaxRecordBytes = int(f.maxBody)
	return cfg, nil
}

// webRun is one web server: where it reads and writes, and its flags.
type webRun struct {
	flags  *webFlags
	kafka  *kafkautil.Config
	topics kafkautil.Topics
	redis  *redis.Client // nil: follow the Kafka topics in memory
	log    *slog.Logger
	// listening, if not nil, is called with the address once the server accepts connections.
	listening func(addr string)
}

// serveWeb runs the web server until ctx ends.
func serveWeb(ctx context.Context, r webRun) error {
	cfg, err := r.flags.config()
	if err != nil {
		return err
	}
	cat, err := web.NewCatalogue(r.flags.shop, web.DefaultCatalogueSample)
	if err != nil {
		return err
	}
	prod, err := web.NewKafkaProducer(*r.kafka, string(r.topics.Events))
	if err != nil {
		return err
	}
	defer prod.Close()
	g, gctx := errgroup.WithContext(ctx)
	var store web.Store
	if r.redis != nil {
		rs := web.NewRedisStore(r.redis)
		defer rs.Close()
		store = rs
	} else {
		ms := web.NewMemoryStore(*r.kafka, r.topics, web.MemoryOptions{Logger: r.log.With("component", "web-follower")})
		g.Go(func() error { return ms.Run(gctx) })
		store = ms
	}
	srv, err := web.New(cfg, store, prod, cat, r.log.With("component", "web"))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", r.flags.addr)
	if err != nil {
		return cli.Usagef("web server address %s: %v", r.flags.addr, err)
	}
	mode := "redis"
	if r.redis == nil {
		mode = "kafka (in memory, no Redis)"
	}
	r.log.Info("web server listening", "url", "http://"+ln.Addr().String()+"/", "store", mode, "catalogue_items", cat.Len())
	if r.listening != nil {
		r.listening(ln.Addr().String())
	}
	g.Go(func() error { return srv.Serve(gctx, ln) })
	return g.Wait()
}

func runServe(ctx context.Context, args []string) error {
	var (
		logf    cli.Logging
		kafka   kafkautil.Config
		rcfg    redisutil.Config
		noRedis bool
		wf      webFlags
	)
	topics := kafkautil.DefaultTopics
	fs := newFlagSet("serve", `The web backend. Serves, on --http-addr:

  GET  /                                      the live storefront page
  GET  /v1/catalogue                          products of the synthetic shop
  GET  /v1/users/{id}/recommendations         latest recommendations (with age_ms)
  GET  /v1/users/{id}/recommendations/stream  new recommendations, server-sent events
  GET  /v1/users/{id}/events                  the user's recent events
  POST /v1/events                             a click, validated and produced to user_events

Reads the Redis feature store the hot path writes (user:{id}, channel
recs:<id>); with --no-redis it follows the recommendations and user_events
topics (read_committed) and keeps users in memory instead. Run the hot path
(clickrec hotpath) against the same Kafka cluster; clickrec demo runs
everything in one process.`)
	logf.Register(fs)
	kafka.Register(fs)
	rcfg.Register(fs)
	fs.BoolVar(&noRedis, "no-redis", false, "run without Redis: follow the Kafka topics and keep users in memory")
	fs.Env("no-redis", "CLICKREC_NO_REDIS")
	fs.Func("topic-prefix", "prefix of the topic names, as given to clickrec hotpath (empty: the standard names)", func(p string) error {
		t, err := kafkautil.PrefixedTopics(p)
		if err != nil {
			return err
		}
		topics = t
		return nil
	})
	fs.Env("topic-prefix", "CLICKREC_HOTPATH_TOPIC_PREFIX")
	wf.register(fs, "http-addr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := kafka.Validate(); err != nil {
		return err
	}
	if len(kafka.Brokers) == 0 {
		return cli.Usagef("--kafka-brokers is required for serve (the embedded broker lives only inside `clickrec demo`)")
	}
	if _, err := wf.config(); err != nil {
		return err
	}
	log, err := logf.Logger()
	if err != nil {
		return err
	}
	admin, err := kgo.NewClient(kafka.Opts("clickrec-web-admin")...)
	if err != nil {
		return err
	}
	defer admin.Close()
	if err := kafkautil.Ping(ctx, &kafka, admin); err != nil {
		return err
	}
	if err := kafkautil.EnsureTopics(ctx, &kafka, admin, topics); err != nil {
		return err
	}
	run := webRun{flags: &wf, kafka: &kafka, topics: topics, log: log}
	if !noRedis {
		rc := rcfg.Client()
		defer rc.Close()
		if err := redisutil.Ping(ctx, &rcfg, rc); err != nil {
			return err
		}
		run.redis = rc
	}
	if err := serveWeb(ctx, run); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("web server stopped")
	return nil
}
