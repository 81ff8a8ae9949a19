/* Fused blockwise 8-bit AdamW, AVX-512 (adamw8_kernels.h): 16 lanes, masked tail. The
 * dequantization gathers from the map, the AdamW operations are those of
 * msbnb__adamw_ref in the same order, and the quantizer is an 8-step search over the
 * threshold table whose candidates at each level sit in registers (vpermps / vpermt2ps). */
#include "adamw8_kernels.h"
#include "quant/codebooks.h"

#include <immintrin.h>

typedef struct {
    __m512 l64, l32, l16, l8, l4[2], l2[4], l1[8];
    float t128;
} search_tabs;

static inline void load_tabs(search_tabs *t, const msbnb__q8map *m) {
    t->t128 = m->lvl[0];
    t->l64 = _mm512_loadu_ps(m->lvl + 1);
    t->l32 = _mm512_loadu_ps(m->lvl + 3);
    t->l16 = _mm512_loadu_ps(m->lvl + 7);
    t->l8 = _mm512_loadu_ps(m->lvl + 15);
    for (int i = 0; i < 2; i++) t->l4[i] = _mm512_loadu_ps(m->lvl + 31 + 16 * i);
    for (int i = 0; i < 4; i++) t->l2[i] = _mm512_loadu_ps(m->lvl + 63 + 16 * i);
    for (int i = 0; i < 8; i++) t->l1[i] = _mm512_loadu_ps(m->lvl + 127 + 16 * i);
}

/* r = #{k : x >= thr[k]}, branchless: at level s, r is a multiple of 2s and the candidate
 * thr[r + s] is entry r / 2s of that level's table. NaN compares false: code 0. */
static inline __m512i search16(__m512 x, const search_tabs *t) {
#define STEP(tab_value, s)                                                                \
    do {                                                                                  \
        __mmask16 ge_ = _mm512_cmp_ps_mask(x, (tab_value), _CMP_GE_OQ);                   \
        r = _mm512_mask_add_epi32(r, ge_, r, _mm512_set1_epi32(s));                       \
    } while (0)
    __m512i r = _mm512_setzero_si512();
    STEP(_mm512_set1_ps(t->t128), 128);
    STEP(_mm512_permutexvar_ps(_mm512_srli_epi32(r, 7), t->l64), 64);
    STEP(_mm512_permutexvar_ps(_mm512_srli_epi32(r, 6), t->l32), 32);
    STEP(_mm512_permutexvar_ps(_mm512_srli_epi32(r, 5), t->l16), 16);
    STEP(_mm512_permutexvar_ps(_mm512_srli_epi32(r, 4), t->l8), 8);
    STEP(_mm512_permutex2var_ps(t->l4[0], _mm512_srli_epi32(r, 3), t->l4[1]), 4);
    {
        __m512i j = _mm512_srli_epi32(r, 2); /* 0..63 */
        __m512 a = _mm512_permutex2var_ps(t->l2[0], j, t->l2[1]);
        __m512 b = _mm512_permutex2var_ps(t->l2[2], j, t->l2[3]);
        STEP(_mm512_mask_mov_ps(a, _mm512_test_epi32_mask(j, _mm512_set1_epi32(32)), b), 2);
    }
    {
        __m512i j = _mm512_srli_epi32(r, 1); /* 0..127 */
        __m512 a = _mm512_permutex2var_ps(t->l1[0], j, t->l1[1]);
        __m512 b = _mm512_permutex2var_ps(t->l1[2], j, t->l1[3]);
        __m512 c = _mm512_permutex2var_ps(t->l1[4], j, t->l1[5]);
        __m512 d = _mm512_permutex2var_ps(t->l1[6], j, t->l1[7]);
        __mmask16 b5 = _mm512_test_epi32_mask(j, _mm512_set1_epi32(32));
        __mmask16 b6 = _mm512_test_epi32_mask(j, _mm512_set1_epi32(64));
        __m512 lo = _mm512_mask_mov_ps(a, b5, b), hi = _mm512_mask_mov_ps(c, b5, d);
        STEP(_mm512_mask_mov_ps(lo, b6, hi), 1);
    }
#undef STEP
    return r;
}

static inline __m512 mul_ftz(__m512 a, __m512 b) {
    __m512 p = _mm512_mul_ps(a, b);
    __mmask16 tiny = _mm512_cmp_ps_mask(_mm512_abs_ps(p), _mm512_set1_ps(1.17549435e-38f), _CMP_LT_OQ);
    return _mm512_mask_and_ps(p, tiny, p, _mm512_castsi512_ps(_mm512_set1_epi32((int)0x80000000u)));
}

static inline __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}

/* Codes by one gather from the bucket table (adamw8_kernels.h); x finite. No flush of
 * subnormal products needed: the first bucket, holding them and +-0, has one code per sign,
 * that of +-0. */
static inline __m512i bucket16(__m512 x, const uint32_t *tab) {
    __m512i xi = _mm512_castps_si512(x);
    __m512i a = _mm512_and_si512(xi, _mm512_set1_epi32(0x7fffffff));
    __mmask16 neg = _mm512_movepi32_mask(xi);
    __m512i b = _mm512_sub_epi32(_mm512_srli_epi32(a, 16), _mm512_set1_epi32(MSBNB__Q8_BBASE));
    b = _mm512_min_epi32(_mm512_max_epi32(b, _mm512_setzero_si512()), _mm512_set1_epi32(MSBNB__Q8_NBUCKET - 1));
    b = _mm512_mask_add_epi32(b, neg, b, _mm512_set1_epi32(MSBNB__Q8_NBUCKET));
    __m512i e = _mm512_i32gather_epi32(b, (const void *)tab, 4);
    __m512i u = _mm512_and_si512(a, _mm512_set1_epi32(0xffff));
    u = _mm512_mask_xor_epi32(u, neg, u, _mm512_set1_epi32(0xffff));
    __m512i ge = _mm512_srli_epi32(_mm512_sub_epi32(_mm512_sub_epi32(_mm512_and_si512(e, _mm512_set1_epi32(0x1ffff)), u),
                                                    _mm512_set1_epi32(1)), 31);
    return _mm512_add_epi32(_mm512_srli_epi32(e, 17), ge);
}

/* Codes of x[0..len) for a block whose max |x| is amax (finite). */
static inline void quantize(uint8_t *restrict q, const float *restrict x, int64_t len, float amax,
                            const search_tabs *t, const msbnb__q8map *m) {
    float inv_s = msbnb__bnb_rcp(amax);
    __m512 inv = _mm512_set1_ps(inv_s);
    if (!(amax >= 1.17549435e-38f)) { /* zero/subnormal absmax: x is NaN or inf */
        for (int64_t i = 0; i < len; i++) q[i] = msbnb__q8map_code(m, msbnb__mul_ftz(x[i], inv_s));
        return;
    }
    if (m->bucket_ok) {
        for (int64_t i = 0; i < len; i += 16) {
            __mmask16 mk = tail_mask(len - i);
            __m512i c = bucket16(_mm512_mul_ps(_mm512_loadu_ps(x + i), inv), m->bucket);
            _mm_mask_storeu_epi8(q + i, mk, _mm512_cvtepi32_epi8(c));
        }
        return;
    }
    for (int64_t i = 0; i < len; i += 16) {
        __mmask16 mk = tail_mask(len - i);
        __m512i c = search16(mul_ftz(_mm512_loadu_ps(x + i), inv), t);
        _mm_mask_storeu_epi8(q + i, mk, _mm512_cvtepi32_epi8(c));
    }
}

void msbnb__q8_codes_avx512(uint8_t *q, const float *x, int64_t len, float amax, const msbnb__q8map *m) {
    search_tabs t;
    load_tabs(&t, m);
    quantize(q, x, len, amax, &t, m);
}

typedef struct {
    __m512 gm, b1, omb1, b2, omb2, decay, step, bc2, eps;
} adamw_consts;

/* The update of elements [i, i + 16) (mask mk) of a block: dequantize with scales sm, sv,
 * AdamW in msbnb__adamw_ref's order, p and g (zeroed) written back, new m and v into the
 * block buffers, running max |m|, max |v| and a NaN/Inf flag. */
static inline void update16(float *restrict p, float *restrict g, const uint8_t *restrict qm,
                            const uint8_t *restrict qv, float *restrict m, float *restrict v,
                            int64_t i, __mmask16 mk, __m512 sm, __m512 sv, const adamw_consts *c,
                            const msbnb__q8map *mmap, const msbnb__q8map *vmap, __m512 *mxm,
                            __m512 *mxv, __mmask16 *bad) {
    __m512i im = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mk, qm + i));
    __m512i iv = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mk, qv + i));
    __m512 mo = _mm512_mul_ps(_mm512_i32gather_ps(im, mmap->code, 4), sm);
    __m512 vo = _mm512_mul_ps(_mm512_i32gather_ps(iv, vmap->code, 4), sv);
    __m512 gi = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, g + i), c->gm);
    __m512 mi = _mm512_add_ps(_mm512_mul_ps(c->b1, mo), _mm512_mul_ps(c->omb1, gi));
    __m512 vi = _mm512_add_ps(_mm512_mul_ps(c->b2, vo), _mm512_mul_ps(_mm512_mul_ps(c->omb2, gi), gi));
    __m512 den = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), c->bc2), c->eps);
    __m512 pi = _mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, p + i), c->decay),
                              _mm512_div_ps(_mm512_mul_ps(c->step, mi), den));
    _mm512_mask_storeu_ps(p + i, mk, pi);
    _mm512_mask_storeu_ps(g + i, mk, _mm512_setzero_ps());
    _mm512_storeu_ps(m + i, mi);
    _mm512_storeu_ps(v + i, vi);
    /* fpclass 0x99: QNaN, SNaN, +Inf, -Inf */
    *bad |= _mm512_mask_fpclass_ps_mask(mk, mi, 0x99) | _mm512_mask_fpclass_ps_mask(mk, vi, 0x99);
    *mxm = _mm512_mask_max_ps(*mxm, mk, *mxm, _mm512_abs_ps(mi));
    *mxv = _mm512_mask_max_ps(*mxv, mk, *mxv, _mm512_abs_ps(vi));
}

/* Codes of 16 elements of a full block by the bucket table (x * inv finite). */
static inline void codes16(uint8_t *restrict q, const float *restrict x, __m512 inv, const uint32_t *tab) {
    _mm_storeu_si128((__m128i *)q, _mm512_cvtepi32_epi8(bucket16(_mm512_mul_ps(_mm512_loadu_ps(x), inv), tab)));
}

/* Blocks in order; the codes of a full block whose scales are normal numbers are computed
 * during the next block's update loop, so the divider-bound AdamW arithmetic and the
 * gather-bound code lookup overlap. */
int64_t msbnb__adamw8_avx512(float *restrict p, float *restrict g, uint8_t *restrict qm,
                             float *restrict am, uint8_t *restrict qv, float *restrict av, int64_t n,
                             const msbnb__adamw_k *k, const msbnb__q8map *mmap, const msbnb__q8map *vmap) {
    float buf[2][2][MSBNB__Q8_BLOCK]; /* [block parity][m, v] */
    const adamw_consts c = {_mm512_set1_ps(k->gm), _mm512_set1_ps(k->b1), _mm512_set1_ps(k->omb1),
                            _mm512_set1_ps(k->b2), _mm512_set1_ps(k->omb2), _mm512_set1_ps(k->decay),
                            _mm512_set1_ps(k->step), _mm512_set1_ps(k->bc2_sqrt), _mm512_set1_ps(k->eps)};
    const int fast = mmap->bucket_ok && vmap->bucket_ok;
    int64_t bad_block = -1, nb = (n + MSBNB__Q8_BLOCK - 1) / MSBNB__Q8_BLOCK;
    int pend = 0;         /* a full block's codes are still to be written */
    int64_t pb = 0;       /* that block */
    __m512 pinvm = _mm512_setzero_ps(), pinvv = _mm512_setzero_ps();
    search_tabs t;
    for (int64_t b = 0; b < nb; b++) {
        int64_t i0 = b * MSBNB__Q8_BLOCK, len = n - i0 < MSBNB__Q8_BLOCK ? n - i0 : MSBNB__Q8_BLOCK;
        float *m = buf[b & 1][0], *v = buf[b & 1][1];
        const float *pm = buf[(b & 1) ^ 1][0], *pv = buf[(b & 1) ^ 1][1];
        __m512 sm = _mm512_set1_ps(am[b]), sv = _mm512_set1_ps(av[b]);
        __m512 mxm = _mm512_setzero_ps(), mxv = _mm512_setzero_ps();
        __mmask16 bad = 0;
        if (pend && len == MSBNB__Q8_BLOCK) {
            uint8_t *pqm = qm + pb * MSBNB__Q8_BLOCK, *pqv = qv + pb * MSBNB__Q8_BLOCK;
            for (int64_t i = 0; i < MSBNB__Q8_BLOCK; i += 16) {
                update16(p + i0, g + i0, qm + i0, qv + i0, m, v, i, (__mmask16)0xFFFF, sm, sv, &c, mmap,
                         vmap, &mxm, &mxv, &bad);
                codes16(pqm + i, pm + i, pinvm, mmap->bucket);
                codes16(pqv + i, pv + i, pinvv, vmap->bucket);
            }
        } else {
            if (pend) {
                for (int64_t i = 0; i < MSBNB__Q8_BLOCK; i += 16) {
                    codes16(qm + pb * MSBNB__Q8_BLOCK + i, pm + i, pinvm, mmap->bucket);
                    codes16(qv + pb * MSBNB__Q8_BLOCK + i, pv + i, pinvv, vmap->bucket);
                }
            }
            for (int64_t i = 0; i < len; i += 16)
                update16(p + i0, g + i0, qm + i0, qv + i0, m, v, i, tail_mask(len - i), sm, sv, &c, mmap,
                         vmap, &mxm, &mxv, &bad);
        }
        pend = 0;
        if (bad) {
            bad_block = b;
            continue;
        }
        float amx = _mm512_reduce_max_ps(mxm), avx = _mm512_reduce_max_ps(mxv);
        am[b] = amx;
        av[b] = avx;
        if (fast && len == MSBNB__Q8_BLOCK && amx >= 1.17549435e-38f && avx >= 1.17549435e-38f) {
            pend = 1;
            pb = b;
            pinvm = _mm512_set1_ps(msbnb__bnb_rcp(amx));
            pinvv = _mm512_set1_ps(msbnb__bnb_rcp(avx));
        } else {
            if (!mmap->bucket_ok) load_tabs(&t, mmap);
            quantize(qm + i0, m, len, amx, &t, mmap);
            if (!vmap->bucket_ok) load_tabs(&t, vmap);
            quantize(qv + i0, v, len, avx, &t, vmap);
        }
    }
    if (pend) {
        const float *pm = buf[pb & 1][0], *pv = buf[pb & 1][1];
        for (int64_t i = 0; i < MSBNB__Q8_BLOCK; i += 16) {
            codes16(qm + pb * MSBNB__Q8_BLOCK + i, pm + i, pinvm, mmap->bucket);
            codes16(qv + pb * MSBNB__Q8_BLOCK + i, pv + i, pinvv, vmap->bucket);
        }
    }
    return bad_block;
}
