/* Internal entry points of the CUDA backend that exist for the tests only (not installed,
 * not exported from the shared library; the tests link the static one). */
#ifndef MSBNB_CUDA_TESTHOOKS_H
#define MSBNB_CUDA_TESTHOOKS_H

#include "msbnb/core.h"

#include <stdint.h>

/* adamw_cuda.cu: over the float bit patterns first + i * step (i < count, mod 2^32), counts
 * where the 8-bit AdamW's table coder and bitsandbytes' binary search (msbnb__dcode8_of)
 * give different codes for the 256-entry host code; *example (may be NULL) gets one such
 * pattern; *usable (may be NULL): whether the fast AdamW kernel accepts this code.
 * Synchronous. Errors: INVALID_ARGUMENT, CUDA. */
msbnb_status msbnb__cuda_q8f_check(const float *code, uint64_t first, uint64_t step, uint64_t count,
                                   uint64_t *mismatches, uint32_t *example, int *usable);

#endif
