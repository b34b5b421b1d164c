package workflows

import (
	"context"
	"fmt"

	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/model/eval"
)

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
	cases := holdoutCases(hold, a.maxHoldoutCases())
	cand, err := a.servedCandidate(in.ModelDir)
	if err != nil {
		return nil, err
	}
	defer cand.Close()
	recs := map[string]eval.Recommender{"candidate": cand}
	out := &EvaluateOutput{Metrics: HoldoutMetrics{Cases: len(cases)}}
	current, cur, err := a.servedCurrent(ctx)
	if err != nil {
		return nil, err
	}
	out.Current = current
	if cur != nil {
		defer cur.Close()
		recs["current"] = cur
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
	out.Metrics.Candidate = res.Models["candidate"].Map()
	if m, ok := res.Models["current"]; ok {
		out.Metrics.Current = m.Map()
	}
	return out, nil
}

// servedCandidate loads the candidate from modelDir and serves it through
// the configured scorer.
func (a *Activities) servedCandidate(modelDir string) (*eval.Served, error) {
	m, _, err := model.Load(modelDir)
	if err != nil {
		return nil, badInput("cannot load the candidate: %v", err)
	}
	s, err := eval.NewServed(m, a.newScorer())
	if err != nil {
		return nil, badInput("cannot score the candidate: %v", err)
	}
	return s, nil
}

// servedCurrent loads the registry's current version and serves it through
// the configured scorer; served is nil if no version serves.
func (a *Activities) servedCurrent(ctx context.Context) (version string, served *eval.Served, err error) {
	reg, err := a.registry()
	if err != nil {
		return "", nil, err
	}
	if version, err = reg.Current(ctx); err != nil || version == "" {
		return version, nil, err
	}
	v, err := reg.Get(ctx, version)
	if err != nil {
		return "", nil, fmt.Errorf("cannot load the current version %s: %w", version, err)
	}
	m := new(model.Model)
	if err := m.UnmarshalBinary(v.Model); err != nil {
		return "", nil, fmt.Errorf("cannot decode the current version %s: %w", version, err)
	}
	if served, err = eval.NewServed(m, a.newScorer()); err != nil {
		return "", nil, fmt.Errorf("cannot score the current version %s: %w", version, err)
	}
	return version, served, nil
}
