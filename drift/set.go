package drift

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/clickrec/clickrec/wire"
)

// Names of the standard features, as used in ReferenceSet, LiveSet, Result
// and the recsys_drift_psi{feature} metric.
const (
	// FeatureCategoryMix (categorical): the category of every event in a
	// window, weighted by its count in the window's by_category.
	FeatureCategoryMix = "category_mix"
	// FeatureEventTypeMix (categorical): view / cart / purchase, weighted by
	// the window's by_type counts.
	FeatureEventTypeMix = "event_type_mix"
	// FeatureSessionLength (numeric, ms): session_length_ms, once per window.
	FeatureSessionLength = "session_length_ms"
	// FeatureWindowEvents (numeric): events in a 1-minute window (the dwell
	// proxy), once per window.
	FeatureWindowEvents = "window_events"
	// FeatureTop1Score (numeric): the score of the first item of a model
	// recommendation. Popularity fallbacks score on another scale and are
	// left out; their share shows in FeatureStrategyMix.
	FeatureTop1Score = "top1_score"
	// FeatureStrategyMix (categorical): model / category_popular /
	// global_popular, once per recommendation.
	FeatureStrategyMix = "strategy_mix"
)

// StrategyModel is the recommendation strategy whose top-1 scores are profiled.
const StrategyModel = wire.StrategyModel

// StandardFeatures returns the names of the standard features with their kinds.
func StandardFeatures() map[string]Kind {
	return map[string]Kind{
		FeatureCategoryMix:   Categorical,
		FeatureEventTypeMix:  Categorical,
		FeatureSessionLength: Numeric,
		FeatureWindowEvents:  Numeric,
		FeatureTop1Score:     Numeric,
		FeatureStrategyMix:   Categorical,
	}
}

// Observer takes observations of named features. LiveSet (the hot path's
// live profile) and Sample (what a reference is built from) implement it, so
// ObserveWindow and ObserveRecommendation feed either the same way.
type Observer interface {
	// ObserveNumeric counts one value of a numeric feature.
	ObserveNumeric(feature string, x float64)
	// ObserveCategorical counts n occurrences of a category of a categorical feature.
	ObserveCategorical(feature, category string, n uint64)
}

// Window is a record of the user_session_windows topic; read one with
// wire.DecodeWindow.
type Window = wire.Window

// ObserveWindow feeds one window result into the window features: category
// mix, event-type mix (each event counted), session length and window events
// (once per window). Re-fired windows (Revision > 1) repeat the counts of
// their first firing plus late events, so they are skipped to avoid counting
// a window twice.
//
// The hot path can make the same calls without building a Window:
// ObserveCategorical(FeatureCategoryMix, cat, n) per category,
// ObserveCategorical(FeatureEventTypeMix, "view"|"cart"|"purchase", n) per
// type with n > 0, ObserveNumeric(FeatureSessionLength, ms) and
// ObserveNumeric(FeatureWindowEvents, events).
func ObserveWindow(o Observer, w *Window) {
	if w.Revision > 1 {
		return
	}
	for _, c := range w.ByCategory {
		if c.N > 0 {
			o.ObserveCategorical(FeatureCategoryMix, c.Category, c.N)
		}
	}
	for _, t := range [...]struct {
		name string
		n    uint64
	}{{"view", w.ByType.View}, {"cart", w.ByType.Cart}, {"purchase", w.ByType.Purchase}} {
		if t.n > 0 {
			o.ObserveCategorical(FeatureEventTypeMix, t.name, t.n)
		}
	}
	o.ObserveNumeric(FeatureSessionLength, float64(w.SessionLengthMs))
	o.ObserveNumeric(FeatureWindowEvents, float64(w.Events))
}

// Recommendation is a record of the recommendations topic; read one with
// wire.DecodeRecommendation.
type Recommendation = wire.Recommendation

// ObserveRecommendation feeds one recommendation: its strategy, and for
// StrategyModel with at least one item, the score of its first (best) item.
// The hot path can call ObserveStrategy directly with what it already has.
func ObserveRecommendation(o Observer, r *Recommendation) {
	top1, ok := 0.0, false
	if len(r.Items) > 0 {
		top1, ok = float64(r.Items[0].Score), true
	}
	ObserveStrategy(o, r.Strategy, top1, ok)
}

// ObserveStrategy is ObserveRecommendation for callers that hold the fields:
// the strategy always, the top-1 score when strategy is StrategyModel and
// hasItems.
func ObserveStrategy(o Observer, strategy string, top1 float64, hasItems bool) {
	o.ObserveCategorical(FeatureStrategyMix, strategy, 1)
	if strategy == StrategyModel && hasItems {
		o.ObserveNumeric(FeatureTop1Score, top1)
	}
}

// ReferenceSet holds the reference profiles of a model version, keyed by
// feature name. It is what the registry stores next to the model (as JSON).
type ReferenceSet map[string]*Reference

// Validate checks a reference set before anything counts against it: every
// profile is well formed (Reference.Validate: a known kind, sane bins, one
// count per bin), none is null, and every feature this code observes
// (StandardFeatures) has a profile of the kind the code counts it as — a
// numeric profile for a categorical feature would otherwise make the first
// observation into its live profile panic. A standard feature may be absent
// (it is then not watched); a feature this code does not know is checked
// for form only (nothing observes it, Compare still reports it). Every
// problem is reported, each naming its feature.
func (s ReferenceSet) Validate() error {
	kinds := StandardFeatures()
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(s)) {
		r := s[name]
		if r == nil {
			errs = append(errs, fmt.Errorf("drift: feature %s: no reference profile (null)", name))
			continue
		}
		if err := r.validate(); err != nil {
			errs = append(errs, fmt.Errorf("drift: feature %s: %w", name, err))
			continue
		}
		if want, known := kinds[name]; known && r.Kind != want {
			errs = append(errs, fmt.Errorf("drift: feature %s: the reference profile is %s, but this code counts %s as %s", name, r.Kind, name, want))
		}
	}
	return errors.Join(errs...)
}

// UnmarshalJSON decodes a reference set and validates it (Validate), so a
// set that decodes can be counted against without panicking. Errors name
// the feature.
func (s *ReferenceSet) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil // like any map: null leaves it as it is
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("drift: cannot decode reference profiles: %w", err)
	}
	set := make(ReferenceSet, len(raw))
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		var p *plainReference // null stays nil; Validate reports it
		if err := json.Unmarshal(raw[name], &p); err != nil {
			return fmt.Errorf("drift: feature %s: cannot decode its reference profile: %w", name, err)
		}
		set[name] = (*Reference)(p)
	}
	if err := set.Validate(); err != nil {
		return err
	}
	*s = set
	return nil
}

// NewLive returns an empty live set with one live profile per reference.
// The set must be valid (Validate; decoding checks it).
func (s ReferenceSet) NewLive() LiveSet {
	l := make(LiveSet, len(s))
	for name, r := range s {
		l[name] = r.NewLive()
	}
	return l
}

// LiveSet holds live profiles keyed by feature name. Make it with
// ReferenceSet.NewLive; observations of features it has no profile for are
// ignored, so a reference without, say, top-1 scores simply is not watched
// for them. Observing is allocation-free and not safe for concurrent use.
type LiveSet map[string]*Live

// ObserveNumeric counts one value of a numeric feature.
func (s LiveSet) ObserveNumeric(feature string, x float64) {
	if l := s[feature]; l != nil {
		l.Observe(x)
	}
}

// ObserveCategorical counts n occurrences of a category of a categorical feature.
func (s LiveSet) ObserveCategorical(feature, category string, n uint64) {
	if l := s[feature]; l != nil {
		l.ObserveCategory(category, n)
	}
}

// Merge adds every profile of other into s (features s lacks are copied,
// nil entries are skipped). If any feature's profiles are incompatible
// nothing is changed. s must not be nil.
func (s LiveSet) Merge(other LiveSet) error {
	for name, o := range other {
		if o == nil {
			continue
		}
		if l := s[name]; l != nil {
			if err := l.compatible(o); err != nil {
				return fmt.Errorf("feature %s: %w", name, err)
			}
		}
	}
	for name, o := range other {
		if o == nil {
			continue
		}
		if l := s[name]; l != nil {
			_ = l.Merge(o)
		} else {
			s[name] = o.Clone()
		}
	}
	return nil
}

// Clone returns a deep copy (profiles that could be observed into still can).
func (s LiveSet) Clone() LiveSet {
	c := make(LiveSet, len(s))
	for name, l := range s {
		if l != nil {
			c[name] = l.Clone()
		}
	}
	return c
}

// Reset zeroes every count, keeping the bins.
func (s LiveSet) Reset() {
	for _, l := range s {
		if l != nil {
			l.Reset()
		}
	}
}

// DefaultSampleLimit is how many values per numeric feature a Sample keeps
// (a uniform reservoir sample beyond that); 1<<20 float64s is 8 MiB.
const DefaultSampleLimit = 1 << 20

// Sample collects the observations a ReferenceSet is built from: every
// category count, and for numeric features the values themselves (up to
// Limit per feature, then a seeded reservoir sample, so building is
// deterministic for the same input order). It implements Observer.
type Sample struct {
	// Limit is the number of values kept per numeric feature; 0 means
	// DefaultSampleLimit. Set it before the first observation.
	Limit int

	numeric     map[string]*reservoir
	categorical map[string]map[string]uint64
}

type reservoir struct {
	values []float64
	seen   uint64
	rng    *rand.Rand
}

// NewSample returns an empty sample.
func NewSample() *Sample {
	return &Sample{numeric: map[string]*reservoir{}, categorical: map[string]map[string]uint64{}}
}

// ObserveNumeric records one value of a numeric feature; NaN and ±Inf are ignored.
func (s *Sample) ObserveNumeric(feature string, x float64) {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return
	}
	r := s.numeric[feature]
	if r == nil {
		r = &reservoir{rng: rand.New(rand.NewPCG(0x636c69636b726563, 0x6472696674))}
		s.numeric[feature] = r
	}
	limit := s.Limit
	if limit <= 0 {
		limit = DefaultSampleLimit
	}
	r.seen++
	if len(r.values) < limit {
		r.values = append(r.values, x)
		return
	}
	if j := r.rng.Uint64N(r.seen); j < uint64(len(r.values)) {
		r.values[j] = x
	}
}

// ObserveCategorical records n occurrences of a category.
func (s *Sample) ObserveCategorical(feature, category string, n uint64) {
	m := s.categorical[feature]
	if m == nil {
		m = map[string]uint64{}
		s.categorical[feature] = m
	}
	m[category] += n
}

// Build makes the reference profiles: quantile bins for numeric features,
// top categories + other for categorical ones. A feature name used both ways
// is an error.
func (s *Sample) Build(cfg Config) (ReferenceSet, error) {
	out := make(ReferenceSet, len(s.numeric)+len(s.categorical))
	for _, name := range slices.Sorted(maps.Keys(s.numeric)) {
		if _, dup := s.categorical[name]; dup {
			return nil, fmt.Errorf("drift: feature %s observed as numeric and categorical", name)
		}
		out[name] = NewNumericReference(s.numeric[name].values, cfg.bins())
	}
	for name, counts := range s.categorical {
		out[name] = NewCategoricalReference(counts, cfg.topCategories())
	}
	return out, nil
}
