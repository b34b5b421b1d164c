// Package redisutil is the Redis connection shared by clickrec's components:
// flags with environment fallbacks and a startup check with an actionable error.
package redisutil

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickrec/clickrec/internal/cli"
)

// Config is the connection to a Redis server.
type Config struct {
	Addr        string
	Password    string
	DB          int
	DialTimeout time.Duration
}

// Register adds the Redis flags.
func (c *Config) Register(fs *cli.FlagSet) {
	fs.StringVar(&c.Addr, "redis-addr", "127.0.0.1:6379", "Redis address host:port (feature store, model registry, popularity tables)")
	fs.Env("redis-addr", "CLICKREC_REDIS_ADDR")
	fs.StringVar(&c.Password, "redis-password", "", "Redis AUTH password")
	fs.Env("redis-password", "CLICKREC_REDIS_PASSWORD")
	fs.IntVar(&c.DB, "redis-db", 0, "Redis database number")
	fs.Env("redis-db", "CLICKREC_REDIS_DB")
	fs.DurationVar(&c.DialTimeout, "redis-dial-timeout", 5*time.Second, "how long to wait for Redis at startup")
	fs.Env("redis-dial-timeout", "CLICKREC_REDIS_DIAL_TIMEOUT")
}

// Client returns a go-redis client for c. It does not connect yet.
func (c *Config) Client() *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:         c.Addr,
		Password:     c.Password,
		DB:           c.DB,
		DialTimeout:  c.DialTimeout,
		ReadTimeout:  2 * time.Second,
		WriteTimeout: 2 * time.Second,
		// A context's deadline bounds a command too (go-redis ignores it
		// otherwise): a bounded check at startup must not block on a
		// paused Redis for the read timeout and its retries.
		ContextTimeoutEnabled: true,
	})
}

// Ping checks that Redis answers, trying again for --redis-dial-timeout (a
// process restarted during a short Redis outage or failover starts once it
// is over); its error names the flag to fix.
func Ping(ctx context.Context, c *Config, rc *redis.Client) error {
	ctx, cancel := context.WithTimeout(ctx, c.DialTimeout)
	defer cancel()
	for {
		err := rc.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return cli.Usagef("cannot reach Redis at %s within --redis-dial-timeout %v: %v (check --redis-addr / CLICKREC_REDIS_ADDR; start one with scripts/redis.sh start)", c.Addr, c.DialTimeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
