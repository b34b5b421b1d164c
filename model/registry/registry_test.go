package registry

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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
