//go:build !linux || !cgo

package onnx

// trimHeap does nothing where glibc's malloc_trim is not available.
func trimHeap() bool { return false }
