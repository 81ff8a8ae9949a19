/* msbnb/quant.h — quantization formats and the functional API.
 *
 * All functions are pure over caller buffers: the caller allocates outputs with the sizes
 * the *_size / *_nblocks queries give, nothing is retained, and every function is safe to
 * call concurrently on distinct outputs. `nthreads` <= 0 means msbnb_default_threads().
 *
 * Layout conventions (bitsandbytes-compatible where bitsandbytes defines the format):
 *  - 4-bit codes are packed two per byte over the row-major flattened tensor, element 2i
 *    in the high nibble and 2i+1 in the low nibble (bitsandbytes kQuantizeBlockwise).
 *  - Blockwise formats (NF4, FP4, 8-bit dynamic) block the flattened tensor; the last
 *    block may be shorter. Per-group INT4 groups each row separately along the input
 *    (column) dimension; a row whose length is no multiple of the group size gets a
 *    shorter last group.
 */
#ifndef MSBNB_QUANT_H
#define MSBNB_QUANT_H

#include "msbnb/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- format registry */

/* Weight formats. Explicit, append-only values. */
typedef enum msbnb_qtype {
    MSBNB_QTYPE_F32 = 0,
    MSBNB_QTYPE_BF16 = 1,
    MSBNB_QTYPE_F16 = 2,
    MSBNB_QTYPE_INT8 = 3,   /* per-row int8 (symmetric absmax/127 or asymmetric zero-point) */
    MSBNB_QTYPE_INT4 = 4,   /* per-group int4 (symmetric or asymmetric) */
    MSBNB_QTYPE_NF4 = 5,    /* bitsandbytes NF4, blockwise absmax */
    MSBNB_QTYPE_FP4 = 6,    /* bitsandbytes FP4 (e2m1, bias 3), blockwise absmax */
    MSBNB_QTYPE_Q8_DYNAMIC = 7, /* bitsandbytes 8-bit blockwise dynamic */
    MSBNB_QTYPE_COUNT_ = 8
} msbnb_qtype;

/* "f32", "bf16", "f16", "int8", "int4", "nf4", "fp4", "q8dyn"; NULL if invalid. */
MSBNB_API const char *msbnb_qtype_name(msbnb_qtype t);
MSBNB_API msbnb_status msbnb_qtype_from_name(const char *name, msbnb_qtype *out);

/* Parameters that select a format variant. Initialise with msbnb_qparams_default(). */
typedef struct msbnb_qparams {
    msbnb_qtype type;
    int symmetric;     /* INT8/INT4: 1 symmetric, 0 asymmetric (default 1) */
    int64_t block;     /* INT4: group size (even, >= 2; default 128); NF4/FP4/Q8: block
                          size, power of two in [32, 4096] (default 64 for 4-bit, 256 Q8) */
    int double_quant;  /* NF4/FP4: quantize absmax again (8-bit dynamic, block 256) */
    int per_tensor;    /* INT8 only: one scale for the whole tensor (default 0: per row) */
} msbnb_qparams;

MSBNB_API msbnb_qparams msbnb_qparams_default(msbnb_qtype type);

/* Validates a parameter set (block sizes, flags); MSBNB_OK or an error with a message. */
MSBNB_API msbnb_status msbnb_qparams_validate(const msbnb_qparams *p);

/* Storage of a [rows, cols] weight in format p: total bytes (codes + scales + metadata)
 * and the effective bits per weight including scales. */
MSBNB_API msbnb_status msbnb_qparams_storage(const msbnb_qparams *p, int64_t rows, int64_t cols,
                                             int64_t *bytes, double *bits_per_weight);

/* ---------------------------------------------------------------- f32 / f16 / bf16 */

/* Scalar conversions: round-to-nearest-even, NaN stays NaN (quiet), Inf stays Inf. */
MSBNB_API uint16_t msbnb_f32_to_bf16(float x);
MSBNB_API float msbnb_bf16_to_f32(uint16_t x);
MSBNB_API uint16_t msbnb_f32_to_f16(float x);
MSBNB_API float msbnb_f16_to_f32(uint16_t x);

/* Bulk conversion between F32, F16 and BF16 (any direction, same type = copy). SIMD
 * where the CPU has it. dst and src must not overlap. */
MSBNB_API msbnb_status msbnb_convert(void *dst, msbnb_dtype dst_type, const void *src,
                                     msbnb_dtype src_type, int64_t n);

/* ---------------------------------------------------------------- INT8 per channel */

/* The seed's quantize_8bit(weight, symmetric) -> (int8, scale, offset).
 * Symmetric: scale = absmax/127 per row, q = round(x/scale) (RNE), offset unused.
 * Asymmetric: scale = (max-min)/255, zero point z = round(-128 - min/scale) in
 *   [-128, 127], q = clamp(round(x/scale) + z); dequantized as (q - z)*scale; `offset`
 *   receives z (integer-valued float).
 * per_tensor: one scale (and offset) for the whole tensor instead of one per row.
 * Sizes: q [rows*cols]; scale, offset [per_tensor ? 1 : rows]; offset may be NULL when
 * symmetric. A zero row gets scale 0 and codes 0. NaN/Inf input: MSBNB_ERR_NON_FINITE. */
MSBNB_API msbnb_status msbnb_quantize_8bit(int8_t *q, float *scale, float *offset, const float *w,
                                           int64_t rows, int64_t cols, int symmetric,
                                           int per_tensor);
MSBNB_API msbnb_status msbnb_dequantize_8bit(float *out, const int8_t *q, const float *scale,
                                             const float *offset, int64_t rows, int64_t cols,
                                             int symmetric, int per_tensor);

/* LLM.int8 row-wise quantization, equal to bitsandbytes' int8_vectorwise_quant
 * (Dettmers et al. 2022, arXiv:2208.07339): row_absmax[r] = max |a[r,c]| over entries with
 * |a| < threshold (all entries when threshold == 0), q = round(a * 127 / row_absmax).
 * With threshold > 0 every column holding any |a| >= threshold is an outlier column:
 * its index goes to outlier_cols (ascending; at most outlier_cap written, the count to
 * *n_outlier_cols even if larger -> MSBNB_ERR_BUFFER_TOO_SMALL) and its codes are 0.
 * `a` is F32, F16 or BF16 ([rows, cols], row-major). outlier_cols may be NULL when
 * threshold == 0. */
MSBNB_API msbnb_status msbnb_int8_vectorwise_quant(int8_t *q, float *row_absmax,
                                                   int64_t *outlier_cols, int64_t outlier_cap,
                                                   int64_t *n_outlier_cols, const void *a,
                                                   msbnb_dtype a_type, int64_t rows,
                                                   int64_t cols, float threshold);
/* Inverse of the above (outlier columns come back as 0): out = q * row_absmax / 127. */
MSBNB_API msbnb_status msbnb_int8_vectorwise_dequant(float *out, const int8_t *q,
                                                     const float *row_absmax, int64_t rows,
                                                     int64_t cols);

/* ---------------------------------------------------------------- INT4 per group */

/* Groups per row and packed bytes for a [rows, cols] INT4 weight. */
MSBNB_API msbnb_status msbnb_int4_sizes(int64_t rows, int64_t cols, int64_t group_size,
                                        int64_t *groups_per_row, int64_t *packed_bytes);

/* Per-group INT4 along the input dimension (each row separately).
 * Symmetric (ggml Q4_0 style): d = m / -8 where m is the group's value of largest
 *   magnitude, nibble u = clamp(round(x/d) + 8, 0, 15), value = (u - 8) * d. `scales` gets
 *   d; `mins` unused (may be NULL).
 * Asymmetric (ggml Q4_1 style): d = (max - min)/15, u = clamp(round((x - min)/d), 0, 15),
 *   value = u * d + min. `scales` gets d, `mins` gets min.
 * packed [ceil(rows*cols/2)] (flattened, element 2i in the high nibble);
 * scales, mins [rows * groups_per_row]. group_size: even, >= 2. */
MSBNB_API msbnb_status msbnb_quantize_int4(uint8_t *packed, float *scales, float *mins,
                                           const float *w, int64_t rows, int64_t cols,
                                           int64_t group_size, int symmetric);
MSBNB_API msbnb_status msbnb_dequantize_int4(float *out, const uint8_t *packed,
                                             const float *scales, const float *mins,
                                             int64_t rows, int64_t cols, int64_t group_size,
                                             int symmetric);

/* Pack 4-bit codes (low nibble of each input byte) two per byte, element 2i high; an odd
 * count pads the last low nibble with 0. Unpack is the inverse ([n] codes out). */
MSBNB_API msbnb_status msbnb_pack_4bit(uint8_t *packed, const uint8_t *codes, int64_t n);
MSBNB_API msbnb_status msbnb_unpack_4bit(uint8_t *codes, const uint8_t *packed, int64_t n);

/* ---------------------------------------------------------------- NF4 / FP4 blockwise */

/* The 16-entry code tables (bitsandbytes' get_4bit_type("nf4"/"fp4")). */
MSBNB_API const float *msbnb_nf4_code(void);
MSBNB_API const float *msbnb_fp4_code(void);
/* bitsandbytes' signed 8-bit dynamic map (create_dynamic_map(signed=True)), 256 entries. */
MSBNB_API const float *msbnb_dynamic_map(void);

/* Number of blocks for n values: ceil(n / blocksize); 0 and an error for bad arguments. */
MSBNB_API int64_t msbnb_nblocks(int64_t n, int64_t blocksize);

/* bitsandbytes quantize_4bit (blockwise absmax): per block absmax = max|x|, codes of
 * x * (1/absmax) by the NF4 or FP4 decision tree. x is F32, F16 or BF16 [n].
 * packed [ceil(n/2)], absmax [nblocks]. type: MSBNB_QTYPE_NF4 or MSBNB_QTYPE_FP4.
 * Bit-identical to bitsandbytes 0.50 (CUDA kernel). NaN/Inf: MSBNB_ERR_NON_FINITE. */
MSBNB_API msbnb_status msbnb_quantize_4bit(uint8_t *packed, float *absmax, const void *x,
                                           msbnb_dtype x_type, int64_t n, int64_t blocksize,
                                           msbnb_qtype type, int nthreads);
/* out[i] = code[nibble] * absmax[i / blocksize], written as out_type (F32/F16/BF16). */
MSBNB_API msbnb_status msbnb_dequantize_4bit(void *out, msbnb_dtype out_type,
                                             const uint8_t *packed, const float *absmax,
                                             int64_t n, int64_t blocksize, msbnb_qtype type,
                                             int nthreads);

/* Double quantization of absmax (QLoRA, Dettmers et al. 2023 §3; bitsandbytes
 * compress_statistics): offset = mean(absmax); absmax - offset is quantized with 8-bit
 * blockwise dynamic quantization, nested block size 256.
 * qabsmax [nblocks], nested_absmax [ceil(nblocks/256)], offset [1]. */
#define MSBNB_NESTED_BLOCKSIZE 256
MSBNB_API msbnb_status msbnb_double_quant_absmax(uint8_t *qabsmax, float *nested_absmax,
                                                 float *offset, const float *absmax,
                                                 int64_t nblocks);
/* absmax[i] = dynamic_map[qabsmax[i]] * nested_absmax[i/256] + offset. */
MSBNB_API msbnb_status msbnb_double_dequant_absmax(float *absmax, const uint8_t *qabsmax,
                                                   const float *nested_absmax, float offset,
                                                   int64_t nblocks);

/* ---------------------------------------------------------------- 8-bit blockwise */

/* bitsandbytes quantize_blockwise: per block absmax, code = nearest entry of `code` (256
 * floats sorted ascending; NULL = msbnb_dynamic_map()) to x * (1/absmax), found by
 * bitsandbytes' binary search with midpoint rounding. blocksize: power of two in
 * [32, 4096]. q [n], absmax [nblocks]. Bit-identical to bitsandbytes 0.50. */
MSBNB_API msbnb_status msbnb_quantize_blockwise_8bit(uint8_t *q, float *absmax, const void *x,
                                                     msbnb_dtype x_type, int64_t n,
                                                     int64_t blocksize, const float *code,
                                                     int nthreads);
MSBNB_API msbnb_status msbnb_dequantize_blockwise_8bit(void *out, msbnb_dtype out_type,
                                                       const uint8_t *q, const float *absmax,
                                                       int64_t n, int64_t blocksize,
                                                       const float *code, int nthreads);

/* ---------------------------------------------------------------- error and info */

typedef struct msbnb_error_stats {
    int64_t n;
    double max_abs;       /* max |x - y| */
    double mean_abs;      /* mean |x - y| */
    double rmse;          /* sqrt(mean (x - y)^2) */
    double rel_frobenius; /* ||x - y|| / ||x|| (0 when both are zero) */
    double snr_db;        /* 10 log10(||x||^2 / ||x - y||^2); +inf for an exact match */
    double cosine;        /* <x, y> / (||x|| ||y||); 1 when both are zero */
} msbnb_error_stats;

/* The seed's estimate_quantization_error(original, dequantized). NaN/Inf: error. */
MSBNB_API msbnb_status msbnb_estimate_quantization_error(msbnb_error_stats *out,
                                                         const float *original,
                                                         const float *dequantized, int64_t n);

/* One row of the info table: a format and what it costs on this tensor. */
typedef struct msbnb_format_cost {
    char name[32];          /* "nf4-b64-dq", "int4-g128-sym", ... */
    msbnb_qparams params;
    int64_t bytes;          /* bytes after quantization, scales included */
    double bits_per_weight; /* 8 * bytes / (rows * cols) */
} msbnb_format_cost;

#define MSBNB_INFO_MAX_FORMATS 16
typedef struct msbnb_quant_info {
    int64_t rows, cols;
    double min, max, mean, std, absmax;
    double row_absmax_min, row_absmax_max, row_absmax_mean; /* per-row absmax spread */
    double outlier_sigma;    /* k used for the outlier fraction */
    double outlier_fraction; /* fraction of |x - mean| > k * std */
    int64_t bytes_f32;       /* bytes before quantization (float32) */
    int n_formats;
    msbnb_format_cost formats[MSBNB_INFO_MAX_FORMATS];
} msbnb_quant_info;

/* The seed's get_quantization_info(weight): statistics of a [rows, cols] float tensor and
 * the storage cost of every format. outlier_sigma <= 0 means 3. */
MSBNB_API msbnb_status msbnb_get_quantization_info(msbnb_quant_info *out, const float *w,
                                                   int64_t rows, int64_t cols,
                                                   double outlier_sigma);

#ifdef __cplusplus
}
#endif
#endif /* MSBNB_QUANT_H */
