package gen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Clock is the time source of a Pacer. Tests inject a fake one.
type Clock interface {
	Now() time.Time
	// Sleep blocks for d or until ctx is done, and then returns ctx.Err().
	Sleep(ctx context.Context, d time.Duration) error
}

// SystemClock is the wall clock. Its zero value is ready; it reuses one timer,
// so it must not be shared between goroutines.
type SystemClock struct{ timer *time.Timer }

// Now returns time.Now().
func (*SystemClock) Now() time.Time { return time.Now() }

// Sleep waits for d or until ctx is done.
func (c *SystemClock) Sleep(ctx context.Context, d time.Duration) error {
	if c.timer == nil {
		c.timer = time.NewTimer(d)
	} else {
		c.timer.Reset(d) // since Go 1.23 a stopped or fired timer needs no draining
	}
	select {
	case <-c.timer.C:
		return nil
	case <-ctx.Done():
		c.timer.Stop()
		return ctx.Err()
	}
}

// Schedule gives the intended send time of event i as an offset from the start.
// It must not decrease with i. A nil Schedule means no schedule: send as fast as
// possible.
type Schedule func(i int64) time.Duration

// ConstantRate is the open-model schedule of rate events per second: event i is
// due at i/rate. A rate of 0 (or less) returns nil, as fast as possible.
func ConstantRate(rate float64) Schedule {
	if !(rate > 0) {
		return nil
	}
	nsPerEvent := float64(time.Second) / rate
	return func(i int64) time.Duration { return time.Duration(float64(i) * nsPerEvent) }
}

// Pacer releases events on an open-model schedule: event i is due at start +
// schedule(i) no matter how long earlier sends took. An event that is already
// overdue is released at once, so a slow sink shows up as lag (and, with
// event time = intended time, as end-to-end latency) instead of as a lower rate.
type Pacer struct {
	clock    Clock
	start    time.Time
	schedule Schedule
}

// NewPacer returns a pacer that starts at start. A nil schedule releases every
// event at once and stamps it with the clock's time.
func NewPacer(clock Clock, start time.Time, schedule Schedule) *Pacer {
	return &Pacer{clock: clock, start: start, schedule: schedule}
}

// Start returns the time event 0 is due.
func (p *Pacer) Start() time.Time { return p.start }

// Due returns the intended time of event i; paced is false without a schedule.
func (p *Pacer) Due(i int64) (due time.Time, paced bool) {
	if p.schedule == nil {
		return time.Time{}, false
	}
	return p.start.Add(p.schedule(i)), true
}

// Wait blocks until event i is due and returns the time to stamp it with: its
// intended time when paced, the clock's time otherwise. It does not block for
// an overdue event. Its error is ctx.Err() if ctx ended first.
func (p *Pacer) Wait(ctx context.Context, i int64) (time.Time, error) {
	due, paced := p.Due(i)
	if !paced {
		return p.clock.Now(), ctx.Err()
	}
	if d := due.Sub(p.clock.Now()); d > 0 {
		if err := p.clock.Sleep(ctx, d); err != nil {
			return due, err
		}
	}
	return due, ctx.Err()
}

// Sink receives records. Send must not keep r or its buffers after it returns;
// it may block (a bounded buffer is full), which delays later sends but not
// their schedule. Flush delivers everything sent so far; Run calls it once, when
// it stops. A Sink's error ends Run.
type Sink interface {
	Send(ctx context.Context, r *Record) error
	Flush(ctx context.Context) error
}

// An Idler is a Sink that Run tells when it is about to wait for the schedule
// (at most every 100 ms), so that it can hand buffered records on in time.
type Idler interface {
	Idle() error
}

// LineSink writes each record's value as one line: JSON lines for valid
// records; invalid values as they are, except that line breaks are written as
// the two characters \n (or \r), so that one line is always one record.
type LineSink struct {
	w *bufio.Writer
}

// NewLineSink returns a LineSink writing to w through a buffer.
func NewLineSink(w io.Writer) *LineSink { return &LineSink{w: bufio.NewWriterSize(w, 64<<10)} }

// Send writes r.Value and a line break.
func (s *LineSink) Send(_ context.Context, r *Record) error {
	v := r.Value
	for {
		i := indexLineBreak(v)
		if i < 0 {
			break
		}
		s.w.Write(v[:i])
		if v[i] == '\n' {
			s.w.WriteString(`\n`)
		} else {
			s.w.WriteString(`\r`)
		}
		v = v[i+1:]
	}
	s.w.Write(v)
	if err := s.w.WriteByte('\n'); err != nil {
		return fmt.Errorf("cannot write record: %w", err)
	}
	return nil
}

func indexLineBreak(b []byte) int {
	for i, c := range b {
		if c == '\n' || c == '\r' {
			return i
		}
	}
	return -1
}

// Idle writes the buffered lines.
func (s *LineSink) Idle() error { return s.Flush(context.Background()) }

// Flush writes the buffered lines.
func (s *LineSink) Flush(context.Context) error {
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("cannot write records: %w", err)
	}
	return nil
}

// RunConfig is what Run needs.
type RunConfig struct {
	Source Source
	Pacer  *Pacer // its clock also times progress and the unpaced Duration
	Sink   Sink
	// Count stops after this many records (0: no limit).
	Count int64
	// Duration stops before the first record due this long after the start
	// (unpaced: once this much time has passed). 0: no limit.
	Duration time.Duration
	// Log receives progress every ProgressEvery (default 5 s) and a summary; nil discards.
	Log           *slog.Logger
	ProgressEvery time.Duration
	// FlushTimeout bounds the final Flush, which runs even when ctx has ended
	// (default 30 s).
	FlushTimeout time.Duration
}

// Stats counts what Run sent.
type Stats struct {
	Sent, Late, Invalid int64         // records sent, of which late and invalid
	Elapsed             time.Duration // from the pacer's start to the last send
	// MaxBehind is the largest delay of a send past its intended time (paced runs).
	MaxBehind time.Duration
}

// flushIdle is how often at most Run calls Idle.
const flushIdle = 100 * time.Millisecond

// Run sends records from cfg.Source to cfg.Sink on the pacer's schedule until
// Count or Duration is reached, the source is exhausted or ctx ends (a clean
// stop, not an error). It flushes the sink at the end, on a context that ctx's
// end does not cancel. Its error is the sink's.
func Run(ctx context.Context, cfg RunConfig) (Stats, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	every := cfg.ProgressEvery
	if every <= 0 {
		every = 5 * time.Second
	}
	var (
		st        Stats
		rec       Record
		clock     = cfg.Pacer.clock
		start     = cfg.Pacer.Start()
		lastFlush = clock.Now()
		nextLog   = lastFlush.Add(every)
		lastLog   = lastFlush
		lastSent  int64
		done      = ctx.Done()
		err       error
	)
	idler, _ := cfg.Sink.(Idler)
loop:
	for i := int64(0); cfg.Count == 0 || i < cfg.Count; i++ {
		select {
		case <-done:
			break loop
		default:
		}
		now := clock.Now()
		at, paced := cfg.Pacer.Due(i)
		if paced {
			if cfg.Duration > 0 && at.Sub(start) >= cfg.Duration {
				break
			}
			if wait := at.Sub(now); wait > 0 {
				if idler != nil && (now.Sub(lastFlush) >= flushIdle || wait >= flushIdle) {
					if err = idler.Idle(); err != nil {
						break
					}
					lastFlush = now
				}
				if clock.Sleep(ctx, wait) != nil {
					break
				}
				now = clock.Now()
			} else if -wait > st.MaxBehind {
				st.MaxBehind = -wait
			}
		} else {
			if cfg.Duration > 0 && now.Sub(start) >= cfg.Duration {
				break
			}
			at = now
		}
		if !cfg.Source.Next(&rec, at) {
			break
		}
		if err = cfg.Sink.Send(ctx, &rec); err != nil {
			break
		}
		st.Sent++
		switch {
		case !rec.Valid:
			st.Invalid++
		case rec.Lateness > 0:
			st.Late++
		}
		st.Elapsed = now.Sub(start)
		if !now.Before(nextLog) {
			rate := float64(st.Sent-lastSent) / now.Sub(lastLog).Seconds()
			log.Info("gen progress", "sent", st.Sent, "rate", fmt.Sprintf("%.0f/s", rate),
				"behind", max(now.Sub(at), 0).Round(time.Millisecond), "late", st.Late, "invalid", st.Invalid)
			lastLog, lastSent, nextLog = now, st.Sent, now.Add(every)
		}
	}
	ft := cfg.FlushTimeout
	if ft <= 0 {
		ft = 30 * time.Second
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ft)
	defer cancel()
	if ferr := cfg.Sink.Flush(fctx); ferr != nil {
		err = errors.Join(err, ferr)
	}
	if err != nil {
		return st, err
	}
	rate := 0.0
	if s := st.Elapsed.Seconds(); s > 0 {
		rate = float64(st.Sent) / s
	}
	log.Info("gen done", "sent", st.Sent, "rate", fmt.Sprintf("%.0f/s", rate), "late", st.Late, "invalid", st.Invalid,
		"max_behind", st.MaxBehind.Round(time.Millisecond), "elapsed", st.Elapsed.Round(time.Millisecond))
	return st, nil
}
