package workflows

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Files in a retrain version's work directory.
const (
	fileEvents    = "events.jsonl"   // the training window's valid clicks, event.Click JSON lines
	fileWindows   = "windows.jsonl"  // user_session_windows records of the same window
	fileCollected = "collected.json" // CollectOutput: written last, marks the window complete
	fileHoldout   = "holdout.jsonl"  // the holdout sessions (holdoutSession lines)
	fileTrained   = "trained.json"   // TrainOutput: written last, marks training complete
	dirModel      = "model"          // model.Save directory
	fileONNX      = "model.onnx"     // the exported graph
	fileReference = "reference.json" // drift.ReferenceSet
)

// versionDir is the work directory of a retrain version.
func (a *Activities) versionDir(version string) (string, error) {
	if version == "" || version != filepath.Base(version) || version == "." || version == ".." {
		return "", badInput("version %q is not a plain name", version)
	}
	if a.WorkDir == "" {
		return "", badInput("the worker has no work directory")
	}
	return filepath.Join(a.WorkDir, version), nil
}

// writeFileAtomic writes b to path through a synced temporary file and a
// rename, so path is either absent or complete.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("cannot create a temporary file for %s: %w", path, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	return nil
}

// writeJSON writes v to path as indented JSON, atomically.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("cannot encode %s: %w", path, err)
	}
	return writeFileAtomic(path, append(b, '\n'))
}

// readJSON decodes path into v; ok is false if the file does not exist.
func readJSON(path string, v any) (ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cannot read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("cannot decode %s: %w", path, err)
	}
	return true, nil
}

// eachLine calls fn with every non-empty line of a file.
func eachLine(path string, fn func([]byte)) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cannot open %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<16), 1<<24)
	for sc.Scan() {
		if len(sc.Bytes()) > 0 {
			fn(sc.Bytes())
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("cannot read %s: %w", path, err)
	}
	return nil
}

// CleanWorkDir removes a version's work directory (unless KeepWorkDir).
// The registry holds everything a registered version needs.
func (a *Activities) CleanWorkDir(ctx context.Context, version string) error {
	dir, err := a.versionDir(version)
	if err != nil || a.KeepWorkDir {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("cannot remove %s: %w", dir, err)
	}
	return nil
}
