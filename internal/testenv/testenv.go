// Package testenv finds the real servers that integration tests run against:
// Apache Kafka, redis-server, the Temporal dev server and the ONNX Runtime
// library, started by scripts/test.sh (or scripts/*.sh start by hand). Addresses
// come from CLICKREC_TEST_* variables with loopback defaults.
//
// A test that cannot find its server skips with the command that starts it — but
// under CI=true it fails, so a missing install step cannot turn into a green run.
package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// CI reports whether the tests run in CI (CI=true), where missing servers fail.
func CI() bool { return os.Getenv("CI") == "true" || os.Getenv("CI") == "1" }

// UnavailableEnv names the variable that makes every server of this package
// skip with its value as the reason, also under CI: for a run that explicitly
// asked for servers this machine cannot give. The containers runner
// (internal/testenv/containers) sets it where no Docker engine answers.
const UnavailableEnv = "CLICKREC_TEST_UNAVAILABLE"

// unavailable returns the reason of UnavailableEnv, "" if unset.
func unavailable() string { return os.Getenv(UnavailableEnv) }

// Missing reports a missing server: Fatal under CI, Skip otherwise.
func Missing(t testing.TB, what, how string) {
	t.Helper()
	if r := unavailable(); r != "" {
		t.Skip(r)
	}
	msg := fmt.Sprintf("%s not available (%s)", what, how)
	if CI() {
		t.Fatal(msg + "; CI=true, so this fails instead of skipping")
	}
	t.Skip(msg)
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func reachable(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// KafkaBrokers returns the brokers of a real Kafka cluster (CLICKREC_TEST_KAFKA_BROKERS,
// default 127.0.0.1:9092).
func KafkaBrokers(t testing.TB) []string {
	t.Helper()
	if r := unavailable(); r != "" {
		t.Skip(r)
	}
	brokers := strings.Split(env("CLICKREC_TEST_KAFKA_BROKERS", "127.0.0.1:9092"), ",")
	if err := reachable(brokers[0]); err != nil {
		Missing(t, "Kafka at "+brokers[0], "start it with scripts/kafka.sh start, or set CLICKREC_TEST_KAFKA_BROKERS: "+err.Error())
	}
	return brokers
}

// RedisAddr returns the address of a real redis-server (CLICKREC_TEST_REDIS_ADDR,
// default 127.0.0.1:6379).
func RedisAddr(t testing.TB) string {
	t.Helper()
	if r := unavailable(); r != "" {
		t.Skip(r)
	}
	addr := env("CLICKREC_TEST_REDIS_ADDR", "127.0.0.1:6379")
	if err := reachable(addr); err != nil {
		Missing(t, "redis-server at "+addr, "start it with scripts/redis.sh start, or set CLICKREC_TEST_REDIS_ADDR: "+err.Error())
	}
	return addr
}

// TemporalAddr returns the address of a Temporal frontend (CLICKREC_TEST_TEMPORAL_ADDR,
// default 127.0.0.1:7233).
func TemporalAddr(t testing.TB) string {
	t.Helper()
	if r := unavailable(); r != "" {
		t.Skip(r)
	}
	addr := env("CLICKREC_TEST_TEMPORAL_ADDR", "127.0.0.1:7233")
	if err := reachable(addr); err != nil {
		Missing(t, "Temporal at "+addr, "start it with scripts/temporal.sh start, or set CLICKREC_TEST_TEMPORAL_ADDR: "+err.Error())
	}
	return addr
}

// ORTLib returns the absolute path of libonnxruntime.so (CLICKREC_ONNXRUNTIME_LIB,
// default the path scripts/onnxruntime.sh installs to).
func ORTLib(t testing.TB) string {
	t.Helper()
	def := ""
	if home, err := os.UserHomeDir(); err == nil {
		def = home + "/.cache/clickrec/onnxruntime-1.24.3/libonnxruntime.so.1"
	}
	p := env("CLICKREC_ONNXRUNTIME_LIB", def)
	if _, err := os.Stat(p); err != nil {
		Missing(t, "the ONNX Runtime library", "fetch it with scripts/onnxruntime.sh install, or set CLICKREC_ONNXRUNTIME_LIB: "+err.Error())
	}
	return p
}

var seq atomic.Int64

// Name returns a name unique to this test run, for topics, groups and key prefixes
// on shared servers: "<base>-<unix nanos>-<n>".
func Name(base string) string {
	return fmt.Sprintf("%s-%d-%d", base, time.Now().UnixNano(), seq.Add(1))
}

// Context returns a context cancelled when the test ends or after d, whichever
// is first: every blocking call in an integration test is bounded.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
