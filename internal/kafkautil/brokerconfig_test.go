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
