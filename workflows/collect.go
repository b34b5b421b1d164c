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
	var out CollectOutput
	if ok, err := readJSON(filepath.Join(dir, fileCollected), &out); err != nil {
		return nil, err
	} else if ok && out.Window == in.Window {
		return &out, nil
	}
	out = CollectOutput{Dir: dir, EventsFile: filepath.Join(dir, fileEvents), WindowsFile: filepath.Join(dir, fileWindows), Window: in.Window}

	var prog collectProgress
	if activity.HasHeartbeatDetails(ctx) {
		if err := activity.GetHeartbeatDetails(ctx, &prog); err != nil {
			prog = collectProgress{}
		}
	}
	topics := a.topics()
	evTopic, winTopic := string(topics.Events), string(topics.Windows)

	adm, err := kgo.NewClient(a.Kafka.Opts("clickrec-workflows-admin")...)
	if err != nil {
		return nil, fmt.Errorf("cannot create the Kafka client: %w", err)
	}
	ranges, err := timeRanges(ctx, kadm.NewClient(adm), in.Window, a.slack(), evTopic, winTopic)
	adm.Close()
	if err != nil {
		return nil, err
	}
	for t, ps := range prog.Next {
		for p, next := range ps {
			if r, ok := ranges[t][p]; ok && next > r.Start {
				r.Start = next
				ranges[t][p] = r
			}
		}
	}

	files := map[string]*os.File{}
	writers := map[string]*bufio.Writer{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, name := range []string{fileEvents, fileWindows} {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("cannot open %s: %w", name, err)
		}
		files[name] = f
		size := prog.Sizes[name] // 0 for a fresh start
		if err := f.Truncate(size); err != nil {
			return nil, fmt.Errorf("cannot truncate %s to %d bytes: %w", name, size, err)
		}
		if _, err := f.Seek(size, io.SeekStart); err != nil {
			return nil, fmt.Errorf("cannot seek in %s: %w", name, err)
		}
		writers[name] = bufio.NewWriterSize(f, 1<<16)
	}
	flush := func() error {
		for name, w := range writers {
			if err := w.Flush(); err != nil {
				return fmt.Errorf("cannot write %s: %w", name, err)
			}
		}
		return nil
	}

	var (
		c    event.Click
		lim  = event.DefaultLimits
		line []byte
	)
	lim.MaxFutureSkew = 0 // historical data: no "now"
	fn := func(r *kgo.Record) error {
		var err error
		switch r.Topic {
		case evTopic:
			if event.DecodeInto(&c, r.Value, time.Time{}, lim) != nil || c.CheckKey(r.Key) != nil {
				prog.Invalid++
				return nil
			}
			line = append(c.AppendJSON(line[:0]), '\n')
			_, err = writers[fileEvents].Write(line)
			prog.Events++
		case winTopic:
			if !json.Valid(r.Value) {
				return nil
			}
			line = append(append(line[:0], r.Value...), '\n')
			_, err = writers[fileWindows].Write(line)
			prog.Windows++
		}
		return err
	}
	last := time.Now()
	var progErr error
	progress := func(next offsets[int64]) {
		if time.Since(last) < heartbeatEvery || progErr != nil {
			return
		}
		last = time.Now()
		if progErr = flush(); progErr != nil {
			return
		}
		prog.Sizes = map[string]int64{}
		for name, f := range files {
			st, err := f.Stat()
			if err != nil {
				progErr = fmt.Errorf("cannot stat %s: %w", name, err)
				return
			}
			prog.Sizes[name] = st.Size()
		}
		prog.Next = offsets[int64]{}
		for t, ps := range next {
			for p, o := range ps {
				prog.Next.set(t, p, o)
			}
		}
		activity.RecordHeartbeat(ctx, prog)
	}
	incomplete, err := readRanges(ctx, &a.Kafka, "clickrec-workflows-collect", ranges, in.Window, a.readIdle(), fn, progress)
	if err == nil {
		err = progErr
	}
	if err != nil {
		return nil, err
	}
	if err := flush(); err != nil {
		return nil, err
	}
	for name, f := range files {
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("cannot sync %s: %w", name, err)
		}
	}
	out.Events, out.Invalid, out.Windows, out.Incomplete = prog.Events, prog.Invalid, prog.Windows, incomplete
	if incomplete > 0 {
		activity.GetLogger(ctx).Warn("some partitions stopped short of the window's end (aborted transactions at their tail)", "partitions", incomplete)
	}
	if err := writeJSON(filepath.Join(dir, fileCollected), &out); err != nil {
		return nil, err
	}
	return &out, nil
}
