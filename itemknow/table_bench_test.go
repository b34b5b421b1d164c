package itemknow

import (
	"math/rand/v2"
	"runtime"
	"testing"
)

// benchIncrements makes n clicks over a skewed catalogue of items, in
// sessions of 5.
func benchIncrements(n, items int) []Increment {
	r := rand.New(rand.NewPCG(7, 8))
	out := make([]Increment, 0, n)
	var sess []int64
	t0 := int64(1_700_000_000_000)
	for i := range n {
		if i%5 == 0 {
			sess = sess[:0]
		}
		it := int64(1 + int(float64(items)*r.Float64()*r.Float64()))
		out = append(out, NewIncrement(t0+int64(i)*10, it, it%50+1, uint64(i/5+1), sess))
		sess = append(sess, it)
	}
	return out
}

// BenchmarkApply is the cost of learning one click into a table of 100,000
// items at its caps.
func BenchmarkApply(b *testing.B) {
	incs := benchIncrements(1<<20, 200_000)
	tb := New(DefaultConfig())
	for _, inc := range incs[:1<<19] {
		tb.Apply(inc)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		tb.Apply(incs[i&(1<<20-1)])
	}
}

// BenchmarkQuery is the cost of each query on a filled table.
func BenchmarkQuery(b *testing.B) {
	incs := benchIncrements(1<<20, 200_000)
	tb := New(DefaultConfig())
	for _, inc := range incs {
		tb.Apply(inc)
	}
	now := incs[len(incs)-1].TimeMs
	out := make([]Scored, 0, 256)
	sessions := [][]int64{{1, 5, 20, 3}, {100, 7}, {2}, {50, 60, 70, 80, 90}}
	b.Run("Candidates", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			out = tb.Candidates(sessions[i&3], 20, out)
		}
	})
	b.Run("Score", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			_ = tb.Score(sessions[i&3], int64(i&63+1))
		}
	})
	b.Run("Neighbours", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			out = tb.Neighbours(int64(i&1023+1), 20, now, out)
		}
	})
	b.Run("PopularIn", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			out = tb.PopularIn(int64(i%50+1), 20, now, out)
		}
	})
}

// BenchmarkMemory reports the heap held per item and per pair of a table
// filled to its item cap.
func BenchmarkMemory(b *testing.B) {
	incs := benchIncrements(1<<20, 200_000)
	for b.Loop() {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		tb := New(DefaultConfig())
		for _, inc := range incs {
			tb.Apply(inc)
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		st := tb.Stats()
		heap := float64(m1.HeapAlloc - m0.HeapAlloc)
		// A pair is 24 bytes in its list (plus slice slack); the rest is the
		// items, their index and lists.
		b.ReportMetric(float64(st.Items), "items")
		b.ReportMetric(float64(st.Pairs), "pairs")
		b.ReportMetric(heap/float64(st.Items), "B/item(all)")
		b.ReportMetric((heap-24*float64(st.Pairs))/float64(st.Items), "B/item(excl.pairs)")
		runtime.KeepAlive(tb)
	}
}
