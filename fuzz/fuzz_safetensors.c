/* libFuzzer target: the safetensors header parser and validator (msbnb_st_open_memory).
 *
 * A hostile file must give a status, never a crash or an out-of-bounds read. Every
 * accepted file is walked completely: each tensor's metadata is checked for consistency
 * and every data byte is read, so an offset the validator let through past the end of
 * the image is caught by ASan (the input buffer is exactly `size` bytes). */
#include "msbnb/safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fuzz_assert(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fuzz_safetensors: invariant violated: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    msbnb_st_file_t *f = NULL;
    msbnb_status st = msbnb_st_open_memory(&f, data, size, "fuzz");
    if (st != MSBNB_OK) {
        fuzz_assert(f == NULL, "failed open leaves *out NULL");
        fuzz_assert(msbnb_last_error() != NULL && msbnb_last_error()[0] != '\0',
                    "failed open sets a message");
        return 0;
    }
    size_t n = msbnb_st_count(f);
    uint64_t total = 0;
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < n; i++) {
        msbnb_st_tensor_info t;
        fuzz_assert(msbnb_st_get(f, i, &t) == MSBNB_OK, "st_get in range succeeds");
        fuzz_assert(t.name != NULL, "tensor has a name");
        fuzz_assert(t.ndim >= 0 && t.ndim <= MSBNB_ST_MAX_DIMS, "ndim in range");
        int64_t numel = 1;
        for (int d = 0; d < t.ndim; d++) {
            fuzz_assert(t.shape[d] >= 0, "dims non-negative");
            numel *= t.shape[d]; /* validator guarantees no overflow */
        }
        fuzz_assert(numel == t.numel, "numel = product of shape");
        fuzz_assert(t.nbytes == (uint64_t)numel * msbnb_dtype_size(t.dtype), "nbytes = numel x size");
        fuzz_assert(t.nbytes <= size, "tensor inside the image");
        const uint8_t *p = (const uint8_t *)t.data;
        fuzz_assert(t.nbytes == 0 || (p >= data && p + t.nbytes <= data + size),
                    "data pointer inside the image");
        for (uint64_t b = 0; b < t.nbytes; b++) sink ^= p[b];
        total += t.nbytes;
        msbnb_st_tensor_info again;
        fuzz_assert(msbnb_st_find(f, t.name, &again) == MSBNB_OK, "find by name");
        fuzz_assert(again.data == t.data && again.nbytes == t.nbytes, "find agrees with get");
    }
    fuzz_assert(total <= size, "tensors do not overlap");
    msbnb_st_tensor_info none;
    fuzz_assert(msbnb_st_get(f, n, &none) != MSBNB_OK, "st_get past the end fails");
    (void)msbnb_st_metadata(f, "format");
    (void)sink;
    msbnb_st_close(f);
    return 0;
}
