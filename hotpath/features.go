package hotpath

import (
	"strconv"

	"github.com/clickrec/clickrec/event"
)

// appendFeatures appends the user's session features as JSON: time per
// category, recency, frequency and session length (R3). Recency is the time
// between the user's two newest events, in event time (null with only one):
// how long ago, when they last clicked, their click before was.
func (u *userState) appendFeatures(b []byte) []byte {
	b = append(b, `{"session_id":`...)
	b = event.AppendJSONString(b, u.session)
	b = append(b, `,"session_events":`...)
	b = strconv.AppendUint(b, uint64(u.sessionEvts), 10)
	b = append(b, `,"session_length_ms":`...)
	b = strconv.AppendInt(b, u.lastTs-u.sessionStart, 10)
	b = append(b, `,"last_event_ms":`...)
	b = strconv.AppendInt(b, u.lastTs, 10)
	b = append(b, `,"recency_ms":`...)
	if n := len(u.recent); n >= 2 {
		b = strconv.AppendInt(b, u.recent[n-1].ts-u.recent[n-2].ts, 10)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"events_total":`...)
	b = strconv.AppendUint(b, u.seq, 10)
	b = append(b, `,"time_per_category_ms":{`...)
	for i, c := range u.catTime {
		if i > 0 {
			b = append(b, ',')
		}
		b = event.AppendJSONString(b, c.cat)
		b = append(b, ':')
		b = strconv.AppendInt(b, c.ms, 10)
	}
	return append(b, `}}`...)
}

// appendRecentJSON appends the user's recent events, newest last, as a JSON array.
func (u *userState) appendRecentJSON(b []byte) []byte {
	b = append(b, '[')
	for i, r := range u.recent {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"item_id":`...)
		b = strconv.AppendInt(b, r.item, 10)
		b = append(b, `,"category":`...)
		b = event.AppendJSONString(b, r.cat)
		b = append(b, `,"event_type":"`...)
		b = append(b, r.typ.String()...)
		b = append(b, `","timestamp_ms":`...)
		b = strconv.AppendInt(b, r.ts, 10)
		b = append(b, '}')
	}
	return append(b, ']')
}
