package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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
	register(command{name: "eval", synopsis: "offline next-item evaluation: POP, S-POP, item-kNN, V-SKNN and the served model", run: runEval})
}

var evalModels = []string{"pop", "spop", "iknn", "vsknn", "served"}

func runEval(ctx context.Context, args []string) error {
	fs := newFlagSet("eval", `Evaluate next-item recommenders offline and write the metrics as JSON.

Every model is fitted on --train (sessions) and asked for its top 20 after each
test prefix of --test (lines "prefix<TAB>target", prefix = space-separated item
ids; gzip or plain). Reported: HR@10, HR@20, MRR@20, NDCG@10. Models: pop,
spop (session popularity, global fallback), iknn (item-kNN on the last item),
vsknn (V-SKNN, Ludewig & Jannach 2018) and served (the trained model as the hot
path serves it: candidates retrieved, then ranked, through --scorer; trained here
with the train flags unless --model loads one).`)
	var (
		trainFile, format, testFile, jsonOut, modelDir, saveDir string
		scorer, ortLib                                          string
		models                                                  = cli.Strings(evalModels)
		maxCases, workers                                       int
		vk                                                      = eval.DefaultVSKNN
		iknnLambda                                              = 20.0
		lg                                                      cli.Logging
		cfg                                                     model.Config
	)
	fs.StringVar(&trainFile, "train", "", "training sessions file (required)")
	fs.Env("train", "CLICKREC_EVAL_TRAIN")
	fs.StringVar(&format, "train-format", model.FormatDiginetica, "format of --train: diginetica or events")
	fs.Env("train-format", "CLICKREC_EVAL_TRAIN_FORMAT")
	fs.StringVar(&testFile, "test", "", "test cases file, prefix<TAB>target per line (required)")
	fs.Env("test", "CLICKREC_EVAL_TEST")
	fs.StringVar(&jsonOut, "json", "", "write the JSON report here (required; - for stdout)")
	fs.Env("json", "CLICKREC_EVAL_JSON")
	fs.Var(&models, "models", "comma-separated models to evaluate: pop, spop, iknn, vsknn, served")
	fs.Env("models", "CLICKREC_EVAL_MODELS")
	fs.StringVar(&modelDir, "model", "", "evaluate this saved model directory as served instead of training one")
	fs.Env("model", "CLICKREC_EVAL_MODEL")
	fs.StringVar(&saveDir, "save", "", "save the served model trained here, with its offline metrics, to this directory")
	fs.Env("save", "CLICKREC_EVAL_SAVE")
	fs.StringVar(&scorer, "scorer", "go", "served model's scorer: go (the pure-Go reference) or onnx (ONNX Runtime, as the hot path runs it)")
	fs.Env("scorer", "CLICKREC_EVAL_SCORER")
	fs.StringVar(&ortLib, "onnxruntime-lib", "", "absolute path of libonnxruntime.so.1 for --scorer onnx (default: "+onnx.LibraryEnv+", then the file scripts/onnxruntime.sh installs)")
	fs.Env("onnxruntime-lib", onnx.LibraryEnv)
	fs.IntVar(&maxCases, "max-cases", 0, "evaluate only the first N cases (0: all)")
	fs.Env("max-cases", "CLICKREC_EVAL_MAX_CASES")
	fs.IntVar(&vk.K, "vsknn-k", vk.K, "V-SKNN neighbours")
	fs.Env("vsknn-k", "CLICKREC_EVAL_VSKNN_K")
	fs.IntVar(&vk.Sample, "vsknn-sample", vk.Sample, "V-SKNN most recent candidate sessions")
	fs.Env("vsknn-sample", "CLICKREC_EVAL_VSKNN_SAMPLE")
	fs.Float64Var(&vk.IDFWeight, "vsknn-idf", vk.IDFWeight, "V-SKNN idf weight (0: off)")
	fs.Env("vsknn-idf", "CLICKREC_EVAL_VSKNN_IDF")
	fs.Float64Var(&iknnLambda, "iknn-lambda", iknnLambda, "item-kNN similarity shrinkage λ")
	fs.Env("iknn-lambda", "CLICKREC_EVAL_IKNN_LAMBDA")
	apply := trainFlags(fs, &cfg, "CLICKREC_EVAL_")
	lg.Register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := lg.Logger()
	if err != nil {
		return err
	}
	switch {
	case trainFile == "":
		return cli.Usagef("--train is required (see clickrec eval --help)")
	case testFile == "":
		return cli.Usagef("--test is required (see clickrec eval --help)")
	case jsonOut == "":
		return cli.Usagef("--json is required (see clickrec eval --help)")
	case format != model.FormatEvents && format != model.FormatDiginetica:
		return cli.Usagef("--train-format %q: want events or diginetica", format)
	case len(models) == 0:
		return cli.Usagef("--models is empty")
	case maxCases < 0:
		return cli.Usagef("--max-cases must not be negative")
	case vk.K < 1 || vk.Sample < 1 || vk.IDFWeight < 0:
		return cli.Usagef("--vsknn-k and --vsknn-sample must be positive, --vsknn-idf not negative")
	case iknnLambda < 0:
		return cli.Usagef("--iknn-lambda must not be negative")
	}
	so := serving.Options{Scorer: scorer, ORTLib: ortLib}
	if err := so.Validate(); err != nil {
		return cli.Usagef("%v", err)
	}
	newScorer := so.NewScorer
	for _, m := range models {
		if !slices.Contains(evalModels, m) {
			return cli.Usagef("--models: unknown model %q (want some of %v)", m, evalModels)
		}
	}
	if (modelDir != "" || saveDir != "") && !slices.Contains(models, "served") {
		return cli.Usagef("--model and --save need served in --models")
	}
	if modelDir != "" && saveDir != "" {
		return cli.Usagef("--save saves a model trained here; it cannot be used with --model")
	}
	if err := apply(); err != nil {
		return err
	}
	workers = cfg.Workers
	limitProcs(workers)

	t0 := time.Now()
	sessions, stats, err := model.ReadSessionsFile(trainFile, format)
	if err != nil {
		return fmt.Errorf("read training data: %w", err)
	}
	cases, err := eval.ReadCasesFile(testFile)
	if err != nil {
		return fmt.Errorf("read test cases: %w", err)
	}
	if maxCases > 0 && len(cases) > maxCases {
		cases = cases[:maxCases]
	}
	log.Info("read data", "train_sessions", stats.Sessions, "train_events", stats.Events, "items", stats.Items, "cases", len(cases),
		"took", time.Since(t0).Round(time.Millisecond))

	recs := map[string]eval.Recommender{}
	idx := eval.NewIndex(sessions)
	var (
		served *model.Model
		md     model.Metadata
	)
	for _, name := range models {
		switch name {
		case "pop":
			recs[name] = eval.NewPop(idx)
		case "spop":
			recs[name] = eval.NewSPop(idx)
		case "iknn":
			recs[name] = eval.NewItemKNN(idx, iknnLambda)
		case "vsknn":
			recs[name] = eval.NewVSKNN(idx, vk)
		case "served":
			if modelDir != "" {
				if served, md, err = model.Load(modelDir); err != nil {
					return fmt.Errorf("load model: %w", err)
				}
				log.Info("loaded model", "dir", modelDir, "version", served.Version, "items", served.NumItems(), "factors", served.K)
			} else {
				tt := time.Now()
				m, rep, err := model.Train(ctx, sessions, cfg, log)
				if err != nil {
					return fmt.Errorf("train served model: %w", err)
				}
				rep.Data = stats
				m.Version = "eval-" + time.Now().UTC().Format("20060102-150405")
				md = model.NewMetadata(m, cfg, rep, trainFile)
				served = m
				log.Info("trained served model", "took", time.Since(tt).Round(time.Millisecond), "prior_weight", rep.PriorWeight)
			}
			log.Info("served model", "items", served.NumItems(), "retrieval", served.HasRetrieval(), "neighbors", served.NumNeighbors,
				"max_candidates", served.MaxCandidates, "neighbor_weight", served.NeighborWeight, "scorer", scorer)
			s, err := eval.NewServed(served, newScorer)
			if err != nil {
				return err
			}
			defer s.Close()
			recs[name] = s
			if served.HasRetrieval() {
				// The same factors ranking the whole catalogue: what retrieval costs
				// (or gains) in quality.
				fs, err := eval.NewServed(served.WithoutRetrieval(), eval.GoScorer)
				if err != nil {
					return err
				}
				defer fs.Close()
				recs["served-full"] = fs
				models = append(models, "served-full")
			}
		}
	}
	res, err := eval.Run(ctx, cases, recs, eval.Options{Workers: workers, Log: log})
	if err != nil {
		return err
	}
	res.Protocol = fmt.Sprintf("next-item prediction on %d prefix->target cases of %s; models fitted on the %d sessions of %s; "+
		"each model ranks every training item (session items not excluded, ties to the lower id/index) and returns its top %d; "+
		"HR@k: target in the top k; MRR@20: mean 1/rank (0 beyond 20); NDCG@10: mean 1/log2(rank+1) (0 beyond 10); "+
		"served: the trained model through model.Scorer ("+scorer+"), session weighted by its Weighting, ranked among its retrieved candidates when the model has retrieval tables; "+
		"served-full: the same model ranking every item (no retrieval), through the pure-Go scorer",
		len(cases), filepath.Base(testFile), stats.Sessions, filepath.Base(trainFile), eval.Cutoff)
	var js bytes.Buffer
	enc := json.NewEncoder(&js)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(res); err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if jsonOut == "-" {
		_, err = os.Stdout.Write(js.Bytes())
	} else {
		err = os.WriteFile(jsonOut, js.Bytes(), 0o644)
	}
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	fmt.Fprintf(os.Stderr, "%-8s %7s %7s %7s %7s\n", "model", "hr@10", "hr@20", "mrr@20", "ndcg@10")
	for _, name := range models {
		m := res.Models[name]
		fmt.Fprintf(os.Stderr, "%-8s %7.4f %7.4f %7.4f %7.4f\n", name, m.HR10, m.HR20, m.MRR20, m.NDCG10)
	}
	if saveDir != "" && served != nil {
		md.OfflineMetrics = map[string]map[string]float64{}
		for name, m := range res.Models {
			md.OfflineMetrics[name] = map[string]float64{"hr@10": m.HR10, "hr@20": m.HR20, "mrr@20": m.MRR20, "ndcg@10": m.NDCG10}
		}
		if err := model.Save(saveDir, served, md); err != nil {
			return err
		}
		log.Info("saved served model", "dir", saveDir, "version", served.Version)
	}
	log.Info("eval done", "took", time.Since(t0).Round(time.Millisecond))
	return nil
}
