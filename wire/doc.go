// Package wire defines the records clickrec's hot path writes for others to
// read, in one place: the JSON values of the recommendations topic
// (Recommendation) and of the user_session_windows topic (Window), and the
// headers of the dead-letter and late topics (DeadLetter). They are a public
// contract: the web API, the drift monitor, the load test and users' own
// consumers read them, so a change here is a change for all of them.
//
// Encoding is by AppendJSON, which writes the fields in a fixed order with
// fixed number formatting and allocates nothing when the buffer has room;
// the hot path calls it for every record. Decoding is by
// DecodeRecommendation and DecodeWindow, which reject malformed JSON and
// records without their identifying field, and tolerate unknown fields, so
// fields may be added without breaking readers.
//
// A recommendation, as the hot path writes it (one line):
//
//	{"event_id":"7-12","user_id":"u1","items":[{"item_id":4711,"score":0.83}],
//	 "strategy":"model","model_version":"v3","event_time_ms":1700000000000,
//	 "processed_at_ms":1700000000042}
//
// A window result (one line):
//
//	{"user_id":"u1","window_start_ms":60000,"window_end_ms":120000,"events":4,
//	 "by_type":{"view":3,"cart":1,"purchase":0},"by_category":{"shoes":3,"hats":1},
//	 "session_events":9,"session_length_ms":250000,"revision":1}
//
// The types carry json tags too, so encoding/json reads and writes the same
// field names; only AppendJSON guarantees the hot path's exact bytes.
package wire
