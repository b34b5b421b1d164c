//go:build unix && !linux

package loadtest

import (
	"errors"
	"syscall"
	"time"
)

// childAttr puts a worker in its own process group, so that a terminal's
// Ctrl-C reaches the load test only, which then stops the workers in order.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// processCPU is not available here.
func processCPU(int) (time.Duration, error) { return 0, errors.New("no /proc on this platform") }

// selfCPU returns the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineLoad is not available here.
func machineLoad() (load1, cpuPressure float64) { return -1, -1 }
