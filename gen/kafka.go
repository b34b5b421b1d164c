package gen

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"
)

// MaxInFlight bounds the records produced to Kafka and not yet acknowledged;
// when it is reached, sending waits and the schedule's lag grows.
const MaxInFlight = 10_000

// KafkaSink produces records asynchronously to a Kafka topic. The client's
// kgo.MaxBufferedRecords bounds the records in flight: Send blocks while that
// many are unacknowledged.
type KafkaSink struct {
	cl       *kgo.Client
	topic    string
	promise  func(*kgo.Record, error)
	acked    atomic.Int64
	failed   atomic.Int64
	firstErr atomic.Pointer[error]
}

// NewKafkaSink returns a sink producing to topic with cl. It does not close cl.
func NewKafkaSink(cl *kgo.Client, topic string) *KafkaSink {
	k := &KafkaSink{cl: cl, topic: topic}
	k.promise = k.done
	return k
}

func (k *KafkaSink) done(_ *kgo.Record, err error) {
	if err == nil {
		k.acked.Add(1)
		return
	}
	k.failed.Add(1)
	err = fmt.Errorf("cannot produce to %s: %w", k.topic, err)
	k.firstErr.CompareAndSwap(nil, &err)
}

// Send copies r's key and value into a new Kafka record and produces it. The
// record is produced on a context that ctx's end does not cancel, so that
// Flush can still deliver it on shutdown. Send returns the first error a
// produce has failed with so far.
func (k *KafkaSink) Send(ctx context.Context, r *Record) error {
	if err := k.Err(); err != nil {
		return err
	}
	buf := make([]byte, len(r.Key)+len(r.Value))
	n := copy(buf, r.Key)
	copy(buf[n:], r.Value)
	k.cl.Produce(context.WithoutCancel(ctx), &kgo.Record{Topic: k.topic, Key: buf[:n:n], Value: buf[n:]}, k.promise)
	return nil
}

// Flush waits until every record sent is acknowledged or failed, or ctx ends.
func (k *KafkaSink) Flush(ctx context.Context) error {
	if err := k.cl.Flush(ctx); err != nil {
		return fmt.Errorf("cannot flush %d records to %s: %w", k.cl.BufferedProduceRecords(), k.topic, err)
	}
	return k.Err()
}

// Err returns the first produce error, or nil.
func (k *KafkaSink) Err() error {
	if p := k.firstErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Acked returns how many records the brokers have acknowledged.
func (k *KafkaSink) Acked() int64 { return k.acked.Load() }

// Failed returns how many records failed to produce.
func (k *KafkaSink) Failed() int64 { return k.failed.Load() }
