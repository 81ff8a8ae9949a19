/* 64-byte aligned allocation (cache line and AVX-512 register width). */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

void *msbnb__alloc(size_t bytes) {
    if (bytes == 0) return NULL;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes) return NULL;
    return aligned_alloc(64, rounded);
}

void *msbnb__calloc(size_t bytes) {
    void *p = msbnb__alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void msbnb__free(void *p) { free(p); }

msbnb_status msbnb__alloc_checked(void **out, size_t bytes, const char *what) {
    *out = msbnb__alloc(bytes);
    if (*out == NULL)
        return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes", what, bytes);
    return MSBNB_OK;
}
