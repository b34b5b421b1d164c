package serving

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/hotpath"
	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/model/onnx"
	"github.com/clickrec/clickrec/model/registry"
)

// redisDB is this package's own database of the test Redis.
const redisDB = 14

func testModel(t *testing.T, n int, seed uint64) *model.Model {
	t.Helper()
	m, err := model.Synthetic(n, 8, model.DefaultRetrieval, seed)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// top returns the top-3 item indices of a one-item session.
func top(t *testing.T, s model.Scorer, item int32) []int32 {
	t.Helper()
	out := [][]model.Rec{make([]model.Rec, 0, 3)}
	if err := s.Score([]model.Input{{Items: []int32{item}, Weights: []float32{1}}}, 3, out); err != nil {
		t.Fatal(err)
	}
	var ids []int32
	for _, r := range out[0] {
		ids = append(ids, r.Index)
	}
	return ids
}

// TestScorersAgree: both kinds of scorer, through Build and through
// NewScorer, rank the same items first.
func TestScorersAgree(t *testing.T) {
	lib := testenv.ORTLib(t)
	goOpts, onnxOpts := Options{Scorer: ScorerGo}, Options{Scorer: ScorerONNX, ORTLib: lib}
	for _, o := range []Options{goOpts, onnxOpts} {
		if err := o.Validate(); err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
	}
	ref, err := goOpts.NewScorer(testModel(t, 500, 1))
	if err != nil {
		t.Fatal(err)
	}
	want := top(t, ref, 7)
	viaFactory, err := onnxOpts.NewScorer(testModel(t, 500, 1))
	if err != nil {
		t.Fatal(err)
	}
	defer viaFactory.Close()
	s, err := onnxOpts.Build("v1", testModel(t, 500, 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Scorer.Close()
	if s.Version != "v1" || s.Model.Version != "v1" || s.Model.Factors != nil {
		t.Fatalf("served %q (model %q), factors kept: %v; want v1 and the Go copy of the factors dropped", s.Version, s.Model.Version, s.Model.Factors != nil)
	}
	for name, got := range map[string][]int32{"NewScorer": top(t, viaFactory, 7), "Build": top(t, s.Scorer, 7)} {
		if !slicesEqual(got, want) {
			t.Fatalf("onnx via %s ranks %v, the go scorer %v", name, got, want)
		}
	}
}

func slicesEqual(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestBuildRefusesAForeignGraph: a graph exported for another item table is
// refused, not served with the wrong items.
func TestBuildRefusesAForeignGraph(t *testing.T) {
	lib := testenv.ORTLib(t)
	other, err := onnx.Export(testModel(t, 300, 2), onnx.ExportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (Options{Scorer: ScorerONNX, ORTLib: lib}).Build("v1", testModel(t, 500, 1), other); err == nil {
		t.Fatal("a graph of another model was loaded")
	}
}

func TestValidate(t *testing.T) {
	for _, o := range []Options{{Scorer: "tpu"}, {Scorer: ScorerONNX, ORTLib: "/nonexistent/libonnxruntime.so.1"}, {Scorer: ScorerGo, ORTThreads: -1}} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

// TestFromDir serves a saved model under its saved version.
func TestFromDir(t *testing.T) {
	dir := t.TempDir()
	m := testModel(t, 200, 3)
	if err := model.Save(dir, m, model.Metadata{Version: "saved-1"}); err != nil {
		t.Fatal(err)
	}
	s, err := Options{Scorer: ScorerGo}.FromDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.Version != "saved-1" || s.Model.NumItems() != 200 {
		t.Fatalf("served %q with %d items", s.Version, s.Model.NumItems())
	}
	if _, err := (Options{Scorer: ScorerGo}).FromDir(t.TempDir()); err == nil {
		t.Fatal("an empty directory served a model")
	}
}

// registryDB returns a client of this package's test database, emptied now
// and when the test ends.
func registryDB(t *testing.T) *redis.Client {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t), DB: redisDB})
	if err := rc.FlushDB(testenv.Context(t, 10*time.Second)).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.FlushDB(context.Background()); rc.Close() })
	return rc
}

// TestFollow: the current version is served before Follow returns, a
// promotion swaps it, and a version that cannot load keeps the one served.
func TestFollow(t *testing.T) {
	rc := registryDB(t)
	ctx := testenv.Context(t, 30*time.Second)
	reg := registry.New(rc)
	register := func(v string, bin []byte) {
		t.Helper()
		if err := reg.Register(ctx, registry.Version{Meta: registry.Metadata{Metadata: model.Metadata{Version: v}}, Model: bin}, "test"); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.Promote(ctx, v, "test"); err != nil {
			t.Fatal(err)
		}
	}
	bin := func(m *model.Model) []byte {
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	register("v1", bin(testModel(t, 200, 1)))
	served := make(chan *hotpath.Serving, 4)
	failed := make(chan string, 4)
	log := slog.New(logTap{failed})
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := (Options{Scorer: ScorerGo}).Follow(fctx, reg, 50*time.Millisecond, func(s *hotpath.Serving) { served <- s }, log); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-served:
		if s.Version != "v1" {
			t.Fatalf("serving %s first, want v1", s.Version)
		}
	default:
		t.Fatal("Follow returned before serving the current version")
	}
	register("broken", []byte("not a model"))
	select {
	case v := <-failed:
		if v != "broken" {
			t.Fatalf("failed to load %s, want broken", v)
		}
	case s := <-served:
		t.Fatalf("served %s after a broken version was promoted", s.Version)
	case <-ctx.Done():
		t.Fatal("the broken version was never tried")
	}
	register("v2", bin(testModel(t, 300, 2)))
	select {
	case s := <-served:
		if s.Version != "v2" || s.Model.NumItems() != 300 {
			t.Fatalf("after the promotion serving %s (%d items), want v2", s.Version, s.Model.NumItems())
		}
	case <-ctx.Done():
		t.Fatal("v2 was never served")
	}
}

// TestFollowServesCacheWhenRegistryDown: a worker restarted while Redis is
// down serves the version it served last, from its local cache; without a
// cache, a registry that does not answer is an error, as before.
func TestFollowServesCacheWhenRegistryDown(t *testing.T) {
	rc := registryDB(t)
	ctx := testenv.Context(t, 30*time.Second)
	reg := registry.New(rc)
	b, err := testModel(t, 120, 3).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(ctx, registry.Version{Meta: registry.Metadata{Metadata: model.Metadata{Version: "v7"}}, Model: b}, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Promote(ctx, "v7", "test"); err != nil {
		t.Fatal(err)
	}
	opts := Options{Scorer: ScorerGo, CacheDir: t.TempDir()}
	follow := func(r *registry.Registry, o Options) (*hotpath.Serving, error) {
		fctx, cancel := context.WithCancel(ctx)
		t.Cleanup(cancel)
		var got *hotpath.Serving
		err := o.Follow(fctx, r, time.Minute, func(s *hotpath.Serving) { got = s }, slog.New(slog.DiscardHandler))
		return got, err
	}
	if s, err := follow(reg, opts); err != nil || s == nil || s.Version != "v7" {
		t.Fatalf("with the registry up: serving %v, %v; want v7", s, err)
	}
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 100 * time.Millisecond, MaxRetries: -1})
	defer down.Close()
	s, err := follow(registry.New(down), opts)
	if err != nil || s == nil || s.Version != "v7" || s.Model.NumItems() != 120 {
		t.Fatalf("with the registry down: serving %v, %v; want v7 from the cache", s, err)
	}
	if _, err := follow(registry.New(down), Options{Scorer: ScorerGo, CacheDir: t.TempDir()}); err == nil {
		t.Fatal("with the registry down and no cache: no error")
	}
	// A worker that served no model (the registry had none) serves none
	// again, the popularity fallback, when the registry is down.
	empty := Options{Scorer: ScorerGo, CacheDir: t.TempDir()}
	if err := rc.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if s, err := follow(reg, empty); err != nil || s != nil {
		t.Fatalf("with an empty registry: serving %v, %v; want none", s, err)
	}
	if s, err := follow(registry.New(down), empty); err != nil || s != nil {
		t.Fatalf("with the registry down after serving none: serving %v, %v; want none, no error", s, err)
	}
}

// logTap passes the version of every failed load to its channel.
type logTap struct{ failed chan<- string }

func (logTap) Enabled(context.Context, slog.Level) bool { return true }
func (l logTap) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelError {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "version" {
				select { // the watcher may retry: never block it
				case l.failed <- a.Value.String():
				default:
				}
			}
			return true
		})
	}
	return nil
}
func (l logTap) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l logTap) WithGroup(string) slog.Handler      { return l }
