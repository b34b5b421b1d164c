package drift

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Kind says how a feature is binned.
type Kind string

const (
	// Numeric features are binned by the reference sample's quantiles.
	Numeric Kind = "numeric"
	// Categorical features are binned by the reference's top categories plus "other".
	Categorical Kind = "categorical"
)

// OtherLabel names the last bin of a categorical feature: every category that
// is not among the reference's top categories, including ones never seen.
const OtherLabel = "other"

// Reference is the reference profile of one feature: its bins and how many
// reference observations fell in each. It is built once (by NewNumericReference
// or NewCategoricalReference, usually through Sample.Build), stored as JSON
// next to the model it describes, and never changed afterwards.
//
// Numeric: Edges are strictly increasing cut points; bin i holds the values x
// with Edges[i-1] < x <= Edges[i] (bin 0 is everything <= Edges[0], the last
// bin everything > Edges[len-1]), so there are len(Edges)+1 bins.
//
// Categorical: bin i < len(Categories) is Categories[i]; the last bin is
// "other". There are len(Categories)+1 bins.
type Reference struct {
	Kind       Kind      `json:"kind"`
	Edges      []float64 `json:"edges,omitempty"`
	Categories []string  `json:"categories,omitempty"`
	Counts     []uint64  `json:"counts"`
}

// NewNumericReference bins a reference sample by its own quantiles: with
// bins = 10 the cut points are the sample's deciles. Ties collapse cut points,
// so a feature with few distinct values gets fewer bins; when the lowest bin
// would hold only the sample's minimum (a point mass there, such as the
// session length 0 of one-event sessions), a cut point just below the minimum
// is added so that live values below the reference's range get a bin of their
// own instead of hiding among the minimum. NaN and ±Inf are left out. bins <= 1
// means DefaultBins. The values slice is not modified.
func NewNumericReference(values []float64, bins int) *Reference {
	if bins <= 1 {
		bins = DefaultBins
	}
	v := make([]float64, 0, len(values))
	for _, x := range values {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			v = append(v, x)
		}
	}
	slices.Sort(v)
	return numericFromSorted(v, bins)
}

// numericFromSorted builds a numeric reference from finite, ascending values.
func numericFromSorted(v []float64, bins int) *Reference {
	r := &Reference{Kind: Numeric}
	n := len(v)
	if n > 0 {
		for k := 1; k < bins; k++ {
			// Lower nearest-rank quantile k/bins: the smallest value with at
			// least k/bins of the sample at or below it.
			e := v[(k*n+bins-1)/bins-1]
			if len(r.Edges) == 0 || e > r.Edges[len(r.Edges)-1] {
				r.Edges = append(r.Edges, e)
			}
		}
		if r.Edges[0] == v[0] && v[0] > -math.MaxFloat64 {
			r.Edges = slices.Insert(r.Edges, 0, math.Nextafter(v[0], math.Inf(-1)))
		}
	}
	r.Counts = make([]uint64, len(r.Edges)+1)
	for _, x := range v {
		r.Counts[numericBin(r.Edges, x)]++
	}
	return r
}

// NewCategoricalReference keeps the topN most frequent categories (ties broken
// by name, so the result is deterministic) and puts the rest in "other".
// Categories with a zero count are ignored. topN <= 0 means DefaultTopCategories.
func NewCategoricalReference(counts map[string]uint64, topN int) *Reference {
	if topN <= 0 {
		topN = DefaultTopCategories
	}
	type kv struct {
		cat string
		n   uint64
	}
	all := make([]kv, 0, len(counts))
	for c, n := range counts {
		if n > 0 {
			all = append(all, kv{c, n})
		}
	}
	slices.SortFunc(all, func(a, b kv) int {
		if a.n != b.n {
			if a.n > b.n {
				return -1
			}
			return 1
		}
		return strings.Compare(a.cat, b.cat)
	})
	r := &Reference{Kind: Categorical}
	var other uint64
	for i, e := range all {
		if i < topN {
			r.Categories = append(r.Categories, e.cat)
			r.Counts = append(r.Counts, e.n)
		} else {
			other += e.n
		}
	}
	r.Counts = append(r.Counts, other)
	return r
}

// Bins is the number of bins.
func (r *Reference) Bins() int { return len(r.Counts) }

// N is the number of reference observations.
func (r *Reference) N() uint64 { return sum(r.Counts) }

// BinLabel describes bin i: "(a, b]" for numeric bins, the category or
// "other" for categorical ones.
func (r *Reference) BinLabel(i int) string {
	if r.Kind == Categorical {
		if i < len(r.Categories) {
			return r.Categories[i]
		}
		return OtherLabel
	}
	lo, hi := "-inf", "+inf)"
	if i > 0 && i-1 < len(r.Edges) {
		lo = strconv.FormatFloat(r.Edges[i-1], 'g', -1, 64)
	}
	if i < len(r.Edges) {
		hi = strconv.FormatFloat(r.Edges[i], 'g', -1, 64) + "]"
	}
	return "(" + lo + ", " + hi
}

// Validate checks that the profile is well formed: a known kind, strictly
// increasing finite edges or distinct categories, and one count per bin.
// ReferenceSet.Validate also checks the kind against the feature's.
func (r *Reference) Validate() error {
	if err := r.validate(); err != nil {
		return fmt.Errorf("drift: %w", err)
	}
	return nil
}

// validate is Validate without the package prefix, for messages that name
// the feature first.
func (r *Reference) validate() error {
	switch r.Kind {
	case Numeric:
		if len(r.Categories) > 0 {
			return errors.New("numeric reference with categories")
		}
		for i, e := range r.Edges {
			if math.IsNaN(e) || math.IsInf(e, 0) {
				return fmt.Errorf("edge %d is %v", i, e)
			}
			if i > 0 && e <= r.Edges[i-1] {
				return fmt.Errorf("edges not strictly increasing at %d", i)
			}
		}
		if len(r.Counts) != len(r.Edges)+1 {
			return fmt.Errorf("%d counts for %d edges, want %d", len(r.Counts), len(r.Edges), len(r.Edges)+1)
		}
	case Categorical:
		if len(r.Edges) > 0 {
			return errors.New("categorical reference with edges")
		}
		seen := make(map[string]bool, len(r.Categories))
		for _, c := range r.Categories {
			if seen[c] {
				return fmt.Errorf("category %q listed twice", c)
			}
			seen[c] = true
		}
		if len(r.Counts) != len(r.Categories)+1 {
			return fmt.Errorf("%d counts for %d categories, want %d", len(r.Counts), len(r.Categories), len(r.Categories)+1)
		}
	default:
		return fmt.Errorf("unknown kind %q", r.Kind)
	}
	return nil
}

// UnmarshalJSON decodes and validates a reference profile.
func (r *Reference) UnmarshalJSON(b []byte) error {
	var p plainReference
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	ref := Reference(p)
	if err := ref.Validate(); err != nil {
		return err
	}
	*r = ref
	return nil
}

// plainReference is Reference without its UnmarshalJSON.
type plainReference Reference

// Fingerprint identifies the reference's bins (kind, edges, categories; not
// the counts). A live profile records the fingerprint of the bins it was
// counted in, so profiles counted against different references are never
// merged or compared.
func (r *Reference) Fingerprint() string {
	h := fnv.New64a()
	h.Write([]byte(r.Kind))
	var b [8]byte
	for _, e := range r.Edges {
		binary.LittleEndian.PutUint64(b[:], math.Float64bits(e))
		h.Write(b[:])
	}
	for _, c := range r.Categories {
		binary.LittleEndian.PutUint64(b[:], uint64(len(c)))
		h.Write(b[:])
		h.Write([]byte(c))
	}
	return strconv.FormatUint(h.Sum64(), 16)
}

// NewLive returns an empty live profile counted in this reference's bins. The
// reference must be valid (as the constructors build it and UnmarshalJSON
// checks) and must not change while the profile is in use.
func (r *Reference) NewLive() *Live {
	l := &Live{Kind: r.Kind, Ref: r.Fingerprint(), Counts: make([]uint64, r.Bins())}
	l.bind(r)
	return l
}

// Live is a live profile of one feature: counts per bin of a Reference. It is
// small (one counter per bin), serialises to JSON, and live profiles of the
// same reference from several workers add up with Merge.
//
// Observations go in through Observe (numeric) or ObserveCategory
// (categorical); neither allocates. A Live is not safe for concurrent use:
// give each goroutine its own and merge them. A Live decoded from JSON can be
// merged and compared but not observed into; merge it into one made by
// Reference.NewLive to keep counting.
type Live struct {
	Kind   Kind     `json:"kind"`
	Ref    string   `json:"ref"` // the reference's Fingerprint
	Counts []uint64 `json:"counts"`

	bound bool
	edges []float64      // numeric: the reference's edges
	index map[string]int // categorical: category → bin
}

func (l *Live) bind(r *Reference) {
	l.bound = true
	l.edges = r.Edges
	if r.Kind == Categorical {
		l.index = make(map[string]int, len(r.Categories))
		for i, c := range r.Categories {
			l.index[c] = i
		}
	}
}

// numericBin is the bin of x: the first edge at or above x (binary search).
func numericBin(edges []float64, x float64) int {
	i, _ := slices.BinarySearch(edges, x)
	return i
}

// Observe counts one value of a numeric feature. NaN is ignored. It panics if
// the profile is categorical or was not made by Reference.NewLive.
func (l *Live) Observe(x float64) {
	if !l.bound || l.Kind != Numeric {
		panic("drift: Observe on a categorical or unbound live profile")
	}
	if x != x { // NaN
		return
	}
	l.Counts[numericBin(l.edges, x)]++
}

// ObserveCategory counts n occurrences of a category; a category outside the
// reference's top categories counts as "other". It panics if the profile is
// numeric or was not made by Reference.NewLive.
func (l *Live) ObserveCategory(cat string, n uint64) {
	if !l.bound || l.Kind != Categorical {
		panic("drift: ObserveCategory on a numeric or unbound live profile")
	}
	i, ok := l.index[cat]
	if !ok {
		i = len(l.Counts) - 1
	}
	l.Counts[i] += n
}

// N is the number of live observations.
func (l *Live) N() uint64 { return sum(l.Counts) }

// Merge adds other's counts into l. Both must have been counted against the
// same reference (same fingerprint and number of bins); otherwise l is left
// unchanged and an error is returned.
func (l *Live) Merge(other *Live) error {
	if err := l.compatible(other); err != nil {
		return err
	}
	for i, c := range other.Counts {
		l.Counts[i] += c
	}
	return nil
}

func (l *Live) compatible(other *Live) error {
	if other.Ref != l.Ref || other.Kind != l.Kind || len(other.Counts) != len(l.Counts) {
		return fmt.Errorf("drift: cannot merge live profiles of different references (%s %q, %d bins vs %s %q, %d bins)",
			l.Kind, l.Ref, len(l.Counts), other.Kind, other.Ref, len(other.Counts))
	}
	return nil
}

// Clone returns an independent copy that can still be observed into if l could.
func (l *Live) Clone() *Live {
	c := *l
	c.Counts = slices.Clone(l.Counts)
	return &c
}

// Reset sets every count to zero, keeping the bins.
func (l *Live) Reset() { clear(l.Counts) }

func sum(c []uint64) uint64 {
	var s uint64
	for _, x := range c {
		s += x
	}
	return s
}
