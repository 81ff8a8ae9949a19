/* AVX2 kernels of the linear layer (checked against gemv_ref.c by tests/test_linear.c).
 *
 * 4-bit formats (NF4, FP4, INT4): the AVX-512 scheme (gemv_avx512.c) at half width. A
 * 32-byte load holds 64 codes; as 8 dword lanes, lane j holds the codes of elements
 * 8j..8j+7, and a right shift by 4s brings one of them to the low bits. AVX2 has no
 * 16-entry float permute, so a code is decoded by two 8-entry permutes (vpermps reads the
 * low 3 bits) and a blend on the code's bit 3 (shifted into the sign bit, which is all
 * vblendvps reads). The activation is permuted once per call into the matching order, so
 * the weight is streamed once, never reordered.
 * Int8 · int8: vpmaddubsw on |q| and sign(q)·x, exact for activation codes in [-127, 127].
 * bf16: even / odd halves by a shift and a mask against a split activation; f16 /
 * asymmetric int8: widen to f32 and FMA. */
#include "cpu/gemv.h"
#include "cpu/i16_impl.h"
#include "internal.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

/* element (within a lane's 8) whose nibble sits at bits 4s..4s+3 of the lane: byte s/2,
 * low nibble (odd element) for even s, high nibble (even element) for odd s */
static inline int lane_elem(int s) { return 2 * (s / 2) + ((s & 1) ? 0 : 1); }

static void lut_of(const msbnb__wview *w, float lut[16]) {
    for (int i = 0; i < 16; i++)
        lut[i] = w->type == MSBNB_QTYPE_INT4 ? (w->symmetric ? (float)(i - 8) : (float)i) : w->code[i];
}

/* lut[code & 15] per lane; `sel` holds bit 3 of each lane's code in its sign bit. */
static inline __m256 lut16(__m256 lo, __m256 hi, __m256i idx, __m256i sel) {
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx),
                            _mm256_castsi256_ps(sel));
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline int64_t hsum8_i32(__m256i v) {
    int32_t t[8];
    _mm256_storeu_si256((__m256i *)t, v);
    int64_t s = 0;
    for (int i = 0; i < 8; i++) s += t[i];
    return s;
}

/* ---------------------------------------------------------------- fused 4-bit gemv */

/* Whether the 64-code kernel applies: rows start on a 64-element boundary and each
 * 64-chunk lies in one scale unit or holds whole units of >= 8 elements. */
static int lut4_fast(const msbnb__wview *w) {
    if (w->k % 64) return 0;
    if (w->type == MSBNB_QTYPE_NF4 || w->type == MSBNB_QTYPE_FP4) return 1; /* block: 2^n >= 32 */
    if (w->type == MSBNB_QTYPE_INT4) {
        int64_t g = w->block;
        return g % 64 == 0 || (g >= 8 && 64 % g == 0);
    }
    return 0;
}

/* x'[(c*8 + s)*8 + j] = x[c*64 + 8j + e(s)]; xs[c*8 + j] = Σ_s of those (for mins). */
static void permute_x(float *xp, float *xs, const float *x, int64_t K) {
    for (int64_t c = 0; c < K / 64; c++) {
        const float *xc = x + c * 64;
        float *o = xp + c * 64;
        for (int s = 0; s < 8; s++)
            for (int j = 0; j < 8; j++) o[s * 8 + j] = xc[8 * j + lane_elem(s)];
        if (xs)
            for (int j = 0; j < 8; j++) {
                float t = 0;
                for (int s = 0; s < 8; s++) t += o[s * 8 + j];
                xs[c * 8 + j] = t;
            }
    }
}

/* Walks the scale units of a row chunk by chunk without a division per chunk: `idx` is
 * the unit of the current 64-chunk (its first unit when units are smaller). */
typedef struct {
    int64_t idx, cnt, cpu; /* cpu: chunks per unit (units >= 64), else 0 */
    int per;               /* units per chunk (units < 64) */
    __m256i lanes;         /* lane -> unit within the chunk */
    __m256i mk;
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
        u.cnt = (e % b) / 64;
    }
    u.cpu = b >= 64 ? b / 64 : 0;
    u.per = b >= 64 ? 1 : (int)(64 / b);
    u.lanes = _mm256_srli_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                b >= 64 ? 0 : __builtin_ctz((unsigned)(b / 8)));
    u.mk = _mm256_cmpgt_epi32(_mm256_set1_epi32(u.per), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
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
static inline __m256 unit_vec(const units_t *u, const float *arr) {
    if (u->cpu) return _mm256_set1_ps(arr[u->idx]);
    return _mm256_permutevar8x32_ps(_mm256_maskload_ps(arr + u->idx, u->mk), u->lanes);
}

/* acc[i] += S · Σ_s wv[s] x'[i][c][s] and (INT4 with mins) accm[i] += min · Σ x: the 64
 * weights of chunk c decoded into 8 vectors, against the permuted activation rows. */
static inline __attribute__((always_inline)) void chunk_fma(const __m256 wv[8], const float *xp,
                                                             const float *xs, int64_t K, int64_t c,
                                                             __m256 S, const units_t *un,
                                                             const msbnb__wview *w, const int M,
                                                             const int has_min, __m256 *acc,
                                                             __m256 *accm) {
    for (int i = 0; i < M; i++) {
        const float *xc = xp + (int64_t)i * K + c * 64;
        __m256 ta = _mm256_mul_ps(wv[0], _mm256_loadu_ps(xc));
        __m256 tb = _mm256_mul_ps(wv[1], _mm256_loadu_ps(xc + 8));
        ta = _mm256_fmadd_ps(wv[2], _mm256_loadu_ps(xc + 16), ta);
        tb = _mm256_fmadd_ps(wv[3], _mm256_loadu_ps(xc + 24), tb);
        ta = _mm256_fmadd_ps(wv[4], _mm256_loadu_ps(xc + 32), ta);
        tb = _mm256_fmadd_ps(wv[5], _mm256_loadu_ps(xc + 40), tb);
        ta = _mm256_fmadd_ps(wv[6], _mm256_loadu_ps(xc + 48), ta);
        tb = _mm256_fmadd_ps(wv[7], _mm256_loadu_ps(xc + 56), tb);
        acc[i] = _mm256_fmadd_ps(_mm256_add_ps(ta, tb), S, acc[i]);
    }
    if (has_min) {
        const __m256 Mn = unit_vec(un, w->mins);
        for (int i = 0; i < M; i++)
            accm[i] = _mm256_fmadd_ps(Mn, _mm256_loadu_ps(xs + (int64_t)i * (K / 8) + c * 8), accm[i]);
    }
}

static inline __attribute__((always_inline)) void lut4_rows(const msbnb__wview *w, float *y,
                                                             int64_t ldy, const float *xp,
                                                             const float *xs, int64_t r0,
                                                             int64_t r1, const int M,
                                                             const int has_min,
                                                             const float *lutf) {
    const int64_t K = w->k, nc = K / 64;
    const __m256 lo = _mm256_loadu_ps(lutf), hi = _mm256_loadu_ps(lutf + 8);
    for (int64_t r = r0; r < r1; r++) {
        __m256 acc[8], accm[8];
        for (int i = 0; i < M; i++) acc[i] = accm[i] = _mm256_setzero_ps();
        const uint8_t *p = w->packed + r * K / 2;
        units_t un = units_start(w, r);
        for (int64_t c = 0; c < nc; c++, units_next(&un)) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(p + c * 32));
            const __m256 S = unit_vec(&un, w->absmax);
            __m256 wv[8];
            wv[0] = lut16(lo, hi, v, _mm256_slli_epi32(v, 28));
            wv[1] = lut16(lo, hi, _mm256_srli_epi32(v, 4), _mm256_slli_epi32(v, 24));
            wv[2] = lut16(lo, hi, _mm256_srli_epi32(v, 8), _mm256_slli_epi32(v, 20));
            wv[3] = lut16(lo, hi, _mm256_srli_epi32(v, 12), _mm256_slli_epi32(v, 16));
            wv[4] = lut16(lo, hi, _mm256_srli_epi32(v, 16), _mm256_slli_epi32(v, 12));
            wv[5] = lut16(lo, hi, _mm256_srli_epi32(v, 20), _mm256_slli_epi32(v, 8));
            wv[6] = lut16(lo, hi, _mm256_srli_epi32(v, 24), _mm256_slli_epi32(v, 4));
            wv[7] = lut16(lo, hi, _mm256_srli_epi32(v, 28), v);
            chunk_fma(wv, xp, xs, K, c, S, &un, w, M, has_min, acc, accm);
        }
        for (int i = 0; i < M; i++) y[i * ldy + r] = hsum8(_mm256_add_ps(acc[i], accm[i]));
    }
}

/* ---------------------------------------------------------------- byte-table 4-bit decode
 *
 * The lane-crossing vpermps of the kernel above is slow on AMD Zen (measured on a Zen 3
 * EPYC: ~3 GB/s of packed weight per core, a quarter of the memory stream). Here every
 * lookup stays inside a 128-bit lane: the 16-entry f32 table is split into its 4 bytes,
 * vpshufb (a 16-entry byte table, 4-bit index) looks up each byte of 32 codes at once, and
 * two rounds of in-lane unpacks reassemble the bytes into 32 exact f32 weights (12 in-lane
 * shuffles per 32 weights, no lane crossing). The unpacks leave the weights of each
 * 128-bit lane in the order (byte b, code hi/lo) -> vector 4 L + q, position 4 (b / 16) +
 * b % 4 with q = (b % 16) / 4; the activation is permuted to match once per call. Each
 * 128-bit lane holds 32 consecutive weights, so scale units must be >= 32 elements. */

/* x'[c*64 + s*8 + j] = x[c*64 + 2b + L], s = 4L + q, b = 16 (j / 4) + 4q + j % 4. */
static void permute_x_b(float *xp, float *xs, const float *x, int64_t K) {
    for (int64_t c = 0; c < K / 64; c++) {
        const float *xc = x + c * 64;
        float *o = xp + c * 64;
        for (int sv = 0; sv < 8; sv++)
            for (int j = 0; j < 8; j++) {
                const int L = sv >> 2, q = sv & 3, b = 16 * (j >> 2) + 4 * q + (j & 3);
                o[sv * 8 + j] = xc[2 * b + L];
            }
        if (xs)
            for (int j = 0; j < 8; j++) {
                float t = 0;
                for (int sv = 0; sv < 8; sv++) t += o[sv * 8 + j];
                xs[c * 8 + j] = t;
            }
    }
}

/* The 32 weights of the codes in the bytes of idx (values 0..15) as 4 vectors of f32. */
static inline void decode32(__m256 out[4], __m256i idx, const __m256i tb[4]) {
    const __m256i t0 = _mm256_shuffle_epi8(tb[0], idx), t1 = _mm256_shuffle_epi8(tb[1], idx);
    const __m256i t2 = _mm256_shuffle_epi8(tb[2], idx), t3 = _mm256_shuffle_epi8(tb[3], idx);
    const __m256i l01 = _mm256_unpacklo_epi8(t0, t1), h01 = _mm256_unpackhi_epi8(t0, t1);
    const __m256i l23 = _mm256_unpacklo_epi8(t2, t3), h23 = _mm256_unpackhi_epi8(t2, t3);
    out[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(l01, l23));
    out[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(l01, l23));
    out[2] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(h01, h23));
    out[3] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(h01, h23));
}

static inline __attribute__((always_inline)) void lut4b_rows(const msbnb__wview *w, float *y,
                                                              int64_t ldy, const float *xp,
                                                              const float *xs, int64_t r0,
                                                              int64_t r1, const int M,
                                                              const int has_min,
                                                              const float *lutf) {
    const int64_t K = w->k, nc = K / 64;
    __m256i tb[4];
    {
        uint8_t bytes[4][16];
        for (int i = 0; i < 16; i++) {
            uint32_t u;
            memcpy(&u, &lutf[i], 4);
            for (int j = 0; j < 4; j++) bytes[j][i] = (uint8_t)(u >> (8 * j));
        }
        for (int j = 0; j < 4; j++)
            tb[j] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)bytes[j]));
    }
    const __m256i m4 = _mm256_set1_epi8(15);
    for (int64_t r = r0; r < r1; r++) {
        __m256 acc[8], accm[8];
        for (int i = 0; i < M; i++) acc[i] = accm[i] = _mm256_setzero_ps();
        const uint8_t *p = w->packed + r * K / 2;
        units_t un = units_start(w, r);
        for (int64_t c = 0; c < nc; c++, units_next(&un)) {
            /* ~100 ns of DRAM latency ahead at ~8 GB/s per core */
            _mm_prefetch((const char *)(p + c * 32 + 1024), _MM_HINT_T0);
            const __m256i v = _mm256_loadu_si256((const __m256i *)(p + c * 32));
            const __m256 S = unit_vec(&un, w->absmax);
            __m256 wv[8];
            decode32(wv, _mm256_and_si256(_mm256_srli_epi16(v, 4), m4), tb); /* elements 2b */
            decode32(wv + 4, _mm256_and_si256(v, m4), tb);                  /* elements 2b + 1 */
            chunk_fma(wv, xp, xs, K, c, S, &un, w, M, has_min, acc, accm);
        }
        for (int i = 0; i < M; i++) y[i * ldy + r] = hsum8(_mm256_add_ps(acc[i], accm[i]));
    }
}

/* Scale units of at least 32 elements (one per 128-bit lane of a 64-chunk). */
static int lut4b_ok(const msbnb__wview *w) {
    return lut4_fast(w) && (w->type != MSBNB_QTYPE_INT4 || w->block >= 32);
}

#define LUT4_CASE(MM)                                                                      \
    case MM:                                                                               \
        if (has_min) lut4_rows(w, y, ldy, xp, xs, r0, r1, MM, 1, lutf);                    \
        else lut4_rows(w, y, ldy, xp, xs, r0, r1, MM, 0, lutf);                            \
        break;

#define LUT4B_CASE(MM)                                                                     \
    case MM:                                                                               \
        if (has_min) lut4b_rows(w, y, ldy, xp, xs, r0, r1, MM, 1, lutf);                   \
        else lut4b_rows(w, y, ldy, xp, xs, r0, r1, MM, 0, lutf);                           \
        break;

static void gemv_lut4(const msbnb__wview *w, float *y, int64_t ldy, const float *x, int64_t m,
                      int64_t r0, int64_t r1, float *scratch, int x_ready) {
    const int64_t K = w->k;
    const int has_min = w->type == MSBNB_QTYPE_INT4 && !w->symmetric;
    float *xp = scratch, *xs = scratch + m * K;
    float lutf[16];
    lut_of(w, lutf);
    const int bytes = lut4b_ok(w);
    if (!x_ready)
        for (int64_t i = 0; i < m; i++) {
            float *xsi = has_min ? xs + i * (K / 8) : NULL;
            if (bytes) permute_x_b(xp + i * K, xsi, x + i * K, K);
            else permute_x(xp + i * K, xsi, x + i * K, K);
        }
    if (bytes) {
        switch (m) {
            LUT4B_CASE(1)
            LUT4B_CASE(2)
            LUT4B_CASE(3)
            LUT4B_CASE(4)
            LUT4B_CASE(5)
            LUT4B_CASE(6)
            LUT4B_CASE(7)
            LUT4B_CASE(8)
        default: msbnb__gemv_ref(w, y, ldy, x, m, r0, r1, scratch, 0); break;
        }
        return;
    }
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
 * The exact-f32 decode above is bound by its 24 shuffles per 64 weights (~5.5 GB/s of
 * packed weight per core on Zen 3, half the memory stream of one core). Here the codes
 * become 15-bit fixed point (NF4 / FP4: round(code · 16383); INT4: the integers
 * themselves, exact) and the activation 15-bit integers per 64 inputs scaled by their
 * absmax (x ≈ q · amax / 16383), so a 64-weight chunk is 4 vpshufb + 4 unpacks for the
 * codes and 4 vpmaddwd for the products — llama.cpp's quantized-activation dot products
 * (Q8_K activations) at 15 bits instead of 8. Each int32 lane sums 8 products of at most
 * 16383² (< 2^31), one conversion to float per chunk and row. Error relative to Σ|x·w|
 * (measured, Gaussian data): rms 1.2e-5 at K = 64, 1.5e-6 at K = 4096, worst 6e-5; bf16
 * compute (bitsandbytes' GPU path) is ~4e-3. msbnb_linear_set_exact(l, 1) selects the f32
 * kernel above. */

#define I16_ONE MSBNB__I16_ONE
/* prefetch distance per weight stream, bytes: one thread at (4096, 14336) streamed 6.9 /
 * 9.4 / 10.1 / 10.0 / 8.6 GB/s with 512 B / 1 / 2 / 4 / 8 KiB (Zen 3; no prefetch: ~40 % less) */
#define I16_PF 2048

/* i16 x layout of one 64-chunk: vector v (16 int16) position p holds element
 * 2 b + (v >> 1) with b = 16 (p / 8) + 8 (v & 1) + p % 8 — the order of the unpacked
 * codes below (hi nibbles = even elements, lo = odd; unpacklo / unpackhi take bytes 0-7 /
 * 8-15 of each 128-bit lane). 128-bit lane L of every vector holds elements 32 L .. 32 L + 31. */
static int i16_src(int i) {
    const int v = i / 16, p = i % 16, b = 16 * (p / 8) + 8 * (v & 1) + p % 8;
    return 2 * b + (v >> 1);
}

/* Per row of x: q [K] int16 (layout above), d [K/64] = amax / 16383 · code scale,
 * h [K / unit] = Σ x over each scale unit of `unit` inputs (32 or a multiple of 64; f32, for
 * INT4 mins: a row's min term is then one dot product of its mins with h). */
static void prep_x_i16(int16_t *q, float *d, float *h, const float *x, int64_t K, int64_t unit,
                       float cscale) {
    int8_t perm[64];
    for (int i = 0; i < 64; i++) perm[i] = (int8_t)i16_src(i);
    for (int64_t c = 0; c < K / 64; c++) {
        const float *xc = x + c * 64;
        int32_t qi[64];
        d[c] = msbnb__i16_chunk(qi, xc, cscale);
        for (int i = 0; i < 64; i++) q[c * 64 + i] = (int16_t)qi[perm[i]];
        if (h) {
            float s0 = 0, s1 = 0;
            for (int j = 0; j < 32; j++) {
                s0 += xc[j];
                s1 += xc[32 + j];
            }
            if (unit == 32) {
                h[2 * c] = s0;
                h[2 * c + 1] = s1;
            } else {
                const int64_t u = 64 * c / unit;
                h[u] = (64 * c % unit ? h[u] : 0.0f) + (s0 + s1);
            }
        }
    }
}

static inline float dot_f32(const float *a, const float *b, int64_t n) {
    __m256 s = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) s = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s);
    float t = hsum8(s);
    for (; k < n; k++) t += a[k] * b[k];
    return t;
}

/* The 64 codes of a chunk as int16 in the x layout: e0, e1 (even elements), o0, o1 (odd). */
static inline __attribute__((always_inline)) void codes16(__m256i c[4], __m256i v, __m256i tlo,
                                                           __m256i thi, __m256i m4) {
    const __m256i hn = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4), ln = _mm256_and_si256(v, m4);
    const __m256i a = _mm256_shuffle_epi8(tlo, hn), b = _mm256_shuffle_epi8(thi, hn);
    const __m256i e = _mm256_shuffle_epi8(tlo, ln), f = _mm256_shuffle_epi8(thi, ln);
    c[0] = _mm256_unpacklo_epi8(a, b);
    c[1] = _mm256_unpackhi_epi8(a, b);
    c[2] = _mm256_unpacklo_epi8(e, f);
    c[3] = _mm256_unpackhi_epi8(e, f);
}

/* Σ over the chunk's 64 products, 8 int32 lanes (lanes 0-3: elements 0-31, 4-7: 32-63). */
static inline __m256i dot64(const __m256i c[4], const int16_t *xq) {
    const __m256i *xv = (const __m256i *)xq;
    const __m256i s0 = _mm256_madd_epi16(c[0], _mm256_loadu_si256(xv));
    const __m256i s1 = _mm256_madd_epi16(c[1], _mm256_loadu_si256(xv + 1));
    const __m256i s2 = _mm256_madd_epi16(c[2], _mm256_loadu_si256(xv + 2));
    const __m256i s3 = _mm256_madd_epi16(c[3], _mm256_loadu_si256(xv + 3));
    return _mm256_add_epi32(_mm256_add_epi32(s0, s1), _mm256_add_epi32(s2, s3));
}

/* Rows [r0, r1) against M prepared activation rows, one row (one weight stream) at a time:
 * at M = 1, four rows at a time (four streams) read 5-13 % slower (Zen 3 VM, 2 threads,
 * cold, in-process A/B on all three benchmark shapes), though ~9 % faster hot. Row r's scale
 * units start at unit r · upr (msbnb__i16_ok: rows start on a unit boundary) and chunk c lies
 * in unit r · upr + uo[c] (B32: units of 32, the chunk's two in its two 128-bit lanes). INT4
 * mins enter once per row, as the dot product of the row's mins with the per-unit sums of x
 * (a scalar multiply-add per chunk had cost ~25 % of the hot time). At M = 1 the loop is 35
 * instructions per chunk (gcc 12; two of them reload loop-invariant pointers from the stack)
 * and bound by the two shuffle pipes (llvm-mca, znver3, on the earlier four-row loop: FP1 /
 * FP2 at 80 %, ~6 cycles per chunk and row). */
static inline __attribute__((always_inline)) void i16_rows(const msbnb__wview *w, float *y,
                                                            int64_t ldy, const int16_t *xq,
                                                            const float *xd, const float *xh,
                                                            const int32_t *uo, int64_t r0,
                                                            int64_t r1, const int M,
                                                            const int has_min, const int B32,
                                                            __m256i tlo, __m256i thi) {
    const int64_t K = w->k, nc = K / 64;
    const int int4 = w->type == MSBNB_QTYPE_INT4;
    const int64_t upr = int4 ? w->gpr : K / w->block; /* scale units per row */
    const __m256i m4 = _mm256_set1_epi8(15);
    for (int64_t r = r0; r < r1; r++) {
        __m256 acc[8];
        const uint8_t *p = w->packed + r * K / 2;
        const float *sb = w->absmax + r * upr;
        for (int i = 0; i < M; i++) acc[i] = _mm256_setzero_ps();
        for (int64_t c = 0; c < nc; c++) {
            const int32_t u = uo[c];
            /* rows are contiguous: past a row's end this runs into the next row */
            _mm_prefetch((const char *)(p + c * 32 + I16_PF), _MM_HINT_T0);
            __m256i cv[4];
            codes16(cv, _mm256_loadu_si256((const __m256i *)(p + c * 32)), tlo, thi, m4);
            const __m256 S = B32 ? _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_broadcast_ss(sb + u)),
                                                        _mm_broadcast_ss(sb + u + 1), 1)
                                 : _mm256_broadcast_ss(sb + u);
            for (int i = 0; i < M; i++) {
                const __m256 t = _mm256_cvtepi32_ps(dot64(cv, xq + i * K + c * 64));
                acc[i] = _mm256_fmadd_ps(t, _mm256_mul_ps(S, _mm256_broadcast_ss(xd + i * nc + c)), acc[i]);
            }
        }
        for (int i = 0; i < M; i++)
            y[i * ldy + r] = hsum8(acc[i]) + (has_min ? dot_f32(w->mins + r * upr, xh + i * 2 * nc, upr) : 0.0f);
    }
}

#define I16_CALL(MM)                                                                        \
    do {                                                                                    \
        if (has_min) {                                                                      \
            if (b32) i16_rows(w, y, ldy, xq, xd, xh, uo, r0, r1, MM, 1, 1, tlo, thi);       \
            else i16_rows(w, y, ldy, xq, xd, xh, uo, r0, r1, MM, 1, 0, tlo, thi);           \
        } else {                                                                            \
            if (b32) i16_rows(w, y, ldy, xq, xd, xh, uo, r0, r1, MM, 0, 1, tlo, thi);       \
            else i16_rows(w, y, ldy, xq, xd, xh, uo, r0, r1, MM, 0, 0, tlo, thi);           \
        }                                                                                   \
    } while (0)
/* m >= 2: whole rows as well. Slicing K so that the activation rows stay in L1 (they are
 * read from L2 once per weight row: 229 KiB at (14336, 4096), m = 8) measured slower, 12-23
 * ms against 9.6-20 ms unsliced (cold, 2 threads, interleaved runs): the weight stream
 * turns strided. */
#define I16_CASE(MM)                                                                        \
    case MM: I16_CALL(MM); break;

/* x_ready: this thread's scratch already holds the prepared rows (msbnb__gemv_table). */
static void gemv_i16(const msbnb__wview *w, float *y, int64_t ldy, const float *x, int64_t m,
                     int64_t r0, int64_t r1, float *scratch, int x_ready) {
    const int64_t K = w->k, nc = K / 64;
    const int int4 = w->type == MSBNB_QTYPE_INT4;
    const int has_min = int4 && !w->symmetric;
    int16_t *xq = (int16_t *)scratch;            /* m K int16 */
    float *xd = scratch + (m * K) / 2;           /* m nc */
    float *xh = xd + m * nc;                     /* m 2 nc */
    int32_t *uo = (int32_t *)(xh + 2 * m * nc);  /* nc */
    if (!x_ready) {
        for (int64_t c = 0; c < nc; c++) uo[c] = (int32_t)(w->block == 32 ? 2 * c : 64 * c / w->block);
        for (int64_t i = 0; i < m; i++)
            prep_x_i16(xq + i * K, xd + i * nc, has_min ? xh + i * 2 * nc : NULL, x + i * K, K, w->block,
                       int4 ? 1.0f : 1.0f / (float)I16_ONE);
    }
    uint8_t lo[16], hi[16];
    msbnb__i16_code_bytes(w, lo, hi);
    const __m256i tlo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)lo));
    const __m256i thi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)hi));
    const int b32 = w->block == 32;
    switch (m) {
        I16_CASE(1)
        I16_CASE(2)
        I16_CASE(3)
        I16_CASE(4)
        I16_CASE(5)
        I16_CASE(6)
        I16_CASE(7)
        I16_CASE(8)
    default: msbnb__gemv_ref(w, y, ldy, x, m, r0, r1, scratch, 0); break;
    }
}

/* ---------------------------------------------------------------- 16-bit and int8 floats */

/* 8 weights at flat offset off as f32 (bf16 / f16 / f32 / int8 codes). */
static inline __m256 load8(const msbnb__wview *w, int64_t off) {
    switch (w->type) {
    case MSBNB_QTYPE_BF16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w->u16 + off))), 16));
    case MSBNB_QTYPE_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w->u16 + off)));
    case MSBNB_QTYPE_F32: return _mm256_loadu_ps(w->f32 + off);
    default: /* INT8 codes */
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(w->q8 + off))));
    }
}

static inline float load1(const msbnb__wview *w, int64_t off) {
    switch (w->type) {
    case MSBNB_QTYPE_BF16: {
        uint32_t u = (uint32_t)w->u16[off] << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    case MSBNB_QTYPE_F16: return msbnb_f16_to_f32(w->u16[off]);
    case MSBNB_QTYPE_F32: return w->f32[off];
    default: return (float)w->q8[off];
    }
}

/* y[i, r] = Σ_k x[i, k] w[r, k]; int8 asymmetric: s_r Σ_k (q - z_r) x (q - z exact). */
static inline __attribute__((always_inline)) void dense_rows(const msbnb__wview *w, float *y,
                                                              int64_t ldy, const float *x,
                                                              int64_t r0, int64_t r1, const int M) {
    const int64_t K = w->k;
    const int is8 = w->type == MSBNB_QTYPE_INT8;
    for (int64_t r = r0; r < r1; r++) {
        __m256 a0[8], a1[8];
        const float zs = is8 ? w->rzero[r] : 0.0f;
        const __m256 z = _mm256_set1_ps(zs);
        for (int i = 0; i < M; i++) a0[i] = a1[i] = _mm256_setzero_ps();
        int64_t k = 0;
        for (; k + 16 <= K; k += 16) {
            __m256 wa = load8(w, r * K + k), wb = load8(w, r * K + k + 8);
            if (is8) {
                wa = _mm256_sub_ps(wa, z);
                wb = _mm256_sub_ps(wb, z);
            }
            for (int i = 0; i < M; i++) {
                a0[i] = _mm256_fmadd_ps(wa, _mm256_loadu_ps(x + i * K + k), a0[i]);
                a1[i] = _mm256_fmadd_ps(wb, _mm256_loadu_ps(x + i * K + k + 8), a1[i]);
            }
        }
        float tail[8] = {0};
        for (; k < K; k++) {
            float wk = load1(w, r * K + k) - zs;
            for (int i = 0; i < M; i++) tail[i] += wk * x[i * K + k];
        }
        for (int i = 0; i < M; i++) {
            float s = hsum8(_mm256_add_ps(a0[i], a1[i])) + tail[i];
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

/* bf16 weights without lane-crossing widening (vpmovzxwd is slow on AMD Zen): of each
 * 16 weights the even ones are the 32-bit lanes shifted left by 16, the odd ones the lanes
 * with the low half masked off; the activation is split into even / odd halves of each
 * 16 once per call (x'[c*16 + j] = x[c*16 + 2j], x'[c*16 + 8 + j] = x[c*16 + 2j + 1]). */
static void permute_x_eo(float *xp, const float *x, int64_t K) {
    for (int64_t c = 0; c < K / 16; c++)
        for (int j = 0; j < 8; j++) {
            xp[c * 16 + j] = x[c * 16 + 2 * j];
            xp[c * 16 + 8 + j] = x[c * 16 + 2 * j + 1];
        }
}

static inline __attribute__((always_inline)) void bf16_rows(const msbnb__wview *w, float *y,
                                                             int64_t ldy, const float *x,
                                                             const float *xp, int64_t r0,
                                                             int64_t r1, const int M) {
    const int64_t K = w->k, kv = K / 16 * 16;
    const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
    for (int64_t r = r0; r < r1; r++) {
        const uint16_t *wr = w->u16 + r * K;
        __m256 a0[8], a1[8];
        for (int i = 0; i < M; i++) a0[i] = a1[i] = _mm256_setzero_ps();
        for (int64_t k = 0; k < kv; k += 16) {
            _mm_prefetch((const char *)(wr + k) + 2048, _MM_HINT_T0);
            const __m256i v = _mm256_loadu_si256((const __m256i *)(wr + k));
            const __m256 we = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
            const __m256 wo = _mm256_castsi256_ps(_mm256_and_si256(v, hi));
            for (int i = 0; i < M; i++) {
                a0[i] = _mm256_fmadd_ps(we, _mm256_loadu_ps(xp + i * K + k), a0[i]);
                a1[i] = _mm256_fmadd_ps(wo, _mm256_loadu_ps(xp + i * K + k + 8), a1[i]);
            }
        }
        float tail[8] = {0};
        for (int64_t k = kv; k < K; k++) {
            const float wk = load1(w, r * K + k);
            for (int i = 0; i < M; i++) tail[i] += wk * x[i * K + k];
        }
        for (int i = 0; i < M; i++) y[i * ldy + r] = hsum8(_mm256_add_ps(a0[i], a1[i])) + tail[i];
    }
}

/* M = 1, four rows at a time: four concurrent weight streams (one sequential stream per
 * core reads well under the memory bandwidth here: one row at a time streamed ~74 % of
 * what OpenBLAS's sgemv, which interleaves rows, reads), the activation loads shared. */
static void bf16_rows4_m1(const msbnb__wview *w, float *y, const float *x, const float *xp,
                          int64_t r0, int64_t r1) {
    const int64_t K = w->k, kv = K / 16 * 16;
    const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        __m256 a0[4], a1[4];
        const uint16_t *wr[4];
        for (int j = 0; j < 4; j++) {
            a0[j] = a1[j] = _mm256_setzero_ps();
            wr[j] = w->u16 + (r + j) * K;
        }
        for (int64_t k = 0; k < kv; k += 16) {
            const __m256 xe = _mm256_loadu_ps(xp + k), xo = _mm256_loadu_ps(xp + k + 8);
            /* 2 KiB ahead in each stream; past a row's end, into the next group's row */
            const int64_t pf = k + 1024 < K ? 1024 : 1024 + 3 * K;
            for (int j = 0; j < 4; j++) {
                _mm_prefetch((const char *)(wr[j] + k + pf), _MM_HINT_T0);
                const __m256i v = _mm256_loadu_si256((const __m256i *)(wr[j] + k));
                a0[j] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), xe, a0[j]);
                a1[j] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v, hi)), xo, a1[j]);
            }
        }
        for (int j = 0; j < 4; j++) {
            float t = 0;
            for (int64_t k = kv; k < K; k++) t += load1(w, (r + j) * K + k) * x[k];
            y[r + j] = hsum8(_mm256_add_ps(a0[j], a1[j])) + t;
        }
    }
    if (r < r1) bf16_rows(w, y, 1, x, xp, r, r1, 1);
}

#define BF16_CASE(MM)                                                                      \
    case MM: bf16_rows(w, y, ldy, x, xp, r0, r1, MM); break;

static void gemv_bf16(const msbnb__wview *w, float *y, int64_t ldy, const float *x, int64_t m,
                      int64_t r0, int64_t r1, float *scratch, int x_ready) {
    const int64_t K = w->k;
    float *xp = scratch;
    if (!x_ready)
        for (int64_t i = 0; i < m; i++) permute_x_eo(xp + i * K, x + i * K, K);
    switch (m) {
    case 1: bf16_rows4_m1(w, y, x, xp, r0, r1); break;
        BF16_CASE(2)
        BF16_CASE(3)
        BF16_CASE(4)
        BF16_CASE(5)
        BF16_CASE(6)
        BF16_CASE(7)
        BF16_CASE(8)
    default: break;
    }
}

static void gemv_avx2(const msbnb__wview *w, float *y, int64_t ldy, const float *x, int64_t m,
                      int64_t r0, int64_t r1, float *scratch, int x_ready) {
    if (m > 8) {
        msbnb__gemv_ref(w, y, ldy, x, m, r0, r1, scratch, 0);
        return;
    }
    switch (w->type) {
    case MSBNB_QTYPE_BF16: gemv_bf16(w, y, ldy, x, m, r0, r1, scratch, x_ready); return;
    case MSBNB_QTYPE_F32:
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
        if (msbnb__i16_ok(w, 64)) {
            gemv_i16(w, y, ldy, x, m, r0, r1, scratch, x_ready);
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

/* acc = Σ xq · q exactly: 32 codes a step, pairs summed to int16 by vpmaddubsw, then to
 * int32 by vpmaddwd (<= 4·128·127 per lane a step), flushed to 64 bits every 2^16 columns
 * (2048 steps per lane). */
static inline __attribute__((always_inline)) void i8_rows(const msbnb__wview *w, int64_t *acc,
                                                           int64_t lda, const int8_t *xq,
                                                           int64_t r0, int64_t r1, const int M) {
    const int64_t K = w->k;
    for (int64_t r = r0; r < r1; r++) {
        const int8_t *q = w->q8 + r * K;
        int64_t tot[8] = {0};
        const int64_t kv = K / 32 * 32;
        const __m256i ones = _mm256_set1_epi16(1);
        for (int64_t k0 = 0; k0 < kv; k0 += 65536) {
            const int64_t k1 = kv - k0 < 65536 ? kv : k0 + 65536;
            __m256i a[8];
            for (int i = 0; i < M; i++) a[i] = _mm256_setzero_si256();
            for (int64_t k = k0; k < k1; k += 32) {
                /* llama.cpp's AVX2 int8 dot: |q| (unsigned) x sign(q)·x (signed) with
                 * vpmaddubsw, all in-lane (sign extension to 16 bits crosses lanes, slow on
                 * AMD Zen). Exact: |q| <= 128 and the activation codes are in [-127, 127]
                 * (int8_vectorwise_quant), so a pair sum is <= 2·128·127 < 2^15 and never
                 * saturates. */
                _mm_prefetch((const char *)(q + k) + 2048, _MM_HINT_T0);
                const __m256i wv = _mm256_loadu_si256((const __m256i *)(q + k));
                const __m256i wa = _mm256_abs_epi8(wv);
                for (int i = 0; i < M; i++) {
                    const __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + i * K + k));
                    const __m256i pr = _mm256_maddubs_epi16(wa, _mm256_sign_epi8(xv, wv));
                    a[i] = _mm256_add_epi32(a[i], _mm256_madd_epi16(pr, ones));
                }
            }
            for (int i = 0; i < M; i++) tot[i] += hsum8_i32(a[i]);
        }
        for (int64_t k = kv; k < K; k++)
            for (int i = 0; i < M; i++) tot[i] += (int32_t)q[k] * (int32_t)xq[i * K + k];
        for (int i = 0; i < M; i++) acc[i * lda + r] = tot[i];
    }
}

/* M = 1, four rows at a time (four weight streams, as bf16_rows4_m1). */
static void i8_rows4_m1(const msbnb__wview *w, int64_t *acc, const int8_t *xq, int64_t r0,
                        int64_t r1) {
    const int64_t K = w->k, kv = K / 32 * 32;
    const __m256i ones = _mm256_set1_epi16(1);
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        const int8_t *q[4];
        int64_t tot[4] = {0, 0, 0, 0};
        for (int j = 0; j < 4; j++) q[j] = w->q8 + (r + j) * K;
        for (int64_t k0 = 0; k0 < kv; k0 += 65536) {
            const int64_t k1 = kv - k0 < 65536 ? kv : k0 + 65536;
            __m256i a[4];
            for (int j = 0; j < 4; j++) a[j] = _mm256_setzero_si256();
            for (int64_t k = k0; k < k1; k += 32) {
                const __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + k));
                /* 4 KiB ahead in each stream (one thread at 4096 x 4096 streamed 52 / 69 /
                 * 78 / 80 % of sgemv's rate with none / 2 / 4 / 8 KiB); past a row's end,
                 * into the next group's rows */
                const int64_t pf = k + 4096 < K ? 4096 : 4096 + 3 * K;
                for (int j = 0; j < 4; j++) {
                    _mm_prefetch((const char *)(q[j] + k + pf), _MM_HINT_T0);
                    const __m256i wv = _mm256_loadu_si256((const __m256i *)(q[j] + k));
                    const __m256i pr = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv));
                    a[j] = _mm256_add_epi32(a[j], _mm256_madd_epi16(pr, ones));
                }
            }
            for (int j = 0; j < 4; j++) tot[j] += hsum8_i32(a[j]);
        }
        for (int j = 0; j < 4; j++) {
            for (int64_t k = kv; k < K; k++) tot[j] += (int32_t)q[j][k] * (int32_t)xq[k];
            acc[r + j] = tot[j];
        }
    }
    if (r < r1) i8_rows(w, acc, 1, xq, r, r1, 1);
}

#define I8_CASE(MM)                                                                        \
    case MM: i8_rows(w, acc, lda, xq, r0, r1, MM); break;

static void gemv_i8_avx2(const msbnb__wview *w, int64_t *acc, int64_t lda, const int8_t *xq,
                         int64_t m, int64_t r0, int64_t r1) {
    switch (m) {
    case 1: i8_rows4_m1(w, acc, xq, r0, r1); break;
        I8_CASE(2)
        I8_CASE(3)
        I8_CASE(4)
        I8_CASE(5)
        I8_CASE(6)
        I8_CASE(7)
        I8_CASE(8)
    default: msbnb__gemv_i8_ref(w, acc, lda, xq, m, r0, r1); break;
    }
}

/* ---------------------------------------------------------------- dequantized panels */

/* 16 weights from 8 packed bytes in natural order, times scale (+ min). */
static inline void dq16(float *out, const uint8_t *p, __m256 lo, __m256 hi, __m256 s, __m256 mn) {
    const __m256i d = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
    const __m256 e = lut16(lo, hi, _mm256_srli_epi32(d, 4), _mm256_slli_epi32(d, 24)); /* 2j */
    const __m256 o = lut16(lo, hi, d, _mm256_slli_epi32(d, 28));                        /* 2j+1 */
    const __m256 a = _mm256_unpacklo_ps(e, o), b = _mm256_unpackhi_ps(e, o);
    _mm256_storeu_ps(out, _mm256_fmadd_ps(_mm256_permute2f128_ps(a, b, 0x20), s, mn));
    _mm256_storeu_ps(out + 8, _mm256_fmadd_ps(_mm256_permute2f128_ps(a, b, 0x31), s, mn));
}

static void dequant_tile_avx2(const msbnb__wview *w, float *out, int64_t ldo, int64_t r0,
                             int64_t r1, int64_t k0, int64_t k1, int raw) {
    const int64_t K = w->k;
    switch (w->type) {
    case MSBNB_QTYPE_NF4:
    case MSBNB_QTYPE_FP4:
    case MSBNB_QTYPE_INT4: {
        if (K % 16 || k0 % 16 || k1 % 16 || (w->type == MSBNB_QTYPE_INT4 && w->block % 16)) break;
        float lutf[16];
        lut_of(w, lutf);
        const __m256 lo = _mm256_loadu_ps(lutf), hi = _mm256_loadu_ps(lutf + 8);
        const int has_min = w->type == MSBNB_QTYPE_INT4 && !w->symmetric;
        for (int64_t r = r0; r < r1; r++) {
            float *o = out + (r - r0) * ldo;
            const uint8_t *p = w->packed + r * K / 2;
            for (int64_t k = k0; k < k1; k += 16) {
                int64_t si = w->type == MSBNB_QTYPE_INT4 ? r * w->gpr + k / w->block
                                                         : (r * K + k) / w->block;
                __m256 mn = has_min ? _mm256_set1_ps(w->mins[si]) : _mm256_setzero_ps();
                dq16(o + (k - k0), p + k / 2, lo, hi, _mm256_set1_ps(w->absmax[si]), mn);
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
            const __m256 vs = _mm256_set1_ps(s), vz = _mm256_set1_ps(z);
            const int is8 = w->type == MSBNB_QTYPE_INT8;
            int64_t k = k0;
            for (; k + 8 <= k1; k += 8) {
                __m256 v = load8(w, r * K + k);
                if (is8) v = _mm256_mul_ps(_mm256_sub_ps(v, vz), vs);
                _mm256_storeu_ps(o + (k - k0), v);
            }
            for (; k < k1; k++) o[k - k0] = is8 ? (load1(w, r * K + k) - z) * s : load1(w, r * K + k);
        }
        return;
    default: break;
    }
    msbnb__dequant_tile_ref(w, out, ldo, r0, r1, k0, k1, raw);
}

const msbnb__gemv_table msbnb__gemv_avx2 = {MSBNB_CPU_AVX2, dequant_tile_avx2, gemv_avx2,
                                            gemv_i8_avx2};
