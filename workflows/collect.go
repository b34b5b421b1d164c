package workflows

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.temporal.io/sdk/activity"

	"github.com/clickrec/clickrec/event"
	"github.com/clickrec/clickrec/internal/kafkautil"
)

// CollectInput names the version whose training window to collect.
type CollectInput struct {
	Version string `json:"version"`
	Window  Window `json:"window"`
}

// CollectOutput describes the collected window.
type CollectOutput struct {
	Dir         string `json:"dir"`
	EventsFile  string `json:"events_file"`
	WindowsFile string `json:"windows_file"`
	Window      Window `json:"window"`
	Events      int    `json:"events"`
	Invalid     int    `json:"invalid"` // records of user_events that are not valid clicks (left out)
	Windows     int    `json:"windows"` // user_session_windows records
	// Incomplete counts partitions whose read stopped short of the window's
	// end (see readRanges); 0 normally.
	Incomplete int `json:"incomplete,omitempty"`
}

// collectProgress is CollectWindow's heartbeat: where to resume and how
// long each file was when those offsets were reached.
type collectProgress struct {
	Next    offsets[int64]   `json:"next"`
	Sizes   map[string]int64 `json:"sizes"`
	Events  int              `json:"events"`
	Invalid int              `json:"invalid"`
	Windows int              `json:"windows"`
}

// CollectWindow reads the training window from Kafka — user_events (valid
// clicks only) and user_session_windows, read_committed, by timestamp
// offsets, keeping the records whose timestamps are in the window — into events.jsonl and windows.jsonl in the version's work
// directory. It heartbeats its offsets and file sizes; a retry truncates the
// files to the sizes of the last heartbeat and resumes from its offsets, and
// a retry after completion returns the finished result.
func (a *Activities) CollectWindow(ctx context.Context, in CollectInput) (*CollectOutput, error) {
	if in.Window.ToMs <= in.Window.FromMs {
		return nil, badInput("window %v is empty", in.Window)
	}
	dir, err := a.versionDir(in.Version)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create the work directory: %w", err)
	}
	if done, err := readCollected(dir, in.Window); err != nil || done != nil {
		return done, err
	}
	prog := resumedProgress(ctx)
	topics := a.topics()
	ranges, err := a.windowRanges(ctx, in.Window, topics, prog.Next)
	if err != nil {
		return nil, err
	}
	col, err := openCollector(ctx, dir, topics, prog)
	if err != nil {
		return nil, err
	}
	defer col.close()
	incomplete, err := readRanges(ctx, &a.Kafka, "clickrec-workflows-collect", ranges, in.Window, a.readIdle(), col.write, col.heartbeat)
	if err == nil {
		err = col.beatErr
	}
	if err != nil {
		return nil, err
	}
	if err := col.finish(); err != nil {
		return nil, err
	}
	out := CollectOutput{
		Dir: dir, EventsFile: filepath.Join(dir, fileEvents), WindowsFile: filepath.Join(dir, fileWindows), Window: in.Window,
		Events: col.prog.Events, Invalid: col.prog.Invalid, Windows: col.prog.Windows, Incomplete: incomplete,
	}
	if incomplete > 0 {
		activity.GetLogger(ctx).Warn("some partitions stopped short of the window's end (aborted transactions at their tail)", "partitions", incomplete)
	}
	if err := writeJSON(filepath.Join(dir, fileCollected), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// readCollected returns the result of an earlier attempt that completed
// the same window in dir, or nil.
func readCollected(dir string, w Window) (*CollectOutput, error) {
	var out CollectOutput
	if ok, err := readJSON(filepath.Join(dir, fileCollected), &out); err != nil || !ok || out.Window != w {
		return nil, err
	}
	return &out, nil
}

// resumedProgress is the progress of the last heartbeat of an earlier
// attempt; zero for a fresh start or details that do not decode.
func resumedProgress(ctx context.Context) collectProgress {
	var prog collectProgress
	if activity.HasHeartbeatDetails(ctx) {
		if err := activity.GetHeartbeatDetails(ctx, &prog); err != nil {
			prog = collectProgress{}
		}
	}
	return prog
}

// windowRanges finds the offsets of the window (widened by the timestamp
// slack) in both topics, each partition starting no earlier than next, the
// offsets an earlier attempt had reached.
func (a *Activities) windowRanges(ctx context.Context, w Window, topics kafkautil.Topics, next offsets[int64]) (offsets[offsetRange], error) {
	adm, err := kgo.NewClient(a.Kafka.Opts("clickrec-workflows-admin")...)
	if err != nil {
		return nil, fmt.Errorf("cannot create the Kafka client: %w", err)
	}
	ranges, err := timeRanges(ctx, kadm.NewClient(adm), w, a.slack(), string(topics.Events), string(topics.Windows))
	adm.Close()
	if err != nil {
		return nil, err
	}
	for t, ps := range next {
		for p, n := range ps {
			if r, ok := ranges[t][p]; ok && n > r.Start {
				r.Start = n
				ranges[t][p] = r
			}
		}
	}
	return ranges, nil
}

// collector writes the records of one CollectWindow attempt to the window's
// files, buffered, and keeps the progress its heartbeats carry.
type collector struct {
	ctx               context.Context
	evTopic, winTopic string
	files             map[string]*os.File
	writers           map[string]*bufio.Writer
	prog              collectProgress
	click             event.Click
	lim               event.Limits
	line              []byte
	lastBeat          time.Time
	// beatErr is the first error of a heartbeat's flush; the read ends
	// with it.
	beatErr error
}

// openCollector opens the window's files in dir, truncated to the sizes of
// prog (an earlier attempt's last heartbeat; 0 for a fresh start) and
// positioned at their ends.
func openCollector(ctx context.Context, dir string, topics kafkautil.Topics, prog collectProgress) (*collector, error) {
	c := &collector{
		ctx: ctx, evTopic: string(topics.Events), winTopic: string(topics.Windows),
		files: map[string]*os.File{}, writers: map[string]*bufio.Writer{},
		prog: prog, lim: event.DefaultLimits,
	}
	c.lim.MaxFutureSkew = 0 // historical data: no "now"
	for _, name := range []string{fileEvents, fileWindows} {
		if err := c.open(dir, name); err != nil {
			c.close()
			return nil, err
		}
	}
	c.lastBeat = time.Now()
	return c, nil
}

// open opens one file of the window, truncated to its size in c.prog.
func (c *collector) open(dir, name string) error {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("cannot open %s: %w", name, err)
	}
	c.files[name] = f
	size := c.prog.Sizes[name] // 0 for a fresh start
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("cannot truncate %s to %d bytes: %w", name, size, err)
	}
	if _, err := f.Seek(size, io.SeekStart); err != nil {
		return fmt.Errorf("cannot seek in %s: %w", name, err)
	}
	c.writers[name] = bufio.NewWriterSize(f, 1<<16)
	return nil
}

// write appends a record to its file: a user_events record as the click's
// JSON line if it is a valid click (else it counts as invalid), a
// user_session_windows record as it is if it is JSON.
func (c *collector) write(r *kgo.Record) error {
	var err error
	switch r.Topic {
	case c.evTopic:
		if event.DecodeInto(&c.click, r.Value, time.Time{}, c.lim) != nil || c.click.CheckKey(r.Key) != nil {
			c.prog.Invalid++
			return nil
		}
		c.line = append(c.click.AppendJSON(c.line[:0]), '\n')
		_, err = c.writers[fileEvents].Write(c.line)
		c.prog.Events++
	case c.winTopic:
		if !json.Valid(r.Value) {
			return nil
		}
		c.line = append(append(c.line[:0], r.Value...), '\n')
		_, err = c.writers[fileWindows].Write(c.line)
		c.prog.Windows++
	}
	return err
}

// heartbeat is readRanges' progress callback: at most every heartbeatEvery
// it flushes the files and heartbeats the next offsets with the file sizes
// they go with. After an error (in beatErr) it does nothing.
func (c *collector) heartbeat(next offsets[int64]) {
	if time.Since(c.lastBeat) < heartbeatEvery || c.beatErr != nil {
		return
	}
	c.lastBeat = time.Now()
	if c.beatErr = c.flush(); c.beatErr != nil {
		return
	}
	c.prog.Sizes = map[string]int64{}
	for name, f := range c.files {
		st, err := f.Stat()
		if err != nil {
			c.beatErr = fmt.Errorf("cannot stat %s: %w", name, err)
			return
		}
		c.prog.Sizes[name] = st.Size()
	}
	c.prog.Next = offsets[int64]{}
	for t, ps := range next {
		for p, o := range ps {
			c.prog.Next.set(t, p, o)
		}
	}
	activity.RecordHeartbeat(c.ctx, c.prog)
}

// flush writes the buffered lines to the files.
func (c *collector) flush() error {
	for name, w := range c.writers {
		if err := w.Flush(); err != nil {
			return fmt.Errorf("cannot write %s: %w", name, err)
		}
	}
	return nil
}

// finish flushes the files and syncs them to disk.
func (c *collector) finish() error {
	if err := c.flush(); err != nil {
		return err
	}
	for name, f := range c.files {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("cannot sync %s: %w", name, err)
		}
	}
	return nil
}

// close closes the files.
func (c *collector) close() {
	for _, f := range c.files {
		f.Close()
	}
}
