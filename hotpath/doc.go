// Package hotpath is clickrec's stream worker: it turns each click on the
// user_events topic into top-k recommendations, window results and feature
// store writes, exactly once, within milliseconds.
//
// A Worker is one member of the hot path consumer group. Its loop (worker.go)
// polls, and per poll runs one Kafka transaction that holds everything the
// poll caused: the recommendations, the window results, the late and
// dead-letter side outputs, the new changelog value of every user it touched,
// the partitions' watermarks, and the consumed offsets. Either all of it
// becomes visible or none of it does.
//
// The pieces, in the order a click meets them:
//
//   - processor.go: the processor decodes and validates the click (invalid
//     ones go to the dead-letter topic with their reason), applies it to the
//     user's state (state.go: recent events, session, 1-minute windows),
//     queues it for scoring, and at the end of the batch scores every queued
//     click at once with the served model (serving.go; the popularity table
//     of popularity.go for cold starts and scoring errors), fires the windows
//     and expiries the watermark has passed (timers.go), and writes the
//     changelog.
//   - store.go, pebble.go: a partition's users live in a Store (decoded in
//     memory, encoded in memory, or in Pebble on local disk). A store changes
//     in batches: Commit when the transaction committed, Rollback when it did
//     not, so an aborted transaction costs what its batch touched.
//   - worker.go: partitions are restored from the changelog (read_committed)
//     when they are assigned; the worker fences its predecessor's transaction
//     on start and leaves the group on a clean stop; a failure it cannot undo
//     ends the session, and a new session restores from the changelog.
//   - redis.go: after a commit, each touched user's features, recent events
//     and latest recommendations are written to Redis in the background,
//     coalesced per user and ordered by (born, seq), never blocking the loop.
//     The keys and the popularity table follow package featurestore, the
//     layout the web backend and the workflows share.
//   - live.go, lag.go, metrics.go: the live drift profile published to Redis,
//     consumer lag from the group's committed offsets, and the Prometheus
//     series.
//
// Config (config.go) holds every setting with its flag; Config.Validate says
// what to fix in a bad one.
package hotpath
