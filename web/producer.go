package web

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/internal/kafkautil"
)

// Ack is where an accepted click was written.
type Ack struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// Producer writes a click record (key: user id, value: the click's JSON) to
// the events topic and returns once it is acknowledged.
type Producer interface {
	Produce(ctx context.Context, key, value []byte) (Ack, error)
}

// KafkaProducer is the Producer for a Kafka cluster: an idempotent franz-go
// producer with acks from all in-sync replicas and no linger, so a click
// reaches the hot path as soon as it is posted.
type KafkaProducer struct {
	cl    *kgo.Client
	topic string
}

// NewKafkaProducer returns a producer to topic on the cluster kcfg describes.
func NewKafkaProducer(kcfg kafkautil.Config, topic string) (*KafkaProducer, error) {
	cl, err := kgo.NewClient(append(kcfg.Opts("clickrec-web"),
		kgo.DefaultProduceTopic(topic),
		kgo.ProducerLinger(0),
		kgo.RecordDeliveryTimeout(10*time.Second))...)
	if err != nil {
		return nil, fmt.Errorf("creating the Kafka producer: %w", err)
	}
	return &KafkaProducer{cl: cl, topic: topic}, nil
}

// Client returns the underlying franz-go client.
func (p *KafkaProducer) Client() *kgo.Client { return p.cl }

// Produce implements Producer.
func (p *KafkaProducer) Produce(ctx context.Context, key, value []byte) (Ack, error) {
	r := &kgo.Record{Key: key, Value: value}
	if err := p.cl.ProduceSync(ctx, r).FirstErr(); err != nil {
		return Ack{}, fmt.Errorf("producing to %s: %w", p.topic, err)
	}
	return Ack{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}, nil
}

// Close flushes nothing (Produce is synchronous) and closes the client.
func (p *KafkaProducer) Close() { p.cl.Close() }
