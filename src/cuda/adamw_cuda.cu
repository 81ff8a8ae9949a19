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
 * — fused in one pass, 16 bytes of traffic per parameter instead of f32 AdamW's 28. */
#include "cuda/cuda_internal.cuh"

#include <math.h>
#include <stdlib.h>

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
    for (int o = 16; o > 0; o >>= 1) {
        mmax = fmaxf(mmax, __shfl_xor_sync(0xffffffffu, mmax, o));
        vmax = fmaxf(vmax, __shfl_xor_sync(0xffffffffu, vmax, o));
    }
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
    adamw_8bit_kernel<<<grid_for(nb, Q8_WARPS), 32 * Q8_WARPS>>>(p, qm, am, qv, av, g, n, k, cm, cv);
    MSBNB_CUDA_LAUNCHED();
    return MSBNB_OK;
}
