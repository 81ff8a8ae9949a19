/* Code tables and the exact quantization decisions of bitsandbytes' CUDA kernels
 * (csrc/kernels.cu: dQuantizeNF4, dQuantizeFP4, dQuantize<0>). Shared by the scalar
 * reference, the SIMD paths and (via the same constants) the CUDA kernels. */
#ifndef MSBNB_CODEBOOKS_H
#define MSBNB_CODEBOOKS_H

#include <math.h>
#include <stdint.h>
#include <string.h>

extern const float msbnb__nf4_code[16];
extern const float msbnb__fp4_code[16];
extern const float msbnb__fp4_dequant[16]; /* as fp4_code, but code 8 is -0.0 */
extern const float msbnb__dynamic_map[256];

/* bitsandbytes is built with nvcc --use_fast_math, so its `1.0f / absmax` is PTX
 * rcp.approx.ftz.f32 (and __fdividef(a, b) is RN(a * rcp.approx(b))). That reciprocal is
 * within 1 ulp of the correctly rounded one and, measured over every mantissa on an H100,
 * differs from it for 13 % of mantissas, always as the other neighbour of the exact
 * value and independently of the exponent. The bitmap records those mantissas, so this
 * reproduces the GPU's reciprocal exactly; quantization decisions at ties then match. */
extern const uint8_t msbnb__rcp_approx_bitmap[1 << 20];

static inline float msbnb__bnb_rcp(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint32_t e = (u >> 23) & 0xff;
    if (e == 0) return copysignf(INFINITY, x); /* ftz: subnormal input is 0 */
    if (e == 0xff) return 1.0f / x;
    if (e >= 253) return copysignf(0.0f, x);   /* result subnormal: flushed to 0 */
    float r = 1.0f / x;
    uint32_t m = u & 0x7fffffu;
    if (msbnb__rcp_approx_bitmap[m >> 3] >> (m & 7) & 1) {
        /* the other neighbour of 1/x: up if RN(1/x) < 1/x, i.e. 1 - |x|*|r| > 0 */
        float ax = fabsf(x), ar = fabsf(r);
        float resid = fmaf(-ax, ar, 1.0f);
        uint32_t ur;
        memcpy(&ur, &r, 4);
        ur = resid > 0 ? ur + 1 : ur - 1;
        memcpy(&r, &ur, 4);
    }
    return r;
}

/* mul.ftz: a product that would be subnormal is flushed to a signed zero. */
static inline float msbnb__mul_ftz(float a, float b) {
    float p = a * b;
    return fabsf(p) < 1.17549435e-38f ? copysignf(0.0f, p) : p;
}

/* NF4 code of a value normalised to [-1, 1]: bitsandbytes' decision tree, whose pivots
 * are the midpoints between adjacent NF4 values (the literals are bitsandbytes' own, so
 * ties round the same way). NaN (a zero block: 0 * (1/0)) falls through to code 0. */
static inline uint8_t msbnb__nf4_code_of(float x) {
    if (x > 0.03979014977812767f) {
        if (x > 0.3893125355243683f) {
            if (x > 0.6427869200706482f) return x > 0.8614784181118011f ? 15 : 14;
            return x > 0.5016634166240692f ? 13 : 12;
        }
        if (x > 0.2035212516784668f) return x > 0.2920137718319893f ? 11 : 10;
        return x > 0.1202552504837513f ? 9 : 8;
    }
    if (x > -0.33967943489551544f) {
        if (x > -0.13791173323988914f) return x > -0.045525018125772476f ? 7 : 6;
        return x > -0.23460740596055984f ? 5 : 4;
    }
    if (x > -0.6106329262256622f) return x > -0.4599952697753906f ? 3 : 2;
    return x > -0.8480964004993439f ? 1 : 0;
}

/* FP4 (sign + e2m1, bias 3, values /12 so the max is 1): bitsandbytes' tree. */
static inline uint8_t msbnb__fp4_code_of(float x) {
    uint8_t sign = x < 0 ? 8 : 0;
    x = x < 0 ? -x : x; /* fabsf, keeping NaN NaN */
    if (x > 0.29166667f) {
        if (x > 0.583333f) return (x > 0.8333333f ? 3 : 2) + sign;
        return (x > 0.4166667f ? 5 : 4) + sign;
    }
    if (x > 0.0859375f) return (x > 0.20833333f ? 7 : 6) + sign;
    return (x > 0.00260417f ? 1 : 0) + sign;
}

/* Nearest entry of a sorted 256-entry code to x: bitsandbytes' dQuantize<0> — a 7-step
 * binary search from the middle, then rounding by the midpoint to the neighbour it
 * passed. Not always the true nearest entry; kept identical on purpose. */
static inline uint8_t msbnb__code8_of(const float *code, float x) {
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = -1.0f, upper = 1.0f;
    float val = code[pivot];
    for (int i = 64; i > 0; i >>= 1) {
        if (x > val) {
            lower_pivot = pivot;
            lower = val;
            pivot += i;
        } else {
            upper_pivot = pivot;
            upper = val;
            pivot -= i;
        }
        val = code[pivot];
    }
    if (upper_pivot == 255) upper = code[upper_pivot];
    if (lower_pivot == 0) lower = code[lower_pivot];
    if (x > val) {
        float mid = (upper + val) * 0.5f;
        return (uint8_t)(x > mid ? upper_pivot : pivot);
    }
    float mid = (lower + val) * 0.5f;
    return (uint8_t)(x < mid ? lower_pivot : pivot);
}

#endif
