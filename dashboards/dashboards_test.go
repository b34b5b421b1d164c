package dashboards

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// catalog scans the module's Go sources once per test.
func catalog(t *testing.T) *Catalog {
	t.Helper()
	root, err := ModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Scan(root)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// grafana is the part of a dashboard JSON the checks read.
type grafana struct {
	UID           string   `json:"uid"`
	Title         string   `json:"title"`
	SchemaVersion int      `json:"schemaVersion"`
	Panels        []*panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type variable struct {
	Name  string          `json:"name"`
	Type  string          `json:"type"`
	Query json.RawMessage `json:"query"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct{ H, W, X, Y int }
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	FieldConfig struct {
		Defaults struct {
			Unit       string `json:"unit"`
			Thresholds struct {
				Steps []struct {
					Value *float64 `json:"value"`
				} `json:"steps"`
			} `json:"thresholds"`
			Custom struct {
				ThresholdsStyle struct {
					Mode string `json:"mode"`
				} `json:"thresholdsStyle"`
			} `json:"custom"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Panels []*panel `json:"panels"` // a collapsed row's panels
}

// load decodes every dashboard in Files.
func load(t *testing.T) map[string]*grafana {
	t.Helper()
	names, err := fs.Glob(Files, "*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal("no dashboards (*.json) in dashboards/")
	}
	out := map[string]*grafana{}
	for _, n := range names {
		b, err := Files.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		g := new(grafana)
		if err := json.Unmarshal(b, g); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		out[n] = g
	}
	return out
}

func allPanels(ps []*panel) []*panel {
	var out []*panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

var labelValues = regexp.MustCompile(`^\s*label_values\(\s*(.+?)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$`)

// TestDashboardQueries parses every panel's PromQL and checks that each metric
// and label it uses is one the code exports.
func TestDashboardQueries(t *testing.T) {
	c := catalog(t)
	for file, g := range load(t) {
		t.Run(file, func(t *testing.T) {
			for _, p := range allPanels(g.Panels) {
				for _, tg := range p.Targets {
					where := fmt.Sprintf("panel %d %q target %s", p.ID, p.Title, tg.RefID)
					if strings.TrimSpace(tg.Expr) == "" {
						t.Errorf("%s: empty expr", where)
						continue
					}
					if err := c.Check(tg.Expr); err != nil {
						t.Errorf("%s: %s\n%v", where, tg.Expr, err)
					}
				}
			}
			for _, v := range g.Templating.List {
				if v.Type != "query" {
					continue
				}
				var q struct {
					Query string `json:"query"`
				}
				if err := json.Unmarshal(v.Query, &q); err != nil {
					if err := json.Unmarshal(v.Query, &q.Query); err != nil {
						t.Errorf("variable %s: query is neither a string nor an object: %v", v.Name, err)
						continue
					}
				}
				m := labelValues.FindStringSubmatch(q.Query)
				if m == nil {
					if err := c.Check(q.Query); err != nil {
						t.Errorf("variable %s: %s\n%v", v.Name, q.Query, err)
					}
					continue
				}
				if err := c.Check(m[1]); err != nil {
					t.Errorf("variable %s: %s\n%v", v.Name, q.Query, err)
				}
				if err := c.Check(fmt.Sprintf("count by (%s) (%s)", m[2], m[1])); err != nil {
					t.Errorf("variable %s: label %s: %v", v.Name, m[2], err)
				}
			}
		})
	}
}

// TestDashboardStructure checks what makes a dashboard importable and
// provisionable: a unique uid, a recent schema, the datasource variable on
// every panel and target, unique panel ids, and panels inside the 24-column
// grid without overlapping.
func TestDashboardStructure(t *testing.T) {
	uids := map[string]string{}
	for file, g := range load(t) {
		t.Run(file, func(t *testing.T) {
			if g.UID == "" || g.Title == "" {
				t.Errorf("uid %q, title %q: both are required", g.UID, g.Title)
			}
			if other, dup := uids[g.UID]; dup {
				t.Errorf("uid %q is also used by %s", g.UID, other)
			}
			uids[g.UID] = file
			if g.SchemaVersion < 36 || g.SchemaVersion > 41 {
				t.Errorf("schemaVersion %d, want 36-41 (Grafana 10/11)", g.SchemaVersion)
			}
			if !slices.ContainsFunc(g.Templating.List, func(v variable) bool {
				return v.Name == "DS_PROMETHEUS" && v.Type == "datasource" && string(v.Query) == `"prometheus"`
			}) {
				t.Error(`no datasource variable DS_PROMETHEUS of type "prometheus"`)
			}
			ids := map[int]bool{}
			top := g.Panels // the grid of an expanded dashboard
			for i, a := range top {
				for _, b := range top[i+1:] {
					ga, gb := a.GridPos, b.GridPos
					if ga.X < gb.X+gb.W && gb.X < ga.X+ga.W && ga.Y < gb.Y+gb.H && gb.Y < ga.Y+ga.H {
						t.Errorf("panels %d %q and %d %q overlap", a.ID, a.Title, b.ID, b.Title)
					}
				}
			}
			for _, p := range allPanels(g.Panels) {
				if ids[p.ID] {
					t.Errorf("panel id %d used twice", p.ID)
				}
				ids[p.ID] = true
				if p.Title == "" {
					t.Errorf("panel %d has no title", p.ID)
				}
				if p.GridPos.W < 1 || p.GridPos.H < 1 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
					t.Errorf("panel %d %q: gridPos %+v outside the 24-column grid", p.ID, p.Title, p.GridPos)
				}
				if p.Type == "row" {
					continue
				}
				if len(p.Targets) == 0 {
					t.Errorf("panel %d %q has no query", p.ID, p.Title)
				}
				if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" {
					t.Errorf("panel %d %q: datasource %+v, want uid ${DS_PROMETHEUS}", p.ID, p.Title, p.Datasource)
				}
				refs := map[string]bool{}
				for _, tg := range p.Targets {
					if refs[tg.RefID] || tg.RefID == "" {
						t.Errorf("panel %d %q: refId %q empty or repeated", p.ID, p.Title, tg.RefID)
					}
					refs[tg.RefID] = true
					if tg.Datasource != nil && tg.Datasource.UID != "${DS_PROMETHEUS}" {
						t.Errorf("panel %d %q target %s: datasource %+v, want uid ${DS_PROMETHEUS}", p.ID, p.Title, tg.RefID, tg.Datasource)
					}
				}
			}
		})
	}
}

// TestSLAPanel checks that the latency panel draws the 75 ms SLA (and the 70
// ms alert) as threshold lines.
func TestSLAPanel(t *testing.T) {
	found := false
	for _, g := range load(t) {
		for _, p := range allPanels(g.Panels) {
			if p.Type != "timeseries" || len(p.Targets) < 3 || !strings.Contains(p.Targets[0].Expr, "recsys_hotpath_e2e_latency_seconds_bucket") {
				continue
			}
			var quantiles []string
			for _, tg := range p.Targets {
				quantiles = append(quantiles, strings.SplitN(strings.TrimPrefix(tg.Expr, "histogram_quantile("), ",", 2)[0])
			}
			if !slices.Equal(quantiles, []string{"0.5", "0.95", "0.99"}) {
				continue
			}
			found = true
			var steps []float64
			for _, s := range p.FieldConfig.Defaults.Thresholds.Steps {
				if s.Value != nil {
					steps = append(steps, *s.Value)
				}
			}
			if !slices.Contains(steps, 0.075) || !slices.Contains(steps, 0.07) {
				t.Errorf("panel %q: thresholds %v, want 0.07 (alert) and 0.075 (SLA)", p.Title, steps)
			}
			if m := p.FieldConfig.Defaults.Custom.ThresholdsStyle.Mode; m == "" || m == "off" {
				t.Errorf("panel %q: thresholds are not drawn (thresholdsStyle.mode %q)", p.Title, m)
			}
			if p.FieldConfig.Defaults.Unit != "s" {
				t.Errorf("panel %q: unit %q, want s (the histogram is in seconds)", p.Title, p.FieldConfig.Defaults.Unit)
			}
		}
	}
	if !found {
		t.Fatal("no timeseries panel with p50, p95 and p99 of recsys_hotpath_e2e_latency_seconds")
	}
}

// TestMetricsOnDashboards checks the other direction: every recsys_* metric
// the code declares appears on some dashboard, so a new metric comes with a
// panel.
func TestMetricsOnDashboards(t *testing.T) {
	c := catalog(t)
	used := map[string]bool{}
	for _, g := range load(t) {
		for _, p := range allPanels(g.Panels) {
			for _, tg := range p.Targets {
				names, err := Referenced(tg.Expr)
				if err != nil {
					continue // reported by TestDashboardQueries
				}
				for _, n := range names {
					if m, _, ok := c.Family(n); ok {
						used[m.Name] = true
					}
				}
			}
		}
	}
	for _, m := range c.Metrics() {
		if !used[m.Name] {
			t.Errorf("%s (%s, %s) is on no dashboard: add a panel to dashboards/*.json", m.Name, m.Type, m.Source)
		}
	}
}

// TestCheck holds the checker to the mistakes it exists to catch.
func TestCheck(t *testing.T) {
	c := catalog(t)
	for _, tc := range []struct {
		expr    string
		wantErr string // "" = valid
	}{
		{`histogram_quantile(0.95, sum by (le) (rate(recsys_hotpath_e2e_latency_seconds_bucket{instance=~"$instance"}[$__rate_interval])))`, ""},
		{`sum by (outcome) (rate(recsys_hotpath_events_total[5m]))`, ""},
		{`up{job="clickrec-worker"} == 0`, ""},
		{`process_resident_memory_bytes{job="clickrec-hotpath"}`, ""},
		{`max by (feature) (recsys_drift_psi) > 0.15`, ""},
		{`sum by (strategy) (rate(recsys_recommendations_total[5m])) / ignoring (strategy) group_left () sum(rate(recsys_recommendations_total[5m]))`, ""},
		{`rate(recsys_hotpath_events_total[5m]`, "does not parse"},
		{`rate(recsys_hotpath_event_total[5m])`, "metric recsys_hotpath_event_total is not exported"},
		{`recsys_hotpath_state_users_bucket`, "not exported"},
		{`recsys_hotpath_events_total{outcomes="on_time"}`, `has no label "outcomes"`},
		{`sum by (partition) (recsys_hotpath_state_users)`, `label "partition" does not exist`},
		{`histogram_quantile(0.95, sum by (instance) (rate(recsys_hotpath_e2e_latency_seconds_bucket[5m])))`, "no le label"},
		{`{__name__=~"recsys_.*"}`, "has no metric name"},
		{`sum(rate(recsys_hotpath_dlq_total[5m])) / on (reason) sum(rate(recsys_hotpath_events_total[5m]))`, `label "reason" exists on neither side`},
		// Collector metrics (prometheus.NewDesc through a helper, hotpath/knowledge.go).
		{`sum by (kind) (rate(recsys_itemknow_evictions_total{kind="item"}[5m]))`, ""},
		{`time() - recsys_itemknow_newest_click_timestamp_seconds > 300`, ""},
		{`recsys_itemknow_items{kind="item"}`, `has no label "kind"`},
		{`max by (instance) (time() - recsys_itemknow_last_applied_timestamp_seconds)`, ""},
		{`max by (kind) (time() - recsys_itemknow_last_applied_timestamp_seconds)`, `label "kind" does not exist`},
		{`recsys_itemknow_item`, "not exported"},
	} {
		err := c.Check(tc.expr)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.expr, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: got %v, want an error containing %q", tc.expr, err, tc.wantErr)
		}
	}
}

// TestScanDescs holds the scanner to the ways a custom collector declares
// its metrics with prometheus.NewDesc.
func TestScanDescs(t *testing.T) {
	dir := t.TempDir()
	src := `package x

import "github.com/prometheus/client_golang/prometheus"

func descs() {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("recsys_a_"+name, help, labels, nil)
	}
	_ = d("plain", "…")
	_ = d("by_kind_total", "…", "kind")
	_ = d("two", "…", "x", "y")
	_ = prometheus.NewDesc("recsys_direct", "…", []string{"z"}, nil)
	_ = prometheus.NewDesc("recsys_direct_nil", "…", nil, nil)
	_ = prometheus.NewDesc("other_metric", "…", nil, nil)
	_ = named("list_total", []string{"w"})
}

func named(n string, ls []string) *prometheus.Desc {
	return prometheus.NewDesc("recsys_b_"+n, "…", ls, nil)
}
`
	if err := os.WriteFile(filepath.Join(dir, "x.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Scan(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, m := range c.Metrics() {
		got[m.Name] = m.Type + " " + strings.Join(m.Labels, ",")
	}
	want := map[string]string{
		"recsys_a_plain":         "gauge ",
		"recsys_a_by_kind_total": "counter kind",
		"recsys_a_two":           "gauge x,y",
		"recsys_direct":          "gauge z",
		"recsys_direct_nil":      "gauge ",
		"recsys_b_list_total":    "counter w",
	}
	if !maps.Equal(got, want) {
		t.Errorf("scanned %v\nwant    %v", got, want)
	}
}
