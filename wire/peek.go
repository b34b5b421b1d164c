package wire

import "bytes"

// The Peek functions read one field of a recommendation record without
// decoding it, for readers that see every record (the load test). They rely
// on the field order AppendJSON writes, and fall back to
// DecodeRecommendation when a record does not start as AppendJSON's output
// does (with the event_id).
// They do not validate: a record they read quickly may still be one
// DecodeRecommendation would reject.

// eventIDPrefix is how AppendJSON's output starts.
var eventIDPrefix = []byte(`{"event_id":"`)

// PeekEventID returns the event_id of a recommendation record, or nil if it
// is not a valid one. The result may alias v.
func PeekEventID(v []byte) []byte {
	if bytes.HasPrefix(v, eventIDPrefix) {
		rest := v[len(eventIDPrefix):]
		if j := bytes.IndexByte(rest, '"'); j > 0 && bytes.IndexByte(rest[:j], '\\') < 0 {
			return rest[:j:j]
		}
	}
	r, err := DecodeRecommendation(v)
	if err != nil {
		return nil
	}
	return []byte(r.EventID)
}

// PeekStrategy returns the strategy of a recommendation record, or nil if
// it has none or is not a valid record. The result may alias v.
func PeekStrategy(v []byte) []byte {
	// AppendJSON writes "strategy" after the items, which hold only numbers,
	// and after two strings in which a '"' is always escaped: the first
	// unescaped `"strategy":"` is the key.
	const key = `"strategy":"`
	if i := bytes.Index(v, []byte(key)); i >= 0 && bytes.HasPrefix(v, eventIDPrefix) {
		rest := v[i+len(key):]
		if j := bytes.IndexByte(rest, '"'); j > 0 && bytes.IndexByte(rest[:j], '\\') < 0 {
			return rest[:j:j]
		}
	}
	r, err := DecodeRecommendation(v)
	if err != nil || r.Strategy == "" {
		return nil
	}
	return []byte(r.Strategy)
}

// PeekProcessedAtMs returns the processed_at_ms of a recommendation record,
// or 0 if it has none or is not a valid record.
func PeekProcessedAtMs(v []byte) int64 {
	// AppendJSON writes processed_at_ms last, as digits then '}'.
	const key = `"processed_at_ms":`
	if i := bytes.LastIndex(v, []byte(key)); i >= 0 && bytes.HasPrefix(v, eventIDPrefix) {
		rest := v[i+len(key):]
		var n int64
		k := 0
		for k < len(rest) && k < 18 && rest[k] >= '0' && rest[k] <= '9' {
			n = n*10 + int64(rest[k]-'0')
			k++
		}
		if k > 0 && k < len(rest) && rest[k] == '}' {
			return n
		}
	}
	r, err := DecodeRecommendation(v)
	if err != nil {
		return 0
	}
	return r.ProcessedAtMs
}
