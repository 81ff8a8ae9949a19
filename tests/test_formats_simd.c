/* Every SIMD tier of the format kernels against the scalar reference, bit for bit, on
 * fresh random inputs with odd sizes, tails, zero blocks, exact-tie values and subnormals. */
#include "testutil.h"

#include <stdlib.h>

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
    RUN_TEST(test_quant4_tiers_bit_identical);
    RUN_TEST(test_q8_tiers_bit_identical);
    RUN_TEST(test_convert_tiers_bit_identical);
    return tu_finish();
}
