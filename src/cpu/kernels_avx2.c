/* AVX2 + FMA + F16C kernels for the format table; bit-identical to the scalar reference
 * (tests/test_formats_simd.c). 8 lanes; the 16-entry 4-bit table is looked up with two
 * 8-entry permutes and a blend on bit 3 of the index. */
#include "cpu/kernels.h"
#include "cpu/rowq_impl.h"
#include "msbnb/quant.h"
#include "quant/codebooks.h"

#include <immintrin.h>
#include <math.h>

static const float k_nf4_pivots[15] = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
    0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f};
static const float k_fp4_pivots[7] = {0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f,
                                      0.4166667f,  0.583333f,  0.8333333f};

static inline __m256 abs8(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

/* NF4 code = number of pivots x exceeds (bnb's decision tree, msbnb__nf4_code_of), found by
 * binary search over the sorted pivots (x > p[7] ? 8 : 0, then p[c + 3], p[c + 1], p[c]):
 * 4 compares instead of 15, the pivots of the lower levels picked in-lane
 * by vpermilps (lane-crossing permutes are slow on AMD Zen). Same strict compares, so the
 * same code for every x (NaN: 0, as the count). */
static inline __m256i nf4_codes8_bs(__m256 x, const __m256 t3, const __m256 t4a, const __m256 t4b) {
    const __m256 m1 = _mm256_cmp_ps(x, _mm256_set1_ps(k_nf4_pivots[7]), _CMP_GT_OQ);
    __m256i c = _mm256_and_si256(_mm256_castps_si256(m1), _mm256_set1_epi32(8));
    const __m256 p2 = _mm256_blendv_ps(_mm256_set1_ps(k_nf4_pivots[3]), _mm256_set1_ps(k_nf4_pivots[11]), m1);
    c = _mm256_or_si256(c, _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(x, p2, _CMP_GT_OQ)),
                                            _mm256_set1_epi32(4)));
    const __m256 p3 = _mm256_permutevar_ps(t3, _mm256_srli_epi32(c, 2));
    c = _mm256_or_si256(c, _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(x, p3, _CMP_GT_OQ)),
                                            _mm256_set1_epi32(2)));
    const __m256i j = _mm256_srli_epi32(c, 1);
    const __m256 p4 = _mm256_blendv_ps(_mm256_permutevar_ps(t4a, j), _mm256_permutevar_ps(t4b, j), m1);
    return _mm256_sub_epi32(c, _mm256_castps_si256(_mm256_cmp_ps(x, p4, _CMP_GT_OQ)));
}

static inline __m256i fp4_codes8(__m256 x) {
    __m256i neg = _mm256_castps_si256(_mm256_cmp_ps(x, _mm256_set1_ps(-1.17549435e-38f), _CMP_LE_OQ));
    __m256 a = abs8(x);
    __m256i c = _mm256_setzero_si256();
    for (int k = 0; k < 7; k++)
        c = _mm256_sub_epi32(c, _mm256_castps_si256(_mm256_cmp_ps(a, _mm256_set1_ps(k_fp4_pivots[k]), _CMP_GT_OQ)));
    c = _mm256_permutevar8x32_epi32(_mm256_setr_epi32(0, 1, 6, 7, 4, 5, 2, 3), c);
    return _mm256_or_si256(c, _mm256_and_si256(neg, _mm256_set1_epi32(8)));
}

static inline __m256 mul_ftz8(__m256 a, __m256 b) {
    __m256 p = _mm256_mul_ps(a, b);
    __m256 tiny = _mm256_cmp_ps(abs8(p), _mm256_set1_ps(1.17549435e-38f), _CMP_LT_OQ);
    return _mm256_blendv_ps(p, _mm256_and_ps(p, _mm256_set1_ps(-0.0f)), tiny);
}

static inline float hmax8(__m256 m) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

static int quant4_block_avx2(uint8_t *packed, float *absmax, const float *x, int64_t len, int qtype) {
    __m256 m = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= len; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 z = _mm256_mul_ps(v, _mm256_setzero_ps());
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(z, z, _CMP_UNORD_Q));
        m = _mm256_max_ps(m, abs8(v));
    }
    float mx = hmax8(m);
    for (; i < len; i++) {
        if (!isfinite(x[i])) return -1;
        float a = fabsf(x[i]);
        if (a > mx) mx = a;
    }
    if (_mm256_movemask_ps(bad)) return -1;
    *absmax = mx;
    float inv_s = msbnb__bnb_rcp(mx);
    __m256 inv = _mm256_set1_ps(inv_s);
    const float *pv = k_nf4_pivots;
    const __m256 t3 = _mm256_setr_ps(pv[1], pv[5], pv[9], pv[13], pv[1], pv[5], pv[9], pv[13]);
    const __m256 t4a = _mm256_setr_ps(pv[0], pv[2], pv[4], pv[6], pv[0], pv[2], pv[4], pv[6]);
    const __m256 t4b = _mm256_setr_ps(pv[8], pv[10], pv[12], pv[14], pv[8], pv[10], pv[12], pv[14]);
    i = 0;
    for (; i + 16 <= len; i += 16) {
        __m256 a = mul_ftz8(_mm256_loadu_ps(x + i), inv), b = mul_ftz8(_mm256_loadu_ps(x + i + 8), inv);
        __m256i ca = qtype == MSBNB_QTYPE_NF4 ? nf4_codes8_bs(a, t3, t4a, t4b) : fp4_codes8(a);
        __m256i cb = qtype == MSBNB_QTYPE_NF4 ? nf4_codes8_bs(b, t3, t4a, t4b) : fp4_codes8(b);
        /* pair lanes (2j, 2j+1) of each 64-bit element: (even << 4) | odd */
        __m256i wa = _mm256_or_si256(_mm256_slli_epi64(ca, 4), _mm256_srli_epi64(ca, 32));
        __m256i wb = _mm256_or_si256(_mm256_slli_epi64(cb, 4), _mm256_srli_epi64(cb, 32));
        /* low byte of each 64-bit lane holds the packed byte */
        __m256i ma = _mm256_and_si256(wa, _mm256_set1_epi64x(0xff));
        __m256i mb = _mm256_and_si256(wb, _mm256_set1_epi64x(0xff));
        __m256i p32 = _mm256_packus_epi32(ma, mb); /* per 128-bit lane: a0 a1 b0 b1 (as dwords) */
        p32 = _mm256_permute4x64_epi64(p32, 0xd8);  /* a0 a1 a2 a3 b0 b1 b2 b3 across lanes */
        __m128i lo = _mm256_castsi256_si128(p32), hi = _mm256_extracti128_si256(p32, 1);
        __m128i p16 = _mm_packus_epi32(lo, hi);
        __m128i p8 = _mm_packus_epi16(p16, p16);
        _mm_storel_epi64((__m128i *)(packed + i / 2), p8);
    }
    for (; i < len; i += 2) {
        float a = msbnb__mul_ftz(x[i], inv_s), b = msbnb__mul_ftz(i + 1 < len ? x[i + 1] : 0.0f, inv_s);
        uint8_t hi = qtype == MSBNB_QTYPE_NF4 ? msbnb__nf4_code_of(a) : msbnb__fp4_code_of(a);
        uint8_t lo = qtype == MSBNB_QTYPE_NF4 ? msbnb__nf4_code_of(b) : msbnb__fp4_code_of(b);
        packed[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static inline __m256 lut16(__m256 lo, __m256 hi, __m256i idx) {
    __m256 a = _mm256_permutevar8x32_ps(lo, idx), b = _mm256_permutevar8x32_ps(hi, idx);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

static void dequant4_f32_avx2(float *out, const uint8_t *packed, const float *absmax,
                              const float *code16, int64_t bs, int64_t begin, int64_t end) {
    const __m256 lo = _mm256_loadu_ps(code16), hi = _mm256_loadu_ps(code16 + 8);
    const __m256i sh = _mm256_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0);
    int64_t i = begin, head = (begin + 15) & ~(int64_t)15;
    if (head > end) head = end;
    if (i < head) {
        msbnb__dequant4_f32_ref(out, packed, absmax, code16, bs, i, head);
        i = head;
    }
    for (; i + 16 <= end; i += 16) {
        __m128i b = _mm_loadl_epi64((const __m128i *)(packed + i / 2));
        __m128i dup = _mm_unpacklo_epi8(b, b);
        __m256i w0 = _mm256_cvtepu8_epi32(dup), w1 = _mm256_cvtepu8_epi32(_mm_srli_si128(dup, 8));
        __m256i i0 = _mm256_and_si256(_mm256_srlv_epi32(w0, sh), _mm256_set1_epi32(15));
        __m256i i1 = _mm256_and_si256(_mm256_srlv_epi32(w1, sh), _mm256_set1_epi32(15));
        __m256 s = _mm256_set1_ps(absmax[i / bs]);
        _mm256_storeu_ps(out + i, _mm256_mul_ps(lut16(lo, hi, i0), s));
        _mm256_storeu_ps(out + i + 8, _mm256_mul_ps(lut16(lo, hi, i1), s));
    }
    if (i < end) msbnb__dequant4_f32_ref(out, packed, absmax, code16, bs, i, end);
}

static void dequant8_f32_avx2(float *out, const uint8_t *q, const float *absmax,
                              const float *code256, int64_t bs, int64_t begin, int64_t end) {
    int64_t i = begin, head = (begin + 7) & ~(int64_t)7;
    if (head > end) head = end;
    if (i < head) {
        msbnb__dequant8_f32_ref(out, q, absmax, code256, bs, i, head);
        i = head;
    }
    for (; i + 8 <= end; i += 8) {
        __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(q + i)));
        __m256 v = _mm256_i32gather_ps(code256, idx, 4);
        _mm256_storeu_ps(out + i, _mm256_mul_ps(v, _mm256_set1_ps(absmax[i / bs])));
    }
    if (i < end) msbnb__dequant8_f32_ref(out, q, absmax, code256, bs, i, end);
}

static void convert_avx2(void *dst, msbnb_dtype dt, const void *src, msbnb_dtype st, int64_t n) {
    int64_t i = 0;
    if (st != dt && st != MSBNB_DTYPE_F32 && dt != MSBNB_DTYPE_F32) {
        /* f16 <-> bf16: through f32 in L1-sized chunks (exact: f32 holds both) */
        float tmp[1024];
        size_t ds = msbnb_dtype_size(dt), ss = msbnb_dtype_size(st);
        for (; i < n; i += 1024) {
            int64_t c = n - i < 1024 ? n - i : 1024;
            convert_avx2(tmp, MSBNB_DTYPE_F32, (const char *)src + i * ss, st, c);
            convert_avx2((char *)dst + i * ds, dt, tmp, MSBNB_DTYPE_F32, c);
        }
        return;
    }
    if (st == MSBNB_DTYPE_BF16 && dt == MSBNB_DTYPE_F32) {
        for (; i + 8 <= n; i += 8) {
            __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)src + i)));
            _mm256_storeu_ps((float *)dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
        }
    } else if (st == MSBNB_DTYPE_F32 && dt == MSBNB_DTYPE_BF16) {
        for (; i + 8 <= n; i += 8) {
            __m256 v = _mm256_loadu_ps((const float *)src + i);
            __m256i u = _mm256_castps_si256(v);
            __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
            __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb));
            __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            __m256i qn = _mm256_or_si256(u, _mm256_set1_epi32(0x00400000));
            r = _mm256_blendv_epi8(r, qn, nan);
            r = _mm256_srli_epi32(r, 16);
            __m128i p = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
            _mm_storeu_si128((__m128i *)((uint16_t *)dst + i), p);
        }
    } else if (st == MSBNB_DTYPE_F32 && dt == MSBNB_DTYPE_F16) {
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128((__m128i *)((uint16_t *)dst + i),
                             _mm256_cvtps_ph(_mm256_loadu_ps((const float *)src + i), _MM_FROUND_TO_NEAREST_INT));
    } else if (st == MSBNB_DTYPE_F16 && dt == MSBNB_DTYPE_F32) {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps((float *)dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)src + i))));
    }
    if (i < n) {
        size_t ds = msbnb_dtype_size(dt), ss = msbnb_dtype_size(st);
        msbnb__convert_ref((char *)dst + i * ds, dt, (const char *)src + i * ss, st, n - i);
    }
}


/* Integer row quantization: the shared loops of rowq_impl.h compiled for this ISA. */
static void q8_row_avx2(int8_t *q, const float *x, int64_t n, float s, int divide, float z,
                        const uint8_t *mask) {
    msbnb__q8_row_impl(q, x, n, s, divide, z, mask);
}
static void q4_int_codes_avx2(uint8_t *codes, const float *x, int64_t n, float id, float sub,
                              float add) {
    msbnb__q4_int_codes_impl(codes, x, n, id, sub, add);
}
static float absmax_avx2(const float *x, int64_t n) {
    const __m256 sign = _mm256_set1_ps(-0.0f), zero = _mm256_setzero_ps();
    __m256 m0 = zero, m1 = zero, bad = zero;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
        m0 = _mm256_max_ps(m0, _mm256_andnot_ps(sign, a));
        m1 = _mm256_max_ps(m1, _mm256_andnot_ps(sign, b));
        bad = _mm256_add_ps(bad, _mm256_add_ps(_mm256_mul_ps(a, zero), _mm256_mul_ps(b, zero)));
    }
    m0 = _mm256_max_ps(m0, m1);
    float lane[8], bl[8];
    _mm256_storeu_ps(lane, m0);
    _mm256_storeu_ps(bl, bad);
    float m = 0.0f, b = 0.0f;
    for (int j = 0; j < 8; j++) {
        m = lane[j] > m ? lane[j] : m;
        b += bl[j];
    }
    for (; i < n; i++) {
        float a = fabsf(x[i]);
        m = a > m ? a : m;
        b += x[i] * 0.0f;
    }
    return b == b ? m : NAN;
}
static void minmax_avx2(const float *x, int64_t n, float *mn, float *mx) {
    __m256 lo = _mm256_set1_ps(x[0]), hi = lo;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        lo = _mm256_min_ps(lo, v);
        hi = _mm256_max_ps(hi, v);
    }
    float l8[8], h8[8], l = x[0], h = x[0];
    _mm256_storeu_ps(l8, lo);
    _mm256_storeu_ps(h8, hi);
    for (int j = 0; j < 8; j++) {
        l = l8[j] < l ? l8[j] : l;
        h = h8[j] > h ? h8[j] : h;
    }
    for (; i < n; i++) {
        l = x[i] < l ? x[i] : l;
        h = x[i] > h ? x[i] : h;
    }
    *mn = l;
    *mx = h;
}

/* bitsandbytes' dQuantize<0> binary search (msbnb__code8_of, the scalar spec) on 8 lanes:
 * the same pivots, compares and midpoint rounding per lane, the map read by gathers.
 * Branch-free, so 8 random codes cost 8 gathers instead of ~8 mispredicted branches each
 * (the double-quant pass of a conversion spent a quarter of its time in the scalar search). */
static inline __m256i code8_of8(const float *code, __m256 x) {
    __m256i pivot = _mm256_set1_epi32(127), up = _mm256_set1_epi32(255), lp = _mm256_setzero_si256();
    __m256 lower = _mm256_set1_ps(-1.0f), upper = _mm256_set1_ps(1.0f);
    __m256 val = _mm256_set1_ps(code[127]);
    for (int i = 64; i > 0; i >>= 1) {
        const __m256 gtf = _mm256_cmp_ps(x, val, _CMP_GT_OQ);
        const __m256i gt = _mm256_castps_si256(gtf);
        lp = _mm256_blendv_epi8(lp, pivot, gt);     /* x > val: lower_pivot = pivot */
        lower = _mm256_blendv_ps(lower, val, gtf);  /*          lower = val */
        up = _mm256_blendv_epi8(pivot, up, gt);     /* else:    upper_pivot = pivot */
        upper = _mm256_blendv_ps(val, upper, gtf);  /*          upper = val */
        pivot = _mm256_add_epi32(pivot, _mm256_blendv_epi8(_mm256_set1_epi32(-i), _mm256_set1_epi32(i), gt));
        val = _mm256_i32gather_ps(code, pivot, 4);
    }
    upper = _mm256_blendv_ps(upper, _mm256_set1_ps(code[255]),
                             _mm256_castsi256_ps(_mm256_cmpeq_epi32(up, _mm256_set1_epi32(255))));
    lower = _mm256_blendv_ps(lower, _mm256_set1_ps(code[0]),
                             _mm256_castsi256_ps(_mm256_cmpeq_epi32(lp, _mm256_setzero_si256())));
    const __m256 gt = _mm256_cmp_ps(x, val, _CMP_GT_OQ);
    const __m256 half = _mm256_set1_ps(0.5f);
    const __m256 mid_up = _mm256_mul_ps(_mm256_add_ps(upper, val), half);
    const __m256 mid_lo = _mm256_mul_ps(_mm256_add_ps(lower, val), half);
    const __m256 take_up = _mm256_and_ps(gt, _mm256_cmp_ps(x, mid_up, _CMP_GT_OQ));
    const __m256 take_lo = _mm256_andnot_ps(gt, _mm256_cmp_ps(x, mid_lo, _CMP_LT_OQ));
    const __m256i r = _mm256_blendv_epi8(pivot, up, _mm256_castps_si256(take_up));
    return _mm256_blendv_epi8(r, lp, _mm256_castps_si256(take_lo));
}

static int quant8_block_avx2(uint8_t *q, float *absmax, const float *x, int64_t len, const float *code256) {
    const float m = absmax_avx2(x, len);
    if (!isfinite(m)) return -1;
    *absmax = m;
    const float inv_s = msbnb__bnb_rcp(m);
    const __m256 inv = _mm256_set1_ps(inv_s);
    int64_t i = 0;
    for (; i + 8 <= len; i += 8) {
        const __m256i c = code8_of8(code256, mul_ftz8(_mm256_loadu_ps(x + i), inv));
        const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
        _mm_storel_epi64((__m128i *)(q + i), _mm_packus_epi16(w, w));
    }
    for (; i < len; i++) q[i] = msbnb__code8_of(code256, msbnb__mul_ftz(x[i], inv_s));
    return 0;
}

const msbnb__kernel_table msbnb__kernels_avx2 = {
    .quant8_block = quant8_block_avx2,
    .tier = MSBNB_CPU_AVX2,
    .q8_row = q8_row_avx2,
    .q4_int_codes = q4_int_codes_avx2,
    .absmax = absmax_avx2,
    .minmax = minmax_avx2,
    .convert = convert_avx2,
    .quant4_block = quant4_block_avx2,
    .dequant4_f32 = dequant4_f32_avx2,
    .dequant8_f32 = dequant8_f32_avx2,
};
