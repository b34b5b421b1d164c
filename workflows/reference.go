package workflows

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/clickrec/clickrec/drift"
	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/wire"
)

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
