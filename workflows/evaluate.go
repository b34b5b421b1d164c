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
