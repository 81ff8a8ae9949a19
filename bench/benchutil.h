/* Benchmark helpers: wall-clock timing with medians, a read-bandwidth probe streaming
 * >= 1 GiB, memcpy bandwidth, and a machine description line for bench/RESULTS.md. */
#ifndef MSBNB_BENCHUTIL_H
#define MSBNB_BENCHUTIL_H

#include <stddef.h>
#include <stdint.h>

double bu_now(void); /* seconds, monotonic */

/* Runs fn(ctx) `warmup` times, then `reps` timed runs; returns the median seconds. */
double bu_median_time(void (*fn)(void *), void *ctx, int warmup, int reps);

/* Read bandwidth (bytes/s) with nthreads threads summing a buffer of `bytes` (>= 1 GiB
 * total streamed; median of several passes). */
double bu_read_bandwidth(int nthreads, size_t bytes);
/* memcpy bandwidth: bytes copied (read + write counted once, as "GB/s of data") per s. */
double bu_memcpy_bandwidth(int nthreads, size_t bytes);

/* memcpy split over nthreads threads. */
void bu_parallel_memcpy(void *dst, const void *src, size_t bytes, int nthreads);

/* "Intel(R) Xeon(R) ..., 2 cores, avx512, gcc 12.2" */
const char *bu_machine(void);

/* Fills x with a deterministic pseudo-random N(0, scale) sequence. */
void bu_fill_normal(float *x, size_t n, uint64_t seed, float scale);

#endif
