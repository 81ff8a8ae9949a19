/* Helpers shared by the CUDA tests: device buffers from host data, device -> host copies,
 * and the skip rule (no GPU or no CUDA build: print "SKIPPED: ..." and exit 77, which CTest
 * reports as skipped). */
#ifndef MSBNB_CUDA_TESTUTIL_H
#define MSBNB_CUDA_TESTUTIL_H

#include "testutil.h"

#include <stdlib.h>

#ifdef MSBNB_HAVE_CUDA
/* Device copy of n bytes of host data (n > 0); NULL after a failed CHECK. */
static inline void *cu_up(const void *h, size_t n) {
    void *d = NULL;
    CHECK_OK(msbnb_cuda_malloc(&d, n));
    if (d) CHECK_OK(msbnb_cuda_memcpy(d, h, n, MSBNB_CUDA_HOST_TO_DEVICE));
    return d;
}
/* Device buffer of n bytes filled with 0xFF (NaN for floats): outputs must be written. */
static inline void *cu_poison(size_t n) {
    void *d = NULL;
    CHECK_OK(msbnb_cuda_malloc(&d, n));
    if (d) CHECK_OK(msbnb_cuda_memset(d, 0xFF, n));
    return d;
}
/* Host copy (malloc) of n device bytes. */
static inline void *cu_down(const void *d, size_t n) {
    void *h = malloc(n);
    CHECK(h != NULL);
    if (h && d) CHECK_OK(msbnb_cuda_memcpy(h, d, n, MSBNB_CUDA_DEVICE_TO_HOST));
    return h;
}
static inline int cu_ndiff(const void *a, const void *b, size_t n) {
    const uint8_t *x = (const uint8_t *)a, *y = (const uint8_t *)b;
    int d = 0;
    for (size_t i = 0; i < n; i++) d += x[i] != y[i];
    return d;
}
static inline int cu_skip_if_no_device(void) {
    if (msbnb_cuda_device_count() > 0) {
        msbnb_cuda_device_info info;
        if (msbnb_cuda_device_info_get(&info) == MSBNB_OK)
            printf("device: %s (sm_%d%d, %d SMs)\n", info.name, info.cc_major, info.cc_minor, info.sm_count);
        return 0;
    }
    printf("SKIPPED: no CUDA device\n");
    tu_finish();
    return 1;
}
#endif
#define CU_SKIP_CODE 77

#endif
