package loadtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clickrec/clickrec/gen"
	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/wire"
)

func TestClassify(t *testing.T) {
	src, err := gen.NewSynthetic(gen.Config{Seed: 3, Users: 50, Items: 100, Categories: 5, LateShare: 0.5, InvalidShare: 0.2})
	if err != nil {
		t.Fatal(err)
	}
	const ooo = 5 * time.Minute
	var r gen.Record
	now := time.Now()
	seen := map[Expect]int{}
	for i := range 2000 {
		src.Next(&r, now.Add(time.Duration(i)*time.Millisecond))
		kind, exp := Classify(&r, ooo)
		seen[exp]++
		switch {
		case strings.HasPrefix(r.Kind, "invalid:"):
			if kind != KindInvalid || exp != ExpectNone {
				t.Fatalf("%s: got kind %d expect %d, want invalid, none", r.Kind, kind, exp)
			}
		case r.Kind == gen.KindLate && r.Lateness <= ooo:
			if kind != KindLate || exp != ExpectOne {
				t.Fatalf("late by %v: got expect %d, want one (cannot be behind the watermark)", r.Lateness, exp)
			}
		case r.Kind == gen.KindLate:
			if kind != KindLate || exp != ExpectMaybe {
				t.Fatalf("late by %v: got expect %d, want maybe", r.Lateness, exp)
			}
		case r.Kind == gen.KindOK:
			if kind != KindOK || exp != ExpectOne {
				t.Fatalf("ok: got kind %d expect %d", kind, exp)
			}
		}
	}
	if seen[ExpectOne] == 0 || seen[ExpectMaybe] == 0 || seen[ExpectNone] == 0 {
		t.Fatalf("expectations seen: %v, want all three", seen)
	}
}

func TestPlans(t *testing.T) {
	for _, tc := range []struct {
		name   string
		plan   func() (*Plan, error)
		events int64
		phases int
	}{
		{"steady", func() (*Plan, error) { return SteadyPlan(1000, 2*time.Second) }, 2000, 1},
		{"ramp", func() (*Plan, error) { return RampPlan([]float64{100, 1000, 250}, time.Second) }, 1350, 3},
		{"burst", func() (*Plan, error) { return BurstPlan(100, 1000, 3*time.Second, time.Second, 7*time.Second) }, 2*(200+1000) + 100, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := tc.plan()
			if err != nil {
				t.Fatal(err)
			}
			if p.Events() != tc.events || len(p.Phases) != tc.phases {
				t.Fatalf("%d events in %d phases, want %d in %d: %+v", p.Events(), len(p.Phases), tc.events, tc.phases, p.Phases)
			}
			s := p.Schedule()
			prev := time.Duration(-1)
			for i := range p.Events() {
				at := s(i)
				if at < prev || at >= p.Duration() {
					t.Fatalf("event %d due at %v after %v (plan %v long)", i, at, prev, p.Duration())
				}
				if k := p.PhaseOfEvent(i); p.PhaseAt(at) != k {
					t.Fatalf("event %d: due at %v in phase %d, but counted in phase %d", i, at, p.PhaseAt(at), k)
				}
				prev = at
			}
		})
	}
	if _, err := NewPlan([]Phase{{Name: "x", End: time.Second, Rate: 0}}); err == nil {
		t.Fatal("a zero rate was accepted")
	}
	if _, err := BurstPlan(1, 2, time.Second, time.Second, time.Minute); err == nil {
		t.Fatal("a burst as long as its period was accepted")
	}
}

// strategyRun is a run of 100 on-time clicks whose recommendations have
// the given strategies (one per click, "-" for none read), after a warm-up
// click answered by the model.
func strategyRun(t *testing.T, strategies func(i int) string) (*Tracker, *Plan, time.Time) {
	t.Helper()
	origin := time.Unix(1_700_000_000, 0)
	tr := NewTracker(origin, 200)
	tr.Add("w-0", origin, origin, KindOK, ExpectOne, true)
	tr.SealWarmup()
	tr.ReceivedOutputs([]Output{{EventID: []byte("w-0"), Strategy: []byte(wire.StrategyModel)}}, origin.Add(time.Millisecond))
	start := origin.Add(time.Second)
	plan, err := SteadyPlan(100, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		id := fmt.Sprintf("e-%d", i)
		at := start.Add(time.Duration(i) * 10 * time.Millisecond)
		tr.Add(id, at, at, KindOK, ExpectOne, false)
		st := strategies(i)
		if st == "-" {
			continue
		}
		// A duplicate with another strategy counts once, as its first.
		tr.ReceivedOutputs([]Output{{EventID: []byte(id), Strategy: []byte(st)}, {EventID: []byte(id), Strategy: []byte("dup")}}, at.Add(5*time.Millisecond))
	}
	return tr, plan, start
}

// TestModelShareVerdict: a run that served a model fails when its
// recommendations did not come from the model, and passes when enough did;
// without a model (or with running workers, unless asked) it is not judged.
func TestModelShareVerdict(t *testing.T) {
	sla := DefaultSLA()
	sla.MaxDuplicates = 100
	judged := func(tr *Tracker, plan *Plan, start time.Time, s SLA, model bool) *Report {
		r := analyze(tr, plan, start, false, s)
		r.judgeModel = model
		r.judge(false, nil)
		return r
	}

	// Only the popularity fallback answered, although a model was served.
	fallback := func(i int) string {
		if i%4 == 0 {
			return wire.StrategyGlobalPopular
		}
		return wire.StrategyCategoryPopular
	}
	tr, plan, start := strategyRun(t, fallback)
	r := judged(tr, plan, start, sla, true)
	if want := map[string]int64{wire.StrategyCategoryPopular: 75, wire.StrategyGlobalPopular: 25}; !maps.Equal(r.Strategies, want) {
		t.Fatalf("strategies %v, want %v (warm-up and duplicates excluded)", r.Strategies, want)
	}
	if r.ModelShare == nil || *r.ModelShare != 0 {
		t.Fatalf("model share %v, want 0", r.ModelShare)
	}
	if r.SLA.Passed || len(r.SLA.Breaches) != 1 || !strings.Contains(r.SLA.Breaches[0], "no recommendation came from the model") ||
		cli.ExitCode(r.Err()) != 1 {
		t.Fatalf("verdict %+v (exit code %d), want one breach: no model recommendations", r.SLA, cli.ExitCode(r.Err()))
	}
	if r.SLA.Thresholds.MinModelShare == nil || *r.SLA.Thresholds.MinModelShare != DefaultMinModelShare {
		t.Fatalf("threshold %v, want %v", r.SLA.Thresholds.MinModelShare, DefaultMinModelShare)
	}
	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"strategies ...... category_popular 75 (75.0%) · global_popular 25 (25.0%)", "model share ≥ 50%", "FAIL: no recommendation came from the model"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, text.String())
		}
	}
	// The same run without a model: nothing to judge.
	if r := judged(tr, plan, start, sla, false); !r.SLA.Passed || r.SLA.Thresholds.MinModelShare != nil {
		t.Fatalf("without a model: verdict %+v", r.SLA)
	}

	// 60 of 100 from the model: passes at 50 %, fails at 70 %.
	tr, plan, start = strategyRun(t, func(i int) string {
		if i < 60 {
			return wire.StrategyModel
		}
		return wire.StrategyCategoryPopular
	})
	if r := judged(tr, plan, start, sla, true); !r.SLA.Passed || *r.ModelShare != 0.6 {
		t.Fatalf("60%% model: share %v, verdict %+v", *r.ModelShare, r.SLA)
	}
	strict := sla
	strict.MinModelShare = 0.7
	r = judged(tr, plan, start, strict, true)
	if r.SLA.Passed || len(r.SLA.Breaches) != 1 || !strings.Contains(r.SLA.Breaches[0], "model share 60.0% < 70%") {
		t.Fatalf("60%% model at 70%%: verdict %+v", r.SLA)
	}
	if got := r.strategyMix(); got != "model 60 (60.0%) · category_popular 40 (40.0%)" {
		t.Fatalf("strategy mix %q", got)
	}

	// Nothing answered: the share cannot be measured, which fails too.
	tr, plan, start = strategyRun(t, func(int) string { return "-" })
	r = judged(tr, plan, start, SLA{MaxMissing: 100, MinModelShare: 0.5}, true)
	if r.ModelShare != nil || r.SLA.Passed || len(r.SLA.Breaches) != 1 || !strings.Contains(r.SLA.Breaches[0], "model share could not be measured") {
		t.Fatalf("nothing answered: share %v, verdict %+v", r.ModelShare, r.SLA)
	}
}

// fakeRun fills a tracker by hand: one event per millisecond for a second,
// every kind of expectation, and outputs with known faults.
func fakeRun(t *testing.T) (*Tracker, *Plan, time.Time) {
	t.Helper()
	origin := time.Unix(1_700_000_000, 0)
	tr := NewTracker(origin, 2000)
	// Warm-up: two events, both answered, one twice.
	tr.Add("w-0", origin, origin, KindOK, ExpectOne, true)
	tr.Add("w-1", origin, origin, KindOK, ExpectOne, true)
	tr.SealWarmup()
	tr.Received([][]byte{[]byte("w-0"), []byte("w-1"), []byte("w-1")}, origin.Add(time.Millisecond))
	select {
	case <-tr.WarmupDone():
	default:
		t.Fatal("warm-up not done although every warm-up event is answered")
	}
	start := origin.Add(time.Second)
	plan, err := SteadyPlan(1000, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ids [][]byte
	for i := range 1000 {
		id := fmt.Sprintf("e-%d", i)
		at := start.Add(time.Duration(i) * time.Millisecond)
		kind, exp := KindOK, ExpectOne
		switch {
		case i%100 == 1:
			kind, exp = KindInvalid, ExpectNone
		case i%100 == 2:
			kind, exp = KindLate, ExpectMaybe
		case i%100 == 3:
			kind, exp = KindLate, ExpectOne
		}
		tr.Add(id, at, at, kind, exp, false)
		n := 1
		switch {
		case i%100 == 1 && i < 300: // 3 invalid events answered: unexpected
		case i%100 == 1:
			n = 0
		case i%100 == 2 && i < 500: // 5 late-beyond answered, 5 not
		case i%100 == 2:
			n = 0
		case i == 10 || i == 20: // missing
			n = 0
		case i == 30 || i == 40 || i == 50: // duplicated
			n = 2
		}
		for range n {
			ids = append(ids, []byte(id))
		}
		// Latency i/20 ms: p50 ≈ 25 ms, p99 ≈ 49.5 ms.
		tr.Received(ids, at.Add(time.Duration(i)*50*time.Microsecond))
		ids = ids[:0]
	}
	tr.Received([][]byte{[]byte("stranger"), nil}, start.Add(2*time.Second))
	tr.Add("e-5", start, start, KindOK, ExpectOne, false) // reused id: ignored
	return tr, plan, start
}

func TestAnalyzeCountsAndVerdict(t *testing.T) {
	tr, plan, start := fakeRun(t)
	r := analyze(tr, plan, start, false, DefaultSLA())
	check := func(name string, got, want int64) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	check("sent", r.Sent, 1000)
	check("expected", r.Expected, 1000-10-10) // invalid and late-beyond events are not owed one
	check("missing", r.Missing, 2)
	check("matched", r.Matched, r.Expected-2)
	check("duplicates (3 measured + 1 warm-up)", r.Duplicates, 4)
	check("warm-up duplicates", r.Warmup.Duplicates, 1)
	check("unexpected", r.Unexpected, 3)
	check("invalid sent", r.Invalid.Sent, 10)
	check("invalid answered", r.Invalid.WithOutput, 3)
	check("late sent", r.Late.Sent, 20)
	check("late within", r.Late.WithinOutOfOrderness, 10)
	check("late beyond answered", r.Late.BeyondWithOutput, 5)
	check("late beyond unanswered", r.Late.BeyondWithoutOutput, 5)
	check("unknown", r.Unknown, 2)
	check("reused", r.ReusedIDs, 1)
	check("received", r.Received, 1000-2-7-5+3)
	if r.Latency.P50 < 23 || r.Latency.P50 > 27 || r.Latency.P99 < 48 || r.Latency.P99 > 50 {
		t.Errorf("latency %+v, want p50 ≈ 25 ms and p99 ≈ 49.5 ms", r.Latency)
	}
	if r.RateAchieved < 999 || r.RateAchieved > 1001 || r.RateTarget != 1000 {
		t.Errorf("rate target %v achieved %v, want 1000 both", r.RateTarget, r.RateAchieved)
	}
	if len(r.Timeline) == 0 || r.Timeline[0].Sent != 1000 || r.Timeline[0].Missing != 2 {
		t.Errorf("timeline %+v", r.Timeline)
	}

	// Missing, duplicates and unexpected each breach the default SLA; latency does not.
	r.judge(false, nil)
	if r.SLA.Passed || len(r.SLA.Breaches) != 3 {
		t.Fatalf("verdict %+v, want 3 breaches", r.SLA)
	}
	err := r.Err()
	if !errors.Is(err, ErrSLA) || cli.ExitCode(err) != 1 {
		t.Fatalf("Err() = %v (exit code %d), want ErrSLA and exit code 1", err, cli.ExitCode(err))
	}
	// Tolerating them passes; a tighter p95 fails on latency alone.
	lenient := SLA{P95: 75 * time.Millisecond, P99: 150 * time.Millisecond, MaxMissing: 2, MaxDuplicates: 4, MaxUnexpected: 3}
	r = analyze(tr, plan, start, false, lenient)
	r.judge(false, nil)
	if !r.SLA.Passed || r.Err() != nil || cli.ExitCode(r.Err()) != 0 {
		t.Fatalf("lenient verdict %+v", r.SLA)
	}
	// An interrupted run is a failure, but its undrained clicks are not "missing".
	strictMissing := lenient
	strictMissing.MaxMissing = 0
	r = analyze(tr, plan, start, false, strictMissing)
	r.Interrupted = true
	r.judge(false, []string{"interrupted"})
	if r.SLA.Passed || len(r.SLA.Breaches) != 1 || r.SLA.Breaches[0] != "interrupted" {
		t.Fatalf("interrupted verdict %+v", r.SLA)
	}
	lenient.P95 = 20 * time.Millisecond
	r = analyze(tr, plan, start, false, lenient)
	r.judge(false, nil)
	if r.SLA.Passed || !strings.Contains(strings.Join(r.SLA.Breaches, ";"), "p95") {
		t.Fatalf("tight p95 verdict %+v", r.SLA)
	}
}

func TestRampVerdict(t *testing.T) {
	origin := time.Unix(1_700_000_000, 0)
	tr := NewTracker(origin, 3000)
	plan, err := RampPlan([]float64{1000, 1000, 1000}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lat := []time.Duration{5 * time.Millisecond, 20 * time.Millisecond, 500 * time.Millisecond} // the last step is slow
	for i := range 3000 {
		at := origin.Add(time.Duration(i) * time.Millisecond)
		id := fmt.Sprint(i)
		tr.Add(id, at, at, KindOK, ExpectOne, false)
		tr.Received([][]byte{[]byte(id)}, at.Add(lat[i/1000]))
	}
	if n, p95, p99 := tr.Provisional(0, int64(time.Second)); n != 1000 || !near(p95, 5*time.Millisecond) || !near(p99, 5*time.Millisecond) {
		t.Fatalf("provisional step 1: n %d p95 %v p99 %v", n, p95, p99)
	}
	sla := DefaultSLA()
	sla.MinRate = 1000
	r := analyze(tr, plan, origin, true, sla)
	r.judge(true, nil)
	if r.MaxRateMeetingSLA == nil || *r.MaxRateMeetingSLA != 1000 || !r.SLA.Passed {
		t.Fatalf("max rate %v, verdict %+v", r.MaxRateMeetingSLA, r.SLA)
	}
	if p := r.Phases[2]; p.Passed == nil || *p.Passed || p.Latency.P50 < 499 {
		t.Fatalf("step 3: %+v", p)
	}
	// A step cut short is not judged, and ends the passing prefix.
	cut := NewTracker(origin, 1500)
	for i := range 1500 {
		at := origin.Add(time.Duration(i) * time.Millisecond)
		cut.Add(fmt.Sprint(i), at, at, KindOK, ExpectOne, false)
		cut.Received([][]byte{[]byte(fmt.Sprint(i))}, at.Add(time.Millisecond))
	}
	rc := analyze(cut, plan, origin, true, DefaultSLA())
	rc.judge(true, nil)
	if p := rc.Phases[1]; !p.Partial || p.Passed != nil || rc.Phases[2].Sent != 0 || *rc.MaxRateMeetingSLA != 1000 {
		t.Fatalf("cut-short ramp: phases %+v, max rate %v", rc.Phases, *rc.MaxRateMeetingSLA)
	}
	sla.MinRate = 2000
	r = analyze(tr, plan, origin, true, sla)
	r.judge(true, nil)
	if r.SLA.Passed {
		t.Fatal("a ramp below --sla-min-rate passed")
	}
}

func TestProvisionalCountsUnansweredAsInfinite(t *testing.T) {
	origin := time.Unix(1_700_000_000, 0)
	tr := NewTracker(origin, 100)
	for i := range 100 {
		at := origin.Add(time.Duration(i) * time.Millisecond)
		tr.Add(fmt.Sprint(i), at, at, KindOK, ExpectOne, false)
		if i < 96 {
			tr.Received([][]byte{[]byte(fmt.Sprint(i))}, at.Add(time.Millisecond))
		}
	}
	_, p95, p99 := tr.Provisional(0, int64(time.Second))
	if !near(p95, time.Millisecond) || p99 != time.Duration(1<<63-1) {
		t.Fatalf("p95 %v p99 %v: want 1ms and infinite (4 of 100 unanswered)", p95, p99)
	}
}

func TestReportFiles(t *testing.T) {
	tr, plan, start := fakeRun(t)
	r := analyze(tr, plan, start, false, DefaultSLA())
	r.Scenario, r.Source = ScenarioSteady, "synthetic"
	r.Kills = []Kill{{AtS: 0.5, Instance: "w1", RestartS: 0.6, ReadyMs: 80}}
	r.judge(false, nil)
	dir := t.TempDir()
	plots, err := r.WritePlots(dir, "run")
	if err != nil {
		t.Fatal(err)
	}
	r.Plots = plots
	for _, p := range plots {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) || len(b) < 10_000 {
			t.Fatalf("%s is not a PNG with content (%d bytes)", p, len(b))
		}
	}
	if filepath.Base(plots[0]) != "run-latency-over-time.png" || filepath.Base(plots[1]) != "run-latency-distribution.png" {
		t.Fatalf("plot names %v", plots)
	}
	path := filepath.Join(dir, "sub", "run.json")
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	checkJSONKeys(t, path)
	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"2 missing", "FAIL", "p95", "SIGKILL"} {
		if !strings.Contains(text.String(), want) {
			t.Fatalf("summary lacks %q:\n%s", want, text.String())
		}
	}
}

// checkJSONKeys checks the keys the issue promises are in a JSON report.
func checkJSONKeys(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"rate_target", "rate_achieved", "sent", "received", "missing", "duplicates", "unexpected"} {
		if _, ok := m[k].(float64); !ok {
			t.Errorf("report key %q missing or not a number: %v", k, m[k])
		}
	}
	lat, _ := m["latency_ms"].(map[string]any)
	for _, k := range []string{"p50", "p95", "p99", "max"} {
		if _, ok := lat[k].(float64); !ok {
			t.Errorf("report key latency_ms.%s missing: %v", k, lat)
		}
	}
	sla, _ := m["sla"].(map[string]any)
	if _, ok := sla["passed"].(bool); !ok {
		t.Errorf("report key sla.passed missing: %v", sla)
	}
	if _, ok := m["strategies"].(map[string]any); !ok {
		t.Errorf("report key strategies missing: %v", m["strategies"])
	}
	if _, ok := m["model_share"]; !ok {
		t.Errorf("report key model_share missing")
	}
	mod, _ := m["model"].(map[string]any)
	if _, ok := mod["served"].(bool); !ok {
		t.Errorf("report key model.served missing: %v", mod)
	}
	red, _ := m["redis"].(map[string]any)
	if _, ok := red["used"].(bool); !ok {
		t.Errorf("report key redis.used missing: %v", red)
	}
	return m
}

// near reports whether got is within the histograms' 1% of want.
func near(got, want time.Duration) bool { return got >= want*99/100 && got <= want*101/100 }
