package hotpath

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/itemknow"
)

// Config is the hot path's behaviour. The zero value is not usable; start from
// DefaultConfig or Register the flags.
type Config struct {
	Group      string // consumer group of all hot path workers
	InstanceID string // static group member id and transactional id suffix; unique per worker

	OutOfOrderness  time.Duration // watermark = max event time − this
	AllowedLateness time.Duration // late events within this still update state and windows
	Window          time.Duration // tumbling window size
	SessionTTL      time.Duration // a user idle this long (event time) is forgotten
	SessionGap      time.Duration // without a session_id, a gap this long starts a new session
	DwellCap        time.Duration // longest gap counted as time spent on a category
	IdleTimeout     time.Duration // a partition without records this long stops holding windows back
	RecentItems     int           // events kept per user (state, model input, Redis)
	TopK            int           // recommendations per event
	MaxPollRecords  int           // records per transaction at most
	SecondPoll      time.Duration // how long a poll that returned records waits for more before the transaction
	TxnTimeout      time.Duration // broker aborts a transaction left open this long
	SessionTimeout  time.Duration // group session timeout: how fast a dead worker's partitions move
	// HeartbeatInterval is how often a worker heartbeats to the group
	// coordinator, which is how it learns that a rebalance has begun.
	HeartbeatInterval time.Duration
	StateStore        string // memory | encoded | pebble (see Store)
	StateDir          string // this instance's local files: pebble's stores, the model cache, the Redis marker
	AtLeastOnce       bool   // no transactions: outputs first, then offsets (a crash may duplicate; for comparison)
	// LeaveOnShutdown removes this static member from the group when the
	// worker stops cleanly, so its partitions move at once; false keeps them
	// reserved for SessionTimeout, for a restart of the same instance.
	LeaveOnShutdown bool
	// GroupProtocol is the consumer group protocol: GroupProtocolConsumer
	// (KIP-848: the broker assigns partitions and moves them one by one,
	// no group-wide rebalance), GroupProtocolClassic (join/sync, a
	// group-wide rebalance on every change), or GroupProtocolAuto, which
	// the command resolves from the brokers' versions before New.
	GroupProtocol string
	Limits        struct {
		MaxRecordBytes int
		MaxFutureSkew  time.Duration
	}
	Topics kafkautil.Topics

	RedisTTL time.Duration // TTL of user:{id} keys in Redis
	// RedisRewriteRate is how many restored users per second are written to
	// Redis again after a restore (0: none).
	RedisRewriteRate int

	DriftPublishEvery time.Duration // how often the live drift profile of the current minute is written to Redis

	LagEvery time.Duration // how often the consumer lag gauge is computed from the group's committed offsets (0: only from fetched records)

	// Learn turns on online item knowledge (package itemknow): each
	// transaction carries what its clicks teach to Topics.Knowledge, every
	// worker reads that topic whole, read_committed, and ranks with it
	// next to the model. See DESIGN.md, "Online item knowledge".
	Learn     bool
	Knowledge itemknow.Config  // the table's half-life and caps (the same on every worker)
	Lookback  time.Duration    // how much of the topic a starting worker reads
	StartWait time.Duration    // how long a starting worker waits for that before it joins anyway
	Blend     itemknow.Weights // the online knowledge against the model
}

// DefaultConfig returns the documented defaults (DESIGN.md).
func DefaultConfig() Config {
	host, _ := os.Hostname()
	c := Config{
		Group:             "clickrec-hotpath",
		InstanceID:        host,
		OutOfOrderness:    5 * time.Minute,
		AllowedLateness:   5 * time.Minute,
		Window:            time.Minute,
		SessionTTL:        time.Hour,
		SessionGap:        30 * time.Minute,
		DwellCap:          5 * time.Minute,
		IdleTimeout:       30 * time.Second,
		RecentItems:       20,
		TopK:              10,
		MaxPollRecords:    2000,
		SecondPoll:        2 * time.Millisecond,
		TxnTimeout:        10 * time.Second,
		SessionTimeout:    10 * time.Second,
		LeaveOnShutdown:   true,
		GroupProtocol:     GroupProtocolAuto,
		HeartbeatInterval: 100 * time.Millisecond,
		StateStore:        StoreMemory,
		StateDir:          filepath.Join(os.TempDir(), "clickrec-hotpath-state"),
		Topics:            kafkautil.DefaultTopics,
		RedisTTL:          time.Hour,
		RedisRewriteRate:  5000,

		DriftPublishEvery: 10 * time.Second,
		LagEvery:          10 * time.Second,

		Learn:     true,
		Knowledge: itemknow.DefaultConfig(),
		Lookback:  8 * time.Hour,
		StartWait: 10 * time.Second,
		Blend:     itemknow.DefaultWeights(),
	}
	c.Limits.MaxRecordBytes = 16 << 10
	c.Limits.MaxFutureSkew = time.Minute
	return c
}

// Register adds the hot path flags to fs, with defaults from c.
func (c *Config) Register(fs *cli.FlagSet) {
	fs.StringVar(&c.Group, "group", c.Group, "consumer group shared by all hot path workers")
	fs.Env("group", "CLICKREC_HOTPATH_GROUP")
	fs.StringVar(&c.InstanceID, "instance-id", c.InstanceID, "this worker's static member id; its transactional id is derived from it, so a restarted worker fences its predecessor at once. Unique per worker, stable across restarts")
	fs.Env("instance-id", "CLICKREC_HOTPATH_INSTANCE_ID")
	fs.DurationVar(&c.OutOfOrderness, "out-of-orderness", c.OutOfOrderness, "bounded out-of-orderness: watermark = max event time − this")
	fs.Env("out-of-orderness", "CLICKREC_HOTPATH_OUT_OF_ORDERNESS")
	fs.DurationVar(&c.AllowedLateness, "allowed-lateness", c.AllowedLateness, "events behind the watermark by at most this update state and re-fire their window; later ones go to the late topic")
	fs.Env("allowed-lateness", "CLICKREC_HOTPATH_ALLOWED_LATENESS")
	fs.DurationVar(&c.Window, "window", c.Window, "tumbling event-time window per user")
	fs.Env("window", "CLICKREC_HOTPATH_WINDOW")
	fs.DurationVar(&c.SessionTTL, "session-ttl", c.SessionTTL, "forget a user idle this long (event time): tombstone in the changelog, delete from Redis")
	fs.Env("session-ttl", "CLICKREC_HOTPATH_SESSION_TTL")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", c.IdleTimeout, "a partition without records this long (processing time) follows the worker's most advanced watermark")
	fs.Env("idle-timeout", "CLICKREC_HOTPATH_IDLE_TIMEOUT")
	fs.IntVar(&c.RecentItems, "recent-items", c.RecentItems, "events kept per user")
	fs.Env("recent-items", "CLICKREC_HOTPATH_RECENT_ITEMS")
	fs.IntVar(&c.TopK, "top-k", c.TopK, "recommendations per event")
	fs.Env("top-k", "CLICKREC_HOTPATH_TOP_K")
	fs.IntVar(&c.MaxPollRecords, "max-poll-records", c.MaxPollRecords, "records per transaction at most")
	fs.Env("max-poll-records", "CLICKREC_HOTPATH_MAX_POLL_RECORDS")
	fs.DurationVar(&c.SecondPoll, "second-poll", c.SecondPoll, "after a poll returns records, poll again for at most this long before the transaction, so clicks that arrived during the last commit join it (0: off)")
	fs.Env("second-poll", "CLICKREC_HOTPATH_SECOND_POLL")
	fs.DurationVar(&c.TxnTimeout, "txn-timeout", c.TxnTimeout, "transaction timeout: the broker aborts a transaction of a dead worker after this. Any pair with --session-timeout is safe: whoever takes a dead worker's partitions reads their committed offsets (KIP-447 require-stable) and restores their state (read_committed) only once its open transaction is resolved, so nothing of it is lost or doubled; the partitions go unanswered for the longer of the two (unless the same --instance-id restarts: it aborts its predecessor's transaction at once)")
	fs.Env("txn-timeout", "CLICKREC_HOTPATH_TXN_TIMEOUT")
	fs.DurationVar(&c.SessionTimeout, "session-timeout", c.SessionTimeout, "consumer group session timeout: how long a silent worker keeps its partitions")
	fs.Env("session-timeout", "CLICKREC_HOTPATH_SESSION_TIMEOUT")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", c.HeartbeatInterval, "how often a worker heartbeats to the group coordinator; it learns of a rebalance (a worker joining or leaving) only then, and every other worker waits for it, so this bounds how long a membership change pauses the group (at most a third of --session-timeout)")
	fs.Env("heartbeat-interval", "CLICKREC_HOTPATH_HEARTBEAT_INTERVAL")
	fs.BoolVar(&c.LeaveOnShutdown, "leave-on-shutdown", c.LeaveOnShutdown, "on a clean stop (SIGTERM), remove this static member from the group so its partitions move to the others at once (a deploy, a scale-in); false keeps them reserved for --session-timeout, for a restart of the same --instance-id that should get them back without a rebalance")
	fs.Env("leave-on-shutdown", "CLICKREC_HOTPATH_LEAVE_ON_SHUTDOWN")
	fs.StringVar(&c.GroupProtocol, "group-protocol", c.GroupProtocol, "consumer group protocol: consumer (KIP-848, Kafka 4.0+: the brokers move partitions one by one, no group-wide pause on a join or leave; their group.consumer.heartbeat.interval.ms and group.consumer.session.timeout.ms then apply instead of --heartbeat-interval and --session-timeout), classic (join/sync rebalances), or auto: consumer on Kafka 4.3+ (KIP-1251 fixes a commit/epoch race), else classic with a log line")
	fs.Env("group-protocol", "CLICKREC_HOTPATH_GROUP_PROTOCOL")
	fs.DurationVar(&c.DriftPublishEvery, "drift-publish-every", c.DriftPublishEvery, "how often the live drift profile of the current minute goes to Redis (drift:live:<minute>:<instance>, read by the CheckDrift workflow)")
	fs.Env("drift-publish-every", "CLICKREC_HOTPATH_DRIFT_PUBLISH_EVERY")
	fs.DurationVar(&c.LagEvery, "lag-every", c.LagEvery, "how often recsys_hotpath_consumer_lag is computed for every partition from the group's committed offsets, so a stuck worker shows (0: only from the records it fetches)")
	fs.Env("lag-every", "CLICKREC_HOTPATH_LAG_EVERY")
	fs.IntVar(&c.RedisRewriteRate, "redis-rewrite-rate", c.RedisRewriteRate, "after restoring a partition, write its users to Redis again at this many per second, in the background (0: off): what a crashed or stopped worker had not yet written is not lost for good. Idempotent: a write never replaces a newer one")
	fs.Env("redis-rewrite-rate", "CLICKREC_HOTPATH_REDIS_REWRITE_RATE")
	fs.StringVar(&c.StateStore, "state-store", c.StateStore, "where user state lives between batches: memory (decoded, fastest, ≈ 3 KB per user with 20 recent events), encoded (the changelog encoding, ≈ 0.9 KB per user, decoded when a batch touches the user) or pebble (on local disk under --state-dir, for state larger than memory; rebuilt from the changelog on assignment)")
	fs.StringVar(&c.StateDir, "state-dir", c.StateDir, "local directory of this worker's files under <dir>/<instance-id>/: with --state-store pebble its stores, one per partition (wiped and rebuilt from the changelog); always the model it served last and a marker that it reached Redis, so a worker restarted while Redis is down starts at once with that model (empty: neither)")
	fs.Env("state-dir", "CLICKREC_HOTPATH_STATE_DIR")
	fs.Env("state-store", "CLICKREC_HOTPATH_STATE_STORE")
	fs.BoolFunc("exactly-once", "exactly-once processing (default true): one Kafka transaction per poll. false: at-least-once — outputs and changelog are flushed, then offsets committed; a crash replays and duplicates recommendations. For measuring what exactly-once costs, not for production", func(v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", v)
		}
		c.AtLeastOnce = !b
		return nil
	})
	fs.Env("exactly-once", "CLICKREC_HOTPATH_EXACTLY_ONCE")
	fs.Func("topic-prefix", "prefix of every topic name, e.g. lt1- reads lt1-user_events and writes lt1-recommendations, lt1-hotpath-changelog, …; isolates test and load-test runs on a shared cluster (empty: the standard names)", func(p string) error {
		t, err := kafkautil.PrefixedTopics(p)
		if err != nil {
			return err
		}
		c.Topics = t
		return nil
	})
	fs.Env("topic-prefix", "CLICKREC_HOTPATH_TOPIC_PREFIX")
	fs.BoolVar(&c.Learn, "learn", c.Learn, "online item knowledge: new items and trends are learned from the clicks within seconds (through the item-knowledge topic, exactly once) and ranked next to the model; false ranks with the model alone")
	fs.Env("learn", "CLICKREC_HOTPATH_LEARN")
	fs.DurationVar(&c.Knowledge.HalfLife, "ik-half-life", c.Knowledge.HalfLife, "half-life of the online item knowledge: a click's weight halves this often (the same on every worker)")
	fs.Env("ik-half-life", "CLICKREC_HOTPATH_IK_HALF_LIFE")
	fs.IntVar(&c.Knowledge.MaxItems, "ik-max-items", c.Knowledge.MaxItems, "most items the online knowledge holds (≈ 500 B each with their pairs); the weakest of those clicked by one shopper only make room")
	fs.Env("ik-max-items", "CLICKREC_HOTPATH_IK_MAX_ITEMS")
	fs.IntVar(&c.Knowledge.MaxPairs, "ik-max-pairs", c.Knowledge.MaxPairs, "most item pairs the online knowledge holds (24 B each)")
	fs.Env("ik-max-pairs", "CLICKREC_HOTPATH_IK_MAX_PAIRS")
	fs.BoolVar(&c.Knowledge.QueryProbationItems, "ik-probation-items", c.Knowledge.QueryProbationItems, "recommend items clicked by one shopper only (default: an item must be clicked by two before it is a candidate, so ids a bot or a broken client made up are never recommended); for sparse traffic, where a new item's second shopper comes late")
	fs.Env("ik-probation-items", "CLICKREC_HOTPATH_IK_PROBATION_ITEMS")
	fs.DurationVar(&c.Lookback, "ik-lookback", c.Lookback, "how much of the item-knowledge topic a starting worker reads before it joins the group (older clicks weigh 2^(-lookback/half-life) or less); the topic keeps 24 h")
	fs.Env("ik-lookback", "CLICKREC_HOTPATH_IK_LOOKBACK")
	fs.DurationVar(&c.StartWait, "ik-start-wait", c.StartWait, "how long a starting worker waits to have read --ik-lookback before it joins the group anyway (and goes on reading in the background): partitions unanswered against recommendations without part of the knowledge for a while")
	fs.Env("ik-start-wait", "CLICKREC_HOTPATH_IK_START_WAIT")
	fs.Float64Var(&c.Blend.Known, "ik-weight", c.Blend.Known, "weight of the online score of an item the model knows, next to the model's score (both scaled to [0,1] over their top lists)")
	fs.Env("ik-weight", "CLICKREC_HOTPATH_IK_WEIGHT")
	fs.Float64Var(&c.Blend.New, "ik-new-weight", c.Blend.New, "weight of the online score of an item the model does not know (a new item): where new items rank against the model's best")
	fs.Env("ik-new-weight", "CLICKREC_HOTPATH_IK_NEW_WEIGHT")
}

// Validate checks the values and says what to fix.
func (c *Config) Validate() error {
	if c.Group == "" {
		return cli.Usagef("--group must not be empty")
	}
	if c.InstanceID == "" {
		return cli.Usagef("--instance-id must not be empty (use a name stable across restarts, e.g. the pod name)")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"out-of-orderness", c.OutOfOrderness}, {"window", c.Window}, {"session-ttl", c.SessionTTL},
		{"idle-timeout", c.IdleTimeout}, {"txn-timeout", c.TxnTimeout}, {"session-timeout", c.SessionTimeout},
		{"drift-publish-every", c.DriftPublishEvery},
	} {
		if err := cli.Positive(d.name, d.v); err != nil {
			return err
		}
	}
	if c.AllowedLateness < 0 {
		return cli.Usagef("--allowed-lateness must not be negative, got %v", c.AllowedLateness)
	}
	switch c.GroupProtocol {
	case GroupProtocolAuto, GroupProtocolConsumer, GroupProtocolClassic:
	default:
		return cli.Usagef("--group-protocol must be %s, %s or %s, got %q", GroupProtocolAuto, GroupProtocolConsumer, GroupProtocolClassic, c.GroupProtocol)
	}
	if c.HeartbeatInterval <= 0 || c.HeartbeatInterval > c.SessionTimeout/3 {
		return cli.Usagef("--heartbeat-interval must be positive and at most a third of --session-timeout (%v), got %v", c.SessionTimeout, c.HeartbeatInterval)
	}
	if c.RedisRewriteRate < 0 {
		return cli.Usagef("--redis-rewrite-rate must not be negative (0 turns it off), got %d", c.RedisRewriteRate)
	}
	if c.LagEvery < 0 {
		return cli.Usagef("--lag-every must not be negative (0 turns it off), got %v", c.LagEvery)
	}
	if c.Window%time.Millisecond != 0 || c.Window < time.Second {
		return cli.Usagef("--window must be a whole number of milliseconds, at least 1s, got %v", c.Window)
	}
	if c.SessionTTL <= c.Window+c.AllowedLateness {
		return cli.Usagef("--session-ttl (%v) must exceed --window + --allowed-lateness (%v)", c.SessionTTL, c.Window+c.AllowedLateness)
	}
	if c.RecentItems < 1 || c.RecentItems > 1000 {
		return cli.Usagef("--recent-items must be between 1 and 1000, got %d", c.RecentItems)
	}
	if c.TopK < 1 || c.TopK > 100 {
		return cli.Usagef("--top-k must be between 1 and 100, got %d", c.TopK)
	}
	switch c.StateStore {
	case StoreMemory, StoreEncoded:
	case StorePebble:
		if c.StateDir == "" {
			return cli.Usagef("--state-store pebble needs --state-dir")
		}
	default:
		return cli.Usagef("--state-store must be %s, %s or %s, got %q", StoreMemory, StoreEncoded, StorePebble, c.StateStore)
	}
	if c.MaxPollRecords < 1 {
		return cli.Usagef("--max-poll-records must be positive, got %d", c.MaxPollRecords)
	}
	if c.TxnTimeout < time.Second {
		return cli.Usagef("--txn-timeout must be at least 1s, got %v", c.TxnTimeout)
	}
	if c.Learn {
		if c.Knowledge.HalfLife < time.Second {
			return cli.Usagef("--ik-half-life must be at least 1s, got %v", c.Knowledge.HalfLife)
		}
		if c.Knowledge.MaxItems < 8 || c.Knowledge.MaxPairs < 8 {
			return cli.Usagef("--ik-max-items and --ik-max-pairs must be at least 8, got %d and %d", c.Knowledge.MaxItems, c.Knowledge.MaxPairs)
		}
		if c.Lookback < 0 || c.StartWait < 0 {
			return cli.Usagef("--ik-lookback and --ik-start-wait must not be negative (0 starts with no item knowledge / joins at once), got %v and %v", c.Lookback, c.StartWait)
		}
		if c.Blend.Known < 0 || c.Blend.New < 0 {
			return cli.Usagef("--ik-weight and --ik-new-weight must not be negative, got %v and %v", c.Blend.Known, c.Blend.New)
		}
	}
	return nil
}
