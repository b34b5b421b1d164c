//go:build linux && cgo

package onnx

/*
#include <stddef.h>
// Declared weak so that the package also links against a C library without
// malloc_trim (musl): the call is then skipped.
extern int malloc_trim(size_t pad) __attribute__((weak));
static int clickrec_malloc_trim(void) {
	if (malloc_trim) {
		return malloc_trim(0);
	}
	return -1;
}
*/
import "C"

// trimWithCgo says that trimHeap can call into the C library.
const trimWithCgo = true

// trimHeap returns free C heap pages to the system (glibc malloc_trim(0)),
// reporting whether malloc_trim exists. ONNX Runtime frees a session's memory
// with free(), which glibc keeps in its arenas; repeated model swaps would
// otherwise grow RSS.
func trimHeap() bool {
	return C.clickrec_malloc_trim() >= 0
}
