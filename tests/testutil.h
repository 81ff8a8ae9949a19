/* Minimal test harness: CHECK-style assertions that count failures, a seeded RNG, and a
 * reader for the reference safetensors files. Each test binary ends with
 * "N passed, N failed" and exits non-zero if anything failed. */
#ifndef MSBNB_TESTUTIL_H
#define MSBNB_TESTUTIL_H

#include "msbnb/msbnb.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

extern int tu_checks_failed;
extern int tu_tests_passed, tu_tests_failed;

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            tu_checks_failed++;                                                             \
            fprintf(stderr, "  CHECK failed %s:%d: %s\n", __FILE__, __LINE__, #cond);       \
        }                                                                                   \
    } while (0)

#define CHECKF(cond, ...)                                                                   \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            tu_checks_failed++;                                                             \
            fprintf(stderr, "  CHECK failed %s:%d: %s: ", __FILE__, __LINE__, #cond);       \
            fprintf(stderr, __VA_ARGS__);                                                   \
            fputc('\n', stderr);                                                            \
        }                                                                                   \
    } while (0)

/* Asserts a call returned status `want` and, for errors, left a non-empty message. */
#define CHECK_STATUS(call, want)                                                            \
    do {                                                                                    \
        msbnb_clear_error();                                                                \
        msbnb_status tu_st_ = (call);                                                       \
        CHECKF(tu_st_ == (want), "%s returned %s (%s), want %s", #call,                     \
               msbnb_status_str(tu_st_), msbnb_last_error(), msbnb_status_str(want));      \
        if ((want) != MSBNB_OK) CHECKF(msbnb_last_error()[0] != '\0', "no error message"); \
    } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, MSBNB_OK)

#define RUN_TEST(fn) tu_run(#fn, fn)
void tu_run(const char *name, void (*fn)(void));
/* Prints one "SKIPPED: <tier> ..." line per CPU tier this machine lacks, so that a run on
 * (say) an AVX2-only CPU says visibly that the AVX-512 kernels went unchecked; returns
 * how many tiers were skipped. */
int tu_report_tier_skips(void);
/* Prints the summary line and returns the process exit code. */
int tu_finish(void);

/* xoshiro256** seeded RNG; tu_seed() reads MSBNB_TEST_SEED or uses a fresh time seed
 * (printed so a failure can be replayed). */
typedef struct { uint64_t s[4]; } tu_rng;
void tu_rng_init(tu_rng *r, uint64_t seed);
uint64_t tu_rng_u64(tu_rng *r);
float tu_rng_uniform(tu_rng *r);             /* [0, 1) */
float tu_rng_normal(tu_rng *r);              /* N(0, 1) */
uint64_t tu_seed(void);
void tu_fill_normal(tu_rng *r, float *x, size_t n, float scale);

/* Reference data: tensors from a safetensors file under $MSBNB_TEST_DATA. */
typedef struct tu_st tu_st;
tu_st *tu_st_open(const char *relpath);
void tu_st_close(tu_st *f);
/* Returns a borrowed pointer to the tensor's bytes (NULL if absent); fills dtype name,
 * shape (up to 8 dims) and byte count. */
const void *tu_st_get(tu_st *f, const char *name, const char **dtype, int64_t *shape, int *ndim,
                      size_t *nbytes);
/* Path under $MSBNB_TEST_DATA (static buffer). */
const char *tu_data_path(const char *relpath);

/* ULP distance between floats (0 for identical bits, large for NaN vs number). */
uint32_t tu_ulp_diff(float a, float b);

#endif
