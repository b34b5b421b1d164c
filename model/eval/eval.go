// Package eval measures next-item recommenders offline: it reads prefix→target
// test cases, asks every Recommender for its top 20 per prefix, and reports
// HR@10, HR@20, MRR@20 and NDCG@10. It also holds the reference baselines
// (POP, S-POP, item-kNN, V-SKNN) and the adapter that evaluates a trained
// model through any model.Scorer.
package eval

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/clickrec/clickrec/model"
)

// Case is one next-item test: the session so far (oldest first) and the item
// that came next.
type Case struct {
	Prefix []int64
	Target int64
}

// ReadCases reads test cases, one per line: the prefix as space-separated item
// ids, a tab, the target item id. Blank lines are skipped.
func ReadCases(r io.Reader) ([]Case, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<16), 1<<24)
	var out []Case
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		pre, tgt, ok := bytes.Cut(b, []byte{'\t'})
		if !ok {
			return nil, fmt.Errorf("line %d: want prefix<TAB>target", line)
		}
		var c Case
		var err error
		if c.Target, err = strconv.ParseInt(string(bytes.TrimSpace(tgt)), 10, 64); err != nil {
			return nil, fmt.Errorf("line %d: target: %w", line, err)
		}
		for _, tok := range bytes.Fields(pre) {
			v, err := strconv.ParseInt(string(tok), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: prefix item %q: %w", line, tok, err)
			}
			c.Prefix = append(c.Prefix, v)
		}
		if len(c.Prefix) == 0 {
			return nil, fmt.Errorf("line %d: empty prefix", line)
		}
		out = append(out, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", line+1, err)
	}
	return out, nil
}

// ReadCasesFile reads test cases from a gzip or plain file.
func ReadCasesFile(path string) ([]Case, error) {
	rc, err := model.OpenData(path)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	cs, err := ReadCases(rc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cs, nil
}

// CasesFromSessions turns sessions into the cases of every prefix: for a
// session a b c, (a → b) and (a b → c).
func CasesFromSessions(ss []model.Session) []Case {
	var out []Case
	for _, s := range ss {
		for t := 1; t < len(s.Items); t++ {
			out = append(out, Case{Prefix: s.Items[:t], Target: s.Items[t]})
		}
	}
	return out
}

// Recommender ranks items for session prefixes.
type Recommender interface {
	// Recommend appends to out[i][:0] the ids of the k items it would show
	// after prefixes[i], best first (fewer when it knows fewer items).
	// len(out) == len(prefixes).
	Recommend(prefixes [][]int64, k int, out [][]int64) error
}

// Forker is a Recommender that can make independent copies of itself, so Run
// can evaluate it on several goroutines. A fork that is an io.Closer is
// closed when Run is done with it.
type Forker interface {
	Fork() (Recommender, error)
}

// Metrics are the accuracy of one recommender over the cases.
type Metrics struct {
	HR10   float64 `json:"hr@10"`
	HR20   float64 `json:"hr@20"`
	MRR20  float64 `json:"mrr@20"`
	NDCG10 float64 `json:"ndcg@10"`
}

// Map returns the metrics by their names in the JSON report ("hr@10", …),
// the form a model's metadata keeps them in (model.Metadata.OfflineMetrics).
func (m Metrics) Map() map[string]float64 {
	return map[string]float64{"hr@10": m.HR10, "hr@20": m.HR20, "mrr@20": m.MRR20, "ndcg@10": m.NDCG10}
}

// Result is the evaluation report, written as JSON by clickrec eval.
type Result struct {
	Protocol string             `json:"protocol"`
	Cases    int                `json:"cases"`
	Models   map[string]Metrics `json:"models"`
}

// Options tune Run.
type Options struct {
	// Workers evaluates a Forker on this many goroutines (0: GOMAXPROCS).
	Workers int
	// BatchSize is the number of prefixes per Recommend call (0: 64).
	BatchSize int
	// Log receives progress; nil discards it.
	Log *slog.Logger
}

// Cutoff is the list length Run asks for: the largest k of the metrics.
const Cutoff = 20

// Rank returns the 1-based position of target in recs, or 0 if absent.
func Rank(recs []int64, target int64) int {
	for i, r := range recs {
		if r == target {
			return i + 1
		}
	}
	return 0
}

// Accumulator sums the metrics of ranked cases.
type Accumulator struct {
	n                         int
	hr10, hr20, mrr20, ndcg10 float64
}

// Add records one case whose target was at rank (1-based; 0 = not in the list).
func (a *Accumulator) Add(rank int) {
	a.n++
	if rank <= 0 {
		return
	}
	r := float64(rank)
	if rank <= 20 {
		a.hr20++
		a.mrr20 += 1 / r
	}
	if rank <= 10 {
		a.hr10++
		a.ndcg10 += 1 / math.Log2(r+1)
	}
}

// Metrics returns the means over the cases added.
func (a *Accumulator) Metrics() Metrics {
	if a.n == 0 {
		return Metrics{}
	}
	n := float64(a.n)
	return Metrics{HR10: a.hr10 / n, HR20: a.hr20 / n, MRR20: a.mrr20 / n, NDCG10: a.ndcg10 / n}
}

// Run evaluates every model on the cases and returns their metrics. Models run
// one after another in name order; a Forker is split over opts.Workers
// goroutines.
func Run(ctx context.Context, cases []Case, models map[string]Recommender, opts Options) (*Result, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	res := &Result{Cases: len(cases), Models: map[string]Metrics{}}
	names := make([]string, 0, len(models))
	for n := range models {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		t0 := time.Now()
		ranks, err := rankAll(ctx, cases, models[name], opts, log.With("model", name))
		if err != nil {
			return nil, fmt.Errorf("eval %s: %w", name, err)
		}
		var acc Accumulator
		for _, r := range ranks {
			acc.Add(int(r))
		}
		m := acc.Metrics()
		res.Models[name] = m
		log.Info("evaluated", "model", name, "hr@10", m.HR10, "hr@20", m.HR20, "mrr@20", m.MRR20, "ndcg@10", m.NDCG10,
			"took", time.Since(t0).Round(time.Millisecond))
	}
	return res, nil
}

// rankAll returns the target's rank in the top-Cutoff list of every case.
func rankAll(ctx context.Context, cases []Case, r Recommender, opts Options, log *slog.Logger) ([]int32, error) {
	bs := opts.BatchSize
	if bs <= 0 {
		bs = 64
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	recs := []Recommender{r}
	if f, ok := r.(Forker); ok && workers > 1 {
		for w := 1; w < workers; w++ {
			fr, err := f.Fork()
			if err != nil {
				closeAll(recs[1:])
				return nil, fmt.Errorf("fork: %w", err)
			}
			recs = append(recs, fr)
		}
		defer closeAll(recs[1:])
	}
	ranks := make([]int32, len(cases))
	nb := (len(cases) + bs - 1) / bs
	var (
		mu       sync.Mutex
		next     int
		firstErr error
		done     int
		lastLog  = time.Now()
		wg       sync.WaitGroup
	)
	for _, rec := range recs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prefixes := make([][]int64, bs)
			out := make([][]int64, bs)
			for {
				mu.Lock()
				b := next
				next++
				stop := firstErr != nil
				mu.Unlock()
				if b >= nb || stop {
					return
				}
				if err := ctx.Err(); err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
					return
				}
				lo, hi := b*bs, min((b+1)*bs, len(cases))
				n := hi - lo
				for i := 0; i < n; i++ {
					prefixes[i] = cases[lo+i].Prefix
				}
				if err := rec.Recommend(prefixes[:n], Cutoff, out[:n]); err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
					return
				}
				for i := 0; i < n; i++ {
					ranks[lo+i] = int32(Rank(out[i], cases[lo+i].Target))
				}
				mu.Lock()
				done += n
				if time.Since(lastLog) > 15*time.Second {
					lastLog = time.Now()
					log.Info("eval progress", "cases", done, "of", len(cases))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return ranks, nil
}

func cmpErr(old, err error) error {
	if old != nil {
		return old
	}
	return err
}

func closeAll(rs []Recommender) {
	for _, r := range rs {
		if c, ok := r.(io.Closer); ok {
			_ = c.Close()
		}
	}
}

// ErrNoModels is returned when nothing is selected for evaluation.
var ErrNoModels = errors.New("no models to evaluate")
