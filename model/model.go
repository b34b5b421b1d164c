// Package model is clickrec's recommender: item factors trained offline
// (implicit-feedback ALS), folded into a session vector online, and scored to a
// top-k. This file is the contract between the trainer, the scorers (pure Go and
// ONNX Runtime) and the hot path.
package model

// Model is a trained recommender. Item indexes (int32) are positions in ItemIDs;
// the hot path maps external item ids to indexes with Index and never passes an
// index outside [0, NumItems).
type Model struct {
	Version string  // registry version, e.g. "v20261129-0415"; set when registered
	K       int     // latent dimension
	ItemIDs []int64 // index → external item id

	// Factors holds the item factors Y, NumItems×K, row-major.
	Factors []float32
	// Projection holds the fold-in rows P, NumItems×K, row-major: a session's user
	// vector is u = Σ_j w_j · P[item_j], a precomputed form of the ALS user solve.
	Projection []float32
	// Prior is added to every item's score (log popularity, scaled), NumItems long.
	Prior []float32
	// Weighting is the event-type and recency weighting the model was trained
	// with; the hot path computes Input.Weights with m.Weighting.Weights.
	Weighting Weighting

	// Retrieval (see retrieval.go); all zero for a model that scores the
	// whole catalogue. Neighbors holds NumNeighbors entries per item, best
	// first, padded with -1; Popular the most popular item indexes, best
	// first; MaxCandidates bounds the candidates ranked per session.
	NumNeighbors  int
	Neighbors     []int32
	Popular       []int32
	MaxCandidates int
	// RetrievalItems is how many of a session's newest items retrieval
	// starts from (0: Weighting.MaxItems).
	RetrievalItems int
	// NeighborWeight weighs a candidate's neighbourhood score (see
	// Candidates.Build) in its ranking score; 0 ranks by the factors alone.
	NeighborWeight float32

	index map[int64]int32
}

// NumItems returns the catalogue size.
func (m *Model) NumItems() int { return len(m.ItemIDs) }

// Index maps an external item id to its index; ok is false for an unknown item.
// The first call builds the map (a loaded model has it already): make it
// before the model is shared between goroutines.
func (m *Model) Index(itemID int64) (idx int32, ok bool) {
	if m.index == nil {
		m.index = make(map[int64]int32, len(m.ItemIDs))
		for i, id := range m.ItemIDs {
			m.index[id] = int32(i)
		}
	}
	idx, ok = m.index[itemID]
	return idx, ok
}

// Input is one session to score: the items it touched, with weights from event
// type and recency, and the items that must not be recommended (e.g. purchased).
type Input struct {
	Items   []int32
	Weights []float32
	Exclude []int32
}

// Rec is one recommended item: its index and score.
type Rec struct {
	Index int32
	Score float32
}

// Scorer scores sessions in batches. Implementations reuse their buffers: Score
// appends to out[i][:0], and must not retain batch after returning. A Scorer is
// not safe for concurrent use.
type Scorer interface {
	// Score fills out[i] with the top k items of batch[i], best first.
	// len(out) must equal len(batch).
	Score(batch []Input, k int, out [][]Rec) error
	// Close releases the scorer's resources (ONNX Runtime sessions, tensors).
	Close() error
}
