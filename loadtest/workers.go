package loadtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// FleetConfig says how to run hot path workers as child processes.
type FleetConfig struct {
	Bin      string   // the clickrec binary
	Count    int      // workers started at once, instance ids <prefix>w1..w<Count> (Add starts more)
	Args     []string // flags every worker gets after "hotpath" (brokers, group, topics, …)
	Env      []string // added to the inherited environment
	LogDir   string   // each worker's stdout and stderr go to <LogDir>/<instance>.log
	Instance string   // instance id prefix
	// StopTimeout bounds a graceful stop (SIGTERM) before SIGKILL.
	StopTimeout time.Duration
}

// Fleet runs hot path workers as child processes: each in its own process
// group (a Ctrl-C in the terminal reaches the load test only, which then stops
// them in order) and, on Linux, killed by the kernel if the load test itself
// dies. Safe for concurrent use.
type Fleet struct {
	cfg FleetConfig
	log *slog.Logger

	mu         sync.Mutex
	procs      []*proc
	restarts   int
	unexpected int
	closed     bool
	cpuExited  time.Duration // CPU time of the processes that have exited
}

// proc is one worker slot; its process changes on restart.
type proc struct {
	instance string
	logPath  string
	addr     string // host:port of /metrics, /healthz, /readyz
	cmd      *exec.Cmd
	done     chan struct{} // closed when cmd has exited
	exited   bool          // cmd has exited (set under Fleet.mu, before done closes)
	expected bool          // we stopped or killed it
}

// StartFleet starts cfg.Count workers. On error it stops those it started.
func StartFleet(cfg FleetConfig, log *slog.Logger) (*Fleet, error) {
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 15 * time.Second
	}
	if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the worker log directory: %w", err)
	}
	f := &Fleet{cfg: cfg, log: log}
	for i := range cfg.Count {
		inst := fmt.Sprintf("%sw%d", cfg.Instance, i+1)
		p := &proc{instance: inst, logPath: filepath.Join(cfg.LogDir, inst+".log")}
		f.procs = append(f.procs, p)
		if err := f.start(p); err != nil {
			f.Stop()
			return nil, err
		}
	}
	return f, nil
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// start launches p's process. The caller must not hold f.mu.
func (f *Fleet) start(p *proc) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening the worker log: %w", err)
	}
	defer logf.Close() // the child has its own descriptor
	args := append([]string{"hotpath"}, f.cfg.Args...)
	args = append(args, "--instance-id", p.instance, "--http-addr", addr)
	cmd := exec.Command(f.cfg.Bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), f.cfg.Env...)
	cmd.SysProcAttr = childAttr()
	fmt.Fprintf(logf, "---- %s: %s %q\n", time.Now().Format(time.RFC3339Nano), f.cfg.Bin, args)
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return errors.New("the fleet is stopped")
	}
	if err := cmd.Start(); err != nil {
		f.mu.Unlock()
		return fmt.Errorf("starting worker %s (%s): %w", p.instance, f.cfg.Bin, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.addr, p.expected, p.exited = cmd, done, addr, false, false
	f.mu.Unlock()
	f.log.Info("worker started", "instance", p.instance, "pid", cmd.Process.Pid, "http", addr, "log", p.logPath)
	go func() {
		err := cmd.Wait()
		f.mu.Lock()
		if st := cmd.ProcessState; st != nil {
			f.cpuExited += st.UserTime() + st.SystemTime()
		}
		if p.cmd == cmd {
			p.exited = true
		}
		expected := p.cmd == cmd && p.expected || p.cmd != cmd
		if !expected {
			f.unexpected++
		}
		f.mu.Unlock()
		close(done)
		if !expected {
			f.log.Error("worker exited unexpectedly", "instance", p.instance, "pid", cmd.Process.Pid, "err", err, "log", p.logPath)
		}
	}()
	return nil
}

// WaitReady waits until every worker answers /readyz with 200, a worker
// exits, or ctx ends.
func (f *Fleet) WaitReady(ctx context.Context) error {
	f.mu.Lock()
	n := len(f.procs)
	f.mu.Unlock()
	for i := range n {
		if _, err := f.waitReady(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// waitReady polls worker i's /readyz every 50 ms and returns how long it took.
func (f *Fleet) waitReady(ctx context.Context, i int) (time.Duration, error) {
	start := time.Now()
	f.mu.Lock()
	p := f.procs[i]
	addr, done := p.addr, p.done
	f.mu.Unlock()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
		if err != nil {
			return 0, fmt.Errorf("checking worker %s: %w", p.instance, err)
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start), nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("worker %s not ready (see %s): %w", p.instance, p.logPath, ctx.Err())
		case <-done:
			return 0, fmt.Errorf("worker %s exited before it was ready (see %s)", p.instance, p.logPath)
		case <-tick.C:
		}
	}
}

// Kill sends SIGKILL to worker i and waits until it is gone.
func (f *Fleet) Kill(i int) error {
	f.mu.Lock()
	p := f.procs[i]
	p.expected = true
	cmd, done := p.cmd, p.done
	f.mu.Unlock()
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing worker %s: %w", p.instance, err)
	}
	<-done
	f.log.Warn("worker killed (SIGKILL)", "instance", p.instance, "pid", cmd.Process.Pid)
	return nil
}

// Terminate stops worker i gracefully, as Kubernetes stops a pod: SIGTERM,
// then SIGKILL if it has not exited within StopTimeout. It returns how long
// the process took to go and whether it had to be killed. The slot stays, so
// Restart can start it again.
func (f *Fleet) Terminate(i int) (took time.Duration, killed bool, err error) {
	f.mu.Lock()
	p := f.procs[i]
	p.expected = true
	cmd, done := p.cmd, p.done
	f.mu.Unlock()
	if cmd == nil {
		return 0, false, fmt.Errorf("worker %s was never started", p.instance)
	}
	start := time.Now()
	select {
	case <-done:
		return 0, false, fmt.Errorf("worker %s had already exited (see %s)", p.instance, p.logPath)
	default:
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return 0, false, fmt.Errorf("stopping worker %s: %w", p.instance, err)
	}
	killed = f.awaitExit(p, cmd, done)
	took = time.Since(start)
	f.log.Info("worker stopped (SIGTERM)", "instance", p.instance, "pid", cmd.Process.Pid, "took", took.Round(time.Millisecond), "killed", killed)
	return took, killed, nil
}

// awaitExit waits until cmd has exited, SIGKILLing it after StopTimeout,
// and reports whether it had to be killed.
func (f *Fleet) awaitExit(p *proc, cmd *exec.Cmd, done chan struct{}) (killed bool) {
	t := time.NewTimer(f.cfg.StopTimeout)
	defer t.Stop()
	select {
	case <-done:
		return false
	case <-t.C:
		f.log.Warn("worker did not stop in time; killing it", "instance", p.instance, "timeout", f.cfg.StopTimeout)
		_ = cmd.Process.Kill()
		<-done
		return true
	}
}

// Add starts one more worker with a new instance id (<prefix>w<n+1>) and
// returns its index.
func (f *Fleet) Add() (int, error) {
	f.mu.Lock()
	i := len(f.procs)
	inst := fmt.Sprintf("%sw%d", f.cfg.Instance, i+1)
	p := &proc{instance: inst, logPath: filepath.Join(f.cfg.LogDir, inst+".log")}
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	return i, f.start(p)
}

// Running returns how many worker processes are alive.
func (f *Fleet) Running() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, p := range f.procs {
		if p.cmd != nil && !p.exited {
			n++
		}
	}
	return n
}

// Restart starts worker i again with the same instance id (so it fences
// its predecessor's transactions and takes over its static group membership).
func (f *Fleet) Restart(i int) error {
	f.mu.Lock()
	p := f.procs[i]
	f.restarts++
	f.mu.Unlock()
	return f.start(p)
}

// Instances returns the workers' instance ids, those added later included.
func (f *Fleet) Instances() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, len(f.procs))
	for i, p := range f.procs {
		out[i] = p.instance
	}
	return out
}

// Logs returns the workers' log files.
func (f *Fleet) Logs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, len(f.procs))
	for i, p := range f.procs {
		out[i] = p.logPath
	}
	return out
}

// Stats returns the restarts and the exits nobody asked for so far.
func (f *Fleet) Stats() (restarts, unexpectedExits int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restarts, f.unexpected
}

// CPU returns the CPU time all worker processes have used so far, those
// that exited included. ok is false where a live process's time cannot be
// read (no /proc).
func (f *Fleet) CPU() (cpu time.Duration, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cpu, ok = f.cpuExited, true
	for _, p := range f.procs {
		if p.cmd == nil || p.exited {
			continue // counted in cpuExited
		}
		c, err := processCPU(p.cmd.Process.Pid)
		if err != nil {
			ok = false
			continue
		}
		cpu += c
	}
	return cpu, ok
}

// Stop stops every worker: SIGTERM (they leave the group and close
// cleanly), then SIGKILL after StopTimeout. It waits for all of them and may
// be called more than once.
func (f *Fleet) Stop() {
	f.mu.Lock()
	f.closed = true
	type victim struct {
		p    *proc
		cmd  *exec.Cmd
		done chan struct{}
	}
	var vs []victim
	for _, p := range f.procs {
		if p.cmd == nil {
			continue
		}
		p.expected = true
		vs = append(vs, victim{p, p.cmd, p.done})
	}
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, v := range vs {
		wg.Go(func() {
			select {
			case <-v.done:
				return
			default:
			}
			_ = v.cmd.Process.Signal(syscall.SIGTERM)
			f.awaitExit(v.p, v.cmd, v.done)
		})
	}
	wg.Wait()
}
