package eval

import (
	"fmt"

	"github.com/clickrec/clickrec/model"
)

// NewScorerFunc makes a Scorer for a model: model.NewScorer for the pure-Go
// reference, or the ONNX Runtime scorer.
type NewScorerFunc func(m *model.Model) (model.Scorer, error)

// GoScorer is the NewScorerFunc of the pure-Go reference scorer.
func GoScorer(m *model.Model) (model.Scorer, error) { return model.NewScorer(m) }

// Served evaluates a trained model exactly as the hot path serves it: the
// prefix's known items, weighted by the model's Weighting (as views, newest
// last), go through a model.Scorer; nothing is excluded. Unknown items are
// skipped; a prefix with none gets the prior's ranking.
type Served struct {
	m         *model.Model
	newScorer NewScorerFunc
	sc        model.Scorer
	in        []model.Input
	recs      [][]model.Rec
}

// NewServed wraps m and a scorer made by newScorer.
func NewServed(m *model.Model, newScorer NewScorerFunc) (*Served, error) {
	m.Index(0) // build the id map now: forks read it concurrently
	sc, err := newScorer(m)
	if err != nil {
		return nil, fmt.Errorf("served: new scorer: %w", err)
	}
	return &Served{m: m, newScorer: newScorer, sc: sc}, nil
}

// Fork implements Forker with a new scorer on the same model.
func (s *Served) Fork() (Recommender, error) { return NewServed(s.m, s.newScorer) }

// Close closes the scorer.
func (s *Served) Close() error { return s.sc.Close() }

// Recommend implements Recommender.
func (s *Served) Recommend(prefixes [][]int64, k int, out [][]int64) error {
	n := len(prefixes)
	for len(s.in) < n {
		s.in = append(s.in, model.Input{})
		s.recs = append(s.recs, nil)
	}
	for i, pre := range prefixes {
		in := &s.in[i]
		in.Items = in.Items[:0]
		for _, it := range pre {
			if j, ok := s.m.Index(it); ok {
				in.Items = append(in.Items, j)
			}
		}
		in.Weights = s.m.Weighting.ViewWeights(len(in.Items), in.Weights)
		in.Exclude = in.Exclude[:0]
	}
	if err := s.sc.Score(s.in[:n], k, s.recs[:n]); err != nil {
		return fmt.Errorf("served: %w", err)
	}
	for i := 0; i < n; i++ {
		o := out[i][:0]
		for _, r := range s.recs[i] {
			o = append(o, s.m.ItemIDs[r.Index])
		}
		out[i] = o
	}
	return nil
}
