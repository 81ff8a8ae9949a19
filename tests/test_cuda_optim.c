/* The CUDA AdamW steps against a CPU reference, bit for bit: f32 states (the same f32
 * expression, C compiled without FMA contraction), and 8-bit blockwise states (reference:
 * msbnb_dequantize_blockwise_8bit, the f32 update, msbnb_quantize_blockwise_8bit, i.e. the
 * CPU 8-bit optimizer's sequence). Several steps, odd sizes, both 8-bit kernels (the
 * table-coder one and the per-element search one), custom codes. The table coder is also
 * checked against bnb's search on every float bit pattern. Skips (exit 77) without a GPU. */
#define _POSIX_C_SOURCE 200112L /* setenv */
#include "cuda_testutil.h"

#ifdef MSBNB_HAVE_CUDA
#include "cuda/cuda_testhooks.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static tu_rng g_rng;

typedef struct {
    float b1, b2, eps, gm, decay, step, bc2s;
} ref_k;

static ref_k ref_consts(const msbnb_cuda_adamw *h) {
    ref_k k;
    k.b1 = h->beta1;
    k.b2 = h->beta2;
    k.eps = h->eps;
    k.gm = h->grad_scale;
    k.decay = 1.0f - h->lr * h->weight_decay;
    k.step = h->lr / (float)(1.0 - pow(h->beta1, (double)h->step));
    k.bc2s = (float)sqrt(1.0 - pow(h->beta2, (double)h->step));
    return k;
}

static void ref_adamw(float *p, float *m, float *v, const float *g, int64_t n, const ref_k *k) {
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * k->gm;
        m[i] = k->b1 * m[i] + (1.0f - k->b1) * gi;
        v[i] = k->b2 * v[i] + (1.0f - k->b2) * gi * gi;
        float denom = sqrtf(v[i]) / k->bc2s + k->eps;
        p[i] = p[i] * k->decay - k->step * m[i] / denom;
    }
}

static msbnb_cuda_adamw hparams(int t) {
    msbnb_cuda_adamw h = msbnb_cuda_adamw_default();
    h.lr = t == 2 ? 3e-4f : 1e-3f;
    h.weight_decay = t == 3 ? 0.0f : 0.01f;
    h.grad_scale = t == 1 ? 0.5f : 1.0f;
    h.step = t;
    return h;
}

static void test_cuda_adamw_f32_matches_cpu(void) {
    static const int64_t sizes[] = {1, 3, 4097, 100003};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        const int64_t n = sizes[s];
        const size_t b = (size_t)n * 4;
        float *p = malloc(b), *m = malloc(b), *v = malloc(b), *g = malloc(b);
        tu_fill_normal(&g_rng, p, (size_t)n, 1.0f);
        tu_fill_normal(&g_rng, m, (size_t)n, 0.01f);
        tu_fill_normal(&g_rng, v, (size_t)n, 1e-4f);
        for (int64_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
        float *dp = cu_up(p, b), *dm = cu_up(m, b), *dv = cu_up(v, b), *dg = cu_poison(b);
        for (int t = 1; t <= 3; t++) {
            tu_fill_normal(&g_rng, g, (size_t)n, 0.1f);
            CHECK_OK(msbnb_cuda_memcpy(dg, g, b, MSBNB_CUDA_HOST_TO_DEVICE));
            msbnb_cuda_adamw h = hparams(t);
            ref_k k = ref_consts(&h);
            ref_adamw(p, m, v, g, n, &k);
            CHECK_OK(msbnb_cuda_adamw_step(dp, dm, dv, dg, n, &h));
        }
        float *gp = cu_down(dp, b), *gm = cu_down(dm, b), *gv = cu_down(dv, b);
        CHECKF(cu_ndiff(gp, p, b) == 0 && cu_ndiff(gm, m, b) == 0 && cu_ndiff(gv, v, b) == 0,
               "adamw f32 n=%lld: p/m/v differ in %d/%d/%d bytes", (long long)n, cu_ndiff(gp, p, b),
               cu_ndiff(gm, m, b), cu_ndiff(gv, v, b));
        free(p), free(m), free(v), free(g), free(gp), free(gm), free(gv);
        msbnb_cuda_free(dp), msbnb_cuda_free(dm), msbnb_cuda_free(dv), msbnb_cuda_free(dg);
    }
}

/* Codes beside bnb's maps. ODD_CLUSTERED: sorted, with a tight cluster, duplicates and
 * entries below 2^-23 and above 2 (the table coder must refuse it or be exact); ODD_UNSORTED:
 * the same unsorted (the fast kernel must refuse it); ODD_GEOMETRIC: sorted, both signs,
 * magnitudes 1e-6 .. 1.5 in jittered geometric steps, a zero and one entry past 2 (the
 * table coder takes it). */
enum { ODD_CLUSTERED, ODD_UNSORTED, ODD_GEOMETRIC };
static void odd_code(float *c, int kind) {
    for (int i = 0; i < 256; i++) {
        float u = tu_rng_uniform(&g_rng);
        if (kind == ODD_GEOMETRIC) {
            int j = i < 128 ? 127 - i : i - 128; /* 0..127 from the middle out */
            c[i] = (i < 128 ? -1.0f : 1.0f) * 1e-6f * powf(10.0f, (6.0f + 0.17f) * ((float)j + 0.3f * u) / 127.0f);
            continue;
        }
        int kind8 = i % 8;
        c[i] = kind8 == 0   ? 0.0f
               : kind8 == 1 ? 0.5f + 0.001f * u                          /* a tight cluster */
               : kind8 == 2 ? ldexpf(1.0f + u, -30 + (int)(u * 6))       /* below 2^-23 */
               : kind8 == 3 ? 2.0f + 100.0f * u                          /* above 2 */
                            : (u - 0.5f) * 2.0f * tu_rng_uniform(&g_rng); /* spread */
        if (i % 5 == 0) c[i] = -c[i];
    }
    if (kind == ODD_GEOMETRIC) {
        c[128] = 0.0f;
        c[255] = 3.0f;
        return;
    }
    c[17] = c[16]; /* duplicates */
    c[100] = c[101] = c[99];
    if (kind == ODD_CLUSTERED)
        for (int i = 1; i < 256; i++) /* insertion sort */
            for (int j = i; j > 0 && c[j - 1] > c[j]; j--) {
                float t = c[j];
                c[j] = c[j - 1];
                c[j - 1] = t;
            }
}

/* One run of the 8-bit comparison: sizes, three steps each, code_m (NULL = default). */
static void adamw8_vs_cpu(const float *code_m, const char *what) {
    static const int64_t sizes[] = {1, 3, 255, 257, 4097, 70001, 1000003};
    float ucode[256];
    CHECK_OK(msbnb_cuda_adamw_unsigned_map(ucode));
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        const int64_t n = sizes[s], nb = msbnb_cuda_adamw8bit_nblocks(n);
        const size_t b = (size_t)n * 4;
        float *p = malloc(b), *m = malloc(b), *v = malloc(b), *g = malloc(b);
        uint8_t *qm = malloc((size_t)n), *qv = malloc((size_t)n);
        float *am = malloc((size_t)nb * 4), *av = malloc((size_t)nb * 4);
        tu_fill_normal(&g_rng, p, (size_t)n, 1.0f);
        tu_fill_normal(&g_rng, m, (size_t)n, 0.01f);
        tu_fill_normal(&g_rng, v, (size_t)n, 1e-4f);
        for (int64_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
        CHECK_OK(msbnb_quantize_blockwise_8bit(qm, am, m, MSBNB_DTYPE_F32, n, 256, code_m, 1));
        CHECK_OK(msbnb_quantize_blockwise_8bit(qv, av, v, MSBNB_DTYPE_F32, n, 256, ucode, 1));
        void *dp = cu_up(p, b), *dqm = cu_up(qm, (size_t)n), *dqv = cu_up(qv, (size_t)n);
        void *dam = cu_up(am, (size_t)nb * 4), *dav = cu_up(av, (size_t)nb * 4), *dg = cu_poison(b);
        for (int t = 1; t <= 3; t++) {
            tu_fill_normal(&g_rng, g, (size_t)n, 0.1f);
            CHECK_OK(msbnb_cuda_memcpy(dg, g, b, MSBNB_CUDA_HOST_TO_DEVICE));
            msbnb_cuda_adamw h = hparams(t);
            ref_k k = ref_consts(&h);
            CHECK_OK(msbnb_dequantize_blockwise_8bit(m, MSBNB_DTYPE_F32, qm, am, n, 256, code_m, 1));
            CHECK_OK(msbnb_dequantize_blockwise_8bit(v, MSBNB_DTYPE_F32, qv, av, n, 256, ucode, 1));
            ref_adamw(p, m, v, g, n, &k);
            CHECK_OK(msbnb_quantize_blockwise_8bit(qm, am, m, MSBNB_DTYPE_F32, n, 256, code_m, 1));
            CHECK_OK(msbnb_quantize_blockwise_8bit(qv, av, v, MSBNB_DTYPE_F32, n, 256, ucode, 1));
            CHECK_OK(msbnb_cuda_adamw8bit_step(dp, dqm, dam, dqv, dav, dg, n, &h, code_m, t == 2 ? ucode : NULL));
        }
        float *gp = cu_down(dp, b), *gam = cu_down(dam, (size_t)nb * 4), *gav = cu_down(dav, (size_t)nb * 4);
        uint8_t *gqm = cu_down(dqm, (size_t)n), *gqv = cu_down(dqv, (size_t)n);
        int d1 = cu_ndiff(gp, p, b), d2 = cu_ndiff(gqm, qm, (size_t)n), d3 = cu_ndiff(gqv, qv, (size_t)n);
        int d4 = cu_ndiff(gam, am, (size_t)nb * 4), d5 = cu_ndiff(gav, av, (size_t)nb * 4);
        CHECKF(d1 == 0 && d2 == 0 && d3 == 0 && d4 == 0 && d5 == 0,
               "adamw 8-bit (%s) n=%lld: p %d, qm %d, qv %d, am %d, av %d bytes differ", what, (long long)n, d1, d2,
               d3, d4, d5);
        free(p), free(m), free(v), free(g), free(qm), free(qv), free(am), free(av);
        free(gp), free(gam), free(gav), free(gqm), free(gqv);
        msbnb_cuda_free(dp), msbnb_cuda_free(dqm), msbnb_cuda_free(dqv);
        msbnb_cuda_free(dam), msbnb_cuda_free(dav), msbnb_cuda_free(dg);
    }
}

static void test_cuda_adamw_8bit_matches_cpu(void) {
    float ucode[256];
    CHECK_OK(msbnb_cuda_adamw_unsigned_map(ucode));
    int sorted = 1;
    for (int i = 1; i < 256; i++) sorted &= ucode[i - 1] <= ucode[i];
    CHECK(sorted && ucode[0] == 0.0f && ucode[255] == 1.0f);
    adamw8_vs_cpu(NULL, "table coder");
    float c[256];
    odd_code(c, ODD_GEOMETRIC);
    adamw8_vs_cpu(c, "table coder, geometric code");
    odd_code(c, ODD_CLUSTERED);
    adamw8_vs_cpu(c, "clustered code (search fallback)");
    odd_code(c, ODD_UNSORTED);
    adamw8_vs_cpu(c, "unsorted code: search kernel");
    setenv("MSBNB_CUDA_ADAM8_HALF", "1", 1);
    adamw8_vs_cpu(NULL, "table coder, two warps per block");
    odd_code(c, ODD_GEOMETRIC);
    adamw8_vs_cpu(c, "table coder, two warps per block, geometric code");
    unsetenv("MSBNB_CUDA_ADAM8_HALF");
    setenv("MSBNB_CUDA_ADAM8_REF", "1", 1);
    adamw8_vs_cpu(NULL, "search kernel");
    unsetenv("MSBNB_CUDA_ADAM8_REF");
}

/* The table coder equals bnb's search (after the flush to zero) on every float bit pattern
 * with |x| < 2 (every 4099th one under compute-sanitizer) for the two optimizer maps and a
 * geometric code, which it must accept; a clustered code it may refuse, an unsorted one
 * it must refuse. */
static void test_cuda_adamw_8bit_coder_matches_search_on_all_floats(void) {
    const char *san = getenv("MSBNB_SANITIZE_RUN");
    const uint64_t step = san && san[0] == '1' ? 4099 : 1, count = ((uint64_t)1 << 32) / step + 1;
    float codes[4][256];
    memcpy(codes[0], msbnb_dynamic_map(), sizeof codes[0]);
    CHECK_OK(msbnb_cuda_adamw_unsigned_map(codes[1]));
    odd_code(codes[2], ODD_GEOMETRIC);
    odd_code(codes[3], ODD_CLUSTERED);
    for (int i = 0; i < 4; i++) {
        uint64_t bad = 0;
        uint32_t ex = 0;
        int usable = 0;
        CHECK_OK(msbnb__cuda_q8f_check(codes[i], 0, step, count, &bad, &ex, &usable));
        CHECKF((usable || i == 3) && bad == 0, "code %d: usable %d, %llu of %llu floats coded differently (e.g. 0x%08x)",
               i, usable, (unsigned long long)bad, (unsigned long long)count, ex);
        printf("  code %d: table coder %s\n", i, usable ? "used, exact" : "refused (search fallback)");
    }
    odd_code(codes[2], ODD_UNSORTED);
    int usable = 1;
    uint64_t bad = 0;
    CHECK_OK(msbnb__cuda_q8f_check(codes[2], 0, 65537, 65536, &bad, NULL, &usable));
    CHECK(!usable);
}

static void test_cuda_adamw_rejects_bad_input(void) {
    msbnb_cuda_adamw h = msbnb_cuda_adamw_default();
    float *d = cu_poison(64);
    uint8_t *q = cu_poison(64);
    CHECK_STATUS(msbnb_cuda_adamw_step(NULL, d, d, d, 4, &h), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_cuda_adamw_step(d, d, d, d, 0, &h), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_cuda_adamw_step(d, d, d, d, 4, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_cuda_adamw_step(d + 1, d, d, d, 4, &h), MSBNB_ERR_INVALID_ARGUMENT);
    h.step = 0;
    CHECK_STATUS(msbnb_cuda_adamw_step(d, d, d, d, 4, &h), MSBNB_ERR_INVALID_ARGUMENT);
    h = msbnb_cuda_adamw_default();
    h.beta2 = 1.0f;
    CHECK_STATUS(msbnb_cuda_adamw8bit_step(d, q, d, q, d, d, 4, &h, NULL, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    h = msbnb_cuda_adamw_default();
    h.eps = 0.0f;
    CHECK_STATUS(msbnb_cuda_adamw8bit_step(d, q, d, q, d, d, 4, &h, NULL, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    h = msbnb_cuda_adamw_default();
    CHECK_STATUS(msbnb_cuda_adamw8bit_step(d, NULL, d, q, d, d, 4, &h, NULL, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_cuda_adamw8bit_step(d, q, d, q, d, d, -5, &h, NULL, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_cuda_adamw_unsigned_map(NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK(msbnb_cuda_adamw8bit_nblocks(257) == 2 && msbnb_cuda_adamw8bit_nblocks(0) == 0);
    msbnb_cuda_free(d), msbnb_cuda_free(q);
}

int main(void) {
    if (cu_skip_if_no_device()) return CU_SKIP_CODE;
    tu_rng_init(&g_rng, tu_seed());
    RUN_TEST(test_cuda_adamw_f32_matches_cpu);
    RUN_TEST(test_cuda_adamw_8bit_matches_cpu);
    RUN_TEST(test_cuda_adamw_8bit_coder_matches_search_on_all_floats);
    RUN_TEST(test_cuda_adamw_rejects_bad_input);
    return tu_finish();
}

#else
int main(void) {
    printf("SKIPPED: CUDA backend not built (no CUDA device code)\n");
    return 77;
}
#endif
