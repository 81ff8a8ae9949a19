/* M = 1 4-bit GEMV with the activation folded into the decode table ("fold" kernel).
 *
 * y[n] = Σ_k code(q[n, k]) · absmax(n, k) · x[k] (+ b[n]). A byte of the bnb packing holds the
 * codes of k = 2p (high nibble) and 2p + 1, so for a fixed pair p the byte value e alone picks
 *     T_p[e] = code[e >> 4] · x[2p] + code[e & 15] · x[2p + 1]            (e = 0..255)
 * and Σ_k over one absmax block is Σ_p T_p[byte]: one shared-memory lookup and one FADD per
 * TWO weights, where the FFMA kernels (gemv4_fast, gemv4_m1) need a lookup and an FFMA per
 * weight and are bound by those lookups (bench/RESULTS.md, H100 and H200 sections).
 *
 * The tables depend on x, 1 KB per pair, so K is cut into slices of 128 (64 bytes of every
 * row, a 64 KB table) and the work units are (slice, group of 8 rows), slice-major. A
 * persistent grid of max(SMs, slices) blocks takes equal contiguous ranges of units, so a
 * block spans at most two slices and builds both tables (128 KB of shared memory) once.
 * A warp unit: lane (r, c) = (lane % 8, lane / 8) loads 16 bytes (32 codes) of row 8g + r at
 * chunk c of the slice (one 16-byte load per lane, 64 contiguous bytes a row), looks its
 * 16 bytes up and sums them; the 4 chunks of a row are added with shuffles, and the slices
 * of a row meet in an f32 accumulator in the context's scratch (red.add); the last of the S
 * slices of a row group (a counter per group) writes y, with the bias, and zeroes both for
 * the next call. The order of the slice sums is therefore not fixed: results are f32-grade
 * (within 1e-5 Σ|w x|, tests/test_cuda_gemv.c) but may differ in the last bits between runs.
 *
 * Bank-conflict-free lookups with one PRMT per address: at a given step all 32 lanes look at
 * different pairs whose table words sit in 32 different banks. Lane (r, c) takes at step
 * (j, i) the byte v = (i + r) % 4 of word j' = j ^ (r / 4) of its chunk, i.e. pair
 * p = 16c + 4j' + v, and pair p's entry e lives at byte
 *     e · 256 + (j' / 2) · 128 + 4 · (c + 4v + 16 (j' % 2))
 * whose bank c + 4v + 16 (j' % 2) differs across the warp. PRMT builds (e << 8) | 4 · bank
 * from the code word and a per-lane constant in one instruction; (j' / 2) · 128 and the
 * table's offset are immediates of the load.
 *
 * Launched with PDL (programmatic dependent launch) for uploaded layers, whose weights no
 * kernel writes: the first batch of weight loads is issued before griddepcontrol.wait, the
 * table (x) and the scratch after it, and the next kernel may start as blocks retire.
 *
 * Memory: on bnb's row-major packing a unit reads 64 bytes of each of 8 rows, rows K / 2
 * bytes apart, and no block ever reads along a row; uploaded layers can carry a slice-major
 * copy (msbnb__fold_layout, MSBNB_CUDA_FOLD_LAYOUT=1 at upload: a second copy of the codes
 * and scales) in which a block's units are one contiguous stream. Measured on the H200
 * (bench/RESULTS.md, 2026-12-02): 0.0237 ms at (4096, 14336) NF4 with the layout against
 * 0.0269 for the FFMA kernels and 0.029 on bnb's packing; the lookups themselves cost
 * ~4 us there (0.0195 ms with them replaced by a bit cast) and the REDs < 1 us, so what
 * bounds it is the weight stream of per-thread 16-byte loads (~1.7 TB/s without lookups)
 * plus ~5 us per call (tables after the wait, the tail), not the decode any more. */
#include "cuda/cuda_internal.cuh"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define FOLD_SK 128                /* k per slice: 64 bytes of a row */
#define FOLD_TAB_WORDS (256 * 64)  /* one slice's table: 256 byte values x 64 pairs (64 KB) */

struct fold_args {
    void *y;
    const void *x;
    const uint8_t *w;
    const float *absmax;
    const uint8_t *qabsmax;
    const float *nested;
    const float *offset;
    const float *bias;
    float *acc;    /* [N], zero between calls */
    unsigned *cnt; /* [RG], zero between calls */
    const uint8_t *fw; /* RL: the slice-major layout (msbnb__fold_layout) */
    const float *fa;
    const uint8_t *fq;
    int64_t npad;
    int sc_log2;
    int N, K, bs_log2;
    int S, RG, W; /* slices, groups of 8 rows, units S * RG */
    int diag;     /* measurements only (MSBNB_CUDA_FOLD_DIAG): 1 no REDs, 2 no lookups; y is then wrong */
};

__device__ __forceinline__ uint32_t fold_prmt(uint32_t a, uint32_t b, uint32_t s) {
    uint32_t d;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(s));
    return d;
}

/* 16 code bytes, read once (no L1 allocation); the L2 fetches the whole 128-byte line, whose
 * other half is the neighbouring slice (another block's, soon after). */
__device__ __forceinline__ uint4 fold_ld16(const uint8_t *p) {
    uint4 r; /* volatile: stays before griddepcontrol.wait */
    asm volatile("ld.global.nc.L1::no_allocate.L2::128B.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
        : "l"(p));
    return r;
}

template <bool XBF16>
__device__ __forceinline__ float fold_ldx(const void *x, int k) {
    if (XBF16) return __uint_as_float((uint32_t)((const uint16_t *)x)[k] << 16);
    return ((const float *)x)[k];
}

template <int U, bool DQ>
struct fold_batch {
    uint4 q[U];
    float am[U];    /* absmax, or (DQ) the nested absmax */
    uint32_t qa[U]; /* DQ: the absmax code */
};

/* Unit u = (slice s, group g) of this block: s is s0 below ub, s0 + 1 from it. */
struct fold_pos {
    int u1, ub, s0, r, c;
};

/* Loads the units uf, uf + NW, ..., uf + NW (U - 1) of this warp; units past the block's
 * range, rows past N and chunks past K load zeros (their table entries are 0 or their sums
 * are never stored). RL: from the slice-major layout, where a unit's 512 code bytes are
 * contiguous and so are consecutive units (the padding is zeros). */
template <int NW, int U, bool DQ, bool RL>
__device__ __forceinline__ void fold_load(fold_batch<U, DQ> &b, const fold_args &a, const fold_pos &ps, int uf) {
#pragma unroll
    for (int i = 0; i < U; i++) {
        const int u = uf + NW * i;
        b.q[i] = make_uint4(0u, 0u, 0u, 0u);
        b.am[i] = 0.0f;
        if (DQ) b.qa[i] = 0u;
        if (RL && u < ps.u1) {
            const int s = u < ps.ub ? ps.s0 : ps.s0 + 1;
            const int n = 8 * (u - s * a.RG) + ps.r, k0 = FOLD_SK * s + 32 * ps.c;
            const int64_t row = (int64_t)s * a.npad + n;
            b.q[i] = fold_ld16(a.fw + row * 64 + 16 * ps.c);
            const int64_t si = (row << a.sc_log2) + (ps.c >> (2 - a.sc_log2));
            if (DQ) {
                b.qa[i] = __ldg(a.fq + si);
                if (n < a.N && k0 < a.K) b.am[i] = __ldg(a.nested + ((((int64_t)n * a.K + k0) >> a.bs_log2) >> 8));
            } else {
                b.am[i] = __ldg(a.fa + si);
            }
        } else if (u < ps.u1) {
            const int s = u < ps.ub ? ps.s0 : ps.s0 + 1;
            const int n = 8 * (u - s * a.RG) + ps.r, k0 = FOLD_SK * s + 32 * ps.c;
            if (n < a.N && k0 < a.K) {
                const int64_t e = (int64_t)n * a.K + k0;
                b.q[i] = fold_ld16(a.w + (e >> 1));
                const int64_t blk = e >> a.bs_log2; /* 32 aligned codes lie in one block (bs >= 32) */
                if (DQ) {
                    b.qa[i] = __ldg(a.qabsmax + blk);
                    b.am[i] = __ldg(a.nested + (blk >> 8));
                } else {
                    b.am[i] = __ldg(a.absmax + blk);
                }
            }
        }
    }
}

/* Σ of the 16 table entries of one lane's 16 code bytes, table T (0: slice s0, 1: s0 + 1). */
template <int T>
__device__ __forceinline__ float fold_dot(const uint4 &q, bool rhi, uint32_t y0, uint32_t y1, const uint32_t (&sel)[4],
                                          const char *tab) {
    /* rows 4..7 of a group take the words pairwise swapped: word j' = j ^ 1 at step j */
    const uint32_t wd[4] = {rhi ? q.y : q.x, rhi ? q.x : q.y, rhi ? q.w : q.z, rhi ? q.z : q.w};
    float s[4];
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint32_t d = fold_prmt(wd[j], (j & 1) ? y1 : y0, sel[i]); /* (e << 8) | 4 bank */
            const float t = *(const float *)(tab + (T * FOLD_TAB_WORDS * 4 + (j >> 1) * 128) + d);
            s[i] = j ? s[i] + t : t;
        }
    return (s[0] + s[1]) + (s[2] + s[3]);
}

template <bool XBF16>
__device__ __forceinline__ void fold_store(void *y, int n, float v, const float *bias) {
    if (bias) v = __fadd_rn(v, __ldg(bias + n));
    if (XBF16) ((__nv_bfloat16 *)y)[n] = __float2bfloat16_rn(v);
    else ((float *)y)[n] = v;
}

/* The 8 row sums of unit u (lane r holds row 8g + r) into the accumulator. */
__device__ __forceinline__ void fold_emit(const fold_args &a, const fold_pos &ps, int u, float v) {
    if (u >= ps.u1) return;
    const int s = u < ps.ub ? ps.s0 : ps.s0 + 1;
    const int n = 8 * (u - s * a.RG) + ps.r;
    if (n < a.N && a.diag != 1) atomicAdd(a.acc + n, v); /* result unused: a RED, no round trip */
}

/* One batch: the next batch's loads go out first, then the U units of cur are summed, their
 * chunk sums combined across the 4 lanes of a row (transposed: 3 shuffles per 4 units) and
 * emitted. Returns false after the warp's last batch. */
template <int NW, int U, bool DQ, bool RL>
__device__ __forceinline__ bool fold_step(fold_batch<U, DQ> &cur, fold_batch<U, DQ> &nxt, const fold_args &a,
                                          const fold_pos &ps, int &uf, uint32_t y0, uint32_t y1,
                                          const uint32_t (&sel)[4], const char *tab, const float *sdyn, float off) {
    if (uf >= ps.u1) return false;
    const int un = uf + NW * U;
    const bool more = un < ps.u1;
    if (more) fold_load<NW, U, DQ, RL>(nxt, a, ps, un);
    const bool rhi = ps.r >= 4;
    float part[U];
#pragma unroll
    for (int i = 0; i < U; i++) {
        const int u = uf + NW * i; /* warp-uniform branches */
        float d = 0.0f;
        if (a.diag == 2) {
            const uint4 &q = cur.q[i];
            d = __uint_as_float(((q.x ^ q.y ^ q.z ^ q.w) & 0x007fffffu) | 0x3f800000u);
        } else if (u < ps.u1) {
            d = u < ps.ub ? fold_dot<0>(cur.q[i], rhi, y0, y1, sel, tab) : fold_dot<1>(cur.q[i], rhi, y0, y1, sel, tab);
        }
        /* QLoRA double quant: dynamic_map[q] * nested + offset, as msbnb_double_dequant_absmax */
        const float am = DQ ? __fadd_rn(__fmul_rn(sdyn[cur.qa[i]], cur.am[i]), off) : cur.am[i];
        part[i] = d * am;
    }
    const unsigned full = 0xffffffffu;
    const bool chi = (ps.c & 2) != 0, clo = (ps.c & 1) != 0;
    if (U == 2) {
        float k = (chi ? part[1] : part[0]) + __shfl_xor_sync(full, chi ? part[0] : part[1], 16);
        k += __shfl_xor_sync(full, k, 8);
        if (!clo) fold_emit(a, ps, uf + NW * (ps.c >> 1), k); /* lanes c = 0, 2 hold units 0, 1 */
    } else {
#pragma unroll
        for (int qd = 0; qd < U / 4; qd++) {
            const float p0 = part[4 * qd], p1 = part[4 * qd + 1], p2 = part[4 * qd + 2], p3 = part[4 * qd + 3];
            float k0 = chi ? p2 : p0, k1 = chi ? p3 : p1; /* keep units 2 chi, 2 chi + 1 */
            k0 += __shfl_xor_sync(full, chi ? p0 : p2, 16);
            k1 += __shfl_xor_sync(full, chi ? p1 : p3, 16);
            float k = clo ? k1 : k0; /* keep unit 2 chi + clo = c */
            k += __shfl_xor_sync(full, clo ? k0 : k1, 8);
            fold_emit(a, ps, uf + NW * (4 * qd + ps.c), k);
        }
    }
    uf = un;
    return more;
}

template <int NW, int U, bool DQ, bool XBF16, bool RL>
__global__ void __launch_bounds__(32 * NW, 1) gemv4_fold(fold_args a, msbnb__code16 code, msbnb__code256 dyn) {
    extern __shared__ __align__(16) float fsm[]; /* 2 tables [256][64], then (DQ) the dynamic map */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int u0 = (int)((int64_t)blockIdx.x * a.W / gridDim.x);
    const int u1 = (int)((int64_t)(blockIdx.x + 1) * a.W / gridDim.x);
    if (u0 >= u1) return;
    msbnb__pdl_launch_next(); /* the next kernel may start as we retire */
    fold_pos ps;
    ps.u1 = u1;
    ps.s0 = u0 / a.RG;
    ps.ub = (ps.s0 + 1) * a.RG; /* <= W: no overflow */
    ps.r = lane & 7;
    ps.c = lane >> 3;
    /* PRMT operands: byte i of y0 / y1 = 4 · bank at step i for even / odd j; sel[i] puts it in
     * byte 0, code byte v = (i + r) % 4 in byte 1 and zeros (sign of a byte < 128) above */
    uint32_t sel[4], y0 = 0, y1 = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const uint32_t v = (uint32_t)(i + ps.r) & 3u, rh = (uint32_t)ps.r >> 2;
        sel[i] = (4u + i) | (v << 4) | ((12u + i) << 8) | ((12u + i) << 12);
        y0 |= (4u * ((uint32_t)ps.c + 4u * v + 16u * rh)) << (8 * i);
        y1 |= (4u * ((uint32_t)ps.c + 4u * v + 16u * (rh ^ 1u))) << (8 * i);
    }
    fold_batch<U, DQ> b0, b1;
    int uf = u0 + warp;
    fold_load<NW, U, DQ, RL>(b0, a, ps, uf); /* weights only: no kernel writes them (PDL) */
    msbnb__pdl_wait(); /* x, acc, cnt: after the kernel before */
    /* Tables: warp w fills, for jh = w % 2, the byte values e0 .. e0 + 512 / NW - 1 of both
     * slices; lane = bank, so every store of a warp is 32 consecutive words. */
    {
        const int ntab = u1 > ps.ub ? 2 : 1;
        const int bank = lane, jh = warp & 1, e0 = (warp >> 1) * (512 / NW);
        const int p = 16 * (bank & 3) + 4 * (2 * jh + (bank >> 4)) + ((bank >> 2) & 3);
        for (int t = 0; t < ntab; t++) {
            const int k = FOLD_SK * (ps.s0 + t) + 2 * p;
            float x0 = 0.0f, x1 = 0.0f; /* pairs past K: a zero table */
            if (k < a.K) {
                x0 = fold_ldx<XBF16>(a.x, k);
                x1 = fold_ldx<XBF16>(a.x, k + 1);
            }
            float lo[16];
#pragma unroll
            for (int l = 0; l < 16; l++) lo[l] = __fmul_rn(code.v[l], x1);
            float *row = fsm + t * FOLD_TAB_WORDS + jh * 32 + bank;
#pragma unroll
            for (int hh = 0; hh < 512 / NW / 16; hh++) {
                const int h = (e0 >> 4) + hh;
                float ch = code.v[0]; /* code.v[h] by selects: a run-time index would copy code to local memory */
#pragma unroll
                for (int l = 1; l < 16; l++) ch = h == l ? code.v[l] : ch;
#pragma unroll
                for (int l = 0; l < 16; l++) row[(16 * h + l) * 64] = fmaf(ch, x0, lo[l]);
            }
        }
    }
    float *sdyn = fsm + 2 * FOLD_TAB_WORDS;
    if (DQ)
        for (int i = tid; i < 256; i += 32 * NW) sdyn[i] = dyn.v[i];
    __syncthreads();
    const float off = DQ ? __ldg(a.offset) : 0.0f;
    const char *tab = (const char *)fsm;
    for (;;) { /* ping-pong between the two batches (no register copies) */
        if (!fold_step<NW, U, DQ, RL>(b0, b1, a, ps, uf, y0, y1, sel, tab, sdyn, off)) break;
        if (!fold_step<NW, U, DQ, RL>(b1, b0, a, ps, uf, y0, y1, sel, tab, sdyn, off)) break;
    }
    /* Count this warp's units; the last of the S contributions to a row group finishes it.
     * Each lane's REDs are ordered before the counter by its fence and the warp barrier
     * (CUDA programming guide, "Memory fence functions": the threadFenceReduction pattern). */
    __threadfence();
    __syncwarp();
    for (int u = u0 + warp + NW * lane; u < u1; u += NW * 32) {
        const int s = u < ps.ub ? ps.s0 : ps.s0 + 1, g = u - s * a.RG;
        if (atomicAdd(a.cnt + g, 1u) == (unsigned)a.S - 1u) {
            __threadfence();
            float v[8];
#pragma unroll
            for (int i = 0; i < 8; i++) v[i] = 8 * g + i < a.N ? __ldcg(a.acc + 8 * g + i) : 0.0f;
#pragma unroll
            for (int i = 0; i < 8; i++)
                if (8 * g + i < a.N) {
                    __stcg(a.acc + 8 * g + i, 0.0f);
                    fold_store<XBF16>(a.y, 8 * g + i, v[i], a.bias);
                }
            a.cnt[g] = 0u;
        }
    }
}

/* ---------------------------------------------------------------- host side */

/* Launch shapes (warps per block x units per batch): 32x2 by default (the fastest of the
 * three at 4 of the 6 measured (shape, format) points on the H200, bench/RESULTS.md);
 * MSBNB_CUDA_FOLD_CFG = 16x4 or 16x8 for measurements. */
static int fold_cfg(void) {
    const char *e = getenv("MSBNB_CUDA_FOLD_CFG");
    if (!e || !*e) return 2;
    if (!strcmp(e, "16x4")) return 0;
    if (!strcmp(e, "16x8")) return 1;
    return 2;
}

/* Default: only with the slice-major layout and K <= N. On bnb's row-major packing the kernel
 * reads 64 bytes per row per block and measured slower than the FFMA kernels; with the
 * layout it measured 12 % (NF4) and 17 % (NF4 + double quant) faster at (4096, 14336), but
 * not at (14336, 4096), where the chunked FFMA kernel stays faster (H200, bench/RESULTS.md). */
extern "C" bool msbnb__cuda_gemv4_fold_applies(int64_t N, int64_t K, const msbnb_cuda_weight4 *w, bool has_layout) {
    const char *e = getenv("MSBNB_CUDA_GEMV4_FOLD"); /* 0: never, 1: wherever it applies */
    if (e && e[0] == '0') return false;
    if (K % 32 || ((uintptr_t)w->packed & 15) || w->blocksize < 32) return false;
    const int64_t S = (K + FOLD_SK - 1) / FOLD_SK, RG = (N + 7) / 8;
    if (N > INT_MAX - 8 || K > INT_MAX - FOLD_SK || S * RG > INT_MAX) return false;
    if (e && e[0] == '1') return true;
    return has_layout && K <= N && N * K >= ((int64_t)1 << 22);
}

extern "C" msbnb_status msbnb__cuda_fold_layout_upload(void **arena, msbnb__fold_layout *fl, const uint8_t *packed,
                                                      const float *absmax, const uint8_t *qabsmax, int64_t N,
                                                      int64_t K, int64_t bs) {
    *arena = NULL;
    int bs_log2 = 0;
    while ((1LL << bs_log2) < bs) bs_log2++;
    if (K % 32 || bs < 32 || (1LL << bs_log2) != bs || (!absmax && !qabsmax))
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "%s: needs K %% 32 == 0 and a power-of-two block >= 32", __func__);
    const int64_t S = (K + FOLD_SK - 1) / FOLD_SK, npad = (N + 7) / 8 * 8;
    /* scales per (slice, row): one per block when slices are block-aligned (K % 128 == 0), else
     * one per 32-code chunk (a chunk never straddles two blocks) */
    const int sc_log2 = K % FOLD_SK ? 2 : bs_log2 >= 7 ? 0 : 7 - bs_log2;
    const int64_t nsc = S * npad << sc_log2, wbytes = S * npad * 64;
    const size_t sc_bytes = (size_t)nsc * (qabsmax ? 1 : 4), total = (size_t)wbytes + (sc_bytes + 255) / 256 * 256;
    uint8_t *h = (uint8_t *)calloc(1, total);
    if (!h) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "%s: out of memory", __func__);
    uint8_t *hw = h, *hq = h + wbytes;
    float *ha = (float *)(h + wbytes);
    for (int64_t n = 0; n < N; n++)
        for (int64_t s = 0; s < S; s++) {
            const int64_t b0 = 64 * s, nb = K / 2 - b0 < 64 ? K / 2 - b0 : 64;
            memcpy(hw + (s * npad + n) * 64, packed + n * (K / 2) + b0, (size_t)nb);
            for (int j = 0; j < (1 << sc_log2); j++) {
                const int64_t k = FOLD_SK * s + 32 * ((int64_t)j << (2 - sc_log2)); /* first chunk of scale j */
                if (k >= K) continue;
                const int64_t blk = (n * K + k) >> bs_log2, i = ((s * npad + n) << sc_log2) + j;
                if (qabsmax) hq[i] = qabsmax[blk];
                else ha[i] = absmax[blk];
            }
        }
    msbnb_status st = msbnb_cuda_malloc(arena, total);
    if (st == MSBNB_OK) st = msbnb_cuda_memcpy(*arena, h, total, MSBNB_CUDA_HOST_TO_DEVICE);
    free(h);
    if (st != MSBNB_OK) {
        cudaFree(*arena);
        *arena = NULL;
        return st;
    }
    fl->w = (const uint8_t *)*arena;
    fl->absmax = qabsmax ? NULL : (const float *)((const uint8_t *)*arena + wbytes);
    fl->qabsmax = qabsmax ? (const uint8_t *)*arena + wbytes : NULL;
    fl->npad = npad;
    fl->sc_log2 = sc_log2;
    return MSBNB_OK;
}

template <int NW, int U, bool DQ, bool XBF16, bool RL>
static cudaError_t fold_launch_t(const fold_args &a, const msbnb__code16 &code, const msbnb__code256 &dyn,
                                 unsigned grid, bool pdl) {
    void (*kern)(fold_args, msbnb__code16, msbnb__code256) = gemv4_fold<NW, U, DQ, XBF16, RL>;
    const int smem = (2 * FOLD_TAB_WORDS + (DQ ? 256 : 0)) * 4;
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess) return e;
    return msbnb__launch(kern, dim3(grid), dim3(32 * NW), (size_t)smem, pdl, a, code, dyn);
}

template <int NW, int U, bool RL>
static cudaError_t fold_launch_l(const fold_args &a, bool dq, bool bf, const msbnb__code16 &code,
                                 const msbnb__code256 &dyn, unsigned grid, bool pdl) {
    if (dq) return bf ? fold_launch_t<NW, U, true, true, RL>(a, code, dyn, grid, pdl)
                      : fold_launch_t<NW, U, true, false, RL>(a, code, dyn, grid, pdl);
    return bf ? fold_launch_t<NW, U, false, true, RL>(a, code, dyn, grid, pdl)
              : fold_launch_t<NW, U, false, false, RL>(a, code, dyn, grid, pdl);
}

template <int NW, int U>
static cudaError_t fold_launch_c(const fold_args &a, bool rl, bool dq, bool bf, const msbnb__code16 &code,
                                 const msbnb__code256 &dyn, unsigned grid, bool pdl) {
    return rl ? fold_launch_l<NW, U, true>(a, dq, bf, code, dyn, grid, pdl)
              : fold_launch_l<NW, U, false>(a, dq, bf, code, dyn, grid, pdl);
}

extern "C" msbnb_status msbnb__cuda_gemv4_fold(msbnb_cuda_ctx *ctx, void *y, const void *x, bool xbf16,
                                              const msbnb_cuda_weight4 *w, const float *codev,
                                              const msbnb__fold_layout *fl, int bs_log2, const float *bias,
                                              int64_t N, int64_t K, bool pdl) {
    fold_args a;
    memset(&a, 0, sizeof a);
    a.y = y;
    a.x = x;
    a.w = w->packed;
    a.absmax = w->absmax;
    a.qabsmax = w->qabsmax;
    a.nested = w->nested_absmax;
    a.offset = w->offset;
    a.bias = bias;
    a.N = (int)N;
    a.K = (int)K;
    a.bs_log2 = bs_log2;
    a.S = (int)((K + FOLD_SK - 1) / FOLD_SK);
    a.RG = (int)((N + 7) / 8);
    a.W = a.S * a.RG;
    const char *be = getenv("MSBNB_CUDA_FOLD_BNB"), *de = getenv("MSBNB_CUDA_FOLD_DIAG");
    const bool rl = fl && !(be && be[0] == '1'); /* MSBNB_CUDA_FOLD_BNB=1: bnb's packing even with the layout */
    if (rl) {
        a.fw = fl->w;
        a.fa = fl->absmax;
        a.fq = fl->qabsmax;
        a.npad = fl->npad;
        a.sc_log2 = fl->sc_log2;
    }
    a.diag = de ? atoi(de) : 0;
    MSBNB_TRY(msbnb__cuda_ctx_fold_scratch(ctx, N, &a.acc, &a.cnt));
    int dev = 0, sms = 0;
    MSBNB_CUDA_TRY(cudaGetDevice(&dev));
    MSBNB_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    /* one block per SM (128 KB of tables), at least one per slice: a block then spans <= 2 slices */
    int64_t grid = sms > a.S ? sms : a.S;
    if (grid > a.W) grid = a.W;
    pdl = pdl && msbnb__pdl_ok();
    msbnb__code16 code;
    memcpy(code.v, codev, sizeof code.v);
    msbnb__code256 dyn;
    memcpy(dyn.v, msbnb__dynamic_map, sizeof dyn.v);
    const bool dq = w->double_quant != 0;
    cudaError_t e;
    switch (fold_cfg()) {
    case 0: e = fold_launch_c<16, 4>(a, rl, dq, xbf16, code, dyn, (unsigned)grid, pdl); break;
    case 1: e = fold_launch_c<16, 8>(a, rl, dq, xbf16, code, dyn, (unsigned)grid, pdl); break;
    default: e = fold_launch_c<32, 2>(a, rl, dq, xbf16, code, dyn, (unsigned)grid, pdl); break;
    }
    MSBNB_CUDA_TRY(e);
    MSBNB_CUDA_LAUNCHED();
    return MSBNB_OK;
}
