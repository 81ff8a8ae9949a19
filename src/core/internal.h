/* Internal helpers shared by all of src/: error reporting, checked size arithmetic,
 * aligned allocation, the parallel-for, and the CPU feature table. Not installed. */
#ifndef MSBNB_INTERNAL_H
#define MSBNB_INTERNAL_H

#include "msbnb/core.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define MSBNB_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define MSBNB_LIKELY(x) __builtin_expect(!!(x), 1)
#define MSBNB_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define MSBNB_PRINTF(a, b)
#define MSBNB_LIKELY(x) (x)
#define MSBNB_UNLIKELY(x) (x)
#endif

/* Sets the thread's error message and returns s (so callers write `return msbnb__fail(...)`). */
msbnb_status msbnb__fail(msbnb_status s, const char *fmt, ...) MSBNB_PRINTF(2, 3);

/* Propagate a failing status. */
#define MSBNB_TRY(expr)                                                                  \
    do {                                                                                 \
        msbnb_status msbnb__st = (expr);                                                 \
        if (msbnb__st != MSBNB_OK) return msbnb__st;                                     \
    } while (0)

/* Boundary checks, each producing a message that names the function and argument. */
#define MSBNB_CHECK_NULL(p)                                                              \
    do {                                                                                 \
        if ((p) == NULL)                                                                 \
            return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: argument '%s' is NULL",  \
                               __func__, #p);                                            \
    } while (0)

#define MSBNB_CHECK_POS(n)                                                               \
    do {                                                                                 \
        if ((n) <= 0)                                                                    \
            return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT,                               \
                               "%s: size '%s' must be positive (got %lld)", __func__, #n, \
                               (long long)(n));                                          \
    } while (0)

/* Checked multiplication of non-negative int64 sizes: false on overflow. */
static inline bool msbnb__mul_ok(int64_t a, int64_t b, int64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool msbnb__mulz_ok(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
/* a*b with an overflow status (message names the caller). */
msbnb_status msbnb__mul_checked(int64_t a, int64_t b, int64_t *out, const char *what);

static inline int64_t msbnb__ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* 64-byte aligned allocation; NULL on failure or zero size. Free with msbnb__free. */
void *msbnb__alloc(size_t bytes);
void *msbnb__calloc(size_t bytes);
void msbnb__free(void *p);
/* Allocation that reports MSBNB_ERR_OUT_OF_MEMORY with a message. */
msbnb_status msbnb__alloc_checked(void **out, size_t bytes, const char *what);

/* Parallel for over [0, n): fn(ctx, begin, end, thread_index) on up to nthreads threads
 * (nthreads <= 0: msbnb_default_threads()). Chunks are contiguous and at least `grain`
 * items. Runs inline when one thread suffices. Returns MSBNB_OK or OUT_OF_MEMORY-class
 * errors only if threads cannot be created (then runs inline instead: never fails). */
typedef void (*msbnb__range_fn)(void *ctx, int64_t begin, int64_t end, int tid);
void msbnb__parallel_for(int nthreads, int64_t n, int64_t grain, msbnb__range_fn fn, void *ctx);
/* Effective thread count for a call (resolves <= 0). */
int msbnb__resolve_threads(int nthreads);
/* Runs fn(arg, t) for t < min(nt, pool size) on the pool (the caller is t = 0). */
void msbnb__pool_run(msbnb_threadpool_t *p, int nt, void (*fn)(void *, int), void *arg);

/* CPU features, filled once (pthread_once) — the library's only global state. */
typedef struct msbnb__cpu_features {
    bool avx2, fma, f16c, avx512f, avx512bw, avx512dq, avx512vl, avx512vnni, avx512bf16,
        avxvnni;
    bool amd; /* vendor AuthenticAMD (kernel choices measured per vendor) */
    int ncpu; /* online CPUs at the first query (the default thread count) */
} msbnb__cpu_features;
const msbnb__cpu_features *msbnb__cpu(void);
/* The AVX-512 15-bit 4-bit kernels' decode: 1 vpermw, 0 vpshufb (src/cpu/gemv_avx512.c):
 * MSBNB_CPU_I16_DECODE=perm|shuf, else perm on AMD. Read once per forward call. */
int msbnb__i16_decode_perm(void);
/* Whether those kernels may read double-quant scales as their 8-bit codes (default, for
 * weights of >= 4 MiB of codes) or always the decoded f32 copy (MSBNB_CPU_DQ_SCALES=f32);
 * MSBNB_CPU_DQ_SCALES=u8 reads the codes at any size (tests). */
int msbnb__i16_dq_inline(void);
/* (Kernels take their tier from msbnb_cpu_check_env: MSBNB_CPU if set, else the best
 * tier; an unknown or unsupported MSBNB_CPU fails the call rather than falling back.) */

#endif
