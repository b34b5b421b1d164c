package workflows

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/drift"
	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/gen"
	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/internal/testenv"
	"github.com/clickrec/clickrec/model"
)

// Redis databases of this package's tests (model/registry's tests use 9).
const (
	redisDBActivities  = 11
	redisDBIntegration = 12
)

// testRedis returns a client on its own, flushed database of the test Redis.
func testRedis(t *testing.T, db int) *redis.Client {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t), DB: db})
	ctx := context.Background()
	if err := rc.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.FlushDB(ctx); rc.Close() })
	return rc
}

// embeddedKafka starts an in-process broker with the default topics.
func embeddedKafka(t *testing.T, partitions int) kafkautil.Config {
	t.Helper()
	cfg := kafkautil.Config{Partitions: partitions, ReplicationFactor: 1, DialTimeout: 5 * time.Second}
	e, err := kafkautil.StartEmbedded(&cfg, kafkautil.DefaultTopics)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return cfg
}

// producer returns a client that writes records to the partition they name.
func producer(t *testing.T, cfg kafkautil.Config, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append(cfg.Opts("test-producer"), append([]kgo.Opt{kgo.RecordPartitioner(kgo.ManualPartitioner())}, opts...)...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func produce(t *testing.T, ctx context.Context, cl *kgo.Client, recs ...*kgo.Record) {
	t.Helper()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// clickRecord is a user_events record of c on partition p, timestamped with the click.
func clickRecord(c *event.Click, p int32) *kgo.Record {
	return &kgo.Record{Topic: string(kafkautil.DefaultTopics.Events), Partition: p, Key: []byte(c.UserID),
		Value: c.AppendJSON(nil), Timestamp: time.UnixMilli(c.TimestampMs)}
}

// shopClicks returns n clicks of a small synthetic shop, one every step from start.
func shopClicks(t *testing.T, n int, start time.Time, step time.Duration, cfg gen.Config) []event.Click {
	t.Helper()
	s, err := gen.NewSynthetic(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]event.Click, n)
	var r gen.Record
	for i := range out {
		s.Next(&r, start.Add(time.Duration(i)*step))
		out[i] = r.Click
	}
	return out
}

func smallShop() gen.Config { return gen.Config{Seed: 7, Users: 400, Items: 300, Categories: 12} }

// writeEvents writes clicks as an events.jsonl file.
func writeEvents(t *testing.T, path string, clicks []event.Click) {
	t.Helper()
	var b []byte
	for i := range clicks {
		b = append(clicks[i].AppendJSON(b), '\n')
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// tinyTraining is a training configuration that takes milliseconds.
func tinyTraining() model.Config {
	c := model.DefaultConfig()
	c.Factors, c.Iterations, c.Epochs, c.Negatives = 8, 3, 1, 64
	c.ValidCases = 200
	c.Workers = 1
	return c
}

// referenceFrom builds a reference set from clicks the way BuildReference does.
func referenceFrom(clicks []event.Click) drift.ReferenceSet {
	s := drift.NewSample()
	for _, c := range clicks {
		s.ObserveCategorical(drift.FeatureCategoryMix, c.Category, 1)
		s.ObserveCategorical(drift.FeatureEventTypeMix, c.Type.String(), 1)
	}
	ref, err := s.Build(drift.Config{})
	if err != nil {
		panic(err)
	}
	return ref
}

// liveFrom counts clicks into a live set of ref; shiftTo, if not empty,
// relabels every other click's category to it (a surge of that category).
func liveFrom(ref drift.ReferenceSet, clicks []event.Click, shiftTo string) drift.LiveSet {
	l := ref.NewLive()
	for i, c := range clicks {
		cat := c.Category
		if shiftTo != "" && i%2 == 0 {
			cat = shiftTo
		}
		l.ObserveCategorical(drift.FeatureCategoryMix, cat, 1)
		l.ObserveCategorical(drift.FeatureEventTypeMix, c.Type.String(), 1)
	}
	return l
}

// publishLive writes live profiles the way the hot path does: one key per
// minute and instance, with the TTL.
func publishLive(t *testing.T, ctx context.Context, rc *redis.Client, minute int64, sets ...drift.LiveSet) {
	t.Helper()
	for i, s := range sets {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := rc.Set(ctx, drift.LiveKey(minute, "hotpath-"+strconv.Itoa(i)), b, drift.LiveKeyTTL).Err(); err != nil {
			t.Fatal(err)
		}
	}
}
