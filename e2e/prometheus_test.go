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

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/drift"
	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/model/registry"
	"github.com/clickrec/clickrec/workflows"
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
// TestPrometheusScrapesAndAlerts runs the real Prometheus server (Debian's)
// with deploy/prometheus/rules.yml (every `for:` set to 0s) against a hot path
// worker and a workflow worker, and drives the alerts over their thresholds:
// a backlog (lag > 500 records, p95 latency > 70 ms), drift (PSI > 0.15 from
// a real CheckDrift run), and both workers dying.
func TestPrometheusScrapesAndAlerts(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		testenv.Missing(t, "prometheus", "apt-get install prometheus (scripts/deps.sh installs it)")
	}
	c := newCluster(t, 2)
	ctx := testenv.Context(t, 3*time.Minute)
	rs := startRedis(t, "")
	rc := redis.NewClient(&redis.Options{Addr: rs.addr()})
	defer rc.Close()
	reg := registry.New(rc)
	ref := drift.ReferenceSet{drift.FeatureCategoryMix: drift.NewCategoricalReference(
		map[string]uint64{"c1": 1000, "c2": 1000, "c3": 1000, "c4": 1000, "c5": 1000}, 0)}
	registerWithReference(t, reg, "v1", randomModel(300, 8, 1), ref)
	registerWithReference(t, reg, "v2", randomModel(300, 8, 2), ref)
	for _, v := range []string{"v1", "v2"} {
		if _, err := reg.Promote(ctx, v, "e2e"); err != nil {
			t.Fatal(err)
		}
	}

	hotPort, slowPort := freePort(t), freePort(t)
	// Five records per transaction: a burst of clicks becomes a backlog that
	// the lag and latency alerts see. One-second windows and watermarks, so
	// the live category mix fills as the clicks are processed.
	w := c.worker(t, "w1", "--scorer", "go", "--http-addr", fmt.Sprintf("127.0.0.1:%d", hotPort),
		"--no-redis=false", "--redis-addr", rs.addr(), "--max-poll-records", "5",
		"--window", "1s", "--out-of-orderness", "1s", "--drift-publish-every", "1s")
	slow := c.slowWorker(t, rs.addr(), "--http-addr", fmt.Sprintf("127.0.0.1:%d", slowPort))

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
  - job_name: clickrec-worker
    static_configs: [{targets: ["127.0.0.1:%d"]}]
`, hotPort, slowPort)
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

	// Both workers are scraped.
	eventually(t, ctx, func() (bool, string) {
		v, err := queryScalar(api, `count(up == 1)`)
		return err == nil && v == 2, fmt.Sprintf("targets up: %v (%v)", v, err)
	})

	// A burst of 6,000 clicks, all in a category the reference never saw,
	// spread over the last minute of event time.
	const n = 6000
	base := time.Now().Add(-time.Minute).UnixMilli()
	clicks := make([]event.Click, n)
	for i := range clicks {
		clicks[i] = event.Click{EventID: fmt.Sprintf("pa-%d", i), UserID: fmt.Sprintf("pa-u%d", i%200), Type: event.View,
			ItemID: int64(1 + (i*37)%300), Category: "z9", TimestampMs: base + int64(i)*10}
	}
	c.clickProducer(t).send(t, ctx, clicks...)
	for _, alert := range []string{"ClickrecConsumerLagHigh", "ClickrecLatencyP95High"} {
		eventually(t, ctx, func() (bool, string) {
			firing, err := alertFiring(api, alert)
			return err == nil && firing, fmt.Sprintf("%s firing: %v (%v)", alert, firing, err)
		})
		t.Logf("%s fired during the backlog", alert)
	}
	// Prometheus sees the clicks processed.
	eventually(t, ctx, func() (bool, string) {
		v, err := queryScalar(api, `sum(recsys_hotpath_events_total{outcome="on_time"})`)
		return err == nil && v >= n, fmt.Sprintf("on-time events seen by Prometheus: %v of %d (%v)", v, n, err)
	})

	// CheckDrift on the worker finds the category mix drifted: the PSI gauge
	// goes over 0.15 and the alert fires.
	eventually(t, ctx, func() (bool, string) {
		keys, err := rc.Keys(ctx, drift.LiveKeyPattern).Result()
		return err == nil && len(keys) > 0, fmt.Sprintf("live drift profiles: %v (%v)", keys, err)
	})
	var res workflows.DriftResult
	slow.run(t, ctx, "drift-check", &res, "--drift-window", "5m", "--drift-min-samples", "100", "--drift-rollback-window", "1h")
	eventually(t, ctx, func() (bool, string) {
		firing, err := alertFiring(api, "ClickrecFeatureDrift")
		return err == nil && firing, fmt.Sprintf("ClickrecFeatureDrift firing: %v (%v); drift-check: %s", firing, err, res.Action)
	})
	t.Logf("ClickrecFeatureDrift fired after drift-check (%s)", res.Detail)

	// The workers die: their down alerts fire.
	w.kill()
	slow.proc.kill()
	for _, alert := range []string{"ClickrecHotpathDown", "ClickrecWorkerDown"} {
		eventually(t, ctx, func() (bool, string) {
			firing, err := alertFiring(api, alert)
			return err == nil && firing, fmt.Sprintf("%s firing: %v (%v)", alert, firing, err)
		})
	}
	t.Log("Prometheus scraped both workers and fired the lag, latency, drift and down alerts")
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
