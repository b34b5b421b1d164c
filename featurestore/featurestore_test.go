package featurestore

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/internal/testenv"
)

// redisDB is this package's own database of the test Redis: the tests store
// the popularity table, and must not touch the one a running hot path reads.
const redisDB = 10

func TestUserKey(t *testing.T) {
	f := func(user, want string) {
		t.Helper()
		if got := UserKey(user); got != want {
			t.Fatalf("UserKey(%q) = %q, want %q", user, got, want)
		}
	}
	f("u1", "user:{u1}")
	f("", "user:{}")
	f("a:b", "user:{a:b}")
}

func TestRecsChannel(t *testing.T) {
	if got := RecsChannel("u1"); got != "recs:u1" {
		t.Fatalf("RecsChannel(u1) = %q, want recs:u1", got)
	}
}

// TestPopularityJSON pins the JSON of a table: the workflow writes it, the
// hot path reads it, possibly in different releases.
func TestPopularityJSON(t *testing.T) {
	p := &Popularity{Version: "v1", Global: []Scored{{ItemID: 7, Score: 2.5}}, ByCategory: map[string][]Scored{"c1": {{ItemID: 3, Score: 1}}}}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"version":"v1","global":[{"item_id":7,"score":2.5}],"by_category":{"c1":[{"item_id":3,"score":1}]}}`
	if string(b) != want {
		t.Fatalf("JSON of a table:\n got %s\nwant %s", b, want)
	}
	var back Popularity
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, p) {
		t.Fatalf("round trip: got %+v, want %+v", back, *p)
	}
}

// TestStoreLoadPopularity stores a table, sees it announced on
// PopularityChannel and loads it back; before any table, Load says redis.Nil.
func TestStoreLoadPopularity(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t), DB: redisDB})
	ctx := testenv.Context(t, 10*time.Second)
	if err := rc.Del(ctx, PopularityKey).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Del(context.Background(), PopularityKey); rc.Close() })

	if _, err := LoadPopularity(ctx, rc); !errors.Is(err, redis.Nil) {
		t.Fatalf("LoadPopularity without a table: err %v, want redis.Nil", err)
	}
	sub := rc.Subscribe(ctx, PopularityChannel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription confirmation
		t.Fatal(err)
	}
	p := &Popularity{Version: "pop-1", Global: []Scored{{ItemID: 1, Score: 3}, {ItemID: 2, Score: 1}}, ByCategory: map[string][]Scored{"c": {{ItemID: 2, Score: 1}}}}
	if err := StorePopularity(ctx, rc, p); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Payload != "pop-1" {
		t.Fatalf("%s announced %q, want the version pop-1", PopularityChannel, msg.Payload)
	}
	got, err := LoadPopularity(ctx, rc)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, p) {
		t.Fatalf("loaded %+v, want %+v", *got, *p)
	}
}
