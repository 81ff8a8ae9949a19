/* msbnb/optim.h — AdamW (f32 or 8-bit states), gradient clipping and accumulation,
 * learning-rate schedules, and optimizer state files.
 *
 * An optimizer is bound to a parameter container (msbnb/params.h) and updates exactly the
 * entries that are trainable when msbnb_optim_step applies an update; frozen entries are
 * never written. State for an entry is allocated the first time it is updated.
 *
 * AdamW (Loshchilov & Hutter, arXiv:1711.05101; torch.optim.AdamW), step t >= 1:
 *   p <- p * (1 - lr * weight_decay)                       (decoupled weight decay)
 *   m <- b1 m + (1 - b1) g,  v <- b2 v + (1 - b2) g^2
 *   p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 *
 * 8-bit AdamW (Dettmers et al., "8-bit Optimizers via Block-wise Quantization",
 * arXiv:2110.02861; bitsandbytes AdamW8bit): m and v are kept as 8-bit codes with one f32
 * absmax per block of 256, m with the signed dynamic map (create_dynamic_map(signed=True))
 * and v with the unsigned one (create_dynamic_map(signed=False)): 2 bytes + 8/256 bytes of
 * state per parameter. Like bitsandbytes (min_8bit_size = 4096), smaller tensors keep f32
 * states. Each step dequantizes, updates as above and re-quantizes with fresh per-block
 * absmax (bitsandbytes' dQuantize search, ties included), fused per block of 256.
 *
 * Thread safety: an optimizer and its container are used by one thread at a time.
 */
#ifndef MSBNB_OPTIM_H
#define MSBNB_OPTIM_H

#include "msbnb/core.h"
#include "msbnb/params.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum msbnb_optim_kind {
    MSBNB_OPTIM_ADAMW = 0,      /* f32 states: 8 bytes per parameter */
    MSBNB_OPTIM_ADAMW_8BIT = 1  /* blockwise 8-bit dynamic states: ~2 bytes per parameter */
} msbnb_optim_kind;

typedef struct msbnb_optim_config {
    msbnb_optim_kind kind;
    float lr;            /* default 1e-3 (torch AdamW) */
    float beta1, beta2;  /* default 0.9, 0.999 */
    float eps;           /* default 1e-8 */
    float weight_decay;  /* default 0.01 (torch AdamW) */
    double max_grad_norm;  /* > 0: clip the (averaged) gradients to this global norm before
                              each update; 0 (default): no clipping */
    int accum_steps;     /* gradient accumulation: an update every accum_steps calls of
                            msbnb_optim_step, with gradients divided by accum_steps (default 1) */
    int64_t min_8bit_size; /* 8-bit only: tensors with fewer elements keep f32 states
                              (default 4096, bitsandbytes' min_8bit_size) */
} msbnb_optim_config;

MSBNB_API msbnb_optim_config msbnb_optim_config_default(msbnb_optim_kind kind);

typedef struct msbnb_optim msbnb_optim_t;

/* Creates an optimizer over `params` (borrowed: it must outlive the optimizer; entries may
 * be added later). Errors: NULL, bad kind, lr < 0, betas outside [0, 1), eps <= 0,
 * weight_decay < 0, max_grad_norm < 0, accum_steps < 1, min_8bit_size < 0, non-finite. */
MSBNB_API msbnb_status msbnb_optim_create(msbnb_optim_t **out, msbnb_params_t *params,
                                          const msbnb_optim_config *cfg);
/* Frees the optimizer and its states. Accepts NULL. */
MSBNB_API void msbnb_optim_free(msbnb_optim_t *o);

/* Sets the learning rate used by the following updates (lr >= 0, finite). */
MSBNB_API msbnb_status msbnb_optim_set_lr(msbnb_optim_t *o, float lr);
MSBNB_API float msbnb_optim_get_lr(const msbnb_optim_t *o);

/* Kernel tier of the AdamW update (default: MSBNB_CPU or the best this CPU has, fixed at
 * create; msbnb_optim_create fails with msbnb_cpu_check_env's error for a MSBNB_CPU that
 * is unknown or that this CPU lacks). Every
 * tier computes the same bits. UNSUPPORTED if this CPU lacks it, INVALID_ARGUMENT for an
 * unknown value. The getter returns MSBNB_CPU_SCALAR for NULL. */
MSBNB_API msbnb_status msbnb_optim_set_cpu_tier(msbnb_optim_t *o, msbnb_cpu_tier t);
MSBNB_API msbnb_cpu_tier msbnb_optim_cpu_tier(const msbnb_optim_t *o);

/* Threads for the update (the gradient-norm pass stays sequential so its sum, and thus
 * clipping, does not depend on it): 0 (default) = msbnb_default_threads() at each step.
 * Results are the same bits for every thread count and tier. INVALID_ARGUMENT if
 * nthreads < 0. The getter returns the setting (0 for NULL). */
MSBNB_API msbnb_status msbnb_optim_set_threads(msbnb_optim_t *o, int nthreads);
MSBNB_API int msbnb_optim_threads(const msbnb_optim_t *o);

/* Call after each backward pass (gradients accumulate in the trainable entries' grad
 * buffers). Every accum_steps-th call applies one AdamW update with g = grad/accum_steps
 * (clipped if configured), then zeroes the trainable gradients; other calls only count.
 * *applied (may be NULL) says whether an update happened. A NaN/Inf gradient gives
 * MSBNB_ERR_NON_FINITE and changes no parameter or state (gradients are left as they are
 * so the caller can inspect them; zero them before continuing). */
MSBNB_API msbnb_status msbnb_optim_step(msbnb_optim_t *o, int *applied);

/* Number of updates applied so far (AdamW's t). */
MSBNB_API int64_t msbnb_optim_num_updates(const msbnb_optim_t *o);

/* Gradient norm before clipping at the last applied update (0 before the first). */
MSBNB_API double msbnb_optim_last_grad_norm(const msbnb_optim_t *o);

/* Bytes of optimizer state now held (moments and block scales, not bookkeeping). */
MSBNB_API int64_t msbnb_optim_state_bytes(const msbnb_optim_t *o);

/* The first and second moments of entry `index` (of the container), dequantized to f32,
 * into m and v (capacity n >= numel). MSBNB_ERR_STATE if the entry has no state yet. */
MSBNB_API msbnb_status msbnb_optim_get_moments(const msbnb_optim_t *o, int64_t index, float *m,
                                               float *v, int64_t n);

/* Saves the state (config, update count, micro-step count, per-parameter moments by name)
 * to `path`: a versioned little-endian binary file ("MSBNBOPT", version 1), written to a
 * temporary file, fsynced and renamed (then the directory fsynced) so no partial file is
 * ever left. */
MSBNB_API msbnb_status msbnb_optim_save(const msbnb_optim_t *o, const char *path);

/* Restores state saved by msbnb_optim_save into an optimizer of the same kind whose
 * container holds the same names with the same sizes (entries may be in another order;
 * container entries missing from the file start fresh). Malformed or truncated files and
 * mismatches give MSBNB_ERR_FORMAT / MSBNB_ERR_SHAPE and leave the optimizer unchanged. */
MSBNB_API msbnb_status msbnb_optim_load(msbnb_optim_t *o, const char *path);

/* ---------------------------------------------------------------- schedules */

/* Linear warm-up then cosine decay (transformers get_cosine_schedule_with_warmup, with a
 * floor): lr(step) = base_lr * f, where
 *   f = step / warmup_steps                                  for step < warmup_steps,
 *   f = min_ratio + (1 - min_ratio) * 0.5 (1 + cos(pi * p))  afterwards, with
 *   p = min(1, (step - warmup_steps) / max(1, total_steps - warmup_steps)). */
typedef struct msbnb_lr_schedule {
    float base_lr;
    int64_t warmup_steps;  /* >= 0 */
    int64_t total_steps;   /* >= warmup_steps, > 0 */
    float min_ratio;       /* in [0, 1]; 0 = decay to zero */
} msbnb_lr_schedule;

/* Learning rate at update `step` (0-based, >= 0) in *lr. Errors: bad schedule fields. */
MSBNB_API msbnb_status msbnb_lr_schedule_at(const msbnb_lr_schedule *s, int64_t step, float *lr);

/* ---------------------------------------------------------------- 8-bit state maps */

/* bitsandbytes functional.create_dynamic_map(signed, max_exponent_bits=7, total_bits=8),
 * 256 floats sorted ascending, reproduced with torch's float32 linspace arithmetic
 * (signed = 1 equals msbnb_dynamic_map() bit for bit; signed = 0 is the "udynamic" map
 * bitsandbytes' 8-bit optimizers use for the second moment, in [0, 1]). */
MSBNB_API msbnb_status msbnb_create_dynamic_map(float *code, int is_signed);

#ifdef __cplusplus
}
#endif
#endif /* MSBNB_OPTIM_H */
