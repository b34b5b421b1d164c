package onnx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// LibraryEnv names the environment variable that holds the absolute path of
// libonnxruntime.so.1 (what scripts/onnxruntime.sh install prints).
const LibraryEnv = "CLICKREC_ONNXRUNTIME_LIB"

// ortVersion is the ONNX Runtime release scripts/onnxruntime.sh installs.
const ortVersion = "1.24.3"

// InstallHint tells a user how to get the ONNX Runtime library.
const InstallHint = "run scripts/onnxruntime.sh install and export its output as " + LibraryEnv

// ErrNoLibrary is returned (wrapped) when the ONNX Runtime shared library
// cannot be found.
var ErrNoLibrary = errors.New("ONNX Runtime library not found")

// LibraryPath resolves the ONNX Runtime shared library: explicit if not
// empty, else $CLICKREC_ONNXRUNTIME_LIB, else the file scripts/onnxruntime.sh
// installs ($CLICKREC_CACHE, default ~/.cache/clickrec, then
// onnxruntime-1.24.3/libonnxruntime.so.1). The result is absolute and exists.
func LibraryPath(explicit string) (string, error) {
	p := explicit
	if p == "" {
		p = os.Getenv(LibraryEnv)
	}
	if p == "" {
		cache := os.Getenv("CLICKREC_CACHE")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("%w: %s is not set and there is no home directory (%w); %s", ErrNoLibrary, LibraryEnv, err, InstallHint)
			}
			cache = filepath.Join(home, ".cache", "clickrec")
		}
		p = filepath.Join(cache, "onnxruntime-"+ortVersion, "libonnxruntime.so.1")
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrNoLibrary, p, err)
	}
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("%w: %w; %s", ErrNoLibrary, err, InstallHint)
	}
	return abs, nil
}

// The ONNX Runtime environment is process-wide: it is initialized once, by the
// first scorer created (or by someone else in the process), and never
// destroyed, so scorers can come and go (model swaps) without re-initializing.
var env struct {
	mu   sync.Mutex
	path string // library the environment was initialized with; "" if not by us
}

// initEnvironment initializes the ONNX Runtime environment with the library
// at lib (absolute) unless it is initialized already. A failed attempt is not
// remembered, so a later call (say, after installing the library) can succeed.
func initEnvironment(lib string) error {
	env.mu.Lock()
	defer env.mu.Unlock()
	if ort.IsInitialized() {
		if env.path != "" && env.path != lib {
			return fmt.Errorf("ONNX Runtime already initialized with %s, cannot switch to %s in the same process", env.path, lib)
		}
		return nil
	}
	ort.SetSharedLibraryPath(lib)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return fmt.Errorf("initialize ONNX Runtime from %s: %w", lib, err)
	}
	env.path = lib
	return nil
}
