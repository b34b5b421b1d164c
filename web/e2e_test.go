package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/time/rate"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/hotpath"
	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/wire"
)

const testModelVersion = "test-random-v1"

// randomModel is a small random model over the first n items of cat, so
// that clicks on the catalogue's top products are scored by the model.
func randomModel(cat *Catalogue, n, k int, seed uint64) *model.Model {
	r := rand.New(rand.NewPCG(seed, 1))
	m := &model.Model{Version: testModelVersion, K: k, Weighting: model.DefaultWeighting}
	for _, p := range cat.Top("", 0, n) {
		m.ItemIDs = append(m.ItemIDs, p.ItemID)
		m.Prior = append(m.Prior, r.Float32()*0.1)
		for range k {
			m.Factors = append(m.Factors, r.Float32()-0.5)
			m.Projection = append(m.Projection, r.Float32()-0.5)
		}
	}
	return m
}

// pipeline is the embedded broker, a hot path worker and the web server.
type pipeline struct {
	base string // http://127.0.0.1:port
	cat  *Catalogue
}

// startPipeline starts an embedded Kafka broker, a hot path worker serving a
// small random model, and the web server over a MemoryStore, or over a
// RedisStore when rc is not nil (the worker then writes the feature store).
// Everything stops when the test ends.
func startPipeline(t *testing.T, rc *redis.Client) *pipeline {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	kcfg := kafkautil.Config{Partitions: 2, ReplicationFactor: 1, DialTimeout: 10 * time.Second}
	emb, err := kafkautil.StartEmbedded(&kcfg, kafkautil.DefaultTopics)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	cat := smallCatalogue(t)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })

	cfg := hotpath.DefaultConfig()
	cfg.Group = testenv.Name("web-e2e")
	cfg.InstanceID = "web-e2e"
	cfg.TxnTimeout = 5 * time.Second
	cfg.SessionTimeout = 6 * time.Second
	w, err := hotpath.New(cfg, kcfg, hotpath.Options{Logger: log.With("component", "hotpath"), Redis: rc})
	if err != nil {
		t.Fatal(err)
	}
	m := randomModel(cat, 100, 8, 1)
	scorer, err := model.NewScorer(m)
	if err != nil {
		t.Fatal(err)
	}
	w.SetServing(&hotpath.Serving{Version: m.Version, Model: m, Scorer: scorer})
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := w.Run(ctx); err != nil {
			t.Errorf("hot path worker: %v", err)
		}
	}()

	var store Store
	if rc != nil {
		rs := NewRedisStore(rc)
		t.Cleanup(func() { rs.Close() })
		store = rs
	} else {
		ms := NewMemoryStore(kcfg, kafkautil.DefaultTopics, MemoryOptions{Logger: log.With("component", "follower")})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ms.Run(ctx); err != nil {
				t.Errorf("memory store: %v", err)
			}
		}()
		store = ms
	}
	prod, err := NewKafkaProducer(kcfg, string(kafkautil.DefaultTopics.Events))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	scfg := DefaultConfig()
	scfg.RateLimit = rate.Inf
	srv, err := New(scfg, store, prod, cat, log.With("component", "web"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ctx, ln); err != nil {
			t.Errorf("web server: %v", err)
		}
	}()
	return &pipeline{base: "http://" + ln.Addr().String(), cat: cat}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// postClick posts a click on p and returns the server's answer.
func postClick(t *testing.T, ctx context.Context, base string, c event.Click) Accepted {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/events", bytes.NewReader(c.AppendJSON(nil)))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var acc Accepted
	if err := json.NewDecoder(res.Body).Decode(&acc); err != nil || res.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/events: %d %+v (%v)", res.StatusCode, acc, err)
	}
	return acc
}

// awaitRec reads the stream until the recommendation for eventID arrives.
func awaitRec(t *testing.T, rd *sseReader, eventID string) Recommendations {
	t.Helper()
	for {
		ev, err := rd.next()
		if err != nil {
			t.Fatalf("waiting for the recommendation of %s: %v", eventID, err)
		}
		var rec Recommendations
		if err := json.Unmarshal([]byte(ev.data), &rec); err != nil {
			t.Fatalf("stream data %q: %v", ev.data, err)
		}
		if rec.EventID == eventID {
			return rec
		}
	}
}

func testEndToEnd(t *testing.T, rc *redis.Client) {
	p := startPipeline(t, rc)
	ctx := testenv.Context(t, 45*time.Second)
	user := testenv.Name("shopper")
	rd, _ := openStream(t, ctx, p.base, user, nil)

	top := p.cat.Top("", 0, 3)
	clicks := []event.Click{
		{EventID: user + "-1", UserID: user, SessionID: "s1", Type: event.View, ItemID: top[0].ItemID, Category: top[0].Category, Price: top[0].Price},
		{EventID: user + "-2", UserID: user, SessionID: "s1", Type: event.Cart, ItemID: top[1].ItemID, Category: top[1].Category, Price: top[1].Price},
	}
	for i, c := range clicks {
		c.TimestampMs = time.Now().UnixMilli()
		start := time.Now()
		acc := postClick(t, ctx, p.base, c)
		if acc.EventID != c.EventID || acc.Topic != "user_events" {
			t.Fatalf("accepted %+v", acc)
		}
		rec := awaitRec(t, rd, c.EventID)
		t.Logf("click %d → recommendation over SSE in %v (strategy %s)", i+1, time.Since(start).Round(time.Microsecond), rec.Strategy)
		if rec.UserID != user || rec.Strategy != wire.StrategyModel || rec.ModelVersion != testModelVersion || len(rec.Items) != 10 {
			t.Fatalf("recommendation %+v: want 10 items from %s", rec, testModelVersion)
		}
		for _, it := range rec.Items {
			if it.Name == "" || it.ItemID == c.ItemID {
				t.Fatalf("item %+v: want a catalogue product other than the clicked one", it)
			}
		}
	}

	var rec Recommendations
	getJSON(t, ctx, p.base+"/v1/users/"+user+"/recommendations", &rec)
	if rec.EventID != clicks[1].EventID || rec.AgeMs < 0 {
		t.Fatalf("latest recommendation %+v, want the one for %s", rec, clicks[1].EventID)
	}
	var evs EventsResponse
	getJSON(t, ctx, p.base+"/v1/users/"+user+"/events", &evs)
	if len(evs.Events) != 2 || evs.Events[0].ItemID != top[0].ItemID || evs.Events[1].EventType != "cart" {
		t.Fatalf("events %+v, want the view then the cart", evs)
	}
}

func getJSON(t *testing.T, ctx context.Context, url string, out any) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(out); err != nil || res.StatusCode != 200 {
		t.Fatalf("GET %s: %d (%v)", url, res.StatusCode, err)
	}
}

// TestEndToEnd posts clicks to the web server and receives their
// recommendations over server-sent events: embedded Kafka, a hot path worker
// and the server following the topics in memory (the demo's set-up).
func TestEndToEnd(t *testing.T) {
	testEndToEnd(t, nil)
}

// TestEndToEndRedis is TestEndToEnd with the worker writing the Redis feature
// store and the server reading it and following recs:<id>.
func TestEndToEndRedis(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { rc.Close() })
	testEndToEnd(t, rc)
}

func TestMemoryStore(t *testing.T) {
	kcfg := kafkautil.Config{Partitions: 2, ReplicationFactor: 1, DialTimeout: 10 * time.Second}
	emb, err := kafkautil.StartEmbedded(&kcfg, kafkautil.DefaultTopics)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	ctx := testenv.Context(t, 30*time.Second)
	recs, err := NewKafkaProducer(kcfg, string(kafkautil.DefaultTopics.Recs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(recs.Close)
	evs, err := NewKafkaProducer(kcfg, string(kafkautil.DefaultTopics.Events))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(evs.Close)
	produce := func(p *KafkaProducer, key, value string) {
		t.Helper()
		if _, err := p.Produce(ctx, []byte(key), []byte(value)); err != nil {
			t.Fatal(err)
		}
	}
	// Committed before the store starts: not seen.
	produce(recs, "u1", `{"event_id":"old"}`)

	ms := NewMemoryStore(kcfg, kafkautil.DefaultTopics, MemoryOptions{MaxUsers: 2, RecentEvents: 3})
	applied := make(chan string, 100)
	ms.observe = func(r *kgo.Record) { applied <- r.Topic }
	await := func(topic string, n int) {
		t.Helper()
		for n > 0 {
			select {
			case got := <-applied:
				if got == topic {
					n--
				}
			case <-ctx.Done():
				t.Fatalf("%d more records of %s not applied", n, topic)
			}
		}
	}
	if err := ms.Ping(ctx); err == nil {
		t.Fatal("Ping before Run succeeded")
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ms.Run(rctx) }()
	sub, err := ms.Subscribe(ctx, "u1")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := ms.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ms.Latest(ctx, "u1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Latest before any new record: %v, want ErrNotFound", err)
	}
	produce(recs, "u1", `{"event_id":"new"}`)
	select {
	case got := <-sub.C:
		if string(got) != `{"event_id":"new"}` {
			t.Fatalf("got %s", got)
		}
	case <-ctx.Done():
		t.Fatal("no recommendation delivered")
	}
	if got, err := ms.Latest(ctx, "u1"); err != nil || string(got) != `{"event_id":"new"}` {
		t.Fatalf("Latest: %s %v", got, err)
	}

	// Events: newest last by event time, at most RecentEvents, invalid ones skipped.
	for i, ts := range []int64{5000, 1000, 3000, 4000} {
		c := event.Click{EventID: fmt.Sprint("ev", i), UserID: "u1", Type: event.View, ItemID: int64(i + 1), Category: "c1", TimestampMs: ts}
		produce(evs, "u1", string(c.AppendJSON(nil)))
	}
	produce(evs, "u1", `{"event_id":"bad"}`)
	await(string(kafkautil.DefaultTopics.Events), 5)
	raw, err := ms.Events(ctx, "u1")
	if err != nil {
		t.Fatal(err)
	}
	var got []memEvent
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].TimestampMs != 3000 || got[1].TimestampMs != 4000 || got[2].TimestampMs != 5000 {
		t.Fatalf("events %s: want the 3 newest in event-time order", raw)
	}

	// Two more users: the least recently active (u1) is forgotten.
	produce(recs, "u2", `{"event_id":"u2"}`)
	produce(recs, "u3", `{"event_id":"u3"}`)
	await(string(kafkautil.DefaultTopics.Recs), 2)
	if _, err := ms.Latest(ctx, "u1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("u1 after 2 newer users with MaxUsers 2: %v, want ErrNotFound", err)
	}
	if _, err := ms.Latest(ctx, "u3"); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
