/* Scalar reference kernels of the linear layer: the readable specification of how each
 * weight format is decoded, and of the fused dequantize-and-dot the SIMD tiers implement. */
#include "cpu/gemv.h"
#include "internal.h"

#include <string.h>

static inline uint8_t nibble_at(const uint8_t *packed, int64_t i) {
    /* bitsandbytes packing: element 2i in the high nibble, 2i+1 in the low nibble */
    return (i & 1) ? (packed[i >> 1] & 15) : (packed[i >> 1] >> 4);
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* out[j] = W[r, k0 + j] for j < k1 - k0: part of one row (i0 = r*K is the row's flat index). */
static void dequant_row(const msbnb__wview *w, float *out, int64_t r, int64_t k0, int64_t k1,
                        int raw) {
    const int64_t K = w->k, i0 = r * K;
    switch (w->type) {
    case MSBNB_QTYPE_F32: memcpy(out, w->f32 + i0 + k0, (size_t)(k1 - k0) * sizeof(float)); break;
    case MSBNB_QTYPE_BF16:
        for (int64_t k = k0; k < k1; k++) out[k - k0] = bf16_to_f32(w->u16[i0 + k]);
        break;
    case MSBNB_QTYPE_F16:
        for (int64_t k = k0; k < k1; k++) out[k - k0] = msbnb_f16_to_f32(w->u16[i0 + k]);
        break;
    case MSBNB_QTYPE_INT8:
        if (w->symmetric) {
            /* w = CB * (SCB / 127): bitsandbytes int8_vectorwise_dequant */
            float s = raw ? 1.0f : w->rscale[r];
            for (int64_t k = k0; k < k1; k++) out[k - k0] = (float)w->q8[i0 + k] * s;
        } else {
            float s = w->rscale[r], z = w->rzero[r];
            for (int64_t k = k0; k < k1; k++) out[k - k0] = ((float)w->q8[i0 + k] - z) * s;
        }
        break;
    case MSBNB_QTYPE_INT4: {
        /* groups run along each row separately; codes are packed over the flattened tensor */
        const float *sc = w->absmax + r * w->gpr;
        for (int64_t k = k0; k < k1; k++) {
            float u = (float)nibble_at(w->packed, i0 + k);
            int64_t g = k / w->block;
            out[k - k0] = w->symmetric ? (u - 8.0f) * sc[g] : u * sc[g] + w->mins[r * w->gpr + g];
        }
        break;
    }
    case MSBNB_QTYPE_NF4:
    case MSBNB_QTYPE_FP4:
        /* blocks run over the flattened tensor and may span rows */
        for (int64_t k = k0; k < k1; k++)
            out[k - k0] = w->code[nibble_at(w->packed, i0 + k)] * w->absmax[(i0 + k) / w->block];
        break;
    case MSBNB_QTYPE_Q8_DYNAMIC:
        for (int64_t k = k0; k < k1; k++)
            out[k - k0] = w->code[w->qb[i0 + k]] * w->absmax[(i0 + k) / w->block];
        break;
    default: break;
    }
}

void msbnb__dequant_tile_ref(const msbnb__wview *w, float *out, int64_t ldo, int64_t r0, int64_t r1,
                             int64_t k0, int64_t k1, int raw) {
    for (int64_t r = r0; r < r1; r++) dequant_row(w, out + (r - r0) * ldo, r, k0, k1, raw);
}

/* y[i, r] = Σ_k x[i, k] · W[r, k]: decode one row into scratch (L1/L2), then m dots. */
void msbnb__gemv_ref(const msbnb__wview *w, float *y, int64_t ldy, const float *x, int64_t m,
                     int64_t r0, int64_t r1, float *scratch, int x_ready) {
    (void)x_ready; /* scratch holds one decoded row, rewritten each time */
    const int64_t K = w->k;
    for (int64_t r = r0; r < r1; r++) {
        dequant_row(w, scratch, r, 0, K, 0);
        for (int64_t i = 0; i < m; i++) {
            const float *xi = x + i * K;
            float s = 0.0f;
            for (int64_t k = 0; k < K; k++) s += xi[k] * scratch[k];
            y[i * ldy + r] = s;
        }
    }
}

/* acc[i, r] = Σ_k xq[i, k] · CB[r, k] in exact integer arithmetic. */
void msbnb__gemv_i8_ref(const msbnb__wview *w, int64_t *acc, int64_t lda, const int8_t *xq,
                        int64_t m, int64_t r0, int64_t r1) {
    const int64_t K = w->k;
    for (int64_t r = r0; r < r1; r++) {
        const int8_t *q = w->q8 + r * K;
        for (int64_t i = 0; i < m; i++) {
            const int8_t *xi = xq + i * K;
            int64_t s = 0;
            for (int64_t k = 0; k < K; k++) s += (int32_t)xi[k] * (int32_t)q[k];
            acc[i * lda + r] = s;
        }
    }
}

static const msbnb__gemv_table k_ref = {MSBNB_CPU_SCALAR, msbnb__dequant_tile_ref,
                                        msbnb__gemv_ref, msbnb__gemv_i8_ref};

const msbnb__gemv_table *msbnb__gemv_kernels(msbnb_cpu_tier tier) {
    if (tier >= MSBNB_CPU_AVX512 && msbnb_cpu_tier_supported(MSBNB_CPU_AVX512))
        return &msbnb__gemv_avx512;
    if (tier >= MSBNB_CPU_AVX2 && msbnb_cpu_tier_supported(MSBNB_CPU_AVX2)) return &msbnb__gemv_avx2;
    return &k_ref;
}
