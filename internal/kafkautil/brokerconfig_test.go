package kafkautil

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/internal/testenv"
)

// TestCheckBrokerSettings: against the real broker (scripts/kafka.sh sets
// group.initial.rebalance.delay.ms=0; Kafka's defaults bound the session
// timeout to [6 s, 30 min] and the transaction timeout to 15 min), the hot
// path's defaults pass, and timeouts the broker would refuse are usage
// errors naming the flag and the broker setting.
func TestCheckBrokerSettings(t *testing.T) {
	cfg := &Config{Brokers: testenv.KafkaBrokers(t), DialTimeout: 10 * time.Second}
	cl, err := kgo.NewClient(cfg.Opts("brokerconfig-test")...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := testenv.Context(t, 20*time.Second)
	findings, err := CheckBrokerSettings(ctx, cl, GroupNeeds{SessionTimeout: 10 * time.Second, TxnTimeout: 10 * time.Second})
	if err != nil || len(findings) != 0 {
		t.Fatalf("the defaults: %v, %+v; want no error, no finding", err, findings)
	}
	for _, c := range []struct {
		need       GroupNeeds
		flag, conf string
	}{
		{GroupNeeds{SessionTimeout: time.Second}, "--session-timeout", "group.min.session.timeout.ms"},
		{GroupNeeds{SessionTimeout: time.Hour}, "--session-timeout", "group.max.session.timeout.ms"},
		{GroupNeeds{SessionTimeout: 10 * time.Second, TxnTimeout: time.Hour}, "--txn-timeout", "transaction.max.timeout.ms"},
	} {
		_, err := CheckBrokerSettings(ctx, cl, c.need)
		if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), c.flag) || !strings.Contains(err.Error(), c.conf) {
			t.Errorf("%+v: %v; want a usage error naming %s and %s", c.need, err, c.flag, c.conf)
		}
	}
}

// TestCheckBrokerSettingsConsumerProtocol: the KIP-848 settings of the local
// broker (scripts/kafka.sh: heartbeat 100 ms, session 10 s) pass with the
// hot path's defaults; Kafka's own defaults (heartbeat 5 s, session 45 s) are
// findings naming the setting, and a transaction timeout the brokers refuse
// is still a usage error.
func TestCheckBrokerSettingsConsumerProtocol(t *testing.T) {
	cfg := &Config{Brokers: testenv.KafkaBrokers(t), DialTimeout: 10 * time.Second}
	cl, err := kgo.NewClient(cfg.Opts("brokerconfig-test")...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := testenv.Context(t, 20*time.Second)
	support, err := ConsumerProtocol(ctx, cl)
	if err != nil || support == ConsumerProtocolNone {
		t.Fatalf("ConsumerProtocol: %v, %v; want Kafka 4.x's support of KIP-848", support, err)
	}
	need := GroupNeeds{SessionTimeout: 10 * time.Second, TxnTimeout: 10 * time.Second, ConsumerProtocol: true}
	if findings, err := CheckBrokerSettings(ctx, cl, need); err != nil || len(findings) != 0 {
		t.Fatalf("scripts/kafka.sh's settings: %v, %+v; want no error, no finding", err, findings)
	}
	kafkaDefaults := map[string]string{
		"group.consumer.heartbeat.interval.ms":  "5000",
		"group.consumer.session.timeout.ms":     "45000",
		"group.consumer.assignment.interval.ms": "1000",
		"transaction.max.timeout.ms":            "900000",
	}
	ms := func(key string) (time.Duration, bool) {
		d, err := time.ParseDuration(kafkaDefaults[key] + "ms")
		return d, err == nil
	}
	findings, err := consumerProtocolFindings(kafkaDefaults, ms, need)
	var settings []string
	for _, f := range findings {
		settings = append(settings, f.Setting)
	}
	if err != nil || strings.Join(settings, ",") != "group.consumer.heartbeat.interval.ms,group.consumer.session.timeout.ms" {
		t.Fatalf("Kafka's defaults: %v, findings %v; want the heartbeat interval and the session timeout", err, settings)
	}
	need.TxnTimeout = time.Hour
	if _, err := consumerProtocolFindings(kafkaDefaults, ms, need); cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), "--txn-timeout") {
		t.Fatalf("--txn-timeout 1h: %v; want a usage error naming it", err)
	}
}
