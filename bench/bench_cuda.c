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
 * Usage: bench_cuda [--quick | --adam | --m1]     Output: a markdown table for bench/RESULTS.md.
 * --quick: (4096, 14336) only; --adam: the AdamW table only; --m1: M = 1 rows of every shape. */
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

/* AdamW step over 256 M parameters (1 GiB of f32 per array: nothing stays in L2). */
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
    /* small non-zero data (0x3c3c3c3c ~ 0.0115 as f32), zero 8-bit states */
    OK(msbnb_cuda_memset(c.p, 0x3c, b));
    OK(msbnb_cuda_memset(c.g, 0x3c, b));
    OK(msbnb_cuda_memset(c.m, 0, b));
    OK(msbnb_cuda_memset(c.v, 0, b));
    OK(msbnb_cuda_memset(c.qm, 0, (size_t)c.n));
    OK(msbnb_cuda_memset(c.qv, 0, (size_t)c.n));
    OK(msbnb_cuda_memset(c.am, 0, nb * 4));
    OK(msbnb_cuda_memset(c.av, 0, nb * 4));
    double t32 = time_calls(adam32_call, &c, 1, 3, 9);
    double t8 = time_calls(adam8_call, &c, 1, 3, 9);
    double b32 = 28.0 * (double)c.n, b8 = 16.0 * (double)c.n + 16.0 * (double)nb;
    printf("\n| AdamW step, 256 M params | ms | bytes moved / time | %% copy | time vs f32 |\n|---|---|---|---|---|\n");
    printf("| f32 states (msbnb_cuda_adamw_step) | %.3f | %.2f TB/s | %.0f %% | 1.00 |\n", t32 * 1e3, b32 / t32 / 1e12,
           100.0 * b32 / t32 / copy_bw);
    printf("| 8-bit blockwise states (msbnb_cuda_adamw8bit_step) | %.3f | %.2f TB/s | %.0f %% | %.2f |\n", t8 * 1e3,
           b8 / t8 / 1e12, 100.0 * b8 / t8 / copy_bw, t8 / t32);
    msbnb_cuda_free(c.p), msbnb_cuda_free(c.m), msbnb_cuda_free(c.v), msbnb_cuda_free(c.g);
    msbnb_cuda_free(c.qm), msbnb_cuda_free(c.qv), msbnb_cuda_free(c.am), msbnb_cuda_free(c.av);
}

static int copies_for(int64_t bytes) {
    int64_t r = ((int64_t)512 << 20) / bytes + 1;
    return (int)(r < 2 ? 2 : r > 64 ? 64 : r);
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
        for (int mi = 0; mi < (m1 ? 1 : 4); mi++) {
            const int64_t M = Ms[mi];
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
    if (!m1) bench_adamw(copy_bw);
    msbnb_cuda_ctx_free(ctx);
    return 0;
}

#else
int main(void) {
    printf("bench_cuda: SKIPPED: CUDA backend not built\n");
    return 0;
}
#endif
