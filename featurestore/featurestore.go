// Package featurestore is the layout of clickrec's feature store in Redis: the
// key of each user's entry, the channel that announces a user's new
// recommendation, and the popularity table with its announcement channel. It
// is the contract between the writers and the readers of that data — the hot
// path workers write the user entries and read the popularity table, the
// RefreshPopularity workflow writes the table, and the web backend reads the
// user entries and follows their channels — so none of them needs to import
// another.
package featurestore

// UserKey is the Redis key of a user's feature store entry, a hash with the
// fields below. The braces make the user id the key's hash tag.
func UserKey(user string) string { return "user:{" + user + "}" }

// The fields of a user's entry (UserKey).
const (
	FieldEvents   = "events"   // the recent events, a JSON array, newest last
	FieldFeatures = "features" // the session features, a JSON object
	// FieldRecs is the last recommendation committed for the user on the
	// recommendations topic in this incarnation (wire.Recommendation),
	// byte for byte the record's value.
	FieldRecs = "recs"
	// FieldBorn and FieldSeq order the writes: born is the event time (ms)
	// of the user's first event since they were last forgotten, seq counts
	// their events since. A write or delete acts only if its (born, seq) is
	// not older than the stored one.
	FieldBorn = "born"
	FieldSeq  = "seq"
	// FieldRecSeq is the seq of the click FieldRecs answers. A write
	// publishes on RecsChannel only when it stores a newer recommendation,
	// so a replayed write does not push the same recommendation twice.
	FieldRecSeq = "rseq"
	// FieldGone marks a tombstone: the stream forgot the user (after
	// --session-ttl). The entry then holds only FieldBorn, FieldSeq and
	// FieldGone, until the TTL: it keeps a former owner's delayed write
	// from bringing the user back. Readers treat it as absent.
	FieldGone = "gone"
)

// RecsChannelPrefix starts the name of every RecsChannel.
const RecsChannelPrefix = "recs:"

// RecsChannel is the Redis pub/sub channel on which the hot path publishes a
// user's recommendation after writing it to the feature store.
func RecsChannel(user string) string { return RecsChannelPrefix + user }
