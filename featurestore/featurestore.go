// Package featurestore is the layout of clickrec's feature store in Redis: the
// key of each user's entry, the channel that announces a user's new
// recommendation, and the popularity table with its announcement channel. It
// is the contract between the writers and the readers of that data — the hot
// path workers write the user entries and read the popularity table, the
// RefreshPopularity workflow writes the table, and the web backend reads the
// user entries and follows their channels — so none of them needs to import
// another.
package featurestore

// UserKey is the Redis key of a user's feature store entry, a hash with fields
// events (JSON array, newest last), features (JSON), recs (the latest
// recommendation record), born and seq. The braces make the user id the
// key's hash tag.
func UserKey(user string) string { return "user:{" + user + "}" }

// RecsChannelPrefix starts the name of every RecsChannel.
const RecsChannelPrefix = "recs:"

// RecsChannel is the Redis pub/sub channel on which the hot path publishes a
// user's recommendation after writing it to the feature store.
func RecsChannel(user string) string { return RecsChannelPrefix + user }
