package e2e

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/hotpath"
	"github.com/clickrec/clickrec/internal/testenv"
)

// netns is a network namespace joined to the host by a veth pair on a /30:
// hostIP on the host's end, nsIP on the namespace's. Both ends and the
// namespace are removed when the test ends.
type netns struct {
	name             string
	hostDev, nsDev   string
	hostIP, nsIP     string
	hostMAC, nsMAC   string
	partitioned      bool
	partitionStarted time.Time
}

// netnsPrefix names this package's namespaces: clickrec-e2e-<pid>-<n>, so a
// run can remove what a killed run (go test -timeout) left behind.
const netnsPrefix = "clickrec-e2e-"

func newNetns(t *testing.T) *netns {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		testenv.Missing(t, "ip (iproute2)", "apt-get install iproute2")
	}
	if os.Geteuid() != 0 {
		testenv.Missing(t, "root (for ip netns)", "run the e2e tests as root, or in a container with CAP_NET_ADMIN and CAP_SYS_ADMIN")
	}
	removeStaleNetns(t)
	// A /30 in 10.200.0.0/16 that no interface of the host uses yet.
	used := map[int]bool{}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip := ipn.IP.To4(); ip != nil && ip[0] == 10 && ip[1] == 200 {
				used[int(ip[2])] = true
			}
		}
	}
	sub := -1
	for i := range 250 {
		if n := 1 + (os.Getpid()+i)%250; !used[n] {
			sub = n
			break
		}
	}
	if sub < 0 {
		t.Fatal("no free 10.200.x.0/30 for the veth pair")
	}
	n := &netns{name: fmt.Sprintf("%s%d-%d", netnsPrefix, os.Getpid(), sub),
		hostDev: fmt.Sprintf("crp%dh", sub), nsDev: fmt.Sprintf("crp%dn", sub),
		hostIP: fmt.Sprintf("10.200.%d.1", sub), nsIP: fmt.Sprintf("10.200.%d.2", sub)}
	// Registered first, so it runs last: after every process in the
	// namespace has been killed.
	t.Cleanup(n.remove)
	ipRun(t, "netns", "add", n.name)
	ipRun(t, "link", "add", n.hostDev, "type", "veth", "peer", "name", n.nsDev)
	ipRun(t, "link", "set", n.nsDev, "netns", n.name)
	ipRun(t, "addr", "add", n.hostIP+"/30", "dev", n.hostDev)
	ipRun(t, "link", "set", n.hostDev, "up")
	ipRun(t, "-n", n.name, "addr", "add", n.nsIP+"/30", "dev", n.nsDev)
	ipRun(t, "-n", n.name, "link", "set", n.nsDev, "up")
	ipRun(t, "-n", n.name, "link", "set", "lo", "up")
	n.hostMAC = readMAC(t, "", n.hostDev)
	n.nsMAC = readMAC(t, n.name, n.nsDev)
	return n
}

func (n *netns) remove() {
	// Deleting the namespace destroys its end of the pair and with it the
	// host's end; the explicit delete covers a pair that never moved.
	_ = exec.Command("ip", "netns", "del", n.name).Run()
	_ = exec.Command("ip", "link", "del", n.hostDev).Run()
}

// removeStaleNetns deletes namespaces of this package whose test process is gone.
func removeStaleNetns(t *testing.T) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, netnsPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		if err := exec.Command("ip", "netns", "del", name).Run(); err == nil {
			t.Logf("removed the stale network namespace %s of a test process that is gone", name)
		}
	}
}

func ipRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func readMAC(t *testing.T, ns, dev string) string {
	t.Helper()
	args := []string{"-o", "link", "show", dev}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	f := strings.Fields(ipRun(t, args...))
	for i, w := range f {
		if w == "link/ether" && i+1 < len(f) {
			return f[i+1]
		}
	}
	t.Fatalf("no MAC address for %s in %q", dev, f)
	return ""
}

// partition cuts the link silently, in both directions, as a broken switch
// would: each end's neighbour entry for the other points at a MAC address
// nobody has, so frames are dropped and neither TCP stack sees an error or a
// reset — connections just go quiet. The interfaces stay up, so the host's
// own clients keep reaching the broker on hostIP.
func (n *netns) partition(t *testing.T) {
	t.Helper()
	const nowhere = "02:00:00:00:00:01"
	ipRun(t, "-n", n.name, "neigh", "replace", n.hostIP, "lladdr", nowhere, "dev", n.nsDev, "nud", "permanent")
	ipRun(t, "neigh", "replace", n.nsIP, "lladdr", nowhere, "dev", n.hostDev, "nud", "permanent")
	n.partitioned, n.partitionStarted = true, time.Now()
}

// heal restores the link with the ends' real addresses.
func (n *netns) heal(t *testing.T) {
	t.Helper()
	ipRun(t, "-n", n.name, "neigh", "replace", n.hostIP, "lladdr", n.hostMAC, "dev", n.nsDev, "nud", "reachable")
	ipRun(t, "neigh", "replace", n.nsIP, "lladdr", n.nsMAC, "dev", n.hostDev, "nud", "reachable")
	n.partitioned = false
}

// canDial reports whether a TCP connection from inside the namespace to addr
// is established within two seconds.
func (n *netns) canDial(addr string) bool {
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command("timeout", "2", "ip", "netns", "exec", n.name, "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%s", host, port))
	return cmd.Run() == nil
}

// nsProc is a clickrec process inside a network namespace. Its output goes to
// the test log like start's, and is kept for assertions.
type nsProc struct {
	*proc
	mu    sync.Mutex
	lines []string
}

func startInNetns(t *testing.T, ns *netns, name string, args ...string) *nsProc {
	t.Helper()
	// ip netns exec enters the namespace and execs the command: the pid is
	// clickrec's own, so signals reach it directly.
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.name, clickrecBin}, args...)...)
	p := &nsProc{}
	p.proc = startCmd(t, name, cmd, func(line string) {
		p.mu.Lock()
		p.lines = append(p.lines, line)
		p.mu.Unlock()
	})
	return p
}

func (p *nsProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

func (p *nsProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// groupView is the hot path group as the coordinator sees it.
type groupView struct {
	state   string
	members map[string]groupMember // by instance id
}

type groupMember struct {
	host  string // the address the member connects from
	parts []int32
}

func (g groupView) String() string {
	var b strings.Builder
	b.WriteString(g.state)
	for _, id := range slices.Sorted(maps.Keys(g.members)) {
		fmt.Fprintf(&b, " %s@%s%v", id, g.members[id].host, g.members[id].parts)
	}
	return b.String()
}

func (c *cluster) describeGroup(ctx context.Context, adm *kadm.Client) (groupView, error) {
	ds, err := adm.DescribeGroups(ctx, c.group)
	if err != nil {
		return groupView{}, err
	}
	d, ok := ds[c.group]
	if !ok || d.Err != nil {
		return groupView{}, fmt.Errorf("describing %s: %v", c.group, d.Err)
	}
	g := groupView{state: d.State, members: map[string]groupMember{}}
	for _, m := range d.Members {
		id := m.MemberID
		if m.InstanceID != nil {
			id = *m.InstanceID
		}
		gm := groupMember{host: strings.TrimPrefix(m.ClientHost, "/")}
		if a, ok := m.Assigned.AsConsumer(); ok {
			for _, tp := range a.Topics {
				if tp.Topic == string(c.topics.Events) {
					gm.parts = append(gm.parts, tp.Partitions...)
				}
			}
		}
		slices.Sort(gm.parts)
		g.members[id] = gm
	}
	return g, nil
}

// offsets returns the group's committed offsets and the events topic's end
// offsets, by partition.
func (c *cluster) offsets(ctx context.Context, adm *kadm.Client) (committed, ends map[int32]int64, err error) {
	topic := string(c.topics.Events)
	cs, err := adm.FetchOffsets(ctx, c.group)
	if err != nil {
		return nil, nil, err
	}
	es, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, nil, err
	}
	committed, ends = map[int32]int64{}, map[int32]int64{}
	for p := range int32(c.kcfg.Partitions) {
		if o, ok := cs.Lookup(topic, p); ok && o.Err == nil {
			committed[p] = o.At
		}
		if o, ok := es.Lookup(topic, p); ok && o.Err == nil {
			ends[p] = o.Offset
		}
	}
	return committed, ends, nil
}

// txnState describes the transaction of a transactional id.
func txnState(ctx context.Context, adm *kadm.Client, id string) (kadm.DescribedTransaction, error) {
	ds, err := adm.DescribeTransactions(ctx, id)
	if err != nil {
		return kadm.DescribedTransaction{}, err
	}
	d, err := ds.On(id, nil)
	if err == nil {
		err = d.Err
	}
	return d, err
}

func txnString(d kadm.DescribedTransaction) string {
	return fmt.Sprintf("%s (producer %d epoch %d)", d.State, d.ProducerID, d.ProducerEpoch)
}

// producerBatch is a producer id and epoch: under transaction.version 2 the
// epoch is bumped after every transaction, so it names one transaction.
type producerBatch struct {
	id    int64
	epoch int16
}

// changelogState is the last state the changelog holds per user: the number
// of that user's clicks it counted.
func (c *cluster) changelogState(t *testing.T) map[string]uint64 {
	t.Helper()
	state := map[string]uint64{}
	for _, rec := range c.readAll(t, string(c.topics.Changelog)) {
		if rec.Value == nil {
			delete(state, string(rec.Key))
			continue
		}
		s, ok, err := hotpath.DecodeChangelog(rec.Key, rec.Value)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			state[s.User] = s.Seq
		}
	}
	return state
}

// TestNetworkPartition cuts a hot path worker off the broker by a network
// partition — the worker runs in its own network namespace and reaches Kafka
// through a veth pair, whose traffic is then silently dropped — for longer
// than the group's session timeout and the transaction timeout. The other
// worker takes over the cut-off worker's partitions and commits past where
// they stood when the link went down, while the cut-off worker still runs.
// When the link returns, the cut-off worker's open transaction has been
// aborted by the broker and its generation is gone, so nothing it produced
// becomes visible: every click has exactly one committed recommendation, and
// the changelog counts every user's clicks exactly once. The cut-off worker
// survives: it starts a new session (fencing its own stale producer,
// restoring state from the changelog), rejoins and processes again.
func TestNetworkPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own Kafka broker and a network namespace; run without -short")
	}
	ns := newNetns(t)
	// A private broker that listens on, and advertises, the host's end of the
	// veth pair: the namespace reaches it through the link, the host locally.
	run := t.TempDir()
	t.Setenv("CLICKREC_RUN", run)
	t.Setenv("CLICKREC_KAFKA_HOST", ns.hostIP)
	// The broker looks for timed-out transactions every second (default 10 s),
	// so the cut-off worker's open transaction is aborted 5–6 s after it began.
	t.Setenv("CLICKREC_KAFKA_PROPS", "transaction.abort.timed.out.transaction.cleanup.interval.ms=1000")
	port := strconv.Itoa(freePort(t))
	brokerAddr := net.JoinHostPort(ns.hostIP, port)
	brokerStart := time.Now()
	startPrivateBroker(t, port, true)
	t.Logf("private broker on %s, started in %v", brokerAddr, time.Since(brokerStart).Round(100*time.Millisecond))
	t.Setenv("CLICKREC_TEST_KAFKA_BROKERS", brokerAddr)
	if !ns.canDial(brokerAddr) {
		t.Fatalf("the broker %s is not reachable from namespace %s", brokerAddr, ns.name)
	}

	c := newCluster(t, 4)
	ctx := testenv.Context(t, 3*time.Minute)
	obs, err := kgo.NewClient(c.kcfg.Opts("e2e-observer")...)
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Close()
	adm := kadm.NewClient(obs)

	// Short timeouts keep the test fast: the broker expires the cut-off
	// worker after 6 s of silence and aborts its open transaction after 5 s.
	timeouts := []string{"--scorer", "go", "--session-timeout", "6s", "--txn-timeout", "5s"}
	a := startInNetns(t, ns, "hotpath-wa", c.hotpathArgs("wa", timeouts...)...)
	b := c.worker(t, "wb", timeouts...)

	const n, rate = 4000, 100.0 // 40 s of clicks
	producing := c.produceAsync(ctx, n, rate, 29)

	// Both workers own partitions, and A's connections come from the namespace.
	var before groupView
	eventually(t, ctx, func() (bool, string) {
		g, err := c.describeGroup(ctx, adm)
		before = g
		if err != nil {
			return false, err.Error()
		}
		return g.state == "Stable" && len(g.members) == 2 && len(g.members["wa"].parts) > 0 && len(g.members["wb"].parts) > 0,
			"group before the partition: " + g.String()
	})
	if h := before.members["wa"].host; h != ns.nsIP {
		t.Fatalf("worker wa connects from %s, want %s (inside %s)", h, ns.nsIP, ns.name)
	}
	aParts := before.members["wa"].parts
	waitRecords(t, ctx, c, string(c.topics.Recs), n/10)
	t.Logf("before the partition: %s", before)

	// Cut A off. From now on, nothing A does can reach the broker.
	ns.partition(t)
	if ns.canDial(brokerAddr) {
		t.Fatal("the broker is still reachable from the namespace after the link was cut")
	}
	_, atCut, err := c.offsets(ctx, adm)
	if err != nil {
		t.Fatal(err)
	}
	aTxnID := c.group + "-wa" // hotpath.Worker.TransactionalID
	txnAtCut, err := txnState(ctx, adm, aTxnID)
	if err != nil {
		t.Fatal(err)
	}

	// B takes over A's partitions and commits past where they stood at the
	// cut — which A, cut off, cannot have done — while A is still running;
	// and no transaction of A's is left open: the broker aborted it.
	var during groupView
	var txnHealed kadm.DescribedTransaction
	eventually(t, ctx, func() (bool, string) {
		g, err := c.describeGroup(ctx, adm)
		if err != nil {
			return false, err.Error()
		}
		during = g
		if txnHealed, err = txnState(ctx, adm, aTxnID); err != nil {
			return false, err.Error()
		}
		if st := txnHealed.State; st != "Empty" && st != "CompleteAbort" && st != "CompleteCommit" {
			return false, fmt.Sprintf("%v after the cut: wa's transaction %s", time.Since(ns.partitionStarted).Round(time.Second), txnString(txnHealed))
		}
		committed, _, err := c.offsets(ctx, adm)
		if err != nil {
			return false, err.Error()
		}
		behind := []string{}
		for _, p := range aParts {
			if committed[p] < atCut[p]+10 {
				behind = append(behind, fmt.Sprintf("p%d committed %d, end at the cut %d", p, committed[p], atCut[p]))
			}
		}
		ok := g.state == "Stable" && len(g.members) == 1 && len(g.members["wb"].parts) == c.kcfg.Partitions && len(behind) == 0
		return ok, fmt.Sprintf("%v after the cut: group %s; %s", time.Since(ns.partitionStarted).Round(time.Second), g, strings.Join(behind, "; "))
	})
	if a.exited() {
		t.Fatalf("worker wa exited while cut off; it should wait for the network:\n%s", a.output())
	}
	cutFor := time.Since(ns.partitionStarted)
	t.Logf("wb took over %v and committed past the cut %v after it: %s; wa's transaction at the cut %s, now %s",
		aParts, cutFor.Round(100*time.Millisecond), during, txnString(txnAtCut), txnString(txnHealed))
	if cutFor < 6*time.Second {
		t.Fatalf("takeover after %v, before the 6 s session timeout could have expired wa", cutFor)
	}

	// Heal the link. A finds its generation gone and its transaction
	// aborted (its producer epoch bumped by the broker). It rejoins in a new
	// session — which fences its own old producer and restores state from
	// the changelog — owns partitions again and commits on them.
	ns.heal(t)
	healed := time.Now()
	if !ns.canDial(brokerAddr) {
		t.Fatal("the broker is not reachable from the namespace after the link was restored")
	}
	var after groupView
	eventually(t, ctx, func() (bool, string) {
		if a.exited() {
			return true, ""
		}
		g, err := c.describeGroup(ctx, adm)
		if err != nil {
			return false, err.Error()
		}
		after = g
		rejoined := g.state == "Stable" && len(g.members["wa"].parts) > 0 && len(g.members["wb"].parts) > 0
		return rejoined, fmt.Sprintf("%v after healing: group %s", time.Since(healed).Round(time.Second), g)
	})
	if a.exited() {
		// The broker timed wa's transaction out and bumped its producer epoch;
		// that is not another worker with its id, so wa must start a new
		// session, not exit.
		t.Fatalf("wa exited %v after the link returned (%v); it must survive a partition in a new session:\n%s",
			time.Since(healed).Round(100*time.Millisecond), a.cmd.ProcessState, a.output())
	}
	t.Logf("wa rejoined %v after the link returned: %s", time.Since(healed).Round(100*time.Millisecond), after)
	// And it processes again: its partitions commit past where they are now.
	mine := after.members["wa"].parts
	now, _, err := c.offsets(ctx, adm)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, func() (bool, string) {
		committed, _, err := c.offsets(ctx, adm)
		if err != nil {
			return false, err.Error()
		}
		for _, p := range mine {
			if committed[p] <= now[p] {
				return false, fmt.Sprintf("wa's partition %d stays at offset %d after rejoining", p, committed[p])
			}
		}
		return true, ""
	})

	sent := (<-producing).must(t)
	waitFor(t, ctx, func() bool { return len(c.readAll(t, string(c.topics.Recs))) >= n })
	a.stop(t)
	b.stop(t)
	if a.exited() && a.cmd.ProcessState.ExitCode() != 0 {
		t.Errorf("wa did not stop cleanly on SIGTERM (%v):\n%s", a.cmd.ProcessState, a.output())
	}
	missing, dup, distinct := c.verdict(t, sent)
	if missing != 0 || dup != 0 || distinct != n {
		t.Fatalf("after the partition: %d missing, %d duplicated, %d distinct of %d clicks", missing, dup, distinct, n)
	}
	state := c.changelogState(t)
	for u, want := range sent.perUser {
		if got := state[u]; got != uint64(want) {
			t.Fatalf("user %s: the changelog counts %d clicks, %d were sent", u, got, want)
		}
	}
	// What A wrote in the transaction it had open at the cut reached the log
	// (if its produce requests got through) but none of it is visible.
	if txnAtCut.State == "Ongoing" {
		atCut := producerBatch{txnAtCut.ProducerID, txnAtCut.ProducerEpoch}
		written, visible := 0, 0
		for _, r := range c.readUncommitted(t, string(c.topics.Recs)) {
			if (producerBatch{r.ProducerID, r.ProducerEpoch}) == atCut {
				written++
			}
		}
		for _, r := range c.readAll(t, string(c.topics.Recs)) {
			if (producerBatch{r.ProducerID, r.ProducerEpoch}) == atCut {
				visible++
			}
		}
		if visible != 0 {
			t.Fatalf("%d recommendations of wa's transaction open at the cut (producer %d epoch %d) are visible; it was aborted", visible, atCut.id, atCut.epoch)
		}
		t.Logf("wa's transaction open at the cut had written %d recommendations to the log; none is visible", written)
	}
	t.Logf("network partition of %v: %d clicks, 0 missing, 0 duplicated, state of %d users matches", cutFor.Round(100*time.Millisecond), n, len(sent.perUser))
}
