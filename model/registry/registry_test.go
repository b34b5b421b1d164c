package registry

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/internal/redisutil/redistest"
	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/model"
)

// newTestRegistry returns a registry on its own Redis database, flushed.
func newTestRegistry(t *testing.T) (*Registry, *redis.Client) {
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t), DB: 9})
	t.Cleanup(func() { rc.FlushDB(context.Background()); rc.Close() })
	if err := rc.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	return New(rc), rc
}

func version(name string) Version {
	return Version{Meta: Metadata{Metadata: model.Metadata{Version: name, Items: 3}}, Model: []byte("bin-" + name), ONNX: []byte("onnx-" + name)}
}

func TestPromoteRollback(t *testing.T) {
	r, rc := newTestRegistry(t)
	// Pub/sub is global across Redis databases and other packages' tests promote
	// too: unique names keep their messages apart from ours.
	v1, v2 := testenv.Name("v1"), testenv.Name("v2")
	ctx := testenv.Context(t, 20*time.Second)
	for _, v := range []string{v1, v2} {
		if err := r.Register(ctx, version(v), "trained"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Promote(ctx, "v9", "typo"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("promoting an unknown version: %v", err)
	}
	if _, err := r.Rollback(ctx, "nothing served"); !errors.Is(err, ErrNoPrevious) {
		t.Fatalf("rollback with nothing served: %v", err)
	}
	sub := rc.Subscribe(ctx, Channel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if prev, err := r.Promote(ctx, v1, "first"); err != nil || prev != "" {
		t.Fatalf("promote v1: prev %q, %v", prev, err)
	}
	if prev, err := r.Promote(ctx, v2, "better on holdout"); err != nil || prev != v1 {
		t.Fatalf("promote v2: prev %q, %v", prev, err)
	}
	for _, want := range []string{v1, v2} {
		msg, err := sub.ReceiveMessage(ctx)
		if err != nil || msg.Payload != want {
			t.Fatalf("published %v, %v; want %s", msg, err, want)
		}
	}
	now, err := r.Rollback(ctx, "PSI 0.31 on category mix")
	if err != nil || now != v1 {
		t.Fatalf("rollback: %q, %v", now, err)
	}
	if cur, _ := r.Current(ctx); cur != v1 {
		t.Fatalf("current %q after rollback, want v1", cur)
	}
	hist, err := r.History(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 5 || hist[0].Action != "rollback" || hist[0].Version != v1 || hist[0].Previous != v2 || hist[0].Reason != "PSI 0.31 on category mix" {
		t.Fatalf("history %+v", hist)
	}
	got, err := r.Get(ctx, v2)
	if err != nil || string(got.Model) != "bin-"+v2 || string(got.ONNX) != "onnx-"+v2 || got.Meta.ONNXBytes != len("onnx-"+v2) {
		t.Fatalf("get v2: %+v, %v", got, err)
	}
	if list, _ := r.List(ctx); len(list) != 2 {
		t.Fatalf("list %v", list)
	}
	// A second rollback goes back past v1's promotion: v1 had nothing before it.
	if _, err := r.Rollback(ctx, "again"); !errors.Is(err, ErrNoPrevious) {
		t.Fatalf("second rollback: %v", err)
	}
}

func TestWatch(t *testing.T) {
	r, _ := newTestRegistry(t)
	ctx := testenv.Context(t, 20*time.Second)
	v1, v2 := testenv.Name("v1"), testenv.Name("v2")
	for _, v := range []string{v1, v2} {
		if err := r.Register(ctx, version(v), "trained"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Promote(ctx, v1, "first"); err != nil {
		t.Fatal(err)
	}
	loads := make(chan string, 4)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		r.Watch(wctx, time.Hour, "", func(_ context.Context, v string) error { loads <- v; return nil })
		close(done)
	}()
	defer func() { cancel(); <-done }()
	if v := <-loads; v != v1 {
		t.Fatalf("first load %q, want v1", v)
	}
	// The watcher may not have subscribed yet; promote until it hears it (the
	// periodic check is an hour away, so only pub/sub can deliver this).
	for {
		if _, err := r.Promote(ctx, v2, "newer"); err != nil {
			t.Fatal(err)
		}
		select {
		case v := <-loads:
			if v != v2 {
				t.Fatalf("load %q, want v2", v)
			}
			return
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("watcher never loaded v2")
		}
	}
}

// TestRollbackFrom rolls back only from the version the caller judged: a
// promotion that lands in between is left serving, with the history and
// the notification channel untouched.
func TestRollbackFrom(t *testing.T) {
	r, rc := newTestRegistry(t)
	ctx := testenv.Context(t, 20*time.Second)
	v1, v2, v3 := testenv.Name("v1"), testenv.Name("v2"), testenv.Name("v3")
	for _, v := range []string{v1, v2, v3} {
		if err := r.Register(ctx, version(v), "trained"); err != nil {
			t.Fatal(err)
		}
	}
	sub := rc.Subscribe(ctx, Channel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	published := func(want string) {
		t.Helper()
		msg, err := sub.ReceiveMessage(ctx)
		if err != nil || msg.Payload != want {
			t.Fatalf("published %v, %v; want %s", msg, err, want)
		}
	}
	if _, err := r.RollbackFrom(ctx, v1, "nothing served"); !errors.Is(err, ErrNotCurrent) {
		t.Fatalf("rollback from %s with nothing served: %v, want ErrNotCurrent", v1, err)
	}
	if _, err := r.RollbackFrom(ctx, "", "no version"); err == nil {
		t.Fatal("rollback from no version succeeded")
	}
	for _, v := range []string{v1, v2} {
		if _, err := r.Promote(ctx, v, "better"); err != nil {
			t.Fatal(err)
		}
		published(v)
	}

	// The drift check judged v2; v3 is promoted before its rollback runs.
	judged, err := r.Current(ctx)
	if err != nil || judged != v2 {
		t.Fatalf("current %q, %v; want %s", judged, err, v2)
	}
	other := redis.NewClient(&redis.Options{Addr: rc.Options().Addr, DB: rc.Options().DB})
	defer other.Close()
	hook := redistest.BeforeFirstScript(func(ctx context.Context) error {
		_, err := New(other).Promote(ctx, v3, "promoted by someone else")
		return err
	})
	hooked := redis.NewClient(&redis.Options{Addr: rc.Options().Addr, DB: rc.Options().DB})
	defer hooked.Close()
	hooked.AddHook(hook)
	before, err := r.History(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(hooked).RollbackFrom(ctx, judged, "PSI 0.31 on category mix")
	if hook.Err() != nil || !hook.Fired() {
		t.Fatalf("the promotion in between did not happen: %v", hook.Err())
	}
	published(v3)
	var nc *NotCurrentError
	if !errors.Is(err, ErrNotCurrent) || !errors.As(err, &nc) || nc.Expected != v2 || nc.Current != v3 {
		t.Fatalf("rollback from %s after %s was promoted: %v; want a NotCurrentError naming both", v2, v3, err)
	}
	if cur, _ := r.Current(ctx); cur != v3 {
		t.Fatalf("current %q after the refused rollback, want %s (the promotion in between)", cur, v3)
	}
	after, err := r.History(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before)+1 || after[0].Action != "promote" || after[0].Version != v3 {
		t.Fatalf("history after the refused rollback: %+v; want only %s's promotion added", after[:min(3, len(after))], v3)
	}

	// The normal path: v3 is judged and still serves.
	now, err := r.RollbackFrom(ctx, v3, "PSI 0.4 on top1_score")
	if err != nil || now != v2 {
		t.Fatalf("rollback from %s: %q, %v; want %s", v3, now, err, v2)
	}
	published(v2) // and nothing was published for the refused rollback
	if cur, _ := r.Current(ctx); cur != v2 {
		t.Fatalf("current %q, want %s", cur, v2)
	}
	hist, err := r.History(ctx, 1)
	if err != nil || len(hist) != 1 {
		t.Fatalf("history: %v, %v", hist, err)
	}
	if e := hist[0]; e.Action != "rollback" || e.Version != v2 || e.Previous != v3 || e.Reason != "PSI 0.4 on top1_score" || e.Time.IsZero() {
		t.Fatalf("rollback event %+v", e)
	}
	// Rolling back walks back along the promotions: v2 → v1, then nothing.
	if now, err := r.RollbackFrom(ctx, v2, "again"); err != nil || now != v1 {
		t.Fatalf("rollback from %s: %q, %v; want %s", v2, now, err, v1)
	}
	if _, err := r.RollbackFrom(ctx, v1, "first version"); !errors.Is(err, ErrNoPrevious) {
		t.Fatalf("rollback from %s: %v, want ErrNoPrevious", v1, err)
	}
	if cur, _ := r.Current(ctx); cur != v1 {
		t.Fatalf("current %q, want %s", cur, v1)
	}
}

// TestRegisterRejectsInvalidReference refuses versions whose drift reference
// would make a worker panic, naming the feature.
func TestRegisterRejectsInvalidReference(t *testing.T) {
	r, _ := newTestRegistry(t)
	ctx := testenv.Context(t, 20*time.Second)
	f := func(ref, wantInErr string) {
		t.Helper()
		v := version(testenv.Name("bad"))
		v.Meta.Reference = json.RawMessage(ref)
		err := r.Register(ctx, v, "trained")
		if !errors.Is(err, ErrInvalidReference) || !strings.Contains(err.Error(), wantInErr) {
			t.Fatalf("register with reference %s: %v; want ErrInvalidReference mentioning %q", ref, err, wantInErr)
		}
		if _, err := r.Meta(ctx, v.Meta.Version); !errors.Is(err, ErrNotFound) {
			t.Fatalf("the refused version is stored: %v", err)
		}
	}
	f(`{"category_mix":{"kind":"numeric","edges":[1,2],"counts":[1,2,3]}}`, "category_mix")
	f(`{"session_length_ms":{"kind":"numeric","edges":[5,1],"counts":[1,2,3]}}`, "session_length_ms")
	f(`{"top1_score":null}`, "top1_score")

	good := version(testenv.Name("good"))
	good.Meta.Reference = json.RawMessage(`{"category_mix":{"kind":"categorical","categories":["shoes"],"counts":[3,1]}}`)
	if err := r.Register(ctx, good, "trained"); err != nil {
		t.Fatalf("register with a valid reference: %v", err)
	}
}
