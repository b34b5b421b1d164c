package loadtest

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Membership changes during the measured run, as operations make them: the
// rolling scenario restarts the spawned workers one by one, as a rolling
// update of a StatefulSet does (SIGTERM, wait for the exit, the same
// identity started again, wait until it is ready, then the next one); the
// scale scenario adds workers with new instance ids and stops them again.
// Both are judged on the usual SLA, and the report gives the latency of the
// clicks due just after each change.

// Actions of a membership change.
const (
	ActionRestart = "restart" // SIGTERM, wait for the exit, start again with the same instance id
	ActionStart   = "start"   // start one more worker, with a new instance id
	ActionStop    = "stop"    // SIGTERM, wait for the exit, not started again
)

// AfterEventWindow is how long after a membership change or a chaos kill
// the clicks due are reported on their own (MemberEvent.After, Kill.After).
const AfterEventWindow = 5 * time.Second

// Change is one planned membership change.
type Change struct {
	At     time.Duration // since the start of the measured run
	Action string        // ActionRestart, ActionStart or ActionStop
	Worker int           // index in the fleet: instance <prefix>w<Worker+1>
}

// RollingSchedule restarts one of the workers every `every`, in turn (w1,
// w2, …, w1, …), for as long as a run of length d lasts.
func RollingSchedule(workers int, every, d time.Duration) []Change {
	if workers < 1 || every <= 0 {
		return nil
	}
	var out []Change
	for k, at := 0, every; at < d; k, at = k+1, at+every {
		out = append(out, Change{At: at, Action: ActionRestart, Worker: k % workers})
	}
	return out
}

// ScaleSchedule scales from `from` workers to `to` and back within a run of
// length d. Its n = 2·(to−from) changes are evenly spaced, change i at
// i·d/n: each of the first half starts one more worker (new instance ids
// w<from+1> … w<to>), each of the second stops the newest one still running.
// The last change comes before the end, at d − min(d/2n, AfterEventWindow),
// so that the clicks after it are measured too. From 1 to 3 in 60 s: starts
// at 15 s and 30 s, stops at 45 s and 55 s.
func ScaleSchedule(from, to int, d time.Duration) []Change {
	k := to - from
	if from < 1 || k < 1 || d <= 0 {
		return nil
	}
	n := 2 * k
	out := make([]Change, 0, n)
	for i := 1; i <= n; i++ {
		at := time.Duration(float64(d) * float64(i) / float64(n))
		if i == n {
			at = d - min(d/time.Duration(2*n), AfterEventWindow)
		}
		c := Change{At: at, Action: ActionStart, Worker: from + i - 1}
		if i > k {
			c.Action, c.Worker = ActionStop, to-(i-k)
		}
		out = append(out, c)
	}
	return out
}

// MemberEvent is one membership change as it was carried out.
type MemberEvent struct {
	Action   string `json:"action"` // ActionRestart, ActionStart or ActionStop
	Instance string `json:"instance"`
	// AtS is when it began, since the start of the measured run: SIGTERM
	// sent (restart, stop) or the new process started (start).
	AtS float64 `json:"at_s"`
	// PlannedS is when it was due; AtS is later if the change before it was
	// still under way.
	PlannedS float64 `json:"planned_s"`
	StopMs   float64 `json:"stop_ms,omitempty"` // restart, stop: SIGTERM until the process had exited
	Killed   bool    `json:"killed,omitempty"`  // it had not exited within the fleet's stop timeout: SIGKILLed
	StartS   float64 `json:"start_s,omitempty"` // restart, start: when the new process was started
	ReadyS   float64 `json:"ready_s,omitempty"` // when its /readyz first answered 200
	ReadyMs  float64 `json:"ready_ms,omitempty"`
	Note     string  `json:"note,omitempty"` // what went wrong, if anything
	Workers  int     `json:"workers"`        // worker processes alive once the change was done
	// After is the latency of the clicks due in the AfterEventWindow from AtS.
	After *AfterEvent `json:"after,omitempty"`
}

// AfterEvent is the latency of the measured clicks owed a recommendation
// whose intended send time falls in the AfterEventWindow after an event
// (a membership change, a chaos kill).
type AfterEvent struct {
	WindowS float64 `json:"window_s"` // AfterEventWindow, cut at the end of the run
	Clicks  int64   `json:"clicks"`
	Missing int64   `json:"missing"` // of them, not answered after the drain
	P99Ms   float64 `json:"p99_ms"`  // of the answered ones
	MaxMs   float64 `json:"max_ms"`
	// SLAAgainMs is how soon after the event the latency SLA held again:
	// the clicks due from then to the window's end were all answered, with
	// p95 and p99 below the thresholds (in steps of SLAAgainStep; 0: it
	// never broke). Absent if it did not hold again within the window.
	SLAAgainMs *float64 `json:"sla_again_ms,omitempty"`
}

// SLAAgainStep is the resolution of AfterEvent.SLAAgainMs.
const SLAAgainStep = 100 * time.Millisecond

// afterEvent measures the clicks due in the AfterEventWindow from at (since
// start), in a run of length d, against the latency thresholds of sla.
func afterEvent(tr *Tracker, start time.Time, at, d time.Duration, sla SLA) *AfterEvent {
	end := min(at+AfterEventWindow, d)
	base := tr.Since(start)
	clicks, unanswered, h := tr.Window(base+int64(at), base+int64(end))
	l := latencyOf(h)
	a := &AfterEvent{WindowS: round3(max(end-at, 0).Seconds()), Clicks: clicks, Missing: unanswered, P99Ms: l.P99, MaxMs: l.Max}
	for r := time.Duration(0); at+r < end; r += SLAAgainStep {
		n, missing, h := tr.Window(base+int64(at+r), base+int64(end))
		if n == 0 {
			break
		}
		l := latencyOf(h)
		if missing == 0 && (sla.P95 == 0 || l.P95 < ms(sla.P95)) && (sla.P99 == 0 || l.P99 < ms(sla.P99)) {
			v := float64(r.Milliseconds())
			a.SLAAgainMs = &v
			break
		}
	}
	return a
}

// watchAfter logs the latency of the clicks due in the AfterEventWindow
// from at (since start; cut at d, the end of the run), once the window is
// over and its stragglers had grace to arrive, counting the clicks not
// answered by then; or, if ctx ends first (the progress log stops after the
// drain), at that moment.
func watchAfter(ctx context.Context, tr *Tracker, start time.Time, at, d, grace time.Duration, what string, log *slog.Logger) {
	end := max(min(at+AfterEventWindow, d), at)
	t := time.NewTimer(time.Until(start.Add(end + grace)))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	base := tr.Since(start)
	clicks, unanswered, h := tr.Window(base+int64(at), base+int64(end))
	l := latencyOf(h)
	log.Info("loadtest after "+what, "t", at.Round(100*time.Millisecond), "window", (end - at).Round(time.Millisecond), "clicks", clicks,
		"unanswered", unanswered, "p99", fmt.Sprintf("%.1fms", l.P99), "max", fmt.Sprintf("%.1fms", l.Max))
}

// runMembership carries out changes on f during the measured run, one after
// the other, each at its time or, if the one before is still under way,
// once that is done: a restart or a start is done when the new process
// answers /readyz (a rolling update waits for the new pod to be ready before
// it replaces the next), a stop when the process has exited (SIGKILLed
// after the fleet's stop timeout). No change begins once gen has ended (the
// last click is sent); a wait for readiness already begun ends with ctx (the
// whole run) or after readyTimeout. watch is called with the time of each
// change and what it was, to log the latency after it.
func runMembership(ctx, gen context.Context, f *Fleet, changes []Change, start time.Time, readyTimeout time.Duration,
	watch func(at time.Duration, what string), log *slog.Logger) (events []MemberEvent, problems []string) {
	since := func() time.Duration { return time.Since(start) }
	secs := func(d time.Duration) float64 { return round3(d.Seconds()) }
	// ready waits until worker i, started at startedAt, is ready.
	ready := func(ev *MemberEvent, i int, startedAt time.Duration) {
		ev.StartS = secs(startedAt)
		rctx, cancel := context.WithTimeout(ctx, readyTimeout)
		defer cancel()
		if _, err := f.waitReady(rctx, i); err != nil {
			ev.Note = err.Error()
			problems = append(problems, err.Error())
			return
		}
		at := since()
		ev.ReadyS = secs(at)
		ev.ReadyMs = float64((at - startedAt).Microseconds()) / 1000
	}
	for _, c := range changes {
		if gen.Err() != nil {
			break
		}
		t := time.NewTimer(time.Until(start.Add(c.At)))
		select {
		case <-gen.Done():
			t.Stop()
			return events, problems
		case <-t.C:
		}
		at := since()
		ev := MemberEvent{Action: c.Action, PlannedS: secs(c.At), AtS: secs(at)}
		switch c.Action {
		case ActionRestart, ActionStop:
			ev.Instance = f.Instances()[c.Worker]
			took, killed, err := f.Terminate(c.Worker)
			ev.StopMs, ev.Killed = float64(took.Microseconds())/1000, killed
			if err != nil {
				ev.Note = err.Error()
				problems = append(problems, err.Error())
			}
			if c.Action == ActionStop {
				break
			}
			if err := f.Restart(c.Worker); err != nil {
				ev.Note = "not restarted: " + err.Error()
				problems = append(problems, err.Error())
				break
			}
			ready(&ev, c.Worker, since())
		case ActionStart:
			i, err := f.Add()
			ev.Instance = f.Instances()[i]
			if err != nil {
				ev.Note = "not started: " + err.Error()
				problems = append(problems, err.Error())
				break
			}
			ready(&ev, i, at)
		default:
			panic("loadtest: unknown membership action " + c.Action)
		}
		ev.Workers = f.Running()
		log.Info("loadtest membership change", "action", ev.Action, "instance", ev.Instance, "t", at.Round(100*time.Millisecond),
			"stop_ms", ev.StopMs, "ready_ms", ev.ReadyMs, "workers", ev.Workers, "note", ev.Note)
		watch(at, ev.Action+" of "+ev.Instance)
		events = append(events, ev)
	}
	return events, problems
}
