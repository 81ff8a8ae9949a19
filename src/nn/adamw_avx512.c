/* AdamW update, AVX-512 (16 lanes, masked tail); same operations and order as
 * msbnb__adamw_ref, so the same bits. */
#include "adamw_kernels.h"

#include <immintrin.h>

void msbnb__adamw_avx512(float *restrict p, float *restrict m, float *restrict v,
                         const float *restrict g, int64_t n, const msbnb__adamw_k *k) {
    const __m512 gm = _mm512_set1_ps(k->gm), b1 = _mm512_set1_ps(k->b1),
                 omb1 = _mm512_set1_ps(k->omb1), b2 = _mm512_set1_ps(k->b2),
                 omb2 = _mm512_set1_ps(k->omb2), decay = _mm512_set1_ps(k->decay),
                 step = _mm512_set1_ps(k->step), bc2 = _mm512_set1_ps(k->bc2_sqrt),
                 eps = _mm512_set1_ps(k->eps);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 mk = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        __m512 gi = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, g + i), gm);
        __m512 mi = _mm512_add_ps(_mm512_mul_ps(b1, _mm512_maskz_loadu_ps(mk, m + i)),
                                  _mm512_mul_ps(omb1, gi));
        __m512 vi = _mm512_add_ps(_mm512_mul_ps(b2, _mm512_maskz_loadu_ps(mk, v + i)),
                                  _mm512_mul_ps(_mm512_mul_ps(omb2, gi), gi));
        __m512 den = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), bc2), eps);
        __m512 pi = _mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, p + i), decay),
                                  _mm512_div_ps(_mm512_mul_ps(step, mi), den));
        _mm512_mask_storeu_ps(m + i, mk, mi);
        _mm512_mask_storeu_ps(v + i, mk, vi);
        _mm512_mask_storeu_ps(p + i, mk, pi);
    }
}
