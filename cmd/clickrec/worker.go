package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"golang.org/x/sync/errgroup"

	"github.com/clickrec/clickrec/internal/admin"
	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/internal/redisutil"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/model/onnx"
	"github.com/clickrec/clickrec/serving"
	"github.com/clickrec/clickrec/workflows"
)

func init() {
	register(command{name: "worker", synopsis: "run the Temporal worker: nightly retraining, popularity refresh, drift checks with rollback", run: runWorker})
}

// temporalFlags say how to reach Temporal.
type temporalFlags struct {
	addr        string
	namespace   string
	queue       string
	dialTimeout time.Duration
	ui          string
}

func (f *temporalFlags) register(fs *cli.FlagSet) {
	fs.StringVar(&f.addr, "temporal-addr", "127.0.0.1:7233", "Temporal frontend host:port (scripts/temporal.sh start runs a dev server there)")
	fs.Env("temporal-addr", "CLICKREC_TEMPORAL_ADDR")
	fs.StringVar(&f.namespace, "temporal-namespace", "default", "Temporal namespace of the workflows")
	fs.Env("temporal-namespace", "CLICKREC_TEMPORAL_NAMESPACE")
	fs.StringVar(&f.queue, "task-queue", workflows.TaskQueue, "Temporal task queue the worker polls and workflows are started on")
	fs.Env("task-queue", "CLICKREC_TEMPORAL_TASK_QUEUE")
	fs.DurationVar(&f.dialTimeout, "temporal-dial-timeout", 10*time.Second, "how long to wait for Temporal at startup before giving up")
	fs.Env("temporal-dial-timeout", "CLICKREC_TEMPORAL_DIAL_TIMEOUT")
	fs.StringVar(&f.ui, "temporal-ui", "http://127.0.0.1:8233", "base URL of the Temporal UI, for the links printed (the dev server's UI listens on the frontend port + 1000)")
	fs.Env("temporal-ui", "CLICKREC_TEMPORAL_UI")
}

// dial connects to Temporal and checks the namespace; an unreachable server
// or an unknown namespace is a one-line usage error.
func (f *temporalFlags) dial(ctx context.Context, log *slog.Logger) (client.Client, error) {
	if err := cli.Positive("temporal-dial-timeout", f.dialTimeout); err != nil {
		return nil, err
	}
	if f.queue == "" {
		return nil, cli.Usagef("--task-queue must not be empty")
	}
	dctx, cancel := context.WithTimeout(ctx, f.dialTimeout)
	defer cancel()
	c, err := client.DialContext(dctx, client.Options{HostPort: f.addr, Namespace: f.namespace, Logger: tlog.NewStructuredLogger(log)})
	if err != nil {
		return nil, cli.Usagef("cannot reach Temporal at %s: %s (check --temporal-addr / CLICKREC_TEMPORAL_ADDR; start a dev server with scripts/temporal.sh start)", f.addr, oneLine(err))
	}
	if _, err := c.WorkflowService().DescribeNamespace(dctx, &workflowservice.DescribeNamespaceRequest{Namespace: f.namespace}); err != nil {
		c.Close()
		return nil, cli.Usagef("Temporal at %s: namespace %q: %s (check --temporal-namespace / CLICKREC_TEMPORAL_NAMESPACE)", f.addr, f.namespace, oneLine(err))
	}
	return c, nil
}

// link is the Temporal UI page of a workflow run.
func (f *temporalFlags) link(id, runID string) string {
	return strings.TrimRight(f.ui, "/") + "/namespaces/" + f.namespace + "/workflows/" + id + "/" + runID + "/history"
}

func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// paramFlags are the workflows' parameters: the arguments of the scheduled
// runs (clickrec worker) and of manual ones (clickrec workflows).
type paramFlags struct {
	retrain workflows.RetrainParams
	refresh workflows.RefreshParams
	drift   workflows.DriftParams
}

func (p *paramFlags) register(fs *cli.FlagSet) {
	r, f, d := workflows.DefaultRetrainParams(), workflows.DefaultRefreshParams(), workflows.DefaultDriftParams()
	p.retrain.Reason = r.Reason
	env := func(name string) { fs.Env(name, "CLICKREC_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))) }
	fs.DurationVar(&p.retrain.TrainingWindow, "training-window", r.TrainingWindow, "retrain: how far back user_events are read (by record timestamp)")
	env("training-window")
	fs.Float64Var(&p.retrain.HoldoutFraction, "holdout-fraction", r.HoldoutFraction, "retrain: share of the sessions, the most recent, held out to compare candidate and current version")
	env("holdout-fraction")
	fs.Float64Var(&p.retrain.Tolerance, "gate-tolerance", r.Tolerance, "retrain: relative drop of HR@20 and MRR@20 against the current version the gate still promotes")
	env("gate-tolerance")
	fs.IntVar(&p.retrain.MinHoldoutCases, "min-holdout-cases", r.MinHoldoutCases, "retrain: fewest holdout cases the gate compares on; with fewer the current version stays")
	env("min-holdout-cases")
	fs.DurationVar(&p.retrain.ObservationPeriod, "observation", r.ObservationPeriod, "retrain: how long a promoted candidate is watched before its live traffic is checked for drift (a drifting one is rolled back)")
	env("observation")
	fs.DurationVar(&p.refresh.Window, "popularity-window", f.Window, "refresh: how far back clicks count for the popularity tables")
	env("popularity-window")
	fs.DurationVar(&p.refresh.HalfLife, "popularity-half-life", f.HalfLife, "refresh: age at which a click counts half")
	env("popularity-half-life")
	fs.IntVar(&p.refresh.TopK, "popularity-top", f.TopK, "refresh: items per list (global and per category)")
	env("popularity-top")
	fs.DurationVar(&p.drift.Window, "drift-window", d.Window, "drift: minutes of live profiles merged per check")
	env("drift-window")
	fs.DurationVar(&p.drift.RecentPromotion, "drift-rollback-window", d.RecentPromotion, "drift: a drifting version promoted less than this long ago is rolled back; an older one is retrained")
	env("drift-rollback-window")
	fs.Uint64Var(&p.drift.MinSamples, "drift-min-samples", d.MinSamples, "drift: fewest observations per side for a PSI to count (below it no alert, no metric)")
	env("drift-min-samples")
}

func (p *paramFlags) validate() error {
	for _, c := range []struct {
		name string
		v    time.Duration
	}{
		{"training-window", p.retrain.TrainingWindow}, {"observation", p.retrain.ObservationPeriod},
		{"popularity-window", p.refresh.Window}, {"popularity-half-life", p.refresh.HalfLife},
		{"drift-window", p.drift.Window}, {"drift-rollback-window", p.drift.RecentPromotion},
	} {
		if err := cli.Positive(c.name, c.v); err != nil {
			return err
		}
	}
	switch {
	case !(p.retrain.HoldoutFraction > 0 && p.retrain.HoldoutFraction < 0.5):
		return cli.Usagef("--holdout-fraction must be in (0, 0.5), got %v", p.retrain.HoldoutFraction)
	case !(p.retrain.Tolerance > 0 && p.retrain.Tolerance < 1):
		return cli.Usagef("--gate-tolerance must be in (0, 1), got %v (use a tiny value such as 1e-9 for a strict gate)", p.retrain.Tolerance)
	case p.retrain.TrainingWindow < time.Minute:
		return cli.Usagef("--training-window must be at least 1m, got %v", p.retrain.TrainingWindow)
	case p.refresh.TopK < 1:
		return cli.Usagef("--popularity-top must be at least 1, got %d", p.refresh.TopK)
	case p.retrain.MinHoldoutCases < 1:
		return cli.Usagef("--min-holdout-cases must be at least 1, got %d", p.retrain.MinHoldoutCases)
	case p.drift.MinSamples < 1:
		return cli.Usagef("--drift-min-samples must be at least 1")
	}
	if err := p.retrain.Validate(); err != nil {
		return cli.Usagef("%v", err)
	}
	p.retrain.MinSamples = p.drift.MinSamples
	p.drift.Retrain = p.retrain
	return nil
}

type workerFlags struct {
	log         cli.Logging
	kafka       kafkautil.Config
	topics      kafkautil.Topics
	redis       redisutil.Config
	temporal    temporalFlags
	params      paramFlags
	train       model.Config
	applyTrain  func() error
	httpAddr    string
	workDir     string
	keepWork    bool
	evalScorer  string
	ortLib      string
	noSched     bool
	schedPrefix string
	retrainAt   time.Duration
	retrainOff  time.Duration
	refreshAt   time.Duration
	driftAt     time.Duration
	stopTimeout time.Duration
	maxRetrains int
}

func (f *workerFlags) register(fs *cli.FlagSet) {
	f.log.Register(fs)
	f.temporal.register(fs)
	f.kafka.Register(fs)
	f.topics = kafkautil.DefaultTopics
	fs.Func("topic-prefix", "prefix of the topic names the activities read, as the hot path workers' --topic-prefix: lt1- reads lt1-user_events and lt1-user_session_windows; isolates test runs on a shared cluster (empty: the standard names)", func(p string) error {
		t, err := kafkautil.PrefixedTopics(p)
		if err != nil {
			return err
		}
		f.topics = t
		return nil
	})
	fs.Env("topic-prefix", "CLICKREC_WORKER_TOPIC_PREFIX")
	f.redis.Register(fs)
	fs.StringVar(&f.httpAddr, "http-addr", "127.0.0.1:9465", "address of /metrics (recsys_drift_psi{feature}, workflow and activity counters) and /healthz")
	fs.Env("http-addr", "CLICKREC_WORKER_HTTP_ADDR")
	fs.StringVar(&f.workDir, "work-dir", filepath.Join(os.TempDir(), "clickrec-worker"), "local directory for a retrain's files (training window, model, holdout); one subdirectory per version, removed once registered")
	fs.Env("work-dir", "CLICKREC_WORK_DIR")
	fs.BoolVar(&f.keepWork, "keep-work-dir", false, "keep a version's work directory after it is registered (for debugging)")
	fs.Env("keep-work-dir", "CLICKREC_KEEP_WORK_DIR")
	fs.StringVar(&f.evalScorer, "eval-scorer", "go", "scorer of the holdout evaluation: go (the pure-Go reference) or onnx (ONNX Runtime on the exported graph)")
	fs.Env("eval-scorer", "CLICKREC_EVAL_SCORER")
	fs.StringVar(&f.ortLib, "onnxruntime-lib", "", "absolute path of libonnxruntime.so.1 for --eval-scorer onnx (default: "+onnx.LibraryEnv+", then the file scripts/onnxruntime.sh installs)")
	fs.Env("onnxruntime-lib", onnx.LibraryEnv)
	fs.BoolVar(&f.noSched, "no-schedules", false, "do not create or update the Temporal schedules (start runs with clickrec workflows instead)")
	fs.Env("no-schedules", "CLICKREC_NO_SCHEDULES")
	fs.StringVar(&f.schedPrefix, "schedule-prefix", "clickrec", "prefix of the schedule ids (<prefix>-retrain-nightly, <prefix>-refresh-popularity, <prefix>-check-drift)")
	fs.Env("schedule-prefix", "CLICKREC_SCHEDULE_PREFIX")
	d := workflows.DefaultScheduleConfig()
	fs.DurationVar(&f.retrainAt, "retrain-every", d.RetrainEvery, "interval of the RetrainModel schedule")
	fs.Env("retrain-every", "CLICKREC_RETRAIN_EVERY")
	fs.DurationVar(&f.retrainOff, "retrain-offset", d.RetrainOffset, "offset of the RetrainModel schedule from the Unix epoch (with 24h: the UTC time of day)")
	fs.Env("retrain-offset", "CLICKREC_RETRAIN_OFFSET")
	fs.DurationVar(&f.refreshAt, "refresh-every", d.RefreshEvery, "interval of the RefreshPopularity schedule")
	fs.Env("refresh-every", "CLICKREC_REFRESH_EVERY")
	fs.DurationVar(&f.driftAt, "drift-every", d.DriftEvery, "interval of the CheckDrift schedule")
	fs.Env("drift-every", "CLICKREC_DRIFT_EVERY")
	fs.DurationVar(&f.stopTimeout, "stop-timeout", 30*time.Second, "on SIGINT/SIGTERM, how long running activities may take to finish before they are cancelled (a cancelled activity is retried by another worker)")
	fs.Env("stop-timeout", "CLICKREC_WORKER_STOP_TIMEOUT")
	fs.IntVar(&f.maxRetrains, "max-retrains", 1, "retrains this worker runs at once (each holds a session of file-passing activities); more wait for a free slot")
	fs.Env("max-retrains", "CLICKREC_WORKER_MAX_RETRAINS")
	f.params.register(fs)
	f.applyTrain = trainFlags(fs, &f.train, "CLICKREC_WORKER_")
}

func (f *workerFlags) validate() error {
	if err := f.kafka.Validate(); err != nil {
		return err
	}
	if len(f.kafka.Brokers) == 0 {
		return cli.Usagef("--kafka-brokers is required for worker (the retrain and popularity workflows read user_events)")
	}
	if f.evalScorer != "go" && f.evalScorer != "onnx" {
		return cli.Usagef("--eval-scorer %q: want go or onnx", f.evalScorer)
	}
	if f.evalScorer == "onnx" {
		lib, err := onnx.LibraryPath(f.ortLib)
		if err != nil {
			return cli.Usagef("--eval-scorer onnx: %v (or use --eval-scorer go)", err)
		}
		f.ortLib = lib
	}
	for _, c := range []struct {
		name string
		v    time.Duration
	}{{"retrain-every", f.retrainAt}, {"refresh-every", f.refreshAt}, {"drift-every", f.driftAt}, {"stop-timeout", f.stopTimeout}} {
		if err := cli.Positive(c.name, c.v); err != nil {
			return err
		}
	}
	if f.retrainOff < 0 || f.retrainOff >= f.retrainAt {
		return cli.Usagef("--retrain-offset %v must be in [0, --retrain-every %v)", f.retrainOff, f.retrainAt)
	}
	if err := cli.Positive("max-retrains", f.maxRetrains); err != nil {
		return err
	}
	if f.workDir == "" {
		return cli.Usagef("--work-dir must not be empty")
	}
	if err := f.params.validate(); err != nil {
		return err
	}
	return f.applyTrain()
}

func (f *workerFlags) schedules() workflows.ScheduleConfig {
	return workflows.ScheduleConfig{
		TaskQueue:     f.temporal.queue,
		IDPrefix:      f.schedPrefix,
		RetrainEvery:  f.retrainAt,
		RetrainOffset: f.retrainOff,
		RefreshEvery:  f.refreshAt,
		DriftEvery:    f.driftAt,
		Retrain:       f.params.retrain,
		Refresh:       f.params.refresh,
		Drift:         f.params.drift,
	}
}

func runWorker(ctx context.Context, args []string) error {
	f, err := parseWorkerFlags(args)
	if err != nil {
		return err
	}
	log, err := f.log.Logger()
	if err != nil {
		return err
	}
	return serveWorker(ctx, f, log, nil)
}

func parseWorkerFlags(args []string) (*workerFlags, error) {
	var f workerFlags
	fs := newFlagSet("worker", `Run the Temporal worker of clickrec's slow side. It registers the workflows
RetrainModel, RefreshPopularity and CheckDrift and their activities on the
task queue, makes sure the three Temporal schedules exist with the intervals
and arguments given here (unless --no-schedules), and serves /metrics and
/healthz on --http-addr. SIGINT/SIGTERM stop it gracefully.

Open the Temporal UI (scripts/temporal.sh start → http://127.0.0.1:8233) to see
the runs; workflows/README.md says what each shows. Start runs by hand with
clickrec workflows retrain|refresh|drift-check.`)
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := f.validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

// serveWorker runs the worker with its HTTP endpoints until ctx ends. ready,
// if not nil, is called with the HTTP address once everything is started.
func serveWorker(ctx context.Context, f *workerFlags, log *slog.Logger, ready func(httpAddr string)) error {
	tc, err := f.temporal.dial(ctx, log)
	if err != nil {
		return err
	}
	defer tc.Close()
	kcl, err := kgo.NewClient(f.kafka.Opts("clickrec-worker-admin")...)
	if err != nil {
		return err
	}
	err = kafkautil.Ping(ctx, &f.kafka, kcl)
	kcl.Close()
	if err != nil {
		return err
	}
	rc := f.redis.Client()
	defer rc.Close()
	if err := redisutil.Ping(ctx, &f.redis, rc); err != nil {
		return err
	}
	if err := os.MkdirAll(f.workDir, 0o755); err != nil {
		return cli.Usagef("--work-dir %s: %v", f.workDir, err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := workflows.NewMetrics(reg)
	acts := &workflows.Activities{
		Kafka:       f.kafka,
		Topics:      f.topics,
		Redis:       rc,
		Temporal:    tc,
		WorkDir:     f.workDir,
		KeepWorkDir: f.keepWork,
		Train:       f.train,
		Metrics:     m,
		Log:         log.With("component", "training"),
	}
	acts.NewScorer = serving.Options{Scorer: f.evalScorer, ORTLib: f.ortLib}.NewScorer
	w := worker.New(tc, f.temporal.queue, worker.Options{
		EnableSessionWorker:               true,
		MaxConcurrentSessionExecutionSize: f.maxRetrains,
		WorkerStopTimeout:                 f.stopTimeout,
		Interceptors:                      []interceptor.WorkerInterceptor{m.Interceptor()},
	})
	w.RegisterWorkflow(workflows.RetrainModel)
	w.RegisterWorkflow(workflows.RefreshPopularity)
	w.RegisterWorkflow(workflows.CheckDrift)
	w.RegisterActivity(acts)

	if !f.noSched {
		done, err := workflows.EnsureSchedules(ctx, tc.ScheduleClient(), f.schedules())
		if err != nil {
			return err
		}
		ids := make([]string, 0, len(done))
		for id := range done {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			log.Info("schedule "+done[id], "id", id)
		}
	}

	adm, err := admin.Listen(f.httpAddr, admin.Options{Metrics: reg, Health: func(ctx context.Context) error {
		if _, err := tc.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
			return errors.New("temporal: " + oneLine(err))
		}
		return nil
	}})
	if err != nil {
		return cli.Usagef("--http-addr %s: %v", f.httpAddr, err)
	}

	// Stop intake first and let running activities finish (up to
	// --stop-timeout), then stop serving metrics.
	actx, stopAdmin := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAdmin()
	if err := w.Start(); err != nil {
		return fmt.Errorf("cannot start the Temporal worker: %w", err)
	}
	log.Info("worker running", "temporal", f.temporal.addr, "namespace", f.temporal.namespace, "task_queue", f.temporal.queue, "events_topic", f.topics.Events,
		"metrics", "http://"+adm.Addr()+"/metrics", "ui", strings.TrimRight(f.temporal.ui, "/")+"/namespaces/"+f.temporal.namespace+"/workflows")
	if ready != nil {
		ready(adm.Addr())
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return adm.Serve(actx) })
	g.Go(func() error {
		<-gctx.Done()
		t0 := time.Now()
		w.Stop()
		log.Info("temporal worker stopped", "took", time.Since(t0).Round(time.Millisecond))
		stopAdmin()
		return nil
	})
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("worker stopped")
	return nil
}
