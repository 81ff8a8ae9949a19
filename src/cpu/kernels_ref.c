/* Scalar reference kernels: the specification the SIMD rows are tested against. */
#include "cpu/kernels.h"
#include "cpu/rowq_impl.h"
#include "internal.h"
#include "msbnb/quant.h"
#include "quant/codebooks.h"

#include <math.h>

/* max |x|, or NaN if any element is NaN or Inf (fmaxf would silently drop a NaN). */
static inline float absmax_nan(const float *x, int64_t len) {
    float m = 0.0f;
    bool bad = false;
    for (int64_t i = 0; i < len; i++) {
        float a = fabsf(x[i]);
        bad |= !(a <= 3.40282347e38f);
        if (a > m) m = a;
    }
    return bad ? NAN : m;
}

int msbnb__quant4_block_ref(uint8_t *packed, float *absmax, const float *x, int64_t len, int qtype) {
    float m = absmax_nan(x, len);
    if (!isfinite(m)) return -1;
    *absmax = m;
    /* bitsandbytes multiplies by its (approximate) reciprocal; 1/0 = inf on purpose */
    float inv = msbnb__bnb_rcp(m);
    for (int64_t i = 0; i < len; i += 2) {
        float a = msbnb__mul_ftz(x[i], inv), b = msbnb__mul_ftz(i + 1 < len ? x[i + 1] : 0.0f, inv);
        uint8_t hi, lo;
        if (qtype == MSBNB_QTYPE_NF4) {
            hi = msbnb__nf4_code_of(a);
            lo = msbnb__nf4_code_of(b);
        } else {
            hi = msbnb__fp4_code_of(a);
            lo = msbnb__fp4_code_of(b);
        }
        packed[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

void msbnb__dequant4_f32_ref(float *out, const uint8_t *packed, const float *absmax,
                             const float *code16, int64_t blocksize, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) {
        uint8_t b = packed[i >> 1];
        uint8_t c = (i & 1) ? (b & 15) : (b >> 4);
        out[i] = code16[c] * absmax[i / blocksize];
    }
}

int msbnb__quant8_block_ref(uint8_t *q, float *absmax, const float *x, int64_t len,
                            const float *code256) {
    float m = absmax_nan(x, len);
    if (!isfinite(m)) return -1;
    *absmax = m;
    float inv = msbnb__bnb_rcp(m);
    for (int64_t i = 0; i < len; i++) q[i] = msbnb__code8_of(code256, msbnb__mul_ftz(x[i], inv));
    return 0;
}

void msbnb__dequant8_f32_ref(float *out, const uint8_t *q, const float *absmax,
                             const float *code256, int64_t blocksize, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) out[i] = code256[q[i]] * absmax[i / blocksize];
}

void msbnb__q8_row_ref(int8_t *q, const float *x, int64_t n, float s, int divide, float z,
                       const uint8_t *mask) {
    msbnb__q8_row_impl(q, x, n, s, divide, z, mask);
}
void msbnb__q4_int_codes_ref(uint8_t *codes, const float *x, int64_t n, float id, float sub,
                             float add) {
    msbnb__q4_int_codes_impl(codes, x, n, id, sub, add);
}
float msbnb__absmax_ref(const float *x, int64_t n) { return msbnb__absmax_impl(x, n); }
void msbnb__minmax_ref(const float *x, int64_t n, float *mn, float *mx) {
    msbnb__minmax_impl(x, n, mn, mx);
}
