package web

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/clickrec/clickrec/featurestore"
	"github.com/clickrec/clickrec/internal/testenv"
)

// redisServer is a server over a RedisStore on the test Redis; user ids must
// come from testenv.Name so runs on a shared server do not collide.
func redisServer(t *testing.T) (*Server, *RedisStore, *redis.Client) {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { rc.Close() })
	st := NewRedisStore(rc)
	t.Cleanup(func() { st.Close() })
	cfg := DefaultConfig()
	cfg.RateLimit = rate.Inf
	s, err := New(cfg, st, &fakeProducer{}, smallCatalogue(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, st, rc
}

func TestRedisReads(t *testing.T) {
	s, _, rc := redisServer(t)
	ctx := testenv.Context(t, 10*time.Second)
	user := testenv.Name("web-user")
	key := featurestore.UserKey(user)
	t.Cleanup(func() { rc.Del(context.Background(), key) })
	ts := &testServer{Server: s}

	var e apiError
	if res := ts.do(t, "GET", "/v1/users/"+user+"/recommendations", "", "", &e); res.StatusCode != http.StatusNotFound || e.Error != "not_found" {
		t.Fatalf("unknown user: %d %+v", res.StatusCode, e)
	}
	var ev EventsResponse
	if res := ts.do(t, "GET", "/v1/users/"+user+"/events", "", "", &ev); res.StatusCode != 200 || len(ev.Events) != 0 {
		t.Fatalf("unknown user's events: %d %+v", res.StatusCode, ev)
	}

	item := s.cat.Top("", 0, 1)[0]
	processed := time.Now().Add(-2 * time.Second).UnixMilli()
	// The hash as the hot path's write script leaves it.
	if err := rc.HSet(ctx, key,
		"seq", 2,
		"features", `{"session_id":"s1","session_events":2}`,
		"events", fmt.Sprintf(`[{"item_id":%d,"category":%q,"event_type":"view","timestamp_ms":1},{"item_id":%d,"category":%q,"event_type":"purchase","timestamp_ms":2}]`, item.ItemID, item.Category, item.ItemID, item.Category),
		"recs", fmt.Sprintf(`{"event_id":"e-2","user_id":%q,"items":[{"item_id":%d,"score":0.9}],"strategy":"model","model_version":"v3","event_time_ms":%d,"processed_at_ms":%d}`, user, item.ItemID, processed-5, processed),
	).Err(); err != nil {
		t.Fatal(err)
	}
	var rec Recommendations
	if res := ts.do(t, "GET", "/v1/users/"+user+"/recommendations", "", "", &rec); res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	if rec.EventID != "e-2" || rec.UserID != user || rec.ModelVersion != "v3" || rec.Strategy != "model" ||
		len(rec.Items) != 1 || rec.Items[0].Name != item.Name || rec.AgeMs < 2000 || rec.AgeMs > 60_000 {
		t.Fatalf("got %+v", rec)
	}
	if res := ts.do(t, "GET", "/v1/users/"+user+"/events", "", "", &ev); res.StatusCode != 200 ||
		len(ev.Events) != 2 || ev.Events[1].EventType != "purchase" || ev.Events[0].Name != item.Name {
		t.Fatalf("events: %d %+v", res.StatusCode, ev)
	}
	r := httptest.NewRecorder()
	s.ServeHTTP(r, httptest.NewRequest("GET", "/healthz", nil))
	if r.Code != 200 {
		t.Fatalf("healthz: %d %s", r.Code, r.Body)
	}
}

func TestRedisStream(t *testing.T) {
	s, _, rc := redisServer(t)
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	ctx := testenv.Context(t, 20*time.Second)
	user, other := testenv.Name("web-user"), testenv.Name("web-user")

	rd, _ := openStream(t, ctx, hs.URL, user, nil) // ready: Redis confirmed the SUBSCRIBE
	item := s.cat.Top("", 0, 1)[0]
	for i := range 3 {
		if err := rc.Publish(ctx, featurestore.RecsChannel(other), `{"event_id":"not-mine"}`).Err(); err != nil {
			t.Fatal(err)
		}
		msg := fmt.Sprintf(`{"event_id":"e-%d","user_id":%q,"items":[{"item_id":%d,"score":0.5}],"strategy":"model","model_version":"v1","event_time_ms":1,"processed_at_ms":%d}`, i, user, item.ItemID, time.Now().UnixMilli())
		if n, err := rc.Publish(ctx, featurestore.RecsChannel(user), msg).Result(); err != nil || n < 1 {
			t.Fatalf("PUBLISH reached %d subscribers (%v)", n, err)
		}
		ev, err := rd.next()
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("e-%d", i); ev.id != want {
			t.Fatalf("got event %+v, want %s", ev, want)
		}
	}
}

// TestRedisSubscriptionChurn subscribes and unsubscribes a user's channel
// faster than Redis confirms: every subscription that Subscribe returned must
// receive what is published afterwards.
func TestRedisSubscriptionChurn(t *testing.T) {
	_, st, rc := redisServer(t)
	ctx := testenv.Context(t, 30*time.Second)
	user := testenv.Name("web-churn")
	recv := func(sub *Subscription, want string) {
		t.Helper()
		select {
		case got := <-sub.C:
			if string(got) != want {
				t.Fatalf("received %s, want %s", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("nothing received, want %s", want)
		}
	}
	for i := range 30 {
		a, err := st.Subscribe(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		a.Close()                         // UNSUBSCRIBE in flight…
		b, err := st.Subscribe(ctx, user) // …when the next subscriber arrives
		if err != nil {
			t.Fatal(err)
		}
		c, err := st.Subscribe(ctx, user) // already subscribed: returns at once
		if err != nil {
			t.Fatal(err)
		}
		msg := fmt.Sprintf(`{"event_id":"churn-%d"}`, i)
		if err := rc.Publish(ctx, featurestore.RecsChannel(user), msg).Err(); err != nil {
			t.Fatal(err)
		}
		recv(b, msg)
		recv(c, msg)
		b.Close()
		msg2 := msg + " "
		if err := rc.Publish(ctx, featurestore.RecsChannel(user), msg2).Err(); err != nil {
			t.Fatal(err)
		}
		recv(c, msg2) // closing b does not unsubscribe c
		c.Close()
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Subscribe(ctx, user); err == nil {
		t.Fatal("Subscribe on a closed store succeeded")
	}
}
