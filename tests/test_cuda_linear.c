/* The CUDA linear layer against the CPU linear layer (src/nn/linear.c) for every weight
 * format: forward for m = 1..16 (fused kernels) and m > 16 (dequantize + cuBLAS), f32 and
 * bf16 activations, with and without bias, odd shapes; backward dX. Skips (exit 77)
 * without a GPU.
 *
 * Tolerances (each next to its reason):
 *  - f32 forward / backward: both sides sum K (or N) f32 products in different orders:
 *    |err| <= K * 2^-24 * Σ|x w| per side; we allow 1e-5 Σ|x w| + K-independent 1e-30
 *    only for K <= ~80, and (K * 2^-23) Σ|x w| above (still far under one wrong weight).
 *  - bf16 output: the two f32 values may round to neighbouring bf16: + |y| / 128.
 *  - bf16 activations at m > 16: W is rounded to bf16 for the tensor cores (2^-9 relative
 *    per weight): + 4e-3 Σ|x w|.
 *  - LLM.int8 at m <= 8 with f32 activations: bit-identical (same int8 activation codes,
 *    exact integer sums, the same float expression; with an outlier threshold also the
 *    same outlier columns, summed in the same order). */
#define _POSIX_C_SOURCE 200112L /* setenv */
#include "cuda_testutil.h"

#ifdef MSBNB_HAVE_CUDA
#include <math.h>
#include <string.h>

static tu_rng g_rng;

typedef struct {
    const char *name;
    msbnb_qtype type;
    int symmetric;
    int64_t block;
    int dq;
} fmt_t;

static const fmt_t k_fmts[] = {
    {"f32", MSBNB_QTYPE_F32, 1, 0, 0},         {"bf16", MSBNB_QTYPE_BF16, 1, 0, 0},
    {"f16", MSBNB_QTYPE_F16, 1, 0, 0},         {"int8", MSBNB_QTYPE_INT8, 1, 0, 0},
    {"int8-asym", MSBNB_QTYPE_INT8, 0, 0, 0},  {"int4-g32", MSBNB_QTYPE_INT4, 1, 32, 0},
    {"int4-asym-g64", MSBNB_QTYPE_INT4, 0, 64, 0}, {"int4-g6", MSBNB_QTYPE_INT4, 1, 6, 0},
    {"int4-g128", MSBNB_QTYPE_INT4, 1, 128, 0},
    {"nf4-b64", MSBNB_QTYPE_NF4, 1, 64, 0},
    {"nf4-dq-b64", MSBNB_QTYPE_NF4, 1, 64, 1}, {"fp4-b128", MSBNB_QTYPE_FP4, 1, 128, 0},
    {"fp4-dq-b32", MSBNB_QTYPE_FP4, 1, 32, 1}, {"q8dyn-b256", MSBNB_QTYPE_Q8_DYNAMIC, 1, 256, 0},
};

static msbnb_linear_t *make_layer(const fmt_t *f, int64_t K, int64_t N, int with_bias, float **w_out) {
    float *w = malloc((size_t)(N * K) * 4), *b = malloc((size_t)N * 4);
    tu_fill_normal(&g_rng, w, (size_t)(N * K), 0.05f);
    tu_fill_normal(&g_rng, b, (size_t)N, 0.1f);
    msbnb_qparams p = msbnb_qparams_default(f->type);
    p.symmetric = f->symmetric;
    if (f->block) p.block = f->block;
    p.double_quant = f->dq;
    msbnb_linear_t *l = NULL;
    CHECK_OK(msbnb_linear_create(&l, K, N, w, with_bias ? b : NULL, &p));
    if (l) CHECK_OK(msbnb_linear_dequantize_weight(l, w)); /* what both sides compute with */
    /* the CPU side as reference: f32 arithmetic (not the AVX2 tier's 15-bit integer 4-bit
     * products, ~1e-5 of Σ|x w| off, a host without AVX-512 would otherwise fail the 1e-5 bound) */
    if (l) CHECK_OK(msbnb_linear_set_exact(l, 1));
    free(b);
    *w_out = w;
    return l;
}

/* Σ_k |x[m, k] w[n, k]| for the tolerance. */
static double abs_dot(const float *x, const float *w, int64_t K) {
    double s = 0;
    for (int64_t k = 0; k < K; k++) s += fabs((double)x[k] * w[k]);
    return s;
}

static double y_at(const void *y, msbnb_dtype t, int64_t i) {
    return t == MSBNB_DTYPE_F32 ? ((const float *)y)[i] : msbnb_bf16_to_f32(((const uint16_t *)y)[i]);
}

/* Forward on the GPU against the CPU layer. threshold > 0 (LLM.int8 layers): the outlier
 * threshold, with `plant` columns of x pushed past it in some rows (the N(0, 1) activation
 * has its own outliers too: |x| >= 3 in 0.3 % of entries). */
static void run_forward_t(msbnb_cuda_ctx *ctx, const fmt_t *f, int64_t K, int64_t N, int64_t M, int bf, int bias,
                          float threshold, int plant) {
    float *w = NULL;
    msbnb_linear_t *l = make_layer(f, K, N, bias, &w);
    msbnb_cuda_linear_t *dl = NULL;
    if (!l) goto out;
    if (threshold > 0) CHECK_OK(msbnb_linear_set_int8_threshold(l, threshold));
    CHECK_OK(msbnb_cuda_linear_upload(&dl, l));
    if (!dl) goto out;
    CHECK(msbnb_cuda_linear_in_features(dl) == K && msbnb_cuda_linear_out_features(dl) == N);
    CHECK(msbnb_cuda_linear_weight_bytes(dl) == msbnb_linear_weight_bytes(l));
    {
        const msbnb_dtype xt = bf ? MSBNB_DTYPE_BF16 : MSBNB_DTYPE_F32;
        const size_t es = bf ? 2 : 4;
        float *xf = malloc((size_t)(M * K) * 4);
        uint16_t *xh = malloc((size_t)(M * K) * 2);
        tu_fill_normal(&g_rng, xf, (size_t)(M * K), 1.0f);
        for (int c = 0; c < plant; c++) {
            int64_t col = (int64_t)(tu_rng_u64(&g_rng) % (uint64_t)K);
            for (int64_t m = 0; m < M; m++)
                if (m == 0 || (tu_rng_u64(&g_rng) & 1))
                    xf[m * K + col] = (threshold + 0.5f + 4.0f * tu_rng_uniform(&g_rng)) * (m & 1 ? -1.0f : 1.0f);
        }
        if (bf)
            for (int64_t i = 0; i < M * K; i++) {
                xh[i] = msbnb_f32_to_bf16(xf[i]);
                xf[i] = msbnb_bf16_to_f32(xh[i]);
            }
        void *cpu = malloc((size_t)(M * N) * es);
        if (bf) CHECK_OK(msbnb_linear_forward_bf16(l, cpu, MSBNB_DTYPE_BF16, xh, M));
        else CHECK_OK(msbnb_linear_forward(l, cpu, xf, M));
        void *dx = cu_up(bf ? (const void *)xh : (const void *)xf, (size_t)(M * K) * es);
        void *dy = cu_poison((size_t)(M * N) * es);
        CHECK_OK(msbnb_cuda_linear_forward(ctx, dl, dy, dx, xt, M));
        CHECK_OK(msbnb_cuda_synchronize());
        void *gpu = cu_down(dy, (size_t)(M * N) * es);
        const int exact = f->type == MSBNB_QTYPE_INT8 && f->symmetric && !bf && M <= 8;
        double rel = K <= 80 ? 1e-5 : (double)K * 1.2e-7;
        if (bf && M > 16) rel += 4e-3;
        int bad = 0;
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                int64_t i = m * N + n;
                double g = y_at(gpu, xt, i), c = y_at(cpu, xt, i);
                double tol = exact ? 0.0 : rel * abs_dot(xf + m * K, w + n * K, K) + (bf ? fabs(c) / 128 : 0) + 1e-30;
                if (!(fabs(g - c) <= tol)) {
                    if (bad < 3)
                        fprintf(stderr, "  %s K=%lld N=%lld M=%lld %s%s t=%g: y[%lld,%lld] gpu %.9g cpu %.9g tol %.3g\n",
                                f->name, (long long)K, (long long)N, (long long)M, bf ? "bf16" : "f32",
                                bias ? " bias" : "", (double)threshold, (long long)m, (long long)n, g, c, tol);
                    bad++;
                }
            }
        CHECKF(bad == 0, "%s K=%lld N=%lld M=%lld bf=%d threshold %g: %d of %lld outputs off", f->name, (long long)K,
               (long long)N, (long long)M, bf, (double)threshold, bad, (long long)(M * N));
        free(xf), free(xh), free(cpu), free(gpu);
        msbnb_cuda_free(dx), msbnb_cuda_free(dy);
    }
out:
    msbnb_cuda_linear_free(dl);
    msbnb_linear_free(l);
    free(w);
}

static void run_forward(msbnb_cuda_ctx *ctx, const fmt_t *f, int64_t K, int64_t N, int64_t M, int bf, int bias) {
    run_forward_t(ctx, f, K, N, M, bf, bias, 0.0f, 0);
}

static void test_cuda_linear_forward_matches_cpu(void) {
    static const int64_t shapes[][2] = {{64, 3}, {33, 17}, {4097, 5}, {4096, 37}, {2, 1}};
    static const int64_t Ms[] = {1, 3, 8, 16, 17, 40};
    msbnb_cuda_ctx *ctx = NULL;
    CHECK_OK(msbnb_cuda_ctx_create(&ctx));
    if (!ctx) return;
    int c = 0;
    for (size_t f = 0; f < sizeof k_fmts / sizeof *k_fmts; f++)
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
            int64_t K = shapes[s][0], N = shapes[s][1];
            if (k_fmts[f].type == MSBNB_QTYPE_INT4 && K < 2) continue;
            for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++, c++)
                run_forward(ctx, &k_fmts[f], K, N, Ms[mi], c & 1, (c >> 1) & 1);
        }
    msbnb_cuda_ctx_free(ctx);
}

static void test_cuda_linear_backward_dx_matches_cpu(void) {
    static const int64_t shapes[][2] = {{64, 3}, {33, 17}, {4097, 5}, {1, 7}};
    static const int64_t Ms[] = {1, 5, 16, 33};
    msbnb_cuda_ctx *ctx = NULL;
    CHECK_OK(msbnb_cuda_ctx_create(&ctx));
    if (!ctx) return;
    for (size_t f = 0; f < sizeof k_fmts / sizeof *k_fmts; f++)
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
            for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++) {
                int64_t K = shapes[s][0], N = shapes[s][1], M = Ms[mi];
                if (k_fmts[f].type == MSBNB_QTYPE_INT4 && K < 2) continue;
                float *w = NULL;
                msbnb_linear_t *l = make_layer(&k_fmts[f], K, N, 1, &w);
                msbnb_cuda_linear_t *dl = NULL;
                if (l) CHECK_OK(msbnb_cuda_linear_upload(&dl, l));
                if (!dl) {
                    msbnb_linear_free(l), free(w);
                    continue;
                }
                float *dy = malloc((size_t)(M * N) * 4), *cpu = malloc((size_t)(M * K) * 4);
                tu_fill_normal(&g_rng, dy, (size_t)(M * N), 1.0f);
                CHECK_OK(msbnb_linear_backward(l, cpu, NULL, NULL, dy, NULL, M));
                void *ddy = cu_up(dy, (size_t)(M * N) * 4), *ddx = cu_poison((size_t)(M * K) * 4);
                CHECK_OK(msbnb_cuda_linear_backward_dx(ctx, dl, ddx, ddy, M));
                float *gpu = cu_down(ddx, (size_t)(M * K) * 4);
                double rel = N <= 80 ? 1e-5 : (double)N * 1.2e-7;
                int bad = 0;
                for (int64_t m = 0; m < M; m++)
                    for (int64_t k = 0; k < K; k++) {
                        double sa = 0;
                        for (int64_t n = 0; n < N; n++) sa += fabs((double)dy[m * N + n] * w[n * K + k]);
                        double g = gpu[m * K + k], c = cpu[m * K + k];
                        if (!(fabs(g - c) <= rel * sa + 1e-30)) {
                            if (bad < 3)
                                fprintf(stderr, "  dx %s K=%lld N=%lld M=%lld: [%lld,%lld] gpu %.9g cpu %.9g\n",
                                        k_fmts[f].name, (long long)K, (long long)N, (long long)M, (long long)m,
                                        (long long)k, g, c);
                            bad++;
                        }
                    }
                CHECKF(bad == 0, "backward dx %s K=%lld N=%lld M=%lld: %d off", k_fmts[f].name, (long long)K,
                       (long long)N, (long long)M, bad);
                free(dy), free(cpu), free(gpu), free(w);
                msbnb_cuda_free(ddy), msbnb_cuda_free(ddx);
                msbnb_cuda_linear_free(dl);
                msbnb_linear_free(l);
            }
    msbnb_cuda_ctx_free(ctx);
}

/* LLM.int8 with an outlier threshold (bitsandbytes MatMul8bitLt): odd shapes, the fused
 * kernels (m <= 16: tensor-core and dp4a ones) and the cuBLAS path, a few planted outlier
 * columns, a threshold so low that most columns are outliers, and one no entry reaches.
 * Exact at m <= 8 with f32 activations, as without a threshold. */
static void test_cuda_linear_int8_outliers_match_cpu(void) {
    static const int64_t shapes[][2] = {{64, 5}, {80, 17}, {4096, 37}, {33, 3}, {4097, 7}, {2, 1}};
    static const int64_t Ms[] = {1, 3, 17, 257};
    const fmt_t f = {"int8", MSBNB_QTYPE_INT8, 1, 0, 0};
    msbnb_cuda_ctx *ctx = NULL;
    CHECK_OK(msbnb_cuda_ctx_create(&ctx));
    if (!ctx) return;
    int c = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++, c++) {
            const int64_t K = shapes[s][0], N = shapes[s][1], M = Ms[mi];
            run_forward_t(ctx, &f, K, N, M, c & 1, (c >> 1) & 1, 6.0f, 3);
            run_forward_t(ctx, &f, K, N, M, (c >> 1) & 1, c & 1, 0.5f, 0); /* most columns */
        }
    run_forward_t(ctx, &f, 4096, 37, 3, 0, 1, 1e30f, 0); /* no outlier column */
    setenv("MSBNB_CUDA_I8_MMA", "0", 1);                 /* the dp4a kernel at K % 16 == 0 */
    run_forward_t(ctx, &f, 4096, 37, 3, 0, 1, 6.0f, 2);
    run_forward_t(ctx, &f, 4096, 37, 16, 1, 0, 6.0f, 2);
    unsetenv("MSBNB_CUDA_I8_MMA");
    msbnb_cuda_ctx_free(ctx);
}

/* The int8 tensor-core kernels at M <= 16 on larger shapes (several k steps per warp, k
 * not a multiple of 256, rows not a multiple of 16, several 16-row tiles per block, K past
 * 32768): the one-tile-per-block kernel (default) and the pipelined one against the CPU,
 * bit for bit at m <= 8 with f32 activations. (MSBNB_CUDA_I8_MMA=2: the pipelined one;
 * MSBNB_CUDA_I8_MINB=2 | 3 | 4: the default one built for 2, 3 or 4 blocks / SM; the
 * default picks 3 at M <= 8 where the tiles need more than one wave, as (64, 5000) does.) */
static void test_cuda_linear_int8_mma_large_shapes_match_cpu(void) {
    static const int64_t shapes[][2] = {{14336, 45}, {4096 + 16, 129}, {64, 5000}, {32768 + 16, 19}};
    static const int64_t Ms[] = {1, 2, 8, 9, 16};
    const fmt_t f = {"int8", MSBNB_QTYPE_INT8, 1, 0, 0};
    msbnb_cuda_ctx *ctx = NULL;
    CHECK_OK(msbnb_cuda_ctx_create(&ctx));
    if (!ctx) return;
    for (int v = 0; v < 5; v++) { /* default, pipelined, the default kernel at 3, 4 and 2 blocks / SM */
        if (v == 1) setenv("MSBNB_CUDA_I8_MMA", "2", 1);
        if (v == 2) {
            unsetenv("MSBNB_CUDA_I8_MMA");
            setenv("MSBNB_CUDA_I8_MINB", "3", 1);
        }
        if (v == 3) setenv("MSBNB_CUDA_I8_MINB", "4", 1);
        if (v == 4) setenv("MSBNB_CUDA_I8_MINB", "2", 1);
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
            for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++) {
                run_forward_t(ctx, &f, shapes[s][0], shapes[s][1], Ms[mi], (int)(mi & 1), (int)(s & 1), 0.0f, 0);
                if (Ms[mi] == 1) /* M = 1 with f32 activations too (bit for bit) */
                    run_forward_t(ctx, &f, shapes[s][0], shapes[s][1], 1, 0, (int)(~s & 1), 0.0f, 0);
            }
        run_forward_t(ctx, &f, 4096, 5000, 3, 0, 1, 6.0f, 4); /* outliers on a multi-tile grid */
        run_forward_t(ctx, &f, 4096, 5000, 1, 0, 0, 6.0f, 4);
    }
    unsetenv("MSBNB_CUDA_I8_MINB");
    msbnb_cuda_ctx_free(ctx);
}

/* LLM.int8 at M = 1 with a NaN or Inf in x: NaN outputs, not numbers made from the codes
 * of an earlier call (the row-wise quantizer marks the row's absmax NaN). */
static void test_cuda_linear_int8_m1_nonfinite_gives_nan(void) {
    const fmt_t f = {"int8", MSBNB_QTYPE_INT8, 1, 0, 0};
    const int64_t K = 4096 + 48, N = 37;
    float *w = NULL;
    msbnb_linear_t *l = make_layer(&f, K, N, 1, &w);
    msbnb_cuda_linear_t *dl = NULL;
    msbnb_cuda_ctx *ctx = NULL;
    CHECK_OK(msbnb_cuda_ctx_create(&ctx));
    if (l) CHECK_OK(msbnb_cuda_linear_upload(&dl, l));
    if (ctx && dl) {
        float *x = malloc((size_t)K * 4);
        for (int c = 0; c < 2; c++) {
            tu_fill_normal(&g_rng, x, (size_t)K, 1.0f);
            x[(size_t)(tu_rng_u64(&g_rng) % (uint64_t)K)] = c ? INFINITY : NAN;
            void *dx = cu_up(x, (size_t)K * 4), *dy = cu_poison((size_t)N * 4);
            CHECK_OK(msbnb_cuda_linear_forward(ctx, dl, dy, dx, MSBNB_DTYPE_F32, 1));
            CHECK_OK(msbnb_cuda_synchronize());
            float *y = cu_down(dy, (size_t)N * 4);
            int nan = 0;
            for (int64_t n = 0; n < N; n++) nan += isnan(y[n]) != 0;
            CHECKF(nan == N, "%s in x: %d of %lld outputs NaN", c ? "Inf" : "NaN", nan, (long long)N);
            free(y);
            msbnb_cuda_free(dx), msbnb_cuda_free(dy);
        }
        free(x);
    }
    msbnb_cuda_linear_free(dl);
    msbnb_linear_free(l);
    msbnb_cuda_ctx_free(ctx);
    free(w);
}

/* Layers called back to back, each reading the buffer the call before wrote and writing the
 * one the call before read (ping-pong, as a model's layers run): the kernels launched with
 * PDL start while the previous call drains, so this checks that each waits before it reads
 * x or writes y (and the int8 quantize kernel before it overwrites the codes the previous
 * GEMV reads). Bit for bit against the same chain with a synchronize after every call, for
 * the M = 1 kernels of each kind (the fold kernel adds with atomics: excluded). */
static void test_cuda_linear_back_to_back_calls_match_synchronized(void) {
    static const fmt_t fmts[] = {{"nf4-b64", MSBNB_QTYPE_NF4, 1, 64, 0},
                                 {"nf4-dq-b64", MSBNB_QTYPE_NF4, 1, 64, 1},
                                 {"fp4-b128", MSBNB_QTYPE_FP4, 1, 128, 0},
                                 {"int8", MSBNB_QTYPE_INT8, 1, 0, 0}};
    const int64_t D = 2048 + 64;
    msbnb_cuda_ctx *ctx = NULL;
    CHECK_OK(msbnb_cuda_ctx_create(&ctx));
    if (!ctx) return;
    for (size_t fi = 0; fi < sizeof fmts / sizeof *fmts; fi++)
        for (int kern = 0; kern < 2; kern++) { /* 4-bit: the word and the chunk kernel */
            if (kern && fmts[fi].type == MSBNB_QTYPE_INT8) continue;
            setenv("MSBNB_CUDA_GEMV4_M1", kern ? "1" : "0", 1);
            msbnb_cuda_linear_t *dl[2] = {NULL, NULL};
            for (int i = 0; i < 2; i++) {
                float *w = NULL;
                msbnb_linear_t *l = make_layer(&fmts[fi], D, D, i, &w);
                if (l) CHECK_OK(msbnb_cuda_linear_upload(&dl[i], l));
                msbnb_linear_free(l);
                free(w);
            }
            if (!dl[0] || !dl[1]) goto next;
            for (int c = 0; c < 4; c++) {
                const int bf = c & 1;
                const int64_t M = c < 2 ? 1 : 5; /* M = 5: the tensor-core 4-bit kernel with bf16 x */
                const size_t es = bf ? 2 : 4, bytes = (size_t)(M * D) * es;
                const msbnb_dtype xt = bf ? MSBNB_DTYPE_BF16 : MSBNB_DTYPE_F32;
                float *xf = malloc((size_t)(M * D) * 4);
                uint16_t *xh = malloc((size_t)(M * D) * 2);
                tu_fill_normal(&g_rng, xf, (size_t)(M * D), 1.0f);
                for (int64_t i = 0; i < M * D; i++) xh[i] = msbnb_f32_to_bf16(xf[i]);
                void *out[2];
                for (int run = 0; run < 2; run++) { /* 0: synchronized, 1: back to back */
                    void *b[2] = {cu_up(bf ? (const void *)xh : (const void *)xf, bytes), cu_poison(bytes)};
                    for (int step = 0; step < 8; step++) {
                        CHECK_OK(msbnb_cuda_linear_forward(ctx, dl[step & 1], b[1], b[0], xt, M));
                        void *t = b[0];
                        b[0] = b[1], b[1] = t; /* the output is the next input */
                        if (!run) CHECK_OK(msbnb_cuda_synchronize());
                    }
                    CHECK_OK(msbnb_cuda_synchronize());
                    out[run] = cu_down(b[0], bytes);
                    msbnb_cuda_free(b[0]), msbnb_cuda_free(b[1]);
                }
                CHECKF(memcmp(out[0], out[1], bytes) == 0, "%s %s M=%lld kernel %d: back-to-back calls differ",
                       fmts[fi].name, bf ? "bf16" : "f32", (long long)M, kern);
                free(out[0]), free(out[1]), free(xf), free(xh);
            }
        next:
            msbnb_cuda_linear_free(dl[0]), msbnb_cuda_linear_free(dl[1]);
        }
    unsetenv("MSBNB_CUDA_GEMV4_M1");
    msbnb_cuda_ctx_free(ctx);
}

static void test_cuda_linear_rejects_bad_input(void) {
    const fmt_t f = {"int8", MSBNB_QTYPE_INT8, 1, 0, 0};
    float *w = NULL;
    msbnb_linear_t *l = make_layer(&f, 32, 4, 0, &w);
    msbnb_cuda_linear_t *dl = NULL;
    msbnb_cuda_ctx *ctx = NULL;
    CHECK_STATUS(msbnb_cuda_linear_upload(NULL, l), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_cuda_linear_upload(&dl, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK(dl == NULL);
    CHECK_OK(msbnb_cuda_ctx_create(&ctx));
    CHECK_OK(msbnb_linear_set_int8_threshold(l, 6.0f));
    CHECK_OK(msbnb_cuda_linear_upload(&dl, l));
    void *x = cu_poison(32 * 4 * 4), *y = cu_poison(4 * 4 * 4);
    CHECK_STATUS(msbnb_cuda_linear_forward(ctx, dl, y, x, MSBNB_DTYPE_F16, 1), MSBNB_ERR_UNSUPPORTED);
    CHECK_STATUS(msbnb_cuda_linear_forward(ctx, dl, y, x, MSBNB_DTYPE_F32, 0), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_cuda_linear_forward(ctx, dl, NULL, x, MSBNB_DTYPE_F32, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_cuda_linear_forward(NULL, dl, y, x, MSBNB_DTYPE_F32, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_cuda_linear_backward_dx(ctx, dl, y, x, -1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_cuda_linear_backward_dx(ctx, NULL, y, x, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK(strlen(msbnb_last_error()) > 0);
    CHECK(msbnb_cuda_linear_in_features(NULL) == 0);
    msbnb_cuda_linear_free(NULL);
    msbnb_cuda_free(x), msbnb_cuda_free(y);
    msbnb_cuda_linear_free(dl);
    msbnb_cuda_ctx_free(ctx);
    msbnb_linear_free(l);
    free(w);
}

/* Forward again with the M = 1 chunked 4-bit kernel (gemv4_m1, bias epilogue included)
 * forced wherever it applies: by default it only runs from 32 M weights. */
static void test_cuda_linear_forward_chunked_m1_kernel_matches_cpu(void) {
    setenv("MSBNB_CUDA_GEMV4_M1", "1", 1);
    test_cuda_linear_forward_matches_cpu();
    unsetenv("MSBNB_CUDA_GEMV4_M1");
}

/* Forward again with the M = 1 fold kernel (gemv4_fold: f32 and bf16 activations, bias) on
 * bnb's packing, forced wherever it applies (K % 32 == 0): by default it only runs for layers
 * uploaded with the slice-major layout. */
static void test_cuda_linear_forward_fold_m1_kernel_matches_cpu(void) {
    setenv("MSBNB_CUDA_GEMV4_FOLD", "1", 1);
    test_cuda_linear_forward_matches_cpu();
    unsetenv("MSBNB_CUDA_GEMV4_FOLD");
}

/* The fold kernel on the slice-major layout (MSBNB_CUDA_FOLD_LAYOUT=1 at upload), forced
 * (MSBNB_CUDA_GEMV4_FOLD=1) at M = 1 for every launch shape, and the other paths (M = 3, 17)
 * of such a layer; 4-bit formats with blocks 32..1024 (one scale per chunk, per block, per
 * slice), K with a partial last slice (2080, 160, 96: one scale per chunk) and K = 32768
 * (more slices than SMs), N not a multiple of 8 (padded rows), f32 and bf16 activations,
 * with and without bias. Several layers per context (the scratch is reused and grown). */
static void test_cuda_linear_forward_fold_layout_matches_cpu(void) {
    static const fmt_t fmts[] = {{"nf4-b64", MSBNB_QTYPE_NF4, 1, 64, 0},     {"nf4-dq-b64", MSBNB_QTYPE_NF4, 1, 64, 1},
                                 {"fp4-b128", MSBNB_QTYPE_FP4, 1, 128, 0},   {"fp4-dq-b32", MSBNB_QTYPE_FP4, 1, 32, 1},
                                 {"nf4-b256", MSBNB_QTYPE_NF4, 1, 256, 0},   {"nf4-dq-b1024", MSBNB_QTYPE_NF4, 1, 1024, 1},
                                 {"fp4-b32", MSBNB_QTYPE_FP4, 1, 32, 0}};
    static const int64_t shapes[][2] = {{64, 3}, {4096, 37}, {2080, 9}, {160, 17}, {32768, 3}, {384, 133}, {128, 1001}, {96, 8}};
    static const char *cfgs[] = {"16x4", "16x8", "32x2"};
    msbnb_cuda_ctx *ctx = NULL;
    CHECK_OK(msbnb_cuda_ctx_create(&ctx));
    if (!ctx) return;
    setenv("MSBNB_CUDA_FOLD_LAYOUT", "1", 1);
    setenv("MSBNB_CUDA_GEMV4_FOLD", "1", 1);
    int c = 0;
    for (size_t f = 0; f < sizeof fmts / sizeof *fmts; f++)
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++, c++) {
            setenv("MSBNB_CUDA_FOLD_CFG", cfgs[c % 3], 1);
            run_forward(ctx, &fmts[f], shapes[s][0], shapes[s][1], 1, c & 1, (c >> 1) & 1);
            if (s % 3 == 0) run_forward(ctx, &fmts[f], shapes[s][0], shapes[s][1], c % 2 ? 3 : 17, c & 1, 1);
        }
    unsetenv("MSBNB_CUDA_FOLD_CFG");
    unsetenv("MSBNB_CUDA_GEMV4_FOLD");
    unsetenv("MSBNB_CUDA_FOLD_LAYOUT");
    msbnb_cuda_ctx_free(ctx);
}

int main(void) {
    if (cu_skip_if_no_device()) return CU_SKIP_CODE;
    tu_rng_init(&g_rng, tu_seed());
    RUN_TEST(test_cuda_linear_forward_matches_cpu);
    RUN_TEST(test_cuda_linear_forward_chunked_m1_kernel_matches_cpu);
    RUN_TEST(test_cuda_linear_forward_fold_m1_kernel_matches_cpu);
    RUN_TEST(test_cuda_linear_forward_fold_layout_matches_cpu);
    RUN_TEST(test_cuda_linear_int8_outliers_match_cpu);
    RUN_TEST(test_cuda_linear_int8_mma_large_shapes_match_cpu);
    RUN_TEST(test_cuda_linear_int8_m1_nonfinite_gives_nan);
    RUN_TEST(test_cuda_linear_back_to_back_calls_match_synchronized);
    RUN_TEST(test_cuda_linear_backward_dx_matches_cpu);
    RUN_TEST(test_cuda_linear_rejects_bad_input);
    return tu_finish();
}

#else
int main(void) {
    printf("SKIPPED: CUDA backend not built (no CUDA device code)\n");
    return 77;
}
#endif
