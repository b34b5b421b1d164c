package kafkautil

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/internal/testenv"
)

func testTopics() Topics {
	p := testenv.Name("t")
	t, err := PrefixedTopics(p + "-")
	if err != nil {
		panic(err)
	}
	return t
}

// roundTrip creates the topics, produces a few records and reads them back.
func roundTrip(t *testing.T, cfg *Config, topics Topics) {
	ctx := testenv.Context(t, 60*time.Second)
	cl, err := kgo.NewClient(append(cfg.Opts("kafkautil-test"), kgo.ConsumeTopics(string(topics.Events)),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := Ping(ctx, cfg, cl); err != nil {
		t.Fatal(err)
	}
	if err := EnsureTopics(ctx, cfg, cl, topics); err != nil {
		t.Fatal(err)
	}
	if err := EnsureTopics(ctx, cfg, cl, topics); err != nil {
		t.Fatalf("second EnsureTopics is not idempotent: %v", err)
	}
	const n = 50
	for i := range n {
		r := &kgo.Record{Topic: string(topics.Events), Key: []byte{byte('a' + i%7)}, Value: []byte{byte(i)}}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[byte]bool{}
	for len(seen) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of %d records: %v", len(seen), n, err)
		}
		fs.EachRecord(func(r *kgo.Record) { seen[r.Value[0]] = true })
	}
	adm := kadm.NewClient(cl)
	td, err := adm.ListTopics(ctx, string(topics.Changelog))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(td[string(topics.Changelog)].Partitions); got != cfg.Partitions {
		t.Fatalf("changelog has %d partitions, want %d", got, cfg.Partitions)
	}
}

func TestRealKafka(t *testing.T) {
	cfg := &Config{Brokers: testenv.KafkaBrokers(t), Partitions: 3, ReplicationFactor: 1, DialTimeout: 10 * time.Second}
	roundTrip(t, cfg, testTopics())
}

func TestEmbedded(t *testing.T) {
	cfg := &Config{Partitions: 2, ReplicationFactor: 1, DialTimeout: 5 * time.Second}
	e, err := StartEmbedded(cfg, DefaultTopics)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	roundTrip(t, cfg, testTopics())
}

func TestCopartitionCheck(t *testing.T) {
	cfg := &Config{Partitions: 2, ReplicationFactor: 1, DialTimeout: 5 * time.Second}
	e, err := StartEmbedded(cfg, DefaultTopics)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	topics := testTopics()
	cl, err := kgo.NewClient(cfg.Opts("kafkautil-test")...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := testenv.Context(t, 20*time.Second)
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 5, 1, nil, string(topics.Changelog)); err != nil {
		t.Fatal(err)
	}
	err = EnsureTopics(ctx, cfg, cl, topics)
	if err == nil || !strings.Contains(err.Error(), "not co-partitioned") {
		t.Fatalf("got %v, want a co-partitioning error", err)
	}
}

func TestPingUnreachable(t *testing.T) {
	cfg := &Config{Brokers: cli.Strings{"127.0.0.1:1"}, Partitions: 1, ReplicationFactor: 1, DialTimeout: 500 * time.Millisecond}
	cl, err := kgo.NewClient(cfg.Opts("x")...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	err = Ping(context.Background(), cfg, cl)
	if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), "--kafka-brokers") {
		t.Fatalf("got %v, want a usage error naming --kafka-brokers", err)
	}
}
