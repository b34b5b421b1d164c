package loadtest

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/clickrec/clickrec/gen"
)

// Phase is a stretch of a run with one constant arrival rate: a ramp step, a
// burst, or the whole of a steady run.
type Phase struct {
	Name       string        // "steady", "step 3", "burst 2", …
	Start, End time.Duration // offsets from the start of the measured run
	Rate       float64       // events per second
}

// Plan is the open-model schedule of a measured run: consecutive phases of
// constant rate. Event i is due at a fixed offset from the start whatever the
// system under test does, so a stall shows up as latency, not as a lower rate.
type Plan struct {
	Phases []Phase
	first  []int64 // index of each phase's first event; first[len(Phases)] = total
	custom gen.Schedule
	total  int64
}

// NewPlan returns the plan of the given phases, which must be contiguous from
// offset 0, each at least 1 ms long, with a positive rate. Phase k holds
// round(rate × length) events, evenly spaced from its start.
func NewPlan(phases []Phase) (*Plan, error) {
	if len(phases) == 0 {
		return nil, errors.New("a plan needs at least one phase")
	}
	p := &Plan{Phases: phases, first: make([]int64, len(phases)+1)}
	var at time.Duration
	for k, ph := range phases {
		switch {
		case ph.Start != at:
			return nil, fmt.Errorf("phase %q starts at %v, want %v (phases must be contiguous)", ph.Name, ph.Start, at)
		case ph.End-ph.Start < time.Millisecond:
			return nil, fmt.Errorf("phase %q is shorter than 1ms", ph.Name)
		case !(ph.Rate > 0) || math.IsInf(ph.Rate, 0):
			return nil, fmt.Errorf("phase %q: rate must be a positive number, got %v", ph.Name, ph.Rate)
		}
		n := int64(math.Round(ph.Rate * (ph.End - ph.Start).Seconds()))
		p.first[k+1] = p.first[k] + n
		at = ph.End
	}
	p.total = p.first[len(phases)]
	return p, nil
}

// SteadyPlan is one phase of rate events per second for d.
func SteadyPlan(rate float64, d time.Duration) (*Plan, error) {
	return NewPlan([]Phase{{Name: "steady", End: d, Rate: rate}})
}

// RampPlan is one step of stepDur per rate, in the given order.
func RampPlan(rates []float64, stepDur time.Duration) (*Plan, error) {
	phases := make([]Phase, len(rates))
	for i, r := range rates {
		phases[i] = Phase{Name: fmt.Sprintf("step %d", i+1), Start: time.Duration(i) * stepDur, End: time.Duration(i+1) * stepDur, Rate: r}
	}
	return NewPlan(phases)
}

// BurstPlan runs at base events per second and, at the end of every period
// of length every, at burst events per second for burstDur, for d in all.
func BurstPlan(base, burst float64, every, burstDur, d time.Duration) (*Plan, error) {
	if burstDur >= every {
		return nil, fmt.Errorf("burst duration %v must be shorter than the burst period %v", burstDur, every)
	}
	var phases []Phase
	add := func(name string, rate float64, start, end time.Duration) {
		end = min(end, d)
		if end-start >= time.Millisecond {
			phases = append(phases, Phase{Name: name, Start: start, End: end, Rate: rate})
		}
	}
	for k, t := 1, time.Duration(0); t < d; k, t = k+1, t+every {
		add(fmt.Sprintf("base %d", k), base, t, t+every-burstDur)
		add(fmt.Sprintf("burst %d", k), burst, t+every-burstDur, t+every)
	}
	if len(phases) > 0 {
		// Absorb a sliver shorter than 1 ms at the end into the last phase.
		phases[len(phases)-1].End = d
	}
	return NewPlan(phases)
}

// ReplayPlan wraps the schedule of a Taobao replay of n events: one phase at
// its mean rate, with the replay's own (bursty, real) timing.
func ReplayPlan(r *gen.Replay, n int64) (*Plan, error) {
	if n <= 0 {
		return nil, errors.New("the replay has no events")
	}
	sched := r.Schedule()
	if sched == nil {
		return nil, errors.New("the replay needs a speedup above 0: the load test is always paced")
	}
	// The replay's last event is due at Offset(n-1); the run lasts one mean
	// inter-arrival time longer, so that the mean rate is n / duration.
	last := sched(n - 1)
	d := last + max(last/time.Duration(max(n-1, 1)), time.Millisecond)
	p, err := NewPlan([]Phase{{Name: "replay", End: d, Rate: float64(n) / d.Seconds()}})
	if err != nil {
		return nil, err
	}
	p.custom, p.total, p.first[1] = sched, n, n
	return p, nil
}

// Events returns how many events the plan sends.
func (p *Plan) Events() int64 { return p.total }

// Duration returns the planned length of the run.
func (p *Plan) Duration() time.Duration { return p.Phases[len(p.Phases)-1].End }

// MeanRate returns the planned events per second over the whole run.
func (p *Plan) MeanRate() float64 { return float64(p.total) / p.Duration().Seconds() }

// PeakRate returns the highest phase rate.
func (p *Plan) PeakRate() float64 {
	var m float64
	for _, ph := range p.Phases {
		m = max(m, ph.Rate)
	}
	return m
}

// PhaseOfEvent returns the phase event i belongs to.
func (p *Plan) PhaseOfEvent(i int64) int {
	k := sort.Search(len(p.Phases), func(k int) bool { return p.first[k+1] > i })
	return min(k, len(p.Phases)-1)
}

// Schedule returns the plan as a gen.Schedule: the offset at which event i is due.
func (p *Plan) Schedule() gen.Schedule {
	if p.custom != nil {
		return p.custom
	}
	return p.offset
}

func (p *Plan) offset(i int64) time.Duration {
	k := p.PhaseOfEvent(i)
	ph := p.Phases[k]
	return ph.Start + time.Duration(float64(i-p.first[k])*float64(time.Second)/ph.Rate)
}

// PhaseAt returns the phase whose time span holds offset d (the last one
// for d past the end, the first for d before the start).
func (p *Plan) PhaseAt(d time.Duration) int {
	k := sort.Search(len(p.Phases), func(k int) bool { return p.Phases[k].End > d })
	return min(k, len(p.Phases)-1)
}
