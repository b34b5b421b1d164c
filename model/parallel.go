package model

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// parallelFor runs fn over [0, n) in blocks of at most block rows on up to
// workers goroutines. Blocks are handed out dynamically, so fn must make each
// block's result independent of which worker runs it (that keeps training
// deterministic for any worker count). fn receives the block number lo/block.
func parallelFor(n, block, workers int, fn func(blk, lo, hi int)) {
	if n <= 0 {
		return
	}
	if block < 1 {
		block = 1
	}
	nb := (n + block - 1) / block
	if workers < 1 {
		workers = runtime.GOMAXPROCS(0)
	}
	if workers > nb {
		workers = nb
	}
	if workers == 1 {
		for b := 0; b < nb; b++ {
			lo := b * block
			fn(b, lo, min(lo+block, n))
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	wg.Add(workers)
	for w := 0; w < workers; w++ {
		go func() {
			defer wg.Done()
			for {
				b := int(next.Add(1) - 1)
				if b >= nb {
					return
				}
				lo := b * block
				fn(b, lo, min(lo+block, n))
			}
		}()
	}
	wg.Wait()
}
