package eval

import (
	"math"
	"slices"

	"github.com/clickrec/clickrec/model"
)

// Index is the training sessions in the form the baselines share: dense item
// indexes, each session's distinct items, each item's sessions (oldest first)
// and popularity. Session order is recency: later sessions are more recent.
type Index struct {
	ids       []int64 // dense index → item id
	idx       map[int64]int32
	sessItems [][]int32 // distinct items per session, ascending
	itemSess  [][]int32 // sessions per item, ascending (oldest first)
	clicks    []float64 // events per item
	pop       []int32   // items by clicks desc, then id asc
}

// NewIndex indexes the training sessions ss, given oldest first.
func NewIndex(ss []model.Session) *Index {
	x := &Index{idx: map[int64]int32{}}
	for _, s := range ss {
		for _, it := range s.Items {
			if _, ok := x.idx[it]; !ok {
				x.idx[it] = int32(len(x.ids))
				x.ids = append(x.ids, it)
			}
		}
	}
	// Renumber by ascending id so every tie-break below is by item id.
	slices.Sort(x.ids)
	for i, id := range x.ids {
		x.idx[id] = int32(i)
	}
	n := len(x.ids)
	x.clicks = make([]float64, n)
	x.itemSess = make([][]int32, n)
	for si, s := range ss {
		items := make([]int32, 0, len(s.Items))
		for _, it := range s.Items {
			i := x.idx[it]
			x.clicks[i]++
			items = append(items, i)
		}
		slices.Sort(items)
		items = slices.Compact(items)
		x.sessItems = append(x.sessItems, items)
		for _, i := range items {
			x.itemSess[i] = append(x.itemSess[i], int32(si))
		}
	}
	x.pop = make([]int32, n)
	for i := range x.pop {
		x.pop[i] = int32(i)
	}
	slices.SortStableFunc(x.pop, func(a, b int32) int {
		switch {
		case x.clicks[a] > x.clicks[b]:
			return -1
		case x.clicks[a] < x.clicks[b]:
			return 1
		}
		return int(a - b)
	})
	return x
}

// NumItems is the number of distinct training items.
func (x *Index) NumItems() int { return len(x.ids) }

// NumSessions is the number of training sessions.
func (x *Index) NumSessions() int { return len(x.sessItems) }

// fillPop appends the most popular items not yet in out (tracked by seen)
// until out has k items.
func (x *Index) fillPop(out []int64, k int, seen func(int32) bool) []int64 {
	for _, i := range x.pop {
		if len(out) >= k {
			break
		}
		if !seen(i) {
			out = append(out, x.ids[i])
		}
	}
	return out
}

// scored is an item with a score; lists of them sort by score desc, index asc.
type scored struct {
	item  int32
	score float64
}

func sortScored(s []scored) {
	slices.SortFunc(s, func(a, b scored) int {
		switch {
		case a.score > b.score:
			return -1
		case a.score < b.score:
			return 1
		}
		return int(a.item - b.item)
	})
}

// stampSet is a reusable set of item indexes, cleared in O(1).
type stampSet struct {
	stamp []uint32
	cur   uint32
}

func newStampSet(n int) *stampSet { return &stampSet{stamp: make([]uint32, n), cur: 1} }

func (s *stampSet) reset() {
	s.cur++
	if s.cur == 0 {
		clear(s.stamp)
		s.cur = 1
	}
}
func (s *stampSet) add(i int32)      { s.stamp[i] = s.cur }
func (s *stampSet) has(i int32) bool { return s.stamp[i] == s.cur }

// Pop recommends the globally most clicked items to everyone.
type Pop struct{ x *Index }

// NewPop returns the POP baseline.
func NewPop(x *Index) *Pop { return &Pop{x: x} }

// Recommend implements Recommender.
func (p *Pop) Recommend(prefixes [][]int64, k int, out [][]int64) error {
	for i := range prefixes {
		o := out[i][:0]
		for _, it := range p.x.pop[:min(k, len(p.x.pop))] {
			o = append(o, p.x.ids[it])
		}
		out[i] = o
	}
	return nil
}

// SPop recommends the session's own items by how often the session clicked
// them (ties: global popularity, then id), then fills with global popularity.
type SPop struct {
	x    *Index
	cnt  map[int32]int
	seen *stampSet
	buf  []scored
}

// NewSPop returns the S-POP baseline.
func NewSPop(x *Index) *SPop {
	return &SPop{x: x, cnt: map[int32]int{}, seen: newStampSet(x.NumItems())}
}

// Fork implements Forker.
func (p *SPop) Fork() (Recommender, error) { return NewSPop(p.x), nil }

// Recommend implements Recommender.
func (p *SPop) Recommend(prefixes [][]int64, k int, out [][]int64) error {
	x := p.x
	for i, pre := range prefixes {
		clear(p.cnt)
		for _, it := range pre {
			if j, ok := x.idx[it]; ok {
				p.cnt[j]++
			}
		}
		p.buf = p.buf[:0]
		for j, c := range p.cnt {
			// Session count dominates; global clicks break ties.
			p.buf = append(p.buf, scored{item: j, score: float64(c) + x.clicks[j]/(1+x.clicks[x.pop[0]])})
		}
		sortScored(p.buf)
		p.seen.reset()
		o := out[i][:0]
		for _, s := range p.buf {
			if len(o) >= k {
				break
			}
			o = append(o, x.ids[s.item])
			p.seen.add(s.item)
		}
		out[i] = x.fillPop(o, k, p.seen.has)
	}
	return nil
}

// ItemKNN recommends the neighbours of the session's last item by cosine
// similarity of session co-occurrence, sim(i, j) = co(i, j) / (√(n_i·n_j) + λ)
// where n counts the sessions containing an item and λ shrinks the similarity
// of rarely seen pairs (Hidasi et al. 2016 use λ = 20). Remaining slots are
// filled by popularity.
type ItemKNN struct {
	x      *Index
	lambda float64
	co     []float64
	seen   *stampSet
	touch  []int32
	buf    []scored
}

// NewItemKNN returns the item-kNN baseline with regularisation lambda.
func NewItemKNN(x *Index, lambda float64) *ItemKNN {
	return &ItemKNN{x: x, lambda: lambda, co: make([]float64, x.NumItems()), seen: newStampSet(x.NumItems())}
}

// Fork implements Forker.
func (p *ItemKNN) Fork() (Recommender, error) { return NewItemKNN(p.x, p.lambda), nil }

// Recommend implements Recommender.
func (p *ItemKNN) Recommend(prefixes [][]int64, k int, out [][]int64) error {
	x := p.x
	for i, pre := range prefixes {
		p.seen.reset()
		o := out[i][:0]
		last, ok := x.idx[pre[len(pre)-1]]
		if ok {
			p.touch = p.touch[:0]
			for _, s := range x.itemSess[last] {
				for _, j := range x.sessItems[s] {
					if j == last {
						continue
					}
					if p.co[j] == 0 {
						p.touch = append(p.touch, j)
					}
					p.co[j]++
				}
			}
			ni := float64(len(x.itemSess[last]))
			p.buf = p.buf[:0]
			for _, j := range p.touch {
				nj := float64(len(x.itemSess[j]))
				p.buf = append(p.buf, scored{item: j, score: p.co[j] / (math.Sqrt(ni*nj) + p.lambda)})
				p.co[j] = 0
			}
			sortScored(p.buf)
			for _, s := range p.buf {
				if len(o) >= k {
					break
				}
				o = append(o, x.ids[s.item])
				p.seen.add(s.item)
			}
		}
		out[i] = x.fillPop(o, k, p.seen.has)
	}
	return nil
}

// VSKNNConfig configures V-SKNN.
type VSKNNConfig struct {
	// K is the number of neighbour sessions; Sample the number of most recent
	// sessions (among those sharing an item with the prefix) searched.
	K, Sample int
	// IDFWeight λ scales each neighbour item's score by 1 + λ·idf(item),
	// idf = log(sessions / clicks(item)); 0 disables it.
	IDFWeight float64
}

// DefaultVSKNN is the configuration of Ludewig & Jannach (2018): k = 100
// neighbours from the 500 most recent candidate sessions, linear ("div")
// position weighting of the prefix, 1/step ("div") weighting of a neighbour by
// the recency of its match, and idf weighting.
var DefaultVSKNN = VSKNNConfig{K: 100, Sample: 500, IDFWeight: 10}

// VSKNN is vector multiplication session-kNN (Ludewig & Jannach 2018, the
// VMContextKNN of session-rec): a prefix of length L weighs its item at
// position p (1-based, the last occurrence counts) by p/L; a candidate session
// s has similarity Σ_{i ∈ prefix ∩ s} w_i / |distinct prefix items|; the K most
// similar of the Sample most recent sessions sharing an item with the prefix
// vote for their items with similarity · 1/step (step = how far back from the
// end of the prefix the newest shared item is) · (1 + λ·idf). Remaining slots
// are filled by popularity.
type VSKNN struct {
	x     *Index
	cfg   VSKNNConfig
	idf   []float64
	posW  []float64
	inPre *stampSet
	inNb  *stampSet
	heads []int
	lists [][]int32
	cands []int32
	nbrs  []nbr
	score []float64
	touch []int32
	buf   []scored
	seen  *stampSet
}

type nbr struct {
	sess int32
	sim  float64
}

// NewVSKNN returns the V-SKNN baseline.
func NewVSKNN(x *Index, cfg VSKNNConfig) *VSKNN {
	n := x.NumItems()
	v := &VSKNN{x: x, cfg: cfg, idf: make([]float64, n), posW: make([]float64, n), inPre: newStampSet(n), inNb: newStampSet(n),
		score: make([]float64, n), seen: newStampSet(n)}
	ns := float64(x.NumSessions())
	for i, c := range x.clicks {
		v.idf[i] = math.Log(ns / c)
	}
	return v
}

// Fork implements Forker.
func (v *VSKNN) Fork() (Recommender, error) {
	n := len(v.posW)
	return &VSKNN{x: v.x, cfg: v.cfg, idf: v.idf, posW: make([]float64, n), inPre: newStampSet(n), inNb: newStampSet(n),
		score: make([]float64, n), seen: newStampSet(n)}, nil
}

// Recommend implements Recommender.
func (v *VSKNN) Recommend(prefixes [][]int64, k int, out [][]int64) error {
	for i, pre := range prefixes {
		out[i] = v.recommend(pre, k, out[i][:0])
	}
	return nil
}

func (v *VSKNN) recommend(pre []int64, k int, o []int64) []int64 {
	x := v.x
	// The prefix, mapped to known items; position weights p/L.
	v.inPre.reset()
	v.cands = v.cands[:0]
	var items []int32
	for _, it := range pre {
		if j, ok := x.idx[it]; ok {
			items = append(items, j)
		}
	}
	v.seen.reset()
	if len(items) == 0 {
		return x.fillPop(o, k, v.seen.has)
	}
	L := float64(len(items))
	distinct := 0
	v.lists = v.lists[:0]
	for p, j := range items {
		if !v.inPre.has(j) {
			v.inPre.add(j)
			distinct++
			v.lists = append(v.lists, x.itemSess[j])
		}
		v.posW[j] = float64(p+1) / L
	}
	// The Sample most recent sessions containing any prefix item: merge the
	// items' session lists (ascending) from their ends.
	v.heads = v.heads[:0]
	for _, l := range v.lists {
		v.heads = append(v.heads, len(l)-1)
	}
	last := int32(-1)
	for len(v.cands) < v.cfg.Sample {
		best, bi := int32(-1), -1
		for li, h := range v.heads {
			if h >= 0 && v.lists[li][h] > best {
				best, bi = v.lists[li][h], li
			}
		}
		if bi < 0 {
			break
		}
		v.heads[bi]--
		if best != last {
			v.cands = append(v.cands, best)
			last = best
		}
	}
	// Similarities; keep the K best (ties: the more recent session).
	v.nbrs = v.nbrs[:0]
	for _, s := range v.cands {
		var sim float64
		for _, j := range x.sessItems[s] {
			if v.inPre.has(j) {
				sim += v.posW[j]
			}
		}
		if sim > 0 {
			v.nbrs = append(v.nbrs, nbr{sess: s, sim: sim / float64(distinct)})
		}
	}
	slices.SortFunc(v.nbrs, func(a, b nbr) int {
		switch {
		case a.sim > b.sim:
			return -1
		case a.sim < b.sim:
			return 1
		}
		return int(b.sess - a.sess)
	})
	if len(v.nbrs) > v.cfg.K {
		v.nbrs = v.nbrs[:v.cfg.K]
	}
	// Votes.
	v.touch = v.touch[:0]
	for _, nb := range v.nbrs {
		nItems := x.sessItems[nb.sess]
		v.inNb.reset()
		for _, j := range nItems {
			v.inNb.add(j)
		}
		decay := 0.0
		for step := 1; step <= len(items); step++ {
			if v.inNb.has(items[len(items)-step]) {
				decay = 1 / float64(step)
				break
			}
		}
		for _, j := range nItems {
			s := nb.sim * decay
			if v.cfg.IDFWeight > 0 {
				s += s * v.idf[j] * v.cfg.IDFWeight
			}
			if v.score[j] == 0 {
				v.touch = append(v.touch, j)
			}
			v.score[j] += s
		}
	}
	v.buf = v.buf[:0]
	for _, j := range v.touch {
		if v.score[j] > 0 {
			v.buf = append(v.buf, scored{item: j, score: v.score[j]})
		}
		v.score[j] = 0
	}
	sortScored(v.buf)
	for _, s := range v.buf {
		if len(o) >= k {
			break
		}
		o = append(o, x.ids[s.item])
		v.seen.add(s.item)
	}
	return x.fillPop(o, k, v.seen.has)
}
