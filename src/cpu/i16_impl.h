/* The 15-bit integer activations of the small-m 4-bit kernels (gemv_avx2.c, gemv_avx512.c;
 * the error bound they share is in gemv_avx2.c and tests/test_linear.c's i16_slack). Each
 * 64-element chunk of x is rounded to steps of amax / 16383, amax its largest |x|, so that
 * 8 products with 15-bit codes fit an int32 lane. Included by one tier's file each; SSE2
 * only, so every tier rounds alike. */
#ifndef MSBNB_CPU_I16_IMPL_H
#define MSBNB_CPU_I16_IMPL_H

#include "cpu/gemv.h"

#include <emmintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MSBNB__I16_ONE 16383

/* Whether a weight suits the integer kernels whose chunks are `chunk` elements (64: AVX2,
 * 128: AVX-512): K a multiple of the chunk, scale units of 32 or a multiple of 64 (so each
 * 32-element lane group lies in one unit), NF4 / FP4 rows starting on a block (their blocks
 * run over the flattened tensor; INT4 groups restart at each row) and codes within [-1, 1]. */
static inline int msbnb__i16_ok(const msbnb__wview *w, int64_t chunk) {
    if (w->exact || w->k % chunk) return 0;
    const int64_t b = w->block;
    if (b != 32 && b % 64) return 0;
    if (w->type == MSBNB_QTYPE_INT4) return 1;
    if (w->k % b) return 0;
    if (w->type != MSBNB_QTYPE_NF4 && w->type != MSBNB_QTYPE_FP4) return 0;
    for (int i = 0; i < 16; i++)
        if (!(fabsf(w->code[i]) <= 1.0f)) return 0;
    return 1;
}

/* The 16 codes as 15-bit integers split into low and high bytes, the two vpshufb tables:
 * NF4 / FP4 round(code · 16383), INT4 q - 8 (symmetric) or q, exact. */
static inline void msbnb__i16_code_bytes(const msbnb__wview *w, uint8_t lo[16], uint8_t hi[16]) {
    const int int4 = w->type == MSBNB_QTYPE_INT4;
    for (int i = 0; i < 16; i++) {
        const int v = int4 ? (w->symmetric ? i - 8 : i) : (int)lrintf(w->code[i] * (float)MSBNB__I16_ONE);
        lo[i] = (uint8_t)(v & 0xff);
        hi[i] = (uint8_t)((v >> 8) & 0xff);
    }
}

/* q[j] = x[j] · 16383 / amax rounded to nearest, ties to even (cvtps2dq). Returns the
 * chunk's step amax / 16383 · cscale; a NaN or Inf input gives step NaN (so the chunk's
 * products are NaN) and a chunk below 1e-30 counts as zero (16383 / amax would overflow
 * for denormals): zero codes then. */
static inline float msbnb__i16_chunk(int32_t q[64], const float *x, float cscale) {
    const __m128 sgn = _mm_set1_ps(-0.0f);
    __m128 mx = _mm_setzero_ps(), un = _mm_setzero_ps();
    for (int j = 0; j < 64; j += 4) {
        const __m128 v = _mm_loadu_ps(x + j);
        mx = _mm_max_ps(mx, _mm_andnot_ps(sgn, v)); /* a NaN is caught by un */
        un = _mm_or_ps(un, _mm_cmpunord_ps(v, v));
    }
    mx = _mm_max_ps(mx, _mm_movehl_ps(mx, mx));
    mx = _mm_max_ss(mx, _mm_shuffle_ps(mx, mx, 1));
    const float amax = _mm_cvtss_f32(mx);
    const int nan = _mm_movemask_ps(un) != 0;
    if (nan || amax > 3.4e38f || amax < 1e-30f) {
        memset(q, 0, 64 * sizeof *q);
        return amax < 1e-30f && !nan ? 0.0f : NAN;
    }
    const __m128 inv = _mm_set1_ps((float)MSBNB__I16_ONE / amax);
    for (int j = 0; j < 64; j += 4)
        _mm_storeu_si128((__m128i *)(q + j), _mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(x + j), inv)));
    return amax / (float)MSBNB__I16_ONE * cscale;
}

#endif
