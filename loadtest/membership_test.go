package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clickrec/clickrec/internal/testenv"
)

func TestRollingSchedule(t *testing.T) {
	s := RollingSchedule(2, 8*time.Second, 60*time.Second)
	if len(s) != 7 {
		t.Fatalf("%d restarts in 60 s every 8 s, want 7: %+v", len(s), s)
	}
	for k, c := range s {
		if c.Action != ActionRestart || c.At != time.Duration(k+1)*8*time.Second || c.Worker != k%2 {
			t.Fatalf("change %d = %+v, want a restart of worker %d at %v", k, c, k%2, time.Duration(k+1)*8*time.Second)
		}
	}
	// The short run of TestRollingOnRealKafka: each of two workers once.
	want := []Change{{4 * time.Second, ActionRestart, 0}, {8 * time.Second, ActionRestart, 1}}
	if got := RollingSchedule(2, 4*time.Second, 12*time.Second); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("2 workers, 4 s, 12 s: %+v, want %+v", got, want)
	}
	if got := RollingSchedule(3, 10*time.Second, 10*time.Second); len(got) != 0 {
		t.Fatalf("no restart fits in the run, got %+v", got)
	}
}

func TestScaleSchedule(t *testing.T) {
	for _, tc := range []struct {
		from, to int
		d        time.Duration
		want     []Change
	}{
		{1, 3, 60 * time.Second, []Change{
			{15 * time.Second, ActionStart, 1}, {30 * time.Second, ActionStart, 2},
			{45 * time.Second, ActionStop, 2}, {55 * time.Second, ActionStop, 1}, // 5 s before the end
		}},
		{1, 3, 20 * time.Second, []Change{
			{5 * time.Second, ActionStart, 1}, {10 * time.Second, ActionStart, 2},
			{15 * time.Second, ActionStop, 2}, {17500 * time.Millisecond, ActionStop, 1}, // 7/8: under 40 s
		}},
		{2, 3, 60 * time.Second, []Change{{30 * time.Second, ActionStart, 2}, {55 * time.Second, ActionStop, 2}}},
		{3, 3, 60 * time.Second, nil},
	} {
		got := ScaleSchedule(tc.from, tc.to, tc.d)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%d → %d in %v: %+v, want %+v", tc.from, tc.to, tc.d, got, tc.want)
		}
	}
	// Whatever the sizes: up to `to` and back, a new worker each start, the
	// newest running one each stop, all in order within the run.
	for from := 1; from <= 3; from++ {
		for to := from + 1; to <= 6; to++ {
			d := 30 * time.Second
			running := map[int]bool{}
			for i := range from {
				running[i] = true
			}
			next, prev, peak := from, time.Duration(0), from
			for _, c := range ScaleSchedule(from, to, d) {
				if c.At <= prev || c.At >= d {
					t.Fatalf("%d → %d: change at %v after %v, want increasing within %v", from, to, c.At, prev, d)
				}
				prev = c.At
				switch c.Action {
				case ActionStart:
					if c.Worker != next || running[c.Worker] {
						t.Fatalf("%d → %d: start of worker %d, want new worker %d", from, to, c.Worker, next)
					}
					running[c.Worker] = true
					next++
					peak = max(peak, len(running))
				case ActionStop:
					newest := -1
					for i := range running {
						newest = max(newest, i)
					}
					if c.Worker != newest {
						t.Fatalf("%d → %d: stop of worker %d, want the newest, %d", from, to, c.Worker, newest)
					}
					delete(running, c.Worker)
				}
			}
			if peak != to || len(running) != from {
				t.Fatalf("%d → %d: peak %d, %d at the end", from, to, peak, len(running))
			}
		}
	}
}

// fakeFleet starts n stand-in workers (fakeWorkerMain) that need no broker.
func fakeFleet(t *testing.T, n int, mode string, stopTimeout time.Duration) *Fleet {
	t.Helper()
	f, err := StartFleet(FleetConfig{Bin: os.Args[0], Count: n, Env: []string{fakeWorkerEnv + "=" + mode},
		LogDir: t.TempDir(), Instance: "m-", StopTimeout: stopTimeout}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	if err := f.WaitReady(testenv.Context(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestRunMembershipCarriesOutTheSchedule runs both schedules, compressed,
// against stand-in worker processes: which worker is stopped and started
// when, each restart under the same instance id as a new process.
func TestRunMembershipCarriesOutTheSchedule(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("spawns processes")
	}
	t.Run("rolling", func(t *testing.T) {
		t.Parallel()
		f := fakeFleet(t, 2, "1", 5*time.Second)
		pids := []int{f.procs[0].cmd.Process.Pid, f.procs[1].cmd.Process.Pid}
		var watched []string
		ctx := testenv.Context(t, 60*time.Second)
		start := time.Now()
		ev, problems := runMembership(ctx, ctx, f, RollingSchedule(2, 300*time.Millisecond, time.Second), start, 20*time.Second,
			func(_ time.Duration, what string) { watched = append(watched, what) }, testLogger(t))
		if len(problems) != 0 || len(ev) != 3 {
			t.Fatalf("problems %v, events %+v: want 3 restarts", problems, ev)
		}
		for k, e := range ev {
			inst := fmt.Sprintf("m-w%d", k%2+1)
			if e.Action != ActionRestart || e.Instance != inst || e.Workers != 2 || e.Killed || e.Note != "" {
				t.Fatalf("event %d = %+v, want a clean restart of %s", k, e, inst)
			}
			if !(e.AtS >= e.PlannedS && math.Abs(e.PlannedS-0.3*float64(k+1)) < 1e-9 && e.StopMs > 0 && e.StartS >= e.AtS && e.ReadyS >= e.StartS && e.ReadyMs > 0) {
				t.Fatalf("event %d times %+v", k, e)
			}
			if k > 0 && e.AtS < ev[k-1].ReadyS {
				t.Fatalf("restart %d began at %.3f s before the previous one was ready (%.3f s)", k, e.AtS, ev[k-1].ReadyS)
			}
			if watched[k] != "restart of "+inst {
				t.Fatalf("watched %q", watched)
			}
		}
		if restarts, unexpected := f.Stats(); restarts != 3 || unexpected != 0 || f.Running() != 2 {
			t.Fatalf("restarts %d, unexpected exits %d, running %d", restarts, unexpected, f.Running())
		}
		for i, pid := range pids {
			if f.procs[i].cmd.Process.Pid == pid {
				t.Fatalf("worker %d still runs its first process", i)
			}
		}
		logs, _ := os.ReadFile(f.Logs()[0])
		if n := strings.Count(string(logs), "fake worker stopped"); n != 2 {
			t.Fatalf("w1 log shows %d clean stops on SIGTERM, want 2:\n%s", n, logs)
		}
	})
	t.Run("scale", func(t *testing.T) {
		t.Parallel()
		f := fakeFleet(t, 1, "1", 5*time.Second)
		ctx := testenv.Context(t, 60*time.Second)
		ev, problems := runMembership(ctx, ctx, f, ScaleSchedule(1, 3, 1600*time.Millisecond), time.Now(), 20*time.Second,
			func(time.Duration, string) {}, testLogger(t))
		if len(problems) != 0 || len(ev) != 4 {
			t.Fatalf("problems %v, events %+v", problems, ev)
		}
		want := []struct {
			action, inst string
			workers      int
		}{{ActionStart, "m-w2", 2}, {ActionStart, "m-w3", 3}, {ActionStop, "m-w3", 2}, {ActionStop, "m-w2", 1}}
		for k, w := range want {
			e := ev[k]
			if e.Action != w.action || e.Instance != w.inst || e.Workers != w.workers || e.Note != "" {
				t.Fatalf("event %d = %+v, want %s of %s leaving %d running", k, e, w.action, w.inst, w.workers)
			}
			if w.action == ActionStart && (e.StartS != e.AtS || e.ReadyS < e.StartS || e.StopMs != 0) ||
				w.action == ActionStop && (e.StopMs <= 0 || e.ReadyS != 0 || e.StartS != 0) {
				t.Fatalf("event %d times %+v", k, e)
			}
		}
		if got := f.Instances(); strings.Join(got, " ") != "m-w1 m-w2 m-w3" {
			t.Fatalf("instances %v", got)
		}
		if restarts, unexpected := f.Stats(); restarts != 0 || unexpected != 0 || f.Running() != 1 {
			t.Fatalf("restarts %d, unexpected exits %d, running %d", restarts, unexpected, f.Running())
		}
	})
	t.Run("stubborn worker is killed after the stop timeout", func(t *testing.T) {
		t.Parallel()
		f := fakeFleet(t, 1, "stubborn", 300*time.Millisecond)
		ctx := testenv.Context(t, 60*time.Second)
		ev, problems := runMembership(ctx, ctx, f, RollingSchedule(1, 100*time.Millisecond, 150*time.Millisecond), time.Now(), 20*time.Second,
			func(time.Duration, string) {}, testLogger(t))
		if len(problems) != 0 || len(ev) != 1 || !ev[0].Killed || ev[0].StopMs < 300 || ev[0].ReadyS == 0 {
			t.Fatalf("problems %v, events %+v: want a restart whose stop needed SIGKILL after 300 ms", problems, ev)
		}
	})
	t.Run("no change after the run", func(t *testing.T) {
		t.Parallel()
		f := fakeFleet(t, 1, "1", 5*time.Second)
		ctx := testenv.Context(t, 60*time.Second)
		gen, stop := context.WithCancel(ctx)
		stop()
		ev, _ := runMembership(ctx, gen, f, RollingSchedule(1, 50*time.Millisecond, time.Second), time.Now(), 20*time.Second,
			func(time.Duration, string) {}, testLogger(t))
		if len(ev) != 0 {
			t.Fatalf("events %+v after the generator ended", ev)
		}
	})
}

// TestMembershipReport: each change's line shows the p99 and the maximum
// latency of the clicks due in the 5 s after it, and the JSON has them.
func TestMembershipReport(t *testing.T) {
	origin := time.Unix(1_700_000_000, 0)
	plan, err := SteadyPlan(1000, 12*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tr := NewTracker(origin, 12000)
	for i := range 12000 {
		at := origin.Add(time.Duration(i) * time.Millisecond)
		id := fmt.Sprint(i)
		tr.Add(id, at, at, KindOK, ExpectOne, false)
		lat := 5 * time.Millisecond
		switch {
		case i >= 4000 && i < 4040: // a stall right after the change at 4 s (0.8 % of the window's clicks)
			lat = 200 * time.Millisecond
		case i == 9000: // never answered
			continue
		}
		tr.Received([][]byte{[]byte(id)}, at.Add(lat))
	}
	r := analyze(tr, plan, origin, false, DefaultSLA())
	r.Scenario, r.Source = ScenarioScale, "synthetic"
	r.Workers.Count = 1
	r.Membership = []MemberEvent{
		{Action: ActionStart, Instance: "w2", AtS: 4, PlannedS: 4, StartS: 4, ReadyS: 4.5, ReadyMs: 500, Workers: 2},
		{Action: ActionStop, Instance: "w2", AtS: 8.5, PlannedS: 8, StopMs: 120, Workers: 1},
	}
	for i := range r.Membership {
		r.Membership[i].After = afterEvent(tr, origin, time.Duration(r.Membership[i].AtS*float64(time.Second)), plan.Duration(), DefaultSLA())
	}
	a, b := r.Membership[0].After, r.Membership[1].After
	if a.WindowS != 5 || a.Clicks != 5000 || a.Missing != 0 || !(a.MaxMs >= 199 && a.MaxMs <= 201) || !(a.P99Ms >= 4.9 && a.P99Ms <= 5.1) {
		t.Fatalf("after the start: %+v, want 5,000 clicks, p99 5 ms, max 200 ms", a)
	}
	if b.WindowS != 3.5 || b.Clicks != 3500 || b.Missing != 1 || !(b.MaxMs >= 4.9 && b.MaxMs <= 5.1) {
		t.Fatalf("after the stop: %+v, want the window cut at the end of the run (3.5 s), 1 missing", b)
	}
	// The stall is under 1 % of the window's clicks: the SLA held. The
	// click never answered (at 9.0 s) breaks it until the next step past it.
	if a.SLAAgainMs == nil || *a.SLAAgainMs != 0 || b.SLAAgainMs == nil || *b.SLAAgainMs != 600 {
		t.Fatalf("SLA again after the start %v, after the stop %v: want 0 and 600 ms", a.SLAAgainMs, b.SLAAgainMs)
	}
	r.judge(false, nil)
	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"1 → 2 → 1 worker(s)",
		"start   w2 @4.0s, ready @4.5s (500 ms after its start), 2 running · next 5.0 s: p99 5.0 ms, max 200.1 ms (5,000 clicks, 0 missing; SLA met throughout)",
		"stop    w2 @8.5s (due 8.0s): stopped in 120 ms, 1 running · next 3.5 s: p99 5.0 ms, max 5.0 ms (3,500 clicks, 1 missing; SLA met again from 600 ms on)",
	} {
		if !strings.Contains(text.String(), want) {
			t.Fatalf("summary lacks %q:\n%s", want, text.String())
		}
	}
	path := filepath.Join(t.TempDir(), "scale.json")
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	m := checkJSONKeys(t, path)
	ms, _ := m["membership"].([]any)
	if len(ms) != 2 {
		t.Fatalf("membership in the JSON: %v", m["membership"])
	}
	after, _ := ms[0].(map[string]any)["after"].(map[string]any)
	for _, k := range []string{"p99_ms", "max_ms", "clicks", "missing", "window_s", "sla_again_ms"} {
		if _, ok := after[k].(float64); !ok {
			t.Errorf("membership[0].after.%s missing: %v", k, after)
		}
	}
	if _, err := r.WritePlots(t.TempDir(), "scale"); err != nil {
		t.Fatal(err)
	}
}

// TestWatchAfterLogs: the progress log reports the latency after an event
// once its window is over.
func TestWatchAfterLogs(t *testing.T) {
	origin := time.Now().Add(-2 * AfterEventWindow) // the window is over
	tr := NewTracker(origin, 100)
	for i := range 100 {
		at := origin.Add(time.Duration(i) * time.Millisecond)
		tr.Add(fmt.Sprint(i), at, at, KindOK, ExpectOne, false)
		if i != 50 {
			tr.Received([][]byte{[]byte(fmt.Sprint(i))}, at.Add(3*time.Millisecond))
		}
	}
	var buf bytes.Buffer
	watchAfter(context.Background(), tr, origin, 0, time.Minute, time.Second, "restart of w1", slog.New(slog.NewTextHandler(&buf, nil)))
	for _, want := range []string{"loadtest after restart of w1", "window=5s", "clicks=100", "unanswered=1", "max=3.0ms"} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("log %q lacks %q", buf.String(), want)
		}
	}
	// A window not over when the progress log stops (after the drain) is
	// logged then, cut at the end of the run.
	buf.Reset()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	begun := time.Now()
	watchAfter(ctx, tr, origin, 10*time.Second, 12*time.Second, time.Second, "stop of w2", slog.New(slog.NewTextHandler(&buf, nil)))
	if time.Since(begun) > time.Second || !strings.Contains(buf.String(), "stop of w2") || !strings.Contains(buf.String(), "window=2s") {
		t.Fatalf("log %q after %v", buf.String(), time.Since(begun))
	}
}

// TestJudgeRecovery: a chaos run fails when, after a kill, the latency SLA
// holds again only later than SLA.Recover after the worker's restart, or not
// at all within the window.
func TestJudgeRecovery(t *testing.T) {
	at := func(ms float64) *float64 { return &ms }
	r := &Report{sla: SLA{Recover: time.Second}, Sent: 1, Latency: Latency{Count: 1}}
	r.Kills = []Kill{
		{Instance: "w1", AtS: 8, RestartS: 8, After: &AfterEvent{WindowS: 5, Clicks: 10, SLAAgainMs: at(900)}},      // in time
		{Instance: "w2", AtS: 16, RestartS: 16.3, After: &AfterEvent{WindowS: 5, Clicks: 10, SLAAgainMs: at(1400)}}, // 1.1 s after the restart
		{Instance: "w1", AtS: 24, RestartS: 24, After: &AfterEvent{WindowS: 5, Clicks: 10}},                         // never
	}
	r.judge(false, nil)
	if r.SLA.Passed || len(r.SLA.Breaches) != 2 || !strings.Contains(r.SLA.Breaches[0], "w2 at 16.0 s") || !strings.Contains(r.SLA.Breaches[1], "did not hold again") {
		t.Fatalf("breaches %q: want w2 too late and the third kill never", r.SLA.Breaches)
	}
}
