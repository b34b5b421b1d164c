package hotpath

import "container/heap"

type timerKind uint8

const (
	timerFire   timerKind = iota + 1 // a window's end: emit it once the watermark passes
	timerExpire                      // a user's last event + TTL: forget the user
)

// timer is an event-time deadline. Timers are hints: when one pops, the state it
// points at is checked again, so stale timers (a user who came back, a window
// already emitted) cost a lookup and nothing else.
type timer struct {
	at   int64
	kind timerKind
	user string
	arg  int64 // window start for timerFire
}

type timerHeap []timer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	// Equal deadlines pop in a fixed order, so outputs are deterministic.
	if h[i].kind != h[j].kind {
		return h[i].kind < h[j].kind
	}
	if h[i].user != h[j].user {
		return h[i].user < h[j].user
	}
	return h[i].arg < h[j].arg
}
func (h timerHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)   { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}

func (h *timerHeap) add(t timer) { heap.Push(h, t) }

// popDue pops the next timer due at or before wm.
func (h *timerHeap) popDue(wm int64) (timer, bool) {
	if len(*h) == 0 || (*h)[0].at > wm {
		return timer{}, false
	}
	return heap.Pop(h).(timer), true
}

func heapInit(h *timerHeap) { heap.Init(h) }
