// Command containers runs a command, the e2e suite, against Apache Kafka
// (KRaft, one node), Redis and the Temporal dev server in containers started
// with testcontainers-go, on machines that have a Docker engine:
//
//	scripts/task test:containers                  # go test -count=1 ./e2e
//	scripts/task test:containers -- -run TestKillWorkersExactlyOnce ./e2e
//
// It starts the containers, runs the command with the CLICKREC_TEST_*
// variables of internal/testenv pointing at them (the clickrec processes the
// tests start inherit them), stops the containers and exits with the
// command's exit code. Where no Docker engine answers it still runs the
// command, with CLICKREC_TEST_UNAVAILABLE set: the tests that need those
// servers skip with the reason, also under CI=true. The default, and what CI
// runs, is local processes started by scripts/test.sh.
//
// Tests that restart or partition a server of their own (a private broker,
// a private redis-server) still run it as a local process.
//
// It is a module of its own (internal/testenv/containers/go.mod) so that
// testcontainers-go and the Docker API stay out of clickrec's go.mod.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	tc "github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Images, overridable by environment variables of the same names.
var (
	kafkaImage    = image("CLICKREC_TEST_KAFKA_IMAGE", "apache/kafka:4.1.1")
	redisImage    = image("CLICKREC_TEST_REDIS_IMAGE", "redis:7.4")
	temporalImage = image("CLICKREC_TEST_TEMPORAL_IMAGE", "temporalio/temporal:1.5.1")
)

func image(env, def string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	return def
}

// unavailableEnv is internal/testenv's UnavailableEnv: this module does not
// depend on clickrec's.
const unavailableEnv = "CLICKREC_TEST_UNAVAILABLE"

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" {
		fmt.Fprintln(os.Stderr, "usage: containers command [arg...]   e.g. containers go test -count=1 ./e2e")
		os.Exit(2)
	}
	os.Exit(run(os.Args[1:]))
}

// run starts the containers, runs args with their addresses in the
// environment, stops the containers and returns the command's exit code.
func run(args []string) int {
	// Ctrl-C reaches the command as well (the same process group); the
	// containers stop once it has exited.
	signal.Ignore(os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	started, vars, err := start(ctx, os.Stderr)
	cancel()
	defer func() {
		for _, c := range started {
			_ = c.Terminate(context.Background())
		}
	}()
	env := os.Environ()
	if err != nil {
		fmt.Fprintf(os.Stderr, "containers: %v; the tests that need these servers skip\n", err)
		env = append(env, unavailableEnv+"=containers: "+err.Error())
	} else {
		env = append(env, vars...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = cmd.Run()
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		return max(ee.ExitCode(), 1)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "containers: %v\n", err)
		return 1
	}
	return 0
}

// start starts Kafka, Redis and Temporal. It returns what it started, to
// terminate also on error, and the CLICKREC_TEST_* variables (KEY=value)
// that point internal/testenv at them.
func start(ctx context.Context, log io.Writer) (started []tc.Container, vars []string, err error) {
	provider, err := tc.NewDockerProvider()
	if err != nil {
		return nil, nil, fmt.Errorf("no Docker engine (%v); run the local servers instead: scripts/test.sh", err)
	}
	defer provider.Close()
	if err := provider.Health(ctx); err != nil {
		return nil, nil, fmt.Errorf("no Docker engine answers (%v); run the local servers instead: scripts/test.sh", err)
	}

	// Kafka advertises the address clients use, so it needs a host port known
	// before it starts: a fixed one (CLICKREC_TEST_KAFKA_PORT, default 39092).
	kport := image("CLICKREC_TEST_KAFKA_PORT", "39092")
	fmt.Fprintf(log, "containers: starting %s on 127.0.0.1:%s\n", kafkaImage, kport)
	kafka, err := tc.GenericContainer(ctx, tc.GenericContainerRequest{Started: true, ContainerRequest: tc.ContainerRequest{
		Image:        kafkaImage,
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
		return started, nil, fmt.Errorf("starting Kafka (%s): %w", kafkaImage, err)
	}

	fmt.Fprintf(log, "containers: starting %s\n", redisImage)
	redis, err := tc.GenericContainer(ctx, tc.GenericContainerRequest{Started: true, ContainerRequest: tc.ContainerRequest{
		Image:        redisImage,
		ExposedPorts: []string{"6379/tcp"},
		WaitingFor:   wait.ForListeningPort("6379/tcp").WithStartupTimeout(time.Minute),
	}})
	if redis != nil {
		started = append(started, redis)
	}
	if err != nil {
		return started, nil, fmt.Errorf("starting Redis (%s): %w", redisImage, err)
	}
	redisAddr, err := endpoint(ctx, redis, "6379/tcp")
	if err != nil {
		return started, nil, err
	}

	fmt.Fprintf(log, "containers: starting %s (Temporal dev server)\n", temporalImage)
	temporal, err := tc.GenericContainer(ctx, tc.GenericContainerRequest{Started: true, ContainerRequest: tc.ContainerRequest{
		Image:        temporalImage,
		Cmd:          []string{"server", "start-dev", "--ip", "0.0.0.0"},
		ExposedPorts: []string{"7233/tcp"},
		WaitingFor:   wait.ForListeningPort("7233/tcp").WithStartupTimeout(2 * time.Minute),
	}})
	if temporal != nil {
		started = append(started, temporal)
	}
	if err != nil {
		return started, nil, fmt.Errorf("starting Temporal (%s): %w", temporalImage, err)
	}
	temporalAddr, err := endpoint(ctx, temporal, "7233/tcp")
	if err != nil {
		return started, nil, err
	}

	vars = []string{
		"CLICKREC_TEST_KAFKA_BROKERS=127.0.0.1:" + kport,
		"CLICKREC_TEST_REDIS_ADDR=" + redisAddr,
		"CLICKREC_TEST_TEMPORAL_ADDR=" + temporalAddr,
	}
	for _, v := range vars {
		fmt.Fprintf(log, "containers: %s\n", v)
	}
	return started, vars, nil
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
