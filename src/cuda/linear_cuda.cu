/* The quantized linear layer on the GPU: a device copy of a CPU layer (src/nn/linear.c)
 * whose forward and backward dX compute what the CPU layer computes.
 *
 * Forward, y[M, N] = x[M, K] · Wᵀ + b (f32 accumulation):
 *  - M <= 16: fused kernels that stream W once: the 4-bit GEMV of gemv_cuda.cu for
 *    NF4/FP4 (double-quantized absmax decoded on the fly), an int8·int8 dp4a GEMV for
 *    LLM.int8 weights (exact integer sums, so bit-identical to the CPU layer), and a
 *    warp-per-row decode-and-dot for the other formats.
 *  - M > 16: W is dequantized into the context's scratch (bf16 for bf16 activations,
 *    f32 for f32 ones) and multiplied through cuBLAS; LLM.int8 multiplies the integer codes
 *    (exact in bf16 and f32) and scales after, as the CPU layer does.
 * LLM.int8 (Dettmers et al. 2022, arXiv:2208.07339) quantizes the activation row-wise
 * first, as bitsandbytes' MatMul8bitLt; with a threshold > 0 the outlier columns (|x| >=
 * threshold in any row) get code 0 and are added in float against the dequantized weight
 * columns, in the CPU layer's order: y = ((acc · sx · SCB / 127²) + Σ_c x[:, c] (q[:, c] s))
 * + b. At M <= 16 the integer sums run on the tensor cores (mma.sync m16n8k32 s8, exact),
 * launched so that they prefetch the weight while the activation is quantized (PDL).
 * Backward: dX[M, K] = dY[M, N] · W through the f32 dequantized weight and cublasSgemm. */
#include "cuda/cuda_internal.cuh"

#include <cublas_v2.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* bitsandbytes kdequant_mm_int32_fp16: MM_DEQUANT_CONST = 1/(127*127), as src/nn/linear.c */
#define LIN_MM_DEQUANT_CONST 6.200012e-05f
#define LIN_WARPS 8

/* Device weight, laid out as the CPU view (msbnb__wview); pointers are device memory. */
struct dview {
    int type, sym;
    int bs_log2; /* NF4/FP4/Q8 block = 1 << bs_log2 (powers of two only) */
    int64_t n, k, block, gpr;
    const float *f32;
    const uint16_t *u16;
    const int8_t *q8;
    const float *rscale, *rzero;
    const uint8_t *packed, *qb;
    const float *absmax, *mins, *code;
};

struct msbnb_cuda_linear {
    dview w;
    msbnb_qparams fmt;
    float int8_threshold;
    void *arena;          /* one cudaMalloc holding every array below */
    const float *bias;    /* [N] or NULL */
    const uint8_t *qabsmax; /* 4-bit double quant parts */
    const float *nested, *dq_offset;
    const float *scb;     /* LLM.int8 row absmax [N] */
    int64_t weight_bytes;
    void *fold_arena;     /* NF4/FP4 slice-major copy for the M = 1 fold kernel, or NULL */
    msbnb__fold_layout fold;
};

/* ---------------------------------------------------------------- device side */

__device__ __forceinline__ uint8_t nib(const uint8_t *p, int64_t i) {
    /* bitsandbytes packing: element 2i in the high nibble */
    uint8_t b = p[i >> 1];
    return (i & 1) ? (b & 15) : (b >> 4);
}

/* W[r, k] exactly as dequant_row (src/cpu/gemv_ref.c) computes it (no FMA contraction);
 * raw: a symmetric int8 weight gives its code. T is the format (a template argument, so a
 * kernel instance holds only its own decoder). */
template <int T>
__device__ __forceinline__ float w_at(const dview &w, int64_t r, int64_t k, bool raw) {
    const int64_t i = r * w.k + k;
    switch (T) {
    case MSBNB_QTYPE_F32: return w.f32[i];
    case MSBNB_QTYPE_BF16: return __uint_as_float((uint32_t)w.u16[i] << 16);
    case MSBNB_QTYPE_F16: return __half2float(__ushort_as_half(w.u16[i]));
    case MSBNB_QTYPE_INT8:
        if (w.sym) return raw ? (float)w.q8[i] : __fmul_rn((float)w.q8[i], w.rscale[r]);
        return __fmul_rn(__fsub_rn((float)w.q8[i], w.rzero[r]), w.rscale[r]);
    case MSBNB_QTYPE_INT4: {
        float u = (float)nib(w.packed, i);
        /* group along the row: a shift for power-of-two groups, else a 32-bit division */
        int64_t g = r * w.gpr + (w.bs_log2 >= 0 ? (int)k >> w.bs_log2 : (int)k / (int)w.block);
        return w.sym ? __fmul_rn(__fsub_rn(u, 8.0f), w.absmax[g]) : __fadd_rn(__fmul_rn(u, w.absmax[g]), w.mins[g]);
    }
    case MSBNB_QTYPE_NF4:
    case MSBNB_QTYPE_FP4: return __fmul_rn(w.code[nib(w.packed, i)], w.absmax[i >> w.bs_log2]);
    case MSBNB_QTYPE_Q8_DYNAMIC: return __fmul_rn(w.code[w.qb[i]], w.absmax[i >> w.bs_log2]);
    default: return 0.0f;
    }
}

/* Host: calls F(T) with the format as a compile-time constant. */
#define LIN_TYPE_DISPATCH(t, F)                                                           \
    do {                                                                                  \
        switch (t) {                                                                      \
        case MSBNB_QTYPE_F32: F(MSBNB_QTYPE_F32); break;                                  \
        case MSBNB_QTYPE_BF16: F(MSBNB_QTYPE_BF16); break;                                \
        case MSBNB_QTYPE_F16: F(MSBNB_QTYPE_F16); break;                                  \
        case MSBNB_QTYPE_INT8: F(MSBNB_QTYPE_INT8); break;                                \
        case MSBNB_QTYPE_INT4: F(MSBNB_QTYPE_INT4); break;                                \
        case MSBNB_QTYPE_NF4: F(MSBNB_QTYPE_NF4); break;                                  \
        case MSBNB_QTYPE_FP4: F(MSBNB_QTYPE_FP4); break;                                  \
        default: F(MSBNB_QTYPE_Q8_DYNAMIC); break;                                        \
        }                                                                                 \
    } while (0)

__device__ __forceinline__ float lin_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ void lin_store(void *y, bool bf16, int64_t i, float v) {
    if (bf16) ((__nv_bfloat16 *)y)[i] = __float2bfloat16_rn(v);
    else ((float *)y)[i] = v;
}

/* Any format, M <= MT: one warp per row r decodes W[r, :] (coalesced across lanes) and
 * accumulates the M dot products. */
template <int MT, int T>
__global__ void __launch_bounds__(32 * LIN_WARPS) gemv_any(void *y, const void *x, int xt, dview w, const float *bias, int M) {
    int64_t r = (int64_t)blockIdx.x * LIN_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= w.n) return;
    const int64_t K = w.k;
    float acc[MT];
#pragma unroll
    for (int m = 0; m < MT; m++) acc[m] = 0.0f;
    for (int64_t k = lane; k < K; k += 32) {
        float wv = w_at<T>(w, r, k, false);
#pragma unroll
        for (int m = 0; m < MT; m++)
            if (m < M) acc[m] = fmaf(msbnb__ld_f32(x, xt, (int64_t)m * K + k), wv, acc[m]);
    }
#pragma unroll
    for (int m = 0; m < MT; m++) {
        if (m >= M) break;
        float v = lin_warp_sum(acc[m]);
        if (lane == 0) {
            if (bias) v = __fadd_rn(v, bias[r]);
            lin_store(y, xt == MSBNB_DTYPE_BF16, (int64_t)m * w.n + r, v);
        }
    }
}

/* LLM.int8 outlier columns of one call (device): x[m, outl[c]] for c < *nout, in float. */
struct outl_view {
    const void *x; /* the activation as given (F32 / BF16) */
    int xt;
    const int *cols, *count;
};

/* y[m, r] before the bias: the CPU layer's ((float)acc · sx · SCB) / 127², then plus the
 * outlier columns' Σ_c x[m, c] · (q[r, c] · s[r]), summed in column order without FMA. */
__device__ __forceinline__ float i8_out(float accf, float sxm, int64_t r, int m, const dview &w, const float *scb,
                                        const outl_view &o) {
    float f = __fmul_rn(__fmul_rn(__fmul_rn(accf, sxm), scb[r]), LIN_MM_DEQUANT_CONST);
    if (o.count) {
        const int nc = *o.count;
        const int8_t *q = w.q8 + r * w.k;
        const float s = w.rscale[r];
        float a = 0.0f;
        for (int c = 0; c < nc; c++) {
            const int k = o.cols[c];
            a = __fadd_rn(a, __fmul_rn(msbnb__ld_f32(o.x, o.xt, (int64_t)m * w.k + k), __fmul_rn((float)q[k], s)));
        }
        f = __fadd_rn(f, a);
    }
    return f;
}

/* LLM.int8, M <= MT: acc[m, r] = Σ_k xq[m, k] q[r, k] with dp4a (exact), then
 * y = (float)acc · sx[m] · SCB[r] · 1/127² (+ b), the CPU layer's expression in its order. */
template <int MT>
__global__ void __launch_bounds__(32 * LIN_WARPS) gemv_i8i8(void *y, bool ybf16, const int8_t *xq, const float *sx,
                                                            dview w, const float *scb, const float *bias, int M,
                                                            bool vec, outl_view ov) {
    int64_t r = (int64_t)blockIdx.x * LIN_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= w.n) return;
    const int64_t K = w.k;
    const int8_t *q = w.q8 + r * K;
    long long acc[MT];
#pragma unroll
    for (int m = 0; m < MT; m++) acc[m] = 0;
    int64_t k0 = 0;
    if (vec) { /* 16-byte chunks: rows are 16-byte aligned when K % 16 == 0 */
        const int64_t nch = K / 16;
        for (int64_t c = lane; c < nch; c += 32) {
            int4 qv = __ldg((const int4 *)(q + c * 16));
#pragma unroll
            for (int m = 0; m < MT; m++) {
                if (m >= M) break;
                int4 xv = __ldg((const int4 *)(xq + (int64_t)m * K + c * 16));
                int s = __dp4a(qv.x, xv.x, 0);
                s = __dp4a(qv.y, xv.y, s);
                s = __dp4a(qv.z, xv.z, s);
                s = __dp4a(qv.w, xv.w, s);
                acc[m] += s;
            }
        }
        k0 = nch * 16;
    }
    for (int64_t k = k0 + lane; k < K; k += 32) {
        int qk = q[k];
#pragma unroll
        for (int m = 0; m < MT; m++)
            if (m < M) acc[m] += qk * (int)xq[(int64_t)m * K + k];
    }
#pragma unroll
    for (int m = 0; m < MT; m++) {
        if (m >= M) break;
        long long v = acc[m];
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) {
            float f = i8_out((float)v, sx[m], r, m, w, scb, ov);
            if (bias) f = __fadd_rn(f, bias[r]);
            lin_store(y, ybf16, (int64_t)m * w.n + r, f);
        }
    }
}

/* LLM.int8 at M <= 8 NT on the tensor cores: one block of I8_WARPS warps per 16 weight rows,
 * warp w taking the 256-wide k steps w, w + I8_WARPS, ... (adjacent warps stream adjacent
 * bytes), two steps' loads in flight. A step: lane (g = lane / 4, t = lane % 4) loads the
 * 16 bytes at k = 256 s + 64 i + 16 t, i < 4, of rows g and g + 8 (so each load of a warp
 * covers 64 contiguous bytes of 8 rows: whole sectors) and the same bytes of activation row
 * m = g (+ 8 for the second n tile), and feeds them to
 * mma.sync.m16n8k32 s8 (A = W rows, B = x rows as columns): the A and B fragments hold
 * the same k offsets for a given t (PTX ISA "Matrix Fragments for mma.m16n8k32"), so the
 * k order is permuted but every product is summed once. int32 sums are exact (|sum| <=
 * K · 127 · 128 < 2^31 for K <= 131072) and reduce over the warps in shared memory.
 * Launched with PDL: the first steps' weight loads are issued before griddepcontrol.wait,
 * i.e. while the activation is still being quantized. */
#define I8_WARPS 8
#define I8_MAX_K 131072

/* weight bytes: read once (no L1 allocation); the L2 fetches the whole 256-byte segment */
__device__ __forceinline__ int4 ld_stream16(const int8_t *p) {
    int4 v;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.s32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

__device__ __forceinline__ void mma_s8(int (&c)[4], int a0, int a1, int a2, int a3, int b0, int b1) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* A warp's int32 C fragments of a 16-row tile into red[warp] (c0, c1 = (row g, cols 2t,
 * 2t + 1), c2, c3 = (row g + 8, same cols); n-tile j is columns 8 j ..). */
template <int NT>
__device__ __forceinline__ void i8_frag_store(int (*red)[16], const int (&acc)[NT][4], int g, int t) {
#pragma unroll
    for (int j = 0; j < NT; j++) {
        red[g][j * 8 + 2 * t] = acc[j][0];
        red[g][j * 8 + 2 * t + 1] = acc[j][1];
        red[g + 8][j * 8 + 2 * t] = acc[j][2];
        red[g + 8][j * 8 + 2 * t + 1] = acc[j][3];
    }
}

/* After a __syncthreads: thread (rr, m) = (tid % 16, tid / 16) sums row r0 + rr, activation
 * row m over the warps' partial sums and writes y (the CPU layer's expression, + bias). */
__device__ __forceinline__ void i8_tile_out(const int (*red)[16][16], int64_t r0, void *y, bool ybf16, const float *sx,
                                            const dview &w, const float *scb, const float *bias, int M,
                                            const outl_view &o) {
    const int rr = threadIdx.x & 15, m = threadIdx.x >> 4;
    const int64_t r = r0 + rr;
    if (m >= M || r >= w.n) return;
    int s = 0;
#pragma unroll
    for (int v = 0; v < I8_WARPS; v++) s += red[v][rr][m];
    float f = i8_out((float)s, sx[m], r, m, w, scb, o);
    if (bias) f = __fadd_rn(f, bias[r]);
    lin_store(y, ybf16, (int64_t)m * w.n + r, f);
}

/* MINB resident blocks per SM asked of the compiler; UU k steps of a warp loaded at once (2:
 * 64 registers of weights a thread, 1 where MINB > 2 leaves no room for them). */
template <int NT, int MINB, int UU = (MINB > 2 ? 1 : 2)>
__global__ void __launch_bounds__(32 * I8_WARPS, MINB)
    gemv_i8_mma(void *y, bool ybf16, const int8_t *xq, const float *sx, dview w, const float *scb,
                const float *bias, int M, outl_view o) {
    __shared__ int red[I8_WARPS][16][16];
    msbnb__pdl_launch_next();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int64_t K = w.k, N = w.n, r0 = (int64_t)blockIdx.x * 16;
    /* rows past N read row N - 1 (in bounds); their sums are never stored */
    const int8_t *wa = w.q8 + (r0 + g < N ? r0 + g : N - 1) * K;
    const int8_t *wb = w.q8 + (r0 + g + 8 < N ? r0 + g + 8 : N - 1) * K;
    const int64_t nsteps = (K + 255) / 256;
    int acc[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0;
    bool waited = false;
    for (int64_t s0 = warp; s0 < nsteps; s0 += UU * I8_WARPS) {
        int4 A[UU][4], B[UU][4];
#pragma unroll
        for (int u = 0; u < UU; u++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int64_t k = (s0 + u * I8_WARPS) * 256 + i * 64 + t * 16;
                const bool ok = k < K; /* K % 16 == 0: a 16-byte piece is all in or all out */
                A[u][i] = ok ? ld_stream16(wa + k) : make_int4(0, 0, 0, 0);
                B[u][i] = ok ? ld_stream16(wb + k) : make_int4(0, 0, 0, 0);
            }
        if (!waited) { /* xq and sx come from the kernel before (PDL) */
            msbnb__pdl_wait();
            waited = true;
        }
#pragma unroll
        for (int u = 0; u < UU; u++)
#pragma unroll
            for (int j = 0; j < NT; j++) {
                const int m = j * 8 + g;
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const int64_t k = (s0 + u * I8_WARPS) * 256 + i * 64 + t * 16;
                    /* xq: coherent loads, not __ldg: it is written by the kernel before (PDL) */
                    const int4 X = m < M && k < K ? *(const int4 *)(xq + (int64_t)m * K + k) : make_int4(0, 0, 0, 0);
                    mma_s8(acc[j], A[u][i].x, B[u][i].x, A[u][i].y, B[u][i].y, X.x, X.y);
                    mma_s8(acc[j], A[u][i].z, B[u][i].z, A[u][i].w, B[u][i].w, X.z, X.w);
                }
            }
    }
    if (!waited) msbnb__pdl_wait();
    i8_frag_store<NT>(red[warp], acc, g, t);
    __syncthreads();
    i8_tile_out(red, r0, y, ybf16, sx, w, scb, bias, M, o);
}

/* The same product as gemv_i8_mma, persistent and pipelined: each block takes tiles of 16
 * rows (blockIdx.x, + gridDim.x, ...; as many tiles per block as balance the grid), its warp
 * w the k steps w, w + I8_WARPS, ... of each tile; a thread copies its 8 × 16 weight bytes
 * of an item (tile, step) into its own shared-memory slots with cp.async (no registers
 * held), I8P_STAGES - 1 items ahead, so the weight stream keeps going across tiles and
 * through each tile's reduction and epilogue. */
#define I8P_STAGES 3
#define I8P_STAGE_BYTES (32 * 8 * 16) /* per warp and stage: 32 lanes x 8 chunks x 16 bytes */
#define I8P_SMEM (I8_WARPS * I8P_STAGES * I8P_STAGE_BYTES)

__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, uint32_t bytes) {
    /* .L2::256B: the L2 fetches the whole 256-byte segment, which this warp's next three
     * loads of the row read (larger DRAM requests, fewer misses in flight) */
    asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

template <int NT>
__global__ void __launch_bounds__(32 * I8_WARPS, 2)
    gemv_i8_pipe(void *y, bool ybf16, const int8_t *xq, const float *sx, dview w, const float *scb,
                 const float *bias, int M, outl_view o, int tiles_per_block) {
    extern __shared__ __align__(16) int4 i8p_stage[]; /* [warp][stage][chunk][lane] */
    __shared__ int red[I8_WARPS][16][16];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int64_t K = w.k, N = w.n, ntiles = (N + 15) / 16;
    const int nsteps = (int)((K + 255) / 256), U = (nsteps + I8_WARPS - 1) / I8_WARPS;
    const int64_t tile0 = (int64_t)blockIdx.x * tiles_per_block;
    int mytiles = (int)(ntiles - tile0 < tiles_per_block ? ntiles - tile0 : tiles_per_block);
    if (mytiles < 0) mytiles = 0;
    const int nitems = mytiles * U;
    int4 *slots = i8p_stage + (size_t)warp * I8P_STAGES * 8 * 32;
    const uint32_t slots_s = (uint32_t)__cvta_generic_to_shared(slots);

    auto issue = [&](int it) { /* item it of this warp into stage it % I8P_STAGES */
        if (it < nitems) {
            const int64_t tile = tile0 + it / U;
            const int s = warp + I8_WARPS * (it % U);
            if (s < nsteps) {
                const int st = it % I8P_STAGES;
#pragma unroll
                for (int c = 0; c < 8; c++) {
                    int64_t r = tile * 16 + g + 8 * (c >> 2);
                    r = r < N ? r : N - 1; /* in bounds; never stored */
                    const int64_t k = (int64_t)s * 256 + (c & 3) * 64 + t * 16;
                    const bool ok = k < K; /* K % 16 == 0: a piece is all in or all out (zero-filled) */
                    cp_async16(slots_s + (uint32_t)(((st * 8 + c) * 32 + lane) * 16), w.q8 + r * K + (ok ? k : 0),
                               ok ? 16u : 0u);
                }
            }
        }
        cp_async_commit(); /* one group per item, empty or not, so the counts stay in step */
    };
#pragma unroll
    for (int i = 0; i < I8P_STAGES - 1; i++) issue(i);
    msbnb__pdl_wait(); /* xq, sx: from the kernel before (PDL) */
    int acc[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0;
    for (int it = 0; it < nitems; it++) {
        cp_async_wait<I8P_STAGES - 2>(); /* this thread's copies of item it have landed */
        const int st = it % I8P_STAGES, u = it % U, s = warp + I8_WARPS * u;
        int4 Wt[8];
#pragma unroll
        for (int c = 0; c < 8; c++) Wt[c] = slots[(st * 8 + c) * 32 + lane];
        issue(it + I8P_STAGES - 1); /* into the stage read one item ago */
        if (s < nsteps) {
#pragma unroll
            for (int j = 0; j < NT; j++) {
                const int m = j * 8 + g;
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const int64_t k = (int64_t)s * 256 + i * 64 + t * 16;
                    const int4 X =
                        m < M && k < K ? *(const int4 *)(xq + (int64_t)m * K + k) : make_int4(0, 0, 0, 0);
                    mma_s8(acc[j], Wt[i].x, Wt[4 + i].x, Wt[i].y, Wt[4 + i].y, X.x, X.y);
                    mma_s8(acc[j], Wt[i].z, Wt[4 + i].z, Wt[i].w, Wt[4 + i].w, X.z, X.w);
                }
            }
        }
        if (u == U - 1) { /* the tile's last step: reduce over the warps, epilogue */
            i8_frag_store<NT>(red[warp], acc, g, t);
#pragma unroll
            for (int j = 0; j < NT; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0;
            __syncthreads();
            i8_tile_out(red, (tile0 + it / U) * 16, y, ybf16, sx, w, scb, bias, M, o);
            __syncthreads();
        }
    }
    cp_async_wait<0>();
}

/* Launches gemv_i8_mma with programmatic stream serialization where the device has it
 * (sm_90+); a launch the runtime refuses is repeated as a plain one. */
static msbnb_status launch_i8_mma(int64_t M, int64_t N, void *y, bool ybf16, const int8_t *xq, const float *sx,
                                  const dview &w, const float *scb, const float *bias, const outl_view &o, bool pipe) {
    const bool pdl = msbnb__pdl_ok();
    const int64_t ntiles = (N + 15) / 16;
    const int mi = (int)M;
    if (pipe) {
        int dev = 0, sms = 0, smem_sm = 0;
        MSBNB_CUDA_TRY(cudaGetDevice(&dev));
        MSBNB_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        MSBNB_CUDA_TRY(cudaDeviceGetAttribute(&smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
        void (*kern)(void *, bool, const int8_t *, const float *, dview, const float *, const float *, int, outl_view,
                     int) = M <= 8 ? gemv_i8_pipe<1> : gemv_i8_pipe<2>;
        MSBNB_CUDA_TRY(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, I8P_SMEM));
        /* resident blocks: shared memory allows per_sm (2 on Hopper), registers 2 (launch bounds) */
        int per_sm = smem_sm / (I8P_SMEM + (int)sizeof(int) * I8_WARPS * 256 + 1024);
        per_sm = per_sm < 1 ? 1 : per_sm > 2 ? 2 : per_sm;
        const int64_t slots = (int64_t)sms * per_sm;
        const int tpb = (int)((ntiles + slots - 1) / slots); /* tiles per block */
        /* every block as busy as the busiest */
        MSBNB_CUDA_TRY(msbnb__launch(kern, dim3((unsigned)((ntiles + tpb - 1) / tpb)), dim3(32 * I8_WARPS),
                                     (size_t)I8P_SMEM, pdl, y, ybf16, xq, sx, w, scb, bias, mi, o, tpb));
        return MSBNB_OK;
    }
    /* Resident blocks per SM asked of the compiler: 2 (two k steps a warp in registers) or 3
     * (one). Measured on the H200 (bench/RESULTS.md, 2026-12-02), M = 1: at (4096, 14336) (896
     * tiles, 3.4 waves at 2 / SM) 0.0194 ms at 3 against 0.0215 at 2 (M = 4: 0.0201 / 0.0218);
     * where one wave at 2 / SM holds the tiles, 2 is as fast or faster ((14336, 4096): 0.0225
     * against 0.0258 at 3), and at M = 16 2 is faster everywhere. So: 3 at M <= 8 when the
     * tiles need more than one wave at 2 / SM. MSBNB_CUDA_I8_MINB = 2 | 3 | 4 forces one. */
    int minb = 2;
    if (M <= 8) {
        int dev = 0, sms = 0;
        MSBNB_CUDA_TRY(cudaGetDevice(&dev));
        MSBNB_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        if (ntiles > 2 * (int64_t)sms) minb = 3;
    }
    const char *mb = getenv("MSBNB_CUDA_I8_MINB");
    if (mb && mb[0] >= '2' && mb[0] <= '4' && mb[1] == 0) minb = mb[0] - '0';
    void (*kern)(void *, bool, const int8_t *, const float *, dview, const float *, const float *, int, outl_view) =
        minb == 3 ? (M <= 8 ? gemv_i8_mma<1, 3> : gemv_i8_mma<2, 3>)
        : minb == 4 ? (M <= 8 ? gemv_i8_mma<1, 4> : gemv_i8_mma<2, 4>)
                    : (M <= 8 ? gemv_i8_mma<1, 2> : gemv_i8_mma<2, 2>);
    MSBNB_CUDA_TRY(msbnb__launch(kern, dim3((unsigned)ntiles), dim3(32 * I8_WARPS), 0, pdl, y, ybf16, xq, sx, w, scb,
                                 bias, mi, o));
    return MSBNB_OK;
}

/* out[r, k] = W[r, k] (raw: int8 codes) as f32 or bf16 (exact for codes); rows over
 * grid.y, columns over grid.x (no 64-bit division per element). */
template <int T>
__global__ void dequant_w(void *out, bool bf16, dview w, bool raw) {
    for (int64_t r = blockIdx.y; r < w.n; r += gridDim.y)
        for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < w.k; k += (int64_t)gridDim.x * blockDim.x) {
            float v = w_at<T>(w, r, k, raw);
            if (bf16) ((__nv_bfloat16 *)out)[r * w.k + k] = __float2bfloat16_rn(v);
            else ((float *)out)[r * w.k + k] = v;
        }
}

static dim3 grid2d(int64_t rows, int64_t cols) {
    int64_t gx = (cols + 255) / 256, gy = rows;
    if (gx > 1024) gx = 1024;
    if (gy > 65535) gy = 65535;
    return dim3((unsigned)gx, (unsigned)gy);
}

/* W as f32/bf16 into out: the flat 4-bit dequantizer for NF4/FP4 (the layer keeps the
 * decoded f32 absmax), the per-element decoder otherwise. */
static msbnb_status dequant_weight(void *out, bool bf16, const dview &w, bool raw) {
    if (w.type == MSBNB_QTYPE_NF4 || w.type == MSBNB_QTYPE_FP4)
        return msbnb_cuda_dequantize_4bit(out, bf16 ? MSBNB_DTYPE_BF16 : MSBNB_DTYPE_F32, w.packed, w.absmax, w.n * w.k,
                                          w.block, (msbnb_qtype)w.type);
#define LDQ(T) dequant_w<T><<<grid2d(w.n, w.k), 256>>>(out, bf16, w, raw)
    LIN_TYPE_DISPATCH(w.type, LDQ);
#undef LDQ
    MSBNB_CUDA_LAUNCHED();
    return MSBNB_OK;
}

/* int8 codes [n] -> f32 or bf16 (exact). */
__global__ void codes_to_float(void *out, bool bf16, const int8_t *q, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        if (bf16) ((__nv_bfloat16 *)out)[i] = __float2bfloat16_rn((float)q[i]);
        else ((float *)out)[i] = (float)q[i];
    }
}

/* y[m, n] = acc[m, n] (· sx[m] · SCB[n] / 127² for int8) (+ b[n]), stored as f32/bf16;
 * acc is f32, or the exact int32 sums of the int8 tensor-core GEMM. */
template <typename ACC>
__global__ void epilogue(void *y, bool ybf16, const ACC *acc, int64_t M, int64_t N, const float *sx, const float *scb,
                         const float *bias, dview w, outl_view o) {
    for (int64_t m = blockIdx.y; m < M; m += gridDim.y)
        for (int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; n < N; n += (int64_t)gridDim.x * blockDim.x) {
            float v = (float)acc[m * N + n];
            if (sx) v = i8_out(v, sx[m], n, (int)m, w, scb, o);
            if (bias) v = __fadd_rn(v, bias[n]);
            lin_store(y, ybf16, m * N + n, v);
        }
}

/* ---------------------------------------------------------------- context */

/* Carves `count` regions of the given byte sizes (each 256-byte aligned) out of the
 * context scratch, growing it when needed. */
static msbnb_status carve(msbnb_cuda_ctx *ctx, void **ptrs, const size_t *sizes, int count) {
    size_t total = 0, off[16];
    for (int i = 0; i < count; i++) {
        off[i] = total;
        total += (sizes[i] + 255) / 256 * 256;
    }
    void *base;
    MSBNB_TRY(msbnb__cuda_ctx_scratch(ctx, total ? total : 256, &base));
    for (int i = 0; i < count; i++) ptrs[i] = sizes[i] ? (char *)base + off[i] : NULL;
    return MSBNB_OK;
}

/* ---------------------------------------------------------------- upload */

extern "C" msbnb_status msbnb_cuda_linear_upload(msbnb_cuda_linear_t **out, const msbnb_linear_t *host) {
    MSBNB_CHECK_NULL(out);
    *out = NULL;
    MSBNB_CHECK_NULL(host);
    msbnb__wview v = msbnb__linear_view(host);
    msbnb_qparams fmt = msbnb_linear_qparams(host);
    const int64_t N = v.n, K = v.k, nk = N * K;
    const int t = (int)v.type;
    int64_t nb = (t == MSBNB_QTYPE_NF4 || t == MSBNB_QTYPE_FP4 || t == MSBNB_QTYPE_Q8_DYNAMIC) ? msbnb_nblocks(nk, v.block)
                 : t == MSBNB_QTYPE_INT4                                                 ? N * v.gpr
                                                                                          : 0;
    const uint8_t *qa = NULL;
    const float *nested = NULL;
    float offset = 0.0f;
    if ((t == MSBNB_QTYPE_NF4 || t == MSBNB_QTYPE_FP4) && fmt.double_quant)
        MSBNB_TRY(msbnb_linear_4bit_parts(host, NULL, NULL, &qa, &nested, &offset));
    int ncode = (t == MSBNB_QTYPE_NF4 || t == MSBNB_QTYPE_FP4) ? 16 : t == MSBNB_QTYPE_Q8_DYNAMIC ? 256 : 0;
    const float *bias = msbnb_linear_bias(host);

    /* every array in one allocation: {host pointer, bytes} in the dview's order */
    struct part {
        const void *src;
        size_t bytes;
    } parts[12] = {
        {v.f32, v.f32 ? (size_t)nk * 4 : 0},
        {v.u16, v.u16 ? (size_t)nk * 2 : 0},
        {v.q8, v.q8 ? (size_t)nk : 0},
        {v.rscale, v.rscale ? (size_t)N * 4 : 0},
        {v.rzero, v.rzero ? (size_t)N * 4 : 0},
        {v.packed, v.packed ? (size_t)(nk + 1) / 2 : 0},
        {v.qb, v.qb ? (size_t)nk : 0},
        {v.absmax, v.absmax ? (size_t)nb * 4 : 0},
        {v.mins, v.mins ? (size_t)nb * 4 : 0},
        {v.code, (size_t)ncode * 4},
        {bias, bias ? (size_t)N * 4 : 0},
        {v.scb, v.scb ? (size_t)N * 4 : 0},
    };
    size_t dq_bytes[3] = {qa ? (size_t)nb : 0, qa ? (size_t)msbnb_nblocks(nb, 256) * 4 : 0, qa ? 4u : 0u};
    size_t total = 0, offs[15];
    for (int i = 0; i < 12; i++) {
        offs[i] = total;
        total += (parts[i].bytes + 255) / 256 * 256;
    }
    for (int i = 0; i < 3; i++) {
        offs[12 + i] = total;
        total += (dq_bytes[i] + 255) / 256 * 256;
    }
    msbnb_cuda_linear_t *l = (msbnb_cuda_linear_t *)calloc(1, sizeof *l);
    if (!l) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "%s: out of memory", __func__);
    msbnb_status st = msbnb_cuda_malloc(&l->arena, total);
    if (st != MSBNB_OK) {
        free(l);
        return st;
    }
    char *base = (char *)l->arena;
    void *dptr[15];
    for (int i = 0; i < 12 && st == MSBNB_OK; i++) {
        dptr[i] = parts[i].bytes ? base + offs[i] : NULL;
        if (parts[i].bytes) st = msbnb_cuda_memcpy(dptr[i], parts[i].src, parts[i].bytes, MSBNB_CUDA_HOST_TO_DEVICE);
    }
    const void *dq_src[3] = {qa, nested, &offset};
    for (int i = 0; i < 3 && st == MSBNB_OK; i++) {
        dptr[12 + i] = dq_bytes[i] ? base + offs[12 + i] : NULL;
        if (dq_bytes[i]) st = msbnb_cuda_memcpy(dptr[12 + i], dq_src[i], dq_bytes[i], MSBNB_CUDA_HOST_TO_DEVICE);
    }
    if (st != MSBNB_OK) {
        msbnb_cuda_linear_free(l);
        return st;
    }
    dview &w = l->w;
    w.type = t;
    w.sym = v.symmetric;
    w.n = N;
    w.k = K;
    w.block = v.block;
    w.gpr = v.gpr;
    while (w.bs_log2 < 30 && (1LL << w.bs_log2) < v.block) w.bs_log2++;
    if ((1LL << w.bs_log2) != v.block) w.bs_log2 = -1; /* INT4 groups need not be powers of two */
    w.f32 = (const float *)dptr[0];
    w.u16 = (const uint16_t *)dptr[1];
    w.q8 = (const int8_t *)dptr[2];
    w.rscale = (const float *)dptr[3];
    w.rzero = (const float *)dptr[4];
    w.packed = (const uint8_t *)dptr[5];
    w.qb = (const uint8_t *)dptr[6];
    w.absmax = (const float *)dptr[7];
    w.mins = (const float *)dptr[8];
    w.code = (const float *)dptr[9];
    l->bias = (const float *)dptr[10];
    l->qabsmax = (const uint8_t *)dptr[12];
    l->nested = (const float *)dptr[13];
    l->dq_offset = (const float *)dptr[14];
    l->fmt = fmt;
    l->int8_threshold = msbnb_linear_int8_threshold(host);
    l->weight_bytes = msbnb_linear_weight_bytes(host);
    l->scb = (const float *)dptr[11];
    /* MSBNB_CUDA_FOLD_LAYOUT=1: also the slice-major copy of the codes and scales that the M = 1
     * fold kernel streams contiguously (a second copy of the weight's bytes) */
    const char *fe = getenv("MSBNB_CUDA_FOLD_LAYOUT");
    if (fe && fe[0] == '1' && (t == MSBNB_QTYPE_NF4 || t == MSBNB_QTYPE_FP4) && K % 32 == 0 && w.bs_log2 >= 5 &&
        v.packed && (qa || v.absmax)) {
        st = msbnb__cuda_fold_layout_upload(&l->fold_arena, &l->fold, v.packed, qa ? NULL : v.absmax, qa, N, K,
                                            v.block);
        if (st != MSBNB_OK) {
            msbnb_cuda_linear_free(l);
            return st;
        }
    }
    *out = l;
    return MSBNB_OK;
}

extern "C" void msbnb_cuda_linear_free(msbnb_cuda_linear_t *l) {
    if (!l) return;
    cudaFree(l->arena);
    cudaFree(l->fold_arena);
    free(l);
}

extern "C" int64_t msbnb_cuda_linear_in_features(const msbnb_cuda_linear_t *l) { return l ? l->w.k : 0; }
extern "C" int64_t msbnb_cuda_linear_out_features(const msbnb_cuda_linear_t *l) { return l ? l->w.n : 0; }
extern "C" int64_t msbnb_cuda_linear_weight_bytes(const msbnb_cuda_linear_t *l) { return l ? l->weight_bytes : 0; }

/* ---------------------------------------------------------------- forward / backward */

static msbnb_status check_m(const msbnb_cuda_linear_t *l, int64_t m, const char *fn) {
    if (m <= 0 || m > INT_MAX)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: m must be in [1, INT_MAX] (got %lld)", fn, (long long)m);
    int64_t t;
    int64_t big = l->w.k > l->w.n ? l->w.k : l->w.n;
    if (l->w.k > INT_MAX || l->w.n > INT_MAX || !msbnb__mul_ok(m, big, &t) || t > INT64_MAX / 16)
        return msbnb__fail(MSBNB_ERR_OVERFLOW, "%s: m = %lld overflows", fn, (long long)m);
    return MSBNB_OK;
}

static unsigned lin_grid(int64_t work) {
    int64_t g = (work + 255) / 256;
    if (g > 65535LL * 16) g = 65535LL * 16;
    return (unsigned)(g < 1 ? 1 : g);
}

#define LIN_DISPATCH(M, L)                                                                \
    do {                                                                                  \
        if ((M) <= 1) L(1);                                                               \
        else if ((M) <= 2) L(2);                                                          \
        else if ((M) <= 4) L(4);                                                          \
        else if ((M) <= 8) L(8);                                                          \
        else L(16);                                                                       \
    } while (0)

extern "C" msbnb_status msbnb_cuda_linear_forward(msbnb_cuda_ctx *ctx, const msbnb_cuda_linear_t *l, void *y,
                                                 const void *x, msbnb_dtype x_type, int64_t m) {
    MSBNB_CHECK_NULL(ctx);
    MSBNB_CHECK_NULL(l);
    MSBNB_CHECK_NULL(y);
    MSBNB_CHECK_NULL(x);
    MSBNB_TRY(check_m(l, m, __func__));
    if (x_type != MSBNB_DTYPE_F32 && x_type != MSBNB_DTYPE_BF16)
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "%s: x_type must be F32 or BF16 (got %d)", __func__, (int)x_type);
    const dview &w = l->w;
    const int64_t N = w.n, K = w.k;
    const bool bf = x_type == MSBNB_DTYPE_BF16;
    const bool int8 = w.type == MSBNB_QTYPE_INT8 && w.sym;
    const unsigned rows_grid = (unsigned)((N + LIN_WARPS - 1) / LIN_WARPS);
    if (m <= 16 && (w.type == MSBNB_QTYPE_NF4 || w.type == MSBNB_QTYPE_FP4)) {
        msbnb_cuda_weight4 w4 = {(msbnb_qtype)w.type, w.block, l->fmt.double_quant, w.packed, w.absmax,
                                 l->qabsmax, l->nested, l->dq_offset};
        /* an uploaded weight is never written by a kernel: PDL may read it early */
        return msbnb__cuda_gemv_4bit_ctx(ctx, y, x, x_type, &w4, l->fold_arena ? &l->fold : NULL, l->bias, m, N, K,
                                         true);
    }
    if (m <= 16 && w.type == MSBNB_QTYPE_INT4 && w.sym && w.bs_log2 >= 5 && w.bs_log2 <= 12 && K % w.block == 0)
        return msbnb__cuda_gemv_int4sym_bias(y, x, x_type, w.packed, w.absmax, w.block, l->bias, m, N, K);
    if (int8) {
        /* activation -> int8 codes + row absmax (bitsandbytes int8_vectorwise_quant, with
         * its outlier columns for a threshold > 0); for large m also the codes of W and x as
         * floats (exact) and an f32 product */
        const bool big = m > 16, outl = l->int8_threshold > 0.0f;
        const size_t fe = bf ? 2 : 4;
        void *p[9];
        const bool imma = K % 4 == 0; /* int32 acc [m, N] is 4 bytes an element like the f32 one */
        size_t sz[9] = {(size_t)(m * K),
                        (size_t)m * 4,
                        4,
                        big && !imma ? (size_t)(N * K) * fe : 0,
                        big && !imma ? (size_t)(m * K) * fe : 0,
                        big ? (size_t)(m * N) * 4 : 0,
                        outl ? (size_t)K * 4 : 0,
                        outl ? (size_t)K * 4 : 0,
                        outl ? 4u : 0u};
        MSBNB_TRY(carve(ctx, p, sz, 9));
        int8_t *xq = (int8_t *)p[0];
        float *sx = (float *)p[1];
        outl_view o = {x, (int)x_type, NULL, NULL};
        if (outl) {
            o.cols = (const int *)p[7];
            o.count = (const int *)p[8];
            MSBNB_TRY(msbnb__cuda_int8_outliers_async(xq, sx, (int *)p[6], (int *)p[7], (int *)p[8], x, x_type, m, K,
                                                      l->int8_threshold));
        } else {
            MSBNB_TRY(msbnb__cuda_int8_rowwise_async(xq, sx, x, x_type, m, K, (int *)p[2]));
        }
        if (!big) {
            /* tensor cores where rows are 16-byte aligned and int32 sums cannot overflow;
             * MSBNB_CUDA_I8_MMA=0 forces the dp4a kernel, =2 the pipelined persistent
             * tensor-core kernel (tests, benchmarks: it measured no faster than the
             * one-tile-per-block kernel on the H200, and slower at K > N and M = 16) */
            const char *e = getenv("MSBNB_CUDA_I8_MMA");
            if (K % 16 == 0 && K <= I8_MAX_K && !(e && e[0] == '0'))
                return launch_i8_mma(m, N, y, bf, xq, sx, w, l->scb, l->bias, o, e && e[0] == '2');
            bool vec = K % 16 == 0;
#define LI8(MT) gemv_i8i8<MT><<<rows_grid, 32 * LIN_WARPS>>>(y, bf, xq, sx, w, l->scb, l->bias, (int)m, vec, o)
            LIN_DISPATCH(m, LI8);
#undef LI8
            MSBNB_CUDA_LAUNCHED();
            return MSBNB_OK;
        }
        if (imma) { /* exact int8 · int8 on the tensor cores (IMMA), then the scale epilogue */
            MSBNB_TRY(msbnb__cuda_gemm_i8(ctx, (int32_t *)p[5], xq, w.q8, m, N, K));
            epilogue<int32_t><<<grid2d(m, N), 256>>>(y, bf, (const int32_t *)p[5], m, N, sx, l->scb, l->bias, w, o);
            MSBNB_CUDA_LAUNCHED();
            return MSBNB_OK;
        }
        MSBNB_TRY(dequant_weight(p[3], bf, w, true));
        codes_to_float<<<lin_grid(m * K), 256>>>(p[4], bf, xq, m * K);
        MSBNB_CUDA_LAUNCHED();
        MSBNB_TRY(msbnb__cuda_gemm_f32out(ctx, (float *)p[5], p[4], p[3], bf, m, N, K));
        epilogue<float><<<grid2d(m, N), 256>>>(y, bf, (const float *)p[5], m, N, sx, l->scb, l->bias, w, o);
        MSBNB_CUDA_LAUNCHED();
        return MSBNB_OK;
    }
    if (m <= 16) {
        /* the formats that reach here: f32, bf16, f16, int8 asymmetric, int4, q8 dynamic */
#define LANY_T(MT, T) gemv_any<MT, T><<<rows_grid, 32 * LIN_WARPS>>>(y, x, (int)x_type, w, l->bias, (int)m)
#define LANY(MT)                                                                          \
    do {                                                                                  \
        switch (w.type) {                                                                 \
        case MSBNB_QTYPE_F32: LANY_T(MT, MSBNB_QTYPE_F32); break;                         \
        case MSBNB_QTYPE_BF16: LANY_T(MT, MSBNB_QTYPE_BF16); break;                       \
        case MSBNB_QTYPE_F16: LANY_T(MT, MSBNB_QTYPE_F16); break;                         \
        case MSBNB_QTYPE_INT8: LANY_T(MT, MSBNB_QTYPE_INT8); break;                       \
        case MSBNB_QTYPE_INT4: LANY_T(MT, MSBNB_QTYPE_INT4); break;                       \
        default: LANY_T(MT, MSBNB_QTYPE_Q8_DYNAMIC); break;                               \
        }                                                                                 \
    } while (0)
        LIN_DISPATCH(m, LANY);
#undef LANY
#undef LANY_T
        MSBNB_CUDA_LAUNCHED();
        return MSBNB_OK;
    }
    /* large m: dequantize W (f32 layers: use it as is) and multiply through cuBLAS */
    const bool direct = w.type == MSBNB_QTYPE_F32 && !bf;
    /* bf16 without bias: cuBLAS writes the bf16 y itself (rounding the same f32 sums once);
     * with a bias the f32 product goes through the epilogue, so y = round(xW + b) as on the CPU */
    const bool bf_out = bf && !l->bias;
    void *p[2];
    size_t sz[2] = {direct ? 0 : (size_t)(N * K) * (bf ? 2 : 4), bf && !bf_out ? (size_t)(m * N) * 4 : 0};
    MSBNB_TRY(carve(ctx, p, sz, 2));
    const void *wd = direct ? (const void *)w.f32 : p[0];
    if (!direct) MSBNB_TRY(dequant_weight(p[0], bf, w, false));
    if (bf_out) return msbnb_cuda_gemm_bf16(ctx, (uint16_t *)y, (const uint16_t *)x, (const uint16_t *)wd, m, N, K);
    float *acc = bf ? (float *)p[1] : (float *)y;
    MSBNB_TRY(msbnb__cuda_gemm_f32out(ctx, acc, x, wd, bf, m, N, K));
    if (bf || l->bias) {
        epilogue<float><<<grid2d(m, N), 256>>>(y, bf, acc, m, N, NULL, NULL, l->bias, w, outl_view{});
        MSBNB_CUDA_LAUNCHED();
    }
    return MSBNB_OK;
}

extern "C" msbnb_status msbnb_cuda_linear_backward_dx(msbnb_cuda_ctx *ctx, const msbnb_cuda_linear_t *l, float *dx,
                                                     const float *dy, int64_t m) {
    MSBNB_CHECK_NULL(ctx);
    MSBNB_CHECK_NULL(l);
    MSBNB_CHECK_NULL(dx);
    MSBNB_CHECK_NULL(dy);
    MSBNB_TRY(check_m(l, m, __func__));
    const dview &w = l->w;
    const int64_t N = w.n, K = w.k;
    const bool direct = w.type == MSBNB_QTYPE_F32;
    void *p[1];
    size_t sz[1] = {direct ? 0 : (size_t)(N * K) * 4};
    MSBNB_TRY(carve(ctx, p, sz, 1));
    const float *wd = direct ? w.f32 : (const float *)p[0];
    if (!direct) MSBNB_TRY(dequant_weight(p[0], false, w, false));
    return msbnb__cuda_gemm_dx(ctx, dx, dy, wd, m, N, K);
}
