package model

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/clickrec/clickrec/event"
)

// Session is one shopping session for training: the items it touched, oldest
// first.
type Session struct {
	ID    string  // session id, empty when the source has none
	Items []int64 // external item ids, oldest first
	// Types holds each event's type, parallel to Items; nil means every event
	// was a view.
	Types []event.Type
	// StartMs and EndMs are the first and last event times (Unix ms), 0 when
	// the source has no timestamps.
	StartMs, EndMs int64
}

// Data formats understood by ReadSessionsFile.
const (
	FormatDiginetica = "diginetica" // one session per line, space-separated item ids
	FormatEvents     = "events"     // click-event JSON lines (event.Click)
)

// OpenData opens a data file for reading, transparently decompressing it when
// it is gzip (detected by its magic bytes, not its name).
func OpenData(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open data: %w", err)
	}
	br := bufio.NewReaderSize(f, 1<<16)
	magic, err := br.Peek(2)
	if err != nil && !errors.Is(err, io.EOF) {
		f.Close()
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("gzip %s: %w", path, err)
		}
		return &readCloser{Reader: zr, close: func() error { zr.Close(); return f.Close() }}, nil
	}
	return &readCloser{Reader: br, close: f.Close}, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r *readCloser) Close() error { return r.close() }

// ReadSessionsFile reads a training file in the given format (FormatDiginetica
// or FormatEvents), gzip or plain.
func ReadSessionsFile(path, format string) ([]Session, DataStats, error) {
	rc, err := OpenData(path)
	if err != nil {
		return nil, DataStats{}, err
	}
	defer rc.Close()
	var (
		ss []Session
		st DataStats
	)
	switch format {
	case FormatDiginetica:
		ss, err = ReadDiginetica(rc)
		st = StatsOf(ss)
	case FormatEvents:
		ss, st, err = ReadEvents(rc)
	default:
		return nil, DataStats{}, fmt.Errorf("unknown data format %q (want %s or %s)", format, FormatDiginetica, FormatEvents)
	}
	if err != nil {
		return nil, DataStats{}, fmt.Errorf("%s: %w", path, err)
	}
	st.Format = format
	return ss, st, nil
}

// ReadDiginetica reads the session-per-line benchmark format: each non-empty
// line is one session, its item ids separated by spaces, oldest first.
func ReadDiginetica(r io.Reader) ([]Session, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<16), 1<<24)
	var out []Session
	line := 0
	for sc.Scan() {
		line++
		f := bytes.Fields(sc.Bytes())
		if len(f) == 0 {
			continue
		}
		items := make([]int64, len(f))
		for i, tok := range f {
			v, err := strconv.ParseInt(string(tok), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: item %q: %w", line, tok, err)
			}
			items[i] = v
		}
		out = append(out, Session{Items: items})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", line+1, err)
	}
	return out, nil
}

// DataStats describes a training data set.
type DataStats struct {
	Format   string `json:"format,omitempty"`
	Sessions int    `json:"sessions"`
	Events   int    `json:"events"`
	Items    int    `json:"items"`
	// Invalid and Duplicate count event lines skipped by ReadEvents.
	Invalid   int `json:"invalid,omitempty"`
	Duplicate int `json:"duplicate,omitempty"`
	// FromMs and ToMs bound the event times (Unix ms); 0 when unknown.
	FromMs int64 `json:"from_ms,omitempty"`
	ToMs   int64 `json:"to_ms,omitempty"`
}

// StatsOf counts sessions, events, distinct items and the time window of ss.
func StatsOf(ss []Session) DataStats {
	st := DataStats{Sessions: len(ss)}
	items := map[int64]struct{}{}
	for _, s := range ss {
		st.Events += len(s.Items)
		for _, it := range s.Items {
			items[it] = struct{}{}
		}
		if s.StartMs != 0 && (st.FromMs == 0 || s.StartMs < st.FromMs) {
			st.FromMs = s.StartMs
		}
		if s.EndMs > st.ToMs {
			st.ToMs = s.EndMs
		}
	}
	st.Items = len(items)
	return st
}

// ReadEvents reads click events as JSON lines (the user_events schema, see
// event.Click) and groups them into sessions by session_id (user_id when the
// session id is empty). Events within a session are ordered by time, sessions
// by their first event. Invalid lines and repeated event ids are skipped and
// counted in the stats; an input with no valid event is an error.
func ReadEvents(r io.Reader) ([]Session, DataStats, error) {
	type ev struct {
		ts   int64
		seq  int
		item int64
		typ  event.Type
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<16), 1<<24)
	var (
		st     DataStats
		byKey  = map[string][]ev{}
		order  []string
		seen   = map[string]struct{}{}
		c      event.Click
		lim    = event.DefaultLimits
		line   int
		lastEr error
	)
	lim.MaxFutureSkew = 0 // historical data: no "now"
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if err := event.DecodeInto(&c, b, time.Time{}, lim); err != nil {
			st.Invalid++
			lastEr = fmt.Errorf("line %d: %w", line, err)
			continue
		}
		if _, dup := seen[c.EventID]; dup {
			st.Duplicate++
			continue
		}
		seen[c.EventID] = struct{}{}
		key := c.SessionID
		if key == "" {
			key = "user:" + c.UserID
		}
		if _, ok := byKey[key]; !ok {
			order = append(order, key)
		}
		byKey[key] = append(byKey[key], ev{ts: c.TimestampMs, seq: line, item: c.ItemID, typ: c.Type})
	}
	if err := sc.Err(); err != nil {
		return nil, st, fmt.Errorf("line %d: %w", line+1, err)
	}
	if len(byKey) == 0 {
		if lastEr != nil {
			return nil, st, fmt.Errorf("no valid event (%d invalid, last: %w)", st.Invalid, lastEr)
		}
		return nil, st, errors.New("no events")
	}
	out := make([]Session, 0, len(order))
	for _, key := range order {
		evs := byKey[key]
		slices.SortStableFunc(evs, func(a, b ev) int {
			if a.ts != b.ts {
				return cmpInt64(a.ts, b.ts)
			}
			return a.seq - b.seq
		})
		s := Session{ID: key, Items: make([]int64, len(evs)), StartMs: evs[0].ts, EndMs: evs[len(evs)-1].ts}
		allViews := true
		for i, e := range evs {
			s.Items[i] = e.item
			allViews = allViews && e.typ == event.View
		}
		if !allViews {
			s.Types = make([]event.Type, len(evs))
			for i, e := range evs {
				s.Types[i] = e.typ
			}
		}
		out = append(out, s)
	}
	slices.SortStableFunc(out, func(a, b Session) int { return cmpInt64(a.StartMs, b.StartMs) })
	inv, dup := st.Invalid, st.Duplicate
	st = StatsOf(out)
	st.Invalid, st.Duplicate = inv, dup
	return out, st, nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// corpus is the training data mapped to dense item indexes.
type corpus struct {
	itemIDs []int64      // index → external id, ascending
	counts  []float64    // events per item
	items   []int32      // all sessions' items, concatenated
	types   []event.Type // parallel to items; nil when all are views
	offsets []int32      // session s is items[offsets[s]:offsets[s+1]]
}

func (c *corpus) numSessions() int { return len(c.offsets) - 1 }

func (c *corpus) session(s int) ([]int32, []event.Type) {
	lo, hi := c.offsets[s], c.offsets[s+1]
	if c.types == nil {
		return c.items[lo:hi], nil
	}
	return c.items[lo:hi], c.types[lo:hi]
}

// buildVocab returns the ascending ids of the items seen at least minCount
// times in ss.
func buildVocab(ss []Session, minCount int) []int64 {
	cnt := map[int64]int{}
	for _, s := range ss {
		for _, it := range s.Items {
			cnt[it]++
		}
	}
	ids := make([]int64, 0, len(cnt))
	for id, n := range cnt {
		if n >= minCount {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// newCorpus maps ss onto the vocabulary ids (dropping unknown items and then
// empty sessions).
func newCorpus(ss []Session, ids []int64) *corpus {
	idx := make(map[int64]int32, len(ids))
	for i, id := range ids {
		idx[id] = int32(i)
	}
	c := &corpus{itemIDs: ids, counts: make([]float64, len(ids)), offsets: []int32{0}}
	hasTypes := false
	for _, s := range ss {
		if s.Types != nil {
			hasTypes = true
			break
		}
	}
	for _, s := range ss {
		n0 := len(c.items)
		for j, it := range s.Items {
			i, ok := idx[it]
			if !ok {
				continue
			}
			c.items = append(c.items, i)
			c.counts[i]++
			if hasTypes {
				t := event.View
				if s.Types != nil {
					t = s.Types[j]
				}
				c.types = append(c.types, t)
			}
		}
		if len(c.items) > n0 {
			c.offsets = append(c.offsets, int32(len(c.items)))
		}
	}
	return c
}
