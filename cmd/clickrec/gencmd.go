package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/clickrec/clickrec/gen"
	"io"
	"log/slog"
	"math"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/internal/kafkautil"
)

func init() {
	register(command{name: "gen", synopsis: "generate shop clicks (synthetic or Taobao replay) to Kafka or stdout", run: func(ctx context.Context, args []string) error {
		return genCommand(ctx, args, os.Stdout)
	}})
}

const genUsage = `Generate shop clicks and send them to Kafka topic user_events (keyed by user id)
or to stdout as JSON lines.

Sources:
  synthetic  a generated shop: Zipf-popular items in categories, shoppers with
             sessions in 1-3 categories, view -> cart (10%) -> purchase (30% of
             carts), log-normal gaps of seconds to minutes and breaks between
             sessions. Sent at --rate events/s on a fixed schedule.
  taobao     a replay of the Taobao UserBehavior data (--taobao-file), pv -> view,
             cart and fav -> cart, buy -> purchase, sessions split at 30 minutes
             of inactivity, time compressed by --speedup.

Pacing is open-model: event i is due at a fixed time (start + i/rate, or the
replay's compressed time) and is stamped with it; a slow sink makes gen fall
behind the schedule, never slow it down. --late-share of the records carry an
event time 1-9 minutes before they are sent, and --invalid-share are invalid
(malformed JSON, unknown event_type, missing user_id, wrong field type, over
16 KiB, key not the user id) to exercise the late and dead-letter paths.
Progress is logged to stderr every 5 s.

Examples:
  clickrec gen --count 20                                  # 20 synthetic clicks on stdout
  clickrec gen --out kafka --kafka-brokers 127.0.0.1:9092 --rate 1000 --users 300000
  clickrec gen --source taobao --speedup 60 --out kafka --kafka-brokers 127.0.0.1:9092`

type genFlags struct {
	source, taobaoFile, out  string
	speedup, rate            float64
	count                    int64
	duration                 time.Duration
	users, items, categories int
	lateShare, invalidShare  float64
	seed                     uint64
	kafka                    kafkautil.Config
	topics                   kafkautil.Topics
	log                      cli.Logging
	set                      map[string]bool
}

func (f *genFlags) register(fs *cli.FlagSet) {
	def := gen.DefaultConfig()
	fs.StringVar(&f.source, "source", "synthetic", "traffic source: synthetic (a generated shop, shaped by --users, --items, --categories, paced by --rate) or taobao (a replay of --taobao-file, paced by --speedup)")
	fs.Env("source", "CLICKREC_GEN_SOURCE")
	fs.StringVar(&f.taobaoFile, "taobao-file", gen.DefaultTaobaoFile, "Taobao UserBehavior CSV (user_id,item_id,category_id,behavior,unix_ts; gzip or plain) replayed by --source taobao; a relative path is relative to the working directory")
	fs.Env("taobao-file", "CLICKREC_GEN_TAOBAO_FILE")
	fs.Float64Var(&f.speedup, "speedup", 60, "time compression of --source taobao: a row is due (ts - first ts)/speedup after the start, so 60 plays the 1.92-hour time slice in 1m55s at about 830 events/s; 0 sends as fast as possible")
	fs.Env("speedup", "CLICKREC_GEN_SPEEDUP")
	fs.Float64Var(&f.rate, "rate", 100, "events per second of --source synthetic, on a fixed schedule (event i at start + i/rate) however slow the sink is; 0 sends as fast as possible, stamped with the wall clock")
	fs.Env("rate", "CLICKREC_GEN_RATE")
	fs.Int64Var(&f.count, "count", 0, "stop after this many records; 0 = no limit (without --count and --duration gen runs until interrupted, or until the Taobao file ends)")
	fs.Env("count", "CLICKREC_GEN_COUNT")
	fs.DurationVar(&f.duration, "duration", 0, "stop after this much of the schedule, e.g. 10m; 0 = no limit")
	fs.Env("duration", "CLICKREC_GEN_DURATION")
	fs.IntVar(&f.users, "users", def.Users, "synthetic shoppers (ids u1..uN); with realistic gaps and breaks each clicks about once per 280 s, so a --rate above users/280 cuts the longest breaks between sessions short, and above users/13 makes every shopper click faster than people do")
	fs.Env("users", "CLICKREC_GEN_USERS")
	fs.IntVar(&f.items, "items", def.Items, "synthetic catalogue size: item ids 1..items, Zipf-popular (weight 1/rank)")
	fs.Env("items", "CLICKREC_GEN_ITEMS")
	fs.IntVar(&f.categories, "categories", def.Categories, "synthetic categories c0..c<n-1>, each item in one; at most --items")
	fs.Env("categories", "CLICKREC_GEN_CATEGORIES")
	fs.Float64Var(&f.lateShare, "late-share", def.LateShare, "share (0-1) of records whose event time is 1-9 minutes before they are sent, like clicks a phone synced after being offline; about half exceed the worker's 5-minute allowed lateness")
	fs.Env("late-share", "CLICKREC_GEN_LATE_SHARE")
	fs.Float64Var(&f.invalidShare, "invalid-share", def.InvalidShare, "share (0-1) of invalid records, in equal parts malformed JSON, unknown event_type, missing user_id, wrong field type, oversize (>16 KiB) and key not equal to user_id; they go to the dead-letter topic")
	fs.Env("invalid-share", "CLICKREC_GEN_INVALID_SHARE")
	fs.Uint64Var(&f.seed, "seed", def.Seed, "random seed: the same seed and flags give the same records (synthetic event ids are <seed>-<n>)")
	fs.Env("seed", "CLICKREC_GEN_SEED")
	fs.StringVar(&f.out, "out", "stdout", "where records go: stdout (JSON lines, one record value per line) or kafka (topic user_events, keyed by user id; see --kafka-brokers)")
	fs.Env("out", "CLICKREC_GEN_OUT")
	f.topics = kafkautil.DefaultTopics
	fs.Func("topic-prefix", "prefix of every topic name, as the hot path's --topic-prefix: lt1- sends to lt1-user_events (empty: the standard names)", func(p string) error {
		t, err := kafkautil.PrefixedTopics(p)
		if err != nil {
			return err
		}
		f.topics = t
		return nil
	})
	fs.Env("topic-prefix", "CLICKREC_GEN_TOPIC_PREFIX")
	f.kafka.Register(fs)
	f.log.Register(fs)
}

func (f *genFlags) validate() error {
	switch {
	case f.source != "synthetic" && f.source != "taobao":
		return cli.Usagef("--source %q: want synthetic or taobao", f.source)
	case f.out != "stdout" && f.out != "kafka":
		return cli.Usagef("--out %q: want stdout or kafka", f.out)
	case !(f.rate >= 0) || math.IsInf(f.rate, 0):
		return cli.Usagef("--rate must be a number of events per second, 0 or more (0 = as fast as possible), got %v", f.rate)
	case !(f.speedup >= 0) || math.IsInf(f.speedup, 0):
		return cli.Usagef("--speedup must be 0 or more (0 = as fast as possible), got %v", f.speedup)
	case f.count < 0:
		return cli.Usagef("--count must be 0 (no limit) or more, got %d", f.count)
	case f.duration < 0:
		return cli.Usagef("--duration must be 0 (no limit) or more, got %v", f.duration)
	case f.users < 1:
		return cli.Usagef("--users must be at least 1, got %d", f.users)
	case f.items < 1:
		return cli.Usagef("--items must be at least 1, got %d", f.items)
	case f.categories < 1 || f.categories > f.items:
		return cli.Usagef("--categories must be between 1 and --items (%d), got %d: every category needs an item", f.items, f.categories)
	case !(f.lateShare >= 0 && f.lateShare <= 1):
		return cli.Usagef("--late-share must be between 0 and 1, got %v", f.lateShare)
	case !(f.invalidShare >= 0 && f.invalidShare <= 1):
		return cli.Usagef("--invalid-share must be between 0 and 1, got %v", f.invalidShare)
	case f.lateShare+f.invalidShare > 1:
		return cli.Usagef("--late-share (%v) + --invalid-share (%v) must not exceed 1", f.lateShare, f.invalidShare)
	}
	return f.kafka.Validate()
}

// genCommand runs `clickrec gen` with args (without the command name), writing
// records to stdout with --out stdout. Flag mistakes, an unreadable
// --taobao-file and unreachable brokers are *cli.UsageError (exit 2). When ctx
// ends, gen stops sending, flushes what it sent and returns nil.
func genCommand(ctx context.Context, args []string, stdout io.Writer) error {
	var f genFlags
	fs := cli.NewFlagSet("gen", genUsage)
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	f.set = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	if err := f.validate(); err != nil {
		return err
	}
	log, err := f.log.Logger()
	if err != nil {
		return err
	}
	src, schedule, err := f.newSource(log)
	if err != nil {
		return err
	}
	var sink gen.Sink
	if f.out == "stdout" {
		sink = gen.NewLineSink(stdout)
	} else {
		ks, closeKafka, err := f.openKafka(ctx, log)
		if err != nil {
			return err
		}
		defer closeKafka()
		sink = ks
	}
	clock := &gen.SystemClock{}
	st, err := gen.Run(ctx, gen.RunConfig{
		Source:   src,
		Pacer:    gen.NewPacer(clock, clock.Now(), schedule),
		Sink:     sink,
		Count:    f.count,
		Duration: f.duration,
		Log:      log,
	})
	if ks, ok := sink.(*gen.KafkaSink); ok {
		log.Info("gen kafka", "topic", f.topics.Events, "sent", st.Sent, "acked", ks.Acked(), "failed", ks.Failed())
	}
	return err
}

func (f *genFlags) newSource(log *slog.Logger) (gen.Source, gen.Schedule, error) {
	if f.source == "taobao" {
		if f.set["rate"] {
			log.Warn("--rate does not apply to --source taobao; the replay is paced by --speedup")
		}
		t, err := gen.OpenTaobao(f.taobaoFile)
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			return nil, nil, cli.Usagef("--taobao-file: %v (run from the repository root, or set --taobao-file / CLICKREC_GEN_TAOBAO_FILE)", err)
		}
		if err != nil {
			return nil, nil, err
		}
		p, err := gen.NewReplay(t, gen.ReplayConfig{Speedup: f.speedup, Seed: f.seed, LateShare: f.lateShare, InvalidShare: f.invalidShare})
		if err != nil {
			return nil, nil, fmt.Errorf("cannot replay %s: %w", f.taobaoFile, err)
		}
		st := t.Stats
		log.Info("gen taobao replay", "file", f.taobaoFile, "rows", st.Rows, "users", st.Users, "sessions", st.Sessions,
			"span", t.Span(), "speedup", f.speedup, "replay_time", p.Offset(int64(t.Len()-1)).Round(time.Second),
			"dropped_truncated_line", st.DroppedTruncated)
		return p, p.Schedule(), nil
	}
	if f.set["speedup"] {
		log.Warn("--speedup applies to --source taobao only; the synthetic source is paced by --rate")
	}
	s, err := gen.NewSynthetic(gen.Config{Seed: f.seed, Users: f.users, Items: f.items, Categories: f.categories,
		LateShare: f.lateShare, InvalidShare: f.invalidShare})
	if err != nil {
		return nil, nil, cli.Usagef("%v", err)
	}
	log.Info("gen synthetic shop", "users", f.users, "items", f.items, "categories", f.categories, "rate", f.rate,
		"late_share", f.lateShare, "invalid_share", f.invalidShare, "seed", f.seed)
	switch {
	case f.rate == 0:
		log.Info("gen: --rate 0 sends as fast as possible, stamped with the wall clock; sessions compress accordingly")
	case f.rate > gen.SaturatedRate(f.users):
		log.Warn("gen: --rate is more than --users shoppers can click at human pace: every shopper is always in a session and clicks come faster than people click; raise --users for realistic sessions",
			"rate", f.rate, "users", f.users, "users_for_realistic_breaks", int(math.Ceil(f.rate*280)))
	case f.rate > gen.SustainedRate(f.users):
		log.Info("gen: --rate is above what --users shoppers sustain with realistic breaks between sessions, so the longest breaks are cut short",
			"rate", f.rate, "users", f.users, "sustained_rate", math.Round(gen.SustainedRate(f.users)), "users_for_rate", int(math.Ceil(f.rate*280)))
	}
	return s, gen.ConstantRate(f.rate), nil
}

// openKafka connects to the brokers (or starts the embedded one), checks them
// and the topics, and returns the sink and what closes it all.
func (f *genFlags) openKafka(ctx context.Context, log *slog.Logger) (*gen.KafkaSink, func(), error) {
	cfg := &f.kafka
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	if len(cfg.Brokers) == 0 {
		emb, err := kafkautil.StartEmbedded(cfg, f.topics)
		if err != nil {
			return nil, nil, err
		}
		closers = append(closers, emb.Close)
		log.Warn("no --kafka-brokers given: started an embedded in-process Kafka broker; its records vanish when gen exits (set --kafka-brokers or CLICKREC_KAFKA_BROKERS to reach a real cluster)",
			"addr", cfg.Brokers.String())
	}
	topic := string(f.topics.Events)
	cl, err := kgo.NewClient(append(cfg.Opts("clickrec-gen"),
		kgo.DefaultProduceTopic(topic),
		kgo.MaxBufferedRecords(gen.MaxInFlight),
		kgo.RecordDeliveryTimeout(time.Minute),
	)...)
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("cannot create Kafka client: %w", err)
	}
	closers = append(closers, cl.Close)
	if err := kafkautil.Ping(ctx, cfg, cl); err != nil {
		closeAll()
		return nil, nil, err
	}
	if err := kafkautil.EnsureTopics(ctx, cfg, cl, f.topics); err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("cannot prepare topics: %w", err)
	}
	log.Info("gen producing to Kafka", "brokers", cfg.Brokers.String(), "topic", topic, "max_in_flight", gen.MaxInFlight)
	return gen.NewKafkaSink(cl, topic), closeAll, nil
}
