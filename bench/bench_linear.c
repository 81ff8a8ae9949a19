/* Linear layer forward on the CPU: f32 (OpenBLAS sgemv/sgemm, the baseline) against bf16,
 * int8 (LLM.int8), int4-g128, nf4 and nf4+dq, at the shapes of a 7-8B LLaMA MLP.
 *
 * Weights are "cold": each timed call uses the next of several copies of the layer whose
 * total exceeds 1.5 GiB, so the weights stream from DRAM, not from the (large) L3, as
 * they do when a model's layers run one after another. The read bandwidth is measured in
 * the same run (benchutil's probe and an AVX-512 probe, both streaming 1 GiB; the larger is
 * the reference), at the start and again (AVX-512 probe) before each kind's rows, because
 * other work on a shared machine changes it: each row's "% of read BW" uses the reading
 * taken just before it (printed in the "read BW" column). The load average is printed.
 * Output: a markdown table for bench/RESULTS.md.
 *
 * Usage: bench_linear [--quick] [--tier scalar|avx2|avx512] [--shape i] [--kind i] [--m M]
 *   (--shape 0..2, --kind 0..5, --m: run only those; threads: MSBNB_THREADS) */
#include "benchutil.h"
#include "msbnb/msbnb.h"

#include <cblas.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const float *p;
    size_t n;
    float sum;
} rd_job;

__attribute__((target("avx512f"))) static void *rd512(void *arg) {
    rd_job *j = arg;
    __m512 a = _mm512_setzero_ps(), b = a, c = a, d = a;
    for (size_t i = 0; i + 64 <= j->n; i += 64) {
        a = _mm512_add_ps(a, _mm512_load_ps(j->p + i));
        b = _mm512_add_ps(b, _mm512_load_ps(j->p + i + 16));
        c = _mm512_add_ps(c, _mm512_load_ps(j->p + i + 32));
        d = _mm512_add_ps(d, _mm512_load_ps(j->p + i + 48));
    }
    j->sum = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
    return NULL;
}

static double simd_read_bw(int nt, size_t bytes) {
    size_t n = bytes / 4;
    float *p = aligned_alloc(64, bytes);
    if (!p) return 0;
    for (size_t i = 0; i < n; i++) p[i] = (float)(i & 7);
    double best = 0;
    double ts[7];
    for (int rep = 0; rep < 7; rep++) {
        pthread_t th[64];
        rd_job jobs[64];
        double t0 = bu_now();
        for (int t = 0; t < nt; t++) {
            size_t b = n * (size_t)t / (size_t)nt / 64 * 64, e = n * (size_t)(t + 1) / (size_t)nt / 64 * 64;
            jobs[t] = (rd_job){p + b, e - b, 0};
            pthread_create(&th[t], NULL, rd512, &jobs[t]);
        }
        for (int t = 0; t < nt; t++) pthread_join(th[t], NULL);
        ts[rep] = bu_now() - t0;
    }
    /* median */
    for (int i = 0; i < 7; i++)
        for (int k = i + 1; k < 7; k++)
            if (ts[k] < ts[i]) {
                double t = ts[i];
                ts[i] = ts[k];
                ts[k] = t;
            }
    best = (double)bytes / ts[3];
    free(p);
    return best;
}

typedef struct {
    msbnb_linear_t **copies;
    int ncopies, next;
    float *y;
    const float *x;
    int64_t m;
} run_ctx;

static void run_forward(void *arg) {
    run_ctx *c = arg;
    msbnb_linear_t *l = c->copies[c->next];
    c->next = (c->next + 1) % c->ncopies;
    if (msbnb_linear_forward(l, c->y, c->x, c->m) != MSBNB_OK) {
        fprintf(stderr, "forward failed: %s\n", msbnb_last_error());
        exit(1);
    }
}

int main(int argc, char **argv) {
    int quick = 0, only_shape = -1, only_kind = -1;
    int64_t only_m = 0;
    msbnb_cpu_tier tier = msbnb_cpu_tier_best();
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) quick = 1;
        else if (strcmp(argv[i], "--tier") == 0 && i + 1 < argc) {
            if (msbnb_cpu_tier_from_name(argv[++i], &tier) != MSBNB_OK) return 2;
        } else if (strcmp(argv[i], "--shape") == 0 && i + 1 < argc) only_shape = atoi(argv[++i]);
        else if (strcmp(argv[i], "--kind") == 0 && i + 1 < argc) only_kind = atoi(argv[++i]);
        else if (strcmp(argv[i], "--m") == 0 && i + 1 < argc) only_m = atoll(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--quick] [--tier T] [--shape i] [--kind i] [--m M]\n", argv[0]);
            return 2;
        }
    }
    const int nt = msbnb_default_threads();
    double bw1 = bu_read_bandwidth(nt, (size_t)1 << 30);
    double bw2 = simd_read_bw(nt, (size_t)1 << 30);
    double bw = bw1 > bw2 ? bw1 : bw2;
    double load[3] = {0, 0, 0};
    if (getloadavg(load, 3) < 0) load[0] = -1;
    printf("# bench_linear — %s\n", bu_machine());
    printf("load average at start: %.2f %.2f %.2f\n", load[0], load[1], load[2]);
    printf("threads %d, tier %s; read bandwidth (1 GiB streamed): benchutil %.1f GB/s, AVX-512 "
           "probe %.1f GB/s -> reference %.1f GB/s\n\n",
           nt, msbnb_cpu_tier_name(tier), bw1 / 1e9, bw2 / 1e9, bw / 1e9);

    static const int64_t shapes[3][2] = {{4096, 4096}, {4096, 14336}, {14336, 4096}};
    static const int64_t ms[4] = {1, 8, 64, 512};
    struct {
        const char *name;
        msbnb_qtype t;
        int64_t block;
        int dq;
    } kinds[6] = {{"f32 (OpenBLAS)", MSBNB_QTYPE_F32, 0, 0}, {"bf16", MSBNB_QTYPE_BF16, 0, 0},
                  {"int8", MSBNB_QTYPE_INT8, 0, 0},       {"int4-g128", MSBNB_QTYPE_INT4, 128, 0},
                  {"nf4", MSBNB_QTYPE_NF4, 64, 0},        {"nf4+dq", MSBNB_QTYPE_NF4, 64, 1}};
    int nshapes = quick ? 1 : 3;
    printf("| K x N | M | kind | time (median) | GB/s of weights | read BW GB/s | %% of read BW | GFLOP/s | speed-up vs f32 |\n");
    printf("|---|---|---|---|---|---|---|---|---|\n");
    for (int si = 0; si < nshapes; si++) {
        int sidx = only_shape >= 0 ? only_shape % 3 : quick ? 2 : si;
        if (only_shape >= 0 && si > 0) break;
        int64_t K = shapes[sidx][0], N = shapes[sidx][1];
        float *w = malloc(sizeof(float) * (size_t)(K * N));
        float *x = malloc(sizeof(float) * (size_t)(512 * K));
        float *y = malloc(sizeof(float) * (size_t)(512 * N));
        bu_fill_normal(w, (size_t)(K * N), 1, 0.02f);
        bu_fill_normal(x, (size_t)(512 * K), 2, 1.0f);
        double f32_time[4] = {0};
        for (int ki = 0; ki < 6; ki++) {
            /* f32 always runs: it is the baseline of the speed-up column */
            if (only_kind >= 0 && ki != 0 && ki != only_kind) continue;
            msbnb_qparams p = msbnb_qparams_default(kinds[ki].t);
            if (kinds[ki].block) p.block = kinds[ki].block;
            p.double_quant = kinds[ki].dq;
            msbnb_linear_t *base;
            if (msbnb_linear_create(&base, K, N, w, NULL, &p) != MSBNB_OK) {
                fprintf(stderr, "create: %s\n", msbnb_last_error());
                return 1;
            }
            int64_t bytes = msbnb_linear_weight_bytes(base);
            int ncopies = (int)(((int64_t)3 << 29) / bytes) + 1;
            if (ncopies > 64) ncopies = 64;
            msbnb_linear_t *copies[64];
            copies[0] = base;
            for (int c = 1; c < ncopies; c++)
                if (msbnb_linear_clone(&copies[c], base) != MSBNB_OK) return 1;
            for (int c = 0; c < ncopies; c++) {
                msbnb_linear_set_threads(copies[c], nt);
                if (msbnb_linear_set_cpu_tier(copies[c], tier) != MSBNB_OK) return 1;
            }
            /* the bandwidth now, with the same 1 GiB stream (the layer copies are allocated,
             * so this is what is left to the kernel under the current load) */
            double bwk = simd_read_bw(nt, (size_t)1 << 30);
            if (bwk <= 0) bwk = bw;
            for (int mi = 0; mi < 4; mi++) {
                int64_t m = ms[mi];
                if (only_m && m != only_m) continue;
                run_ctx c = {copies, ncopies, 0, y, x, m};
                int reps = m >= 512 ? 3 : m >= 64 ? 7 : (ncopies < 15 ? 30 : 2 * ncopies + 1);
                if (quick && reps > 9) reps = 9;
                double t = bu_median_time(run_forward, &c, 1, reps);
                if (ki == 0) f32_time[mi] = t;
                double gflops = 2.0 * (double)m * (double)K * (double)N / t / 1e9;
                double gbs = (double)bytes / t / 1e9;
                printf("| %lld x %lld | %lld | %s | %.3f ms | %.1f | %.1f | %.0f %% | %.1f | %.2fx |\n",
                       (long long)K, (long long)N, (long long)m, kinds[ki].name, t * 1e3, gbs,
                       bwk / 1e9, 100.0 * (double)bytes / t / bwk, gflops, f32_time[mi] / t);
                fflush(stdout);
            }
            for (int c = 0; c < ncopies; c++) msbnb_linear_free(copies[c]);
        }
        free(w);
        free(x);
        free(y);
    }
    return 0;
}
