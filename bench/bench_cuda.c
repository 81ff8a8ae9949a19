/* Linear forward on the GPU: msbnb's CUDA layer (NF4, NF4 + double quant, LLM.int8, INT4)
 * beside cuBLAS bf16 and a device-to-device copy measured in the same run, at the MLP shapes
 * of a 7-8B LLaMA and M = 1, 16, 256, 4096 rows of bf16 activations.
 *
 * Weights are cold: each call in a timed batch uses the next of R device copies of the
 * layer, R * weight bytes >= 512 MiB (10x the H100's 50 MB L2). Time = median over batches
 * of (batch time / calls), CUDA events around each batch. "TB/s" = weight bytes / time;
 * "% copy" = that over the copy bandwidth (bytes read + written per second by
 * cudaMemcpy device-to-device of 1 GiB), the practical ceiling of a weight stream.
 *
 * Usage: bench_cuda [--quick | --adam | --m1 | --int8 | --fold]   Output: markdown tables for bench/RESULTS.md.
 * --quick: (4096, 14336) only; --adam: the AdamW table only; --m1: M = 1 rows of every shape;
 * --int8: LLM.int8 at M = 1..16, kernel variants side by side; --fold: the 4-bit M = 1
 * kernel variants side by side. */
#define _POSIX_C_SOURCE 200112L /* setenv */
#include "benchutil.h"
#include "msbnb/msbnb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef MSBNB_HAVE_CUDA
#include <cuda_runtime.h>

#define DIE(...)                                                                          \
    do {                                                                                  \
        fprintf(stderr, __VA_ARGS__);                                                     \
        fprintf(stderr, " (%s)\n", msbnb_last_error());                                   \
        exit(1);                                                                          \
    } while (0)
#define OK(call)                                                                          \
    do {                                                                                  \
        if ((call) != MSBNB_OK) DIE("%s failed", #call);                                  \
    } while (0)

typedef void (*call_fn)(void *ctx, int copy);

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median seconds per call: `batches` batches of `per_batch` calls (copy index rotating). */
static double time_calls(call_fn fn, void *ctx, int copies, int per_batch, int batches) {
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    for (int i = 0; i < copies && i < 4; i++) fn(ctx, i); /* warm-up */
    double t[64];
    if (batches > 64) batches = 64;
    int c = 0;
    for (int b = 0; b < batches; b++) {
        cudaEventRecord(e0, 0);
        for (int i = 0; i < per_batch; i++) fn(ctx, c++ % copies);
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        t[b] = ms * 1e-3 / per_batch;
    }
    if (cudaGetLastError() != cudaSuccess) DIE("CUDA error while timing");
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    qsort(t, (size_t)batches, sizeof *t, cmp_d);
    return t[batches / 2];
}

typedef struct {
    void *dst, *src;
    size_t bytes;
} copy_ctx;
static void copy_call(void *p, int i) {
    copy_ctx *c = p;
    (void)i;
    OK(msbnb_cuda_memcpy(c->dst, c->src, c->bytes, MSBNB_CUDA_DEVICE_TO_DEVICE));
}

typedef struct {
    msbnb_cuda_ctx *ctx;
    msbnb_cuda_linear_t **layers; /* copies */
    uint16_t **w;                 /* cuBLAS copies */
    void *x, *y;
    int64_t M, N, K;
} lin_ctx;
static void layer_call(void *p, int i) {
    lin_ctx *c = p;
    OK(msbnb_cuda_linear_forward(c->ctx, c->layers[i], c->y, c->x, MSBNB_DTYPE_BF16, c->M));
}
static void cublas_call(void *p, int i) {
    lin_ctx *c = p;
    OK(msbnb_cuda_gemm_bf16(c->ctx, c->y, c->x, c->w[i], c->M, c->N, c->K));
}

typedef struct {
    float *p, *m, *v, *g, *am, *av;
    uint8_t *qm, *qv;
    int64_t n;
    msbnb_cuda_adamw h;
} adam_ctx;
static void adam32_call(void *c_, int i) {
    adam_ctx *c = c_;
    (void)i;
    OK(msbnb_cuda_adamw_step(c->p, c->m, c->v, c->g, c->n, &c->h));
}
static void adam8_call(void *c_, int i) {
    adam_ctx *c = c_;
    (void)i;
    OK(msbnb_cuda_adamw8bit_step(c->p, c->qm, c->am, c->qv, c->av, c->g, c->n, &c->h, NULL, NULL));
}

/* Fills the n floats at d (device) with N(0, scale) values: 16 M drawn on the host, tiled. */
static void fill_device_normal(float *d, int64_t n, uint64_t seed, float scale) {
    const int64_t tile = (int64_t)16 << 20;
    float *h = malloc((size_t)tile * 4);
    if (!h) DIE("out of memory");
    bu_fill_normal(h, (size_t)tile, seed, scale);
    for (int64_t i = 0; i < n; i += tile)
        OK(msbnb_cuda_memcpy(d + i, h, (size_t)(n - i < tile ? n - i : tile) * 4, MSBNB_CUDA_HOST_TO_DEVICE));
    free(h);
}

/* AdamW step over 256 M parameters (1 GiB of f32 per array: nothing stays in L2), random
 * p and g, states after 8 warm-up steps (not zeros: the 8-bit coder's table lookups would
 * all hit one address). MSBNB_BENCH_TORCH_ADAMW_MS: torch.optim.AdamW(fused=True) time for
 * the same count measured in the same run (bench/torch_adamw.py), printed as the baseline. */
static void bench_adamw(double copy_bw) {
    adam_ctx c;
    memset(&c, 0, sizeof c);
    c.n = (int64_t)256 << 20;
    c.h = msbnb_cuda_adamw_default();
    const size_t b = (size_t)c.n * 4, nb = (size_t)msbnb_cuda_adamw8bit_nblocks(c.n);
    OK(msbnb_cuda_malloc((void **)&c.p, b));
    OK(msbnb_cuda_malloc((void **)&c.m, b));
    OK(msbnb_cuda_malloc((void **)&c.v, b));
    OK(msbnb_cuda_malloc((void **)&c.g, b));
    OK(msbnb_cuda_malloc((void **)&c.qm, (size_t)c.n));
    OK(msbnb_cuda_malloc((void **)&c.qv, (size_t)c.n));
    OK(msbnb_cuda_malloc((void **)&c.am, nb * 4));
    OK(msbnb_cuda_malloc((void **)&c.av, nb * 4));
    fill_device_normal(c.p, c.n, 11, 0.02f);
    fill_device_normal(c.g, c.n, 12, 1e-3f);
    OK(msbnb_cuda_memset(c.m, 0, b));
    OK(msbnb_cuda_memset(c.v, 0, b));
    OK(msbnb_cuda_memset(c.qm, 0, (size_t)c.n));
    OK(msbnb_cuda_memset(c.qv, 0, (size_t)c.n));
    OK(msbnb_cuda_memset(c.am, 0, nb * 4));
    OK(msbnb_cuda_memset(c.av, 0, nb * 4));
    for (int i = 0; i < 8; i++) {
        adam32_call(&c, 0);
        adam8_call(&c, 0);
    }
    double t32 = time_calls(adam32_call, &c, 1, 3, 9);
    /* the 8-bit step's variants (environment knobs of src/cuda/adamw_cuda.cu), the default
     * twice for the run-to-run spread */
    static const struct {
        const char *name, *var, *val;
    } v8[] = {{"8-bit blockwise states, table coder + L2 prefetch 2 blocks ahead (default)", NULL, NULL},
              {"8-bit, default again (spread)", NULL, NULL},
              {"8-bit, no L2 prefetch (MSBNB_CUDA_ADAM8_PF=0)", "MSBNB_CUDA_ADAM8_PF", "0"},
              {"8-bit, L2 prefetch 3 blocks ahead (MSBNB_CUDA_ADAM8_PF=3)", "MSBNB_CUDA_ADAM8_PF", "3"},
              {"8-bit, L2 prefetch 4 blocks ahead (MSBNB_CUDA_ADAM8_PF=4)", "MSBNB_CUDA_ADAM8_PF", "4"},
              {"8-bit, default a third time (spread)", NULL, NULL},
              {"8-bit blockwise states, search kernel (MSBNB_CUDA_ADAM8_REF=1)", "MSBNB_CUDA_ADAM8_REF", "1"}};
    double t8[sizeof v8 / sizeof *v8];
    for (size_t i = 0; i < sizeof v8 / sizeof *v8; i++) {
        if (v8[i].var) setenv(v8[i].var, v8[i].val, 1);
        t8[i] = time_calls(adam8_call, &c, 1, 3, 9);
        if (v8[i].var) unsetenv(v8[i].var);
    }
    const char *te = getenv("MSBNB_BENCH_TORCH_ADAMW_MS");
    double tt = te ? atof(te) * 1e-3 : 0.0;
    double b32 = 28.0 * (double)c.n, b8 = 16.0 * (double)c.n + 16.0 * (double)nb;
    printf("\n| AdamW step, 256 M params | ms | bytes moved / time | %% copy | time vs f32 | time vs torch fused |\n"
           "|---|---|---|---|---|---|\n");
    if (tt > 0)
        printf("| torch.optim.AdamW(fused=True), f32 (same run) | %.3f | %.2f TB/s | %.0f %% | %.2f | 1.00 |\n",
               tt * 1e3, b32 / tt / 1e12, 100.0 * b32 / tt / copy_bw, tt / t32);
    printf("| f32 states (msbnb_cuda_adamw_step) | %.3f | %.2f TB/s | %.0f %% | 1.00 | %s%.2f |\n", t32 * 1e3,
           b32 / t32 / 1e12, 100.0 * b32 / t32 / copy_bw, tt > 0 ? "" : "n/a ", tt > 0 ? t32 / tt : 0.0);
    for (size_t i = 0; i < sizeof v8 / sizeof *v8; i++)
        printf("| %s | %.3f | %.2f TB/s | %.0f %% | %.2f | %s%.2f |\n", v8[i].name, t8[i] * 1e3, b8 / t8[i] / 1e12,
               100.0 * b8 / t8[i] / copy_bw, t8[i] / t32, tt > 0 ? "" : "n/a ", tt > 0 ? t8[i] / tt : 0.0);
    msbnb_cuda_free(c.p), msbnb_cuda_free(c.m), msbnb_cuda_free(c.v), msbnb_cuda_free(c.g);
    msbnb_cuda_free(c.qm), msbnb_cuda_free(c.qv), msbnb_cuda_free(c.am), msbnb_cuda_free(c.av);
}

static int copies_for(int64_t bytes) {
    int64_t r = ((int64_t)512 << 20) / bytes + 1;
    return (int)(r < 2 ? 2 : r > 64 ? 64 : r);
}

/* --int8: LLM.int8 at M = 1..16 on the three shapes, three kernel variants in one run (the
 * tensor-core kernel launched with PDL, the same without PDL, the dp4a kernel), beside
 * cuBLAS bf16 at the same M. */
static void bench_int8(msbnb_cuda_ctx *ctx, double copy_bw) {
    static const int64_t shapes[][2] = {{4096, 4096}, {4096, 14336}, {14336, 4096}};
    static const int64_t Ms[] = {1, 4, 16};
    static const struct {
        const char *name, *var, *val;
        int m1; /* 1: a variant of the M = 1 path only */
    } vars[] = {{"int8, tile-per-block tensor cores + PDL, quantize kernel with PDL at M <= 4, 3 blocks / SM at M <= 8 "
                 "past one wave (default)",
                 NULL, NULL, 0},
                {"int8, default without PDL", "MSBNB_CUDA_PDL", "0", 0},
                {"int8, quantize kernel without PDL (MSBNB_CUDA_I8Q_PDL=0)", "MSBNB_CUDA_I8Q_PDL", "0", 0},
                {"int8, pipelined persistent tensor cores + PDL", "MSBNB_CUDA_I8_MMA", "2", 1},
                {"int8, default at 2 blocks / SM (MSBNB_CUDA_I8_MINB=2)", "MSBNB_CUDA_I8_MINB", "2", 0},
                {"int8, default at 3 blocks / SM (MSBNB_CUDA_I8_MINB=3)", "MSBNB_CUDA_I8_MINB", "3", 0},
                {"int8, default at 4 blocks / SM (MSBNB_CUDA_I8_MINB=4)", "MSBNB_CUDA_I8_MINB", "4", 0}};
    const int nvars = sizeof vars / sizeof *vars;
    const char *only = getenv("MSBNB_BENCH_SHAPE"); /* one shape (0..2), e.g. under ncu */
    printf("| (K, N) | M | weights | ms | weight TB/s | %% copy | vs cuBLAS |\n|---|---|---|---|---|---|---|\n");
    for (int s = 0; s < 3; s++) {
        if (only && atoi(only) != s) continue;
        const int64_t K = shapes[s][0], N = shapes[s][1];
        float *wf = malloc((size_t)(N * K) * 4);
        uint16_t *wh = malloc((size_t)(N * K) * 2);
        bu_fill_normal(wf, (size_t)(N * K), 7 + (uint64_t)s, 0.02f);
        OK(msbnb_convert(wh, MSBNB_DTYPE_BF16, wf, MSBNB_DTYPE_F32, N * K));
        const int rb = copies_for(N * K * 2);
        uint16_t *wb[64];
        for (int i = 0; i < rb; i++) {
            OK(msbnb_cuda_malloc((void **)&wb[i], (size_t)(N * K) * 2));
            OK(msbnb_cuda_memcpy(wb[i], wh, (size_t)(N * K) * 2, MSBNB_CUDA_HOST_TO_DEVICE));
        }
        msbnb_qparams p = msbnb_qparams_default(MSBNB_QTYPE_INT8);
        msbnb_linear_t *hl;
        OK(msbnb_linear_create(&hl, K, N, wf, NULL, &p));
        const int64_t wbytes = msbnb_linear_weight_bytes(hl);
        const int rk = copies_for(wbytes);
        msbnb_cuda_linear_t *layers[64];
        for (int i = 0; i < rk; i++) OK(msbnb_cuda_linear_upload(&layers[i], hl));
        msbnb_linear_free(hl);
        float *xf = malloc((size_t)(16 * K) * 4);
        uint16_t *xh = malloc((size_t)(16 * K) * 2);
        bu_fill_normal(xf, (size_t)(16 * K), 99, 1.0f);
        OK(msbnb_convert(xh, MSBNB_DTYPE_BF16, xf, MSBNB_DTYPE_F32, 16 * K));
        void *dx, *dy;
        OK(msbnb_cuda_malloc(&dx, (size_t)(16 * K) * 2));
        OK(msbnb_cuda_malloc(&dy, (size_t)(16 * N) * 2));
        OK(msbnb_cuda_memcpy(dx, xh, (size_t)(16 * K) * 2, MSBNB_CUDA_HOST_TO_DEVICE));
        for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++) {
            const int64_t M = Ms[mi];
            lin_ctx lc = {ctx, layers, wb, dx, dy, M, N, K};
            double tb = time_calls(cublas_call, &lc, rb, 32, 15);
            printf("| (%lld, %lld) | %lld | cuBLAS bf16 | %.4f | %.2f | %.0f %% | 1.00 |\n", (long long)K, (long long)N,
                   (long long)M, tb * 1e3, (double)(N * K * 2) / tb / 1e12, 100.0 * (double)(N * K * 2) / tb / copy_bw);
            for (int v = 0; v < nvars; v++) {
                if (vars[v].m1 && M != 1) continue;
                if (vars[v].var) setenv(vars[v].var, vars[v].val, 1);
                double t = time_calls(layer_call, &lc, rk, 32, 15);
                if (vars[v].var) unsetenv(vars[v].var);
                printf("| (%lld, %lld) | %lld | %s | %.4f | %.2f | %.0f %% | %.2f |\n", (long long)K, (long long)N,
                       (long long)M, vars[v].name, t * 1e3, (double)wbytes / t / 1e12,
                       100.0 * (double)wbytes / t / copy_bw, tb / t);
            }
            fflush(stdout);
        }
        for (int i = 0; i < rk; i++) msbnb_cuda_linear_free(layers[i]);
        for (int i = 0; i < rb; i++) msbnb_cuda_free(wb[i]);
        msbnb_cuda_free(dx), msbnb_cuda_free(dy);
        free(wf), free(wh), free(xf), free(xh);
    }
}

/* --fold: the 4-bit GEMV at M = 1 on the three shapes, kernel variants side by side (the
 * fold kernel in its launch shapes, with and without PDL, and the FFMA kernels it replaces),
 * beside cuBLAS bf16 at M = 1. */
static void bench_fold(msbnb_cuda_ctx *ctx, double copy_bw) {
    static const int64_t shapes[][2] = {{4096, 4096}, {4096, 14336}, {14336, 4096}};
    static const struct {
        const char *name;
        msbnb_qtype t;
        int dq;
    } kinds[] = {{"nf4", MSBNB_QTYPE_NF4, 0}, {"nf4+dq", MSBNB_QTYPE_NF4, 1}, {"fp4", MSBNB_QTYPE_FP4, 0}};
    static const struct {
        const char *name, *var, *val, *var2, *val2, *var3, *val3;
        int all; /* 0: nf4 and nf4+dq only */
    } vars[] = {{"fold, slice-major layout, 32x2 + PDL (opt-in layout)", NULL, NULL, NULL, NULL, NULL, NULL, 1},
                {"FFMA kernels + PDL (default)", "MSBNB_CUDA_GEMV4_FOLD", "0", NULL, NULL, NULL, NULL, 1},
                {"FFMA kernels, no PDL", "MSBNB_CUDA_GEMV4_FOLD", "0", "MSBNB_CUDA_PDL", "0", NULL, NULL, 1},
                {"word kernel (gemv4_fast) + PDL", "MSBNB_CUDA_GEMV4_FOLD", "0", "MSBNB_CUDA_GEMV4_M1", "0", NULL, NULL,
                 0},
                {"chunk kernel (gemv4_m1) + PDL", "MSBNB_CUDA_GEMV4_FOLD", "0", "MSBNB_CUDA_GEMV4_M1", "1", NULL, NULL, 0},
                {"chunk kernel, R4 U1 (MSBNB_CUDA_M1_VAR=1) + PDL", "MSBNB_CUDA_GEMV4_FOLD", "0", "MSBNB_CUDA_GEMV4_M1",
                 "1", "MSBNB_CUDA_M1_VAR", "1", 0},
                {"chunk kernel, R2 U2 (MSBNB_CUDA_M1_VAR=2) + PDL", "MSBNB_CUDA_GEMV4_FOLD", "0", "MSBNB_CUDA_GEMV4_M1",
                 "1", "MSBNB_CUDA_M1_VAR", "2", 0},
                {"chunk kernel, R4 U2 (MSBNB_CUDA_M1_VAR=3) + PDL", "MSBNB_CUDA_GEMV4_FOLD", "0", "MSBNB_CUDA_GEMV4_M1",
                 "1", "MSBNB_CUDA_M1_VAR", "3", 0},
                {"chunk kernel R4 U1, no lookups (timing only, wrong results) + PDL", "MSBNB_CUDA_GEMV4_FOLD", "0",
                 "MSBNB_CUDA_GEMV4_M1", "1", "MSBNB_CUDA_M1_VAR", "9", 0},
                {"chunk kernel (gemv4_m1), no PDL", "MSBNB_CUDA_GEMV4_FOLD", "0", "MSBNB_CUDA_GEMV4_M1", "1",
                 "MSBNB_CUDA_PDL", "0", 0}};
    const int nvars = sizeof vars / sizeof *vars;
    printf("| (K, N) | M | weights | kernel | ms | weight TB/s | %% copy | vs cuBLAS |\n"
           "|---|---|---|---|---|---|---|---|\n");
    for (int s = 0; s < 3; s++) {
        const int64_t K = shapes[s][0], N = shapes[s][1];
        float *wf = malloc((size_t)(N * K) * 4);
        uint16_t *wh = malloc((size_t)(N * K) * 2);
        bu_fill_normal(wf, (size_t)(N * K), 7 + (uint64_t)s, 0.02f);
        OK(msbnb_convert(wh, MSBNB_DTYPE_BF16, wf, MSBNB_DTYPE_F32, N * K));
        const int rb = copies_for(N * K * 2);
        uint16_t *wb[64];
        for (int i = 0; i < rb; i++) {
            OK(msbnb_cuda_malloc((void **)&wb[i], (size_t)(N * K) * 2));
            OK(msbnb_cuda_memcpy(wb[i], wh, (size_t)(N * K) * 2, MSBNB_CUDA_HOST_TO_DEVICE));
        }
        float *xf = malloc((size_t)K * 4);
        uint16_t *xh = malloc((size_t)K * 2);
        bu_fill_normal(xf, (size_t)K, 99, 1.0f);
        OK(msbnb_convert(xh, MSBNB_DTYPE_BF16, xf, MSBNB_DTYPE_F32, K));
        void *dx, *dy;
        OK(msbnb_cuda_malloc(&dx, (size_t)K * 2));
        OK(msbnb_cuda_malloc(&dy, (size_t)N * 2));
        OK(msbnb_cuda_memcpy(dx, xh, (size_t)K * 2, MSBNB_CUDA_HOST_TO_DEVICE));
        lin_ctx lc = {ctx, NULL, wb, dx, dy, 1, N, K};
        double tb = time_calls(cublas_call, &lc, rb, 32, 15);
        printf("| (%lld, %lld) | 1 | bf16 | cuBLAS | %.4f | %.2f | %.0f %% | 1.00 |\n", (long long)K, (long long)N,
               tb * 1e3, (double)(N * K * 2) / tb / 1e12, 100.0 * (double)(N * K * 2) / tb / copy_bw);
        for (int k = 0; k < 3; k++) {
            msbnb_qparams p = msbnb_qparams_default(kinds[k].t);
            p.double_quant = kinds[k].dq;
            p.block = 64;
            msbnb_linear_t *hl;
            OK(msbnb_linear_create(&hl, K, N, wf, NULL, &p));
            const int64_t wbytes = msbnb_linear_weight_bytes(hl);
            const int rk = copies_for(wbytes);
            msbnb_cuda_linear_t *layers[64];
            setenv("MSBNB_CUDA_FOLD_LAYOUT", "1", 1); /* both layouts on the device */
            for (int i = 0; i < rk; i++) OK(msbnb_cuda_linear_upload(&layers[i], hl));
            unsetenv("MSBNB_CUDA_FOLD_LAYOUT");
            msbnb_linear_free(hl);
            lc.layers = layers;
            for (int v = 0; v < nvars; v++) {
                if (!vars[v].all && kinds[k].t == MSBNB_QTYPE_FP4) continue;
                if (vars[v].var) setenv(vars[v].var, vars[v].val, 1);
                if (vars[v].var2) setenv(vars[v].var2, vars[v].val2, 1);
                if (vars[v].var3) setenv(vars[v].var3, vars[v].val3, 1);
                double t = time_calls(layer_call, &lc, rk, 32, 15);
                if (vars[v].var) unsetenv(vars[v].var);
                if (vars[v].var2) unsetenv(vars[v].var2);
                if (vars[v].var3) unsetenv(vars[v].var3);
                printf("| (%lld, %lld) | 1 | %s | %s | %.4f | %.2f | %.0f %% | %.2f |\n", (long long)K, (long long)N,
                       kinds[k].name, vars[v].name, t * 1e3, (double)wbytes / t / 1e12,
                       100.0 * (double)wbytes / t / copy_bw, tb / t);
            }
            fflush(stdout);
            for (int i = 0; i < rk; i++) msbnb_cuda_linear_free(layers[i]);
        }
        for (int i = 0; i < rb; i++) msbnb_cuda_free(wb[i]);
        msbnb_cuda_free(dx), msbnb_cuda_free(dy);
        free(wf), free(wh), free(xf), free(xh);
    }
}

int main(int argc, char **argv) {
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0, m1 = argc > 1 && strcmp(argv[1], "--m1") == 0;
    if (msbnb_cuda_device_count() <= 0) {
        printf("bench_cuda: SKIPPED: no CUDA device\n");
        return 0;
    }
    msbnb_cuda_device_info info;
    OK(msbnb_cuda_device_info_get(&info));
    msbnb_cuda_ctx *ctx;
    OK(msbnb_cuda_ctx_create(&ctx));

    /* the ceiling: device-to-device copy of 1 GiB (read + write bytes) */
    copy_ctx cc = {NULL, NULL, (size_t)1 << 30};
    OK(msbnb_cuda_malloc(&cc.dst, cc.bytes));
    OK(msbnb_cuda_malloc(&cc.src, cc.bytes));
    OK(msbnb_cuda_memset(cc.src, 1, cc.bytes));
    double tcopy = time_calls(copy_call, &cc, 1, 1, 11);
    double copy_bw = 2.0 * (double)cc.bytes / tcopy;
    msbnb_cuda_free(cc.dst);
    msbnb_cuda_free(cc.src);

    printf("## CUDA (%s, %d SMs, %.0f MB L2)\n\n", info.name, info.sm_count, info.l2_bytes / 1e6);
    if (argc > 1 && strcmp(argv[1], "--adam") == 0) { /* the AdamW table only */
        bench_adamw(copy_bw);
        msbnb_cuda_ctx_free(ctx);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--fold") == 0) { /* the 4-bit M = 1 kernel variants only */
        printf("Device-to-device copy: %.2f TB/s (read + write).\n\n", copy_bw / 1e12);
        bench_fold(ctx, copy_bw);
        msbnb_cuda_ctx_free(ctx);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--int8") == 0) { /* the LLM.int8 M <= 16 table only */
        printf("Device-to-device copy: %.2f TB/s (read + write).\n\n", copy_bw / 1e12);
        bench_int8(ctx, copy_bw);
        msbnb_cuda_ctx_free(ctx);
        return 0;
    }
    printf("Device-to-device copy: %.2f TB/s (read + write). bf16 activations; weight bytes include "
           "scales / absmax metadata. `vs cuBLAS` = cuBLAS bf16 time / ours.\n\n",
           copy_bw / 1e12);
    printf("| (K, N) | M | weights | ms | weight TB/s | %% copy | vs cuBLAS |\n");
    printf("|---|---|---|---|---|---|---|\n");

    static const int64_t shapes[][2] = {{4096, 4096}, {4096, 14336}, {14336, 4096}};
    static const int64_t Ms[] = {1, 16, 256, 4096};
    struct {
        const char *name;
        msbnb_qtype t;
        int dq;
        int64_t block;
    } kinds[] = {{"nf4", MSBNB_QTYPE_NF4, 0, 64},
                 {"nf4+dq", MSBNB_QTYPE_NF4, 1, 64},
                 {"fp4", MSBNB_QTYPE_FP4, 0, 64},
                 {"int8 (LLM.int8)", MSBNB_QTYPE_INT8, 0, 0},
                 {"int4 g128", MSBNB_QTYPE_INT4, 0, 128}};
    const int nkinds = sizeof kinds / sizeof *kinds;
    for (int s = quick ? 1 : 0; s < (quick ? 2 : 3); s++) { /* --quick: (4096, 14336) only */
        const int64_t K = shapes[s][0], N = shapes[s][1];
        float *wf = malloc((size_t)(N * K) * 4);
        bu_fill_normal(wf, (size_t)(N * K), 7 + (uint64_t)s, 0.02f);
        uint16_t *wh = malloc((size_t)(N * K) * 2);
        OK(msbnb_convert(wh, MSBNB_DTYPE_BF16, wf, MSBNB_DTYPE_F32, N * K));
        /* cuBLAS copies of the bf16 weight */
        const int rb = copies_for(N * K * 2);
        uint16_t *wb[64];
        for (int i = 0; i < rb; i++) {
            OK(msbnb_cuda_malloc((void **)&wb[i], (size_t)(N * K) * 2));
            OK(msbnb_cuda_memcpy(wb[i], wh, (size_t)(N * K) * 2, MSBNB_CUDA_HOST_TO_DEVICE));
        }
        /* our layers, one host layer per kind uploaded R times */
        msbnb_cuda_linear_t *layers[8][64];
        int rk[8];
        int64_t wbytes[8];
        for (int k = 0; k < nkinds; k++) {
            msbnb_qparams p = msbnb_qparams_default(kinds[k].t);
            p.double_quant = kinds[k].dq;
            if (kinds[k].block) p.block = kinds[k].block;
            msbnb_linear_t *hl;
            OK(msbnb_linear_create(&hl, K, N, wf, NULL, &p));
            wbytes[k] = msbnb_linear_weight_bytes(hl);
            rk[k] = copies_for(wbytes[k]);
            for (int i = 0; i < rk[k]; i++) OK(msbnb_cuda_linear_upload(&layers[k][i], hl));
            msbnb_linear_free(hl);
        }
        const int64_t maxm = Ms[3];
        float *xf = malloc((size_t)(maxm * K) * 4);
        uint16_t *xh = malloc((size_t)(maxm * K) * 2);
        bu_fill_normal(xf, (size_t)(maxm * K), 99, 1.0f);
        OK(msbnb_convert(xh, MSBNB_DTYPE_BF16, xf, MSBNB_DTYPE_F32, maxm * K));
        void *dx, *dy;
        OK(msbnb_cuda_malloc(&dx, (size_t)(maxm * K) * 2));
        OK(msbnb_cuda_malloc(&dy, (size_t)(maxm * N) * 2));
        OK(msbnb_cuda_memcpy(dx, xh, (size_t)(maxm * K) * 2, MSBNB_CUDA_HOST_TO_DEVICE));
        const char *onlym = getenv("MSBNB_BENCH_M"); /* one M, e.g. for an A/B of two builds */
        for (int mi = 0; mi < (m1 ? 1 : 4); mi++) {
            const int64_t M = Ms[mi];
            if (onlym && atoll(onlym) != M) continue;
            const int per = M >= 1024 ? 4 : 32, nb = M >= 1024 ? 7 : 15;
            lin_ctx lc = {ctx, NULL, wb, dx, dy, M, N, K};
            double tb = time_calls(cublas_call, &lc, rb, per, nb);
            double bb = (double)(N * K * 2);
            printf("| (%lld, %lld) | %lld | cuBLAS bf16 | %.4f | %.2f | %.0f %% | 1.00 |\n", (long long)K,
                   (long long)N, (long long)M, tb * 1e3, bb / tb / 1e12, 100.0 * bb / tb / copy_bw);
            for (int k = 0; k < nkinds; k++) {
                lc.layers = layers[k];
                double t = time_calls(layer_call, &lc, rk[k], per, nb);
                double b = (double)wbytes[k];
                printf("| (%lld, %lld) | %lld | %s | %.4f | %.2f | %.0f %% | %.2f |\n", (long long)K, (long long)N,
                       (long long)M, kinds[k].name, t * 1e3, b / t / 1e12, 100.0 * b / t / copy_bw, tb / t);
            }
            fflush(stdout);
        }
        for (int k = 0; k < nkinds; k++)
            for (int i = 0; i < rk[k]; i++) msbnb_cuda_linear_free(layers[k][i]);
        for (int i = 0; i < rb; i++) msbnb_cuda_free(wb[i]);
        msbnb_cuda_free(dx);
        msbnb_cuda_free(dy);
        free(wf), free(wh), free(xf), free(xh);
    }
    if (!m1 && !getenv("MSBNB_BENCH_M")) bench_adamw(copy_bw);
    msbnb_cuda_ctx_free(ctx);
    return 0;
}

#else
int main(void) {
    printf("bench_cuda: SKIPPED: CUDA backend not built\n");
    return 0;
}
#endif
