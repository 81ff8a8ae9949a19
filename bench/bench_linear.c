/* Linear layer forward on the CPU: f32 (OpenBLAS sgemv/sgemm, the baseline) against bf16,
 * int8 (LLM.int8), int4-g128, nf4 and nf4+dq, at the shapes of a 7-8B LLaMA MLP.
 *
 * Weights are "cold": each timed call uses the next of several copies of the layer whose
 * total exceeds 1 GiB (twice the 480 MiB L3 of the development machine), so the weights
 * stream from DRAM, as they do when a model's layers run one after another.
 *
 * The development machine is shared (other builds and trainings run beside this), so
 * measurements are interleaved: for each (shape, M), every repetition times one forward
 * of each kind in turn and, at M = 1, one pass of a read-bandwidth probe streaming 1 GiB
 * (AVX-512 loads, all threads). The reference bandwidth ("read BW") is the larger of that
 * probe's and of the f32 sgemv weight stream in the same repetitions. Medians over the
 * repetitions; the speed-up over f32 and
 * the fraction of read bandwidth are therefore ratios of measurements taken under the same
 * load, not minutes apart. The load average is printed before and after each shape.
 * Output: a markdown table for bench/RESULTS.md.
 *
 * A second table (--hot, or after the main one) gives each kernel's own speed, free of the
 * memory system and of the machine's load: one thread, a weight small enough to stay in
 * the L2 cache (K x N = 4096 x 256), timed by the thread's CPU time (CLOCK_THREAD_CPUTIME_ID,
 * which does not count time the thread waits for a core). Weight bytes per CPU-second per
 * core, times the thread count, is what the kernel could stream if memory kept up.
 *
 * Usage: bench_linear [--quick] [--hot] [--pool] [--tier scalar|avx2|avx512] [--shape i] [--kind i] [--m M]
 *   (--pool: the layers share one msbnb_threadpool instead of creating threads per call;
 *   --exact: 4-bit layers with msbnb_linear_set_exact(l, 1), f32 activations and codes)
 *   (--shape 0..2, --kind 1..5 (f32 always runs), --m: run only those; --quick: shape 2,
 *   fewer repetitions; threads: MSBNB_THREADS) */
#include "benchutil.h"
#include "msbnb/msbnb.h"

#include <immintrin.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* OpenBLAS's own query (weak: absent with another BLAS) */
extern char *openblas_get_corename(void) __attribute__((weak));

#define NKINDS 6
#define MAX_COPIES 64

/* The probe reads its buffer in 4 MiB chunks taken from an atomic counter, the way the
 * layer's small-m kernels take rows, so that both are measured alike on a shared machine
 * (a descheduled thread does not stall the pass). */
typedef struct {
    const float *p;
    size_t n;
    atomic_size_t next;
    float sum[64];
} rd_job;

typedef struct {
    rd_job *j;
    int t;
} rd_arg;

/* The probe's loop at the widest vector width this CPU has: AVX-512 where the CPU has it, else
 * AVX2 (an AVX-512 probe on an AVX2-only machine stops the bench with SIGILL). */
#define RD_BODY(VT, ZERO, ADD, LOAD, W, REDUCE)                                              \
    rd_arg *ra = arg;                                                                        \
    rd_job *j = ra->j;                                                                       \
    const size_t chunk = (4u << 20) / sizeof(float);                                         \
    VT a = ZERO, b = a, c = a, d = a;                                                        \
    for (;;) {                                                                               \
        const size_t s0 = atomic_fetch_add(&j->next, chunk);                                 \
        if (s0 >= j->n) break;                                                               \
        const size_t s1 = j->n - s0 < chunk ? j->n : s0 + chunk;                             \
        for (size_t i = s0; i + 4 * (W) <= s1; i += 4 * (W)) {                               \
            a = ADD(a, LOAD(j->p + i));                                                      \
            b = ADD(b, LOAD(j->p + i + (W)));                                                \
            c = ADD(c, LOAD(j->p + i + 2 * (W)));                                            \
            d = ADD(d, LOAD(j->p + i + 3 * (W)));                                            \
        }                                                                                    \
    }                                                                                        \
    j->sum[ra->t] = REDUCE(ADD(ADD(a, b), ADD(c, d)));                                       \
    return NULL;

__attribute__((target("avx512f"))) static void *rd512(void *arg) {
    RD_BODY(__m512, _mm512_setzero_ps(), _mm512_add_ps, _mm512_load_ps, 16, _mm512_reduce_add_ps)
}

__attribute__((target("avx2"))) static float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}

__attribute__((target("avx2"))) static void *rd256(void *arg) {
    RD_BODY(__m256, _mm256_setzero_ps(), _mm256_add_ps, _mm256_load_ps, 8, hsum256)
}

/* One pass over the probe buffer with nt threads (the caller is one); returns seconds. */
static double read_pass(const float *p, size_t n, int nt) {
    pthread_t th[64];
    rd_arg args[64];
    static rd_job j;
    if (nt > 64) nt = 64;
    j.p = p;
    j.n = n;
    atomic_store(&j.next, 0);
    double t0 = bu_now();
    for (int t = 0; t < nt; t++) args[t] = (rd_arg){&j, t};
    void *(*rd)(void *) = msbnb_cpu_tier_best() == MSBNB_CPU_AVX512 ? rd512 : rd256;
    for (int t = 1; t < nt; t++) pthread_create(&th[t], NULL, rd, &args[t]);
    rd(&args[0]);
    for (int t = 1; t < nt; t++) pthread_join(th[t], NULL);
    return bu_now() - t0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *t, int n) {
    qsort(t, (size_t)n, sizeof(double), cmp_double);
    return t[n / 2];
}

static void print_load(const char *when) {
    double load[3] = {0, 0, 0};
    if (getloadavg(load, 3) < 0) load[0] = load[1] = load[2] = -1;
    printf("load average %s: %.2f %.2f %.2f\n", when, load[0], load[1], load[2]);
}

static double thread_cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    msbnb_linear_t *copies[MAX_COPIES];
    int ncopies, next;
    int64_t bytes;
} kind_state;

int main(int argc, char **argv) {
    /* OpenBLAS's worker threads spin (yielding) for 2^28 cycles after each call before they
     * sleep (OPENBLAS_THREAD_TIMEOUT, read when the library loads): measured here, that
     * takes a core from whichever kernel runs next and halves the bf16 and 4-bit rows
     * that follow an f32 row. 2^4 makes them sleep at once; set it and start again. */
    int again = 0;
    if (!getenv("OPENBLAS_THREAD_TIMEOUT")) {
        setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1);
        again = 1;
    }
    /* The baseline must be OpenBLAS at its best: 0.3.21 does not know newer Xeons (model
     * 207 here) and falls back to its SSE3 "Prescott" kernels, whose sgemv streamed 18.5
     * against 24.9 GB/s with the SkylakeX ones (2 threads, 14336 x 4096). On a CPU with
     * AVX-512 (AVX2) where OpenBLAS picked an older core, name SkylakeX (Haswell) and start
     * again; OPENBLAS_CORETYPE set by the caller is left alone. */
    const char *core = openblas_get_corename ? openblas_get_corename() : NULL;
    if (core && !getenv("OPENBLAS_CORETYPE") &&
        (!strcasecmp(core, "Prescott") || !strcasecmp(core, "Core2") || !strcasecmp(core, "Nehalem") ||
         !strcasecmp(core, "Sandybridge") || !strcasecmp(core, "Penryn") || !strcasecmp(core, "Dunnington"))) {
        const msbnb_cpu_tier t = msbnb_cpu_tier_best();
        if (t >= MSBNB_CPU_AVX2) {
            setenv("OPENBLAS_CORETYPE", t == MSBNB_CPU_AVX512 ? "SkylakeX" : "Haswell", 1);
            again = 1;
        }
    }
    if (again) execv("/proc/self/exe", argv); /* if exec fails, go on as we are */
    int quick = 0, hot_only = 0, only_shape = -1, only_kind = -1, use_pool = 0, exact = 0;
    int64_t only_m = 0;
    msbnb_cpu_tier tier = msbnb_cpu_tier_best();
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) quick = 1;
        else if (strcmp(argv[i], "--hot") == 0) hot_only = 1;
        else if (strcmp(argv[i], "--pool") == 0) use_pool = 1;
        else if (strcmp(argv[i], "--exact") == 0) exact = 1;
        else if (strcmp(argv[i], "--tier") == 0 && i + 1 < argc) {
            if (msbnb_cpu_tier_from_name(argv[++i], &tier) != MSBNB_OK) return 2;
        } else if (strcmp(argv[i], "--shape") == 0 && i + 1 < argc) only_shape = atoi(argv[++i]);
        else if (strcmp(argv[i], "--kind") == 0 && i + 1 < argc) only_kind = atoi(argv[++i]);
        else if (strcmp(argv[i], "--m") == 0 && i + 1 < argc) only_m = atoll(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--quick] [--hot] [--pool] [--exact] [--tier T] [--shape i] [--kind i] [--m M]\n", argv[0]);
            return 2;
        }
    }
    const int nt = msbnb_default_threads();
    /* --pool: the layers run on one persistent thread pool instead of threads per call */
    msbnb_threadpool_t *pool = NULL;
    if (use_pool && msbnb_threadpool_create(&pool, nt) != MSBNB_OK) {
        fprintf(stderr, "threadpool: %s\n", msbnb_last_error());
        return 1;
    }
    const size_t probe_bytes = hot_only ? 4096 : (size_t)1 << 30;
    float *probe = aligned_alloc(64, probe_bytes);
    if (!probe) return 1;
    for (size_t i = 0; i < probe_bytes / 4; i++) probe[i] = (float)(i & 7);
    printf("# bench_linear — %s\n", bu_machine());
    printf("OpenBLAS core %s (OPENBLAS_CORETYPE=%s)\n", openblas_get_corename ? openblas_get_corename() : "n/a",
           getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "unset");
    printf("threads %d%s, tier %s, 4-bit small-m arithmetic %s, OPENBLAS_THREAD_TIMEOUT=%s; read bandwidth: probe (widest vector loads) "
           "streaming 1 GiB, one pass per repetition, interleaved with the kernels; reference "
           "(column \"read BW\") = max(probe, f32 sgemv stream)\n",
           nt, pool ? " (thread pool)" : " (created per call)", msbnb_cpu_tier_name(tier),
           exact ? "f32 (--exact)" : "15-bit integer (default)", getenv("OPENBLAS_THREAD_TIMEOUT") ? getenv("OPENBLAS_THREAD_TIMEOUT") : "unset");

    static const int64_t shapes[3][2] = {{4096, 4096}, {4096, 14336}, {14336, 4096}};
    static const int64_t ms[4] = {1, 8, 64, 512};
    static const struct {
        const char *name;
        msbnb_qtype t;
        int64_t block;
        int dq;
    } kinds[NKINDS] = {{"f32 (OpenBLAS)", MSBNB_QTYPE_F32, 0, 0}, {"bf16", MSBNB_QTYPE_BF16, 0, 0},
                       {"int8", MSBNB_QTYPE_INT8, 0, 0},       {"int4-g128", MSBNB_QTYPE_INT4, 128, 0},
                       {"nf4", MSBNB_QTYPE_NF4, 64, 0},        {"nf4+dq", MSBNB_QTYPE_NF4, 64, 1}};
    for (int si = 0; si < 3; si++) {
        if (hot_only || (only_shape >= 0 ? si != only_shape : quick && si != 2)) continue;
        const int64_t K = shapes[si][0], N = shapes[si][1];
        float *w = malloc(sizeof(float) * (size_t)(K * N));
        float *x = malloc(sizeof(float) * (size_t)(512 * K));
        float *y = malloc(sizeof(float) * (size_t)(512 * N));
        if (!w || !x || !y) return 1;
        bu_fill_normal(w, (size_t)(K * N), 1, 0.02f);
        bu_fill_normal(x, (size_t)(512 * K), 2, 1.0f);
        kind_state ks[NKINDS];
        int active[NKINDS];
        for (int ki = 0; ki < NKINDS; ki++) {
            active[ki] = only_kind < 0 || ki == 0 || ki == only_kind;
            ks[ki].ncopies = 0;
            if (!active[ki]) continue;
            msbnb_qparams p = msbnb_qparams_default(kinds[ki].t);
            if (kinds[ki].block) p.block = kinds[ki].block;
            p.double_quant = kinds[ki].dq;
            msbnb_linear_t *base;
            if (msbnb_linear_create(&base, K, N, w, NULL, &p) != MSBNB_OK) {
                fprintf(stderr, "create: %s\n", msbnb_last_error());
                return 1;
            }
            ks[ki].bytes = msbnb_linear_weight_bytes(base);
            int nc = (int)(((int64_t)1 << 30) / ks[ki].bytes) + 1;
            if (nc > MAX_COPIES) nc = MAX_COPIES;
            ks[ki].copies[0] = base;
            for (int c = 1; c < nc; c++)
                if (msbnb_linear_clone(&ks[ki].copies[c], base) != MSBNB_OK) return 1;
            ks[ki].ncopies = nc;
            ks[ki].next = 0;
            for (int c = 0; c < nc; c++) {
                msbnb_linear_set_threads(ks[ki].copies[c], nt);
                if (pool) msbnb_linear_set_threadpool(ks[ki].copies[c], pool);
                if (msbnb_linear_set_cpu_tier(ks[ki].copies[c], tier) != MSBNB_OK) return 1;
                msbnb_linear_set_exact(ks[ki].copies[c], exact);
            }
        }
        printf("\n");
        print_load("before");
        printf("\n| K x N | M | kind | time (median) | GB/s of weights | read BW GB/s | %% of read BW | %% of read BW, paired | GFLOP/s | speed-up vs f32 |\n");
        printf("|---|---|---|---|---|---|---|---|---|---|\n");
        for (int mi = 0; mi < 4; mi++) {
            const int64_t m = ms[mi];
            if (only_m && m != only_m) continue;
            int reps = m == 1 ? 21 : m == 8 ? 11 : m == 64 ? 11 : 9;
            if (quick && reps > 5) reps = 5;
            double t[NKINDS][32], tbw[32];
            for (int ki = 0; ki < NKINDS; ki++) /* warm-up: page faults, thread start */
                if (active[ki] && msbnb_linear_forward(ks[ki].copies[0], y, x, m) != MSBNB_OK) {
                    fprintf(stderr, "forward: %s\n", msbnb_last_error());
                    return 1;
                }
            for (int r = 0; r < reps; r++) {
                if (m == 1) tbw[r] = read_pass(probe, probe_bytes / 4, nt);
                for (int ki = 0; ki < NKINDS; ki++) {
                    if (!active[ki]) continue;
                    kind_state *s = &ks[ki];
                    msbnb_linear_t *l = s->copies[s->next];
                    s->next = (s->next + 1) % s->ncopies;
                    double t0 = bu_now();
                    if (msbnb_linear_forward(l, y, x, m) != MSBNB_OK) {
                        fprintf(stderr, "forward: %s\n", msbnb_last_error());
                        return 1;
                    }
                    t[ki][r] = bu_now() - t0;
                }
            }
            /* paired fraction (before the medians below sort the samples): the median over
             * repetitions of a kind's stream against the reference of the same repetition
             * (its probe pass and sgemv call), so that the machine's bandwidth drifting
             * between repetitions does not pair a fast probe with a slow kernel */
            double paired[NKINDS] = {0};
            if (m == 1) {
                double ref[32]; /* bytes / s: the larger of the probe's and sgemv's in repetition r */
                for (int r = 0; r < reps; r++) {
                    const double p = (double)probe_bytes / tbw[r], f = (double)ks[0].bytes / t[0][r];
                    ref[r] = f > p ? f : p;
                }
                for (int ki = 0; ki < NKINDS; ki++) {
                    if (!active[ki]) continue;
                    double pr[32];
                    for (int r = 0; r < reps; r++) pr[r] = (double)ks[ki].bytes / t[ki][r] / ref[r];
                    paired[ki] = median(pr, reps);
                }
            }
            /* reference bandwidth: the probe's, or f32 sgemv's weight stream if that was
             * faster (a conservative reference: no kind is credited above the best stream
             * seen in this run) */
            double bw = 0;
            if (m == 1) {
                bw = (double)probe_bytes / median(tbw, reps);
                printf("| %lld x %lld | 1 | (read probe, 1 GiB) | %.3f ms | - | %.1f | - | - | - | - |\n",
                       (long long)K, (long long)N, (double)probe_bytes / bw * 1e3, bw / 1e9);
                double tf[32];
                memcpy(tf, t[0], sizeof(double) * (size_t)reps);
                const double bw32 = (double)ks[0].bytes / median(tf, reps);
                if (bw32 > bw) bw = bw32;
            }
            double t32 = 0;
            for (int ki = 0; ki < NKINDS; ki++) {
                if (!active[ki]) continue;
                const double tm = median(t[ki], reps);
                if (ki == 0) t32 = tm;
                const double gbs = (double)ks[ki].bytes / tm / 1e9;
                char bws[32] = "-", pct[32] = "-", ppct[32] = "-";
                if (m == 1) {
                    snprintf(bws, sizeof bws, "%.1f", bw / 1e9);
                    snprintf(pct, sizeof pct, "%.0f %%", 100.0 * (double)ks[ki].bytes / tm / bw);
                    snprintf(ppct, sizeof ppct, "%.0f %%", 100.0 * paired[ki]);
                }
                printf("| %lld x %lld | %lld | %s | %.3f ms | %.1f | %s | %s | %s | %.1f | %.2fx |\n",
                       (long long)K, (long long)N, (long long)m, kinds[ki].name, tm * 1e3, gbs, bws,
                       pct, ppct, 2.0 * (double)m * (double)K * (double)N / tm / 1e9, t32 / tm);
            }
            fflush(stdout);
        }
        print_load("after");
        for (int ki = 0; ki < NKINDS; ki++)
            for (int c = 0; c < ks[ki].ncopies; c++) msbnb_linear_free(ks[ki].copies[c]);
        free(w);
        free(x);
        free(y);
    }
    free(probe);

    /* kernel speed per core: hot weight, one thread, thread CPU time */
    {
        const int64_t K = 4096, N = 256;
        float *w = malloc(sizeof(float) * (size_t)(K * N)), *x = malloc(sizeof(float) * 8 * K);
        float *y = malloc(sizeof(float) * 8 * N);
        if (!w || !x || !y) return 1;
        bu_fill_normal(w, (size_t)(K * N), 3, 0.02f);
        bu_fill_normal(x, (size_t)(8 * K), 4, 1.0f);
        printf("\nKernel speed per core (one thread, %lld x %lld weight hot in L2, thread CPU time, "
               "median of 9 runs of 50 calls):\n\n", (long long)K, (long long)N);
        printf("| M | kind | CPU time per call | GB/s of weights per core | GFLOP/s per core |\n");
        printf("|---|---|---|---|---|\n");
        for (int mi = 0; mi < 2; mi++) {
            const int64_t m = mi ? 8 : 1;
            for (int ki = 0; ki < NKINDS; ki++) {
                msbnb_qparams p = msbnb_qparams_default(kinds[ki].t);
                if (kinds[ki].block) p.block = kinds[ki].block;
                p.double_quant = kinds[ki].dq;
                msbnb_linear_t *l;
                if (msbnb_linear_create(&l, K, N, w, NULL, &p) != MSBNB_OK ||
                    msbnb_linear_set_threads(l, 1) != MSBNB_OK ||
                    msbnb_linear_set_cpu_tier(l, tier) != MSBNB_OK || msbnb_linear_set_exact(l, exact) != MSBNB_OK)
                    return 1;
                double ts[9];
                for (int r = 0; r < 9; r++) {
                    double t0 = thread_cpu_now();
                    for (int it = 0; it < 50; it++)
                        if (msbnb_linear_forward(l, y, x, m) != MSBNB_OK) return 1;
                    ts[r] = (thread_cpu_now() - t0) / 50;
                }
                const double tm = median(ts, 9);
                printf("| %lld | %s | %.1f us | %.1f | %.1f |\n", (long long)m, kinds[ki].name,
                       tm * 1e6, (double)msbnb_linear_weight_bytes(l) / tm / 1e9,
                       2.0 * (double)m * (double)K * (double)N / tm / 1e9);
                msbnb_linear_free(l);
            }
        }
        free(w);
        free(x);
        free(y);
    }

    /* per-call threading cost on a small layer (2 MiB of int8, hot in L3), wall time: one
     * thread, threads created per call, a persistent msbnb_threadpool */
    {
        const int64_t K = 2048, N = 1024;
        float *w = malloc(sizeof(float) * (size_t)(K * N)), *x = malloc(sizeof(float) * K);
        float *y = malloc(sizeof(float) * N);
        msbnb_threadpool_t *tp = NULL;
        if (!w || !x || !y || msbnb_threadpool_create(&tp, nt) != MSBNB_OK) return 1;
        bu_fill_normal(w, (size_t)(K * N), 5, 0.02f);
        bu_fill_normal(x, (size_t)K, 6, 1.0f);
        printf("\nThreads per call vs a thread pool (%lld x %lld weight, M = 1, hot, wall time, "
               "median of 9 runs of 200 calls):\n\n", (long long)K, (long long)N);
        printf("| kind | 1 thread | %d threads created per call | %d threads, thread pool |\n", nt, nt);
        printf("|---|---|---|---|\n");
        for (int ki = 2; ki < NKINDS; ki += 2) { /* int8, nf4 */
            msbnb_qparams p = msbnb_qparams_default(kinds[ki].t);
            if (kinds[ki].block) p.block = kinds[ki].block;
            msbnb_linear_t *l;
            if (msbnb_linear_create(&l, K, N, w, NULL, &p) != MSBNB_OK ||
                msbnb_linear_set_cpu_tier(l, tier) != MSBNB_OK)
                return 1;
            double tv[3];
            for (int v = 0; v < 3; v++) {
                msbnb_linear_set_threads(l, v == 0 ? 1 : nt);
                msbnb_linear_set_threadpool(l, v == 2 ? tp : NULL);
                double ts[9];
                for (int r = 0; r < 9; r++) {
                    double t0 = bu_now();
                    for (int it = 0; it < 200; it++)
                        if (msbnb_linear_forward(l, y, x, 1) != MSBNB_OK) return 1;
                    ts[r] = (bu_now() - t0) / 200;
                }
                tv[v] = median(ts, 9);
            }
            printf("| %s | %.1f us | %.1f us | %.1f us |\n", kinds[ki].name, tv[0] * 1e6, tv[1] * 1e6,
                   tv[2] * 1e6);
            msbnb_linear_free(l);
        }
        msbnb_threadpool_free(tp);
        free(w);
        free(x);
        free(y);
    }
    msbnb_threadpool_free(pool);
    return 0;
}
