package workflows

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.temporal.io/sdk/activity"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/featurestore"
)

// PopularityInput parameterises one popularity refresh.
type PopularityInput struct {
	Window   Window        `json:"window"`
	HalfLife time.Duration `json:"half_life"`
	TopK     int           `json:"top_k"`
	Version  string        `json:"version"`
}

// PopularityOutput summarises a refresh.
type PopularityOutput struct {
	Version    string  `json:"version"`
	Events     int     `json:"events"`
	Invalid    int     `json:"invalid,omitempty"`
	Categories int     `json:"categories"`
	Global     []int64 `json:"global"` // the global top item ids, best first
	// Stored is false when the window had no valid click: the table in
	// Redis is then left as it is rather than emptied.
	Stored     bool `json:"stored"`
	Incomplete int  `json:"incomplete,omitempty"`
}

// RefreshPopularityTable reads the window's clicks from user_events
// (read_committed, by timestamp offsets), counts them with exponential time
// decay — a click of age a (event time, against the window's end) counts
// 2^(−a/HalfLife) — and stores the top TopK items globally and per category
// with featurestore.StorePopularity, which tells the hot path workers to reload.
// The table is small and goes to Redis, not into the workflow's history. A
// retry recomputes the same table from the same window.
func (a *Activities) RefreshPopularityTable(ctx context.Context, in PopularityInput) (*PopularityOutput, error) {
	if in.Window.ToMs <= in.Window.FromMs || in.HalfLife <= 0 || in.TopK <= 0 {
		return nil, badInput("bad popularity parameters: window %v, half-life %v, top %d", in.Window, in.HalfLife, in.TopK)
	}
	if a.Redis == nil {
		return nil, badInput("the worker has no Redis client")
	}
	topic := string(a.topics().Events)
	adm, err := kgo.NewClient(a.Kafka.Opts("clickrec-workflows-admin")...)
	if err != nil {
		return nil, fmt.Errorf("cannot create the Kafka client: %w", err)
	}
	ranges, err := timeRanges(ctx, kadm.NewClient(adm), in.Window, a.slack(), topic)
	adm.Close()
	if err != nil {
		return nil, err
	}
	counter := newPopularityCounter(in.Window.ToMs, in.HalfLife)
	out := &PopularityOutput{Version: in.Version}
	var (
		c   event.Click
		lim = event.DefaultLimits
	)
	lim.MaxFutureSkew = 0
	last := time.Now()
	incomplete, err := readRanges(ctx, &a.Kafka, "clickrec-workflows-popularity", ranges, in.Window, a.readIdle(), func(r *kgo.Record) error {
		if event.DecodeInto(&c, r.Value, time.Time{}, lim) != nil || c.CheckKey(r.Key) != nil {
			out.Invalid++
			return nil
		}
		counter.add(&c)
		out.Events++
		return nil
	}, func(offsets[int64]) {
		if time.Since(last) >= heartbeatEvery {
			last = time.Now()
			activity.RecordHeartbeat(ctx, out.Events)
		}
	})
	if err != nil {
		return nil, err
	}
	out.Incomplete = incomplete
	if out.Events == 0 {
		return out, nil
	}
	p := counter.table(in.Version, in.TopK)
	out.Categories = len(p.ByCategory)
	for _, s := range p.Global {
		out.Global = append(out.Global, s.ItemID)
	}
	if err := featurestore.StorePopularity(ctx, a.Redis, p); err != nil {
		return nil, fmt.Errorf("cannot store the popularity table: %w", err)
	}
	out.Stored = true
	return out, nil
}

// popularityCounter sums time-decayed click counts per item, globally and
// per category.
type popularityCounter struct {
	endMs      int64
	lambda     float64 // ln 2 / half-life in ms
	global     map[int64]float64
	byCategory map[string]map[int64]float64
}

func newPopularityCounter(endMs int64, halfLife time.Duration) *popularityCounter {
	return &popularityCounter{
		endMs:      endMs,
		lambda:     math.Ln2 / float64(halfLife.Milliseconds()),
		global:     map[int64]float64{},
		byCategory: map[string]map[int64]float64{},
	}
}

func (p *popularityCounter) add(c *event.Click) {
	age := max(0, p.endMs-c.TimestampMs)
	w := math.Exp(-p.lambda * float64(age))
	p.global[c.ItemID] += w
	if c.Category == "" {
		return
	}
	m := p.byCategory[c.Category]
	if m == nil {
		m = map[int64]float64{}
		p.byCategory[c.Category] = m
	}
	m[c.ItemID] += w
}

// table returns the top k of every list; ties go to the lower item id.
func (p *popularityCounter) table(version string, k int) *featurestore.Popularity {
	t := &featurestore.Popularity{Version: version, Global: topItems(p.global, k), ByCategory: make(map[string][]featurestore.Scored, len(p.byCategory))}
	for cat, m := range p.byCategory {
		t.ByCategory[cat] = topItems(m, k)
	}
	return t
}

func topItems(m map[int64]float64, k int) []featurestore.Scored {
	type scored struct {
		id int64
		s  float64
	}
	all := make([]scored, 0, len(m))
	for id, s := range m {
		all = append(all, scored{id, s})
	}
	slices.SortFunc(all, func(a, b scored) int {
		if c := cmp.Compare(b.s, a.s); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
	out := make([]featurestore.Scored, min(k, len(all)))
	for i := range out {
		out[i] = featurestore.Scored{ItemID: all[i].id, Score: float32(all[i].s)}
	}
	return out
}
