package onnx

import (
	"errors"
	"fmt"
	"math"
	"math/bits"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/clickrec/clickrec/model"
)

// ErrBadInput is returned (wrapped) by Score for a malformed session: an item
// or excluded index outside [0, N), or weights not matching items. ONNX Runtime
// would not reject such an index (a negative one is silently read as N−1), so
// the scorer checks before every call.
var ErrBadInput = errors.New("bad scorer input")

// ErrClosed is returned by Score after Close.
var ErrClosed = errors.New("onnx scorer is closed")

// ScorerOptions configure NewScorer.
type ScorerOptions struct {
	// LibraryPath is libonnxruntime.so.1; default: see LibraryPath.
	LibraryPath string
	// IntraOpThreads is ONNX Runtime's intra-op thread count. Default 1: the hot
	// path scales by partitions, not by threads inside one call.
	IntraOpThreads int
	// MaxBatch is the largest batch one Run scores; larger batches are split
	// into runs of MaxBatch. The cost per session is flat from 10 sessions a
	// run upwards, while ONNX Runtime's working memory grows with the batch
	// (two [MaxBatch, N] float32 score matrices), so the default is 64.
	MaxBatch int
	// Model is the model the graph was exported from. A candidate-ranking
	// graph (FormatRank) needs it: its retrieval tables build each session's
	// candidates. Its item table must match the graph's (checked).
	Model *model.Model
}

// Scorer scores sessions with ONNX Runtime, running a model written by Export.
// It implements model.Scorer and, like every model.Scorer, is not safe for
// concurrent use.
type Scorer struct {
	sess     *ort.DynamicAdvancedSession
	meta     Metadata
	n, l     int
	maxBatch int
	rank     bool              // FormatRank: candidates in, no exclusions
	cands    *model.Candidates // FormatRank
	cbufs    [][]int32         // FormatRank: each session's candidates
	bbufs    [][]float32       // FormatRank: and their neighbourhood scores

	// Backing buffers shared by all tensor views (one Run at a time).
	items   []int64   // maxBatch × L
	weights []float32 // maxBatch × L
	excl    []int64   // maxBatch × largest exclusion (FormatRank: candidate) bucket so far
	bias    []float32 // FormatRank: maxBatch × largest candidate bucket so far
	scores  []float32 // maxBatch × largest k so far
	top     []int64   // maxBatch × largest k so far
	k       *ort.Tensor[int64]

	// ORT tensors over the buffers, one set per (batch, exclusions, k) shape,
	// created on first use and reused: a call allocates no tensor.
	views map[viewKey]*view
}

type viewKey struct{ b, e, k int }

type view struct {
	items   *ort.Tensor[int64]
	weights *ort.Tensor[float32]
	excl    *ort.Tensor[int64]   // FormatRank: the candidates
	bias    *ort.Tensor[float32] // FormatRank only
	scores  *ort.Tensor[float32]
	top     *ort.Tensor[int64]
	bind    *ort.IoBinding // the tensors above (and k), bound once
}

// maxViews bounds the view cache; past it the cache is emptied and refilled.
const maxViews = 4096

var _ model.Scorer = (*Scorer)(nil)

// NewScorer loads a model written by Export into an ONNX Runtime session,
// initializing the process-wide ONNX Runtime environment on first use, and
// warms the session (the first Run of a session is several times slower than
// the next ones) with a MaxBatch batch and a single session before returning
// it.
func NewScorer(modelBytes []byte, opts ScorerOptions) (*Scorer, error) {
	meta, err := ReadMetadata(modelBytes)
	if err != nil {
		return nil, fmt.Errorf("onnx scorer: %w", err)
	}
	if opts.IntraOpThreads == 0 {
		opts.IntraOpThreads = 1
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 64
		if meta.Format == FormatRank {
			// The gathered candidate rows ([B, C, K] floats) should stay in
			// the cache: batches of 16 cost less per session than of 100.
			opts.MaxBatch = 16
		}
	}
	if opts.IntraOpThreads < 0 || opts.MaxBatch < 0 {
		return nil, fmt.Errorf("onnx scorer: IntraOpThreads = %d and MaxBatch = %d, want >= 0", opts.IntraOpThreads, opts.MaxBatch)
	}
	lib, err := LibraryPath(opts.LibraryPath)
	if err != nil {
		return nil, fmt.Errorf("onnx scorer: %w", err)
	}
	if err := initEnvironment(lib); err != nil {
		return nil, fmt.Errorf("onnx scorer: %w", err)
	}

	rank := meta.Format == FormatRank
	if rank {
		m := opts.Model
		switch {
		case m == nil:
			return nil, errors.New("onnx scorer: a candidate-ranking graph needs ScorerOptions.Model (its retrieval tables)")
		case !m.HasRetrieval():
			return nil, errors.New("onnx scorer: a candidate-ranking graph needs a model with retrieval tables")
		case m.MaxCandidates != meta.MaxCandidates:
			return nil, fmt.Errorf("onnx scorer: the graph was exported for %d candidates, the model ranks %d", meta.MaxCandidates, m.MaxCandidates)
		}
	}
	if m := opts.Model; m != nil {
		if got, want := meta.ItemIDsSHA256, ItemIDsHash(m.ItemIDs); got != want {
			return nil, fmt.Errorf("onnx scorer: the ONNX graph was exported for another item table (%s, model has %s)", got, want)
		}
	}
	inputs := []string{InputItems, InputWeights, InputExclude, InputK}
	if rank {
		inputs = []string{InputItems, InputWeights, InputCandidates, InputCandBias, InputK}
	}

	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("onnx scorer: session options: %w", err)
	}
	defer so.Destroy()
	for _, set := range []func() error{
		func() error { return so.SetIntraOpNumThreads(opts.IntraOpThreads) },
		func() error { return so.SetInterOpNumThreads(1) },
		// Idle intra-op threads must not spin on a machine shared with Kafka.
		func() error { return so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0") },
	} {
		if err := set(); err != nil {
			return nil, fmt.Errorf("onnx scorer: session options: %w", err)
		}
	}
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(modelBytes, inputs,
		[]string{OutputScores, OutputItems}, so)
	if err != nil {
		return nil, fmt.Errorf("onnx scorer: create session: %w", err)
	}
	s := &Scorer{
		sess:     sess,
		meta:     meta,
		n:        meta.NumItems,
		l:        meta.MaxSessionLen,
		maxBatch: opts.MaxBatch,
		items:    make([]int64, opts.MaxBatch*meta.MaxSessionLen),
		weights:  make([]float32, opts.MaxBatch*meta.MaxSessionLen),
		views:    map[viewKey]*view{},
		rank:     rank,
	}
	if rank {
		s.cands = model.NewCandidates(opts.Model)
		s.cbufs = make([][]int32, opts.MaxBatch)
		s.bbufs = make([][]float32, opts.MaxBatch)
	}
	if s.k, err = ort.NewTensor(ort.NewShape(1), []int64{0}); err != nil {
		s.Close()
		return nil, fmt.Errorf("onnx scorer: k tensor: %w", err)
	}
	// Warm-up: a full batch first, so ONNX Runtime's arena grows to its
	// working size now rather than on the hot path, then a single session.
	warm := make([]model.Input, s.maxBatch)
	if err := s.Score(warm, 10, make([][]model.Rec, len(warm))); err != nil {
		s.Close()
		return nil, fmt.Errorf("onnx scorer: warm-up run: %w", err)
	}
	if err := s.Score(warm[:1], 10, make([][]model.Rec, 1)); err != nil {
		s.Close()
		return nil, fmt.Errorf("onnx scorer: warm-up run: %w", err)
	}
	return s, nil
}

// Metadata returns the metadata of the scorer's model.
func (s *Scorer) Metadata() Metadata { return s.meta }

// Score fills out[i] with the top k items of batch[i], best first, never an
// excluded one (so fewer than k when fewer are left). A session longer than
// the model's MaxSessionLen contributes its last MaxSessionLen items (the
// most recent ones). An out-of-range index fails the whole call with
// ErrBadInput.
func (s *Scorer) Score(batch []model.Input, k int, out [][]model.Rec) error {
	if s.sess == nil {
		return ErrClosed
	}
	if len(out) != len(batch) {
		return fmt.Errorf("onnx scorer: %w: %d outputs for %d inputs", ErrBadInput, len(out), len(batch))
	}
	if k < 0 {
		return fmt.Errorf("onnx scorer: %w: k = %d", ErrBadInput, k)
	}
	if err := s.check(batch); err != nil {
		return err
	}
	k = min(k, s.n)
	if k <= 0 {
		for i := range out {
			out[i] = out[i][:0]
		}
		return nil
	}
	for start := 0; start < len(batch); start += s.maxBatch {
		end := min(start+s.maxBatch, len(batch))
		if err := s.run(batch[start:end], k, out[start:end]); err != nil {
			return err
		}
	}
	return nil
}

// check validates every index of the batch before anything runs.
func (s *Scorer) check(batch []model.Input) error {
	n := int32(s.n)
	for i := range batch {
		in := &batch[i]
		if len(in.Weights) != len(in.Items) {
			return fmt.Errorf("onnx scorer: %w: batch[%d] has %d items and %d weights", ErrBadInput, i, len(in.Items), len(in.Weights))
		}
		for _, it := range in.Items {
			if it < 0 || it >= n {
				return fmt.Errorf("onnx scorer: %w: batch[%d] item index %d outside [0, %d)", ErrBadInput, i, it, n)
			}
		}
		for _, it := range in.Exclude {
			if it < 0 || it >= n {
				return fmt.Errorf("onnx scorer: %w: batch[%d] excluded index %d outside [0, %d)", ErrBadInput, i, it, n)
			}
		}
	}
	return nil
}

// candBucket is the granularity of the candidate dimension C: a batch's C is
// its longest candidate list rounded up to it, so few shapes are ever bound.
const candBucket = 64

// run scores at most maxBatch sessions with one ONNX Runtime call.
func (s *Scorer) run(batch []model.Input, k int, out [][]model.Rec) error {
	b, l := len(batch), s.l
	e := 1
	if s.rank {
		c := k
		for i := range batch {
			s.cbufs[i], s.bbufs[i] = s.cands.Build(&batch[i], s.cbufs[i], s.bbufs[i])
			c = max(c, len(s.cbufs[i]))
		}
		e = (c + candBucket - 1) / candBucket * candBucket
	} else {
		for i := range batch {
			e = max(e, len(batch[i].Exclude))
		}
		e = 1 << bits.Len(uint(e-1)) // exclusion slots: next power of two
	}
	v, err := s.view(b, e, k)
	if err != nil {
		return err
	}
	items, weights, excl := v.items.GetData(), v.weights.GetData(), v.excl.GetData()
	var bias []float32
	if s.rank {
		bias = v.bias.GetData()
	}
	negInf := float32(math.Inf(-1))
	for i := range batch {
		in := &batch[i]
		its, ws := in.Items, in.Weights
		if len(its) > l { // keep the most recent l
			its, ws = its[len(its)-l:], ws[len(ws)-l:]
		}
		row, wrow := items[i*l:(i+1)*l], weights[i*l:(i+1)*l]
		for j, it := range its {
			row[j] = int64(it)
		}
		copy(wrow, ws)
		clear(row[len(its):]) // padding: item 0 with weight 0
		clear(wrow[len(its):])
		erow := excl[i*e : (i+1)*e]
		if s.rank {
			brow := bias[i*e : (i+1)*e]
			cs := s.cbufs[i]
			for j, it := range cs {
				erow[j] = int64(it)
			}
			copy(brow, s.bbufs[i])
			for j := len(cs); j < e; j++ {
				erow[j], brow[j] = 0, negInf
			}
			continue
		}
		for j, it := range in.Exclude {
			erow[j] = int64(it)
		}
		for j := len(in.Exclude); j < e; j++ {
			erow[j] = -1
		}
	}
	s.k.GetData()[0] = int64(k)
	if err := s.sess.RunWithBinding(v.bind); err != nil {
		return fmt.Errorf("onnx scorer: run: %w", err)
	}
	scores, top := v.scores.GetData(), v.top.GetData()
	for i := range batch {
		recs := out[i][:0]
		for j := i * k; j < (i+1)*k; j++ {
			if scores[j] == negInf { // excluded: only when fewer than k are left
				break
			}
			recs = append(recs, model.Rec{Index: int32(top[j]), Score: scores[j]})
		}
		out[i] = recs
	}
	return nil
}

// view returns the tensors for a (batch, exclusions, k) shape, creating them
// over the shared buffers on first use.
func (s *Scorer) view(b, e, k int) (*view, error) {
	key := viewKey{b, e, k}
	if v, ok := s.views[key]; ok {
		return v, nil
	}
	if len(s.views) >= maxViews {
		s.dropViews()
	}
	if need := s.maxBatch * e; len(s.excl) < need {
		s.excl = make([]int64, need) // views made earlier keep the old buffer
		if s.rank {
			s.bias = make([]float32, need)
		}
	}
	if need := s.maxBatch * k; len(s.scores) < need {
		s.scores = make([]float32, need)
		s.top = make([]int64, need)
	}
	v := &view{}
	var err error
	bl := ort.NewShape(int64(b), int64(s.l))
	bk := ort.NewShape(int64(b), int64(k))
	if v.items, err = ort.NewTensor(bl, s.items); err == nil {
		if v.weights, err = ort.NewTensor(bl, s.weights); err == nil {
			if v.excl, err = ort.NewTensor(ort.NewShape(int64(b), int64(e)), s.excl); err == nil && s.rank {
				v.bias, err = ort.NewTensor(ort.NewShape(int64(b), int64(e)), s.bias)
			}
			if err == nil {
				if v.scores, err = ort.NewTensor(bk, s.scores); err == nil {
					v.top, err = ort.NewTensor(bk, s.top)
				}
			}
		}
	}
	if err == nil {
		err = s.bind(v)
	}
	if err != nil {
		v.destroy()
		return nil, fmt.Errorf("onnx scorer: tensors for batch %d: %w", b, err)
	}
	s.views[key] = v
	return v, nil
}

// bind binds a view's tensors to the session's inputs and outputs, so that a
// Run passes nothing from Go (and allocates nothing).
func (s *Scorer) bind(v *view) error {
	var err error
	if v.bind, err = s.sess.CreateIoBinding(); err != nil {
		return err
	}
	for _, in := range []struct {
		name string
		t    ort.Value
	}{{InputItems, v.items}, {InputWeights, v.weights}, {InputExclude, v.excl}, {InputK, s.k}} {
		if s.rank && in.name == InputExclude {
			if err := v.bind.BindInput(InputCandidates, v.excl); err != nil {
				return fmt.Errorf("bind %s: %w", InputCandidates, err)
			}
			if err := v.bind.BindInput(InputCandBias, v.bias); err != nil {
				return fmt.Errorf("bind %s: %w", InputCandBias, err)
			}
			continue
		}
		if err := v.bind.BindInput(in.name, in.t); err != nil {
			return fmt.Errorf("bind %s: %w", in.name, err)
		}
	}
	if err := v.bind.BindOutput(OutputScores, v.scores); err != nil {
		return fmt.Errorf("bind %s: %w", OutputScores, err)
	}
	if err := v.bind.BindOutput(OutputItems, v.top); err != nil {
		return fmt.Errorf("bind %s: %w", OutputItems, err)
	}
	return nil
}

func (s *Scorer) dropViews() {
	for key, v := range s.views {
		v.destroy()
		delete(s.views, key)
	}
}

func (v *view) destroy() {
	if v.bind != nil {
		v.bind.Destroy()
	}
	if v.items != nil {
		v.items.Destroy()
	}
	if v.weights != nil {
		v.weights.Destroy()
	}
	if v.excl != nil {
		v.excl.Destroy()
	}
	if v.bias != nil {
		v.bias.Destroy()
	}
	if v.scores != nil {
		v.scores.Destroy()
	}
	if v.top != nil {
		v.top.Destroy()
	}
}

// Close releases the ONNX Runtime session and tensors, then returns freed C
// heap to the system (malloc_trim on glibc): without it, repeated model swaps
// grow the process's RSS. Close is idempotent.
func (s *Scorer) Close() error {
	if s.sess == nil {
		return nil
	}
	s.dropViews()
	if s.k != nil {
		s.k.Destroy()
		s.k = nil
	}
	err := s.sess.Destroy()
	s.sess = nil
	trimHeap()
	if err != nil {
		return fmt.Errorf("onnx scorer: close: %w", err)
	}
	return nil
}

// NewModelScorer exports m (Export with default options) and loads the graph
// with opts.Model = m: the scorer of a model without an exported graph at hand.
func NewModelScorer(m *model.Model, opts ScorerOptions) (*Scorer, error) {
	b, err := Export(m, ExportOptions{})
	if err != nil {
		return nil, err
	}
	opts.Model = m
	return NewScorer(b, opts)
}
