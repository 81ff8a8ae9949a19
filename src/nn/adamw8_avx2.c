/* Fused blockwise 8-bit AdamW, AVX2 (adamw8_kernels.h): 8 lanes, scalar tail. The
 * quantizer's threshold search takes its first four levels from registers (vpermps) and
 * the last four from gathers. */
#include "adamw8_kernels.h"
#include "quant/codebooks.h"

#include <immintrin.h>
#include <math.h>

static inline __m256 mul_ftz(__m256 a, __m256 b) {
    __m256 p = _mm256_mul_ps(a, b);
    __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    __m256 tiny = _mm256_cmp_ps(_mm256_andnot_ps(sign, p), _mm256_set1_ps(1.17549435e-38f), _CMP_LT_OQ);
    /* tiny lanes keep only the sign bit */
    return _mm256_blendv_ps(p, _mm256_and_ps(p, sign), tiny);
}

static inline __m256i search8(__m256 x, const msbnb__q8map *m, __m256 l64, __m256 l32, __m256 l16) {
#define STEP(tab_value, s)                                                                 \
    r = _mm256_add_epi32(r, _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(x, (tab_value), _CMP_GE_OQ)), \
                                             _mm256_set1_epi32(s)))
    __m256i r = _mm256_setzero_si256();
    STEP(_mm256_set1_ps(m->lvl[0]), 128);
    STEP(_mm256_permutevar8x32_ps(l64, _mm256_srli_epi32(r, 7)), 64);
    STEP(_mm256_permutevar8x32_ps(l32, _mm256_srli_epi32(r, 6)), 32);
    STEP(_mm256_permutevar8x32_ps(l16, _mm256_srli_epi32(r, 5)), 16);
    for (int s = 8; s >= 1; s >>= 1)
        STEP(_mm256_i32gather_ps(m->thr, _mm256_add_epi32(r, _mm256_set1_epi32(s)), 4), s);
#undef STEP
    return r;
}

/* Codes by one gather from the bucket table (adamw8_kernels.h); x finite. No flush of
 * subnormal products needed: the first bucket, holding them and +-0, has one code per sign,
 * that of +-0. */
static inline __m256i bucket8(__m256 x, const uint32_t *tab) {
    __m256i xi = _mm256_castps_si256(x);
    __m256i a = _mm256_and_si256(xi, _mm256_set1_epi32(0x7fffffff));
    __m256i neg = _mm256_srai_epi32(xi, 31); /* all ones for x < 0 */
    __m256i b = _mm256_sub_epi32(_mm256_srli_epi32(a, 16), _mm256_set1_epi32(MSBNB__Q8_BBASE));
    b = _mm256_min_epi32(_mm256_max_epi32(b, _mm256_setzero_si256()), _mm256_set1_epi32(MSBNB__Q8_NBUCKET - 1));
    b = _mm256_add_epi32(b, _mm256_and_si256(neg, _mm256_set1_epi32(MSBNB__Q8_NBUCKET)));
    __m256i e = _mm256_i32gather_epi32((const int *)tab, b, 4);
    __m256i u = _mm256_xor_si256(_mm256_and_si256(a, _mm256_set1_epi32(0xffff)),
                                 _mm256_and_si256(neg, _mm256_set1_epi32(0xffff)));
    __m256i ge = _mm256_srli_epi32(_mm256_sub_epi32(_mm256_sub_epi32(_mm256_and_si256(e, _mm256_set1_epi32(0x1ffff)), u),
                                                    _mm256_set1_epi32(1)), 31);
    return _mm256_add_epi32(_mm256_srli_epi32(e, 17), ge);
}

static void quantize(uint8_t *restrict q, const float *restrict x, int64_t len, float amax,
                     const msbnb__q8map *m) {
    float inv_s = msbnb__bnb_rcp(amax);
    __m256 inv = _mm256_set1_ps(inv_s);
    int64_t i = 0;
    if (!(amax >= 1.17549435e-38f)) { /* zero/subnormal absmax: x is NaN or inf */
        for (; i < len; i++) q[i] = msbnb__q8map_code(m, msbnb__mul_ftz(x[i], inv_s));
        return;
    }
    if (m->bucket_ok) {
        for (; i + 8 <= len; i += 8) {
            __m256i c = bucket8(_mm256_mul_ps(_mm256_loadu_ps(x + i), inv), m->bucket);
            __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
            _mm_storel_epi64((__m128i *)(q + i), _mm_packus_epi16(w, w));
        }
        for (; i < len; i++) q[i] = msbnb__q8map_code(m, msbnb__mul_ftz(x[i], inv_s));
        return;
    }
    __m256 l64 = _mm256_loadu_ps(m->lvl + 1), l32 = _mm256_loadu_ps(m->lvl + 3),
           l16 = _mm256_loadu_ps(m->lvl + 7);
    for (; i + 8 <= len; i += 8) {
        __m256i c = search8(mul_ftz(_mm256_loadu_ps(x + i), inv), m, l64, l32, l16);
        __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
        _mm_storel_epi64((__m128i *)(q + i), _mm_packus_epi16(w, w));
    }
    for (; i < len; i++) q[i] = msbnb__q8map_code(m, msbnb__mul_ftz(x[i], inv_s));
}

void msbnb__q8_codes_avx2(uint8_t *q, const float *x, int64_t len, float amax, const msbnb__q8map *m) {
    quantize(q, x, len, amax, m);
}

static int block_avx2(float *restrict p, float *restrict g, uint8_t *restrict qm,
                       float *restrict am, uint8_t *restrict qv, float *restrict av, int64_t len,
                       const msbnb__adamw_k *k, const msbnb__q8map *mmap, const msbnb__q8map *vmap) {
    float m[MSBNB__Q8_BLOCK], v[MSBNB__Q8_BLOCK];
    const __m256 gm = _mm256_set1_ps(k->gm), b1 = _mm256_set1_ps(k->b1),
                 omb1 = _mm256_set1_ps(k->omb1), b2 = _mm256_set1_ps(k->b2),
                 omb2 = _mm256_set1_ps(k->omb2), decay = _mm256_set1_ps(k->decay),
                 step = _mm256_set1_ps(k->step), bc2 = _mm256_set1_ps(k->bc2_sqrt),
                 eps = _mm256_set1_ps(k->eps), sm = _mm256_set1_ps(*am), sv = _mm256_set1_ps(*av);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 mxm = _mm256_setzero_ps(), mxv = _mm256_setzero_ps(), badv = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= len; i += 8) {
        __m256i im = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qm + i)));
        __m256i iv = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qv + i)));
        __m256 mo = _mm256_mul_ps(_mm256_i32gather_ps(mmap->code, im, 4), sm);
        __m256 vo = _mm256_mul_ps(_mm256_i32gather_ps(vmap->code, iv, 4), sv);
        __m256 gi = _mm256_mul_ps(_mm256_loadu_ps(g + i), gm);
        __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, mo), _mm256_mul_ps(omb1, gi));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, vo), _mm256_mul_ps(_mm256_mul_ps(omb2, gi), gi));
        __m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2), eps);
        __m256 pi = _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(p + i), decay),
                                  _mm256_div_ps(_mm256_mul_ps(step, mi), den));
        _mm256_storeu_ps(p + i, pi);
        _mm256_storeu_ps(g + i, _mm256_setzero_ps());
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        /* x * 0 is NaN exactly for NaN/Inf x */
        badv = _mm256_or_ps(badv, _mm256_cmp_ps(_mm256_mul_ps(mi, _mm256_setzero_ps()),
                                                _mm256_mul_ps(vi, _mm256_setzero_ps()), _CMP_UNORD_Q));
        mxm = _mm256_max_ps(mxm, _mm256_and_ps(mi, absmask));
        mxv = _mm256_max_ps(mxv, _mm256_and_ps(vi, absmask));
    }
    float lm[8], lv[8];
    _mm256_storeu_ps(lm, mxm);
    _mm256_storeu_ps(lv, mxv);
    float amx = 0.0f, avx = 0.0f;
    int bad = _mm256_movemask_ps(badv) != 0;
    for (int j = 0; j < 8; j++) {
        amx = lm[j] > amx ? lm[j] : amx;
        avx = lv[j] > avx ? lv[j] : avx;
    }
    for (; i < len; i++) { /* same operations, scalar */
        float mi = mmap->code[qm[i]] * *am, vi = vmap->code[qv[i]] * *av;
        float gi = g[i] * k->gm;
        mi = k->b1 * mi + k->omb1 * gi;
        vi = k->b2 * vi + k->omb2 * gi * gi;
        float denom = sqrtf(vi) / k->bc2_sqrt + k->eps;
        p[i] = p[i] * k->decay - k->step * mi / denom;
        g[i] = 0.0f;
        m[i] = mi;
        v[i] = vi;
        bad |= !isfinite(mi) || !isfinite(vi);
        amx = fabsf(mi) > amx ? fabsf(mi) : amx;
        avx = fabsf(vi) > avx ? fabsf(vi) : avx;
    }
    if (bad) return -1;
    *am = amx;
    *av = avx;
    quantize(qm, m, len, amx, mmap);
    quantize(qv, v, len, avx, vmap);
    return 0;
}

int64_t msbnb__adamw8_avx2(float *restrict p, float *restrict g, uint8_t *restrict qm, float *restrict am,
          uint8_t *restrict qv, float *restrict av, int64_t n, const msbnb__adamw_k *k,
          const msbnb__q8map *mmap, const msbnb__q8map *vmap) {
    int64_t bad = -1;
    for (int64_t b = 0; b * MSBNB__Q8_BLOCK < n; b++) {
        int64_t i = b * MSBNB__Q8_BLOCK, len = n - i < MSBNB__Q8_BLOCK ? n - i : MSBNB__Q8_BLOCK;
        if (block_avx2(p + i, g + i, qm + i, &am[b], qv + i, &av[b], len, k, mmap, vmap) != 0) bad = b;
    }
    return bad;
}
