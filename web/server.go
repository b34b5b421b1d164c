// Package web is clickrec's web backend and storefront: an HTTP API over the
// Redis feature store (or, without Redis, over the Kafka topics themselves),
// an endpoint that turns a posted click into a record on user_events, a
// server-sent-events stream of a user's recommendations as the hot path
// commits them, and a small storefront page that shows it all live.
//
// Routes:
//
//	GET  /                                       the storefront (embedded static files)
//	GET  /v1/catalogue                           products of the synthetic shop
//	GET  /v1/users/{id}/recommendations          latest recommendations, with their age
//	GET  /v1/users/{id}/recommendations/stream   new recommendations (text/event-stream)
//	GET  /v1/users/{id}/events                   recent events, newest last
//	POST /v1/events                              a click: validated, produced to user_events, 202
//	GET  /healthz                                200 once the store answers
//
// Errors are JSON objects {"error": code, "detail": text}, with "reason" for
// an invalid click (the event package's rejection reason). Requests to /v1/
// are rate limited per client address (token bucket, 429 with Retry-After).
package web

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/wire"
)

//go:embed static
var staticFiles embed.FS

// Config shapes a Server.
type Config struct {
	MaxBodyBytes     int64         // largest POST body; larger ones get 413
	RateLimit        rate.Limit    // requests per second per client address on /v1/; rate.Inf: no limit
	RateBurst        int           // bucket size of the rate limit
	MaxStreams       int           // concurrent recommendation streams, all clients together
	Heartbeat        time.Duration // comment sent on an idle stream so proxies keep it open
	ProduceTimeout   time.Duration // how long POST /v1/events waits for Kafka's acknowledgement
	SubscribeTimeout time.Duration // how long a new stream waits for its subscription
	EventLimits      event.Limits  // what a posted click may be
	CatalogueLimit   int           // products per /v1/catalogue page unless ?limit= says otherwise
}

// DefaultConfig returns the defaults: 16 KiB bodies, 20 requests/s per client
// with bursts of 40, 1,000 streams, a heartbeat every 15 s.
func DefaultConfig() Config {
	return Config{
		MaxBodyBytes:     16 << 10,
		RateLimit:        20,
		RateBurst:        40,
		MaxStreams:       1000,
		Heartbeat:        15 * time.Second,
		ProduceTimeout:   5 * time.Second,
		SubscribeTimeout: 5 * time.Second,
		EventLimits:      event.DefaultLimits,
		CatalogueLimit:   48,
	}
}

// maxCatalogueLimit bounds ?limit= of /v1/catalogue.
const maxCatalogueLimit = 500

// Server is the HTTP API and the storefront. It is an http.Handler; Serve
// runs it on a listener with graceful shutdown.
type Server struct {
	cfg      Config
	store    Store
	prod     Producer
	cat      *Catalogue
	log      *slog.Logger
	now      func() time.Time
	mux      *http.ServeMux
	limiter  *clientLimiter
	streams  chan struct{} // one token per open stream
	stopping chan struct{} // closed when Serve begins to shut down
}

// New returns a server over store (reads and streams), prod (POST
// /v1/events) and cat (the storefront's products and the names in
// responses). log may be nil.
func New(cfg Config, store Store, prod Producer, cat *Catalogue, log *slog.Logger) (*Server, error) {
	switch {
	case store == nil || prod == nil || cat == nil:
		return nil, errors.New("web: a store, a producer and a catalogue are required")
	case cfg.MaxBodyBytes <= 0:
		return nil, fmt.Errorf("web: MaxBodyBytes must be positive, got %d", cfg.MaxBodyBytes)
	case cfg.RateLimit <= 0:
		return nil, fmt.Errorf("web: RateLimit must be positive (rate.Inf for none), got %v", cfg.RateLimit)
	case cfg.RateBurst < 1:
		return nil, fmt.Errorf("web: RateBurst must be at least 1, got %d", cfg.RateBurst)
	case cfg.MaxStreams < 1:
		return nil, fmt.Errorf("web: MaxStreams must be at least 1, got %d", cfg.MaxStreams)
	case cfg.Heartbeat <= 0 || cfg.ProduceTimeout <= 0 || cfg.SubscribeTimeout <= 0:
		return nil, errors.New("web: Heartbeat, ProduceTimeout and SubscribeTimeout must be positive")
	}
	if cfg.CatalogueLimit <= 0 {
		cfg.CatalogueLimit = DefaultConfig().CatalogueLimit
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg: cfg, store: store, prod: prod, cat: cat, log: log, now: time.Now,
		mux:      http.NewServeMux(),
		limiter:  newClientLimiter(cfg.RateLimit, cfg.RateBurst),
		streams:  make(chan struct{}, cfg.MaxStreams),
		stopping: make(chan struct{}),
	}
	static, err := fs.Sub(staticFiles, "static")
	if err != nil {
		return nil, fmt.Errorf("web: embedded files: %w", err)
	}
	files := http.FileServerFS(static)
	s.mux.Handle("/", methods(files, http.MethodGet, http.MethodHead))
	s.mux.Handle("/healthz", methods(http.HandlerFunc(s.healthz), http.MethodGet, http.MethodHead))
	s.mux.Handle("/v1/", s.api(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no API route %s (see GET /v1/catalogue, /v1/users/{id}/recommendations, /v1/users/{id}/events, POST /v1/events)", r.URL.Path))
	})))
	s.mux.Handle("/v1/catalogue", s.api(methods(http.HandlerFunc(s.catalogue), http.MethodGet, http.MethodHead)))
	s.mux.Handle("/v1/events", s.api(methods(http.HandlerFunc(s.postEvent), http.MethodPost)))
	s.mux.Handle("/v1/users/{id}/recommendations", s.api(methods(s.user(s.recommendations), http.MethodGet, http.MethodHead)))
	s.mux.Handle("/v1/users/{id}/recommendations/stream", s.api(methods(s.user(s.stream), http.MethodGet)))
	s.mux.Handle("/v1/users/{id}/events", s.api(methods(s.user(s.events), http.MethodGet, http.MethodHead)))
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
	s.mux.ServeHTTP(w, r)
}

// Serve serves HTTP on ln until ctx ends, then shuts down gracefully: open
// streams are ended, requests in flight get up to 5 s to finish.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second, // streams lift it per write
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving HTTP on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	close(s.stopping)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("shutting the HTTP server down: %w", err)
	}
	return nil
}

// apiError is the body of every error response.
type apiError struct {
	Error  string `json:"error"`
	Reason string `json:"reason,omitempty"`
	Detail string `json:"detail"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":"internal","detail":"encoding the response failed"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, code, detail string) {
	writeJSON(w, status, apiError{Error: code, Detail: detail})
}

// methods answers 405 with a JSON body and an Allow header to other methods.
func methods(h http.Handler, allowed ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, m := range allowed {
			if r.Method == m {
				h.ServeHTTP(w, r)
				return
			}
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", fmt.Sprintf("%s %s: allowed methods are %s", r.Method, r.URL.Path, strings.Join(allowed, ", ")))
	})
}

// clientAddr is the address a request is rate limited by: the connection's
// remote IP. Forwarding headers are not trusted (any client can set them), so
// behind a reverse proxy all its clients share one bucket.
func clientAddr(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// api applies the per-client rate limit.
func (s *Server) api(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client := clientAddr(r)
		if ok, wait := s.limiter.allow(client, s.now()); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
			writeError(w, http.StatusTooManyRequests, "rate_limited", fmt.Sprintf("too many requests from %s: the limit is %g per second with bursts of %d; retry in %v",
				client, float64(s.cfg.RateLimit), s.cfg.RateBurst, wait.Round(time.Millisecond)))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// checkUserID applies the event schema's rules for user_id.
func checkUserID(id string, maxLen int) error {
	switch {
	case id == "":
		return errors.New("user id is empty")
	case maxLen > 0 && len(id) > maxLen:
		return fmt.Errorf("user id is %d bytes, limit %d", len(id), maxLen)
	case !utf8.ValidString(id):
		return errors.New("user id is not valid UTF-8")
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] == 0x7f {
			return errors.New("user id contains a control character")
		}
	}
	return nil
}

// user validates the {id} path segment before calling h.
func (s *Server) user(h func(http.ResponseWriter, *http.Request, string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := checkUserID(id, s.cfg.EventLimits.MaxIDLen); err != nil {
			writeError(w, http.StatusBadRequest, "bad_user_id", err.Error())
			return
		}
		h(w, r, id)
	})
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// CatalogueResponse is the body of GET /v1/catalogue.
type CatalogueResponse struct {
	Categories []Category `json:"categories"`
	Items      []Product  `json:"items"`
	Total      int        `json:"total"` // products in the category (or the catalogue)
}

func (s *Server) catalogue(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	category := q.Get("category")
	if category != "" && !s.cat.HasCategory(category) {
		writeError(w, http.StatusBadRequest, "unknown_category", fmt.Sprintf("category %q is not in the catalogue (see the categories of GET /v1/catalogue)", category))
		return
	}
	intParam := func(name string, def, lo, hi int) (int, bool) {
		v := q.Get(name)
		if v == "" {
			return def, true
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			writeError(w, http.StatusBadRequest, "bad_parameter", fmt.Sprintf("%s=%q: want an integer from %d to %d", name, v, lo, hi))
			return 0, false
		}
		return n, true
	}
	limit, ok := intParam("limit", s.cfg.CatalogueLimit, 1, maxCatalogueLimit)
	if !ok {
		return
	}
	offset, ok := intParam("offset", 0, 0, math.MaxInt32)
	if !ok {
		return
	}
	total := s.cat.Len()
	if category != "" {
		total = len(s.cat.byCategory[category])
	}
	writeJSON(w, http.StatusOK, CatalogueResponse{Categories: s.cat.Categories(), Items: s.cat.Top(category, offset, limit), Total: total})
}

// RecItem is a recommended item with what the catalogue knows of it.
type RecItem struct {
	ItemID       int64   `json:"item_id"`
	Score        float64 `json:"score"`
	Name         string  `json:"name,omitempty"`
	Category     string  `json:"category,omitempty"`
	CategoryName string  `json:"category_name,omitempty"`
	Price        float64 `json:"price,omitempty"`
}

// Recommendations is a recommendation record as the API returns it: the hot
// path's record (a wire.Recommendation) with product details and its age.
type Recommendations struct {
	EventID       string    `json:"event_id"`
	UserID        string    `json:"user_id"`
	Items         []RecItem `json:"items"`
	Strategy      string    `json:"strategy"`
	ModelVersion  string    `json:"model_version"`
	EventTimeMs   int64     `json:"event_time_ms"`
	ProcessedAtMs int64     `json:"processed_at_ms"`
	// AgeMs is how long before the response the recommendation was computed.
	AgeMs int64 `json:"age_ms"`
}

// decodeRecs parses a recommendation record and adds product details.
func (s *Server) decodeRecs(raw []byte) (*Recommendations, error) {
	wr, err := wire.DecodeRecommendation(raw)
	if err != nil {
		return nil, err
	}
	rec := Recommendations{
		EventID: wr.EventID, UserID: wr.UserID, Items: make([]RecItem, len(wr.Items)),
		Strategy: wr.Strategy, ModelVersion: wr.ModelVersion, EventTimeMs: wr.EventTimeMs, ProcessedAtMs: wr.ProcessedAtMs,
	}
	for i, wi := range wr.Items {
		it := &rec.Items[i]
		it.ItemID, it.Score = wi.ItemID, wi.WrittenScore()
		if p, ok := s.cat.Product(it.ItemID); ok {
			it.Name, it.Category, it.CategoryName, it.Price = p.Name, p.Category, p.CategoryName, p.Price
		}
	}
	rec.AgeMs = max(0, s.now().UnixMilli()-rec.ProcessedAtMs)
	return &rec, nil
}

func (s *Server) recommendations(w http.ResponseWriter, r *http.Request, user string) {
	raw, err := s.store.Latest(r.Context(), user)
	if errors.Is(err, ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no recommendations for user %q yet (they appear after the user's first on-time click)", user))
		return
	}
	if err != nil {
		s.log.Error("reading recommendations", "user", user, "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the feature store did not answer: "+err.Error())
		return
	}
	rec, err := s.decodeRecs(raw)
	if err != nil {
		s.log.Error("stored recommendation is unreadable", "user", user, "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "the stored recommendation is unreadable")
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

// Event is one of a user's recent events, with the product's name and price.
type Event struct {
	ItemID       int64   `json:"item_id"`
	Category     string  `json:"category"`
	EventType    string  `json:"event_type"`
	TimestampMs  int64   `json:"timestamp_ms"`
	Name         string  `json:"name,omitempty"`
	CategoryName string  `json:"category_name,omitempty"`
	Price        float64 `json:"price,omitempty"`
}

// EventsResponse is the body of GET /v1/users/{id}/events.
type EventsResponse struct {
	UserID string  `json:"user_id"`
	Events []Event `json:"events"` // newest last
}

func (s *Server) events(w http.ResponseWriter, r *http.Request, user string) {
	raw, err := s.store.Events(r.Context(), user)
	resp := EventsResponse{UserID: user, Events: []Event{}}
	switch {
	case errors.Is(err, ErrNotFound):
		writeJSON(w, http.StatusOK, resp)
		return
	case err != nil:
		s.log.Error("reading events", "user", user, "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the feature store did not answer: "+err.Error())
		return
	}
	if err := json.Unmarshal(raw, &resp.Events); err != nil {
		s.log.Error("stored events are unreadable", "user", user, "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "the stored events are unreadable")
		return
	}
	for i := range resp.Events {
		e := &resp.Events[i]
		e.CategoryName = CategoryName(e.Category)
		if p, ok := s.cat.Product(e.ItemID); ok {
			e.Name, e.Price = p.Name, p.Price
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

// Accepted is the body of a 202 answer to POST /v1/events.
type Accepted struct {
	EventID string `json:"event_id"`
	UserID  string `json:"user_id"`
	Ack
}

func (s *Server) postEvent(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", fmt.Sprintf("Content-Type %q: send the click as application/json", ct))
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the request body exceeds %d bytes", tooBig.Limit))
			return
		}
		writeError(w, http.StatusBadRequest, "bad_body", "reading the request body: "+err.Error())
		return
	}
	c, err := event.Decode(body, s.now(), s.cfg.EventLimits)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid_event", Reason: string(event.ReasonOf(err)), Detail: invalidDetail(err)})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ProduceTimeout)
	defer cancel()
	ack, err := s.prod.Produce(ctx, []byte(c.UserID), c.AppendJSON(nil))
	if err != nil {
		s.log.Error("producing a click", "event_id", c.EventID, "user", c.UserID, "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the click could not be written to Kafka: "+err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, Accepted{EventID: c.EventID, UserID: c.UserID, Ack: ack})
}

func invalidDetail(err error) string {
	var ie *event.InvalidError
	if errors.As(err, &ie) {
		return ie.Detail
	}
	return err.Error()
}

// stream sends the user's new recommendations as server-sent events:
//
//	event: ready          once the subscription is active (data: {"user_id": …})
//	id: <event_id>        one message per recommendation (data: Recommendations JSON)
//	: keep-alive          a comment every Heartbeat
//
// A client reconnecting with Last-Event-ID first gets the latest
// recommendation if it is not that one.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, user string) {
	rc := http.NewResponseController(w)
	select {
	case s.streams <- struct{}{}:
		defer func() { <-s.streams }()
	default:
		writeError(w, http.StatusServiceUnavailable, "too_many_streams", fmt.Sprintf("the server already serves %d streams; retry later", s.cfg.MaxStreams))
		return
	}
	sctx, cancel := context.WithTimeout(r.Context(), s.cfg.SubscribeTimeout)
	sub, err := s.store.Subscribe(sctx, user)
	cancel()
	if err != nil {
		s.log.Warn("subscribing to recommendations", "user", user, "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "could not follow the user's recommendations: "+err.Error())
		return
	}
	defer sub.Close()

	// A stream outlives the server's read and write timeouts; each write gets
	// its own deadline instead, so a stuck client is dropped.
	_ = rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(chunk []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := w.Write(chunk); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	ready, _ := json.Marshal(map[string]string{"user_id": user})
	if !send(fmt.Appendf(nil, "retry: 2000\nevent: ready\ndata: %s\n\n", ready)) {
		return
	}
	message := func(raw []byte) bool {
		rec, err := s.decodeRecs(raw)
		if err != nil {
			s.log.Warn("skipping an unreadable recommendation", "user", user, "err", err)
			return true
		}
		b, _ := json.Marshal(rec)
		return send(fmt.Appendf(nil, "id: %s\ndata: %s\n\n", sseField(rec.EventID), b))
	}
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		if raw, err := s.store.Latest(r.Context(), user); err == nil {
			if head, err := wire.DecodeRecommendation(raw); err == nil && head.EventID != last && !message(raw) {
				return
			}
		}
	}
	beat := time.NewTicker(s.cfg.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case raw := <-sub.C:
			if !message(raw) {
				return
			}
		case <-beat.C:
			if !send([]byte(": keep-alive\n\n")) {
				return
			}
		case <-r.Context().Done():
			return
		case <-s.stopping:
			return
		}
	}
}

// sseField keeps a value on one line of the event stream.
func sseField(v string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
}
