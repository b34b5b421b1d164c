package gen

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// fakeClock is a Clock that sleeps by moving its time forward at once.
type fakeClock struct {
	now    time.Time
	sleeps []time.Duration
}

func (c *fakeClock) Now() time.Time { return c.now }

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	return nil
}

func (c *fakeClock) slept() (total time.Duration) {
	for _, d := range c.sleeps {
		total += d
	}
	return total
}

// fakeSink records what it is sent; each Send takes cost on the clock.
type fakeSink struct {
	clock   *fakeClock
	cost    time.Duration
	stamps  []time.Time
	sentAt  []time.Time
	flushes int
	idles   int
	failAt  int // Send number (1-based) that fails; 0 = never
	onSend  func(n int)
}

func (s *fakeSink) Send(_ context.Context, r *Record) error {
	n := len(s.stamps) + 1
	if n == s.failAt {
		return errors.New("disk full")
	}
	s.stamps = append(s.stamps, time.UnixMilli(r.Click.TimestampMs+r.Lateness.Milliseconds()))
	s.sentAt = append(s.sentAt, s.clock.now)
	s.clock.now = s.clock.now.Add(s.cost)
	if s.onSend != nil {
		s.onSend(n)
	}
	return nil
}

func (s *fakeSink) Flush(context.Context) error { s.flushes++; return nil }
func (s *fakeSink) Idle() error                 { s.idles++; return nil }

func TestConstantRate(t *testing.T) {
	if ConstantRate(0) != nil || ConstantRate(-5) != nil {
		t.Fatal("rate 0 must mean no schedule")
	}
	for _, tt := range []struct {
		rate float64
		i    int64
		want time.Duration
	}{
		{1000, 0, 0},
		{1000, 1, time.Millisecond},
		{1000, 999, 999 * time.Millisecond},
		{1000, 3_600_000, time.Hour},
		{3, 1, 333_333_333},
		{3, 3, time.Second},
		{0.5, 2, 4 * time.Second},
		{250_000, 1_000_000_000, 4000 * time.Second},
	} {
		if got := ConstantRate(tt.rate)(tt.i); got != tt.want {
			t.Errorf("ConstantRate(%v)(%d) = %v, want %v", tt.rate, tt.i, got, tt.want)
		}
	}
}

func TestPacerWait(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: t0}
	p := NewPacer(clock, t0, ConstantRate(100))
	wait := func(i int64, want time.Time, wantSleep time.Duration) {
		t.Helper()
		clock.sleeps = nil
		got, err := p.Wait(ctx, i)
		if err != nil || !got.Equal(want) || clock.slept() != wantSleep {
			t.Fatalf("Wait(%d) = %v, %v after sleeping %v; want %v after %v", i, got.Sub(t0), err, clock.slept(), want.Sub(t0), wantSleep)
		}
	}
	wait(0, t0, 0)
	wait(1, t0.Add(10*time.Millisecond), 10*time.Millisecond)
	clock.now = clock.now.Add(time.Second)  // the sink took a second
	wait(2, t0.Add(20*time.Millisecond), 0) // overdue: no waiting, stamped on schedule
	wait(100, t0.Add(time.Second), 0)
	wait(150, t0.Add(1500*time.Millisecond), 490*time.Millisecond)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := p.Wait(cctx, 1000); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a cancelled context: %v", err)
	}

	clock.now = t0.Add(time.Hour)
	fast := NewPacer(clock, t0, nil)
	if got, err := fast.Wait(ctx, 12345); err != nil || !got.Equal(clock.now) {
		t.Fatalf("unpaced Wait = %v, %v; want the clock's time", got, err)
	}
}

func run(t *testing.T, ctx context.Context, clock *fakeClock, sink *fakeSink, src Source, sched Schedule, cfg RunConfig) Stats {
	t.Helper()
	cfg.Source, cfg.Sink = src, sink
	cfg.Pacer = NewPacer(clock, clock.now, sched)
	st, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func cleanShop(t *testing.T) *Synthetic {
	return newSynthetic(t, Config{Seed: 1, Users: 1000, Items: 100, Categories: 5})
}

// TestRunOpenModel: a sink slower than the rate delays the sends but not the
// schedule: every event keeps its intended time and the lag grows.
func TestRunOpenModel(t *testing.T) {
	clock := &fakeClock{now: t0}
	sink := &fakeSink{clock: clock, cost: 25 * time.Millisecond} // 40/s
	st := run(t, context.Background(), clock, sink, cleanShop(t), ConstantRate(100), RunConfig{Count: 100})
	if st.Sent != 100 || len(sink.stamps) != 100 {
		t.Fatalf("sent %d", st.Sent)
	}
	for i, at := range sink.stamps {
		if want := t0.Add(time.Duration(i) * 10 * time.Millisecond); !at.Equal(want) {
			t.Fatalf("event %d stamped %v, want its intended time %v", i, at.Sub(t0), want.Sub(t0))
		}
		if want := t0.Add(time.Duration(i) * 25 * time.Millisecond); !sink.sentAt[i].Equal(want) {
			t.Fatalf("event %d sent at %v, want %v", i, sink.sentAt[i].Sub(t0), want.Sub(t0))
		}
	}
	if len(clock.sleeps) != 0 {
		t.Fatalf("the pacer slept %v while behind schedule", clock.sleeps)
	}
	if want := 99 * 15 * time.Millisecond; st.MaxBehind != want {
		t.Fatalf("max behind %v, want %v", st.MaxBehind, want)
	}
	if sink.flushes != 1 {
		t.Fatalf("%d flushes, want 1 at the end", sink.flushes)
	}
}

// TestRunOnSchedule: a fast sink lets the pacer sleep until each event is due.
func TestRunOnSchedule(t *testing.T) {
	clock := &fakeClock{now: t0}
	sink := &fakeSink{clock: clock, cost: 2 * time.Millisecond}
	st := run(t, context.Background(), clock, sink, cleanShop(t), ConstantRate(50), RunConfig{Duration: time.Second})
	if st.Sent != 50 {
		t.Fatalf("sent %d in a 1 s run at 50/s, want 50", st.Sent)
	}
	for i, at := range sink.sentAt {
		if want := t0.Add(time.Duration(i) * 20 * time.Millisecond); !at.Equal(want) || !sink.stamps[i].Equal(want) {
			t.Fatalf("event %d sent at %v stamped %v, want both %v", i, at.Sub(t0), sink.stamps[i].Sub(t0), want.Sub(t0))
		}
	}
	if len(clock.sleeps) != 49 || clock.sleeps[0] != 18*time.Millisecond || st.MaxBehind != 0 {
		t.Fatalf("sleeps %v, max behind %v", clock.sleeps, st.MaxBehind)
	}
	// Idle is called before sleeping, at most every 100 ms of sending.
	if sink.idles < 8 || sink.idles > 11 {
		t.Fatalf("Idle called %d times in 1 s", sink.idles)
	}
}

func TestRunUnpaced(t *testing.T) {
	clock := &fakeClock{now: t0}
	sink := &fakeSink{clock: clock, cost: time.Millisecond}
	st := run(t, context.Background(), clock, sink, cleanShop(t), nil, RunConfig{Duration: 50 * time.Millisecond, Count: 1000})
	if st.Sent != 50 || len(clock.sleeps) != 0 {
		t.Fatalf("sent %d with sleeps %v; want 50, none", st.Sent, clock.sleeps)
	}
	for i, at := range sink.stamps {
		if !at.Equal(sink.sentAt[i]) {
			t.Fatalf("unpaced event %d stamped %v, sent at %v", i, at, sink.sentAt[i])
		}
	}
}

// TestRunReplaySchedule: a replay is sent at its compressed original times and
// stops at its end.
func TestRunReplaySchedule(t *testing.T) {
	tb, err := ReadTaobao(strings.NewReader("1,2,3,pv,1000\n1,2,3,pv,1060\n2,2,3,cart,1120\n1,2,3,buy,4600\n"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewReplay(tb, ReplayConfig{Speedup: 60})
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: t0}
	sink := &fakeSink{clock: clock}
	st := run(t, context.Background(), clock, sink, p, p.Schedule(), RunConfig{})
	want := []time.Duration{0, time.Second, 2 * time.Second, time.Minute}
	if st.Sent != 4 {
		t.Fatalf("sent %d, want 4", st.Sent)
	}
	for i, at := range sink.stamps {
		if at.Sub(t0) != want[i] {
			t.Fatalf("row %d stamped %v, want %v", i, at.Sub(t0), want[i])
		}
	}
}

func TestRunProgress(t *testing.T) {
	var logs bytes.Buffer
	clock := &fakeClock{now: t0}
	sink := &fakeSink{clock: clock, cost: time.Second}
	st := run(t, context.Background(), clock, sink, cleanShop(t), nil, RunConfig{
		Count: 21, ProgressEvery: 5 * time.Second,
		Log: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	out := logs.String()
	if n := strings.Count(out, "msg=\"gen progress\""); n != 4 || st.Sent != 21 {
		t.Fatalf("%d progress lines for 21 s of sending:\n%s", n, out)
	}
	if !strings.Contains(out, "sent=6 rate=1/s") || !strings.Contains(out, "msg=\"gen done\" sent=21") {
		t.Fatalf("progress lines lack sent and rate:\n%s", out)
	}
}

func TestRunStops(t *testing.T) {
	t.Run("context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		clock := &fakeClock{now: t0}
		sink := &fakeSink{clock: clock, onSend: func(n int) {
			if n == 10 {
				cancel()
			}
		}}
		st := run(t, ctx, clock, sink, cleanShop(t), ConstantRate(1), RunConfig{})
		if st.Sent != 10 || sink.flushes != 1 {
			t.Fatalf("after cancel: sent %d, flushed %d times; want 10, 1", st.Sent, sink.flushes)
		}
	})
	t.Run("sink error", func(t *testing.T) {
		clock := &fakeClock{now: t0}
		sink := &fakeSink{clock: clock, failAt: 5}
		_, err := Run(context.Background(), RunConfig{Source: cleanShop(t), Sink: sink, Pacer: NewPacer(clock, t0, nil)})
		if err == nil || !strings.Contains(err.Error(), "disk full") || sink.flushes != 1 {
			t.Fatalf("error %v after %d flushes; want disk full, flushed once", err, sink.flushes)
		}
	})
}

func TestLineSink(t *testing.T) {
	var out bytes.Buffer
	s := NewLineSink(&out)
	for _, v := range []string{`{"a":1}`, "{\"a\":\"x\ny\"}", "bad\r\njson\n"} {
		if err := s.Send(context.Background(), &Record{Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
	}
	if out.Len() != 0 {
		t.Fatal("LineSink wrote before Flush")
	}
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := `{"a":1}` + "\n" + `{"a":"x\ny"}` + "\n" + `bad\r\njson\n` + "\n"
	if out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
}
