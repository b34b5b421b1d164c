// Package dashboards holds clickrec's Grafana dashboards (the *.json files in
// this folder: importable in Grafana, provisioned by deploy/compose) and the
// check that keeps them, and the alert rules in deploy/prometheus, in step with
// the metrics the code exports.
//
// The check does not trust a list written by hand: Scan reads the Go sources
// and collects every metric declared with a prometheus.CounterOpts,
// GaugeOpts, HistogramOpts or SummaryOpts literal, with the label names of its
// *Vec constructor, and every metric a custom collector describes with
// prometheus.NewDesc (directly, or through a small helper that prefixes the
// name, see scanDescs). Catalog.Check then parses a PromQL expression with the
// Prometheus parser and reports every metric or label it uses that the code
// does not export.
//
// The package is a module of its own (dashboards/go.mod): the PromQL parser
// comes with the Prometheus server module, which the clickrec binary does
// not need. The deploy module's checks use it too.
package dashboards

import (
	"embed"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	promql "github.com/prometheus/prometheus/promql/parser"
)

// Files are the dashboards, one Grafana dashboard JSON per file.
//
//go:embed *.json
var Files embed.FS

// Metric is one exported metric family as declared in the code.
type Metric struct {
	Name   string
	Type   string   // counter, gauge, histogram or summary
	Labels []string // variable labels of a *Vec plus constant labels; nil for a plain metric
	Source string   // file:line of the declaration
}

// Catalog is the set of metrics clickrec exports.
type Catalog struct {
	metrics  map[string]*Metric // by family name
	prefixes []string           // families exported by a collector, e.g. "process_"
}

// Scan parses every non-test Go file of the module under root (the main
// module's root, see ModuleRoot; nested modules are skipped) and collects the
// recsys_* metrics it declares. It also notes the Go and process
// collectors of client_golang when some file registers them, so go_* and
// process_* series count as exported then.
func Scan(root string) (*Catalog, error) {
	c := &Catalog{metrics: map[string]*Metric{}}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor" || name == "node_modules") {
				return filepath.SkipDir
			}
			// A nested module (deploy, the browser test, …) is not part of
			// the binary: its metrics, if any, are not exported by clickrec.
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil && path != root {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return fmt.Errorf("cannot parse %s: %w", path, err)
		}
		rel, _ := filepath.Rel(root, path)
		c.scanFile(fset, rel, f)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(c.metrics) == 0 {
		return nil, fmt.Errorf("no recsys_* metric declared under %s: is it the module root?", root)
	}
	return c, nil
}

var optsTypes = map[string]string{"CounterOpts": "counter", "GaugeOpts": "gauge", "HistogramOpts": "histogram", "SummaryOpts": "summary"}

func (c *Catalog) scanFile(fset *token.FileSet, rel string, f *ast.File) {
	c.scanDescs(fset, rel, f)
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CompositeLit:
			if m := metricFromOpts(n); m != nil {
				m.Source = fmt.Sprintf("%s:%d", rel, fset.Position(n.Pos()).Line)
				if old, ok := c.metrics[m.Name]; ok {
					m.Labels = append(m.Labels, old.Labels...)
				}
				c.metrics[m.Name] = m
			}
		case *ast.CallExpr:
			sel, ok := n.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			switch sel.Sel.Name {
			case "NewGoCollector":
				c.prefixes = append(c.prefixes, "go_")
			case "NewProcessCollector":
				c.prefixes = append(c.prefixes, "process_")
			case "NewCounterVec", "NewGaugeVec", "NewHistogramVec", "NewSummaryVec":
				if len(n.Args) != 2 {
					return true
				}
				opts, ok := unparen(n.Args[0]).(*ast.CompositeLit)
				if !ok {
					return true
				}
				m := metricFromOpts(opts)
				if m == nil {
					return true
				}
				names, ok := stringList(n.Args[1])
				if !ok {
					return true
				}
				// The literal itself is visited too (and may be visited first).
				if old, ok := c.metrics[m.Name]; ok {
					old.Labels = append(old.Labels, names...)
				} else {
					m.Labels = append(m.Labels, names...)
					m.Source = fmt.Sprintf("%s:%d", rel, fset.Position(n.Pos()).Line)
					c.metrics[m.Name] = m
				}
			}
		}
		return true
	})
}

// descHelper is a function that returns prometheus.NewDesc(prefix+<param
// name>, help, <param labels>, …), e.g. the collector's
//
//	d := func(name, help string, labels ...string) *prometheus.Desc {
//		return prometheus.NewDesc("recsys_itemknow_"+name, help, labels, nil)
//	}
//
// so that every call d("items", "…") declares recsys_itemknow_items.
type descHelper struct {
	prefix    string
	nameArg   int      // index of the parameter that completes the name
	labelsArg int      // index of the labels parameter; -1 if the labels are fixed
	variadic  bool     // the labels parameter is ...string
	labels    []string // the fixed labels when labelsArg is -1
}

// scanDescs collects the recsys_* metrics a file describes with
// prometheus.NewDesc: calls with a literal name and label list, and calls of a
// helper (a function literal bound to a name, or a function declaration)
// that passes its own parameters on as the name's suffix and the labels. A
// Desc carries no type, so the type follows the naming convention: counter
// for a name ending in _total, gauge otherwise.
func (c *Catalog) scanDescs(fset *token.FileSet, rel string, f *ast.File) {
	add := func(name string, labels []string, pos token.Pos) {
		if !strings.HasPrefix(name, "recsys_") {
			return
		}
		typ := "gauge"
		if strings.HasSuffix(name, "_total") {
			typ = "counter"
		}
		m := &Metric{Name: name, Type: typ, Labels: labels, Source: fmt.Sprintf("%s:%d", rel, fset.Position(pos).Line)}
		if old, ok := c.metrics[name]; ok {
			m.Labels = append(m.Labels, old.Labels...)
		}
		c.metrics[name] = m
	}
	helpers := map[string]*descHelper{}
	ast.Inspect(f, func(n ast.Node) bool {
		var name string
		var typ *ast.FuncType
		var body *ast.BlockStmt
		switch n := n.(type) {
		case *ast.FuncDecl:
			if n.Recv == nil {
				name, typ, body = n.Name.Name, n.Type, n.Body
			}
		case *ast.AssignStmt:
			if len(n.Lhs) == 1 && len(n.Rhs) == 1 {
				if id, ok := n.Lhs[0].(*ast.Ident); ok {
					if fl, ok := n.Rhs[0].(*ast.FuncLit); ok {
						name, typ, body = id.Name, fl.Type, fl.Body
					}
				}
			}
		}
		if body == nil {
			return true
		}
		params := map[string]int{}
		var variadic string
		i := 0
		for _, field := range typ.Params.List {
			for _, id := range field.Names {
				params[id.Name] = i
				if _, ok := field.Type.(*ast.Ellipsis); ok {
					variadic = id.Name
				}
				i++
			}
			if len(field.Names) == 0 {
				i++
			}
		}
		ast.Inspect(body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || !isNewDesc(call) || len(call.Args) < 3 {
				return true
			}
			h := &descHelper{labelsArg: -1}
			switch e := call.Args[0].(type) {
			case *ast.BinaryExpr: // "prefix" + name
				id, ok := e.Y.(*ast.Ident)
				prefix, lit := stringLit(e.X)
				if e.Op != token.ADD || !ok || !lit {
					return true
				}
				if h.nameArg, ok = params[id.Name]; !ok {
					return true
				}
				h.prefix = prefix
			case *ast.Ident: // name
				var ok bool
				if h.nameArg, ok = params[e.Name]; !ok {
					return true
				}
			default:
				return true
			}
			switch l := call.Args[2].(type) {
			case *ast.Ident:
				if l.Name == "nil" {
					break
				}
				idx, ok := params[l.Name]
				if !ok {
					return true
				}
				h.labelsArg, h.variadic = idx, l.Name == variadic
			default:
				labels, ok := stringList(l)
				if !ok {
					return true
				}
				h.labels = labels
			}
			helpers[name] = h
			return false
		})
		return true
	})
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		if isNewDesc(call) && len(call.Args) >= 3 {
			name, ok := stringLit(call.Args[0])
			if !ok {
				return true // built by a helper: found at the helper's calls
			}
			var labels []string
			if id, isIdent := call.Args[2].(*ast.Ident); !isIdent || id.Name != "nil" {
				if labels, ok = stringList(call.Args[2]); !ok {
					return true
				}
			}
			add(name, labels, call.Pos())
			return true
		}
		id, ok := call.Fun.(*ast.Ident)
		if !ok {
			return true
		}
		h, ok := helpers[id.Name]
		if !ok || h.nameArg >= len(call.Args) {
			return true
		}
		suffix, ok := stringLit(call.Args[h.nameArg])
		if !ok {
			return true
		}
		labels := h.labels
		switch {
		case h.labelsArg < 0:
		case h.variadic:
			for _, a := range call.Args[min(h.labelsArg, len(call.Args)):] {
				s, ok := stringLit(a)
				if !ok {
					return true
				}
				labels = append(labels, s)
			}
		case h.labelsArg < len(call.Args):
			if l, isIdent := call.Args[h.labelsArg].(*ast.Ident); !isIdent || l.Name != "nil" {
				if labels, ok = stringList(call.Args[h.labelsArg]); !ok {
					return true
				}
			}
		}
		add(h.prefix+suffix, labels, call.Pos())
		return true
	})
}

func isNewDesc(call *ast.CallExpr) bool {
	sel, ok := call.Fun.(*ast.SelectorExpr)
	return ok && sel.Sel.Name == "NewDesc"
}

func unparen(e ast.Expr) ast.Expr {
	if u, ok := e.(*ast.UnaryExpr); ok && u.Op == token.AND {
		return u.X
	}
	return e
}

// metricFromOpts reads a prometheus.XxxOpts{Name: "recsys_…", …} literal; nil
// if n is something else or names no recsys_* metric.
func metricFromOpts(n *ast.CompositeLit) *Metric {
	sel, ok := n.Type.(*ast.SelectorExpr)
	if !ok {
		return nil
	}
	typ, ok := optsTypes[sel.Sel.Name]
	if !ok {
		return nil
	}
	var ns, sub, name string
	var constLabels []string
	for _, e := range n.Elts {
		kv, ok := e.(*ast.KeyValueExpr)
		if !ok {
			continue
		}
		key, ok := kv.Key.(*ast.Ident)
		if !ok {
			continue
		}
		switch key.Name {
		case "Namespace", "Subsystem", "Name":
			s, ok := stringLit(kv.Value)
			if !ok {
				return nil // computed names cannot be checked
			}
			switch key.Name {
			case "Namespace":
				ns = s
			case "Subsystem":
				sub = s
			default:
				name = s
			}
		case "ConstLabels":
			if cl, ok := kv.Value.(*ast.CompositeLit); ok {
				for _, e := range cl.Elts {
					if kv, ok := e.(*ast.KeyValueExpr); ok {
						if s, ok := stringLit(kv.Key); ok {
							constLabels = append(constLabels, s)
						}
					}
				}
			}
		}
	}
	full := name
	if sub != "" {
		full = sub + "_" + full
	}
	if ns != "" {
		full = ns + "_" + full
	}
	if !strings.HasPrefix(full, "recsys_") {
		return nil
	}
	return &Metric{Name: full, Type: typ, Labels: constLabels}
}

func stringLit(e ast.Expr) (string, bool) {
	bl, ok := e.(*ast.BasicLit)
	if !ok || bl.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(bl.Value)
	return s, err == nil
}

func stringList(e ast.Expr) ([]string, bool) {
	cl, ok := e.(*ast.CompositeLit)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(cl.Elts))
	for _, e := range cl.Elts {
		s, ok := stringLit(e)
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// Metrics returns the declared metric families, sorted by name.
func (c *Catalog) Metrics() []*Metric {
	out := slices.Collect(maps.Values(c.metrics))
	slices.SortFunc(out, func(a, b *Metric) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Family returns the metric family a series name belongs to ("x_bucket" →
// the histogram "x") and the labels a series of it may carry, besides job and
// instance. ok is false for a name the code does not export; labels is nil for
// collector metrics whose labels are not checked.
func (c *Catalog) Family(series string) (m *Metric, labelNames []string, ok bool) {
	if series == "up" {
		return &Metric{Name: "up", Type: "gauge", Source: "Prometheus"}, []string{}, true
	}
	if m, ok := c.metrics[series]; ok {
		extra := []string(nil)
		if m.Type == "summary" {
			extra = []string{"quantile"}
		}
		return m, append(append([]string{}, m.Labels...), extra...), true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		base, found := strings.CutSuffix(series, suf)
		if !found {
			continue
		}
		if m, ok := c.metrics[base]; ok && (m.Type == "histogram" || m.Type == "summary") {
			ls := append([]string{}, m.Labels...)
			if suf == "_bucket" {
				if m.Type != "histogram" {
					return nil, nil, false
				}
				ls = append(ls, "le")
			}
			return m, ls, true
		}
	}
	for _, p := range c.prefixes {
		if strings.HasPrefix(series, p) {
			return &Metric{Name: series, Source: "client_golang collector"}, nil, true
		}
	}
	return nil, nil, false
}

// grafanaVar matches Grafana template variables: $name, ${name}, ${name:fmt}, [[name]].
var grafanaVar = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)\]\]`)

// SubstituteGrafanaVars replaces Grafana's template variables so the result is
// plain PromQL: interval variables become 5m, any other variable (used inside
// label matcher strings) becomes "VAR".
func SubstituteGrafanaVars(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		name := strings.Trim(v, "${}[]")
		name, _, _ = strings.Cut(name, ":")
		switch name {
		case "__rate_interval", "__interval", "__range", "__range_s", "__interval_ms":
			return "5m"
		}
		return "VAR"
	})
}

// Referenced returns the series names an expression selects (after Grafana
// variables are substituted), in order of appearance.
func Referenced(expr string) ([]string, error) {
	e, err := promql.ParseExpr(SubstituteGrafanaVars(expr))
	if err != nil {
		return nil, err
	}
	var names []string
	promql.Inspect(e, func(n promql.Node, _ []promql.Node) error {
		if vs, ok := n.(*promql.VectorSelector); ok {
			names = append(names, selectorName(vs))
		}
		return nil
	})
	return names, nil
}

func selectorName(vs *promql.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

// targetLabels are attached to every scraped series by Prometheus (and by the
// Prometheus Operator's ServiceMonitor in Kubernetes).
var targetLabels = []string{"job", "instance", "namespace", "pod", "service", "container", "endpoint"}

// Check parses expr (Grafana variables allowed) with the Prometheus parser and
// returns one joined error listing every problem: a syntax error, a metric the
// code does not export, a selector without a metric name, a label a metric
// does not have, a grouping or matching label the expression cannot carry,
// and histogram_quantile over series without the le label.
func (c *Catalog) Check(expr string) error {
	e, err := promql.ParseExpr(SubstituteGrafanaVars(expr))
	if err != nil {
		return fmt.Errorf("PromQL does not parse: %w", err)
	}
	var errs []error
	promql.Inspect(e, func(n promql.Node, _ []promql.Node) error {
		switch n := n.(type) {
		case *promql.VectorSelector:
			name := selectorName(n)
			if name == "" {
				errs = append(errs, fmt.Errorf("selector %s has no metric name, so it cannot be checked against the code", n))
				return nil
			}
			_, allowed, ok := c.Family(name)
			if !ok {
				errs = append(errs, fmt.Errorf("metric %s is not exported by the code (no prometheus.*Opts{Name: %q} in a non-test Go file)", name, strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")))
				return nil
			}
			if allowed == nil {
				return nil
			}
			for _, m := range n.LabelMatchers {
				if m.Name != labels.MetricName && !slices.Contains(allowed, m.Name) && !slices.Contains(targetLabels, m.Name) {
					errs = append(errs, fmt.Errorf("%s has no label %q (it has %v)", name, m.Name, allowed))
				}
			}
		case *promql.AggregateExpr:
			if n.Without {
				return nil
			}
			if have, known := c.outLabels(n.Expr); known {
				for _, g := range n.Grouping {
					if !have[g] {
						errs = append(errs, fmt.Errorf("%s by (%s): label %q does not exist on %s", n.Op, strings.Join(n.Grouping, ", "), g, n.Expr))
					}
				}
			}
		case *promql.BinaryExpr:
			if n.VectorMatching == nil || len(n.VectorMatching.MatchingLabels) == 0 {
				return nil
			}
			lhs, lk := c.outLabels(n.LHS)
			rhs, rk := c.outLabels(n.RHS)
			if !lk || !rk {
				return nil
			}
			for _, l := range n.VectorMatching.MatchingLabels {
				if !lhs[l] && !rhs[l] {
					errs = append(errs, fmt.Errorf("on/ignoring (%s): label %q exists on neither side of %s", strings.Join(n.VectorMatching.MatchingLabels, ", "), l, n))
				}
			}
		case *promql.Call:
			if n.Func.Name == "histogram_quantile" && len(n.Args) == 2 {
				if have, known := c.outLabels(n.Args[1]); known && !have["le"] {
					errs = append(errs, fmt.Errorf("histogram_quantile over %s: the series have no le label (aggregate by (le, …))", n.Args[1]))
				}
			}
		}
		return nil
	})
	return errors.Join(errs...)
}

// outLabels returns the label names the result of e can carry; known is
// false where that cannot be told (collector metrics, unusual functions).
func (c *Catalog) outLabels(e promql.Expr) (set map[string]bool, known bool) {
	switch e := e.(type) {
	case *promql.ParenExpr:
		return c.outLabels(e.Expr)
	case *promql.StepInvariantExpr:
		return c.outLabels(e.Expr)
	case *promql.NumberLiteral, *promql.StringLiteral:
		return map[string]bool{}, true
	case *promql.MatrixSelector:
		return c.outLabels(e.VectorSelector)
	case *promql.SubqueryExpr:
		return c.outLabels(e.Expr)
	case *promql.UnaryExpr:
		return c.outLabels(e.Expr)
	case *promql.VectorSelector:
		_, allowed, ok := c.Family(selectorName(e))
		if !ok || allowed == nil {
			return nil, false
		}
		set := map[string]bool{}
		for _, l := range append(allowed, targetLabels...) {
			set[l] = true
		}
		return set, true
	case *promql.AggregateExpr:
		if e.Without {
			in, ok := c.outLabels(e.Expr)
			if !ok {
				return nil, false
			}
			for _, g := range e.Grouping {
				delete(in, g)
			}
			return in, true
		}
		set := map[string]bool{}
		for _, g := range e.Grouping {
			set[g] = true
		}
		return set, true
	case *promql.BinaryExpr:
		l, lk := c.outLabels(e.LHS)
		r, rk := c.outLabels(e.RHS)
		if !lk || !rk {
			return nil, false
		}
		vm := e.VectorMatching
		switch {
		case vm != nil && vm.Card == promql.CardOneToMany:
			maps.Copy(r, onlyKeys(l, vm.Include))
			return r, true
		case vm != nil && vm.Card == promql.CardManyToOne:
			maps.Copy(l, onlyKeys(r, vm.Include))
			return l, true
		case e.Op == promql.LOR:
			maps.Copy(l, r)
			return l, true
		}
		// A scalar side (a number, time(), scalar(…)) takes the vector's labels.
		if e.LHS.Type() == promql.ValueTypeScalar {
			return r, true
		}
		return l, true
	case *promql.Call:
		switch e.Func.Name {
		case "histogram_quantile":
			in, ok := c.outLabels(e.Args[1])
			delete(in, "le")
			return in, ok
		case "vector", "time", "scalar", "pi":
			return map[string]bool{}, true
		case "label_replace":
			in, ok := c.outLabels(e.Args[0])
			if s, isStr := e.Args[1].(*promql.StringLiteral); ok && isStr {
				in[s.Val] = true
			}
			return in, ok
		case "label_join":
			return nil, false
		}
		for _, a := range e.Args {
			if a.Type() == promql.ValueTypeVector || a.Type() == promql.ValueTypeMatrix {
				return c.outLabels(a)
			}
		}
		return nil, false
	}
	return nil, false
}

func onlyKeys(m map[string]bool, keys []string) map[string]bool {
	out := map[string]bool{}
	for _, k := range keys {
		if m[k] {
			out[k] = true
		}
	}
	return out
}

// MainModule is the module path of the clickrec binary's module, the one
// ModuleRoot looks for.
const MainModule = "github.com/clickrec/clickrec"

var moduleLine = regexp.MustCompile(`(?m)^module\s+(\S+)`)

// ModuleRoot returns the root of the clickrec main module at or above dir: the
// nearest go.mod declaring module MainModule. The go.mod files of the nested
// modules on the way up (this package's own, deploy's, …) are passed over.
func ModuleRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			if m := moduleLine.FindSubmatch(b); m != nil && string(m[1]) == MainModule {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of module %s at or above %s", MainModule, dir)
		}
		dir = parent
	}
}
