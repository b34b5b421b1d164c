package workflows

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/clickrec/clickrec/drift"
	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/model/eval"
	"github.com/clickrec/clickrec/model/onnx"
	"github.com/clickrec/clickrec/model/registry"
	"github.com/clickrec/clickrec/wire"
)

// Activities holds what the activities need: Kafka, Redis (registry,
// popularity tables, live drift profiles), the Temporal client (to start a
// retrain from CheckDrift) and a local work directory. Register one value
// with the worker; workflows call its methods through a nil *Activities.
// Every activity is safe to retry: it either finds its result from an
// earlier attempt (files in the work directory, the registry) or redoes
// the same work.
type Activities struct {
	// Kafka is the cluster user_events and user_session_windows live on.
	Kafka kafkautil.Config
	// Topics names the topics; the zero value means kafkautil.DefaultTopics.
	Topics kafkautil.Topics
	// Redis holds the model registry, the popularity table and the live
	// drift profiles.
	Redis *redis.Client
	// Temporal starts RetrainModel runs (StartRetrain); nil disables that.
	Temporal client.Client
	// RetrainWorkflowID is the id StartRetrain uses; "" means RetrainWorkflowID.
	RetrainWorkflowID string
	// WorkDir holds one directory per retrain version: the training window,
	// the model, its ONNX graph, the holdout and the reference profiles.
	WorkDir string
	// KeepWorkDir keeps a version's directory after it is registered
	// (otherwise CleanWorkDir removes it).
	KeepWorkDir bool
	// Train is the training configuration; the zero value means
	// model.DefaultConfig().
	Train model.Config
	// NewScorer makes the scorer the holdout evaluation runs through; nil
	// means the pure-Go reference scorer (eval.GoScorer).
	NewScorer eval.NewScorerFunc
	// MaxHoldoutCases caps the evaluation cases (taken evenly from the
	// holdout); 0 means 20,000.
	MaxHoldoutCases int
	// ReadIdle is how long a Kafka read may see no record before it stops
	// short of its end offsets (see readRanges); 0 means 10 s.
	ReadIdle time.Duration
	// TimestampSlack is how far out of order record timestamps may be: reads
	// of a time window start and end this much wider in offsets and keep
	// only the records inside the window; 0 means 10 minutes (the hot path's
	// 5-minute bounded out-of-orderness plus its 5-minute allowed lateness).
	TimestampSlack time.Duration
	// Metrics receives drift and rollback metrics; nil records nothing.
	Metrics *Metrics
	// Log receives training progress; nil discards it.
	Log *slog.Logger
}

// Files in a retrain version's work directory.
const (
	fileEvents     = "events.jsonl"   // the training window's valid clicks, event.Click JSON lines
	fileWindows    = "windows.jsonl"  // user_session_windows records of the same window
	fileCollected  = "collected.json" // CollectOutput: written last, marks the window complete
	fileHoldout    = "holdout.jsonl"  // the holdout sessions (holdoutSession lines)
	fileTrained    = "trained.json"   // TrainOutput: written last, marks training complete
	dirModel       = "model"          // model.Save directory
	fileONNX       = "model.onnx"     // the exported graph
	fileReference  = "reference.json" // drift.ReferenceSet
	heartbeatEvery = 5 * time.Second
)

func (a *Activities) topics() kafkautil.Topics {
	if a.Topics.Events == "" {
		return kafkautil.DefaultTopics
	}
	return a.Topics
}

func (a *Activities) readIdle() time.Duration {
	if a.ReadIdle > 0 {
		return a.ReadIdle
	}
	return 10 * time.Second
}

func (a *Activities) slack() time.Duration {
	if a.TimestampSlack > 0 {
		return a.TimestampSlack
	}
	return 10 * time.Minute
}

func (a *Activities) log() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (a *Activities) registry() (*registry.Registry, error) {
	if a.Redis == nil {
		return nil, temporal.NewNonRetryableApplicationError("the worker has no Redis client", ErrTypeBadInput, nil)
	}
	return registry.New(a.Redis), nil
}

// versionDir is the work directory of a retrain version.
func (a *Activities) versionDir(version string) (string, error) {
	if version == "" || version != filepath.Base(version) || version == "." || version == ".." {
		return "", badInput("version %q is not a plain name", version)
	}
	if a.WorkDir == "" {
		return "", badInput("the worker has no work directory")
	}
	return filepath.Join(a.WorkDir, version), nil
}

func badInput(format string, args ...any) error {
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, args...), ErrTypeBadInput, nil)
}

func noData(format string, args ...any) error {
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, args...), ErrTypeNoData, nil)
}

// keepAlive heartbeats every heartbeatEvery until the returned stop is
// called, for steps that cannot report progress themselves (training,
// evaluation). Cancellation of the activity reaches ctx through these
// heartbeats.
func keepAlive(ctx context.Context, step string) (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(stopped)
		t := time.NewTicker(heartbeatEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				activity.RecordHeartbeat(ctx, fmt.Sprintf("%s for %v", step, time.Since(start).Round(time.Second)))
			}
		}
	}()
	return func() { close(done); <-stopped }
}

func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("cannot create a temporary file for %s: %w", path, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("cannot encode %s: %w", path, err)
	}
	return writeFileAtomic(path, append(b, '\n'))
}

// readJSON decodes path into v; ok is false if the file does not exist.
func readJSON(path string, v any) (ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cannot read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("cannot decode %s: %w", path, err)
	}
	return true, nil
}

// ---- CollectWindow ----

// CollectInput names the version whose training window to collect.
type CollectInput struct {
	Version string `json:"version"`
	Window  Window `json:"window"`
}

// CollectOutput describes the collected window.
type CollectOutput struct {
	Dir         string `json:"dir"`
	EventsFile  string `json:"events_file"`
	WindowsFile string `json:"windows_file"`
	Window      Window `json:"window"`
	Events      int    `json:"events"`
	Invalid     int    `json:"invalid"` // records of user_events that are not valid clicks (left out)
	Windows     int    `json:"windows"` // user_session_windows records
	// Incomplete counts partitions whose read stopped short of the window's
	// end (see readRanges); 0 normally.
	Incomplete int `json:"incomplete,omitempty"`
}

// collectProgress is CollectWindow's heartbeat: where to resume and how
// long each file was when those offsets were reached.
type collectProgress struct {
	Next    offsets[int64]   `json:"next"`
	Sizes   map[string]int64 `json:"sizes"`
	Events  int              `json:"events"`
	Invalid int              `json:"invalid"`
	Windows int              `json:"windows"`
}

// CollectWindow reads the training window from Kafka — user_events (valid
// clicks only) and user_session_windows, read_committed, by timestamp
// offsets, keeping the records whose timestamps are in the window — into events.jsonl and windows.jsonl in the version's work
// directory. It heartbeats its offsets and file sizes; a retry truncates the
// files to the sizes of the last heartbeat and resumes from its offsets, and
// a retry after completion returns the finished result.
func (a *Activities) CollectWindow(ctx context.Context, in CollectInput) (*CollectOutput, error) {
	if in.Window.ToMs <= in.Window.FromMs {
		return nil, badInput("window %v is empty", in.Window)
	}
	dir, err := a.versionDir(in.Version)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create the work directory: %w", err)
	}
	var out CollectOutput
	if ok, err := readJSON(filepath.Join(dir, fileCollected), &out); err != nil {
		return nil, err
	} else if ok && out.Window == in.Window {
		return &out, nil
	}
	out = CollectOutput{Dir: dir, EventsFile: filepath.Join(dir, fileEvents), WindowsFile: filepath.Join(dir, fileWindows), Window: in.Window}

	var prog collectProgress
	if activity.HasHeartbeatDetails(ctx) {
		if err := activity.GetHeartbeatDetails(ctx, &prog); err != nil {
			prog = collectProgress{}
		}
	}
	topics := a.topics()
	evTopic, winTopic := string(topics.Events), string(topics.Windows)

	adm, err := kgo.NewClient(a.Kafka.Opts("clickrec-workflows-admin")...)
	if err != nil {
		return nil, fmt.Errorf("cannot create the Kafka client: %w", err)
	}
	ranges, err := timeRanges(ctx, kadm.NewClient(adm), in.Window, a.slack(), evTopic, winTopic)
	adm.Close()
	if err != nil {
		return nil, err
	}
	for t, ps := range prog.Next {
		for p, next := range ps {
			if r, ok := ranges[t][p]; ok && next > r.Start {
				r.Start = next
				ranges[t][p] = r
			}
		}
	}

	files := map[string]*os.File{}
	writers := map[string]*bufio.Writer{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, name := range []string{fileEvents, fileWindows} {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("cannot open %s: %w", name, err)
		}
		files[name] = f
		size := prog.Sizes[name] // 0 for a fresh start
		if err := f.Truncate(size); err != nil {
			return nil, fmt.Errorf("cannot truncate %s to %d bytes: %w", name, size, err)
		}
		if _, err := f.Seek(size, io.SeekStart); err != nil {
			return nil, fmt.Errorf("cannot seek in %s: %w", name, err)
		}
		writers[name] = bufio.NewWriterSize(f, 1<<16)
	}
	flush := func() error {
		for name, w := range writers {
			if err := w.Flush(); err != nil {
				return fmt.Errorf("cannot write %s: %w", name, err)
			}
		}
		return nil
	}

	var (
		c    event.Click
		lim  = event.DefaultLimits
		line []byte
	)
	lim.MaxFutureSkew = 0 // historical data: no "now"
	fn := func(r *kgo.Record) error {
		var err error
		switch r.Topic {
		case evTopic:
			if event.DecodeInto(&c, r.Value, time.Time{}, lim) != nil || c.CheckKey(r.Key) != nil {
				prog.Invalid++
				return nil
			}
			line = append(c.AppendJSON(line[:0]), '\n')
			_, err = writers[fileEvents].Write(line)
			prog.Events++
		case winTopic:
			if !json.Valid(r.Value) {
				return nil
			}
			line = append(append(line[:0], r.Value...), '\n')
			_, err = writers[fileWindows].Write(line)
			prog.Windows++
		}
		return err
	}
	last := time.Now()
	var progErr error
	progress := func(next offsets[int64]) {
		if time.Since(last) < heartbeatEvery || progErr != nil {
			return
		}
		last = time.Now()
		if progErr = flush(); progErr != nil {
			return
		}
		prog.Sizes = map[string]int64{}
		for name, f := range files {
			st, err := f.Stat()
			if err != nil {
				progErr = fmt.Errorf("cannot stat %s: %w", name, err)
				return
			}
			prog.Sizes[name] = st.Size()
		}
		prog.Next = offsets[int64]{}
		for t, ps := range next {
			for p, o := range ps {
				prog.Next.set(t, p, o)
			}
		}
		activity.RecordHeartbeat(ctx, prog)
	}
	incomplete, err := readRanges(ctx, &a.Kafka, "clickrec-workflows-collect", ranges, in.Window, a.readIdle(), fn, progress)
	if err == nil {
		err = progErr
	}
	if err != nil {
		return nil, err
	}
	if err := flush(); err != nil {
		return nil, err
	}
	for name, f := range files {
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("cannot sync %s: %w", name, err)
		}
	}
	out.Events, out.Invalid, out.Windows, out.Incomplete = prog.Events, prog.Invalid, prog.Windows, incomplete
	if incomplete > 0 {
		activity.GetLogger(ctx).Warn("some partitions stopped short of the window's end (aborted transactions at their tail)", "partitions", incomplete)
	}
	if err := writeJSON(filepath.Join(dir, fileCollected), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ---- TrainCandidate ----

// TrainInput names the version to train and its collected window.
type TrainInput struct {
	Version         string  `json:"version"`
	EventsFile      string  `json:"events_file"`
	HoldoutFraction float64 `json:"holdout_fraction"`
}

// TrainOutput describes a trained candidate.
type TrainOutput struct {
	ModelDir        string             `json:"model_dir"`
	HoldoutFile     string             `json:"holdout_file"`
	Sessions        int                `json:"sessions"`
	TrainSessions   int                `json:"train_sessions"`
	HoldoutSessions int                `json:"holdout_sessions"`
	Events          int                `json:"events"`
	Items           int                `json:"items"`
	Validation      map[string]float64 `json:"validation,omitempty"` // model.Train's own validation split
	Seconds         float64            `json:"seconds"`
}

// holdoutSession is one line of holdout.jsonl.
type holdoutSession struct {
	Items []int64      `json:"items"`
	Types []event.Type `json:"types,omitempty"` // nil: all views
}

// TrainCandidate groups the window's clicks into sessions, keeps the most
// recent HoldoutFraction of them (by start time) as the holdout, and trains
// the candidate on the rest with model.Train. The model is saved with
// model.Save (version = the run's version), the holdout to holdout.jsonl.
// Training is deterministic for a seed, so a retry produces the same model;
// a retry after completion returns the saved result.
func (a *Activities) TrainCandidate(ctx context.Context, in TrainInput) (*TrainOutput, error) {
	dir, err := a.versionDir(in.Version)
	if err != nil {
		return nil, err
	}
	if !(in.HoldoutFraction > 0 && in.HoldoutFraction < 0.5) {
		return nil, badInput("holdout fraction %v must be in (0, 0.5)", in.HoldoutFraction)
	}
	var out TrainOutput
	if ok, err := readJSON(filepath.Join(dir, fileTrained), &out); err != nil {
		return nil, err
	} else if ok {
		return &out, nil
	}
	if _, err := os.Stat(in.EventsFile); err != nil {
		return nil, badInput("events file: %v", err)
	}
	sessions, stats, err := model.ReadSessionsFile(in.EventsFile, model.FormatEvents)
	if err != nil {
		return nil, noData("cannot read the training window: %v", err)
	}
	n := len(sessions)
	nHold := max(1, int(math.Round(in.HoldoutFraction*float64(n))))
	if n-nHold < 1 {
		return nil, noData("%d sessions are too few to train on and hold some out", n)
	}
	train, hold := sessions[:n-nHold], sessions[n-nHold:]
	holdFile := filepath.Join(dir, fileHoldout)
	if err := writeHoldout(holdFile, hold); err != nil {
		return nil, err
	}
	cfg := a.Train
	if cfg.Factors == 0 {
		cfg = model.DefaultConfig()
	}
	stop := keepAlive(ctx, "training")
	m, rep, err := model.Train(ctx, train, cfg, a.log().With("version", in.Version))
	stop()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, noData("cannot train: %v", err)
	}
	m.Version = in.Version
	md := model.NewMetadata(m, cfg, rep, in.EventsFile)
	md.Data = stats
	if rep.Validation != nil {
		md.OfflineMetrics = map[string]map[string]float64{"validation": rep.Validation}
	}
	modelDir := filepath.Join(dir, dirModel)
	if err := model.Save(modelDir, m, md); err != nil {
		return nil, fmt.Errorf("cannot save the candidate: %w", err)
	}
	out = TrainOutput{
		ModelDir: modelDir, HoldoutFile: holdFile,
		Sessions: n, TrainSessions: len(train), HoldoutSessions: len(hold),
		Events: stats.Events, Items: m.NumItems(), Validation: rep.Validation, Seconds: rep.Seconds,
	}
	if err := writeJSON(filepath.Join(dir, fileTrained), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func writeHoldout(path string, ss []model.Session) error {
	var b []byte
	for _, s := range ss {
		line, err := json.Marshal(holdoutSession{Items: s.Items, Types: s.Types})
		if err != nil {
			return fmt.Errorf("cannot encode the holdout: %w", err)
		}
		b = append(append(b, line...), '\n')
	}
	return writeFileAtomic(path, b)
}

func readHoldout(path string) ([]holdoutSession, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, badInput("holdout file: %v", err)
	}
	defer f.Close()
	var out []holdoutSession
	dec := json.NewDecoder(bufio.NewReader(f))
	for {
		var s holdoutSession
		if err := dec.Decode(&s); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, badInput("holdout file %s: %v", path, err)
		}
		out = append(out, s)
	}
}

// ---- ExportONNX ----

// ExportInput names the model to export.
type ExportInput struct {
	ModelDir string `json:"model_dir"`
}

// ExportOutput is the exported graph.
type ExportOutput struct {
	ONNXFile string `json:"onnx_file"`
	Bytes    int    `json:"bytes"`
}

// ExportONNX exports the saved candidate to ONNX (model.onnx next to the
// model directory). Export is deterministic, so a retry rewrites the same bytes.
func (a *Activities) ExportONNX(ctx context.Context, in ExportInput) (*ExportOutput, error) {
	defer keepAlive(ctx, "exporting")()
	m, _, err := model.Load(in.ModelDir)
	if err != nil {
		return nil, badInput("cannot load the candidate: %v", err)
	}
	b, err := onnx.Export(m, onnx.ExportOptions{})
	if err != nil {
		return nil, badInput("cannot export the candidate: %v", err)
	}
	path := filepath.Join(filepath.Dir(in.ModelDir), fileONNX)
	if err := writeFileAtomic(path, b); err != nil {
		return nil, err
	}
	return &ExportOutput{ONNXFile: path, Bytes: len(b)}, nil
}

// ---- EvaluateHoldout ----

// EvaluateInput names the candidate and its holdout.
type EvaluateInput struct {
	ModelDir    string `json:"model_dir"`
	HoldoutFile string `json:"holdout_file"`
}

// EvaluateOutput holds the holdout metrics and the version served when the
// evaluation ran ("" if none).
type EvaluateOutput struct {
	Current string         `json:"current,omitempty"`
	Metrics HoldoutMetrics `json:"metrics"`
}

// EvaluateHoldout measures next-item HR@20, MRR@20, HR@10 and NDCG@10 of the
// candidate and of the registry's current version on the same holdout cases
// (every prefix → next item of the holdout sessions, at most
// MaxHoldoutCases, taken evenly), through model/eval and the configured
// scorer. It only reads, so retries are harmless.
func (a *Activities) EvaluateHoldout(ctx context.Context, in EvaluateInput) (*EvaluateOutput, error) {
	hold, err := readHoldout(in.HoldoutFile)
	if err != nil {
		return nil, err
	}
	maxCases := a.MaxHoldoutCases
	if maxCases <= 0 {
		maxCases = 20000
	}
	cases := holdoutCases(hold, maxCases)
	cand, _, err := model.Load(in.ModelDir)
	if err != nil {
		return nil, badInput("cannot load the candidate: %v", err)
	}
	newScorer := a.NewScorer
	if newScorer == nil {
		newScorer = eval.GoScorer
	}
	recs := map[string]eval.Recommender{}
	cs, err := eval.NewServed(cand, newScorer)
	if err != nil {
		return nil, badInput("cannot score the candidate: %v", err)
	}
	defer cs.Close()
	recs["candidate"] = cs

	reg, err := a.registry()
	if err != nil {
		return nil, err
	}
	out := &EvaluateOutput{Metrics: HoldoutMetrics{Cases: len(cases)}}
	if out.Current, err = reg.Current(ctx); err != nil {
		return nil, err
	}
	if out.Current != "" {
		v, err := reg.Get(ctx, out.Current)
		if err != nil {
			return nil, fmt.Errorf("cannot load the current version %s: %w", out.Current, err)
		}
		cur := new(model.Model)
		if err := cur.UnmarshalBinary(v.Model); err != nil {
			return nil, fmt.Errorf("cannot decode the current version %s: %w", out.Current, err)
		}
		ss, err := eval.NewServed(cur, newScorer)
		if err != nil {
			return nil, fmt.Errorf("cannot score the current version %s: %w", out.Current, err)
		}
		defer ss.Close()
		recs["current"] = ss
	}
	if len(cases) == 0 {
		return out, nil
	}
	stop := keepAlive(ctx, "evaluating")
	res, err := eval.Run(ctx, cases, recs, eval.Options{})
	stop()
	if err != nil {
		return nil, fmt.Errorf("cannot evaluate: %w", err)
	}
	out.Metrics.Candidate = metricsMap(res.Models["candidate"])
	if m, ok := res.Models["current"]; ok {
		out.Metrics.Current = metricsMap(m)
	}
	return out, nil
}

func metricsMap(m eval.Metrics) map[string]float64 {
	return map[string]float64{MetricHR20: m.HR20, MetricMRR20: m.MRR20, MetricHR10: m.HR10, MetricNDCG10: m.NDCG10}
}

// holdoutCases turns sessions into prefix → next-item cases, at most max of
// them, taken evenly.
func holdoutCases(ss []holdoutSession, max int) []eval.Case {
	var all []eval.Case
	for _, s := range ss {
		for t := 1; t < len(s.Items); t++ {
			all = append(all, eval.Case{Prefix: s.Items[:t], Target: s.Items[t]})
		}
	}
	if len(all) <= max {
		return all
	}
	out := make([]eval.Case, max)
	for i := range out {
		out[i] = all[i*len(all)/max]
	}
	return out
}

// ---- BuildReference ----

// ReferenceInput names what the reference profiles are built from.
type ReferenceInput struct {
	ModelDir    string `json:"model_dir"`
	EventsFile  string `json:"events_file"`
	WindowsFile string `json:"windows_file"`
	HoldoutFile string `json:"holdout_file"`
}

// ReferenceOutput is the written reference set and its observations per feature.
type ReferenceOutput struct {
	ReferenceFile string            `json:"reference_file"`
	Features      map[string]uint64 `json:"features"`
}

// maxTop1Inputs caps the holdout prefixes scored for the top-1 score profile.
const maxTop1Inputs = 20000

// BuildReference builds the drift reference profiles the hot path will
// count live traffic against when this candidate serves:
//
//   - category_mix and event_type_mix from every click of the window;
//   - session_length_ms and window_events from the window's
//     user_session_windows records (first firings), when there are any;
//   - top1_score from the candidate itself, scoring the holdout sessions'
//     prefixes the way the hot path does (type and recency weights, the
//     current and purchased items excluded): the served model's own scores
//     would be on another model's scale.
//
// strategy_mix is left out: the mix of the recommendations topic reflects
// the previous model's catalogue and the popularity tables, not the
// candidate's, and a wrong reference there would alert right after a
// promotion. The set is written to reference.json; building it only reads,
// so a retry redoes the same.
func (a *Activities) BuildReference(ctx context.Context, in ReferenceInput) (*ReferenceOutput, error) {
	defer keepAlive(ctx, "profiling")()
	s := drift.NewSample()
	var c event.Click
	lim := event.DefaultLimits
	lim.MaxFutureSkew = 0
	if err := eachLine(in.EventsFile, func(b []byte) {
		if event.DecodeInto(&c, b, time.Time{}, lim) == nil {
			s.ObserveCategorical(drift.FeatureCategoryMix, c.Category, 1)
			s.ObserveCategorical(drift.FeatureEventTypeMix, c.Type.String(), 1)
		}
	}); err != nil {
		return nil, err
	}
	if in.WindowsFile != "" {
		if err := eachLine(in.WindowsFile, func(b []byte) {
			if w, err := wire.DecodeWindow(b); err == nil && w.Revision <= 1 {
				s.ObserveNumeric(drift.FeatureSessionLength, float64(w.SessionLengthMs))
				s.ObserveNumeric(drift.FeatureWindowEvents, float64(w.Events))
			}
		}); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	if in.HoldoutFile != "" {
		m, _, err := model.Load(in.ModelDir)
		if err != nil {
			return nil, badInput("cannot load the candidate: %v", err)
		}
		hold, err := readHoldout(in.HoldoutFile)
		if err != nil {
			return nil, err
		}
		if err := observeTop1(ctx, s, m, hold); err != nil {
			return nil, err
		}
	}
	ref, err := s.Build(drift.Config{})
	if err != nil {
		return nil, badInput("cannot build the reference profiles: %v", err)
	}
	out := &ReferenceOutput{ReferenceFile: filepath.Join(filepath.Dir(in.ModelDir), fileReference), Features: map[string]uint64{}}
	for name, r := range ref {
		out.Features[name] = r.N()
	}
	if err := writeJSON(out.ReferenceFile, ref); err != nil {
		return nil, err
	}
	return out, nil
}

// eachLine calls fn with every non-empty line of a file.
func eachLine(path string, fn func([]byte)) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cannot open %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<16), 1<<24)
	for sc.Scan() {
		if len(sc.Bytes()) > 0 {
			fn(sc.Bytes())
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("cannot read %s: %w", path, err)
	}
	return nil
}

// observeTop1 scores every prefix of the holdout sessions (up to
// maxTop1Inputs) with m, as the hot path would score the session at that
// click, and records the best item's score.
func observeTop1(ctx context.Context, o drift.Observer, m *model.Model, hold []holdoutSession) error {
	sc, err := model.NewScorer(m)
	if err != nil {
		return badInput("cannot score the candidate: %v", err)
	}
	defer sc.Close()
	const batch = 64
	var (
		inputs = make([]model.Input, 0, batch)
		out    = make([][]model.Rec, batch)
		types  []event.Type
		n      int
	)
	flush := func() error {
		if len(inputs) == 0 {
			return nil
		}
		if err := sc.Score(inputs, 1, out[:len(inputs)]); err != nil {
			return fmt.Errorf("cannot score holdout prefixes: %w", err)
		}
		for _, r := range out[:len(inputs)] {
			if len(r) > 0 {
				o.ObserveNumeric(drift.FeatureTop1Score, float64(r[0].Score))
			}
		}
		inputs = inputs[:0]
		return ctx.Err()
	}
	maxItems := m.Weighting.MaxItems
	if maxItems <= 0 {
		maxItems = 50
	}
	for _, s := range hold {
		for t := 1; t <= len(s.Items) && n < maxTop1Inputs; t++ {
			var in model.Input
			types = types[:0]
			for j := max(0, t-maxItems); j < t; j++ {
				idx, ok := m.Index(s.Items[j])
				if !ok {
					continue
				}
				typ := event.View
				if s.Types != nil {
					typ = s.Types[j]
				}
				in.Items = append(in.Items, idx)
				types = append(types, typ)
				if typ == event.Purchase || j == t-1 {
					in.Exclude = append(in.Exclude, idx)
				}
			}
			if len(in.Items) == 0 {
				continue // the hot path falls back to popularity: no model score
			}
			in.Weights = m.Weighting.Weights(types, nil)
			inputs = append(inputs, in)
			n++
			if len(inputs) == batch {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}

// ---- RegisterCandidate ----

// RegisterInput is what the registry stores for a candidate.
type RegisterInput struct {
	Version       string         `json:"version"`
	ModelDir      string         `json:"model_dir"`
	ONNXFile      string         `json:"onnx_file"`
	ReferenceFile string         `json:"reference_file"`
	Holdout       HoldoutMetrics `json:"holdout"`
	Reason        string         `json:"reason"`
}

// RegisterOutput says whether an earlier attempt had registered the version.
type RegisterOutput struct {
	AlreadyRegistered bool `json:"already_registered,omitempty"`
}

// RegisterCandidate stores the candidate in the registry (model, ONNX graph,
// metadata with the holdout metrics and the reference profiles) without
// serving it. A version already registered is left as it is.
func (a *Activities) RegisterCandidate(ctx context.Context, in RegisterInput) (*RegisterOutput, error) {
	defer keepAlive(ctx, "registering")()
	reg, err := a.registry()
	if err != nil {
		return nil, err
	}
	if _, err := reg.Meta(ctx, in.Version); err == nil {
		return &RegisterOutput{AlreadyRegistered: true}, nil
	} else if !errors.Is(err, registry.ErrNotFound) {
		return nil, err
	}
	m, md, err := model.Load(in.ModelDir)
	if err != nil {
		return nil, badInput("cannot load the candidate: %v", err)
	}
	if md.Version != in.Version {
		return nil, badInput("the model in %s is version %q, not %q", in.ModelDir, md.Version, in.Version)
	}
	bin, err := m.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("cannot encode the candidate: %w", err)
	}
	onnxBytes, err := os.ReadFile(in.ONNXFile)
	if err != nil {
		return nil, badInput("ONNX file: %v", err)
	}
	ref, err := os.ReadFile(in.ReferenceFile)
	if err != nil {
		return nil, badInput("reference file: %v", err)
	}
	if md.OfflineMetrics == nil {
		md.OfflineMetrics = map[string]map[string]float64{}
	}
	if in.Holdout.Candidate != nil {
		md.OfflineMetrics["holdout"] = in.Holdout.Candidate
	}
	if in.Holdout.Current != nil {
		md.OfflineMetrics["holdout_current"] = in.Holdout.Current
	}
	meta := registry.Metadata{Metadata: md, Holdout: in.Holdout.Candidate, Reference: json.RawMessage(ref)}
	if err := reg.Register(ctx, registry.Version{Meta: meta, Model: bin, ONNX: onnxBytes}, in.Reason); errors.Is(err, registry.ErrInvalidReference) {
		return nil, badInput("reference file %s: %v", in.ReferenceFile, err)
	} else if err != nil {
		return nil, err
	}
	return &RegisterOutput{}, nil
}

// CleanWorkDir removes a version's work directory (unless KeepWorkDir).
// The registry holds everything a registered version needs.
func (a *Activities) CleanWorkDir(ctx context.Context, version string) error {
	dir, err := a.versionDir(version)
	if err != nil || a.KeepWorkDir {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("cannot remove %s: %w", dir, err)
	}
	return nil
}

// ---- PromoteCandidate / RollbackModel ----

// PromoteInput names the version to serve.
type PromoteInput struct {
	Version string `json:"version"`
	Reason  string `json:"reason"`
}

// PromoteOutput is the version served before and when the promotion happened.
type PromoteOutput struct {
	Previous   string    `json:"previous,omitempty"`
	PromotedAt time.Time `json:"promoted_at"`
}

// PromoteCandidate serves the version (registry.Promote: every hot path
// worker swaps to it between two batches). If the version already serves
// because an earlier attempt promoted it, that promotion is returned.
func (a *Activities) PromoteCandidate(ctx context.Context, in PromoteInput) (*PromoteOutput, error) {
	reg, err := a.registry()
	if err != nil {
		return nil, err
	}
	cur, err := reg.Current(ctx)
	if err != nil {
		return nil, err
	}
	if cur == in.Version {
		hist, err := reg.History(ctx, 1000)
		if err != nil {
			return nil, err
		}
		for _, e := range hist {
			if e.Version == in.Version && e.Action == "promote" {
				return &PromoteOutput{Previous: e.Previous, PromotedAt: e.Time}, nil
			}
		}
	}
	prev, err := reg.Promote(ctx, in.Version, in.Reason)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, badInput("version %s is not registered", in.Version)
	}
	if err != nil {
		return nil, err
	}
	return &PromoteOutput{Previous: prev, PromotedAt: time.Now().UTC()}, nil
}

// RollbackInput names the version to roll back from.
type RollbackInput struct {
	Version string `json:"version"`
	Reason  string `json:"reason"`
	// Trigger labels recsys_model_rollbacks_total: retrain, drift or abort.
	Trigger string `json:"trigger"`
}

// RollbackOutput says what serves after the rollback.
type RollbackOutput struct {
	RolledBack bool   `json:"rolled_back"`
	Serving    string `json:"serving"`
	// Note explains a rollback not done: the version no longer serves (an
	// earlier attempt or someone else moved on), or nothing served before it.
	Note string `json:"note,omitempty"`
}

// RollbackModel is the compensation of a promotion: if Version still serves,
// the version served before it serves again (registry.RollbackFrom, with the
// reason in the history). The check and the rollback are one atomic step in
// Redis: if Version no longer serves — an earlier attempt already rolled
// back, or someone promoted another version after the caller judged this
// one — nothing changes and Note says so, so the activity is idempotent and
// never undoes someone else's promotion.
func (a *Activities) RollbackModel(ctx context.Context, in RollbackInput) (*RollbackOutput, error) {
	reg, err := a.registry()
	if err != nil {
		return nil, err
	}
	if in.Version == "" {
		return nil, badInput("no version to roll back from")
	}
	now, err := reg.RollbackFrom(ctx, in.Version, in.Reason)
	var nc *registry.NotCurrentError
	switch {
	case errors.As(err, &nc):
		return &RollbackOutput{Serving: nc.Current, Note: fmt.Sprintf("%s no longer serves (%q does)", in.Version, nc.Current)}, nil
	case errors.Is(err, registry.ErrNoPrevious):
		return &RollbackOutput{Serving: in.Version, Note: "no version served before " + in.Version}, nil
	case err != nil:
		return nil, err
	}
	a.Metrics.rollback(in.Trigger)
	activity.GetLogger(ctx).Warn("rolled back", "from", in.Version, "to", now, "reason", in.Reason)
	return &RollbackOutput{RolledBack: true, Serving: now}, nil
}
