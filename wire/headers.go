package wire

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Header names of the records of the dead-letter topic (an input record the
// hot path rejected) and of the late topic (an input record behind the
// watermark by more than the allowed lateness). Both carry the input
// record's key, value and timestamp unchanged.
const (
	// HeaderReason says why the record was set aside: an event.Reason on
	// the dead-letter topic, ReasonTooLate on the late topic.
	HeaderReason = "reason"
	// HeaderDetail is the validation error, at most 512 bytes (dead-letter
	// topic only).
	HeaderDetail = "detail"
	// HeaderSource is where the input record was read: "topic/partition/offset".
	HeaderSource = "source"
	// HeaderWatermarkMs is the partition's watermark (Unix ms, decimal) when
	// the record arrived (late topic only).
	HeaderWatermarkMs = "watermark_ms"
)

// ReasonTooLate is the reason header of every record on the late topic.
const ReasonTooLate = "too_late"

// MaxDetailBytes is the most bytes of HeaderDetail the hot path writes.
const MaxDetailBytes = 512

// DeadLetter holds the headers of a record of the dead-letter or the late
// topic.
type DeadLetter struct {
	Reason string // HeaderReason; never empty
	Detail string // HeaderDetail; "" on the late topic
	Source Source // HeaderSource
	// WatermarkMs is HeaderWatermarkMs, valid if HasWatermark (late topic).
	WatermarkMs  int64
	HasWatermark bool
}

// Source is where an input record was read.
type Source struct {
	Topic     string
	Partition int32
	Offset    int64
}

// String returns the source as the header holds it: "topic/partition/offset".
func (s Source) String() string {
	return string(AppendSource(nil, s.Topic, s.Partition, s.Offset))
}

// AppendSource appends the HeaderSource value of a record read from topic,
// partition and offset.
func AppendSource(b []byte, topic string, partition int32, offset int64) []byte {
	b = append(b, topic...)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(partition), 10)
	b = append(b, '/')
	return strconv.AppendInt(b, offset, 10)
}

// ParseSource parses a HeaderSource value. Topic names cannot contain '/',
// so the last two slashes split it.
func ParseSource(s string) (Source, error) {
	j := strings.LastIndexByte(s, '/')
	if j < 0 {
		return Source{}, fmt.Errorf("wire: source %q is not topic/partition/offset", s)
	}
	i := strings.LastIndexByte(s[:j], '/')
	if i <= 0 {
		return Source{}, fmt.Errorf("wire: source %q is not topic/partition/offset", s)
	}
	p, err := strconv.ParseInt(s[i+1:j], 10, 32)
	if err != nil || p < 0 {
		return Source{}, fmt.Errorf("wire: source %q: partition %q is not a non-negative int32", s, s[i+1:j])
	}
	o, err := strconv.ParseInt(s[j+1:], 10, 64)
	if err != nil || o < 0 {
		return Source{}, fmt.Errorf("wire: source %q: offset %q is not a non-negative integer", s, s[j+1:])
	}
	return Source{Topic: s[:i], Partition: int32(p), Offset: o}, nil
}

// DeadLetterOf reads the headers of a dead-letter or late record. It fails
// if there is no reason header, or if the source or watermark header is
// present but malformed; other headers are ignored. Of a header given twice,
// the last counts.
func DeadLetterOf(headers []kgo.RecordHeader) (DeadLetter, error) {
	var d DeadLetter
	var source string
	var hasSource bool
	for _, h := range headers {
		switch h.Key {
		case HeaderReason:
			d.Reason = string(h.Value)
		case HeaderDetail:
			d.Detail = string(h.Value)
		case HeaderSource:
			source, hasSource = string(h.Value), true
		case HeaderWatermarkMs:
			wm, err := strconv.ParseInt(string(h.Value), 10, 64)
			if err != nil {
				return DeadLetter{}, fmt.Errorf("wire: header %s %q is not an integer", HeaderWatermarkMs, h.Value)
			}
			d.WatermarkMs, d.HasWatermark = wm, true
		}
	}
	if d.Reason == "" {
		return DeadLetter{}, fmt.Errorf("wire: no %s header among %d headers", HeaderReason, len(headers))
	}
	if hasSource {
		s, err := ParseSource(source)
		if err != nil {
			return DeadLetter{}, err
		}
		d.Source = s
	}
	return d, nil
}
