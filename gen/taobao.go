package gen

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/clickrec/clickrec/event"
)

// DefaultTaobaoFile is the Taobao time slice, relative to the repository root.
const DefaultTaobaoFile = "data/taobao/UserBehavior.time-slice.csv.gz" // scripts/data.sh puts it there

// TaobaoSessionGap is the inactivity that starts a new session of a Taobao
// user: a click more than 30 minutes after the user's previous one.
const TaobaoSessionGap = 30 * time.Minute

// Taobao is a Taobao UserBehavior data set (Alibaba Tianchi 649) held in
// memory in time order: rows user_id,item_id,category_id,behavior,unix_ts with
// behavior pv, cart, fav or buy. Behaviours map to event types as
//
//	pv → view, cart → cart, fav → cart, buy → purchase.
//
// Our schema has no favourite. A favourite (wishlist) is, like a cart, a
// deliberate "I want this" between browsing and buying, and recommenders built
// on this data set commonly weigh it like a cart; as a view it would lose that
// intent, and dropping it would cut 3% of the events out of the user sequences.
//
// Rows are kept compactly (32 bytes each), so the whole file must fit in memory:
// fine for the shared samples (10k and 96k rows), not for the full 100M-row set.
type Taobao struct {
	rows  []tbRow
	users []string // user index → user_id
	cats  []string // category index → category_id
	// Stats describes what was read.
	Stats TaobaoStats
}

type tbRow struct {
	ts   int64 // unix seconds
	item int64
	user int32
	cat  int32
	sess int32 // the user's session number, from 1
	typ  event.Type
}

// TaobaoStats counts what ReadTaobao read.
type TaobaoStats struct {
	Rows                   int // complete rows kept
	Users, Items, Cats     int // distinct values
	PV, Cart, Fav, Buy     int // rows by behaviour
	Sessions               int // sessions, by TaobaoSessionGap
	First, Last            time.Time
	Sorted                 bool // the input was already in time order
	DroppedTruncated       bool // the last line had no line break and was dropped
	SkippedHeader, Gzipped bool
}

// OpenTaobao reads a Taobao UserBehavior CSV file, gzip-compressed or plain.
func OpenTaobao(path string) (*Taobao, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot open Taobao data: %w", err)
	}
	defer f.Close()
	t, err := ReadTaobao(f)
	if err != nil {
		return nil, fmt.Errorf("cannot read Taobao data %q: %w", path, err)
	}
	return t, nil
}

// ReadTaobao reads a Taobao UserBehavior CSV (no header; a header line is
// skipped if present), gzip-compressed or plain, detected by its magic bytes.
// A last line without a line break is taken to be cut off and dropped: the
// published time slice ends in "301780,543546,4181361,pv,15". Rows are sorted
// by time (stably, so equal timestamps keep file order) if they are not
// already, and sessions are numbered per user by TaobaoSessionGap. A malformed
// row is an error naming its line.
func ReadTaobao(r io.Reader) (*Taobao, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	t := &Taobao{}
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("cannot read gzip header: %w", err)
		}
		defer zr.Close()
		br = bufio.NewReaderSize(zr, 64<<10)
		t.Stats.Gzipped = true
	}
	userIdx := map[int64]int32{}
	catIdx := map[int64]int32{}
	items := map[int64]struct{}{}
	sorted := true
	for line := 1; ; line++ {
		b, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("line %d: longer than %d bytes", line, br.Size())
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if errors.Is(err, io.EOF) {
			if len(bytes.TrimSpace(b)) > 0 {
				t.Stats.DroppedTruncated = true
			}
			break
		}
		b = bytes.TrimRight(b, "\r\n")
		if len(b) == 0 {
			continue
		}
		if line == 1 && (b[0] < '0' || b[0] > '9') {
			t.Stats.SkippedHeader = true
			continue
		}
		var f [5][]byte
		rest := b
		for i := range 4 {
			j := bytes.IndexByte(rest, ',')
			if j < 0 {
				return nil, fmt.Errorf("line %d: %q has %d fields, want 5 (user_id,item_id,category_id,behavior,timestamp)", line, b, i+1)
			}
			f[i], rest = rest[:j], rest[j+1:]
		}
		f[4] = rest
		var n [5]int64
		for i, name := range [...]string{0: "user_id", 1: "item_id", 2: "category_id", 4: "timestamp"} {
			if name == "" {
				continue
			}
			v, ok := parseID(f[i])
			if !ok {
				return nil, fmt.Errorf("line %d: %s %q is not a positive integer", line, name, f[i])
			}
			n[i] = v
		}
		row := tbRow{ts: n[4], item: n[1]}
		switch string(f[3]) {
		case "pv":
			row.typ = event.View
			t.Stats.PV++
		case "cart":
			row.typ = event.Cart
			t.Stats.Cart++
		case "fav":
			row.typ = event.Cart
			t.Stats.Fav++
		case "buy":
			row.typ = event.Purchase
			t.Stats.Buy++
		default:
			return nil, fmt.Errorf("line %d: behavior %q is not one of pv, cart, fav, buy", line, f[3])
		}
		row.user = intern(userIdx, &t.users, n[0])
		row.cat = intern(catIdx, &t.cats, n[2])
		items[n[1]] = struct{}{}
		if k := len(t.rows); k > 0 && row.ts < t.rows[k-1].ts {
			sorted = false
		}
		t.rows = append(t.rows, row)
	}
	if !sorted {
		slices.SortStableFunc(t.rows, func(a, b tbRow) int { return cmp.Compare(a.ts, b.ts) })
	}
	last := make([]int64, len(t.users))
	sess := make([]int32, len(t.users))
	gap := int64(TaobaoSessionGap / time.Second)
	for i := range t.rows {
		row := &t.rows[i]
		if sess[row.user] == 0 || row.ts-last[row.user] > gap {
			sess[row.user]++
			t.Stats.Sessions++
		}
		last[row.user] = row.ts
		row.sess = sess[row.user]
	}
	t.Stats.Rows = len(t.rows)
	t.Stats.Users, t.Stats.Items, t.Stats.Cats = len(t.users), len(items), len(t.cats)
	t.Stats.Sorted = sorted
	if len(t.rows) > 0 {
		t.Stats.First = time.Unix(t.rows[0].ts, 0).UTC()
		t.Stats.Last = time.Unix(t.rows[len(t.rows)-1].ts, 0).UTC()
	}
	return t, nil
}

// Len returns the number of rows.
func (t *Taobao) Len() int { return len(t.rows) }

// Span returns the time between the first and the last row.
func (t *Taobao) Span() time.Duration { return t.Stats.Last.Sub(t.Stats.First) }

func parseID(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, v > 0
}

func intern(idx map[int64]int32, names *[]string, v int64) int32 {
	i, ok := idx[v]
	if !ok {
		i = int32(len(*names))
		idx[v] = i
		*names = append(*names, strconv.FormatInt(v, 10))
	}
	return i
}

// ReplayConfig says how to replay a Taobao data set.
type ReplayConfig struct {
	// Speedup compresses time: row i is due (ts_i − ts_0)/Speedup after the
	// start. 60 plays the 1.92-hour time slice in under 2 minutes, at about
	// 830 events/s. 0 means no schedule (as fast as possible).
	Speedup      float64
	Seed         uint64  // seeds the late and invalid records
	LateShare    float64 // as in Config
	InvalidShare float64 // as in Config
}

// Replay plays a Taobao data set as a Source: user_id and category are the
// data set's ids, item_id its item id, session_id "<user_id>-<n>" with n the
// user's session by TaobaoSessionGap, event_id "tb-<row>", and the price a
// stable pseudo-price of the item (the data has none). The event time is the
// time passed to Next; a pacer on Offset passes the rebased, compressed
// original time, start + (ts − ts_0)/Speedup.
type Replay struct {
	t      *Taobao
	cfg    ReplayConfig
	i      int
	buf    []byte
	faults faults
}

// NewReplay returns a replay of t.
func NewReplay(t *Taobao, cfg ReplayConfig) (*Replay, error) {
	if cfg.Speedup < 0 || math.IsNaN(cfg.Speedup) || math.IsInf(cfg.Speedup, 0) {
		return nil, fmt.Errorf("replay speedup must be a non-negative number, got %v", cfg.Speedup)
	}
	if err := validShares(cfg.LateShare, cfg.InvalidShare); err != nil {
		return nil, err
	}
	return &Replay{t: t, cfg: cfg, faults: newFaults(cfg.LateShare, cfg.InvalidShare, cfg.Seed)}, nil
}

// Len returns the number of records the replay produces.
func (p *Replay) Len() int { return len(p.t.rows) }

// Offset returns when record i is due after the start: (ts_i − ts_0)/Speedup.
// Past the end it returns the last record's offset. With Speedup 0 it returns 0.
func (p *Replay) Offset(i int64) time.Duration {
	if p.cfg.Speedup == 0 || len(p.t.rows) == 0 {
		return 0
	}
	i = min(max(i, 0), int64(len(p.t.rows)-1))
	sec := p.t.rows[i].ts - p.t.rows[0].ts
	return time.Duration(float64(sec) * float64(time.Second) / p.cfg.Speedup)
}

// Schedule returns Offset as a Schedule, or nil (as fast as possible) when
// Speedup is 0.
func (p *Replay) Schedule() Schedule {
	if p.cfg.Speedup == 0 {
		return nil
	}
	return p.Offset
}

// Next fills r with the next row at event time now (see Source); it reports
// false after the last row.
func (p *Replay) Next(r *Record, now time.Time) bool {
	if p.i >= len(p.t.rows) {
		return false
	}
	row := &p.t.rows[p.i]
	c := &r.Click
	c.UserID = p.t.users[row.user]
	c.Category = p.t.cats[row.cat]
	c.ItemID, c.Type, c.Price = row.item, row.typ, itemPrice(row.item)
	p.buf = append(append(p.buf[:0], c.UserID...), '-')
	p.buf = strconv.AppendInt(p.buf, int64(row.sess), 10)
	c.SessionID = string(p.buf)
	p.buf = strconv.AppendInt(append(p.buf[:0], "tb-"...), int64(p.i), 10)
	c.EventID = string(p.buf)
	r.Seq = int64(p.i)
	p.i++
	p.faults.finish(r, now.UnixMilli())
	return true
}

// itemPrice is a stable log-normal pseudo-price of an item (median 20, in cents).
func itemPrice(item int64) float64 {
	h1 := splitmix(uint64(item))
	h2 := splitmix(h1)
	u1 := (float64(h1>>11) + 0.5) / (1 << 53)
	u2 := float64(h2>>11) / (1 << 53)
	z := math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
	return max(0.5, math.Round(20*math.Exp(0.9*z)*100)/100)
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}
