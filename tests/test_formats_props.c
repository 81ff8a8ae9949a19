/* Properties of every format on fresh seeded N(0,1) data: round-trip error bounds (also
 * quoted in the README), re-quantizing a dequantized tensor gives the same codes, odd
 * sizes, all-zero blocks, NaN/Inf rejected, f16/bf16 conversion corner cases. */
#include "testutil.h"

#include <stdlib.h>

static tu_rng g_rng;

static double rel_err(const float *x, const float *y, int64_t n) {
    msbnb_error_stats st;
    if (msbnb_estimate_quantization_error(&st, x, y, n) != MSBNB_OK) return 1e9;
    return st.rel_frobenius;
}

/* Round-trip relative Frobenius error of NF4/FP4 at a block size. */
static double q4_err(const float *x, int64_t n, int64_t bs, msbnb_qtype t, int dq) {
    int64_t nb = msbnb_nblocks(n, bs);
    uint8_t *p = malloc((size_t)(n + 1) / 2), *qa = malloc((size_t)nb);
    float *am = malloc((size_t)nb * 4), *y = malloc((size_t)n * 4), *nested = malloc((size_t)nb * 4), off;
    CHECK_OK(msbnb_quantize_4bit(p, am, x, MSBNB_DTYPE_F32, n, bs, t, 0));
    if (dq) {
        CHECK_OK(msbnb_double_quant_absmax(qa, nested, &off, am, nb));
        CHECK_OK(msbnb_double_dequant_absmax(am, qa, nested, off, nb));
    }
    CHECK_OK(msbnb_dequantize_4bit(y, MSBNB_DTYPE_F32, p, am, n, bs, t, 0));
    double e = rel_err(x, y, n);
    free(p); free(qa); free(am); free(y); free(nested);
    return e;
}

static double int4_err(const float *x, int64_t rows, int64_t cols, int64_t g, int sym) {
    int64_t gpr, nbytes;
    CHECK_OK(msbnb_int4_sizes(rows, cols, g, &gpr, &nbytes));
    uint8_t *p = malloc((size_t)nbytes);
    float *s = malloc((size_t)(rows * gpr) * 4), *m = malloc((size_t)(rows * gpr) * 4), *y = malloc((size_t)(rows * cols) * 4);
    CHECK_OK(msbnb_quantize_int4(p, s, m, x, rows, cols, g, sym));
    CHECK_OK(msbnb_dequantize_int4(y, p, s, m, rows, cols, g, sym));
    double e = rel_err(x, y, rows * cols);
    free(p); free(s); free(m); free(y);
    return e;
}

static double int8_err(const float *x, int64_t rows, int64_t cols, int sym, int per_tensor) {
    int8_t *q = malloc((size_t)(rows * cols));
    float *s = malloc((size_t)rows * 4), *o = malloc((size_t)rows * 4), *y = malloc((size_t)(rows * cols) * 4);
    CHECK_OK(msbnb_quantize_8bit(q, s, o, x, rows, cols, sym, per_tensor));
    CHECK_OK(msbnb_dequantize_8bit(y, q, s, o, rows, cols, sym, per_tensor));
    double e = rel_err(x, y, rows * cols);
    free(q); free(s); free(o); free(y);
    return e;
}

static void test_roundtrip_error_bounds(void) {
    int64_t rows = 256, cols = 1024, n = rows * cols;
    float *x = malloc((size_t)n * 4);
    tu_fill_normal(&g_rng, x, (size_t)n, 1.0f);
    double e8 = int8_err(x, rows, cols, 1, 0), e8a = int8_err(x, rows, cols, 0, 0);
    double e8t = int8_err(x, rows, cols, 1, 1);
    double nf4 = q4_err(x, n, 64, MSBNB_QTYPE_NF4, 0), nf4dq = q4_err(x, n, 64, MSBNB_QTYPE_NF4, 1);
    double fp4 = q4_err(x, n, 64, MSBNB_QTYPE_FP4, 0);
    double i4s64 = int4_err(x, rows, cols, 64, 1), i4a64 = int4_err(x, rows, cols, 64, 0);
    double i4s128 = int4_err(x, rows, cols, 128, 1);
    double nf4_128 = q4_err(x, n, 128, MSBNB_QTYPE_NF4, 0);
    printf("  rel. Frobenius error on N(0,1) [256 x 1024]: int8 sym %.4f, int8 asym %.4f, int8 per-tensor %.4f,\n"
           "  nf4-b64 %.4f, nf4-b64-dq %.4f, fp4-b64 %.4f, int4-g64 sym %.4f, asym %.4f, int4-g128 sym %.4f, nf4-b128 %.4f\n",
           e8, e8a, e8t, nf4, nf4dq, fp4, i4s64, i4a64, i4s128, nf4_128);
    /* Bounds stated in the README: measured values with ~15 % margin. */
    CHECKF(e8 <= 0.01, "int8 per-row symmetric %.4f > 1 %%", e8);
    CHECK(e8a <= 0.01);
    CHECK(e8t <= 0.02);
    CHECKF(nf4 <= 0.105, "nf4 %.4f", nf4);
    CHECKF(nf4dq <= 0.106, "nf4 dq %.4f", nf4dq);
    CHECK(nf4dq >= nf4 - 1e-4); /* double quant cannot be more accurate than exact absmax... nearly */
    CHECKF(fp4 <= 0.15, "fp4 %.4f", fp4);
    CHECKF(i4s64 <= 0.125, "int4 g64 sym %.4f", i4s64);
    CHECKF(i4a64 <= 0.11, "int4 g64 asym %.4f", i4a64);
    /* NF4 is the better 4-bit code for normal weights at the same block size (QLoRA §3). */
    CHECKF(nf4 < i4s64, "nf4 %.4f !< int4-sym %.4f", nf4, i4s64);
    CHECKF(nf4_128 < i4s128, "nf4-b128 %.4f !< int4-g128 %.4f", nf4_128, i4s128);
    free(x);
}

static void test_requantize_gives_same_codes(void) {
    static const int64_t sizes[] = {1, 3, 63, 65, 4097};
    for (int s = 0; s < 5; s++) {
        int64_t n = sizes[s];
        float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
        tu_fill_normal(&g_rng, x, (size_t)n, 2.0f);
        for (int t = MSBNB_QTYPE_NF4; t <= MSBNB_QTYPE_FP4; t++) {
            int64_t nb = msbnb_nblocks(n, 64);
            uint8_t *p1 = malloc((size_t)(n + 1) / 2), *p2 = malloc((size_t)(n + 1) / 2);
            float *a1 = malloc((size_t)nb * 4), *a2 = malloc((size_t)nb * 4);
            CHECK_OK(msbnb_quantize_4bit(p1, a1, x, MSBNB_DTYPE_F32, n, 64, (msbnb_qtype)t, 1));
            CHECK_OK(msbnb_dequantize_4bit(y, MSBNB_DTYPE_F32, p1, a1, n, 64, (msbnb_qtype)t, 1));
            CHECK_OK(msbnb_quantize_4bit(p2, a2, y, MSBNB_DTYPE_F32, n, 64, (msbnb_qtype)t, 1));
            /* FP4 code 8 is -0: it dequantizes to a zero that re-quantizes as code 0 (+0) */
            int diff = 0;
            for (int64_t i = 0; i < n; i++) {
                int c1 = (i & 1) ? p1[i / 2] & 15 : p1[i / 2] >> 4, c2 = (i & 1) ? p2[i / 2] & 15 : p2[i / 2] >> 4;
                if (t == MSBNB_QTYPE_FP4 && c1 == 8) c1 = 0;
                diff += c1 != c2;
            }
            CHECKF(diff == 0, "%s n=%lld: %d codes change", msbnb_qtype_name((msbnb_qtype)t), (long long)n, diff);
            CHECK(memcmp(a1, a2, (size_t)nb * 4) == 0);
            free(p1); free(p2); free(a1); free(a2);
        }
        for (int sym = 0; sym <= 1; sym++) {
            int64_t gpr, nbytes;
            CHECK_OK(msbnb_int4_sizes(1, n, 32, &gpr, &nbytes));
            uint8_t *p1 = malloc((size_t)nbytes), *p2 = malloc((size_t)nbytes);
            float *s1 = malloc((size_t)gpr * 4), *s2 = malloc((size_t)gpr * 4), *m1 = malloc((size_t)gpr * 4), *m2 = malloc((size_t)gpr * 4);
            CHECK_OK(msbnb_quantize_int4(p1, s1, m1, x, 1, n, 32, sym));
            CHECK_OK(msbnb_dequantize_int4(y, p1, s1, m1, 1, n, 32, sym));
            CHECK_OK(msbnb_quantize_int4(p2, s2, m2, y, 1, n, 32, sym));
            CHECKF(memcmp(p1, p2, (size_t)nbytes) == 0, "int4 sym=%d n=%lld", sym, (long long)n);
            free(p1); free(p2); free(s1); free(s2); free(m1); free(m2);
        }
        int8_t *q1 = malloc((size_t)n), *q2 = malloc((size_t)n);
        float sc1, sc2;
        CHECK_OK(msbnb_quantize_8bit(q1, &sc1, NULL, x, 1, n, 1, 0));
        CHECK_OK(msbnb_dequantize_8bit(y, q1, &sc1, NULL, 1, n, 1, 0));
        CHECK_OK(msbnb_quantize_8bit(q2, &sc2, NULL, y, 1, n, 1, 0));
        CHECK(memcmp(q1, q2, (size_t)n) == 0);
        free(q1); free(q2);
        free(x); free(y);
    }
}

/* The same property for 8-bit blockwise dynamic codes and for the largest 4-bit block
 * (4096: size 4097 has a one-element tail block), at the odd sizes. */
static void test_requantize_blockwise_and_large_blocks(void) {
    static const int64_t sizes[] = {1, 3, 63, 65, 4097};
    for (int s = 0; s < 5; s++) {
        int64_t n = sizes[s];
        float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
        tu_fill_normal(&g_rng, x, (size_t)n, 3.0f);
        static const int64_t bss[2] = {64, 4096};
        for (int b = 0; b < 2; b++) {
            int64_t bs = bss[b], nb = msbnb_nblocks(n, bs);
            uint8_t *q1 = malloc((size_t)n), *q2 = malloc((size_t)n);
            float *a1 = malloc((size_t)nb * 4), *a2 = malloc((size_t)nb * 4);
            /* bnb's signed dynamic map ends at -0.99297 and +1: a block whose largest value
             * is negative comes back 0.7 % smaller and changes its absmax (not its codes),
             * so every block's largest-magnitude value is made positive here. */
            for (int64_t b0 = 0; b0 < n; b0 += bs) {
                int64_t e = b0 + bs < n ? b0 + bs : n, im = b0;
                for (int64_t i = b0; i < e; i++) im = fabsf(x[i]) > fabsf(x[im]) ? i : im;
                if (x[im] < 0)
                    for (int64_t i = b0; i < e; i++) x[i] = -x[i];
            }
            CHECK_OK(msbnb_quantize_blockwise_8bit(q1, a1, x, MSBNB_DTYPE_F32, n, bs, NULL, 1));
            CHECK_OK(msbnb_dequantize_blockwise_8bit(y, MSBNB_DTYPE_F32, q1, a1, n, bs, NULL, 1));
            CHECK_OK(msbnb_quantize_blockwise_8bit(q2, a2, y, MSBNB_DTYPE_F32, n, bs, NULL, 1));
            CHECKF(memcmp(q1, q2, (size_t)n) == 0 && memcmp(a1, a2, (size_t)nb * 4) == 0,
                   "q8 dynamic n=%lld bs=%lld", (long long)n, (long long)bs);
            CHECK_OK(msbnb_quantize_4bit(q1, a1, x, MSBNB_DTYPE_F32, n, bs, MSBNB_QTYPE_NF4, 2));
            CHECK_OK(msbnb_dequantize_4bit(y, MSBNB_DTYPE_F32, q1, a1, n, bs, MSBNB_QTYPE_NF4, 2));
            CHECK_OK(msbnb_quantize_4bit(q2, a2, y, MSBNB_DTYPE_F32, n, bs, MSBNB_QTYPE_NF4, 2));
            CHECKF(memcmp(q1, q2, (size_t)(n + 1) / 2) == 0 && memcmp(a1, a2, (size_t)nb * 4) == 0,
                   "nf4 n=%lld bs=%lld", (long long)n, (long long)bs);
            free(q1), free(q2), free(a1), free(a2);
        }
        free(x), free(y);
    }
}

/* Quantization info of a tensor small enough to work out by hand. */
static void test_info_by_hand(void) {
    const float w[6] = {1.0f, -2.0f, 3.0f, 0.5f, 0.0f, -4.0f}; /* [2, 3] */
    msbnb_quant_info info;
    CHECK_OK(msbnb_get_quantization_info(&info, w, 2, 3, 1.0));
    double mean = -1.5 / 6, std = sqrt(30.25 / 6 - mean * mean);
    CHECK(info.rows == 2 && info.cols == 3);
    CHECK(info.min == -4.0 && info.max == 3.0 && info.absmax == 4.0);
    CHECKF(fabs(info.mean - mean) < 1e-12 && fabs(info.std - std) < 1e-12, "mean %g std %g", info.mean, info.std);
    CHECK(info.row_absmax_min == 3.0 && info.row_absmax_max == 4.0 && info.row_absmax_mean == 3.5);
    /* |w - mean| > 1 * std (2.23): 3.0 and -4.0 */
    CHECKF(fabs(info.outlier_fraction - 2.0 / 6) < 1e-12, "outlier fraction %g", info.outlier_fraction);
    CHECK(info.outlier_sigma == 1.0 && info.bytes_f32 == 24);
    /* every format row costs what the registry says, and the main formats are listed */
    CHECK(info.n_formats > 10 && info.n_formats <= MSBNB_INFO_MAX_FORMATS);
    static const char *want[] = {"f32", "bf16", "int8-row-sym", "int8-row-asym", "int4-g32-sym", "int4-g128-asym",
                                 "nf4-b64", "nf4-b64-dq", "fp4-b64", "fp4-b64-dq", "q8dyn-b256"};
    for (size_t k = 0; k < sizeof want / sizeof *want; k++) {
        int found = 0;
        for (int i = 0; i < info.n_formats; i++) found += strcmp(info.formats[i].name, want[k]) == 0;
        CHECKF(found == 1, "format %s listed %d times", want[k], found);
    }
    for (int i = 0; i < info.n_formats; i++) {
        int64_t bytes = 0;
        double bits = 0;
        CHECK_OK(msbnb_qparams_storage(&info.formats[i].params, 2, 3, &bytes, &bits));
        CHECKF(info.formats[i].bytes == bytes && info.formats[i].bits_per_weight == bits &&
                   fabs(bits - 8.0 * (double)bytes / 6) < 1e-12,
               "%s: %lld bytes, %g bits", info.formats[i].name, (long long)info.formats[i].bytes,
               info.formats[i].bits_per_weight);
    }
    CHECK(info.formats[0].bytes == 24); /* f32: bytes after = bytes before */
    /* outlier_sigma <= 0 means 3 */
    CHECK_OK(msbnb_get_quantization_info(&info, w, 2, 3, 0));
    CHECK(info.outlier_sigma == 3.0 && info.outlier_fraction == 0.0);
}

static void test_zero_blocks_and_odd_sizes(void) {
    static const int64_t sizes[] = {1, 3, 63, 65, 4097};
    for (int s = 0; s < 5; s++) {
        int64_t n = sizes[s], nb = msbnb_nblocks(n, 32);
        float *x = calloc((size_t)n, 4), *y = malloc((size_t)n * 4);
        uint8_t *p = malloc((size_t)(n + 1) / 2), *q = malloc((size_t)n);
        float *am = malloc((size_t)nb * 4);
        for (int t = MSBNB_QTYPE_NF4; t <= MSBNB_QTYPE_FP4; t++) {
            CHECK_OK(msbnb_quantize_4bit(p, am, x, MSBNB_DTYPE_F32, n, 32, (msbnb_qtype)t, 1));
            for (int64_t b = 0; b < nb; b++) CHECK(am[b] == 0.0f);
            CHECK_OK(msbnb_dequantize_4bit(y, MSBNB_DTYPE_F32, p, am, n, 32, (msbnb_qtype)t, 1));
            for (int64_t i = 0; i < n; i++) CHECK(y[i] == 0.0f);
        }
        CHECK_OK(msbnb_quantize_blockwise_8bit(q, am, x, MSBNB_DTYPE_F32, n, 32, NULL, 1));
        CHECK_OK(msbnb_dequantize_blockwise_8bit(y, MSBNB_DTYPE_F32, q, am, n, 32, NULL, 1));
        for (int64_t i = 0; i < n; i++) CHECK(y[i] == 0.0f);
        /* odd sizes with data: dequantized values stay within the block's absmax */
        tu_fill_normal(&g_rng, x, (size_t)n, 1.0f);
        CHECK_OK(msbnb_quantize_4bit(p, am, x, MSBNB_DTYPE_F32, n, 32, MSBNB_QTYPE_NF4, 1));
        CHECK_OK(msbnb_dequantize_4bit(y, MSBNB_DTYPE_F32, p, am, n, 32, MSBNB_QTYPE_NF4, 1));
        for (int64_t i = 0; i < n; i++) CHECK(fabsf(y[i]) <= am[i / 32] && fabsf(y[i] - x[i]) <= 0.35f * am[i / 32]);
        free(x); free(y); free(p); free(q); free(am);
    }
}

/* Two codes per byte, element 2i in the high nibble (bitsandbytes' order), an odd count
 * padding the last low nibble with 0; unpack inverts pack; quantize_4bit's bytes follow
 * the same order (each unpacked code times its block's absmax is the dequantized value). */
/* msbnb_dequantize_int4 gives the specification's element formula, (u - 8) s or u s + m,
 * bit for bit on every CPU tier: power-of-two symmetric groups take the blockwise 4-bit
 * kernel, the rest the group loop (short last groups, odd element offsets per row). */
static void test_dequantize_int4_is_the_formula(void) {
    static const int64_t shapes[][3] = {{3, 128, 32}, {5, 256, 64}, {2, 384, 128}, {3, 100, 32}, {7, 33, 6}, {1, 1, 2}};
    static const char *tiers[] = {"scalar", "avx2", "avx512"};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        const int64_t rows = shapes[si][0], cols = shapes[si][1], gs = shapes[si][2];
        int64_t gpr, pb;
        CHECK_OK(msbnb_int4_sizes(rows, cols, gs, &gpr, &pb));
        uint8_t *p = malloc((size_t)pb);
        float *sc = malloc((size_t)(rows * gpr) * 4), *mn = malloc((size_t)(rows * gpr) * 4);
        float *out = malloc((size_t)(rows * cols) * 4);
        for (int64_t i = 0; i < pb; i++) p[i] = (uint8_t)tu_rng_u64(&g_rng);
        tu_fill_normal(&g_rng, sc, (size_t)(rows * gpr), 0.01f);
        tu_fill_normal(&g_rng, mn, (size_t)(rows * gpr), 0.05f);
        for (int t = 0; t < 3; t++) {
            msbnb_cpu_tier tier;
            CHECK_OK(msbnb_cpu_tier_from_name(tiers[t], &tier));
            if (!msbnb_cpu_tier_supported(tier)) continue;
            setenv("MSBNB_CPU", tiers[t], 1);
            for (int sym = 0; sym < 2; sym++) {
                CHECK_OK(msbnb_dequantize_int4(out, p, sc, mn, rows, cols, gs, sym));
                int bad = 0;
                for (int64_t r = 0; r < rows; r++)
                    for (int64_t c = 0; c < cols; c++) {
                        const int64_t i = r * cols + c, g = r * gpr + c / gs;
                        const float u = (float)((i & 1) ? (p[i >> 1] & 15) : (p[i >> 1] >> 4));
                        volatile float prod = sym ? (u - 8.0f) * sc[g] : u * sc[g]; /* no contraction */
                        const float want = sym ? prod : prod + mn[g];
                        bad += memcmp(&want, &out[i], 4) != 0;
                    }
                CHECKF(bad == 0, "int4 %lldx%lld g%lld sym=%d %s: %d values differ", (long long)rows,
                       (long long)cols, (long long)gs, sym, tiers[t], bad);
            }
            unsetenv("MSBNB_CPU");
        }
        free(p), free(sc), free(mn), free(out);
    }
}

static void test_pack_unpack_nibble_order(void) {
    static const int64_t sizes[] = {1, 3, 63, 65, 4097};
    for (int s = 0; s < 5; s++) {
        int64_t n = sizes[s], nbytes = (n + 1) / 2;
        uint8_t *codes = malloc((size_t)n), *back = malloc((size_t)n), *packed = malloc((size_t)nbytes);
        for (int64_t i = 0; i < n; i++) codes[i] = (uint8_t)(tu_rng_u64(&g_rng) & 0xff); /* high bits ignored */
        memset(packed, 0xee, (size_t)nbytes);
        CHECK_OK(msbnb_pack_4bit(packed, codes, n));
        int bad = 0;
        for (int64_t i = 0; i < n; i++) {
            uint8_t want = codes[i] & 15, got = (i & 1) ? packed[i / 2] & 15 : packed[i / 2] >> 4;
            bad += want != got;
        }
        CHECKF(bad == 0, "n=%lld: %d nibbles out of place", (long long)n, bad);
        if (n & 1) CHECKF((packed[nbytes - 1] & 15) == 0, "n=%lld: pad nibble %d", (long long)n, packed[nbytes - 1] & 15);
        memset(back, 0xee, (size_t)n);
        CHECK_OK(msbnb_unpack_4bit(back, packed, n));
        bad = 0;
        for (int64_t i = 0; i < n; i++) bad += back[i] != (codes[i] & 15);
        CHECKF(bad == 0, "n=%lld: unpack differs in %d places", (long long)n, bad);
        /* the quantizer's layout */
        float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4), *am = malloc((size_t)msbnb_nblocks(n, 32) * 4);
        tu_fill_normal(&g_rng, x, (size_t)n, 1.0f);
        CHECK_OK(msbnb_quantize_4bit(packed, am, x, MSBNB_DTYPE_F32, n, 32, MSBNB_QTYPE_NF4, 1));
        CHECK_OK(msbnb_dequantize_4bit(y, MSBNB_DTYPE_F32, packed, am, n, 32, MSBNB_QTYPE_NF4, 1));
        CHECK_OK(msbnb_unpack_4bit(back, packed, n));
        bad = 0;
        for (int64_t i = 0; i < n; i++) bad += y[i] != msbnb_nf4_code()[back[i]] * am[i / 32];
        CHECKF(bad == 0, "n=%lld: %d quantized nibbles decode to other values", (long long)n, bad);
        free(x), free(y), free(am);
        free(codes), free(back), free(packed);
    }
}

/* Bulk conversion equals the scalar RNE conversions element by element at odd sizes
 * (vector bodies and tails), NaN staying NaN and +-Inf staying +-Inf. */
static void test_bulk_conversion_odd_sizes(void) {
    static const int64_t sizes[] = {1, 3, 63, 65, 4097};
    for (int s = 0; s < 5; s++) {
        int64_t n = sizes[s];
        float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
        uint16_t *h = malloc((size_t)n * 2), *b = malloc((size_t)n * 2);
        tu_fill_normal(&g_rng, x, (size_t)n, 100.0f);
        x[n - 1] = NAN; /* the last element sits in the scalar tail for every vector width */
        if (n > 2) x[n / 2] = -INFINITY, x[0] = INFINITY;
        CHECK_OK(msbnb_convert(h, MSBNB_DTYPE_F16, x, MSBNB_DTYPE_F32, n));
        CHECK_OK(msbnb_convert(b, MSBNB_DTYPE_BF16, x, MSBNB_DTYPE_F32, n));
        int bad = 0;
        for (int64_t i = 0; i < n; i++) {
            if (isnan(x[i])) {
                bad += !isnan(msbnb_f16_to_f32(h[i])) || !isnan(msbnb_bf16_to_f32(b[i]));
                continue;
            }
            bad += h[i] != msbnb_f32_to_f16(x[i]) || b[i] != msbnb_f32_to_bf16(x[i]);
        }
        CHECKF(bad == 0, "n=%lld: %d bulk conversions differ from the scalar ones", (long long)n, bad);
        CHECK_OK(msbnb_convert(y, MSBNB_DTYPE_F32, b, MSBNB_DTYPE_BF16, n));
        CHECK(isnan(y[n - 1]));
        if (n > 2) CHECK(y[0] == INFINITY && y[n / 2] == -INFINITY);
        bad = 0;
        for (int64_t i = 0; i < n; i++) bad += !isnan(x[i]) && memcmp(&y[i], &(float){msbnb_bf16_to_f32(b[i])}, 4) != 0;
        CHECK(bad == 0);
        CHECK_OK(msbnb_convert(y, MSBNB_DTYPE_F32, h, MSBNB_DTYPE_F16, n));
        CHECK(isnan(y[n - 1]));
        if (n > 2) CHECK(y[0] == INFINITY && y[n / 2] == -INFINITY);
        free(x), free(y), free(h), free(b);
    }
}

static void test_nonfinite_input_is_an_error(void) {
    /* NaN, +Inf and -Inf, inside a block and in the tail element, in every input dtype and
     * every format variant: an error status with a message, never codes. */
    enum { N = 100 };
    float x[N], s[N], o[N];
    uint16_t xh[N], xb[N];
    uint8_t p[N];
    float am[4];
    int8_t q8[N];
    static const float bad_vals[3] = {NAN, INFINITY, -INFINITY};
    static const int at[2] = {77, N - 1};
    for (int k = 0; k < 3; k++)
        for (int a = 0; a < 2; a++) {
            tu_fill_normal(&g_rng, x, N, 1.0f);
            x[at[a]] = bad_vals[k];
            msbnb_convert(xh, MSBNB_DTYPE_F16, x, MSBNB_DTYPE_F32, N);
            msbnb_convert(xb, MSBNB_DTYPE_BF16, x, MSBNB_DTYPE_F32, N);
            const void *src[3] = {x, xh, xb};
            static const msbnb_dtype dts[3] = {MSBNB_DTYPE_F32, MSBNB_DTYPE_F16, MSBNB_DTYPE_BF16};
            for (int d = 0; d < 3; d++) {
                CHECK_STATUS(msbnb_quantize_4bit(p, am, src[d], dts[d], N, 32, MSBNB_QTYPE_NF4, 1), MSBNB_ERR_NON_FINITE);
                CHECK_STATUS(msbnb_quantize_4bit(p, am, src[d], dts[d], N, 64, MSBNB_QTYPE_FP4, 2), MSBNB_ERR_NON_FINITE);
                CHECK_STATUS(msbnb_quantize_blockwise_8bit(p, am, src[d], dts[d], N, 32, NULL, 1), MSBNB_ERR_NON_FINITE);
                int64_t no, oc[N];
                CHECK_STATUS(msbnb_int8_vectorwise_quant(q8, s, NULL, 0, &no, src[d], dts[d], 1, N, 0), MSBNB_ERR_NON_FINITE);
                CHECK_STATUS(msbnb_int8_vectorwise_quant(q8, s, oc, N, &no, src[d], dts[d], 4, N / 4, 6.0f), MSBNB_ERR_NON_FINITE);
            }
            for (int sym = 0; sym <= 1; sym++) {
                CHECK_STATUS(msbnb_quantize_8bit(q8, s, o, x, 1, N, sym, 0), MSBNB_ERR_NON_FINITE);
                CHECK_STATUS(msbnb_quantize_8bit(q8, s, o, x, 4, N / 4, sym, 1), MSBNB_ERR_NON_FINITE);
                CHECK_STATUS(msbnb_quantize_int4(p, s, o, x, 1, N, 32, sym), MSBNB_ERR_NON_FINITE);
                CHECK_STATUS(msbnb_quantize_int4(p, s, o, x, 5, N / 5, 4, sym), MSBNB_ERR_NON_FINITE);
            }
            msbnb_error_stats st;
            CHECK_STATUS(msbnb_estimate_quantization_error(&st, x, x, N), MSBNB_ERR_NON_FINITE);
            float ok[N];
            tu_fill_normal(&g_rng, ok, N, 1.0f);
            CHECK_STATUS(msbnb_estimate_quantization_error(&st, ok, x, N), MSBNB_ERR_NON_FINITE);
            msbnb_quant_info info;
            CHECK_STATUS(msbnb_get_quantization_info(&info, x, 1, N, 3), MSBNB_ERR_NON_FINITE);
            /* double quantization of a non-finite absmax, and a non-finite offset */
            uint8_t qa[N] = {0};
            float nested[1] = {1.0f}, off;
            CHECK_STATUS(msbnb_double_quant_absmax(qa, nested, &off, x, N), MSBNB_ERR_NON_FINITE);
            CHECK_STATUS(msbnb_double_dequant_absmax(s, qa, nested, bad_vals[k], N), MSBNB_ERR_NON_FINITE);
        }
}

static void test_f16_bf16_conversion(void) {
    /* every f16 value survives f16 -> f32 -> f16 exactly (NaNs stay NaN) */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = msbnb_f16_to_f32((uint16_t)h);
        uint16_t back = msbnb_f32_to_f16(f);
        if (isnan(f)) bad += (back & 0x7c00) != 0x7c00 || (back & 0x3ff) == 0;
        else bad += back != h;
    }
    CHECKF(bad == 0, "%d f16 values do not round-trip", bad);
    CHECK(msbnb_f32_to_f16(65520.0f) == 0x7c00);        /* rounds to Inf */
    CHECK(msbnb_f32_to_f16(65519.0f) == 0x7bff);        /* max finite */
    CHECK(msbnb_f32_to_f16(5.9604645e-8f) == 0x0001);   /* smallest subnormal */
    CHECK(msbnb_f32_to_f16(2.9802322e-8f) == 0x0000);   /* half of it: ties to even (0) */
    CHECK(msbnb_f32_to_f16(1.0009765625f + 0.00048828125f) == 0x3c02); /* tie -> even */
    CHECK(msbnb_f32_to_bf16(1.00390625f) == 0x3f80);    /* tie -> even (down) */
    CHECK(msbnb_f32_to_bf16(1.01171875f) == 0x3f82);    /* tie -> even (up) */
    CHECK(msbnb_f32_to_bf16(INFINITY) == 0x7f80 && msbnb_f32_to_bf16(-INFINITY) == 0xff80);
    CHECK(isnan(msbnb_bf16_to_f32(msbnb_f32_to_bf16(NAN))));
    CHECK(isnan(msbnb_f16_to_f32(msbnb_f32_to_f16(NAN))));
    CHECK(msbnb_f32_to_bf16(3.4028235e38f) == 0x7f80); /* max float rounds up to Inf in bf16 */
}

static void test_info_and_stats(void) {
    int64_t rows = 64, cols = 256;
    float *x = malloc((size_t)(rows * cols) * 4);
    tu_fill_normal(&g_rng, x, (size_t)(rows * cols), 1.0f);
    x[5] = 40.0f;
    msbnb_quant_info info;
    CHECK_OK(msbnb_get_quantization_info(&info, x, rows, cols, 3.0));
    CHECK(info.max == 40.0 && info.absmax == 40.0 && info.row_absmax_max == 40.0);
    CHECK(info.outlier_fraction > 0 && info.outlier_fraction < 0.01);
    CHECK(info.bytes_f32 == rows * cols * 4);
    int found = 0;
    for (int i = 0; i < info.n_formats; i++) {
        if (strcmp(info.formats[i].name, "nf4-b64") == 0) {
            found++;
            CHECK(fabs(info.formats[i].bits_per_weight - 4.5) < 1e-9); /* 4 + 32/64 */
        }
        if (strcmp(info.formats[i].name, "nf4-b64-dq") == 0) {
            found++; /* 4 + 8/64 + (32/(64*256)) + offset amortised */
            CHECK(info.formats[i].bits_per_weight > 4.12 && info.formats[i].bits_per_weight < 4.14);
        }
        if (strcmp(info.formats[i].name, "int8-row-sym") == 0) {
            found++;
            CHECK(info.formats[i].bytes == rows * cols + rows * 4);
        }
    }
    CHECK(found == 3);
    msbnb_error_stats st;
    CHECK_OK(msbnb_estimate_quantization_error(&st, x, x, rows * cols));
    CHECK(st.max_abs == 0 && st.rel_frobenius == 0 && isinf(st.snr_db) && fabs(st.cosine - 1) < 1e-12);
    float a[2] = {3, 4}, b[2] = {3, 3};
    CHECK_OK(msbnb_estimate_quantization_error(&st, a, b, 2));
    CHECK(fabs(st.max_abs - 1) < 1e-12 && fabs(st.mean_abs - 0.5) < 1e-12);
    CHECK(fabs(st.rmse - sqrt(0.5)) < 1e-12 && fabs(st.rel_frobenius - 0.2) < 1e-12);
    CHECK(fabs(st.snr_db - 10 * log10(25.0)) < 1e-9);
    CHECK(fabs(st.cosine - 21.0 / (5.0 * sqrt(18.0))) < 1e-12);
    free(x);
}

int main(void) {
    tu_rng_init(&g_rng, tu_seed());
    RUN_TEST(test_roundtrip_error_bounds);
    RUN_TEST(test_dequantize_int4_is_the_formula);
    RUN_TEST(test_requantize_gives_same_codes);
    RUN_TEST(test_requantize_blockwise_and_large_blocks);
    RUN_TEST(test_zero_blocks_and_odd_sizes);
    RUN_TEST(test_pack_unpack_nibble_order);
    RUN_TEST(test_bulk_conversion_odd_sizes);
    RUN_TEST(test_nonfinite_input_is_an_error);
    RUN_TEST(test_f16_bf16_conversion);
    RUN_TEST(test_info_and_stats);
    RUN_TEST(test_info_by_hand);
    return tu_finish();
}
