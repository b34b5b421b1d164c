package itemknow

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/internal/testenv"
)

// TestGlobalReadsCommittedOnly produces item-knowledge records in
// transactions against the real broker, one of them aborted, and starts
// a Global after the fact (a restart or a new worker): once Ready, it holds
// exactly the committed increments — nothing lost, nothing of the aborted
// transaction — and then follows what is committed later.
func TestGlobalReadsCommittedOnly(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	ctx := testenv.Context(t, 60*time.Second)
	topic := testenv.Name("ik")
	opts := []kgo.Opt{kgo.SeedBrokers(brokers...)}
	admCl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	if _, err := adm.CreateTopic(ctx, 3, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	defer adm.DeleteTopics(context.Background(), topic)

	pr, err := kgo.NewClient(append(opts, kgo.TransactionalID(topic+"-tx"), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	now := time.Now().UnixMilli()
	txn := func(commit bool, items ...int64) {
		t.Helper()
		if err := pr.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i, it := range items {
			v := AppendRecord(nil, NewIncrement(now, it, 0, SessionHash("s"), nil))
			pr.Produce(ctx, &kgo.Record{Topic: topic, Partition: int32(i % 3), Value: v}, nil)
		}
		if err := pr.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := pr.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	txn(true, 1, 2, 3)
	txn(false, 4, 5, 6) // aborted: must not count
	txn(true, 7)

	snapshot := filepath.Join(t.TempDir(), "item-knowledge.snapshot")
	start := func() (*Global, func()) {
		g := NewGlobal(GlobalConfig{Topic: topic, Opts: opts, Lookback: time.Hour, SnapshotPath: snapshot})
		gctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- g.Run(gctx) }()
		select {
		case <-g.Ready():
		case err := <-done:
			t.Fatalf("Run ended before catching up: %v", err)
		case <-ctx.Done():
			t.Fatal("not caught up within the test's deadline")
		}
		return g, func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
	g, stop := start()
	known := func() (in []int64) {
		tab := g.Lock()
		defer g.Unlock()
		for _, id := range []int64{1, 2, 3, 4, 5, 6, 7, 8} {
			if tab.Known(id) {
				in = append(in, id)
			}
		}
		return in
	}
	if got := known(); len(got) != 4 || got[3] != 7 {
		t.Fatalf("after catching up the table knows %v, want [1 2 3 7] (6 is an aborted transaction's)", got)
	}
	// It follows what is committed afterwards.
	txn(true, 8)
	deadline := time.Now().Add(30 * time.Second)
	for len(known()) < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("a record committed after Ready was not applied within 30 s: %v", known())
		}
		time.Sleep(20 * time.Millisecond) // polling the table: Run gives no per-record signal
	}
	if p := g.Progress(); p.Records != 5 || p.Bad != 0 || p.NewestMs != now {
		t.Fatalf("progress %+v, want 5 records, none bad, newest %d", p, now)
	}

	// A restart loads the snapshot the stop wrote and reads only the tail.
	stop()
	txn(true, 5)
	g, stop = start()
	defer stop()
	if got := known(); !slices.Equal(got, []int64{1, 2, 3, 5, 7, 8}) {
		t.Fatalf("after a restart from the snapshot the table knows %v, want [1 2 3 5 7 8]", got)
	}
	if p := g.Progress(); p.Records != 1 {
		t.Fatalf("the restart applied %d records, want 1 (the one after the snapshot)", p.Records)
	}
}
