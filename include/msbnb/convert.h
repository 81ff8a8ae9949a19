/* msbnb/convert.h — whole-checkpoint conversion and reading quantized weights back.
 *
 * msbnb_convert_quantize() is the seed's convert_to_quantized_model() for checkpoints on
 * disk: a Hugging Face folder (config.json + model.safetensors, or a sharded
 * model.safetensors.index.json) in, a quantized folder out, laid out exactly as
 * transformers + bitsandbytes save it (docs/CHECKPOINTS.md):
 *   NF4/FP4:  <m>.weight U8 [ceil(n/2), 1], <m>.weight.absmax (F32, or U8 with double
 *             quant plus <m>.weight.nested_absmax F32, <m>.weight.nested_quant_map F32
 *             [256]), <m>.weight.quant_map F32 [16],
 *             <m>.weight.quant_state.bitsandbytes__{nf4,fp4} (JSON packed into U8).
 *   INT8:     <m>.weight I8 [rows, cols], <m>.SCB F32 [rows], <m>.weight_format U8 [].
 *   msbnb's own formats (INT4 per group, asymmetric INT8) use the same key style with a
 *   <m>.weight.quant_state.msbnb__{int4,int8} entry.
 * Every other tensor is copied unchanged; config.json gets the quantization_config block;
 * other files of the folder (generation_config.json, tokenizer files) are copied.
 *
 * Streaming: tensors are processed one at a time (input pages released after use), so
 * peak memory is about the largest tensor's outputs plus buffers, not the model. The output
 * folder appears atomically: it is built under a temporary sibling name
 * (<out>.msbnb-tmp-XXXXXX, every file fsynced) and renamed onto <out> when complete (rename(2)
 * also replaces an existing empty folder); a failed run removes it and leaves nothing under
 * the final name. Work is spread over opt->nthreads threads within each tensor.
 * Progress is reported through opt->progress (the library prints nothing).
 */
#ifndef MSBNB_CONVERT_H
#define MSBNB_CONVERT_H

#include "msbnb/linear.h"
#include "msbnb/qconfig.h"
#include "msbnb/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct msbnb_convert_progress {
    int64_t tensors_done, tensors_total;
    uint64_t bytes_done, bytes_total; /* input tensor bytes */
    double elapsed_s;
    const char *current;              /* tensor just processed (borrowed, this call only) */
} msbnb_convert_progress;

typedef void (*msbnb_progress_fn)(void *user, const msbnb_convert_progress *p);

typedef struct msbnb_convert_options {
    int nthreads;           /* <= 0: msbnb_default_threads() */
    int compute_error;      /* measure each quantized tensor's relative error (default 1) */
    msbnb_progress_fn progress; /* called after each tensor from the calling thread; may be NULL */
    void *progress_user;
    msbnb_dtype out_dtype;  /* dequantize: F32, F16, BF16, or MSBNB_DTYPE_COUNT_ (default) =
                               the dtype recorded in the quant state (F32 if none) */
} msbnb_convert_options;

MSBNB_API msbnb_convert_options msbnb_convert_options_default(void);

#define MSBNB_REPORT_MAX_KINDS 32
/* One row of the summary: tensors of one module type ("q_proj", "down_proj"; "(copied)"
 * for unquantized tensors; "(other)" when more types than rows exist). */
typedef struct msbnb_convert_kind {
    char kind[48];
    int64_t count;
    uint64_t bytes_in, bytes_out;
    double rel_error_sum;   /* sum over tensors of ||w - deq(q(w))|| / ||w||; mean = sum/count */
} msbnb_convert_kind;

typedef struct msbnb_convert_report {
    int64_t n_tensors_in, n_quantized, n_copied, n_tensors_out;
    uint64_t bytes_in, bytes_out;           /* tensor data bytes */
    uint64_t file_bytes_in, file_bytes_out; /* safetensors files, headers included */
    double seconds;
    double mean_rel_error;                  /* over quantized tensors (0 if none or disabled) */
    double max_rel_error;
    int n_kinds;
    msbnb_convert_kind kinds[MSBNB_REPORT_MAX_KINDS];
} msbnb_convert_report;

/* Quantizes the checkpoint at in_path (folder, .safetensors file or index) into the folder
 * out_dir per cfg. out_dir must not exist, or be an empty directory. report may be NULL.
 * Errors: MSBNB_ERR_INVALID_ARGUMENT (bad config, out_dir not empty), MSBNB_ERR_STATE
 * (input already quantized), MSBNB_ERR_NON_FINITE (NaN/Inf in a weight, named), I/O and
 * format errors of the input. Nothing is left under out_dir's final names on failure. */
MSBNB_API msbnb_status msbnb_convert_quantize(const char *in_path, const char *out_dir,
                                              const msbnb_qconfig *cfg,
                                              const msbnb_convert_options *opt,
                                              msbnb_convert_report *report);

/* Writes a float checkpoint from a quantized one (bitsandbytes or msbnb layout): every
 * quantized module becomes <m>.weight in opt->out_dtype, other tensors are copied, and
 * quantization_config is removed from config.json. Same folder rules as above. */
MSBNB_API msbnb_status msbnb_convert_dequantize(const char *in_path, const char *out_dir,
                                                const msbnb_convert_options *opt,
                                                msbnb_convert_report *report);

/* ---------------------------------------------------------------- reading weights back */

/* A module's weight as stored, with every part copied into memory owned by the struct
 * (64-byte aligned). Fields unused by the format are NULL / 0. Release with
 * msbnb_qtensor_clear(). */
typedef struct msbnb_qtensor {
    char module[256];
    msbnb_qparams params;   /* format (type F32/F16/BF16 for an unquantized weight) */
    int bnb_layout;         /* 1 if stored in bitsandbytes' layout */
    int64_t rows, cols;     /* logical weight shape [out_features, in_features] */
    msbnb_dtype orig_dtype; /* dtype recorded in the quant state (of the original weight) */
    uint8_t *packed;        /* NF4/FP4/INT4: ceil(rows*cols/2) bytes, element 2i high nibble */
    int8_t *q8;             /* INT8: rows*cols codes */
    int64_t nblocks;        /* NF4/FP4: ceil(n/block) */
    float *absmax;          /* NF4/FP4: per-block absmax (double quant already undone) */
    uint8_t *qabsmax;       /* NF4/FP4 double quant: stored 8-bit absmax codes [nblocks] */
    float *nested_absmax;   /* ... [ceil(nblocks/256)] */
    float nested_offset;
    float *scales;          /* INT8 bnb: SCB (row absmax) [rows]; INT8 asym: scale [rows or 1];
                               INT4: d [rows * groups_per_row] */
    float *mins;            /* INT4 asym: mins; INT8 asym: zero points */
    void *weight;           /* unquantized weight: rows*cols in orig_dtype */
    void *arena_;           /* internal */
} msbnb_qtensor;

/* Loads module `module` ("model.layers.0.self_attn.q_proj"; a trailing ".weight" is
 * accepted) from an open checkpoint, whatever its layout. Validates every part's dtype
 * and size against the quant state. Errors: MSBNB_ERR_NOT_FOUND, MSBNB_ERR_FORMAT,
 * MSBNB_ERR_UNSUPPORTED (e.g. a non-standard quant_map), MSBNB_ERR_OUT_OF_MEMORY. */
MSBNB_API msbnb_status msbnb_qtensor_load(msbnb_qtensor *out, const msbnb_st_file_t *f,
                                          const char *module);

/* Frees the parts and zeroes the struct. Accepts a zeroed struct. */
MSBNB_API void msbnb_qtensor_clear(msbnb_qtensor *t);

/* Dequantizes into out [rows*cols] floats (cap = capacity in elements). */
MSBNB_API msbnb_status msbnb_qtensor_dequantize(const msbnb_qtensor *t, float *out, int64_t cap,
                                                int nthreads);

/* Creates a linear layer (msbnb/linear.h) holding t's weight in its stored format, without
 * requantizing: NF4/FP4 (± double quant, from the stored 8-bit absmax codes), LLM.int8
 * (CB + SCB), msbnb's row-scaled INT8 (asymmetric or per-tensor: a layer computing with
 * (q - zero) * scale), per-group INT4, or a float weight (F32 layer; F16/BF16 layers keep
 * their dtype). bias [rows] f32 or NULL. *out is freed with msbnb_linear_free. Errors: the
 * layer constructors' errors. */
MSBNB_API msbnb_status msbnb_qtensor_to_linear(msbnb_linear_t **out, const msbnb_qtensor *t,
                                               const float *bias);

/* msbnb_qtensor_load + msbnb_qtensor_to_linear for module `module` of f, with the bias
 * `<module>.bias` (F32/F16/BF16 [rows]) when the checkpoint has one. */
MSBNB_API msbnb_status msbnb_checkpoint_load_linear(msbnb_linear_t **out, const msbnb_st_file_t *f,
                                                    const char *module);

/* Lists the weight modules of a checkpoint: calls fn(user, module, quantized) for each
 * 2-D `<m>.weight` (quantized or not), in name order. Returns the first error of fn
 * (a non-OK return stops the walk). */
typedef msbnb_status (*msbnb_module_fn)(void *user, const char *module, int quantized);
MSBNB_API msbnb_status msbnb_checkpoint_modules(const msbnb_st_file_t *f, msbnb_module_fn fn,
                                                void *user);

#ifdef __cplusplus
}
#endif
#endif /* MSBNB_CONVERT_H */
