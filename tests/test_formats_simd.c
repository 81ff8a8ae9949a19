/* Every SIMD tier of the format kernels against the scalar reference, bit for bit, on
 * fresh random inputs with odd sizes, tails, zero blocks, exact-tie values and subnormals. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *k_tiers[] = {"scalar", "avx2", "avx512"};

static void set_tier(int t) { setenv("MSBNB_CPU", k_tiers[t], 1); }

static int tiers_available(void) {
    int n = 1;
    if (msbnb_cpu_tier_supported(MSBNB_CPU_AVX2)) n = 2;
    if (msbnb_cpu_tier_supported(MSBNB_CPU_AVX512)) n = 3;
    return n;
}

/* Random data with the cases that break vector code: exact zeros, ties against pivots,
 * subnormals, a few large values. */
static void fill_hard(tu_rng *r, float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float u = tu_rng_uniform(r);
        if (u < 0.05f) x[i] = 0.0f;
        else if (u < 0.08f) x[i] = (tu_rng_u64(r) & 1 ? -1.0f : 1.0f) * 1e-39f; /* subnormal */
        else if (u < 0.15f) x[i] = msbnb_bf16_to_f32(msbnb_f32_to_bf16(tu_rng_normal(r))); /* coarse: ties */
        else x[i] = tu_rng_normal(r) * (u < 0.2f ? 30.0f : 1.0f);
    }
}

static void test_quant4_tiers_bit_identical(void) {
    tu_rng r;
    tu_rng_init(&r, tu_seed());
    static const int64_t sizes[] = {1, 2, 3, 31, 63, 65, 100, 4097, 10000};
    static const int64_t bss[] = {32, 64, 128, 256, 1024, 4096};
    int nt = tiers_available();
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
        for (size_t b = 0; b < sizeof bss / sizeof *bss; b++)
            for (int qt = MSBNB_QTYPE_NF4; qt <= MSBNB_QTYPE_FP4; qt++) {
                int64_t n = sizes[s], nb = msbnb_nblocks(n, bss[b]);
                float *x = malloc((size_t)n * 4), *am[3], *dq[3];
                uint8_t *pk[3];
                fill_hard(&r, x, n);
                if (n > 64) memset(x, 0, 64 * 4); /* an all-zero block */
                for (int t = 0; t < nt; t++) {
                    set_tier(t);
                    pk[t] = malloc((size_t)(n + 1) / 2);
                    am[t] = malloc((size_t)nb * 4);
                    dq[t] = malloc((size_t)n * 4);
                    CHECK_OK(msbnb_quantize_4bit(pk[t], am[t], x, MSBNB_DTYPE_F32, n, bss[b], (msbnb_qtype)qt, 2));
                    CHECK_OK(msbnb_dequantize_4bit(dq[t], MSBNB_DTYPE_F32, pk[t], am[t], n, bss[b], (msbnb_qtype)qt, 2));
                }
                for (int t = 1; t < nt; t++) {
                    CHECKF(memcmp(pk[0], pk[t], (size_t)(n + 1) / 2) == 0, "%s n=%lld bs=%lld qt=%d packed",
                           k_tiers[t], (long long)n, (long long)bss[b], qt);
                    CHECK(memcmp(am[0], am[t], (size_t)nb * 4) == 0);
                    CHECKF(memcmp(dq[0], dq[t], (size_t)n * 4) == 0, "%s dequant", k_tiers[t]);
                }
                for (int t = 0; t < nt; t++) {
                    free(pk[t]);
                    free(am[t]);
                    free(dq[t]);
                }
                free(x);
            }
    unsetenv("MSBNB_CPU");
}

static void test_q8_tiers_bit_identical(void) {
    tu_rng r;
    tu_rng_init(&r, tu_seed() + 1);
    int nt = tiers_available();
    static const int64_t sizes[] = {1, 3, 65, 4097, 20000};
    for (size_t s = 0; s < 5; s++) {
        int64_t n = sizes[s], bs = 64, nb = msbnb_nblocks(n, bs);
        float *x = malloc((size_t)n * 4), *am = malloc((size_t)nb * 4), *out[3];
        uint8_t *q = malloc((size_t)n);
        fill_hard(&r, x, n);
        uint8_t *q0 = malloc((size_t)n);
        float *am0 = malloc((size_t)nb * 4);
        set_tier(0);
        CHECK_OK(msbnb_quantize_blockwise_8bit(q0, am0, x, MSBNB_DTYPE_F32, n, bs, NULL, 1));
        for (int t = 0; t < nt; t++) {
            set_tier(t);
            CHECK_OK(msbnb_quantize_blockwise_8bit(q, am, x, MSBNB_DTYPE_F32, n, bs, NULL, 1));
            CHECKF(memcmp(q, q0, (size_t)n) == 0 && memcmp(am, am0, (size_t)nb * 4) == 0, "q8 quantize %s n=%lld", k_tiers[t], (long long)n);
            out[t] = malloc((size_t)n * 4);
            CHECK_OK(msbnb_dequantize_blockwise_8bit(out[t], MSBNB_DTYPE_F32, q, am, n, bs, NULL, 1));
        }
        for (int t = 1; t < nt; t++) CHECK(memcmp(out[0], out[t], (size_t)n * 4) == 0);
        free(q0);
        free(am0);
        for (int t = 0; t < nt; t++) free(out[t]);
        free(x);
        free(am);
        free(q);
    }
    unsetenv("MSBNB_CPU");
}

/* ---- integer formats: the original serial algorithms, kept here as the oracle ---- */

static int8_t oracle_sat8(float v) { return v > 127.0f ? 127 : v < -128.0f ? -128 : (int8_t)v; }

static void oracle_q8(int8_t *q, float *scale, float *offset, const float *w, int64_t rows,
                      int64_t cols, int symmetric, int per_tensor) {
    int64_t groups = per_tensor ? 1 : rows, len = per_tensor ? rows * cols : cols;
    for (int64_t g = 0; g < groups; g++) {
        const float *x = w + g * len;
        int8_t *o = q + g * len;
        float mn = x[0], mx = x[0];
        for (int64_t i = 0; i < len; i++) {
            if (x[i] < mn) mn = x[i];
            if (x[i] > mx) mx = x[i];
        }
        if (symmetric) {
            float amax = fmaxf(fabsf(mn), fabsf(mx)), inv = amax > 0 ? 127.0f / amax : 0.0f;
            scale[g] = amax / 127.0f;
            for (int64_t i = 0; i < len; i++) o[i] = oracle_sat8(rintf(x[i] * inv));
        } else {
            if (mn > 0) mn = 0;
            if (mx < 0) mx = 0;
            float sc = (mx - mn) / 255.0f;
            scale[g] = sc;
            if (sc == 0) {
                offset[g] = 0;
                memset(o, 0, (size_t)len);
                continue;
            }
            float z = -128.0f - rintf(mn / sc);
            z = z < -128 ? -128 : z > 127 ? 127 : z;
            offset[g] = z;
            for (int64_t i = 0; i < len; i++) o[i] = oracle_sat8(rintf(x[i] / sc) + z);
        }
    }
}

static uint8_t oracle_clamp15(float v) { return !(v >= 0.0f) ? 0 : v > 15.0f ? 15 : (uint8_t)v; }

static void oracle_q4(uint8_t *packed, float *scales, float *mins, const float *w, int64_t rows,
                      int64_t cols, int64_t gs, int symmetric) {
    int64_t gpr = (cols + gs - 1) / gs, n = rows * cols;
    memset(packed, 0, (size_t)(n + 1) / 2);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t g = 0; g < gpr; g++) {
            int64_t c0 = g * gs, len = cols - c0 < gs ? cols - c0 : gs;
            const float *x = w + r * cols + c0;
            for (int64_t i = 0; i < len; i++) {
                uint8_t code;
                if (symmetric) {
                    float m = 0.0f;
                    for (int64_t k = 0; k < len; k++)
                        if (fabsf(x[k]) > fabsf(m)) m = x[k];
                    float d = m / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
                    scales[r * gpr + g] = d;
                    code = oracle_clamp15(rintf(x[i] * id) + 8.0f);
                } else {
                    float mn = x[0], mx = x[0];
                    for (int64_t k = 1; k < len; k++) {
                        if (x[k] < mn) mn = x[k];
                        if (x[k] > mx) mx = x[k];
                    }
                    float d = (mx - mn) / 15.0f, id = d != 0 ? 1.0f / d : 0.0f;
                    scales[r * gpr + g] = d;
                    mins[r * gpr + g] = mn;
                    code = oracle_clamp15(rintf((x[i] - mn) * id));
                }
                int64_t e = r * cols + c0 + i;
                packed[e / 2] |= (uint8_t)((e & 1) ? code : code << 4);
            }
        }
}

/* Threaded, vectorised msbnb_quantize_8bit / msbnb_quantize_int4 equal the serial
 * algorithms bit for bit on every tier and thread count, odd shapes included. */
static void test_int_formats_tiers_threads(void) {
    tu_rng r;
    tu_rng_init(&r, tu_seed() + 7);
    static const int64_t shapes[][2] = {{1, 1}, {1, 3}, {3, 5}, {7, 4097}, {5, 130}, {64, 257}, {33, 64}};
    static const int64_t gss[] = {2, 6, 32, 64, 128, 256}; /* 256 > cols 130: one short group */
    static const char *threads[] = {"1", "2", "3"};
    int nt = tiers_available();
    for (size_t sh = 0; sh < sizeof shapes / sizeof *shapes; sh++) {
        int64_t rows = shapes[sh][0], cols = shapes[sh][1], n = rows * cols;
        float *w = malloc((size_t)n * 4);
        fill_hard(&r, w, n);
        if (n > 8) { w[1] = -w[0]; w[2] = 0.0f; w[3] = -0.0f; } /* ties of magnitude, zeros */
        int8_t *q0 = malloc((size_t)n), *q1 = malloc((size_t)n);
        float s0[257 + 1], o0[257 + 1], s1[257 + 1], o1[257 + 1];
        for (int sym = 0; sym <= 1; sym++)
            for (int pt = 0; pt <= 1; pt++) {
                oracle_q8(q0, s0, o0, w, rows, cols, sym, pt);
                int64_t ng = pt ? 1 : rows;
                for (int t = 0; t < nt; t++)
                    for (int th = 0; th < 3; th++) {
                        set_tier(t);
                        setenv("MSBNB_THREADS", threads[th], 1);
                        memset(q1, 0x55, (size_t)n);
                        CHECK_OK(msbnb_quantize_8bit(q1, s1, o1, w, rows, cols, sym, pt));
                        CHECKF(memcmp(q0, q1, (size_t)n) == 0 && memcmp(s0, s1, (size_t)ng * 4) == 0 &&
                                   (sym || memcmp(o0, o1, (size_t)ng * 4) == 0),
                               "int8 %lldx%lld sym=%d pt=%d tier %s threads %s", (long long)rows,
                               (long long)cols, sym, pt, k_tiers[t], threads[th]);
                    }
            }
        for (size_t gi = 0; gi < sizeof gss / sizeof *gss; gi++) {
            int64_t gs = gss[gi], gpr = (cols + gs - 1) / gs, nb = (n + 1) / 2;
            uint8_t *p0 = malloc((size_t)nb), *p1 = malloc((size_t)nb);
            float *sc0 = malloc((size_t)(rows * gpr) * 4), *mn0 = malloc((size_t)(rows * gpr) * 4);
            float *sc1 = malloc((size_t)(rows * gpr) * 4), *mn1 = malloc((size_t)(rows * gpr) * 4);
            for (int sym = 0; sym <= 1; sym++) {
                oracle_q4(p0, sc0, mn0, w, rows, cols, gs, sym);
                for (int t = 0; t < nt; t++)
                    for (int th = 0; th < 3; th++) {
                        set_tier(t);
                        setenv("MSBNB_THREADS", threads[th], 1);
                        memset(p1, 0xa5, (size_t)nb);
                        CHECK_OK(msbnb_quantize_int4(p1, sc1, mn1, w, rows, cols, gs, sym));
                        CHECKF(memcmp(p0, p1, (size_t)nb) == 0 &&
                                   memcmp(sc0, sc1, (size_t)(rows * gpr) * 4) == 0 &&
                                   (sym || memcmp(mn0, mn1, (size_t)(rows * gpr) * 4) == 0),
                               "int4 %lldx%lld g%lld sym=%d tier %s threads %s", (long long)rows,
                               (long long)cols, (long long)gs, sym, k_tiers[t], threads[th]);
                    }
            }
            free(p0), free(p1), free(sc0), free(mn0), free(sc1), free(mn1);
        }
        free(q0), free(q1), free(w);
    }
    unsetenv("MSBNB_CPU");
    unsetenv("MSBNB_THREADS");
}

/* LLM.int8 row-wise quantization: every tier and thread count equals the scalar
 * single-thread result (itself checked against bitsandbytes in test_formats_bnb). */
static void test_vectorwise_tiers_threads(void) {
    tu_rng r;
    tu_rng_init(&r, tu_seed() + 8);
    static const int64_t shapes[][2] = {{1, 1}, {3, 5}, {9, 4097}, {64, 33}};
    static const char *threads[] = {"1", "2", "3"};
    int nt = tiers_available();
    for (size_t sh = 0; sh < sizeof shapes / sizeof *shapes; sh++) {
        int64_t rows = shapes[sh][0], cols = shapes[sh][1], n = rows * cols;
        float *a = malloc((size_t)n * 4);
        fill_hard(&r, a, n);
        uint16_t *ah = malloc((size_t)n * 2);
        msbnb_convert(ah, MSBNB_DTYPE_F16, a, MSBNB_DTYPE_F32, n);
        for (int dt = 0; dt < 2; dt++)
            for (int thr = 0; thr < 2; thr++) {
                float threshold = thr ? 6.0f : 0.0f;
                const void *src = dt ? (const void *)ah : (const void *)a;
                msbnb_dtype st = dt ? MSBNB_DTYPE_F16 : MSBNB_DTYPE_F32;
                int8_t *q0 = malloc((size_t)n), *q1 = malloc((size_t)n);
                float *m0 = malloc((size_t)rows * 4), *m1 = malloc((size_t)rows * 4);
                int64_t *oc0 = malloc((size_t)cols * 8), *oc1 = malloc((size_t)cols * 8), k0 = 0, k1 = 0;
                set_tier(0);
                setenv("MSBNB_THREADS", "1", 1);
                CHECK_OK(msbnb_int8_vectorwise_quant(q0, m0, oc0, cols, &k0, src, st, rows, cols, threshold));
                for (int t = 0; t < nt; t++)
                    for (int th = 0; th < 3; th++) {
                        set_tier(t);
                        setenv("MSBNB_THREADS", threads[th], 1);
                        CHECK_OK(msbnb_int8_vectorwise_quant(q1, m1, oc1, cols, &k1, src, st, rows, cols, threshold));
                        CHECKF(memcmp(q0, q1, (size_t)n) == 0 && memcmp(m0, m1, (size_t)rows * 4) == 0 &&
                                   k0 == k1 && memcmp(oc0, oc1, (size_t)k0 * 8) == 0,
                               "vectorwise %lldx%lld dt=%d thr=%g tier %s threads %s", (long long)rows,
                               (long long)cols, dt, threshold, k_tiers[t], threads[th]);
                    }
                /* 9 x 4097 with ~4 % of |a| > 6: about a third of the columns are outliers, so
                 * the outlier path is exercised on both kinds of column. */
                if (threshold > 0 && cols > 1000) CHECKF(k0 > 0 && k0 < cols, "%lld outlier columns", (long long)k0);
                free(q0), free(q1), free(m0), free(m1), free(oc0), free(oc1);
            }
        /* A NaN deep in the tensor is reported at its position whatever the thread count. */
        if (n > 10) {
            a[n - 2] = NAN;
            for (int th = 0; th < 3; th++) {
                setenv("MSBNB_THREADS", threads[th], 1);
                int8_t *q = malloc((size_t)n);
                float *m = malloc((size_t)rows * 4);
                int64_t k = 0, *oc = malloc((size_t)cols * 8);
                CHECK_STATUS(msbnb_int8_vectorwise_quant(q, m, oc, cols, &k, a, MSBNB_DTYPE_F32, rows, cols, 6.0f),
                             MSBNB_ERR_NON_FINITE);
                char want[64];
                snprintf(want, sizeof want, "a[%lld, %lld]", (long long)((n - 2) / cols), (long long)((n - 2) % cols));
                CHECKF(strstr(msbnb_last_error(), want) != NULL, "message '%s' names %s", msbnb_last_error(), want);
                free(q), free(m), free(oc);
            }
        }
        free(a), free(ah);
    }
    unsetenv("MSBNB_CPU");
    unsetenv("MSBNB_THREADS");
}

static void test_convert_tiers_bit_identical(void) {
    tu_rng r;
    tu_rng_init(&r, tu_seed() + 2);
    int nt = tiers_available();
    int64_t n = 4099;
    float *x = malloc((size_t)n * 4);
    fill_hard(&r, x, n);
    x[0] = NAN;
    x[1] = -INFINITY;
    x[2] = INFINITY;
    x[3] = 65519.0f;  /* rounds to f16 max */
    x[4] = 65520.0f;  /* rounds to f16 inf */
    x[5] = 3e-8f;     /* f16 subnormal */
    x[6] = -0.0f;
    x[7] = 3.3895314e38f; /* bf16 rounds to inf */
    uint16_t *h[3], *b[3];
    float *hf[3], *bf[3];
    for (int t = 0; t < nt; t++) {
        set_tier(t);
        h[t] = malloc((size_t)n * 2);
        b[t] = malloc((size_t)n * 2);
        hf[t] = malloc((size_t)n * 4);
        bf[t] = malloc((size_t)n * 4);
        CHECK_OK(msbnb_convert(h[t], MSBNB_DTYPE_F16, x, MSBNB_DTYPE_F32, n));
        CHECK_OK(msbnb_convert(b[t], MSBNB_DTYPE_BF16, x, MSBNB_DTYPE_F32, n));
        CHECK_OK(msbnb_convert(hf[t], MSBNB_DTYPE_F32, h[t], MSBNB_DTYPE_F16, n));
        CHECK_OK(msbnb_convert(bf[t], MSBNB_DTYPE_F32, b[t], MSBNB_DTYPE_BF16, n));
        if (t > 0) { /* f16 <-> bf16 directly, against the scalar tier's two-step result */
            uint16_t *hb = malloc((size_t)n * 2), *hb0 = malloc((size_t)n * 2);
            CHECK_OK(msbnb_convert(hb, MSBNB_DTYPE_BF16, h[t], MSBNB_DTYPE_F16, n));
            set_tier(0);
            CHECK_OK(msbnb_convert(hb0, MSBNB_DTYPE_BF16, h[t], MSBNB_DTYPE_F16, n));
            CHECK(memcmp(hb, hb0, (size_t)n * 2) == 0);
            set_tier(t);
            CHECK_OK(msbnb_convert(hb, MSBNB_DTYPE_F16, b[t], MSBNB_DTYPE_BF16, n));
            set_tier(0);
            CHECK_OK(msbnb_convert(hb0, MSBNB_DTYPE_F16, b[t], MSBNB_DTYPE_BF16, n));
            CHECK(memcmp(hb, hb0, (size_t)n * 2) == 0);
            free(hb);
            free(hb0);
        }
    }
    for (int t = 1; t < nt; t++) {
        CHECKF(memcmp(h[0], h[t], (size_t)n * 2) == 0, "f16 %s", k_tiers[t]);
        CHECKF(memcmp(b[0], b[t], (size_t)n * 2) == 0, "bf16 %s", k_tiers[t]);
        CHECK(memcmp(hf[0], hf[t], (size_t)n * 4) == 0);
        CHECK(memcmp(bf[0], bf[t], (size_t)n * 4) == 0);
    }
    for (int t = 0; t < nt; t++) {
        free(h[t]);
        free(b[t]);
        free(hf[t]);
        free(bf[t]);
    }
    free(x);
    unsetenv("MSBNB_CPU");
}

int main(void) {
    printf("tiers available: %d\n", tiers_available());
    tu_report_tier_skips();
    RUN_TEST(test_quant4_tiers_bit_identical);
    RUN_TEST(test_q8_tiers_bit_identical);
    RUN_TEST(test_convert_tiers_bit_identical);
    RUN_TEST(test_int_formats_tiers_threads);
    RUN_TEST(test_vectorwise_tiers_threads);
    return tu_finish();
}
