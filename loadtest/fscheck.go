package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/featurestore"
	"github.com/clickrec/clickrec/hotpath"
	"github.com/clickrec/clickrec/internal/kafkautil"
	"github.com/clickrec/clickrec/wire"
)

// The feature-store check compares, after the drain, every shopper's Redis
// entry (featurestore.UserKey) with what Kafka committed: the user's last
// hotpath-changelog record (their state, or a tombstone once the stream
// forgot them) and the last recommendation committed for them in that
// incarnation. The hot path writes Redis after each commit, asynchronously
// and with retries, so the check re-reads the users that do not match until
// all do or a timeout passes.

// Entry classes of the feature-store check (ClassifyEntry).
const (
	// EntryMatch: Redis holds what Kafka committed last (or, for a user the
	// stream forgot, nothing or a tombstone).
	EntryMatch = "match"
	// EntryStale: Redis holds an older state (born, seq behind the
	// changelog) or another recommendation than the last one committed.
	EntryStale = "stale"
	// EntryMissing: the changelog has the user but Redis has no entry (or a
	// tombstone), or Redis has no recommendation while Kafka has one.
	EntryMissing = "missing"
	// EntryResurrected: Redis holds a live entry of a user whose last
	// changelog record is a tombstone.
	EntryResurrected = "resurrected"
	// EntryUnexpected: Redis is ahead of Kafka (a born or seq the changelog
	// never committed: a write of an aborted transaction), or Kafka has
	// recommendations for a user the changelog does not know.
	EntryUnexpected = "unexpected"
)

// Expected is what Kafka says a user's feature-store entry must be.
type Expected struct {
	// Known: the changelog has a record of the user (state or tombstone).
	Known bool
	// Gone: the user's last changelog record is a tombstone.
	Gone bool
	Born int64  // of the last state (not Gone)
	Seq  uint64 // of the last state (not Gone)
	// Recs is the value of the last recommendation committed for the user
	// in this incarnation (event_time_ms ≥ Born); nil if none.
	Recs []byte
}

// Stored is a user's entry as read from Redis (HGETALL).
type Stored struct {
	Exists bool // the key exists
	Gone   bool // a tombstone (featurestore.FieldGone)
	Born   int64
	Seq    uint64
	Recs   []byte // nil: no recs field
	RecSeq uint64
	Bad    string // a field that could not be parsed
}

// storedOf parses an HGETALL answer.
func storedOf(h map[string]string) Stored {
	s := Stored{Exists: len(h) > 0}
	if !s.Exists {
		return s
	}
	_, s.Gone = h[featurestore.FieldGone]
	var err error
	if v, ok := h[featurestore.FieldBorn]; ok {
		if s.Born, err = strconv.ParseInt(v, 10, 64); err != nil {
			s.Bad = featurestore.FieldBorn + "=" + v
		}
	}
	if v, ok := h[featurestore.FieldSeq]; ok {
		if s.Seq, err = strconv.ParseUint(v, 10, 64); err != nil {
			s.Bad = featurestore.FieldSeq + "=" + v
		}
	}
	if v, ok := h[featurestore.FieldRecSeq]; ok {
		if s.RecSeq, err = strconv.ParseUint(v, 10, 64); err != nil {
			s.Bad = featurestore.FieldRecSeq + "=" + v
		}
	}
	if v, ok := h[featurestore.FieldRecs]; ok {
		s.Recs = []byte(v)
	}
	return s
}

// ClassifyEntry decides whether a user's Redis entry got is what Kafka
// committed (want), and if not, how it differs: one of EntryMatch,
// EntryStale, EntryMissing, EntryResurrected, EntryUnexpected, with a
// sentence on the difference for any but a match.
//
// The rules, in order: a user the changelog forgot must be absent or a
// tombstone in Redis (else resurrected); a user the changelog has must have a
// live entry (else missing) whose (born, seq) equals the changelog's (behind:
// stale; ahead: unexpected); its recs must be byte for byte the last
// recommendation of the incarnation (none in Redis while Kafka has one:
// missing; another one, or one while Kafka has none: stale).
func ClassifyEntry(want Expected, got Stored) (class, why string) {
	live := got.Exists && !got.Gone
	switch {
	case got.Bad != "":
		return EntryStale, "unreadable field " + got.Bad
	case !want.Known && want.Recs != nil:
		return EntryUnexpected, "recommendations on Kafka but no changelog record of the user"
	case !want.Known:
		return EntryMatch, ""
	case want.Gone && live:
		return EntryResurrected, fmt.Sprintf("a live entry (born %d, seq %d) of a user the changelog expired", got.Born, got.Seq)
	case want.Gone:
		return EntryMatch, ""
	case !got.Exists:
		return EntryMissing, fmt.Sprintf("no entry, want born %d seq %d", want.Born, want.Seq)
	case got.Gone:
		return EntryMissing, fmt.Sprintf("a tombstone (born %d, seq %d), want the live state born %d seq %d", got.Born, got.Seq, want.Born, want.Seq)
	case got.Born < want.Born || got.Born == want.Born && got.Seq < want.Seq:
		return EntryStale, fmt.Sprintf("born %d seq %d, want born %d seq %d", got.Born, got.Seq, want.Born, want.Seq)
	case got.Born > want.Born || got.Seq > want.Seq:
		return EntryUnexpected, fmt.Sprintf("born %d seq %d ahead of the changelog's born %d seq %d", got.Born, got.Seq, want.Born, want.Seq)
	case want.Recs != nil && got.Recs == nil:
		return EntryMissing, fmt.Sprintf("no recs, want %s", recDigest(want.Recs))
	case want.Recs == nil && got.Recs != nil:
		return EntryStale, fmt.Sprintf("recs %s, want none (no recommendation committed since born %d)", recDigest(got.Recs), want.Born)
	case !bytes.Equal(want.Recs, got.Recs):
		return EntryStale, fmt.Sprintf("recs %s, want %s", recDigest(got.Recs), recDigest(want.Recs))
	}
	return EntryMatch, ""
}

// recDigest names a recommendation value in a sentence: its event id and size.
func recDigest(v []byte) string {
	id := wire.PeekEventID(v)
	if id == nil {
		return fmt.Sprintf("(%d bytes, no event_id)", len(v))
	}
	return fmt.Sprintf("of event %s (%d bytes)", id, len(v))
}

// Mismatch is one user whose feature-store entry did not match.
type Mismatch struct {
	User  string `json:"user"`
	Class string `json:"class"`
	Why   string `json:"why"`
}

// FeatureStoreCheck is the outcome of CheckFeatureStore.
type FeatureStoreCheck struct {
	// Users checked: every user of the changelog and of the recommendations
	// topic. Gone of them were expired by the stream (tombstones), WithRecs
	// had a recommendation in their current incarnation.
	Users    int `json:"users"`
	Gone     int `json:"gone"`
	WithRecs int `json:"with_recs"`
	// Final counts by class.
	Match       int `json:"match"`
	Stale       int `json:"stale"`
	Missing     int `json:"missing"`
	Resurrected int `json:"resurrected"`
	Unexpected  int `json:"unexpected"`
	// FirstMismatches did not match at the first look, right after the
	// drain: the Redis writes still under way.
	FirstMismatches int `json:"first_mismatches"`
	// ConvergedMs is how long after the first look every user matched (0:
	// at once); null if they did not within TimeoutMs.
	ConvergedMs *float64 `json:"converged_ms"`
	TimeoutMs   float64  `json:"timeout_ms"`
	Rounds      int      `json:"rounds"`
	// Examples are a few of the users that still did not match.
	Examples []Mismatch `json:"examples,omitempty"`
	// Error is why the check could not be completed ("" if it was).
	Error string `json:"error,omitempty"`
}

// Mismatches returns how many users did not match in the end.
func (c *FeatureStoreCheck) Mismatches() int {
	return c.Stale + c.Missing + c.Resurrected + c.Unexpected
}

// Passed reports whether the check completed and every user matched.
func (c *FeatureStoreCheck) Passed() bool { return c.Error == "" && c.Mismatches() == 0 }

// maxExamples bounds FeatureStoreCheck.Examples.
const maxExamples = 5

// CheckFeatureStore compares every user's Redis entry at rc with what the hot
// path committed on topics (read_committed, from the start of the
// changelog and recommendations topics to their ends), re-reading the users
// that do not match (and catching up with Kafka) every 250 ms until all match
// or timeout passes. Call it once the workers have committed everything (the
// load test's drain). The error is about reading Kafka or Redis; mismatches
// are in the result.
func CheckFeatureStore(ctx context.Context, kcfg *kafkautil.Config, topics kafkautil.Topics, rc *redis.Client, timeout time.Duration) (FeatureStoreCheck, error) {
	res := FeatureStoreCheck{TimeoutMs: float64(timeout.Milliseconds())}
	k, err := newKafkaTruth(kcfg, topics)
	if err != nil {
		return res, err
	}
	defer k.close()
	start := time.Now()
	deadline := start.Add(timeout)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	class := map[string]string{} // the latest class of every user
	why := map[string]string{}
	var pending []string // users to (re-)read from Redis
	for {
		rctx, cancel := context.WithDeadline(ctx, deadline.Add(30*time.Second)) // Kafka reads are bounded too
		changed, err := k.catchUp(rctx)
		cancel()
		if err != nil {
			return res, err
		}
		pending = mergeUsers(pending, changed)
		if err := classifyUsers(ctx, rc, k, pending, class, why); err != nil {
			return res, err
		}
		res.Rounds++
		pending = pending[:0]
		for u, c := range class {
			if c != EntryMatch {
				pending = append(pending, u)
			}
		}
		sort.Strings(pending)
		if res.Rounds == 1 {
			res.FirstMismatches = len(pending)
		}
		if len(pending) == 0 {
			v := float64(time.Since(start).Microseconds()) / 1000
			if res.Rounds == 1 {
				v = 0
			}
			res.ConvergedMs = &v
			break
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-tick.C:
		}
	}
	res.Users = len(class)
	for u, c := range class {
		switch c {
		case EntryMatch:
			res.Match++
		case EntryStale:
			res.Stale++
		case EntryMissing:
			res.Missing++
		case EntryResurrected:
			res.Resurrected++
		case EntryUnexpected:
			res.Unexpected++
		}
		w := k.expected(u)
		if w.Gone {
			res.Gone++
		}
		if w.Recs != nil {
			res.WithRecs++
		}
	}
	for _, u := range pending {
		if len(res.Examples) == maxExamples {
			break
		}
		res.Examples = append(res.Examples, Mismatch{User: u, Class: class[u], Why: why[u]})
	}
	return res, nil
}

// mergeUsers returns the sorted union of a and b, without repetitions.
func mergeUsers(a, b []string) []string {
	seen := make(map[string]struct{}, len(a)+len(b))
	out := a[:0:0]
	for _, s := range [][]string{a, b} {
		for _, u := range s {
			if _, ok := seen[u]; !ok {
				seen[u] = struct{}{}
				out = append(out, u)
			}
		}
	}
	sort.Strings(out)
	return out
}

// redisBatch is how many HGETALLs one pipeline carries.
const redisBatch = 500

// classifyUsers reads the entries of users from Redis, pipelined, and sets
// their class and why.
func classifyUsers(ctx context.Context, rc *redis.Client, k *kafkaTruth, users []string, class, why map[string]string) error {
	for i := 0; i < len(users); i += redisBatch {
		batch := users[i:min(i+redisBatch, len(users))]
		pipe := rc.Pipeline()
		cmds := make([]*redis.MapStringStringCmd, len(batch))
		for j, u := range batch {
			cmds[j] = pipe.HGetAll(ctx, featurestore.UserKey(u))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("reading the feature store entries of %d users: %w", len(batch), err)
		}
		for j, u := range batch {
			c, w := ClassifyEntry(k.expected(u), storedOf(cmds[j].Val()))
			class[u], why[u] = c, w
		}
	}
	return nil
}

// lastRec is the last recommendation read for a user.
type lastRec struct {
	value       []byte
	eventTimeMs int64
}

// kafkaTruth is what the hot path committed: the last changelog record and
// the last recommendation of every user, read with read_committed from the
// start of both topics. catchUp reads on to their current ends.
type kafkaTruth struct {
	cl        *kgo.Client
	adm       *kadm.Client
	recs      string
	changelog string
	pos       map[string]map[int32]int64 // next offset to read

	state map[string]hotpathState
	gone  map[string]bool
	last  map[string]lastRec
}

func newKafkaTruth(kcfg *kafkautil.Config, topics kafkautil.Topics) (*kafkaTruth, error) {
	cl, err := kgo.NewClient(append(kcfg.Opts("clickrec-loadtest-fscheck"),
		kgo.ConsumeTopics(string(topics.Changelog), string(topics.Recs)),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.ConsumeStartOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(250*time.Millisecond),
	)...)
	if err != nil {
		return nil, fmt.Errorf("creating the feature-store check's Kafka client: %w", err)
	}
	return &kafkaTruth{cl: cl, adm: kadm.NewClient(cl), recs: string(topics.Recs), changelog: string(topics.Changelog),
		pos:   map[string]map[int32]int64{string(topics.Recs): {}, string(topics.Changelog): {}},
		state: map[string]hotpathState{}, gone: map[string]bool{}, last: map[string]lastRec{}}, nil
}

func (k *kafkaTruth) close() { k.cl.Close() }

// catchUp reads both topics to the high watermarks they have now (a
// read_committed reader passes a high watermark only once every transaction
// below it is resolved) and returns the users it read records of.
func (k *kafkaTruth) catchUp(ctx context.Context) ([]string, error) {
	ends, err := k.adm.ListEndOffsets(ctx, k.changelog, k.recs)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("listing the end offsets of %s and %s: %w", k.changelog, k.recs, err)
	}
	behind := func() int64 {
		var n int64
		ends.Each(func(o kadm.ListedOffset) { n += max(o.Offset-k.pos[o.Topic][o.Partition], 0) })
		return n
	}
	touched := map[string]struct{}{}
	for behind() > 0 {
		fs := k.cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("reading %s and %s to their ends (%d records short): %w", k.changelog, k.recs, behind(), err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			ferr = errors.Join(ferr, fmt.Errorf("reading %s partition %d: %w", t, p, err))
		})
		if ferr != nil {
			return nil, ferr
		}
		var derr error
		fs.EachRecord(func(r *kgo.Record) {
			k.pos[r.Topic][r.Partition] = r.Offset + 1
			if r.Attrs.IsControl() {
				return
			}
			if err := k.apply(r, touched); err != nil {
				derr = errors.Join(derr, err)
			}
		})
		if derr != nil {
			return nil, derr
		}
	}
	out := make([]string, 0, len(touched))
	for u := range touched {
		out = append(out, u)
	}
	return out, nil
}

// apply takes one committed record into account. A recommendation older
// than its user's incarnation known so far is skipped; expected filters
// again by the incarnation known in the end.
func (k *kafkaTruth) apply(r *kgo.Record, touched map[string]struct{}) error {
	user := string(r.Key)
	if r.Topic == k.changelog {
		if r.Value == nil { // a tombstone: the stream forgot the user
			touched[user] = struct{}{}
			k.gone[user] = true
			delete(k.state, user)
			return nil
		}
		s, ok, err := hotpath.DecodeChangelog(r.Key, r.Value)
		if err != nil {
			return fmt.Errorf("decoding %s partition %d offset %d: %w", r.Topic, r.Partition, r.Offset, err)
		}
		if !ok { // the partition's watermark
			return nil
		}
		touched[s.User] = struct{}{}
		k.state[s.User] = s
		delete(k.gone, s.User)
		return nil
	}
	rec, err := wire.DecodeRecommendation(r.Value)
	if err != nil {
		return fmt.Errorf("decoding %s partition %d offset %d: %w", r.Topic, r.Partition, r.Offset, err)
	}
	touched[user] = struct{}{}
	if s, ok := k.state[user]; ok && rec.EventTimeMs < s.Born {
		return nil // of a former incarnation
	}
	k.last[user] = lastRec{value: r.Value, eventTimeMs: rec.EventTimeMs}
	return nil
}

// expected returns what Kafka says user's entry must be.
func (k *kafkaTruth) expected(user string) Expected {
	if k.gone[user] {
		return Expected{Known: true, Gone: true}
	}
	var w Expected
	s, ok := k.state[user]
	if ok {
		w = Expected{Known: true, Born: s.Born, Seq: s.Seq}
	}
	if l, ok := k.last[user]; ok && l.eventTimeMs >= w.Born {
		w.Recs = l.value
	}
	return w
}

// hotpathState is a user's state as the changelog says.
type hotpathState = hotpath.StateSummary
