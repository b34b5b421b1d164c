package workflows

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/model/onnx"
)

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
