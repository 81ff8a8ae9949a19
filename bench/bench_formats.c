/* Quantize / dequantize throughput per format, 1 and 2 threads, beside memcpy of the same
 * float bytes and the machine's read bandwidth measured in the same run.
 * GB/s counts the float32 data (4 bytes per weight) produced or consumed.
 *   build/bench/bench_formats [n_million]   (default 64 M weights = 256 MiB of f32) */
#include "benchutil.h"
#include "msbnb/msbnb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int op; /* 0 quantize, 1 dequantize, 2 memcpy, 3 int8 per row, 4 LLM.int8 rows, 5 int4 g128 */
    msbnb_qtype type;
    int64_t n, block;
    int threads;
    float *x, *y, *absmax;
    uint8_t *q;
} job_t;

static void run(void *p) {
    job_t *j = p;
    msbnb_status st = MSBNB_OK;
    switch (j->op) {
    case 2: bu_parallel_memcpy(j->y, j->x, (size_t)j->n * 4, j->threads); break;
    case 0:
        if (j->type == MSBNB_QTYPE_Q8_DYNAMIC)
            st = msbnb_quantize_blockwise_8bit(j->q, j->absmax, j->x, MSBNB_DTYPE_F32, j->n, j->block, NULL, j->threads);
        else
            st = msbnb_quantize_4bit(j->q, j->absmax, j->x, MSBNB_DTYPE_F32, j->n, j->block, j->type, j->threads);
        break;
    case 3: st = msbnb_quantize_8bit((int8_t *)j->q, j->absmax, NULL, j->x, j->n / 4096, 4096, 1, 0); break;
    case 4:
        st = msbnb_int8_vectorwise_quant((int8_t *)j->q, j->absmax, NULL, 0, NULL, j->x, MSBNB_DTYPE_F32,
                                         j->n / 4096, 4096, 0.0f);
        break;
    case 5: st = msbnb_quantize_int4(j->q, j->absmax, NULL, j->x, j->n / 4096, 4096, 128, 1); break;
    case 1:
        if (j->type == MSBNB_QTYPE_Q8_DYNAMIC)
            st = msbnb_dequantize_blockwise_8bit(j->y, MSBNB_DTYPE_F32, j->q, j->absmax, j->n, j->block, NULL, j->threads);
        else
            st = msbnb_dequantize_4bit(j->y, MSBNB_DTYPE_F32, j->q, j->absmax, j->n, j->block, j->type, j->threads);
        break;
    }
    if (st != MSBNB_OK) {
        fprintf(stderr, "bench: %s\n", msbnb_last_error());
        exit(1);
    }
}

int main(int argc, char **argv) {
    /* a multiple of 4096 so that the row formats see [n / 4096, 4096] */
    int64_t n = (argc > 1 ? atoll(argv[1]) : 64) * 1000000 / 4096 * 4096;
    if (n <= 0) return 2;
    float *x = aligned_alloc(64, (size_t)n * 4), *y = aligned_alloc(64, (size_t)n * 4);
    uint8_t *q = aligned_alloc(64, (size_t)n);
    float *absmax = aligned_alloc(64, (size_t)(n / 32 + 64) * 4);
    if (!x || !y || !q || !absmax) return 1;
    bu_fill_normal(x, (size_t)n, 1, 1.0f);
    memset(y, 0, (size_t)n * 4);
    printf("# bench_formats: %lld weights (%.0f MiB f32), %s, tier %s\n", (long long)n, n * 4 / 1048576.0,
           bu_machine(), msbnb_cpu_tier_name(msbnb_cpu_tier_best()));
    double rb[3], mc[3];
    for (int t = 1; t <= 2; t++) {
        rb[t] = bu_read_bandwidth(t, 512u << 20);
        mc[t] = bu_memcpy_bandwidth(t, 256u << 20);
        printf("# %d thread(s): read bandwidth %.1f GB/s, memcpy %.1f GB/s (bytes copied)\n", t, rb[t] / 1e9, mc[t] / 1e9);
    }
    printf("\n| op | format | threads | median ms | GB/s (f32) | vs memcpy |\n|---|---|---|---|---|---|\n");
    struct { msbnb_qtype t; int64_t block; const char *name; } fm[] = {
        {MSBNB_QTYPE_NF4, 64, "nf4-b64"}, {MSBNB_QTYPE_FP4, 64, "fp4-b64"}, {MSBNB_QTYPE_Q8_DYNAMIC, 256, "q8dyn-b256"}};
    for (int t = 1; t <= 2; t++) {
        job_t mj = {2, 0, n, 0, t, x, y, absmax, q};
        double tm = bu_median_time(run, &mj, 1, 5);
        printf("| memcpy | f32 | %d | %.2f | %.2f | 1.00 |\n", t, tm * 1e3, n * 4 / tm / 1e9);
        for (int f = 0; f < 3; f++)
            for (int op = 0; op <= 1; op++) {
                job_t j = {op, fm[f].t, n, fm[f].block, t, x, y, absmax, q};
                if (op == 1) run(&(job_t){0, fm[f].t, n, fm[f].block, t, x, y, absmax, q});
                double s = bu_median_time(run, &j, 1, 5);
                printf("| %s | %s | %d | %.2f | %.2f | %.2f |\n", op ? "dequantize" : "quantize", fm[f].name, t,
                       s * 1e3, n * 4 / s / 1e9, tm / s);
            }
        /* Row formats take their thread count from MSBNB_THREADS. */
        char tb[8];
        snprintf(tb, sizeof tb, "%d", t);
        setenv("MSBNB_THREADS", tb, 1);
        static const char *rn[] = {"int8-row-sym", "llm.int8-rows", "int4-g128-sym"};
        for (int op = 3; op <= 5; op++) {
            job_t j = {op, 0, n, 0, t, x, y, absmax, q};
            double s = bu_median_time(run, &j, 1, 5);
            printf("| quantize | %s | %d | %.2f | %.2f | %.2f |\n", rn[op - 3], t, s * 1e3, n * 4 / s / 1e9, tm / s);
        }
        unsetenv("MSBNB_THREADS");
    }
    free(x); free(y); free(q); free(absmax);
    return 0;
}
