package main

import (
	"testing"

	"github.com/clickrec/clickrec/internal/kafkautil"
)

// TestWorkerTopicPrefix: --topic-prefix (or CLICKREC_WORKER_TOPIC_PREFIX)
// prefixes every topic the activities read, as the hot path's flag does; no
// prefix keeps the standard names; a name Kafka would refuse is a usage error.
func TestWorkerTopicPrefix(t *testing.T) {
	base := []string{"--kafka-brokers", "127.0.0.1:9092"}
	f, err := parseWorkerFlags(base)
	if err != nil {
		t.Fatal(err)
	}
	if f.topics != kafkautil.DefaultTopics {
		t.Fatalf("without --topic-prefix: topics %+v, want the standard names", f.topics)
	}

	f, err = parseWorkerFlags(append(base, "--topic-prefix", "e2e-1-"))
	if err != nil {
		t.Fatal(err)
	}
	d := kafkautil.DefaultTopics
	for got, want := range map[string]string{
		string(f.topics.Events): "e2e-1-" + string(d.Events), string(f.topics.Recs): "e2e-1-" + string(d.Recs),
		string(f.topics.Windows): "e2e-1-" + string(d.Windows), string(f.topics.Changelog): "e2e-1-" + string(d.Changelog),
		string(f.topics.Late): "e2e-1-" + string(d.Late), string(f.topics.DLQ): "e2e-1-" + string(d.DLQ),
	} {
		if got != want {
			t.Errorf("--topic-prefix e2e-1-: topic %q, want %q", got, want)
		}
	}

	t.Setenv("CLICKREC_WORKER_TOPIC_PREFIX", "env-")
	if f, err = parseWorkerFlags(base); err != nil || string(f.topics.Events) != "env-"+string(d.Events) {
		t.Fatalf("CLICKREC_WORKER_TOPIC_PREFIX=env-: events topic %q (%v)", f.topics.Events, err)
	}
	if f, err = parseWorkerFlags(append(base, "--topic-prefix", "flag-")); err != nil || string(f.topics.Events) != "flag-"+string(d.Events) {
		t.Fatalf("the flag must win over the variable: events topic %q (%v)", f.topics.Events, err)
	}

	if code := run([]string{"worker", "--kafka-brokers", "127.0.0.1:9092", "--topic-prefix", "bad/prefix-"}); code != 2 {
		t.Fatalf("--topic-prefix with '/': exit %d, want 2", code)
	}
}
