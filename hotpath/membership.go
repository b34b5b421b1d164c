package hotpath

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The consumer group protocols (--group-protocol).
const (
	GroupProtocolAuto     = "auto"     // consumer on Kafka 4.3+, else classic (resolved by the command)
	GroupProtocolConsumer = "consumer" // KIP-848: the broker assigns, partitions move one by one
	GroupProtocolClassic  = "classic"  // join/sync: a group-wide rebalance on every change
)

// Member epochs of a ConsumerGroupHeartbeat that leaves the group (KIP-848).
const (
	// epochLeave removes the member: its partitions go to the others now.
	epochLeave int32 = -1
	// epochLeaveStatic marks a static member as gone for a while: its
	// partitions stay reserved for its instance id (until the session
	// timeout), and a member that joins with that instance id takes them
	// over as they are, without moving any other partition.
	epochLeaveStatic int32 = -2
)

// errNotConsumerGroup: the group is a classic group (or none yet), so it has
// no KIP-848 member to release.
var errNotConsumerGroup = errors.New("not a consumer-protocol group")

// releaseStatic ends the KIP-848 membership of the static member with this
// worker's instance id, whoever holds it, by a leave heartbeat on its behalf
// with the given epoch. It returns the member id released, "" if the group
// has no such member.
//
// Why it is needed: under KIP-848 a static member that dies without leaving
// keeps its instance id until the brokers' group.consumer.session.timeout.ms
// (45 s by default), and a restarted worker with the same instance id is
// refused (UNRELEASED_INSTANCE_ID) until then, so its partitions go
// unanswered that long. And franz-go's own leave of a static member (v1.22.3)
// sends epoch -2 without the instance id, which the broker rejects as an
// invalid request, so a clean stop would strand the partitions the same way.
// A leave on behalf of the member with its id and instance id is what the
// broker accepts.
func releaseStatic(ctx context.Context, cl *kgo.Client, group, instance string, epoch int32) (string, error) {
	var described kadm.DescribedConsumerGroups
	var err error
	for {
		described, err = kadm.NewClient(cl).DescribeConsumerGroups(ctx, group)
		if err == nil {
			err = described.Error()
		}
		// A new group's coordinator may still be loading (a fresh broker
		// creates __consumer_offsets on the first look-up): retry until ctx
		// ends.
		if err == nil || !kerr.IsRetriable(err) {
			break
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("describing group %s: %w", group, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if errors.Is(err, kerr.GroupIDNotFound) {
		return "", errNotConsumerGroup
	}
	if err != nil {
		return "", fmt.Errorf("describing group %s: %w", group, err)
	}
	var memberID string
	for _, m := range described[group].Members {
		if m.InstanceID != nil && *m.InstanceID == instance {
			memberID = m.MemberID
		}
	}
	if memberID == "" {
		return "", nil
	}
	req := kmsg.NewPtrConsumerGroupHeartbeatRequest()
	req.Group, req.MemberID, req.InstanceID, req.MemberEpoch = group, memberID, &instance, epoch
	resp, err := req.RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
		if err != nil && resp.ErrorMessage != nil {
			err = fmt.Errorf("%w: %s", err, *resp.ErrorMessage)
		}
	}
	if errors.Is(err, kerr.UnknownMemberID) || errors.Is(err, kerr.GroupIDNotFound) {
		return "", nil // gone in between
	}
	if err != nil {
		return "", fmt.Errorf("leaving group %s for member %s (instance %s, epoch %d): %w", group, memberID, instance, epoch, err)
	}
	return memberID, nil
}
