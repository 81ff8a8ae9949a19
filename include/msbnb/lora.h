/* msbnb/lora.h — LoRA adapters on any linear layer (f32, bf16, f16, int8, int4, nf4, fp4).
 *
 * LoRA (Hu et al., arXiv:2106.09685) and QLoRA (Dettmers et al., arXiv:2305.14314): a
 * frozen base layer W [N, K] plus trainable low-rank factors, following PEFT's LoraLayer:
 *   A [r, K] (lora_A.weight), B [N, r] (lora_B.weight), scaling s = alpha / r
 *   (rsLoRA, Kalajdzievski arXiv:2312.03732: s = alpha / sqrt(r));
 *   Y = base(X) + s · (dropout(X) · Aᵀ) · Bᵀ;
 *   init: A ~ kaiming_uniform_(a = sqrt(5)) = U(-1/sqrt(K), 1/sqrt(K)), B = 0 (so a new
 *   adapter leaves the output unchanged), from a seeded generator.
 * Several named adapters may be attached; at most one is active (forward/backward/merge
 * use it; none active = the base alone).
 *
 * Ownership: a LoRA layer owns its base layer (msbnb_lora_linear_create takes it over on
 * success) and its adapters' A, B and gradient buffers. Thread safety: one thread at a
 * time per layer (forward records the dropout draw that backward replays).
 */
#ifndef MSBNB_LORA_H
#define MSBNB_LORA_H

#include "msbnb/core.h"
#include "msbnb/linear.h"
#include "msbnb/params.h"
#include "msbnb/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct msbnb_lora_config {
    int64_t rank;     /* r >= 1 and <= min(in_features, out_features); default 8 */
    float alpha;      /* lora_alpha; default 16 (the seed's from_linear(r=8, lora_alpha=16)) */
    float dropout;    /* lora_dropout in [0, 1); default 0 */
    int use_rslora;   /* scaling alpha / sqrt(r) instead of alpha / r; default 0 */
    uint64_t seed;    /* A's initialisation and the dropout stream; default 0 */
} msbnb_lora_config;

MSBNB_API msbnb_lora_config msbnb_lora_config_default(void);

typedef struct msbnb_lora_linear msbnb_lora_linear_t;

/* Wraps `base` (ownership moves to the new layer on success; on failure the caller still
 * owns it) with no adapters. Free with msbnb_lora_linear_free. */
MSBNB_API msbnb_status msbnb_lora_linear_create(msbnb_lora_linear_t **out, msbnb_linear_t *base);

/* The seed's Linear4bitWithLoRA.from_linear(layer, r=8, lora_alpha=16): builds the base
 * from a float layer (weight [out, in], bias [out] or NULL, both copied) in format `fmt`
 * (NULL = NF4, block 64, the QLoRA default) and attaches adapter "default" with `cfg`
 * (NULL = msbnb_lora_config_default()), active. */
MSBNB_API msbnb_status msbnb_lora_linear_from_linear(msbnb_lora_linear_t **out,
                                                     int64_t in_features, int64_t out_features,
                                                     const float *weight, const float *bias,
                                                     const msbnb_qparams *fmt,
                                                     const msbnb_lora_config *cfg);

/* The same from an existing layer (copied with msbnb_linear_clone; the caller keeps
 * `layer`): an f32 layer is quantized to `fmt` (NULL = NF4, block 64; an F32 fmt keeps it
 * in f32); an already-quantized layer is kept as it is, and a non-NULL fmt must then name
 * its format (type, block, flags; MSBNB_ERR_STATE otherwise). Adapter "default" with cfg
 * (NULL = defaults) is attached and active. */
MSBNB_API msbnb_status msbnb_lora_linear_from_layer(msbnb_lora_linear_t **out,
                                                    const msbnb_linear_t *layer,
                                                    const msbnb_qparams *fmt,
                                                    const msbnb_lora_config *cfg);

/* Frees the layer, its base and its adapters. Accepts NULL. */
MSBNB_API void msbnb_lora_linear_free(msbnb_lora_linear_t *l);

/* Attaches a new adapter (name: 1..63 chars, unique). The first adapter of a layer becomes
 * active; later ones do not (msbnb_lora_linear_set_active). Errors: rank 0 or > min(K, N),
 * alpha not finite, dropout outside [0, 1), duplicate name, layer merged (STATE). */
MSBNB_API msbnb_status msbnb_lora_linear_add_adapter(msbnb_lora_linear_t *l, const char *name,
                                                     const msbnb_lora_config *cfg);
/* Removes an adapter (STATE if it is merged). If it was active, none is active after. */
MSBNB_API msbnb_status msbnb_lora_linear_delete_adapter(msbnb_lora_linear_t *l, const char *name);
/* Makes `name` the active adapter, or none when name is NULL. STATE while merged. */
MSBNB_API msbnb_status msbnb_lora_linear_set_active(msbnb_lora_linear_t *l, const char *name);
/* Name of the active adapter, or NULL when none (borrowed). */
MSBNB_API const char *msbnb_lora_linear_active(const msbnb_lora_linear_t *l);
MSBNB_API int msbnb_lora_linear_num_adapters(const msbnb_lora_linear_t *l);

/* An adapter's tensors (borrowed, valid until the adapter is deleted): A [rank, in],
 * B [out, rank], their gradient buffers dA, dB (backward accumulates into them). */
typedef struct msbnb_lora_adapter {
    const char *name;
    int64_t rank, in_features, out_features;
    float alpha, scaling, dropout;
    float *A, *B, *dA, *dB;
} msbnb_lora_adapter;

/* Looks up an adapter by name (NULL = the active one; NOT_FOUND / STATE if absent). */
MSBNB_API msbnb_status msbnb_lora_linear_adapter(msbnb_lora_linear_t *l, const char *name,
                                                 msbnb_lora_adapter *out);

/* Sets adapter `name`'s weights from tensors shaped as PEFT stores them (adapter files:
 * "<module>.lora_A.weight" [r, in_features], "<module>.lora_B.weight" [out_features, r]);
 * both copied. The shapes are given as found in the file, so a tensor of another shape
 * (another rank, a transposed or foreign module's tensor) is refused.
 * Errors: NULL, MSBNB_ERR_NOT_FOUND (no such adapter), MSBNB_ERR_SHAPE (a_shape !=
 * {rank, in_features} or b_shape != {out_features, rank}), MSBNB_ERR_NON_FINITE (NaN/Inf),
 * MSBNB_ERR_STATE (merged). On error the adapter is unchanged. */
MSBNB_API msbnb_status msbnb_lora_linear_set_adapter_weights(msbnb_lora_linear_t *l,
                                                             const char *name, const float *A,
                                                             const int64_t a_shape[2],
                                                             const float *B,
                                                             const int64_t b_shape[2]);

/* The base layer (borrowed; it changes on merge/unmerge). */
MSBNB_API const msbnb_linear_t *msbnb_lora_linear_base(const msbnb_lora_linear_t *l);

/* Training mode enables dropout (default off = evaluation). */
MSBNB_API msbnb_status msbnb_lora_linear_set_training(msbnb_lora_linear_t *l, int training);

/* y [m, N] = base(x) + s · dropout(x) Aᵀ Bᵀ for the active adapter (just base(x) when
 * none is active or it is merged). In training mode with dropout > 0 a fresh mask is
 * drawn and remembered for the next backward. Errors: NULL, m <= 0, the base's errors. */
MSBNB_API msbnb_status msbnb_lora_linear_forward(msbnb_lora_linear_t *l, float *y,
                                                 const float *x, int64_t m);

/* Backward of the last forward with the same x [m, K] and upstream dy [m, N]:
 *   dA += s · (dy B)ᵀ · dropout(x),  dB += s · dyᵀ · (dropout(x) Aᵀ)  (active adapter),
 *   dx = dy · W + s · ((dy B) A) ⊙ mask  (overwritten; NULL to skip), through the base
 * weight in whatever format it is stored. The base gets no gradient (it is frozen).
 * Errors: NULL, m <= 0, STATE when merged (train the unmerged adapter) or when dropout
 * is on and m differs from the last forward's. */
MSBNB_API msbnb_status msbnb_lora_linear_backward(msbnb_lora_linear_t *l, float *dx,
                                                  const float *dy, const float *x, int64_t m);

/* Merges the active adapter into the base: W' = W + s · B A. A float (f32) base is updated
 * in f32; any other format is dequantized, added to and re-quantized in the same format
 * (same block sizes/flags). *added (may be NULL) receives the error of the merged base
 * against the exact float W + s·BA (all zeros for f32). The unmerged base is kept, so
 * msbnb_lora_linear_unmerge restores it exactly (bit for bit). Errors: STATE if no adapter
 * is active or it is already merged. */
MSBNB_API msbnb_status msbnb_lora_linear_merge(msbnb_lora_linear_t *l, msbnb_error_stats *added);
MSBNB_API msbnb_status msbnb_lora_linear_unmerge(msbnb_lora_linear_t *l);
MSBNB_API int msbnb_lora_linear_is_merged(const msbnb_lora_linear_t *l);

/* Registers the layer's tensors in a parameter container under PEFT names for module
 * `module` (e.g. "model.layers.0.self_attn.q_proj"):
 *   base_model.model.<module>.weight       frozen (f32 data, or count only if quantized)
 *   base_model.model.<module>.bias         frozen, if the base has one
 *   base_model.model.<module>.lora_A.weight / .lora_B.weight   for adapter "default"
 *   base_model.model.<module>.lora_A.<name>.weight / ...        for other adapters
 * Adapter entries are trainable. Pointers stay valid until the adapter is deleted or the
 * layer freed (so do not merge/unmerge while an optimizer over an f32 base runs). */
MSBNB_API msbnb_status msbnb_lora_linear_register_params(msbnb_lora_linear_t *l,
                                                         msbnb_params_t *p, const char *module);

#ifdef __cplusplus
}
#endif
#endif /* MSBNB_LORA_H */
