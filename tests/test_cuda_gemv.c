/* The CUDA linear forward against a float64 CPU reference built from the CPU dequantized
 * weights: fused 4-bit GEMV (NF4/FP4, plain and double-quantized absmax), int8 GEMV, for
 * M = 1..16, F32 and BF16 activations, aligned (fast kernel) and odd/misaligned shapes
 * (generic kernel); and the cuBLAS paths for M > 16. Skips (exit 77) without a GPU.
 *
 * Tolerance: f32 accumulation over chains of at most ~64 terms (32-wide chunk sums, the
 * lane's chunks, a 5-level shuffle tree), so |err| <= 64 * 2^-24 * sum|w x| < 4e-6 sum|w x|;
 * we allow 1e-5 sum|w x|, far under the effect of one wrong weight (~sum|w x| / K).
 * BF16 outputs add half an ulp of bf16 (2^-9 |y|); the cuBLAS path also rounds W to bf16
 * (2^-9 relative per weight). */
#define _POSIX_C_SOURCE 200112L /* setenv */
#include "cuda_testutil.h"

#ifdef MSBNB_HAVE_CUDA

static tu_rng g_rng;

static void to_bf16(uint16_t *h, float *f, int64_t n) { /* rounds f in place to bf16 */
    for (int64_t i = 0; i < n; i++) {
        h[i] = msbnb_f32_to_bf16(f[i]);
        f[i] = msbnb_bf16_to_f32(h[i]);
    }
}

/* Compares y (host copy of the device output, dtype yt) with x W^T in double. */
static int check_y(const void *y, msbnb_dtype yt, const float *x, const float *w, int64_t M, int64_t N, int64_t K,
                   double rel, const char *what) {
    int bad = 0;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = 0, sa = 0;
            for (int64_t k = 0; k < K; k++) {
                s += (double)x[m * K + k] * w[n * K + k];
                sa += fabs((double)x[m * K + k] * w[n * K + k]);
            }
            double g = yt == MSBNB_DTYPE_F32 ? ((const float *)y)[m * N + n]
                                             : msbnb_bf16_to_f32(((const uint16_t *)y)[m * N + n]);
            double tol = rel * sa + (yt == MSBNB_DTYPE_BF16 ? fabs(s) / 256.0 : 0.0) + 1e-30;
            if (!(fabs(g - s) <= tol)) {
                if (bad < 3)
                    fprintf(stderr, "  %s: y[%lld,%lld] = %.9g, want %.9g (tol %.3g)\n", what, (long long)m,
                            (long long)n, g, s, tol);
                bad++;
            }
        }
    return bad;
}

typedef struct {
    int64_t N, K;
} shape_t;

/* Tolerance of the 4-bit GEMV checks (relative to Σ|w x|): 1e-5 for the f32-grade kernels;
 * the tensor-core kernel with bf16-rounded codes (bitsandbytes' precision) is bounded by
 * 2^-9 Σ|w x| (code rounding) plus f32 accumulation. */
static double g_rel4 = 1e-5;

static void test_cuda_gemv_4bit_matches_cpu(void) {
    static const shape_t shapes[] = {{1, 32}, {3, 64}, {37, 4096}, {5, 33}, {17, 100}, {64, 2080}, {9, 14336}};
    static const int64_t Ms[] = {1, 2, 3, 5, 8, 13, 16};
    int c = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int t = 0; t < 2; t++)
            for (int dq = 0; dq < 2; dq++) {
                int64_t N = shapes[s].N, K = shapes[s].K, nk = N * K, bs = (int64_t)32 << (c % 4);
                int64_t nb = msbnb_nblocks(nk, bs), nn = msbnb_nblocks(nb, 256);
                msbnb_qtype qt = t ? MSBNB_QTYPE_FP4 : MSBNB_QTYPE_NF4;
                float *wf = malloc((size_t)nk * 4);
                tu_fill_normal(&g_rng, wf, (size_t)nk, 0.05f);
                uint8_t *packed = malloc((size_t)(nk + 1) / 2), *qa = malloc((size_t)nb);
                float *absmax = malloc((size_t)nb * 4), *nested = malloc((size_t)nn * 4), off = 0;
                CHECK_OK(msbnb_quantize_4bit(packed, absmax, wf, MSBNB_DTYPE_F32, nk, bs, qt, 1));
                if (dq) {
                    CHECK_OK(msbnb_double_quant_absmax(qa, nested, &off, absmax, nb));
                    CHECK_OK(msbnb_double_dequant_absmax(absmax, qa, nested, off, nb)); /* what the GPU sees */
                }
                CHECK_OK(msbnb_dequantize_4bit(wf, MSBNB_DTYPE_F32, packed, absmax, nk, bs, qt, 1));
                msbnb_cuda_weight4 w = {qt, bs, dq, NULL, NULL, NULL, NULL, NULL};
                w.packed = cu_up(packed, (size_t)(nk + 1) / 2);
                if (dq) {
                    w.qabsmax = cu_up(qa, (size_t)nb);
                    w.nested_absmax = cu_up(nested, (size_t)nn * 4);
                    w.offset = cu_up(&off, 4);
                } else {
                    w.absmax = cu_up(absmax, (size_t)nb * 4);
                }
                for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++, c++) {
                    int64_t M = Ms[mi];
                    int bf = c % 2, misalign = (c % 5) == 4;
                    msbnb_dtype xt = bf ? MSBNB_DTYPE_BF16 : MSBNB_DTYPE_F32;
                    size_t esz = msbnb_dtype_size(xt);
                    float *xf = malloc((size_t)(M * K + 8) * 4);
                    tu_fill_normal(&g_rng, xf, (size_t)(M * K), 1.0f);
                    uint16_t *xh = malloc((size_t)(M * K + 8) * 2);
                    if (bf) to_bf16(xh, xf, M * K);
                    /* misalign: the device x starts one element into its buffer (generic kernel) */
                    char *dxbuf = cu_poison((size_t)(M * K + 8) * esz);
                    void *dx = dxbuf + (misalign ? esz : 0);
                    CHECK_OK(msbnb_cuda_memcpy(dx, bf ? (void *)xh : (void *)xf, (size_t)(M * K) * esz,
                                               MSBNB_CUDA_HOST_TO_DEVICE));
                    void *dy = cu_poison((size_t)(M * N) * esz);
                    CHECK_OK(msbnb_cuda_gemv_4bit(dy, dx, xt, &w, M, N, K));
                    void *y = cu_down(dy, (size_t)(M * N) * esz);
                    char what[160];
                    snprintf(what, sizeof what, "%s dq=%d bs=%lld N=%lld K=%lld M=%lld %s%s", t ? "fp4" : "nf4", dq,
                             (long long)bs, (long long)N, (long long)K, (long long)M, msbnb_dtype_name(xt),
                             misalign ? " misaligned" : "");
                    int bad = check_y(y, xt, xf, wf, M, N, K, g_rel4, what);
                    CHECKF(bad == 0, "%s: %d outputs off", what, bad);
                    free(xf), free(xh), free(y);
                    msbnb_cuda_free(dxbuf), msbnb_cuda_free(dy);
                }
                CHECK_STATUS(msbnb_cuda_gemv_4bit((void *)w.packed, (void *)w.packed, MSBNB_DTYPE_F32, &w, 17, N, K),
                             MSBNB_ERR_UNSUPPORTED);
                free(wf), free(packed), free(qa), free(absmax), free(nested);
                msbnb_cuda_free((void *)w.packed), msbnb_cuda_free((void *)w.absmax);
                msbnb_cuda_free((void *)w.qabsmax), msbnb_cuda_free((void *)w.nested_absmax);
                msbnb_cuda_free((void *)w.offset);
            }
}

/* The same checks with the M = 1 chunked kernel (gemv4_m1) forced wherever it applies: by
 * default it only runs from 32 M weights, far above these shapes. */
static void test_cuda_gemv_4bit_chunked_m1_kernel_matches_cpu(void) {
    setenv("MSBNB_CUDA_GEMV4_MMA", "0", 1); /* bf16 activations would take the tensor-core kernel */
    setenv("MSBNB_CUDA_GEMV4_M1", "1", 1);
    for (int v = 0; v < 4; v++) { /* the rule (0) and every launch shape of gemv4_m1 (MSBNB_CUDA_M1_VAR) */
        char val[2] = {(char)('0' + v), 0};
        setenv("MSBNB_CUDA_M1_VAR", val, 1);
        test_cuda_gemv_4bit_matches_cpu();
    }
    unsetenv("MSBNB_CUDA_M1_VAR");
    unsetenv("MSBNB_CUDA_GEMV4_M1");
    unsetenv("MSBNB_CUDA_GEMV4_MMA");
}

/* The FFMA word kernel (gemv4_fast) for bf16 activations too. */
static void test_cuda_gemv_4bit_word_kernel_matches_cpu(void) {
    setenv("MSBNB_CUDA_GEMV4_MMA", "0", 1);
    test_cuda_gemv_4bit_matches_cpu();
    unsetenv("MSBNB_CUDA_GEMV4_MMA");
}

/* The tensor-core kernel at every M (M = 1 included), with the residual MMA off (codes
 * rounded to bf16) and on, with both row-tile shapes. */
static void test_cuda_gemv_4bit_mma_bf16_codes(void) {
    setenv("MSBNB_CUDA_GEMV4_MMA", "1", 1); /* M = 1 too */
    setenv("MSBNB_CUDA_MMA_LO", "0", 1);
    g_rel4 = 2.5e-3;
    test_cuda_gemv_4bit_matches_cpu();
    setenv("MSBNB_CUDA_MMA_RT", "2", 1);
    test_cuda_gemv_4bit_matches_cpu();
    g_rel4 = 1e-5;
    setenv("MSBNB_CUDA_MMA_LO", "1", 1);
    test_cuda_gemv_4bit_matches_cpu();
    unsetenv("MSBNB_CUDA_MMA_RT");
    unsetenv("MSBNB_CUDA_MMA_LO");
    unsetenv("MSBNB_CUDA_GEMV4_MMA");
}

/* The M = 1 fold kernel (msbnb_cuda_linear_4bit with a context: x folded into per-pair
 * tables, K-slices summed through the context's scratch) against the CPU, forced wherever it
 * applies, for every launch shape (warps x batch), NF4 / FP4, plain and double-quantized
 * absmax, block sizes 32..1024. Odd N (partial row groups), K with a partial last slice
 * (2080, 96), K = 32768 (more slices than SMs), K % 32 != 0 (falls back to the FFMA
 * kernels). Every product runs twice on the same context (the kernel must leave its
 * accumulator and counters zeroed), and the shapes alternate small and large N (the
 * scratch grows). bf16 x and y (the tolerance of check_y). */
static void test_cuda_linear_4bit_fold_m1_matches_cpu(void) {
    static const shape_t shapes[] = {{1, 32},   {3, 64},    {37, 4096}, {5, 33},  {17, 160}, {1001, 96},
                                     {64, 2080}, {9, 14336}, {3, 32768}, {133, 384}, {4100, 128}};
    static const char *cfgs[] = {"16x4", "16x8", "32x2", "8x8"};
    msbnb_cuda_ctx *ctx = NULL;
    CHECK_OK(msbnb_cuda_ctx_create(&ctx));
    if (!ctx) return;
    setenv("MSBNB_CUDA_GEMV4_FOLD", "1", 1);
    int c = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int t = 0; t < 2; t++)
            for (int dq = 0; dq < 2; dq++, c++) {
                int64_t N = shapes[s].N, K = shapes[s].K, nk = N * K, bs = (int64_t)32 << (c % 6);
                int64_t nb = msbnb_nblocks(nk, bs), nn = msbnb_nblocks(nb, 256);
                msbnb_qtype qt = t ? MSBNB_QTYPE_FP4 : MSBNB_QTYPE_NF4;
                float *wf = malloc((size_t)nk * 4), off = 0;
                tu_fill_normal(&g_rng, wf, (size_t)nk, 0.05f);
                uint8_t *packed = malloc((size_t)(nk + 1) / 2), *qa = malloc((size_t)nb);
                float *absmax = malloc((size_t)nb * 4), *nested = malloc((size_t)nn * 4);
                CHECK_OK(msbnb_quantize_4bit(packed, absmax, wf, MSBNB_DTYPE_F32, nk, bs, qt, 1));
                if (dq) {
                    CHECK_OK(msbnb_double_quant_absmax(qa, nested, &off, absmax, nb));
                    CHECK_OK(msbnb_double_dequant_absmax(absmax, qa, nested, off, nb));
                }
                CHECK_OK(msbnb_dequantize_4bit(wf, MSBNB_DTYPE_F32, packed, absmax, nk, bs, qt, 1));
                msbnb_cuda_weight4 w = {qt, bs, dq, NULL, NULL, NULL, NULL, NULL};
                w.packed = cu_up(packed, (size_t)(nk + 1) / 2);
                if (dq) {
                    w.qabsmax = cu_up(qa, (size_t)nb);
                    w.nested_absmax = cu_up(nested, (size_t)nn * 4);
                    w.offset = cu_up(&off, 4);
                } else {
                    w.absmax = cu_up(absmax, (size_t)nb * 4);
                }
                for (size_t v = 0; v < sizeof cfgs / sizeof *cfgs; v++) {
                    setenv("MSBNB_CUDA_FOLD_CFG", cfgs[v], 1);
                    float *xf = malloc((size_t)K * 4);
                    uint16_t *xh = malloc((size_t)K * 2);
                    tu_fill_normal(&g_rng, xf, (size_t)K, 1.0f);
                    to_bf16(xh, xf, K);
                    void *dx = cu_up(xh, (size_t)K * 2);
                    for (int rep = 0; rep < 2; rep++) {
                        void *dy = cu_poison((size_t)N * 2);
                        CHECK_OK(msbnb_cuda_linear_4bit(ctx, dy, dx, &w, 1, N, K));
                        void *y = cu_down(dy, (size_t)N * 2);
                        char what[160];
                        snprintf(what, sizeof what, "fold %s %s dq=%d bs=%lld N=%lld K=%lld call %d",
                                 cfgs[v], t ? "fp4" : "nf4", dq, (long long)bs, (long long)N, (long long)K, rep);
                        int bad = check_y(y, MSBNB_DTYPE_BF16, xf, wf, 1, N, K, g_rel4, what);
                        CHECKF(bad == 0, "%s: %d outputs off", what, bad);
                        free(y);
                        msbnb_cuda_free(dy);
                    }
                    free(xf), free(xh);
                    msbnb_cuda_free(dx);
                }
                free(wf), free(packed), free(qa), free(absmax), free(nested);
                msbnb_cuda_free((void *)w.packed), msbnb_cuda_free((void *)w.absmax);
                msbnb_cuda_free((void *)w.qabsmax), msbnb_cuda_free((void *)w.nested_absmax);
                msbnb_cuda_free((void *)w.offset);
            }
    unsetenv("MSBNB_CUDA_FOLD_CFG");
    unsetenv("MSBNB_CUDA_GEMV4_FOLD");
    msbnb_cuda_ctx_free(ctx);
}

static void test_cuda_gemv_int8_matches_cpu(void) {
    static const shape_t shapes[] = {{1, 16}, {3, 48}, {37, 4096}, {5, 33}, {64, 2064}};
    static const int64_t Ms[] = {1, 2, 4, 7, 16};
    int c = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int64_t N = shapes[s].N, K = shapes[s].K, nk = N * K;
        float *wf = malloc((size_t)nk * 4), *ra = malloc((size_t)N * 4);
        tu_fill_normal(&g_rng, wf, (size_t)nk, 0.05f);
        int8_t *q = malloc((size_t)nk);
        CHECK_OK(msbnb_int8_vectorwise_quant(q, ra, NULL, 0, NULL, wf, MSBNB_DTYPE_F32, N, K, 0.0f));
        /* reference weights: q * (row_absmax * (1/127)) as the kernel scales */
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < K; k++) wf[n * K + k] = (float)q[n * K + k] * (ra[n] * (1.0f / 127.0f));
        int8_t *dq = cu_up(q, (size_t)nk);
        float *dra = cu_up(ra, (size_t)N * 4);
        for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++, c++) {
            int64_t M = Ms[mi];
            int bf = c % 2;
            msbnb_dtype xt = bf ? MSBNB_DTYPE_BF16 : MSBNB_DTYPE_F32;
            size_t esz = msbnb_dtype_size(xt);
            float *xf = malloc((size_t)(M * K) * 4);
            tu_fill_normal(&g_rng, xf, (size_t)(M * K), 1.0f);
            uint16_t *xh = malloc((size_t)(M * K) * 2);
            if (bf) to_bf16(xh, xf, M * K);
            void *dx = cu_up(bf ? (void *)xh : (void *)xf, (size_t)(M * K) * esz);
            void *dy = cu_poison((size_t)(M * N) * esz);
            CHECK_OK(msbnb_cuda_gemv_int8(dy, dx, xt, dq, dra, 1.0f / 127.0f, M, N, K));
            void *y = cu_down(dy, (size_t)(M * N) * esz);
            char what[128];
            snprintf(what, sizeof what, "int8 N=%lld K=%lld M=%lld %s", (long long)N, (long long)K, (long long)M,
                     msbnb_dtype_name(xt));
            int bad = check_y(y, xt, xf, wf, M, N, K, 1e-5, what);
            CHECKF(bad == 0, "%s: %d outputs off", what, bad);
            free(xf), free(xh), free(y);
            msbnb_cuda_free(dx), msbnb_cuda_free(dy);
        }
        free(wf), free(ra), free(q);
        msbnb_cuda_free(dq), msbnb_cuda_free(dra);
    }
}

static void test_cuda_linear_4bit_large_m_uses_gemm(void) {
    msbnb_cuda_ctx *ctx = NULL;
    CHECK_OK(msbnb_cuda_ctx_create(&ctx));
    if (!ctx) return;
    static const int64_t Ms[] = {1, 17, 40};
    int64_t N = 96, K = 320, nk = N * K, bs = 64, nb = nk / bs, nn = msbnb_nblocks(nb, 256);
    float *wf = malloc((size_t)nk * 4), off = 0;
    tu_fill_normal(&g_rng, wf, (size_t)nk, 0.05f);
    uint8_t *packed = malloc((size_t)nk / 2), *qa = malloc((size_t)nb);
    float *absmax = malloc((size_t)nb * 4), *nested = malloc((size_t)nn * 4);
    CHECK_OK(msbnb_quantize_4bit(packed, absmax, wf, MSBNB_DTYPE_F32, nk, bs, MSBNB_QTYPE_NF4, 1));
    CHECK_OK(msbnb_double_quant_absmax(qa, nested, &off, absmax, nb));
    CHECK_OK(msbnb_double_dequant_absmax(absmax, qa, nested, off, nb));
    CHECK_OK(msbnb_dequantize_4bit(wf, MSBNB_DTYPE_F32, packed, absmax, nk, bs, MSBNB_QTYPE_NF4, 1));
    msbnb_cuda_weight4 w = {MSBNB_QTYPE_NF4, bs, 1, NULL, NULL, NULL, NULL, NULL};
    w.packed = cu_up(packed, (size_t)nk / 2);
    w.qabsmax = cu_up(qa, (size_t)nb);
    w.nested_absmax = cu_up(nested, (size_t)nn * 4);
    w.offset = cu_up(&off, 4);
    for (int i = 0; i < 3; i++) {
        int64_t M = Ms[i];
        float *xf = malloc((size_t)(M * K) * 4);
        uint16_t *xh = malloc((size_t)(M * K) * 2);
        tu_fill_normal(&g_rng, xf, (size_t)(M * K), 1.0f);
        to_bf16(xh, xf, M * K);
        void *dx = cu_up(xh, (size_t)(M * K) * 2), *dy = cu_poison((size_t)(M * N) * 2);
        CHECK_OK(msbnb_cuda_linear_4bit(ctx, dy, dx, &w, M, N, K));
        void *y = cu_down(dy, (size_t)(M * N) * 2);
        char what[64];
        snprintf(what, sizeof what, "linear_4bit M=%lld", (long long)M);
        int bad = check_y(y, MSBNB_DTYPE_BF16, xf, wf, M, N, K, M > 16 ? 4e-3 : 1e-5, what);
        CHECKF(bad == 0, "%s: %d outputs off", what, bad);
        free(xf), free(xh), free(y);
        msbnb_cuda_free(dx), msbnb_cuda_free(dy);
    }
    CHECK_STATUS(msbnb_cuda_gemm_bf16(ctx, NULL, NULL, NULL, 1, 1, 1), MSBNB_ERR_INVALID_ARGUMENT);
    msbnb_cuda_ctx_free(ctx);
    msbnb_cuda_ctx_free(NULL);
    free(wf), free(packed), free(qa), free(absmax), free(nested);
    msbnb_cuda_free((void *)w.packed), msbnb_cuda_free((void *)w.qabsmax);
    msbnb_cuda_free((void *)w.nested_absmax), msbnb_cuda_free((void *)w.offset);
}

int main(void) {
    if (cu_skip_if_no_device()) return CU_SKIP_CODE;
    tu_rng_init(&g_rng, tu_seed());
    RUN_TEST(test_cuda_gemv_4bit_matches_cpu);
    RUN_TEST(test_cuda_gemv_4bit_chunked_m1_kernel_matches_cpu);
    RUN_TEST(test_cuda_gemv_4bit_word_kernel_matches_cpu);
    RUN_TEST(test_cuda_gemv_4bit_mma_bf16_codes);
    RUN_TEST(test_cuda_linear_4bit_fold_m1_matches_cpu);
    RUN_TEST(test_cuda_gemv_int8_matches_cpu);
    RUN_TEST(test_cuda_linear_4bit_large_m_uses_gemm);
    return tu_finish();
}

#else
int main(void) {
    printf("SKIPPED: CUDA backend not built (no CUDA device code)\n");
    tu_finish();
    return 77;
}
#endif
