/* Optimizer step and LoRA overhead on the CPU.
 *
 * 1. One AdamW update (msbnb_optim_step: gradient-norm pass, the update, zeroing the
 *    gradients) over a 16M-parameter tensor, f32 and 8-bit states, per kernel tier. Bytes
 *    moved per parameter: the norm pass reads g (4); then f32 states read p, g, m, v and
 *    write p, m, v, g (zeroed): 36 in all; 8-bit states read p, g and two codes and write
 *    p, g and two codes: 24 (block absmax ignored). GB/s is that traffic over the median
 *    time; "of copy" compares it with the
 *    memcpy bandwidth measured in the same run (one thread: the step is single-threaded);
 *    "vs scalar" is the speed-up over the scalar reference tier.
 * 2. A LoRA (r = 8) layer's forward and forward+backward against its base alone, f32 and
 *    NF4 bases of 4096 x 4096, for 1 and 128 rows: the adapter's cost.
 *
 * Usage: bench_optim [--quick]                           (threads: MSBNB_THREADS) */
#include "benchutil.h"
#include "msbnb/msbnb.h"

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
    printf("AdamW step over %lld parameters (single-threaded; the timed call includes a %.1f ms"
           " gradient refill, subtracted)\n\n",
           (long long)n, 1e3 * t_copy);
    printf("| states | tier | median ms | GB/s | of copy (%.1f GB/s) | vs scalar |\n", copy_bw / 1e9);
    printf("|---|---|---:|---:|---:|---:|\n");
    for (int kind = 0; kind < 2; kind++) {
        double t_scalar = 0;
        for (int tier = MSBNB_CPU_SCALAR; tier <= MSBNB_CPU_AVX512; tier++) {
            if (!msbnb_cpu_tier_supported((msbnb_cpu_tier)tier)) continue;
            msbnb_params_t *ps;
            TRY(msbnb_params_create(&ps));
            TRY(msbnb_params_add(ps, "w", p, g, 1, &n));
            msbnb_optim_config c = msbnb_optim_config_default((msbnb_optim_kind)kind);
            msbnb_optim_t *o;
            TRY(msbnb_optim_create(&o, ps, &c));
            TRY(msbnb_optim_set_cpu_tier(o, (msbnb_cpu_tier)tier));
            step_ctx sc = {o, g, g0, n};
            double t = bu_median_time(run_step, &sc, 1, reps) - t_copy;
            if (tier == MSBNB_CPU_SCALAR) t_scalar = t;
            double bytes = (double)n * (kind ? 24.0 : 36.0);
            printf("| %s | %s | %.2f | %.2f | %.2f | %.2fx |\n", kind ? "8-bit" : "f32",
                   msbnb_cpu_tier_name((msbnb_cpu_tier)tier), 1e3 * t, bytes / t / 1e9,
                   bytes / t / copy_bw, t_scalar / t);
            msbnb_optim_free(o);
            msbnb_params_free(ps);
        }
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
