/* AdamW steps on the GPU, f32 states and blockwise 8-bit states.
 *
 * AdamW (Loshchilov & Hutter, arXiv:1711.05101), torch's formulation, in the CPU
 * optimizer's exact expression order (no FMA contraction, so results are bit-identical):
 *   g' = g · grad_scale;  m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'²
 *   p = p · (1 - lr wd) - (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps),
 *   bc1 = 1 - b1^t, bc2 = 1 - b2^t (double, rounded to float).
 * 8-bit (Dettmers et al., arXiv:2110.02861; bitsandbytes AdamW8bit): m and v as 8-bit
 * codes with an f32 absmax per block of 256, m on the signed dynamic map, v on the unsigned
 * one. One warp per block: dequantize (code · absmax), update, new absmax = max |.|,
 * re-quantize with the foundation's 8-bit rule (rcp.approx of absmax, bnb's binary search)
 * — fused in one pass, 16 bytes of traffic per parameter instead of f32 AdamW's 28.
 * The fast kernel (sorted codes, aligned buffers) replaces bnb's 8-level binary search by an
 * exact equivalent: a shared-memory table indexed by the float's exponent and top mantissa
 * bits gives the search's answer in one lookup and one integer compare (see q8t_code). */
#include "cuda/cuda_internal.cuh"
extern "C" {
#include "cuda/cuda_testhooks.h"
#include "quant/codebooks.h"
}

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ADAM_Q8_BLOCK 256

extern "C" msbnb_cuda_adamw msbnb_cuda_adamw_default(void) {
    msbnb_cuda_adamw h;
    h.lr = 1e-3f;
    h.beta1 = 0.9f;
    h.beta2 = 0.999f;
    h.eps = 1e-8f;
    h.weight_decay = 0.01f;
    h.grad_scale = 1.0f;
    h.step = 1;
    return h;
}

struct adam_k {
    float b1, b2, eps, gm, decay, stepsize, bc2_sqrt;
};

static msbnb_status make_k(const msbnb_cuda_adamw *h, adam_k *k, const char *fn) {
    if (h->step < 1) return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: step must be >= 1 (got %lld)", fn, (long long)h->step);
    if (!(h->beta1 >= 0.0f && h->beta1 < 1.0f) || !(h->beta2 >= 0.0f && h->beta2 < 1.0f))
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: betas must be in [0, 1)", fn);
    if (!(h->lr >= 0.0f) || !isfinite(h->lr) || !(h->eps > 0.0f) || !isfinite(h->weight_decay) ||
        !isfinite(h->grad_scale))
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: lr, eps, weight_decay, grad_scale must be finite "
                                                       "(lr >= 0, eps > 0)", fn);
    float bc1 = (float)(1.0 - pow(h->beta1, (double)h->step));
    k->b1 = h->beta1;
    k->b2 = h->beta2;
    k->eps = h->eps;
    k->gm = h->grad_scale;
    k->decay = 1.0f - h->lr * h->weight_decay;
    k->stepsize = h->lr / bc1;
    k->bc2_sqrt = (float)sqrt(1.0 - pow(h->beta2, (double)h->step));
    return MSBNB_OK;
}

/* One element: updates m, v in place and returns the new parameter. */
__device__ __forceinline__ float adam1(float p, float &m, float &v, float g, const adam_k &k) {
    float gi = __fmul_rn(g, k.gm);
    m = __fadd_rn(__fmul_rn(k.b1, m), __fmul_rn(__fsub_rn(1.0f, k.b1), gi));
    v = __fadd_rn(__fmul_rn(k.b2, v), __fmul_rn(__fmul_rn(__fsub_rn(1.0f, k.b2), gi), gi));
    float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), k.bc2_sqrt), k.eps);
    return __fsub_rn(__fmul_rn(p, k.decay), __fdiv_rn(__fmul_rn(k.stepsize, m), denom));
}

__global__ void adamw_f32_kernel(float *p, float *m, float *v, const float *g, int64_t n, adam_k k) {
    const int64_t n4 = n / 4, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += stride) {
        float4 pp = ((float4 *)p)[i], mm = ((float4 *)m)[i], vv = ((float4 *)v)[i], gg = ((const float4 *)g)[i];
        pp.x = adam1(pp.x, mm.x, vv.x, gg.x, k);
        pp.y = adam1(pp.y, mm.y, vv.y, gg.y, k);
        pp.z = adam1(pp.z, mm.z, vv.z, gg.z, k);
        pp.w = adam1(pp.w, mm.w, vv.w, gg.w, k);
        ((float4 *)p)[i] = pp;
        ((float4 *)m)[i] = mm;
        ((float4 *)v)[i] = vv;
    }
    for (int64_t i = n4 * 4 + (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        p[i] = adam1(p[i], m[i], v[i], g[i], k);
}

#define Q8_WARPS 8
/* One block of `len` <= 256 elements by one warp: lane L holds elements L, L + 32, ...
 * (coalesced). FULL (len == 256) has no per-element guards, so the 16 independent
 * binary searches of a lane interleave. */
template <bool FULL>
__device__ __forceinline__ void adam8_block(float *p, uint8_t *qm, float *am, uint8_t *qv, float *av, const float *g,
                                            int64_t b, int len, int lane, const adam_k &k, const float *sm,
                                            const float *sv) {
    const int64_t s = b * ADAM_Q8_BLOCK;
    const float am0 = am[b], av0 = av[b];
    float mv[8], vv[8];
    float mmax = 0.0f, vmax = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        int i = lane + 32 * j;
        if (FULL || i < len) {
            float mi = __fmul_rn(sm[qm[s + i]], am0), vi = __fmul_rn(sv[qv[s + i]], av0);
            p[s + i] = adam1(p[s + i], mi, vi, g[s + i], k);
            mv[j] = mi;
            vv[j] = vi;
            mmax = fmaxf(mmax, fabsf(mi));
            vmax = fmaxf(vmax, fabsf(vi));
        }
    }
    mmax = msbnb__warp_max(mmax);
    vmax = msbnb__warp_max(vmax);
    if (lane == 0) {
        am[b] = mmax;
        av[b] = vmax;
    }
    const float im = msbnb__rcp_approx_ftz(mmax), iv = msbnb__rcp_approx_ftz(vmax);
#pragma unroll
    for (int j = 0; j < 8; j++) {
        int i = lane + 32 * j;
        if (FULL || i < len) {
            qm[s + i] = msbnb__dcode8_of(sm, msbnb__dmul_ftz(mv[j], im));
            qv[s + i] = msbnb__dcode8_of(sv, msbnb__dmul_ftz(vv[j], iv));
        }
    }
}

__global__ void __launch_bounds__(32 * Q8_WARPS) adamw_8bit_kernel(float *p, uint8_t *qm, float *am, uint8_t *qv,
                                                                   float *av, const float *g, int64_t n, adam_k k,
                                                                   msbnb__code256 cm, msbnb__code256 cv) {
    __shared__ float sm[256], sv[256];
    for (int t = threadIdx.x; t < 256; t += blockDim.x) {
        sm[t] = cm.v[t];
        sv[t] = cv.v[t];
    }
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int64_t nb = (n + ADAM_Q8_BLOCK - 1) / ADAM_Q8_BLOCK;
    for (int64_t b = (int64_t)blockIdx.x * Q8_WARPS + (threadIdx.x >> 5); b < nb; b += (int64_t)gridDim.x * Q8_WARPS) {
        const int64_t s = b * ADAM_Q8_BLOCK;
        if (n - s >= ADAM_Q8_BLOCK) adam8_block<true>(p, qm, am, qv, av, g, b, ADAM_Q8_BLOCK, lane, k, sm, sv);
        else adam8_block<false>(p, qm, am, qv, av, g, b, (int)(n - s), lane, k, sm, sv);
    }
}


/* ---------------------------------------------------------------- exact fast 8-bit coder
 *
 * bnb's dQuantize<0> search (msbnb__code8_of) over a sorted code c[0..255] compares x only
 * with the odd entries (its 7 pivots) and then with c[P] and the two midpoints around it;
 * it is a monotone step function of x (within one pivot interval the two midpoint tests
 * move it by at most one either way, and the interval ranges [P-1, P+1] only touch), so
 * code(x) = #{k : x >= thr[k]} for the 255 thresholds thr[k] = min{x : code(x) >= k}. The
 * host finds them exactly (q8t_thresholds): code can only change where a comparison flips,
 * i.e. at next_up(c) for the "x > c" constants (entries, upper midpoints) and at b for the
 * "x < b" ones (lower midpoints); evaluating the reference search once per such point
 * gives the step function and checks it is monotone (same trick as src/nn/adamw8_kernels.h).
 * The kernel looks codes up in a bucket table (q8t_code): |x|'s sign, exponent (2^-23 ..
 * 2^0) and top 7 mantissa bits pick an entry holding the code at the bucket's lowest x and
 * the low 16 bits of the one threshold inside it (0x10000: none), compared as integers, as
 * the CPU's SIMD tiers do. A bucket with two thresholds, or one inside the clamped bucket of
 * |x| < 2^-23, makes the block fall back to the search (ok = 0: not the case for bnb's
 * signed and unsigned maps). Valid for finite |x| < 2, which holds when the block absmax is
 * a normal float (x = m · rcp(absmax)); bucket 0 holds no threshold, so subnormal x need
 * not be flushed first (ftz(x) and x get the same code). */
#define Q8T_E0 104 /* biased exponent of 2^-23, below the dynamic maps' smallest entries (~3e-7) */
#define Q8T_NB ((127 - Q8T_E0 + 1) << 7)

struct q8t_tab {
    uint32_t ent[2 * Q8T_NB]; /* code(bucket's lowest x) << 17 | low 16 bits of its threshold (0x10000: none) */
};

__device__ __forceinline__ int q8t_count_le(const float *thr, float x) { /* #{k < 255 : thr[k] <= x} */
    int lo = 0, hi = 255;
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        if (thr[mid] <= x) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* The whole block fills t from the thresholds thr[0..254] (ascending); returns (to every
 * thread) whether every bucket qualified. Ends with a barrier. */
__device__ bool q8t_build(q8t_tab *t, const float *thr) {
    int bad = 0;
    for (int i = threadIdx.x; i < 2 * Q8T_NB; i += blockDim.x) {
        const int b = i % Q8T_NB;
        const uint32_t g = (uint32_t)(Q8T_E0 << 7) + (uint32_t)b;
        const uint32_t alo = b == 0 ? 0u : g << 16, ahi = (g << 16) | 0xffffu;
        const bool neg = i >= Q8T_NB;
        const float xlo = neg ? -__uint_as_float(ahi) : __uint_as_float(alo);
        const float xhi = neg ? -__uint_as_float(alo) : __uint_as_float(ahi);
        const int base = q8t_count_le(thr, xlo), inside = q8t_count_le(thr, xhi) - base;
        uint32_t e = (uint32_t)base << 17 | 0x10000u;
        if (inside == 1 && b != 0) {
            const uint32_t tb = __float_as_uint(thr[base]) & 0xffffu;
            e = (uint32_t)base << 17 | (neg ? 0xffffu - tb : tb);
        } else if (inside != 0) {
            bad = 1;
        }
        t->ent[i] = e;
    }
    return !__syncthreads_or(bad);
}

/* == msbnb__dcode8_of(c, msbnb__dmul_ftz-flushed x) for finite |x| < 2 (exhaustively tested). */
__device__ __forceinline__ uint32_t q8t_code(const q8t_tab *t, float x) {
    const uint32_t u = __float_as_uint(x);
    const uint32_t s = (uint32_t)((int32_t)u >> 31); /* all ones for x < 0 */
    const int b = max((int)((u & 0x7fffffffu) >> 16) - (Q8T_E0 << 7), 0);
    const uint32_t e = t->ent[b + (int)(s & Q8T_NB)];
    return (e >> 17) + (((u ^ s) & 0xffffu) >= (e & 0x1ffffu));
}

/* Host: the search's thresholds for a sorted finite code (q8f_usable); false if the search
 * is not a monotone step function (then the search kernel runs). */
static int cmp_f(const void *a, const void *b);
static bool q8t_thresholds(const float *c, float *thr) {
    float cand[256 + 128 + 128];
    int n = 0;
    cand[n++] = -INFINITY;
    for (int i = 0; i < 256; i++) cand[n++] = nextafterf(c[i], INFINITY);
    for (int P = 0; P < 256; P += 2) {
        cand[n++] = nextafterf((c[P + 1] + c[P]) * 0.5f, INFINITY); /* x > mid(upper, val) */
        if (P > 0) cand[n++] = (c[P - 1] + c[P]) * 0.5f;             /* x < mid(lower, val) */
    }
    qsort(cand, (size_t)n, sizeof *cand, cmp_f);
    int k = 1, prev = -1;
    for (int i = 0; i < n; i++) {
        const int f = msbnb__code8_of(c, cand[i]);
        if (f < prev) return false;
        prev = f;
        for (; k <= f && k < 256; k++) thr[k - 1] = cand[i];
    }
    for (; k < 256; k++) thr[k - 1] = INFINITY;
    thr[255] = INFINITY;
    return true;
}

/* Host: may the table coder stand in for the search on this code? */
static bool q8f_usable(const float *c) {
    for (int i = 0; i < 256; i++) {
        if (!(fabsf(c[i]) <= 1e38f)) return false; /* NaN, Inf, or a neighbour sum that could overflow */
        if (i && !(c[i - 1] <= c[i])) return false;
    }
    return true;
}

struct adam8_smem {
    float dm[256], dv[256]; /* dequantization codes */
    float tm[256], tv[256]; /* thresholds */
    q8t_tab qm, qv;
};

/* Blocks of 256 (full ones) by one warp each, lane L holding elements 4L..4L+3 and
 * 128+4L..128+4L+3 (every load and store a coalesced 16-byte (p, g) or 4-byte (codes)
 * access); the next block's loads are issued before the current one is computed. The
 * partial last block goes through the per-element path (adam8_block<false>). */
struct adam8_in {
    float4 p[2], g[2];
    uint32_t qm[2], qv[2];
    float am, av;
};

__device__ __forceinline__ void adam8_load(adam8_in &r, const float *p, const uint8_t *qm, const float *am,
                                           const uint8_t *qv, const float *av, const float *g, int64_t b, int lane) {
    const int64_t s = b * ADAM_Q8_BLOCK + 4 * lane;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        r.p[h] = *(const float4 *)(p + s + 128 * h);
        r.g[h] = __ldcs((const float4 *)(g + s + 128 * h));
        r.qm[h] = *(const uint32_t *)(qm + s + 128 * h);
        r.qv[h] = *(const uint32_t *)(qv + s + 128 * h);
    }
    r.am = am[b];
    r.av = av[b];
}

/* absmax for which the table coder applies: x = m · rcp(absmax) is then finite, |x| < 2 */
__device__ __forceinline__ bool q8t_absmax_ok(float a) { return a >= 1.17549435e-38f && a <= 3.40282347e38f; }

struct code256x2 {
    msbnb__code256 cm, cv, tm, tv; /* codes and thresholds (kernel parameters, 4 KB) */
};

/* MINB: blocks per SM the registers must allow (3: 80 registers, 4: 64) */
template <int MINB>
__global__ void __launch_bounds__(32 * Q8_WARPS, MINB)
    adamw_8bit_fast(float *p, uint8_t *qm, float *am, uint8_t *qv, float *av, const float *g, int64_t n, adam_k k,
                    const __grid_constant__ code256x2 cc, int pf) {
    extern __shared__ __align__(16) unsigned char adam8_raw[];
    adam8_smem &S = *(adam8_smem *)adam8_raw;
    for (int t = threadIdx.x; t < 256; t += blockDim.x) {
        S.dm[t] = cc.cm.v[t];
        S.dv[t] = cc.cv.v[t];
        S.tm[t] = cc.tm.v[t];
        S.tv[t] = cc.tv.v[t];
    }
    __syncthreads();
    const bool tab_ok = q8t_build(&S.qm, S.tm) & q8t_build(&S.qv, S.tv);
    const int lane = threadIdx.x & 31;
    const int64_t nfull = n / ADAM_Q8_BLOCK, stride = (int64_t)gridDim.x * Q8_WARPS;
    const int64_t b0 = (int64_t)blockIdx.x * Q8_WARPS + (threadIdx.x >> 5);
    adam8_in cur, nxt;
    if (b0 < nfull) adam8_load(cur, p, qm, am, qv, av, g, b0, lane);
    for (int64_t b = b0; b < nfull; b += stride) {
        if (b + stride < nfull) adam8_load(nxt, p, qm, am, qv, av, g, b + stride, lane);
        if (pf && lane < 20 && b + pf * stride < nfull) { /* block b + pf strides ahead into L2 */
            const int64_t s2 = (b + pf * stride) * ADAM_Q8_BLOCK;
            msbnb__prefetch_l2(lane < 8    ? (const void *)(p + s2 + 32 * lane)
                               : lane < 16 ? (const void *)(g + s2 + 32 * (lane - 8))
                               : lane < 18 ? (const void *)(qm + s2 + 128 * (lane - 16))
                                           : (const void *)(qv + s2 + 128 * (lane - 18)));
        }
        float pv[8], mv[8], vv[8];
        float mmax = 0.0f, vmax = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const int h = j >> 2, e = j & 3;
            const float4 pp = cur.p[h], gg = cur.g[h];
            const float pj = e == 0 ? pp.x : e == 1 ? pp.y : e == 2 ? pp.z : pp.w;
            const float gj = e == 0 ? gg.x : e == 1 ? gg.y : e == 2 ? gg.z : gg.w;
            float mi = __fmul_rn(S.dm[(cur.qm[h] >> (8 * e)) & 255u], cur.am);
            float vi = __fmul_rn(S.dv[(cur.qv[h] >> (8 * e)) & 255u], cur.av);
            pv[j] = adam1(pj, mi, vi, gj, k);
            mv[j] = mi;
            vv[j] = vi;
            mmax = fmaxf(mmax, fabsf(mi));
            vmax = fmaxf(vmax, fabsf(vi));
        }
        mmax = msbnb__warp_max(mmax);
        vmax = msbnb__warp_max(vmax);
        if (lane == 0) {
            am[b] = mmax;
            av[b] = vmax;
        }
        const float im = msbnb__rcp_approx_ftz(mmax), iv = msbnb__rcp_approx_ftz(vmax);
        const int64_t s = b * ADAM_Q8_BLOCK + 4 * lane;
        const bool fast = tab_ok && q8t_absmax_ok(mmax) && q8t_absmax_ok(vmax); /* warp-uniform */
#pragma unroll
        for (int h = 0; h < 2; h++) {
            uint32_t cmw = 0, cvw = 0;
            if (fast) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    cmw |= q8t_code(&S.qm, __fmul_rn(mv[4 * h + e], im)) << (8 * e);
                    cvw |= q8t_code(&S.qv, __fmul_rn(vv[4 * h + e], iv)) << (8 * e);
                }
            } else {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    cmw |= (uint32_t)msbnb__dcode8_of(S.dm, msbnb__dmul_ftz(mv[4 * h + e], im)) << (8 * e);
                    cvw |= (uint32_t)msbnb__dcode8_of(S.dv, msbnb__dmul_ftz(vv[4 * h + e], iv)) << (8 * e);
                }
            }
            __stcs((float4 *)(p + s + 128 * h), make_float4(pv[4 * h], pv[4 * h + 1], pv[4 * h + 2], pv[4 * h + 3]));
            *(uint32_t *)(qm + s + 128 * h) = cmw;
            *(uint32_t *)(qv + s + 128 * h) = cvw;
        }
        cur = nxt;
    }
    /* the partial last block, by the warp that would have had it next */
    const int64_t tail = nfull;
    if (n % ADAM_Q8_BLOCK && b0 == tail % stride)
        adam8_block<false>(p, qm, am, qv, av, g, tail, (int)(n - tail * ADAM_Q8_BLOCK), lane, k, S.dm, S.dv);
}

/* The same step with a pair of warps per block of 256: warp 2q + h takes elements
 * 128 h + 4 L .. + 3 (lane L), so a thread holds 4 elements and half the registers; the
 * pair combines its two absmax through shared memory (double-buffered by iteration parity)
 * and a 64-thread named barrier. More warps fit per SM (4 blocks at <= 64 registers). */
template <int MINB>
__global__ void __launch_bounds__(32 * Q8_WARPS, MINB)
    adamw_8bit_half(float *p, uint8_t *qm, float *am, uint8_t *qv, float *av, const float *g, int64_t n, adam_k k,
                    const __grid_constant__ code256x2 cc, int) {
    extern __shared__ __align__(16) unsigned char adam8_raw[];
    adam8_smem &S = *(adam8_smem *)adam8_raw;
    __shared__ float xch[2][Q8_WARPS][2];
    for (int t = threadIdx.x; t < 256; t += blockDim.x) {
        S.dm[t] = cc.cm.v[t];
        S.dv[t] = cc.cv.v[t];
        S.tm[t] = cc.tm.v[t];
        S.tv[t] = cc.tv.v[t];
    }
    __syncthreads();
    const bool tab_ok = q8t_build(&S.qm, S.tm) & q8t_build(&S.qv, S.tv);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, h = warp & 1, pair = warp >> 1;
    const int64_t nfull = n / ADAM_Q8_BLOCK, stride = (int64_t)gridDim.x * (Q8_WARPS / 2);
    const int64_t b0 = (int64_t)blockIdx.x * (Q8_WARPS / 2) + pair;
    struct in4 {
        float4 p, g;
        uint32_t qm, qv;
        float am, av;
    } cur, nxt;
    auto load = [&](in4 &r, int64_t b) {
        const int64_t s = b * ADAM_Q8_BLOCK + 128 * h + 4 * lane;
        r.p = *(const float4 *)(p + s);
        r.g = __ldcs((const float4 *)(g + s));
        r.qm = *(const uint32_t *)(qm + s);
        r.qv = *(const uint32_t *)(qv + s);
        r.am = am[b];
        r.av = av[b];
    };
    if (b0 < nfull) load(cur, b0);
    int par = 0;
    for (int64_t b = b0; b < nfull; b += stride, par ^= 1) {
        if (b + stride < nfull) load(nxt, b + stride);
        float pv[4], mv[4], vv[4];
        float mmax = 0.0f, vmax = 0.0f;
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float pj = e == 0 ? cur.p.x : e == 1 ? cur.p.y : e == 2 ? cur.p.z : cur.p.w;
            const float gj = e == 0 ? cur.g.x : e == 1 ? cur.g.y : e == 2 ? cur.g.z : cur.g.w;
            float mi = __fmul_rn(S.dm[(cur.qm >> (8 * e)) & 255u], cur.am);
            float vi = __fmul_rn(S.dv[(cur.qv >> (8 * e)) & 255u], cur.av);
            pv[e] = adam1(pj, mi, vi, gj, k);
            mv[e] = mi;
            vv[e] = vi;
            mmax = fmaxf(mmax, fabsf(mi));
            vmax = fmaxf(vmax, fabsf(vi));
        }
        mmax = msbnb__warp_max(mmax);
        vmax = msbnb__warp_max(vmax);
        if (lane == 0) {
            xch[par][warp][0] = mmax;
            xch[par][warp][1] = vmax;
        }
        asm volatile("bar.sync %0, 64;" ::"r"(1 + pair) : "memory");
        mmax = fmaxf(mmax, xch[par][warp ^ 1][0]);
        vmax = fmaxf(vmax, xch[par][warp ^ 1][1]);
        if (lane == 0 && h == 0) {
            am[b] = mmax;
            av[b] = vmax;
        }
        const float im = msbnb__rcp_approx_ftz(mmax), iv = msbnb__rcp_approx_ftz(vmax);
        const int64_t s = b * ADAM_Q8_BLOCK + 128 * h + 4 * lane;
        uint32_t cmw = 0, cvw = 0;
        if (tab_ok && q8t_absmax_ok(mmax) && q8t_absmax_ok(vmax)) { /* uniform over the pair */
#pragma unroll
            for (int e = 0; e < 4; e++) {
                cmw |= q8t_code(&S.qm, __fmul_rn(mv[e], im)) << (8 * e);
                cvw |= q8t_code(&S.qv, __fmul_rn(vv[e], iv)) << (8 * e);
            }
        } else {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                cmw |= (uint32_t)msbnb__dcode8_of(S.dm, msbnb__dmul_ftz(mv[e], im)) << (8 * e);
                cvw |= (uint32_t)msbnb__dcode8_of(S.dv, msbnb__dmul_ftz(vv[e], iv)) << (8 * e);
            }
        }
        __stcs((float4 *)(p + s), make_float4(pv[0], pv[1], pv[2], pv[3]));
        *(uint32_t *)(qm + s) = cmw;
        *(uint32_t *)(qv + s) = cvw;
        cur = nxt;
    }
    const int64_t tail = nfull;
    if (n % ADAM_Q8_BLOCK && h == 0 && b0 == tail % stride)
        adam8_block<false>(p, qm, am, qv, av, g, tail, (int)(n - tail * ADAM_Q8_BLOCK), lane, k, S.dm, S.dv);
}

/* Test hook: mism[0] += #{x finite, |x| < 2 : q8t_code(x) != search(ftz(x))} over the float
 * bit patterns first + i * step, i < count; mism[1] = one such pattern; mism[2] = !ok. */
__global__ void q8f_check_kernel(msbnb__code256 c, msbnb__code256 thr, uint64_t first, uint64_t step, uint64_t count,
                                 unsigned long long *mism) {
    __shared__ float sc[256], st[256];
    __shared__ q8t_tab t;
    for (int i = threadIdx.x; i < 256; i += blockDim.x) {
        sc[i] = c.v[i];
        st[i] = thr.v[i];
    }
    __syncthreads();
    const bool ok = q8t_build(&t, st);
    if (!ok) {
        if (threadIdx.x == 0) mism[2] = 1;
        return;
    }
    unsigned long long bad = 0;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (uint64_t)gridDim.x * blockDim.x) {
        const uint32_t u = (uint32_t)(first + i * step);
        const float x = __uint_as_float(u);
        if (!(fabsf(x) < 2.0f)) continue;
        const float xf = fabsf(x) < 1.17549435e-38f ? copysignf(0.0f, x) : x;
        if (q8t_code(&t, x) != msbnb__dcode8_of(sc, xf)) {
            bad++;
            mism[1] = u;
        }
    }
    for (int o = 16; o > 0; o >>= 1) bad += __shfl_xor_sync(0xffffffffu, bad, o);
    if ((threadIdx.x & 31) == 0 && bad) atomicAdd(mism, bad);
}

/* ---------------------------------------------------------------- host side */

static int cmp_f(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* bitsandbytes functional.create_dynamic_map(signed=False, max_exponent_bits=7,
 * total_bits=8), with torch.linspace in float32 as aten evaluates it on CUDA (fma; first
 * half from start, second half from end) — the construction of src/nn/optim.c. */
static void unsigned_dynamic_map(float *code) {
    static const float scale[7] = {1e-6f, 1e-5f, 1e-4f, 1e-3f, 1e-2f, 1e-1f, 1.0f};
    float b[130];
    int n = 0;
    for (int i = 0; i < 7; i++) {
        int items = (1 << (i + 1)) + 1;
        float step = (1.0f - 0.1f) / (float)(items - 1);
        int half = items / 2;
        for (int t = 0; t < items; t++)
            b[t] = t < half ? fmaf(step, (float)t, 0.1f) : fmaf(-step, (float)(items - t - 1), 1.0f);
        for (int t = 0; t + 1 < items; t++) code[n++] = scale[i] * ((b[t] + b[t + 1]) / 2.0f);
    }
    code[n++] = 0.0f;
    code[n++] = 1.0f;
    while (n < 256) code[n++] = 0.0f;
    qsort(code, 256, sizeof(float), cmp_f);
}

extern "C" msbnb_status msbnb_cuda_adamw_unsigned_map(float *code) {
    MSBNB_CHECK_NULL(code);
    unsigned_dynamic_map(code);
    return MSBNB_OK;
}

static unsigned grid_for(int64_t work, int per_block) {
    int64_t g = (work + per_block - 1) / per_block;
    if (g > 132LL * 64) g = 132LL * 64; /* grid-stride beyond a few waves */
    return (unsigned)(g < 1 ? 1 : g);
}

extern "C" msbnb_status msbnb_cuda_adamw_step(float *p, float *m, float *v, const float *g, int64_t n,
                                             const msbnb_cuda_adamw *h) {
    MSBNB_CHECK_NULL(p);
    MSBNB_CHECK_NULL(m);
    MSBNB_CHECK_NULL(v);
    MSBNB_CHECK_NULL(g);
    MSBNB_CHECK_NULL(h);
    if (n <= 0) return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: n must be positive (got %lld)", __func__, (long long)n);
    if (((uintptr_t)p | (uintptr_t)m | (uintptr_t)v | (uintptr_t)g) & 15)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: buffers must be 16-byte aligned (cudaMalloc'd)", __func__);
    adam_k k;
    MSBNB_TRY(make_k(h, &k, __func__));
    adamw_f32_kernel<<<grid_for(n / 4 + 1, 256), 256>>>(p, m, v, g, n, k);
    MSBNB_CUDA_LAUNCHED();
    return MSBNB_OK;
}

extern "C" int64_t msbnb_cuda_adamw8bit_nblocks(int64_t n) { return n > 0 ? (n + ADAM_Q8_BLOCK - 1) / ADAM_Q8_BLOCK : 0; }

extern "C" msbnb_status msbnb_cuda_adamw8bit_step(float *p, uint8_t *qm, float *am, uint8_t *qv, float *av,
                                                 const float *g, int64_t n, const msbnb_cuda_adamw *h,
                                                 const float *code_m, const float *code_v) {
    MSBNB_CHECK_NULL(p);
    MSBNB_CHECK_NULL(qm);
    MSBNB_CHECK_NULL(am);
    MSBNB_CHECK_NULL(qv);
    MSBNB_CHECK_NULL(av);
    MSBNB_CHECK_NULL(g);
    MSBNB_CHECK_NULL(h);
    if (n <= 0) return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: n must be positive (got %lld)", __func__, (long long)n);
    adam_k k;
    MSBNB_TRY(make_k(h, &k, __func__));
    msbnb__code256 cm, cv;
    memcpy(cm.v, code_m ? code_m : msbnb__dynamic_map, sizeof cm.v);
    if (code_v) memcpy(cv.v, code_v, sizeof cv.v);
    else unsigned_dynamic_map(cv.v);
    int64_t nb = msbnb_cuda_adamw8bit_nblocks(n);
    /* the fast kernel needs sorted codes (q8f_usable) and 16-byte p, g / 4-byte qm, qv;
     * MSBNB_CUDA_ADAM8_REF=1 forces the per-element search kernel (tests, benchmarks) */
    const char *ref = getenv("MSBNB_CUDA_ADAM8_REF");
    code256x2 cc;
    cc.cm = cm;
    cc.cv = cv;
    const bool fast = !(ref && ref[0] == '1') && q8f_usable(cm.v) && q8f_usable(cv.v) &&
                      !(((uintptr_t)p | (uintptr_t)g) & 15) && !(((uintptr_t)qm | (uintptr_t)qv) & 3) &&
                      q8t_thresholds(cm.v, cc.tm.v) && q8t_thresholds(cv.v, cc.tv.v);
    if (!fast) {
        adamw_8bit_kernel<<<grid_for(nb, Q8_WARPS), 32 * Q8_WARPS>>>(p, qm, am, qv, av, g, n, k, cm, cv);
        MSBNB_CUDA_LAUNCHED();
        return MSBNB_OK;
    }
    /* persistent grid: as many resident blocks as fit (shared-memory tables, registers) */
    const int smem = (int)sizeof(adam8_smem);
    /* 3 blocks per SM (80 registers); MSBNB_CUDA_ADAM8_OCC=4: 4 at 64 registers, which spills
     * and measured slower (H200: 1.62 against 1.38 ms at 256 M parameters) */
    const char *occ = getenv("MSBNB_CUDA_ADAM8_OCC"), *half = getenv("MSBNB_CUDA_ADAM8_HALF");
    const bool pairs = half && half[0] == '1'; /* MSBNB_CUDA_ADAM8_HALF=1: two warps per block of 256 */
    void (*kern)(float *, uint8_t *, float *, uint8_t *, float *, const float *, int64_t, adam_k, code256x2, int) =
        pairs ? adamw_8bit_half<4> : occ && occ[0] == '4' ? adamw_8bit_fast<4> : adamw_8bit_fast<3>;
    int dev = 0, sms = 0, per_sm = 0;
    MSBNB_CUDA_TRY(cudaGetDevice(&dev));
    MSBNB_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    MSBNB_CUDA_TRY(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    MSBNB_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, 32 * Q8_WARPS, smem));
    const int per_block = pairs ? Q8_WARPS / 2 : Q8_WARPS; /* blocks of 256 taken at once */
    int64_t grid = (int64_t)sms * (per_sm > 0 ? per_sm : 1), need = (nb + per_block - 1) / per_block;
    if (grid > need) grid = need;
    /* The loads run one block ahead (registers); an L2 prefetch of the block two strides
     * ahead deepens the stream without registers: 1.358 -> 1.301-1.327 ms on the H200
     * (bench/RESULTS.md, 2026-12-02). MSBNB_CUDA_ADAM8_PF = d: d strides ahead, 0 off. */
    const char *pfe = getenv("MSBNB_CUDA_ADAM8_PF");
    const int pf = pfe && pfe[0] >= '0' && pfe[0] <= '9' ? pfe[0] - '0' : 2;
    kern<<<(unsigned)grid, 32 * Q8_WARPS, smem>>>(p, qm, am, qv, av, g, n, k, cc, pf);
    MSBNB_CUDA_LAUNCHED();
    return MSBNB_OK;
}

/* Test hook (tests/test_cuda_optim.c): counts the float bit patterns first + i * step
 * (i < count, wrapping mod 2^32) where the fast coder and bnb's search disagree for code;
 * *example gets one of them. usable: whether the fast kernel would use this code. */
extern "C" msbnb_status msbnb__cuda_q8f_check(const float *code, uint64_t first, uint64_t step, uint64_t count,
                                   uint64_t *mismatches, uint32_t *example, int *usable) {
    MSBNB_CHECK_NULL(code);
    MSBNB_CHECK_NULL(mismatches);
    msbnb__code256 c, thr;
    memcpy(c.v, code, sizeof c.v);
    const bool use = q8f_usable(c.v) && q8t_thresholds(c.v, thr.v);
    if (usable) *usable = use;
    *mismatches = 0;
    if (!use) return MSBNB_OK;
    unsigned long long *d = NULL, h[3] = {0, 0, 0};
    MSBNB_CUDA_TRY(cudaMalloc(&d, sizeof h));
    cudaError_t e = cudaMemset(d, 0, sizeof h);
    if (e == cudaSuccess) {
        q8f_check_kernel<<<132 * 4, 256>>>(c, thr, first, step, count, d);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    cudaFree(d);
    if (e != cudaSuccess) return msbnb__fail(MSBNB_ERR_CUDA, "%s: %s", __func__, cudaGetErrorString(e));
    if (usable && h[2]) *usable = 0; /* a bucket did not qualify: the kernel would fall back */
    *mismatches = h[0];
    if (example) *example = (uint32_t)h[1];
    return MSBNB_OK;
}
