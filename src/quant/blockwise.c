/* Blockwise absmax formats of bitsandbytes: NF4 / FP4 (4-bit, packed two per byte),
 * 8-bit dynamic, and double quantization of the 4-bit absmax. Validation happens here;
 * the per-block work is the CPU kernel table's, run in parallel over blocks. */
#include "cpu/kernels.h"
#include "internal.h"
#include "msbnb/quant.h"
#include "quant/codebooks.h"

#include <math.h>
#include <string.h>

#define MAX_BLOCK 4096

static msbnb_status check_blocksize(int64_t bs, const char *fn) {
    if (bs < 32 || bs > MAX_BLOCK || (bs & (bs - 1)) != 0)
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED,
                           "%s: block size %lld is not a power of two in [32, 4096]", fn,
                           (long long)bs);
    return MSBNB_OK;
}

static msbnb_status check_q4type(msbnb_qtype t, const char *fn) {
    if (t != MSBNB_QTYPE_NF4 && t != MSBNB_QTYPE_FP4)
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "%s: type must be nf4 or fp4 (got %d)", fn, (int)t);
    return MSBNB_OK;
}

int64_t msbnb_nblocks(int64_t n, int64_t blocksize) {
    if (n <= 0 || blocksize <= 0) return 0;
    return msbnb__ceil_div(n, blocksize);
}

/* n * 4 bytes must be addressable: the bound every size below derives from. */
static msbnb_status check_n(int64_t n, const char *fn) {
    if (n <= 0) return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: n must be positive (got %lld)", fn, (long long)n);
    if (n > INT64_MAX / 8) return msbnb__fail(MSBNB_ERR_OVERFLOW, "%s: n = %lld is too large", fn, (long long)n);
    return MSBNB_OK;
}

typedef struct {
    const msbnb__kernel_table *k;
    uint8_t *out;
    float *absmax;
    const void *x;
    msbnb_dtype xt;
    int64_t n, bs;
    int qtype;         /* 4-bit type, or -1 for the 8-bit path */
    const float *code; /* 8-bit code */
    volatile int bad;  /* set when a block holds NaN/Inf */
    volatile int64_t bad_block;
} quant_job;

static void quant_range(void *ctx, int64_t b0, int64_t b1, int tid) {
    quant_job *j = ctx;
    float tmp[MAX_BLOCK];
    for (int64_t b = b0; b < b1; b++) {
        int64_t start = b * j->bs, len = j->n - start < j->bs ? j->n - start : j->bs;
        const float *src;
        if (j->xt == MSBNB_DTYPE_F32) src = (const float *)j->x + start;
        else {
            msbnb__load_f32(tmp, j->x, j->xt, start, len);
            src = tmp;
        }
        int r = j->qtype >= 0 ? j->k->quant4_block(j->out + start / 2, &j->absmax[b], src, len, j->qtype)
                              : j->k->quant8_block(j->out + start, &j->absmax[b], src, len, j->code);
        if (r != 0) {
            j->bad = 1;
            j->bad_block = b;
        }
    }
}

static msbnb_status quant_common(quant_job *j, int nthreads, const char *fn) {
    int64_t nb = msbnb__ceil_div(j->n, j->bs);
    /* ~64 KiB of input per task keeps thread start-up cost small. */
    msbnb__parallel_for(nthreads, nb, (16384 + j->bs - 1) / j->bs, quant_range, j);
    if (j->bad)
        return msbnb__fail(MSBNB_ERR_NON_FINITE, "%s: block %lld contains NaN or Inf", fn,
                           (long long)j->bad_block);
    return MSBNB_OK;
}

msbnb_status msbnb_quantize_4bit(uint8_t *packed, float *absmax, const void *x,
                                 msbnb_dtype x_type, int64_t n, int64_t blocksize,
                                 msbnb_qtype type, int nthreads) {
    MSBNB_CHECK_NULL(packed);
    MSBNB_CHECK_NULL(absmax);
    MSBNB_CHECK_NULL(x);
    MSBNB_TRY(check_n(n, __func__));
    MSBNB_TRY(check_blocksize(blocksize, __func__));
    MSBNB_TRY(check_q4type(type, __func__));
    MSBNB_TRY(msbnb__check_float_type(x_type, __func__, "x_type"));
    msbnb_cpu_tier tier;
    MSBNB_TRY(msbnb_cpu_check_env(&tier)); /* MSBNB_CPU naming a tier this CPU lacks: an error */
    quant_job j = {msbnb__kernels(tier), packed, absmax, x, x_type, n,
                   blocksize, (int)type, NULL, 0, 0};
    return quant_common(&j, nthreads, __func__);
}

typedef struct {
    const msbnb__kernel_table *k;
    void *out;
    msbnb_dtype ot;
    const uint8_t *q;
    const float *absmax, *code;
    int64_t n, bs;
    int four_bit;
} dequant_job;

#define DQ_CHUNK 4096 /* elements per step when converting to F16/BF16 */

static void dequant_range(void *ctx, int64_t c0, int64_t c1, int tid) {
    dequant_job *j = ctx;
    float tmp[DQ_CHUNK];
    int64_t begin = c0 * DQ_CHUNK, end = c1 * DQ_CHUNK < j->n ? c1 * DQ_CHUNK : j->n;
    if (j->ot == MSBNB_DTYPE_F32) {
        if (j->four_bit) j->k->dequant4_f32(j->out, j->q, j->absmax, j->code, j->bs, begin, end);
        else j->k->dequant8_f32(j->out, j->q, j->absmax, j->code, j->bs, begin, end);
        return;
    }
    size_t esz = msbnb_dtype_size(j->ot);
    for (int64_t s = begin; s < end; s += DQ_CHUNK) {
        int64_t e = s + DQ_CHUNK < end ? s + DQ_CHUNK : end;
        /* Kernels index out[] absolutely; shift the base so tmp[0] is element s. */
        float *base = tmp - s;
        if (j->four_bit) j->k->dequant4_f32(base, j->q, j->absmax, j->code, j->bs, s, e);
        else j->k->dequant8_f32(base, j->q, j->absmax, j->code, j->bs, s, e);
        j->k->convert((char *)j->out + (size_t)s * esz, j->ot, tmp, MSBNB_DTYPE_F32, e - s);
    }
}

static void dequant_common(dequant_job *j, int nthreads) {
    int64_t chunks = msbnb__ceil_div(j->n, DQ_CHUNK);
    msbnb__parallel_for(nthreads, chunks, 16, dequant_range, j);
}

msbnb_status msbnb_dequantize_4bit(void *out, msbnb_dtype out_type, const uint8_t *packed,
                                   const float *absmax, int64_t n, int64_t blocksize,
                                   msbnb_qtype type, int nthreads) {
    MSBNB_CHECK_NULL(out);
    MSBNB_CHECK_NULL(packed);
    MSBNB_CHECK_NULL(absmax);
    MSBNB_TRY(check_n(n, __func__));
    MSBNB_TRY(check_blocksize(blocksize, __func__));
    MSBNB_TRY(check_q4type(type, __func__));
    MSBNB_TRY(msbnb__check_float_type(out_type, __func__, "out_type"));
    msbnb_cpu_tier tier;
    MSBNB_TRY(msbnb_cpu_check_env(&tier)); /* MSBNB_CPU naming a tier this CPU lacks: an error */
    dequant_job j = {msbnb__kernels(tier), out, out_type, packed, absmax,
                     type == MSBNB_QTYPE_NF4 ? msbnb__nf4_code : msbnb__fp4_dequant, n, blocksize, 1};
    dequant_common(&j, nthreads);
    return MSBNB_OK;
}

msbnb_status msbnb_quantize_blockwise_8bit(uint8_t *q, float *absmax, const void *x,
                                           msbnb_dtype x_type, int64_t n, int64_t blocksize,
                                           const float *code, int nthreads) {
    MSBNB_CHECK_NULL(q);
    MSBNB_CHECK_NULL(absmax);
    MSBNB_CHECK_NULL(x);
    MSBNB_TRY(check_n(n, __func__));
    MSBNB_TRY(check_blocksize(blocksize, __func__));
    MSBNB_TRY(msbnb__check_float_type(x_type, __func__, "x_type"));
    msbnb_cpu_tier tier;
    MSBNB_TRY(msbnb_cpu_check_env(&tier)); /* MSBNB_CPU naming a tier this CPU lacks: an error */
    quant_job j = {msbnb__kernels(tier), q, absmax, x, x_type, n, blocksize,
                   -1, code ? code : msbnb__dynamic_map, 0, 0};
    return quant_common(&j, nthreads, __func__);
}

msbnb_status msbnb_dequantize_blockwise_8bit(void *out, msbnb_dtype out_type, const uint8_t *q,
                                             const float *absmax, int64_t n, int64_t blocksize,
                                             const float *code, int nthreads) {
    MSBNB_CHECK_NULL(out);
    MSBNB_CHECK_NULL(q);
    MSBNB_CHECK_NULL(absmax);
    MSBNB_TRY(check_n(n, __func__));
    MSBNB_TRY(check_blocksize(blocksize, __func__));
    MSBNB_TRY(msbnb__check_float_type(out_type, __func__, "out_type"));
    msbnb_cpu_tier tier;
    MSBNB_TRY(msbnb_cpu_check_env(&tier)); /* MSBNB_CPU naming a tier this CPU lacks: an error */
    dequant_job j = {msbnb__kernels(tier), out, out_type, q, absmax,
                     code ? code : msbnb__dynamic_map, n, blocksize, 0};
    dequant_common(&j, nthreads);
    return MSBNB_OK;
}

/* torch.Tensor.mean() of a contiguous float32 CUDA tensor, reproduced operation for
 * operation so the double-quant offset is bit-identical to bitsandbytes' (which calls
 * absmax.mean()). PyTorch's reduce kernel (ATen/native/cuda/Reduce.cuh) with one output:
 * block width = largest power of two <= n (n >= 128: n/4 with 4-wide vector loads; n = 128
 * checked against transformers-saved tiny-llama nf4dq k_proj/v_proj offsets), at
 * most 512 threads; each thread keeps 4 partial sums over its strided elements and adds
 * them in order; the block then folds by halves (t += t + offset, offset = width/2 .. 1);
 * MeanOps multiplies the sum by the float factor 1/n. Verified on all 20 reference
 * offsets. Beyond 512 threads x 256 values PyTorch splits the sum across blocks, which
 * this does not model: there the offset may differ from PyTorch's in the last bit. */
static int last_pow2(int64_t n) {
    int64_t p = 1;
    while (p * 2 <= n) p *= 2;
    return (int)p;
}

static float torch_mean_f32(const float *x, int64_t n) {
    enum { MAX_THREADS = 512, VEC = 4 };
    float part[MAX_THREADS];
    int vectorized = n >= 128;
    int64_t dim0 = vectorized ? n / VEC : n;
    int bw = dim0 < MAX_THREADS ? last_pow2(dim0) : MAX_THREADS;
    for (int t = 0; t < bw; t++) {
        float acc[4] = {0, 0, 0, 0};
        if (vectorized) {
            for (int64_t v = t; v * VEC + VEC - 1 < n; v += bw)
                for (int i = 0; i < VEC; i++) acc[i] += x[v * VEC + i];
            int64_t tail = n - n % VEC;
            if (tail + t < n) acc[0] += x[tail + t];
        } else {
            int64_t idx = t, stride = bw;
            while (idx + 3 * stride < n) {
                for (int i = 0; i < 4; i++) acc[i] += x[idx + i * stride];
                idx += 4 * stride;
            }
            for (int i = 0; i < 4 && idx < n; i++, idx += stride) acc[i] += x[idx];
        }
        part[t] = ((acc[0] + acc[1]) + acc[2]) + acc[3];
    }
    for (int off = bw / 2; off > 0; off >>= 1)
        for (int t = 0; t < off; t++) part[t] += part[t + off];
    return part[0] * (1.0f / (float)n);
}

msbnb_status msbnb_double_quant_absmax(uint8_t *qabsmax, float *nested_absmax, float *offset,
                                       const float *absmax, int64_t nblocks) {
    MSBNB_CHECK_NULL(qabsmax);
    MSBNB_CHECK_NULL(nested_absmax);
    MSBNB_CHECK_NULL(offset);
    MSBNB_CHECK_NULL(absmax);
    MSBNB_TRY(check_n(nblocks, __func__));
    msbnb_cpu_tier tier;
    MSBNB_TRY(msbnb_cpu_check_env(&tier)); /* MSBNB_CPU naming a tier this CPU lacks: an error */
    for (int64_t i = 0; i < nblocks; i++)
        if (!isfinite(absmax[i]))
            return msbnb__fail(MSBNB_ERR_NON_FINITE, "%s: absmax[%lld] is not finite", __func__,
                               (long long)i);
    float off = torch_mean_f32(absmax, nblocks);
    float tmp[MSBNB_NESTED_BLOCKSIZE];
    const msbnb__kernel_table *k = msbnb__kernels(tier);
    for (int64_t b = 0; b * MSBNB_NESTED_BLOCKSIZE < nblocks; b++) {
        int64_t start = b * MSBNB_NESTED_BLOCKSIZE;
        int64_t len = nblocks - start < MSBNB_NESTED_BLOCKSIZE ? nblocks - start : MSBNB_NESTED_BLOCKSIZE;
        for (int64_t i = 0; i < len; i++) tmp[i] = absmax[start + i] - off;
        if (k->quant8_block(qabsmax + start, &nested_absmax[b], tmp, len, msbnb__dynamic_map) != 0)
            return msbnb__fail(MSBNB_ERR_NON_FINITE, "%s: non-finite absmax", __func__);
    }
    *offset = off;
    return MSBNB_OK;
}

msbnb_status msbnb_double_dequant_absmax(float *absmax, const uint8_t *qabsmax,
                                         const float *nested_absmax, float offset,
                                         int64_t nblocks) {
    MSBNB_CHECK_NULL(absmax);
    MSBNB_CHECK_NULL(qabsmax);
    MSBNB_CHECK_NULL(nested_absmax);
    MSBNB_TRY(check_n(nblocks, __func__));
    if (!isfinite(offset))
        return msbnb__fail(MSBNB_ERR_NON_FINITE, "%s: offset is not finite", __func__);
    /* dequantize_blockwise (code * absmax, float) then "absmax += offset" as bitsandbytes. */
    for (int64_t i = 0; i < nblocks; i++)
        absmax[i] = msbnb__dynamic_map[qabsmax[i]] * nested_absmax[i / MSBNB_NESTED_BLOCKSIZE] + offset;
    return MSBNB_OK;
}
