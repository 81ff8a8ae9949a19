/* Quantize / dequantize kernels for every format, bit-identical to the CPU functions of
 * src/quant (which are bit-identical to bitsandbytes): the same operations in the same
 * order, each rounding made explicit (__fmul_rn, __fadd_rn, ...) so that nvcc cannot
 * contract a multiply and an add into an FMA the CPU path does not do. */
#include "cuda/cuda_internal.cuh"

#include <math.h>
#include <string.h>

#define WARPS_PER_BLOCK 8

/* ---------------------------------------------------------------- validation */

static msbnb_status check_blocksize(int64_t bs, const char *fn) {
    if (bs < 32 || bs > 4096 || (bs & (bs - 1)) != 0)
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "%s: block size %lld is not a power of two in [32, 4096]",
                           fn, (long long)bs);
    return MSBNB_OK;
}

static msbnb_status check_n(int64_t n, const char *fn) {
    if (n <= 0) return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: n must be positive (got %lld)", fn, (long long)n);
    if (n > INT64_MAX / 8) return msbnb__fail(MSBNB_ERR_OVERFLOW, "%s: n = %lld is too large", fn, (long long)n);
    return MSBNB_OK;
}

static msbnb_status check_float_type(msbnb_dtype t, const char *fn, const char *arg) {
    if (t != MSBNB_DTYPE_F32 && t != MSBNB_DTYPE_F16 && t != MSBNB_DTYPE_BF16)
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "%s: %s must be F32, F16 or BF16 (got %d)", fn, arg, (int)t);
    return MSBNB_OK;
}

static msbnb_status check_dims(int64_t rows, int64_t cols, const char *fn) {
    if (rows <= 0 || cols <= 0)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: rows and cols must be positive (got %lld x %lld)",
                           fn, (long long)rows, (long long)cols);
    int64_t n;
    if (!msbnb__mul_ok(rows, cols, &n) || n > INT64_MAX / 8)
        return msbnb__fail(MSBNB_ERR_OVERFLOW, "%s: %lld x %lld elements overflow", fn, (long long)rows,
                           (long long)cols);
    return MSBNB_OK;
}

/* ---------------------------------------------------------------- warp reductions */

__device__ __forceinline__ float warp_min(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* ---------------------------------------------------------------- 4-bit / 8-bit blockwise */

/* One warp per quantization block (msbnb__quant4_block_ref / quant8_block_ref):
 * absmax = max|x| (exact in any order), inv = rcp.approx(absmax), codes of
 * mul_ftz(x, inv). `sub` (device scalar or NULL) is subtracted from every input first
 * (double quantization quantizes absmax - mean). qtype: NF4, FP4 or -1 for 8-bit. */
__global__ void quant_blocks_kernel(uint8_t *out, float *absmax, const void *x, int dt, int64_t n,
                                    int64_t bs, int qtype, msbnb__code256 code, const float *sub,
                                    int *bad) {
    __shared__ float scode[256];
    if (qtype < 0)
        for (int t = threadIdx.x; t < 256; t += blockDim.x) scode[t] = code.v[t];
    __syncthreads();
    int lane = threadIdx.x & 31;
    int64_t nb = (n + bs - 1) / bs;
    float off = sub ? *sub : 0.0f;
    for (int64_t b = (int64_t)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5); b < nb;
         b += (int64_t)gridDim.x * WARPS_PER_BLOCK) {
        int64_t start = b * bs, len = n - start < bs ? n - start : bs;
        float m = 0.0f;
        int nonfinite = 0;
        for (int64_t i = lane; i < len; i += 32) {
            float v = msbnb__ld_f32(x, dt, start + i);
            if (sub) v = __fsub_rn(v, off);
            nonfinite |= !isfinite(v);
            m = fmaxf(m, fabsf(v));
        }
        m = msbnb__warp_max(m);
        if (__any_sync(0xffffffffu, nonfinite)) {
            if (lane == 0) *bad = 1;
            continue;
        }
        if (lane == 0) absmax[b] = m;
        float inv = msbnb__rcp_approx_ftz(m);
        if (qtype < 0) {
            for (int64_t i = lane; i < len; i += 32) {
                float v = msbnb__ld_f32(x, dt, start + i);
                if (sub) v = __fsub_rn(v, off);
                out[start + i] = msbnb__dcode8_of(scode, msbnb__dmul_ftz(v, inv));
            }
        } else {
            for (int64_t p = lane; 2 * p < len; p += 32) {
                int64_t i = 2 * p;
                float a = msbnb__dmul_ftz(msbnb__ld_f32(x, dt, start + i), inv);
                float c = msbnb__dmul_ftz(i + 1 < len ? msbnb__ld_f32(x, dt, start + i + 1) : 0.0f, inv);
                uint8_t hi, lo;
                if (qtype == MSBNB_QTYPE_NF4) {
                    hi = msbnb__dnf4_code_of(a);
                    lo = msbnb__dnf4_code_of(c);
                } else {
                    hi = msbnb__dfp4_code_of(a);
                    lo = msbnb__dfp4_code_of(c);
                }
                out[start / 2 + p] = (uint8_t)(hi << 4 | lo);
            }
        }
    }
}

static msbnb_status launch_quant(uint8_t *out, float *absmax, const void *x, msbnb_dtype dt, int64_t n,
                                 int64_t bs, int qtype, const float *code, const float *sub) {
    msbnb__code256 c;
    memcpy(c.v, code ? code : msbnb__dynamic_map, sizeof c.v);
    int *bad = NULL;
    MSBNB_TRY(msbnb__cuda_flag_alloc(&bad));
    int64_t nb = (n + bs - 1) / bs;
    quant_blocks_kernel<<<msbnb__grid(nb, WARPS_PER_BLOCK), 32 * WARPS_PER_BLOCK>>>(out, absmax, x, (int)dt, n, bs,
                                                                               qtype, c, sub, bad);
    cudaError_t e = cudaGetLastError();
    int v = 0;
    msbnb_status st = msbnb__cuda_flag_read(bad, &v);
    if (e != cudaSuccess) return msbnb__fail(MSBNB_ERR_CUDA, "quantize kernel: %s", cudaGetErrorString(e));
    if (st != MSBNB_OK) return st;
    if (v) return msbnb__fail(MSBNB_ERR_NON_FINITE, "quantize: input contains NaN or Inf");
    return MSBNB_OK;
}

extern "C" msbnb_status msbnb_cuda_quantize_4bit(uint8_t *packed, float *absmax, const void *x,
                                                msbnb_dtype x_type, int64_t n, int64_t blocksize,
                                                msbnb_qtype type) {
    MSBNB_CHECK_NULL(packed);
    MSBNB_CHECK_NULL(absmax);
    MSBNB_CHECK_NULL(x);
    MSBNB_TRY(check_n(n, __func__));
    MSBNB_TRY(check_blocksize(blocksize, __func__));
    if (type != MSBNB_QTYPE_NF4 && type != MSBNB_QTYPE_FP4)
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "%s: type must be nf4 or fp4 (got %d)", __func__, (int)type);
    MSBNB_TRY(check_float_type(x_type, __func__, "x_type"));
    return launch_quant(packed, absmax, x, x_type, n, blocksize, (int)type, NULL, NULL);
}

extern "C" msbnb_status msbnb_cuda_quantize_blockwise_8bit(uint8_t *q, float *absmax, const void *x,
                                                          msbnb_dtype x_type, int64_t n,
                                                          int64_t blocksize, const float *code) {
    MSBNB_CHECK_NULL(q);
    MSBNB_CHECK_NULL(absmax);
    MSBNB_CHECK_NULL(x);
    MSBNB_TRY(check_n(n, __func__));
    MSBNB_TRY(check_blocksize(blocksize, __func__));
    MSBNB_TRY(check_float_type(x_type, __func__, "x_type"));
    return launch_quant(q, absmax, x, x_type, n, blocksize, -1, code, NULL);
}

/* Eight outputs per group: out[i] = code[nibble or byte] * absmax[i / bs] (one block
 * covers all eight since bs >= 32). */
__device__ __forceinline__ void dequant_group(void *out, int ot, const uint8_t *q, const float *scode,
                                              int64_t i0, int64_t n, float a, int four_bit) {
    float v[8];
#pragma unroll
    for (int j = 0; j < 8; j++) {
        int64_t i = i0 + j;
        if (i >= n) break;
        int c = four_bit ? ((i & 1) ? (q[i >> 1] & 15) : (q[i >> 1] >> 4)) : q[i];
        v[j] = __fmul_rn(scode[c], a);
    }
    if (i0 + 8 <= n && ot == MSBNB_DTYPE_BF16 && ((uintptr_t)out & 15) == 0) {
        uint4 pk;
        uint32_t *w = (uint32_t *)&pk;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            __nv_bfloat162 h = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);
            w[j] = *(uint32_t *)&h;
        }
        ((uint4 *)out)[i0 / 8] = pk;
    } else {
        for (int j = 0; j < 8 && i0 + j < n; j++) msbnb__st_f32(out, ot, i0 + j, v[j]);
    }
}

/* fast4 (4-bit to 16-byte-aligned bf16): each thread takes DQ4_ILP groups of 8 codes a
 * block-width apart, all of their 4-byte loads issued before any use — one load in flight
 * per thread left the stream at about a third of the copy bandwidth (the layer's m > 16
 * path dequantizes the whole weight before cuBLAS). */
#define DQ4_ILP 4

__global__ void dequant_blocks_kernel(void *out, int ot, const uint8_t *q, const float *absmax,
                                      int64_t n, int bs_log2, int four_bit, int fast4, msbnb__code256 code) {
    __shared__ float scode[256];
    __shared__ float slut[16 * 32]; /* 4-bit table, one copy per bank (conflict-free lookups) */
    for (int t = threadIdx.x; t < 256; t += blockDim.x) scode[t] = code.v[t];
    for (int t = threadIdx.x; t < 16 * 32; t += blockDim.x) slut[t] = code.v[(t >> 5) & 15];
    __syncthreads();
    const int lane = threadIdx.x & 31;
    if (fast4) {
        const int64_t nfull = n / 8, bd = blockDim.x;
        for (int64_t g0 = (int64_t)blockIdx.x * bd * DQ4_ILP + threadIdx.x; g0 < nfull;
             g0 += (int64_t)gridDim.x * bd * DQ4_ILP) {
            uint32_t wv[DQ4_ILP];
            float av[DQ4_ILP];
#pragma unroll
            for (int u = 0; u < DQ4_ILP; u++) {
                const int64_t g = g0 + u * bd;
                if (g < nfull) {
                    wv[u] = __ldg((const uint32_t *)q + g);
                    av[u] = __ldg(absmax + ((g * 8) >> bs_log2));
                }
            }
#pragma unroll
            for (int u = 0; u < DQ4_ILP; u++) {
                const int64_t g = g0 + u * bd;
                if (g >= nfull) break;
                uint4 pk;
                uint32_t *o = (uint32_t *)&pk;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    uint32_t byte = wv[u] >> (8 * j);
                    float hi = __fmul_rn(slut[((byte >> 4) & 15) * 32 + lane], av[u]);
                    float lo = __fmul_rn(slut[(byte & 15) * 32 + lane], av[u]);
                    __nv_bfloat162 h = __floats2bfloat162_rn(hi, lo);
                    o[j] = *(uint32_t *)&h;
                }
                ((uint4 *)out)[g] = pk;
            }
        }
        /* the last, partial group */
        if (blockIdx.x == 0 && threadIdx.x == 0 && nfull * 8 < n)
            dequant_group(out, ot, q, scode, nfull * 8, n, absmax[(nfull * 8) >> bs_log2], four_bit);
        return;
    }
    int64_t ngroups = (n + 7) / 8;
    for (int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; g < ngroups;
         g += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i0 = g * 8;
        dequant_group(out, ot, q, scode, i0, n, absmax[i0 >> bs_log2], four_bit);
    }
}

static msbnb_status launch_dequant(void *out, msbnb_dtype ot, const uint8_t *q, const float *absmax,
                                   int64_t n, int64_t bs, int four_bit, const float *code) {
    msbnb__code256 c;
    memset(&c, 0, sizeof c);
    memcpy(c.v, code, four_bit ? 16 * sizeof(float) : sizeof c.v);
    int bs_log2 = 0;
    while ((1LL << bs_log2) < bs) bs_log2++; /* block sizes are powers of two (validated) */
    int fast4 = four_bit && ot == MSBNB_DTYPE_BF16 && ((uintptr_t)out & 15) == 0 && ((uintptr_t)q & 3) == 0;
    const int64_t per_thread = fast4 ? 8 * DQ4_ILP : 8;
    dequant_blocks_kernel<<<msbnb__grid((n + per_thread - 1) / per_thread, 256), 256>>>(out, (int)ot, q, absmax, n,
                                                                                        bs_log2, four_bit, fast4, c);
    MSBNB_CUDA_LAUNCHED();
    return MSBNB_OK;
}

extern "C" msbnb_status msbnb_cuda_dequantize_4bit(void *out, msbnb_dtype out_type, const uint8_t *packed,
                                                  const float *absmax, int64_t n, int64_t blocksize,
                                                  msbnb_qtype type) {
    MSBNB_CHECK_NULL(out);
    MSBNB_CHECK_NULL(packed);
    MSBNB_CHECK_NULL(absmax);
    MSBNB_TRY(check_n(n, __func__));
    MSBNB_TRY(check_blocksize(blocksize, __func__));
    if (type != MSBNB_QTYPE_NF4 && type != MSBNB_QTYPE_FP4)
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "%s: type must be nf4 or fp4 (got %d)", __func__, (int)type);
    MSBNB_TRY(check_float_type(out_type, __func__, "out_type"));
    return launch_dequant(out, out_type, packed, absmax, n, blocksize, 1,
                          type == MSBNB_QTYPE_NF4 ? msbnb__nf4_code : msbnb__fp4_dequant);
}

extern "C" msbnb_status msbnb_cuda_dequantize_blockwise_8bit(void *out, msbnb_dtype out_type, const uint8_t *q,
                                                            const float *absmax, int64_t n,
                                                            int64_t blocksize, const float *code) {
    MSBNB_CHECK_NULL(out);
    MSBNB_CHECK_NULL(q);
    MSBNB_CHECK_NULL(absmax);
    MSBNB_TRY(check_n(n, __func__));
    MSBNB_TRY(check_blocksize(blocksize, __func__));
    MSBNB_TRY(check_float_type(out_type, __func__, "out_type"));
    return launch_dequant(out, out_type, q, absmax, n, blocksize, 0, code ? code : msbnb__dynamic_map);
}

/* ---------------------------------------------------------------- double quantization */

/* torch.mean of a float32 CUDA tensor in PyTorch's reduction order — the same schedule
 * as torch_mean_f32 in src/quant/blockwise.c (read its comment): bw threads, four
 * partial sums each, then a fold by halves; sum * (1/n). One block; also flags
 * non-finite input. */
__global__ void torch_mean_kernel(float *mean, const float *x, int64_t n, int *bad) {
    __shared__ float part[512];
    int t = threadIdx.x, bw = blockDim.x;
    int vectorized = n > 128;
    float acc[4] = {0, 0, 0, 0};
    int nonfinite = 0;
    for (int64_t i = t; i < n; i += bw) nonfinite |= !isfinite(x[i]);
    if (vectorized) {
        for (int64_t v = t; v * 4 + 3 < n; v += bw)
            for (int i = 0; i < 4; i++) acc[i] = __fadd_rn(acc[i], x[v * 4 + i]);
        int64_t tail = n - n % 4;
        if (tail + t < n) acc[0] = __fadd_rn(acc[0], x[tail + t]);
    } else {
        int64_t idx = t, stride = bw;
        while (idx + 3 * stride < n) {
            for (int i = 0; i < 4; i++) acc[i] = __fadd_rn(acc[i], x[idx + i * stride]);
            idx += 4 * stride;
        }
        for (int i = 0; i < 4 && idx < n; i++, idx += stride) acc[i] = __fadd_rn(acc[i], x[idx]);
    }
    part[t] = __fadd_rn(__fadd_rn(__fadd_rn(acc[0], acc[1]), acc[2]), acc[3]);
    if (nonfinite) *bad = 1;
    __syncthreads();
    for (int off = bw / 2; off > 0; off >>= 1) {
        if (t < off) part[t] = __fadd_rn(part[t], part[t + off]);
        __syncthreads();
    }
    if (t == 0) *mean = __fmul_rn(part[0], __fdiv_rn(1.0f, (float)n));
}

extern "C" msbnb_status msbnb_cuda_double_quant_absmax(uint8_t *qabsmax, float *nested_absmax, float *offset,
                                                      const float *absmax, int64_t nblocks) {
    MSBNB_CHECK_NULL(qabsmax);
    MSBNB_CHECK_NULL(nested_absmax);
    MSBNB_CHECK_NULL(offset);
    MSBNB_CHECK_NULL(absmax);
    MSBNB_TRY(check_n(nblocks, __func__));
    int64_t dim0 = nblocks > 128 ? nblocks / 4 : nblocks;
    int bw = 1;
    while ((int64_t)bw * 2 <= dim0 && bw < 512) bw *= 2;
    int *bad = NULL;
    MSBNB_TRY(msbnb__cuda_flag_alloc(&bad));
    torch_mean_kernel<<<1, bw>>>(offset, absmax, nblocks, bad);
    cudaError_t e = cudaGetLastError();
    int v = 0;
    msbnb_status st = msbnb__cuda_flag_read(bad, &v);
    if (e != cudaSuccess) return msbnb__fail(MSBNB_ERR_CUDA, "%s: %s", __func__, cudaGetErrorString(e));
    if (st != MSBNB_OK) return st;
    if (v) return msbnb__fail(MSBNB_ERR_NON_FINITE, "%s: absmax contains NaN or Inf", __func__);
    return launch_quant(qabsmax, nested_absmax, absmax, MSBNB_DTYPE_F32, nblocks, MSBNB_NESTED_BLOCKSIZE, -1,
                        NULL, offset);
}

__global__ void double_dequant_kernel(float *absmax, const uint8_t *q, const float *nested, const float *offset,
                                      int64_t nb, msbnb__code256 code) {
    float off = *offset;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < nb; i += (int64_t)gridDim.x * blockDim.x)
        absmax[i] = __fadd_rn(__fmul_rn(code.v[q[i]], nested[i / MSBNB_NESTED_BLOCKSIZE]), off);
}

extern "C" msbnb_status msbnb_cuda_double_dequant_absmax(float *absmax, const uint8_t *qabsmax,
                                                        const float *nested_absmax, const float *offset,
                                                        int64_t nblocks) {
    MSBNB_CHECK_NULL(absmax);
    MSBNB_CHECK_NULL(qabsmax);
    MSBNB_CHECK_NULL(nested_absmax);
    MSBNB_CHECK_NULL(offset);
    MSBNB_TRY(check_n(nblocks, __func__));
    msbnb__code256 c;
    memcpy(c.v, msbnb__dynamic_map, sizeof c.v);
    double_dequant_kernel<<<msbnb__grid(nblocks, 256), 256>>>(absmax, qabsmax, nested_absmax, offset, nblocks, c);
    MSBNB_CUDA_LAUNCHED();
    return MSBNB_OK;
}

/* ---------------------------------------------------------------- LLM.int8 row-wise */

/* One block per row (threshold 0): absmax over the row, s = 127 * rcp.approx(absmax)
 * (bitsandbytes' __fdividef), q = rint(a * s), NaN (a zero row) -> 0. */
__global__ void int8_rowwise_kernel(int8_t *q, float *row_absmax, const void *a, int dt, int64_t rows,
                                    int64_t cols, int *bad) {
    __shared__ float red[32];
    __shared__ int sbad;
    msbnb__pdl_launch_next(); /* the int8 GEMV after us may start and load its weights */
    msbnb__pdl_wait(); /* a: from the kernel before; q, row_absmax: maybe still read by it */
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        float m = 0.0f;
        int nonfinite = 0;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            float v = msbnb__ld_f32(a, dt, r * cols + c);
            nonfinite |= !isfinite(v);
            m = fmaxf(m, fabsf(v));
        }
        if (threadIdx.x == 0) sbad = 0;
        m = msbnb__warp_max(m);
        __syncthreads();
        if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = m;
        if (nonfinite) sbad = 1;
        __syncthreads();
        m = 0.0f;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) m = fmaxf(m, red[w]);
        if (sbad) { /* the call fails (NON_FINITE); a layer's forward gets NaN outputs */
            if (threadIdx.x == 0) *bad = 1, row_absmax[r] = __int_as_float(0x7fc00000);
            __syncthreads();
            continue;
        }
        if (threadIdx.x == 0) row_absmax[r] = m;
        float s = __fmul_rn(127.0f, msbnb__rcp_approx_ftz(m));
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            float v = __fmul_rn(msbnb__ld_f32(a, dt, r * cols + c), s);
            q[r * cols + c] = (v == v) ? msbnb__sat8(rintf(v)) : 0;
        }
        __syncthreads();
    }
}

/* LLM.int8 outlier columns (bitsandbytes MatMul8bitLt, threshold > 0), as the CPU's
 * msbnb_int8_vectorwise_quant: column c is an outlier if |a[r, c]| >= threshold in any row.
 * flags [cols] must be zero before. */
__global__ void int8_outlier_flags_kernel(int *flags, const void *a, int dt, int64_t rows, int64_t cols, float t) {
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
        for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += (int64_t)gridDim.x * blockDim.x)
            if (fabsf(msbnb__ld_f32(a, dt, r * cols + c)) >= t) flags[c] = 1;
}

/* One block: the flagged columns in ascending order -> outl[0..*nout). */
__global__ void int8_outlier_compact_kernel(int *outl, int *nout, const int *flags, int64_t cols) {
    __shared__ int wsum[32];
    __shared__ int base;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (threadIdx.x == 0) base = 0;
    __syncthreads();
    for (int64_t c0 = 0; c0 < cols; c0 += blockDim.x) {
        const int64_t c = c0 + threadIdx.x;
        const bool f = c < cols && flags[c];
        const unsigned bal = __ballot_sync(0xffffffffu, f);
        if (lane == 0) wsum[warp] = __popc(bal);
        __syncthreads();
        int off = base;
        for (int w = 0; w < warp; w++) off += wsum[w];
        if (f) outl[off + __popc(bal & ((1u << lane) - 1u))] = (int)c;
        __syncthreads();
        if (threadIdx.x == 0)
            for (int w = 0; w < nw; w++) base += wsum[w];
        __syncthreads();
    }
    if (threadIdx.x == 0) *nout = base;
}

/* One block per row: int8_rowwise_kernel with outlier columns: the absmax skips |a| >
 * threshold (bitsandbytes' kInt8VectorQuant; an |a| == threshold counts, though its column
 * is an outlier) and outlier columns get code 0. */
__global__ void int8_rowwise_outl_kernel(int8_t *q, float *row_absmax, const void *a, int dt, int64_t rows,
                                         int64_t cols, float t, const int *flags) {
    __shared__ float red[32];
    msbnb__pdl_launch_next(); /* the int8 GEMV after us may start and load its weights */
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        float m = 0.0f;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            float v = fabsf(msbnb__ld_f32(a, dt, r * cols + c));
            m = fmaxf(m, v > t ? 0.0f : v);
        }
        m = msbnb__warp_max(m);
        __syncthreads();
        if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = m;
        __syncthreads();
        m = 0.0f;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) m = fmaxf(m, red[w]);
        if (threadIdx.x == 0) row_absmax[r] = m;
        float s = __fmul_rn(127.0f, msbnb__rcp_approx_ftz(m));
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            float v = __fmul_rn(msbnb__ld_f32(a, dt, r * cols + c), s);
            q[r * cols + c] = flags[c] ? 0 : (v == v) ? msbnb__sat8(rintf(v)) : 0;
        }
    }
}

msbnb_status msbnb__cuda_int8_outliers_async(int8_t *q, float *row_absmax, int *flags, int *outl, int *nout,
                                             const void *a, msbnb_dtype a_type, int64_t rows, int64_t cols,
                                             float threshold) {
    MSBNB_CUDA_TRY(cudaMemsetAsync(flags, 0, (size_t)cols * sizeof(int), 0));
    int64_t gx = (cols + 255) / 256, gy = rows;
    if (gx > 1024) gx = 1024;
    if (gy > 65535) gy = 65535;
    int8_outlier_flags_kernel<<<dim3((unsigned)gx, (unsigned)gy), 256>>>(flags, a, (int)a_type, rows, cols, threshold);
    MSBNB_CUDA_LAUNCHED();
    int8_outlier_compact_kernel<<<1, 1024>>>(outl, nout, flags, cols);
    MSBNB_CUDA_LAUNCHED();
    int64_t g = rows < 65535LL * 16 ? rows : 65535LL * 16;
    int8_rowwise_outl_kernel<<<(unsigned)g, rows < 132 * 2 ? 1024 : 256>>>(q, row_absmax, a, (int)a_type, rows, cols,
                                                                            threshold, flags);
    MSBNB_CUDA_LAUNCHED();
    return MSBNB_OK;
}

msbnb_status msbnb__cuda_int8_rowwise_async(int8_t *q, float *row_absmax, const void *a, msbnb_dtype a_type,
                                            int64_t rows, int64_t cols, int *bad) {
    int64_t g = rows < 65535LL * 16 ? rows : 65535LL * 16;
    /* few rows (the activations of a GEMV): 1024 threads a row, so the two passes over a
     * long row are short dependent chains */
    unsigned threads = rows < 132 * 2 ? 1024 : 256;
    /* Few rows (a GEMV's activation): launched with PDL, resident while the kernel before
     * drains (it waits before reading a). H200, LLM.int8 M = 1 with the GEMV after it
     * (bench/RESULTS.md, 2026-12-02): (4096, 14336) 0.0231 -> 0.0215 ms, (14336, 4096)
     * 0.0244 -> 0.0224; at M = 16 mixed. MSBNB_CUDA_I8Q_PDL = 0 | 1 forces it. */
    const char *e = getenv("MSBNB_CUDA_I8Q_PDL");
    const bool pdl = (e && *e ? e[0] == '1' : rows <= 4) && msbnb__pdl_ok();
    MSBNB_CUDA_TRY(msbnb__launch(int8_rowwise_kernel, dim3((unsigned)g), dim3(threads), 0, pdl, q, row_absmax, a,
                                 (int)a_type, rows, cols, bad));
    return MSBNB_OK;
}

extern "C" msbnb_status msbnb_cuda_int8_vectorwise_quant(int8_t *q, float *row_absmax, const void *a,
                                                        msbnb_dtype a_type, int64_t rows, int64_t cols) {
    MSBNB_CHECK_NULL(q);
    MSBNB_CHECK_NULL(row_absmax);
    MSBNB_CHECK_NULL(a);
    MSBNB_TRY(check_dims(rows, cols, __func__));
    MSBNB_TRY(check_float_type(a_type, __func__, "a_type"));
    int *bad = NULL;
    MSBNB_TRY(msbnb__cuda_flag_alloc(&bad));
    msbnb_status ls = msbnb__cuda_int8_rowwise_async(q, row_absmax, a, a_type, rows, cols, bad);
    int v = 0;
    msbnb_status st = msbnb__cuda_flag_read(bad, &v);
    if (ls != MSBNB_OK) return ls;
    if (st != MSBNB_OK) return st;
    if (v) return msbnb__fail(MSBNB_ERR_NON_FINITE, "%s: a contains NaN or Inf", __func__);
    return MSBNB_OK;
}

__global__ void int8_rowwise_dequant_kernel(float *out, const int8_t *q, const float *row_absmax, int64_t rows,
                                            int64_t cols) {
    int64_t n = rows * cols;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float s = __fdiv_rn(row_absmax[i / cols], 127.0f);
        out[i] = __fmul_rn((float)q[i], s);
    }
}

extern "C" msbnb_status msbnb_cuda_int8_vectorwise_dequant(float *out, const int8_t *q, const float *row_absmax,
                                                          int64_t rows, int64_t cols) {
    MSBNB_CHECK_NULL(out);
    MSBNB_CHECK_NULL(q);
    MSBNB_CHECK_NULL(row_absmax);
    MSBNB_TRY(check_dims(rows, cols, __func__));
    int8_rowwise_dequant_kernel<<<msbnb__grid(rows * cols, 256), 256>>>(out, q, row_absmax, rows, cols);
    MSBNB_CUDA_LAUNCHED();
    return MSBNB_OK;
}

/* ---------------------------------------------------------------- INT8 per row / tensor */

#define SPAN_CHUNK 65536

/* Partial min/max of chunk c of group g (groups of `len` values). */
__global__ void span_range_kernel(float *pmin, float *pmax, const float *w, int64_t groups, int64_t len,
                                  int64_t nchunks, int *bad) {
    __shared__ float smin[32], smax[32];
    __shared__ int sbad;
    for (int64_t item = blockIdx.x; item < groups * nchunks; item += gridDim.x) {
        int64_t g = item / nchunks, c = item % nchunks;
        int64_t b = c * SPAN_CHUNK, e = b + SPAN_CHUNK < len ? b + SPAN_CHUNK : len;
        const float *x = w + g * len;
        float lo = x[b], hi = x[b];
        int nonfinite = 0;
        for (int64_t i = b + threadIdx.x; i < e; i += blockDim.x) {
            nonfinite |= !isfinite(x[i]);
            lo = fminf(lo, x[i]);
            hi = fmaxf(hi, x[i]);
        }
        if (threadIdx.x == 0) sbad = 0;
        lo = warp_min(lo);
        hi = msbnb__warp_max(hi);
        __syncthreads();
        if ((threadIdx.x & 31) == 0) {
            smin[threadIdx.x >> 5] = lo;
            smax[threadIdx.x >> 5] = hi;
        }
        if (nonfinite) sbad = 1;
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int k = 0; k < (int)(blockDim.x >> 5); k++) {
                lo = fminf(lo, smin[k]);
                hi = fmaxf(hi, smax[k]);
            }
            pmin[item] = lo;
            pmax[item] = hi;
            if (sbad) *bad = 1;
        }
        __syncthreads();
    }
}

/* Scale (and zero point) of each group from its partial ranges: the CPU's formulas. */
__global__ void scale8_kernel(float *scale, float *offset, const float *pmin, float *pmax, int64_t groups,
                              int64_t nchunks, int symmetric) {
    for (int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += (int64_t)gridDim.x * blockDim.x) {
        float mn = pmin[g * nchunks], mx = pmax[g * nchunks];
        for (int64_t c = 1; c < nchunks; c++) {
            mn = fminf(mn, pmin[g * nchunks + c]);
            mx = fmaxf(mx, pmax[g * nchunks + c]);
        }
        if (symmetric) {
            float amax = fmaxf(fabsf(mn), fabsf(mx));
            scale[g] = __fdiv_rn(amax, 127.0f);
            /* the CPU's 127 / amax, handed to quant8_kernel in a slot no one reads again */
            pmax[g * nchunks] = amax > 0 ? __fdiv_rn(127.0f, amax) : 0.0f;
        } else {
            if (mn > 0) mn = 0;
            if (mx < 0) mx = 0;
            float s = __fdiv_rn(__fsub_rn(mx, mn), 255.0f);
            scale[g] = s;
            float z = 0.0f;
            if (s != 0) {
                z = __fsub_rn(-128.0f, rintf(__fdiv_rn(mn, s)));
                if (z < -128) z = -128;
                if (z > 127) z = 127;
            }
            offset[g] = z;
        }
    }
}

/* Codes: symmetric q = rint(x * (127 / amax)) with the factor scale8_kernel left in
 * pmax[g * nchunks]; asymmetric q = rint(x / s) + z. */
__global__ void quant8_kernel(int8_t *q, const float *w, const float *scale, const float *offset,
                              const float *pmax, int64_t n, int64_t len, int64_t nchunks, int symmetric) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t g = i / len;
        if (symmetric) {
            q[i] = msbnb__sat8(rintf(__fmul_rn(w[i], pmax[g * nchunks])));
        } else {
            float s = scale[g];
            q[i] = s == 0 ? 0 : msbnb__sat8(__fadd_rn(rintf(__fdiv_rn(w[i], s)), offset[g]));
        }
    }
}

extern "C" msbnb_status msbnb_cuda_quantize_8bit(int8_t *q, float *scale, float *offset, const float *w,
                                                int64_t rows, int64_t cols, int symmetric, int per_tensor) {
    MSBNB_CHECK_NULL(q);
    MSBNB_CHECK_NULL(scale);
    MSBNB_CHECK_NULL(w);
    if (!symmetric) MSBNB_CHECK_NULL(offset);
    MSBNB_TRY(check_dims(rows, cols, __func__));
    int64_t groups = per_tensor ? 1 : rows, len = per_tensor ? rows * cols : cols;
    int64_t nchunks = (len + SPAN_CHUNK - 1) / SPAN_CHUNK;
    float *part = NULL;
    MSBNB_TRY(msbnb_cuda_malloc((void **)&part, (size_t)(2 * groups * nchunks) * sizeof(float)));
    float *pmin = part, *pmax = part + groups * nchunks;
    int *bad = NULL;
    msbnb_status st = msbnb__cuda_flag_alloc(&bad);
    if (st != MSBNB_OK) {
        cudaFree(part);
        return st;
    }
    span_range_kernel<<<msbnb__grid(groups * nchunks, 1), 256>>>(pmin, pmax, w, groups, len, nchunks, bad);
    scale8_kernel<<<msbnb__grid(groups, 256), 256>>>(scale, offset, pmin, pmax, groups, nchunks, symmetric);
    quant8_kernel<<<msbnb__grid(rows * cols, 256), 256>>>(q, w, scale, offset, pmax, rows * cols, len, nchunks,
                                                         symmetric);
    cudaError_t e = cudaGetLastError();
    int v = 0;
    st = msbnb__cuda_flag_read(bad, &v);
    cudaFree(part);
    if (e != cudaSuccess) return msbnb__fail(MSBNB_ERR_CUDA, "%s: %s", __func__, cudaGetErrorString(e));
    if (st != MSBNB_OK) return st;
    if (v) return msbnb__fail(MSBNB_ERR_NON_FINITE, "%s: w contains NaN or Inf", __func__);
    return MSBNB_OK;
}

__global__ void dequant8_kernel(float *out, const int8_t *q, const float *scale, const float *offset, int64_t n,
                                int64_t len, int symmetric) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t g = i / len;
        float z = symmetric ? 0.0f : offset[g];
        out[i] = __fmul_rn(__fsub_rn((float)q[i], z), scale[g]);
    }
}

extern "C" msbnb_status msbnb_cuda_dequantize_8bit(float *out, const int8_t *q, const float *scale,
                                                  const float *offset, int64_t rows, int64_t cols, int symmetric,
                                                  int per_tensor) {
    MSBNB_CHECK_NULL(out);
    MSBNB_CHECK_NULL(q);
    MSBNB_CHECK_NULL(scale);
    if (!symmetric) MSBNB_CHECK_NULL(offset);
    MSBNB_TRY(check_dims(rows, cols, __func__));
    int64_t len = per_tensor ? rows * cols : cols;
    dequant8_kernel<<<msbnb__grid(rows * cols, 256), 256>>>(out, q, scale, offset, rows * cols, len, symmetric);
    MSBNB_CUDA_LAUNCHED();
    return MSBNB_OK;
}

/* ---------------------------------------------------------------- INT4 per group */

/* One warp per (row, group): symmetric d = m / -8 with m the FIRST value of largest
 * magnitude (the CPU scans in order and keeps strict improvements), asymmetric
 * d = (max - min) / 15. */
__global__ void int4_scale_kernel(float *scales, float *mins, const float *w, int64_t rows, int64_t cols,
                                  int64_t gs, int64_t gpr, int symmetric, int *bad) {
    int lane = threadIdx.x & 31;
    for (int64_t item = (int64_t)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5); item < rows * gpr;
         item += (int64_t)gridDim.x * WARPS_PER_BLOCK) {
        int64_t r = item / gpr, g = item % gpr;
        int64_t c0 = g * gs, len = cols - c0 < gs ? cols - c0 : gs;
        const float *x = w + r * cols + c0;
        int nonfinite = 0;
        if (symmetric) {
            float best = -1.0f;
            int64_t bi = 0;
            for (int64_t i = lane; i < len; i += 32) {
                nonfinite |= !isfinite(x[i]);
                float a = fabsf(x[i]);
                if (a > best) {
                    best = a;
                    bi = i;
                }
            }
            for (int o = 16; o > 0; o >>= 1) {
                float ob = __shfl_xor_sync(0xffffffffu, best, o);
                int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
                if (ob > best || (ob == best && oi < bi)) {
                    best = ob;
                    bi = oi;
                }
            }
            /* CPU: m starts at 0.0f and only |x| > |m| replaces it, so an all-zero group
             * keeps m = +0 (x[bi] could be -0). */
            float m = best > 0.0f ? x[bi] : 0.0f;
            float d = __fdiv_rn(m, -8.0f);
            if (lane == 0) scales[item] = d;
        } else {
            /* The CPU keeps the FIRST of equal extremes (strict < / >), which matters for
             * -0 vs +0: carry the index and break ties towards the lower one. */
            float mn = x[0], mx = x[0];
            int64_t imn = 0, imx = 0;
            for (int64_t i = lane; i < len; i += 32) {
                nonfinite |= !isfinite(x[i]);
                if (x[i] < mn || (x[i] == mn && i < imn)) mn = x[i], imn = i;
                if (x[i] > mx || (x[i] == mx && i < imx)) mx = x[i], imx = i;
            }
            for (int o = 16; o > 0; o >>= 1) {
                float omn = __shfl_xor_sync(0xffffffffu, mn, o), omx = __shfl_xor_sync(0xffffffffu, mx, o);
                int64_t oimn = __shfl_xor_sync(0xffffffffu, imn, o), oimx = __shfl_xor_sync(0xffffffffu, imx, o);
                if (omn < mn || (omn == mn && oimn < imn)) mn = omn, imn = oimn;
                if (omx > mx || (omx == mx && oimx < imx)) mx = omx, imx = oimx;
            }
            if (lane == 0) {
                scales[item] = __fdiv_rn(__fsub_rn(mx, mn), 15.0f);
                mins[item] = mn;
            }
        }
        if (__any_sync(0xffffffffu, nonfinite) && lane == 0) *bad = 1;
    }
}

__device__ __forceinline__ uint8_t clamp15(float v) {
    if (!(v >= 0.0f)) return 0;
    if (v > 15.0f) return 15;
    return (uint8_t)v;
}

__device__ __forceinline__ uint8_t int4_code(const float *w, const float *scales, const float *mins, int64_t i,
                                             int64_t cols, int64_t gs, int64_t gpr, int symmetric) {
    int64_t g = (i / cols) * gpr + (i % cols) / gs;
    float d = scales[g], id = d != 0 ? __fdiv_rn(1.0f, d) : 0.0f;
    if (symmetric) return clamp15(__fadd_rn(rintf(__fmul_rn(w[i], id)), 8.0f));
    return clamp15(rintf(__fmul_rn(__fsub_rn(w[i], mins[g]), id)));
}

__global__ void int4_pack_kernel(uint8_t *packed, const float *w, const float *scales, const float *mins,
                                 int64_t n, int64_t cols, int64_t gs, int64_t gpr, int symmetric) {
    int64_t nbytes = (n + 1) / 2;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < nbytes; t += (int64_t)gridDim.x * blockDim.x) {
        uint8_t hi = int4_code(w, scales, mins, 2 * t, cols, gs, gpr, symmetric);
        uint8_t lo = 2 * t + 1 < n ? int4_code(w, scales, mins, 2 * t + 1, cols, gs, gpr, symmetric) : 0;
        packed[t] = (uint8_t)(hi << 4 | lo);
    }
}

extern "C" msbnb_status msbnb_cuda_quantize_int4(uint8_t *packed, float *scales, float *mins, const float *w,
                                                int64_t rows, int64_t cols, int64_t group_size, int symmetric) {
    MSBNB_CHECK_NULL(packed);
    MSBNB_CHECK_NULL(scales);
    MSBNB_CHECK_NULL(w);
    if (!symmetric) MSBNB_CHECK_NULL(mins);
    int64_t gpr, nbytes;
    MSBNB_TRY(msbnb_int4_sizes(rows, cols, group_size, &gpr, &nbytes));
    int *bad = NULL;
    MSBNB_TRY(msbnb__cuda_flag_alloc(&bad));
    int4_scale_kernel<<<msbnb__grid(rows * gpr, WARPS_PER_BLOCK), 32 * WARPS_PER_BLOCK>>>(
        scales, mins, w, rows, cols, group_size, gpr, symmetric, bad);
    int4_pack_kernel<<<msbnb__grid(nbytes, 256), 256>>>(packed, w, scales, mins, rows * cols, cols, group_size, gpr,
                                                       symmetric);
    cudaError_t e = cudaGetLastError();
    int v = 0;
    msbnb_status st = msbnb__cuda_flag_read(bad, &v);
    if (e != cudaSuccess) return msbnb__fail(MSBNB_ERR_CUDA, "%s: %s", __func__, cudaGetErrorString(e));
    if (st != MSBNB_OK) return st;
    if (v) return msbnb__fail(MSBNB_ERR_NON_FINITE, "%s: w contains NaN or Inf", __func__);
    return MSBNB_OK;
}

__global__ void int4_dequant_kernel(float *out, const uint8_t *packed, const float *scales, const float *mins,
                                    int64_t n, int64_t cols, int64_t gs, int64_t gpr, int symmetric) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t g = (i / cols) * gpr + (i % cols) / gs;
        uint8_t b = packed[i >> 1];
        float u = (float)((i & 1) ? (b & 15) : (b >> 4));
        out[i] = symmetric ? __fmul_rn(__fsub_rn(u, 8.0f), scales[g]) : __fadd_rn(__fmul_rn(u, scales[g]), mins[g]);
    }
}

extern "C" msbnb_status msbnb_cuda_dequantize_int4(float *out, const uint8_t *packed, const float *scales,
                                                  const float *mins, int64_t rows, int64_t cols,
                                                  int64_t group_size, int symmetric) {
    MSBNB_CHECK_NULL(out);
    MSBNB_CHECK_NULL(packed);
    MSBNB_CHECK_NULL(scales);
    if (!symmetric) MSBNB_CHECK_NULL(mins);
    int64_t gpr;
    MSBNB_TRY(msbnb_int4_sizes(rows, cols, group_size, &gpr, NULL));
    int4_dequant_kernel<<<msbnb__grid(rows * cols, 256), 256>>>(out, packed, scales, mins, rows * cols, cols,
                                                               group_size, gpr, symmetric);
    MSBNB_CUDA_LAUNCHED();
    return MSBNB_OK;
}
