/* The quantized linear layer: every weight kind on every CPU tier against the scalar tier
 * and against a float64 reference on the dequantized weight; backward by finite
 * differences; bitsandbytes' reference data; bad input. */
#include "testutil.h"

#include <pthread.h>
#include <stdlib.h>

static tu_rng g_rng;
static int g_small; /* sanitizer run: smaller shapes */

typedef struct {
    const char *name;
    msbnb_qparams p;
    float threshold; /* int8 symmetric: LLM.int8 outlier threshold */
} kind_t;

static kind_t kinds[24];
static int n_kinds;

static void add_kind(const char *name, msbnb_qtype t, int sym, int64_t block, int dq, float thr) {
    kind_t *k = &kinds[n_kinds++];
    k->name = name;
    k->p = msbnb_qparams_default(t);
    k->p.symmetric = sym;
    if (block) k->p.block = block;
    k->p.double_quant = dq;
    k->threshold = thr;
}

static void init_kinds(void) {
    add_kind("f32", MSBNB_QTYPE_F32, 1, 0, 0, 0);
    add_kind("bf16", MSBNB_QTYPE_BF16, 1, 0, 0, 0);
    add_kind("f16", MSBNB_QTYPE_F16, 1, 0, 0, 0);
    add_kind("int8", MSBNB_QTYPE_INT8, 1, 0, 0, 0);
    add_kind("int8-thr2.5", MSBNB_QTYPE_INT8, 1, 0, 0, 2.5f);
    add_kind("int8-asym", MSBNB_QTYPE_INT8, 0, 0, 0, 0);
    add_kind("int4-g32", MSBNB_QTYPE_INT4, 1, 32, 0, 0);
    add_kind("int4-g128-asym", MSBNB_QTYPE_INT4, 0, 128, 0, 0);
    add_kind("int4-g6", MSBNB_QTYPE_INT4, 1, 6, 0, 0);
    add_kind("int4-g64-asym", MSBNB_QTYPE_INT4, 0, 64, 0, 0);
    add_kind("nf4-b64", MSBNB_QTYPE_NF4, 1, 64, 0, 0);
    add_kind("nf4-b64-dq", MSBNB_QTYPE_NF4, 1, 64, 1, 0);
    add_kind("nf4-b32", MSBNB_QTYPE_NF4, 1, 32, 0, 0);
    add_kind("fp4-b128", MSBNB_QTYPE_FP4, 1, 128, 0, 0);
    add_kind("fp4-b64-dq", MSBNB_QTYPE_FP4, 1, 64, 1, 0);
    add_kind("q8dyn-b256", MSBNB_QTYPE_Q8_DYNAMIC, 1, 256, 0, 0);
}

static int is_int8_sym(const kind_t *k) { return k->p.type == MSBNB_QTYPE_INT8 && k->p.symmetric; }

static int64_t rnd(int64_t lo, int64_t hi) { return lo + (int64_t)(tu_rng_u64(&g_rng) % (uint64_t)(hi - lo + 1)); }

/* float64 reference of the forward: y = x · Wdᵀ + b, with LLM.int8's activation
 * quantization emulated for symmetric int8 (the integer part is exact in double). */
static void reference_forward(double *ref, double *mag, const msbnb_linear_t *l, const kind_t *kd,
                              const float *wd, const float *x, int64_t m) {
    int64_t K = msbnb_linear_in_features(l), N = msbnb_linear_out_features(l);
    const float *b = msbnb_linear_bias(l);
    if (!is_int8_sym(kd)) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t r = 0; r < N; r++) {
                double s = b ? b[r] : 0, a = b ? fabs(b[r]) : 0;
                for (int64_t k = 0; k < K; k++) {
                    s += (double)x[i * K + k] * wd[r * K + k];
                    a += fabs((double)x[i * K + k] * wd[r * K + k]);
                }
                ref[i * N + r] = s;
                mag[i * N + r] = a;
            }
        return;
    }
    const int8_t *cb;
    const float *scb;
    CHECK_OK(msbnb_linear_int8_parts(l, &cb, &scb));
    int8_t *xq = malloc((size_t)(m * K));
    float *sx = malloc((size_t)m * 4);
    int64_t *outl = malloc((size_t)K * 8), nout = 0;
    CHECK_OK(msbnb_int8_vectorwise_quant(xq, sx, outl, K, &nout, x, MSBNB_DTYPE_F32, m, K,
                                         kd->threshold));
    uint8_t *is_o = calloc((size_t)K, 1);
    for (int64_t c = 0; c < nout; c++) is_o[outl[c]] = 1;
    for (int64_t i = 0; i < m; i++)
        for (int64_t r = 0; r < N; r++) {
            double acc = 0, s = b ? b[r] : 0, a = b ? fabs(b[r]) : 0;
            for (int64_t k = 0; k < K; k++) {
                acc += (double)xq[i * K + k] * cb[r * K + k];
                if (is_o[k]) s += (double)x[i * K + k] * wd[r * K + k];
                a += fabs((double)x[i * K + k] * wd[r * K + k]);
            }
            ref[i * N + r] = s + acc * sx[i] * scb[r] / (127.0 * 127.0);
            mag[i * N + r] = a;
        }
    free(xq);
    free(sx);
    free(outl);
    free(is_o);
}

static void fill_x(float *x, int64_t m, int64_t K, const kind_t *kd) {
    tu_fill_normal(&g_rng, x, (size_t)(m * K), 1.0f);
    if (kd->threshold > 0 && K > 3) {
        /* outlier features, as in LLM.int8: a few columns with large magnitude */
        for (int c = 0; c < 2; c++) {
            int64_t col = rnd(0, K - 1);
            x[rnd(0, m - 1) * K + col] = 8.0f * (c ? -1.0f : 1.0f);
        }
    }
}

static int is_4bit(const kind_t *k) {
    return k->p.type == MSBNB_QTYPE_NF4 || k->p.type == MSBNB_QTYPE_FP4 || k->p.type == MSBNB_QTYPE_INT4;
}

/* Rounding bound of the SIMD tiers' default small-m 4-bit kernels (msbnb_linear_set_exact
 * 0): each 64-input chunk of x is rounded to steps of amax_c / 16383 and NF4/FP4 codes to
 * steps of 1/16383 of their block's absmax (the block's largest |dequantized weight|;
 * INT4 codes are exact integers), so |error| <= Σ_k amax_c |q_k s_k| / 32766 + |x_k| u_k / 32766
 * (q_k s_k = w_k except for asymmetric INT4, where it is w_k - min)
 * (+ f32 rounding, which the 2e-5 term covers). A wrong code still costs ~Σ|x w| / K. */
static void i16_slack(double *out, const kind_t *kd, const float *x, const float *wd, int64_t m,
                      int64_t K, int64_t N) {
    const int codes = kd->p.type != MSBNB_QTYPE_INT4;
    /* asymmetric INT4: the kernels multiply the rounded x by q·s = w - min (the group's
     * minimum, code 0), the min term by exact f32 sums of x, so the rounding scales with
     * |w - min|, which can exceed |w| many times over */
    const int asym = kd->p.type == MSBNB_QTYPE_INT4 && !kd->p.symmetric;
    const int64_t B = kd->p.block, nb = (N * K + B - 1) / B;
    double *um = calloc((size_t)nb, 8);
    for (int64_t e = 0; e < N * K; e++)
        if (fabs(wd[e]) > um[e / B]) um[e / B] = fabs(wd[e]);
    float *wq = malloc((size_t)(N * K) * 4); /* the magnitude the rounding of x multiplies */
    for (int64_t r = 0; r < N; r++)
        for (int64_t g0 = 0; g0 < K; g0 += B) {
            const int64_t g1 = g0 + B < K ? g0 + B : K;
            float mn = 0.0f;
            if (asym) {
                mn = wd[r * K + g0];
                for (int64_t k = g0; k < g1; k++) mn = wd[r * K + k] < mn ? wd[r * K + k] : mn;
            }
            for (int64_t k = g0; k < g1; k++) wq[r * K + k] = wd[r * K + k] - mn;
        }
    for (int64_t i = 0; i < m; i++) {
        const float *xi = x + i * K;
        for (int64_t r = 0; r < N; r++) {
            double s = 0;
            for (int64_t c0 = 0; c0 < K; c0 += 64) {
                const int64_t c1 = c0 + 64 < K ? c0 + 64 : K;
                double am = 0;
                for (int64_t k = c0; k < c1; k++)
                    if (fabs(xi[k]) > am) am = fabs(xi[k]);
                for (int64_t k = c0; k < c1; k++) {
                    s += am * fabs(wq[r * K + k]) / 32766.0;
                    if (codes) s += fabs(xi[k]) * um[(r * K + k) / B] / 32766.0;
                }
            }
            out[i * N + r] = 1.01 * s;
        }
    }
    free(um);
    free(wq);
}

static msbnb_cpu_tier tiers[3];
static int n_tiers;

/* A layer of kind kd over a random weight N(0, wstd) [N, K] and bias N(0, 0.1) [N] (given
 * to the layer when with_bias); *w and *b receive both, for the caller to free. On failure
 * (already a failed check) returns NULL with both freed. */
static msbnb_linear_t *random_layer(const kind_t *kd, int64_t K, int64_t N, float wstd, int with_bias,
                                    float **w, float **b) {
    *w = malloc((size_t)(N * K) * 4);
    *b = malloc((size_t)N * 4);
    tu_fill_normal(&g_rng, *w, (size_t)(N * K), wstd);
    tu_fill_normal(&g_rng, *b, (size_t)N, 0.1f);
    msbnb_linear_t *l = NULL;
    CHECK_OK(msbnb_linear_create(&l, K, N, *w, with_bias ? *b : NULL, &kd->p));
    if (!l) {
        free(*w);
        free(*b);
        *w = *b = NULL;
    }
    return l;
}

static void check_forward_case(const kind_t *kd, int64_t m, int64_t K, int64_t N, int with_bias) {
    float *w, *b;
    msbnb_linear_t *l = random_layer(kd, K, N, 0.05f, with_bias, &w, &b);
    if (!l) return;
    if (kd->threshold > 0) CHECK_OK(msbnb_linear_set_int8_threshold(l, kd->threshold));
    float *wd = malloc((size_t)(N * K) * 4), *x = malloc((size_t)(m * K) * 4);
    float *y0 = malloc((size_t)(m * N) * 4), *y = malloc((size_t)(m * N) * 4);
    double *ref = malloc((size_t)(m * N) * 8), *mag = malloc((size_t)(m * N) * 8);
    CHECK_OK(msbnb_linear_dequantize_weight(l, wd));
    fill_x(x, m, K, kd);
    reference_forward(ref, mag, l, kd, wd, x, m);
    CHECK_OK(msbnb_linear_set_cpu_tier(l, MSBNB_CPU_SCALAR));
    CHECK_OK(msbnb_linear_forward(l, y0, x, m));
    /* f32 accumulation over K terms: relative error ~ sqrt(K) eps of Σ|x w|; 2e-5 leaves a
     * wide margin yet catches one wrong code (error ~ Σ|x w| / K). int8: the f32 scaling. */
    int bad = 0;
    for (int64_t i = 0; i < m * N; i++)
        if (!(fabs(y0[i] - ref[i]) <= 2e-5 * mag[i] + 1e-6)) bad++;
    CHECKF(bad == 0, "%s m=%lld K=%lld N=%lld scalar vs f64: %d bad", kd->name, (long long)m,
           (long long)K, (long long)N, bad);
    const int q4 = is_4bit(kd);
    double *slack = q4 ? malloc((size_t)(m * N) * 8) : NULL;
    if (slack) i16_slack(slack, kd, x, wd, m, K, N);
    for (int t = 0; t < n_tiers; t++) {
        if (tiers[t] == MSBNB_CPU_SCALAR) continue;
        CHECK_OK(msbnb_linear_set_cpu_tier(l, tiers[t]));
        for (int nt = 1; nt <= 2; nt++)
            for (int exact = 0; exact <= q4; exact++) {
                /* the AVX-512 integer 4-bit kernels have two decodes (vpshufb, vpermw): the
                 * one-thread runs take one, the two-thread runs the other */
                setenv("MSBNB_CPU_I16_DECODE", nt == 1 ? "shuf" : "perm", 1);
                CHECK_OK(msbnb_linear_set_threads(l, nt));
                CHECK_OK(msbnb_linear_set_exact(l, exact));
                /* 2 threads: a 1-byte workspace, i.e. the thinnest panels (64 columns), so
                 * that large m accumulates over several column panels */
                CHECK_OK(msbnb_linear_set_workspace(l, nt == 2 ? 1 : 0));
                memset(y, 0xff, (size_t)(m * N) * 4);
                CHECK_OK(msbnb_linear_forward(l, y, x, m));
                int bad_ref = 0, bad_scalar = 0, neq = 0;
                for (int64_t i = 0; i < m * N; i++) {
                    /* the 15-bit integer 4-bit kernels (small m, exact = 0): their rounding
                     * bound on top */
                    const double tol = 2e-5 * mag[i] + 1e-6 + (q4 && !exact && m <= 8 ? slack[i] : 0);
                    if (!(fabs(y[i] - ref[i]) <= tol)) bad_ref++;
                    if (!(fabs(y[i] - y0[i]) <= tol)) bad_scalar++;
                    neq += y[i] != y0[i];
                }
                CHECKF(bad_ref == 0 && bad_scalar == 0,
                       "%s %s threads=%d exact=%d m=%lld K=%lld N=%lld: %d bad vs f64, %d vs scalar",
                       kd->name, msbnb_cpu_tier_name(tiers[t]), nt, exact, (long long)m,
                       (long long)K, (long long)N, bad_ref, bad_scalar);
                /* int8 small m: the integer products are exact on every tier, and the
                 * scaling is the same f32 expression, so outputs agree bit for bit
                 * (outliers: float order) */
                if (is_int8_sym(kd) && kd->threshold == 0 && m <= 8)
                    CHECKF(neq == 0, "%s %s m=%lld: %d outputs differ from scalar", kd->name,
                           msbnb_cpu_tier_name(tiers[t]), (long long)m, neq);
            }
        unsetenv("MSBNB_CPU_I16_DECODE");
    }
    free(slack);
    msbnb_linear_free(l);
    free(w);
    free(b);
    free(wd);
    free(x);
    free(y0);
    free(y);
    free(ref);
    free(mag);
}

static void test_forward_all_kinds_tiers_shapes(void) {
    static const int64_t ms[] = {1, 2, 3, 7, 8, 9, 64, 257};
    for (int k = 0; k < n_kinds; k++) {
        for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
            int64_t m = ms[mi];
            if (g_small && m > 64) m = 33;
            /* an odd shape (any K, N: all kinds allow it) and an aligned one (fast paths) */
            int64_t kmax = g_small ? 150 : 700, nmax = g_small ? 40 : (m > 64 ? 70 : 150);
            int64_t K = rnd(1, kmax) | 1, N = rnd(1, nmax) | 1;
            check_forward_case(&kinds[k], m, K, N, (int)(mi & 1));
            int64_t Ka = 128 * rnd(1, g_small ? 2 : 6), Na = rnd(1, nmax);
            check_forward_case(&kinds[k], m, Ka, Na, (int)!(mi & 1));
        }
    }
}

/* The SIMD tiers' 15-bit integer 4-bit kernels (exact = 0) on the cases their layout makes
 * special: units of 32 and of several chunks, INT4 groups that do not divide K (a partial
 * last group), NF4 blocks that do not divide K (rows starting mid-block: the f32 kernel),
 * row counts that are not a multiple of the 4-row streams, an activation with an outlier
 * chunk (per-chunk scales), all-zero chunks, and NaN / Inf inputs. */
static void test_integer_4bit_kernels(void) {
    kind_t ks[8];
    int nk = 0;
    ks[nk++] = (kind_t){"nf4-b64-dq", msbnb_qparams_default(MSBNB_QTYPE_NF4), 0};
    ks[nk - 1].p.double_quant = 1;
    ks[nk++] = (kind_t){"nf4-b256-dq", msbnb_qparams_default(MSBNB_QTYPE_NF4), 0};
    ks[nk - 1].p.block = 256, ks[nk - 1].p.double_quant = 1;
    ks[nk++] = (kind_t){"int4-g192-asym", msbnb_qparams_default(MSBNB_QTYPE_INT4), 0};
    ks[nk - 1].p.symmetric = 0, ks[nk - 1].p.block = 192;
    ks[nk++] = (kind_t){"int4-g64", msbnb_qparams_default(MSBNB_QTYPE_INT4), 0};
    ks[nk - 1].p.block = 64;
    ks[nk++] = (kind_t){"int4-g32-asym", msbnb_qparams_default(MSBNB_QTYPE_INT4), 0};
    ks[nk - 1].p.symmetric = 0, ks[nk - 1].p.block = 32;
    ks[nk++] = (kind_t){"nf4-b256", msbnb_qparams_default(MSBNB_QTYPE_NF4), 0};
    ks[nk - 1].p.block = 256;
    ks[nk++] = (kind_t){"fp4-b32-dq", msbnb_qparams_default(MSBNB_QTYPE_FP4), 0};
    ks[nk - 1].p.block = 32, ks[nk - 1].p.double_quant = 1;
    ks[nk++] = (kind_t){"nf4-b64", msbnb_qparams_default(MSBNB_QTYPE_NF4), 0};
    /* 2112 and 4160: long rows at m >= 2 (activation rows beyond L1) */
    static const int64_t Ks[] = {64, 192, 256, 320, 1024, 2112, 4160};
    for (int ki = 0; ki < nk; ki++)
        for (size_t kk = 0; kk < sizeof Ks / sizeof Ks[0]; kk++) {
            const kind_t *kd = &ks[ki];
            const int64_t K = Ks[kk], N = rnd(1, K > 1024 ? 9 : 23);
            const int64_t m = K == 4160 ? rnd(2, 3) : K == 2112 ? rnd(2, 8) : rnd(1, 8);
            float *w, *b;
            msbnb_linear_t *l = random_layer(kd, K, N, 0.05f, 1, &w, &b);
            if (!l) continue;
            float *wd = malloc((size_t)(N * K) * 4), *x = malloc((size_t)(m * K) * 4);
            float *y = malloc((size_t)(m * N) * 4);
            double *ref = malloc((size_t)(m * N) * 8), *mag = malloc((size_t)(m * N) * 8);
            double *slack = malloc((size_t)(m * N) * 8);
            CHECK_OK(msbnb_linear_dequantize_weight(l, wd));
            tu_fill_normal(&g_rng, x, (size_t)(m * K), 1.0f);
            for (int64_t i = 0; i < m; i++) {
                if (K >= 128) memset(x + i * K + 64, 0, 64 * 4); /* an all-zero chunk */
                x[i * K + rnd(0, K - 1)] *= 300.0f;              /* an outlier */
            }
            reference_forward(ref, mag, l, kd, wd, x, m);
            i16_slack(slack, kd, x, wd, m, K, N);
            for (int t = 0; t < n_tiers; t++) {
                if (tiers[t] == MSBNB_CPU_SCALAR) continue;
                CHECK_OK(msbnb_linear_set_cpu_tier(l, tiers[t]));
                /* exact 0 and 1; at exact = 0 on AVX-512 both decodes (vpshufb, vpermw) */
                for (int ev = 0; ev < 3; ev++) {
                    const int exact = ev == 2;
                    if (ev == 1 && tiers[t] != MSBNB_CPU_AVX512) continue;
                    setenv("MSBNB_CPU_I16_DECODE", ev == 1 ? "perm" : "shuf", 1);
                    CHECK_OK(msbnb_linear_set_exact(l, exact));
                    CHECK(msbnb_linear_exact(l) == exact);
                    CHECK_OK(msbnb_linear_forward(l, y, x, m));
                    int bad = 0;
                    for (int64_t i = 0; i < m * N; i++)
                        bad += !(fabs(y[i] - ref[i]) <= 2e-5 * mag[i] + 1e-6 + (exact ? 0 : slack[i]));
                    CHECKF(bad == 0, "%s %s exact=%d decode=%s m=%lld K=%lld N=%lld: %d outputs off", kd->name,
                           msbnb_cpu_tier_name(tiers[t]), exact, ev == 1 ? "perm" : "shuf", (long long)m,
                           (long long)K, (long long)N, bad);
                }
                unsetenv("MSBNB_CPU_I16_DECODE");
                /* double quant: the kernels read the 8-bit scale codes (MSBNB_CPU_DQ_SCALES=u8;
                 * by default for large weights) or the decoded f32 copy (=f32): the same
                 * scales, so the same bits */
                if (kd->p.double_quant) {
                    float *y2 = malloc((size_t)(m * N) * 4);
                    CHECK_OK(msbnb_linear_set_exact(l, 0));
                    setenv("MSBNB_CPU_DQ_SCALES", "u8", 1); /* at any size (default: >= 4 MiB) */
                    CHECK_OK(msbnb_linear_forward(l, y, x, m));
                    setenv("MSBNB_CPU_DQ_SCALES", "f32", 1);
                    CHECK_OK(msbnb_linear_forward(l, y2, x, m));
                    unsetenv("MSBNB_CPU_DQ_SCALES");
                    CHECKF(memcmp(y, y2, (size_t)(m * N) * 4) == 0, "%s %s: 8-bit and f32 scales differ", kd->name,
                           msbnb_cpu_tier_name(tiers[t]));
                    free(y2);
                }
                /* x = 0: exactly the bias */
                CHECK_OK(msbnb_linear_set_exact(l, 0));
                float *z = calloc((size_t)(m * K), 4);
                CHECK_OK(msbnb_linear_forward(l, y, z, m));
                int neq = 0;
                for (int64_t i = 0; i < m * N; i++) neq += y[i] != b[i % N];
                CHECKF(neq == 0, "%s %s: x = 0 gives %d outputs other than the bias", kd->name,
                       msbnb_cpu_tier_name(tiers[t]), neq);
                /* a NaN input makes its row's outputs NaN, an Inf non-finite (as the
                 * scalar tier: NaN or Inf) */
                memcpy(z, x, (size_t)(m * K) * 4);
                z[rnd(0, K - 1)] = NAN;
                if (m > 1) z[K + rnd(0, K - 1)] = INFINITY;
                CHECK_OK(msbnb_linear_forward(l, y, z, m));
                int fin = 0;
                for (int64_t i = 0; i < (m > 1 ? 2 : 1) * N; i++) fin += isfinite(y[i]) != 0;
                for (int64_t r = 0; r < N; r++) fin += !isnan(y[r]);
                CHECKF(fin == 0, "%s %s: %d outputs finite (or not NaN) despite NaN/Inf inputs", kd->name,
                       msbnb_cpu_tier_name(tiers[t]), fin);
                free(z);
            }
            msbnb_linear_free(l);
            free(w);
            free(b);
            free(wd);
            free(x);
            free(y);
            free(ref);
            free(mag);
            free(slack);
        }
    /* the setting itself */
    float w1[64 * 2];
    for (int i = 0; i < 128; i++) w1[i] = (float)(i % 7) - 3.0f;
    msbnb_qparams p4 = msbnb_qparams_default(MSBNB_QTYPE_NF4);
    msbnb_linear_t *l = NULL, *c = NULL;
    CHECK_OK(msbnb_linear_create(&l, 64, 2, w1, NULL, &p4));
    CHECK(msbnb_linear_exact(l) == 0);
    CHECK_STATUS(msbnb_linear_set_exact(NULL, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_set_exact(l, 2), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_set_exact(l, -1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK(msbnb_linear_exact(l) == 0);
    CHECK(msbnb_linear_exact(NULL) == 0);
    CHECK_OK(msbnb_linear_set_exact(l, 1));
    CHECK_OK(msbnb_linear_clone(&c, l));
    CHECK(msbnb_linear_exact(c) == 1); /* a clone keeps it */
    msbnb_linear_free(c);
    msbnb_linear_free(l);
}

/* L(x) = Σ G ⊙ forward(x); checks backward's dx (finite differences, and the float64
 * product G · Wd), and dw, db for float layers. */
static double loss(const msbnb_linear_t *l, const float *x, const float *g, int64_t m) {
    int64_t N = msbnb_linear_out_features(l);
    float *y = malloc((size_t)(m * N) * 4);
    CHECK_OK(msbnb_linear_forward(l, y, x, m));
    double s = 0;
    for (int64_t i = 0; i < m * N; i++) s += (double)y[i] * g[i];
    free(y);
    return s;
}

static void check_backward_case(const kind_t *kd, int64_t m, int64_t K, int64_t N) {
    float *w, *b;
    msbnb_linear_t *l = random_layer(kd, K, N, 0.1f, 1, &w, &b);
    if (!l) return;
    int is_float = kd->p.type == MSBNB_QTYPE_F32 || kd->p.type == MSBNB_QTYPE_BF16 ||
                   kd->p.type == MSBNB_QTYPE_F16;
    float *wd = malloc((size_t)(N * K) * 4), *x = malloc((size_t)(m * K) * 4);
    float *g = malloc((size_t)(m * N) * 4), *dx = malloc((size_t)(m * K) * 4);
    float *dw = malloc((size_t)(N * K) * 4), *db = malloc((size_t)N * 4);
    CHECK_OK(msbnb_linear_dequantize_weight(l, wd));
    tu_fill_normal(&g_rng, x, (size_t)(m * K), 1.0f);
    tu_fill_normal(&g_rng, g, (size_t)(m * N), 1.0f);
    for (int tw = 0; tw < 2 * n_tiers; tw++) {
        const int t = tw / 2;
        CHECK_OK(msbnb_linear_set_cpu_tier(l, tiers[t]));
        CHECK_OK(msbnb_linear_set_workspace(l, tw & 1)); /* 1 byte: 16-row panels */
        for (int64_t i = 0; i < N * K; i++) dw[i] = 0.5f; /* accumulated into */
        for (int64_t i = 0; i < N; i++) db[i] = -0.25f;
        CHECK_OK(msbnb_linear_backward(l, dx, is_float ? dw : NULL, db, g, x, m));
        int bad = 0;
        for (int64_t i = 0; i < m; i++)
            for (int64_t k = 0; k < K; k++) {
                double s = 0, a = 0;
                for (int64_t r = 0; r < N; r++) {
                    s += (double)g[i * N + r] * wd[r * K + k];
                    a += fabs((double)g[i * N + r] * wd[r * K + k]);
                }
                if (!(fabs(dx[i * K + k] - s) <= 2e-5 * a + 1e-6)) bad++;
            }
        CHECKF(bad == 0, "%s %s backward dx m=%lld K=%lld N=%lld: %d bad", kd->name,
               msbnb_cpu_tier_name(tiers[t]), (long long)m, (long long)K, (long long)N, bad);
        int bad_db = 0, bad_dw = 0;
        for (int64_t r = 0; r < N; r++) {
            double s = -0.25;
            for (int64_t i = 0; i < m; i++) s += g[i * N + r];
            if (!(fabs(db[r] - s) <= 1e-5 * (1 + fabs(s)) * m)) bad_db++;
            if (is_float)
                for (int64_t k = 0; k < K; k++) {
                    double sw = 0.5, a = 0.5;
                    for (int64_t i = 0; i < m; i++) {
                        sw += (double)g[i * N + r] * x[i * K + k];
                        a += fabs((double)g[i * N + r] * x[i * K + k]);
                    }
                    if (!(fabs(dw[r * K + k] - sw) <= 2e-5 * a + 1e-6)) bad_dw++;
                }
        }
        CHECKF(bad_db == 0 && bad_dw == 0, "%s %s: db %d bad, dw %d bad", kd->name,
               msbnb_cpu_tier_name(tiers[t]), bad_db, bad_dw);
    }
    /* finite differences of L in x (not for LLM.int8, whose activation rounding makes L
     * piecewise constant in x; its dx is the straight-through G · Wd checked above) */
    if (!is_int8_sym(kd)) {
        CHECK_OK(msbnb_linear_set_cpu_tier(l, MSBNB_CPU_SCALAR));
        CHECK_OK(msbnb_linear_backward(l, dx, NULL, NULL, g, x, m));
        for (int trial = 0; trial < 6; trial++) {
            int64_t idx = rnd(0, m * K - 1);
            float save = x[idx], h = 1e-2f;
            x[idx] = save + h;
            double lp = loss(l, x, g, m);
            x[idx] = save - h;
            double lm = loss(l, x, g, m);
            x[idx] = save;
            double fd = (lp - lm) / (2.0 * h);
            CHECKF(fabs(fd - dx[idx]) <= 2e-3 * (1 + fabs(fd)), "%s: FD dx %g vs %g", kd->name, fd,
                   (double)dx[idx]);
        }
    }
    /* finite differences of L in w and b for the f32 layer: rebuild with perturbed params */
    if (kd->p.type == MSBNB_QTYPE_F32) {
        CHECK_OK(msbnb_linear_set_cpu_tier(l, MSBNB_CPU_SCALAR));
        memset(dw, 0, (size_t)(N * K) * 4);
        memset(db, 0, (size_t)N * 4);
        CHECK_OK(msbnb_linear_backward(l, NULL, dw, db, g, x, m));
        float *pw, *pb;
        CHECK_OK(msbnb_linear_f32_params(l, &pw, &pb));
        for (int trial = 0; trial < 4; trial++) {
            int64_t idx = rnd(0, N * K - 1);
            float save = pw[idx], h = 1e-2f;
            pw[idx] = save + h;
            double lp = loss(l, x, g, m);
            pw[idx] = save - h;
            double lm = loss(l, x, g, m);
            pw[idx] = save;
            double fd = (lp - lm) / (2.0 * h);
            CHECKF(fabs(fd - dw[idx]) <= 2e-3 * (1 + fabs(fd)), "FD dw %g vs %g", fd, (double)dw[idx]);
            int64_t r = rnd(0, N - 1);
            save = pb[r];
            pb[r] = save + h;
            lp = loss(l, x, g, m);
            pb[r] = save - h;
            lm = loss(l, x, g, m);
            pb[r] = save;
            fd = (lp - lm) / (2.0 * h);
            CHECKF(fabs(fd - db[r]) <= 2e-3 * (1 + fabs(fd)), "FD db %g vs %g", fd, (double)db[r]);
        }
    }
    msbnb_linear_free(l);
    free(w);
    free(b);
    free(wd);
    free(x);
    free(g);
    free(dx);
    free(dw);
    free(db);
}

static void test_backward_all_kinds(void) {
    static const int64_t ms[] = {1, 3, 9, 64};
    for (int k = 0; k < n_kinds; k++)
        for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
            int64_t K = rnd(1, g_small ? 90 : 300), N = rnd(1, g_small ? 40 : 120);
            if (mi & 1) K = 64 * rnd(1, 4);
            check_backward_case(&kinds[k], ms[mi], K, N);
        }
}

/* quantize_weights converts in place and gives the same layer as creating it quantized. */
static void test_quantize_weights_in_place(void) {
    int64_t K = 768, N = 96;
    float *w = malloc((size_t)(N * K) * 4), *b = malloc((size_t)N * 4);
    float *w1 = malloc((size_t)(N * K) * 4), *w2 = malloc((size_t)(N * K) * 4);
    tu_fill_normal(&g_rng, w, (size_t)(N * K), 0.05f);
    tu_fill_normal(&g_rng, b, (size_t)N, 0.1f);
    for (int k = 0; k < n_kinds; k++) {
        msbnb_linear_t *a = NULL, *q = NULL;
        CHECK_OK(msbnb_linear_create(&a, K, N, w, b, NULL));
        CHECK_OK(msbnb_linear_create(&q, K, N, w, b, &kinds[k].p));
        if (!a || !q) continue;
        CHECK(msbnb_linear_weight_bytes(a) == 4 * N * K);
        CHECK_OK(msbnb_linear_quantize_weights(a, &kinds[k].p));
        CHECK(msbnb_linear_qparams(a).type == kinds[k].p.type);
        CHECK(msbnb_linear_weight_bytes(a) == msbnb_linear_weight_bytes(q));
        CHECK_OK(msbnb_linear_dequantize_weight(a, w1));
        CHECK_OK(msbnb_linear_dequantize_weight(q, w2));
        CHECKF(memcmp(w1, w2, (size_t)(N * K) * 4) == 0, "%s", kinds[k].name);
        CHECK(msbnb_linear_has_bias(a) && memcmp(msbnb_linear_bias(a), b, (size_t)N * 4) == 0);
        int64_t bytes;
        double bpw;
        CHECK_OK(msbnb_qparams_storage(&kinds[k].p, N, K, &bytes, &bpw));
        CHECK(msbnb_linear_weight_bytes(q) == bytes);
        CHECK(fabs(msbnb_linear_bits_per_weight(q) - bpw) < 1e-12);
        if (kinds[k].p.type != MSBNB_QTYPE_F32)
            CHECK_STATUS(msbnb_linear_quantize_weights(a, &kinds[k].p), MSBNB_ERR_STATE);
        /* a clone is an independent deep copy */
        msbnb_linear_t *c = NULL;
        CHECK_OK(msbnb_linear_clone(&c, q));
        msbnb_linear_free(q);
        q = c;
        CHECK_OK(msbnb_linear_dequantize_weight(c, w1));
        CHECKF(memcmp(w1, w2, (size_t)(N * K) * 4) == 0, "clone %s", kinds[k].name);
        CHECK(msbnb_linear_weight_bytes(c) == bytes);
        msbnb_linear_free(a);
        msbnb_linear_free(q);
    }
    free(w);
    free(b);
    free(w1);
    free(w2);
}

/* bf16 activations, every kind, fused (m <= 8) and panel (m > 8) paths: the same as
 * converting to f32 first; bf16 output is the f32 output rounded to nearest even. */
static void test_forward_bf16_activations(void) {
    int64_t K = 257, N = 33, m = 9;
    float *w = malloc((size_t)(N * K) * 4), *xf = malloc((size_t)(m * K) * 4);
    float *y = malloc((size_t)(m * N) * 4), *y2 = malloc((size_t)(m * N) * 4);
    uint16_t *xb = malloc((size_t)(m * K) * 2), *yb = malloc((size_t)(m * N) * 2);
    tu_fill_normal(&g_rng, w, (size_t)(N * K), 0.05f);
    tu_fill_normal(&g_rng, xf, (size_t)(m * K), 1.0f);
    for (int64_t i = 0; i < m * K; i++) {
        xb[i] = msbnb_f32_to_bf16(xf[i]);
        xf[i] = msbnb_bf16_to_f32(xb[i]);
    }
    for (int k = 0; k < n_kinds; k++)
        for (int64_t mm = 1; mm <= m; mm += 8) {
            msbnb_linear_t *l = NULL;
            CHECK_OK(msbnb_linear_create(&l, K, N, w, NULL, &kinds[k].p));
            if (!l) continue;
            if (kinds[k].threshold > 0) CHECK_OK(msbnb_linear_set_int8_threshold(l, kinds[k].threshold));
            CHECK_OK(msbnb_linear_forward(l, y, xf, mm));
            CHECK_OK(msbnb_linear_forward_bf16(l, y2, MSBNB_DTYPE_F32, xb, mm));
            CHECKF(memcmp(y, y2, (size_t)(mm * N) * 4) == 0, "%s m=%lld", kinds[k].name, (long long)mm);
            CHECK_OK(msbnb_linear_forward_bf16(l, yb, MSBNB_DTYPE_BF16, xb, mm));
            int bad = 0;
            for (int64_t i = 0; i < mm * N; i++) bad += yb[i] != msbnb_f32_to_bf16(y[i]);
            CHECKF(bad == 0, "%s m=%lld: %d bf16 outputs off", kinds[k].name, (long long)mm, bad);
            CHECK_STATUS(msbnb_linear_forward_bf16(l, yb, MSBNB_DTYPE_I8, xb, mm),
                         MSBNB_ERR_INVALID_ARGUMENT);
            CHECK_STATUS(msbnb_linear_forward_bf16(l, yb, MSBNB_DTYPE_BF16, xb, 0),
                         MSBNB_ERR_INVALID_ARGUMENT);
            msbnb_linear_free(l);
        }
    free(w);
    free(xf);
    free(y);
    free(y2);
    free(xb);
    free(yb);
}

/* bitsandbytes' own quantized weights (tests/data/formats.safetensors): layers built from
 * the parts compute with bnb's dequantized weight, and quantizing the same dense weight
 * here yields the same parts. */
static void test_matches_bnb_reference(void) {
    tu_st *f = tu_st_open("formats.safetensors");
    CHECK(f != NULL);
    if (!f) return;
    const char *dt;
    int64_t shape[8];
    int nd;
    size_t nb;
    const float *a = tu_st_get(f, "in.a", &dt, shape, &nd, &nb);
    CHECK(a && nd == 2);
    if (!a) {
        tu_st_close(f);
        return;
    }
    int64_t N = shape[0], K = shape[1], m = 5;
    float *x = malloc((size_t)(m * K) * 4), *y = malloc((size_t)(m * N) * 4);
    float *wd = malloc((size_t)(N * K) * 4);
    tu_fill_normal(&g_rng, x, (size_t)(m * K), 1.0f);
    static const char *types[] = {"nf4", "fp4"};
    static const int bss[] = {64, 128};
    for (int t = 0; t < 2; t++)
        for (int bi = 0; bi < 2; bi++)
            for (int dq = 0; dq < 2; dq++) {
                char key[128];
                const char *pre = "q4";
                msbnb_qparams p = msbnb_qparams_default(t ? MSBNB_QTYPE_FP4 : MSBNB_QTYPE_NF4);
                p.block = bss[bi];
                p.double_quant = dq;
#define GET(suffix) (snprintf(key, sizeof key, "%s.%s.bs%d.dq%d.a.%s", pre, types[t], bss[bi], dq, suffix), \
                     tu_st_get(f, key, NULL, NULL, NULL, &nb))
                const uint8_t *packed = GET("packed");
                const void *absmax = GET("absmax");
                const float *deq = GET("dequant");
                const float *nested = dq ? GET("nested_absmax") : NULL;
                const float *offset = dq ? GET("offset") : NULL;
#undef GET
                CHECK(packed && absmax && deq && (!dq || (nested && offset)));
                if (!packed || !absmax || !deq || (dq && (!nested || !offset))) continue;
                msbnb_linear_t *l = NULL;
                CHECK_OK(msbnb_linear_create_4bit_from_parts(&l, K, N, &p, packed,
                                                             dq ? NULL : absmax,
                                                             dq ? absmax : NULL, nested,
                                                             dq ? *offset : 0.0f, NULL));
                if (!l) continue;
                CHECK_OK(msbnb_linear_dequantize_weight(l, wd));
                int diff = 0;
                for (int64_t i = 0; i < N * K; i++) diff += tu_ulp_diff(wd[i], deq[i]) > 1;
                CHECKF(diff == 0, "%s bs%d dq%d: %d dequantized weights differ from bnb", types[t],
                       bss[bi], dq, diff);
                kind_t kd = {"bnb", p, 0};
                double *slack = malloc((size_t)(m * N) * 8);
                i16_slack(slack, &kd, x, deq, m, K, N);
                for (int ti = 0; ti < n_tiers; ti++) {
                    CHECK_OK(msbnb_linear_set_cpu_tier(l, tiers[ti]));
                    CHECK_OK(msbnb_linear_forward(l, y, x, m));
                    int bad = 0;
                    for (int64_t i = 0; i < m; i++)
                        for (int64_t r = 0; r < N; r++) {
                            double s = 0, mag = 0;
                            for (int64_t k = 0; k < K; k++) {
                                s += (double)x[i * K + k] * deq[r * K + k];
                                mag += fabs((double)x[i * K + k] * deq[r * K + k]);
                            }
                            const double sl = tiers[ti] == MSBNB_CPU_SCALAR ? 0 : slack[i * N + r];
                            bad += !(fabs(y[i * N + r] - s) <= 2e-5 * mag + 1e-6 + sl);
                        }
                    CHECKF(bad == 0, "%s bs%d dq%d %s: %d outputs off bnb's W x", types[t], bss[bi],
                           dq, msbnb_cpu_tier_name(tiers[ti]), bad);
                }
                free(slack);
                /* quantizing the dense in.a here gives bnb's packed codes */
                msbnb_linear_t *q = NULL;
                CHECK_OK(msbnb_linear_create(&q, K, N, a, NULL, &p));
                const uint8_t *qp;
                const uint8_t *qa;
                if (q && msbnb_linear_4bit_parts(q, &qp, NULL, &qa, NULL, NULL) == MSBNB_OK) {
                    CHECK(memcmp(qp, packed, (size_t)(N * K + 1) / 2) == 0);
                    if (dq) CHECK(memcmp(qa, absmax, (size_t)msbnb_nblocks(N * K, p.block)) == 0);
                }
                msbnb_linear_free(q);
                msbnb_linear_free(l);
            }
    /* LLM.int8: bnb's CB/SCB of in.outl (threshold 0) */
    const float *outl = tu_st_get(f, "in.outl", &dt, shape, &nd, &nb);
    const int8_t *cb = tu_st_get(f, "int8row.thr0.q", NULL, NULL, NULL, &nb);
    const float *scb = tu_st_get(f, "int8row.thr0.rowstats", NULL, NULL, NULL, &nb);
    CHECK(outl && cb && scb);
    if (outl && cb && scb) {
        int64_t N8 = shape[0], K8 = shape[1];
        msbnb_linear_t *l = NULL, *q = NULL;
        CHECK_OK(msbnb_linear_create_int8_from_parts(&l, K8, N8, cb, scb, NULL));
        CHECK_OK(msbnb_linear_create(&q, K8, N8, outl, NULL, &(msbnb_qparams){MSBNB_QTYPE_INT8, 1, 0, 0, 0}));
        const int8_t *qcb;
        const float *qscb;
        if (l && q && msbnb_linear_int8_parts(q, &qcb, &qscb) == MSBNB_OK) {
            CHECK(memcmp(qcb, cb, (size_t)(N8 * K8)) == 0);
            CHECK(memcmp(qscb, scb, (size_t)N8 * 4) == 0);
            float *w8 = malloc((size_t)(N8 * K8) * 4);
            CHECK_OK(msbnb_linear_dequantize_weight(l, w8));
            int bad = 0;
            for (int64_t i = 0; i < N8 * K8; i++)
                bad += fabsf(w8[i] - (float)cb[i] * (scb[i / K8] / 127.0f)) != 0;
            CHECK(bad == 0);
            free(w8);
        }
        msbnb_linear_free(l);
        msbnb_linear_free(q);
    }
    free(x);
    free(y);
    free(wd);
    tu_st_close(f);
}

static void test_bad_input(void) {
    float w[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, y[8], x[8], dx[8];
    msbnb_linear_t *l = NULL, *q = NULL;
    msbnb_qparams p4 = msbnb_qparams_default(MSBNB_QTYPE_NF4);
    CHECK_STATUS(msbnb_linear_create(NULL, 4, 3, w, NULL, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_create(&l, 4, 3, NULL, NULL, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_create(&l, 0, 3, w, NULL, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_create(&l, 4, -1, w, NULL, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_create(&l, INT64_MAX / 2, 4, w, NULL, NULL), MSBNB_ERR_OVERFLOW);
    CHECK(l == NULL);
    msbnb_qparams bad = p4;
    bad.block = 48;
    CHECK_STATUS(msbnb_linear_create(&l, 4, 3, w, NULL, &bad), MSBNB_ERR_UNSUPPORTED);
    bad = msbnb_qparams_default(MSBNB_QTYPE_INT4);
    bad.block = 7;
    CHECK_STATUS(msbnb_linear_create(&l, 4, 3, w, NULL, &bad), MSBNB_ERR_UNSUPPORTED);
    bad = msbnb_qparams_default(MSBNB_QTYPE_INT8);
    bad.per_tensor = 1;
    CHECK_STATUS(msbnb_linear_create(&l, 4, 3, w, NULL, &bad), MSBNB_ERR_UNSUPPORTED);
    bad.type = (msbnb_qtype)99;
    CHECK_STATUS(msbnb_linear_create(&l, 4, 3, w, NULL, &bad), MSBNB_ERR_INVALID_ARGUMENT);
    float wn[12];
    memcpy(wn, w, sizeof w);
    wn[5] = NAN;
    CHECK_STATUS(msbnb_linear_create(&l, 4, 3, wn, NULL, &p4), MSBNB_ERR_NON_FINITE);
    CHECK_STATUS(msbnb_linear_create(&l, 4, 3, w, wn + 3, NULL), MSBNB_ERR_NON_FINITE);
    CHECK(l == NULL);

    CHECK_OK(msbnb_linear_create(&l, 4, 3, w, NULL, NULL));
    CHECK_OK(msbnb_linear_create(&q, 4, 3, w, NULL, &p4));
    CHECK_STATUS(msbnb_linear_forward(NULL, y, x, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_forward(l, NULL, x, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_forward(l, y, NULL, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_forward(l, y, x, 0), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_forward(l, y, x, -3), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_forward(l, y, x, INT64_MAX / 4), MSBNB_ERR_OVERFLOW);
    CHECK_STATUS(msbnb_linear_backward(l, dx, NULL, NULL, NULL, x, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_backward(l, dx, dx, NULL, y, NULL, 1), MSBNB_ERR_INVALID_ARGUMENT);
    /* quantized layers: no dw, no 4-bit parts on f32, no int8 threshold on nf4 */
    CHECK_STATUS(msbnb_linear_backward(q, dx, w, NULL, y, x, 1), MSBNB_ERR_STATE);
    CHECK_STATUS(msbnb_linear_4bit_parts(l, NULL, NULL, NULL, NULL, NULL), MSBNB_ERR_STATE);
    CHECK_STATUS(msbnb_linear_int8_parts(q, NULL, NULL), MSBNB_ERR_STATE);
    CHECK_STATUS(msbnb_linear_int4_parts(q, NULL, NULL, NULL), MSBNB_ERR_STATE);
    CHECK_STATUS(msbnb_linear_f32_params(q, NULL, NULL), MSBNB_ERR_STATE);
    CHECK_STATUS(msbnb_linear_set_int8_threshold(q, 6.0f), MSBNB_ERR_STATE);
    CHECK_STATUS(msbnb_linear_quantize_weights(q, &p4), MSBNB_ERR_STATE);
    CHECK_STATUS(msbnb_linear_quantize_weights(l, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_quantize_weights(l, &bad), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK(msbnb_linear_qparams(l).type == MSBNB_QTYPE_F32); /* unchanged after failures */
    CHECK_STATUS(msbnb_linear_set_cpu_tier(l, (msbnb_cpu_tier)7), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_set_threads(NULL, 2), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_set_workspace(NULL, 0), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_set_workspace(l, -1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_dequantize_weight(q, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_OK(msbnb_linear_set_threads(l, 0));
    CHECK(msbnb_linear_threads(l) >= 1);
    msbnb_linear_free(q); /* the failing parts constructors below set q to NULL */
    /* parts constructors */
    uint8_t packed[6] = {0};
    float am[1] = {1};
    CHECK_STATUS(msbnb_linear_create_4bit_from_parts(&q, 4, 3, &p4, NULL, am, NULL, NULL, 0, NULL),
                 MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_create_4bit_from_parts(&q, 4, 3, NULL, packed, am, NULL, NULL, 0, NULL),
                 MSBNB_ERR_INVALID_ARGUMENT);
    msbnb_qparams p4dq = p4;
    p4dq.double_quant = 1;
    CHECK_STATUS(msbnb_linear_create_4bit_from_parts(&q, 4, 3, &p4dq, packed, am, NULL, NULL, 0, NULL),
                 MSBNB_ERR_INVALID_ARGUMENT);
    msbnb_qparams pi8 = msbnb_qparams_default(MSBNB_QTYPE_INT8);
    CHECK_STATUS(msbnb_linear_create_4bit_from_parts(&q, 4, 3, &pi8, packed, am, NULL, NULL, 0, NULL),
                 MSBNB_ERR_INVALID_ARGUMENT);
    am[0] = INFINITY;
    CHECK_STATUS(msbnb_linear_create_4bit_from_parts(&q, 4, 3, &p4, packed, am, NULL, NULL, 0, NULL),
                 MSBNB_ERR_NON_FINITE);
    int8_t cb[12] = {0};
    CHECK_STATUS(msbnb_linear_create_int8_from_parts(&q, 4, 3, cb, NULL, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_create_int4_from_parts(&q, 4, 3, &p4, packed, am, NULL, NULL),
                 MSBNB_ERR_INVALID_ARGUMENT);
    msbnb_linear_free(l);
    msbnb_linear_free(NULL);
    /* queries on NULL */
    CHECK(msbnb_linear_in_features(NULL) == 0 && msbnb_linear_weight_bytes(NULL) == 0);
    CHECK(msbnb_linear_bias(NULL) == NULL && !msbnb_linear_has_bias(NULL));
}

/* MSBNB_THREADS and MSBNB_CPU select the defaults; the API overrides them; an unknown or
 * unsupported tier is an error (at create for the environment, at set_cpu_tier). */
/* msbnb's row-scaled int8 parts (asymmetric, per-tensor, symmetric) make a layer holding
 * exactly msbnb_dequantize_8bit's weight, whose forward matches a float64 product on every
 * tier; bad parts are refused. */
static void test_int8_scaled_from_parts(void) {
    const int64_t K = 67, N = 5, m = 3;
    float *w = malloc((size_t)(N * K) * 4), *deq = malloc((size_t)(N * K) * 4), *lw = malloc((size_t)(N * K) * 4);
    float *x = malloc((size_t)(m * K) * 4), *y = malloc((size_t)(m * N) * 4), s[5], z[5], b[5];
    int8_t *q = malloc((size_t)(N * K));
    tu_fill_normal(&g_rng, w, (size_t)(N * K), 0.05f);
    tu_fill_normal(&g_rng, x, (size_t)(m * K), 1.0f);
    tu_fill_normal(&g_rng, b, 5, 0.1f);
    for (int c = 0; c < 3; c++) {
        const int sym = c == 2, pt = c == 1;
        CHECK_OK(msbnb_quantize_8bit(q, s, z, w, N, K, sym, pt));
        CHECK_OK(msbnb_dequantize_8bit(deq, q, s, z, N, K, sym, pt));
        msbnb_linear_t *l = NULL;
        CHECK_OK(msbnb_linear_create_int8_scaled_from_parts(&l, K, N, q, s, sym ? NULL : z, pt, b));
        if (!l) continue;
        CHECK_OK(msbnb_linear_dequantize_weight(l, lw));
        CHECKF(memcmp(lw, deq, (size_t)(N * K) * 4) == 0, "int8 parts case %d: weight differs", c);
        for (int t = 0; t <= (int)msbnb_cpu_tier_best(); t++) {
            CHECK_OK(msbnb_linear_set_cpu_tier(l, (msbnb_cpu_tier)t));
            CHECK_OK(msbnb_linear_forward(l, y, x, m));
            for (int64_t i = 0; i < m; i++)
                for (int64_t r = 0; r < N; r++) {
                    double acc = b[r], mag = fabs(b[r]);
                    for (int64_t k = 0; k < K; k++) {
                        acc += (double)deq[r * K + k] * x[i * K + k];
                        mag += fabs((double)deq[r * K + k] * x[i * K + k]);
                    }
                    CHECKF(fabs(y[i * N + r] - acc) <= 2e-5 * mag + 1e-6, "int8 parts case %d tier %d: y[%lld, %lld]",
                           c, t, (long long)i, (long long)r);
                }
        }
        msbnb_linear_free(l);
    }
    msbnb_linear_t *l = NULL;
    CHECK_STATUS(msbnb_linear_create_int8_scaled_from_parts(NULL, K, N, q, s, z, 0, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_create_int8_scaled_from_parts(&l, K, N, NULL, s, z, 0, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_create_int8_scaled_from_parts(&l, K, N, q, NULL, z, 0, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_create_int8_scaled_from_parts(&l, 0, N, q, s, z, 0, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_linear_create_int8_scaled_from_parts(&l, K, -1, q, s, z, 0, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    s[3] = NAN;
    CHECK_STATUS(msbnb_linear_create_int8_scaled_from_parts(&l, K, N, q, s, z, 0, NULL), MSBNB_ERR_NON_FINITE);
    s[3] = 1.0f;
    z[0] = INFINITY;
    CHECK_STATUS(msbnb_linear_create_int8_scaled_from_parts(&l, K, N, q, s, z, 1, NULL), MSBNB_ERR_NON_FINITE);
    CHECK(l == NULL);
    free(w), free(deq), free(lw), free(x), free(y), free(q);
}

static void test_threads_and_tier_selection(void) {
    int64_t K = 256, N = 40, m = 3;
    float *w = malloc((size_t)(N * K) * 4), *x = malloc((size_t)(m * K) * 4);
    float *y1 = malloc((size_t)(m * N) * 4), *y2 = malloc((size_t)(m * N) * 4);
    tu_fill_normal(&g_rng, w, (size_t)(N * K), 0.05f);
    tu_fill_normal(&g_rng, x, (size_t)(m * K), 1.0f);
    msbnb_qparams p = msbnb_qparams_default(MSBNB_QTYPE_NF4);
    msbnb_linear_t *l = NULL;
    setenv("MSBNB_THREADS", "3", 1);
    CHECK_OK(msbnb_linear_create(&l, K, N, w, NULL, &p));
    CHECK(msbnb_linear_threads(l) == 3);
    CHECK_OK(msbnb_linear_set_threads(l, 5));
    CHECK(msbnb_linear_threads(l) == 5);
    CHECK_OK(msbnb_linear_forward(l, y1, x, m));
    CHECK_OK(msbnb_linear_set_threads(l, 0)); /* back to the environment's default */
    CHECK(msbnb_linear_threads(l) == 3);
    unsetenv("MSBNB_THREADS");
    CHECK(msbnb_linear_threads(l) == msbnb_default_threads());
    CHECK_OK(msbnb_linear_set_threads(l, 1));
    CHECK_OK(msbnb_linear_forward(l, y2, x, m));
    /* rows are split between threads, never a row's sum: same bits for any count */
    CHECK(memcmp(y1, y2, (size_t)(m * N) * 4) == 0);
    msbnb_linear_free(l);
    l = NULL;
    for (int t = MSBNB_CPU_SCALAR; t <= MSBNB_CPU_AVX512; t++) {
        const char *name = msbnb_cpu_tier_name((msbnb_cpu_tier)t);
        setenv("MSBNB_CPU", name, 1);
        if (msbnb_cpu_tier_supported((msbnb_cpu_tier)t)) {
            CHECK_OK(msbnb_linear_create(&l, K, N, w, NULL, &p));
            CHECKF(l && msbnb_linear_cpu_tier(l) == (msbnb_cpu_tier)t, "MSBNB_CPU=%s", name);
            if (l) {
                /* the forced tier computes what set_cpu_tier to it computes */
                msbnb_linear_t *l2 = NULL;
                unsetenv("MSBNB_CPU");
                CHECK_OK(msbnb_linear_create(&l2, K, N, w, NULL, &p));
                CHECK_OK(msbnb_linear_set_cpu_tier(l2, (msbnb_cpu_tier)t));
                CHECK_OK(msbnb_linear_forward(l, y1, x, m));
                CHECK_OK(msbnb_linear_forward(l2, y2, x, m));
                CHECK(memcmp(y1, y2, (size_t)(m * N) * 4) == 0);
                msbnb_linear_free(l2);
            }
            msbnb_linear_free(l);
            l = NULL;
        } else {
            /* only reachable on a CPU without this tier */
            CHECK_STATUS(msbnb_linear_create(&l, K, N, w, NULL, &p), MSBNB_ERR_UNSUPPORTED);
            CHECK(strstr(msbnb_last_error(), name) != NULL);
            unsetenv("MSBNB_CPU");
            CHECK_OK(msbnb_linear_create(&l, K, N, w, NULL, &p));
            CHECK_STATUS(msbnb_linear_set_cpu_tier(l, (msbnb_cpu_tier)t), MSBNB_ERR_UNSUPPORTED);
            msbnb_linear_free(l);
            l = NULL;
        }
    }
    setenv("MSBNB_CPU", "avx9", 1);
    CHECK_STATUS(msbnb_linear_create(&l, K, N, w, NULL, &p), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK(l == NULL && strstr(msbnb_last_error(), "avx9") != NULL);
    unsetenv("MSBNB_CPU");
    free(w);
    free(x);
    free(y1);
    free(y2);
}

/* Layers large enough that forward cuts the rows into more chunks than threads (a thread
 * takes several chunks and prepares x once): every tier and thread count against the
 * scalar tier. */
/* Layers on a caller-owned thread pool give the bits of the layers without one (each row's
 * sum is computed by one thread either way), over many back-to-back calls (workers spinning
 * and sleeping), pool sizes below / equal / above the layer's thread count, two layers on
 * one pool, and two threads calling forward on them at once. */
typedef struct {
    msbnb_linear_t *l;
    float *y;
    const float *x;
    int64_t m;
    int calls;
    msbnb_status st;
} pool_call;

static void *pool_caller(void *v) {
    pool_call *c = v;
    for (int i = 0; i < c->calls && c->st == MSBNB_OK; i++) c->st = msbnb_linear_forward(c->l, c->y, c->x, c->m);
    return NULL;
}

static void test_threadpool(void) {
    const int64_t K = 1024, N = 257, m = 3;
    float *w = malloc((size_t)(N * K) * 4), *x = malloc((size_t)(8 * K) * 4);
    float *y0[2], *y[2];
    tu_fill_normal(&g_rng, w, (size_t)(N * K), 0.05f);
    tu_fill_normal(&g_rng, x, (size_t)(8 * K), 1.0f);
    static const int kix[2] = {3, 10}; /* int8 (int8 kernels), nf4 (float kernels) */
    msbnb_linear_t *l[2] = {NULL, NULL};
    for (int q = 0; q < 2; q++) {
        y0[q] = malloc((size_t)(8 * N) * 4);
        y[q] = malloc((size_t)(8 * N) * 4);
        CHECK_OK(msbnb_linear_create(&l[q], K, N, w, NULL, &kinds[kix[q]].p));
        if (!l[q]) return;
        CHECK_OK(msbnb_linear_set_threads(l[q], 2));
        CHECK_OK(msbnb_linear_forward(l[q], y0[q], x, m)); /* threads created per call */
    }
    for (int ps = 1; ps <= 3; ps++) {
        msbnb_threadpool_t *pool = NULL;
        CHECK_OK(msbnb_threadpool_create(&pool, ps));
        if (!pool) continue;
        CHECK(msbnb_threadpool_size(pool) == ps);
        for (int q = 0; q < 2; q++) CHECK_OK(msbnb_linear_set_threadpool(l[q], pool));
        int bad = 0;
        for (int i = 0; i < 300; i++) {
            const int q = i & 1;
            memset(y[q], 0xff, (size_t)(m * N) * 4);
            CHECK_OK(msbnb_linear_forward(l[q], y[q], x, m));
            bad += memcmp(y[q], y0[q], (size_t)(m * N) * 4) != 0;
        }
        CHECKF(bad == 0, "pool of %d: %d of 300 calls differ from threads per call", ps, bad);
        /* two callers, one pool: their jobs take turns */
        pthread_t th[2];
        pool_call pc[2];
        for (int q = 0; q < 2; q++) {
            pc[q] = (pool_call){l[q], y[q], x, m, 100, MSBNB_OK};
            CHECK(pthread_create(&th[q], NULL, pool_caller, &pc[q]) == 0);
        }
        for (int q = 0; q < 2; q++) {
            pthread_join(th[q], NULL);
            CHECK_OK(pc[q].st);
            CHECKF(memcmp(y[q], y0[q], (size_t)(m * N) * 4) == 0, "pool of %d, concurrent callers: layer %d", ps, q);
        }
        for (int q = 0; q < 2; q++) CHECK_OK(msbnb_linear_set_threadpool(l[q], NULL));
        msbnb_threadpool_free(pool);
    }
    msbnb_threadpool_t *p = (msbnb_threadpool_t *)1;
    CHECK_STATUS(msbnb_threadpool_create(NULL, 2), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_threadpool_create(&p, -1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK(p == NULL);
    CHECK_STATUS(msbnb_linear_set_threadpool(NULL, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK(msbnb_threadpool_size(NULL) == 0);
    msbnb_threadpool_free(NULL);
    CHECK_OK(msbnb_threadpool_create(&p, 0)); /* default size */
    CHECK(msbnb_threadpool_size(p) == msbnb_default_threads());
    msbnb_threadpool_free(p);
    for (int q = 0; q < 2; q++) {
        msbnb_linear_free(l[q]);
        free(y0[q]);
        free(y[q]);
    }
    free(w);
    free(x);
}

static void test_forward_many_chunks(void) {
    static const int kix[] = {1, 3, 5, 7, 10, 11}; /* bf16, int8, int8-asym, int4-g128-asym, nf4, nf4-dq */
    const int64_t K = g_small ? 1024 : 4096, N = 257;
    float *w = malloc((size_t)(N * K) * 4), *x = malloc((size_t)(8 * K) * 4);
    float *y0 = malloc((size_t)(8 * N) * 4), *y = malloc((size_t)(8 * N) * 4);
    float *wd = malloc((size_t)(N * K) * 4);
    double *mag = malloc((size_t)(8 * N) * 8), *slack = malloc((size_t)(8 * N) * 8);
    tu_fill_normal(&g_rng, w, (size_t)(N * K), 0.05f);
    tu_fill_normal(&g_rng, x, (size_t)(8 * K), 1.0f);
    for (size_t q = 0; q < sizeof kix / sizeof kix[0]; q++) {
        const kind_t *kd = &kinds[kix[q]];
        msbnb_linear_t *l = NULL;
        CHECK_OK(msbnb_linear_create(&l, K, N, w, NULL, &kd->p));
        if (!l) continue;
        CHECK_OK(msbnb_linear_dequantize_weight(l, wd));
        for (int64_t i = 0; i < 8; i++) /* Σ_k |x w|: the scale of f32 rounding */
            for (int64_t r = 0; r < N; r++) {
                double a = 0;
                for (int64_t k = 0; k < K; k++) a += fabs((double)x[i * K + k] * wd[r * K + k]);
                mag[i * N + r] = a;
            }
        /* the SIMD tiers' integer 4-bit kernels: their rounding bound on top */
        if (is_4bit(kd)) i16_slack(slack, kd, x, wd, 8, K, N);
        for (int64_t m = 1; m <= 8; m += 7) {
            CHECK_OK(msbnb_linear_set_cpu_tier(l, MSBNB_CPU_SCALAR));
            CHECK_OK(msbnb_linear_forward(l, y0, x, m));
            for (int t = 0; t < n_tiers; t++)
                for (int nt = 1; nt <= 3; nt++) {
                    CHECK_OK(msbnb_linear_set_cpu_tier(l, tiers[t]));
                    CHECK_OK(msbnb_linear_set_threads(l, nt));
                    memset(y, 0xff, (size_t)(m * N) * 4);
                    CHECK_OK(msbnb_linear_forward(l, y, x, m));
                    int bad = 0;
                    for (int64_t i = 0; i < m * N; i++) {
                        const double sl = is_4bit(kd) && tiers[t] != MSBNB_CPU_SCALAR ? slack[i] : 0;
                        bad += !(fabs(y[i] - y0[i]) <= 2e-5 * mag[i] + 1e-6 + sl);
                    }
                    CHECKF(bad == 0, "%s %s threads=%d m=%lld: %d outputs off scalar", kd->name,
                           msbnb_cpu_tier_name(tiers[t]), nt, (long long)m, bad);
                }
        }
        msbnb_linear_free(l);
    }
    free(w);
    free(x);
    free(y0);
    free(y);
    free(wd);
    free(mag);
    free(slack);
}

int main(void) {
    uint64_t seed = tu_seed();
    tu_rng_init(&g_rng, seed);
    const char *s = getenv("MSBNB_SANITIZE_RUN");
    g_small = s && *s && *s != '0';
    init_kinds();
    for (int t = MSBNB_CPU_SCALAR; t <= MSBNB_CPU_AVX512; t++)
        if (msbnb_cpu_tier_supported((msbnb_cpu_tier)t)) tiers[n_tiers++] = (msbnb_cpu_tier)t;
    tu_report_tier_skips();
    RUN_TEST(test_bad_input);
    RUN_TEST(test_threads_and_tier_selection);
    RUN_TEST(test_int8_scaled_from_parts);
    RUN_TEST(test_forward_all_kinds_tiers_shapes);
    RUN_TEST(test_integer_4bit_kernels);
    RUN_TEST(test_forward_many_chunks);
    RUN_TEST(test_threadpool);
    RUN_TEST(test_backward_all_kinds);
    RUN_TEST(test_quantize_weights_in_place);
    RUN_TEST(test_forward_bf16_activations);
    RUN_TEST(test_matches_bnb_reference);
    return tu_finish();
}
