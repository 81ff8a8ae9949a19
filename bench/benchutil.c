#include "benchutil.h"

#include "msbnb/msbnb.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double bu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bu_median_time(void (*fn)(void *), void *ctx, int warmup, int reps) {
    for (int i = 0; i < warmup; i++) fn(ctx);
    if (reps < 1) reps = 1;
    double *t = malloc(sizeof(double) * (size_t)reps);
    for (int i = 0; i < reps; i++) {
        double t0 = bu_now();
        fn(ctx);
        t[i] = bu_now() - t0;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    double med = t[reps / 2];
    free(t);
    return med;
}

typedef struct {
    const float *src;
    float *dst;
    size_t n;
    double sum;
} bw_job;

static void *read_job(void *p) {
    bw_job *j = p;
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= j->n; i += 4) {
        s0 += j->src[i];
        s1 += j->src[i + 1];
        s2 += j->src[i + 2];
        s3 += j->src[i + 3];
    }
    j->sum = s0 + s1 + s2 + s3;
    return NULL;
}

static void *copy_job(void *p) {
    bw_job *j = p;
    memcpy(j->dst, j->src, j->n * sizeof(float));
    return NULL;
}

static double run_threads(int nthreads, void *(*fn)(void *), float *src, float *dst, size_t n) {
    pthread_t th[64];
    bw_job jobs[64];
    if (nthreads > 64) nthreads = 64;
    double t0 = bu_now();
    for (int t = 0; t < nthreads; t++) {
        size_t b = n * (size_t)t / (size_t)nthreads, e = n * (size_t)(t + 1) / (size_t)nthreads;
        jobs[t] = (bw_job){src + b, dst ? dst + b : NULL, e - b, 0};
        pthread_create(&th[t], NULL, fn, &jobs[t]);
    }
    for (int t = 0; t < nthreads; t++) pthread_join(th[t], NULL);
    return bu_now() - t0;
}

static double bandwidth(int nthreads, size_t bytes, int copy) {
    size_t n = bytes / sizeof(float);
    float *src = aligned_alloc(64, n * sizeof(float));
    float *dst = copy ? aligned_alloc(64, n * sizeof(float)) : NULL;
    for (size_t i = 0; i < n; i++) src[i] = (float)(i & 1023);
    if (dst) memset(dst, 0, n * sizeof(float));
    int passes = (int)((1ull << 30) / bytes) + 3;
    if (passes < 5) passes = 5;
    double *t = malloc(sizeof(double) * (size_t)passes);
    for (int p = 0; p < passes; p++) t[p] = run_threads(nthreads, copy ? copy_job : read_job, src, dst, n);
    qsort(t, (size_t)passes, sizeof(double), cmp_double);
    double med = t[passes / 2];
    free(t);
    free(src);
    free(dst);
    return (double)bytes / med;
}

void bu_parallel_memcpy(void *dst, const void *src, size_t bytes, int nthreads) {
    run_threads(nthreads, copy_job, (float *)src, dst, bytes / sizeof(float));
}

double bu_read_bandwidth(int nthreads, size_t bytes) { return bandwidth(nthreads, bytes, 0); }
double bu_memcpy_bandwidth(int nthreads, size_t bytes) { return bandwidth(nthreads, bytes, 1); }

const char *bu_machine(void) {
    static char buf[256];
    char model[128] = "unknown CPU";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "model name", 10) == 0) {
                char *c = strchr(line, ':');
                if (c) {
                    snprintf(model, sizeof model, "%s", c + 2);
                    model[strcspn(model, "\n")] = 0;
                }
                break;
            }
        }
        fclose(f);
    }
    snprintf(buf, sizeof buf, "%s, %ld cores online, best tier %s, gcc %d.%d", model,
             sysconf(_SC_NPROCESSORS_ONLN), msbnb_cpu_tier_name(msbnb_cpu_tier_best()), __GNUC__,
             __GNUC_MINOR__);
    return buf;
}

void bu_fill_normal(float *x, size_t n, uint64_t seed, float scale) {
    uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;
    for (size_t i = 0; i < n; i += 2) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        double u1 = ((s >> 11) + 1.0) / 9007199254740993.0;
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        double u2 = (s >> 11) / 9007199254740992.0;
        double r = sqrt(-2 * log(u1));
        x[i] = (float)(scale * r * cos(6.283185307179586 * u2));
        if (i + 1 < n) x[i + 1] = (float)(scale * r * sin(6.283185307179586 * u2));
    }
}
