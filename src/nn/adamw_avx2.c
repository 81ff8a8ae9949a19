/* AdamW update, AVX2 (8 lanes); same operations and order as msbnb__adamw_ref, so the
 * same bits (sqrt and div are correctly rounded in both; no FMA contraction in C11). */
#include "adamw_kernels.h"

#include <immintrin.h>

void msbnb__adamw_avx2(float *restrict p, float *restrict m, float *restrict v,
                       const float *restrict g, int64_t n, const msbnb__adamw_k *k) {
    const __m256 gm = _mm256_set1_ps(k->gm), b1 = _mm256_set1_ps(k->b1),
                 omb1 = _mm256_set1_ps(k->omb1), b2 = _mm256_set1_ps(k->b2),
                 omb2 = _mm256_set1_ps(k->omb2), decay = _mm256_set1_ps(k->decay),
                 step = _mm256_set1_ps(k->step), bc2 = _mm256_set1_ps(k->bc2_sqrt),
                 eps = _mm256_set1_ps(k->eps);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gi = _mm256_mul_ps(_mm256_loadu_ps(g + i), gm);
        __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(omb1, gi));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)),
                                  _mm256_mul_ps(_mm256_mul_ps(omb2, gi), gi));
        __m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2), eps);
        __m256 pi = _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(p + i), decay),
                                  _mm256_div_ps(_mm256_mul_ps(step, mi), den));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        _mm256_storeu_ps(p + i, pi);
    }
    if (i < n) msbnb__adamw_ref(p + i, m + i, v + i, g + i, n - i, k);
}
