/* Quantized linear forward on the GPU.
 *
 * M = 1 with a context (layers, msbnb_cuda_linear_4bit): the fold kernel of
 * gemv4_fold_cuda.cu where its rule applies (x folded into per-pair tables).
 *
 * M = 1, large layers (use_m1_kernel): gemv4_m1, 16-byte chunks of R rows per warp decoded
 * through a byte -> code-pair table, on a persistent grid (comment above the kernel).
 *
 * M <= 16: fused dequantize + GEMV, y[m, n] = sum_k x[m, k] W[n, k] (+ b[n]). One warp per
 * output row n streams that row of W once. 4-bit: lane L takes the row's 32-bit words
 * L, L + 32, ... (8 weights each; loads skip L1, each byte is used once), so weight and
 * activation loads are both coalesced; a word's 8 codes are looked up in a 16-entry table
 * replicated once per shared-memory bank (conflict-free), multiplied with x in f32 and the
 * 8-term sum scaled once by the block's absmax (decoded from the double-quant byte when
 * double quantized). The next GEMV_WU words are in flight while the current ones are
 * decoded. int8: 16-byte chunks, int8 -> exact f32 by a byte permute into 2^23 + u.
 * Lanes combine with a shuffle tree.
 *
 * M > 16: W is dequantized to bf16 and multiplied through cuBLAS (tensor cores).
 *
 * Layers (msbnb__cuda_gemv_4bit_ctx with pdl) launch these kernels with programmatic
 * dependent launch: a kernel lets the next start as it retires, issues its first weight
 * loads before griddepcontrol.wait and touches x and y only after it, reading x with
 * coherent loads or from its block's shared-memory copy (never __ldg: see dot8). The
 * measured fractions of bandwidth are in bench/RESULTS.md. */
#include "cuda/cuda_internal.cuh"

#include <cublas_v2.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#ifndef GEMV_WARPS /* tuning knobs, overridable with -D for experiments */
#define GEMV_WARPS 8 /* rows per block */
#endif
#ifndef GEMV_MINB
#define GEMV_MINB 4 /* __launch_bounds__ min blocks per SM of the 4-bit kernel */
#endif
#define GEMV_U 4     /* 16-byte chunks in flight per lane */

struct gemv_args {
    void *y;
    const void *x;
    const uint8_t *w; /* packed 4-bit or int8 */
    const float *absmax;
    const uint8_t *qabsmax;
    const float *nested;
    const float *offset;
    const float *row_scale;
    const float *bias; /* [N] added to y, or NULL */
    float scale_mul;
    int M, N, K, bs_log2;
    int xs; /* the activation is staged in dynamic shared memory (gemv_xs_bytes) */
};

/* Bytes of dynamic shared memory that hold the activation [M, K] in the M = 1 / word
 * kernels, 0 where it is read from global memory instead: a block reads x once, after
 * griddepcontrol.wait, and every warp then reads it from shared memory (under PDL x may
 * not go through the read-only cache, see dot8; plain global loads measured up to 18 %
 * slower than shared memory on the H200). */
#define GEMV_XS_MAX 32768
static int gemv_xs_bytes(int64_t M, int64_t K, bool bf) {
    const int64_t b = M * K * (bf ? 2 : 4);
    return b <= GEMV_XS_MAX ? (int)b : 0;
}

/* The block's copy of x (16-byte pieces; K % 8 == 0 and x 16-byte aligned), or x itself. */
__device__ __forceinline__ const void *stage_x(const gemv_args &a, void *xsm, int bytes) {
    if (!a.xs) return a.x;
    for (int i = threadIdx.x; i < bytes / 16; i += blockDim.x) ((uint4 *)xsm)[i] = ((const uint4 *)a.x)[i];
    return xsm;
}

/* 16 bytes that are read once: no L1 allocation. */
__device__ __forceinline__ uint4 ld_stream(const void *p) {
    uint4 r;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
        : "l"(p));
    return r;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ void store_y(void *y, bool bf16, int64_t i, float v, const float *bias, int n) {
    if (bias) v = __fadd_rn(v, __ldg(bias + n));
    if (bf16) ((__nv_bfloat16 *)y)[i] = __float2bfloat16_rn(v);
    else ((float *)y)[i] = v;
}

/* Absmax of quantization block b: plain, or double-quantized (QLoRA: dynamic_map[q] *
 * nested[b/256] + offset, rounded as msbnb_double_dequant_absmax rounds). */
template <bool DQ>
__device__ __forceinline__ float block_absmax(const gemv_args &a, const float *sdyn, float off, int64_t b) {
    if (DQ) return __fadd_rn(__fmul_rn(sdyn[__ldg(a.qabsmax + b)], __ldg(a.nested + (b >> 8))), off);
    return __ldg(a.absmax + b);
}

/* 4 bytes that are read once: no L1 allocation. */
__device__ __forceinline__ uint32_t ld_stream32(const void *p) {
    uint32_t r;
    asm("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(r) : "l"(p));
    return r;
}

/* The 8 codes of one 32-bit word, looked up in a 16-entry table replicated once per
 * shared-memory bank (entry c of this lane at byte offset 128 c + 4 lane): every lane reads
 * its own bank, so a warp's 32 lookups never conflict (a 256-entry byte -> pair table is
 * hit at random banks, 4-7 wavefronts per access, and was the bottleneck). The offset is
 * one shift and one and-or (LOP3) per weight. Byte b holds weight 2b (high nibble), 2b+1. */
__device__ __forceinline__ void decode8(float (&w)[8], uint32_t q, const char *slut, uint32_t lane4) {
#pragma unroll
    for (int e = 0; e < 8; e++) {
        const int sh = 8 * (e >> 1) + ((e & 1) ? 0 : 4); /* nibble position */
        uint32_t off = (sh >= 7 ? (q >> (sh - 7)) : (q << (7 - sh))) & (15u << 7);
        w[e] = *(const float *)(slut + (off | lane4));
    }
}

/* Σ_e w[e] x[k0 + e] for 8 weights.
 * x (as everything a kernel reads after griddepcontrol.wait) is read with coherent loads,
 * not __ldg: under PDL the kernel is already running while the kernel before writes x, and
 * the read-only (.nc) path is coherent only for data nobody writes during the kernel (the
 * back-to-back test in tests/test_cuda_linear.c caught stale activations through it). */
template <bool XBF16>
__device__ __forceinline__ float dot8(const float (&w)[8], const void *x, int64_t k0) {
    if (XBF16) {
        uint4 xv = *(const uint4 *)((const uint16_t *)x + k0); /* x: coherent loads (see dot8) */
        const uint32_t xw[4] = {xv.x, xv.y, xv.z, xv.w};
        float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
        for (int j = 0; j < 4; j++) { /* word j: x[2j] in the low half, x[2j+1] in the high */
            s0 = fmaf(w[2 * j], __uint_as_float(xw[j] << 16), s0);
            s1 = fmaf(w[2 * j + 1], __uint_as_float(xw[j] & 0xffff0000u), s1);
        }
        return s0 + s1;
    }
    const float4 *xp = (const float4 *)((const float *)x + k0);
    float4 u = xp[0], v = xp[1];
    float s0 = fmaf(w[0], u.x, fmaf(w[2], u.z, fmaf(w[4], v.x, w[6] * v.z)));
    float s1 = fmaf(w[1], u.y, fmaf(w[3], u.w, fmaf(w[5], v.y, w[7] * v.w)));
    return s0 + s1;
}

/* One warp per output row; lane L takes the 32-bit words L, L + 32, ... of the row, so both
 * the weight loads (128 contiguous bytes per warp instruction) and the activation loads
 * (16 contiguous bytes per lane) are coalesced. Software-pipelined: the next GEMV_WU words
 * (and their absmax, or double-quant bytes) are in flight while the current ones are
 * decoded; the double-quant absmax is decoded after its load lands, not before the next
 * load is issued. */
#ifndef GEMV_WU
#define GEMV_WU 4 /* 32-bit words in flight per lane (x2: double-buffered); WU 4 / MINB 4 measured best of 5 variants */
#endif
template <bool DQ>
struct wbatch {
    uint32_t q[GEMV_WU];
    float am[GEMV_WU];   /* absmax, or (DQ) nested absmax */
    uint32_t qa[GEMV_WU]; /* DQ: the absmax code */
};

template <bool DQ>
__device__ __forceinline__ void load_batch(wbatch<DQ> &bt, const gemv_args &a, const uint32_t *wrow, int n, int j0,
                                           int lane, int nw) {
#pragma unroll
    for (int u = 0; u < GEMV_WU; u++) {
        int j = j0 + u * 32 + lane;
        if (j < nw) {
            bt.q[u] = ld_stream32(wrow + j);
            int64_t b = ((int64_t)n * a.K + (int64_t)j * 8) >> a.bs_log2;
            if (DQ) {
                bt.qa[u] = __ldg(a.qabsmax + b);
                bt.am[u] = __ldg(a.nested + (b >> 8));
            } else {
                bt.am[u] = __ldg(a.absmax + b);
            }
        }
    }
}

template <int MT, bool DQ, bool XBF16>
__global__ void __launch_bounds__(32 * GEMV_WARPS, GEMV_MINB) gemv4_fast(gemv_args a, msbnb__code16 code, msbnb__code256 dyn) {
    __shared__ float slut[16 * 32];
    __shared__ float sdyn[DQ ? 256 : 1];
    msbnb__pdl_launch_next();
    const int n = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    const int K = a.K, nw = K / 8;
    const uint32_t *wrow = (const uint32_t *)a.w + (int64_t)n * nw;
    wbatch<DQ> cur, nxt;
    if (n < a.N) load_batch<DQ>(cur, a, wrow, n, 0, lane, nw); /* in flight during the table fill */
    for (int t = threadIdx.x; t < 16 * 32; t += blockDim.x) slut[t] = code.v[t >> 5];
    if (DQ)
        for (int t = threadIdx.x; t < 256; t += blockDim.x) sdyn[t] = dyn.v[t];
    msbnb__pdl_wait(); /* x, y: after the kernel before (PDL launches: weights uploaded, never written) */
    extern __shared__ __align__(16) unsigned char gemv_xsm[];
    const void *xv = stage_x(a, gemv_xsm, a.M * K * (XBF16 ? 2 : 4));
    __syncthreads();
    if (n >= a.N) return;
    const float off = DQ ? *a.offset : 0.0f;
    const uint32_t lane4 = 4u * lane;
    float acc[MT];
#pragma unroll
    for (int m = 0; m < MT; m++) acc[m] = 0.0f;
    for (int j0 = 0; j0 < nw; j0 += 32 * GEMV_WU) {
        if (j0 + 32 * GEMV_WU < nw) load_batch<DQ>(nxt, a, wrow, n, j0 + 32 * GEMV_WU, lane, nw);
#pragma unroll
        for (int u = 0; u < GEMV_WU; u++) {
            int j = j0 + u * 32 + lane;
            if (j >= nw) break;
            /* QLoRA double quant: dynamic_map[q] * nested + offset, as msbnb_double_dequant_absmax */
            float am = DQ ? __fadd_rn(__fmul_rn(sdyn[cur.qa[u]], cur.am[u]), off) : cur.am[u];
            float w[8];
            decode8(w, cur.q[u], (const char *)slut, lane4); /* once, for all M rows */
#pragma unroll
            for (int m = 0; m < MT; m++) {
                if (m >= a.M) break;
                const void *xm = XBF16 ? (const void *)((const uint16_t *)xv + (int64_t)m * K)
                                       : (const void *)((const float *)xv + (int64_t)m * K);
                acc[m] = fmaf(am, dot8<XBF16>(w, xm, (int64_t)j * 8), acc[m]);
            }
        }
        cur = nxt;
    }
#pragma unroll
    for (int m = 0; m < MT; m++) {
        if (m >= a.M) break;
        float v = warp_sum(acc[m]);
        if (lane == 0) store_y(a.y, XBF16, (int64_t)m * a.N + n, v, a.bias, n);
    }
}

/* M = 1: y[n] = sum_k x[k] W[n, k], the decode-bound case. A task is R rows; lane L reads
 * 16-byte chunks L, L + 32, ... (32 codes each) of every row of its task, U chunks per row
 * per batch, so a warp instruction loads 512 contiguous bytes of a row (bnb's row-major
 * packing, no re-layout). The grid is persistent (one block per slot the SMs hold): each
 * warp walks its tasks as one stream of batches and the next batch's loads are in flight
 * while the current one is decoded, across task boundaries (two register buffers used in
 * turn, so nothing is copied between batches). A byte holds two codes (weight 2b in the
 * high nibble): it indexes a 256-entry table of code pairs (float2) in dynamic shared
 * memory, replicated once per lane so that a warp's 64-bit lookups never conflict: entry e
 * of lane l at byte 256 e + 8 l (64 KB a block), so the address is one PRMT (byte i of the
 * word into bits 8..15, 8 l into bits 0..7; a 128-byte stride per entry, replicated per
 * half-warp, costs a shift and an and-or, and measured the same). The 32-term sum Σ code x
 * of a chunk (inside one quantization block: blocks are >= 32 aligned elements) is scaled
 * once by its absmax. x is staged in shared memory after griddepcontrol.wait (shared loads,
 * not generic ones: Nsight Compute counted the generic loads of a maybe-shared pointer among
 * the long-scoreboard stalls) and converted to f32 once per 8 elements for the task's R rows. */
#ifndef GEMV1_WARPS
#define GEMV1_WARPS 8
#endif

template <int R, int U, bool DQ>
struct chunk_batch {
    uint4 q[R][U];
    float am[R][U];    /* absmax, or (DQ) nested absmax */
    uint32_t qa[R][U]; /* DQ: the absmax code */
};

/* Loads batch bt (chunks 32 U bt + 32 u + lane) of task t's rows. Rows past N re-read row
 * N - 1 and chunks past the row's end its last chunk (the decode skips them), so the loads
 * are unconditional; element offsets are 32-bit (the launch asks N K < 2^31): a few integer
 * instructions a row instead of the ~20 of 64-bit index math, which Nsight Compute showed
 * stalled behind the loads of the batch before. */
template <int R, int U, bool DQ>
__device__ __forceinline__ void load_chunks(chunk_batch<R, U, DQ> &b, const gemv_args &a, int t, int bt, int lane,
                                            int nch) {
#pragma unroll
    for (int u = 0; u < U; u++) {
        const uint32_t c32 = (uint32_t)min((bt * U + u) * 32 + lane, nch - 1) * 32u;
#pragma unroll
        for (int r = 0; r < R; r++) {
            const uint32_t e = (uint32_t)min(t * R + r, a.N - 1) * (uint32_t)a.K + c32; /* element offset */
            b.q[r][u] = ld_stream(a.w + (e >> 1));
            const uint32_t blk = e >> a.bs_log2;
            if (DQ) {
                b.qa[r][u] = __ldg(a.qabsmax + blk);
                b.am[r][u] = __ldg(a.nested + (blk >> 8));
            } else {
                b.am[r][u] = __ldg(a.absmax + blk);
            }
        }
    }
}

/* 8 activations x[k0 .. k0 + 7] as f32 from the block's shared copy. */
template <bool XBF16>
__device__ __forceinline__ void load_x8s(float (&xf)[8], const unsigned char *xs, int k0) {
    if (XBF16) {
        const uint4 v = *(const uint4 *)(xs + 2 * k0);
        const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            xf[2 * j] = __uint_as_float(w[j] << 16);
            xf[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
        }
    } else {
        const float4 u = *(const float4 *)(xs + 4 * k0), v = *(const float4 *)(xs + 4 * k0 + 16);
        xf[0] = u.x, xf[1] = u.y, xf[2] = u.z, xf[3] = u.w;
        xf[4] = v.x, xf[5] = v.y, xf[6] = v.z, xf[7] = v.w;
    }
}

/* s0 += Σ code(2b) x[2i], s1 += Σ code(2b + 1) x[2i + 1] over the 4 bytes of word q; ln is
 * the lane's offset in the table (8 l). TB = 256: the table; TB = 0: the timing experiment. */
template <int TB>
__device__ __forceinline__ void pair_dot4(float &s0, float &s1, uint32_t q, const float (&xf)[8],
                                          const unsigned char *tab, uint32_t ln) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        if (TB == 0) { /* timing experiment (MSBNB_CUDA_M1_VAR = 9): no lookups, wrong results */
            const uint32_t v = (q >> (8 * i)) & 0x3f00ffu;
            s0 = fmaf(__uint_as_float(v), xf[2 * i], s0);
            s1 = fmaf(__uint_as_float(v ^ 0x100u), xf[2 * i + 1], s1);
            continue;
        }
        const uint32_t off = __byte_perm(q, ln, 0x5504u | (uint32_t)(i << 4)); /* byte i << 8 | 8 l */
        const float2 p = *(const float2 *)(tab + off);
        s0 = fmaf(p.x, xf[2 * i], s0);
        s1 = fmaf(p.y, xf[2 * i + 1], s1);
    }
}

__host__ __device__ constexpr int m1_tab_bytes() { return 256 * 32 * 8; } /* 256 pairs x 32 lanes */

/* One batch of a warp's stream: the loads of the next batch (t2, bt2) into nxt, then the
 * decode of cur; y of a finished task. Returns whether the stream goes on (t, bt advanced). */
template <int R, int U, int TB, bool DQ, bool XBF16>
__device__ __forceinline__ bool m1_step(chunk_batch<R, U, DQ> &cur, chunk_batch<R, U, DQ> &nxt, float (&acc)[R],
                                        int &t, int &bt, const gemv_args &a, const unsigned char *tab,
                                        const unsigned char *xs, const float *sdyn, float off, uint32_t ln, int lane,
                                        int nch, int nbat, int ntask, int stride) {
    int t2 = t, bt2 = bt + 1;
    if (bt2 == nbat) bt2 = 0, t2 += stride;
    if (t2 < ntask) load_chunks<R, U, DQ>(nxt, a, t2, bt2, lane, nch);
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int c = (bt * U + u) * 32 + lane;
        if (c >= nch) break;
        float s0[R], s1[R];
#pragma unroll
        for (int r = 0; r < R; r++) s0[r] = s1[r] = 0.0f;
#pragma unroll
        for (int wd = 0; wd < 4; wd++) {
            float xf[8];
            load_x8s<XBF16>(xf, xs, c * 32 + 8 * wd);
#pragma unroll
            for (int r = 0; r < R; r++) {
                const uint4 &q = cur.q[r][u];
                pair_dot4<TB>(s0[r], s1[r], wd == 0 ? q.x : wd == 1 ? q.y : wd == 2 ? q.z : q.w, xf, tab, ln);
            }
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
            /* QLoRA double quant: dynamic_map[q] * nested + offset, as msbnb_double_dequant_absmax */
            const float am = DQ ? __fadd_rn(__fmul_rn(sdyn[cur.qa[r][u]], cur.am[r][u]), off) : cur.am[r][u];
            acc[r] = fmaf(s0[r] + s1[r], am, acc[r]);
        }
    }
    if (bt == nbat - 1) { /* task done */
#pragma unroll
        for (int r = 0; r < R; r++) {
            const float v = warp_sum(acc[r]);
            const int n = t * R + r;
            if (lane == 0 && n < a.N) store_y(a.y, XBF16, n, v, a.bias, n);
            acc[r] = 0.0f;
        }
    }
    t = t2, bt = bt2;
    return t2 < ntask;
}

/* Needs K * sizeof(x) <= GEMV_XS_MAX (x is always staged; a.xs is not read) and N K < 2^31;
 * dynamic shared memory = the pair table (m1_tab_bytes) followed by x. */
template <int R, int U, int MINB, int TB, bool DQ, bool XBF16>
__global__ void __launch_bounds__(32 * GEMV1_WARPS, MINB) gemv4_m1(gemv_args a, msbnb__code16 code,
                                                                   msbnb__code256 dyn) {
    extern __shared__ __align__(16) unsigned char gemv_m1_sm[];
    __shared__ float sdyn[DQ ? 256 : 1];
    msbnb__pdl_launch_next();
    const int lane = threadIdx.x & 31, nch = a.K >> 5; /* 16-byte chunks per row */
    const int ntask = (a.N + R - 1) / R, nbat = (nch + 32 * U - 1) / (32 * U);
    const int stride = gridDim.x * GEMV1_WARPS;
    int t = blockIdx.x * GEMV1_WARPS + (threadIdx.x >> 5), bt = 0;
    chunk_batch<R, U, DQ> b0, b1;
    if (t < ntask) load_chunks<R, U, DQ>(b0, a, t, 0, lane, nch); /* in flight during the table fill */
    {   /* the pair table: thread i writes entries e = g + 8 j (g = i / 32, the warp), whose high
         * code is code[j / 2] (a constant per unrolled j) and low code code[g] or code[g + 8] */
        static_assert(GEMV1_WARPS == 8, "pair table fill: 8 entries per pass");
        const int g = threadIdx.x >> 5;
        const float lo0 = code.v[g], lo1 = code.v[g + 8];
#pragma unroll
        for (int j = 0; j < 32; j++)
            ((float2 *)gemv_m1_sm)[threadIdx.x + 256 * j] = make_float2(code.v[j >> 1], (j & 1) ? lo1 : lo0);
    }
    if (DQ)
        for (int i = threadIdx.x; i < 256; i += blockDim.x) sdyn[i] = dyn.v[i];
    msbnb__pdl_wait(); /* x, y: after the kernel before (PDL launches: weights uploaded, never written) */
    unsigned char *xs = gemv_m1_sm + m1_tab_bytes();
    const int xbytes = a.K * (XBF16 ? 2 : 4);
    for (int i = threadIdx.x; i < xbytes / 16; i += blockDim.x) ((uint4 *)xs)[i] = ((const uint4 *)a.x)[i];
    __syncthreads();
    if (t >= ntask) return;
    const float off = DQ ? *a.offset : 0.0f;
    const uint32_t ln = 8u * lane;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.0f;
    while (m1_step<R, U, TB, DQ, XBF16>(b0, b1, acc, t, bt, a, gemv_m1_sm, xs, sdyn, off, ln, lane, nch, nbat, ntask,
                                         stride) &&
           m1_step<R, U, TB, DQ, XBF16>(b1, b0, acc, t, bt, a, gemv_m1_sm, xs, sdyn, off, ln, lane, nch, nbat, ntask,
                                         stride)) {
    }
}

/* Launch shapes of gemv4_m1: R rows per task, U chunks per row per batch, MINB blocks of 8
 * warps per SM. The grid is persistent, at most sms * MINB blocks, all resident at once (the
 * shared-memory carveout is asked for). */
template <int R, int U, int MINB, int TB, bool DQ, bool XBF16>
static msbnb_status launch_m1_t(const gemv_args &a, const msbnb__code16 &code, const msbnb__code256 &dyn, int sms,
                                bool pdl) {
    const int64_t tasks = (a.N + R - 1) / R, need = (tasks + GEMV1_WARPS - 1) / GEMV1_WARPS;
    const unsigned grid = (unsigned)(need < (int64_t)sms * MINB ? need : (int64_t)sms * MINB);
    void (*kern)(gemv_args, msbnb__code16, msbnb__code256) = gemv4_m1<R, U, MINB, TB, DQ, XBF16>;
    MSBNB_CUDA_TRY(cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout,
                                        (int)cudaSharedmemCarveoutMaxShared));
    const int sm = m1_tab_bytes() + gemv_xs_bytes(1, a.K, XBF16);
    MSBNB_CUDA_TRY(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, sm));
    MSBNB_CUDA_TRY(msbnb__launch(kern, dim3(grid), dim3(32 * GEMV1_WARPS), (size_t)sm, pdl, a, code, dyn));
    return MSBNB_OK;
}

/* Which launch shape (MSBNB_CUDA_M1_VAR = 1 | 2 | 3 forces one; 9 is a timing experiment
 * with wrong results: the lookups replaced by bit casts). Measured on the H200 (bench/RESULTS.md,
 * 2026-12-02, NF4 ms, shapes (K, N)):
 *  1: R = 4, U = 1 when the tasks fill the grid (N >= 4 x its warps): (4096, 14336) 0.0197,
 *     against 0.0233 for 2 and 0.0201 for 3;
 *  3: R = 4, U = 2 for fewer, long rows (K >= 8192): (14336, 4096) 0.0220, 1: 0.0228 (half
 *     the grid idle), 2: 0.0233; with double quant (where 3 spills) 1: 0.0229 against 0.0241;
 *  2: R = 2, U = 2 for fewer, short rows: (4096, 4096) 0.0077, 1: 0.0102, 3: 0.0102, the word
 *     kernel gemv4_fast 0.0091. */
static int m1_shape(int64_t N, int64_t K, bool dq, int sms) {
    const char *e = getenv("MSBNB_CUDA_M1_VAR");
    if (e && (e[0] == '1' || e[0] == '2' || e[0] == '3' || e[0] == '9')) return e[0] - '0';
    const int64_t warps = (int64_t)sms * 2 * GEMV1_WARPS;
    return N >= 4 * warps ? 1 : K >= 8192 ? (dq ? 1 : 3) : 2;
}

template <bool DQ, bool XBF16>
static msbnb_status launch_m1(const gemv_args &a, const msbnb__code16 &code, const msbnb__code256 &dyn, int sms,
                              bool pdl) {
    switch (m1_shape(a.N, a.K, DQ, sms)) {
    case 2: return launch_m1_t<2, 2, 2, 256, DQ, XBF16>(a, code, dyn, sms, pdl);
    case 3: return launch_m1_t<4, 2, 2, 256, DQ, XBF16>(a, code, dyn, sms, pdl);
    case 9: return launch_m1_t<4, 1, 2, 0, DQ, XBF16>(a, code, dyn, sms, pdl);
    default: return launch_m1_t<4, 1, 2, 256, DQ, XBF16>(a, code, dyn, sms, pdl);
    }
}

/* Which M = 1 kernel: MSBNB_CUDA_GEMV4_M1 = 1 forces the chunked gemv4_m1 wherever it
 * applies (tests reach it with small shapes), 0 the word kernel gemv4_fast; unset, from
 * 16 M weights:
 *  - launched with PDL (layers with N >= K): gemv4_m1. Measured on the H200 (bench/RESULTS.md,
 *    2026-12-02), x staged in shared memory: nf4 (4096, 14336) 0.0197 against 0.0229 ms,
 *    + dq 0.0200 against 0.0283; (4096, 4096) in its R = 2 shape 0.0077 against 0.0091.
 *  - plain launches (K > N, the functional API): the rule measured on the H100, gemv4_m1
 *    when the absmax is double-quantized (decoded once per 32 weights instead of 8) or
 *    K > N (few tasks, long streams): (14336, 4096) nf4 0.0235 ms on the H200. */
static bool use_m1_kernel(bool dq, int64_t N, int64_t K, bool pdl) {
    const char *e = getenv("MSBNB_CUDA_GEMV4_M1");
    if (e && *e) return e[0] == '1';
    if (N * K < ((int64_t)1 << 24)) return false;
    return pdl ? N >= K : dq || K > N;
}

/* Which kernel for bf16 activations: the tensor-core gemv4_mma for M >= 2, the FFMA kernels
 * for M = 1 (measured on the H200 at (4096, 14336), bench/RESULTS.md: M = 16 0.152 -> 0.041
 * ms with the tensor cores, M = 1 0.027 ms either way). MSBNB_CUDA_GEMV4_MMA = 1 forces it
 * for M = 1 too, 0 turns it off. */
static bool use_mma_kernel(int64_t M) {
    const char *e = getenv("MSBNB_CUDA_GEMV4_MMA");
    if (e && *e) return e[0] == '1';
    return M >= 2;
}
/* MSBNB_CUDA_MMA_LO = 0 drops the residual MMA: codes rounded to bf16 as bitsandbytes'
 * kernels do (0.035 vs 0.041 ms at M = 16); by default the f32-grade codes. */
static bool mma_lo(void) {
    const char *e = getenv("MSBNB_CUDA_MMA_LO");
    return !(e && e[0] == '0');
}
/* Codes that bf16 holds exactly (INT4's q - 8) make the residual MMA add zeros: skip it. */
static bool codes_bf16_exact(const float *code) {
    for (int i = 0; i < 16; i++) {
        uint32_t u;
        memcpy(&u, &code[i], 4);
        if (u & 0xffffu) return false;
    }
    return true;
}
/* Row tiles per block: 2 (32 rows) once that still gives two blocks per SM (measured 0.041
 * vs 0.047 ms at N = 14336, M = 16); MSBNB_CUDA_MMA_RT = 1 | 2 forces one. */
static int mma_rt(int64_t N, int sms) {
    const char *e = getenv("MSBNB_CUDA_MMA_RT");
    if (e && (e[0] == '1' || e[0] == '2')) return e[0] - '0';
    return N >= (int64_t)32 * 2 * sms ? 2 : 1;
}

/* Any K, any alignment: one warp per row, one weight at a time. */
template <bool DQ>
__global__ void gemv4_generic(gemv_args a, int xbf16, msbnb__code16 code, msbnb__code256 dyn) {
    __shared__ float sdyn[256];
    for (int t = threadIdx.x; t < 256; t += blockDim.x) sdyn[t] = dyn.v[t];
    __syncthreads();
    int n = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (n >= a.N) return;
    const float off = DQ ? *a.offset : 0.0f;
    for (int m = 0; m < a.M; m++) {
        float acc = 0.0f;
        for (int k = lane; k < a.K; k += 32) {
            int64_t e = (int64_t)n * a.K + k;
            uint8_t byte = a.w[e >> 1];
            float w = __fmul_rn(code.v[(e & 1) ? (byte & 15) : (byte >> 4)],
                                block_absmax<DQ>(a, sdyn, off, e >> a.bs_log2));
            acc = fmaf(w, msbnb__ld_f32(a.x, xbf16 ? MSBNB_DTYPE_BF16 : MSBNB_DTYPE_F32, (int64_t)m * a.K + k), acc);
        }
        acc = warp_sum(acc);
        if (lane == 0) store_y(a.y, xbf16, (int64_t)m * a.N + n, acc, a.bias, n);
    }
}

/* int8 -> exact f32 of 4 packed codes: (2^23 + (q ^ 0x80)) - (2^23 + 128). */
__device__ __forceinline__ float i8f(uint32_t u, int i) {
    return __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7440 | i)) - 8388736.0f;
}

template <bool XBF16>
__device__ __forceinline__ float chunk_dot8(const uint4 &q, const void *x, int64_t k0) {
    const uint32_t qw[4] = {q.x ^ 0x80808080u, q.y ^ 0x80808080u, q.z ^ 0x80808080u, q.w ^ 0x80808080u};
    float s0 = 0.0f, s1 = 0.0f;
    if (XBF16) {
        const uint4 *xp = (const uint4 *)((const uint16_t *)x + k0);
#pragma unroll
        for (int v = 0; v < 2; v++) {
            uint4 xv = __ldg(xp + v);
            const uint32_t xw[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
            for (int j = 0; j < 4; j++) { /* elements 8v + 2j, 8v + 2j + 1 */
                int e = 8 * v + 2 * j;
                s0 = fmaf(i8f(qw[e >> 2], e & 3), __uint_as_float(xw[j] << 16), s0);
                s1 = fmaf(i8f(qw[e >> 2], (e & 3) + 1), __uint_as_float(xw[j] & 0xffff0000u), s1);
            }
        }
    } else {
        const float4 *xp = (const float4 *)((const float *)x + k0);
#pragma unroll
        for (int v = 0; v < 4; v++) {
            float4 xv = __ldg(xp + v);
            s0 = fmaf(i8f(qw[v], 0), xv.x, s0);
            s1 = fmaf(i8f(qw[v], 1), xv.y, s1);
            s0 = fmaf(i8f(qw[v], 2), xv.z, s0);
            s1 = fmaf(i8f(qw[v], 3), xv.w, s1);
        }
    }
    return s0 + s1;
}

template <int MT, bool XBF16>
__global__ void __launch_bounds__(32 * GEMV_WARPS) gemv8_fast(gemv_args a) {
    int n = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (n >= a.N) return;
    const int K = a.K, nch = K / 16;
    const int8_t *wrow = (const int8_t *)a.w + (int64_t)n * K;
    float acc[MT];
#pragma unroll
    for (int m = 0; m < MT; m++) acc[m] = 0.0f;
    for (int c0 = 0; c0 < nch; c0 += 32 * GEMV_U) {
        uint4 q[GEMV_U];
#pragma unroll
        for (int u = 0; u < GEMV_U; u++) {
            int c = c0 + u * 32 + lane;
            if (c < nch) q[u] = ld_stream(wrow + (int64_t)c * 16);
        }
#pragma unroll
        for (int u = 0; u < GEMV_U; u++) {
            int c = c0 + u * 32 + lane;
            if (c >= nch) break;
#pragma unroll
            for (int m = 0; m < MT; m++) {
                if (m >= a.M) break;
                const void *xm = XBF16 ? (const void *)((const uint16_t *)a.x + (int64_t)m * K)
                                       : (const void *)((const float *)a.x + (int64_t)m * K);
                acc[m] += chunk_dot8<XBF16>(q[u], xm, (int64_t)c * 16);
            }
        }
    }
    float s = __fmul_rn(__ldg(a.row_scale + n), a.scale_mul);
#pragma unroll
    for (int m = 0; m < MT; m++) {
        if (m >= a.M) break;
        float v = warp_sum(acc[m]);
        if (lane == 0) store_y(a.y, XBF16, (int64_t)m * a.N + n, __fmul_rn(v, s), a.bias, n);
    }
}

__global__ void gemv8_generic(gemv_args a, int xbf16) {
    int n = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (n >= a.N) return;
    float s = __fmul_rn(a.row_scale[n], a.scale_mul);
    for (int m = 0; m < a.M; m++) {
        float acc = 0.0f;
        for (int k = lane; k < a.K; k += 32)
            acc = fmaf((float)((const int8_t *)a.w)[(int64_t)n * a.K + k],
                       msbnb__ld_f32(a.x, xbf16 ? MSBNB_DTYPE_BF16 : MSBNB_DTYPE_F32, (int64_t)m * a.K + k), acc);
        acc = warp_sum(acc);
        if (lane == 0) store_y(a.y, xbf16, (int64_t)m * a.N + n, __fmul_rn(acc, s), a.bias, n);
    }
}

/* ---------------------------------------------------------------- tensor-core 4-bit GEMV
 *
 * M <= 16, bf16 activations: y = x · Wᵀ on the tensor cores (mma.sync m16n8k16 bf16 -> f32),
 * W decoded in registers and never written out. A warp holds an m16n8k16 tile: A = 16 rows
 * of W, B = x (column m = batch row m, so M <= 8 is one n-tile and M <= 16 two), C = f32.
 *
 * Why the tensor cores even at M = 1: the decode, not the multiply, bounds a 4-bit GEMV.
 * With FFMA (the kernels above) every weight costs a table lookup, a shift/mask and an
 * FFMA; here one shared-memory lookup decodes a whole byte (two weights) straight into an
 * A-fragment register (a byte -> bf16x2 code-pair table, replicated once per bank so a
 * warp's 32 lookups never conflict), and the multiply-adds go to the otherwise idle tensor
 * cores. The 16-k order inside an MMA is free (A and B only have to agree), so each lane of
 * a quad (t = lane % 4) streams L contiguous bytes of its rows and gives the MMA bytes
 * 2i, 2i+1 of them; B holds the activations at the same k. All 4L bytes a quad reads of a
 * row lie in one quantization block (4L <= blocksize / 2), so an MMA's sums belong to one
 * block per row and are scaled by its absmax in f32 afterwards (DQ: decoded from the
 * double-quant byte, as msbnb_double_dequant_absmax rounds it).
 *
 * Precision: bitsandbytes' own 4-bit kernels use the code table in the compute dtype
 * (kgemm_4bit_inference_naive: quant_map in T = bf16), and every bf16 matmul path rounds
 * the weight to bf16. LO = true adds a second MMA with the bf16 residual code - bf16(code),
 * which brings each code to ~2^-17 relative (the f32 result within 1e-5 Σ|w x|); LO = false
 * is bnb's precision (code rounded to bf16: ≤ 2^-9 Σ|w x|) at half the shared-memory reads.
 *
 * Work split: a block (8 warps) owns 16 RT rows; its warps take the K steps (8 L weights
 * per row) round-robin and add their partial sums in shared memory at the end. */
#define MMA_WARPS 8

__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <int L>
struct wbytes {
    uint32_t w[L / 4];
};

template <int L>
__device__ __forceinline__ void ld_wbytes(wbytes<L> &b, const uint8_t *p) {
    static_assert(L == 8 || L == 16, "8 or 16 bytes a lane");
    if constexpr (L == 16) {
        uint4 v = ld_stream(p);
        b.w[0] = v.x, b.w[1] = v.y, b.w[2] = v.z, b.w[3] = v.w;
    } else {
        uint32_t x0, x1;
        asm("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(x0), "=r"(x1) : "l"(p));
        b.w[0] = x0, b.w[1] = x1;
    }
}

/* Shared-memory byte offset of table entry `byte j of word q` for this lane: entry e of lane
 * l lives at 128 e + 4 l (lane4 = 4 l). */
__device__ __forceinline__ uint32_t tab_off(uint32_t q, int j, uint32_t lane4) {
    const uint32_t e7 = (j == 0 ? (q << 7) : (q >> (8 * j - 7))) & 0x7f80u;
    return e7 | lane4;
}

/* Round to bf16 (RNE) as 16 bits. */
__device__ __forceinline__ uint32_t bf16_bits(float f) { return (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(f)); }

template <int L, int RT, int NT, bool DQ, bool LO>
__global__ void __launch_bounds__(32 * MMA_WARPS) gemv4_mma(gemv_args a, msbnb__code16 code, msbnb__code256 dyn) {
    extern __shared__ __align__(16) uint32_t smem[];
    uint32_t *thi = smem;                            /* [256][32] code pairs, bf16x2 */
    uint32_t *tlo = smem + 256 * 32;                 /* LO: residual pairs */
    float *sdyn = (float *)(smem + (LO ? 2 : 1) * 256 * 32);
    float *red = sdyn + 256;                         /* [MMA_WARPS][RT * 16][NT * 8] partial sums */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    msbnb__pdl_launch_next();

    /* Table: entry e = byte (high nibble = element 2i, the low half of the bf16x2 = lower k). */
    for (int i = tid; i < 256 * 32 / 4; i += 32 * MMA_WARPS) {
        const int e = i >> 3;
        const float c0 = code.v[e >> 4], c1 = code.v[e & 15];
        const uint32_t h0 = bf16_bits(c0), h1 = bf16_bits(c1);
        const uint32_t hi = h0 | (h1 << 16);
        ((uint4 *)thi)[i] = make_uint4(hi, hi, hi, hi);
        if (LO) {
            const uint32_t l0 = bf16_bits(c0 - __uint_as_float(h0 << 16)), l1 = bf16_bits(c1 - __uint_as_float(h1 << 16));
            const uint32_t lo = l0 | (l1 << 16);
            ((uint4 *)tlo)[i] = make_uint4(lo, lo, lo, lo);
        }
    }
    if (DQ)
        for (int i = tid; i < 256; i += 32 * MMA_WARPS) sdyn[i] = dyn.v[i];
    msbnb__pdl_wait(); /* x, y: after the kernel before (the table above overlaps its tail) */
    __syncthreads();

    const int K = a.K, M = a.M;
    const int nsteps = K / (8 * L);
    const int row_base = blockIdx.x * 16 * RT;
    const uint32_t lane4 = 4u * lane;
    const char *th = (const char *)thi;
    const float off = DQ ? *a.offset : 0.0f;
    const uint8_t *wp[RT][2];
    int64_t e0[RT][2]; /* flat element index of row start */
#pragma unroll
    for (int rt = 0; rt < RT; rt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int r = min(row_base + rt * 16 + g + 8 * h, a.N - 1);
            e0[rt][h] = (int64_t)r * K;
            wp[rt][h] = a.w + (e0[rt][h] >> 1) + t * L;
        }
    /* x rows this lane feeds into B: m = g (+ 8 for the second n-tile); others give zeros */
    const uint16_t *xp[NT];
    bool xon[NT];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        const int m = g + 8 * nt;
        xon[nt] = m < M;
        xp[nt] = (const uint16_t *)a.x + (int64_t)(xon[nt] ? m : 0) * K + 2 * t * L;
    }
    float acc[RT][NT][4];
#pragma unroll
    for (int rt = 0; rt < RT; rt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int j = 0; j < 4; j++) acc[rt][nt][j] = 0.0f;

    wbytes<L> cur[RT][2], nxt[RT][2];
    float cam[RT][2], nam[RT][2];
    uint32_t cqa[RT][2], nqa[RT][2];
    auto load = [&](wbytes<L>(&wb)[RT][2], float(&am)[RT][2], uint32_t(&qa)[RT][2], int s) {
#pragma unroll
        for (int rt = 0; rt < RT; rt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                ld_wbytes<L>(wb[rt][h], wp[rt][h] + (int64_t)s * 4 * L);
                const int64_t blk = (e0[rt][h] + (int64_t)s * 8 * L) >> a.bs_log2;
                if (DQ) {
                    qa[rt][h] = __ldg(a.qabsmax + blk);
                    am[rt][h] = __ldg(a.nested + (blk >> 8));
                } else {
                    am[rt][h] = __ldg(a.absmax + blk);
                }
            }
    };
    /* B fragments: L words of x per n-tile (k-pairs s 4L + t L + j). Loaded one step ahead
     * like the weights: x comes from L2, and a load used in the same step stalled every
     * step on its latency (long scoreboard, bench/RESULTS.md session 5/6). */
    uint32_t xb[NT][L], xn[NT][L];
    auto loadx = [&](uint32_t(&xo)[NT][L], int s) {
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int v = 0; v < L / 4; v++) {
                uint4 xv = xon[nt] ? ((const uint4 *)(xp[nt] + (int64_t)s * 8 * L))[v] : make_uint4(0, 0, 0, 0);
                xo[nt][4 * v] = xv.x, xo[nt][4 * v + 1] = xv.y, xo[nt][4 * v + 2] = xv.z, xo[nt][4 * v + 3] = xv.w;
            }
    };
    int s = warp;
    if (s < nsteps) {
        load(cur, cam, cqa, s);
        loadx(xb, s);
    }
    for (; s < nsteps; s += MMA_WARPS) {
        if (s + MMA_WARPS < nsteps) {
            load(nxt, nam, nqa, s + MMA_WARPS);
            loadx(xn, s + MMA_WARPS);
        }
#pragma unroll
        for (int rt = 0; rt < RT; rt++) {
            float cs[NT][4];
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int j = 0; j < 4; j++) cs[nt][j] = 0.0f;
#pragma unroll
            for (int i = 0; i < L / 2; i++) {
                /* bytes 2i, 2i + 1 of this lane's L bytes of rows g and g + 8 */
                const int j0 = 2 * i, j1 = 2 * i + 1;
                const uint32_t o0 = tab_off(cur[rt][0].w[j0 >> 2], j0 & 3, lane4);
                const uint32_t o1 = tab_off(cur[rt][1].w[j0 >> 2], j0 & 3, lane4);
                const uint32_t o2 = tab_off(cur[rt][0].w[j1 >> 2], j1 & 3, lane4);
                const uint32_t o3 = tab_off(cur[rt][1].w[j1 >> 2], j1 & 3, lane4);
                const uint32_t a0 = *(const uint32_t *)(th + o0), a1 = *(const uint32_t *)(th + o1);
                const uint32_t a2 = *(const uint32_t *)(th + o2), a3 = *(const uint32_t *)(th + o3);
#pragma unroll
                for (int nt = 0; nt < NT; nt++) mma_bf16_16816(cs[nt], a0, a1, a2, a3, xb[nt][j0], xb[nt][j1]);
                if (LO) {
                    const char *tl = (const char *)tlo;
                    const uint32_t l0 = *(const uint32_t *)(tl + o0), l1 = *(const uint32_t *)(tl + o1);
                    const uint32_t l2 = *(const uint32_t *)(tl + o2), l3 = *(const uint32_t *)(tl + o3);
#pragma unroll
                    for (int nt = 0; nt < NT; nt++) mma_bf16_16816(cs[nt], l0, l1, l2, l3, xb[nt][j0], xb[nt][j1]);
                }
            }
            /* C fragment: cs[nt][0..1] row g, cs[nt][2..3] row g + 8 (columns 2t, 2t + 1) */
#pragma unroll
            for (int h = 0; h < 2; h++) {
                /* QLoRA double quant: dynamic_map[q] * nested + offset, as msbnb_double_dequant_absmax */
                const float am = DQ ? __fadd_rn(__fmul_rn(sdyn[cqa[rt][h]], cam[rt][h]), off) : cam[rt][h];
#pragma unroll
                for (int nt = 0; nt < NT; nt++) {
                    acc[rt][nt][2 * h] = fmaf(am, cs[nt][2 * h], acc[rt][nt][2 * h]);
                    acc[rt][nt][2 * h + 1] = fmaf(am, cs[nt][2 * h + 1], acc[rt][nt][2 * h + 1]);
                }
            }
        }
#pragma unroll
        for (int rt = 0; rt < RT; rt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                cur[rt][h] = nxt[rt][h];
                cam[rt][h] = nam[rt][h];
                if (DQ) cqa[rt][h] = nqa[rt][h];
            }
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int j = 0; j < L; j++) xb[nt][j] = xn[nt][j];
    }
    /* partial sums of the warps -> red[warp][row][col], then one thread per output sums them */
    const int RC = NT * 8;
#pragma unroll
    for (int rt = 0; rt < RT; rt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int row = rt * 16 + g + 8 * (j >> 1), col = nt * 8 + 2 * t + (j & 1);
                red[(warp * RT * 16 + row) * RC + col] = acc[rt][nt][j];
            }
    __syncthreads();
    for (int o = tid; o < RT * 16 * RC; o += 32 * MMA_WARPS) {
        const int row = o / RC, col = o % RC, n = row_base + row;
        if (col >= M || n >= a.N) continue;
        float v = 0.0f;
#pragma unroll
        for (int w = 0; w < MMA_WARPS; w++) v += red[(w * RT * 16 + row) * RC + col];
        store_y(a.y, true, (int64_t)col * a.N + n, v, a.bias, n);
    }
}

template <int L, int RT, int NT, bool DQ, bool LO>
static msbnb_status launch_mma_t(const gemv_args &a, const msbnb__code16 &code, const msbnb__code256 &dyn, bool pdl) {
    const size_t smem = (size_t)(LO ? 2 : 1) * 256 * 32 * 4 + 256 * 4 + (size_t)MMA_WARPS * RT * 16 * NT * 8 * 4;
    /* per call: the limit belongs to the current device, and several may be in use */
    MSBNB_CUDA_TRY(cudaFuncSetAttribute(gemv4_mma<L, RT, NT, DQ, LO>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)smem));
    const unsigned grid = (unsigned)((a.N + 16 * RT - 1) / (16 * RT));
    MSBNB_CUDA_TRY(msbnb__launch(gemv4_mma<L, RT, NT, DQ, LO>, dim3(grid), dim3(32 * MMA_WARPS), smem, pdl, a, code,
                                 dyn));
    return MSBNB_OK;
}

/* MSBNB_CUDA_MMA_LO = 1: the residual MMA (f32-grade codes); MSBNB_CUDA_MMA_RT = 1 | 2:
 * row tiles per block (default: 2 when that still gives two blocks per SM). */
static msbnb_status launch_mma(const gemv_args &a, const msbnb__code16 &code, const msbnb__code256 &dyn, bool dq,
                               int L, bool lo, int rt, bool pdl) {
#define MMA_NT(Lv, RTv, DQv, LOv)                                                          \
    return a.M <= 8 ? launch_mma_t<Lv, RTv, 1, DQv, LOv>(a, code, dyn, pdl)                \
                    : launch_mma_t<Lv, RTv, 2, DQv, LOv>(a, code, dyn, pdl)
#define MMA_LO(Lv, RTv, DQv)                                                               \
    do {                                                                                   \
        if (lo) MMA_NT(Lv, RTv, DQv, true);                                                \
        MMA_NT(Lv, RTv, DQv, false);                                                       \
    } while (0)
#define MMA_DQ(Lv, RTv)                                                                    \
    do {                                                                                   \
        if (dq) MMA_LO(Lv, RTv, true);                                                     \
        MMA_LO(Lv, RTv, false);                                                            \
    } while (0)
#define MMA_RT(Lv)                                                                         \
    do {                                                                                   \
        if (rt == 2) MMA_DQ(Lv, 2);                                                        \
        MMA_DQ(Lv, 1);                                                                     \
    } while (0)
    if (L == 16) MMA_RT(16);
    MMA_RT(8);
#undef MMA_RT
#undef MMA_DQ
#undef MMA_LO
#undef MMA_NT
}

/* ---------------------------------------------------------------- host side */

static msbnb_status check_gemv_dims(int64_t M, int64_t N, int64_t K, msbnb_dtype xt, const char *fn) {
    if (M <= 0 || N <= 0 || K <= 0)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: M, N, K must be positive (got %lld, %lld, %lld)", fn,
                           (long long)M, (long long)N, (long long)K);
    if (M > 16)
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "%s: M = %lld > 16 (use the GEMM path)", fn, (long long)M);
    int64_t nk;
    if (N > INT_MAX || K > INT_MAX || !msbnb__mul_ok(N, K, &nk) || nk > INT64_MAX / 8)
        return msbnb__fail(MSBNB_ERR_OVERFLOW, "%s: %lld x %lld weight is too large", fn, (long long)N, (long long)K);
    if (xt != MSBNB_DTYPE_F32 && xt != MSBNB_DTYPE_BF16)
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "%s: x_type must be F32 or BF16 (got %d)", fn, (int)xt);
    return MSBNB_OK;
}

static int aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

#define DISPATCH_MT(M, LAUNCH)                                                            \
    do {                                                                                  \
        if ((M) <= 1) LAUNCH(1);                                                          \
        else if ((M) <= 2) LAUNCH(2);                                                     \
        else if ((M) <= 4) LAUNCH(4);                                                     \
        else if ((M) <= 8) LAUNCH(8);                                                     \
        else LAUNCH(16);                                                                  \
    } while (0)

/* Multiprocessors of the current device (the grid sizes of the persistent kernels). */
static msbnb_status device_sms(int *sms) {
    int dev = 0;
    MSBNB_CUDA_TRY(cudaGetDevice(&dev));
    MSBNB_CUDA_TRY(cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, dev));
    return MSBNB_OK;
}

extern "C" msbnb_status msbnb_cuda_gemv_4bit(void *y, const void *x, msbnb_dtype x_type, const msbnb_cuda_weight4 *w,
                                            int64_t M, int64_t N, int64_t K) {
    return msbnb__cuda_gemv_4bit_bias(y, x, x_type, w, NULL, M, N, K);
}

/* The 4-bit GEMV for any 16-entry code table: W[n, k] = code[q] * absmax[(n K + k) / bs].
 * ctx (may be NULL), fl, pdl: as msbnb__cuda_gemv_4bit_ctx. */
static msbnb_status gemv4_code(msbnb_cuda_ctx *ctx, const msbnb__fold_layout *fl, bool pdl, void *y, const void *x,
                               msbnb_dtype x_type, const msbnb_cuda_weight4 *w, const float *codev, const float *bias,
                               int64_t M, int64_t N, int64_t K) {
    MSBNB_CHECK_NULL(y);
    MSBNB_CHECK_NULL(x);
    MSBNB_CHECK_NULL(w);
    MSBNB_CHECK_NULL(w->packed);
    MSBNB_TRY(check_gemv_dims(M, N, K, x_type, __func__));
    int64_t bs = w->blocksize;
    if (bs < 32 || bs > 4096 || (bs & (bs - 1)))
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "%s: block size %lld is not a power of two in [32, 4096]", __func__,
                           (long long)bs);
    if (w->double_quant) {
        MSBNB_CHECK_NULL(w->qabsmax);
        MSBNB_CHECK_NULL(w->nested_absmax);
        MSBNB_CHECK_NULL(w->offset);
    } else {
        MSBNB_CHECK_NULL(w->absmax);
    }
    gemv_args a;
    memset(&a, 0, sizeof a);
    a.y = y;
    a.x = x;
    a.w = w->packed;
    a.absmax = w->absmax;
    a.qabsmax = w->qabsmax;
    a.nested = w->nested_absmax;
    a.offset = w->offset;
    a.bias = bias;
    a.M = (int)M;
    a.N = (int)N;
    a.K = (int)K;
    while ((1LL << a.bs_log2) < bs) a.bs_log2++;
    msbnb__code16 code;
    memcpy(code.v, codev, sizeof code.v);
    msbnb__code256 dyn;
    memcpy(dyn.v, msbnb__dynamic_map, sizeof dyn.v);
    unsigned grid = (unsigned)((N + GEMV_WARPS - 1) / GEMV_WARPS);
    int bf = x_type == MSBNB_DTYPE_BF16, dq = w->double_quant != 0;
    const int mma_l = bs >= 128 ? 16 : 8;
    if (ctx && M == 1 && msbnb__cuda_gemv4_fold_applies(N, K, w, fl != NULL))
        return msbnb__cuda_gemv4_fold(ctx, y, x, bf != 0, w, codev, fl, a.bs_log2, bias, N, K, pdl);
    /* PDL for the kernels below, except at M = 1 with rows longer than there are rows: on
     * the H200 (bench/RESULTS.md, 2026-12-02) (14336, 4096) NF4 took 0.0273 ms with PDL and
     * 0.0235 without, while (4096, 14336) went 0.0262 -> 0.0195 and (4096, 4096) 0.0105 ->
     * 0.0091 with it */
    pdl = pdl && msbnb__pdl_ok() && !(M == 1 && K > N);
    if (bf && bs >= 64 && K % bs == 0 && K % (8 * mma_l) == 0 && aligned16(w->packed) && aligned16(x) &&
        use_mma_kernel(M)) {
        int sms = 0;
        MSBNB_TRY(device_sms(&sms));
        MSBNB_TRY(launch_mma(a, code, dyn, dq, mma_l, mma_lo() && !codes_bf16_exact(codev), mma_rt(N, sms), pdl));
    } else if (M == 1 && K % 32 == 0 && aligned16(w->packed) && aligned16(x) && gemv_xs_bytes(1, K, bf) > 0 &&
               N * K < ((int64_t)1 << 31) && use_m1_kernel(dq, N, K, pdl)) {
        int sms = 0;
        MSBNB_TRY(device_sms(&sms));
        if (dq && bf) MSBNB_TRY((launch_m1<true, true>(a, code, dyn, sms, pdl)));
        else if (dq) MSBNB_TRY((launch_m1<true, false>(a, code, dyn, sms, pdl)));
        else if (bf) MSBNB_TRY((launch_m1<false, true>(a, code, dyn, sms, pdl)));
        else MSBNB_TRY((launch_m1<false, false>(a, code, dyn, sms, pdl)));
    } else if (K % 8 == 0 && aligned16(w->packed) && aligned16(x)) {
        void (*kern)(gemv_args, msbnb__code16, msbnb__code256) = NULL;
#define L4(MT)                                                                                    \
    do {                                                                                          \
        kern = dq && bf ? gemv4_fast<MT, true, true>                                              \
               : dq     ? gemv4_fast<MT, true, false>                                             \
               : bf     ? gemv4_fast<MT, false, true>                                             \
                        : gemv4_fast<MT, false, false>;                                           \
    } while (0)
        DISPATCH_MT(M, L4);
#undef L4
        const int xs = gemv_xs_bytes(M, K, bf);
        a.xs = xs > 0;
        MSBNB_CUDA_TRY(msbnb__launch(kern, dim3(grid), dim3(32 * GEMV_WARPS), (size_t)xs, pdl, a, code, dyn));
    } else if (dq) {
        gemv4_generic<true><<<grid, 32 * GEMV_WARPS>>>(a, bf, code, dyn);
    } else {
        gemv4_generic<false><<<grid, 32 * GEMV_WARPS>>>(a, bf, code, dyn);
    }
    MSBNB_CUDA_LAUNCHED();
    return MSBNB_OK;
}

msbnb_status msbnb__cuda_gemv_4bit_bias(void *y, const void *x, msbnb_dtype x_type, const msbnb_cuda_weight4 *w,
                                        const float *bias, int64_t M, int64_t N, int64_t K) {
    return msbnb__cuda_gemv_4bit_ctx(NULL, y, x, x_type, w, NULL, bias, M, N, K, false);
}

msbnb_status msbnb__cuda_gemv_4bit_ctx(msbnb_cuda_ctx *ctx, void *y, const void *x, msbnb_dtype x_type,
                                       const msbnb_cuda_weight4 *w, const msbnb__fold_layout *fl, const float *bias,
                                       int64_t M, int64_t N, int64_t K, bool pdl) {
    MSBNB_CHECK_NULL(w);
    if (w->type != MSBNB_QTYPE_NF4 && w->type != MSBNB_QTYPE_FP4)
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "msbnb_cuda_gemv_4bit: weight type must be nf4 or fp4");
    return gemv4_code(ctx, fl, pdl, y, x, x_type, w, w->type == MSBNB_QTYPE_NF4 ? msbnb__nf4_code : msbnb__fp4_dequant,
                      bias, M, N, K);
}

/* Symmetric INT4 whose groups divide K: its per-row groups are then the flat blocks of the
 * 4-bit kernels, and W = (q - 8) * scale is code[q] * scale with the table q - 8 (exact in
 * f32 and in bf16, so the tensor-core kernel's residual MMA adds zeros). */
msbnb_status msbnb__cuda_gemv_int4sym_bias(void *y, const void *x, msbnb_dtype x_type, const uint8_t *packed,
                                           const float *scales, int64_t group, const float *bias, int64_t M,
                                           int64_t N, int64_t K) {
    if (group <= 0 || K % group)
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "%s: group %lld does not divide K = %lld", __func__,
                           (long long)group, (long long)K);
    float t[16];
    for (int i = 0; i < 16; i++) t[i] = (float)(i - 8);
    msbnb_cuda_weight4 w = {MSBNB_QTYPE_INT4, group, 0, packed, scales, NULL, NULL, NULL};
    return gemv4_code(NULL, NULL, false, y, x, x_type, &w, t, bias, M, N, K);
}

extern "C" msbnb_status msbnb_cuda_gemv_int8(void *y, const void *x, msbnb_dtype x_type, const int8_t *q,
                                            const float *row_scale, float scale_mul, int64_t M, int64_t N,
                                            int64_t K) {
    MSBNB_CHECK_NULL(y);
    MSBNB_CHECK_NULL(x);
    MSBNB_CHECK_NULL(q);
    MSBNB_CHECK_NULL(row_scale);
    MSBNB_TRY(check_gemv_dims(M, N, K, x_type, __func__));
    gemv_args a;
    memset(&a, 0, sizeof a);
    a.y = y;
    a.x = x;
    a.w = (const uint8_t *)q;
    a.row_scale = row_scale;
    a.scale_mul = scale_mul;
    a.M = (int)M;
    a.N = (int)N;
    a.K = (int)K;
    unsigned grid = (unsigned)((N + GEMV_WARPS - 1) / GEMV_WARPS);
    int bf = x_type == MSBNB_DTYPE_BF16;
    if (K % 16 == 0 && aligned16(q) && aligned16(x)) {
#define L8(MT)                                                                    \
    do {                                                                          \
        if (bf) gemv8_fast<MT, true><<<grid, 32 * GEMV_WARPS>>>(a);               \
        else gemv8_fast<MT, false><<<grid, 32 * GEMV_WARPS>>>(a);                 \
    } while (0)
        DISPATCH_MT(M, L8);
#undef L8
    } else {
        gemv8_generic<<<grid, 32 * GEMV_WARPS>>>(a, bf);
    }
    MSBNB_CUDA_LAUNCHED();
    return MSBNB_OK;
}

/* ---------------------------------------------------------------- cuBLAS paths */

struct msbnb_cuda_ctx {
    cublasHandle_t blas;
    void *scratch;
    size_t scratch_bytes;
    void *fold;      /* the fold kernel's accumulator and counters (kept zero) */
    int64_t fold_n;  /* rows they hold */
};

#define MSBNB_CUBLAS_TRY(call)                                                            \
    do {                                                                                  \
        cublasStatus_t msbnb__bs = (call);                                                \
        if (msbnb__bs != CUBLAS_STATUS_SUCCESS)                                           \
            return msbnb__fail(MSBNB_ERR_CUDA, "%s: %s: %s", __func__, #call,              \
                               cublasGetStatusString(msbnb__bs));                         \
    } while (0)

extern "C" msbnb_status msbnb_cuda_ctx_create(msbnb_cuda_ctx **out) {
    MSBNB_CHECK_NULL(out);
    *out = NULL;
    msbnb_cuda_ctx *c = (msbnb_cuda_ctx *)calloc(1, sizeof *c);
    if (!c) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "%s: out of memory", __func__);
    cublasStatus_t s = cublasCreate(&c->blas);
    if (s != CUBLAS_STATUS_SUCCESS) {
        free(c);
        return msbnb__fail(MSBNB_ERR_CUDA, "%s: cublasCreate: %s", __func__, cublasGetStatusString(s));
    }
    *out = c;
    return MSBNB_OK;
}

extern "C" void msbnb_cuda_ctx_free(msbnb_cuda_ctx *ctx) {
    if (!ctx) return;
    cublasDestroy(ctx->blas);
    cudaFree(ctx->scratch);
    cudaFree(ctx->fold);
    free(ctx);
}

msbnb_status msbnb__cuda_ctx_fold_scratch(msbnb_cuda_ctx *c, int64_t n, float **acc, unsigned **cnt) {
    const int64_t acc_bytes = (n + 63) / 64 * 256; /* the counters start 256-byte aligned */
    if (c->fold_n < n) {
        cudaFree(c->fold); /* waits for the kernels using it */
        c->fold = NULL;
        c->fold_n = 0;
        const size_t bytes = (size_t)acc_bytes + (size_t)((n + 7) / 8) * sizeof(unsigned);
        MSBNB_TRY(msbnb_cuda_malloc(&c->fold, bytes));
        cudaError_t e = cudaMemset(c->fold, 0, bytes); /* stream-ordered before the kernels */
        if (e != cudaSuccess) {
            cudaFree(c->fold);
            c->fold = NULL;
            return msbnb__fail(MSBNB_ERR_CUDA, "%s: cudaMemset: %s", __func__, cudaGetErrorString(e));
        }
        c->fold_n = n;
    }
    *acc = (float *)c->fold;
    *cnt = (unsigned *)((char *)c->fold + ((c->fold_n + 63) / 64 * 256));
    return MSBNB_OK;
}

static msbnb_status scratch_reserve(msbnb_cuda_ctx *c, size_t bytes) {
    if (c->scratch_bytes >= bytes) return MSBNB_OK;
    cudaFree(c->scratch);
    c->scratch = NULL;
    c->scratch_bytes = 0;
    MSBNB_TRY(msbnb_cuda_malloc(&c->scratch, bytes));
    c->scratch_bytes = bytes;
    return MSBNB_OK;
}

extern "C" msbnb_status msbnb_cuda_gemm_bf16(msbnb_cuda_ctx *ctx, uint16_t *y, const uint16_t *x, const uint16_t *w,
                                            int64_t M, int64_t N, int64_t K) {
    MSBNB_CHECK_NULL(ctx);
    MSBNB_CHECK_NULL(y);
    MSBNB_CHECK_NULL(x);
    MSBNB_CHECK_NULL(w);
    if (M <= 0 || N <= 0 || K <= 0 || M > INT_MAX || N > INT_MAX || K > INT_MAX)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: M, N, K must be in [1, INT_MAX]", __func__);
    const float alpha = 1.0f, beta = 0.0f;
    /* Row-major y = x W^T is column-major y^T = W x^T: (N x K)^T-op times (K x M). */
    MSBNB_CUBLAS_TRY(cublasGemmEx(ctx->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &alpha, w, CUDA_R_16BF,
                                  (int)K, x, CUDA_R_16BF, (int)K, &beta, y, CUDA_R_16BF, (int)N, CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
    return MSBNB_OK;
}

extern "C" msbnb_status msbnb_cuda_linear_4bit(msbnb_cuda_ctx *ctx, uint16_t *y, const uint16_t *x,
                                              const msbnb_cuda_weight4 *w, int64_t M, int64_t N, int64_t K) {
    MSBNB_CHECK_NULL(ctx);
    MSBNB_CHECK_NULL(w);
    /* the caller's W may come from the kernel before: no PDL */
    if (M >= 1 && M <= 16) return msbnb__cuda_gemv_4bit_ctx(ctx, y, x, MSBNB_DTYPE_BF16, w, NULL, NULL, M, N, K, false);
    MSBNB_CHECK_NULL(y);
    MSBNB_CHECK_NULL(x);
    MSBNB_CHECK_NULL(w->packed);
    int64_t nk;
    if (M <= 0 || N <= 0 || K <= 0 || !msbnb__mul_ok(N, K, &nk) || nk > INT64_MAX / 8)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: bad shape %lld x %lld x %lld", __func__, (long long)M,
                           (long long)N, (long long)K);
    int64_t nb = msbnb_nblocks(nk, w->blocksize);
    if (nb <= 0) return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "%s: bad block size", __func__);
    size_t wbytes = ((size_t)nk * 2 + 255) / 256 * 256;
    MSBNB_TRY(scratch_reserve(ctx, wbytes + (w->double_quant ? (size_t)nb * 4 : 0)));
    uint16_t *wb = (uint16_t *)ctx->scratch;
    const float *absmax = w->absmax;
    if (w->double_quant) {
        float *am = (float *)((char *)ctx->scratch + wbytes);
        MSBNB_TRY(msbnb_cuda_double_dequant_absmax(am, w->qabsmax, w->nested_absmax, w->offset, nb));
        absmax = am;
    }
    MSBNB_TRY(msbnb_cuda_dequantize_4bit(wb, MSBNB_DTYPE_BF16, w->packed, absmax, nk, w->blocksize, w->type));
    return msbnb_cuda_gemm_bf16(ctx, y, x, wb, M, N, K);
}

msbnb_status msbnb__cuda_ctx_scratch(msbnb_cuda_ctx *ctx, size_t bytes, void **out) {
    MSBNB_TRY(scratch_reserve(ctx, bytes));
    *out = ctx->scratch;
    return MSBNB_OK;
}

/* y[M, N] (f32) = x[M, K] · W[N, K]ᵀ, x and W both bf16 or both f32, f32 compute (no TF32). */
msbnb_status msbnb__cuda_gemm_f32out(msbnb_cuda_ctx *ctx, float *y, const void *x, const void *w, bool bf16, int64_t M,
                                     int64_t N, int64_t K) {
    const float alpha = 1.0f, beta = 0.0f;
    cudaDataType_t t = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    MSBNB_CUBLAS_TRY(cublasGemmEx(ctx->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &alpha, w, t, (int)K, x,
                                  t, (int)K, &beta, y, CUDA_R_32F, (int)N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return MSBNB_OK;
}

/* dx[M, K] = dy[M, N] · W[N, K], all f32 (column-major: dxᵀ = Wᵀ · dyᵀ). */
msbnb_status msbnb__cuda_gemm_dx(msbnb_cuda_ctx *ctx, float *dx, const float *dy, const float *w, int64_t M, int64_t N,
                                 int64_t K) {
    const float alpha = 1.0f, beta = 0.0f;
    MSBNB_CUBLAS_TRY(cublasSgemm(ctx->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)K, (int)M, (int)N, &alpha, w, (int)K, dy,
                                 (int)N, &beta, dx, (int)K));
    return MSBNB_OK;
}

/* Row-major C[M, N] = alpha op(A) op(B) + beta C, f32, through cublasSgemm (column-major
 * Cᵀ = op(B)ᵀ op(A)ᵀ); lda/ldb/ldc are row lengths. */
msbnb_status msbnb__cuda_sgemm_rm(msbnb_cuda_ctx *ctx, bool ta, bool tb, int64_t M, int64_t N, int64_t Kd, float alpha,
                                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                                  int64_t ldc) {
    MSBNB_CUBLAS_TRY(cublasSgemm(ctx->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M,
                                 (int)Kd, &alpha, B, (int)ldb, A, (int)lda, &beta, C, (int)ldc));
    return MSBNB_OK;
}

/* y[M, N] (int32, exact) = x[M, K] · W[N, K]ᵀ for int8 x and W through cuBLAS's int8 tensor-core
 * GEMM (TN layout; K % 4 == 0 and 4-byte aligned pointers). */
msbnb_status msbnb__cuda_gemm_i8(msbnb_cuda_ctx *ctx, int32_t *y, const int8_t *x, const int8_t *w, int64_t M,
                                 int64_t N, int64_t K) {
    const int32_t alpha = 1, beta = 0;
    MSBNB_CUBLAS_TRY(cublasGemmEx(ctx->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &alpha, w, CUDA_R_8I,
                                  (int)K, x, CUDA_R_8I, (int)K, &beta, y, CUDA_R_32I, (int)N, CUBLAS_COMPUTE_32I,
                                  CUBLAS_GEMM_DEFAULT));
    return MSBNB_OK;
}
