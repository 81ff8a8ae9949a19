/* msbnb/params.h — a model's named parameters, their trainable flags, and freezing.
 *
 * A parameter container is a list of named tensors. Each entry either points at float
 * data the caller (a layer, a model) owns — optionally with a gradient buffer of the same
 * size — or, for weights stored in a quantized format, records only its name and element
 * count so that totals stay right. Only float parameters with a gradient buffer can be
 * trainable; the optimizers (msbnb/optim.h) update exactly the trainable ones.
 *
 * Names follow PEFT's module naming so that adapter files map onto it:
 * "base_model.model.<module>.weight" for base weights and
 * "base_model.model.<module>.lora_A.weight" / ".lora_B.weight" for adapters (PEFT
 * save_pretrained key names; PEFT's in-memory names insert the adapter name, ".default").
 *
 * Ownership: the container copies names; data and grad are borrowed and must outlive it
 * (or until the entry is removed). A container is mutated by one thread at a time.
 */
#ifndef MSBNB_PARAMS_H
#define MSBNB_PARAMS_H

#include "msbnb/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MSBNB_PARAM_MAX_DIMS 4

typedef struct msbnb_params msbnb_params_t;

/* One entry, as returned by msbnb_params_get (all pointers borrowed). */
typedef struct msbnb_param {
    const char *name;  /* owned by the container; valid until it is freed */
    float *data;       /* NULL for a parameter held in a quantized format */
    float *grad;       /* NULL when the parameter has no gradient buffer */
    int64_t numel;     /* product of shape */
    int ndim;
    int64_t shape[MSBNB_PARAM_MAX_DIMS];
    int trainable;
} msbnb_param;

/* Creates an empty container. *out is set to NULL on failure. Free with msbnb_params_free. */
MSBNB_API msbnb_status msbnb_params_create(msbnb_params_t **out);
/* Frees the container (not the borrowed data). Accepts NULL. */
MSBNB_API void msbnb_params_free(msbnb_params_t *p);

/* Adds a parameter. data may be NULL (a quantized weight counted by numel only); grad may
 * be NULL. shape has ndim (1..4) positive entries. The new entry is trainable iff data and
 * grad are both non-NULL. Errors: NULL name/shape, bad ndim or shape, overflow, a name
 * already present (MSBNB_ERR_INVALID_ARGUMENT), grad without data. */
MSBNB_API msbnb_status msbnb_params_add(msbnb_params_t *p, const char *name, float *data,
                                        float *grad, int ndim, const int64_t *shape);

/* Number of entries (0 for NULL). */
MSBNB_API int64_t msbnb_params_count(const msbnb_params_t *p);

/* Copies entry i into *out (borrowed pointers). Errors: index out of range. */
MSBNB_API msbnb_status msbnb_params_get(const msbnb_params_t *p, int64_t i, msbnb_param *out);

/* Index of the entry named `name` in *index; MSBNB_ERR_NOT_FOUND if absent. */
MSBNB_API msbnb_status msbnb_params_find(const msbnb_params_t *p, const char *name,
                                         int64_t *index);

/* Sets one entry's trainable flag. Making a parameter without data or grad trainable is
 * MSBNB_ERR_INVALID_ARGUMENT; an unknown name MSBNB_ERR_NOT_FOUND. */
MSBNB_API msbnb_status msbnb_params_set_trainable(msbnb_params_t *p, const char *name,
                                                  int trainable);

/* Sets the flag of every entry whose name contains `substr` ("" matches all); entries that
 * cannot train (no data/grad) stay frozen. *n_matched (may be NULL) receives how many
 * names matched. */
MSBNB_API msbnb_status msbnb_params_set_trainable_matching(msbnb_params_t *p, const char *substr,
                                                           int trainable, int64_t *n_matched);

/* The seed's freeze_model_except_lora(model): every parameter frozen except those whose
 * name contains "lora_" (PEFT's mark_only_lora_as_trainable, bias="none"). *n_trainable
 * (may be NULL) receives the number of trainable entries afterwards. */
MSBNB_API msbnb_status msbnb_params_freeze_except_lora(msbnb_params_t *p, int64_t *n_trainable);

/* Element totals: trainable elements and all elements (either pointer may be NULL). */
MSBNB_API msbnb_status msbnb_params_totals(const msbnb_params_t *p, int64_t *trainable,
                                           int64_t *total);

/* PEFT's print_trainable_parameters line, written to buf (NUL-terminated):
 * "trainable params: 1,234 || all params: 56,789 || trainable%: 2.1730".
 * MSBNB_ERR_BUFFER_TOO_SMALL (and a truncated line) when cap is too small; 128 suffices. */
MSBNB_API msbnb_status msbnb_params_summary(const msbnb_params_t *p, char *buf, size_t cap);

/* Zeroes the gradient buffers of all trainable entries. */
MSBNB_API msbnb_status msbnb_params_zero_grad(msbnb_params_t *p);

/* Global L2 norm of the trainable gradients in *norm (double accumulation). */
MSBNB_API msbnb_status msbnb_params_grad_norm(const msbnb_params_t *p, double *norm);

/* torch.nn.utils.clip_grad_norm_ over the trainable gradients: if the global norm exceeds
 * max_norm, every gradient is scaled by max_norm / (norm + 1e-6). *norm_before (may be
 * NULL) receives the norm before clipping. max_norm must be positive and finite; a NaN or
 * Inf gradient gives MSBNB_ERR_NON_FINITE and leaves the gradients unchanged. */
MSBNB_API msbnb_status msbnb_params_clip_grad_norm(msbnb_params_t *p, double max_norm,
                                                   double *norm_before);

#ifdef __cplusplus
}
#endif
#endif /* MSBNB_PARAMS_H */
