package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/model/eval"
	"github.com/clickrec/clickrec/model/onnx"
	"github.com/clickrec/clickrec/serving"
)

func init() {
	register(command{name: "eval", synopsis: "offline next-item evaluation: POP, S-POP, item-kNN, V-SKNN and the served model; --replay: frozen vs online item knowledge in time order", run: runEval})
}

var evalModels = []string{"pop", "spop", "iknn", "vsknn", "served"}

// evalFlags are clickrec eval's flags, checked.
type evalFlags struct {
	trainFile, format, testFile, jsonOut, modelDir, saveDir string
	scorer                                                  string
	newScorer                                               eval.NewScorerFunc
	models                                                  []string
	maxCases                                                int
	vk                                                      eval.VSKNNConfig
	iknnLambda                                              float64
	cfg                                                     model.Config // of the served model trained here
}

// evalData is what clickrec eval reads: the training sessions and the test
// cases.
type evalData struct {
	sessions []model.Session
	stats    model.DataStats
	cases    []eval.Case
}

// runEval is clickrec eval: it reads the data, builds every model asked for,
// evaluates them, writes the report and prints the table, and saves the
// served model trained here if asked to.
func runEval(ctx context.Context, args []string) error {
	if replay, rest := isReplay(args); replay {
		return runReplay(ctx, rest)
	}
	f, log, err := parseEval(args)
	if err != nil {
		return err
	}
	limitProcs(f.cfg.Workers)
	t0 := time.Now()
	data, err := readEvalData(f, log)
	if err != nil {
		return err
	}
	recs, err := evalRecommenders(ctx, f, data, log)
	if err != nil {
		return err
	}
	defer recs.close()
	res, err := eval.Run(ctx, data.cases, recs.byName, eval.Options{Workers: f.cfg.Workers, Log: log})
	if err != nil {
		return err
	}
	res.Protocol = evalProtocol(f, data)
	if err := writeEvalReport(f.jsonOut, res); err != nil {
		return err
	}
	printEvalTable(os.Stderr, res, recs.names)
	if f.saveDir != "" && recs.served.m != nil {
		if err := saveEvaluated(f.saveDir, recs.served, res, log); err != nil {
			return err
		}
	}
	log.Info("eval done", "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

// parseEval parses and checks clickrec eval's flags, and builds its logger.
func parseEval(args []string) (*evalFlags, *slog.Logger, error) {
	fs := newFlagSet("eval", `Evaluate next-item recommenders offline and write the metrics as JSON.

Every model is fitted on --train (sessions) and asked for its top 20 after each
test prefix of --test (lines "prefix<TAB>target", prefix = space-separated item
ids; gzip or plain). Reported: HR@10, HR@20, MRR@20, NDCG@10. Models: pop,
spop (session popularity, global fallback), iknn (item-kNN on the last item),
vsknn (V-SKNN, Ludewig & Jannach 2018) and served (the trained model as the hot
path serves it: candidates retrieved, then ranked, through --scorer; trained here
with the train flags unless --model loads one).

clickrec eval --replay is another mode, with flags of its own (clickrec eval
--replay --help): clicks replayed in time order, the frozen model against the
online item knowledge (package itemknow).`)
	var (
		f      = &evalFlags{vk: eval.DefaultVSKNN, iknnLambda: 20.0}
		ortLib string
		models = cli.Strings(evalModels)
		lg     cli.Logging
	)
	fs.StringVar(&f.trainFile, "train", "", "training sessions file (required)")
	fs.Env("train", "CLICKREC_EVAL_TRAIN")
	fs.StringVar(&f.format, "train-format", model.FormatDiginetica, "format of --train: diginetica or events")
	fs.Env("train-format", "CLICKREC_EVAL_TRAIN_FORMAT")
	fs.StringVar(&f.testFile, "test", "", "test cases file, prefix<TAB>target per line (required)")
	fs.Env("test", "CLICKREC_EVAL_TEST")
	fs.StringVar(&f.jsonOut, "json", "", "write the JSON report here (required; - for stdout)")
	fs.Env("json", "CLICKREC_EVAL_JSON")
	fs.Var(&models, "models", "comma-separated models to evaluate: pop, spop, iknn, vsknn, served")
	fs.Env("models", "CLICKREC_EVAL_MODELS")
	fs.StringVar(&f.modelDir, "model", "", "evaluate this saved model directory as served instead of training one")
	fs.Env("model", "CLICKREC_EVAL_MODEL")
	fs.StringVar(&f.saveDir, "save", "", "save the served model trained here, with its offline metrics, to this directory")
	fs.Env("save", "CLICKREC_EVAL_SAVE")
	fs.StringVar(&f.scorer, "scorer", "go", "served model's scorer: go (the pure-Go reference) or onnx (ONNX Runtime, as the hot path runs it)")
	fs.Env("scorer", "CLICKREC_EVAL_SCORER")
	fs.StringVar(&ortLib, "onnxruntime-lib", "", "absolute path of libonnxruntime.so.1 for --scorer onnx (default: "+onnx.LibraryEnv+", then the file scripts/onnxruntime.sh installs)")
	fs.Env("onnxruntime-lib", onnx.LibraryEnv)
	fs.IntVar(&f.maxCases, "max-cases", 0, "evaluate only the first N cases (0: all)")
	fs.Env("max-cases", "CLICKREC_EVAL_MAX_CASES")
	fs.IntVar(&f.vk.K, "vsknn-k", f.vk.K, "V-SKNN neighbours")
	fs.Env("vsknn-k", "CLICKREC_EVAL_VSKNN_K")
	fs.IntVar(&f.vk.Sample, "vsknn-sample", f.vk.Sample, "V-SKNN most recent candidate sessions")
	fs.Env("vsknn-sample", "CLICKREC_EVAL_VSKNN_SAMPLE")
	fs.Float64Var(&f.vk.IDFWeight, "vsknn-idf", f.vk.IDFWeight, "V-SKNN idf weight (0: off)")
	fs.Env("vsknn-idf", "CLICKREC_EVAL_VSKNN_IDF")
	fs.Float64Var(&f.iknnLambda, "iknn-lambda", f.iknnLambda, "item-kNN similarity shrinkage λ")
	fs.Env("iknn-lambda", "CLICKREC_EVAL_IKNN_LAMBDA")
	apply := trainFlags(fs, &f.cfg, "CLICKREC_EVAL_")
	lg.Register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	log, err := lg.Logger()
	if err != nil {
		return nil, nil, err
	}
	f.models = models
	if err := f.check(ortLib); err != nil {
		return nil, nil, err
	}
	if err := apply(); err != nil {
		return nil, nil, err
	}
	return f, log, nil
}

// check checks the flags against each other (the train flags aside) and sets
// up the served model's scorer.
func (f *evalFlags) check(ortLib string) error {
	switch {
	case f.trainFile == "":
		return cli.Usagef("--train is required (see clickrec eval --help)")
	case f.testFile == "":
		return cli.Usagef("--test is required (see clickrec eval --help)")
	case f.jsonOut == "":
		return cli.Usagef("--json is required (see clickrec eval --help)")
	case f.format != model.FormatEvents && f.format != model.FormatDiginetica:
		return cli.Usagef("--train-format %q: want events or diginetica", f.format)
	case len(f.models) == 0:
		return cli.Usagef("--models is empty")
	case f.maxCases < 0:
		return cli.Usagef("--max-cases must not be negative")
	case f.vk.K < 1 || f.vk.Sample < 1 || f.vk.IDFWeight < 0:
		return cli.Usagef("--vsknn-k and --vsknn-sample must be positive, --vsknn-idf not negative")
	case f.iknnLambda < 0:
		return cli.Usagef("--iknn-lambda must not be negative")
	}
	so := serving.Options{Scorer: f.scorer, ORTLib: ortLib}
	if err := so.Validate(); err != nil {
		return cli.Usagef("%v", err)
	}
	f.newScorer = so.NewScorer
	for _, m := range f.models {
		if !slices.Contains(evalModels, m) {
			return cli.Usagef("--models: unknown model %q (want some of %v)", m, evalModels)
		}
	}
	if (f.modelDir != "" || f.saveDir != "") && !slices.Contains(f.models, "served") {
		return cli.Usagef("--model and --save need served in --models")
	}
	if f.modelDir != "" && f.saveDir != "" {
		return cli.Usagef("--save saves a model trained here; it cannot be used with --model")
	}
	return nil
}

// readEvalData reads the training sessions and the test cases (the first
// --max-cases of them).
func readEvalData(f *evalFlags, log *slog.Logger) (*evalData, error) {
	t0 := time.Now()
	sessions, stats, err := model.ReadSessionsFile(f.trainFile, f.format)
	if err != nil {
		return nil, fmt.Errorf("read training data: %w", err)
	}
	cases, err := eval.ReadCasesFile(f.testFile)
	if err != nil {
		return nil, fmt.Errorf("read test cases: %w", err)
	}
	if f.maxCases > 0 && len(cases) > f.maxCases {
		cases = cases[:f.maxCases]
	}
	log.Info("read data", "train_sessions", stats.Sessions, "train_events", stats.Events, "items", stats.Items, "cases", len(cases),
		"took", time.Since(t0).Round(time.Millisecond))
	return &evalData{sessions: sessions, stats: stats, cases: cases}, nil
}

// servedModel is the model evaluated as served, with its metadata.
type servedModel struct {
	m  *model.Model
	md model.Metadata
}

// recommenders are the models under evaluation.
type recommenders struct {
	byName  map[string]eval.Recommender
	names   []string    // in report order: --models, then the served model's full-catalogue twin
	served  servedModel // zero unless served is evaluated
	closers []func() error
}

// close releases the scorers of the served models, the latest first.
func (r *recommenders) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
}

// evalRecommenders builds the recommenders of --models, the baselines fitted
// on the training sessions. The caller closes them.
func evalRecommenders(ctx context.Context, f *evalFlags, data *evalData, log *slog.Logger) (*recommenders, error) {
	r := &recommenders{byName: map[string]eval.Recommender{}, names: f.models}
	idx := eval.NewIndex(data.sessions)
	for _, name := range f.models {
		switch name {
		case "pop":
			r.byName[name] = eval.NewPop(idx)
		case "spop":
			r.byName[name] = eval.NewSPop(idx)
		case "iknn":
			r.byName[name] = eval.NewItemKNN(idx, f.iknnLambda)
		case "vsknn":
			r.byName[name] = eval.NewVSKNN(idx, f.vk)
		case "served":
			if err := r.addServed(ctx, f, data, log); err != nil {
				r.close()
				return nil, err
			}
		}
	}
	return r, nil
}

// addServed adds the served model, loaded or trained, through the scorer of
// --scorer; a model with retrieval tables also as served-full, ranking the
// whole catalogue through the pure-Go scorer.
func (r *recommenders) addServed(ctx context.Context, f *evalFlags, data *evalData, log *slog.Logger) error {
	served, err := loadOrTrainServed(ctx, f, data, log)
	if err != nil {
		return err
	}
	r.served = served
	m := served.m
	log.Info("served model", "items", m.NumItems(), "retrieval", m.HasRetrieval(), "neighbors", m.NumNeighbors,
		"max_candidates", m.MaxCandidates, "neighbor_weight", m.NeighborWeight, "scorer", f.scorer)
	s, err := eval.NewServed(m, f.newScorer)
	if err != nil {
		return err
	}
	r.closers = append(r.closers, s.Close)
	r.byName["served"] = s
	if m.HasRetrieval() {
		// The same factors ranking the whole catalogue: what retrieval costs
		// (or gains) in quality.
		fs, err := eval.NewServed(m.WithoutRetrieval(), eval.GoScorer)
		if err != nil {
			return err
		}
		r.closers = append(r.closers, fs.Close)
		r.byName["served-full"] = fs
		r.names = append(r.names, "served-full")
	}
	return nil
}

// loadOrTrainServed loads the served model from --model, or trains it on the
// training sessions with the train flags.
func loadOrTrainServed(ctx context.Context, f *evalFlags, data *evalData, log *slog.Logger) (servedModel, error) {
	if f.modelDir != "" {
		m, md, err := model.Load(f.modelDir)
		if err != nil {
			return servedModel{}, fmt.Errorf("load model: %w", err)
		}
		log.Info("loaded model", "dir", f.modelDir, "version", m.Version, "items", m.NumItems(), "factors", m.K)
		return servedModel{m, md}, nil
	}
	tt := time.Now()
	m, rep, err := model.Train(ctx, data.sessions, f.cfg, log)
	if err != nil {
		return servedModel{}, fmt.Errorf("train served model: %w", err)
	}
	rep.Data = data.stats
	m.Version = "eval-" + time.Now().UTC().Format("20060102-150405")
	md := model.NewMetadata(m, f.cfg, rep, f.trainFile)
	log.Info("trained served model", "took", time.Since(tt).Round(time.Millisecond), "prior_weight", rep.PriorWeight)
	return servedModel{m, md}, nil
}

// evalProtocol describes how the models were evaluated, for the report.
func evalProtocol(f *evalFlags, data *evalData) string {
	return fmt.Sprintf("next-item prediction on %d prefix->target cases of %s; models fitted on the %d sessions of %s; "+
		"each model ranks every training item (session items not excluded, ties to the lower id/index) and returns its top %d; "+
		"HR@k: target in the top k; MRR@20: mean 1/rank (0 beyond 20); NDCG@10: mean 1/log2(rank+1) (0 beyond 10); "+
		"served: the trained model through model.Scorer ("+f.scorer+"), session weighted by its Weighting, ranked among its retrieved candidates when the model has retrieval tables; "+
		"served-full: the same model ranking every item (no retrieval), through the pure-Go scorer",
		len(data.cases), filepath.Base(f.testFile), data.stats.Sessions, filepath.Base(f.trainFile), eval.Cutoff)
}

// writeEvalReport writes the JSON report to path, or to stdout for "-".
func writeEvalReport(path string, res *eval.Result) error { return writeJSON(path, res) }

// writeJSON writes v as indented JSON to path, or to stdout for "-".
func writeJSON(path string, res any) error {
	var js bytes.Buffer
	enc := json.NewEncoder(&js)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(res); err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	var err error
	if path == "-" {
		_, err = os.Stdout.Write(js.Bytes())
	} else {
		err = os.WriteFile(path, js.Bytes(), 0o644)
	}
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// printEvalTable prints the metrics of the named models as a table.
func printEvalTable(w io.Writer, res *eval.Result, names []string) {
	fmt.Fprintf(w, "%-8s %7s %7s %7s %7s\n", "model", "hr@10", "hr@20", "mrr@20", "ndcg@10")
	for _, name := range names {
		m := res.Models[name]
		fmt.Fprintf(w, "%-8s %7.4f %7.4f %7.4f %7.4f\n", name, m.HR10, m.HR20, m.MRR20, m.NDCG10)
	}
}

// saveEvaluated saves the served model trained here to dir, with every
// model's metrics as its offline metrics.
func saveEvaluated(dir string, served servedModel, res *eval.Result, log *slog.Logger) error {
	served.md.OfflineMetrics = map[string]map[string]float64{}
	for name, m := range res.Models {
		served.md.OfflineMetrics[name] = m.Map()
	}
	if err := model.Save(dir, served.m, served.md); err != nil {
		return err
	}
	log.Info("saved served model", "dir", dir, "version", served.m.Version)
	return nil
}
