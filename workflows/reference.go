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
	if err := observeClicks(s, in.EventsFile); err != nil {
		return nil, err
	}
	if in.WindowsFile != "" {
		if err := observeWindows(s, in.WindowsFile); err != nil {
			return nil, err
		}
	}
	if in.HoldoutFile != "" {
		if err := observeCandidate(ctx, s, in.ModelDir, in.HoldoutFile); err != nil {
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

// observeClicks observes category_mix and event_type_mix of every valid
// click in the events file.
func observeClicks(o drift.Observer, eventsFile string) error {
	var c event.Click
	lim := event.DefaultLimits
	lim.MaxFutureSkew = 0
	return eachLine(eventsFile, func(b []byte) {
		if event.DecodeInto(&c, b, time.Time{}, lim) == nil {
			o.ObserveCategorical(drift.FeatureCategoryMix, c.Category, 1)
			o.ObserveCategorical(drift.FeatureEventTypeMix, c.Type.String(), 1)
		}
	})
}

// observeWindows observes session_length_ms and window_events of the first
// firing of every session window in the windows file; a missing file
// observes nothing.
func observeWindows(o drift.Observer, windowsFile string) error {
	err := eachLine(windowsFile, func(b []byte) {
		if w, err := wire.DecodeWindow(b); err == nil && w.Revision <= 1 {
			o.ObserveNumeric(drift.FeatureSessionLength, float64(w.SessionLengthMs))
			o.ObserveNumeric(drift.FeatureWindowEvents, float64(w.Events))
		}
	})
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// observeCandidate observes top1_score of the candidate in modelDir on the
// prefixes of the holdout sessions (observeTop1).
func observeCandidate(ctx context.Context, o drift.Observer, modelDir, holdoutFile string) error {
	m, _, err := model.Load(modelDir)
	if err != nil {
		return badInput("cannot load the candidate: %v", err)
	}
	hold, err := readHoldout(holdoutFile)
	if err != nil {
		return err
	}
	return observeTop1(ctx, o, m, hold)
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
	b := newTop1Batch(sc, o)
	maxItems := m.Weighting.MaxItems
	if maxItems <= 0 {
		maxItems = 50
	}
	var types []event.Type
	n := 0
	for _, s := range hold {
		for t := 1; t <= len(s.Items) && n < maxTop1Inputs; t++ {
			var in model.Input
			in, types = prefixInput(m, s, t, maxItems, types)
			if len(in.Items) == 0 {
				continue // the hot path falls back to popularity: no model score
			}
			n++
			if err := b.add(ctx, in); err != nil {
				return err
			}
		}
	}
	return b.flush(ctx)
}

// prefixInput is the scorer input of the session's first t clicks as the
// hot path builds it: the last maxItems known items with their type and
// recency weights, the current and purchased items excluded. types is a
// buffer, returned for reuse.
func prefixInput(m *model.Model, s holdoutSession, t, maxItems int, types []event.Type) (model.Input, []event.Type) {
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
	if len(in.Items) > 0 {
		in.Weights = m.Weighting.Weights(types, nil)
	}
	return in, types
}

// top1Batch scores inputs in batches and observes each one's best score.
type top1Batch struct {
	sc     model.Scorer
	o      drift.Observer
	inputs []model.Input
	out    [][]model.Rec
}

// top1BatchSize is how many inputs top1Batch scores at once.
const top1BatchSize = 64

// newTop1Batch returns an empty batch scoring with sc into o.
func newTop1Batch(sc model.Scorer, o drift.Observer) *top1Batch {
	return &top1Batch{sc: sc, o: o, inputs: make([]model.Input, 0, top1BatchSize), out: make([][]model.Rec, top1BatchSize)}
}

// add adds an input, scoring the batch once it is full.
func (b *top1Batch) add(ctx context.Context, in model.Input) error {
	b.inputs = append(b.inputs, in)
	if len(b.inputs) < top1BatchSize {
		return nil
	}
	return b.flush(ctx)
}

// flush scores the inputs added since the last flush, observes their best
// scores and returns ctx's error, so a cancelled activity stops between
// batches.
func (b *top1Batch) flush(ctx context.Context) error {
	if len(b.inputs) == 0 {
		return nil
	}
	if err := b.sc.Score(b.inputs, 1, b.out[:len(b.inputs)]); err != nil {
		return fmt.Errorf("cannot score holdout prefixes: %w", err)
	}
	for _, r := range b.out[:len(b.inputs)] {
		if len(r) > 0 {
			b.o.ObserveNumeric(drift.FeatureTop1Score, float64(r[0].Score))
		}
	}
	b.inputs = b.inputs[:0]
	return ctx.Err()
}
