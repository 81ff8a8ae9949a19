/* msbnb/core.h — status codes, error messages, dtypes, CPU tiers, version.
 *
 * Every fallible msbnb function returns msbnb_status (0 = MSBNB_OK). On failure a
 * human-readable detail is available from msbnb_last_error() on the same thread; the
 * message is overwritten by the next failing call on that thread (sqlite's errmsg).
 * The library never prints, exits or aborts.
 */
#ifndef MSBNB_CORE_H
#define MSBNB_CORE_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define MSBNB_API __attribute__((visibility("default")))
#else
#define MSBNB_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define MSBNB_VERSION_MAJOR 0
#define MSBNB_VERSION_MINOR 1
#define MSBNB_VERSION_PATCH 0
#define MSBNB_VERSION_STRING "0.1.0"

/* Status codes: explicit, append-only values. */
typedef enum msbnb_status {
    MSBNB_OK = 0,
    MSBNB_ERR_INVALID_ARGUMENT = 1, /* NULL pointer, zero/negative size, bad enum */
    MSBNB_ERR_OUT_OF_MEMORY = 2,
    MSBNB_ERR_OVERFLOW = 3,         /* size arithmetic would overflow */
    MSBNB_ERR_UNSUPPORTED = 4,      /* valid request this build/format cannot do */
    MSBNB_ERR_BUFFER_TOO_SMALL = 5, /* caller capacity smaller than needed */
    MSBNB_ERR_NON_FINITE = 6,       /* NaN or Inf where finite data is required */
    MSBNB_ERR_IO = 7,               /* open/read/write/rename failed */
    MSBNB_ERR_FORMAT = 8,           /* malformed file or header */
    MSBNB_ERR_SHAPE = 9,            /* dimensions do not agree */
    MSBNB_ERR_STATE = 10,           /* object is in the wrong state for the call */
    MSBNB_ERR_CUDA = 11,            /* CUDA runtime/driver/cuBLAS error */
    MSBNB_ERR_NOT_FOUND = 12,       /* named tensor/module/key not present */
    MSBNB_ERR_INTERNAL = 13
} msbnb_status;

/* Name of a status ("MSBNB_ERR_OVERFLOW"). Never NULL. Thread-safe. */
MSBNB_API const char *msbnb_status_str(msbnb_status s);

/* Detail message of the last failing call on this thread ("" if none). The pointer is
 * valid until the next msbnb call on this thread. */
MSBNB_API const char *msbnb_last_error(void);

/* Clears the thread's last error message. */
MSBNB_API void msbnb_clear_error(void);

MSBNB_API const char *msbnb_version(void);

/* Element types, named and sized as safetensors names them. */
typedef enum msbnb_dtype {
    MSBNB_DTYPE_F32 = 0,
    MSBNB_DTYPE_F16 = 1,
    MSBNB_DTYPE_BF16 = 2,
    MSBNB_DTYPE_F64 = 3,
    MSBNB_DTYPE_I64 = 4,
    MSBNB_DTYPE_I32 = 5,
    MSBNB_DTYPE_I16 = 6,
    MSBNB_DTYPE_I8 = 7,
    MSBNB_DTYPE_U8 = 8,
    MSBNB_DTYPE_BOOL = 9,
    MSBNB_DTYPE_COUNT_ = 10
} msbnb_dtype;

/* Bytes per element (0 for an invalid dtype). */
MSBNB_API size_t msbnb_dtype_size(msbnb_dtype t);
/* safetensors name ("F32", "BF16", ...) or NULL for an invalid dtype. */
MSBNB_API const char *msbnb_dtype_name(msbnb_dtype t);
/* Parses a safetensors dtype name; MSBNB_ERR_UNSUPPORTED for unknown names. */
MSBNB_API msbnb_status msbnb_dtype_from_name(const char *name, msbnb_dtype *out);

/* CPU kernel tiers. The best supported tier is found once at first use from cpuid +
 * XGETBV; the environment variable MSBNB_CPU=scalar|avx2|avx512 forces one. An unknown
 * or unsupported MSBNB_CPU is an error, never a silent fallback: every call that picks
 * kernels from the environment (the format functions of quant.h, msbnb_linear_create and
 * the other layer constructors, msbnb_optim_create) fails with msbnb_cpu_check_env()'s
 * status (INVALID_ARGUMENT for an unknown name, UNSUPPORTED for a tier this CPU lacks)
 * and message. */
typedef enum msbnb_cpu_tier {
    MSBNB_CPU_SCALAR = 0,
    MSBNB_CPU_AVX2 = 1,   /* AVX2 + FMA + F16C */
    MSBNB_CPU_AVX512 = 2  /* AVX-512 F/BW/DQ/VL (+VNNI, BF16 where present) */
} msbnb_cpu_tier;

MSBNB_API const char *msbnb_cpu_tier_name(msbnb_cpu_tier t);
/* Best tier this CPU and OS support. */
MSBNB_API msbnb_cpu_tier msbnb_cpu_tier_best(void);
/* Whether this CPU supports a tier. */
MSBNB_API int msbnb_cpu_tier_supported(msbnb_cpu_tier t);
/* Validates MSBNB_CPU: MSBNB_OK if unset or naming a supported tier, else an error
 * (MSBNB_ERR_INVALID_ARGUMENT for unknown names, MSBNB_ERR_UNSUPPORTED for tiers this
 * CPU lacks) with a message. Writes the tier the environment selects to *tier. */
MSBNB_API msbnb_status msbnb_cpu_check_env(msbnb_cpu_tier *tier);
/* Parses "scalar" / "avx2" / "avx512". */
MSBNB_API msbnb_status msbnb_cpu_tier_from_name(const char *name, msbnb_cpu_tier *tier);
/* Number of threads used when a call is given nthreads <= 0: MSBNB_THREADS if set to a
 * positive integer, else the number of online CPUs. */
MSBNB_API int msbnb_default_threads(void);

/* A persistent thread pool, owned by the caller: nthreads participants including the
 * calling thread (0: msbnb_default_threads()). Attach it to layers
 * (msbnb_linear_set_threadpool) so that their kernels reuse its threads instead of
 * creating threads on every call. A pool runs one job at a time (calls from several
 * threads take turns); free it after the last layer using it is done. */
typedef struct msbnb_threadpool msbnb_threadpool_t;
MSBNB_API msbnb_status msbnb_threadpool_create(msbnb_threadpool_t **out, int nthreads);
MSBNB_API void msbnb_threadpool_free(msbnb_threadpool_t *pool); /* NULL accepted */
MSBNB_API int msbnb_threadpool_size(const msbnb_threadpool_t *pool); /* 0 for NULL */

#ifdef __cplusplus
}
#endif
#endif /* MSBNB_CORE_H */
