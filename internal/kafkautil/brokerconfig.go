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
	// ConsumerProtocol: the member uses the next-generation group protocol
	// (KIP-848), whose heartbeat interval and session timeout are the
	// brokers' group.consumer.* settings, not the member's.
	ConsumerProtocol bool
}

// MaxConsumerHeartbeat is the longest group.consumer.heartbeat.interval.ms
// that CheckBrokerSettings lets pass without a finding: a member of a
// KIP-848 group learns that it gets or gives up partitions only from its
// next heartbeat, so a join or a leave moves partitions up to one interval
// late (the 5 s default stalled each join ≈ 5 s).
const MaxConsumerHeartbeat = time.Second

// ConsumerProtocolSupport is how far the brokers serve the next-generation
// consumer group protocol (KIP-848).
type ConsumerProtocolSupport int

const (
	// ConsumerProtocolNone: some broker does not serve ConsumerGroupHeartbeat
	// v1 (before Kafka 4.0, or "consumer" left out of
	// group.coordinator.rebalance.protocols).
	ConsumerProtocolNone ConsumerProtocolSupport = iota
	// ConsumerProtocolEarly: Kafka 4.0–4.2, where an offset commit that
	// races a member-epoch bump can fail with STALE_MEMBER_EPOCH, which the
	// client cannot handle (fixed in 4.3 by KIP-1251; franz-go advises 4.3+).
	ConsumerProtocolEarly
	// ConsumerProtocolFull: Kafka 4.3+ on every broker.
	ConsumerProtocolFull
)

// ConsumerProtocol asks every broker for its API versions and tells how far
// they serve KIP-848. Kafka 4.3 is recognised by DescribeLogDirs v5, the one
// request version it added (KIP-1251 changed no request).
func ConsumerProtocol(ctx context.Context, cl *kgo.Client) (ConsumerProtocolSupport, error) {
	vs, err := kadm.NewClient(cl).ApiVersions(ctx)
	if err != nil {
		return ConsumerProtocolNone, fmt.Errorf("asking the brokers for their API versions: %w", err)
	}
	const consumerGroupHeartbeat, describeLogDirs = 68, 35
	support, answered := ConsumerProtocolFull, false
	vs.Each(func(v kadm.BrokerApiVersions) {
		if v.Err != nil {
			return
		}
		answered = true
		if max, ok := v.KeyMaxVersion(consumerGroupHeartbeat); !ok || max < 1 {
			support = ConsumerProtocolNone
		} else if max, ok := v.KeyMaxVersion(describeLogDirs); (!ok || max < 5) && support == ConsumerProtocolFull {
			support = ConsumerProtocolEarly
		}
	})
	if !answered {
		return ConsumerProtocolNone, errors.New("asking the brokers for their API versions: no broker answered")
	}
	return support, nil
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
	if need.ConsumerProtocol {
		return consumerProtocolFindings(conf, ms, need)
	}
	if lo, ok := ms("group.min.session.timeout.ms"); ok && need.SessionTimeout < lo {
		errs = append(errs, cli.Usagef("--session-timeout %v is below the brokers' group.min.session.timeout.ms (%v): the group would refuse this worker", need.SessionTimeout, lo))
	}
	if hi, ok := ms("group.max.session.timeout.ms"); ok && need.SessionTimeout > hi {
		errs = append(errs, cli.Usagef("--session-timeout %v is above the brokers' group.max.session.timeout.ms (%v): the group would refuse this worker", need.SessionTimeout, hi))
	}
	errs = append(errs, txnTimeoutError(ms, need)...)
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

func txnTimeoutError(ms func(string) (time.Duration, bool), need GroupNeeds) []error {
	if hi, ok := ms("transaction.max.timeout.ms"); ok && need.TxnTimeout > hi {
		return []error{cli.Usagef("--txn-timeout %v is above the brokers' transaction.max.timeout.ms (%v): the brokers would refuse its transactions", need.TxnTimeout, hi)}
	}
	return nil
}

// consumerProtocolFindings checks the settings of a KIP-848 group: the
// brokers, not the member, set its heartbeat interval and session timeout,
// so nothing there refuses the member; they only make changes slow.
func consumerProtocolFindings(conf map[string]string, ms func(string) (time.Duration, bool), need GroupNeeds) ([]BrokerFinding, error) {
	if errs := txnTimeoutError(ms, need); len(errs) > 0 {
		return nil, errs[0]
	}
	var out []BrokerFinding
	if d, ok := ms("group.consumer.heartbeat.interval.ms"); ok && d > MaxConsumerHeartbeat {
		out = append(out, BrokerFinding{Setting: "group.consumer.heartbeat.interval.ms", Value: conf["group.consumer.heartbeat.interval.ms"],
			Why: fmt.Sprintf("a member learns that it gets or gives up partitions only from its next heartbeat, so each join or leave leaves partitions unanswered up to %v (at most %v for stream workers; lower group.consumer.min.heartbeat.interval.ms with it)", d, MaxConsumerHeartbeat)})
	}
	if d, ok := ms("group.consumer.assignment.interval.ms"); ok && d > MaxConsumerHeartbeat {
		out = append(out, BrokerFinding{Setting: "group.consumer.assignment.interval.ms", Value: conf["group.consumer.assignment.interval.ms"],
			Why: fmt.Sprintf("the group coordinator computes a new assignment at most every %v, so a join or leave can wait that long before partitions move", d)})
	}
	if d, ok := ms("group.consumer.session.timeout.ms"); ok && d > need.SessionTimeout {
		out = append(out, BrokerFinding{Setting: "group.consumer.session.timeout.ms", Value: conf["group.consumer.session.timeout.ms"],
			Why: fmt.Sprintf("with the consumer group protocol the brokers' session timeout applies, not --session-timeout (%v): a worker that dies for good keeps its partitions %v (lower group.consumer.min.session.timeout.ms with it)", need.SessionTimeout, d)})
	}
	return out, nil
}
