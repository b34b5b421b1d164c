package hotpath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/clickrec/clickrec/drift"
	"github.com/clickrec/clickrec/featurestore"
	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/itemknow"
)

// Worker is one hot path stream worker: a member of the hot path consumer group
// that turns each click of its partitions into recommendations, exactly once.
//
// Per poll it runs one Kafka transaction holding the recommendations, window
// results, side outputs, the changelog of every state change and the consumed
// offsets. State lives per partition in a Store, restored from the changelog
// when a partition is assigned or a new session starts. A transaction that
// does not commit leaves no trace: the changes of its batch are undone (see
// Store.Rollback) and its records read again.
type Worker struct {
	cfg    Config
	kafka  kafkautil.Config
	log    *slog.Logger
	m      *metrics
	rw     *redisWriter
	swap   swapper
	ik     *itemknow.Global // nil: --learn=false
	ready  atomic.Bool
	joined atomic.Bool // the current session got its first assignment (possibly empty)

	mu       sync.Mutex // guards assigned and revoked, written by group callbacks
	assigned map[int32]bool
	revoked  map[int32]bool

	liveMu sync.Mutex
	live   drift.LiveSet // committed observations since the last publish

	now func() time.Time // the wall clock of the live drift minutes (nil: time.Now; a test's clock)
}

// knowledgeSnapshotEvery is how often a worker writes its item knowledge
// to --state-dir (and when it stops): a restart reads at most this much of
// the item-knowledge topic, plus what a crash left unwritten.
const knowledgeSnapshotEvery = 30 * time.Second

// Options are a Worker's collaborators.
type Options struct {
	Logger   *slog.Logger
	Registry prometheus.Registerer // nil: metrics are kept but not exported
	Redis    *redis.Client         // nil: no feature store writes
}

// New returns a worker. It does not connect until Run.
func New(cfg Config, kafka kafkautil.Config, opts Options) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	w := &Worker{cfg: cfg, kafka: kafka, log: opts.Logger, m: newMetrics(opts.Registry),
		assigned: map[int32]bool{}, revoked: map[int32]bool{}}
	if opts.Redis != nil {
		w.rw = newRedisWriter(opts.Redis, cfg.RedisTTL, w.m, opts.Logger)
	}
	if cfg.Learn {
		gc := itemknow.GlobalConfig{
			Table: cfg.Knowledge, Topic: string(cfg.Topics.Knowledge), Lookback: cfg.Lookback, Log: opts.Logger,
			Opts: kafka.Opts("clickrec-hotpath-knowledge-" + cfg.InstanceID),
		}
		if cfg.StateDir != "" {
			// A restart loads it and reads only the topic's tail.
			gc.SnapshotPath = filepath.Join(cfg.StateDir, url.PathEscape(cfg.InstanceID), "item-knowledge.snapshot")
			gc.SnapshotEvery = knowledgeSnapshotEvery
		}
		w.ik = itemknow.NewGlobal(gc)
		if opts.Registry != nil {
			opts.Registry.MustRegister(newKnowledgeCollector(w.ik))
		}
	}
	return w, nil
}

// SetServing makes the worker score with s from its next batch on. The previous
// scorer is closed by the processing loop once it is no longer used.
func (w *Worker) SetServing(s *Serving) {
	if s != nil && s.Model != nil {
		s.Model.Index(0) // builds the item index here, not racing in the processing loops
	}
	w.swap.set(s)
}

// SetPopularity replaces the cold-start table from the next batch on.
func (w *Worker) SetPopularity(p *featurestore.Popularity) { w.swap.pop.Store(p) }

// Ready reports whether the worker has joined its group and restored the state
// of every partition it owns.
func (w *Worker) Ready() bool { return w.ready.Load() }

// TransactionalID is the worker's transactional id, derived from its instance id.
func (w *Worker) TransactionalID() string { return w.cfg.Group + "-" + w.cfg.InstanceID }

// Run processes until ctx is cancelled, then leaves the group and returns nil.
// It returns an error when the worker cannot continue (for example, it was
// fenced by another worker with the same instance id).
func (w *Worker) Run(ctx context.Context) error {
	if w.rw != nil {
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{}, 2)
		go func() { w.rw.run(rctx); done <- struct{}{} }()
		go func() { w.publishLive(rctx, w.cfg.DriftPublishEvery); done <- struct{}{} }()
		defer func() { cancel(); <-done; <-done }()
	}
	if w.cfg.LagEvery > 0 {
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { w.watchLag(lctx, w.cfg.LagEvery); close(done) }()
		defer func() { cancel(); <-done }()
	}
	if w.ik != nil {
		kctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.ik.Run(kctx) }()
		defer func() { cancel(); <-done }()
		// Join the group with what every worker learned so far (a worker
		// that ranked without it would answer its first clicks worse), but
		// not later than --ik-start-wait: a long lookback of a busy shop
		// takes tens of seconds to read, and partitions left unanswered
		// that long cost more than a while of partial knowledge.
		wait := time.NewTimer(w.cfg.StartWait)
		defer wait.Stop()
		select {
		case <-w.ik.Ready():
		case <-wait.C:
			w.log.Warn("joining the group before the item knowledge caught up (--ik-start-wait); it goes on reading in the background",
				"wait", w.cfg.StartWait, "records", w.ik.Progress().Records)
		case err := <-done:
			done <- err // for the deferred wait
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("reading the item knowledge: %w", err)
		case <-ctx.Done():
			return nil
		}
	}
	base := w.kafka.Opts("clickrec-hotpath-" + w.cfg.InstanceID)
	for {
		err := w.session(ctx, base)
		if ctx.Err() != nil {
			return nil
		}
		var fatal *fatalError
		if errors.As(err, &fatal) {
			return fatal.err
		}
		// The session's client is in an unknown state (a broker restart in the
		// middle of ending a transaction, say). Start a new one: it fences the
		// old transactional producer and restores state from the changelog, so
		// nothing of the broken session survives.
		w.ready.Store(false)
		w.log.Warn("transactional session failed; starting a new one", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// testHookSessionClient, when set by a test, runs right after a session created
// its Kafka client (which is joining the group in the background).
var testHookSessionClient func(*Worker)

// testHookRestoreListed, when set by a test, runs once a restore has listed
// the changelog's offsets, before it reads.
var testHookRestoreListed func()

// testHookSync, when set by a test, can fail syncPartitions (as a failed
// restore would) given the number of records the poll returned.
var testHookSync func(records int) error

// testHookCommitOffsets, when set by a test, can fail an at-least-once
// batch's offset commit after its outputs and changelog were flushed.
var testHookCommitOffsets func() error

// fatalError ends Run: retrying cannot help.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }

// session runs one session: fence, join, process until ctx ends or the
// session breaks.
func (w *Worker) session(ctx context.Context, base []kgo.Opt) error {
	t := w.cfg.Topics
	opts := append(base,
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.ConsumerGroup(w.cfg.Group),
		kgo.InstanceID(w.cfg.InstanceID),
		kgo.SessionTimeout(w.cfg.SessionTimeout),
		// A member learns of a rebalance from its next heartbeat: with
		// franz-go's 3 s default a joining worker kept every other one
		// waiting for it in the next round (measured ≈ 500 ms per join).
		kgo.HeartbeatInterval(w.cfg.HeartbeatInterval),
		kgo.ConsumeTopics(string(t.Events)),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchMaxWait(100*time.Millisecond),
		kgo.RecordPartitioner(manualPartitioner(string(t.Changelog), string(t.Knowledge))),
		kgo.ProducerLinger(0),
		kgo.OnPartitionsAssigned(w.onAssigned),
		kgo.OnPartitionsRevoked(w.onRevoked),
		kgo.OnPartitionsLost(w.onRevoked),
	)
	consumerProtocol := w.cfg.GroupProtocol == GroupProtocolConsumer
	if consumerProtocol {
		// KIP-848 with the default cooperative-sticky balancer: the
		// broker's "uniform" assignor. Session timeout and heartbeat
		// interval are then the brokers' group.consumer.* settings.
		opts = append(opts, kgo.ServerSideBalancer())
	}
	// Forget the previous session's assignment before the new client exists:
	// the client joins the group in the background as soon as it is created,
	// and its OnPartitionsAssigned may run before the next line of this
	// function. Clearing afterwards wiped that assignment, so the worker
	// skipped every record while the session committed their offsets.
	w.mu.Lock()
	clear(w.assigned)
	clear(w.revoked)
	w.joined.Store(false)
	w.mu.Unlock()
	var sess txnSession
	if w.cfg.AtLeastOnce {
		cl, err := kgo.NewClient(append(opts, kgo.DisableAutoCommit())...)
		if err != nil {
			return &fatalError{fmt.Errorf("creating the consumer: %w", err)}
		}
		sess = atLeastOnce{cl}
	} else {
		if err := w.fence(ctx, base); err != nil {
			return err
		}
		if consumerProtocol {
			w.releasePredecessor(ctx, base)
		}
		gs, err := kgo.NewGroupTransactSession(append(opts,
			kgo.TransactionalID(w.TransactionalID()),
			kgo.TransactionTimeout(w.cfg.TxnTimeout),
		)...)
		if err != nil {
			return &fatalError{fmt.Errorf("creating the transactional consumer: %w", err)}
		}
		sess = gs
	}
	if testHookSessionClient != nil {
		testHookSessionClient(w)
	}
	defer func() {
		// Leave the group so partitions move at once (static members otherwise
		// keep them until the session timeout); bounded, since the broker may be
		// the reason this session ends.
		done := make(chan struct{})
		go func() {
			lctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if ctx.Err() != nil {
				// The loop returned from a poll that blocks rebalances; leaving
				// the group is one, so allow it first (else the leave waits
				// for the timeout above).
				sess.AllowRebalance()
				_ = sess.Client().LeaveGroupContext(lctx)
			}
			sess.CloseAllowingRebalance()
			switch {
			case ctx.Err() == nil:
			case consumerProtocol:
				// The client's own leave of a static member is refused
				// (see releaseStatic): leave on its behalf, for good or,
				// without --leave-on-shutdown, for a while (its
				// partitions wait for the same instance id).
				epoch := epochLeaveStatic
				if w.cfg.LeaveOnShutdown {
					epoch = epochLeave
				}
				w.leaveConsumerGroup(lctx, base, epoch)
			case w.cfg.LeaveOnShutdown:
				// A static member's client does not leave the group when it
				// closes: its partitions would wait --session-timeout for it.
				// Remove it by instance id, after the client is closed (else
				// it would rejoin).
				w.leaveGroup(lctx, base)
			}
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			w.log.Warn("closing the Kafka client takes long; continuing without waiting")
		}
	}()
	mode := "exactly-once"
	if w.cfg.AtLeastOnce {
		mode = "at-least-once (outputs may be duplicated after a crash)"
	}
	w.log.Info("hot path worker started", "group", w.cfg.Group, "instance", w.cfg.InstanceID,
		"transactional_id", w.TransactionalID(), "topic", t.Events, "mode", mode, "group_protocol", w.cfg.GroupProtocol)
	return w.loop(ctx, sess)
}

// withClient runs fn with a short-lived client of its own (leaving or
// releasing a membership must not go through the session's client); doing
// names the step in the warning if the client cannot be created.
func (w *Worker) withClient(base []kgo.Opt, doing string, fn func(cl *kgo.Client)) {
	cl, err := kgo.NewClient(base...)
	if err != nil {
		w.log.Warn(doing+": creating a client", "err", err)
		return
	}
	defer cl.Close()
	fn(cl)
}

// leaveGroup removes this worker's static member from the group (the group
// membership API by instance id, KIP-345), so that its partitions are
// reassigned now.
func (w *Worker) leaveGroup(ctx context.Context, base []kgo.Opt) {
	w.withClient(base, "leaving the group", func(cl *kgo.Client) { w.leaveGroupWith(ctx, cl) })
}

func (w *Worker) leaveGroupWith(ctx context.Context, cl *kgo.Client) {
	start := time.Now()
	resps, err := kadm.NewClient(cl).LeaveGroup(ctx, kadm.LeaveGroup(w.cfg.Group).InstanceIDs(w.cfg.InstanceID).Reason("clickrec hotpath stopped"))
	if err == nil {
		err = resps[w.cfg.InstanceID].Err
	}
	if err != nil && !errors.Is(err, kerr.UnknownMemberID) {
		w.log.Warn("leaving the group failed; its partitions move after --session-timeout", "group", w.cfg.Group, "instance", w.cfg.InstanceID, "err", err)
		return
	}
	w.log.Info("left the group: partitions move to the other workers now", "group", w.cfg.Group, "instance", w.cfg.InstanceID,
		"took", time.Since(start).Round(time.Millisecond))
}

// releasePredecessor ends the KIP-848 membership that a previous incarnation
// of this instance left behind (a crash, a kill, a lost network), the way
// fence ends its transaction: marked as a static member that left for a
// while, its partitions pass to this worker as soon as it joins, untouched
// elsewhere in the group. Without it the join is refused until the brokers'
// session timeout (UNRELEASED_INSTANCE_ID; measured 31–44 s per kill). A
// failure only costs that wait, so it is logged, not returned.
func (w *Worker) releasePredecessor(ctx context.Context, base []kgo.Opt) {
	w.withClient(base, "releasing the previous membership", func(cl *kgo.Client) { w.releasePredecessorWith(ctx, cl) })
}

func (w *Worker) releasePredecessorWith(ctx context.Context, cl *kgo.Client) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	member, err := releaseStatic(rctx, cl, w.cfg.Group, w.cfg.InstanceID, epochLeaveStatic)
	switch {
	case errors.Is(err, errNotConsumerGroup), err == nil && member == "":
	case err != nil:
		w.log.Warn("could not release the previous membership of this instance; if it is still held, the join waits for the brokers' group.consumer.session.timeout.ms",
			"group", w.cfg.Group, "instance", w.cfg.InstanceID, "err", err)
	default:
		w.log.Info("released the previous membership of this instance: its partitions come back on join", "group", w.cfg.Group,
			"instance", w.cfg.InstanceID, "member_id", member, "took", time.Since(start).Round(time.Millisecond))
	}
}

// leaveConsumerGroup leaves a KIP-848 group on a clean stop: for good
// (epochLeave: the partitions move to the others now) or for a while
// (epochLeaveStatic: they wait for this instance id).
func (w *Worker) leaveConsumerGroup(ctx context.Context, base []kgo.Opt, epoch int32) {
	w.withClient(base, "leaving the group", func(cl *kgo.Client) { w.leaveConsumerGroupWith(ctx, cl, epoch) })
}

func (w *Worker) leaveConsumerGroupWith(ctx context.Context, cl *kgo.Client, epoch int32) {
	start := time.Now()
	member, err := releaseStatic(ctx, cl, w.cfg.Group, w.cfg.InstanceID, epoch)
	if err != nil && !errors.Is(err, errNotConsumerGroup) {
		w.log.Warn("leaving the group failed; its partitions move after the brokers' group.consumer.session.timeout.ms", "group", w.cfg.Group,
			"instance", w.cfg.InstanceID, "err", err)
		return
	}
	msg := "left the group: partitions move to the other workers now"
	if epoch == epochLeaveStatic {
		msg = "left the group for a while (--leave-on-shutdown=false): partitions wait for this instance id"
	}
	w.log.Info(msg, "group", w.cfg.Group, "instance", w.cfg.InstanceID, "member_id", member,
		"took", time.Since(start).Round(time.Millisecond))
}

// txnSession is what the processing loop needs from Kafka: a
// *kgo.GroupTransactSession, or atLeastOnce for the comparison mode.
type txnSession interface {
	Client() *kgo.Client
	PollRecords(ctx context.Context, maxPollRecords int) kgo.Fetches
	AllowRebalance()
	Begin() error
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
	End(ctx context.Context, commit kgo.TransactionEndTry) (bool, error)
	CloseAllowingRebalance()
}

// atLeastOnce runs the same loop without transactions: End flushes the
// outputs, then commits the polled offsets. A crash between the two replays
// the poll, so outputs can be duplicated; nothing is lost.
type atLeastOnce struct{ cl *kgo.Client }

func (s atLeastOnce) Client() *kgo.Client { return s.cl }
func (s atLeastOnce) PollRecords(ctx context.Context, n int) kgo.Fetches {
	return s.cl.PollRecords(ctx, n)
}
func (s atLeastOnce) AllowRebalance()         { s.cl.AllowRebalance() }
func (s atLeastOnce) Begin() error            { return nil }
func (s atLeastOnce) CloseAllowingRebalance() { s.cl.CloseAllowingRebalance() }
func (s atLeastOnce) Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	s.cl.Produce(ctx, r, promise)
}

// errRewind ends an at-least-once session after an abort: the client's
// position is past the batch, so only a new session, starting from the
// committed offsets, reads it again.
var errRewind = errors.New("at-least-once batch not committed; a new session reads it again from the committed offsets")

// End with TryCommit flushes and commits offsets; with TryAbort it returns
// errRewind, so the loop replaces the session and the batch is read again
// from the committed offsets (what was already produced stays: that is the
// at-least-once trade).
func (s atLeastOnce) End(ctx context.Context, commit kgo.TransactionEndTry) (bool, error) {
	if commit == kgo.TryAbort {
		return false, errRewind
	}
	if err := s.cl.Flush(ctx); err != nil {
		return false, err
	}
	if testHookCommitOffsets != nil {
		if err := testHookCommitOffsets(); err != nil {
			return false, err
		}
	}
	if err := s.cl.CommitUncommittedOffsets(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// fence aborts whatever transaction a previous incarnation of this worker left
// open, by initialising the producer id of our transactional id before we join
// the group. Without it, a restarted worker waits for the broker to time the
// old transaction out (DESIGN.md: ≈ 10 s instead of ≈ 50 ms).
func (w *Worker) fence(ctx context.Context, base []kgo.Opt) error {
	cl, err := kgo.NewClient(base...)
	if err != nil {
		return fmt.Errorf("creating the fencing client: %w", err)
	}
	defer cl.Close()
	id := w.TransactionalID()
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionalID = &id
	req.TransactionTimeoutMillis = int32(w.cfg.TxnTimeout.Milliseconds())
	req.ProducerID, req.ProducerEpoch = -1, -1
	deadline := time.Now().Add(w.cfg.TxnTimeout + 30*time.Second)
	for {
		resp, err := req.RequestWith(ctx, cl)
		if err == nil {
			err = kerr.ErrorForCode(resp.ErrorCode)
		}
		if err == nil {
			w.log.Info("fenced previous transactions", "transactional_id", id)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fencing transactional id %s: %w", id, err)
		}
		w.log.Debug("fencing: retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (w *Worker) onAssigned(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// A partition revoked since the last poll stays marked: another worker
	// may have processed it in between, so the state this worker holds is
	// dropped and restored (syncPartitions drops before it restores).
	for _, p := range m[string(w.cfg.Topics.Events)] {
		w.assigned[p] = true
	}
	w.joined.Store(true)
	w.ready.Store(false)
}

func (w *Worker) onRevoked(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range m[string(w.cfg.Topics.Events)] {
		w.revoked[p] = true
		delete(w.assigned, p)
	}
}

// manualPartitioner sends the records of the changelog and the
// item-knowledge topic to the partition set on the record (the input
// partition) and hashes everything else by key, like Java.
func manualPartitioner(changelog, knowledge string) kgo.Partitioner {
	manual, byKey := kgo.ManualPartitioner(), kgo.StickyKeyPartitioner(nil)
	return partitionerFunc(func(topic string) kgo.TopicPartitioner {
		if topic == changelog || topic == knowledge {
			return manual.ForTopic(topic)
		}
		return byKey.ForTopic(topic)
	})
}

type partitionerFunc func(string) kgo.TopicPartitioner

func (f partitionerFunc) ForTopic(t string) kgo.TopicPartitioner { return f(t) }

// batchLoop is the state of one session's processing loop: one poll, one
// transaction, and the undo or the effects of its outcome, over and over.
type batchLoop struct {
	w          *Worker
	sess       txnSession
	p          *processor
	produceErr atomic.Pointer[error]    // the first failed produce of the transaction
	promise    func(*kgo.Record, error) // records produceErr
	current    *Serving
	lastCommit time.Duration // how long the last commit took

	lastScoreErrLog, lastRewrite time.Time
}

func (w *Worker) loop(ctx context.Context, sess txnSession) error {
	l := &batchLoop{w: w, sess: sess, p: newProcessor(&w.cfg, w.m), lastCommit: 5 * time.Millisecond}
	l.p.ik = w.ik
	l.promise = func(_ *kgo.Record, err error) {
		if err != nil {
			l.produceErr.CompareAndSwap(nil, &err)
		}
	}
	defer l.p.dropAll()
	for {
		fetches, closed := l.poll(ctx)
		if closed {
			return nil
		}
		if err := l.fetchErrors(fetches); err != nil {
			sess.AllowRebalance()
			return err
		}
		if err := w.syncPartitions(ctx, sess.Client(), l.p, fetches); err != nil {
			sess.AllowRebalance()
			if ctx.Err() != nil {
				return nil
			}
			// The polled records were not processed, but the client's position
			// is past them: the next commit would include their offsets. A new
			// session starts from the committed offsets instead.
			return fmt.Errorf("restoring state (the polled records are read again by a new session): %w", err)
		}
		l.takeServing()
		idleMoved := l.p.advanceIdle()
		if fetches.NumRecords() > 0 || idleMoved {
			if stop, err := l.transact(ctx, fetches); stop || err != nil {
				return err
			}
		} else {
			sess.AllowRebalance()
		}
		w.rewriteRestored(l.p, &l.lastRewrite)
		w.observeLag(l.p, fetches)
	}
}

// poll returns the next records (none after 100 ms without any), and closed
// once the worker is stopping or the client is closed.
func (l *batchLoop) poll(ctx context.Context) (fetches kgo.Fetches, closed bool) {
	limit := l.w.cfg.MaxPollRecords
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	fetches = l.sess.PollRecords(pctx, limit)
	cancel()
	if ctx.Err() != nil || fetches.IsClientClosed() {
		return nil, true
	}
	// The client sends the next fetch once a poll drained its buffer. Poll
	// once more, briefly, before the transaction: clicks that arrived while
	// the previous transaction committed join this one instead of waiting a
	// whole transaction cycle (measured: p50 at 1,000 clicks/s 53 → 9 ms with
	// a prototype). It never waits for a batch to fill: at most SecondPoll.
	// A poll that waited longer than a commit takes found the worker idle:
	// clicks are sparser than commits, none piled up behind one, so it
	// goes straight on (at 100 clicks/s the second poll only added its 2 ms).
	idle := time.Since(start) > l.lastCommit
	if n := fetches.NumRecords(); n > 0 && n < limit && l.w.cfg.SecondPoll > 0 && !idle {
		pctx, cancel := context.WithTimeout(ctx, l.w.cfg.SecondPoll)
		more := l.sess.PollRecords(pctx, limit-n)
		cancel()
		if more.NumRecords() > 0 {
			fetches = append(fetches, more...)
		}
	}
	return fetches, false
}

// fetchErrors logs the poll's fetch errors and returns a fatal error if the
// group took this worker's static membership away.
func (l *batchLoop) fetchErrors(fetches kgo.Fetches) error {
	var fenced error
	fetches.EachError(func(t string, part int32, err error) {
		if errors.Is(err, kerr.FencedInstanceID) {
			fenced = err
		}
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			l.w.log.Warn("fetch error", "topic", t, "partition", part, "err", err)
		}
	})
	if fenced == nil {
		return nil
	}
	// Another worker joined with the same --instance-id.
	return &fatalError{fmt.Errorf("another worker joined group %s as instance %s (is --instance-id unique?): %w", l.w.cfg.Group, l.w.cfg.InstanceID, fenced)}
}

// takeServing picks up a swapped model (with a fresh live drift profile for
// its reference) and the popularity table, for the next batch.
func (l *batchLoop) takeServing() {
	w, p := l.w, l.p
	if s := w.swap.take(); s != l.current {
		l.current = s
		p.serving = s
		p.live = nil
		w.liveMu.Lock()
		w.live = nil
		if s != nil && s.Reference != nil {
			p.live = s.Reference.NewLive()
			w.live = s.Reference.NewLive()
		}
		w.liveMu.Unlock()
		w.m.modelVer.Reset()
		if s != nil {
			w.m.modelVer.WithLabelValues(s.Version).Set(1)
			w.log.Info("serving model", "version", s.Version, "items", s.Model.NumItems())
		}
	}
	p.pop = w.swap.pop.Load()
	if p.pop == nil && p.serving != nil {
		p.pop = PopularityFromModel(p.serving.Model, w.cfg.TopK)
		w.swap.pop.CompareAndSwap(nil, p.pop)
	}
}

// transact processes the poll in one transaction and settles its outcome:
// the effects of a commit, the undo of an abort. stop ends the session: the
// worker is stopping (err nil) or cannot go on in this session (err).
func (l *batchLoop) transact(ctx context.Context, fetches kgo.Fetches) (stop bool, err error) {
	if err := l.sess.Begin(); err != nil {
		l.sess.AllowRebalance()
		return true, fmt.Errorf("beginning a transaction: %w", err) // a new session starts clean
	}
	began := time.Now()
	out := l.process(fetches)
	storeErr := l.p.storeErr()
	committed, endErr := l.end(ctx, out, storeErr)
	l.sess.AllowRebalance()
	if storeErr != nil {
		return true, fmt.Errorf("state store: %w", storeErr)
	}
	if committed {
		l.committed()
		return false, nil
	}
	return l.aborted(ctx, endErr, began)
}

// process runs the poll's records through the processor and returns the
// transaction's records.
func (l *batchLoop) process(fetches kgo.Fetches) []*kgo.Record {
	p := l.p
	p.begin()
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		part := p.parts[fp.Partition]
		if part == nil {
			if len(fp.Records) > 0 { // syncPartitions restored every fetched partition
				panic(fmt.Sprintf("hotpath: records of partition %d without its state", fp.Partition))
			}
			return
		}
		for _, r := range fp.Records {
			p.process(part, r)
		}
	})
	out := p.finish()
	if p.scoreErr != nil && time.Since(l.lastScoreErrLog) > 10*time.Second {
		l.lastScoreErrLog = time.Now()
		l.w.log.Error("scoring failed; the batch got the popularity fallback (recsys_hotpath_scoring_errors_total counts them; logged at most every 10 s)",
			"model", p.serving.Version, "err", p.scoreErr)
	}
	return out
}

// end produces the transaction's records and ends it: a commit, or an abort
// when the state store failed or a produce did.
func (l *batchLoop) end(ctx context.Context, out []*kgo.Record, storeErr error) (committed bool, err error) {
	l.produceErr.Store(nil)
	// A transaction that has begun is finished even when the worker is
	// stopping (ctx cancelled by SIGTERM): cancelling its produce, flush or
	// end would leave it open until the broker times it out, and the
	// partitions' next owner would wait that long.
	txCtx := context.WithoutCancel(ctx)
	for _, r := range out {
		l.sess.Produce(txCtx, r, l.promise)
	}
	start := time.Now()
	// Ending is bounded: a broker that vanished mid-commit must not hang the
	// worker. A session whose End fails is replaced (see Run).
	endCtx, cancel := context.WithTimeout(txCtx, l.w.cfg.TxnTimeout+5*time.Second)
	defer cancel()
	try := kgo.TryCommit
	if storeErr != nil {
		// What the batch computed from a failed store must not become
		// visible; a new session rebuilds the state from the changelog.
		try = kgo.TryAbort
		l.w.log.Error("the state store failed; aborting the batch and starting a new session that rebuilds the state from the changelog", "err", storeErr)
	} else if err := l.sess.Client().Flush(endCtx); err != nil || l.produceErr.Load() != nil {
		try = kgo.TryAbort
		if e := l.produceErr.Load(); e != nil {
			err = *e
		}
		l.w.log.Warn("produce failed; aborting the transaction", "err", err)
	}
	committed, err = l.sess.End(endCtx, try)
	l.lastCommit = time.Since(start)
	return committed, err
}

// committed makes the batch the state and hands its effects on: latency
// samples, Redis writes, the live drift profile.
func (l *batchLoop) committed() {
	w, p := l.w, l.p
	p.commit()
	now := time.Now()
	w.m.txns.WithLabelValues("committed").Inc()
	w.m.txnCommit.Observe(l.lastCommit.Seconds())
	for _, t := range p.recordTimes {
		w.m.e2e.Observe(now.Sub(t).Seconds())
	}
	w.rw.enqueue(p.effects)
	if p.live != nil {
		w.liveMu.Lock()
		if w.live != nil {
			_ = w.live.Merge(p.live) // same reference: cannot mismatch
		}
		w.liveMu.Unlock()
		p.live.Reset()
	}
}

// aborted settles a transaction that did not commit. Without an error (a
// rebalance took partitions away, a produce failed and the abort went
// through) the batch is undone and read again; an error ends the session,
// fatally if another worker has this worker's transactional id.
func (l *batchLoop) aborted(ctx context.Context, err error, began time.Time) (stop bool, _ error) {
	w, p := l.w, l.p
	if p.live != nil {
		p.live.Reset()
	}
	w.m.txns.WithLabelValues("aborted").Inc()
	if ctx.Err() != nil {
		return true, nil
	}
	if err == nil {
		// Nothing of this batch is visible and the client is back at the
		// committed offsets: undo what the batch changed, no more.
		p.rollback()
		w.log.Info("transaction aborted (rebalance or produce failure); its state changes are undone and its records read again")
		return false, nil
	}
	w.log.Warn("transaction did not commit", "err", err)
	if errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) {
		if open := time.Since(began); open >= w.cfg.TxnTimeout {
			// The broker timed the transaction out (the worker was cut off or
			// stalled) and bumped the producer epoch: not another worker. A
			// new session fences again and restores state from the changelog.
			return true, fmt.Errorf("transaction open %v, beyond --txn-timeout %v, was aborted by the broker (network partition or stall?): %w",
				open.Round(time.Millisecond), w.cfg.TxnTimeout, err)
		}
		return true, &fatalError{fmt.Errorf("fenced by another worker with transactional id %s (is --instance-id unique?): %w", w.TransactionalID(), err)}
	}
	// The session is in an unknown state (a broker gone mid-commit, an
	// invalid transaction state): a new one starts clean.
	return true, fmt.Errorf("ending the transaction: %w", err)
}

// rewriteRestored hands restored users to the Redis writer again, at
// --redis-rewrite-rate: what the partitions' previous owner committed but had
// not yet written to Redis when it stopped or crashed is written now. A
// call does at most 100 ms worth, between batches.
func (w *Worker) rewriteRestored(p *processor, last *time.Time) {
	if w.rw == nil || w.cfg.RedisRewriteRate == 0 {
		return
	}
	if w.rw.lost.CompareAndSwap(true, false) {
		p.rewriteAll()
	}
	now := time.Now()
	n := int(float64(w.cfg.RedisRewriteRate) * min(now.Sub(*last), 100*time.Millisecond).Seconds())
	if n < 1 {
		return
	}
	*last = now
	if effects := p.rewriteRestored(n); len(effects) > 0 {
		w.rw.enqueueMissing(effects)
		w.m.rewrites.Add(float64(len(effects)))
	}
}

// syncPartitions applies assignment changes from the group callbacks: revoked
// partitions are forgotten, newly assigned ones are restored from the
// changelog before their records are processed.
//
// A poll returns records only of partitions the group assigned (rebalances
// are blocked from the poll until AllowRebalance), and the transaction commits
// their offsets: a fetched partition must be processed, so one this worker has
// no state for is restored too, never skipped.
func (w *Worker) syncPartitions(ctx context.Context, cl *kgo.Client, p *processor, fetches kgo.Fetches) error {
	if testHookSync != nil {
		if err := testHookSync(fetches.NumRecords()); err != nil {
			return err
		}
	}
	w.mu.Lock()
	for id := range w.revoked {
		p.drop(id)
		w.m.lag.DeleteLabelValues(strconv.Itoa(int(id)))
		w.m.wmLag.DeleteLabelValues(strconv.Itoa(int(id)))
	}
	clear(w.revoked)
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if len(fp.Records) > 0 && !w.assigned[fp.Partition] {
			w.log.Warn("records of a partition the assignment callback did not report; restoring it", "partition", fp.Partition)
			w.assigned[fp.Partition] = true
		}
	})
	var need []int32
	for id := range w.assigned {
		if p.parts[id] == nil {
			need = append(need, id)
		}
	}
	w.mu.Unlock()
	if len(need) == 0 {
		// Ready once the group assigned this worker its partitions (maybe
		// none: more workers than partitions) and all of them are restored.
		if !w.ready.Load() && w.joined.Load() {
			w.ready.Store(true)
		}
		return nil
	}
	slices.Sort(need)
	restored, err := w.restore(ctx, cl, need)
	if err != nil {
		return err
	}
	maps.Copy(p.parts, restored)
	users := 0
	for _, part := range p.parts {
		users += part.users.Len()
	}
	w.m.stateUsers.Set(float64(users))
	w.ready.Store(true)
	return nil
}

// restore reads the changelog partitions from the start to their high
// watermark, with read_committed isolation: only committed state counts, and
// every transaction below the watermark is resolved before the partition is
// processed. Not to the last stable offset: the broker writes a transaction's
// markers partition by partition, so the input offsets this worker was just
// handed may already be committed while the changelog still holds the same
// transaction open; an LSO listed then would leave that transaction's state
// out while its inputs count as done.
func (w *Worker) restore(ctx context.Context, base *kgo.Client, ids []int32) (map[int32]*partition, error) {
	start := time.Now()
	topic := string(w.cfg.Topics.Changelog)
	adm := kadm.NewClient(base)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("listing changelog offsets: %w", err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("listing changelog start offsets: %w", err)
	}
	if testHookRestoreListed != nil {
		testHookRestoreListed()
	}
	out := make(map[int32]*partition, len(ids))
	restored := false
	defer func() {
		if !restored { // an error: the partitions' stores are not handed out
			for _, part := range out {
				_ = part.users.Close()
			}
		}
	}()
	targets := map[int32]int64{}
	offsets := map[int32]kgo.Offset{}
	for _, id := range ids {
		st, err := openStore(&w.cfg, id)
		if err != nil {
			return nil, err
		}
		out[id] = newPartitionWith(id, st)
		e, ok := ends.Lookup(topic, id)
		if !ok || e.Err != nil {
			return nil, fmt.Errorf("changelog %s partition %d has no end offset (is it co-partitioned with %s?)", topic, id, w.cfg.Topics.Events)
		}
		s, _ := starts.Lookup(topic, id)
		if e.Offset > s.Offset {
			targets[id] = e.Offset
			offsets[id] = kgo.NewOffset().At(s.Offset)
		}
	}
	if len(targets) > 0 {
		rc, err := kgo.NewClient(append(w.kafka.Opts("clickrec-hotpath-restore-"+w.cfg.InstanceID),
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.KeepControlRecords(),
			kgo.FetchMaxWait(100*time.Millisecond),
		)...)
		if err != nil {
			return nil, fmt.Errorf("creating the restore consumer: %w", err)
		}
		defer rc.Close()
		records := 0
		waitLogged := false
		for len(targets) > 0 {
			if !waitLogged && time.Since(start) > 5*time.Second {
				waitLogged = true
				w.log.Info("restoring state: waiting for the changelog's open transactions to resolve (a previous owner's transaction ends with its commit, its fencing, or the broker's transaction timeout)",
					"partitions", slices.Sorted(maps.Keys(targets)))
			}
			fs := rc.PollFetches(ctx)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			var ferr error
			fs.EachError(func(_ string, _ int32, err error) { ferr = err })
			if ferr != nil {
				return nil, fmt.Errorf("reading the changelog: %w", ferr)
			}
			fs.EachRecord(func(r *kgo.Record) {
				t, ok := targets[r.Partition]
				if !ok {
					return
				}
				if !r.Attrs.IsControl() && r.Offset < t {
					if err := out[r.Partition].restoreRecord(&w.cfg, r.Key, r.Value); err != nil && ferr == nil {
						ferr = fmt.Errorf("changelog partition %d offset %d: %w", r.Partition, r.Offset, err)
					}
					records++
				}
				// The last record below the watermark is data or a transaction
				// marker; KeepControlRecords lets us see both. read_committed
				// hands it over once its transaction is resolved.
				if r.Offset >= t-1 {
					delete(targets, r.Partition)
				}
			})
			if ferr != nil {
				return nil, ferr
			}
		}
		w.log.Info("restored state", "partitions", ids, "records", records, "took", time.Since(start).Round(time.Millisecond))
	}
	now := time.Now()
	for id, part := range out {
		part.restored(&w.cfg, w.rw != nil && w.cfg.RedisRewriteRate > 0)
		part.lastRecord = now
		if err := part.users.Err(); err != nil {
			return nil, fmt.Errorf("restoring partition %d: %w", id, err)
		}
	}
	w.m.restores.Observe(time.Since(start).Seconds())
	restored = true
	return out, nil
}

func (w *Worker) observeLag(p *processor, fetches kgo.Fetches) {
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if n := len(fp.Records); n > 0 {
			lag := fp.HighWatermark - fp.Records[n-1].Offset - 1
			w.m.lag.WithLabelValues(strconv.Itoa(int(fp.Partition))).Set(float64(max(lag, 0)))
		}
	})
	now := time.Now().UnixMilli()
	users := 0
	for id, part := range p.parts {
		if part.wm != math.MinInt64 {
			w.m.wmLag.WithLabelValues(strconv.Itoa(int(id))).Set(float64(now-part.wm) / 1000)
		}
		users += part.users.Len()
	}
	// Every batch adds and expires users, and a rebalance moves partitions.
	w.m.stateUsers.Set(float64(users))
}
