/* f32 <-> f16 <-> bf16. Scalar reference here; bulk conversion dispatches to the SIMD
 * kernels in src/cpu when the CPU has them. Rounding is to nearest even everywhere. */
#include "internal.h"
#include "msbnb/quant.h"
#include "cpu/kernels.h"

#include <math.h>
#include <string.h>

uint16_t msbnb_f32_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* RNE; overflow rounds to Inf as IEEE requires */
    return (uint16_t)(u >> 16);
}

float msbnb_bf16_to_f32(uint16_t x) {
    uint32_t u = (uint32_t)x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits. */
uint16_t msbnb_f32_to_f16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) /* Inf or NaN */
        return sign | (a > 0x7f800000u ? (uint16_t)(0x7e00u | ((a >> 13) & 0x3ffu)) : 0x7c00u);
    if (a >= 0x477ff000u) return sign | 0x7c00u; /* rounds to >= 65520: Inf */
    if (a < 0x38800000u) {                      /* result is subnormal or zero */
        if (a < 0x33000000u) return sign;       /* < 2^-25: rounds to 0 */
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        int e = (int)(a >> 23);                 /* 102 .. 112 */
        int shift = 126 - e;                    /* 14 .. 24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return sign | (uint16_t)q;
    }
    uint32_t r = a - 0x38000000u; /* rebias 127 -> 15 */
    r += 0xfffu + ((r >> 13) & 1u);
    return sign | (uint16_t)(r >> 13);
}

float msbnb_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
    if (e == 0x1f) u = sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0);
    else if (e != 0) u = sign | ((e + 112) << 23) | (m << 13);
    else if (m == 0) u = sign;
    else { /* subnormal: normalise */
        int s = 0;
        while (!(m & 0x400u)) { m <<= 1; s++; }
        u = sign | ((uint32_t)(113 - s) << 23) | ((m & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void msbnb__convert_ref(void *dst, msbnb_dtype dt, const void *src, msbnb_dtype st, int64_t n) {
    if (dt == st) {
        memcpy(dst, src, (size_t)n * msbnb_dtype_size(dt));
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        float v;
        switch (st) {
        case MSBNB_DTYPE_F32: v = ((const float *)src)[i]; break;
        case MSBNB_DTYPE_F16: v = msbnb_f16_to_f32(((const uint16_t *)src)[i]); break;
        default: v = msbnb_bf16_to_f32(((const uint16_t *)src)[i]); break;
        }
        switch (dt) {
        case MSBNB_DTYPE_F32: ((float *)dst)[i] = v; break;
        case MSBNB_DTYPE_F16: ((uint16_t *)dst)[i] = msbnb_f32_to_f16(v); break;
        default: ((uint16_t *)dst)[i] = msbnb_f32_to_bf16(v); break;
        }
    }
}

static bool is_float_type(msbnb_dtype t) {
    return t == MSBNB_DTYPE_F32 || t == MSBNB_DTYPE_F16 || t == MSBNB_DTYPE_BF16;
}

msbnb_status msbnb__check_float_type(msbnb_dtype t, const char *fn, const char *arg) {
    if (!is_float_type(t))
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "%s: %s must be F32, F16 or BF16 (got %s)", fn,
                           arg, msbnb_dtype_name(t) ? msbnb_dtype_name(t) : "invalid dtype");
    return MSBNB_OK;
}

msbnb_status msbnb_convert(void *dst, msbnb_dtype dst_type, const void *src,
                           msbnb_dtype src_type, int64_t n) {
    MSBNB_CHECK_NULL(dst);
    MSBNB_CHECK_NULL(src);
    MSBNB_CHECK_POS(n);
    MSBNB_TRY(msbnb__check_float_type(dst_type, __func__, "dst_type"));
    MSBNB_TRY(msbnb__check_float_type(src_type, __func__, "src_type"));
    int64_t bytes;
    MSBNB_TRY(msbnb__mul_checked(n, 4, &bytes, __func__));
    msbnb_cpu_tier tier;
    MSBNB_TRY(msbnb_cpu_check_env(&tier)); /* MSBNB_CPU naming a tier this CPU lacks: an error */
    msbnb__kernels(tier)->convert(dst, dst_type, src, src_type, n);
    return MSBNB_OK;
}

void msbnb__load_f32(float *dst, const void *src, msbnb_dtype st, int64_t offset, int64_t n) {
    switch (st) {
    case MSBNB_DTYPE_F32: memcpy(dst, (const float *)src + offset, (size_t)n * 4); break;
    case MSBNB_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = msbnb_f16_to_f32(((const uint16_t *)src)[offset + i]);
        break;
    default:
        for (int64_t i = 0; i < n; i++) dst[i] = msbnb_bf16_to_f32(((const uint16_t *)src)[offset + i]);
        break;
    }
}
