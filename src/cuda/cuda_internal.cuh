/* Internal helpers of the CUDA backend: CUDA-error -> msbnb_status, argument checks, and
 * the device mirrors of src/quant/codebooks.h (the same literals, so quantization
 * decisions are the CPU's and bitsandbytes'). Not installed. */
#ifndef MSBNB_CUDA_INTERNAL_CUH
#define MSBNB_CUDA_INTERNAL_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>

extern "C" {
#include "internal.h"
#include "msbnb/cuda.h"
#include "msbnb/quant.h"
extern const float msbnb__nf4_code[16];
extern const float msbnb__fp4_code[16];
extern const float msbnb__fp4_dequant[16]; /* code 8 -> -0.0, as bnb's dequantize kernel */
extern const float msbnb__dynamic_map[256];
#include "cpu/gemv.h"
#include "msbnb/linear.h"
/* src/nn/linear.c: the layer's weight as a kernel view (borrowed). */
msbnb__wview msbnb__linear_view(const msbnb_linear_t *l);
}

/* llm.c's cudaCheck, minus the exit: the error becomes a status with CUDA's message. */
#define MSBNB_CUDA_TRY(call)                                                              \
    do {                                                                                  \
        cudaError_t msbnb__ce = (call);                                                   \
        if (msbnb__ce != cudaSuccess)                                                     \
            return msbnb__fail(MSBNB_ERR_CUDA, "%s: %s: %s", __func__, #call,              \
                               cudaGetErrorString(msbnb__ce));                            \
    } while (0)

/* After a launch: configuration errors now, faults of earlier kernels if already known. */
#define MSBNB_CUDA_LAUNCHED() MSBNB_CUDA_TRY(cudaGetLastError())

/* Grid size for `work` items at `per_block` items a block, capped for grid-stride loops. */
static inline unsigned msbnb__grid(int64_t work, int64_t per_block) {
    int64_t g = (work + per_block - 1) / per_block;
    if (g < 1) g = 1;
    if (g > 65535LL * 64) g = 65535LL * 64;
    return (unsigned)g;
}

/* A small device flag (NaN/Inf seen) read back once the kernels are done. */
msbnb_status msbnb__cuda_flag_alloc(int **flag);
msbnb_status msbnb__cuda_flag_read(int *flag, int *value); /* synchronizes, frees */

/* Programmatic dependent launch (PDL, sm_90+): the kernel may start while the one before it
 * in the stream still runs, and must execute griddepcontrol.wait before it reads what that
 * kernel writes (or writes what it reads). True when the current device has it and
 * MSBNB_CUDA_PDL=0 (benchmarks) does not turn it off. */
static inline bool msbnb__pdl_ok(void) {
    const char *e = getenv("MSBNB_CUDA_PDL");
    if (e && e[0] == '0') return false;
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    return major >= 9;
}

/* kern<<<grid, block, smem>>>(args...) on the default stream, with PDL when pdl is set; a
 * launch the runtime refuses with the attribute is repeated as a plain one. */
template <typename... P, typename... A>
static inline cudaError_t msbnb__launch(void (*kern)(P...), dim3 grid, dim3 block, size_t smem, bool pdl,
                                        A... args) {
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = 0;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx(&cfg, kern, args...);
    if (e != cudaSuccess && pdl) {
        (void)cudaGetLastError();
        cfg.numAttrs = 0;
        e = cudaLaunchKernelEx(&cfg, kern, args...);
    }
    return e;
}

/* In a kernel: let the next kernel of the stream start (PDL), and wait for the one before. */
__device__ __forceinline__ void msbnb__pdl_launch_next(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
/* A hint: the L2 fetches the 128-byte line at p (no registers held, no fault). */
__device__ __forceinline__ void msbnb__prefetch_l2(const void *p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }
__device__ __forceinline__ void msbnb__pdl_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/* ---------------------------------------------------------------- device helpers */

__device__ __forceinline__ float msbnb__warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* A rounded value to int8, saturating (the int8 row-wise quantizer's last step). */
__device__ __forceinline__ int8_t msbnb__sat8(float v) {
    if (v > 127.0f) return 127;
    if (v < -128.0f) return -128;
    return (int8_t)v;
}

/* Loads element i of an F32/F16/BF16 array as float (exact widening, as msbnb__load_f32). */
__device__ __forceinline__ float msbnb__ld_f32(const void *x, int dt, int64_t i) {
    if (dt == MSBNB_DTYPE_F32) return ((const float *)x)[i];
    uint16_t u = ((const uint16_t *)x)[i];
    if (dt == MSBNB_DTYPE_BF16) return __uint_as_float((uint32_t)u << 16);
    return __half2float(__ushort_as_half(u));
}

/* bitsandbytes' 1.0f / x under --use_fast_math is this PTX instruction (see msbnb__bnb_rcp
 * for the CPU emulation of it). */
__device__ __forceinline__ float msbnb__rcp_approx_ftz(float x) {
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

/* msbnb__mul_ftz: an IEEE product, flushed to a signed zero when subnormal. */
__device__ __forceinline__ float msbnb__dmul_ftz(float a, float b) {
    float p = __fmul_rn(a, b);
    return fabsf(p) < 1.17549435e-38f ? copysignf(0.0f, p) : p;
}

/* Mirror of msbnb__nf4_code_of (codebooks.h). */
__device__ __forceinline__ uint8_t msbnb__dnf4_code_of(float x) {
    if (x > 0.03979014977812767f) {
        if (x > 0.3893125355243683f) {
            if (x > 0.6427869200706482f) return x > 0.8614784181118011f ? 15 : 14;
            return x > 0.5016634166240692f ? 13 : 12;
        }
        if (x > 0.2035212516784668f) return x > 0.2920137718319893f ? 11 : 10;
        return x > 0.1202552504837513f ? 9 : 8;
    }
    if (x > -0.33967943489551544f) {
        if (x > -0.13791173323988914f) return x > -0.045525018125772476f ? 7 : 6;
        return x > -0.23460740596055984f ? 5 : 4;
    }
    if (x > -0.6106329262256622f) return x > -0.4599952697753906f ? 3 : 2;
    return x > -0.8480964004993439f ? 1 : 0;
}

/* Mirror of msbnb__fp4_code_of. */
__device__ __forceinline__ uint8_t msbnb__dfp4_code_of(float x) {
    uint8_t sign = x < 0 ? 8 : 0;
    x = x < 0 ? -x : x;
    if (x > 0.29166667f) {
        if (x > 0.583333f) return (x > 0.8333333f ? 3 : 2) + sign;
        return (x > 0.4166667f ? 5 : 4) + sign;
    }
    if (x > 0.0859375f) return (x > 0.20833333f ? 7 : 6) + sign;
    return (x > 0.00260417f ? 1 : 0) + sign;
}

/* Mirror of msbnb__code8_of (bitsandbytes dQuantize<0>) over a code in shared memory;
 * entry i at code[i * STRIDE] (STRIDE 32 with code = table + lane: one copy of the table
 * per bank, so the lanes' diverging searches never conflict). */
template <int STRIDE = 1>
__device__ __forceinline__ uint8_t msbnb__dcode8_of(const float *code, float x) {
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = -1.0f, upper = 1.0f;
    float val = code[pivot * STRIDE];
    for (int i = 64; i > 0; i >>= 1) {
        if (x > val) {
            lower_pivot = pivot;
            lower = val;
            pivot += i;
        } else {
            upper_pivot = pivot;
            upper = val;
            pivot -= i;
        }
        val = code[pivot * STRIDE];
    }
    if (upper_pivot == 255) upper = code[upper_pivot * STRIDE];
    if (lower_pivot == 0) lower = code[lower_pivot * STRIDE];
    if (x > val) {
        float mid = __fmul_rn(__fadd_rn(upper, val), 0.5f);
        return (uint8_t)(x > mid ? upper_pivot : pivot);
    }
    float mid = __fmul_rn(__fadd_rn(lower, val), 0.5f);
    return (uint8_t)(x < mid ? lower_pivot : pivot);
}

/* Stores f as F32 / F16 / BF16 (round to nearest even, as msbnb_convert). */
__device__ __forceinline__ void msbnb__st_f32(void *out, int dt, int64_t i, float f) {
    if (dt == MSBNB_DTYPE_F32) ((float *)out)[i] = f;
    else if (dt == MSBNB_DTYPE_BF16) ((__nv_bfloat16 *)out)[i] = __float2bfloat16_rn(f);
    else ((__half *)out)[i] = __float2half_rn(f);
}

struct msbnb__code256 { float v[256]; };

/* msbnb_cuda_gemv_4bit plus bias[N] (device, or NULL) added before the output rounding. */
msbnb_status msbnb__cuda_gemv_4bit_bias(void *y, const void *x, msbnb_dtype x_type, const msbnb_cuda_weight4 *w,
                                        const float *bias, int64_t M, int64_t N, int64_t K);
/* A 4-bit weight re-laid for the fold kernel (gemv4_fold_cuda.cu), slice-major: the 64 code
 * bytes of slice s (k = 128 s .. 128 s + 127) of row n at w + (s * npad + n) * 64, rows
 * padded to npad = 8 ceil(N / 8) and the last slice past K with zero bytes; the scale of
 * chunk c (32 codes) of that (slice, row) at ((s * npad + n) << sc_log2) + (c >> (2 -
 * sc_log2)) of absmax (f32) or, double-quantized, of qabsmax (the absmax code; nested and
 * offset stay bnb's); zero past K and N. Device pointers, owned by the uploaded layer. */
struct msbnb__fold_layout {
    const uint8_t *w;
    const float *absmax;
    const uint8_t *qabsmax;
    int64_t npad;
    int sc_log2; /* log2 of the scales per (slice, row): 2 (one per chunk), 1 or 0 */
};
/* The same with a context (may be NULL): M = 1 then runs the fold kernel where it applies
 * (gemv4_fold_cuda.cu), which needs the context's scratch; fl: the weight's fold layout, or
 * NULL. pdl: launch it with programmatic dependent launch, which reads W before the previous
 * kernel is done (only for weights no kernel writes, i.e. uploaded layers). */
msbnb_status msbnb__cuda_gemv_4bit_ctx(msbnb_cuda_ctx *ctx, void *y, const void *x, msbnb_dtype x_type,
                                       const msbnb_cuda_weight4 *w, const msbnb__fold_layout *fl, const float *bias,
                                       int64_t M, int64_t N, int64_t K, bool pdl);
/* gemv4_fold_cuda.cu: whether the fold kernel takes this M = 1 product (shape, alignment,
 * size rule, MSBNB_CUDA_GEMV4_FOLD), and its launch with the 16-entry code table codev
 * (arguments already validated). */
extern "C" bool msbnb__cuda_gemv4_fold_applies(int64_t N, int64_t K, const msbnb_cuda_weight4 *w, bool has_layout);
extern "C" msbnb_status msbnb__cuda_gemv4_fold(msbnb_cuda_ctx *ctx, void *y, const void *x, bool xbf16,
                                              const msbnb_cuda_weight4 *w, const float *codev,
                                              const msbnb__fold_layout *fl, int bs_log2, const float *bias,
                                              int64_t N, int64_t K, bool pdl);
/* Host: builds the fold layout of a bnb-packed 4-bit weight (host arrays: packed, and absmax
 * or, double-quantized, the absmax codes qabsmax) in one device allocation *arena (the
 * caller cudaFrees it) described by *fl. Needs K % 32 == 0 and a power-of-two block >= 32. */
extern "C" msbnb_status msbnb__cuda_fold_layout_upload(void **arena, msbnb__fold_layout *fl, const uint8_t *packed,
                                                      const float *absmax, const uint8_t *qabsmax, int64_t N,
                                                      int64_t K, int64_t bs);
/* The context's fold scratch: acc [n] floats and cnt [ceil(n / 8)] counters, zero at
 * allocation and left zero by every fold kernel; grown (freed, reallocated) when n grows. */
msbnb_status msbnb__cuda_ctx_fold_scratch(msbnb_cuda_ctx *ctx, int64_t n, float **acc, unsigned **cnt);
/* Symmetric INT4 (group a power of two in [32, 4096] dividing K) through the 4-bit kernels. */
msbnb_status msbnb__cuda_gemv_int4sym_bias(void *y, const void *x, msbnb_dtype x_type, const uint8_t *packed,
                                           const float *scales, int64_t group, const float *bias, int64_t M,
                                           int64_t N, int64_t K);
/* The context's scratch, grown to at least `bytes` (contents not kept across growth). */
msbnb_status msbnb__cuda_ctx_scratch(msbnb_cuda_ctx *ctx, size_t bytes, void **out);
/* y[M, N] (f32) = x[M, K] · W[N, K]ᵀ through cuBLAS; x and W bf16 (bf16 = true) or f32. */
msbnb_status msbnb__cuda_gemm_f32out(msbnb_cuda_ctx *ctx, float *y, const void *x, const void *w, bool bf16, int64_t M,
                                     int64_t N, int64_t K);
/* dx[M, K] = dy[M, N] · W[N, K], f32, through cublasSgemm. */
msbnb_status msbnb__cuda_gemm_dx(msbnb_cuda_ctx *ctx, float *dx, const float *dy, const float *w, int64_t M, int64_t N,
                                 int64_t K);
/* y[M, N] (int32, exact) = x[M, K] · W[N, K]ᵀ, int8 operands, cuBLAS int8 tensor cores (K % 4 == 0). */
msbnb_status msbnb__cuda_gemm_i8(msbnb_cuda_ctx *ctx, int32_t *y, const int8_t *x, const int8_t *w, int64_t M,
                                 int64_t N, int64_t K);
/* Row-major f32 C[M, N] = alpha op(A) op(B) + beta C through cublasSgemm. */
msbnb_status msbnb__cuda_sgemm_rm(msbnb_cuda_ctx *ctx, bool ta, bool tb, int64_t M, int64_t N, int64_t Kd, float alpha,
                                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                                  int64_t ldc);
/* Row-wise int8 quantization of a [rows, cols] (msbnb_int8_vectorwise_quant, threshold 0)
 * without the host round trip of the NaN check: *bad (device) is set on NaN/Inf. */
msbnb_status msbnb__cuda_int8_rowwise_async(int8_t *q, float *row_absmax, const void *a, msbnb_dtype a_type,
                                            int64_t rows, int64_t cols, int *bad);
/* LLM.int8 with outlier threshold > 0 (msbnb_int8_vectorwise_quant's threshold rule):
 * flags [cols] (scratch) marks columns with |a| >= threshold in any row, outl[0..*nout) lists
 * them ascending (device), q / row_absmax as the CPU's (absmax over |a| <= threshold,
 * outlier columns code 0). No NaN check. */
msbnb_status msbnb__cuda_int8_outliers_async(int8_t *q, float *row_absmax, int *flags, int *outl, int *nout,
                                             const void *a, msbnb_dtype a_type, int64_t rows, int64_t cols,
                                             float threshold);
struct msbnb__code16 { float v[16]; };

#endif
