package kafkautil

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/internal/cli"
)

// GroupNeeds is what a transactional group member asks of the brokers.
type GroupNeeds struct {
	SessionTimeout time.Duration // --session-timeout
	TxnTimeout     time.Duration // --txn-timeout; 0: not transactional
}

// BrokerFinding is one broker setting that makes membership changes or
// recovery slow: worth a warning, not a refusal.
type BrokerFinding struct {
	Setting string
	Value   string
	Why     string
}

// CheckBrokerSettings reads one broker's configuration and compares it with
// what the member needs. A setting that would make the broker refuse the
// member (a session timeout outside the group's bounds, a transaction
// timeout above the broker's maximum) is a usage error naming the flag and
// the setting; a setting that only slows membership changes down comes back
// as a finding to warn about. A broker that does not let this client read its
// configuration (an ACL) is no error: nothing is checked.
func CheckBrokerSettings(ctx context.Context, cl *kgo.Client, need GroupNeeds) ([]BrokerFinding, error) {
	adm := kadm.NewClient(cl)
	brokers, err := adm.ListBrokers(ctx)
	if err != nil || len(brokers) == 0 {
		return nil, nil // unreadable: nothing to check
	}
	// One broker: the group and transaction settings are cluster-wide in
	// practice (the coordinators are spread over every broker).
	rcs, err := adm.DescribeBrokerConfigs(ctx, brokers[0].NodeID)
	if err == nil && len(rcs) > 0 {
		err = rcs[0].Err
	}
	if err != nil || len(rcs) == 0 {
		return nil, nil // not allowed (an ACL): nothing to check
	}
	conf := map[string]string{}
	for _, c := range rcs[0].Configs {
		if c.Value != nil {
			conf[c.Key] = *c.Value
		}
	}
	ms := func(key string) (time.Duration, bool) {
		v, err := strconv.ParseInt(conf[key], 10, 64)
		return time.Duration(v) * time.Millisecond, err == nil
	}
	var errs []error
	if lo, ok := ms("group.min.session.timeout.ms"); ok && need.SessionTimeout < lo {
		errs = append(errs, cli.Usagef("--session-timeout %v is below the brokers' group.min.session.timeout.ms (%v): the group would refuse this worker", need.SessionTimeout, lo))
	}
	if hi, ok := ms("group.max.session.timeout.ms"); ok && need.SessionTimeout > hi {
		errs = append(errs, cli.Usagef("--session-timeout %v is above the brokers' group.max.session.timeout.ms (%v): the group would refuse this worker", need.SessionTimeout, hi))
	}
	if hi, ok := ms("transaction.max.timeout.ms"); ok && need.TxnTimeout > hi {
		errs = append(errs, cli.Usagef("--txn-timeout %v is above the brokers' transaction.max.timeout.ms (%v): the brokers would refuse its transactions", need.TxnTimeout, hi))
	}
	switch len(errs) {
	case 0:
	case 1:
		return nil, errs[0]
	default:
		return nil, errors.Join(errs...)
	}
	var out []BrokerFinding
	if d, ok := ms("group.initial.rebalance.delay.ms"); ok && d > 0 {
		out = append(out, BrokerFinding{Setting: "group.initial.rebalance.delay.ms", Value: conf["group.initial.rebalance.delay.ms"],
			Why: fmt.Sprintf("a group's first members wait %v before they get partitions (0 for stream workers)", d)})
	}
	return out, nil
}
