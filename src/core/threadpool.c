/* A persistent thread pool the caller owns (msbnb/core.h): small calls (a GEMV of a few
 * MiB takes ~0.2 ms) otherwise pay a thread creation and join per call (measured ~53 us on
 * the development VM). Owned by the caller, not global: the library keeps no state of its
 * own. One job at a time: calls from several threads on the same pool take turns.
 *
 * A job: every participant t < nt runs fn(arg, t); the caller is participant 0. Workers
 * that finish spin briefly on the job counter before sleeping, so a run of back-to-back
 * jobs (the layers of a model) finds them awake. */
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define POOL_SPIN 20000 /* polls of the job counter before a worker sleeps (~20-50 us) */

struct msbnb_threadpool {
    int size; /* participants: the caller + size - 1 workers */
    pthread_t *th;
    int started;
    pthread_mutex_t call; /* one job at a time */
    pthread_mutex_t m;
    pthread_cond_t wake, done;
    atomic_uint gen; /* job counter */
    int stop;
    int nt;       /* participants of the current job */
    int pending;  /* workers of the current job not yet finished */
    void (*fn)(void *, int);
    void *arg;
};

typedef struct {
    struct msbnb_threadpool *p;
    int tid;
} worker_arg;

static void *worker(void *v) {
    worker_arg *wa = v;
    struct msbnb_threadpool *p = wa->p;
    const int tid = wa->tid;
    free(wa);
    unsigned seen = 0;
    for (;;) {
        for (int i = 0; i < POOL_SPIN && atomic_load_explicit(&p->gen, memory_order_acquire) == seen; i++) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
        pthread_mutex_lock(&p->m);
        while (atomic_load_explicit(&p->gen, memory_order_relaxed) == seen && !p->stop)
            pthread_cond_wait(&p->wake, &p->m);
        if (p->stop) {
            pthread_mutex_unlock(&p->m);
            return NULL;
        }
        seen = atomic_load_explicit(&p->gen, memory_order_relaxed);
        const int active = tid < p->nt;
        void (*fn)(void *, int) = p->fn;
        void *arg = p->arg;
        pthread_mutex_unlock(&p->m);
        if (!active) continue;
        fn(arg, tid);
        pthread_mutex_lock(&p->m);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->m);
    }
}

msbnb_status msbnb_threadpool_create(msbnb_threadpool_t **out, int nthreads) {
    MSBNB_CHECK_NULL(out);
    *out = NULL;
    if (nthreads < 0)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: nthreads must be >= 0 (got %d)", __func__, nthreads);
    struct msbnb_threadpool *p = calloc(1, sizeof *p);
    if (!p) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "%s: out of memory", __func__);
    p->size = msbnb__resolve_threads(nthreads);
    p->th = calloc((size_t)p->size, sizeof *p->th);
    if (!p->th) {
        free(p);
        return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "%s: out of memory", __func__);
    }
    pthread_mutex_init(&p->call, NULL);
    pthread_mutex_init(&p->m, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->gen, 0);
    for (int t = 1; t < p->size; t++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) break;
        *wa = (worker_arg){p, t};
        if (pthread_create(&p->th[t], NULL, worker, wa) != 0) {
            free(wa);
            break;
        }
        p->started = t;
    }
    if (p->started != p->size - 1) {
        int want = p->size;
        p->size = p->started + 1; /* the workers that did start */
        msbnb_threadpool_free(p);
        return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "%s: could not start %d threads", __func__, want - 1);
    }
    *out = p;
    return MSBNB_OK;
}

void msbnb_threadpool_free(msbnb_threadpool_t *p) {
    if (!p) return;
    pthread_mutex_lock(&p->m);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->m);
    for (int t = 1; t <= p->started; t++) pthread_join(p->th[t], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->m);
    pthread_mutex_destroy(&p->call);
    free(p->th);
    free(p);
}

int msbnb_threadpool_size(const msbnb_threadpool_t *p) { return p ? p->size : 0; }

void msbnb__pool_run(msbnb_threadpool_t *p, int nt, void (*fn)(void *, int), void *arg) {
    if (nt > p->size) nt = p->size;
    if (nt <= 1) {
        fn(arg, 0);
        return;
    }
    pthread_mutex_lock(&p->call);
    pthread_mutex_lock(&p->m);
    p->fn = fn;
    p->arg = arg;
    p->nt = nt;
    p->pending = nt - 1;
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->m);
    fn(arg, 0);
    pthread_mutex_lock(&p->m);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->m);
    pthread_mutex_unlock(&p->m);
    pthread_mutex_unlock(&p->call);
}
