//go:build !linux || !cgo

package onnx

// trimWithCgo says that trimHeap can call into the C library.
const trimWithCgo = false

// trimHeap does nothing where glibc's malloc_trim is not available.
func trimHeap() bool { return false }
