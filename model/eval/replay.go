package eval

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/clickrec/clickrec/itemknow"
	"github.com/clickrec/clickrec/model"
)

// Click is one timed click for the replay evaluation.
type Click struct {
	Session  string
	Item     int64
	Category int64 // 0 when the source has none
	TimeMs   int64
}

// Click data formats understood by ReadClicksFile.
const (
	FormatYooChoose = "yoochoose" // SessionId<TAB>ItemId<TAB>Time (unix seconds), with a header
	FormatTaobao    = "taobao"    // user_id,item_id,category_id,behavior,unix_ts; sessions = users
)

// ReadClicksFile reads timed clicks from a gzip or plain file.
func ReadClicksFile(path, format string) ([]Click, error) {
	rc, err := model.OpenData(path)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	sep := byte('\t')
	if format == FormatTaobao {
		sep = ','
	} else if format != FormatYooChoose {
		return nil, fmt.Errorf("unknown click format %q (want %s or %s)", format, FormatYooChoose, FormatTaobao)
	}
	sc := bufio.NewScanner(rc)
	var out []Click
	line := 0
	for sc.Scan() {
		line++
		f := bytes.Split(bytes.TrimSpace(sc.Bytes()), []byte{sep})
		if len(f) < 3 || line == 1 && format == FormatYooChoose {
			continue
		}
		c := Click{Session: string(f[0])}
		var ts float64
		var err error
		if c.Item, err = strconv.ParseInt(string(f[1]), 10, 64); err != nil {
			return nil, fmt.Errorf("%s:%d: item: %w", path, line, err)
		}
		switch format {
		case FormatYooChoose:
			ts, err = strconv.ParseFloat(string(f[2]), 64)
		case FormatTaobao:
			if len(f) < 5 {
				return nil, fmt.Errorf("%s:%d: want 5 fields", path, line)
			}
			if c.Category, err = strconv.ParseInt(string(f[2]), 10, 64); err == nil {
				ts, err = strconv.ParseFloat(string(f[4]), 64)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		c.TimeMs = int64(math.Round(ts * 1000))
		out = append(out, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// ReplayConfig sets up a replay evaluation.
type ReplayConfig struct {
	// TrainFraction of the time span trains the frozen model (and warms the
	// online table); the rest is replayed. ValidFraction of the replay's
	// time span (its start) tunes the blend weight; the metrics are of the
	// rest.
	TrainFraction, ValidFraction float64
	// Bucket is the width of the per-period figures.
	Bucket time.Duration
	// Model trains the frozen model; Online configures the table.
	Model  model.Config
	Online itemknow.Config
	// Lambdas is the grid of online weights the blend chooses from, Mus
	// the grid of weights of items unknown to the frozen model (linear).
	Lambdas, Mus []float64
	// Pool is how many candidates each side brings to the blend.
	Pool int
	// Served weighs the blend the hot path serves (itemknow.Blend over
	// each side's top 2·Cutoff, the session's newest item excluded), fixed
	// rather than tuned: the "served" figures.
	Served itemknow.Weights
	Log    *slog.Logger
}

// DefaultReplay is the replay set-up clickrec eval --replay starts from.
func DefaultReplay() ReplayConfig {
	return ReplayConfig{
		TrainFraction: 0.8, ValidFraction: 0.2, Bucket: time.Hour,
		Model: model.DefaultConfig(), Online: itemknow.DefaultConfig(),
		Lambdas: []float64{0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1, 2}, Mus: []float64{0.5, 1, 1.5, 2, 3}, Pool: 100,
		Served: itemknow.DefaultWeights(),
	}
}

// ReplayFigures are the metrics of the three recommenders on a set of cases.
type ReplayFigures struct {
	Cases  int     `json:"cases"`
	Frozen Metrics `json:"frozen"`
	Blend  Metrics `json:"blend"`
	Online Metrics `json:"online"`
	// Served is the hot path's own blend (ReplayConfig.Served), which never
	// recommends the clicked item; FrozenServed is the frozen model without
	// it too, the baseline to compare Served with.
	Served       Metrics `json:"served"`
	FrozenServed Metrics `json:"frozen_served"`
}

// ReplayBucket is one period of the replay.
type ReplayBucket struct {
	Start time.Time `json:"start"`
	ReplayFigures
}

// ReplayResult is the replay report.
type ReplayResult struct {
	Protocol     string             `json:"protocol"`
	TrainClicks  int                `json:"train_clicks"`
	ReplayClicks int                `json:"replay_clicks"`
	ModelItems   int                `json:"model_items"`
	Blend        string             `json:"blend"`
	Lambda       float64            `json:"lambda"`
	Mu           float64            `json:"mu"`
	ValidCases   int                `json:"valid_cases"`
	ValidMRR20   map[string]float64 `json:"valid_mrr@20_by_lambda"`
	Overall      ReplayFigures      `json:"overall"`
	Unseen       ReplayFigures      `json:"unseen_targets"`
	Seen         ReplayFigures      `json:"seen_targets"`
	Buckets      []ReplayBucket     `json:"buckets"`
	OnlineStats  itemknow.Stats     `json:"online_stats"`
}

// replayCase is what a case keeps for scoring: each side's list with
// normalised scores, so every λ can be ranked after the fact.
type replayCase struct {
	timeMs int64
	target int64
	last   int64 // the session's newest item
	unseen bool
	frozen []itemknow.Scored // best first, scores in [0,1]
	online []itemknow.Scored
	fresh  []bool // online[i] is unknown to the frozen model
	// lastFresh: the session's newest item is unknown to the frozen model.
	lastFresh bool
}

// Replay trains the frozen model on the first part of clicks (time-ordered),
// then replays the rest in time order: each click of a session after its
// first is predicted by the frozen model, by the online table and by their
// blend before the table learns it.
func Replay(ctx context.Context, clicks []Click, cfg ReplayConfig) (*ReplayResult, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(clicks) < 10 {
		return nil, fmt.Errorf("replay: %d clicks are too few", len(clicks))
	}
	slices.SortStableFunc(clicks, func(a, b Click) int { return cmp.Compare(a.TimeMs, b.TimeMs) })
	t0, t1 := clicks[0].TimeMs, clicks[len(clicks)-1].TimeMs
	cut := t0 + int64(float64(t1-t0)*cfg.TrainFraction)
	vcut := cut + int64(float64(t1-cut)*cfg.ValidFraction)
	nTrain, _ := slices.BinarySearchFunc(clicks, cut, func(c Click, t int64) int { return cmp.Compare(c.TimeMs, t) })

	// The frozen model: the training clicks as sessions.
	var sessions []model.Session
	bySess := map[string]int{}
	for _, c := range clicks[:nTrain] {
		i, ok := bySess[c.Session]
		if !ok {
			i = len(sessions)
			bySess[c.Session] = i
			sessions = append(sessions, model.Session{ID: c.Session, StartMs: c.TimeMs})
		}
		sessions[i].Items = append(sessions[i].Items, c.Item)
		sessions[i].EndMs = c.TimeMs
	}
	// Train keeps the last sessions for validation: order them by end.
	slices.SortStableFunc(sessions, func(a, b model.Session) int { return cmp.Compare(a.EndMs, b.EndMs) })
	tt := time.Now()
	m, _, err := model.Train(ctx, sessions, cfg.Model, log)
	if err != nil {
		return nil, fmt.Errorf("replay: train: %w", err)
	}
	m.Index(0)
	log.Info("replay: trained frozen model", "sessions", len(sessions), "items", m.NumItems(), "took", time.Since(tt).Round(time.Millisecond))
	sc, err := model.NewScorer(m)
	if err != nil {
		return nil, fmt.Errorf("replay: scorer: %w", err)
	}
	defer sc.Close()

	// The online table learns the training clicks too: in production it
	// has been running all along.
	tab := itemknow.New(cfg.Online)
	hist := map[string][]int64{}
	learn := func(c Click) {
		h := hist[c.Session]
		tab.Apply(itemknow.NewIncrement(c.TimeMs, c.Item, c.Category, itemknow.SessionHash(c.Session), h))
		hist[c.Session] = append(h, c.Item)
	}
	for _, c := range clicks[:nTrain] {
		learn(c)
	}

	in := []model.Input{{}}
	recs := [][]model.Rec{nil}
	var buf []itemknow.Scored
	var cases []replayCase
	for _, c := range clicks[nTrain:] {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		pre := hist[c.Session]
		if len(pre) > 0 {
			rc := replayCase{timeMs: c.TimeMs, target: c.Item, last: pre[len(pre)-1]}
			_, known := m.Index(c.Item)
			rc.unseen = !known
			_, known = m.Index(pre[len(pre)-1])
			rc.lastFresh = !known
			// Frozen: the model as served.
			x := &in[0]
			x.Items = x.Items[:0]
			for _, it := range pre {
				if j, ok := m.Index(it); ok {
					x.Items = append(x.Items, j)
				}
			}
			x.Weights = m.Weighting.ViewWeights(len(x.Items), x.Weights)
			if err := sc.Score(in, cfg.Pool, recs); err != nil {
				return nil, fmt.Errorf("replay: score: %w", err)
			}
			rc.frozen = make([]itemknow.Scored, len(recs[0]))
			for i, r := range recs[0] {
				rc.frozen[i] = itemknow.Scored{Item: m.ItemIDs[r.Index], Score: float64(r.Score)}
			}
			normalise(rc.frozen)
			buf = tab.Candidates(pre, cfg.Pool, buf)
			rc.online = slices.Clone(buf)
			normalise(rc.online)
			rc.fresh = make([]bool, len(rc.online))
			for i, o := range rc.online {
				_, ok := m.Index(o.Item)
				rc.fresh[i] = !ok
			}
			cases = append(cases, rc)
		}
		learn(c)
	}

	res := &ReplayResult{TrainClicks: nTrain, ReplayClicks: len(clicks) - nTrain, ModelItems: m.NumItems(),
		ValidMRR20: map[string]float64{}, OnlineStats: tab.Stats()}
	// Tune λ on the validation part.
	nValid, _ := slices.BinarySearchFunc(cases, vcut, func(c replayCase, t int64) int { return cmp.Compare(c.timeMs, t) })
	best := -1.0
	var scratch []itemknow.Scored
	for _, mode := range BlendModes {
		mus := []float64{1}
		if mode == BlendLinear || mode == BlendGate {
			mus = cfg.Mus
		}
		for _, mu := range mus {
			for _, l := range cfg.Lambdas {
				var acc Accumulator
				for i := range cases[:nValid] {
					var r int
					r, scratch = blendRank(&cases[i], mode, l, mu, scratch)
					acc.Add(r)
				}
				mrr := acc.Metrics().MRR20
				key := mode + " λ=" + strconv.FormatFloat(l, 'g', -1, 64)
				if mode == BlendLinear || mode == BlendGate {
					key += " μ=" + strconv.FormatFloat(mu, 'g', -1, 64)
				}
				res.ValidMRR20[key] = mrr
				if mrr > best {
					best, res.Blend, res.Lambda, res.Mu = mrr, mode, l, mu
				}
			}
		}
	}
	var facc Accumulator
	for i := range cases[:nValid] {
		facc.Add(rankOf(cases[i].frozen, cases[i].target))
	}
	res.ValidMRR20["frozen"] = facc.Metrics().MRR20
	res.ValidCases = nValid
	// Report on the rest.
	type accs struct {
		n              int
		f, b, o, s, fs Accumulator
	}
	known := func(id int64) bool { _, ok := m.Index(id); return ok }
	var ms, ol, served []itemknow.Scored
	var all, unseen, seen accs
	var buckets []accs
	var starts []int64
	bw := cfg.Bucket.Milliseconds()
	for i := range cases[nValid:] {
		c := &cases[nValid+i]
		var rb int
		rb, scratch = blendRank(c, res.Blend, res.Lambda, res.Mu, scratch)
		rf, ro := rankOf(c.frozen, c.target), rankOf(c.online, c.target)
		// As the hot path serves: each side's top 2·Cutoff without the
		// clicked item, blended (Blend normalises each list again).
		ms, ol = topWithout(c.frozen, c.last, 2*Cutoff, ms), topWithout(c.online, c.last, 2*Cutoff, ol)
		if len(ol) == 0 {
			served = append(served[:0], ms[:min(Cutoff, len(ms))]...)
		} else {
			served = itemknow.Blend(ms, ol, known, cfg.Served, Cutoff, served)
		}
		rs, rfs := rankOf(served, c.target), rankOf(ms, c.target)
		k := int((c.timeMs - vcut) / bw)
		for len(buckets) <= k {
			starts = append(starts, vcut+int64(len(buckets))*bw)
			buckets = append(buckets, accs{})
		}
		for _, a := range []*accs{&all, map[bool]*accs{true: &unseen, false: &seen}[c.unseen], &buckets[k]} {
			a.n++
			a.f.Add(rf)
			a.b.Add(rb)
			a.o.Add(ro)
			a.s.Add(rs)
			a.fs.Add(rfs)
		}
	}
	fig := func(a accs) ReplayFigures {
		return ReplayFigures{Cases: a.n, Frozen: a.f.Metrics(), Blend: a.b.Metrics(), Online: a.o.Metrics(), Served: a.s.Metrics(), FrozenServed: a.fs.Metrics()}
	}
	res.Overall, res.Unseen, res.Seen = fig(all), fig(unseen), fig(seen)
	for i, b := range buckets {
		res.Buckets = append(res.Buckets, ReplayBucket{Start: time.UnixMilli(starts[i]).UTC(), ReplayFigures: fig(b)})
	}
	res.Protocol = fmt.Sprintf("clicks in time order; the frozen model trained on the first %.0f%% of the time span (%d clicks, %d sessions), "+
		"the online table warmed with the same clicks; the rest replayed in time order, each click after a session's first predicted "+
		"before the table learns it (%d cases: the first %.0f%% of the replay's span, %d cases, tune the blend λ; figures on the other %d); "+
		"frozen: the model as served (Go scorer, retrieval), top %d; online: itemknow.Candidates; "+
		"blend: mode and λ chosen on the validation part by MRR@20 among linear (frozen score normalised to [0,1] over its top %d + λ·online score normalised to [0,1], "+
		"an item absent from a list scoring 0 there, an item unknown to the frozen model scoring μ·online, μ tuned too), linear-plain (the same without the unknown-item rule) "+
		"rrf (1/(61+rank) + λ/(61+online rank)) and gate (linear, but online + λ·frozen when the session's newest item is unknown to the frozen model); "+
		"session items not excluded; served: the hot path's blend (itemknow.Blend, known weight %g, new weight %g, over each side's top %d without the clicked item; frozen_served: the frozen model's top 20 without the clicked item, its baseline); "+
		"unseen targets: not in the frozen model's catalogue",
		cfg.TrainFraction*100, nTrain, len(sessions), len(cases), cfg.ValidFraction*100, nValid, len(cases)-nValid, cfg.Pool, cfg.Pool, cfg.Served.Known, cfg.Served.New, 2*Cutoff)
	return res, nil
}

// topWithout appends to out[:0] the first n of list without item.
func topWithout(list []itemknow.Scored, item int64, n int, out []itemknow.Scored) []itemknow.Scored {
	out = out[:0]
	for _, s := range list {
		if len(out) == n {
			break
		}
		if s.Item != item {
			out = append(out, s)
		}
	}
	return out
}

// normalise maps the scores of a best-first list to [0,1] (max → 1, min → 0;
// a single or flat list → 1).
func normalise(s []itemknow.Scored) {
	if len(s) == 0 {
		return
	}
	hi, lo := s[0].Score, s[len(s)-1].Score
	for i := range s {
		if hi > lo {
			s[i].Score = (s[i].Score - lo) / (hi - lo)
		} else {
			s[i].Score = 1
		}
	}
}

// rankOf is the 1-based rank of target in the first Cutoff of list, or 0.
func rankOf(list []itemknow.Scored, target int64) int {
	for i, s := range list[:min(Cutoff, len(list))] {
		if s.Item == target {
			return i + 1
		}
	}
	return 0
}

// Blend modes: how the frozen and online lists are combined.
const (
	// BlendLinear: frozen + λ·online (normalised scores); an item unknown
	// to the frozen model scores μ·online.
	BlendLinear = "linear"
	// BlendLinearPlain: frozen + λ·online for every item, unknown ones
	// included (they then score λ·online at most).
	BlendLinearPlain = "linear-plain"
	// BlendRRF: reciprocal rank fusion, 1/(60+rank) + λ/(60+rank online).
	BlendRRF = "rrf"
	// BlendGate: linear, except when the session's newest item is unknown
	// to the frozen model: then online + λ·frozen (the model knows nothing
	// of where the session is now).
	BlendGate = "gate"
)

// BlendModes are the modes Replay tunes over.
var BlendModes = []string{BlendLinear, BlendLinearPlain, BlendRRF, BlendGate}

// blendRank is the rank of the target in the blend with weight l.
func blendRank(c *replayCase, mode string, l, mu float64, scratch []itemknow.Scored) (int, []itemknow.Scored) {
	if mode == BlendGate {
		if !c.lastFresh {
			return blendRank(c, BlendLinear, l, mu, scratch)
		}
		s := append(scratch[:0], c.online...)
		for _, f := range c.frozen {
			j := slices.IndexFunc(s[:len(c.online)], func(x itemknow.Scored) bool { return x.Item == f.Item })
			if j >= 0 {
				s[j].Score += l * f.Score
			} else {
				s = append(s, itemknow.Scored{Item: f.Item, Score: l * f.Score})
			}
		}
		slices.SortStableFunc(s, func(a, b itemknow.Scored) int { return cmp.Compare(b.Score, a.Score) })
		return rankOf(s, c.target), s
	}
	s := append(scratch[:0], c.frozen...)
	if mode == BlendRRF {
		for i := range s {
			s[i].Score = 1 / float64(61+i)
		}
	}
	for i, o := range c.online {
		v := l * o.Score
		switch {
		case mode == BlendRRF:
			v = l / float64(61+i)
		case mode == BlendLinear && c.fresh[i]:
			v = mu * o.Score
		}
		j := slices.IndexFunc(s[:len(c.frozen)], func(x itemknow.Scored) bool { return x.Item == o.Item })
		if j >= 0 {
			s[j].Score += v
		} else {
			s = append(s, itemknow.Scored{Item: o.Item, Score: v})
		}
	}
	slices.SortStableFunc(s, func(a, b itemknow.Scored) int { return cmp.Compare(b.Score, a.Score) })
	return rankOf(s, c.target), s
}
