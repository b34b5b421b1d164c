package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/clickrec/clickrec/featurestore"
	"github.com/clickrec/clickrec/gen"
	"github.com/clickrec/clickrec/hotpath"
	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/internal/shoptrain"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/model/onnx"
	"github.com/clickrec/clickrec/serving"
	"github.com/clickrec/clickrec/wire"
)

func init() {
	register(command{name: "demo", synopsis: "run everything on an embedded Kafka broker, with the live storefront page, and print what flows (no servers needed)", run: runDemo})
}

func runDemo(ctx context.Context, args []string) error {
	var (
		hf       hotpathFlags
		wf       webFlags
		rate     float64
		duration time.Duration
		users    int
		every    int
		trainN   int
	)
	fs := newFlagSet("demo", `The one-command demo. Starts an in-process Kafka broker (franz-go's kfake),
a hot path worker, the web server with the live storefront page (open the URL
it prints: click products and watch the recommendations arrive), and the
synthetic shop generator; prints recommendations as they are committed, with
their click→recommendation latency, and a summary every few seconds. Ctrl-C
stops it. --rate 0 turns the generator off, so only the page's clicks flow.
Give --no-redis=false and point --redis-addr at a redis-server to also fill
the feature store and serve the page from it (off by default: the demo needs
no servers).`)
	hf.register(fs)
	hf.noRedis = true
	wf.register(fs, "web-addr")
	fs.Float64Var(&rate, "rate", 200, "clicks per second from the synthetic shop (0: no synthetic traffic, only the page's clicks)")
	fs.DurationVar(&duration, "duration", 0, "stop after this long (0: until Ctrl-C)")
	fs.IntVar(&users, "users", 2000, "shoppers in the synthetic shop")
	fs.IntVar(&every, "print-every", 0, "print one recommendation in this many (0: about 5 per second)")
	fs.IntVar(&trainN, "train-clicks", 60_000, "train a model on this many clicks of the synthetic shop's history before starting, so recommendations come from the model (0: popularity only; --model-dir serves a saved model instead)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if rate < 0 {
		return cli.Usagef("--rate must not be negative, got %v", rate)
	}
	if err := cli.Positive("users", users); err != nil {
		return err
	}
	if _, err := wf.config(); err != nil {
		return err
	}
	if every <= 0 {
		every = max(1, int(rate/5))
	}
	log, err := hf.log.Logger()
	if err != nil {
		return err
	}
	if duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}
	hf.kafka.Brokers = nil
	emb, err := kafkautil.StartEmbedded(&hf.kafka, hf.cfg.Topics)
	if err != nil {
		return err
	}
	defer emb.Close()
	log.Info("embedded Kafka broker started", "brokers", hf.kafka.Brokers, "partitions", hf.kafka.Partitions)

	// The generator's shop is the one whose catalogue the page shows.
	shop := wf.shop
	shop.Users = users
	pop, err := warmPopularity(shop, 50_000, hf.cfg.TopK)
	if err != nil {
		return err
	}
	if trainN > 0 && hf.model.file == "" && !hf.noModel {
		if hf.serving, err = trainDemoModel(ctx, shop, trainN, &hf.model, log); err != nil {
			return err
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	workerReady := make(chan struct{})
	var pageURL atomic.Value // the storefront's URL once it listens, repeated in the summaries
	g.Go(func() error {
		return serveHotpath(gctx, &hf, log, func(w *hotpath.Worker) {
			w.SetPopularity(pop)
			close(workerReady)
		})
	})
	g.Go(func() error {
		run := webRun{flags: &wf, kafka: &hf.kafka, topics: hf.cfg.Topics, log: log, listening: func(addr string) {
			pageURL.Store("http://" + addr + "/")
			fmt.Printf("\n  ▶ storefront: open http://%s/ — click products and watch the recommendations arrive\n\n", addr)
		}}
		if !hf.noRedis {
			rc := hf.redis.Client()
			defer rc.Close()
			run.redis = rc
		}
		return serveWeb(gctx, run)
	})
	g.Go(func() error {
		if rate == 0 {
			log.Info("synthetic traffic off (--rate 0): only the storefront's clicks flow")
			return nil
		}
		select {
		case <-workerReady:
		case <-gctx.Done():
			return nil
		}
		src, err := gen.NewSynthetic(shop)
		if err != nil {
			return err
		}
		cl, err := kgo.NewClient(append(hf.kafka.Opts("clickrec-demo-gen"), kgo.DefaultProduceTopic(string(hf.cfg.Topics.Events)))...)
		if err != nil {
			return err
		}
		defer cl.Close()
		clock := &gen.SystemClock{}
		_, err = gen.Run(gctx, gen.RunConfig{
			Source: src, Sink: gen.NewKafkaSink(cl, string(hf.cfg.Topics.Events)),
			Pacer: gen.NewPacer(clock, clock.Now(), gen.ConstantRate(rate)),
			Log:   log.With("component", "gen"), ProgressEvery: 10 * time.Second,
		})
		return err
	})
	g.Go(func() error {
		return printRecs(gctx, &hf, os.Stdout, every, func() string { s, _ := pageURL.Load().(string); return s })
	})
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// warmPopularity builds a popularity table from a sample of the synthetic shop,
// standing in for the RefreshPopularity workflow, which the demo does not run.
func warmPopularity(cfg gen.Config, n, k int) (*featurestore.Popularity, error) {
	cfg.LateShare, cfg.InvalidShare = 0, 0
	src, err := gen.NewSynthetic(cfg)
	if err != nil {
		return nil, err
	}
	type key struct {
		cat  string
		item int64
	}
	counts := map[key]float32{}
	var r gen.Record
	t := time.Now().Add(-time.Hour)
	for i := 0; i < n && src.Next(&r, t); i++ {
		t = t.Add(10 * time.Millisecond)
		counts[key{r.Click.Category, r.Click.ItemID}] += model.DefaultWeighting.TypeWeight(r.Click.Type)
	}
	global := map[int64]float32{}
	byCat := map[string][]featurestore.Scored{}
	for k, c := range counts {
		global[k.item] += c
		byCat[k.cat] = append(byCat[k.cat], featurestore.Scored{ItemID: k.item, Score: c})
	}
	top := func(s []featurestore.Scored) []featurestore.Scored {
		slices.SortFunc(s, func(a, b featurestore.Scored) int {
			return cmp.Or(cmp.Compare(b.Score, a.Score), cmp.Compare(a.ItemID, b.ItemID))
		})
		return s[:min(len(s), k*2)]
	}
	p := &featurestore.Popularity{Version: "demo-warmup", ByCategory: map[string][]featurestore.Scored{}}
	for c, s := range byCat {
		p.ByCategory[c] = top(s)
	}
	var gl []featurestore.Scored
	for id, c := range global {
		gl = append(gl, featurestore.Scored{ItemID: id, Score: c})
	}
	p.Global = top(gl)
	return p, nil
}

// printRecs follows the recommendations topic (read_committed) and prints a
// sample of them, and a summary every 5 seconds that ends with page(), the
// storefront's URL, if it is not empty.
func printRecs(ctx context.Context, hf *hotpathFlags, w io.Writer, every int, page func() string) error {
	cl, err := kgo.NewClient(append(hf.kafka.Opts("clickrec-demo-reader"),
		kgo.ConsumeTopics(string(hf.cfg.Topics.Recs)),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(200*time.Millisecond))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	var (
		n         int
		lat       []float64
		strategy  = map[string]int{}
		lastPrint = time.Now()
	)
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fs.EachRecord(func(r *kgo.Record) {
			rec, err := wire.DecodeRecommendation(r.Value)
			if err != nil {
				return
			}
			n++
			strategy[rec.Strategy]++
			// A recommendation carries its click's record timestamp: now − timestamp is
			// click→recommendation, as a reader of the topic sees it.
			l := float64(time.Since(r.Timestamp).Microseconds()) / 1000
			lat = append(lat, l)
			if n%every == 0 {
				ids := make([]string, 0, len(rec.Items))
				for _, it := range rec.Items {
					ids = append(ids, strconv.FormatInt(it.ItemID, 10))
				}
				fmt.Fprintf(w, "%-8s %-10s → %-16s %v\n", rec.UserID, rec.EventID, rec.Strategy, ids)
			}
		})
		if time.Since(lastPrint) >= 5*time.Second && len(lat) > 0 {
			slices.Sort(lat)
			q := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
			fmt.Fprintf(w, "── %d recommendations so far · last 5 s: %d, click→rec p50 %.1f ms p95 %.1f ms · strategies %v",
				n, len(lat), q(0.5), q(0.95), strategy)
			if u := page(); u != "" {
				fmt.Fprintf(w, " · storefront %s", u)
			}
			fmt.Fprintln(w)
			lat = lat[:0]
			lastPrint = time.Now()
		}
	}
}

// trainDemoModel trains a small model on n clicks of the synthetic shop's
// history (the same catalogue the generator then plays, other clicks),
// standing in for the RetrainModel workflow, which the demo does not run. It
// serves it with ONNX Runtime when the library is installed, else with the
// pure-Go scorer.
func trainDemoModel(ctx context.Context, shop gen.Config, n int, mf *modelFlags, log *slog.Logger) (*hotpath.Serving, error) {
	start := time.Now()
	src, err := shoptrain.History(shop)
	if err != nil {
		return nil, err
	}
	sessions, _ := shoptrain.Sessions(src, n, start.Add(-24*time.Hour), 2)
	log.Info("demo: training a model on the shop's history (--train-clicks 0 skips this)", "clicks", n, "sessions", len(sessions))
	m, _, err := model.Train(ctx, sessions, shoptrain.QuickConfig(), log.With("component", "train"))
	if err != nil {
		return nil, fmt.Errorf("training the demo model: %w", err)
	}
	if _, err := onnx.LibraryPath(mf.opts.ORTLib); err != nil {
		log.Info("demo: ONNX Runtime library not found, scoring with the pure-Go scorer", "hint", onnx.InstallHint)
		mf.opts.Scorer = serving.ScorerGo
	}
	s, err := mf.opts.Build("demo-"+time.Now().UTC().Format("150405"), m, nil)
	if err != nil {
		return nil, err
	}
	log.Info("demo: model ready", "items", m.NumItems(), "scorer", mf.opts.Scorer, "took", time.Since(start).Round(time.Millisecond))
	return s, nil
}
