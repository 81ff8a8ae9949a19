/* LoRA (Hu et al. 2021, arXiv:2106.09685; PEFT's Linear) on the GPU, composed from the
 * device linear layer and cuBLAS sgemm, f32 activations:
 *   forward   h = x Aᵀ [m, r],  y = base(x) + s h Bᵀ          (s = lora_alpha / r)
 *   backward  g = dy B [m, r],  dB += s dyᵀ h,  dA += s gᵀ x,  dx = base'(dy) + s g A. */
#include "cuda/cuda_internal.cuh"

static msbnb_status check_lora(const msbnb_cuda_linear_t *base, const msbnb_cuda_lora *ad, int64_t m, const char *fn) {
    MSBNB_CHECK_NULL(base);
    MSBNB_CHECK_NULL(ad);
    MSBNB_CHECK_NULL(ad->A);
    MSBNB_CHECK_NULL(ad->B);
    if (ad->rank <= 0 || ad->rank > 65536)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: rank must be in [1, 65536] (got %lld)", fn, (long long)ad->rank);
    if (!isfinite(ad->scale)) return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: scale must be finite", fn);
    if (m <= 0 || m > INT32_MAX)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: m must be in [1, INT32_MAX] (got %lld)", fn, (long long)m);
    return MSBNB_OK;
}

extern "C" msbnb_status msbnb_cuda_lora_forward(msbnb_cuda_ctx *ctx, const msbnb_cuda_linear_t *base,
                                               const msbnb_cuda_lora *ad, float *y, float *h, const float *x,
                                               int64_t m) {
    MSBNB_CHECK_NULL(ctx);
    MSBNB_CHECK_NULL(y);
    MSBNB_CHECK_NULL(h);
    MSBNB_CHECK_NULL(x);
    MSBNB_TRY(check_lora(base, ad, m, __func__));
    const int64_t K = msbnb_cuda_linear_in_features(base), N = msbnb_cuda_linear_out_features(base), r = ad->rank;
    MSBNB_TRY(msbnb_cuda_linear_forward(ctx, base, y, x, MSBNB_DTYPE_F32, m));
    MSBNB_TRY(msbnb__cuda_sgemm_rm(ctx, false, true, m, r, K, 1.0f, x, K, ad->A, K, 0.0f, h, r));
    return msbnb__cuda_sgemm_rm(ctx, false, true, m, N, r, ad->scale, h, r, ad->B, r, 1.0f, y, N);
}

extern "C" msbnb_status msbnb_cuda_lora_backward(msbnb_cuda_ctx *ctx, const msbnb_cuda_linear_t *base,
                                                const msbnb_cuda_lora *ad, float *dx, float *dA, float *dB,
                                                const float *dy, const float *x, const float *h, int64_t m) {
    MSBNB_CHECK_NULL(ctx);
    MSBNB_CHECK_NULL(dy);
    MSBNB_TRY(check_lora(base, ad, m, __func__));
    if (dA) MSBNB_CHECK_NULL(x);
    if (dB) MSBNB_CHECK_NULL(h);
    const int64_t K = msbnb_cuda_linear_in_features(base), N = msbnb_cuda_linear_out_features(base), r = ad->rank;
    if (dx) MSBNB_TRY(msbnb_cuda_linear_backward_dx(ctx, base, dx, dy, m)); /* uses (then frees for reuse) scratch */
    if (dB) MSBNB_TRY(msbnb__cuda_sgemm_rm(ctx, true, false, N, r, m, ad->scale, dy, N, h, r, 1.0f, dB, r));
    if (!dA && !dx) return MSBNB_OK;
    void *g;
    MSBNB_TRY(msbnb__cuda_ctx_scratch(ctx, (size_t)(m * r) * sizeof(float), &g));
    MSBNB_TRY(msbnb__cuda_sgemm_rm(ctx, false, false, m, r, N, 1.0f, dy, N, ad->B, r, 0.0f, (float *)g, r));
    if (dA) MSBNB_TRY(msbnb__cuda_sgemm_rm(ctx, true, false, r, K, m, ad->scale, (const float *)g, r, x, K, 1.0f, dA, K));
    if (dx) MSBNB_TRY(msbnb__cuda_sgemm_rm(ctx, false, false, m, K, r, ad->scale, (const float *)g, r, ad->A, K, 1.0f, dx, K));
    return MSBNB_OK;
}
