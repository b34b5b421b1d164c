package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/clickrec/clickrec/event"
)

// Recommendation is a record of the recommendations topic: the items
// recommended after one on-time click. The record's key is the user id and
// its timestamp the click's record timestamp.
type Recommendation struct {
	EventID string `json:"event_id"` // the click's event id; never empty
	UserID  string `json:"user_id"`
	Items   []Item `json:"items"` // best first; written as [] when empty
	// Strategy is what produced the items: StrategyModel,
	// StrategyOnline, StrategyCategoryPopular or StrategyGlobalPopular.
	Strategy string `json:"strategy"`
	// ModelVersion is the version of the model serving when the click was
	// processed (also for popularity fallbacks), "" if none.
	ModelVersion  string `json:"model_version"`
	EventTimeMs   int64  `json:"event_time_ms"`   // the click's event time, Unix ms
	ProcessedAtMs int64  `json:"processed_at_ms"` // when the hot path scored it, Unix ms
}

// Strategies of a Recommendation.
const (
	// StrategyModel: the items are the serving model's top scores, blended
	// with the online item knowledge where it has candidates (new items
	// included; the scores are then the blend's).
	StrategyModel = "model"
	// StrategyOnline: none of the shopper's items is known to the model,
	// and the online item knowledge has candidates for them (a session of
	// new items); topped up from the popularity fallback.
	StrategyOnline = "online"
	// StrategyCategoryPopular: a popularity fallback, the click's category's
	// most popular items first.
	StrategyCategoryPopular = "category_popular"
	// StrategyGlobalPopular: a popularity fallback, the most popular items
	// overall.
	StrategyGlobalPopular = "global_popular"
)

// Item is one recommended item with its score. Scores are written with 6
// significant digits; NaN and infinities are written as 0.
type Item struct {
	ItemID int64   `json:"item_id"`
	Score  float32 `json:"score"`
}

// AppendJSON appends r as JSON, fields in the order of the struct, and
// returns the extended buffer. It allocates only to grow b.
func (r *Recommendation) AppendJSON(b []byte) []byte {
	b = append(b, `{"event_id":`...)
	b = event.AppendJSONString(b, r.EventID)
	b = append(b, `,"user_id":`...)
	b = event.AppendJSONString(b, r.UserID)
	b = append(b, `,"items":[`...)
	for i := range r.Items {
		if i > 0 {
			b = append(b, ',')
		}
		b = r.Items[i].appendJSON(b)
	}
	b = append(b, `],"strategy":`...)
	b = event.AppendJSONString(b, r.Strategy)
	b = append(b, `,"model_version":`...)
	b = event.AppendJSONString(b, r.ModelVersion)
	b = append(b, `,"event_time_ms":`...)
	b = strconv.AppendInt(b, r.EventTimeMs, 10)
	b = append(b, `,"processed_at_ms":`...)
	b = strconv.AppendInt(b, r.ProcessedAtMs, 10)
	return append(b, '}')
}

func (it *Item) appendJSON(b []byte) []byte {
	b = append(b, `{"item_id":`...)
	b = strconv.AppendInt(b, it.ItemID, 10)
	b = append(b, `,"score":`...)
	b = appendScore(b, it.Score)
	return append(b, '}')
}

// WrittenScore returns the score as AppendJSON writes it, as a float64: the
// value of its 6 significant digits (NaN and infinities 0), which
// float64(it.Score) is not (float64(float32(0.83)) is 0.8299999833106995).
// A reader that wants the record's decimal digits in a float64 uses this.
func (it Item) WrittenScore() float64 {
	var buf [32]byte
	f, _ := strconv.ParseFloat(string(appendScore(buf[:0], it.Score)), 64)
	return f
}

// appendScore writes a score with 6 significant digits, NaN and ±Inf as 0.
func appendScore(b []byte, s float32) []byte {
	if math.IsInf(float64(s), 0) || math.IsNaN(float64(s)) {
		s = 0
	}
	return strconv.AppendFloat(b, float64(s), 'g', 6, 32)
}

// errNoEventID is returned for a recommendation without an event id.
var errNoEventID = errors.New("no event_id")

// DecodeRecommendation parses a record of the recommendations topic. It
// fails on malformed JSON, on a field of the wrong type (a score that does
// not fit a float32 included) and on a missing or empty event_id; unknown
// fields are ignored. An empty or null items list decodes as nil.
func DecodeRecommendation(b []byte) (Recommendation, error) {
	var r Recommendation
	if err := json.Unmarshal(b, &r); err != nil {
		return Recommendation{}, fmt.Errorf("wire: cannot decode recommendation %.80q: %w", b, err)
	}
	if r.EventID == "" {
		return Recommendation{}, fmt.Errorf("wire: recommendation %.80q: %w", b, errNoEventID)
	}
	if len(r.Items) == 0 {
		r.Items = nil
	}
	return r, nil
}
