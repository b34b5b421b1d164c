package drift

import (
	"strconv"
	"strings"
	"time"
)

// Redis names of the live profiles. Every hot path instance publishes, once a
// minute, the JSON of its LiveSet (counted against the serving model's
// ReferenceSet) under LiveKey(minute, instance) with expiry LiveKeyTTL; the
// CheckDrift workflow merges the keys of the last minutes across instances
// and compares the sum with the reference.
const (
	// LiveKeyPrefix starts every live-profile key.
	LiveKeyPrefix = "drift:live:"
	// LiveKeyPattern matches every live-profile key (Redis SCAN MATCH / KEYS glob).
	LiveKeyPattern = LiveKeyPrefix + "*"
	// LiveKeyTTL is how long a live profile is kept: long enough for a drift
	// check to look back over an observation period after a promotion.
	LiveKeyTTL = 2 * time.Hour
)

// LiveMinute is the unix minute of t (seconds since the epoch / 60), the
// first part of a live-profile key.
func LiveMinute(t time.Time) int64 { return t.Unix() / 60 }

// LiveKey is the Redis key of instance's live profile for one unix minute:
// "drift:live:<minute>:<instance>". The instance id may contain any
// character, including ':'.
func LiveKey(minute int64, instance string) string {
	return LiveKeyPrefix + strconv.FormatInt(minute, 10) + ":" + instance
}

// LiveKeyMinutePattern matches the live-profile keys of every instance for
// one unix minute (a glob for SCAN MATCH).
func LiveKeyMinutePattern(minute int64) string {
	return LiveKeyPrefix + strconv.FormatInt(minute, 10) + ":*"
}

// ParseLiveKey splits a key made by LiveKey into its minute and instance; ok
// is false for any other key.
func ParseLiveKey(key string) (minute int64, instance string, ok bool) {
	rest, found := strings.CutPrefix(key, LiveKeyPrefix)
	if !found {
		return 0, "", false
	}
	m, inst, found := strings.Cut(rest, ":")
	if !found || inst == "" {
		return 0, "", false
	}
	minute, err := strconv.ParseInt(m, 10, 64)
	if err != nil {
		return 0, "", false
	}
	return minute, inst, true
}
