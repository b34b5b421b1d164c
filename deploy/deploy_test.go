// Package deploy holds no Go code, only its tests: they check the operating
// artefacts in this folder against the tools that will read them and against
// the code they describe.
//
//   - prometheus/: promtool check rules / test rules / check config, and every
//     metric and label of every rule against the Go sources.
//   - k8s/: rendered with the kustomize API (the engine of kubectl kustomize)
//     and every object strictly decoded into the Kubernetes and Prometheus
//     Operator Go types (unknown or misspelt fields fail), then cross-checked:
//     selectors, probes, ports, secrets, instance ids, replicas ≤ partitions,
//     and the PrometheusRule identical to prometheus/rules.yml.
//   - compose/: loaded with compose-go (the compose-spec loader docker compose
//     itself uses: schema validation, anchors, interpolation, consistency),
//     then checked for the files, images, health checks and settings it
//     references. No Docker engine runs here, so it is not started.
//   - the Dockerfile: parsed and checked against go.mod, the ONNX Runtime
//     version of scripts/onnxruntime.sh and what the manifests expect.
//
// The contract with the code is the code itself: the tests build
// cmd/clickrec and read every command's --help, so each CLICKREC_* variable
// and --flag in the artefacts must be one a command reads, every container
// must set the variable of its command's --http-addr to 0.0.0.0 and the port
// its probes and scrape targets use, and the values must parse with
// clickrec's own Kafka, Redis and logging flag sets.
package deploy

import (
	"bytes"
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	composeloader "github.com/compose-spec/compose-go/v2/loader"
	composetypes "github.com/compose-spec/compose-go/v2/types"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/clickrec/clickrec/dashboards"
	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/internal/redisutil"
	"github.com/clickrec/clickrec/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite k8s/monitoring/prometheusrule.yaml from prometheus/rules.yml")

// ---------------------------------------------------------------- shared

func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := dashboards.ModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func catalog(t *testing.T) *dashboards.Catalog {
	t.Helper()
	c, err := dashboards.Scan(moduleRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// cliSpec is what `clickrec <command> --help` says: per command, its flags
// and the environment variable each reads.
type cliSpec struct {
	env   map[string]map[string]string // command → flag → variable ("" for a flag without one)
	known map[string]bool              // every variable any command reads
}

var (
	cliOnce sync.Once
	cliInfo *cliSpec
	cliErr  error
)

// clickrecCLI builds cmd/clickrec once and reads every command's --help: the
// flags and the variables they read are the contract the deployment files
// must meet (a misspelt variable is silently ignored at run time).
func clickrecCLI(t *testing.T) *cliSpec {
	t.Helper()
	cliOnce.Do(func() { cliInfo, cliErr = readCLI(moduleRoot(t)) })
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	return cliInfo
}

func readCLI(root string) (*cliSpec, error) {
	dir, err := os.MkdirTemp("", "clickrec-deploy-test-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "clickrec")
	build := exec.Command("go", "build", "-o", bin, "./cmd/clickrec")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./cmd/clickrec: %v\n%s", err, out)
	}
	top, _ := exec.Command(bin, "--help").CombinedOutput()
	_, list, ok := strings.Cut(string(top), "Commands:")
	if !ok {
		return nil, fmt.Errorf("clickrec --help lists no commands:\n%s", top)
	}
	spec := &cliSpec{env: map[string]map[string]string{}, known: map[string]bool{}}
	envOf := regexp.MustCompile(`\(env (CLICKREC_[A-Z0-9_]+)\)`)
	for _, m := range regexp.MustCompile(`(?m)^  ([a-z][a-z0-9-]*) `).FindAllStringSubmatch(list, -1) {
		cmd := m[1]
		out, _ := exec.Command(bin, cmd, "--help").CombinedOutput() // some commands want a verb first; their flags still print
		flags := map[string]string{}
		var cur string
		for _, line := range strings.Split(string(out), "\n") {
			if name, ok := strings.CutPrefix(line, "  --"); ok {
				cur, _, _ = strings.Cut(name, " ")
				flags[cur] = ""
			}
			if e := envOf.FindStringSubmatch(line); e != nil && cur != "" {
				flags[cur] = e[1]
				spec.known[e[1]] = true
			}
		}
		spec.env[cmd] = flags
	}
	for _, cmd := range []string{"hotpath", "worker", "gen"} {
		if len(spec.env[cmd]) == 0 {
			return nil, fmt.Errorf("clickrec %s --help names no environment variables", cmd)
		}
	}
	return spec, nil
}

// checkArgs checks that every --flag in args is a flag of the command args[0].
func (c *cliSpec) checkArgs(t *testing.T, where string, args []string) {
	t.Helper()
	flags, ok := c.env[args[0]]
	if !ok {
		t.Errorf("%s: %q is not a clickrec command", where, args[0])
		return
	}
	for _, a := range args[1:] {
		if name, ok := strings.CutPrefix(a, "--"); ok {
			name, _, _ = strings.Cut(name, "=")
			if _, ok := flags[name]; !ok {
				t.Errorf("%s: clickrec %s has no flag --%s", where, args[0], name)
			}
		}
	}
}

// addrVar returns the variable of a command's --http-addr (its /metrics and
// health endpoints).
func (c *cliSpec) addrVar(t *testing.T, cmd string) string {
	t.Helper()
	v := c.env[cmd]["http-addr"]
	if v == "" {
		t.Fatalf("clickrec %s has no --http-addr with an environment variable", cmd)
	}
	return v
}

// checkEnv checks a set of CLICKREC_* variables as a clickrec container gets
// them: every name is one the code reads, and the values parse with the Kafka,
// Redis and logging flag sets (a wrong bool or duration would stop the pod).
func checkEnv(t *testing.T, where string, spec *cliSpec, env map[string]string) (kafkautil.Config, redisutil.Config) {
	t.Helper()
	for k := range env {
		if strings.HasPrefix(k, "CLICKREC_") && !spec.known[k] {
			t.Errorf("%s: %s is not an environment variable any clickrec command reads (a typo is silently ignored)", where, k)
		}
	}
	var (
		kc  kafkautil.Config
		rc  redisutil.Config
		log cli.Logging
	)
	fs := cli.NewFlagSet("deploy-check", "")
	kc.Register(fs)
	rc.Register(fs)
	log.Register(fs)
	// Parse reads the process environment: set exactly what the container
	// gets for every variable these flag sets read (named in their usage).
	envOf := regexp.MustCompile(`\(env (CLICKREC_[A-Z0-9_]+)\)`)
	fs.VisitAll(func(f *flag.Flag) {
		m := envOf.FindStringSubmatch(f.Usage)
		if m == nil {
			return
		}
		t.Setenv(m[1], env[m[1]])
		if _, ok := env[m[1]]; !ok {
			os.Unsetenv(m[1])
		}
	})
	if err := fs.Parse(nil); err != nil {
		t.Errorf("%s: %v", where, err)
	}
	if _, err := log.Logger(); err != nil {
		t.Errorf("%s: %v", where, err)
	}
	return kc, rc
}

// httpPort returns the port of the address variable v in env (0 and an
// error if it is unset or not host:port).
func httpPort(env map[string]string, v string) (int, error) {
	addr, ok := env[v]
	if !ok {
		return 0, fmt.Errorf("%s is not set: the endpoints would listen on loopback only", v)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: %v", v, addr, err)
	}
	if host != "0.0.0.0" && host != "" {
		return 0, fmt.Errorf("%s=%q: a container must listen on all interfaces (0.0.0.0)", v, addr)
	}
	return strconv.Atoi(port)
}

// ---------------------------------------------------------------- Prometheus

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		testenv.Missing(t, "promtool", "install the Debian package prometheus (scripts/deps.sh does): "+err.Error())
	}
	return p
}

// TestPromtool runs the real promtool over the rules, their unit tests and
// both scrape configurations.
func TestPromtool(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", "rules.yml"},
		{"test", "rules", "rules_test.yml"},
		{"check", "config", "prometheus.yml"},
		{"check", "config", "prometheus-compose.yml"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			cmd := exec.Command(bin, args...)
			cmd.Dir = "prometheus"
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// TestRules checks the alert rules against the code and the documentation:
// metrics and labels the code exports, a severity, the annotations an
// on-call engineer needs, a runbook section and a dashboard that exist.
func TestRules(t *testing.T) {
	c := catalog(t)
	var rf ruleFile
	if err := yaml.Unmarshal(read(t, "prometheus/rules.yml"), &rf); err != nil {
		t.Fatal(err)
	}
	runbook := string(read(t, "RUNBOOK.md"))
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#{1,4} +(.+)$`).FindAllStringSubmatch(runbook, -1) {
		anchors[githubAnchor(m[1])] = true
	}
	uids := map[string]bool{}
	for _, name := range []string{"clickrec-hotpath.json", "clickrec-model.json"} {
		var d struct {
			UID string `json:"uid"`
		}
		if err := sigsyaml.Unmarshal(read(t, filepath.Join(moduleRoot(t), "dashboards", name)), &d); err != nil {
			t.Fatal(err)
		}
		uids[d.UID] = true
	}
	want := []string{"ClickrecLatencyP95High", "ClickrecConsumerLagHigh", "ClickrecFeatureDrift", "ClickrecWorkerDown",
		"ClickrecDLQSpike", "ClickrecTransactionAbortsRising", "ClickrecItemKnowledgeStalled"}
	seen := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			seen[name] = true
			if err := c.Check(r.Expr); err != nil {
				t.Errorf("%s: %s\n%v", name, strings.TrimSpace(r.Expr), err)
			}
			if r.Alert == "" {
				continue
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", name, s)
			}
			if r.For == "" {
				t.Errorf("%s: no for: a single bad scrape would page", name)
			}
			for _, a := range []string{"summary", "description", "runbook", "dashboard"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: no %s annotation", name, a)
				}
			}
			if rb := r.Annotations["runbook"]; rb != "" {
				file, anchor, _ := strings.Cut(rb, "#")
				if file != "deploy/RUNBOOK.md" || !anchors[anchor] {
					t.Errorf("%s: runbook %q: want deploy/RUNBOOK.md#<a heading of RUNBOOK.md>", name, rb)
				}
			}
			if d := r.Annotations["dashboard"]; d != "" && !uids[strings.TrimPrefix(d, "/d/")] {
				t.Errorf("%s: dashboard %q is not /d/<uid of a dashboard in dashboards/>", name, d)
			}
		}
	}
	for _, w := range want {
		if !seen[w] {
			t.Errorf("alert %s is missing from rules.yml", w)
		}
	}
}

// TestEveryAlertUnitTested checks that rules_test.yml makes every alert of
// rules.yml fire at least once (promtool itself only runs the tests there
// are, so a new alert without one would pass unnoticed).
func TestEveryAlertUnitTested(t *testing.T) {
	var rf ruleFile
	if err := yaml.Unmarshal(read(t, "prometheus/rules.yml"), &rf); err != nil {
		t.Fatal(err)
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(read(t, "prometheus/rules_test.yml"), &tests); err != nil {
		t.Fatal(err)
	}
	fires := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			}
		}
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" && !fires[r.Alert] {
				t.Errorf("%s: no test in prometheus/rules_test.yml expects it to fire", r.Alert)
			}
		}
	}
}

// githubAnchor is the fragment GitHub gives a Markdown heading.
func githubAnchor(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// ---------------------------------------------------------------- Kubernetes

const prometheusRuleHeader = `# Generated from deploy/prometheus/rules.yml by
#   go -C deploy test -run TestPrometheusRuleMatchesRules -update
# Do not edit: change rules.yml and regenerate (a test checks they match).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: clickrec
  labels:
    app.kubernetes.io/name: clickrec
spec:
`

// prometheusRule renders rules.yml as the spec of a PrometheusRule: the same
// text, comments included, indented under spec.
func prometheusRule(rules []byte) []byte {
	var b bytes.Buffer
	b.WriteString(prometheusRuleHeader)
	for _, line := range strings.SplitAfter(string(rules), "\n") {
		if strings.TrimSpace(line) != "" {
			b.WriteString("  ")
		}
		b.WriteString(line)
	}
	return b.Bytes()
}

// TestPrometheusRuleMatchesRules keeps the Kubernetes PrometheusRule identical
// to rules.yml, as text and as decoded rule groups.
func TestPrometheusRuleMatchesRules(t *testing.T) {
	rules := read(t, "prometheus/rules.yml")
	path := "k8s/monitoring/prometheusrule.yaml"
	want := prometheusRule(rules)
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := read(t, path)
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not generated from prometheus/rules.yml: run go -C deploy test -run TestPrometheusRuleMatchesRules -update", path)
	}
	var pr monitoringv1.PrometheusRule
	decodeStrict(t, path, got, &pr)
	var spec monitoringv1.PrometheusRuleSpec
	if err := sigsyaml.UnmarshalStrict(rules, &spec); err != nil {
		t.Fatalf("rules.yml does not decode as a PrometheusRule spec: %v", err)
	}
	if !reflect.DeepEqual(pr.Spec, spec) {
		t.Fatal("the PrometheusRule's groups differ from rules.yml")
	}
}

func scheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, monitoringv1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// decodeStrict decodes one manifest into into, failing on unknown or
// duplicate fields.
func decodeStrict(t *testing.T, where string, doc []byte, into runtime.Object) {
	t.Helper()
	s := scheme(t)
	ser := json.NewSerializerWithOptions(json.DefaultMetaFactory, s, s, json.SerializerOptions{Yaml: true, Strict: true})
	if _, _, err := ser.Decode(doc, nil, into); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
}

// manifests holds decoded objects by kind and name.
type manifests struct {
	objects     []runtime.Object
	statefulSet map[string]*appsv1.StatefulSet
	deployment  map[string]*appsv1.Deployment
	service     map[string]*corev1.Service
	configMap   map[string]*corev1.ConfigMap
	secret      map[string]*corev1.Secret
	pdb         map[string]*policyv1.PodDisruptionBudget
	monitor     map[string]*monitoringv1.ServiceMonitor
	rule        map[string]*monitoringv1.PrometheusRule
	namespace   map[string]*corev1.Namespace
}

// decodeAll strictly decodes a multi-document YAML stream into typed objects.
func decodeAll(t *testing.T, where string, stream []byte) *manifests {
	t.Helper()
	s := scheme(t)
	ser := json.NewSerializerWithOptions(json.DefaultMetaFactory, s, s, json.SerializerOptions{Yaml: true, Strict: true})
	m := &manifests{statefulSet: map[string]*appsv1.StatefulSet{}, deployment: map[string]*appsv1.Deployment{},
		service: map[string]*corev1.Service{}, configMap: map[string]*corev1.ConfigMap{}, secret: map[string]*corev1.Secret{},
		pdb: map[string]*policyv1.PodDisruptionBudget{}, monitor: map[string]*monitoringv1.ServiceMonitor{},
		rule: map[string]*monitoringv1.PrometheusRule{}, namespace: map[string]*corev1.Namespace{}}
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(stream), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(doc, "")) == "" {
			continue
		}
		obj, gvk, err := ser.Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Errorf("%s, document %d: %v", where, i+1, err)
			continue
		}
		m.objects = append(m.objects, obj)
		switch o := obj.(type) {
		case *appsv1.StatefulSet:
			m.statefulSet[o.Name] = o
		case *appsv1.Deployment:
			m.deployment[o.Name] = o
		case *corev1.Service:
			m.service[o.Name] = o
		case *corev1.ConfigMap:
			m.configMap[o.Name] = o
		case *corev1.Secret:
			m.secret[o.Name] = o
		case *policyv1.PodDisruptionBudget:
			m.pdb[o.Name] = o
		case *monitoringv1.ServiceMonitor:
			m.monitor[o.Name] = o
		case *monitoringv1.PrometheusRule:
			m.rule[o.Name] = o
		case *corev1.Namespace:
			m.namespace[o.Name] = o
		default:
			t.Errorf("%s: %s is a kind the checks do not know", where, gvk)
		}
	}
	return m
}

// render runs kustomize (the library kubectl kustomize is built on) over dir.
func render(t *testing.T, dir string) []byte {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := res.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type workload struct {
	kind, name string
	replicas   int32
	selector   map[string]string
	pod        corev1.PodTemplateSpec
}

func (m *manifests) workloads() []workload {
	var out []workload
	for _, s := range m.statefulSet {
		out = append(out, workload{"StatefulSet", s.Name, ptrOr(s.Spec.Replicas, 1), s.Spec.Selector.MatchLabels, s.Spec.Template})
	}
	for _, d := range m.deployment {
		out = append(out, workload{"Deployment", d.Name, ptrOr(d.Spec.Replicas, 1), d.Spec.Selector.MatchLabels, d.Spec.Template})
	}
	slices.SortFunc(out, func(a, b workload) int { return strings.Compare(a.name, b.name) })
	return out
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func selects(sel map[string]string, lbls map[string]string) bool {
	return len(sel) > 0 && labels.SelectorFromSet(sel).Matches(labels.Set(lbls))
}

// TestKubernetesManifests renders every kustomization and checks the objects
// against each other and against the code.
func TestKubernetesManifests(t *testing.T) {
	spec := clickrecCLI(t)
	examples := decodeAll(t, "k8s/secret.example.yaml", read(t, "k8s/secret.example.yaml"))
	for name, s := range examples.secret {
		for k := range s.StringData {
			if name == "clickrec-credentials" && !spec.known[k] {
				t.Errorf("secret.example.yaml: %s: %s is not an environment variable clickrec reads", name, k)
			}
		}
	}
	for _, dir := range []string{"k8s/base", "k8s/monitoring", "k8s"} {
		t.Run(dir, func(t *testing.T) {
			m := decodeAll(t, dir, render(t, dir))
			if len(m.objects) == 0 {
				t.Fatal("kustomize rendered nothing")
			}
			checkWorkloads(t, m, examples, spec)
			checkMonitoring(t, m)
			if dir == "k8s" {
				if len(m.namespace) != 1 || m.namespace["clickrec"] == nil {
					t.Errorf("want the namespace clickrec, got %v", m.namespace)
				}
				for _, w := range m.workloads() {
					for _, c := range w.pod.Spec.Containers {
						if c.Image != "clickrec:latest" {
							t.Errorf("%s/%s: image %q, want clickrec:latest from the images transformer", w.kind, w.name, c.Image)
						}
					}
				}
				for _, o := range m.objects {
					meta := o.(interface{ GetNamespace() string })
					if _, isNS := o.(*corev1.Namespace); !isNS && meta.GetNamespace() != "clickrec" {
						t.Errorf("%T is in namespace %q, want clickrec", o, meta.GetNamespace())
					}
				}
			}
		})
	}
}

func checkWorkloads(t *testing.T, m *manifests, examples *manifests, spec *cliSpec) {
	t.Helper()
	secretExists := func(name string) bool { return m.secret[name] != nil || examples.secret[name] != nil }
	for _, w := range m.workloads() {
		where := w.kind + "/" + w.name
		if !selects(w.selector, w.pod.Labels) {
			t.Errorf("%s: selector %v does not match its pod labels %v", where, w.selector, w.pod.Labels)
		}
		podSpec := w.pod.Spec
		if sc := podSpec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("%s: pods must run as non-root (securityContext.runAsNonRoot)", where)
		}
		volumes := map[string]corev1.Volume{}
		for _, v := range podSpec.Volumes {
			volumes[v.Name] = v
			if v.Secret != nil && !secretExists(v.Secret.SecretName) && !ptrOr(v.Secret.Optional, false) {
				t.Errorf("%s: volume %s uses secret %s, which neither the manifests nor secret.example.yaml define", where, v.Name, v.Secret.SecretName)
			}
		}
		for _, c := range podSpec.Containers {
			env := map[string]string{}
			for _, ef := range c.EnvFrom {
				switch {
				case ef.ConfigMapRef != nil:
					cm := m.configMap[ef.ConfigMapRef.Name]
					if cm == nil {
						t.Errorf("%s: envFrom ConfigMap %s is not in the manifests", where, ef.ConfigMapRef.Name)
						continue
					}
					for k, v := range cm.Data {
						env[k] = v
					}
				case ef.SecretRef != nil:
					s := examples.secret[ef.SecretRef.Name]
					if s == nil {
						s = m.secret[ef.SecretRef.Name]
					}
					if s == nil {
						t.Errorf("%s: envFrom Secret %s is defined nowhere (not even secret.example.yaml)", where, ef.SecretRef.Name)
						continue
					}
					for k := range s.StringData {
						env[k] = "from-secret"
					}
				}
			}
			for _, e := range c.Env {
				env[e.Name] = e.Value
			}
			for _, vm := range c.VolumeMounts {
				if _, ok := volumes[vm.Name]; !ok {
					t.Errorf("%s: volumeMount %s has no volume", where, vm.Name)
				}
			}
			if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s/%s: want a read-only root filesystem", where, c.Name)
			}
			if len(env) == 0 {
				continue // the monitoring-only render has no ConfigMap
			}
			kc, _ := checkEnv(t, where, spec, env)
			if ca := kc.Security.TLSCA; ca != "" && !slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool {
				return strings.HasPrefix(ca, strings.TrimSuffix(vm.MountPath, "/")+"/")
			}) {
				t.Errorf("%s: CLICKREC_KAFKA_TLS_CA=%s is not under any volume mount", where, ca)
			}
			kc.Security.TLSCA = "" // the file exists in the pod only
			if kc.Security.SASLMechanism != "" {
				kc.Security.SASLPassword = "from-secret"
			}
			if err := kc.Validate(); err != nil {
				t.Errorf("%s: the Kafka settings do not validate: %v", where, err)
			}
			if len(c.Args) == 0 {
				t.Errorf("%s: no command in args", where)
				continue
			}
			spec.checkArgs(t, where, c.Args)
			v := spec.addrVar(t, c.Args[0])
			port, err := httpPort(env, v)
			if err != nil {
				t.Errorf("%s: %v", where, err)
			}
			metricsPort := slices.IndexFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "metrics" })
			if metricsPort < 0 || c.Ports[metricsPort].ContainerPort != int32(port) {
				t.Errorf("%s: want a container port named metrics = %d (%s)", where, port, v)
			}
			switch c.Args[0] {
			case "hotpath":
				checkHotpath(t, m, w, c, env)
			case "worker":
				if w.kind != "Deployment" {
					t.Errorf("%s: the workflow worker is stateless; want a Deployment", where)
				}
				if v := spec.env["worker"]["temporal-addr"]; env[v] == "" {
					t.Errorf("%s: %s (the Temporal frontend) is not set", where, v)
				}
				if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" {
					t.Errorf("%s: want a readiness probe GET /healthz (ready while Temporal answers)", where)
				}
			default:
				t.Errorf("%s: unexpected command %q", where, c.Args[0])
			}
		}
	}
	for name, pdb := range m.pdb {
		if !slices.ContainsFunc(m.workloads(), func(w workload) bool { return selects(pdb.Spec.Selector.MatchLabels, w.pod.Labels) }) {
			t.Errorf("PodDisruptionBudget %s selects no workload", name)
		}
	}
	for name, svc := range m.service {
		i := slices.IndexFunc(m.workloads(), func(w workload) bool { return selects(svc.Spec.Selector, w.pod.Labels) })
		if i < 0 {
			t.Errorf("Service %s selects no workload", name)
			continue
		}
		w := m.workloads()[i]
		for _, p := range svc.Spec.Ports {
			if p.TargetPort.StrVal != "" && !slices.ContainsFunc(w.pod.Spec.Containers, func(c corev1.Container) bool {
				return slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == p.TargetPort.StrVal })
			}) {
				t.Errorf("Service %s: targetPort %s is no container port of %s", name, p.TargetPort.StrVal, w.name)
			}
		}
	}
}

func checkHotpath(t *testing.T, m *manifests, w workload, c corev1.Container, env map[string]string) {
	t.Helper()
	where := w.kind + "/" + w.name
	if w.kind != "StatefulSet" {
		t.Errorf("%s: the hot path needs stable instance ids (fencing, static membership): want a StatefulSet", where)
		return
	}
	ss := m.statefulSet[w.name]
	if svc := m.service[ss.Spec.ServiceName]; svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("%s: serviceName %q is not a headless Service in the manifests", where, ss.Spec.ServiceName)
	}
	i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "CLICKREC_HOTPATH_INSTANCE_ID" })
	if i < 0 || c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.FieldRef == nil || c.Env[i].ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("%s: CLICKREC_HOTPATH_INSTANCE_ID must come from metadata.name (the stable pod name)", where)
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port.StrVal != "metrics" {
		t.Errorf("%s: want a readiness probe GET /readyz on the metrics port", where)
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" {
		t.Errorf("%s: want a liveness probe GET /healthz", where)
	}
	partitions, err := strconv.Atoi(env["CLICKREC_KAFKA_PARTITIONS"])
	if err != nil {
		t.Errorf("%s: CLICKREC_KAFKA_PARTITIONS: %v", where, err)
	} else if int(w.replicas) > partitions {
		t.Errorf("%s: %d replicas for %d partitions: the extra workers would idle, never ready", where, w.replicas, partitions)
	}
	if ss.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("%s: podManagementPolicy %q, want Parallel (workers do not depend on each other)", where, ss.Spec.PodManagementPolicy)
	}
	if !slices.ContainsFunc(slices.Collect(maps.Values(m.pdb)), func(p *policyv1.PodDisruptionBudget) bool {
		return selects(p.Spec.Selector.MatchLabels, w.pod.Labels)
	}) {
		t.Errorf("%s: no PodDisruptionBudget", where)
	}
}

func checkMonitoring(t *testing.T, m *manifests) {
	t.Helper()
	for name, sm := range m.monitor {
		if len(m.service) == 0 {
			continue // rendered without the workloads
		}
		var matched []*corev1.Service
		for _, svc := range m.service {
			if selects(sm.Spec.Selector.MatchLabels, svc.Labels) {
				matched = append(matched, svc)
			}
		}
		var names []string
		for _, svc := range matched {
			names = append(names, svc.Name)
			for _, ep := range sm.Spec.Endpoints {
				if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
					t.Errorf("ServiceMonitor %s: Service %s has no port %q", name, svc.Name, ep.Port)
				}
			}
		}
		slices.Sort(names)
		// The job label is the Service name: the alert rules match on it.
		if !slices.Equal(names, []string{"clickrec-hotpath", "clickrec-worker"}) {
			t.Errorf("ServiceMonitor %s selects Services %v, want clickrec-hotpath and clickrec-worker", name, names)
		}
	}
	for name, r := range m.rule {
		var spec monitoringv1.PrometheusRuleSpec
		if err := sigsyaml.Unmarshal(read(t, "prometheus/rules.yml"), &spec); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(r.Spec, spec) {
			t.Errorf("PrometheusRule %s differs from prometheus/rules.yml", name)
		}
	}
}

// ---------------------------------------------------------------- compose

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	Profiles    []string          `yaml:"profiles"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

// TestCompose checks deploy/compose/docker-compose.yml without a Docker engine:
// the services the issue asks for, pinned images, every bind-mounted file and
// the build context present, health checks wherever a service waits for
// another, distinct hot path instance ids, Prometheus and Grafana wired to the
// rules and dashboards of this repository.
func TestCompose(t *testing.T) {
	spec := clickrecCLI(t)
	dir := "compose"
	abs, err := filepath.Abs(filepath.Join(dir, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	project, err := composeloader.LoadWithContext(context.Background(), composetypes.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []composetypes.ConfigFile{{Filename: abs}},
		Environment: composetypes.Mapping{},
	}, func(o *composeloader.Options) { o.SetProjectName("clickrec", true); o.Profiles = []string{"demo"} })
	if err != nil {
		t.Fatalf("compose-go rejects docker-compose.yml: %v", err)
	}
	if len(project.Services) != 9 {
		t.Errorf("compose-go loaded %d services, want 9 (with the demo profile)", len(project.Services))
	}
	var cf composeFile
	if err := yaml.Unmarshal(read(t, filepath.Join(dir, "docker-compose.yml")), &cf); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"kafka", "redis", "temporal", "prometheus", "grafana", "hotpath-1", "hotpath-2", "worker"} {
		if _, ok := cf.Services[s]; !ok {
			t.Errorf("service %s is missing", s)
		}
	}
	instanceIDs := map[string]string{}
	var hotpaths []string
	for name, s := range cf.Services {
		where := "service " + name
		if s.Image == "" {
			t.Errorf("%s: no image", where)
		} else if tag := s.Image[strings.LastIndex(s.Image, ":")+1:]; !strings.Contains(s.Image, ":") || tag == "latest" {
			t.Errorf("%s: image %q is not pinned to a version", where, s.Image)
		}
		if s.Build != nil {
			ctx := filepath.Join(dir, s.Build.Context)
			if _, err := os.Stat(filepath.Join(ctx, s.Build.Dockerfile)); err != nil {
				t.Errorf("%s: build: %v", where, err)
			}
			if _, err := os.Stat(filepath.Join(ctx, "go.mod")); err != nil {
				t.Errorf("%s: build context %s is not the module root: %v", where, s.Build.Context, err)
			}
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
				if _, err := os.Stat(filepath.Join(dir, src)); err != nil {
					t.Errorf("%s: bind mount %s: %v", where, v, err)
				}
			} else if _, ok := cf.Volumes[src]; !ok {
				t.Errorf("%s: named volume %s is not declared under volumes", where, src)
			}
		}
		for dep, d := range s.DependsOn {
			other, ok := cf.Services[dep]
			switch {
			case !ok:
				t.Errorf("%s: depends on unknown service %s", where, dep)
			case d.Condition == "service_healthy" && other.Healthcheck == nil:
				t.Errorf("%s: waits for %s to be healthy, but %s has no healthcheck", where, dep, dep)
			}
		}
		if len(s.Profiles) == 0 && s.Healthcheck == nil {
			t.Errorf("%s: no healthcheck", where)
		}
		if s.Image != "clickrec:dev" {
			continue
		}
		if len(s.Command) == 0 {
			t.Errorf("%s: no clickrec command", where)
			continue
		}
		if s.Environment["CLICKREC_KAFKA_BROKERS"] != "kafka:9092" {
			t.Errorf("%s: CLICKREC_KAFKA_BROKERS=%q, want kafka:9092", where, s.Environment["CLICKREC_KAFKA_BROKERS"])
		}
		checkEnv(t, where, spec, s.Environment)
		spec.checkArgs(t, where, s.Command)
		var port int
		if v := spec.env[s.Command[0]]["http-addr"]; v != "" {
			var err error
			if port, err = httpPort(s.Environment, v); err != nil {
				t.Errorf("%s: %v", where, err)
			}
			if s.Healthcheck == nil || !slices.ContainsFunc(s.Healthcheck.Test, func(a string) bool {
				return strings.HasPrefix(a, fmt.Sprintf("http://127.0.0.1:%d/", port))
			}) {
				t.Errorf("%s: the healthcheck does not request the port of %s (%d)", where, v, port)
			}
		}
		switch s.Command[0] {
		case "hotpath":
			hotpaths = append(hotpaths, name)
			id := s.Environment["CLICKREC_HOTPATH_INSTANCE_ID"]
			if id == "" {
				t.Errorf("%s: no CLICKREC_HOTPATH_INSTANCE_ID", where)
			} else if other, dup := instanceIDs[id]; dup {
				t.Errorf("%s: instance id %s is also %s's: they would fence each other", where, id, other)
			}
			instanceIDs[id] = name
			want := fmt.Sprintf("http://127.0.0.1:%d/readyz", port)
			if s.Healthcheck == nil || !slices.Contains(s.Healthcheck.Test, want) {
				t.Errorf("%s: the healthcheck must request %s", where, want)
			}
		case "worker":
			v := spec.env["worker"]["temporal-addr"]
			if host, _, _ := net.SplitHostPort(s.Environment[v]); cf.Services[host].Image == "" {
				t.Errorf("%s: %s=%q is not a compose service", where, v, s.Environment[v])
			}
		}
	}
	if len(hotpaths) < 2 {
		t.Errorf("want at least two hot path services, got %v", hotpaths)
	}
	checkComposePrometheus(t, dir, cf, spec)
	checkComposeGrafana(t, dir, cf)
	id := cf.Services["kafka"].Environment["CLUSTER_ID"]
	if b, err := base64.RawURLEncoding.DecodeString(id); err != nil || len(b) != 16 {
		t.Errorf("kafka: CLUSTER_ID %q must be a base64url-encoded 16-byte UUID (kafka-storage random-uuid)", id)
	}
}

// mountedFile maps a container path to the repository file mounted there.
func mountedFile(s composeService, dir, containerPath string) (string, bool) {
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 {
			continue
		}
		if rest, ok := strings.CutPrefix(containerPath, parts[1]); ok {
			return filepath.Join(dir, parts[0], rest), true
		}
	}
	return "", false
}

func checkComposePrometheus(t *testing.T, dir string, cf composeFile, spec *cliSpec) {
	t.Helper()
	p := cf.Services["prometheus"]
	var cfgPath string
	for _, a := range p.Command {
		if v, ok := strings.CutPrefix(a, "--config.file="); ok {
			cfgPath = v
		}
	}
	file, ok := mountedFile(p, dir, cfgPath)
	if !ok {
		t.Fatalf("prometheus: --config.file=%s is not on a mounted volume", cfgPath)
	}
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(read(t, file), &cfg); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(cfg.RuleFiles, "rules.yml") {
		t.Errorf("%s: rule_files %v does not load rules.yml", file, cfg.RuleFiles)
	}
	jobs := map[string][]string{}
	for _, sc := range cfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			jobs[sc.JobName] = append(jobs[sc.JobName], st.Targets...)
		}
	}
	want := map[string][]string{}
	for name, s := range cf.Services {
		if s.Image != "clickrec:dev" || len(s.Command) == 0 || len(s.Profiles) > 0 {
			continue
		}
		job := "clickrec-" + s.Command[0]
		port, _ := httpPort(s.Environment, spec.addrVar(t, s.Command[0]))
		want[job] = append(want[job], fmt.Sprintf("%s:%d", name, port))
	}
	for job, targets := range want {
		got := slices.Sorted(slices.Values(jobs[job]))
		slices.Sort(targets)
		if !slices.Equal(got, targets) {
			t.Errorf("%s: job %s scrapes %v, want the compose services %v", file, job, got, targets)
		}
	}
}

func checkComposeGrafana(t *testing.T, dir string, cf composeFile) {
	t.Helper()
	g := cf.Services["grafana"]
	prov, ok := mountedFile(g, dir, "/etc/grafana/provisioning")
	if !ok {
		t.Fatal("grafana: /etc/grafana/provisioning is not mounted")
	}
	var ds struct {
		Datasources []struct {
			UID, Type, URL string
			IsDefault      bool `yaml:"isDefault"`
		}
	}
	if err := yaml.Unmarshal(read(t, filepath.Join(prov, "datasources", "prometheus.yml")), &ds); err != nil {
		t.Fatal(err)
	}
	if len(ds.Datasources) != 1 || ds.Datasources[0].UID != "prometheus" || ds.Datasources[0].Type != "prometheus" ||
		!ds.Datasources[0].IsDefault || ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("grafana datasource: %+v, want one default prometheus datasource, uid prometheus, at http://prometheus:9090", ds.Datasources)
	}
	var dp struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	if err := yaml.Unmarshal(read(t, filepath.Join(prov, "dashboards", "clickrec.yml")), &dp); err != nil {
		t.Fatal(err)
	}
	if len(dp.Providers) != 1 {
		t.Fatalf("grafana: want one dashboard provider, got %d", len(dp.Providers))
	}
	src, ok := mountedFile(g, dir, dp.Providers[0].Options.Path)
	if !ok {
		t.Fatalf("grafana: the dashboard provider path %s is not mounted", dp.Providers[0].Options.Path)
	}
	want, err := filepath.Abs(filepath.Join(moduleRoot(t), "dashboards"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := filepath.Abs(src); got != want {
		t.Errorf("grafana: dashboards come from %s, want %s", got, want)
	}
	home, ok := mountedFile(g, dir, g.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
	if _, err := os.Stat(home); !ok || err != nil {
		t.Errorf("grafana: GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH is not a mounted dashboard (%v)", err)
	}
}

// ---------------------------------------------------------------- Dockerfile

type instruction struct {
	cmd, args string
	line      int
}

// dockerfile splits a Dockerfile into instructions, joining continuation lines.
func dockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(string(read(t, path)), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args), start})
		cur.Reset()
	}
	return out
}

// TestDockerfile checks the image build without a Docker engine: stages and
// their references, the ONNX Runtime version of scripts/onnxruntime.sh, the Go
// version of go.mod, and a runtime that finds the library and serves on the
// port the manifests probe.
func TestDockerfile(t *testing.T) {
	root := moduleRoot(t)
	ins := dockerfile(t, filepath.Join(root, "Dockerfile"))
	args := map[string]string{}
	stages := map[string]bool{}
	var final []instruction
	for _, in := range ins {
		switch in.cmd {
		case "ARG":
			k, v, _ := strings.Cut(in.args, "=")
			if v != "" {
				args[k] = v
			}
		case "FROM":
			f := strings.Fields(in.args)
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				if stages[f[2]] {
					t.Errorf("line %d: stage %s defined twice", in.line, f[2])
				}
				stages[f[2]] = true
			}
			final = nil
		case "COPY":
			for _, f := range strings.Fields(in.args) {
				if from, ok := strings.CutPrefix(f, "--from="); ok && !stages[from] {
					t.Errorf("line %d: COPY --from=%s: no earlier stage of that name", in.line, from)
				}
			}
		}
		final = append(final, in)
	}
	submatch := func(re, file string) string {
		m := regexp.MustCompile(re).FindSubmatch(read(t, filepath.Join(root, file)))
		if m == nil {
			t.Fatalf("%s: no match for %s", file, re)
		}
		return string(m[1])
	}
	if want := submatch(`(?m)^ORT_VERSION=(\S+)$`, "scripts/onnxruntime.sh"); args["ORT_VERSION"] != want {
		t.Errorf("Dockerfile ORT_VERSION %q, scripts/onnxruntime.sh has %q: keep them equal", args["ORT_VERSION"], want)
	}
	if want := submatch(`(?m)^go (\d+\.\d+)`, "go.mod"); args["GO_VERSION"] != want {
		t.Errorf("Dockerfile GO_VERSION %q, go.mod needs go %s", args["GO_VERSION"], want)
	}
	env := map[string]string{}
	var entrypoint, user string
	for _, in := range final {
		switch in.cmd {
		case "ENV":
			for _, kv := range strings.Fields(in.args) {
				if k, v, ok := strings.Cut(kv, "="); ok {
					env[k] = v
				}
			}
		case "ENTRYPOINT":
			entrypoint = in.args
		case "USER":
			user = in.args
		}
	}
	if entrypoint != `["clickrec"]` {
		t.Errorf("ENTRYPOINT %s, want [\"clickrec\"] (compose and k8s pass the command as arguments)", entrypoint)
	}
	if user == "" || strings.HasPrefix(user, "0") || user == "root" {
		t.Errorf("USER %q: the runtime must not run as root (the k8s manifests require runAsNonRoot)", user)
	}
	lib := env["CLICKREC_ONNXRUNTIME_LIB"]
	if !strings.HasPrefix(lib, "/usr/local/lib/clickrec/") || !slices.ContainsFunc(final, func(in instruction) bool {
		return in.cmd == "COPY" && strings.Contains(in.args, "--from=ort") && strings.HasSuffix(in.args, " /usr/local/lib/clickrec/")
	}) {
		t.Errorf("CLICKREC_ONNXRUNTIME_LIB=%q is not where the ort stage's library is copied", lib)
	}
	spec := clickrecCLI(t)
	checkEnv(t, "Dockerfile ENV", spec, env)
	for _, cmd := range []string{"hotpath", "worker"} {
		v := spec.addrVar(t, cmd)
		if port, err := httpPort(env, v); err != nil || port != 9464 {
			t.Errorf("clickrec %s in the image should serve on 0.0.0.0:9464: %s=%q (%v)", cmd, v, env[v], err)
		}
	}
	if !slices.ContainsFunc(final, func(in instruction) bool { return in.cmd == "EXPOSE" && in.args == "9464" }) {
		t.Error("the image should EXPOSE 9464")
	}
	build := slices.IndexFunc(ins, func(in instruction) bool { return in.cmd == "RUN" && strings.Contains(in.args, "go build") })
	if build < 0 || !strings.Contains(ins[build].args, "CGO_ENABLED=1") || !strings.Contains(ins[build].args, "./cmd/clickrec") {
		t.Error("want RUN … CGO_ENABLED=1 go build … ./cmd/clickrec (the ONNX binding needs cgo)")
	}
	// .dockerignore must keep what the build needs.
	var ignore []string
	for _, l := range strings.Split(string(read(t, filepath.Join(root, ".dockerignore"))), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			ignore = append(ignore, strings.Trim(l, "/"))
		}
	}
	for _, need := range []string{"go.mod", "go.sum", "cmd/clickrec/main.go", "hotpath/worker.go", "internal/kafkautil/kafkautil.go"} {
		for _, pat := range ignore {
			if ok, _ := filepath.Match(pat, need); ok || strings.HasPrefix(need, pat+"/") {
				t.Errorf(".dockerignore pattern %q excludes %s, which the build needs", pat, need)
			}
		}
	}
}
