package workflows

import (
	"context"
	"fmt"
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
	train, hold, err := splitHoldout(sessions, in.HoldoutFraction)
	if err != nil {
		return nil, err
	}
	holdFile := filepath.Join(dir, fileHoldout)
	if err := writeHoldout(holdFile, hold); err != nil {
		return nil, err
	}
	cfg := a.trainConfig()
	m, rep, err := a.fit(ctx, in.Version, train, cfg)
	if err != nil {
		return nil, err
	}
	modelDir := filepath.Join(dir, dirModel)
	if err := saveCandidate(modelDir, m, cfg, rep, in.EventsFile, stats); err != nil {
		return nil, err
	}
	out = TrainOutput{
		ModelDir: modelDir, HoldoutFile: holdFile,
		Sessions: len(sessions), TrainSessions: len(train), HoldoutSessions: len(hold),
		Events: stats.Events, Items: m.NumItems(), Validation: rep.Validation, Seconds: rep.Seconds,
	}
	if err := writeJSON(filepath.Join(dir, fileTrained), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// fit trains the candidate version on the training sessions, heartbeating
// while model.Train runs; a failed fit is NoData (nothing to learn from).
func (a *Activities) fit(ctx context.Context, version string, train []model.Session, cfg model.Config) (*model.Model, *model.Report, error) {
	stop := keepAlive(ctx, "training")
	m, rep, err := model.Train(ctx, train, cfg, a.log().With("version", version))
	stop()
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, noData("cannot train: %v", err)
	}
	m.Version = version
	return m, rep, nil
}

// saveCandidate saves the trained candidate with model.Save, its metadata
// naming the training data and model.Train's own validation metrics.
func saveCandidate(modelDir string, m *model.Model, cfg model.Config, rep *model.Report, eventsFile string, stats model.DataStats) error {
	md := model.NewMetadata(m, cfg, rep, eventsFile)
	md.Data = stats
	if rep.Validation != nil {
		md.OfflineMetrics = map[string]map[string]float64{"validation": rep.Validation}
	}
	if err := model.Save(modelDir, m, md); err != nil {
		return fmt.Errorf("cannot save the candidate: %w", err)
	}
	return nil
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
