package hotpath

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clickrec/clickrec/itemknow"
)

// knowledgeCollector exports the online item knowledge's size and progress
// at scrape time (DESIGN.md lists the series; dashboards/ and deploy/ use
// exactly these names).
type knowledgeCollector struct {
	g                                       *itemknow.Global
	items, established, pairs, categories   *prometheus.Desc
	evictions, rejected, capped, increments *prometheus.Desc
	records, bad, newest, age, appliedAt    *prometheus.Desc
}

func newKnowledgeCollector(g *itemknow.Global) *knowledgeCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("recsys_itemknow_"+name, help, labels, nil)
	}
	return &knowledgeCollector{g: g,
		items:       d("items", "Items the online item knowledge holds."),
		established: d("established_items", "Of them, items clicked in two sessions or more (only those are kept against newcomers)."),
		pairs:       d("pairs", "Item pairs (neighbour entries) held."),
		categories:  d("categories", "Categories with a recent-popularity list."),
		evictions:   d("evictions_total", "Entries evicted to make room, by kind: item or pair.", "kind"),
		rejected:    d("rejected_total", "Items or pairs not admitted: no room (a flood of new ids)."),
		capped:      d("capped_total", "Clicks not learned from: past the per-session limit (a bot)."),
		increments:  d("increments_total", "Clicks learned from (each worker learns every worker's)."),
		records:     d("records_total", "Item-knowledge topic records applied."),
		bad:         d("bad_records_total", "Item-knowledge records that did not decode (skipped from the bad increment on)."),
		newest:      d("newest_click_timestamp_seconds", "Event time of the newest click learned from."),
		age:         d("age_seconds", "Now minus the event time of the newest click learned from: how old the item knowledge is."),
		appliedAt:   d("last_applied_timestamp_seconds", "Wall clock of the last item-knowledge record applied."),
	}
}

func (c *knowledgeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.items, c.established, c.pairs, c.categories, c.evictions, c.rejected,
		c.capped, c.increments, c.records, c.bad, c.newest, c.age, c.appliedAt} {
		ch <- d
	}
}

func (c *knowledgeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.g.Lock().Stats()
	c.g.Unlock()
	pr := c.g.Progress()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	n := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	g(c.items, float64(st.Items))
	g(c.established, float64(st.Established))
	g(c.pairs, float64(st.Pairs))
	g(c.categories, float64(st.Categories))
	n(c.evictions, st.ItemEvictions, "item")
	n(c.evictions, st.PairEvictions, "pair")
	n(c.rejected, st.Rejected)
	n(c.capped, st.Capped)
	n(c.increments, st.Applied)
	n(c.records, pr.Records)
	n(c.bad, pr.Bad)
	if pr.NewestMs > 0 {
		g(c.newest, float64(pr.NewestMs)/1000)
		g(c.age, time.Since(time.UnixMilli(pr.NewestMs)).Seconds())
	}
	if !pr.AppliedAt.IsZero() {
		g(c.appliedAt, float64(pr.AppliedAt.UnixMilli())/1000)
	}
}
