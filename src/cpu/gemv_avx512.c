/* AVX-512 kernels of the linear layer (checked against gemv_ref.c by tests/test_linear.c).
 *
 * 4-bit formats (NF4, FP4, INT4) share one fused kernel. A 64-byte load holds 128 codes;
 * read as 16 dword lanes, lane j holds the codes of elements 8j..8j+7, and shifting the
 * lane right by 4s puts one of them in the low 4 bits, which is all _mm512_permutexvar_ps
 * looks at: so 8 shifts + 8 permutes through a 16-float LUT decode 128 weights, with no
 * widening. The activation is permuted once per call to the matching order
 * (x'[s][j] = x[8j + e(s)]), so the weight bytes are streamed exactly once and never
 * reordered. Per-block scales are applied per lane after the 8 products. */
#include "cpu/gemv.h"
#include "cpu/i16_impl.h"
#include "internal.h"
#include "quant/codebooks.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

/* Software prefetch of the weight streams into L2 (T1), not L1 (T0): on AMD Zen 4 (EPYC,
 * 2026-12-02) T0 prefetches hold L1 miss buffers that the demand loads need, and cold
 * (14336, 4096) NF4 at M = 1, 2 threads, went from 44-72 % to 82-87 % of the read bandwidth
 * with T1 or T2 (interleaved runs; a stand-alone loop: 22-23 against 26-28 GB/s). On the
 * Intel Xeon (model 207) T0 / T1 / T2 measured within the noise of each other. */
#ifndef MSBNB__PF_HINT
#define MSBNB__PF_HINT _MM_HINT_T1
#endif

/* element (within a lane's 8) whose nibble sits at bits 4s..4s+3 of the lane: byte s/2,
 * low nibble (odd element) for even s, high nibble (even element) for odd s */
static inline int lane_elem(int s) { return 2 * (s / 2) + ((s & 1) ? 0 : 1); }

/* Whether the 128-code kernel applies: rows start on a 128-element boundary and every
 * 128-chunk either lies in one scale unit or holds whole units of >= 8 elements. */
static int lut4_fast(const msbnb__wview *w) {
    if (w->k % 128) return 0;
    if (w->type == MSBNB_QTYPE_NF4 || w->type == MSBNB_QTYPE_FP4) return 1; /* block: 2^n >= 32 */
    if (w->type == MSBNB_QTYPE_INT4) {
        int64_t g = w->block;
        return g % 128 == 0 || (g >= 8 && 128 % g == 0);
    }
    return 0;
}

static void lut_of(const msbnb__wview *w, float lut[16]) {
    for (int i = 0; i < 16; i++)
        lut[i] = w->type == MSBNB_QTYPE_INT4 ? (w->symmetric ? (float)(i - 8) : (float)i) : w->code[i];
}

/* x'[(c*8 + s)*16 + j] = x[c*128 + 8j + e(s)]; xs[c*16 + j] = Σ_s of those (for mins). */
static void permute_x(float *xp, float *xs, const float *x, int64_t K) {
    for (int64_t c = 0; c < K / 128; c++) {
        const float *xc = x + c * 128;
        float *o = xp + c * 128;
        for (int s = 0; s < 8; s++)
            for (int j = 0; j < 16; j++) o[s * 16 + j] = xc[8 * j + lane_elem(s)];
        if (xs)
            for (int j = 0; j < 16; j++) {
                float t = 0;
                for (int s = 0; s < 8; s++) t += o[s * 16 + j];
                xs[c * 16 + j] = t;
            }
    }
}

/* Walks the scale units of a row chunk by chunk without a division per chunk: `idx` is
 * the unit of the current 128-chunk (its first unit when units are smaller). */
typedef struct {
    int64_t idx, cnt, cpu; /* cpu: chunks per unit (units >= 128), else 0 */
    int per;               /* units per chunk (units < 128) */
    __m512i lanes;         /* lane -> unit within the chunk */
    __mmask16 mk;
} units_t;

static inline units_t units_start(const msbnb__wview *w, int64_t r) {
    units_t u;
    const int64_t b = w->block;
    if (w->type == MSBNB_QTYPE_INT4) {
        u.idx = r * w->gpr; /* groups run along each row */
        u.cnt = 0;
    } else {
        const int64_t e = r * w->k; /* blocks run over the flattened tensor */
        u.idx = e / b;
        u.cnt = (e % b) / 128;
    }
    u.cpu = b >= 128 ? b / 128 : 0;
    u.per = b >= 128 ? 1 : (int)(128 / b);
    u.lanes = _mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                b >= 128 ? 0 : (unsigned)__builtin_ctz((unsigned)(b / 8)));
    u.mk = (__mmask16)((1u << u.per) - 1);
    return u;
}

static inline void units_next(units_t *u) {
    if (u->cpu) {
        if (++u->cnt == u->cpu) {
            u->cnt = 0;
            u->idx++;
        }
    } else {
        u->idx += u->per;
    }
}

/* Scale (or min) of each lane of the current chunk. */
static inline __m512 unit_vec(const units_t *u, const float *arr) {
    if (u->cpu) return _mm512_set1_ps(arr[u->idx]);
    return _mm512_permutexvar_ps(u->lanes, _mm512_maskz_loadu_ps(u->mk, arr + u->idx));
}

static inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

/* M rows of activation (compile-time constant after inlining), rows [r0, r1). */
static inline __attribute__((always_inline)) void lut4_rows(const msbnb__wview *w, float *y,
                                                             int64_t ldy, const float *xp,
                                                             const float *xs, int64_t r0,
                                                             int64_t r1, const int M,
                                                             const int has_min,
                                                             const float *lutf) {
    const int64_t K = w->k, nc = K / 128;
    const __m512 lut = _mm512_loadu_ps(lutf);
    for (int64_t r = r0; r < r1; r++) {
        __m512 acc[8], accm[8];
        for (int i = 0; i < M; i++) {
            acc[i] = _mm512_setzero_ps();
            accm[i] = _mm512_setzero_ps();
        }
        const uint8_t *p = w->packed + r * K / 2;
        units_t un = units_start(w, r);
        for (int64_t c = 0; c < nc; c++, units_next(&un)) {
            /* 32 lines ahead: decoding costs about as much time as streaming the bytes
             * from DRAM, so the loads should be in flight before they are needed */
            _mm_prefetch((const char *)(p + c * 64 + 2048), MSBNB__PF_HINT);
            __m512i v = _mm512_loadu_si512((const void *)(p + c * 64));
            __m512 S = unit_vec(&un, w->absmax);
            __m512 w0 = _mm512_permutexvar_ps(v, lut);
            __m512 w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut);
            __m512 w2 = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 8), lut);
            __m512 w3 = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 12), lut);
            __m512 w4 = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 16), lut);
            __m512 w5 = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 20), lut);
            __m512 w6 = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 24), lut);
            __m512 w7 = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 28), lut);
            for (int i = 0; i < M; i++) {
                const float *xc = xp + (int64_t)i * K + c * 128;
                __m512 ta = _mm512_mul_ps(w0, _mm512_loadu_ps(xc));
                __m512 tb = _mm512_mul_ps(w1, _mm512_loadu_ps(xc + 16));
                ta = _mm512_fmadd_ps(w2, _mm512_loadu_ps(xc + 32), ta);
                tb = _mm512_fmadd_ps(w3, _mm512_loadu_ps(xc + 48), tb);
                ta = _mm512_fmadd_ps(w4, _mm512_loadu_ps(xc + 64), ta);
                tb = _mm512_fmadd_ps(w5, _mm512_loadu_ps(xc + 80), tb);
                ta = _mm512_fmadd_ps(w6, _mm512_loadu_ps(xc + 96), ta);
                tb = _mm512_fmadd_ps(w7, _mm512_loadu_ps(xc + 112), tb);
                acc[i] = _mm512_fmadd_ps(_mm512_add_ps(ta, tb), S, acc[i]);
            }
            if (has_min) {
                __m512 Mn = unit_vec(&un, w->mins);
                for (int i = 0; i < M; i++)
                    accm[i] = _mm512_fmadd_ps(Mn, _mm512_loadu_ps(xs + (int64_t)i * (K / 8) + c * 16), accm[i]);
            }
        }
        for (int i = 0; i < M; i++) y[i * ldy + r] = hsum(_mm512_add_ps(acc[i], accm[i]));
    }
}

#define LUT4_CASE(MM)                                                                      \
    case MM:                                                                               \
        if (has_min) lut4_rows(w, y, ldy, xp, xs, r0, r1, MM, 1, lutf);                    \
        else lut4_rows(w, y, ldy, xp, xs, r0, r1, MM, 0, lutf);                            \
        break;

static void gemv_lut4(const msbnb__wview *w, float *y, int64_t ldy, const float *x, int64_t m,
                      int64_t r0, int64_t r1, float *scratch, int x_ready) {
    const int64_t K = w->k;
    const int has_min = w->type == MSBNB_QTYPE_INT4 && !w->symmetric;
    float *xp = scratch, *xs = scratch + m * K;
    float lutf[16];
    lut_of(w, lutf);
    if (!x_ready)
        for (int64_t i = 0; i < m; i++)
            permute_x(xp + i * K, has_min ? xs + i * (K / 8) : NULL, x + i * K, K);
    switch (m) {
        LUT4_CASE(1)
        LUT4_CASE(2)
        LUT4_CASE(3)
        LUT4_CASE(4)
        LUT4_CASE(5)
        LUT4_CASE(6)
        LUT4_CASE(7)
        LUT4_CASE(8)
    default: msbnb__gemv_ref(w, y, ldy, x, m, r0, r1, scratch, 0); break;
    }
}

/* ---------------------------------------------------------------- 4-bit x int16 activation
 *
 * The default small-m kernel (exact = 0), as gemv_avx2.c's gemv_i16 (15-bit codes, the
 * activation in 15-bit integers per 64 inputs, msbnb__i16_chunk; the same rounding, so the
 * same error bound) at 512 bits: 64 bytes = 128 codes per load, decoded into 4 x 32 int16,
 * multiplied by vpdpwssd (vpmaddwd + vpaddd without VNNI) so that int32 lane l sums 8
 * products of at most 16383² (< 2^31), one conversion per chunk and row. Two decodes:
 * - shuf: 4 vpshufb (low and high code bytes from 16-entry tables) + 4 unpacks + 3 masks.
 *   On the Intel Xeon (model 207) this is the faster one: there vpermw competes with the
 *   shifts and products for port 0 (4 vpermw + 4 vpsrlw 8 cycles, 4 vpshufb + 4 vpsrlw 4),
 *   and cold (14336, 4096) NF4 took 1.48-1.60 ms against 1.9-2.3 ms for the exact kernel.
 * - perm: 4 vpermw straight from the packed words, indexed by the word shifted by 0, 4, 8,
 *   12 (vpermw reads the index's low 5 bits; the 16 codes repeat in the table's two halves,
 *   so the bits above the nibble need no mask): 4 shuffles + 3 shifts per 128 codes instead
 *   of 8 + 3. On AMD Zen 4 (EPYC, 2026-12-02) the kernel loop is ~20 % faster this way
 *   (a hot micro-benchmark, 18-19 against 22-24 GB/s a core), so it is the default on AMD.
 * MSBNB_CPU_I16_DECODE=shuf|perm forces one. The activation is laid out to match the
 * decode once per call (i16z_elem). */
#ifndef I16Z_PF
#define I16Z_PF 2048 /* prefetch distance per weight stream, bytes */
#endif

/* Element (within the chunk) of position p of vector s. shuf: 128-bit lane L = p / 8 of
 * every vector holds elements 32 L .. 32 L + 31 (vpshufb and the unpacks stay in their
 * lane); s = 0, 1 the high nibbles (even elements) of bytes 16 L + i and 16 L + 8 + i,
 * s = 2, 3 the low nibbles. perm: word p of the chunk holds elements 4p .. 4p + 3 (byte 2p
 * = elements 4p (high nibble, bitsandbytes' order) and 4p + 1), and vector s takes the
 * nibble at bit 4s: elements 4p + 1, 4p, 4p + 3, 4p + 2. int32 lane l (words 2l, 2l + 1)
 * covers elements 8l .. 8l + 7 (perm) or 32 (l / 4) + 4 (l % 4) + {0..3, 16..19} (shuf):
 * either way within one 32-element group, so within one scale unit (i16z_units). */
static inline int i16z_elem(int perm, int s, int p) {
    if (perm) return 4 * p + (s ^ 1);
    const int L = p / 8, i = p % 8;
    return 32 * L + 16 * (s & 1) + 2 * i + (s >> 1);
}

/* perm: the 128 codes as 4 x 32 int16 in the layout of i16z_elem; tw: the 16 codes as
 * words, twice. */
static inline __attribute__((always_inline)) void i16z_codes_perm(__m512i cv[4], __m512i v, __m512i tw) {
    cv[0] = _mm512_permutexvar_epi16(v, tw);
    cv[1] = _mm512_permutexvar_epi16(_mm512_srli_epi16(v, 4), tw);
    cv[2] = _mm512_permutexvar_epi16(_mm512_srli_epi16(v, 8), tw);
    cv[3] = _mm512_permutexvar_epi16(_mm512_srli_epi16(v, 12), tw);
}

/* shuf: the 128 codes of a 64-byte chunk as 4 x 32 int16 in the layout of i16z_elem: the low and
 * high bytes of each code from a 16-entry vpshufb table each, interleaved into words. */
static inline __attribute__((always_inline)) void i16z_codes(__m512i cv[4], __m512i v, __m512i tlo, __m512i thi) {
    const __m512i m4 = _mm512_set1_epi8(15);
    const __m512i hn = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4), ln = _mm512_and_si512(v, m4);
    const __m512i a = _mm512_shuffle_epi8(tlo, hn), b = _mm512_shuffle_epi8(thi, hn);
    const __m512i e = _mm512_shuffle_epi8(tlo, ln), f = _mm512_shuffle_epi8(thi, ln);
    cv[0] = _mm512_unpacklo_epi8(a, b);
    cv[1] = _mm512_unpackhi_epi8(a, b);
    cv[2] = _mm512_unpacklo_epi8(e, f);
    cv[3] = _mm512_unpackhi_epi8(e, f);
}

/* Per chunk c of a row: its first unit u0[c] (from the row's first), how many it spans
 * nu[c], and lane -> unit - u0[c] in lix[16 c ..]. */
static void i16z_units(const msbnb__wview *w, int32_t *u0, int32_t *nu, int32_t *lix, int need_lix) {
    /* incrementally, no division: this runs in every call */
    const int64_t nc = w->k / 128, b = w->block;
    int64_t first = 0, fstart = 0; /* unit of the chunk's first element, and where it starts */
    for (int64_t c = 0; c < nc; c++) {
        while (fstart + b <= 128 * c) fstart += b, first++;
        int64_t u = first, ustart = fstart;
        if (need_lix)
            for (int l = 0; l < 16; l++) {
                while (ustart + b <= 128 * c + 8 * l) ustart += b, u++;
                lix[16 * c + l] = (int32_t)(u - first);
            }
        while (ustart + b <= 128 * c + 127) ustart += b, u++;
        u0[c] = (int32_t)first;
        nu[c] = (int32_t)(u - first + 1);
    }
}

/* msbnb__i16_chunk at 512 bits, the 64 codes as words in z[0] (elements 0..31) and z[1]:
 * the same exact operations (|x| max, one f32 division, products rounded by cvtps2dq to
 * nearest even), so the same codes and step bit for bit, only without the int32 copy. */
static inline float i16z_chunk64(__m512i z[2], const float *x, float cscale) {
    __m512 v[4], mx = _mm512_setzero_ps();
    __mmask16 un = 0;
    for (int i = 0; i < 4; i++) {
        v[i] = _mm512_loadu_ps(x + 16 * i);
        mx = _mm512_max_ps(mx, _mm512_abs_ps(v[i]));
        un |= _mm512_cmp_ps_mask(v[i], v[i], _CMP_UNORD_Q);
    }
    const float amax = _mm512_reduce_max_ps(mx);
    if (un || amax > 3.4e38f || amax < 1e-30f) {
        z[0] = z[1] = _mm512_setzero_si512();
        return amax < 1e-30f && !un ? 0.0f : NAN;
    }
    const __m512 inv = _mm512_set1_ps((float)MSBNB__I16_ONE / amax);
    for (int t = 0; t < 2; t++) {
        const __m256i lo = _mm512_cvtepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(v[2 * t], inv)));
        const __m256i up = _mm512_cvtepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(v[2 * t + 1], inv)));
        z[t] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), up, 1);
    }
    return amax / (float)MSBNB__I16_ONE * cscale;
}

/* The word permutation of the decode's layout: idx[32 s + p] = i16z_elem(perm, s, p). */
static void i16z_layout(uint16_t idx[128], int perm) {
    for (int sv = 0; sv < 4; sv++)
        for (int p = 0; p < 32; p++) idx[32 * sv + p] = (uint16_t)i16z_elem(perm, sv, p);
}

/* One activation row: q [K] int16 (layout idx), d16 [16 per chunk] = the step of the lane's
 * 64-half, h16 [16 per chunk] = Σ x over the lane's 8 elements (INT4 mins). The
 * rounding is msbnb__i16_chunk's (every tier alike, i16z_chunk64); the reordering two
 * vpermt2w and a blend per output vector. */
static void i16z_prep(int16_t *q, float *d16, float *h16, const float *x, int64_t K, float cscale,
                      const uint16_t idx[128]) {
    __m512i ix[4];
    __mmask32 hi[4];
    for (int sv = 0; sv < 4; sv++) {
        const __m512i v = _mm512_loadu_si512((const void *)(idx + 32 * sv));
        hi[sv] = _mm512_cmpge_epu16_mask(v, _mm512_set1_epi16(64));
        ix[sv] = _mm512_and_si512(v, _mm512_set1_epi16(63));
    }
    for (int64_t c = 0; c < K / 128; c++) {
        const float *xc = x + c * 128;
        __m512i z[4]; /* the 128 codes as words, in order */
        const float d0 = i16z_chunk64(z, xc, cscale), d1 = i16z_chunk64(z + 2, xc + 64, cscale);
        for (int sv = 0; sv < 4; sv++) {
            const __m512i a = _mm512_permutex2var_epi16(z[0], ix[sv], z[1]);
            const __m512i e = _mm512_permutex2var_epi16(z[2], ix[sv], z[3]);
            _mm512_storeu_si512((void *)(q + c * 128 + sv * 32), _mm512_mask_blend_epi16(hi[sv], a, e));
        }
        _mm512_storeu_ps(d16 + c * 16, _mm512_mask_mov_ps(_mm512_set1_ps(d0), (__mmask16)0xff00, _mm512_set1_ps(d1)));
        if (h16) /* int32 lane l sums words 2l, 2l + 1 of the four vectors */
            for (int l = 0; l < 16; l++) {
                float t = 0;
                for (int sv = 0; sv < 4; sv++) t += xc[idx[32 * sv + 2 * l]] + xc[idx[32 * sv + 2 * l + 1]];
                h16[c * 16 + l] = t;
            }
    }
}

/* Σ of one chunk's 128 products, per int32 lane (lane i: elements 8i .. 8i + 7). */
static inline __attribute__((always_inline, target("avx512vnni"))) __m512i
i16z_dot_vnni(const __m512i c[4], const int16_t *xq) {
    __m512i t = _mm512_madd_epi16(c[0], _mm512_loadu_si512((const void *)xq));
    t = _mm512_dpwssd_epi32(t, c[1], _mm512_loadu_si512((const void *)(xq + 32)));
    t = _mm512_dpwssd_epi32(t, c[2], _mm512_loadu_si512((const void *)(xq + 64)));
    return _mm512_dpwssd_epi32(t, c[3], _mm512_loadu_si512((const void *)(xq + 96)));
}
static inline __attribute__((always_inline)) __m512i i16z_dot_madd(const __m512i c[4], const int16_t *xq) {
    const __m512i a = _mm512_madd_epi16(c[0], _mm512_loadu_si512((const void *)xq));
    const __m512i b = _mm512_madd_epi16(c[1], _mm512_loadu_si512((const void *)(xq + 32)));
    const __m512i e = _mm512_madd_epi16(c[2], _mm512_loadu_si512((const void *)(xq + 64)));
    const __m512i f = _mm512_madd_epi16(c[3], _mm512_loadu_si512((const void *)(xq + 96)));
    return _mm512_add_epi32(_mm512_add_epi32(a, b), _mm512_add_epi32(e, f));
}

/* The per-lane value of a per-unit array (scales, mins) for chunk c of a row whose units
 * start at base. */
static inline __m512 i16z_lanes(const float *base, const int32_t *u0, const int32_t *nu, const int32_t *lix,
                                int64_t c, const int one) {
    if (one == 1) return _mm512_set1_ps(base[u0[c]]);
    if (one == 2) /* units of 64: two broadcast loads and a blend, no shuffle */
        return _mm512_mask_mov_ps(_mm512_set1_ps(base[2 * c]), (__mmask16)0xff00, _mm512_set1_ps(base[2 * c + 1]));
    return _mm512_permutexvar_ps(_mm512_loadu_si512((const void *)(lix + 16 * c)),
                                 _mm512_maskz_loadu_ps((__mmask16)((1u << nu[c]) - 1), base + u0[c]));
}

/* Double quant: the scale lanes from the 8-bit absmax codes (unit u of the weight is the
 * chunk's first; ONE as above, 1 or 2), decoded as msbnb_double_dequant_absmax does (a
 * product then a sum, never fused: C11 contracts nothing), so bit for bit the f32 absmax.
 * The kernel then reads 8 bits of scale a block, not 32: with 64-weight blocks 4.13 bits
 * a weight instead of 4.5, the format's own size. */
static inline __m512 i16z_lanes_dq(const msbnb__wview *w, int64_t u, const int ONE) {
    const float a0 = msbnb__dynamic_map[w->qabsmax[u]] * w->nested[u / 256] + w->dq_offset;
    if (ONE == 1) return _mm512_set1_ps(a0);
    const float a1 = msbnb__dynamic_map[w->qabsmax[u + 1]] * w->nested[(u + 1) / 256] + w->dq_offset;
    return _mm512_mask_mov_ps(_mm512_set1_ps(a0), (__mmask16)0xff00, _mm512_set1_ps(a1));
}

/* Rows [r0, r1), R at a time (R weight streams), against M prepared activation rows. ONE:
 * 1 every chunk in one unit (units of >= 128), 2 units of 64, 0 any. */
static inline __attribute__((always_inline, target("avx512vnni"))) void
i16z_rows(const msbnb__wview *w, float *y, int64_t ldy, const int16_t *xq, const float *xd, const float *xh,
          const int32_t *u0, const int32_t *nu, const int32_t *lix, int64_t r0, int64_t r1, const int M,
          const int R, const int has_min, const int ONE, const int VNNI, const int PERM, const int DQ, __m512i tlo,
          __m512i thi, __m512i tw) {
    const int64_t K = w->k, nc = K / 128;
    const int int4 = w->type == MSBNB_QTYPE_INT4;
    const int64_t upr = int4 ? w->gpr : K / w->block;
    const int64_t rs = K / 2; /* bytes a row */
    for (int64_t r = r0; r + R <= r1; r += R) {
        __m512 acc[8 * 4], accm[8 * 4];
        /* one base pointer a stream group and the row stride (not a pointer per row: fewer
         * live registers, no spills in the loop) */
        const uint8_t *p0 = w->packed + r * rs;
        const float *s0 = w->absmax + r * upr, *m0 = has_min ? w->mins + r * upr : NULL;
        for (int i = 0; i < M * R; i++) acc[i] = accm[i] = _mm512_setzero_ps();
        for (int64_t c = 0; c < nc; c++) {
            const uint8_t *pc = p0 + c * 64;
            /* near a row's end, prefetch the next R rows instead */
            const int64_t pfo = c * 64 + I16Z_PF < rs ? I16Z_PF : I16Z_PF + (R - 1) * rs;
            for (int j = 0; j < R; j++) {
                _mm_prefetch((const char *)(pc + j * rs + pfo), MSBNB__PF_HINT);
                const __m512i v = _mm512_loadu_si512((const void *)(pc + j * rs));
                __m512i cv[4];
                if (PERM) i16z_codes_perm(cv, v, tw);
                else i16z_codes(cv, v, tlo, thi);
                const __m512 S = DQ ? i16z_lanes_dq(w, (r + j) * upr + (ONE == 2 ? 2 * c : u0[c]), ONE)
                                    : i16z_lanes(s0 + j * upr, u0, nu, lix, c, ONE);
                for (int i = 0; i < M; i++) {
                    const int16_t *xc = xq + i * K + c * 128;
                    const __m512i t = VNNI ? i16z_dot_vnni(cv, xc) : i16z_dot_madd(cv, xc);
                    acc[i * R + j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t),
                                                     _mm512_mul_ps(S, _mm512_loadu_ps(xd + (i * nc + c) * 16)),
                                                     acc[i * R + j]);
                }
                if (has_min) {
                    const __m512 Mn = i16z_lanes(m0 + j * upr, u0, nu, lix, c, ONE);
                    for (int i = 0; i < M; i++)
                        accm[i * R + j] = _mm512_fmadd_ps(Mn, _mm512_loadu_ps(xh + (i * nc + c) * 16), accm[i * R + j]);
                }
            }
        }
        for (int j = 0; j < R; j++)
            for (int i = 0; i < M; i++) y[i * ldy + r + j] = hsum(_mm512_add_ps(acc[i * R + j], accm[i * R + j]));
    }
}

#define I16Z_ONE(MM, RR, RA, RB, VN, PM)                                                                    \
    do {                                                                                                    \
        if (has_min) i16z_rows(w, y, ldy, xq, xd, xh, u0, nu, lix, RA, RB, MM, RR, 1, 0, VN, PM, 0, tlo, thi, tw); \
        else if (one == 1 && dq) i16z_rows(w, y, ldy, xq, xd, xh, u0, nu, lix, RA, RB, MM, RR, 0, 1, VN, PM, 1, tlo, thi, tw); \
        else if (one == 1) i16z_rows(w, y, ldy, xq, xd, xh, u0, nu, lix, RA, RB, MM, RR, 0, 1, VN, PM, 0, tlo, thi, tw); \
        else if (one == 2 && dq) i16z_rows(w, y, ldy, xq, xd, xh, u0, nu, lix, RA, RB, MM, RR, 0, 2, VN, PM, 1, tlo, thi, tw); \
        else if (one == 2) i16z_rows(w, y, ldy, xq, xd, xh, u0, nu, lix, RA, RB, MM, RR, 0, 2, VN, PM, 0, tlo, thi, tw); \
        else i16z_rows(w, y, ldy, xq, xd, xh, u0, nu, lix, RA, RB, MM, RR, 0, 0, VN, PM, 0, tlo, thi, tw);        \
    } while (0)
/* (perm without VNNI: no CPU is known where it would pay, so it is not built.) */
#define I16Z_CALL(MM, RR, RA, RB)                                                                        \
    do {                                                                                                 \
        if (vnni && perm) I16Z_ONE(MM, RR, RA, RB, 1, 1);                                                \
        else if (vnni) I16Z_ONE(MM, RR, RA, RB, 1, 0);                                                   \
        else I16Z_ONE(MM, RR, RA, RB, 0, 0);                                                             \
    } while (0)
#define I16Z_CASE(MM)                                                                                    \
    case MM: I16Z_CALL(MM, 1, r0, r1); break;

/* x_ready: this thread's scratch already holds the prepared rows. */
__attribute__((target("avx512vnni"))) static void gemv_i16z(const msbnb__wview *w, float *y, int64_t ldy,
                                                            const float *x, int64_t m, int64_t r0, int64_t r1,
                                                            float *scratch, int x_ready) {
    const int64_t K = w->k, nc = K / 128;
    const int int4 = w->type == MSBNB_QTYPE_INT4;
    const int has_min = int4 && !w->symmetric, one = w->block % 128 == 0 ? 1 : w->block == 64 ? 2 : 0;
    const int vnni = msbnb__cpu()->avx512vnni, perm = vnni && w->i16_perm;
    const int dq = w->qabsmax != NULL && !int4; /* scales from the 8-bit codes */
    int16_t *xq = (int16_t *)scratch;    /* m K int16 */
    float *xd = scratch + (m * K) / 2;   /* m nc 16 */
    float *xh = xd + m * nc * 16;        /* m nc 16 */
    int32_t *u0 = (int32_t *)(xh + m * nc * 16), *nu = u0 + nc, *lix = nu + nc; /* nc, nc, 16 nc */
    if (!x_ready) {
        uint16_t idx[128];
        i16z_layout(idx, perm);
        i16z_units(w, u0, nu, lix, has_min || one == 0);
        for (int64_t i = 0; i < m; i++)
            i16z_prep(xq + i * K, xd + i * nc * 16, has_min ? xh + i * nc * 16 : NULL, x + i * K, K,
                      int4 ? 1.0f : 1.0f / (float)MSBNB__I16_ONE, idx);
    }
    uint8_t lo[16], hi[16];
    msbnb__i16_code_bytes(w, lo, hi);
    const __m512i tlo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)lo));
    const __m512i thi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)hi));
    uint16_t tw16[32];
    for (int i = 0; i < 32; i++) tw16[i] = (uint16_t)(lo[i & 15] | hi[i & 15] << 8);
    const __m512i tw = _mm512_loadu_si512((const void *)tw16);
    if (m == 1) {
        const int64_t r4 = r0 + (r1 - r0) / 4 * 4;
        I16Z_CALL(1, 4, r0, r4);
        I16Z_CALL(1, 1, r4, r1);
        return;
    }
    switch (m) {
        I16Z_CASE(2)
        I16Z_CASE(3)
        I16Z_CASE(4)
        I16Z_CASE(5)
        I16Z_CASE(6)
        I16Z_CASE(7)
        I16Z_CASE(8)
    default: msbnb__gemv_ref(w, y, ldy, x, m, r0, r1, scratch, 0); break;
    }
}

/* ---------------------------------------------------------------- 16-bit and int8 floats */

/* Loads 16 weights of row r at column k as f32 (bf16 / f16 / asymmetric int8 codes). */
static inline __m512 load16(const msbnb__wview *w, int64_t off, __mmask16 mk) {
    switch (w->type) {
    case MSBNB_QTYPE_BF16:
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, w->u16 + off)), 16));
    case MSBNB_QTYPE_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, w->u16 + off));
    case MSBNB_QTYPE_F32: return _mm512_maskz_loadu_ps(mk, w->f32 + off);
    default: /* INT8 codes */
        return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mk, w->q8 + off)));
    }
}

/* y[i, r] = Σ_k x[i, k] w[r, k]; int8 asymmetric: s_r Σ_k (q - z_r) x (q - z exact). */
static inline __attribute__((always_inline)) void dense_rows(const msbnb__wview *w, float *y,
                                                              int64_t ldy, const float *x,
                                                              int64_t r0, int64_t r1, const int M) {
    const int64_t K = w->k;
    const int is8 = w->type == MSBNB_QTYPE_INT8;
    for (int64_t r = r0; r < r1; r++) {
        __m512 a0[8], a1[8];
        const __m512 z = _mm512_set1_ps(is8 ? w->rzero[r] : 0.0f);
        for (int i = 0; i < M; i++) a0[i] = a1[i] = _mm512_setzero_ps();
        int64_t k = 0;
        for (; k + 32 <= K; k += 32) {
            /* ahead of the stream, as in lut4_rows (bf16/f16: 64 bytes per step) */
            if (w->type != MSBNB_QTYPE_F32)
                _mm_prefetch((const char *)(is8 ? (const void *)(w->q8 + r * K + k)
                                                : (const void *)(w->u16 + r * K + k)) + 2048,
                             MSBNB__PF_HINT);
            __m512 wa = load16(w, r * K + k, 0xffff), wb = load16(w, r * K + k + 16, 0xffff);
            if (is8) {
                wa = _mm512_sub_ps(wa, z);
                wb = _mm512_sub_ps(wb, z);
            }
            for (int i = 0; i < M; i++) {
                a0[i] = _mm512_fmadd_ps(wa, _mm512_loadu_ps(x + i * K + k), a0[i]);
                a1[i] = _mm512_fmadd_ps(wb, _mm512_loadu_ps(x + i * K + k + 16), a1[i]);
            }
        }
        for (; k < K; k += 16) {
            __mmask16 mk = K - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (K - k)) - 1);
            __m512 wa = load16(w, r * K + k, mk);
            if (is8) wa = _mm512_sub_ps(wa, z);
            for (int i = 0; i < M; i++)
                a0[i] = _mm512_fmadd_ps(wa, _mm512_maskz_loadu_ps(mk, x + i * K + k), a0[i]);
        }
        for (int i = 0; i < M; i++) {
            float s = hsum(_mm512_add_ps(a0[i], a1[i]));
            y[i * ldy + r] = is8 ? w->rscale[r] * s : s;
        }
    }
}

#define DENSE_CASE(MM)                                                                     \
    case MM: dense_rows(w, y, ldy, x, r0, r1, MM); break;

static void gemv_dense(const msbnb__wview *w, float *y, int64_t ldy, const float *x, int64_t m,
                       int64_t r0, int64_t r1) {
    switch (m) {
        DENSE_CASE(1)
        DENSE_CASE(2)
        DENSE_CASE(3)
        DENSE_CASE(4)
        DENSE_CASE(5)
        DENSE_CASE(6)
        DENSE_CASE(7)
        DENSE_CASE(8)
    default: break;
    }
}

static void gemv_avx512(const msbnb__wview *w, float *y, int64_t ldy, const float *x, int64_t m,
                        int64_t r0, int64_t r1, float *scratch, int x_ready) {
    if (m > 8) {
        msbnb__gemv_ref(w, y, ldy, x, m, r0, r1, scratch, 0);
        return;
    }
    switch (w->type) {
    case MSBNB_QTYPE_F32:
    case MSBNB_QTYPE_BF16:
    case MSBNB_QTYPE_F16: gemv_dense(w, y, ldy, x, m, r0, r1); return;
    case MSBNB_QTYPE_INT8:
        if (!w->symmetric) {
            gemv_dense(w, y, ldy, x, m, r0, r1);
            return;
        }
        break;
    case MSBNB_QTYPE_NF4:
    case MSBNB_QTYPE_FP4:
    case MSBNB_QTYPE_INT4:
        if (msbnb__i16_ok(w, 128)) { /* a chunk then spans at most 4 units */
            gemv_i16z(w, y, ldy, x, m, r0, r1, scratch, x_ready);
            return;
        }
        if (lut4_fast(w)) {
            gemv_lut4(w, y, ldy, x, m, r0, r1, scratch, x_ready);
            return;
        }
        break;
    default: break;
    }
    msbnb__gemv_ref(w, y, ldy, x, m, r0, r1, scratch, 0);
}

/* ---------------------------------------------------------------- int8 · int8 */

/* acc = Σ xq · q exactly. VNNI's vpdpbusd multiplies unsigned by signed bytes, so the
 * weight is biased to unsigned (q ^ 0x80 = q + 128) and 128 Σ xq subtracted afterwards.
 * Lanes are flushed to 64 bits every 2^16 columns (each lane gains <= 4·255·128 per step). */
static inline __attribute__((always_inline, target("avx512vnni"))) void
i8_vnni_rows(const msbnb__wview *w, int64_t *acc, int64_t lda, const int8_t *xq,
             const int64_t *xsum, int64_t r0, int64_t r1, const int M) {
    const int64_t K = w->k;
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    for (int64_t r = r0; r < r1; r++) {
        const int8_t *q = w->q8 + r * K;
        int64_t tot[8] = {0};
        for (int64_t k0 = 0; k0 < K; k0 += 65536) {
            int64_t k1 = K - k0 < 65536 ? K : k0 + 65536;
            __m512i a[8];
            for (int i = 0; i < M; i++) a[i] = _mm512_setzero_si512();
            for (int64_t k = k0; k < k1; k += 64) {
                _mm_prefetch((const char *)(q + k) + 2048, MSBNB__PF_HINT);
                __mmask64 mk = k1 - k >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (k1 - k)) - 1);
                __m512i wu = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mk, q + k), bias);
                for (int i = 0; i < M; i++)
                    a[i] = _mm512_dpbusd_epi32(a[i], wu, _mm512_maskz_loadu_epi8(mk, xq + i * K + k));
            }
            for (int i = 0; i < M; i++) tot[i] += _mm512_reduce_add_epi32(a[i]);
        }
        for (int i = 0; i < M; i++) acc[i * lda + r] = tot[i] - 128 * xsum[i];
    }
}

/* Σ q over n int8 codes, exactly: vpsadbw of the codes biased to unsigned (q ^ 0x80 =
 * q + 128) against zero sums 8 bytes into each 64-bit lane; 128 n comes off at the end.
 * This runs once per row range a thread takes (a scalar loop here showed up in profiles of
 * M = 1 calls). */
static int64_t i8_sum(const int8_t *q, int64_t n) {
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    __m512i s = _mm512_setzero_si512();
    for (int64_t k = 0; k < n; k += 64) {
        const __mmask64 mk = n - k >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (n - k)) - 1);
        const __m512i u = _mm512_maskz_mov_epi8(mk, _mm512_xor_si512(_mm512_maskz_loadu_epi8(mk, q + k), bias));
        s = _mm512_add_epi64(s, _mm512_sad_epu8(u, _mm512_setzero_si512()));
    }
    return _mm512_reduce_add_epi64(s) - 128 * n;
}

#define VNNI_CASE(MM)                                                                      \
    case MM: i8_vnni_rows(w, acc, lda, xq, xsum, r0, r1, MM); break;

__attribute__((target("avx512vnni"))) static void gemv_i8_vnni(const msbnb__wview *w,
                                                               int64_t *acc, int64_t lda,
                                                               const int8_t *xq, int64_t m,
                                                               int64_t r0, int64_t r1) {
    const int64_t K = w->k;
    int64_t xsum[8] = {0};
    for (int64_t i = 0; i < m; i++) xsum[i] = i8_sum(xq + i * K, K);
    switch (m) {
        VNNI_CASE(1)
        VNNI_CASE(2)
        VNNI_CASE(3)
        VNNI_CASE(4)
        VNNI_CASE(5)
        VNNI_CASE(6)
        VNNI_CASE(7)
        VNNI_CASE(8)
    default: break;
    }
}

/* Without VNNI: sign-extend to 16 bits and vpmaddwd (pairs summed into int32). */
static void gemv_i8_madd(const msbnb__wview *w, int64_t *acc, int64_t lda, const int8_t *xq,
                         int64_t m, int64_t r0, int64_t r1) {
    const int64_t K = w->k;
    for (int64_t r = r0; r < r1; r++) {
        const int8_t *q = w->q8 + r * K;
        for (int64_t i = 0; i < m; i++) {
            int64_t tot = 0;
            for (int64_t k0 = 0; k0 < K; k0 += 65536) {
                int64_t k1 = K - k0 < 65536 ? K : k0 + 65536;
                __m512i a = _mm512_setzero_si512();
                for (int64_t k = k0; k < k1; k += 32) {
                    __mmask32 mk = k1 - k >= 32 ? ~(__mmask32)0 : (((__mmask32)1 << (k1 - k)) - 1);
                    __m512i wv = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(mk, q + k));
                    __m512i xv = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(mk, xq + i * K + k));
                    a = _mm512_add_epi32(a, _mm512_madd_epi16(wv, xv));
                }
                tot += _mm512_reduce_add_epi32(a);
            }
            acc[i * lda + r] = tot;
        }
    }
}

static void gemv_i8_avx512(const msbnb__wview *w, int64_t *acc, int64_t lda, const int8_t *xq,
                           int64_t m, int64_t r0, int64_t r1) {
    if (m <= 8 && msbnb__cpu()->avx512vnni) gemv_i8_vnni(w, acc, lda, xq, m, r0, r1);
    else gemv_i8_madd(w, acc, lda, xq, m, r0, r1);
}

/* ---------------------------------------------------------------- dequantized panels */

/* 32 weights from 16 packed bytes in natural order, times scale (+ min). */
static inline void dq32(float *out, const uint8_t *p, __m512 lut, __m512 s, __m512 mn) {
    __m512i d = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
    __m512 hi = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 4), lut); /* elements 2j */
    __m512 lo = _mm512_permutexvar_ps(d, lut);                        /* elements 2j+1 */
    const __m512i i0 = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i i1 = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    _mm512_storeu_ps(out, _mm512_fmadd_ps(_mm512_permutex2var_ps(hi, i0, lo), s, mn));
    _mm512_storeu_ps(out + 16, _mm512_fmadd_ps(_mm512_permutex2var_ps(hi, i1, lo), s, mn));
}

static void dequant_tile_avx512(const msbnb__wview *w, float *out, int64_t ldo, int64_t r0,
                             int64_t r1, int64_t k0, int64_t k1, int raw) {
    const int64_t K = w->k;
    switch (w->type) {
    case MSBNB_QTYPE_NF4:
    case MSBNB_QTYPE_FP4:
    case MSBNB_QTYPE_INT4: {
        int ok = K % 32 == 0 && k0 % 32 == 0 && k1 % 32 == 0 &&
                 (w->type != MSBNB_QTYPE_INT4 || w->block % 32 == 0);
        if (!ok) break;
        float lutf[16];
        lut_of(w, lutf);
        const __m512 lut = _mm512_loadu_ps(lutf);
        const int has_min = w->type == MSBNB_QTYPE_INT4 && !w->symmetric;
        for (int64_t r = r0; r < r1; r++) {
            float *o = out + (r - r0) * ldo;
            const uint8_t *p = w->packed + r * K / 2;
            for (int64_t k = k0; k < k1; k += 32) {
                int64_t si = w->type == MSBNB_QTYPE_INT4 ? r * w->gpr + k / w->block
                                                         : (r * K + k) / w->block;
                __m512 mn = has_min ? _mm512_set1_ps(w->mins[si]) : _mm512_setzero_ps();
                dq32(o + (k - k0), p + k / 2, lut, _mm512_set1_ps(w->absmax[si]), mn);
            }
        }
        return;
    }
    case MSBNB_QTYPE_BF16:
    case MSBNB_QTYPE_F16:
    case MSBNB_QTYPE_INT8:
        for (int64_t r = r0; r < r1; r++) {
            float *o = out + (r - r0) * ldo;
            float s = 1.0f, z = 0.0f;
            if (w->type == MSBNB_QTYPE_INT8) {
                s = (w->symmetric && raw) ? 1.0f : w->rscale[r];
                z = w->symmetric ? 0.0f : w->rzero[r];
            }
            const __m512 vs = _mm512_set1_ps(s), vz = _mm512_set1_ps(z);
            for (int64_t k = k0; k < k1; k += 16) {
                __mmask16 mk = k1 - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (k1 - k)) - 1);
                __m512 v = load16(w, r * K + k, mk);
                if (w->type == MSBNB_QTYPE_INT8) v = _mm512_mul_ps(_mm512_sub_ps(v, vz), vs);
                _mm512_mask_storeu_ps(o + (k - k0), mk, v);
            }
        }
        return;
    default: break;
    }
    msbnb__dequant_tile_ref(w, out, ldo, r0, r1, k0, k1, raw);
}

const msbnb__gemv_table msbnb__gemv_avx512 = {MSBNB_CPU_AVX512, dequant_tile_avx512, gemv_avx512,
                                              gemv_i8_avx512};
