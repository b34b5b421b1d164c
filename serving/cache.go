package serving

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/clickrec/clickrec/model/registry"
)

// The cache keeps the registry version a worker served last on its local
// disk (Options.CacheDir), so that a worker restarted while Redis is down
// serves that version at once instead of waiting for the registry, and
// follows the registry again when it answers. One version is kept: its
// files under <dir>/current, replaced whole by a rename.
const (
	cacheCurrent   = "current"
	cacheVersion   = "version"
	cacheModel     = "model.bin"
	cacheONNX      = "model.onnx"
	cacheReference = "reference.json"
)

// saveCache writes v, the registry's version, as the cached one (version
// "": the registry had no current version, none was served).
func (o Options) saveCache(version string, v *registry.Version) error {
	if o.CacheDir == "" {
		return nil
	}
	if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
		return fmt.Errorf("creating the model cache %s: %w", o.CacheDir, err)
	}
	tmp, err := os.MkdirTemp(o.CacheDir, "writing-")
	if err != nil {
		return fmt.Errorf("writing the model cache: %w", err)
	}
	defer os.RemoveAll(tmp) // what the rename did not take
	files := map[string][]byte{cacheVersion: []byte(version), cacheModel: v.Model, cacheONNX: v.ONNX, cacheReference: v.Meta.Reference}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			return fmt.Errorf("writing the model cache: %w", err)
		}
	}
	cur := filepath.Join(o.CacheDir, cacheCurrent)
	old := cur + ".old"
	_ = os.RemoveAll(old)
	if err := os.Rename(cur, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("replacing the model cache: %w", err)
	}
	if err := os.Rename(tmp, cur); err != nil {
		return fmt.Errorf("replacing the model cache: %w", err)
	}
	return os.RemoveAll(old)
}

// loadCache reads the cached version; ok is false if there is none, and
// version "" says the worker served no model (the registry had none).
func (o Options) loadCache() (version string, v registry.Version, ok bool, err error) {
	if o.CacheDir == "" {
		return "", v, false, nil
	}
	dir := filepath.Join(o.CacheDir, cacheCurrent)
	ver, err := os.ReadFile(filepath.Join(dir, cacheVersion))
	if errors.Is(err, fs.ErrNotExist) {
		return "", v, false, nil
	}
	read := func(name string) []byte {
		b, rerr := os.ReadFile(filepath.Join(dir, name))
		if rerr != nil && err == nil {
			err = rerr
		}
		return b
	}
	v.Model, v.ONNX, v.Meta.Reference = read(cacheModel), read(cacheONNX), read(cacheReference)
	if err != nil {
		return "", v, false, fmt.Errorf("reading the model cache %s: %w", dir, err)
	}
	if len(v.ONNX) == 0 {
		v.ONNX = nil
	}
	return string(ver), v, true, nil
}
