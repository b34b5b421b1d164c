// Package redistest holds Redis helpers for tests: hooks that put another
// client's write into a race window, to prove compare-and-set scripts.
package redistest

import (
	"context"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// ScriptHook is a go-redis hook that runs a function once, just before its
// client's first Lua script (EVAL or EVALSHA): a test puts another client's
// write between the moment code judged Redis's state and its script's write,
// the race a compare-and-set must survive.
type ScriptHook struct {
	before func(context.Context) error
	fired  atomic.Bool
	err    atomic.Pointer[error]
}

// BeforeFirstScript returns a hook that calls before once, before the first
// script; add it to a client with AddHook.
func BeforeFirstScript(before func(context.Context) error) *ScriptHook {
	return &ScriptHook{before: before}
}

// Fired reports whether the function ran.
func (h *ScriptHook) Fired() bool { return h.fired.Load() }

// Err is what the function returned.
func (h *ScriptHook) Err() error {
	if e := h.err.Load(); e != nil {
		return *e
	}
	return nil
}

// DialHook implements redis.Hook.
func (h *ScriptHook) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessPipelineHook implements redis.Hook.
func (h *ScriptHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// ProcessHook implements redis.Hook.
func (h *ScriptHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); (n == "evalsha" || n == "eval") && h.fired.CompareAndSwap(false, true) {
			if err := h.before(ctx); err != nil {
				h.err.Store(&err)
			}
		}
		return next(ctx, cmd)
	}
}
