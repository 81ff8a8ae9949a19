/* Optimizer step and LoRA overhead on the CPU.
 *
 * 1. One AdamW update (msbnb_optim_step: gradient-norm pass, the update, zeroing the
 *    gradients) over a 16M-parameter tensor, f32 and 8-bit states, per kernel tier. Bytes
 *    moved per parameter: the norm pass reads g (4); then f32 states read p, g, m, v and
 *    write p, m, v, g (zeroed): 36 in all; 8-bit states read p, g and two codes and write
 *    p, g and two codes: 24 (block absmax ignored). On 1 and 2 update threads
 *    (msbnb_optim_set_threads; the norm pass is sequential by design). GB/s is that
 *    traffic over the median time; "of copy" compares it with the one-thread memcpy
 *    bandwidth measured in the same run; "vs f32" is the f32-state step's time over this
 *    one's, same tier and threads, same run (> 1: faster than f32 AdamW). The scalar tier
 *    (the reference) runs on one thread only.
 *    Then the update kernels alone, without the step's sequential gradient-norm pass
 *    (same bytes less the norm's 4): f32 AdamW + zeroing g, the fused 8-bit kernel, and
 *    the composed 8-bit sequence the fused kernel replaced (dequantize, update,
 *    re-quantize through the functional API; one thread), best tier.
 * 2. A LoRA (r = 8) layer's forward and forward+backward against its base alone, f32 and
 *    NF4 bases of 4096 x 4096, for 1 and 128 rows: the adapter's cost.
 *
 * Usage: bench_optim [--quick] */
#include "benchutil.h"
#include "internal.h"
#include "msbnb/msbnb.h"
#include "nn/adamw8_kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRY(call)                                                                          \
    do {                                                                                   \
        msbnb_status st_ = (call);                                                         \
        if (st_ != MSBNB_OK) {                                                             \
            fprintf(stderr, "%s failed: %s (%s)\n", #call, msbnb_status_str(st_),          \
                    msbnb_last_error());                                                   \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

typedef struct {
    msbnb_optim_t *o;
    float *g, *g0;
    int64_t n;
} step_ctx;

static void run_step(void *arg) {
    step_ctx *c = arg;
    memcpy(c->g, c->g0, (size_t)c->n * sizeof(float)); /* the step zeroes g */
    TRY(msbnb_optim_step(c->o, NULL));
}

typedef struct {
    int kind, nthreads; /* 0 f32, 1 fused 8-bit, 2 composed 8-bit */
    msbnb__adamw_fn f32;
    msbnb__adamw8_fn q8;
    float *p, *g, *g0, *m, *v, *am, *av;
    uint8_t *qm, *qv;
    int64_t n;
    const msbnb__adamw_k *k;
    const msbnb__q8map *mm, *vm;
} kern_ctx;

static void kern_range(void *arg, int64_t c0, int64_t c1, int tid) {
    kern_ctx *c = arg;
    (void)tid;
    int64_t i0 = c0 * 16384, i1 = c1 * 16384 < c->n ? c1 * 16384 : c->n;
    if (c->kind == 0) {
        c->f32(c->p + i0, c->m + i0, c->v + i0, c->g + i0, i1 - i0, c->k);
        memset(c->g + i0, 0, (size_t)(i1 - i0) * sizeof(float));
    } else {
        c->q8(c->p + i0, c->g + i0, c->qm + i0, c->am + i0 / 256, c->qv + i0, c->av + i0 / 256, i1 - i0,
              c->k, c->mm, c->vm);
    }
}

static void run_kern(void *arg) {
    kern_ctx *c = arg;
    memcpy(c->g, c->g0, (size_t)c->n * sizeof(float));
    if (c->kind == 2) {
        TRY(msbnb__adamw8_composed(c->p, c->g, c->qm, c->am, c->qv, c->av, c->n, c->k, c->mm->code,
                                   c->vm->code));
        return;
    }
    msbnb__parallel_for(c->nthreads, (c->n + 16383) / 16384, 1, kern_range, c);
}

static void run_copy(void *arg) {
    step_ctx *c = arg;
    memcpy(c->g, c->g0, (size_t)c->n * sizeof(float));
}

typedef struct {
    msbnb_lora_linear_t *l;
    const msbnb_linear_t *base;
    float *x, *y, *dy, *dx;
    int64_t m;
    int what; /* 0 base fwd, 1 lora fwd, 2 base fwd+bwd(dx), 3 lora fwd+bwd */
} lora_ctx;

static void run_lora(void *arg) {
    lora_ctx *c = arg;
    if (c->what == 0 || c->what == 2) TRY(msbnb_linear_forward(c->base, c->y, c->x, c->m));
    else TRY(msbnb_lora_linear_forward(c->l, c->y, c->x, c->m));
    if (c->what == 2) TRY(msbnb_linear_backward(c->base, c->dx, NULL, NULL, c->dy, NULL, c->m));
    if (c->what == 3) TRY(msbnb_lora_linear_backward(c->l, c->dx, c->dy, c->x, c->m));
}

int main(int argc, char **argv) {
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    const int64_t n = quick ? (1 << 22) : (1 << 24);
    const int reps = quick ? 3 : 7;
    printf("# bench_optim — %s\n\n", bu_machine());

    float *p = malloc((size_t)n * sizeof(float)), *g = malloc((size_t)n * sizeof(float)),
          *g0 = malloc((size_t)n * sizeof(float));
    if (!p || !g || !g0) return 1;
    bu_fill_normal(p, (size_t)n, 1, 1.0f);
    bu_fill_normal(g0, (size_t)n, 2, 0.01f);
    step_ctx cc = {NULL, g, g0, n};
    double t_copy = bu_median_time(run_copy, &cc, 1, reps);
    double copy_bw = bu_memcpy_bandwidth(1, (size_t)n * sizeof(float));
    printf("AdamW step over %lld parameters (the timed call includes a %.1f ms gradient refill,"
           " subtracted)\n\n",
           (long long)n, 1e3 * t_copy);
    printf("| states | tier | threads | median ms | GB/s | of copy (%.1f GB/s) | vs f32 |\n", copy_bw / 1e9);
    printf("|---|---|---:|---:|---:|---:|---:|\n");
    for (int tier = MSBNB_CPU_SCALAR; tier <= MSBNB_CPU_AVX512; tier++) {
        if (!msbnb_cpu_tier_supported((msbnb_cpu_tier)tier)) continue;
        for (int nt = 1; nt <= (tier == MSBNB_CPU_SCALAR ? 1 : 2); nt++) {
            double t_f32 = 0;
            for (int kind = 0; kind < 2; kind++) {
                msbnb_params_t *ps;
                TRY(msbnb_params_create(&ps));
                TRY(msbnb_params_add(ps, "w", p, g, 1, &n));
                msbnb_optim_config c = msbnb_optim_config_default((msbnb_optim_kind)kind);
                msbnb_optim_t *o;
                TRY(msbnb_optim_create(&o, ps, &c));
                TRY(msbnb_optim_set_cpu_tier(o, (msbnb_cpu_tier)tier));
                TRY(msbnb_optim_set_threads(o, nt));
                step_ctx sc = {o, g, g0, n};
                run_step(&sc); /* allocates the state */
                double t = bu_median_time(run_step, &sc, 1, reps) - t_copy;
                if (kind == 0) t_f32 = t;
                double bytes = (double)n * (kind ? 24.0 : 36.0);
                printf("| %s | %s | %d | %.2f | %.2f | %.2f | %.2fx |\n", kind ? "8-bit" : "f32",
                       msbnb_cpu_tier_name((msbnb_cpu_tier)tier), nt, 1e3 * t, bytes / t / 1e9,
                       bytes / t / copy_bw, t_f32 / t);
                msbnb_optim_free(o);
                msbnb_params_free(ps);
            }
        }
    }
    {
        msbnb_cpu_tier best = msbnb_cpu_tier_best();
        float *m = calloc((size_t)n, 4), *v = calloc((size_t)n, 4), *am = calloc((size_t)n / 256 + 1, 4),
              *av = calloc((size_t)n / 256 + 1, 4);
        uint8_t *qm = calloc((size_t)n, 1), *qv = calloc((size_t)n, 1);
        float scode[256], ucode[256];
        memcpy(scode, msbnb_dynamic_map(), sizeof scode);
        TRY(msbnb_create_dynamic_map(ucode, 0));
        static msbnb__q8map mm, vm;
        if (!m || !v || !am || !av || !qm || !qv || msbnb__q8map_init(&mm, scode) || msbnb__q8map_init(&vm, ucode))
            return 1;
        msbnb__adamw_k k = {1.0f, 0.9f, 1.0f - 0.9f, 0.999f, 1.0f - 0.999f, 1.0f - 1e-5f, 1e-3f / 0.19f,
                            0.0447f, 1e-8f};
        printf("\nUpdate kernels alone (%s; no norm pass; 32 / 20 bytes per parameter)\n\n",
               msbnb_cpu_tier_name(best));
        printf("| kernel | threads | median ms | GB/s | vs f32 |\n|---|---:|---:|---:|---:|\n");
        for (int nt = 1; nt <= 2; nt++) {
            double t_f32 = 0;
            for (int kind = 0; kind < 3; kind++) {
                if (kind == 2 && nt > 1) continue;
                kern_ctx kc = {kind, nt, best == MSBNB_CPU_AVX512 ? msbnb__adamw_avx512
                                         : best == MSBNB_CPU_AVX2 ? msbnb__adamw_avx2 : msbnb__adamw_ref,
                               best == MSBNB_CPU_AVX512 ? msbnb__adamw8_avx512
                               : best == MSBNB_CPU_AVX2 ? msbnb__adamw8_avx2 : msbnb__adamw8_ref,
                               p, g, g0, m, v, am, av, qm, qv, n, &k, &mm, &vm};
                double t = bu_median_time(run_kern, &kc, 1, reps) - t_copy;
                if (kind == 0) t_f32 = t;
                double bytes = (double)n * (kind ? 20.0 : 32.0);
                printf("| %s | %d | %.2f | %.2f | %.2fx |\n",
                       kind == 0 ? "f32 AdamW" : kind == 1 ? "8-bit fused" : "8-bit composed (before)", nt,
                       1e3 * t, bytes / t / 1e9, t_f32 / t);
            }
        }
        free(m), free(v), free(am), free(av), free(qm), free(qv);
    }
    free(p);
    free(g);
    free(g0);

    /* LoRA overhead */
    const int64_t K = 4096, N = 4096, rows[2] = {1, 128};
    float *w = malloc((size_t)(K * N) * sizeof(float));
    float *x = malloc((size_t)(128 * K) * sizeof(float)), *y = malloc((size_t)(128 * N) * sizeof(float));
    float *dy = malloc((size_t)(128 * N) * sizeof(float)), *dx = malloc((size_t)(128 * K) * sizeof(float));
    if (!w || !x || !y || !dy || !dx) return 1;
    bu_fill_normal(w, (size_t)(K * N), 3, 0.02f);
    bu_fill_normal(x, (size_t)(128 * K), 4, 1.0f);
    bu_fill_normal(dy, (size_t)(128 * N), 5, 1.0f);
    printf("\nLoRA r=8 on a %lld x %lld layer: adapter cost over the base alone (median ms)\n\n",
           (long long)N, (long long)K);
    printf("| base | rows | fwd base | fwd LoRA | ratio | fwd+bwd base | fwd+bwd LoRA | ratio |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int b = 0; b < 2; b++) {
        msbnb_qparams q = msbnb_qparams_default(b ? MSBNB_QTYPE_NF4 : MSBNB_QTYPE_F32);
        msbnb_lora_linear_t *l;
        msbnb_lora_config cfg = msbnb_lora_config_default();
        TRY(msbnb_lora_linear_from_linear(&l, K, N, w, NULL, &q, &cfg));
        msbnb_lora_adapter a;
        TRY(msbnb_lora_linear_adapter(l, NULL, &a));
        bu_fill_normal(a.B, (size_t)(N * a.rank), 6, 0.01f);
        for (int r = 0; r < 2; r++) {
            double t[4];
            for (int what = 0; what < 4; what++) {
                lora_ctx lc = {l, msbnb_lora_linear_base(l), x, y, dy, dx, rows[r], what};
                t[what] = bu_median_time(run_lora, &lc, 1, reps);
            }
            printf("| %s | %lld | %.3f | %.3f | %.2f | %.3f | %.3f | %.2f |\n", b ? "nf4" : "f32",
                   (long long)rows[r], 1e3 * t[0], 1e3 * t[1], t[1] / t[0], 1e3 * t[2], 1e3 * t[3],
                   t[3] / t[2]);
        }
        msbnb_lora_linear_free(l);
    }
    free(w);
    free(x);
    free(y);
    free(dy);
    free(dx);
    return 0;
}
