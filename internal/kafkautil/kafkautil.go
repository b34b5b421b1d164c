// Package kafkautil holds what every clickrec component needs to talk to Kafka:
// connection flags (brokers, SASL and TLS), topic names and their specs, topic
// creation with a co-partitioning check, a reachability check with an
// actionable error, and the embedded in-process broker (franz-go's kfake) used
// by the demo and unit tests.
package kafkautil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/internal/cli"
)

// Stream is a topic with cleanup.policy=delete; Table is a compacted topic.
type (
	Stream string
	Table  string
)

// Topics names every topic clickrec reads or writes.
type Topics struct {
	Events    Stream // user_events: clicks, keyed by user id
	Recs      Stream // recommendations: one record per on-time click
	Changelog Table  // hotpath-changelog: per-user state, co-partitioned with Events
	Late      Stream // user_events_late: clicks beyond the allowed lateness, unchanged
	DLQ       Stream // user_events_dlq: invalid records, reason in a header
	Windows   Stream // user_session_windows: 1-minute per-user window results
	// Knowledge: item-knowledge, what clicks teach about items (itemknow
	// increments), co-partitioned with Events and read whole by every worker.
	Knowledge Stream
}

// DefaultTopics are the topic names of DESIGN.md.
var DefaultTopics = Topics{
	Events:    "user_events",
	Recs:      "recommendations",
	Changelog: "hotpath-changelog",
	Late:      "user_events_late",
	DLQ:       "user_events_dlq",
	Windows:   "user_session_windows",
	Knowledge: "item-knowledge",
}

// Config is the connection to a Kafka cluster.
type Config struct {
	Brokers           cli.Strings
	Partitions        int
	ReplicationFactor int
	DialTimeout       time.Duration
	Security          Security // SASL and TLS; the zero value is plaintext
}

// Register adds the Kafka flags.
func (c *Config) Register(fs *cli.FlagSet) {
	fs.Var(&c.Brokers, "kafka-brokers", "comma-separated Kafka seed brokers (host:port); hotpath, serve and worker require them, while demo, gen and loadtest run an embedded in-process broker when this is empty")
	fs.Env("kafka-brokers", "CLICKREC_KAFKA_BROKERS")
	fs.IntVar(&c.Partitions, "kafka-partitions", 4, "partitions of topics clickrec creates (user_events decides how far the hot path scales out)")
	fs.Env("kafka-partitions", "CLICKREC_KAFKA_PARTITIONS")
	fs.IntVar(&c.ReplicationFactor, "kafka-replication-factor", 1, "replication factor of topics clickrec creates (3 in production)")
	fs.Env("kafka-replication-factor", "CLICKREC_KAFKA_REPLICATION_FACTOR")
	fs.DurationVar(&c.DialTimeout, "kafka-dial-timeout", 10*time.Second, "how long to wait for the brokers at startup before giving up")
	fs.Env("kafka-dial-timeout", "CLICKREC_KAFKA_DIAL_TIMEOUT")
	c.Security.register(fs)
}

// Validate checks the flag values.
func (c *Config) Validate() error {
	if c.Partitions < 1 || c.Partitions > 10000 {
		return cli.Usagef("--kafka-partitions must be between 1 and 10000, got %d", c.Partitions)
	}
	if c.ReplicationFactor < 1 {
		return cli.Usagef("--kafka-replication-factor must be at least 1, got %d", c.ReplicationFactor)
	}
	for _, b := range c.Brokers {
		if !strings.Contains(b, ":") {
			return cli.Usagef("--kafka-brokers %q: want host:port", b)
		}
	}
	return c.Security.validate()
}

// MetadataMinAge is the least time between two metadata refreshes of a
// clickrec client; see Opts.
const MetadataMinAge = 100 * time.Millisecond

// Opts are the client options every clickrec client starts from.
func (c *Config) Opts(clientID string) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(clientID),
		kgo.DialTimeout(c.DialTimeout),
		// A produce the broker answers with a retriable error waits for a
		// metadata refresh, and franz-go spaces refreshes by this minimum age
		// (default 5 s). Transactional produces hit it in normal operation:
		// with KIP-890 a produce racing the previous commit's markers gets
		// CONCURRENT_TRANSACTIONS, and the hot path stalled up to 5 s on it
		// (seen at 500 clicks/s on a starved machine: p95 5.2 s). Refreshes
		// are only triggered by errors, so a short minimum age costs little.
		kgo.MetadataMinAge(MetadataMinAge),
	}
	opts = append(opts, c.Security.opts()...)
	// CLICKREC_KAFKA_CLIENT_LOG=debug|info|warn|error logs the Kafka client's own
	// decisions (rebalances, transactions) to stderr, for troubleshooting.
	if lvl, ok := clientLogLevels[os.Getenv("CLICKREC_KAFKA_CLIENT_LOG")]; ok {
		opts = append(opts, kgo.WithLogger(kgo.BasicLogger(os.Stderr, lvl, func() string {
			return time.Now().Format("15:04:05.000 ") + clientID + " "
		})))
	}
	return opts
}

var clientLogLevels = map[string]kgo.LogLevel{
	"debug": kgo.LogLevelDebug, "info": kgo.LogLevelInfo, "warn": kgo.LogLevelWarn, "error": kgo.LogLevelError,
}

// Embedded is an in-process Kafka cluster (kfake) for the demo and unit tests.
// It supports transactions and consumer groups, and keeps nothing on disk.
type Embedded struct {
	*kfake.Cluster
}

// StartEmbedded starts an embedded cluster with every topic of DefaultTopics
// created with the given partition count, and points c at it. The embedded
// broker speaks plaintext only, so c's SASL and TLS settings are cleared.
func StartEmbedded(c *Config, topics Topics) (*Embedded, error) {
	cl, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.DefaultNumPartitions(c.Partitions),
		kfake.SeedTopics(int32(c.Partitions), topics.names()...),
		kfake.AllowAutoTopicCreation(),
	)
	if err != nil {
		return nil, fmt.Errorf("starting the embedded Kafka broker: %w", err)
	}
	c.Brokers = cli.Strings(cl.ListenAddrs())
	c.Security = Security{}
	return &Embedded{cl}, nil
}

func (t Topics) names() []string {
	return []string{string(t.Events), string(t.Recs), string(t.Changelog), string(t.Late), string(t.DLQ), string(t.Windows), string(t.Knowledge)}
}

// Ping checks that the brokers answer within the dial timeout. Its error tells the
// user which flag to fix.
func Ping(ctx context.Context, c *Config, cl *kgo.Client) error {
	ctx, cancel := context.WithTimeout(ctx, c.DialTimeout)
	defer cancel()
	if err := cl.Ping(ctx); err != nil {
		if sec := c.Security.describe(); sec != "" {
			return cli.Usagef("cannot reach Kafka at %s with %s: %v (check --kafka-brokers and the --kafka-sasl-* / --kafka-tls* settings)", strings.Join(c.Brokers, ","), sec, err)
		}
		return cli.Usagef("cannot reach Kafka at %s: %v (check --kafka-brokers / CLICKREC_KAFKA_BROKERS)", strings.Join(c.Brokers, ","), err)
	}
	return nil
}

// EnsureTopics creates the topics that do not exist yet (idempotent) and checks
// that the changelog is co-partitioned with the events topic: the hot path
// restores partition p of its state from partition p of the changelog.
func EnsureTopics(ctx context.Context, c *Config, cl *kgo.Client, t Topics) error {
	adm := kadm.NewClient(cl)
	compact := map[string]*string{"cleanup.policy": kadm.StringPtr("compact"), "min.compaction.lag.ms": kadm.StringPtr("60000")}
	specs := []struct {
		name    string
		configs map[string]*string
	}{
		{string(t.Events), nil}, {string(t.Recs), nil}, {string(t.Changelog), compact},
		{string(t.Late), nil}, {string(t.DLQ), nil}, {string(t.Windows), nil},
		// A worker reads the last --ik-lookback of it (8 h by default) when it
		// starts; a day keeps that with room to spare.
		{string(t.Knowledge), map[string]*string{"retention.ms": kadm.StringPtr("86400000")}},
	}
	for _, s := range specs {
		_, err := adm.CreateTopic(ctx, int32(c.Partitions), int16(c.ReplicationFactor), s.configs, s.name)
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("creating topic %s: %w", s.name, err)
		}
	}
	// A topic just created may not be in the metadata yet: retry briefly.
	var ev, ch, kn kadm.TopicDetail
	for attempt := 0; ; attempt++ {
		details, err := adm.ListTopics(ctx, string(t.Events), string(t.Changelog), string(t.Knowledge))
		if err != nil {
			return fmt.Errorf("listing topics: %w", err)
		}
		ev, ch, kn = details[string(t.Events)], details[string(t.Changelog)], details[string(t.Knowledge)]
		if ev.Err == nil && ch.Err == nil && kn.Err == nil && len(ev.Partitions) > 0 && len(ch.Partitions) > 0 && len(kn.Partitions) > 0 {
			break
		}
		if attempt == 50 {
			return fmt.Errorf("describing topics: %w", errors.Join(ev.Err, ch.Err, kn.Err))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if len(ev.Partitions) != len(ch.Partitions) {
		return fmt.Errorf("topics are not co-partitioned: %s has %d partitions, %s has %d; the changelog must match the events topic",
			t.Events, len(ev.Partitions), t.Changelog, len(ch.Partitions))
	}
	if len(kn.Partitions) != len(ev.Partitions) {
		return fmt.Errorf("topics are not co-partitioned: %s has %d partitions, %s has %d; the item-knowledge topic must match the events topic",
			t.Events, len(ev.Partitions), t.Knowledge, len(kn.Partitions))
	}
	return nil
}

// PrefixedTopics returns DefaultTopics with every name prefixed by
// prefix. The prefix may hold ASCII letters, digits, '.', '_' and '-' only, the
// characters Kafka allows in topic names.
func PrefixedTopics(prefix string) (Topics, error) {
	if i := strings.IndexFunc(prefix, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
	}); i >= 0 {
		return Topics{}, fmt.Errorf("topic prefix %q: character %q is not allowed in Kafka topic names (use letters, digits, '.', '_', '-')", prefix, prefix[i])
	}
	d := DefaultTopics
	return Topics{
		Events:    Stream(prefix + string(d.Events)),
		Recs:      Stream(prefix + string(d.Recs)),
		Changelog: Table(prefix + string(d.Changelog)),
		Late:      Stream(prefix + string(d.Late)),
		DLQ:       Stream(prefix + string(d.DLQ)),
		Windows:   Stream(prefix + string(d.Windows)),
		Knowledge: Stream(prefix + string(d.Knowledge)),
	}, nil
}
