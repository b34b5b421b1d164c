package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServer(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "admin_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	var ready, healthy atomic.Bool
	s, err := Listen("127.0.0.1:0", Options{
		Metrics: reg,
		Ready: func() error {
			if !ready.Load() {
				return errors.New("restoring state")
			}
			return nil
		},
		Health: func(context.Context) error {
			if !healthy.Load() {
				return errors.New("temporal: unreachable")
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	base := "http://" + s.Addr()
	if code, body := get(t, base+"/metrics"); code != 200 || !strings.Contains(body, "admin_test_total 3") {
		t.Fatalf("/metrics: %d %q", code, body)
	}
	for _, c := range []struct {
		path, flag string
		set        *atomic.Bool
		why        string
	}{{"/readyz", "ready", &ready, "restoring state"}, {"/healthz", "ok", &healthy, "temporal: unreachable"}} {
		if code, body := get(t, base+c.path); code != 503 || !strings.Contains(body, c.why) {
			t.Fatalf("%s before: %d %q, want 503 with the reason", c.path, code, body)
		}
		c.set.Store(true)
		if code, body := get(t, base+c.path); code != 200 || strings.TrimSpace(body) != c.flag {
			t.Fatalf("%s after: %d %q", c.path, code, body)
		}
	}
	if code, _ := get(t, base+"/debug/pprof/"); code != 404 {
		t.Fatalf("pprof served without Pprof: %d", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}
