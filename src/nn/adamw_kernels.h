/* AdamW's elementwise update, one kernel per CPU tier (internal).
 *
 * For i < n, in exactly this order of f32 operations (no FMA), so every tier gives the
 * same bits as the scalar reference (tests/test_optim.c checks it):
 *   gi = g[i] * gm
 *   m[i] = b1 * m[i] + omb1 * gi                 (omb1 = 1 - b1)
 *   v[i] = b2 * v[i] + (omb2 * gi) * gi          (omb2 = 1 - b2)
 *   p[i] = p[i] * decay - (step * m[i]) / (sqrt(v[i]) / bc2_sqrt + eps)
 * with decay = 1 - lr * weight_decay, step = lr / (1 - b1^t), bc2_sqrt = sqrt(1 - b2^t)
 * (torch.optim.AdamW's formulation). */
#ifndef MSBNB_ADAMW_KERNELS_H
#define MSBNB_ADAMW_KERNELS_H

#include <stdint.h>

typedef struct {
    float gm, b1, omb1, b2, omb2, decay, step, bc2_sqrt, eps;
} msbnb__adamw_k;

typedef void (*msbnb__adamw_fn)(float *restrict p, float *restrict m, float *restrict v,
                                const float *restrict g, int64_t n, const msbnb__adamw_k *k);

void msbnb__adamw_ref(float *restrict p, float *restrict m, float *restrict v,
                      const float *restrict g, int64_t n, const msbnb__adamw_k *k);
void msbnb__adamw_avx2(float *restrict p, float *restrict m, float *restrict v,
                       const float *restrict g, int64_t n, const msbnb__adamw_k *k);
void msbnb__adamw_avx512(float *restrict p, float *restrict m, float *restrict v,
                         const float *restrict g, int64_t n, const msbnb__adamw_k *k);

#endif /* MSBNB_ADAMW_KERNELS_H */
