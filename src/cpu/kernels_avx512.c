/* AVX-512 (F/BW/DQ/VL) kernels for the format table. Results are bit-identical to the
 * scalar reference: same operations in the same order per element (tests/test_formats_simd.c). */
#include "cpu/kernels.h"
#include "cpu/rowq_impl.h"
#include "msbnb/quant.h"
#include "quant/codebooks.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

/* NF4 pivots in ascending order: the code is the number of pivots x exceeds, which is what
 * bitsandbytes' decision tree computes (a NaN exceeds none: code 0, as in the tree). */
static const float k_nf4_pivots[15] = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
    0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f};
/* FP4 magnitude pivots ascending and the code each count maps to (bitsandbytes' tree). */
static const float k_fp4_pivots[7] = {0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f,
                                      0.4166667f,  0.583333f,  0.8333333f};

static inline __m512i nf4_codes(__m512 x) {
    __m512i c = _mm512_setzero_si512();
    const __m512i one = _mm512_set1_epi32(1);
    for (int k = 0; k < 15; k++) {
        __mmask16 gt = _mm512_cmp_ps_mask(x, _mm512_set1_ps(k_nf4_pivots[k]), _CMP_GT_OQ);
        c = _mm512_mask_add_epi32(c, gt, c, one);
    }
    return c;
}

static inline __m512i fp4_codes(__m512 x) {
    const __m512i one = _mm512_set1_epi32(1);
    /* after mul.ftz only values <= -FLT_MIN are negative */
    __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-1.17549435e-38f), _CMP_LE_OQ);
    __m512 a = _mm512_abs_ps(x);
    __m512i c = _mm512_setzero_si512();
    for (int k = 0; k < 7; k++) {
        __mmask16 gt = _mm512_cmp_ps_mask(a, _mm512_set1_ps(k_fp4_pivots[k]), _CMP_GT_OQ);
        c = _mm512_mask_add_epi32(c, gt, c, one);
    }
    const __m512i map = _mm512_setr_epi32(0, 1, 6, 7, 4, 5, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0);
    c = _mm512_permutexvar_epi32(c, map);
    return _mm512_mask_add_epi32(c, neg, c, _mm512_set1_epi32(8));
}

/* Block absmax (NaN/Inf reported through *bad). */
static inline float absmax16(const float *x, int64_t len, int *bad) {
    __m512 m = _mm512_setzero_ps();
    __mmask16 nonfinite = 0;
    int64_t i = 0;
    for (; i + 16 <= len; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512 z = _mm512_mul_ps(v, _mm512_setzero_ps());
        nonfinite |= _mm512_cmp_ps_mask(z, z, _CMP_UNORD_Q);
        m = _mm512_max_ps(m, _mm512_abs_ps(v));
    }
    if (i < len) {
        __mmask16 k = (__mmask16)((1u << (len - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        __m512 z = _mm512_mul_ps(v, _mm512_setzero_ps());
        nonfinite |= _mm512_cmp_ps_mask(z, z, _CMP_UNORD_Q);
        m = _mm512_max_ps(m, _mm512_abs_ps(v));
    }
    *bad = nonfinite != 0;
    return _mm512_reduce_max_ps(m);
}

static inline __m512 mul_ftz(__m512 a, __m512 b) {
    __m512 p = _mm512_mul_ps(a, b);
    __mmask16 tiny = _mm512_cmp_ps_mask(_mm512_abs_ps(p), _mm512_set1_ps(1.17549435e-38f), _CMP_LT_OQ);
    /* keep the sign bit only */
    return _mm512_mask_and_ps(p, tiny, p, _mm512_castsi512_ps(_mm512_set1_epi32((int)0x80000000u)));
}

static int quant4_block_avx512(uint8_t *packed, float *absmax, const float *x, int64_t len, int qtype) {
    int bad;
    float m = absmax16(x, len, &bad);
    if (bad) return -1;
    *absmax = m;
    __m512 inv = _mm512_set1_ps(msbnb__bnb_rcp(m));
    int64_t i = 0;
    for (; i + 32 <= len; i += 32) {
        __m512 a = mul_ftz(_mm512_loadu_ps(x + i), inv), b = mul_ftz(_mm512_loadu_ps(x + i + 16), inv);
        __m512i ca = qtype == MSBNB_QTYPE_NF4 ? nf4_codes(a) : fp4_codes(a);
        __m512i cb = qtype == MSBNB_QTYPE_NF4 ? nf4_codes(b) : fp4_codes(b);
        /* element 2j -> high nibble, 2j+1 -> low nibble */
        __m128i ba = _mm512_cvtepi32_epi8(ca), bb = _mm512_cvtepi32_epi8(cb);
        /* ba = 16 codes; combine pairs: (c[2j] << 4) | c[2j+1] */
        __m128i ev_a = _mm_and_si128(ba, _mm_set1_epi16(0x00ff)), od_a = _mm_srli_epi16(ba, 8);
        __m128i ev_b = _mm_and_si128(bb, _mm_set1_epi16(0x00ff)), od_b = _mm_srli_epi16(bb, 8);
        __m128i wa = _mm_or_si128(_mm_slli_epi16(ev_a, 4), od_a);
        __m128i wb = _mm_or_si128(_mm_slli_epi16(ev_b, 4), od_b);
        __m128i bytes = _mm_packus_epi16(wa, wb);
        _mm_storeu_si128((__m128i *)(packed + i / 2), bytes);
    }
    float inv_s;
    _mm_store_ss(&inv_s, _mm512_castps512_ps128(inv));
    for (; i < len; i += 2) {
        float a = msbnb__mul_ftz(x[i], inv_s), b = msbnb__mul_ftz(i + 1 < len ? x[i + 1] : 0.0f, inv_s);
        uint8_t hi = qtype == MSBNB_QTYPE_NF4 ? msbnb__nf4_code_of(a) : msbnb__fp4_code_of(a);
        uint8_t lo = qtype == MSBNB_QTYPE_NF4 ? msbnb__nf4_code_of(b) : msbnb__fp4_code_of(b);
        packed[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

/* bitsandbytes' dQuantize<0> binary search on 16 lanes at once (msbnb__code8_of is the
 * scalar spec): the same pivots, compares and midpoint rounding per lane. */
static inline __m512i code8_of16(const float *code, __m512 x) {
    __m512i pivot = _mm512_set1_epi32(127), up = _mm512_set1_epi32(255), lp = _mm512_setzero_si512();
    __m512 lower = _mm512_set1_ps(-1.0f), upper = _mm512_set1_ps(1.0f);
    __m512 val = _mm512_set1_ps(code[127]);
    for (int i = 64; i > 0; i >>= 1) {
        __mmask16 gt = _mm512_cmp_ps_mask(x, val, _CMP_GT_OQ);
        lp = _mm512_mask_mov_epi32(lp, gt, pivot);
        lower = _mm512_mask_mov_ps(lower, gt, val);
        up = _mm512_mask_mov_epi32(pivot, gt, up);
        upper = _mm512_mask_mov_ps(val, gt, upper);
        __m512i step = _mm512_set1_epi32(i);
        pivot = _mm512_mask_add_epi32(_mm512_sub_epi32(pivot, step), gt, pivot, step);
        val = _mm512_i32gather_ps(pivot, code, 4);
    }
    upper = _mm512_mask_mov_ps(upper, _mm512_cmpeq_epi32_mask(up, _mm512_set1_epi32(255)), _mm512_set1_ps(code[255]));
    lower = _mm512_mask_mov_ps(lower, _mm512_cmpeq_epi32_mask(lp, _mm512_setzero_si512()), _mm512_set1_ps(code[0]));
    __mmask16 gt = _mm512_cmp_ps_mask(x, val, _CMP_GT_OQ);
    __m512 half = _mm512_set1_ps(0.5f);
    __m512 mid_up = _mm512_mul_ps(_mm512_add_ps(upper, val), half);
    __m512 mid_lo = _mm512_mul_ps(_mm512_add_ps(lower, val), half);
    __mmask16 take_up = gt & _mm512_cmp_ps_mask(x, mid_up, _CMP_GT_OQ);
    __mmask16 take_lo = (__mmask16)~gt & _mm512_cmp_ps_mask(x, mid_lo, _CMP_LT_OQ);
    __m512i r = _mm512_mask_mov_epi32(pivot, take_up, up);
    return _mm512_mask_mov_epi32(r, take_lo, lp);
}

static int quant8_block_avx512(uint8_t *q, float *absmax, const float *x, int64_t len, const float *code256) {
    int bad;
    float m = absmax16(x, len, &bad);
    if (bad) return -1;
    *absmax = m;
    float inv_s = msbnb__bnb_rcp(m);
    __m512 inv = _mm512_set1_ps(inv_s);
    int64_t i = 0;
    for (; i + 16 <= len; i += 16)
        _mm_storeu_si128((__m128i *)(q + i), _mm512_cvtepi32_epi8(code8_of16(code256, mul_ftz(_mm512_loadu_ps(x + i), inv))));
    for (; i < len; i++) q[i] = msbnb__code8_of(code256, msbnb__mul_ftz(x[i], inv_s));
    return 0;
}

/* 16 nibble indices for 8 packed bytes, in element order (high nibble first). */
static inline __m512i nibbles16(const uint8_t *p) {
    __m128i b = _mm_loadl_epi64((const __m128i *)p);
    __m128i dup = _mm_unpacklo_epi8(b, b);
    __m512i w = _mm512_cvtepu8_epi32(dup);
    const __m512i sh = _mm512_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0);
    return _mm512_and_si512(_mm512_srlv_epi32(w, sh), _mm512_set1_epi32(15));
}

static void dequant4_f32_avx512(float *out, const uint8_t *packed, const float *absmax,
                                const float *code16, int64_t bs, int64_t begin, int64_t end) {
    const __m512 lut = _mm512_loadu_ps(code16);
    int64_t i = begin;
    int64_t head = (begin + 15) & ~(int64_t)15;
    if (head > end) head = end;
    if (i < head) {
        msbnb__dequant4_f32_ref(out, packed, absmax, code16, bs, i, head);
        i = head;
    }
    /* 16-element chunks never straddle a block: bs is a power of two >= 32. */
    for (; i + 16 <= end; i += 16) {
        __m512 v = _mm512_permutexvar_ps(nibbles16(packed + i / 2), lut);
        _mm512_storeu_ps(out + i, _mm512_mul_ps(v, _mm512_set1_ps(absmax[i / bs])));
    }
    if (i < end) msbnb__dequant4_f32_ref(out, packed, absmax, code16, bs, i, end);
}

static void dequant8_f32_avx512(float *out, const uint8_t *q, const float *absmax,
                                const float *code256, int64_t bs, int64_t begin, int64_t end) {
    int64_t i = begin;
    int64_t head = (begin + 15) & ~(int64_t)15;
    if (head > end) head = end;
    if (i < head) {
        msbnb__dequant8_f32_ref(out, q, absmax, code256, bs, i, head);
        i = head;
    }
    for (; i + 16 <= end; i += 16) {
        __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + i)));
        __m512 v = _mm512_i32gather_ps(idx, code256, 4);
        _mm512_storeu_ps(out + i, _mm512_mul_ps(v, _mm512_set1_ps(absmax[i / bs])));
    }
    if (i < end) msbnb__dequant8_f32_ref(out, q, absmax, code256, bs, i, end);
}

/* f32 -> bf16 with RNE and quiet NaN, 16 at a time (same bit recipe as the scalar one). */
static inline __m256i f32_to_bf16_16(__m512 v) {
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x00400000));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}

static void convert_avx512(void *dst, msbnb_dtype dt, const void *src, msbnb_dtype st, int64_t n) {
    int64_t i = 0;
    if (st != dt && st != MSBNB_DTYPE_F32 && dt != MSBNB_DTYPE_F32) {
        /* f16 <-> bf16: through f32 in L1-sized chunks (exact: f32 holds both) */
        float tmp[1024];
        size_t ds = msbnb_dtype_size(dt), ss = msbnb_dtype_size(st);
        for (; i < n; i += 1024) {
            int64_t c = n - i < 1024 ? n - i : 1024;
            convert_avx512(tmp, MSBNB_DTYPE_F32, (const char *)src + i * ss, st, c);
            convert_avx512((char *)dst + i * ds, dt, tmp, MSBNB_DTYPE_F32, c);
        }
        return;
    }
    if (st == MSBNB_DTYPE_F32 && dt == MSBNB_DTYPE_BF16) {
        for (; i + 16 <= n; i += 16)
            _mm256_storeu_si256((__m256i *)((uint16_t *)dst + i), f32_to_bf16_16(_mm512_loadu_ps((const float *)src + i)));
    } else if (st == MSBNB_DTYPE_BF16 && dt == MSBNB_DTYPE_F32) {
        for (; i + 16 <= n; i += 16) {
            __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)src + i)));
            _mm512_storeu_ps((float *)dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
        }
    } else if (st == MSBNB_DTYPE_F32 && dt == MSBNB_DTYPE_F16) {
        for (; i + 16 <= n; i += 16)
            _mm256_storeu_si256((__m256i *)((uint16_t *)dst + i),
                                _mm512_cvtps_ph(_mm512_loadu_ps((const float *)src + i), _MM_FROUND_TO_NEAREST_INT));
    } else if (st == MSBNB_DTYPE_F16 && dt == MSBNB_DTYPE_F32) {
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps((float *)dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)src + i))));
    }
    if (i < n) {
        size_t ds = msbnb_dtype_size(dt), ss = msbnb_dtype_size(st);
        msbnb__convert_ref((char *)dst + i * ds, dt, (const char *)src + i * ss, st, n - i);
    }
}


/* Integer row quantization: the shared loops of rowq_impl.h compiled for this ISA. */
static void q8_row_avx512(int8_t *q, const float *x, int64_t n, float s, int divide, float z,
                        const uint8_t *mask) {
    msbnb__q8_row_impl(q, x, n, s, divide, z, mask);
}
static void q4_int_codes_avx512(uint8_t *codes, const float *x, int64_t n, float id, float sub,
                              float add) {
    msbnb__q4_int_codes_impl(codes, x, n, id, sub, add);
}
static float absmax_avx512(const float *x, int64_t n) {
    const __m512 zero = _mm512_setzero_ps();
    __m512 m0 = zero, m1 = zero, bad = zero;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
        m0 = _mm512_max_ps(m0, _mm512_abs_ps(a));
        m1 = _mm512_max_ps(m1, _mm512_abs_ps(b));
        bad = _mm512_add_ps(bad, _mm512_add_ps(_mm512_mul_ps(a, zero), _mm512_mul_ps(b, zero)));
    }
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 a = _mm512_maskz_loadu_ps(k, x + i);
        m0 = _mm512_max_ps(m0, _mm512_abs_ps(a));
        bad = _mm512_add_ps(bad, _mm512_mul_ps(a, zero));
    }
    float m = _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
    float b = _mm512_reduce_add_ps(bad);
    return b == b ? m : NAN;
}
static void minmax_avx512(const float *x, int64_t n, float *mn, float *mx) {
    __m512 lo = _mm512_set1_ps(x[0]), hi = lo;
    int64_t i = 0;
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_mask_loadu_ps(lo, k, x + i); /* masked lanes repeat x[0] */
        lo = _mm512_min_ps(lo, v);
        v = _mm512_mask_loadu_ps(hi, k, x + i);
        hi = _mm512_max_ps(hi, v);
    }
    *mn = _mm512_reduce_min_ps(lo);
    *mx = _mm512_reduce_max_ps(hi);
}

const msbnb__kernel_table msbnb__kernels_avx512 = {
    .tier = MSBNB_CPU_AVX512,
    .q8_row = q8_row_avx512,
    .q4_int_codes = q4_int_codes_avx512,
    .absmax = absmax_avx512,
    .minmax = minmax_avx512,
    .convert = convert_avx512,
    .quant4_block = quant4_block_avx512,
    .dequant4_f32 = dequant4_f32_avx512,
    .quant8_block = quant8_block_avx512,
    .dequant8_f32 = dequant8_f32_avx512,
};
