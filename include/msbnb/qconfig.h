/* msbnb/qconfig.h — quantization configs for whole models (which tensors, which format).
 *
 * The seed's Int8Config and Int4Config, with the defaults of transformers'
 * BitsAndBytesConfig: NF4 block 64, double quant nested block 256, compute dtype float32,
 * LLM.int8 threshold 6.0, `lm_head` skipped. Embeddings and norms are never quantized.
 * Configs are plain data (fixed-size pattern arrays, no ownership), readable from CLI
 * flags (msbnb_qconfig_add_skip/_target) and from the `quantization_config` block of a
 * Hugging Face config.json, and written back as that block.
 *
 * Which tensors are quantized: 2-D tensors named `<module>.weight` (F32, F16 or BF16)
 * whose module is a linear layer candidate, i.e. (1) not an embedding or norm (a name
 * component containing "embed", "norm", "wte" or "wpe"), (2) matching a target pattern
 * when any are given, (3) matching no skip pattern. A pattern with `*`, `?` or `[` is a
 * glob (fnmatch) over the full module name; otherwise it matches when it equals a run of
 * whole dot-separated components of the module name ("lm_head" matches "lm_head",
 * "self_attn" matches "model.layers.0.self_attn.q_proj", "layers.0" matches every module
 * of layer 0 but not layer 10).
 */
#ifndef MSBNB_QCONFIG_H
#define MSBNB_QCONFIG_H

#include "msbnb/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MSBNB_QCONFIG_MAX_PATTERNS 32
#define MSBNB_QCONFIG_PATTERN_LEN 128

typedef struct msbnb_qconfig {
    /* Format of quantized weights. type: MSBNB_QTYPE_INT8 (symmetric = bitsandbytes
     * LLM.int8 layout; asymmetric = msbnb's zero-point int8), MSBNB_QTYPE_INT4 (msbnb
     * per-group), MSBNB_QTYPE_NF4 or MSBNB_QTYPE_FP4 (bitsandbytes 4-bit). */
    msbnb_qparams format;
    float llm_int8_threshold;    /* INT8: outlier threshold recorded for inference (6.0) */
    msbnb_dtype compute_dtype;   /* 4-bit: compute dtype recorded in the config (F32) */
    int skip_lm_head;            /* also skip the output projection `lm_head` (default 1) */
    int n_skip, n_target;
    char skip[MSBNB_QCONFIG_MAX_PATTERNS][MSBNB_QCONFIG_PATTERN_LEN];
    char target[MSBNB_QCONFIG_MAX_PATTERNS][MSBNB_QCONFIG_PATTERN_LEN];
} msbnb_qconfig;

/* Int8Config defaults: bitsandbytes LLM.int8 (symmetric per row, threshold 6.0). */
MSBNB_API msbnb_qconfig msbnb_int8_config_default(void);
/* Int4Config defaults for type NF4 (block 64, double quant), FP4 (block 64, no double
 * quant) or INT4 (group 128, symmetric). Any other type gives the NF4 defaults with
 * format.type set to it, which msbnb_qconfig_validate then rejects. */
MSBNB_API msbnb_qconfig msbnb_int4_config_default(msbnb_qtype type);

/* Checks the format parameters and patterns; MSBNB_OK or an error with a message. */
MSBNB_API msbnb_status msbnb_qconfig_validate(const msbnb_qconfig *c);

/* Appends a pattern (copied). Errors: empty, too long (>= MSBNB_QCONFIG_PATTERN_LEN),
 * too many patterns. */
MSBNB_API msbnb_status msbnb_qconfig_add_skip(msbnb_qconfig *c, const char *pattern);
MSBNB_API msbnb_status msbnb_qconfig_add_target(msbnb_qconfig *c, const char *pattern);

/* Whether `pattern` matches `module` by the rules above. */
MSBNB_API int msbnb_module_matches(const char *pattern, const char *module);

/* Whether the tensor (name, dtype, shape) is quantized under c: 1 yes, 0 no. */
MSBNB_API int msbnb_qconfig_selects(const msbnb_qconfig *c, const char *tensor_name,
                                    msbnb_dtype dtype, const int64_t *shape, int ndim);

/* Reads a config from JSON text: either a whole config.json (its `quantization_config`
 * object is used) or the quantization_config object itself. Understands transformers'
 * bitsandbytes keys (load_in_4bit/load_in_8bit, bnb_4bit_quant_type,
 * bnb_4bit_use_double_quant, bnb_4bit_compute_dtype, llm_int8_threshold,
 * llm_int8_skip_modules) and msbnb's own ("quant_method": "msbnb"). Errors:
 * MSBNB_ERR_FORMAT (bad JSON or values), MSBNB_ERR_NOT_FOUND (no quantization_config),
 * MSBNB_ERR_UNSUPPORTED (another quant_method). */
MSBNB_API msbnb_status msbnb_qconfig_from_json(msbnb_qconfig *out, const char *json, size_t len);

/* Writes the `quantization_config` object transformers writes for c (compact JSON,
 * keys sorted) into buf (capacity cap, NUL-terminated); *len gets the length without
 * the NUL. MSBNB_ERR_BUFFER_TOO_SMALL (with *len set) when cap is too small. For msbnb's
 * own formats (INT4, asymmetric INT8) the block has "quant_method": "msbnb". */
MSBNB_API msbnb_status msbnb_qconfig_to_json(const msbnb_qconfig *c, char *buf, size_t cap,
                                             size_t *len);

#ifdef __cplusplus
}
#endif
#endif /* MSBNB_QCONFIG_H */
