package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/featurestore"
	"github.com/clickrec/clickrec/hotpath"
	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/internal/redisutil"
	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/wire"
)

// workerEnv makes the test binary act as `clickrec hotpath` (see TestMain),
// so that the load test can spawn, kill and restart real worker processes
// without building clickrec.
const workerEnv = "CLICKREC_LOADTEST_TEST_WORKER"

// fakeWorkerEnv makes the test binary a stand-in worker that needs no
// broker (see fakeWorkerMain); "stubborn" makes it ignore SIGTERM.
const fakeWorkerEnv = "CLICKREC_LOADTEST_TEST_FAKE_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		os.Exit(testWorkerMain(os.Args[1:]))
	}
	if v := os.Getenv(fakeWorkerEnv); v != "" {
		os.Exit(fakeWorkerMain(os.Args[1:], v == "stubborn"))
	}
	os.Exit(m.Run())
}

// fakeWorkerMain answers /readyz on --http-addr at once and exits 0 on
// SIGTERM (never, if stubborn): enough of a worker for the fleet's process
// handling, with no broker.
func fakeWorkerMain(args []string, stubborn bool) int {
	addr := ""
	for i, a := range args {
		if a == "--http-addr" && i+1 < len(args) {
			addr = args[i+1]
		}
	}
	term := make(chan os.Signal, 1)
	if stubborn {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(term, syscall.SIGTERM)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake worker:", err)
		return 1
	}
	go http.Serve(ln, http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { fmt.Fprintln(rw, "ready") }))
	fmt.Println("fake worker ready", args)
	<-term
	fmt.Println("fake worker stopped")
	return 0
}

// testWorkerMain is a hot path worker process with the flags the load test
// passes to `clickrec hotpath`: a real hotpath.Worker, a popularity table,
// the --model-dir model (scored by the pure-Go scorer whatever --scorer
// says), the Redis feature store unless --no-redis, /readyz, a graceful stop
// on SIGTERM.
func testWorkerMain(args []string) int {
	if len(args) == 0 || args[0] != "hotpath" {
		fmt.Fprintln(os.Stderr, "test worker: want `hotpath [flags]`, got", args)
		return 2
	}
	var (
		kcfg     kafkautil.Config
		rcfg     redisutil.Config
		cfg      = hotpath.DefaultConfig()
		addr     string
		noRedis  bool
		noModel  bool
		modelDir string
		scorer   string
		logging  cli.Logging
	)
	fs := cli.NewFlagSet("hotpath", "test worker")
	kcfg.Register(fs)
	rcfg.Register(fs)
	cfg.Register(fs)
	logging.Register(fs)
	fs.StringVar(&addr, "http-addr", "127.0.0.1:0", "")
	fs.BoolVar(&noRedis, "no-redis", false, "")
	fs.BoolVar(&noModel, "no-model", false, "")
	fs.StringVar(&modelDir, "model-dir", "", "")
	fs.StringVar(&scorer, "scorer", "onnx", "")
	if err := fs.Parse(args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "test worker:", err)
		return 2
	}
	log, _ := logging.Logger()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	opts := hotpath.Options{Logger: log}
	if !noRedis {
		rc := rcfg.Client()
		defer rc.Close()
		if err := redisutil.Ping(ctx, &rcfg, rc); err != nil {
			fmt.Fprintln(os.Stderr, "test worker:", err)
			return 2
		}
		opts.Redis = rc
	}
	w, err := hotpath.New(cfg, kcfg, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "test worker:", err)
		return 1
	}
	w.SetPopularity(testPopularity())
	if modelDir != "" && !noModel {
		m, md, err := model.Load(modelDir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "test worker:", err)
			return 2
		}
		m.Version = md.Version
		sc, err := model.NewScorer(m)
		if err != nil {
			fmt.Fprintln(os.Stderr, "test worker:", err)
			return 1
		}
		w.SetServing(&hotpath.Serving{Version: md.Version, Model: m, Scorer: sc})
		log.Info("test worker serves a model", "version", md.Version, "items", m.NumItems())
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "test worker:", err)
		return 1
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		if !w.Ready() {
			http.Error(rw, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(rw, "ready")
	}), ReadHeaderTimeout: time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	if err := w.Run(ctx); err != nil {
		log.Error("test worker failed", "err", err)
		return 1
	}
	return 0
}

func testPopularity() *featurestore.Popularity {
	p := &featurestore.Popularity{Version: "loadtest", ByCategory: map[string][]featurestore.Scored{}}
	for i := range 20 {
		p.Global = append(p.Global, featurestore.Scored{ItemID: int64(i + 1), Score: float32(20 - i)})
	}
	return p
}

// testConfig is a short run against the embedded broker at kcfg.
func testConfig(t *testing.T, kcfg kafkautil.Config) Config {
	cfg := DefaultConfig()
	cfg.Kafka = kcfg
	cfg.Rate, cfg.Duration = 400, 2*time.Second
	cfg.Shop.Users = 500
	cfg.Shop.Items = 2000 // the model the load test trains on 200,000 clicks knows all of them in about a second
	cfg.Shop.InvalidShare = 0.05
	cfg.NoRedis = true // the tests that need Redis ask testenv for it
	cfg.WorkerFlags = []string{"--scorer=go"}
	cfg.WarmupEvents, cfg.WarmupRate = 100, 500
	// A shared machine under -race: prove the mechanics, do not wait for
	// a latency this steady.
	cfg.WarmupSettle, cfg.WarmupMax = SettleRule{Windows: 2, Tolerance: 1, Slack: 20 * time.Millisecond}, 20*time.Second
	cfg.ReadyTimeout, cfg.DrainTimeout = 30*time.Second, 30*time.Second
	cfg.ProgressEvery = 500 * time.Millisecond
	cfg.OutDir = t.TempDir()
	t.Cleanup(func() { dumpLogs(t, cfg.OutDir) })
	cfg.SLA = SLA{P95: 10 * time.Second, P99: 10 * time.Second} // the embedded broker under -race is no benchmark
	return cfg
}

// dumpLogs logs the worker logs under dir if the test failed.
func dumpLogs(t *testing.T, dir string) {
	if !t.Failed() {
		return
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "*", "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		t.Logf("---- %s\n%s", l, b)
	}
}

// embedded starts a kfake cluster with the topics of prefix.
func embedded(t *testing.T, prefix string, partitions int) (kafkautil.Config, kafkautil.Topics) {
	t.Helper()
	topics, err := kafkautil.PrefixedTopics(prefix)
	if err != nil {
		t.Fatal(err)
	}
	kcfg := kafkautil.Config{Partitions: partitions, ReplicationFactor: 1, DialTimeout: 10 * time.Second}
	emb, err := kafkautil.StartEmbedded(&kcfg, topics)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	return kcfg, topics
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// runWorker runs an in-process hot path worker until the test ends.
func runWorker(t *testing.T, kcfg kafkautil.Config, topics kafkautil.Topics, group string) {
	t.Helper()
	cfg := hotpath.DefaultConfig()
	cfg.Group, cfg.InstanceID, cfg.Topics = group, "w1", topics
	w, err := hotpath.New(cfg, kcfg, hotpath.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	w.SetPopularity(testPopularity())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
}

// TestLateScenarioWithHotpath runs the late scenario against a real
// hotpath.Worker on the embedded broker: on-time and slightly late clicks
// answered exactly once, invalid ones not at all, and the files written.
func TestLateScenarioWithHotpath(t *testing.T) {
	t.Parallel()
	kcfg, topics := embedded(t, "lt-late-", 4)
	runWorker(t, kcfg, topics, "lt-late-group")
	cfg := testConfig(t, kcfg)
	cfg.Scenario, cfg.SpawnWorkers, cfg.TopicPrefix, cfg.Group = ScenarioLate, 0, "lt-late-", "lt-late-group"
	cfg.Shop.LateShare, cfg.Shop.InvalidShare = 0.3, 0.1
	jsonPath := filepath.Join(cfg.OutDir, "late.json")
	var out bytes.Buffer
	err := Execute(testenv.Context(t, 90*time.Second), cfg, jsonPath, testLogger(t), &out)
	t.Log(out.String())
	if err != nil {
		t.Fatalf("Execute: %v (exit code %d)", err, cli.ExitCode(err))
	}
	m := checkJSONKeys(t, jsonPath)
	var r Report
	b, _ := json.Marshal(m)
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Sent != 800 || r.Missing != 0 || r.Duplicates != 0 || r.Unexpected != 0 || r.Unknown != 0 || !r.Drain.Complete {
		t.Fatalf("report: sent %d missing %d dup %d unexpected %d unknown %d drain %+v", r.Sent, r.Missing, r.Duplicates, r.Unexpected, r.Unknown, r.Drain)
	}
	if r.Split == nil || r.Split.ToScored.Count != r.Latency.Count {
		t.Fatalf("latency split %+v: want one per answered click (the hot path stamps processed_at_ms)", r.Split)
	}
	if r.Late.WithinOutOfOrderness == 0 || r.Late.Beyond == 0 || r.Invalid.Sent == 0 {
		t.Fatalf("the run had no late or invalid clicks to judge: %+v %+v", r.Late, r.Invalid)
	}
	// A late click more than the out-of-orderness behind a busy partition's
	// newest event is behind its watermark: almost none of them is answered.
	if r.Late.BeyondWithOutput*4 > r.Late.Beyond {
		t.Errorf("%d of %d late clicks beyond the out-of-orderness were answered", r.Late.BeyondWithOutput, r.Late.Beyond)
	}
	for _, p := range []string{"late-latency-over-time.png", "late-latency-distribution.png"} {
		if _, err := os.Stat(filepath.Join(cfg.OutDir, p)); err != nil {
			t.Error(err)
		}
	}
	if !strings.Contains(out.String(), "PASS") {
		t.Errorf("summary does not say PASS")
	}
}

// faultyWorker answers clicks like the hot path, but without transactions
// and with deliberate faults on the measured clicks (ids "<seed>-…"): it
// drops some valid ones, doubles others and answers some invalid ones.
type faultyWorker struct {
	dropped, doubled, answeredInvalid atomic.Int64
}

// standInClient is the client of a test's stand-in for hot path workers: a
// member of group reading the events topic from the start, committing by
// hand, producing at once.
func standInClient(kcfg kafkautil.Config, topics kafkautil.Topics, group, name string) (*kgo.Client, error) {
	return kgo.NewClient(append(kcfg.Opts(name),
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(string(topics.Events)),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(),
		kgo.FetchMaxWait(50*time.Millisecond), kgo.ProducerLinger(0),
	)...)
}

func (f *faultyWorker) run(ctx context.Context, t *testing.T, kcfg kafkautil.Config, topics kafkautil.Topics, group, measured string) {
	cl, err := standInClient(kcfg, topics, group, "faulty-worker")
	if err != nil {
		t.Error(err)
		return
	}
	defer cl.Close()
	for n := 0; ; n++ {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		var out []*kgo.Record
		fs.EachRecord(func(r *kgo.Record) {
			var c event.Click
			valid := event.DecodeInto(&c, r.Value, time.Now(), event.DefaultLimits) == nil && c.CheckKey(r.Key) == nil
			if !valid {
				// Some invalid records still carry a readable event_id.
				var v struct {
					EventID string `json:"event_id"`
				}
				if json.Unmarshal(r.Value, &v) != nil || !strings.HasPrefix(v.EventID, measured) {
					return
				}
				if seq, _ := strconv.Atoi(strings.TrimPrefix(v.EventID, measured)); seq%2 == 0 {
					f.answeredInvalid.Add(1)
					out = append(out, recFor(v.EventID, "x", topics))
				}
				return
			}
			copies := 1
			if strings.HasPrefix(c.EventID, measured) {
				seq, _ := strconv.Atoi(strings.TrimPrefix(c.EventID, measured))
				switch {
				case seq%50 == 7:
					copies = 0
					f.dropped.Add(1)
				case seq%40 == 3:
					copies = 2
					f.doubled.Add(1)
				}
			}
			for range copies {
				out = append(out, recFor(c.EventID, c.UserID, topics))
			}
		})
		if err := cl.ProduceSync(ctx, out...).FirstErr(); err != nil && ctx.Err() == nil {
			t.Error(err)
			return
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil && ctx.Err() == nil {
			t.Error(err)
			return
		}
	}
}

func recFor(id, user string, topics kafkautil.Topics) *kgo.Record {
	r := wire.Recommendation{EventID: id, UserID: user, Strategy: "global_popular"}
	return &kgo.Record{Topic: string(topics.Recs), Key: []byte(user), Value: r.AppendJSON(nil)}
}

// TestFaultyWorkerBreachesSLA checks that the load test counts exactly the
// outputs a faulty worker dropped, doubled and should not have made, and
// that the verdict fails with exit code 1.
func TestFaultyWorkerBreachesSLA(t *testing.T) {
	t.Parallel()
	kcfg, topics := embedded(t, "lt-faulty-", 2)
	cfg := testConfig(t, kcfg)
	cfg.SpawnWorkers, cfg.TopicPrefix, cfg.Group = 0, "lt-faulty-", "lt-faulty-group"
	cfg.Shop.Seed, cfg.Shop.InvalidShare = 7, 0.2
	var fw faultyWorker
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { fw.run(ctx, t, kcfg, topics, cfg.Group, "7-") })
	t.Cleanup(func() { cancel(); wg.Wait() })

	var out bytes.Buffer
	err := Execute(testenv.Context(t, 90*time.Second), cfg, filepath.Join(cfg.OutDir, "faulty.json"), testLogger(t), &out)
	t.Log(out.String())
	if !errors.Is(err, ErrSLA) || cli.ExitCode(err) != 1 {
		t.Fatalf("Execute = %v (exit code %d), want an SLA breach with exit code 1", err, cli.ExitCode(err))
	}
	b, err := os.ReadFile(filepath.Join(cfg.OutDir, "faulty.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Missing != fw.dropped.Load() || r.Duplicates != fw.doubled.Load() || r.Unexpected != fw.answeredInvalid.Load() {
		t.Fatalf("counted missing %d dup %d unexpected %d; the worker dropped %d, doubled %d, answered %d invalid",
			r.Missing, r.Duplicates, r.Unexpected, fw.dropped.Load(), fw.doubled.Load(), fw.answeredInvalid.Load())
	}
	if r.Missing == 0 || r.Duplicates == 0 || r.Unexpected == 0 || r.SLA.Passed || len(r.SLA.Breaches) != 3 {
		t.Fatalf("want every kind of fault, and three breaches: %+v", r.SLA)
	}
}

// TestChaosWithSpawnedWorkers spawns two worker processes, SIGKILLs and
// restarts them during the load and demands 0 missing and 0 duplicates.
func TestChaosWithSpawnedWorkers(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("spawns processes")
	}
	kcfg, _ := embedded(t, "unused-", 4)
	cfg := testConfig(t, kcfg)
	cfg.Scenario, cfg.SpawnWorkers = ScenarioChaos, 2
	cfg.Rate, cfg.Duration, cfg.KillEvery = 300, 3*time.Second, time.Second
	cfg.ClickrecBin = os.Args[0]
	cfg.WorkerEnv = []string{workerEnv + "=1"}
	cfg.WorkerFlags = append(cfg.WorkerFlags, "--session-timeout=6s", "--txn-timeout=3s") // 6 s: the broker's minimum
	// Not the recovery time: this machine runs other tests beside it.
	cfg.SLA.Recover = 0
	r, err := Run(testenv.Context(t, 120*time.Second), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_ = r.WriteText(&out)
	t.Log(out.String())
	if len(r.Kills) != 2 || r.Workers.Restarts != 2 || r.Workers.UnexpectedExits != 0 {
		t.Fatalf("kills %+v, workers %+v: want 2 kills and 2 restarts", r.Kills, r.Workers)
	}
	if r.Missing != 0 || r.Duplicates != 0 || r.Unexpected != 0 || !r.Drain.Complete || !r.SLA.Passed {
		t.Fatalf("missing %d dup %d unexpected %d drain %+v verdict %+v", r.Missing, r.Duplicates, r.Unexpected, r.Drain, r.SLA)
	}
	// Restarted workers serve the model too (they load it from the saved directory).
	if !r.Model.Served || r.Model.Source != ModelTrained || r.ModelShare == nil || *r.ModelShare < 0.9 {
		t.Fatalf("model %+v, share %v, strategies %v: want the trained model to answer", r.Model, r.ModelShare, r.Strategies)
	}
	if runtime.GOOS == "linux" && (r.CPU.WorkersCores == nil || *r.CPU.WorkersCores <= 0 || r.CPU.LoadtestCores <= 0 || r.CPU.Cores < 1) {
		t.Fatalf("CPU report %+v: want the workers' and the load test's CPU", r.CPU)
	}
}

// TestFleetStopsEveryChild checks that every process the fleet started,
// restarted ones included, is gone after Stop.
func TestFleetStopsEveryChild(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("spawns processes")
	}
	kcfg, _ := embedded(t, "fleet-", 2)
	f, err := StartFleet(FleetConfig{
		Bin: os.Args[0], Count: 2, Env: []string{workerEnv + "=1"}, LogDir: t.TempDir(), Instance: "fleet-",
		Args: []string{"--kafka-brokers", kcfg.Brokers.String(), "--topic-prefix", "fleet-", "--group", "fleet-g", "--no-redis"},
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	if err := f.WaitReady(testenv.Context(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	first := f.procs[0].cmd
	if err := f.Kill(0); err != nil {
		t.Fatal(err)
	}
	if first.ProcessState == nil || first.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("killed worker state %v, want killed by SIGKILL", first.ProcessState)
	}
	if err := f.Restart(0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.waitReady(testenv.Context(t, 30*time.Second), 0); err != nil {
		t.Fatal(err)
	}
	var cmds []*os.ProcessState
	f.Stop()
	for _, p := range f.procs {
		cmds = append(cmds, p.cmd.ProcessState)
	}
	for i, st := range cmds {
		if st == nil {
			t.Fatalf("worker %d still running after Stop", i)
		}
		if !st.Exited() || st.ExitCode() != 0 {
			t.Errorf("worker %d: %v, want a clean exit on SIGTERM", i, st)
		}
	}
	if restarts, unexpected := f.Stats(); restarts != 1 || unexpected != 0 {
		t.Fatalf("restarts %d unexpected %d", restarts, unexpected)
	}
}

// TestSteadyOnRealKafka runs the default pipeline against the real broker
// and Redis: a spawned worker serving the model the load test trains on the
// shop's history, writing the feature store. Every click is answered once,
// nearly all by the model, and the feature store holds them (CI=true fails
// without the broker or Redis).
func TestSteadyOnRealKafka(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("spawns a worker against a real broker")
	}
	brokers := testenv.KafkaBrokers(t)
	redisAddr := testenv.RedisAddr(t)
	cfg := testConfig(t, kafkautil.Config{Brokers: brokers, Partitions: 4, ReplicationFactor: 1, DialTimeout: 10 * time.Second})
	cfg.SpawnWorkers = 1
	cfg.ClickrecBin = os.Args[0]
	cfg.WorkerEnv = []string{workerEnv + "=1"}
	cfg.NoRedis, cfg.Redis.Addr = false, redisAddr
	cfg.Rate, cfg.Duration = 500, 3*time.Second
	cfg.SLA = SLA{P95: 2 * time.Second, P99: 5 * time.Second, MinModelShare: DefaultMinModelShare} // shared CI machine: prove the mechanics, not the latency
	r, err := Run(testenv.Context(t, 120*time.Second), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_ = r.WriteText(&out)
	t.Log(out.String())
	if r.Sent != 1500 || r.Missing != 0 || r.Duplicates != 0 || r.Unexpected != 0 || !r.Drain.Complete || !r.SLA.Passed {
		t.Fatalf("sent %d missing %d dup %d unexpected %d drain %+v verdict %+v", r.Sent, r.Missing, r.Duplicates, r.Unexpected, r.Drain, r.SLA)
	}
	m := r.Model
	if !m.Served || m.Source != ModelTrained || m.Items != cfg.Shop.Items || m.CatalogueItems != cfg.Shop.Items || m.CatalogueKnown != cfg.Shop.Items ||
		m.TrainClicks != DefaultTrainClicksPerItem*cfg.Shop.Items || !strings.HasPrefix(m.Version, "loadtest-") || m.Scorer != "go" {
		t.Fatalf("model %+v: want one trained on the history that knows the whole catalogue", m)
	}
	if _, _, err := model.Load(m.Dir); err != nil {
		t.Fatalf("the trained model was not saved: %v", err)
	}
	// Every session includes its current click, whose item the model knows.
	if r.ModelShare == nil || *r.ModelShare < 0.99 || r.SLA.Thresholds.MinModelShare == nil {
		t.Fatalf("model share %v, strategies %v, thresholds %+v", r.ModelShare, r.Strategies, r.SLA.Thresholds)
	}
	if !r.Redis.Used || r.Redis.Addr != redisAddr {
		t.Fatalf("redis %+v", r.Redis)
	}
	// The worker wrote the feature store: the newest recommendation of some
	// of the shop's users carries this run's model version.
	rcfg := cfg.Redis
	rc := rcfg.Client()
	defer rc.Close()
	ctx := testenv.Context(t, 10*time.Second)
	written := 0
	for u := range cfg.Shop.Users {
		recs, err := rc.HGet(ctx, featurestore.UserKey("u"+strconv.Itoa(u+1)), "recs").Result()
		if err == nil && strings.Contains(recs, m.Version) {
			written++
		}
	}
	if written == 0 {
		t.Fatalf("no user:{id} key in Redis at %s holds a recommendation of model %s", redisAddr, m.Version)
	}
	t.Logf("%d of %d users have this run's recommendations in Redis", written, cfg.Shop.Users)
}

// TestRollingOnRealKafka restarts both of two spawned workers gracefully
// (SIGTERM, the same instance id started again) under 1,000 clicks/s on the
// real broker: nothing may be lost or doubled. The latency is logged, not
// judged: a shared machine, and how fast a clean stop hands its partitions
// over is the hot path's business (CI=true fails without the broker).
func TestRollingOnRealKafka(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("spawns workers against a real broker")
	}
	brokers := testenv.KafkaBrokers(t)
	cfg := testConfig(t, kafkautil.Config{Brokers: brokers, Partitions: 4, ReplicationFactor: 1, DialTimeout: 10 * time.Second})
	cfg.Scenario, cfg.SpawnWorkers = ScenarioRolling, 2
	cfg.NoModel, cfg.NoRedis = true, true
	cfg.Rate, cfg.Duration, cfg.RestartEvery = 1000, 12*time.Second, 4*time.Second // w1 at 4 s, w2 at 8 s
	cfg.ClickrecBin = os.Args[0]
	cfg.WorkerEnv = []string{workerEnv + "=1"}
	cfg.SLA = SLA{} // 0 missing, 0 duplicates, 0 unexpected; no latency thresholds
	r, err := Run(testenv.Context(t, 150*time.Second), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_ = r.WriteText(&out)
	t.Log(out.String())
	if r.Sent != 12000 || r.Missing != 0 || r.Duplicates != 0 || r.Unexpected != 0 || !r.Drain.Complete || !r.SLA.Passed {
		t.Fatalf("sent %d missing %d dup %d unexpected %d drain %+v verdict %+v", r.Sent, r.Missing, r.Duplicates, r.Unexpected, r.Drain, r.SLA)
	}
	if len(r.Membership) != 2 || r.Workers.Restarts != 2 || r.Workers.UnexpectedExits != 0 {
		t.Fatalf("membership %+v, workers %+v: want each of the 2 workers restarted once", r.Membership, r.Workers)
	}
	for k, m := range r.Membership {
		inst := r.Workers.Instances[k]
		if m.Action != ActionRestart || m.Instance != inst || m.Note != "" || m.ReadyS < m.StartS || m.StartS < m.AtS || m.Workers != 2 {
			t.Fatalf("change %d = %+v, want a restart of %s that became ready", k, m, inst)
		}
		if m.After == nil || m.After.Clicks == 0 || m.After.Missing != 0 {
			t.Fatalf("change %d: clicks after it %+v", k, m.After)
		}
	}
}

// TestBrokerPathOnly runs spawned workers with --no-model and --no-redis on
// the embedded broker: every answer is the popularity fallback, and that is
// not judged.
func TestBrokerPathOnly(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("spawns a process")
	}
	kcfg, _ := embedded(t, "unused-", 2)
	cfg := testConfig(t, kcfg)
	cfg.SpawnWorkers, cfg.NoModel, cfg.NoRedis = 1, true, true
	cfg.ClickrecBin = os.Args[0]
	cfg.WorkerEnv = []string{workerEnv + "=1"}
	cfg.Rate, cfg.Duration = 200, time.Second
	r, err := Run(testenv.Context(t, 90*time.Second), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if !r.SLA.Passed || r.Model.Served || r.Model.Source != ModelNone || r.Redis.Used || r.SLA.Thresholds.MinModelShare != nil {
		t.Fatalf("verdict %+v, model %+v, redis %+v", r.SLA, r.Model, r.Redis)
	}
	if r.Strategies[wire.StrategyModel] != 0 || r.Strategies[wire.StrategyGlobalPopular] != r.Matched {
		t.Fatalf("strategies %v, want all %d global_popular", r.Strategies, r.Matched)
	}
}
