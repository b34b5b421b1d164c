package redisutil

import (
	"strings"
	"testing"
	"time"

	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/internal/testenv"
)

func TestRealRedis(t *testing.T) {
	cfg := Config{Addr: testenv.RedisAddr(t), DialTimeout: 5 * time.Second}
	rc := cfg.Client()
	defer rc.Close()
	ctx := testenv.Context(t, 10*time.Second)
	if err := Ping(ctx, &cfg, rc); err != nil {
		t.Fatal(err)
	}
	key := testenv.Name("redisutil-test")
	if err := rc.Set(ctx, key, "v1", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	defer rc.Del(ctx, key)
	if got, err := rc.Get(ctx, key).Result(); err != nil || got != "v1" {
		t.Fatalf("GET %s = %q, %v", key, got, err)
	}
}

func TestPingUnreachable(t *testing.T) {
	cfg := Config{Addr: "127.0.0.1:1", DialTimeout: 500 * time.Millisecond}
	rc := cfg.Client()
	defer rc.Close()
	err := Ping(testenv.Context(t, 5*time.Second), &cfg, rc)
	if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), "--redis-addr") {
		t.Fatalf("got %v, want a usage error naming --redis-addr", err)
	}
}
