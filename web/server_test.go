package web

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/gen"
	"github.com/clickrec/clickrec/internal/testenv"
)

// fakeStore is a Store held in maps; its subscriptions are ready at once.
type fakeStore struct {
	hub *hub

	mu     sync.Mutex
	recs   map[string][]byte
	events map[string][]byte
	err    error // returned by every read when set
}

func newFakeStore() *fakeStore {
	return &fakeStore{hub: newHub(), recs: map[string][]byte{}, events: map[string][]byte{}}
}

func (f *fakeStore) get(m map[string][]byte, user string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if b, ok := m[user]; ok {
		return b, nil
	}
	return nil, ErrNotFound
}

func (f *fakeStore) Latest(_ context.Context, user string) ([]byte, error) {
	return f.get(f.recs, user)
}

func (f *fakeStore) Events(_ context.Context, user string) ([]byte, error) {
	return f.get(f.events, user)
}

func (f *fakeStore) Subscribe(_ context.Context, user string) (*Subscription, error) {
	sub, _ := f.hub.add(user)
	sub.close = func() { f.hub.remove(user, sub) }
	return sub, nil
}

func (f *fakeStore) Ping(context.Context) error { return nil }

// commit stores a recommendation and publishes it, as the hot path does.
func (f *fakeStore) commit(user string, rec []byte) {
	f.mu.Lock()
	f.recs[user] = rec
	f.mu.Unlock()
	f.hub.publish(user, rec)
}

// fakeProducer records what it is asked to produce.
type fakeProducer struct {
	mu   sync.Mutex
	recs [][2][]byte
	err  error
}

func (p *fakeProducer) Produce(_ context.Context, key, value []byte) (Ack, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return Ack{}, p.err
	}
	p.recs = append(p.recs, [2][]byte{key, value})
	return Ack{Topic: "user_events", Partition: 0, Offset: int64(len(p.recs) - 1)}, nil
}

func (p *fakeProducer) produced() [][2][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][2][]byte(nil), p.recs...)
}

var (
	testCatOnce sync.Once
	testCat     *Catalogue
)

// smallCatalogue is a 500-item shop in 10 categories.
func smallCatalogue(t testing.TB) *Catalogue {
	t.Helper()
	testCatOnce.Do(func() {
		var err error
		testCat, err = NewCatalogue(gen.Config{Seed: 7, Users: 100, Items: 500, Categories: 10}, 20_000)
		if err != nil {
			panic(err)
		}
	})
	return testCat
}

var testNow = time.UnixMilli(1_800_000_000_000)

type testServer struct {
	*Server
	store *fakeStore
	prod  *fakeProducer
}

func newTestServer(t *testing.T, mod func(*Config)) *testServer {
	t.Helper()
	cfg := DefaultConfig()
	cfg.RateLimit = rate.Inf
	if mod != nil {
		mod(&cfg)
	}
	st, prod := newFakeStore(), &fakeProducer{}
	s, err := New(cfg, st, prod, smallCatalogue(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return testNow }
	return &testServer{Server: s, store: st, prod: prod}
}

// do serves one request from remote address 192.0.2.1 and decodes a JSON body into out (if not nil).
func (s *testServer) do(t *testing.T, method, path, contentType, body string, out any) *http.Response {
	t.Helper()
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	res := w.Result()
	if out != nil {
		if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("%s %s: Content-Type %q, want JSON; body %s", method, path, ct, w.Body)
		}
		if err := json.Unmarshal(w.Body.Bytes(), out); err != nil {
			t.Fatalf("%s %s: decoding %s: %v", method, path, w.Body, err)
		}
	}
	return res
}

func clickJSON(mod func(map[string]any)) string {
	m := map[string]any{
		"event_id": "e-1", "user_id": "u-1", "session_id": "s-1", "event_type": "view",
		"item_id": 42, "category": "c3", "price": 9.5, "timestamp_ms": testNow.UnixMilli() - 1000,
	}
	if mod != nil {
		mod(m)
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func TestPostEventValidation(t *testing.T) {
	s := newTestServer(t, nil)
	cases := []struct {
		name        string
		contentType string
		body        string
		status      int
		code        string
		reason      event.Reason
		detail      string // a substring of the detail
	}{
		{"malformed JSON", "application/json", `{"event_id":`, 400, "invalid_event", event.ReasonMalformedJSON, "unexpected end"},
		{"not an object", "application/json", `[1,2]`, 400, "invalid_event", event.ReasonMalformedJSON, "not a JSON object"},
		{"empty body", "application/json", ``, 400, "invalid_event", event.ReasonMalformedJSON, "not a JSON object"},
		{"missing event_id", "application/json", clickJSON(func(m map[string]any) { delete(m, "event_id") }), 400, "invalid_event", event.ReasonMissingField, "field event_id is missing"},
		{"missing user_id", "application/json", clickJSON(func(m map[string]any) { m["user_id"] = "" }), 400, "invalid_event", event.ReasonMissingField, "field user_id is missing"},
		{"item_id is a string", "application/json", clickJSON(func(m map[string]any) { m["item_id"] = "42" }), 400, "invalid_event", event.ReasonWrongType, "item_id"},
		{"unknown event type", "application/json", clickJSON(func(m map[string]any) { m["event_type"] = "like" }), 400, "invalid_event", event.ReasonUnknownType, `"like"`},
		{"negative price", "application/json", clickJSON(func(m map[string]any) { m["price"] = -1 }), 400, "invalid_event", event.ReasonBadValue, "price -1"},
		{"timestamp in the future", "application/json", clickJSON(func(m map[string]any) { m["timestamp_ms"] = testNow.Add(time.Hour).UnixMilli() }), 400, "invalid_event", event.ReasonFutureTime, "ahead of now"},
		{"user id too long", "application/json", clickJSON(func(m map[string]any) { m["user_id"] = strings.Repeat("u", 129) }), 400, "invalid_event", event.ReasonBadValue, "user_id is 129 bytes"},
		{"text/plain", "text/plain", clickJSON(nil), 415, "unsupported_media_type", "", "application/json"},
		{"form", "application/x-www-form-urlencoded", "a=b", 415, "unsupported_media_type", "", "application/json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var e apiError
			res := s.do(t, "POST", "/v1/events", tc.contentType, tc.body, &e)
			if res.StatusCode != tc.status || e.Error != tc.code || e.Reason != string(tc.reason) || !strings.Contains(e.Detail, tc.detail) {
				t.Fatalf("got %d %+v, want %d %s reason %q detail containing %q", res.StatusCode, e, tc.status, tc.code, tc.reason, tc.detail)
			}
		})
	}
	if n := len(s.prod.produced()); n != 0 {
		t.Fatalf("%d invalid clicks were produced", n)
	}
}

func TestPostEventAccepted(t *testing.T) {
	s := newTestServer(t, nil)
	var acc Accepted
	// No Content-Type is accepted too (curl -d sends a form type, fetch with a string body sends text/plain).
	res := s.do(t, "POST", "/v1/events", "application/json; charset=utf-8", clickJSON(func(m map[string]any) { m["extra"] = "dropped" }), &acc)
	if res.StatusCode != http.StatusAccepted || acc.EventID != "e-1" || acc.UserID != "u-1" || acc.Topic != "user_events" {
		t.Fatalf("got %d %+v", res.StatusCode, acc)
	}
	got := s.prod.produced()
	if len(got) != 1 || string(got[0][0]) != "u-1" {
		t.Fatalf("produced %q, want one record keyed u-1", got)
	}
	c, err := event.Decode(got[0][1], testNow, event.DefaultLimits)
	if err != nil || c.ItemID != 42 || c.Type != event.View || strings.Contains(string(got[0][1]), "extra") {
		t.Fatalf("produced value %s (%v): want the click, canonically encoded", got[0][1], err)
	}
	if res := s.do(t, "POST", "/v1/events", "", clickJSON(nil), nil); res.StatusCode != http.StatusAccepted {
		t.Fatalf("without Content-Type: %d, want 202", res.StatusCode)
	}

	s.prod.err = errors.New("broker gone")
	var e apiError
	if res := s.do(t, "POST", "/v1/events", "application/json", clickJSON(nil), &e); res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(e.Detail, "broker gone") {
		t.Fatalf("producer failure: got %d %+v, want 503 naming the cause", res.StatusCode, e)
	}
}

func TestBodyLimit(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.MaxBodyBytes = 16 << 10 })
	pad := func(n int) string { // a valid click padded to n bytes with spaces
		b := clickJSON(nil)
		return b + strings.Repeat(" ", n-len(b))
	}
	var e apiError
	res := s.do(t, "POST", "/v1/events", "application/json", pad(16<<10+1), &e)
	if res.StatusCode != http.StatusRequestEntityTooLarge || e.Error != "body_too_large" || !strings.Contains(e.Detail, "16384") {
		t.Fatalf("16 KiB + 1: got %d %+v, want 413 body_too_large", res.StatusCode, e)
	}
	res = s.do(t, "POST", "/v1/events", "application/json", strings.Repeat("x", 1<<20), &e)
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("1 MiB: got %d, want 413", res.StatusCode)
	}
	if res := s.do(t, "POST", "/v1/events", "application/json", pad(16<<10), nil); res.StatusCode != http.StatusAccepted {
		t.Fatalf("exactly 16 KiB: got %d, want 202", res.StatusCode)
	}
}

func TestRateLimit(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.RateLimit, c.RateBurst = 2, 3 })
	now := testNow
	s.now = func() time.Time { return now }
	get := func(remote string) *http.Response {
		r := httptest.NewRequest("GET", "/v1/catalogue?limit=1", nil)
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		return w.Result()
	}
	for i := range 3 {
		if res := get("198.51.100.7:5000"); res.StatusCode != http.StatusOK {
			t.Fatalf("request %d within the burst: %d", i+1, res.StatusCode)
		}
	}
	res := get("198.51.100.7:5001") // same client, another port
	var e apiError
	_ = json.NewDecoder(res.Body).Decode(&e)
	if res.StatusCode != http.StatusTooManyRequests || e.Error != "rate_limited" || res.Header.Get("Retry-After") != "1" {
		t.Fatalf("4th request: got %d %+v Retry-After %q, want 429 rate_limited with Retry-After 1", res.StatusCode, e, res.Header.Get("Retry-After"))
	}
	if res := get("198.51.100.8:5000"); res.StatusCode != http.StatusOK {
		t.Fatalf("another client: %d, want 200", res.StatusCode)
	}
	page := httptest.NewRecorder() // the page itself is not rate limited
	req := httptest.NewRequest("GET", "/", nil)
	req.RemoteAddr = "198.51.100.7:5000"
	s.ServeHTTP(page, req)
	if page.Code != http.StatusOK {
		t.Fatalf("GET / while limited: %d", page.Code)
	}
	now = now.Add(500 * time.Millisecond) // 2/s: one token back
	if res := get("198.51.100.7:5000"); res.StatusCode != http.StatusOK {
		t.Fatalf("after refill: %d, want 200", res.StatusCode)
	}
	if res := get("198.51.100.7:5000"); res.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("refill gave more than one token: %d", res.StatusCode)
	}
	now = now.Add(10 * time.Minute) // idle buckets are swept
	get("198.51.100.9:5000")
	if n := s.limiter.size(); n != 1 {
		t.Fatalf("%d buckets after 10 idle minutes, want 1", n)
	}
}

func TestRoutingErrors(t *testing.T) {
	s := newTestServer(t, nil)
	cases := []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v1/users/" + strings.Repeat("x", 129) + "/recommendations", 400, "bad_user_id"},
		{"GET", "/v1/users/a%01b/events", 400, "bad_user_id"},
		{"GET", "/v1/users/a%ffb/recommendations/stream", 400, "bad_user_id"},
		{"DELETE", "/v1/users/alice/recommendations", 405, "method_not_allowed"},
		{"GET", "/v1/events", 405, "method_not_allowed"},
		{"POST", "/v1/catalogue", 405, "method_not_allowed"},
		{"GET", "/v1/nothing", 404, "not_found"},
		{"GET", "/v1/users/alice/recommendations", 404, "not_found"},
		{"GET", "/v1/catalogue?limit=0", 400, "bad_parameter"},
		{"GET", "/v1/catalogue?limit=abc", 400, "bad_parameter"},
		{"GET", "/v1/catalogue?offset=-1", 400, "bad_parameter"},
		{"GET", "/v1/catalogue?category=nope", 400, "unknown_category"},
	}
	for _, tc := range cases {
		var e apiError
		res := s.do(t, tc.method, tc.path, "", "", &e)
		if res.StatusCode != tc.status || e.Error != tc.code || e.Detail == "" {
			t.Errorf("%s %s: got %d %+v, want %d %s with a detail", tc.method, tc.path, res.StatusCode, e, tc.status, tc.code)
		}
		if tc.status == 405 && res.Header.Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow", tc.method, tc.path)
		}
	}
}

func TestCatalogue(t *testing.T) {
	s := newTestServer(t, nil)
	var all CatalogueResponse
	if res := s.do(t, "GET", "/v1/catalogue?limit=5", "", "", &all); res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	if len(all.Items) != 5 || len(all.Categories) != 10 || all.Total != s.cat.Len() || all.Total < 400 {
		t.Fatalf("got %d items, %d categories, total %d", len(all.Items), len(all.Categories), all.Total)
	}
	for i, p := range all.Items {
		if p.Rank != i+1 || p.Name == "" || p.CategoryName == "" || p.Price <= 0 {
			t.Fatalf("item %d: %+v", i, p)
		}
	}
	cat := all.Categories[0].ID
	var one CatalogueResponse
	s.do(t, "GET", "/v1/catalogue?limit=500&category="+cat, "", "", &one)
	if len(one.Items) != all.Categories[0].Items || one.Total != len(one.Items) {
		t.Fatalf("category %s: %d items, total %d, want %d", cat, len(one.Items), one.Total, all.Categories[0].Items)
	}
	for _, p := range one.Items {
		if p.Category != cat {
			t.Fatalf("category %s page has %+v", cat, p)
		}
	}
	var page2 CatalogueResponse
	s.do(t, "GET", "/v1/catalogue?limit=2&offset=3", "", "", &page2)
	if len(page2.Items) != 2 || page2.Items[0].ItemID != all.Items[3].ItemID {
		t.Fatalf("offset 3: %+v, want to start at %+v", page2.Items, all.Items[3])
	}
	// The catalogue matches the synthetic shop's clicks.
	src, _ := gen.NewSynthetic(gen.Config{Seed: 7, Users: 100, Items: 500, Categories: 10})
	var r gen.Record
	for i := range 1000 {
		src.Next(&r, testNow.Add(time.Duration(i)*time.Second))
		p, ok := s.cat.Product(r.Click.ItemID)
		if !ok || p.Category != r.Click.Category || p.Price != r.Click.Price {
			t.Fatalf("click %+v: catalogue has %+v, %v", r.Click, p, ok)
		}
	}
}

func TestCategoryNames(t *testing.T) {
	if len(departments) != gen.DefaultConfig().Categories {
		t.Fatalf("%d department names, want one per default category (%d)", len(departments), gen.DefaultConfig().Categories)
	}
	seen := map[string]bool{}
	for i := range 120 {
		n := CategoryName("c" + strconv.Itoa(i))
		if seen[n] {
			t.Fatalf("category name %q twice", n)
		}
		seen[n] = true
	}
	if CategoryName("shoes") != "shoes" || CategoryName("c-1") != "c-1" {
		t.Fatal("a category id not of the form c<n> is its own name")
	}
}

const recJSON = `{"event_id":"e-9","user_id":"alice","items":[{"item_id":%d,"score":0.5},{"item_id":999999,"score":0.25}],"strategy":"model","model_version":"v7","event_time_ms":%d,"processed_at_ms":%d}`

func TestRecommendationsAndEvents(t *testing.T) {
	s := newTestServer(t, nil)
	known := s.cat.Top("", 0, 1)[0]
	s.store.recs["alice"] = fmt.Appendf(nil, recJSON, known.ItemID, testNow.UnixMilli()-300, testNow.UnixMilli()-250)
	var rec Recommendations
	if res := s.do(t, "GET", "/v1/users/alice/recommendations", "", "", &rec); res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	if rec.EventID != "e-9" || rec.ModelVersion != "v7" || rec.Strategy != "model" || rec.AgeMs != 250 || len(rec.Items) != 2 {
		t.Fatalf("got %+v", rec)
	}
	if it := rec.Items[0]; it.Name != known.Name || it.Price != known.Price || it.CategoryName != known.CategoryName || it.Score != 0.5 {
		t.Fatalf("known item not enriched: %+v, catalogue %+v", it, known)
	}
	if it := rec.Items[1]; it.ItemID != 999999 || it.Name != "" {
		t.Fatalf("unknown item: %+v", it)
	}

	var ev EventsResponse
	s.do(t, "GET", "/v1/users/alice/events", "", "", &ev)
	if ev.UserID != "alice" || ev.Events == nil || len(ev.Events) != 0 {
		t.Fatalf("no events: got %+v, want an empty list", ev)
	}
	s.store.events["alice"] = fmt.Appendf(nil, `[{"item_id":%d,"category":%q,"event_type":"view","timestamp_ms":1},{"item_id":5,"category":"c2","event_type":"cart","timestamp_ms":2}]`, known.ItemID, known.Category)
	s.do(t, "GET", "/v1/users/alice/events", "", "", &ev)
	if len(ev.Events) != 2 || ev.Events[0].Name != known.Name || ev.Events[1].EventType != "cart" || ev.Events[1].CategoryName != CategoryName("c2") {
		t.Fatalf("got %+v", ev)
	}

	s.store.err = errors.New("connection refused")
	var e apiError
	if res := s.do(t, "GET", "/v1/users/alice/recommendations", "", "", &e); res.StatusCode != 503 || !strings.Contains(e.Detail, "connection refused") {
		t.Fatalf("store down: %d %+v", res.StatusCode, e)
	}
}

func TestStaticFiles(t *testing.T) {
	s := newTestServer(t, nil)
	for path, want := range map[string]string{"/": "Recommended for you", "/app.js": "EventSource", "/style.css": ".product"} {
		r := httptest.NewRecorder()
		s.ServeHTTP(r, httptest.NewRequest("GET", path, nil))
		if r.Code != 200 || !strings.Contains(r.Body.String(), want) || r.Header().Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s: %d, body has %q: %v", path, r.Code, want, strings.Contains(r.Body.String(), want))
		}
	}
}

// sseEvent is one event of a text/event-stream.
type sseEvent struct{ event, id, data string }

// sseReader reads events from a stream, skipping comments.
type sseReader struct{ sc *bufio.Scanner }

func newSSEReader(r io.Reader) *sseReader { return &sseReader{sc: bufio.NewScanner(r)} }

func (r *sseReader) next() (sseEvent, error) {
	var e sseEvent
	for r.sc.Scan() {
		line := r.sc.Text()
		switch {
		case line == "":
			if e.data != "" || e.event != "" {
				return e, nil
			}
		case strings.HasPrefix(line, "event: "):
			e.event = line[len("event: "):]
		case strings.HasPrefix(line, "id: "):
			e.id = line[len("id: "):]
		case strings.HasPrefix(line, "data: "):
			e.data = line[len("data: "):]
		}
	}
	if err := r.sc.Err(); err != nil {
		return e, err
	}
	return e, io.EOF
}

// openStream opens the user's stream and waits for its ready event.
func openStream(t *testing.T, ctx context.Context, base, user string, header http.Header) (*sseReader, *http.Response) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/users/"+user+"/recommendations/stream", nil)
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("stream: %d %s %s", res.StatusCode, res.Header.Get("Content-Type"), b)
	}
	rd := newSSEReader(res.Body)
	ev, err := rd.next()
	if err != nil || ev.event != "ready" || !strings.Contains(ev.data, user) {
		t.Fatalf("first event %+v (%v), want ready", ev, err)
	}
	return rd, res
}

func TestStream(t *testing.T) {
	s := newTestServer(t, nil)
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close) // after the streams' bodies are closed: Close waits for their handlers
	ctx := testenv.Context(t, 10*time.Second)

	rd, _ := openStream(t, ctx, hs.URL, "alice", nil)
	rd2, _ := openStream(t, ctx, hs.URL, "alice", nil)
	item := s.cat.Top("", 0, 1)[0]
	for i := range 3 {
		s.store.commit("bob", []byte(`{"event_id":"not-alice"}`)) // another user's: not delivered
		s.store.commit("alice", fmt.Appendf(nil, `{"event_id":"e-%d","user_id":"alice","items":[{"item_id":%d,"score":1}],"strategy":"category_popular","model_version":"","event_time_ms":1,"processed_at_ms":%d}`, i, item.ItemID, testNow.UnixMilli()-5))
		for _, r := range []*sseReader{rd, rd2} {
			ev, err := r.next()
			if err != nil {
				t.Fatal(err)
			}
			var rec Recommendations
			if err := json.Unmarshal([]byte(ev.data), &rec); err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("e-%d", i); ev.id != want || rec.EventID != want || rec.Items[0].Name != item.Name || rec.AgeMs != 5 {
				t.Fatalf("event %+v, want id %s with the product name and age 5 ms", ev, want)
			}
		}
	}

	// A client that reconnects with Last-Event-ID gets the latest if it missed it…
	rd3, _ := openStream(t, ctx, hs.URL, "alice", http.Header{"Last-Event-Id": {"e-1"}})
	ev, err := rd3.next()
	if err != nil || ev.id != "e-2" {
		t.Fatalf("catch-up event %+v (%v), want e-2", ev, err)
	}
	// …and nothing if it did not: the next event it reads is the next commit.
	rd4, _ := openStream(t, ctx, hs.URL, "alice", http.Header{"Last-Event-Id": {"e-2"}})
	s.store.commit("alice", []byte(`{"event_id":"e-3","user_id":"alice","items":[],"strategy":"global_popular"}`))
	if ev, err := rd4.next(); err != nil || ev.id != "e-3" {
		t.Fatalf("after an up-to-date reconnect: %+v (%v), want e-3", ev, err)
	}
}

func TestStreamLimit(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.MaxStreams = 1 })
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close) // after the streams' bodies are closed: Close waits for their handlers
	openStream(t, testenv.Context(t, 10*time.Second), hs.URL, "alice", nil)
	res, err := http.Get(hs.URL + "/v1/users/bob/recommendations/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var e apiError
	_ = json.NewDecoder(res.Body).Decode(&e)
	if res.StatusCode != http.StatusServiceUnavailable || e.Error != "too_many_streams" {
		t.Fatalf("second stream: %d %+v, want 503 too_many_streams", res.StatusCode, e)
	}
}

func TestServeShutsDownWithOpenStreams(t *testing.T) {
	s := newTestServer(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	base := "http://" + ln.Addr().String()
	rd, _ := openStream(t, testenv.Context(t, 10*time.Second), base, "alice", nil)
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(4 * time.Second):
		t.Fatal("Serve did not return within 4 s of the cancel: streams hold the shutdown")
	}
	if _, err := rd.next(); !errors.Is(err, io.EOF) {
		t.Fatalf("the open stream did not end cleanly: %v", err)
	}
	t.Logf("shut down with an open stream in %v", time.Since(start))
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("still serving after shutdown")
	}
}

// TestRecommendationScoreDigits: the API writes the scores with the digits
// the record holds (the hot path writes 6 significant digits of a float32),
// as it did when it decoded them into float64s.
func TestRecommendationScoreDigits(t *testing.T) {
	s := newTestServer(t, nil)
	for _, d := range []string{"0.83", "1e-07", "1.23457e+08", "0.333333", "-2.5", "0", "3.40282e+38", "1.4013e-45"} {
		raw := fmt.Appendf(nil, `{"event_id":"e","user_id":"u","items":[{"item_id":1,"score":%s}],"strategy":"model","model_version":"v","event_time_ms":1,"processed_at_ms":2}`, d)
		rec, err := s.decodeRecs(raw)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := json.Marshal(rec.Items[0].Score)
		f, _ := strconv.ParseFloat(d, 64)
		want, _ := json.Marshal(f)
		if string(got) != string(want) {
			t.Errorf("score %s: the API writes %s, want %s", d, got, want)
		}
	}
}
