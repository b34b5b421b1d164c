// Package containers runs the servers of the integration tests as containers,
// with testcontainers-go, on machines that have a Docker engine:
//
//	CLICKREC_TEST_SERVERS=containers go test ./e2e
//
// It starts Apache Kafka (KRaft, one node), Redis and the Temporal dev server,
// and points internal/testenv (and the clickrec processes the tests start) at
// them through the CLICKREC_TEST_* variables. Where no Docker engine answers,
// the tests that need those servers skip with the reason. The default, and
// what CI runs here, is local processes started by scripts/test.sh.
//
// Tests that restart or partition a server of their own (a private broker,
// a private redis-server) still run it as a local process.
package containers

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	tc "github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/clickrec/clickrec/internal/testenv"
)

// Images, overridable by environment variables of the same names.
var (
	KafkaImage    = image("CLICKREC_TEST_KAFKA_IMAGE", "apache/kafka:4.1.1")
	RedisImage    = image("CLICKREC_TEST_REDIS_IMAGE", "redis:7.4")
	TemporalImage = image("CLICKREC_TEST_TEMPORAL_IMAGE", "temporalio/temporal:1.5.1")
)

func image(env, def string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	return def
}

// Selected reports whether CLICKREC_TEST_SERVERS=containers.
func Selected() bool { return os.Getenv("CLICKREC_TEST_SERVERS") == "containers" }

// Setup starts the containers if Selected. It returns a function that stops
// them. Without a Docker engine it marks the servers unavailable in testenv
// (tests skip, saying why) and returns a no-op.
func Setup(ctx context.Context, log io.Writer) (stop func()) {
	if !Selected() {
		return func() {}
	}
	started, err := start(ctx, log)
	if err != nil {
		for _, c := range started {
			_ = c.Terminate(context.Background())
		}
		testenv.Unavailable("CLICKREC_TEST_SERVERS=containers: " + err.Error())
		return func() {}
	}
	return func() {
		for _, c := range started {
			_ = c.Terminate(context.Background())
		}
	}
}

func start(ctx context.Context, log io.Writer) ([]tc.Container, error) {
	provider, err := tc.NewDockerProvider()
	if err != nil {
		return nil, fmt.Errorf("no Docker engine (%v); run the local servers instead: scripts/test.sh", err)
	}
	defer provider.Close()
	if err := provider.Health(ctx); err != nil {
		return nil, fmt.Errorf("no Docker engine answers (%v); run the local servers instead: scripts/test.sh", err)
	}
	var started []tc.Container

	// Kafka advertises the address clients use, so it needs a host port known
	// before it starts: a fixed one (CLICKREC_TEST_KAFKA_PORT, default 39092).
	kport := image("CLICKREC_TEST_KAFKA_PORT", "39092")
	fmt.Fprintf(log, "containers: starting %s on 127.0.0.1:%s\n", KafkaImage, kport)
	kafka, err := tc.GenericContainer(ctx, tc.GenericContainerRequest{Started: true, ContainerRequest: tc.ContainerRequest{
		Image:        KafkaImage,
		ExposedPorts: []string{kport + "/tcp"},
		Env: map[string]string{
			"KAFKA_NODE_ID":                                  "1",
			"KAFKA_PROCESS_ROLES":                            "broker,controller",
			"KAFKA_CONTROLLER_QUORUM_VOTERS":                 "1@localhost:9093",
			"KAFKA_LISTENERS":                                "PLAINTEXT://0.0.0.0:" + kport + ",CONTROLLER://localhost:9093",
			"KAFKA_ADVERTISED_LISTENERS":                     "PLAINTEXT://127.0.0.1:" + kport,
			"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP":           "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
			"KAFKA_CONTROLLER_LISTENER_NAMES":                "CONTROLLER",
			"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "1",
			"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
			"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":            "1",
			"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS":         "0",
			"KAFKA_ADD_PARTITIONS_TO_TXN_RETRY_BACKOFF_MS":   "1",
			"KAFKA_NUM_PARTITIONS":                           "4",
		},
		HostConfigModifier: func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{network.MustParsePort(kport + "/tcp"): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: kport}}}
		},
		WaitingFor: wait.ForLog("Kafka Server started").WithStartupTimeout(2 * time.Minute),
	}})
	if kafka != nil {
		started = append(started, kafka)
	}
	if err != nil {
		return started, fmt.Errorf("starting Kafka (%s): %w", KafkaImage, err)
	}

	fmt.Fprintf(log, "containers: starting %s\n", RedisImage)
	redis, err := tc.GenericContainer(ctx, tc.GenericContainerRequest{Started: true, ContainerRequest: tc.ContainerRequest{
		Image:        RedisImage,
		ExposedPorts: []string{"6379/tcp"},
		WaitingFor:   wait.ForListeningPort("6379/tcp").WithStartupTimeout(time.Minute),
	}})
	if redis != nil {
		started = append(started, redis)
	}
	if err != nil {
		return started, fmt.Errorf("starting Redis (%s): %w", RedisImage, err)
	}
	redisAddr, err := endpoint(ctx, redis, "6379/tcp")
	if err != nil {
		return started, err
	}

	fmt.Fprintf(log, "containers: starting %s (Temporal dev server)\n", TemporalImage)
	temporal, err := tc.GenericContainer(ctx, tc.GenericContainerRequest{Started: true, ContainerRequest: tc.ContainerRequest{
		Image:        TemporalImage,
		Cmd:          []string{"server", "start-dev", "--ip", "0.0.0.0"},
		ExposedPorts: []string{"7233/tcp"},
		WaitingFor:   wait.ForListeningPort("7233/tcp").WithStartupTimeout(2 * time.Minute),
	}})
	if temporal != nil {
		started = append(started, temporal)
	}
	if err != nil {
		return started, fmt.Errorf("starting Temporal (%s): %w", TemporalImage, err)
	}
	temporalAddr, err := endpoint(ctx, temporal, "7233/tcp")
	if err != nil {
		return started, err
	}

	// Child processes (clickrec binaries) inherit these too.
	for k, v := range map[string]string{
		"CLICKREC_TEST_KAFKA_BROKERS": "127.0.0.1:" + kport,
		"CLICKREC_TEST_REDIS_ADDR":    redisAddr,
		"CLICKREC_TEST_TEMPORAL_ADDR": temporalAddr,
	} {
		if err := os.Setenv(k, v); err != nil {
			return started, err
		}
		fmt.Fprintf(log, "containers: %s=%s\n", k, v)
	}
	return started, nil
}

func endpoint(ctx context.Context, c tc.Container, port string) (string, error) {
	host, err := c.Host(ctx)
	if err != nil {
		return "", err
	}
	p, err := c.MappedPort(ctx, port)
	if err != nil {
		return "", err
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	return fmt.Sprintf("%s:%d", host, p.Num()), nil
}
