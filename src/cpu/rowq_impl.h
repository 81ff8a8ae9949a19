/* Element-wise integer quantization loops shared by every tier: this header is included by
 * kernels_ref.c, kernels_avx2.c and kernels_avx512.c, each compiled for its ISA, so the
 * compiler vectorises the same C for each (rintf becomes vroundps under SSE4.1+). The
 * results are identical across tiers: every step is one correctly rounded IEEE
 * operation (multiply or divide, round-to-nearest-even, add of an integer, clamp), which
 * the tier test checks bit for bit. */
#ifndef MSBNB_CPU_ROWQ_IMPL_H
#define MSBNB_CPU_ROWQ_IMPL_H

#include <math.h>
#include <stdint.h>

/* q[i] = clamp_int8(rint(divide ? x[i] / s : x[i] * s) + z); NaN -> 0; mask[i] != 0 -> 0. */
static inline void msbnb__q8_row_impl(int8_t *restrict q, const float *restrict x, int64_t n,
                                      float s, int divide, float z,
                                      const uint8_t *restrict mask) {
    if (divide) {
        for (int64_t i = 0; i < n; i++) {
            float r = rintf(x[i] / s) + z;
            r = r == r ? r : 0.0f;
            r = r > 127.0f ? 127.0f : r;
            r = r < -128.0f ? -128.0f : r;
            q[i] = (int8_t)(int32_t)r;
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            float r = rintf(x[i] * s) + z;
            r = r == r ? r : 0.0f;
            r = r > 127.0f ? 127.0f : r;
            r = r < -128.0f ? -128.0f : r;
            q[i] = (int8_t)(int32_t)r;
        }
    }
    if (mask)
        for (int64_t i = 0; i < n; i++) q[i] = mask[i] ? 0 : q[i];
}

/* codes[i] = clamp(rint((x[i] - sub) * id) + add, 0, 15); NaN -> 0. */
static inline void msbnb__q4_int_codes_impl(uint8_t *restrict codes, const float *restrict x,
                                            int64_t n, float id, float sub, float add) {
    for (int64_t i = 0; i < n; i++) {
        float r = rintf((x[i] - sub) * id) + add;
        r = r >= 0.0f ? r : 0.0f; /* also NaN -> 0 */
        r = r > 15.0f ? 15.0f : r;
        codes[i] = (uint8_t)(int32_t)r;
    }
}

/* max |x[i]| over n > 0 values, or NaN if any value is NaN or Inf (x * 0 is NaN exactly
 * for those). The SIMD tiers implement it with intrinsics (max is exact, so lane order
 * cannot change the result). */
static inline float msbnb__absmax_impl(const float *restrict x, int64_t n) {
    float m = 0.0f, b = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        m = a > m ? a : m;
        b += x[i] * 0.0f;
    }
    return b == b ? m : NAN;
}

/* min and max of n > 0 finite values. */
static inline void msbnb__minmax_impl(const float *restrict x, int64_t n, float *mn, float *mx) {
    float l = x[0], h = x[0];
    for (int64_t i = 1; i < n; i++) {
        l = x[i] < l ? x[i] : l;
        h = x[i] > h ? x[i] : h;
    }
    *mn = l;
    *mx = h;
}

#endif
