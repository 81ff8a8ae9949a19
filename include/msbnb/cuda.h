/* msbnb/cuda.h — the CUDA backend: device buffers; device versions of the functional API
 * (quant.h); a device copy of the quantized linear layer (linear.h: forward for every weight
 * format, backward dX); LoRA forward/backward on it; AdamW steps with f32 or 8-bit states.
 * Measured speeds: bench/RESULTS.md ("CUDA").
 *
 * Available when the library was built with the CUDA toolkit (MSBNB_HAVE_CUDA is then
 * defined for users of the library target); without it these declarations have no
 * definitions, so guard calls with #ifdef MSBNB_HAVE_CUDA.
 *
 * Conventions:
 *  - Pointers documented as "device" point to memory from msbnb_cuda_malloc (cudaMalloc;
 *    never managed memory). Host pointers are marked "host".
 *  - Work runs on the legacy default stream of the current device, in issue order, and is
 *    asynchronous to the host unless the contract says the call synchronizes. A kernel
 *    fault may therefore surface as MSBNB_ERR_CUDA from a later call; every CUDA error
 *    becomes MSBNB_ERR_CUDA with cudaGetErrorString() in msbnb_last_error().
 *  - Quantize / dequantize results are bit-identical to the CPU functions of the same name
 *    (and so to bitsandbytes): same layouts, same sizes, same rounding.
 *  - Arguments are validated as in quant.h (NULL, sizes, block sizes, dtypes).
 *  - Thread safety: calls on distinct outputs may run from several host threads.
 */
#ifndef MSBNB_CUDA_H
#define MSBNB_CUDA_H

#include "msbnb/core.h"
#include "msbnb/linear.h"
#include "msbnb/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- devices, buffers */

/* Number of usable CUDA devices; 0 when there is no GPU or no driver (never fails). */
MSBNB_API int msbnb_cuda_device_count(void);

typedef struct msbnb_cuda_device_info {
    char name[256];    /* "NVIDIA H100 80GB HBM3" */
    int cc_major, cc_minor;
    int sm_count;
    int64_t total_mem; /* bytes */
    int64_t l2_bytes;
} msbnb_cuda_device_info;

/* Properties of the current device. Errors: MSBNB_ERR_CUDA (no device). */
MSBNB_API msbnb_status msbnb_cuda_device_info_get(msbnb_cuda_device_info *out);

/* cudaMalloc of `bytes` (> 0) into *ptr; free with msbnb_cuda_free. Errors:
 * MSBNB_ERR_INVALID_ARGUMENT, MSBNB_ERR_CUDA (e.g. out of device memory). */
MSBNB_API msbnb_status msbnb_cuda_malloc(void **ptr, size_t bytes);
/* cudaFree; NULL is accepted. */
MSBNB_API msbnb_status msbnb_cuda_free(void *ptr);

typedef enum msbnb_cuda_copy {
    MSBNB_CUDA_HOST_TO_DEVICE = 1,
    MSBNB_CUDA_DEVICE_TO_HOST = 2,
    MSBNB_CUDA_DEVICE_TO_DEVICE = 3
} msbnb_cuda_copy;

/* Copies `bytes` (0 is a no-op). Host<->device copies synchronize with the host. */
MSBNB_API msbnb_status msbnb_cuda_memcpy(void *dst, const void *src, size_t bytes,
                                         msbnb_cuda_copy kind);
/* Sets `bytes` of device memory to the byte `value`. */
MSBNB_API msbnb_status msbnb_cuda_memset(void *dst, int value, size_t bytes);
/* Waits for all queued work; reports any asynchronous error. */
MSBNB_API msbnb_status msbnb_cuda_synchronize(void);

/* ---------------------------------------------------------------- formats (device data) */

/* Device msbnb_quantize_4bit: x (device, F32/F16/BF16 [n]) -> packed [ceil(n/2)] and
 * absmax [nblocks] (device). Synchronizes (to report NaN/Inf: MSBNB_ERR_NON_FINITE). */
MSBNB_API msbnb_status msbnb_cuda_quantize_4bit(uint8_t *packed, float *absmax, const void *x,
                                                msbnb_dtype x_type, int64_t n,
                                                int64_t blocksize, msbnb_qtype type);
/* Device msbnb_dequantize_4bit: out (device, F32/F16/BF16 [n]). Asynchronous. */
MSBNB_API msbnb_status msbnb_cuda_dequantize_4bit(void *out, msbnb_dtype out_type,
                                                  const uint8_t *packed, const float *absmax,
                                                  int64_t n, int64_t blocksize,
                                                  msbnb_qtype type);

/* Device msbnb_double_quant_absmax: absmax (device [nblocks]) -> qabsmax [nblocks],
 * nested_absmax [ceil(nblocks/256)], offset [1], all device. The offset is computed in
 * the CPU path's (= torch.mean's) summation order, so all three are bit-identical.
 * Synchronizes (to report non-finite absmax). */
MSBNB_API msbnb_status msbnb_cuda_double_quant_absmax(uint8_t *qabsmax, float *nested_absmax,
                                                      float *offset, const float *absmax,
                                                      int64_t nblocks);
/* absmax[i] = dynamic_map[qabsmax[i]] * nested_absmax[i/256] + offset[0] (device). */
MSBNB_API msbnb_status msbnb_cuda_double_dequant_absmax(float *absmax, const uint8_t *qabsmax,
                                                        const float *nested_absmax,
                                                        const float *offset, int64_t nblocks);

/* Device 8-bit blockwise (dynamic map). `code` is a HOST pointer to 256 sorted floats, or
 * NULL for msbnb_dynamic_map(). Quantize synchronizes (NaN/Inf check). */
MSBNB_API msbnb_status msbnb_cuda_quantize_blockwise_8bit(uint8_t *q, float *absmax,
                                                          const void *x, msbnb_dtype x_type,
                                                          int64_t n, int64_t blocksize,
                                                          const float *code);
MSBNB_API msbnb_status msbnb_cuda_dequantize_blockwise_8bit(void *out, msbnb_dtype out_type,
                                                            const uint8_t *q,
                                                            const float *absmax, int64_t n,
                                                            int64_t blocksize,
                                                            const float *code);

/* Device msbnb_int8_vectorwise_quant with threshold 0 (no outlier columns; the layer
 * forward handles thresholds > 0 itself). a (device, F32/F16/BF16 [rows, cols]) ->
 * q [rows*cols], row_absmax [rows]. Synchronizes (NaN/Inf check). */
MSBNB_API msbnb_status msbnb_cuda_int8_vectorwise_quant(int8_t *q, float *row_absmax,
                                                        const void *a, msbnb_dtype a_type,
                                                        int64_t rows, int64_t cols);
MSBNB_API msbnb_status msbnb_cuda_int8_vectorwise_dequant(float *out, const int8_t *q,
                                                          const float *row_absmax,
                                                          int64_t rows, int64_t cols);

/* Device msbnb_quantize_8bit / msbnb_dequantize_8bit (per-row or per-tensor, symmetric or
 * asymmetric). All pointers device; offset may be NULL when symmetric. Quantize
 * synchronizes (NaN/Inf check). */
MSBNB_API msbnb_status msbnb_cuda_quantize_8bit(int8_t *q, float *scale, float *offset,
                                                const float *w, int64_t rows, int64_t cols,
                                                int symmetric, int per_tensor);
MSBNB_API msbnb_status msbnb_cuda_dequantize_8bit(float *out, const int8_t *q,
                                                  const float *scale, const float *offset,
                                                  int64_t rows, int64_t cols, int symmetric,
                                                  int per_tensor);

/* Device msbnb_quantize_int4 / msbnb_dequantize_int4 (per-group along each row). All
 * pointers device; mins may be NULL when symmetric. Quantize synchronizes. */
MSBNB_API msbnb_status msbnb_cuda_quantize_int4(uint8_t *packed, float *scales, float *mins,
                                                const float *w, int64_t rows, int64_t cols,
                                                int64_t group_size, int symmetric);
MSBNB_API msbnb_status msbnb_cuda_dequantize_int4(float *out, const uint8_t *packed,
                                                  const float *scales, const float *mins,
                                                  int64_t rows, int64_t cols,
                                                  int64_t group_size, int symmetric);

/* ---------------------------------------------------------------- linear forward */

/* A 4-bit weight W [N, K] (rows = output features) as bitsandbytes stores it, all device
 * pointers: packed [ceil(N*K/2)], and either absmax (float [nblocks]) or, with
 * double_quant, qabsmax (u8 [nblocks]) + nested_absmax (float [ceil(nblocks/256)]) +
 * offset (float [1]). Borrowed: the caller keeps the buffers alive. */
typedef struct msbnb_cuda_weight4 {
    msbnb_qtype type; /* MSBNB_QTYPE_NF4 or MSBNB_QTYPE_FP4 */
    int64_t blocksize;
    int double_quant;
    const uint8_t *packed;
    const float *absmax;        /* when !double_quant */
    const uint8_t *qabsmax;     /* when double_quant */
    const float *nested_absmax; /* when double_quant */
    const float *offset;        /* when double_quant */
} msbnb_cuda_weight4;

/* Fused dequantize + GEMV: y[m, n] = sum_k x[m, k] * W[n, k] for M <= 16, f32
 * accumulation, streaming W once. x, y device [M, K] / [M, N] of the same dtype, F32 or
 * BF16. Asynchronous. M > 16: MSBNB_ERR_UNSUPPORTED (use msbnb_cuda_linear_4bit).
 * BF16 x with 2 <= M <= 16 (block size >= 64 dividing K) runs on the tensor cores
 * (mma.sync bf16, codes split into bf16 + bf16 residual: f32-grade within 1e-5 Σ|w x|).
 * Environment: MSBNB_CUDA_GEMV4_MMA=1 / 0 forces / forbids the tensor-core kernel (M = 1
 * included); MSBNB_CUDA_MMA_LO=0 rounds the codes to bf16 as bitsandbytes does (faster,
 * within 2^-9 Σ|w x|); MSBNB_CUDA_GEMV4_M1=1 / 0 forces / forbids the M = 1 chunked
 * kernel (by default chosen by layer size and format; results agree within f32
 * summation order). */
MSBNB_API msbnb_status msbnb_cuda_gemv_4bit(void *y, const void *x, msbnb_dtype x_type,
                                            const msbnb_cuda_weight4 *w, int64_t M,
                                            int64_t N, int64_t K);

/* Fused int8 GEMV: y[m, n] = row_scale[n] * scale_mul * sum_k x[m, k] * q[n, k] for
 * M <= 16 (q int8 [N, K] device, row_scale float [N] device; for LLM.int8 weights pass
 * row_absmax and scale_mul = 1/127, for msbnb_quantize_8bit symmetric weights the scale
 * and 1). x, y as for msbnb_cuda_gemv_4bit. Asynchronous. */
MSBNB_API msbnb_status msbnb_cuda_gemv_int8(void *y, const void *x, msbnb_dtype x_type,
                                            const int8_t *q, const float *row_scale,
                                            float scale_mul, int64_t M, int64_t N,
                                            int64_t K);

/* cuBLAS handle + scratch for the large-M paths. Create once per thread/stream user. */
typedef struct msbnb_cuda_ctx msbnb_cuda_ctx;
MSBNB_API msbnb_status msbnb_cuda_ctx_create(msbnb_cuda_ctx **out);
MSBNB_API void msbnb_cuda_ctx_free(msbnb_cuda_ctx *ctx); /* NULL accepted */

/* y[M, N] = x[M, K] * W[N, K]^T with bf16 x, W, y (device) through cuBLAS, f32 compute. */
MSBNB_API msbnb_status msbnb_cuda_gemm_bf16(msbnb_cuda_ctx *ctx, uint16_t *y, const uint16_t *x,
                                            const uint16_t *w, int64_t M, int64_t N,
                                            int64_t K);

/* Linear forward of a 4-bit weight for any M (bf16 x and y): the fused GEMV for M <= 16,
 * otherwise W is dequantized to bf16 into the context's scratch and multiplied through
 * cuBLAS. Asynchronous. MSBNB_CUDA_GEMV4_FOLD=1 runs M = 1 (K % 32 == 0) on the fold kernel
 * (x folded into per-pair tables; K-slices summed in the context's scratch with atomics, so
 * the summation order, and the last bits, may change between calls). */
MSBNB_API msbnb_status msbnb_cuda_linear_4bit(msbnb_cuda_ctx *ctx, uint16_t *y, const uint16_t *x,
                                              const msbnb_cuda_weight4 *w, int64_t M,
                                              int64_t N, int64_t K);

/* ---------------------------------------------------------------- linear layer */

/* A device copy of a CPU linear layer (msbnb/linear.h), any weight format: its forward and
 * backward dX compute what the CPU layer computes (LLM.int8 bit for bit at M <= 8 with f32
 * activations: the same int8 activation codes and exact integer sums; float formats within
 * f32 summation order). Opaque; owns its device memory (one cudaMalloc). Read-only after upload, so
 * forward/backward may run from several host threads with distinct contexts. */
typedef struct msbnb_cuda_linear msbnb_cuda_linear_t;

/* Uploads `host` (weights in their quantized format, bias, LLM.int8 threshold) into a new
 * device layer *out; the host layer is only read and may be freed afterwards. Synchronizes.
 * Environment: MSBNB_CUDA_FOLD_LAYOUT=1 also stores NF4/FP4 weights (K % 32 == 0) slice-major
 * for the M = 1 fold kernel, which forward then uses for M = 1 when K <= N (from 4 M weights):
 * a second copy of the codes and scales (about twice the layer's device memory).
 * Errors: INVALID_ARGUMENT (NULL), CUDA (out of device memory, ...). */
MSBNB_API msbnb_status msbnb_cuda_linear_upload(msbnb_cuda_linear_t **out, const msbnb_linear_t *host);
/* Releases the layer's device memory. Accepts NULL. */
MSBNB_API void msbnb_cuda_linear_free(msbnb_cuda_linear_t *l);
MSBNB_API int64_t msbnb_cuda_linear_in_features(const msbnb_cuda_linear_t *l);  /* K; 0 for NULL */
MSBNB_API int64_t msbnb_cuda_linear_out_features(const msbnb_cuda_linear_t *l); /* N; 0 for NULL */
MSBNB_API int64_t msbnb_cuda_linear_weight_bytes(const msbnb_cuda_linear_t *l); /* as the CPU layer's */

/* y[m, N] = x[m, K] · Wᵀ + b with x, y device arrays of dtype x_type (F32 or BF16; y is
 * rounded to nearest even for BF16), f32 accumulation. m <= 16 runs fused kernels that read
 * W once; larger m dequantizes W into ctx's scratch (bf16 for BF16 x, f32 for F32 x) and
 * multiplies through cuBLAS. LLM.int8 layers with an outlier threshold > 0 add the outlier
 * columns of x (|x| >= threshold in any row) in float, as the CPU layer. Asynchronous; no
 * NaN check of x. Uses ctx (one host thread at a time). Errors: INVALID_ARGUMENT, OVERFLOW,
 * UNSUPPORTED (x_type), CUDA. */
MSBNB_API msbnb_status msbnb_cuda_linear_forward(msbnb_cuda_ctx *ctx, const msbnb_cuda_linear_t *l, void *y,
                                                 const void *x, msbnb_dtype x_type, int64_t m);
/* dx[m, K] = dy[m, N] · W (device f32, dx overwritten), W dequantized to f32 in ctx's
 * scratch (f32 layers use theirs), cublasSgemm (no TF32). Asynchronous. */
MSBNB_API msbnb_status msbnb_cuda_linear_backward_dx(msbnb_cuda_ctx *ctx, const msbnb_cuda_linear_t *l, float *dx,
                                                     const float *dy, int64_t m);

/* ---------------------------------------------------------------- AdamW steps */

/* AdamW hyper-parameters of one step (torch.optim.AdamW's meaning). */
typedef struct msbnb_cuda_adamw {
    float lr, beta1, beta2, eps, weight_decay;
    float grad_scale; /* the gradient is multiplied by this first (1 / accumulation steps) */
    int64_t step;     /* t >= 1, for the bias corrections 1 - beta^t */
} msbnb_cuda_adamw;
/* lr 1e-3, betas 0.9 / 0.999, eps 1e-8, weight_decay 0.01, grad_scale 1, step 1. */
MSBNB_API msbnb_cuda_adamw msbnb_cuda_adamw_default(void);

/* One AdamW step on n device f32 elements (p, m, v updated in place; g read):
 *   m = b1 m + (1-b1) g', v = b2 v + (1-b2) g'^2, g' = g * grad_scale,
 *   p = p (1 - lr wd) - (lr / (1-b1^t)) m / (sqrt(v) / sqrt(1-b2^t) + eps),
 * in exactly this order, so the result is bit-identical to the same f32 loop on the CPU.
 * Buffers 16-byte aligned (cudaMalloc). g must be finite (not checked on the device).
 * Asynchronous. Errors: INVALID_ARGUMENT (NULL, n <= 0, bad hyper-parameters), CUDA. */
MSBNB_API msbnb_status msbnb_cuda_adamw_step(float *p, float *m, float *v, const float *g, int64_t n,
                                             const msbnb_cuda_adamw *h);

/* 8-bit AdamW (bitsandbytes AdamW8bit): m and v as 8-bit codes qm, qv [n] with f32 absmax
 * am, av [msbnb_cuda_adamw8bit_nblocks(n)] per block of 256 (all device). Each block is
 * dequantized (code[q] * absmax), updated as msbnb_cuda_adamw_step, and re-quantized with a
 * fresh absmax exactly as msbnb_quantize_blockwise_8bit does (bit-identical to that CPU
 * sequence). code_m / code_v: HOST arrays of 256 sorted floats, or NULL for the signed map
 * msbnb_dynamic_map() and the unsigned map (msbnb_cuda_adamw_unsigned_map). Zero states
 * are all-zero codes and absmax. Asynchronous. Errors as msbnb_cuda_adamw_step. */
MSBNB_API msbnb_status msbnb_cuda_adamw8bit_step(float *p, uint8_t *qm, float *am, uint8_t *qv, float *av,
                                                 const float *g, int64_t n, const msbnb_cuda_adamw *h,
                                                 const float *code_m, const float *code_v);
/* Blocks of 256 for n elements (0 for n <= 0). */
MSBNB_API int64_t msbnb_cuda_adamw8bit_nblocks(int64_t n);
/* bitsandbytes create_dynamic_map(signed=False) (the second-moment map) into code[256]. */
MSBNB_API msbnb_status msbnb_cuda_adamw_unsigned_map(float *code);

/* ---------------------------------------------------------------- LoRA */

/* A LoRA adapter on a device layer (PEFT's Linear): A [rank, K] (lora_A.weight) and
 * B [N, rank] (lora_B.weight), device f32, borrowed; scale = lora_alpha / rank. */
typedef struct msbnb_cuda_lora {
    const float *A, *B;
    int64_t rank;
    float scale;
} msbnb_cuda_lora;

/* y[m, N] = base(x) + scale · (x Aᵀ) Bᵀ for f32 device x [m, K]; h [m, rank] (device) receives
 * x Aᵀ, which backward needs. Asynchronous. Errors: INVALID_ARGUMENT (NULL, rank, m),
 * the base layer's forward errors, CUDA. */
MSBNB_API msbnb_status msbnb_cuda_lora_forward(msbnb_cuda_ctx *ctx, const msbnb_cuda_linear_t *base,
                                               const msbnb_cuda_lora *ad, float *y, float *h, const float *x,
                                               int64_t m);
/* Backward of msbnb_cuda_lora_forward for dy [m, N] (device f32); the base weight is frozen:
 *   dx [m, K] = dy · W + scale (dy B) A   (overwritten; NULL to skip)
 *   dA [rank, K] += scale (dy B)ᵀ x       (NULL to skip; x needed then)
 *   dB [N, rank] += scale dyᵀ h           (NULL to skip; h from forward needed then)
 * Uses ctx's scratch. Asynchronous. Errors as forward. */
MSBNB_API msbnb_status msbnb_cuda_lora_backward(msbnb_cuda_ctx *ctx, const msbnb_cuda_linear_t *base,
                                                const msbnb_cuda_lora *ad, float *dx, float *dA, float *dB,
                                                const float *dy, const float *x, const float *h, int64_t m);

#ifdef __cplusplus
}
#endif
#endif /* MSBNB_CUDA_H */
