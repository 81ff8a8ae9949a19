/* The CPU kernel table (ggml type_traits style): one row of function pointers per tier,
 * filled statically; msbnb__kernels(tier) returns the row. The scalar `_ref` kernels are
 * the readable specification; SIMD rows must produce identical results for integer and
 * packing work and agree within the stated tolerance for float sums. */
#ifndef MSBNB_CPU_KERNELS_H
#define MSBNB_CPU_KERNELS_H

#include "msbnb/core.h"

#include <stdint.h>

typedef struct msbnb__kernel_table {
    msbnb_cpu_tier tier;
    /* dst[i] = convert(src[i]) between F32/F16/BF16, i < n. */
    void (*convert)(void *dst, msbnb_dtype dt, const void *src, msbnb_dtype st, int64_t n);
    /* One 4-bit block: *absmax = max|x|, codes of x*(1/absmax) via `code_of` tree for qtype
     * (MSBNB_QTYPE_NF4/FP4); len values, packed into ceil(len/2) bytes (odd len pads with the
     * code of 0). Returns 0, or -1 if the block holds NaN/Inf. */
    int (*quant4_block)(uint8_t *packed, float *absmax, const float *x, int64_t len, int qtype);
    /* out[i] = code16[nibble(i)] * absmax[i / blocksize] for i in [begin, end); begin even. */
    void (*dequant4_f32)(float *out, const uint8_t *packed, const float *absmax,
                         const float *code16, int64_t blocksize, int64_t begin, int64_t end);
    /* One 8-bit dynamic block (bitsandbytes dQuantize<0>); returns -1 on NaN/Inf. */
    int (*quant8_block)(uint8_t *q, float *absmax, const float *x, int64_t len,
                        const float *code256);
    /* out[i] = code256[q[i]] * absmax[i / blocksize], i in [begin, end). */
    void (*dequant8_f32)(float *out, const uint8_t *q, const float *absmax,
                         const float *code256, int64_t blocksize, int64_t begin, int64_t end);
    /* q[i] = clamp_int8(rint(divide ? x[i] / s : x[i] * s) + z), NaN -> 0, masked -> 0
     * (mask may be NULL). */
    void (*q8_row)(int8_t *q, const float *x, int64_t n, float s, int divide, float z,
                   const uint8_t *mask);
    /* codes[i] = clamp(rint((x[i] - sub) * id) + add, 0, 15), NaN -> 0. */
    void (*q4_int_codes)(uint8_t *codes, const float *x, int64_t n, float id, float sub,
                         float add);
    /* max |x[i]| over n > 0 values; NaN if any is NaN or Inf. */
    float (*absmax)(const float *x, int64_t n);
    /* min and max of n > 0 finite values (the sign of a zero extreme may differ by tier). */
    void (*minmax)(const float *x, int64_t n, float *mn, float *mx);
} msbnb__kernel_table;

/* Row for a tier; a tier this build or CPU lacks returns the best supported lower row. */
const msbnb__kernel_table *msbnb__kernels(msbnb_cpu_tier tier);

/* Scalar reference kernels (src/cpu/kernels_ref.c). */
void msbnb__convert_ref(void *dst, msbnb_dtype dt, const void *src, msbnb_dtype st, int64_t n);
int msbnb__quant4_block_ref(uint8_t *packed, float *absmax, const float *x, int64_t len, int qtype);
void msbnb__dequant4_f32_ref(float *out, const uint8_t *packed, const float *absmax,
                             const float *code16, int64_t blocksize, int64_t begin, int64_t end);
int msbnb__quant8_block_ref(uint8_t *q, float *absmax, const float *x, int64_t len,
                            const float *code256);
void msbnb__dequant8_f32_ref(float *out, const uint8_t *q, const float *absmax,
                             const float *code256, int64_t blocksize, int64_t begin, int64_t end);

void msbnb__q8_row_ref(int8_t *q, const float *x, int64_t n, float s, int divide, float z,
                       const uint8_t *mask);
void msbnb__q4_int_codes_ref(uint8_t *codes, const float *x, int64_t n, float id, float sub,
                             float add);
float msbnb__absmax_ref(const float *x, int64_t n);
void msbnb__minmax_ref(const float *x, int64_t n, float *mn, float *mx);

/* Filled by the ISA translation units (NULL entries fall back to the reference). */
extern const msbnb__kernel_table msbnb__kernels_avx2;
extern const msbnb__kernel_table msbnb__kernels_avx512;

/* Loads n values starting at element `offset` of src (F32/F16/BF16) as f32. */
void msbnb__load_f32(float *dst, const void *src, msbnb_dtype st, int64_t offset, int64_t n);
msbnb_status msbnb__check_float_type(msbnb_dtype t, const char *fn, const char *arg);

#endif
