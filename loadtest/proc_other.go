//go:build !unix

package loadtest

import (
	"errors"
	"syscall"
	"time"
)

// childAttr has nothing to set on this platform.
func childAttr() *syscall.SysProcAttr { return nil }

// processCPU is not available here.
func processCPU(int) (time.Duration, error) { return 0, errors.New("not available on this platform") }

// selfCPU is not available here.
func selfCPU() time.Duration { return 0 }

// machineLoad is not available here.
func machineLoad() (load1, cpuPressure float64) { return -1, -1 }
