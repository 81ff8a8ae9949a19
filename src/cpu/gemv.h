/* Kernels of the quantized linear layer (src/nn/linear.c): a read-only view of a weight in
 * any format, and one row of function pointers per CPU tier (ggml type_traits style).
 * The scalar `_ref` row (gemv_ref.c) is the specification; the SIMD rows are checked
 * against it by tests/test_linear.c. Entries a tier lacks point at the reference. */
#ifndef MSBNB_CPU_GEMV_H
#define MSBNB_CPU_GEMV_H

#include "msbnb/core.h"
#include "msbnb/quant.h"

#include <stdint.h>

/* The weight W [N, K]; which pointers are set depends on `type`. */
typedef struct msbnb__wview {
    msbnb_qtype type;
    int symmetric;         /* INT8 / INT4 */
    int64_t n, k;          /* rows (out features), cols (in features) */
    int64_t block;         /* NF4/FP4/Q8: block over the flattened tensor; INT4: group */
    int64_t gpr;           /* INT4: groups per row */
    int exact;             /* 4-bit: f32 activations and codes in the SIMD kernels too
                              (msbnb_linear_set_exact); else 15-bit integer dot products */
    int i16_perm;          /* those integer kernels' AVX-512 decode (msbnb__i16_decode_perm) */
    const float *f32;      /* F32 [N*K] */
    const uint16_t *u16;   /* BF16 / F16 [N*K] */
    const int8_t *q8;      /* INT8 codes [N*K] */
    const float *rscale;   /* INT8: per-row scale (SCB/127 when symmetric) */
    const float *rzero;    /* INT8 asymmetric: zero point (integer-valued) */
    const float *scb;      /* INT8 symmetric: row absmax */
    const uint8_t *packed; /* 4-bit codes [ceil(N*K/2)] */
    const uint8_t *qb;     /* Q8_DYNAMIC codes [N*K] */
    const float *absmax;   /* NF4/FP4/Q8 per block (f32, decoded if double quantized);
                              INT4: scales [N*gpr] */
    const float *mins;     /* INT4 asymmetric: mins [N*gpr] */
    const uint8_t *qabsmax; /* NF4/FP4 double quant: the 8-bit absmax codes [nblocks], NULL if
                               none or the weight is small (view_of in linear.c); absmax[i] =
                               dynamic_map[qabsmax[i]] * nested[i / 256] + dq_offset, bit for
                               bit the decoded absmax above */
    const float *nested;    /* with qabsmax: [ceil(nblocks / 256)] */
    float dq_offset;        /* with qabsmax */
    const float *code;     /* NF4/FP4: 16 entries; Q8: 256 entries */
} msbnb__wview;

/* Largest m for which forward uses the fused gemv kernels (above: dequantized panels
 * multiplied by sgemm). */
#define MSBNB__GEMV_MAX_M 8

typedef struct msbnb__gemv_table {
    msbnb_cpu_tier tier;
    /* out[(r - r0) * ldo + (k - k0)] = W[r, k] for r in [r0, r1), k in [k0, k1): a tile of
     * the weight. With raw != 0 a symmetric INT8 weight gives its codes (float-valued
     * integers) instead. */
    void (*dequant_tile)(const msbnb__wview *w, float *out, int64_t ldo, int64_t r0, int64_t r1,
                         int64_t k0, int64_t k1, int raw);
    /* y[i * ldy + r] = Σ_k x[i * K + k] W[r, k] for i < m, r in [r0, r1) (no bias).
     * Float formats (everything but symmetric INT8). scratch: msbnb__gemv_scratch floats,
     * private to the calling thread; x_ready != 0 says that an earlier call of this thread
     * with the same w, x and m left its preprocessed activation there (so a thread that
     * takes several row ranges prepares x once). */
    void (*gemv)(const msbnb__wview *w, float *y, int64_t ldy, const float *x, int64_t m,
                 int64_t r0, int64_t r1, float *scratch, int x_ready);
    /* Symmetric INT8: acc[i * lda + r] = Σ_k xq[i * K + k] q[r, k], exact. */
    void (*gemv_i8)(const msbnb__wview *w, int64_t *acc, int64_t lda, const int8_t *xq,
                    int64_t m, int64_t r0, int64_t r1);
} msbnb__gemv_table;

/* Scratch floats one gemv call needs for m activation rows. */
static inline int64_t msbnb__gemv_scratch(int64_t k, int64_t m) { return (m + 2) * (k + 64) + 64; }

/* Row for a tier (a tier this build lacks gives the best lower one). */
const msbnb__gemv_table *msbnb__gemv_kernels(msbnb_cpu_tier tier);

void msbnb__dequant_tile_ref(const msbnb__wview *w, float *out, int64_t ldo, int64_t r0, int64_t r1,
                             int64_t k0, int64_t k1, int raw);
void msbnb__gemv_ref(const msbnb__wview *w, float *y, int64_t ldy, const float *x, int64_t m,
                     int64_t r0, int64_t r1, float *scratch, int x_ready);
void msbnb__gemv_i8_ref(const msbnb__wview *w, int64_t *acc, int64_t lda, const int8_t *xq,
                        int64_t m, int64_t r0, int64_t r1);

extern const msbnb__gemv_table msbnb__gemv_avx2;
extern const msbnb__gemv_table msbnb__gemv_avx512;

#endif
