package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/clickrec/clickrec/internal/testenv"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestPrometheusScrapesAndAlerts runs the real Prometheus server (Debian's
// package) with deploy/prometheus/rules.yml against a hot path worker: it
// scrapes the worker's metrics, and when the worker is killed the
// ClickrecHotpathDown alert fires. The rules' `for:` durations are shortened to
// keep the test short; their thresholds and expressions are the shipped ones
// (promtool test rules checks the durations in deploy/).
func TestPrometheusScrapesAndAlerts(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		testenv.Missing(t, "prometheus", "apt-get install prometheus (scripts/deps.sh installs it)")
	}
	c := newCluster(t, 2)
	metricsPort := freePort(t)
	w := c.worker(t, "w1", "--scorer", "go", "--http-addr", fmt.Sprintf("127.0.0.1:%d", metricsPort))
	ctx := testenv.Context(t, 2*time.Minute)
	producing := c.produceAsync(ctx, 300, 100, 17)

	dir := t.TempDir()
	rules, err := os.ReadFile("../deploy/prometheus/rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	rules = regexp.MustCompile(`(?m)^(\s+)for: .*$`).ReplaceAll(rules, []byte("${1}for: 0s"))
	if err := os.WriteFile(filepath.Join(dir, "rules.yml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [rules.yml]
scrape_configs:
  - job_name: clickrec-hotpath
    static_configs: [{targets: ["127.0.0.1:%d"]}]
`, metricsPort)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	promPort := freePort(t)
	prom := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", promPort))
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	promDone := make(chan struct{})
	go func() { prom.Wait(); close(promDone) }()
	t.Cleanup(func() { prom.Process.Kill(); <-promDone })
	api := fmt.Sprintf("http://127.0.0.1:%d/api/v1/", promPort)

	(<-producing).must(t)
	// Prometheus scrapes the worker: the clicks processed show up in a query.
	eventually(t, ctx, func() (bool, string) {
		v, err := queryScalar(api, `sum(recsys_hotpath_events_total{outcome="on_time"})`)
		return err == nil && v >= 300, fmt.Sprintf("on-time events seen by Prometheus: %v (%v)", v, err)
	})
	// The worker dies: up == 0 and the alert fires.
	w.kill()
	eventually(t, ctx, func() (bool, string) {
		firing, err := alertFiring(api, "ClickrecHotpathDown")
		return err == nil && firing, fmt.Sprintf("ClickrecHotpathDown firing: %v (%v)", firing, err)
	})
	t.Log("Prometheus scraped the worker's metrics and fired ClickrecHotpathDown when it was killed")
}

func queryScalar(api, q string) (float64, error) {
	resp, err := http.Get(api + "query?query=" + url.QueryEscape(q))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if len(r.Data.Result) == 0 {
		return 0, fmt.Errorf("no result for %s", q)
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	return strconv.ParseFloat(s, 64)
}

func alertFiring(api, name string) (bool, error) {
	resp, err := http.Get(api + "alerts")
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return false, err
	}
	for _, a := range r.Data.Alerts {
		if a.Labels["alertname"] == name && a.State == "firing" {
			return true, nil
		}
	}
	return false, nil
}

// eventually polls cond (an external system's state) until it holds or ctx ends.
func eventually(t *testing.T, ctx interface{ Done() <-chan struct{} }, cond func() (bool, string)) {
	t.Helper()
	for {
		ok, msg := cond()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal("not reached before the deadline: " + msg)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
