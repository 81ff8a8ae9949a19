/* Fork-join parallel-for over contiguous index ranges. Threads are spawned per call: the
 * library keeps no pool (no global mutable state); the calling thread runs chunk 0. */
#include "internal.h"

#include <pthread.h>

#define MSBNB_MAX_THREADS 256

typedef struct {
    msbnb__range_fn fn;
    void *ctx;
    int64_t begin, end;
    int tid;
} job_t;

static void *run_job(void *p) {
    job_t *j = p;
    j->fn(j->ctx, j->begin, j->end, j->tid);
    return NULL;
}

int msbnb__resolve_threads(int nthreads) {
    if (nthreads <= 0) nthreads = msbnb_default_threads();
    if (nthreads > MSBNB_MAX_THREADS) nthreads = MSBNB_MAX_THREADS;
    return nthreads;
}

void msbnb__parallel_for(int nthreads, int64_t n, int64_t grain, msbnb__range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    int nt = msbnb__resolve_threads(nthreads);
    int64_t max_chunks = (n + grain - 1) / grain;
    if (nt > max_chunks) nt = (int)max_chunks;
    if (nt <= 1) {
        fn(ctx, 0, n, 0);
        return;
    }
    job_t jobs[MSBNB_MAX_THREADS];
    pthread_t th[MSBNB_MAX_THREADS];
    bool started[MSBNB_MAX_THREADS] = {0};
    for (int t = 0; t < nt; t++) {
        jobs[t] = (job_t){fn, ctx, n * t / nt, n * (t + 1) / nt, t};
    }
    for (int t = 1; t < nt; t++) started[t] = pthread_create(&th[t], NULL, run_job, &jobs[t]) == 0;
    run_job(&jobs[0]);
    for (int t = 1; t < nt; t++) {
        if (started[t]) pthread_join(th[t], NULL);
        else run_job(&jobs[t]); /* could not spawn: do it here */
    }
}
