/* The CUDA formats against the CPU path, bit for bit: NF4/FP4 (+ double quantization),
 * 8-bit blockwise, LLM.int8 row-wise, INT8 per row/tensor, INT4 per group, on fresh
 * random inputs of odd sizes and on the bitsandbytes reference inputs. Skips (exit 77)
 * without a GPU. */
#include "cuda_testutil.h"

#ifdef MSBNB_HAVE_CUDA

static tu_rng g_rng;

static const msbnb_dtype k_dtypes[3] = {MSBNB_DTYPE_F32, MSBNB_DTYPE_F16, MSBNB_DTYPE_BF16};

/* n random values N(0, scale) in dtype dt (host, malloc), with a few exact zeros and
 * repeated values so ties and zero blocks occur. */
static void *rand_input(msbnb_dtype dt, int64_t n, float scale) {
    float *f = malloc((size_t)n * 4);
    tu_fill_normal(&g_rng, f, (size_t)n, scale);
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = tu_rng_u64(&g_rng) % 64;
        if (r == 0) f[i] = 0.0f;
        else if (r == 1 && i > 0) f[i] = -f[i - 1];
    }
    if (dt == MSBNB_DTYPE_F32) return f;
    uint16_t *h = malloc((size_t)n * 2);
    for (int64_t i = 0; i < n; i++) h[i] = dt == MSBNB_DTYPE_F16 ? msbnb_f32_to_f16(f[i]) : msbnb_f32_to_bf16(f[i]);
    free(f);
    return h;
}

/* One 4-bit case: quantize (+dq) and dequantize on both sides, compare every byte. */
static void check_q4(const void *x, msbnb_dtype dt, int64_t n, int64_t bs, msbnb_qtype qt, const char *what) {
    size_t esz = msbnb_dtype_size(dt), pb = (size_t)(n + 1) / 2;
    int64_t nb = msbnb_nblocks(n, bs), nn = msbnb_nblocks(nb, 256);
    uint8_t *packed = malloc(pb);
    float *absmax = malloc((size_t)nb * 4);
    CHECK_OK(msbnb_quantize_4bit(packed, absmax, x, dt, n, bs, qt, 1));
    void *dx = cu_up(x, (size_t)n * esz);
    uint8_t *dp = cu_poison(pb);
    float *da = cu_poison((size_t)nb * 4);
    CHECK_OK(msbnb_cuda_quantize_4bit(dp, da, dx, dt, n, bs, qt));
    uint8_t *gp = cu_down(dp, pb);
    float *ga = cu_down(da, (size_t)nb * 4);
    int d1 = cu_ndiff(gp, packed, pb), d2 = cu_ndiff(ga, absmax, (size_t)nb * 4);
    CHECKF(d1 == 0 && d2 == 0, "%s: %d packed bytes, %d absmax bytes differ", what, d1, d2);
    /* dequantize into each float type */
    for (int o = 0; o < 3; o++) {
        size_t osz = msbnb_dtype_size(k_dtypes[o]);
        void *ref = malloc((size_t)n * osz);
        CHECK_OK(msbnb_dequantize_4bit(ref, k_dtypes[o], packed, absmax, n, bs, qt, 1));
        void *dout = cu_poison((size_t)n * osz);
        CHECK_OK(msbnb_cuda_dequantize_4bit(dout, k_dtypes[o], dp, da, n, bs, qt));
        void *got = cu_down(dout, (size_t)n * osz);
        int d = cu_ndiff(got, ref, (size_t)n * osz);
        CHECKF(d == 0, "%s: dequant to %s: %d bytes differ", what, msbnb_dtype_name(k_dtypes[o]), d);
        free(ref);
        free(got);
        msbnb_cuda_free(dout);
    }
    /* double quantization of the absmax */
    uint8_t *qa = malloc((size_t)nb);
    float *nested = malloc((size_t)nn * 4), off = 0;
    CHECK_OK(msbnb_double_quant_absmax(qa, nested, &off, absmax, nb));
    uint8_t *dqa = cu_poison((size_t)nb);
    float *dnest = cu_poison((size_t)nn * 4), *doff = cu_poison(4);
    CHECK_OK(msbnb_cuda_double_quant_absmax(dqa, dnest, doff, da, nb));
    uint8_t *gqa = cu_down(dqa, (size_t)nb);
    float *gnest = cu_down(dnest, (size_t)nn * 4), *goff = cu_down(doff, 4);
    d1 = cu_ndiff(gqa, qa, (size_t)nb);
    d2 = cu_ndiff(gnest, nested, (size_t)nn * 4);
    CHECKF(d1 == 0 && d2 == 0 && memcmp(goff, &off, 4) == 0,
           "%s: double quant: %d qabsmax, %d nested bytes differ, offset %.9g vs %.9g", what, d1, d2, goff[0], off);
    float *am2 = malloc((size_t)nb * 4);
    CHECK_OK(msbnb_double_dequant_absmax(am2, qa, nested, off, nb));
    float *dam2 = cu_poison((size_t)nb * 4);
    CHECK_OK(msbnb_cuda_double_dequant_absmax(dam2, dqa, dnest, doff, nb));
    float *gam2 = cu_down(dam2, (size_t)nb * 4);
    CHECKF(cu_ndiff(gam2, am2, (size_t)nb * 4) == 0, "%s: double dequant differs", what);
    free(packed), free(absmax), free(gp), free(ga), free(qa), free(nested), free(gqa), free(gnest), free(goff);
    free(am2), free(gam2);
    msbnb_cuda_free(dx), msbnb_cuda_free(dp), msbnb_cuda_free(da), msbnb_cuda_free(dqa), msbnb_cuda_free(dnest);
    msbnb_cuda_free(doff), msbnb_cuda_free(dam2);
}

static void test_cuda_q4_matches_cpu(void) {
    static const int64_t sizes[] = {1, 3, 64, 4097, 65569, 1048577};
    static const int64_t bss[] = {32, 64, 128, 256, 4096};
    int c = 0;
    for (int t = 0; t < 2; t++)
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
            for (size_t b = 0; b < sizeof bss / sizeof *bss; b++) {
                msbnb_dtype dt = k_dtypes[c++ % 3];
                void *x = rand_input(dt, sizes[s], 1.0f + (float)b);
                char what[128];
                snprintf(what, sizeof what, "%s n=%lld bs=%lld %s", t ? "fp4" : "nf4", (long long)sizes[s],
                         (long long)bss[b], msbnb_dtype_name(dt));
                check_q4(x, dt, sizes[s], bss[b], t ? MSBNB_QTYPE_FP4 : MSBNB_QTYPE_NF4, what);
                free(x);
            }
}

static void test_cuda_q4_matches_cpu_on_reference_inputs(void) {
    tu_st *f = tu_st_open("formats.safetensors");
    CHECK(f != NULL);
    if (!f) return;
    static const char *ins[] = {"in.a", "in.tail", "in.zeros", "in.outl", "in.bf16"};
    for (int k = 0; k < 5; k++) {
        const char *dts;
        size_t nb;
        const void *x = tu_st_get(f, ins[k], &dts, NULL, NULL, &nb);
        CHECKF(x != NULL, "missing %s", ins[k]);
        if (!x) continue;
        msbnb_dtype dt;
        CHECK_OK(msbnb_dtype_from_name(dts, &dt));
        int64_t n = (int64_t)(nb / msbnb_dtype_size(dt));
        for (int t = 0; t < 2; t++)
            for (int64_t bs = 32; bs <= 256; bs *= 2) {
                char what[128];
                snprintf(what, sizeof what, "%s %s bs=%lld", ins[k], t ? "fp4" : "nf4", (long long)bs);
                check_q4(x, dt, n, bs, t ? MSBNB_QTYPE_FP4 : MSBNB_QTYPE_NF4, what);
            }
    }
    tu_st_close(f);
}

static void test_cuda_q8_blockwise_matches_cpu(void) {
    static const int64_t sizes[] = {1, 3, 4097, 65569, 1048577};
    static const int64_t bss[] = {32, 64, 256, 2048, 4096};
    int c = 0;
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
        for (size_t b = 0; b < sizeof bss / sizeof *bss; b++) {
            int64_t n = sizes[s], bs = bss[b], nb = msbnb_nblocks(n, bs);
            msbnb_dtype dt = k_dtypes[c++ % 3];
            size_t esz = msbnb_dtype_size(dt);
            void *x = rand_input(dt, n, 0.5f);
            uint8_t *q = malloc((size_t)n);
            float *am = malloc((size_t)nb * 4);
            CHECK_OK(msbnb_quantize_blockwise_8bit(q, am, x, dt, n, bs, NULL, 1));
            void *dx = cu_up(x, (size_t)n * esz);
            uint8_t *dq = cu_poison((size_t)n);
            float *dam = cu_poison((size_t)nb * 4);
            CHECK_OK(msbnb_cuda_quantize_blockwise_8bit(dq, dam, dx, dt, n, bs, NULL));
            uint8_t *gq = cu_down(dq, (size_t)n);
            float *gam = cu_down(dam, (size_t)nb * 4);
            int d1 = cu_ndiff(gq, q, (size_t)n), d2 = cu_ndiff(gam, am, (size_t)nb * 4);
            CHECKF(d1 == 0 && d2 == 0, "q8 n=%lld bs=%lld %s: %d codes, %d absmax bytes differ", (long long)n,
                   (long long)bs, msbnb_dtype_name(dt), d1, d2);
            msbnb_dtype ot = k_dtypes[(c + 1) % 3];
            size_t osz = msbnb_dtype_size(ot);
            void *ref = malloc((size_t)n * osz);
            CHECK_OK(msbnb_dequantize_blockwise_8bit(ref, ot, q, am, n, bs, NULL, 1));
            void *dout = cu_poison((size_t)n * osz);
            CHECK_OK(msbnb_cuda_dequantize_blockwise_8bit(dout, ot, dq, dam, n, bs, NULL));
            void *got = cu_down(dout, (size_t)n * osz);
            CHECKF(cu_ndiff(got, ref, (size_t)n * osz) == 0, "q8 dequant n=%lld differs", (long long)n);
            free(x), free(q), free(am), free(gq), free(gam), free(ref), free(got);
            msbnb_cuda_free(dx), msbnb_cuda_free(dq), msbnb_cuda_free(dam), msbnb_cuda_free(dout);
        }
}

static void test_cuda_int8_vectorwise_matches_cpu(void) {
    static const int64_t shapes[][2] = {{1, 1}, {3, 4097}, {17, 300}, {64, 4096}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int t = 0; t < 3; t++) {
            int64_t rows = shapes[s][0], cols = shapes[s][1], n = rows * cols;
            msbnb_dtype dt = k_dtypes[t];
            size_t esz = msbnb_dtype_size(dt);
            void *a = rand_input(dt, n, 3.0f);
            if (rows > 2) memset((char *)a + (size_t)cols * esz, 0, (size_t)cols * esz); /* a zero row */
            int8_t *q = malloc((size_t)n);
            float *ra = malloc((size_t)rows * 4);
            CHECK_OK(msbnb_int8_vectorwise_quant(q, ra, NULL, 0, NULL, a, dt, rows, cols, 0.0f));
            void *da = cu_up(a, (size_t)n * esz);
            int8_t *dq = cu_poison((size_t)n);
            float *dra = cu_poison((size_t)rows * 4);
            CHECK_OK(msbnb_cuda_int8_vectorwise_quant(dq, dra, da, dt, rows, cols));
            int8_t *gq = cu_down(dq, (size_t)n);
            float *gra = cu_down(dra, (size_t)rows * 4);
            int d1 = cu_ndiff(gq, q, (size_t)n), d2 = cu_ndiff(gra, ra, (size_t)rows * 4);
            CHECKF(d1 == 0 && d2 == 0, "int8 rowwise %lldx%lld %s: %d codes, %d absmax bytes differ", (long long)rows,
                   (long long)cols, msbnb_dtype_name(dt), d1, d2);
            float *ref = malloc((size_t)n * 4);
            CHECK_OK(msbnb_int8_vectorwise_dequant(ref, q, ra, rows, cols));
            float *dout = cu_poison((size_t)n * 4);
            CHECK_OK(msbnb_cuda_int8_vectorwise_dequant(dout, dq, dra, rows, cols));
            float *got = cu_down(dout, (size_t)n * 4);
            CHECKF(cu_ndiff(got, ref, (size_t)n * 4) == 0, "int8 rowwise dequant differs");
            free(a), free(q), free(ra), free(gq), free(gra), free(ref), free(got);
            msbnb_cuda_free(da), msbnb_cuda_free(dq), msbnb_cuda_free(dra), msbnb_cuda_free(dout);
        }
}

static void test_cuda_quantize_8bit_matches_cpu(void) {
    static const int64_t shapes[][2] = {{1, 1}, {3, 7}, {5, 70001}, {33, 129}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int sym = 0; sym < 2; sym++)
            for (int pt = 0; pt < 2; pt++) {
                int64_t rows = shapes[s][0], cols = shapes[s][1], n = rows * cols, g = pt ? 1 : rows;
                float *w = rand_input(MSBNB_DTYPE_F32, n, 2.0f);
                if (!pt && rows > 2)
                    for (int64_t c = 0; c < cols; c++) w[cols + c] = 1.5f + 0.001f * (float)(c % 7); /* all > 0 */
                int8_t *q = malloc((size_t)n);
                float *sc = malloc((size_t)g * 4), *of = malloc((size_t)g * 4);
                CHECK_OK(msbnb_quantize_8bit(q, sc, of, w, rows, cols, sym, pt));
                float *dw = cu_up(w, (size_t)n * 4);
                int8_t *dq = cu_poison((size_t)n);
                float *dsc = cu_poison((size_t)g * 4), *dof = cu_poison((size_t)g * 4);
                CHECK_OK(msbnb_cuda_quantize_8bit(dq, dsc, dof, dw, rows, cols, sym, pt));
                int8_t *gq = cu_down(dq, (size_t)n);
                float *gsc = cu_down(dsc, (size_t)g * 4), *gof = cu_down(dof, (size_t)g * 4);
                int d1 = cu_ndiff(gq, q, (size_t)n), d2 = cu_ndiff(gsc, sc, (size_t)g * 4);
                int d3 = sym ? 0 : cu_ndiff(gof, of, (size_t)g * 4);
                CHECKF(d1 == 0 && d2 == 0 && d3 == 0, "int8 %lldx%lld sym=%d pt=%d: %d codes, %d scale, %d offset bytes differ",
                       (long long)rows, (long long)cols, sym, pt, d1, d2, d3);
                float *ref = malloc((size_t)n * 4);
                CHECK_OK(msbnb_dequantize_8bit(ref, q, sc, of, rows, cols, sym, pt));
                float *dout = cu_poison((size_t)n * 4);
                CHECK_OK(msbnb_cuda_dequantize_8bit(dout, dq, dsc, dof, rows, cols, sym, pt));
                float *got = cu_down(dout, (size_t)n * 4);
                CHECKF(cu_ndiff(got, ref, (size_t)n * 4) == 0, "int8 dequant sym=%d pt=%d differs", sym, pt);
                free(w), free(q), free(sc), free(of), free(gq), free(gsc), free(gof), free(ref), free(got);
                msbnb_cuda_free(dw), msbnb_cuda_free(dq), msbnb_cuda_free(dsc), msbnb_cuda_free(dof);
                msbnb_cuda_free(dout);
            }
}

static void test_cuda_int4_matches_cpu(void) {
    static const int64_t shapes[][2] = {{1, 1}, {3, 7}, {33, 300}, {8, 4096}};
    static const int64_t gss[] = {2, 32, 128};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (size_t gi = 0; gi < 3; gi++)
            for (int sym = 0; sym < 2; sym++) {
                int64_t rows = shapes[s][0], cols = shapes[s][1], n = rows * cols, gs = gss[gi], gpr, pb;
                CHECK_OK(msbnb_int4_sizes(rows, cols, gs, &gpr, &pb));
                float *w = rand_input(MSBNB_DTYPE_F32, n, 1.0f);
                if (n > 8) { /* equal magnitudes of both signs: the first one must win */
                    w[1] = 9.0f;
                    w[0] = -9.0f;
                    for (int64_t i = 2; i < 6; i++) w[i] = 0.0f;
                }
                uint8_t *p = malloc((size_t)pb);
                float *sc = malloc((size_t)(rows * gpr) * 4), *mn = malloc((size_t)(rows * gpr) * 4);
                CHECK_OK(msbnb_quantize_int4(p, sc, mn, w, rows, cols, gs, sym));
                float *dw = cu_up(w, (size_t)n * 4);
                uint8_t *dp = cu_poison((size_t)pb);
                float *dsc = cu_poison((size_t)(rows * gpr) * 4), *dmn = cu_poison((size_t)(rows * gpr) * 4);
                CHECK_OK(msbnb_cuda_quantize_int4(dp, dsc, dmn, dw, rows, cols, gs, sym));
                uint8_t *gp = cu_down(dp, (size_t)pb);
                float *gsc = cu_down(dsc, (size_t)(rows * gpr) * 4), *gmn = cu_down(dmn, (size_t)(rows * gpr) * 4);
                int d1 = cu_ndiff(gp, p, (size_t)pb), d2 = cu_ndiff(gsc, sc, (size_t)(rows * gpr) * 4);
                int d3 = sym ? 0 : cu_ndiff(gmn, mn, (size_t)(rows * gpr) * 4);
                CHECKF(d1 == 0 && d2 == 0 && d3 == 0, "int4 %lldx%lld g=%lld sym=%d: %d packed, %d scale, %d min bytes differ",
                       (long long)rows, (long long)cols, (long long)gs, sym, d1, d2, d3);
                float *ref = malloc((size_t)n * 4);
                CHECK_OK(msbnb_dequantize_int4(ref, p, sc, mn, rows, cols, gs, sym));
                float *dout = cu_poison((size_t)n * 4);
                CHECK_OK(msbnb_cuda_dequantize_int4(dout, dp, dsc, dmn, rows, cols, gs, sym));
                float *got = cu_down(dout, (size_t)n * 4);
                CHECKF(cu_ndiff(got, ref, (size_t)n * 4) == 0, "int4 dequant differs");
                free(w), free(p), free(sc), free(mn), free(gp), free(gsc), free(gmn), free(ref), free(got);
                msbnb_cuda_free(dw), msbnb_cuda_free(dp), msbnb_cuda_free(dsc), msbnb_cuda_free(dmn);
                msbnb_cuda_free(dout);
            }
}

static void test_cuda_rejects_bad_input(void) {
    int64_t n = 1000;
    float *x = rand_input(MSBNB_DTYPE_F32, n, 1.0f);
    x[777] = NAN;
    float *dx = cu_up(x, (size_t)n * 4);
    uint8_t *dp = cu_poison((size_t)n);
    float *da = cu_poison((size_t)n * 4);
    CHECK_STATUS(msbnb_cuda_quantize_4bit(dp, da, dx, MSBNB_DTYPE_F32, n, 64, MSBNB_QTYPE_NF4), MSBNB_ERR_NON_FINITE);
    CHECK_STATUS(msbnb_cuda_quantize_blockwise_8bit(dp, da, dx, MSBNB_DTYPE_F32, n, 64, NULL), MSBNB_ERR_NON_FINITE);
    CHECK_STATUS(msbnb_cuda_int8_vectorwise_quant((int8_t *)dp, da, dx, MSBNB_DTYPE_F32, 10, 100), MSBNB_ERR_NON_FINITE);
    CHECK_STATUS(msbnb_cuda_quantize_8bit((int8_t *)dp, da, da + 10, dx, 10, 100, 0, 0), MSBNB_ERR_NON_FINITE);
    CHECK_STATUS(msbnb_cuda_quantize_int4(dp, da, da + 100, dx, 10, 100, 32, 1), MSBNB_ERR_NON_FINITE);
    CHECK_STATUS(msbnb_cuda_double_quant_absmax(dp, da, da + 1, dx, n), MSBNB_ERR_NON_FINITE);
    CHECK_STATUS(msbnb_cuda_quantize_4bit(NULL, da, dx, MSBNB_DTYPE_F32, n, 64, MSBNB_QTYPE_NF4), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_cuda_quantize_4bit(dp, da, dx, MSBNB_DTYPE_F32, 0, 64, MSBNB_QTYPE_NF4), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_cuda_quantize_4bit(dp, da, dx, MSBNB_DTYPE_F32, n, 48, MSBNB_QTYPE_NF4), MSBNB_ERR_UNSUPPORTED);
    CHECK_STATUS(msbnb_cuda_quantize_4bit(dp, da, dx, MSBNB_DTYPE_I8, n, 64, MSBNB_QTYPE_NF4), MSBNB_ERR_UNSUPPORTED);
    CHECK_STATUS(msbnb_cuda_quantize_4bit(dp, da, dx, MSBNB_DTYPE_F32, n, 64, MSBNB_QTYPE_INT8), MSBNB_ERR_UNSUPPORTED);
    CHECK_STATUS(msbnb_cuda_dequantize_int4((float *)dx, dp, da, NULL, 3, 7, 3, 1), MSBNB_ERR_UNSUPPORTED);
    void *p = (void *)1;
    CHECK_STATUS(msbnb_cuda_malloc(&p, 0), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK(p == NULL);
    /* a CUDA failure carries CUDA's own message */
    CHECK_STATUS(msbnb_cuda_malloc(&p, (size_t)1 << 52), MSBNB_ERR_CUDA);
    CHECKF(strstr(msbnb_last_error(), "memory") != NULL, "message: %s", msbnb_last_error());
    CHECK_OK(msbnb_cuda_free(NULL));
    CHECK_OK(msbnb_cuda_synchronize());
    free(x);
    msbnb_cuda_free(dx), msbnb_cuda_free(dp), msbnb_cuda_free(da);
}

int main(void) {
    if (cu_skip_if_no_device()) return CU_SKIP_CODE;
    uint64_t seed = tu_seed();
    tu_rng_init(&g_rng, seed);
    RUN_TEST(test_cuda_q4_matches_cpu);
    RUN_TEST(test_cuda_q4_matches_cpu_on_reference_inputs);
    RUN_TEST(test_cuda_q8_blockwise_matches_cpu);
    RUN_TEST(test_cuda_int8_vectorwise_matches_cpu);
    RUN_TEST(test_cuda_quantize_8bit_matches_cpu);
    RUN_TEST(test_cuda_int4_matches_cpu);
    RUN_TEST(test_cuda_rejects_bad_input);
    return tu_finish();
}

#else
int main(void) {
    printf("SKIPPED: CUDA backend not built (no CUDA device code)\n");
    tu_finish();
    return 77;
}
#endif
