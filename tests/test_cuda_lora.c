/* The CUDA LoRA forward/backward against a reference built from the CPU linear layer (base
 * part) plus the adapter products in double on the host; NF4 and f32 base layers, odd
 * shapes and ranks. Skips (exit 77) without a GPU.
 * Tolerance: f32 sums on both sides, |err| <= (K + r) * 2^-23 * Σ|terms| — we allow
 * 1e-5 + (K + N) * 1.2e-7 relative to the sum of absolute terms of each output. */
#include "cuda_testutil.h"

#ifdef MSBNB_HAVE_CUDA
#include <math.h>

static tu_rng g_rng;

static int close_to(const float *got, const double *want, const double *mag, int64_t n, double rel, const char *what) {
    int bad = 0;
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= rel * mag[i] + 1e-30)) {
            if (bad < 3) fprintf(stderr, "  %s[%lld]: gpu %.9g want %.9g\n", what, (long long)i, got[i], want[i]);
            bad++;
        }
    return bad;
}

static void run_lora(msbnb_cuda_ctx *ctx, msbnb_qtype qt, int64_t K, int64_t N, int64_t r, int64_t M) {
    float *w = malloc((size_t)(N * K) * 4), *bias = malloc((size_t)N * 4);
    tu_fill_normal(&g_rng, w, (size_t)(N * K), 0.05f);
    tu_fill_normal(&g_rng, bias, (size_t)N, 0.1f);
    msbnb_qparams p = msbnb_qparams_default(qt);
    msbnb_linear_t *l = NULL;
    msbnb_cuda_linear_t *dl = NULL;
    CHECK_OK(msbnb_linear_create(&l, K, N, w, bias, &p));
    if (!l) goto done;
    CHECK_OK(msbnb_linear_dequantize_weight(l, w));
    CHECK_OK(msbnb_linear_set_exact(l, 1)); /* the CPU reference in f32 arithmetic */
    CHECK_OK(msbnb_cuda_linear_upload(&dl, l));
    if (!dl) goto done;
    {
        const float s = 16.0f / (float)r;
        float *A = malloc((size_t)(r * K) * 4), *B = malloc((size_t)(N * r) * 4), *x = malloc((size_t)(M * K) * 4);
        float *dy = malloc((size_t)(M * N) * 4), *dA0 = malloc((size_t)(r * K) * 4), *dB0 = malloc((size_t)(N * r) * 4);
        tu_fill_normal(&g_rng, A, (size_t)(r * K), 0.1f);
        tu_fill_normal(&g_rng, B, (size_t)(N * r), 0.1f);
        tu_fill_normal(&g_rng, x, (size_t)(M * K), 1.0f);
        tu_fill_normal(&g_rng, dy, (size_t)(M * N), 1.0f);
        tu_fill_normal(&g_rng, dA0, (size_t)(r * K), 0.01f);
        tu_fill_normal(&g_rng, dB0, (size_t)(N * r), 0.01f);
        /* reference: CPU base layer + adapter in double */
        float *ybase = malloc((size_t)(M * N) * 4), *dxbase = malloc((size_t)(M * K) * 4);
        CHECK_OK(msbnb_linear_forward(l, ybase, x, M));
        CHECK_OK(msbnb_linear_backward(l, dxbase, NULL, NULL, dy, NULL, M));
        double *h = calloc((size_t)(M * r), 8), *hm = calloc((size_t)(M * r), 8), *g = calloc((size_t)(M * r), 8);
        double *gm = calloc((size_t)(M * r), 8);
        double *y = malloc((size_t)(M * N) * 8), *ym = malloc((size_t)(M * N) * 8);
        double *dx = malloc((size_t)(M * K) * 8), *dxm = malloc((size_t)(M * K) * 8);
        double *dA = malloc((size_t)(r * K) * 8), *dAm = malloc((size_t)(r * K) * 8);
        double *dB = malloc((size_t)(N * r) * 8), *dBm = malloc((size_t)(N * r) * 8);
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < r; j++)
                for (int64_t k = 0; k < K; k++) {
                    h[i * r + j] += (double)x[i * K + k] * A[j * K + k];
                    hm[i * r + j] += fabs((double)x[i * K + k] * A[j * K + k]);
                }
        for (int64_t i = 0; i < M; i++)
            for (int64_t n = 0; n < N; n++) {
                double acc = 0, mag = 0, base_mag = fabs((double)bias[n]);
                for (int64_t j = 0; j < r; j++) {
                    acc += h[i * r + j] * B[n * r + j];
                    mag += hm[i * r + j] * fabs((double)B[n * r + j]);
                }
                for (int64_t k = 0; k < K; k++) base_mag += fabs((double)x[i * K + k] * w[n * K + k]);
                y[i * N + n] = ybase[i * N + n] + s * acc;
                ym[i * N + n] = base_mag + s * mag;
                for (int64_t j = 0; j < r; j++) {
                    g[i * r + j] += (double)dy[i * N + n] * B[n * r + j];
                    gm[i * r + j] += fabs((double)dy[i * N + n] * B[n * r + j]);
                }
            }
        for (int64_t i = 0; i < M; i++)
            for (int64_t k = 0; k < K; k++) {
                double acc = 0, mag = 0;
                for (int64_t j = 0; j < r; j++) {
                    acc += g[i * r + j] * A[j * K + k];
                    mag += gm[i * r + j] * fabs((double)A[j * K + k]);
                }
                double bm = 0;
                for (int64_t n = 0; n < N; n++) bm += fabs((double)dy[i * N + n] * w[n * K + k]);
                dx[i * K + k] = dxbase[i * K + k] + s * acc;
                dxm[i * K + k] = bm + s * mag;
            }
        for (int64_t j = 0; j < r; j++)
            for (int64_t k = 0; k < K; k++) {
                double acc = 0, mag = 0;
                for (int64_t i = 0; i < M; i++) {
                    acc += g[i * r + j] * x[i * K + k];
                    mag += gm[i * r + j] * fabs((double)x[i * K + k]);
                }
                dA[j * K + k] = dA0[j * K + k] + s * acc;
                dAm[j * K + k] = fabs((double)dA0[j * K + k]) + s * mag;
            }
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < r; j++) {
                double acc = 0, mag = 0;
                for (int64_t i = 0; i < M; i++) {
                    acc += (double)dy[i * N + n] * h[i * r + j];
                    mag += fabs((double)dy[i * N + n]) * hm[i * r + j];
                }
                dB[n * r + j] = dB0[n * r + j] + s * acc;
                dBm[n * r + j] = fabs((double)dB0[n * r + j]) + s * mag;
            }
        /* GPU */
        msbnb_cuda_lora ad = {cu_up(A, (size_t)(r * K) * 4), cu_up(B, (size_t)(N * r) * 4), r, s};
        float *dxd = cu_up(x, (size_t)(M * K) * 4), *dyd = cu_up(dy, (size_t)(M * N) * 4);
        float *yd = cu_poison((size_t)(M * N) * 4), *hd = cu_poison((size_t)(M * r) * 4);
        float *gxd = cu_poison((size_t)(M * K) * 4), *dAd = cu_up(dA0, (size_t)(r * K) * 4);
        float *dBd = cu_up(dB0, (size_t)(N * r) * 4);
        CHECK_OK(msbnb_cuda_lora_forward(ctx, dl, &ad, yd, hd, dxd, M));
        CHECK_OK(msbnb_cuda_lora_backward(ctx, dl, &ad, gxd, dAd, dBd, dyd, dxd, hd, M));
        float *gy = cu_down(yd, (size_t)(M * N) * 4), *ggx = cu_down(gxd, (size_t)(M * K) * 4);
        float *gA = cu_down(dAd, (size_t)(r * K) * 4), *gB = cu_down(dBd, (size_t)(N * r) * 4);
        double rel = 1e-5 + (double)(K + N) * 1.2e-7;
        int b1 = close_to(gy, y, ym, M * N, rel, "y"), b2 = close_to(ggx, dx, dxm, M * K, rel, "dx");
        int b3 = close_to(gA, dA, dAm, r * K, rel, "dA"), b4 = close_to(gB, dB, dBm, N * r, rel, "dB");
        CHECKF(b1 + b2 + b3 + b4 == 0, "lora %s K=%lld N=%lld r=%lld M=%lld: y %d, dx %d, dA %d, dB %d off",
               msbnb_qtype_name(qt), (long long)K, (long long)N, (long long)r, (long long)M, b1, b2, b3, b4);
        msbnb_cuda_free((void *)ad.A), msbnb_cuda_free((void *)ad.B), msbnb_cuda_free(dxd), msbnb_cuda_free(dyd);
        msbnb_cuda_free(yd), msbnb_cuda_free(hd), msbnb_cuda_free(gxd), msbnb_cuda_free(dAd), msbnb_cuda_free(dBd);
        free(gy), free(ggx), free(gA), free(gB);
        free(A), free(B), free(x), free(dy), free(dA0), free(dB0), free(ybase), free(dxbase);
        free(h), free(hm), free(g), free(gm), free(y), free(ym), free(dx), free(dxm), free(dA), free(dAm), free(dB),
            free(dBm);
    }
done:
    msbnb_cuda_linear_free(dl);
    msbnb_linear_free(l);
    free(w), free(bias);
}

static void test_cuda_lora_matches_reference(void) {
    msbnb_cuda_ctx *ctx = NULL;
    CHECK_OK(msbnb_cuda_ctx_create(&ctx));
    if (!ctx) return;
    run_lora(ctx, MSBNB_QTYPE_NF4, 64, 48, 8, 1);
    run_lora(ctx, MSBNB_QTYPE_NF4, 4097, 5, 3, 7);
    run_lora(ctx, MSBNB_QTYPE_NF4, 256, 33, 16, 40);
    run_lora(ctx, MSBNB_QTYPE_F32, 33, 17, 1, 3);
    run_lora(ctx, MSBNB_QTYPE_INT8, 128, 64, 4, 17);
    msbnb_cuda_ctx_free(ctx);
}

static void test_cuda_lora_rejects_bad_input(void) {
    msbnb_cuda_ctx *ctx = NULL;
    CHECK_OK(msbnb_cuda_ctx_create(&ctx));
    float w[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    msbnb_linear_t *l = NULL;
    msbnb_cuda_linear_t *dl = NULL;
    CHECK_OK(msbnb_linear_create(&l, 4, 2, w, NULL, NULL));
    CHECK_OK(msbnb_cuda_linear_upload(&dl, l));
    float *d = cu_poison(256);
    msbnb_cuda_lora ad = {d, d, 0, 1.0f};
    CHECK_STATUS(msbnb_cuda_lora_forward(ctx, dl, &ad, d, d, d, 1), MSBNB_ERR_INVALID_ARGUMENT); /* rank 0 */
    ad.rank = 2;
    CHECK_STATUS(msbnb_cuda_lora_forward(ctx, dl, &ad, d, d, d, 0), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_cuda_lora_forward(ctx, NULL, &ad, d, d, d, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_cuda_lora_forward(ctx, dl, &ad, d, NULL, d, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_cuda_lora_backward(ctx, dl, &ad, d, d, NULL, d, NULL, d, 1), MSBNB_ERR_INVALID_ARGUMENT);
    ad.B = NULL;
    CHECK_STATUS(msbnb_cuda_lora_backward(ctx, dl, &ad, d, NULL, NULL, d, NULL, NULL, 1), MSBNB_ERR_INVALID_ARGUMENT);
    msbnb_cuda_free(d);
    msbnb_cuda_linear_free(dl);
    msbnb_linear_free(l);
    msbnb_cuda_ctx_free(ctx);
}

int main(void) {
    if (cu_skip_if_no_device()) return CU_SKIP_CODE;
    tu_rng_init(&g_rng, tu_seed());
    RUN_TEST(test_cuda_lora_matches_reference);
    RUN_TEST(test_cuda_lora_rejects_bad_input);
    return tu_finish();
}

#else
int main(void) {
    printf("SKIPPED: CUDA backend not built (no CUDA device code)\n");
    return 77;
}
#endif
