/* msbnb/linear.h — a linear layer whose weight is held in a quantized format.
 *
 * The seed's Linear8bit / Linear4bit in C: one layer type over weight formats
 *   f32, bf16, f16, int8 (per row: bitsandbytes LLM.int8 symmetric, or asymmetric zero-point),
 *   int4 (per group, symmetric / asymmetric), nf4, fp4 (± double quantization), q8dyn.
 * Shapes follow PyTorch nn.Linear: weight [out_features, in_features] (N x K) row-major,
 * forward Y[M, N] = X[M, K] · Wᵀ + b, f32 accumulation.
 *
 * Ownership: a layer owns copies of everything it is given (weight, bias, parts); the
 * caller keeps its buffers. Thread safety: forward/backward/dequantize on one layer may run
 * concurrently from several threads (they only read the layer); set_* and
 * quantize_weights mutate it and need exclusive access. OpenBLAS, used by the SIMD tiers
 * for f32 layers and for m > 8, has a process-wide thread count that forward sets to the
 * layer's count; its worker threads keep spinning for a while after each call
 * (OPENBLAS_THREAD_TIMEOUT, default 2^28 cycles) and take cores from the small-m kernels
 * that run next: a program that mixes both can set OPENBLAS_THREAD_TIMEOUT=4.
 *
 * Int8, symmetric (bitsandbytes Linear8bitLt, Dettmers et al. 2022, arXiv:2208.07339):
 * the weight is quantized row-wise with int8_vectorwise_quant of its float16 cast (codes CB
 * and row absmax SCB, bnb's layout). Forward quantizes the activation row-wise to int8 too
 * and computes the int8·int8 product with exact integer accumulation, scaled by
 * sx[m]·SCB[n]/127²; with a threshold > 0 (msbnb_linear_set_int8_threshold) the input
 * columns holding any |x| >= threshold are excluded from that and computed in float
 * against the dequantized weight columns (mixed-precision decomposition). Backward uses
 * the dequantized weight (straight-through for the activation rounding), as bnb does.
 * Int8 asymmetric: w = (q - z[n]) · s[n]; computed as dequantize-and-dot in float.
 *
 * Double quantization: the u8 absmax codes, nested absmax and offset are kept (the parts
 * getters return them, and the bytes/bits queries count them), and additionally decoded
 * once to an f32 absmax array (4 bytes per block: 1/64 of the weight count at block 64)
 * that the kernels read.
 */
#ifndef MSBNB_LINEAR_H
#define MSBNB_LINEAR_H

#include "msbnb/core.h"
#include "msbnb/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct msbnb_linear msbnb_linear_t; /* opaque */

/* Creates a layer from a dense weight [out_features, in_features] (f32, row-major; copied)
 * and optional bias [out_features] (copied; NULL = no bias), stored in format `fmt`
 * (NULL = f32; else validated with msbnb_qparams_validate). *out receives the layer, to be
 * released with msbnb_linear_free. Errors: INVALID_ARGUMENT (NULL, sizes <= 0), OVERFLOW,
 * UNSUPPORTED (bad block/group, per_tensor int8, a MSBNB_CPU tier this CPU lacks),
 * NON_FINITE (NaN/Inf weight), OUT_OF_MEMORY.
 * The seed's Linear8bit(768, 3072) is create(.., 768, 3072, w, b, &int8 params). */
MSBNB_API msbnb_status msbnb_linear_create(msbnb_linear_t **out, int64_t in_features,
                                           int64_t out_features, const float *weight,
                                           const float *bias, const msbnb_qparams *fmt);

/* Constructors from already-quantized parts (checkpoints in bitsandbytes' layout), copied.
 * 4-bit (fmt->type NF4 or FP4, fmt->block, fmt->double_quant):
 *   packed [ceil(N*K/2)] (flattened, element 2i in the high nibble), and either
 *   absmax [nblocks] f32 (double_quant 0; qabsmax/nested_absmax ignored) or
 *   qabsmax [nblocks] u8 + nested_absmax [ceil(nblocks/256)] + offset (double_quant 1;
 *   absmax ignored); nblocks = ceil(N*K / block). bias may be NULL. */
MSBNB_API msbnb_status msbnb_linear_create_4bit_from_parts(
    msbnb_linear_t **out, int64_t in_features, int64_t out_features, const msbnb_qparams *fmt,
    const uint8_t *packed, const float *absmax, const uint8_t *qabsmax,
    const float *nested_absmax, float offset, const float *bias);
/* LLM.int8 (bitsandbytes Int8Params): codes CB [N, K] int8 and SCB [N] (row absmax). */
MSBNB_API msbnb_status msbnb_linear_create_int8_from_parts(msbnb_linear_t **out,
                                                           int64_t in_features,
                                                           int64_t out_features,
                                                           const int8_t *cb, const float *scb,
                                                           const float *bias);
/* Row-scaled INT8 in msbnb's layout (msbnb_quantize_8bit): W[r, k] = (q[r, k] - zero[r]) *
 * scale[r], codes [N, K]; scale and zero [N], or [1] for every row with per_tensor; zero
 * NULL means symmetric (0). The layer computes with these weights exactly (float products,
 * not LLM.int8's int8 activations). */
MSBNB_API msbnb_status msbnb_linear_create_int8_scaled_from_parts(msbnb_linear_t **out,
                                                                  int64_t in_features,
                                                                  int64_t out_features,
                                                                  const int8_t *q,
                                                                  const float *scale,
                                                                  const float *zero,
                                                                  int per_tensor,
                                                                  const float *bias);
/* Per-group INT4 (msbnb_quantize_int4's layout): packed [ceil(N*K/2)], scales and (for
 * asymmetric) mins [N * ceil(K/group)]; fmt->type INT4, fmt->block = group size. */
MSBNB_API msbnb_status msbnb_linear_create_int4_from_parts(msbnb_linear_t **out,
                                                           int64_t in_features,
                                                           int64_t out_features,
                                                           const msbnb_qparams *fmt,
                                                           const uint8_t *packed,
                                                           const float *scales,
                                                           const float *mins, const float *bias);

/* A deep copy of a layer (weights, bias, settings); free it with msbnb_linear_free. */
MSBNB_API msbnb_status msbnb_linear_clone(msbnb_linear_t **out, const msbnb_linear_t *src);

/* Releases a layer and everything it owns. Accepts NULL. */
MSBNB_API void msbnb_linear_free(msbnb_linear_t *l);

/* The seed's layer.quantize_weights(): converts an f32 layer's weight to `fmt` in place
 * (bias stays f32). Errors: STATE if the layer is not f32 (already quantized), the create
 * errors for fmt. On error the layer is unchanged. */
MSBNB_API msbnb_status msbnb_linear_quantize_weights(msbnb_linear_t *l, const msbnb_qparams *fmt);

/* y[m, N] = x[m, K] · Wᵀ + b (f32 in and out; y is overwritten; x and y must not
 * overlap). m >= 1. Errors: INVALID_ARGUMENT, OVERFLOW, OUT_OF_MEMORY. */
MSBNB_API msbnb_status msbnb_linear_forward(const msbnb_linear_t *l, float *y, const float *x,
                                            int64_t m);

/* Forward with bf16 activations: x [m, K] bf16; y [m, N] written as y_type (F32 or BF16,
 * rounded to nearest even). Computes in f32. */
MSBNB_API msbnb_status msbnb_linear_forward_bf16(const msbnb_linear_t *l, void *y,
                                                 msbnb_dtype y_type, const uint16_t *x,
                                                 int64_t m);

/* Backward of forward for dy [m, N] (and x [m, K], needed only for dw):
 *   dx [m, K] = dy · W      (overwritten; NULL to skip), computed through the quantized
 *                            weight one dequantized row panel (msbnb_linear_set_workspace
 *                            bytes, default 8 MiB) at a time: no full float copy of a
 *                            weight larger than the panel;
 *   dw [N, K] += dyᵀ · x    (f32/bf16/f16 layers only; NULL to skip);
 *   db [N]    += Σ_m dy     (layers with or without bias; NULL to skip).
 * dw on a quantized layer: STATE. x may be NULL when dw is NULL. */
MSBNB_API msbnb_status msbnb_linear_backward(const msbnb_linear_t *l, float *dx, float *dw,
                                             float *db, const float *dy, const float *x,
                                             int64_t m);

/* The weight as f32 [N, K] (exactly what the kernels compute with; for symmetric int8 that
 * is CB * (SCB/127)). */
MSBNB_API msbnb_status msbnb_linear_dequantize_weight(const msbnb_linear_t *l, float *w_out);

/* Threads for this layer's kernels: nthreads <= 0 selects the default (MSBNB_THREADS, else
 * all online CPUs). */
MSBNB_API msbnb_status msbnb_linear_set_threads(msbnb_linear_t *l, int nthreads);
MSBNB_API int msbnb_linear_threads(const msbnb_linear_t *l); /* resolved count; 0 for NULL */
/* Runs the small-m kernels (m <= 8) on a caller-owned pool (msbnb/core.h) instead of
 * threads created per call; the thread count is min(msbnb_linear_threads, pool size).
 * Borrowed: the pool must outlive its use by the layer; NULL detaches. */
MSBNB_API msbnb_status msbnb_linear_set_threadpool(msbnb_linear_t *l, msbnb_threadpool_t *pool);

/* Kernel tier (default: MSBNB_CPU or the best one, fixed at create; a MSBNB_CPU this CPU
 * lacks makes create fail, see msbnb_cpu_check_env).
 * UNSUPPORTED if this CPU lacks it, INVALID_ARGUMENT for an unknown value. */
MSBNB_API msbnb_status msbnb_linear_set_cpu_tier(msbnb_linear_t *l, msbnb_cpu_tier t);
MSBNB_API msbnb_cpu_tier msbnb_linear_cpu_tier(const msbnb_linear_t *l);

/* Size in bytes of the float panel into which the weight is dequantized, piece by piece,
 * for sgemm: in forward at m > 8 (SIMD tiers) a row panel W[r0:r1, :] when K < 2N, else a
 * column panel W[:, k0:k1] over all rows; in backward's dX a row panel. The float weight is
 * never materialized whole (unless it fits in the panel). 0 selects the default (8 MiB,
 * column panels at least 256 wide); a small value gives thinner panels (at least 64
 * columns / 16 rows). Results agree to rounding for any value.
 * Errors: INVALID_ARGUMENT (NULL, bytes < 0). */
MSBNB_API msbnb_status msbnb_linear_set_workspace(msbnb_linear_t *l, int64_t bytes);

/* LLM.int8 outlier threshold (bitsandbytes Linear8bitLt threshold; 0 = no decomposition,
 * the default). Symmetric int8 layers only (STATE otherwise); must be finite and >= 0. */
MSBNB_API msbnb_status msbnb_linear_set_int8_threshold(msbnb_linear_t *l, float threshold);
MSBNB_API float msbnb_linear_int8_threshold(const msbnb_linear_t *l);

/* Arithmetic of the small-m (m <= 8) 4-bit kernels (NF4, FP4, INT4) of the AVX2 tier
 * (the AVX-512 tier decodes f32 codes with a 16-entry permute, fast enough as it is).
 * Default (0): the activation is rounded per 64 inputs to 15-bit integers scaled by their
 * absmax and the NF4/FP4 codes to 15-bit fixed point (INT4 codes are integers, exact), and
 * the products are integer multiply-adds (llama.cpp's quantized-activation dot products at
 * 15 bits instead of 8): ~2-3x faster where the f32 decode is compute-bound, relative
 * error ~1e-5 of Σ|x·w| (bf16 compute, bitsandbytes' GPU path, is ~4e-3).
 * 1: f32 activations and codes, as the scalar reference computes (results agree with it to
 * f32 rounding). Other kinds, the other tiers and m > 8 are not affected. The integer
 * kernel needs K % 64 == 0 and scale units of 32 or a multiple of 64 (NF4/FP4: dividing K);
 * other shapes take the f32 kernel.
 * Errors: INVALID_ARGUMENT (NULL, exact not 0 or 1). */
MSBNB_API msbnb_status msbnb_linear_set_exact(msbnb_linear_t *l, int exact);
MSBNB_API int msbnb_linear_exact(const msbnb_linear_t *l); /* 0 for NULL */

/* Queries (0 / NULL / a zero qparams for a NULL layer). */
MSBNB_API int64_t msbnb_linear_in_features(const msbnb_linear_t *l);
MSBNB_API int64_t msbnb_linear_out_features(const msbnb_linear_t *l);
MSBNB_API msbnb_qparams msbnb_linear_qparams(const msbnb_linear_t *l);
/* Bytes of weight storage in its format (codes + scales + dq metadata, as
 * msbnb_qparams_storage counts them; bias excluded) and bits per weight (8*bytes/(N*K)). */
MSBNB_API int64_t msbnb_linear_weight_bytes(const msbnb_linear_t *l);
MSBNB_API double msbnb_linear_bits_per_weight(const msbnb_linear_t *l);
MSBNB_API int msbnb_linear_has_bias(const msbnb_linear_t *l);
MSBNB_API const float *msbnb_linear_bias(const msbnb_linear_t *l); /* [N] or NULL; borrowed */

/* Mutable parameters of an f32 layer (for optimizers): *weight [N, K] and *bias [N] (NULL
 * when the layer has none), borrowed, valid until free/quantize_weights. STATE if the layer
 * is not f32. Either output pointer may be NULL. */
MSBNB_API msbnb_status msbnb_linear_f32_params(msbnb_linear_t *l, float **weight, float **bias);

/* Quantized parts, borrowed (valid until free / quantize_weights), in the layouts the
 * from_parts constructors take. STATE if the layer has another format.
 * 4-bit: absmax is the f32 absmax (decoded when double quantized); qabsmax,
 * nested_absmax, offset are set (NULL/0 unless double quantized). Output pointers may be NULL. */
MSBNB_API msbnb_status msbnb_linear_4bit_parts(const msbnb_linear_t *l, const uint8_t **packed,
                                               const float **absmax, const uint8_t **qabsmax,
                                               const float **nested_absmax, float *offset);
/* Symmetric int8: CB [N, K] and SCB [N]. */
MSBNB_API msbnb_status msbnb_linear_int8_parts(const msbnb_linear_t *l, const int8_t **cb,
                                               const float **scb);
/* INT4: packed, scales, mins (NULL when symmetric). */
MSBNB_API msbnb_status msbnb_linear_int4_parts(const msbnb_linear_t *l, const uint8_t **packed,
                                               const float **scales, const float **mins);

#ifdef __cplusplus
}
#endif
#endif /* MSBNB_LINEAR_H */
