/* Code tables and the exact quantization decisions of bitsandbytes' CUDA kernels
 * (csrc/kernels.cu: dQuantizeNF4, dQuantizeFP4, dQuantize<0>). Shared by the scalar
 * reference, the SIMD paths and (via the same constants) the CUDA kernels. */
#ifndef MSBNB_CODEBOOKS_H
#define MSBNB_CODEBOOKS_H

#include <stdint.h>

extern const float msbnb__nf4_code[16];
extern const float msbnb__fp4_code[16];
extern const float msbnb__dynamic_map[256];

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
