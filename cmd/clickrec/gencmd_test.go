package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"github.com/clickrec/clickrec/gen"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/internal/testenv"
)

// genQuiet keeps the command's logs to warnings in tests.
var genQuiet = []string{"--log-level", "error"}

func runGen(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := genCommand(ctx, append(append([]string{}, genQuiet...), args...), &out)
	return out.String(), err
}

// TestCommandKafka produces through the whole command path to the embedded
// broker and reads the records back.
func TestGenKafka(t *testing.T) {
	cfg := &kafkautil.Config{Partitions: 3, ReplicationFactor: 1, DialTimeout: 5 * time.Second}
	emb, err := kafkautil.StartEmbedded(cfg, kafkautil.DefaultTopics)
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	ctx := testenv.Context(t, 30*time.Second)
	const n = 300
	if _, err := runGen(t, ctx, "--out", "kafka", "--kafka-brokers", cfg.Brokers.String(), "--kafka-partitions", "3",
		"--count", "300", "--rate", "0", "--seed", "11", "--late-share", "0.1", "--invalid-share", "0.1"); err != nil {
		t.Fatal(err)
	}

	cl, err := kgo.NewClient(append(cfg.Opts("gen-test"), kgo.ConsumeTopics(string(kafkautil.DefaultTopics.Events)),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var (
		got         int
		valid, late int
		ids         = map[string]bool{}
		partOf      = map[string]int32{}
		now         = time.Now().Add(time.Minute)
	)
	for got < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of %d records: %v", got, n, err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			got++
			if p, ok := partOf[string(r.Key)]; ok && p != r.Partition {
				t.Errorf("key %q in partitions %d and %d", r.Key, p, r.Partition)
			}
			partOf[string(r.Key)] = r.Partition
			c, err := event.Decode(r.Value, now, event.DefaultLimits)
			if err == nil {
				err = c.CheckKey(r.Key)
			}
			if err != nil {
				return
			}
			valid++
			if ids[c.EventID] {
				t.Errorf("event id %s twice", c.EventID)
			}
			ids[c.EventID] = true
			if !strings.HasPrefix(c.EventID, "11-") {
				t.Errorf("event id %q, want 11-<n>", c.EventID)
			}
			if time.Since(c.Time()) > gen.MinLateness-5*time.Second {
				late++
			}
		})
	}
	if got != n {
		t.Fatalf("read %d records, want %d", got, n)
	}
	if valid < n*75/100 || valid > n*95/100 || late < n/30 || late > n/5 {
		t.Fatalf("%d valid (%d late) of %d with 10%% late and 10%% invalid", valid, late, n)
	}
	if len(partOf) < 2 {
		t.Fatalf("all records used %d keys", len(partOf))
	}
}

// TestCommandEmbedded: --out kafka without brokers starts the embedded broker.
func TestGenEmbedded(t *testing.T) {
	t.Setenv("CLICKREC_KAFKA_BROKERS", "")
	ctx := testenv.Context(t, 30*time.Second)
	if _, err := runGen(t, ctx, "--out", "kafka", "--count", "50", "--rate", "0"); err != nil {
		t.Fatal(err)
	}
}

func lines(t *testing.T, out string) []string {
	t.Helper()
	var ls []string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		ls = append(ls, sc.Text())
	}
	return ls
}

func TestGenStdout(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	t.Setenv("CLICKREC_GEN_COUNT", "400")
	t.Setenv("CLICKREC_GEN_INVALID_SHARE", "0.3")
	t.Setenv("CLICKREC_GEN_RATE", "0")
	out, err := runGen(t, ctx)
	if err != nil {
		t.Fatal(err)
	}
	ls := lines(t, out)
	if len(ls) != 400 {
		t.Fatalf("%d lines, want 400 (CLICKREC_GEN_COUNT)", len(ls))
	}
	reasons := map[event.Reason]int{}
	for _, l := range ls {
		_, err := event.Decode([]byte(l), time.Now().Add(time.Minute), event.DefaultLimits)
		reasons[event.ReasonOf(err)]++
	}
	t.Logf("decoded stdout lines by reason: %v", reasons)
	for _, r := range []event.Reason{"", event.ReasonMalformedJSON, event.ReasonOversize, event.ReasonWrongType} {
		if reasons[r] == 0 {
			t.Errorf("no line decodes with reason %q among %v", r, reasons)
		}
	}
	// A flag wins over its variable; the same seed gives the same output.
	a, err := runGen(t, ctx, "--count", "7", "--seed", "5")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := runGen(t, ctx, "--count", "7", "--seed", "5")
	if len(lines(t, a)) != 7 || a == "" {
		t.Fatalf("--count 7 gave %d lines", len(lines(t, a)))
	}
	if !strings.Contains(a, `"event_id":"5-0"`) {
		t.Fatalf("seed 5 output lacks event id 5-0:\n%s", a)
	}
	if strings.Count(a, "\n") != 7 || len(a) < 7*100 {
		t.Fatalf("output:\n%s", a)
	}
	// Timestamps differ between runs; ids, users, sessions and types do not.
	strip := func(s string) string {
		var o []string
		for _, l := range lines(t, s) {
			c, err := event.Decode([]byte(l), time.Now().Add(time.Minute), event.DefaultLimits)
			if err == nil {
				o = append(o, c.EventID+" "+c.UserID+" "+c.SessionID+" "+c.Type.String())
			}
		}
		return strings.Join(o, "\n")
	}
	if strip(a) != strip(b) {
		t.Fatalf("two runs with seed 5 differ:\n%s\n--\n%s", strip(a), strip(b))
	}
}

func TestGenTaobao(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	out, err := runGen(t, ctx, "--source", "taobao", "--taobao-file", "../../gen/testdata/taobao-user-tail-2k.csv", "--speedup", "0", "--late-share", "0", "--invalid-share", "0")
	if err != nil {
		t.Fatal(err)
	}
	ls := lines(t, out)
	if len(ls) != 2_000 {
		t.Fatalf("replayed %d lines of the 2,000-row user tail", len(ls))
	}
	if !strings.Contains(ls[0], `"event_id":"tb-0"`) || !strings.Contains(ls[1999], `"event_id":"tb-1999"`) {
		t.Fatalf("first and last lines:\n%s\n%s", ls[0], ls[1999])
	}
	out, err = runGen(t, ctx, "--source", "taobao", "--taobao-file", "../../gen/testdata/taobao-time-slice-3k.csv.gz", "--speedup", "0", "--count", "100")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(lines(t, out)); n != 100 {
		t.Fatalf("--count 100 gave %d lines", n)
	}
}

func TestGenUsageErrors(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--source", "csv"}, `--source "csv": want synthetic or taobao`},
		{[]string{"--out", "file"}, `--out "file": want stdout or kafka`},
		{[]string{"--rate", "-1"}, "--rate must be a number of events per second, 0 or more"},
		{[]string{"--speedup", "-2"}, "--speedup must be 0 or more"},
		{[]string{"--count", "-1"}, "--count must be 0"},
		{[]string{"--duration", "-1s"}, "--duration must be 0"},
		{[]string{"--users", "0"}, "--users must be at least 1"},
		{[]string{"--items", "10", "--categories", "11"}, "--categories must be between 1 and --items (10)"},
		{[]string{"--late-share", "1.5"}, "--late-share must be between 0 and 1"},
		{[]string{"--late-share", "0.6", "--invalid-share", "0.5"}, "must not exceed 1"},
		{[]string{"--kafka-brokers", "localhost"}, `--kafka-brokers "localhost": want host:port`},
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"--count", "many"}, `invalid value "many" for flag -count`},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--source", "taobao", "--taobao-file", "/nonexistent/ub.csv"}, "--taobao-file: cannot open Taobao data"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := runGen(t, ctx, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) || cli.ExitCode(err) != 2 {
				t.Fatalf("error %v (exit %d), want exit 2 and %q", err, cli.ExitCode(err), tt.want)
			}
		})
	}
	t.Run("environment", func(t *testing.T) {
		t.Setenv("CLICKREC_GEN_USERS", "lots")
		_, err := runGen(t, ctx)
		if err == nil || !strings.Contains(err.Error(), `CLICKREC_GEN_USERS="lots"`) || cli.ExitCode(err) != 2 {
			t.Fatalf("error %v", err)
		}
	})
}

func TestGenUnreachableKafka(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	_, err := runGen(t, ctx, "--out", "kafka", "--kafka-brokers", "127.0.0.1:1", "--kafka-dial-timeout", "500ms", "--count", "1")
	if err == nil || !strings.Contains(err.Error(), "cannot reach Kafka at 127.0.0.1:1") || cli.ExitCode(err) != 2 {
		t.Fatalf("error %v (exit %d), want exit 2 and cannot reach Kafka", err, cli.ExitCode(err))
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("error is not one line: %q", err)
	}
}

// TestCommandFlags: every flag has a CLICKREC_* variable and help text.
func TestGenFlags(t *testing.T) {
	var f genFlags
	fs := cli.NewFlagSet("gen", genUsage)
	f.register(fs)
	var usage bytes.Buffer
	fs.PrintUsage(&usage)
	fs.VisitAll(func(fl *flag.Flag) {
		if !strings.Contains(fl.Usage, "(env CLICKREC_") || len(fl.Usage) < 40 {
			t.Errorf("--%s: usage %q lacks an explanation or an environment variable", fl.Name, fl.Usage)
		}
		if !strings.Contains(usage.String(), "--"+fl.Name) {
			t.Errorf("--help does not list --%s", fl.Name)
		}
	})
	for _, name := range []string{"source", "taobao-file", "speedup", "rate", "count", "duration", "users", "items",
		"categories", "late-share", "invalid-share", "seed", "out", "kafka-brokers"} {
		if fs.Lookup(name) == nil {
			t.Errorf("no --%s", name)
		}
	}
	if _, err := runGen(t, context.Background(), "--help"); err != flag.ErrHelp || cli.ExitCode(err) != 0 {
		t.Fatalf("--help: %v", err)
	}
}

// TestCommandTopicPrefix: --topic-prefix sends to <prefix>user_events, the
// topic a hot path started with the same --topic-prefix reads; a prefix Kafka
// would refuse is a usage error.
func TestGenTopicPrefix(t *testing.T) {
	cfg := &kafkautil.Config{Partitions: 2, ReplicationFactor: 1, DialTimeout: 5 * time.Second}
	emb, err := kafkautil.StartEmbedded(cfg, kafkautil.DefaultTopics)
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	ctx := testenv.Context(t, 30*time.Second)
	if _, err := runGen(t, ctx, "--out", "kafka", "--kafka-brokers", cfg.Brokers.String(), "--kafka-partitions", "2",
		"--topic-prefix", "lt7-", "--count", "20", "--rate", "0"); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(cfg.Opts("gen-test"), kgo.ConsumeTopics("lt7-user_events"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := 0
	for got < 20 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of 20 records from lt7-user_events: %v", got, err)
		}
		got += fs.NumRecords()
	}
	if _, err := runGen(t, ctx, "--topic-prefix", "bad prefix!", "--count", "1"); err == nil {
		t.Fatal("a prefix with a space and '!' was accepted")
	}
}
