package loadtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/clickrec/clickrec/wire"
)

// SLA holds the thresholds that decide a run's verdict and exit code. A zero
// latency threshold is not enforced.
type SLA struct {
	P95, P99      time.Duration // latency percentiles must stay below these
	MaxMissing    int64         // on-time events without a recommendation
	MaxDuplicates int64         // recommendations beyond the first per event
	MaxUnexpected int64         // recommendations for events that must have none
	// MinRate (ramp only): the highest step rate meeting the SLA must be at
	// least this many events per second. 0: any passing step will do.
	MinRate float64
	// MinModelShare: when the workers serve a model, at least this share
	// (0–1) of the measured clicks' recommendations must come from it
	// (strategy "model"), so a run whose workers silently fell back to
	// popularity fails instead of passing with the fallback's latency.
	MinModelShare float64
	// MaxFreshness (--new-items): the p95 of the new items' time from first
	// click to first model recommendation must not exceed this, and every
	// new item clicked must be recommended before the drain ends. 0: not
	// judged (reported all the same).
	MaxFreshness time.Duration
	// Recover (chaos): after each kill the latency SLA must hold again
	// within this long of the worker's restart (Kill.After.SLAAgainMs,
	// against the p95 and p99 thresholds, or DefaultSLA's where those are
	// not judged). 0: not judged.
	Recover time.Duration
}

// DefaultMinModelShare is SLA.MinModelShare unless given. A model that knows
// the catalogue scores nearly every click (the hot path falls back only when
// no item of the shopper's recent events is known to it: 99 % and more of the
// clicks with the load test's own model); a missing or mismatched model gives
// about 0 %. Half tells the two apart with room for a --model-dir trained on
// less of the catalogue.
const DefaultMinModelShare = 0.5

// DefaultSLA is the project's SLA (DESIGN.md, R10): p95 < 75 ms, p99 < 150 ms,
// nothing missing, nothing doubled, nothing unexpected; when a model is
// served, at least DefaultMinModelShare of the recommendations from it; and
// after a worker is killed and restarted, the latency SLA again within 1 s.
func DefaultSLA() SLA {
	return SLA{P95: 75 * time.Millisecond, P99: 150 * time.Millisecond, MinModelShare: DefaultMinModelShare, Recover: time.Second}
}

// ErrSLA is wrapped by the error a run returns when it breached its SLA.
var ErrSLA = errors.New("SLA not met")

// Latency is a latency distribution in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P95   float64 `json:"p95"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
}

func latencyOf(h *hdrhistogram.Histogram) Latency {
	ms := func(us int64) float64 { return math.Round(float64(us)) / 1000 }
	if h.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		Count: h.TotalCount(),
		Mean:  math.Round(h.Mean()) / 1000,
		P50:   ms(h.ValueAtPercentile(50)),
		P90:   ms(h.ValueAtPercentile(90)),
		P95:   ms(h.ValueAtPercentile(95)),
		P99:   ms(h.ValueAtPercentile(99)),
		P999:  ms(h.ValueAtPercentile(99.9)),
		Max:   ms(h.Max()),
	}
}

// Split divides the latency at the moment the worker scored the click
// (processed_at_ms, wall-clock milliseconds): before it, the click's way to the
// worker (produce, fetch, waiting for the worker's previous transaction);
// after it, the transaction commit, the transaction markers and the
// read_committed fetch. Millisecond resolution; the worker and the load test
// must share a clock (the same machine).
type Split struct {
	ToScored   Latency `json:"click_to_scored"`
	ScoredRead Latency `json:"scored_to_read"`
}

// LateReport breaks down the out-of-order events (see Classify).
type LateReport struct {
	Sent int64 `json:"sent"`
	// WithinOutOfOrderness are on time for the worker: they must have exactly
	// one recommendation and are part of expected and missing.
	WithinOutOfOrderness int64 `json:"within_out_of_orderness"`
	// Beyond are more than the out-of-orderness late: behind their partition's
	// watermark or not, depending on what came before them. Not judged.
	Beyond              int64 `json:"beyond_out_of_orderness"`
	BeyondWithOutput    int64 `json:"beyond_with_output"`
	BeyondWithoutOutput int64 `json:"beyond_without_output"`
}

// InvalidReport counts the invalid events and the recommendations they
// wrongly got.
type InvalidReport struct {
	Sent       int64 `json:"sent"`
	WithOutput int64 `json:"with_output"`
}

// PhaseReport is one phase of the plan (a ramp step, a burst, …).
type PhaseReport struct {
	Name         string   `json:"name"`
	StartS       float64  `json:"start_s"`
	EndS         float64  `json:"end_s"`
	RateTarget   float64  `json:"rate_target"`
	RateAchieved float64  `json:"rate_achieved"`
	Sent         int64    `json:"sent"`
	Expected     int64    `json:"expected"`
	Missing      int64    `json:"missing"`
	Duplicates   int64    `json:"duplicates"`
	Unexpected   int64    `json:"unexpected"`
	Latency      Latency  `json:"latency_ms"`
	Partial      bool     `json:"partial,omitempty"` // the run stopped before the phase's planned events were all sent
	Passed       *bool    `json:"passed,omitempty"`  // judged in ramps only, and only for whole phases
	Breaches     []string `json:"breaches,omitempty"`
}

// Point is one bucket of the timeline: events by their intended send time,
// except Received, which counts first recommendations by the time they were read.
type Point struct {
	TS       float64 `json:"t_s"`
	Sent     int64   `json:"sent"`
	Received int64   `json:"received"`
	Missing  int64   `json:"missing"`
	P50      float64 `json:"p50_ms"`
	P95      float64 `json:"p95_ms"`
	P99      float64 `json:"p99_ms"`
	Max      float64 `json:"max_ms"`
}

// GeneratorReport says how well the generator kept its schedule. Latency
// counts from the intended time either way.
type GeneratorReport struct {
	BehindP99Ms float64 `json:"behind_p99_ms"`
	BehindMaxMs float64 `json:"behind_max_ms"`
	Acked       int64   `json:"acked"`
	Stopped     string  `json:"stopped,omitempty"` // why it stopped before the plan's end
}

// DrainReport describes the wait for the last recommendations.
type DrainReport struct {
	Complete bool    `json:"complete"` // the group committed every input and the reader read to the end, every transaction resolved
	TookMs   float64 `json:"took_ms"`
	Detail   string  `json:"detail,omitempty"`
}

// WorkerReport describes the hot path workers under test.
type WorkerReport struct {
	Mode            string   `json:"mode"`         // "spawned" or "external"
	ExactlyOnce     bool     `json:"exactly_once"` // false: the workers ran --exactly-once=false
	Count           int      `json:"count"`
	Instances       []string `json:"instances,omitempty"`
	Restarts        int      `json:"restarts"`
	UnexpectedExits int      `json:"unexpected_exits"`
	Logs            []string `json:"logs,omitempty"`
}

func (w WorkerReport) guarantee() string {
	if w.ExactlyOnce {
		return "exactly-once"
	}
	return "at-least-once (--exactly-once=false: duplicates after a crash are expected)"
}

// Model sources (ModelReport.Source).
const (
	ModelTrained    = "trained"     // trained by the load test on the traffic's history
	ModelDir        = "model-dir"   // --model-dir
	ModelWorkerFlag = "worker-flag" // --worker-flag=--model-dir=…
	ModelNone       = "none"        // --no-model
	ModelExternal   = "external"    // running workers: whatever they serve
)

// ModelReport says which model the workers served.
type ModelReport struct {
	// Served: the load test had the spawned workers serve a model (false
	// with --no-model, and for running workers, whose model it does not
	// know), so the model share is judged.
	Served  bool   `json:"served"`
	Source  string `json:"source"` // ModelTrained, ModelDir, …
	Dir     string `json:"dir,omitempty"`
	Version string `json:"version,omitempty"`
	Items   int    `json:"items,omitempty"`  // items the model knows
	Scorer  string `json:"scorer,omitempty"` // onnx (ONNX Runtime) or go
	// CatalogueItems is the number of items the traffic can click on (the
	// synthetic shop's --items; the Taobao replay's distinct items) and
	// CatalogueKnown how many of them the model knows. A click whose
	// shopper's recent items are all unknown gets the popularity fallback.
	CatalogueItems int `json:"catalogue_items,omitempty"`
	CatalogueKnown int `json:"catalogue_known,omitempty"`
	// Training, when the load test trained the model.
	TrainClicks   int     `json:"train_clicks,omitempty"`
	TrainSessions int     `json:"train_sessions,omitempty"`
	TrainS        float64 `json:"train_s,omitempty"`
	Note          string  `json:"note,omitempty"`
}

// RedisReport says whether the workers wrote the Redis feature store.
type RedisReport struct {
	Used   bool   `json:"used"`
	Addr   string `json:"addr,omitempty"`
	DB     int    `json:"db,omitempty"`
	Detail string `json:"detail,omitempty"`
}

func (m ModelReport) describe() string {
	var sb strings.Builder
	switch m.Source {
	case ModelNone:
		return "none (--no-model): every recommendation is the popularity fallback; the model share is not judged"
	case ModelExternal:
		return "whatever the running workers serve (not known to the load test)"
	case ModelTrained:
		fmt.Fprintf(&sb, "trained on %s clicks (%s sessions) of the traffic's history in %.1f s, ", thousands(float64(m.TrainClicks)), thousands(float64(m.TrainSessions)), m.TrainS)
	case ModelDir:
		sb.WriteString("from --model-dir, ")
	case ModelWorkerFlag:
		sb.WriteString("from --worker-flag --model-dir, ")
	}
	fmt.Fprintf(&sb, "version %s, %s items", m.Version, thousands(float64(m.Items)))
	if m.CatalogueItems > 0 {
		fmt.Fprintf(&sb, " (%s of the catalogue's %s)", thousands(float64(m.CatalogueKnown)), thousands(float64(m.CatalogueItems)))
	}
	if m.Scorer != "" {
		fmt.Fprintf(&sb, ", scorer %s", m.Scorer)
	}
	if m.Dir != "" {
		fmt.Fprintf(&sb, "; %s", m.Dir)
	}
	if m.Note != "" {
		fmt.Fprintf(&sb, " (%s)", m.Note)
	}
	return sb.String()
}

func (r RedisReport) describe() string {
	s := "off"
	if r.Used {
		s = r.Addr
		if r.DB != 0 {
			s += fmt.Sprintf(" db %d", r.DB)
		}
	}
	if r.Detail != "" {
		s += ": " + r.Detail
	}
	return s
}

// CPUReport says how busy the machine was while the run was measured (from
// its start to the end of the drain): the CPU the load test and the spawned
// workers used, in cores, and the machine's load, which other processes
// share. -1: not available on this platform.
type CPUReport struct {
	Cores         int      `json:"machine_cores"`
	WindowS       float64  `json:"window_s"`
	LoadtestCores float64  `json:"loadtest_cores"`
	WorkersCores  *float64 `json:"workers_cores,omitempty"` // spawned workers only
	Load1Start    float64  `json:"load1_start"`
	Load1End      float64  `json:"load1_end"`
	// CPUPressure is the share of the last minute in which some runnable
	// task waited for a CPU (Linux pressure stall information), at the end.
	CPUPressure float64 `json:"cpu_pressure_some_avg60"`
}

// Kill is one chaos kill.
type Kill struct {
	AtS       float64 `json:"at_s"` // since the start of the measured run
	Instance  string  `json:"instance"`
	RestartS  float64 `json:"restart_s"`            // when its successor was started
	ReadyMs   float64 `json:"ready_ms,omitempty"`   // successor's /readyz answered 200 after this long
	ReadyNote string  `json:"ready_note,omitempty"` // why ready_ms is missing
	// After is the latency of the clicks due in the AfterEventWindow from AtS.
	After *AfterEvent `json:"after,omitempty"`
}

// Thresholds are the SLA as reported; null means not enforced.
type Thresholds struct {
	P95Ms         *float64 `json:"p95_ms"`
	P99Ms         *float64 `json:"p99_ms"`
	MaxMissing    int64    `json:"max_missing"`
	MaxDuplicates int64    `json:"max_duplicates"`
	MaxUnexpected int64    `json:"max_unexpected"`
	MinRate       *float64 `json:"min_rate,omitempty"`
	// MinModelShare is null when the model share is not judged (no model
	// served, or running workers without --sla-min-model-share).
	MinModelShare *float64 `json:"min_model_share"`
	// MaxFreshnessMs is null when freshness is not judged.
	MaxFreshnessMs *float64 `json:"max_freshness_ms,omitempty"`
}

// Verdict is the SLA outcome.
type Verdict struct {
	Passed     bool       `json:"passed"`
	Thresholds Thresholds `json:"thresholds"`
	Breaches   []string   `json:"breaches"`
}

// Report is the outcome of a load test run, as written by --json.
type Report struct {
	Scenario    string    `json:"scenario"`
	Source      string    `json:"source"`
	StartedAt   time.Time `json:"started_at"`
	Brokers     []string  `json:"brokers"`
	EventsTopic string    `json:"events_topic"`
	RecsTopic   string    `json:"recs_topic"`
	Group       string    `json:"group"`
	// ExactlyOnce says whether the workers ran exactly-once (--exactly-once).
	ExactlyOnce bool         `json:"exactly_once"`
	Workers     WorkerReport `json:"workers"`
	Model       ModelReport  `json:"model"`
	Redis       RedisReport  `json:"redis"`

	DurationS    float64 `json:"duration_s"` // planned
	ElapsedS     float64 `json:"elapsed_s"`  // from the start to the last send
	RateTarget   float64 `json:"rate_target"`
	RatePeak     float64 `json:"rate_peak"`
	RateAchieved float64 `json:"rate_achieved"`

	// Counts over the measured events (warm-up excluded, see Warmup).
	Sent       int64 `json:"sent"`
	Expected   int64 `json:"expected"` // events owed exactly one recommendation
	Received   int64 `json:"received"` // recommendations read for sent events, duplicates included
	Matched    int64 `json:"matched"`  // expected events that got one
	Missing    int64 `json:"missing"`
	Duplicates int64 `json:"duplicates"` // recommendations beyond the first, warm-up included
	Unexpected int64 `json:"unexpected"` // recommendations for events owed none, warm-up included
	Unknown    int64 `json:"unknown"`    // recommendations whose event_id this run never sent
	ReusedIDs  int64 `json:"reused_ids,omitempty"`

	// Strategies counts the first recommendation of every measured click by
	// its strategy field: model, category_popular, global_popular ("" when
	// a record had none). ModelShare is the share of "model" among them
	// (null when none was read).
	Strategies map[string]int64 `json:"strategies"`
	ModelShare *float64         `json:"model_share"`

	Late    LateReport    `json:"late"`
	Invalid InvalidReport `json:"invalid"`
	Warmup  WarmupReport  `json:"warmup"`

	Latency   Latency         `json:"latency_ms"`
	Split     *Split          `json:"latency_split_ms,omitempty"`
	Generator GeneratorReport `json:"generator"`
	Drain     DrainReport     `json:"drain"`
	CPU       CPUReport       `json:"cpu"`

	// Freshness: how soon the new items the shop launched during the run
	// were recommended (--new-items; absent without).
	Freshness *FreshnessReport `json:"freshness,omitempty"`

	Phases            []PhaseReport `json:"phases"`
	MaxRateMeetingSLA *float64      `json:"max_rate_meeting_sla,omitempty"`
	Kills             []Kill        `json:"kills,omitempty"`
	// Membership lists the changes of the rolling and scale scenarios.
	Membership []MemberEvent `json:"membership,omitempty"`
	// RedisOutages lists the Redis outages (--redis-outage, redis-outage).
	RedisOutages []Outage `json:"redis_outages,omitempty"`
	// FeatureStore is the feature-store check after the drain (null: not
	// checked).
	FeatureStore *FeatureStoreCheck `json:"feature_store,omitempty"`
	BucketS      float64            `json:"bucket_s"`
	Timeline     []Point            `json:"timeline"`

	SLA         Verdict  `json:"sla"`
	Interrupted bool     `json:"interrupted,omitempty"`
	Error       string   `json:"error,omitempty"`
	Plots       []string `json:"plots,omitempty"`
	Notes       []string `json:"notes,omitempty"`

	hist       *hdrhistogram.Histogram // overall latency, for the distribution plot
	sla        SLA
	judgeModel bool // judge the model share against sla.MinModelShare
}

// analyze computes the counts, latencies, phases and timeline of the events
// measured from start on, following plan.
func analyze(tr *Tracker, plan *Plan, start time.Time, judgePhases bool, sla SLA) *Report {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	a := newAnalysis(tr, plan, start, sla)
	for i := range tr.ev {
		a.add(&tr.ev[i])
	}
	return a.finish(judgePhases)
}

// analysis is one pass of analyze over the tracked events.
type analysis struct {
	tr      *Tracker
	plan    *Plan
	r       *Report
	startNs int64

	byStrategy []int64 // by Tracker.strategies index

	// The timeline: one Point per bucket of intended send time, its
	// latency percentiles from bh while the pass is in bucket cur.
	bucket time.Duration
	nb     int // buckets of the plan; pts may grow past them with late reads
	pts    []Point
	bh     *hdrhistogram.Histogram
	cur    int

	behind, toScored, scoredRead *hdrhistogram.Histogram

	phases   []PhaseReport
	phHist   []*hdrhistogram.Histogram
	phLast   []int64 // the last send of each phase, since start
	lastSent int64   // the last send, since start
}

func newAnalysis(tr *Tracker, plan *Plan, start time.Time, sla SLA) *analysis {
	r := &Report{ExactlyOnce: true, hist: newLatencyHistogram(3), sla: sla, Unknown: tr.unknown, ReusedIDs: tr.reused,
		Strategies: map[string]int64{}}
	d := plan.Duration()
	r.DurationS = d.Seconds()
	r.RateTarget = round3(plan.MeanRate())
	r.RatePeak = round3(plan.PeakRate())
	bucket := max(time.Second, (d/300+time.Second-1)/time.Second*time.Second)
	r.BucketS = bucket.Seconds()
	a := &analysis{tr: tr, plan: plan, r: r, startNs: tr.Since(start), byStrategy: make([]int64, len(tr.strategies)),
		bucket: bucket, nb: int((d + bucket - 1) / bucket), bh: newLatencyHistogram(2), cur: -1,
		behind: newLatencyHistogram(2), toScored: newLatencyHistogram(2), scoredRead: newLatencyHistogram(2),
		phases: make([]PhaseReport, len(plan.Phases)), phHist: make([]*hdrhistogram.Histogram, len(plan.Phases)),
		phLast: make([]int64, len(plan.Phases)), lastSent: -1}
	a.pts = make([]Point, a.nb)
	for k, ph := range plan.Phases {
		a.phases[k] = PhaseReport{Name: ph.Name, StartS: ph.Start.Seconds(), EndS: ph.End.Seconds(), RateTarget: round3(ph.Rate)}
		a.phHist[k] = newLatencyHistogram(3)
		a.phLast[k] = -1
	}
	return a
}

// add counts one event: sent, answered, doubled, unexpected, its kind, its
// latency in the run, its phase and its timeline bucket.
func (a *analysis) add(e *entry) {
	r := a.r
	dup := int64(max(e.n, 1) - 1)
	r.Duplicates += dup
	unexpected := e.expect == ExpectNone && e.n > 0
	if unexpected {
		r.Unexpected++
	}
	if e.warm {
		r.Warmup.Sent++
		r.Warmup.Duplicates += dup
		if unexpected {
			r.Warmup.Unexpected++
		}
		return
	}
	off := e.intended - a.startNs
	k := a.plan.PhaseAt(time.Duration(off))
	ph := &a.phases[k]
	r.Sent++
	ph.Sent++
	r.Received += int64(e.n)
	ph.Duplicates += dup
	a.lastSent = max(a.lastSent, e.sent-a.startNs)
	a.phLast[k] = max(a.phLast[k], e.sent-a.startNs)
	recordNs(a.behind, max(e.sent-e.intended, 0))
	b := a.bucketOf(off)
	a.pts[b].Sent++
	a.countKind(e, ph)
	if e.expect == ExpectOne {
		r.Expected++
		ph.Expected++
		if e.n == 0 {
			r.Missing++
			ph.Missing++
			a.pts[b].Missing++
		} else {
			r.Matched++
		}
	}
	if e.n > 0 {
		a.byStrategy[e.strategy]++
	}
	if e.n > 0 && e.expect != ExpectNone {
		a.addLatency(e, k)
	}
}

// bucketOf returns the timeline bucket of an intended send time (since
// start), closing the bucket the pass leaves.
func (a *analysis) bucketOf(off int64) int {
	b := min(max(int(off/int64(a.bucket)), 0), a.nb-1)
	if b != a.cur {
		a.closeBucket()
		a.cur = b
	}
	return b
}

// closeBucket writes the latency percentiles of the bucket the pass is in.
func (a *analysis) closeBucket() {
	if a.cur >= 0 && a.cur < a.nb {
		l := latencyOf(a.bh)
		p := &a.pts[a.cur]
		p.P50, p.P95, p.P99, p.Max = l.P50, l.P95, l.P99, l.Max
	}
	a.bh.Reset()
}

// countKind counts late and invalid events by what became of them.
func (a *analysis) countKind(e *entry, ph *PhaseReport) {
	r := a.r
	switch e.kind {
	case KindLate:
		r.Late.Sent++
		switch {
		case e.expect == ExpectOne:
			r.Late.WithinOutOfOrderness++
		case e.n > 0:
			r.Late.Beyond++
			r.Late.BeyondWithOutput++
		default:
			r.Late.Beyond++
			r.Late.BeyondWithoutOutput++
		}
	case KindInvalid:
		r.Invalid.Sent++
		if e.n > 0 {
			r.Invalid.WithOutput++
			ph.Unexpected++
		}
	}
}

// addLatency records an answered event's latency: overall, split at the
// scoring, in its phase, in its bucket; and counts its answer in the bucket
// it was read in.
func (a *analysis) addLatency(e *entry, phase int) {
	lat := e.first - e.intended
	recordNs(a.r.hist, lat)
	if e.scored != 0 {
		recordNs(a.toScored, e.scored-e.intended)
		recordNs(a.scoredRead, e.first-e.scored)
	}
	recordNs(a.phHist[phase], lat)
	recordNs(a.bh, lat)
	if rb := int((e.first - a.startNs) / int64(a.bucket)); rb >= 0 {
		for rb >= len(a.pts) {
			a.pts = append(a.pts, Point{})
		}
		a.pts[rb].Received++
	}
}

// finish turns the pass's counts into the report: strategies and the model
// share, the timeline, latencies, rates, and each phase (judged if asked).
func (a *analysis) finish(judgePhases bool) *Report {
	r, plan := a.r, a.plan
	a.closeBucket()
	var total int64
	for i, n := range a.byStrategy {
		if n > 0 {
			r.Strategies[a.tr.strategies[i]] = n
			total += n
		}
	}
	if total > 0 {
		x := round3(float64(r.Strategies[wire.StrategyModel]) / float64(total))
		r.ModelShare = &x
	}
	for i := range a.pts {
		a.pts[i].TS = float64(i) * a.bucket.Seconds()
	}
	r.Timeline = a.pts
	r.Latency = latencyOf(r.hist)
	if a.toScored.TotalCount() > 0 {
		r.Split = &Split{ToScored: latencyOf(a.toScored), ScoredRead: latencyOf(a.scoredRead)}
	}
	if a.lastSent >= 0 {
		r.ElapsedS = round3(time.Duration(a.lastSent).Seconds())
		r.RateAchieved = achieved(r.Sent, a.lastSent, plan.Duration())
	}
	r.Generator.BehindP99Ms = float64(a.behind.ValueAtPercentile(99)) / 1000
	r.Generator.BehindMaxMs = float64(a.behind.Max()) / 1000
	for k := range a.phases {
		ph := &a.phases[k]
		ph.Latency = latencyOf(a.phHist[k])
		if a.phLast[k] >= 0 {
			p := plan.Phases[k]
			ph.RateAchieved = achieved(ph.Sent, a.phLast[k]-int64(p.Start), p.End-p.Start)
		}
		ph.Partial = ph.Sent > 0 && ph.Sent < plan.first[k+1]-plan.first[k]
		if judgePhases && ph.Sent > 0 && !ph.Partial { // a step never run or cut short is not judged
			b := r.sla.judgePhase(ph)
			ph.Breaches = b
			passed := len(b) == 0
			ph.Passed = &passed
		}
	}
	r.Phases = a.phases
	return r
}

// achieved is the rate of n events sent within span of the phase start, the
// last of them last nanoseconds after it: on schedule it equals n / span.
func achieved(n, last int64, span time.Duration) float64 {
	if n == 0 {
		return 0
	}
	return round3(float64(n) / (time.Duration(last) + span/time.Duration(n)).Seconds())
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// judgeLatency appends the latency breaches of l to b.
func (s SLA) judgeLatency(l Latency, b []string) []string {
	if (s.P95 > 0 || s.P99 > 0) && l.Count == 0 {
		return append(b, "no recommendation was read, so no latency could be measured")
	}
	if s.P95 > 0 && !(l.P95 < ms(s.P95)) {
		b = append(b, fmt.Sprintf("p95 %.2f ms ≥ %.0f ms", l.P95, ms(s.P95)))
	}
	if s.P99 > 0 && !(l.P99 < ms(s.P99)) {
		b = append(b, fmt.Sprintf("p99 %.2f ms ≥ %.0f ms", l.P99, ms(s.P99)))
	}
	return b
}

func (s SLA) judgeCounts(missing, dups, unexpected int64, b []string) []string {
	if missing > s.MaxMissing {
		b = append(b, fmt.Sprintf("%d missing > %d", missing, s.MaxMissing))
	}
	if dups > s.MaxDuplicates {
		b = append(b, fmt.Sprintf("%d duplicates > %d", dups, s.MaxDuplicates))
	}
	if unexpected > s.MaxUnexpected {
		b = append(b, fmt.Sprintf("%d unexpected > %d", unexpected, s.MaxUnexpected))
	}
	return b
}

func (s SLA) judgePhase(p *PhaseReport) []string {
	return s.judgeCounts(p.Missing, p.Duplicates, p.Unexpected, s.judgeLatency(p.Latency, nil))
}

// judge sets r.SLA. A ramp is judged step by step: it passes if some step
// met the latency thresholds (and that step's rate is at least MinRate),
// and the whole run lost, doubled and misdirected nothing beyond the limits.
// Any other run is judged on its overall latency and counts.
func (r *Report) judge(ramp bool, extra []string) {
	s := r.sla
	v := Verdict{Thresholds: Thresholds{MaxMissing: s.MaxMissing, MaxDuplicates: s.MaxDuplicates, MaxUnexpected: s.MaxUnexpected}}
	if s.P95 > 0 {
		x := ms(s.P95)
		v.Thresholds.P95Ms = &x
	}
	if s.P99 > 0 {
		x := ms(s.P99)
		v.Thresholds.P99Ms = &x
	}
	var b []string
	if ramp {
		if s.MinRate > 0 {
			x := s.MinRate
			v.Thresholds.MinRate = &x
		}
		var best *float64
		for i := range r.Phases {
			p := &r.Phases[i]
			if p.Passed == nil || !*p.Passed {
				break
			}
			x := p.RateTarget
			best = &x
		}
		r.MaxRateMeetingSLA = best
		switch {
		case best == nil:
			b = append(b, "no step met the SLA")
		case s.MinRate > 0 && *best < s.MinRate:
			b = append(b, fmt.Sprintf("highest rate meeting the SLA %.0f ev/s < %.0f ev/s", *best, s.MinRate))
		}
	} else {
		b = s.judgeLatency(r.Latency, b)
	}
	missing := r.Missing
	if r.Interrupted {
		// Without a drain, unanswered clicks may just be in flight.
		missing = 0
		r.Notes = append(r.Notes, fmt.Sprintf("interrupted: the %d unanswered clicks were not drained, so they are not judged as missing", r.Missing))
	}
	b = s.judgeCounts(missing, r.Duplicates, r.Unexpected, b)
	if r.judgeModel {
		x := s.MinModelShare
		v.Thresholds.MinModelShare = &x
		b = r.judgeModelShare(b)
	}
	if r.Sent == 0 {
		b = append(b, "no events were sent")
	}
	b = r.judgeRecovery(b)
	if s.MaxFreshness > 0 && r.Freshness != nil {
		x := ms(s.MaxFreshness)
		v.Thresholds.MaxFreshnessMs = &x
		b = r.Freshness.judge(s.MaxFreshness, b)
	}
	b = append(b, extra...)
	v.Breaches = b
	v.Passed = len(b) == 0
	if v.Breaches == nil {
		v.Breaches = []string{}
	}
	r.SLA = v
}

// judgeRecovery appends a breach to b for every kill after which the latency
// SLA did not hold again within SLA.Recover of the restart.
func (r *Report) judgeRecovery(b []string) []string {
	if r.sla.Recover <= 0 {
		return b
	}
	for _, k := range r.Kills {
		if k.After == nil || k.After.Clicks == 0 {
			continue
		}
		limit := k.RestartS*1000 + ms(r.sla.Recover)
		switch {
		case k.After.SLAAgainMs == nil:
			b = append(b, fmt.Sprintf("after the SIGKILL of %s at %.1f s the latency SLA did not hold again within %.1f s", k.Instance, k.AtS, k.After.WindowS))
		case k.AtS*1000+*k.After.SLAAgainMs > limit:
			b = append(b, fmt.Sprintf("after the SIGKILL of %s at %.1f s the latency SLA held again %.0f ms after it, beyond %v after its restart",
				k.Instance, k.AtS, *k.After.SLAAgainMs, r.sla.Recover))
		}
	}
	return b
}

// judgeModelShare appends a breach to b if too few recommendations came
// from the model the workers were asked to serve.
func (r *Report) judgeModelShare(b []string) []string {
	want := r.sla.MinModelShare
	switch {
	case r.ModelShare == nil:
		return append(b, "no recommendation was read, so the model share could not be measured")
	case r.Strategies[wire.StrategyModel] == 0:
		return append(b, fmt.Sprintf("no recommendation came from the model (%s), want ≥ %.0f%% with strategy model: did the workers load it? (see their logs)",
			r.strategyMix(), 100*want))
	case *r.ModelShare < want:
		return append(b, fmt.Sprintf("model share %.1f%% < %.0f%% (%s): the workers fell back to popularity for most clicks",
			100**r.ModelShare, 100*want, r.strategyMix()))
	}
	return b
}

// strategyMix formats the strategy counts, model first, then by count.
func (r *Report) strategyMix() string {
	if len(r.Strategies) == 0 {
		return "none read"
	}
	names := make([]string, 0, len(r.Strategies))
	var total int64
	for name, n := range r.Strategies {
		names = append(names, name)
		total += n
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := names[i], names[j]
		if (a == wire.StrategyModel) != (b == wire.StrategyModel) {
			return a == wire.StrategyModel
		}
		if r.Strategies[a] != r.Strategies[b] {
			return r.Strategies[a] > r.Strategies[b]
		}
		return a < b
	})
	parts := make([]string, len(names))
	for i, name := range names {
		label := name
		if label == "" {
			label = "(no strategy field)"
		}
		n := r.Strategies[name]
		parts[i] = fmt.Sprintf("%s %s (%.1f%%)", label, thousands(float64(n)), 100*float64(n)/float64(total))
	}
	return strings.Join(parts, " · ")
}

// Err returns nil if the run met its SLA, else an error wrapping ErrSLA that
// names the breaches.
func (r *Report) Err() error {
	if r.SLA.Passed {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrSLA, strings.Join(r.SLA.Breaches, "; "))
}

// WriteJSON writes the report as indented JSON to path, creating its directory.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the report: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("creating the report directory: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	return nil
}

// WriteText writes the human summary.
func (r *Report) WriteText(w io.Writer) error {
	var sb strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&sb, format, a...) }
	r.writeRun(p)
	r.writeWarmup(p)
	r.writeLatency(p)
	r.writeChaos(p)
	r.writeMembership(p)
	r.writeFeatureStore(p)
	r.writePhases(p)
	r.writeVerdict(p)
	_, err := io.WriteString(w, sb.String())
	return err
}

// printer appends a formatted line (or part of one) to the summary.
type printer func(format string, a ...any)

// writeRun writes what ran and what was sent and answered.
func (r *Report) writeRun(p printer) {
	p("\nclickrec loadtest · %s · %s source · %s ev/s planned (peak %s) for %s\n",
		r.Scenario, r.Source, thousands(r.RateTarget), thousands(r.RatePeak), time.Duration(r.DurationS*float64(time.Second)).Round(time.Millisecond))
	p("  hot path ........ %s worker(s), %s, %s; group %s\n", r.workerCounts(), r.Workers.Mode, r.Workers.guarantee(), r.Group)
	p("  topics .......... %s → %s (read_committed)\n", r.EventsTopic, r.RecsTopic)
	p("  model ........... %s\n", r.Model.describe())
	p("  redis ........... %s\n", r.Redis.describe())
	p("  sent ............ %s events in %.1f s = %s ev/s achieved; generator behind schedule p99 %.1f ms, max %.1f ms\n",
		thousands(float64(r.Sent)), r.ElapsedS, thousands(r.RateAchieved), r.Generator.BehindP99Ms, r.Generator.BehindMaxMs)
	if r.Generator.Stopped != "" {
		p("  generator ....... stopped early: %s\n", r.Generator.Stopped)
	}
	p("  outputs ......... %s expected, %s matched · %d missing · %d duplicates · %d unexpected · %d unknown\n",
		thousands(float64(r.Expected)), thousands(float64(r.Matched)), r.Missing, r.Duplicates, r.Unexpected, r.Unknown)
	if r.Late.Sent > 0 {
		p("  late events ..... %d sent: %d within out-of-orderness (must be answered), %d beyond it: %d answered, %d not (not judged)\n",
			r.Late.Sent, r.Late.WithinOutOfOrderness, r.Late.Beyond, r.Late.BeyondWithOutput, r.Late.BeyondWithoutOutput)
	}
	if r.Invalid.Sent > 0 {
		p("  invalid events .. %d sent, %d wrongly answered\n", r.Invalid.Sent, r.Invalid.WithOutput)
	}
	p("  strategies ...... %s\n", r.strategyMix())
}

// writeLatency writes the latency, the machine, the latency split and the drain.
func (r *Report) writeLatency(p printer) {
	l := r.Latency
	p("  latency (ms) .... p50 %.2f  p90 %.2f  p95 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  (n=%d, from intended send time to read_committed read)\n",
		l.P50, l.P90, l.P95, l.P99, l.P999, l.Max, l.Count)
	r.Freshness.write(p)
	c := r.CPU
	workers := ""
	if c.WorkersCores != nil {
		workers = fmt.Sprintf(", workers %.2f", *c.WorkersCores)
	}
	p("  machine ......... %d cores shared with the broker and other users: load %.1f → %.1f, CPU pressure %.0f%% (time some task waited for a CPU); cores used: load test %.2f%s\n",
		c.Cores, c.Load1Start, c.Load1End, 100*c.CPUPressure, c.LoadtestCores, workers)
	if s := r.Split; s != nil {
		p("  latency split ... click → worker scored it: p50 %.1f p95 %.1f p99 %.1f · scored → read (commit, markers, fetch): p50 %.1f p95 %.1f p99 %.1f (ms, ±1)\n",
			s.ToScored.P50, s.ToScored.P95, s.ToScored.P99, s.ScoredRead.P50, s.ScoredRead.P95, s.ScoredRead.P99)
	}
	drain := "complete"
	if !r.Drain.Complete {
		drain = "INCOMPLETE: " + r.Drain.Detail
	}
	p("  drain ........... %s in %.0f ms\n", drain, r.Drain.TookMs)
}

// writeWarmup writes how long the warm-up took and why it ended.
func (r *Report) writeWarmup(p printer) {
	w := r.Warmup
	if w.TookS == 0 {
		return
	}
	how := "latency settled"
	if !w.Settled {
		how = "NOT settled (stopped at the maximum)"
	}
	p("  warm-up ......... %s clicks at %s ev/s in %.1f s, %s; p95 per %.0f s window: %s ms\n",
		thousands(float64(w.Sent)), thousands(w.RateTarget), w.TookS, how, w.WindowS, p95List(w.WindowP95Ms))
}

// writeFeatureStore writes the Redis outages and the feature-store check.
func (r *Report) writeFeatureStore(p printer) {
	for _, o := range r.RedisOutages {
		p("  redis outage .... %s from %.1f s", o.Method, o.AtS)
		if o.EndS > 0 {
			p(" to %.1f s", o.EndS)
		}
		if o.Note != "" {
			p(": %s", o.Note)
		}
		p("%s\n", o.After.describe())
	}
	c := r.FeatureStore
	if c == nil {
		return
	}
	if c.Error != "" {
		p("  feature store ... CHECK FAILED: %s\n", c.Error)
		return
	}
	conv := fmt.Sprintf("not converged within %.0f s", c.TimeoutMs/1000)
	if c.ConvergedMs != nil {
		conv = fmt.Sprintf("converged %.0f ms after the drain", *c.ConvergedMs)
	}
	p("  feature store ... %s users (%s expired, %s with a recommendation): %s; %d mismatched at first, %s (%d round(s))\n",
		thousands(float64(c.Users)), thousands(float64(c.Gone)), thousands(float64(c.WithRecs)), c.counts(), c.FirstMismatches, conv, c.Rounds)
	for _, e := range c.Examples {
		p("    %-11s %s: %s\n", e.Class, e.User, e.Why)
	}
}

// writeChaos writes the kills of the chaos scenario, if any.
func (r *Report) writeChaos(p printer) {
	if len(r.Kills) > 0 {
		p("  chaos ........... %d SIGKILLs, %d restarts, %d unexpected exits:", len(r.Kills), r.Workers.Restarts, r.Workers.UnexpectedExits)
		for _, k := range r.Kills {
			ready := k.ReadyNote
			if ready == "" {
				ready = fmt.Sprintf("ready after %.0f ms", k.ReadyMs)
			}
			p(" %s@%.1fs (%s%s);", k.Instance, k.AtS, ready, k.After.describe())
		}
		p("\n")
	}
}

// writeMembership writes the membership changes of rolling and scale, if any.
func (r *Report) writeMembership(p printer) {
	if len(r.Membership) > 0 {
		p("  membership ...... %d change(s), %d restart(s), %d unexpected exit(s); latency of the clicks due in the %v after each:\n",
			len(r.Membership), r.Workers.Restarts, r.Workers.UnexpectedExits, AfterEventWindow)
		for _, m := range r.Membership {
			p("    %-7s %s @%.1fs", m.Action, m.Instance, m.AtS)
			if m.AtS-m.PlannedS >= 0.1 {
				p(" (due %.1fs)", m.PlannedS)
			}
			if m.Action != ActionStart {
				p(": stopped in %.0f ms", m.StopMs)
				if m.Killed {
					p(" (SIGKILLed after the stop timeout)")
				}
			}
			if m.ReadyS > 0 {
				p(", ready @%.1fs (%.0f ms after its start)", m.ReadyS, m.ReadyMs)
			}
			if m.Note != "" {
				p(", %s", m.Note)
			}
			p(", %d running%s\n", m.Workers, m.After.describe())
		}
	}
}

// writePhases writes the ramp's steps, if more than one.
func (r *Report) writePhases(p printer) {
	if len(r.Phases) > 1 {
		p("  phases:\n")
		for _, ph := range r.Phases {
			mark := ""
			switch {
			case ph.Sent == 0:
				mark = "– "
			case ph.Partial:
				mark = "… "
			case ph.Passed != nil:
				mark = "✓ "
				if !*ph.Passed {
					mark = "✗ "
				}
			}
			if ph.Sent == 0 {
				p("    %s%-9s %6.1f–%6.1f s  %8s ev/s  not run\n", mark, ph.Name, ph.StartS, ph.EndS, thousands(ph.RateTarget))
				continue
			}
			partial := ""
			if ph.Partial {
				partial = fmt.Sprintf("  (cut short after %d events, not judged)", ph.Sent)
			}
			p("    %s%-9s %6.1f–%6.1f s  %8s ev/s → %8s achieved  p50 %7.2f  p95 %7.2f  p99 %7.2f  max %8.2f ms  missing %d  dup %d%s\n",
				mark, ph.Name, ph.StartS, ph.EndS, thousands(ph.RateTarget), thousands(ph.RateAchieved),
				ph.Latency.P50, ph.Latency.P95, ph.Latency.P99, ph.Latency.Max, ph.Missing, ph.Duplicates, partial)
		}
	}
}

// writeVerdict writes the SLA, the notes, the plots and the verdict.
func (r *Report) writeVerdict(p printer) {
	if r.MaxRateMeetingSLA != nil {
		p("  highest rate meeting the SLA: %s ev/s\n", thousands(*r.MaxRateMeetingSLA))
	}
	t := r.SLA.Thresholds
	var th []string
	if t.P95Ms != nil {
		th = append(th, fmt.Sprintf("p95 < %.0f ms", *t.P95Ms))
	}
	if t.P99Ms != nil {
		th = append(th, fmt.Sprintf("p99 < %.0f ms", *t.P99Ms))
	}
	th = append(th, fmt.Sprintf("missing ≤ %d", t.MaxMissing), fmt.Sprintf("duplicates ≤ %d", t.MaxDuplicates), fmt.Sprintf("unexpected ≤ %d", t.MaxUnexpected))
	if t.MinRate != nil {
		th = append(th, fmt.Sprintf("a step of ≥ %s ev/s passes", thousands(*t.MinRate)))
	}
	if t.MinModelShare != nil {
		th = append(th, fmt.Sprintf("model share ≥ %.0f%%", 100**t.MinModelShare))
	}
	if t.MaxFreshnessMs != nil {
		th = append(th, fmt.Sprintf("freshness p95 ≤ %s ms, every new item clicked recommended", thousands(*t.MaxFreshnessMs)))
	}
	p("  SLA ............. %s\n", strings.Join(th, ", "))
	for _, n := range r.Notes {
		p("  note: %s\n", n)
	}
	for _, pl := range r.Plots {
		p("  plot: %s\n", pl)
	}
	if r.SLA.Passed {
		p("  PASS\n")
	} else {
		p("  FAIL: %s\n", strings.Join(r.SLA.Breaches, "; "))
	}
}

// describe formats a as an addition to an event's line.
func (a *AfterEvent) describe() string {
	if a == nil {
		return ""
	}
	if a.Clicks == 0 {
		return fmt.Sprintf(" · next %.1f s: no clicks", a.WindowS)
	}
	again := "; the SLA not met again in it"
	switch {
	case a.SLAAgainMs == nil:
	case *a.SLAAgainMs == 0:
		again = "; SLA met throughout"
	default:
		again = fmt.Sprintf("; SLA met again from %.0f ms on", *a.SLAAgainMs)
	}
	return fmt.Sprintf(" · next %.1f s: p99 %.1f ms, max %.1f ms (%s clicks, %d missing%s)", a.WindowS, a.P99Ms, a.MaxMs, thousands(float64(a.Clicks)), a.Missing, again)
}

// workerCounts says how many workers ran: "2", or "1 → 2 → 3 → 2 → 1"
// when the scale scenario changed their number.
func (r *Report) workerCounts() string {
	seq := []string{fmt.Sprint(r.Workers.Count)}
	n := r.Workers.Count
	for _, m := range r.Membership {
		if m.Action != ActionRestart && m.Workers != n {
			n = m.Workers
			seq = append(seq, fmt.Sprint(n))
		}
	}
	return strings.Join(seq, " → ")
}

// thousands formats x with thin separators: 20000 → "20,000", 999.8 → "999.8".
func thousands(x float64) string {
	s := fmt.Sprintf("%.1f", x)
	if x == math.Trunc(x) || math.Abs(x) >= 10_000 {
		s = fmt.Sprintf("%.0f", x)
	}
	intPart, frac, _ := strings.Cut(s, ".")
	neg := strings.HasPrefix(intPart, "-")
	intPart = strings.TrimPrefix(intPart, "-")
	var b strings.Builder
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	out := b.String()
	if frac != "" {
		out += "." + frac
	}
	if neg {
		out = "-" + out
	}
	return out
}
