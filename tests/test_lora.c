/* LoRA layers: finite-difference gradients on every base kind (with and without dropout),
 * PEFT initialisation and scaling, several adapters, merge/unmerge round trips, parameter
 * registration + training with a frozen base, bad input. */
#include "testutil.h"
#include "msbnb/lora.h"
#include "msbnb/optim.h"

#include <stdlib.h>

static tu_rng g_rng;

typedef struct {
    const char *name;
    msbnb_qparams q;
    int fd_x; /* forward linear in x (LLM.int8 quantizes activations: straight-through) */
} kind_t;

static int kinds(kind_t *k) {
    int n = 0;
    k[n++] = (kind_t){"f32", msbnb_qparams_default(MSBNB_QTYPE_F32), 1};
    k[n++] = (kind_t){"bf16", msbnb_qparams_default(MSBNB_QTYPE_BF16), 1};
    k[n++] = (kind_t){"f16", msbnb_qparams_default(MSBNB_QTYPE_F16), 1};
    k[n++] = (kind_t){"int8-sym", msbnb_qparams_default(MSBNB_QTYPE_INT8), 0};
    k[n] = (kind_t){"int8-asym", msbnb_qparams_default(MSBNB_QTYPE_INT8), 1};
    k[n++].q.symmetric = 0;
    k[n] = (kind_t){"int4-g16", msbnb_qparams_default(MSBNB_QTYPE_INT4), 1};
    k[n++].q.block = 16;
    k[n++] = (kind_t){"nf4", msbnb_qparams_default(MSBNB_QTYPE_NF4), 1};
    k[n] = (kind_t){"nf4-dq", msbnb_qparams_default(MSBNB_QTYPE_NF4), 1};
    k[n++].q.double_quant = 1;
    k[n++] = (kind_t){"fp4", msbnb_qparams_default(MSBNB_QTYPE_FP4), 1};
    return n;
}

static float *fvec(size_t n, float scale) {
    float *x = calloc(n + 1, sizeof(float));
    if (scale > 0) tu_fill_normal(&g_rng, x, n, scale);
    return x;
}

/* A fresh layer (same seed => same dropout draws) with given A, B. */
static msbnb_lora_linear_t *make_layer(const kind_t *k, int64_t K, int64_t N, const float *w,
                                       const float *bias, const msbnb_lora_config *cfg,
                                       const float *A, const float *B, int training) {
    msbnb_lora_linear_t *l = NULL;
    msbnb_status st = msbnb_lora_linear_from_linear(&l, K, N, w, bias, &k->q, cfg);
    CHECKF(st == MSBNB_OK, "%s: %s", k->name, msbnb_last_error());
    if (!l) return NULL;
    msbnb_lora_adapter a;
    CHECK_OK(msbnb_lora_linear_adapter(l, NULL, &a));
    memcpy(a.A, A, (size_t)(cfg->rank * K) * 4);
    memcpy(a.B, B, (size_t)(N * cfg->rank) * 4);
    CHECK_OK(msbnb_lora_linear_set_training(l, training));
    return l;
}

/* L = <R, forward(x)> in double. */
static double loss_of(msbnb_lora_linear_t *l, const float *x, const float *R, int64_t m, int64_t N) {
    float *y = fvec((size_t)(m * N), 0);
    CHECK_OK(msbnb_lora_linear_forward(l, y, x, m));
    double s = 0;
    for (int64_t i = 0; i < m * N; i++) s += (double)y[i] * R[i];
    free(y);
    return s;
}

static int64_t rnd(int64_t lo, int64_t hi) {
    return lo + (int64_t)(tu_rng_u64(&g_rng) % (uint64_t)(hi - lo + 1));
}

/* Central differences. L is linear in each single entry of A, B and (for linear bases) x,
 * so a large step is exact up to rounding; the tolerance covers f32 accumulation. Fresh
 * shapes per case: odd K, m = 1 for the rsLoRA variant; rsLoRA with r = 3, where its
 * alpha / sqrt(r) differs from alpha / r. */
static void test_lora_gradients_every_kind(void) {
    kind_t ks[16];
    int nk = kinds(ks);
    for (int ki = 0; ki < nk; ki++)
        for (int variant = 0; variant < 2; variant++) {
            const kind_t *k = &ks[ki];
            const int64_t K = 2 * rnd(1, 30) + 1, N = rnd(3, 41), m = variant ? 1 : rnd(2, 9);
            msbnb_lora_config cfg = msbnb_lora_config_default();
            cfg.rank = variant ? 3 : (K < N ? K : N) < 4 ? 3 : 4;
            cfg.alpha = variant ? 3.0f : 8.0f;
            cfg.use_rslora = variant;
            cfg.dropout = variant ? 0.0f : 0.3f; /* dropout in training mode */
            cfg.seed = tu_rng_u64(&g_rng);
            int training = !variant;
            int64_t r = cfg.rank;
            float *w = fvec((size_t)(N * K), 0.2f), *bias = fvec((size_t)N, 0.1f);
            float *A = fvec((size_t)(r * K), 0.3f), *B = fvec((size_t)(N * r), 0.3f);
            float *x = fvec((size_t)(m * K), 1.0f), *R = fvec((size_t)(m * N), 1.0f);
            msbnb_lora_linear_t *l = make_layer(k, K, N, w, bias, &cfg, A, B, training);
            if (!l) continue;
            float *y = fvec((size_t)(m * N), 0), *dx = fvec((size_t)(m * K), 0);
            CHECK_OK(msbnb_lora_linear_forward(l, y, x, m));
            CHECK_OK(msbnb_lora_linear_backward(l, dx, R, x, m));
            msbnb_lora_adapter a;
            CHECK_OK(msbnb_lora_linear_adapter(l, NULL, &a));
            float want_s = variant ? (float)(3.0 / sqrt(3.0)) : 8.0f / (float)r;
            CHECKF(fabsf(a.scaling - want_s) < 1e-6f, "%s: scaling %g, want %g", k->name,
                   a.scaling, want_s);
            int bad = 0, checked = 0;
            for (int which = 0; which < 3; which++) {
                if (which == 2 && !k->fd_x) continue;
                int64_t n = which == 0 ? r * K : which == 1 ? N * r : m * K;
                const float *g = which == 0 ? a.dA : which == 1 ? a.dB : dx;
                for (int t = 0; t < 12; t++) {
                    int64_t i = (int64_t)(tu_rng_u64(&g_rng) % (uint64_t)n);
                    const float eps = 0.25f;
                    double lp = 0, lm = 0;
                    float *Ap = fvec((size_t)(r * K), 0), *Bp = fvec((size_t)(N * r), 0),
                          *xp = fvec((size_t)(m * K), 0);
                    for (int sgn = 0; sgn < 2; sgn++) {
                        memcpy(Ap, A, (size_t)(r * K) * 4);
                        memcpy(Bp, B, (size_t)(N * r) * 4);
                        memcpy(xp, x, (size_t)(m * K) * 4);
                        float d = sgn ? -eps : eps;
                        if (which == 0) Ap[i] += d;
                        else if (which == 1) Bp[i] += d;
                        else xp[i] += d;
                        msbnb_lora_linear_t *l2 = make_layer(k, K, N, w, bias, &cfg, Ap, Bp, training);
                        double L = loss_of(l2, xp, R, m, N);
                        if (sgn) lm = L;
                        else lp = L;
                        msbnb_lora_linear_free(l2);
                    }
                    double fd = (lp - lm) / (2 * eps);
                    double tol = 2e-3 * (1 + fabs(fd));
                    checked++;
                    if (fabs(fd - g[i]) > tol) {
                        if (bad < 3)
                            fprintf(stderr, "  %s r=%lld %s[%lld]: analytic %.6g fd %.6g\n", k->name,
                                    (long long)r, which == 0 ? "dA" : which == 1 ? "dB" : "dx",
                                    (long long)i, g[i], fd);
                        bad++;
                    }
                    free(Ap);
                    free(Bp);
                    free(xp);
                }
            }
            CHECKF(bad == 0, "%s: %d of %d gradient entries off", k->name, bad, checked);
            if (!k->fd_x) {
                /* LLM.int8: dx = dy · W_deq (straight-through) + the adapter's part */
                float *wd = fvec((size_t)(N * K), 0);
                CHECK_OK(msbnb_linear_dequantize_weight(msbnb_lora_linear_base(l), wd));
                int bx = 0;
                for (int64_t i = 0; i < m; i++)
                    for (int64_t kk = 0; kk < K; kk++) {
                        double s = 0;
                        for (int64_t n = 0; n < N; n++) s += (double)R[i * N + n] * wd[n * K + kk];
                        for (int64_t j = 0; j < r; j++) {
                            double dh = 0;
                            for (int64_t n = 0; n < N; n++) dh += (double)R[i * N + n] * B[n * r + j];
                            s += a.scaling * dh * A[j * K + kk]; /* variant 1: no dropout */
                        }
                        if (!training) bx += fabs(s - dx[i * K + kk]) > 1e-4 * (1 + fabs(s));
                    }
                CHECK(bx == 0);
                free(wd);
            }
            msbnb_lora_linear_free(l);
            free(w);
            free(bias);
            free(A);
            free(B);
            free(x);
            free(R);
            free(y);
            free(dx);
        }
}

/* PEFT init: A ~ U(-1/sqrt(K), 1/sqrt(K)) seeded, B = 0 so the new adapter is a no-op. */
static void test_lora_init_and_noop(void) {
    const int64_t K = 300, N = 70, m = 3;
    float *w = fvec((size_t)(N * K), 0.1f), *x = fvec((size_t)(m * K), 1);
    msbnb_lora_config cfg = msbnb_lora_config_default();
    cfg.seed = 42;
    msbnb_lora_linear_t *l, *l2;
    CHECK_OK(msbnb_lora_linear_from_linear(&l, K, N, w, NULL, NULL, NULL)); /* seed's defaults */
    CHECK_OK(msbnb_lora_linear_from_linear(&l2, K, N, w, NULL, NULL, &cfg));
    msbnb_lora_adapter a, a2;
    CHECK_OK(msbnb_lora_linear_adapter(l, "default", &a));
    CHECK_OK(msbnb_lora_linear_adapter(l2, NULL, &a2));
    CHECK(msbnb_linear_qparams(msbnb_lora_linear_base(l)).type == MSBNB_QTYPE_NF4);
    CHECK(a.rank == 8 && a.alpha == 16.0f && a.scaling == 2.0f);
    double bound = 1 / sqrt((double)K), mx = 0, mean = 0;
    for (int64_t i = 0; i < a.rank * K; i++) {
        CHECK(fabs(a.A[i]) <= bound);
        mx = fmax(mx, fabs(a.A[i]));
        mean += a.A[i];
    }
    mean /= (double)(a.rank * K);
    CHECK(mx > 0.99 * bound);
    CHECK(fabs(mean) < 0.05 * bound);
    for (int64_t i = 0; i < N * a.rank; i++) CHECK(a.B[i] == 0.0f);
    CHECK(memcmp(a.A, a2.A, (size_t)(a.rank * K) * 4) != 0); /* seed 0 vs 42 */
    msbnb_lora_linear_t *l3;
    CHECK_OK(msbnb_lora_linear_from_linear(&l3, K, N, w, NULL, NULL, &cfg));
    msbnb_lora_adapter a3;
    CHECK_OK(msbnb_lora_linear_adapter(l3, NULL, &a3));
    CHECK(memcmp(a3.A, a2.A, (size_t)(a.rank * K) * 4) == 0); /* same seed, same A */
    float *y = fvec((size_t)(m * N), 0), *yb = fvec((size_t)(m * N), 0);
    CHECK_OK(msbnb_lora_linear_forward(l, y, x, m));
    CHECK_OK(msbnb_linear_forward(msbnb_lora_linear_base(l), yb, x, m));
    CHECK(memcmp(y, yb, (size_t)(m * N) * 4) == 0);
    msbnb_lora_linear_free(l);
    msbnb_lora_linear_free(l2);
    msbnb_lora_linear_free(l3);
    free(w);
    free(x);
    free(y);
    free(yb);
}

static void test_multiple_adapters(void) {
    const int64_t K = 33, N = 17, m = 4;
    float *w = fvec((size_t)(N * K), 0.2f), *x = fvec((size_t)(m * K), 1);
    msbnb_qparams q = msbnb_qparams_default(MSBNB_QTYPE_F32);
    msbnb_lora_linear_t *l;
    msbnb_lora_config c1 = msbnb_lora_config_default(), c2 = c1;
    c1.rank = 2;
    c2.rank = 5;
    c2.seed = 7;
    CHECK_OK(msbnb_lora_linear_from_linear(&l, K, N, w, NULL, &q, &c1));
    CHECK_OK(msbnb_lora_linear_add_adapter(l, "task2", &c2));
    CHECK(msbnb_lora_linear_num_adapters(l) == 2);
    CHECK(strcmp(msbnb_lora_linear_active(l), "default") == 0);
    msbnb_lora_adapter a1, a2;
    CHECK_OK(msbnb_lora_linear_adapter(l, "default", &a1));
    CHECK_OK(msbnb_lora_linear_adapter(l, "task2", &a2));
    for (int64_t i = 0; i < N * 2; i++) a1.B[i] = 0.1f * tu_rng_normal(&g_rng);
    for (int64_t i = 0; i < N * 5; i++) a2.B[i] = 0.1f * tu_rng_normal(&g_rng);
    float *y0 = fvec((size_t)(m * N), 0), *y1 = fvec((size_t)(m * N), 0), *y2 = fvec((size_t)(m * N), 0);
    CHECK_OK(msbnb_lora_linear_forward(l, y1, x, m));
    CHECK_OK(msbnb_lora_linear_set_active(l, "task2"));
    CHECK_OK(msbnb_lora_linear_forward(l, y2, x, m));
    CHECK_OK(msbnb_lora_linear_set_active(l, NULL));
    CHECK(msbnb_lora_linear_active(l) == NULL);
    CHECK_OK(msbnb_lora_linear_forward(l, y0, x, m));
    /* y_i - y0 = s_i (x A_iᵀ) B_iᵀ, checked in double */
    int bad = 0;
    for (int which = 0; which < 2; which++) {
        msbnb_lora_adapter *a = which ? &a2 : &a1;
        float *yy = which ? y2 : y1;
        for (int64_t i = 0; i < m; i++)
            for (int64_t n = 0; n < N; n++) {
                double s = 0;
                for (int64_t j = 0; j < a->rank; j++) {
                    double h = 0;
                    for (int64_t k = 0; k < K; k++) h += (double)x[i * K + k] * a->A[j * K + k];
                    s += h * a->B[n * a->rank + j];
                }
                s *= a->scaling;
                bad += fabs((yy[i * N + n] - y0[i * N + n]) - s) > 1e-5 * (1 + fabs(s));
            }
    }
    CHECK(bad == 0);
    /* merge needs an active adapter */
    CHECK_STATUS(msbnb_lora_linear_merge(l, NULL), MSBNB_ERR_STATE);
    CHECK_STATUS(msbnb_lora_linear_set_active(l, "nope"), MSBNB_ERR_NOT_FOUND);
    CHECK_OK(msbnb_lora_linear_set_active(l, "task2"));
    CHECK_OK(msbnb_lora_linear_delete_adapter(l, "task2"));
    CHECK(msbnb_lora_linear_active(l) == NULL && msbnb_lora_linear_num_adapters(l) == 1);
    CHECK_STATUS(msbnb_lora_linear_delete_adapter(l, "task2"), MSBNB_ERR_NOT_FOUND);
    CHECK_STATUS(msbnb_lora_linear_adapter(l, NULL, &a1), MSBNB_ERR_STATE);
    msbnb_lora_linear_free(l);
    free(w);
    free(x);
    free(y0);
    free(y1);
    free(y2);
}

/* Merge into every base kind; forward of the merged base matches the adapter's forward
 * within the reported re-quantization error; unmerge restores the base bit for bit. */
static void test_merge_unmerge(void) {
    kind_t ks[16];
    int nk = kinds(ks);
    const int64_t K = 96, N = 40, m = 6;
    for (int ki = 0; ki < nk; ki++) {
        const kind_t *k = &ks[ki];
        float *w = fvec((size_t)(N * K), 0.2f), *bias = fvec((size_t)N, 0.1f), *x = fvec((size_t)(m * K), 1);
        msbnb_lora_config cfg = msbnb_lora_config_default();
        cfg.rank = 4;
        msbnb_lora_linear_t *l;
        CHECK_OK(msbnb_lora_linear_from_linear(&l, K, N, w, bias, &k->q, &cfg));
        msbnb_lora_adapter a;
        CHECK_OK(msbnb_lora_linear_adapter(l, NULL, &a));
        for (int64_t i = 0; i < N * 4; i++) a.B[i] = 0.02f * tu_rng_normal(&g_rng);
        float *w0 = fvec((size_t)(N * K), 0), *w1 = fvec((size_t)(N * K), 0), *w2 = fvec((size_t)(N * K), 0);
        float *ya = fvec((size_t)(m * N), 0), *ym = fvec((size_t)(m * N), 0), *yu = fvec((size_t)(m * N), 0);
        CHECK_OK(msbnb_linear_dequantize_weight(msbnb_lora_linear_base(l), w0));
        CHECK_OK(msbnb_lora_linear_forward(l, ya, x, m));
        msbnb_error_stats e;
        CHECK_OK(msbnb_lora_linear_merge(l, &e));
        CHECK(msbnb_lora_linear_is_merged(l));
        CHECK_STATUS(msbnb_lora_linear_merge(l, NULL), MSBNB_ERR_STATE);
        CHECK_STATUS(msbnb_lora_linear_backward(l, NULL, ya, x, m), MSBNB_ERR_STATE);
        CHECK_STATUS(msbnb_lora_linear_set_active(l, NULL), MSBNB_ERR_STATE);
        CHECK_OK(msbnb_lora_linear_forward(l, ym, x, m));
        CHECK_OK(msbnb_linear_dequantize_weight(msbnb_lora_linear_base(l), w1));
        /* merged weight vs exact w0 + s B A */
        double maxd = 0, ref_norm = 0, diff_norm = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t kk = 0; kk < K; kk++) {
                double d = w0[n * K + kk];
                for (int64_t j = 0; j < 4; j++) d += (double)a.scaling * a.B[n * 4 + j] * a.A[j * K + kk];
                double df = w1[n * K + kk] - d;
                maxd = fmax(maxd, fabs(df));
                ref_norm += d * d;
                diff_norm += df * df;
            }
        double rel = sqrt(diff_norm / ref_norm);
        int is_f32 = k->q.type == MSBNB_QTYPE_F32;
        if (is_f32) {
            CHECK(e.max_abs == 0 && e.rel_frobenius == 0);
            CHECK(maxd < 1e-6);
        } else {
            /* the reported error is this re-quantization error */
            CHECKF(fabs(e.rel_frobenius - rel) < 1e-3 * rel + 1e-9, "%s: reported %g measured %g",
                   k->name, e.rel_frobenius, rel);
            CHECKF(e.rel_frobenius < 0.15, "%s: merge error %g", k->name, e.rel_frobenius);
        }
        /* merged forward ~ adapter forward: within f32 rounding for f32, else within what
         * the weight error allows */
        double yd = 0, yn = 0;
        for (int64_t i = 0; i < m * N; i++) {
            yd += (double)(ym[i] - ya[i]) * (ym[i] - ya[i]);
            yn += (double)ya[i] * ya[i];
        }
        double yrel = sqrt(yd / yn);
        CHECKF(yrel < (is_f32 ? 1e-5 : 3 * e.rel_frobenius + 0.02), "%s: merged forward rel err %g",
               k->name, yrel);
        CHECK_OK(msbnb_lora_linear_unmerge(l));
        CHECK(!msbnb_lora_linear_is_merged(l));
        CHECK_STATUS(msbnb_lora_linear_unmerge(l), MSBNB_ERR_STATE);
        CHECK_OK(msbnb_linear_dequantize_weight(msbnb_lora_linear_base(l), w2));
        CHECKF(memcmp(w0, w2, (size_t)(N * K) * 4) == 0, "%s: unmerge not exact", k->name);
        CHECK_OK(msbnb_lora_linear_forward(l, yu, x, m));
        CHECK(memcmp(ya, yu, (size_t)(m * N) * 4) == 0);
        msbnb_lora_linear_free(l);
        free(w);
        free(bias);
        free(x);
        free(w0);
        free(w1);
        free(w2);
        free(ya);
        free(ym);
        free(yu);
    }
}

/* Register in a container under PEFT names, freeze all but LoRA, train with AdamW toward
 * a target that differs from the NF4 base by a rank-2 update: the loss falls and the base
 * never changes. */
static void test_register_and_train_frozen_base(void) {
    const int64_t K = 64, N = 48, m = 32;
    float *w = fvec((size_t)(N * K), 0.2f);
    msbnb_lora_linear_t *l;
    msbnb_lora_config cfg = msbnb_lora_config_default();
    cfg.rank = 4;
    cfg.alpha = 8;
    CHECK_OK(msbnb_lora_linear_from_linear(&l, K, N, w, NULL, NULL, &cfg));
    CHECK_OK(msbnb_lora_linear_add_adapter(l, "other", &cfg));
    msbnb_params_t *ps;
    CHECK_OK(msbnb_params_create(&ps));
    CHECK_OK(msbnb_lora_linear_register_params(l, ps, "model.layers.0.mlp.down_proj"));
    int64_t idx;
    CHECK_OK(msbnb_params_find(ps, "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight", &idx));
    CHECK_OK(msbnb_params_find(ps, "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight", &idx));
    CHECK_OK(msbnb_params_find(ps, "base_model.model.model.layers.0.mlp.down_proj.lora_A.other.weight", &idx));
    CHECK_OK(msbnb_params_find(ps, "base_model.model.model.layers.0.mlp.down_proj.weight", &idx));
    msbnb_param pe;
    CHECK_OK(msbnb_params_get(ps, idx, &pe));
    CHECK(pe.data == NULL && !pe.trainable && pe.numel == N * K);
    CHECK_STATUS(msbnb_lora_linear_register_params(l, ps, "model.layers.0.mlp.down_proj"),
                 MSBNB_ERR_INVALID_ARGUMENT); /* duplicate names */
    CHECK_OK(msbnb_params_set_trainable_matching(ps, ".other.", 0, NULL));
    int64_t t, all;
    CHECK_OK(msbnb_params_totals(ps, &t, &all));
    CHECK(t == 4 * (K + N) && all == N * K + 2 * 4 * (K + N));
    /* target: W + U V (rank 2) */
    float *wt = fvec((size_t)(N * K), 0);
    CHECK_OK(msbnb_linear_dequantize_weight(msbnb_lora_linear_base(l), wt));
    float *U = fvec((size_t)(N * 2), 0.3f), *V = fvec((size_t)(2 * K), 0.3f);
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++) wt[n * K + k] += U[n * 2] * V[k] + U[n * 2 + 1] * V[K + k];
    float *wbase0 = fvec((size_t)(N * K), 0), *wbase1 = fvec((size_t)(N * K), 0);
    CHECK_OK(msbnb_linear_dequantize_weight(msbnb_lora_linear_base(l), wbase0));
    msbnb_optim_config oc = msbnb_optim_config_default(MSBNB_OPTIM_ADAMW);
    oc.lr = 1e-2f;
    oc.weight_decay = 0;
    msbnb_optim_t *o;
    CHECK_OK(msbnb_optim_create(&o, ps, &oc));
    float *x = fvec((size_t)(m * K), 0), *y = fvec((size_t)(m * N), 0), *dy = fvec((size_t)(m * N), 0);
    double first = 0, last = 0;
    int steps = 300;
    for (int s = 0; s < steps; s++) {
        tu_fill_normal(&g_rng, x, (size_t)(m * K), 1);
        CHECK_OK(msbnb_lora_linear_forward(l, y, x, m));
        double loss = 0;
        for (int64_t i = 0; i < m; i++)
            for (int64_t n = 0; n < N; n++) {
                double tgt = 0;
                for (int64_t k = 0; k < K; k++) tgt += (double)wt[n * K + k] * x[i * K + k];
                double e = y[i * N + n] - tgt;
                loss += 0.5 * e * e / m;
                dy[i * N + n] = (float)(e / m);
            }
        if (s < 10) first += loss / 10;
        if (s >= steps - 10) last += loss / 10;
        CHECK_OK(msbnb_lora_linear_backward(l, NULL, dy, x, m));
        CHECK_OK(msbnb_optim_step(o, NULL));
    }
    CHECKF(last < 0.05 * first, "LoRA did not learn the rank-2 shift: loss %g -> %g", first, last);
    CHECK_OK(msbnb_linear_dequantize_weight(msbnb_lora_linear_base(l), wbase1));
    CHECK(memcmp(wbase0, wbase1, (size_t)(N * K) * 4) == 0);
    msbnb_lora_adapter ao;
    CHECK_OK(msbnb_lora_linear_adapter(l, "other", &ao));
    for (int64_t i = 0; i < N * 4; i++) CHECK(ao.B[i] == 0.0f); /* frozen adapter untouched */
    msbnb_optim_free(o);
    msbnb_params_free(ps);
    msbnb_lora_linear_free(l);
    free(w);
    free(wt);
    free(U);
    free(V);
    free(wbase0);
    free(wbase1);
    free(x);
    free(y);
    free(dy);
}

static void test_bad_input(void) {
    const int64_t K = 10, N = 6;
    float *w = fvec((size_t)(N * K), 0.2f), x[20] = {0}, y[12];
    msbnb_lora_linear_t *l = (msbnb_lora_linear_t *)1;
    msbnb_lora_config c = msbnb_lora_config_default();
    c.rank = 0;
    CHECK_STATUS(msbnb_lora_linear_from_linear(&l, K, N, w, NULL, NULL, &c), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK(l == NULL);
    c.rank = 7; /* > min(10, 6) */
    CHECK_STATUS(msbnb_lora_linear_from_linear(&l, K, N, w, NULL, NULL, &c), MSBNB_ERR_INVALID_ARGUMENT);
    c.rank = -3;
    CHECK_STATUS(msbnb_lora_linear_from_linear(&l, K, N, w, NULL, NULL, &c), MSBNB_ERR_INVALID_ARGUMENT);
    c = msbnb_lora_config_default();
    c.rank = 6;
    c.alpha = NAN;
    CHECK_STATUS(msbnb_lora_linear_from_linear(&l, K, N, w, NULL, NULL, &c), MSBNB_ERR_INVALID_ARGUMENT);
    c.alpha = 1;
    c.dropout = 1.0f;
    CHECK_STATUS(msbnb_lora_linear_from_linear(&l, K, N, w, NULL, NULL, &c), MSBNB_ERR_INVALID_ARGUMENT);
    c.dropout = -0.1f;
    CHECK_STATUS(msbnb_lora_linear_from_linear(&l, K, N, w, NULL, NULL, &c), MSBNB_ERR_INVALID_ARGUMENT);
    c.dropout = 0.5f;
    CHECK_STATUS(msbnb_lora_linear_from_linear(&l, 0, N, w, NULL, NULL, &c), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_lora_linear_from_linear(&l, K, N, NULL, NULL, NULL, &c), MSBNB_ERR_INVALID_ARGUMENT);
    w[3] = NAN;
    CHECK_STATUS(msbnb_lora_linear_from_linear(&l, K, N, w, NULL, NULL, &c), MSBNB_ERR_NON_FINITE);
    w[3] = 0;
    CHECK_OK(msbnb_lora_linear_from_linear(&l, K, N, w, NULL, NULL, &c));
    CHECK_STATUS(msbnb_lora_linear_add_adapter(l, "default", &c), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_lora_linear_add_adapter(l, "", &c), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_lora_linear_add_adapter(l, "a.b", &c), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_lora_linear_forward(l, y, x, 0), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_lora_linear_forward(l, NULL, x, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_lora_linear_forward(l, y, x, INT64_MAX / 4), MSBNB_ERR_OVERFLOW);
    /* training with dropout: backward must follow a forward of the same rows */
    CHECK_OK(msbnb_lora_linear_set_training(l, 1));
    CHECK_STATUS(msbnb_lora_linear_backward(l, NULL, y, x, 2), MSBNB_ERR_STATE);
    float y2[12];
    CHECK_OK(msbnb_lora_linear_forward(l, y2, x, 2));
    CHECK_STATUS(msbnb_lora_linear_backward(l, NULL, y2, x, 1), MSBNB_ERR_STATE);
    CHECK_OK(msbnb_lora_linear_backward(l, NULL, y2, x, 2));
    CHECK_STATUS(msbnb_lora_linear_backward(l, NULL, y2, NULL, 2), MSBNB_ERR_INVALID_ARGUMENT);
    msbnb_params_t *ps;
    CHECK_OK(msbnb_params_create(&ps));
    CHECK_STATUS(msbnb_lora_linear_register_params(l, ps, ""), MSBNB_ERR_INVALID_ARGUMENT);
    msbnb_params_free(ps);
    msbnb_lora_linear_t *l2 = (msbnb_lora_linear_t *)1;
    CHECK_STATUS(msbnb_lora_linear_create(&l2, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK(l2 == NULL);
    msbnb_lora_linear_free(NULL);
    msbnb_lora_linear_free(l);
    free(w);
}

/* PEFT tensors of the wrong shape are refused with SHAPE (and leave the adapter as it
 * was); a NaN that reaches the adapter gradients is caught by the optimizer step, which
 * then changes nothing. */
static void test_adapter_weights_shapes_and_nan_grad(void) {
    const int64_t K = 24, N = 11, r = 3, m = 5;
    float *w = fvec((size_t)(N * K), 0.2f), *x = fvec((size_t)(m * K), 1);
    msbnb_lora_config c = msbnb_lora_config_default();
    c.rank = r;
    msbnb_lora_linear_t *l;
    CHECK_OK(msbnb_lora_linear_from_linear(&l, K, N, w, NULL, NULL, &c)); /* NF4 base */
    float *A = fvec((size_t)(r * K + N * r), 0.5f), *B = fvec((size_t)(N * r + r * K), 0.5f);
    int64_t as[2] = {r, K}, bs[2] = {N, r};
    msbnb_lora_adapter a;
    CHECK_OK(msbnb_lora_linear_adapter(l, NULL, &a));
    float *A0 = fvec((size_t)(r * K), 0);
    memcpy(A0, a.A, (size_t)(r * K) * 4);
    int64_t bad_shapes[4][4] = {{r + 1, K, N, r + 1}, /* another rank */
                                {K, r, N, r},         /* A transposed */
                                {r, K, r, N},         /* B transposed */
                                {r, K + 1, N, r}};    /* another module */
    for (int i = 0; i < 4; i++) {
        int64_t s1[2] = {bad_shapes[i][0], bad_shapes[i][1]}, s2[2] = {bad_shapes[i][2], bad_shapes[i][3]};
        CHECK_STATUS(msbnb_lora_linear_set_adapter_weights(l, "default", A, s1, B, s2), MSBNB_ERR_SHAPE);
        CHECK(strstr(msbnb_last_error(), "needs") != NULL);
    }
    CHECK(memcmp(A0, a.A, (size_t)(r * K) * 4) == 0);
    CHECK_STATUS(msbnb_lora_linear_set_adapter_weights(l, "nope", A, as, B, bs), MSBNB_ERR_NOT_FOUND);
    CHECK_STATUS(msbnb_lora_linear_set_adapter_weights(l, "default", NULL, as, B, bs),
                 MSBNB_ERR_INVALID_ARGUMENT);
    B[7] = NAN;
    CHECK_STATUS(msbnb_lora_linear_set_adapter_weights(l, "default", A, as, B, bs), MSBNB_ERR_NON_FINITE);
    CHECK(memcmp(A0, a.A, (size_t)(r * K) * 4) == 0);
    B[7] = 0.25f;
    CHECK_OK(msbnb_lora_linear_set_adapter_weights(l, "default", A, as, B, bs));
    CHECK(memcmp(A, a.A, (size_t)(r * K) * 4) == 0 && memcmp(B, a.B, (size_t)(N * r) * 4) == 0);

    /* NaN upstream gradient -> NaN dA/dB -> optim_step refuses, parameters unchanged */
    msbnb_params_t *ps;
    CHECK_OK(msbnb_params_create(&ps));
    CHECK_OK(msbnb_lora_linear_register_params(l, ps, "m"));
    CHECK_OK(msbnb_params_freeze_except_lora(ps, NULL));
    msbnb_optim_config oc = msbnb_optim_config_default(MSBNB_OPTIM_ADAMW);
    msbnb_optim_t *o;
    CHECK_OK(msbnb_optim_create(&o, ps, &oc));
    float *y = fvec((size_t)(m * N), 0), *dy = fvec((size_t)(m * N), 1);
    CHECK_OK(msbnb_lora_linear_forward(l, y, x, m));
    dy[3] = NAN;
    CHECK_OK(msbnb_lora_linear_backward(l, NULL, dy, x, m));
    CHECK_STATUS(msbnb_optim_step(o, NULL), MSBNB_ERR_NON_FINITE);
    CHECK(memcmp(A, a.A, (size_t)(r * K) * 4) == 0 && memcmp(B, a.B, (size_t)(N * r) * 4) == 0);
    CHECK(msbnb_optim_num_updates(o) == 0);
    /* after zeroing, a finite gradient trains again */
    CHECK_OK(msbnb_params_zero_grad(ps));
    dy[3] = 0.5f;
    CHECK_OK(msbnb_lora_linear_backward(l, NULL, dy, x, m));
    CHECK_OK(msbnb_optim_step(o, NULL));
    CHECK(msbnb_optim_num_updates(o) == 1 && memcmp(B, a.B, (size_t)(N * r) * 4) != 0);
    msbnb_optim_free(o);
    msbnb_params_free(ps);
    msbnb_lora_linear_free(l);
    free(w);
    free(x);
    free(A);
    free(B);
    free(A0);
    free(y);
    free(dy);
}

/* from_layer: an f32 layer becomes NF4 (default) or the requested format, identical to
 * from_linear on the same weights; a quantized layer is kept and must match fmt. */
static void test_from_layer(void) {
    const int64_t K = 70, N = 33, m = 3;
    float *w = fvec((size_t)(N * K), 0.2f), *bias = fvec((size_t)N, 0.1f), *x = fvec((size_t)(m * K), 1);
    msbnb_linear_t *f;
    CHECK_OK(msbnb_linear_create(&f, K, N, w, bias, NULL));
    msbnb_lora_config c = msbnb_lora_config_default();
    c.seed = 5;
    msbnb_lora_linear_t *a, *b;
    CHECK_OK(msbnb_lora_linear_from_layer(&a, f, NULL, &c));
    CHECK_OK(msbnb_lora_linear_from_linear(&b, K, N, w, bias, NULL, &c));
    CHECK(msbnb_linear_qparams(msbnb_lora_linear_base(a)).type == MSBNB_QTYPE_NF4);
    float *wa = fvec((size_t)(N * K), 0), *wb = fvec((size_t)(N * K), 0);
    CHECK_OK(msbnb_linear_dequantize_weight(msbnb_lora_linear_base(a), wa));
    CHECK_OK(msbnb_linear_dequantize_weight(msbnb_lora_linear_base(b), wb));
    CHECK(memcmp(wa, wb, (size_t)(N * K) * 4) == 0);
    msbnb_lora_adapter aa, ab;
    CHECK_OK(msbnb_lora_linear_adapter(a, "default", &aa));
    CHECK_OK(msbnb_lora_linear_adapter(b, NULL, &ab));
    CHECK(aa.rank == 8 && memcmp(aa.A, ab.A, (size_t)(8 * K) * 4) == 0);
    float *ya = fvec((size_t)(m * N), 0), *yb = fvec((size_t)(m * N), 0);
    CHECK_OK(msbnb_lora_linear_forward(a, ya, x, m));
    CHECK_OK(msbnb_lora_linear_forward(b, yb, x, m));
    CHECK(memcmp(ya, yb, (size_t)(m * N) * 4) == 0);
    /* f32 kept when asked; the source layer is untouched */
    msbnb_qparams qf = msbnb_qparams_default(MSBNB_QTYPE_F32), q4 = msbnb_qparams_default(MSBNB_QTYPE_INT4);
    msbnb_lora_linear_t *c32, *cq;
    CHECK_OK(msbnb_lora_linear_from_layer(&c32, f, &qf, NULL));
    CHECK(msbnb_linear_qparams(msbnb_lora_linear_base(c32)).type == MSBNB_QTYPE_F32);
    CHECK(msbnb_linear_qparams(f).type == MSBNB_QTYPE_F32);
    /* an NF4 layer: kept with NULL or the same format, refused for another */
    msbnb_linear_t *nf = NULL;
    msbnb_qparams qn = msbnb_qparams_default(MSBNB_QTYPE_NF4);
    CHECK_OK(msbnb_linear_create(&nf, K, N, w, NULL, &qn));
    CHECK_OK(msbnb_lora_linear_from_layer(&cq, nf, NULL, NULL));
    msbnb_lora_linear_free(cq);
    CHECK_OK(msbnb_lora_linear_from_layer(&cq, nf, &qn, NULL));
    msbnb_lora_linear_free(cq);
    cq = (msbnb_lora_linear_t *)1;
    CHECK_STATUS(msbnb_lora_linear_from_layer(&cq, nf, &q4, NULL), MSBNB_ERR_STATE);
    CHECK(cq == NULL);
    qn.block = 128;
    CHECK_STATUS(msbnb_lora_linear_from_layer(&cq, nf, &qn, NULL), MSBNB_ERR_STATE);
    qn.block = 48;
    CHECK_STATUS(msbnb_lora_linear_from_layer(&cq, f, &qn, NULL), MSBNB_ERR_UNSUPPORTED);
    c.rank = K + 1;
    CHECK_STATUS(msbnb_lora_linear_from_layer(&cq, f, NULL, &c), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_lora_linear_from_layer(&cq, NULL, NULL, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    msbnb_lora_linear_free(a);
    msbnb_lora_linear_free(b);
    msbnb_lora_linear_free(c32);
    msbnb_linear_free(f);
    msbnb_linear_free(nf);
    free(w);
    free(bias);
    free(x);
    free(wa);
    free(wb);
    free(ya);
    free(yb);
}

/* Dropout as PEFT's nn.Dropout on the adapter input: with K = N = r, A = B = I and
 * s = alpha / r = 1 over a zero f32 base, y = dropout(x) is seen directly. Training:
 * every output is 0 or x / (1 - p), about p of them 0, a fresh mask per forward; backward
 * replays the forward's mask (dx = dy ⊙ mask / (1 - p), dA = dyᵀ · dropout(x)).
 * Evaluation mode, or p = 0: no dropout. */
static void test_dropout_mask(void) {
    const int64_t r = 16, m = 256;
    const float p = 0.3f, keep = 1.0f / (1.0f - p);
    float *w = fvec((size_t)(r * r), 0), *I = fvec((size_t)(r * r), 0);
    for (int64_t i = 0; i < r; i++) I[i * r + i] = 1.0f;
    float *x = fvec((size_t)(m * r), 1.0f), *dy = fvec((size_t)(m * r), 1.0f);
    float *y1 = fvec((size_t)(m * r), 0), *y2 = fvec((size_t)(m * r), 0), *dx = fvec((size_t)(m * r), 0);
    msbnb_qparams f32 = msbnb_qparams_default(MSBNB_QTYPE_F32);
    msbnb_lora_config c = msbnb_lora_config_default();
    c.rank = r;
    c.alpha = (float)r;
    c.dropout = p;
    c.seed = tu_rng_u64(&g_rng);
    msbnb_lora_linear_t *l = NULL;
    CHECK_OK(msbnb_lora_linear_from_linear(&l, r, r, w, NULL, &f32, &c));
    if (!l) return;
    int64_t sh[2] = {r, r};
    CHECK_OK(msbnb_lora_linear_set_adapter_weights(l, "default", I, sh, I, sh));
    /* evaluation mode (the default): no dropout */
    CHECK_OK(msbnb_lora_linear_forward(l, y1, x, m));
    CHECK(memcmp(y1, x, (size_t)(m * r) * 4) == 0);
    CHECK_OK(msbnb_lora_linear_set_training(l, 1));
    CHECK_OK(msbnb_lora_linear_forward(l, y2, x, m)); /* an earlier draw, compared below */
    CHECK_OK(msbnb_lora_linear_forward(l, y1, x, m));
    int64_t zeros = 0, bad = 0, differ = 0;
    for (int64_t i = 0; i < m * r; i++) {
        if (y1[i] == 0.0f) zeros++;
        else bad += fabsf(y1[i] - x[i] * keep) > 1e-6f * fabsf(x[i] * keep);
        differ += (y1[i] == 0.0f) != (y2[i] == 0.0f);
    }
    double frac = (double)zeros / (double)(m * r);
    /* 4096 Bernoulli(0.3) draws: sd 0.0072, so 0.035 is ~5 sd */
    CHECKF(fabs(frac - p) < 0.035, "dropped fraction %.4f, want %.2f", frac, p);
    CHECKF(bad == 0, "%lld kept outputs are not x / (1 - p)", (long long)bad);
    CHECKF(differ > (m * r) / 10, "two training forwards share their mask (%lld differ)", (long long)differ);
    msbnb_lora_adapter a;
    CHECK_OK(msbnb_lora_linear_adapter(l, NULL, &a));
    memset(a.dA, 0, (size_t)(r * r) * 4);
    CHECK_OK(msbnb_lora_linear_backward(l, dx, dy, x, m));
    int64_t bad_dx = 0, bad_da = 0;
    for (int64_t i = 0; i < m * r; i++) {
        float want = y1[i] == 0.0f ? 0.0f : dy[i] * keep;
        bad_dx += fabsf(dx[i] - want) > 1e-5f * (1 + fabsf(want));
    }
    for (int64_t j = 0; j < r; j++)
        for (int64_t k = 0; k < r; k++) {
            double s = 0, mag = 0;
            for (int64_t i = 0; i < m; i++) {
                s += (double)dy[i * r + j] * y1[i * r + k];
                mag += fabs((double)dy[i * r + j] * y1[i * r + k]);
            }
            bad_da += fabs(a.dA[j * r + k] - s) > 1e-5 * mag + 1e-6;
        }
    CHECKF(bad_dx == 0 && bad_da == 0, "backward does not replay the forward's mask: dx %lld, dA %lld bad",
           (long long)bad_dx, (long long)bad_da);
    /* back in evaluation mode: no dropout again */
    CHECK_OK(msbnb_lora_linear_set_training(l, 0));
    CHECK_OK(msbnb_lora_linear_forward(l, y1, x, m));
    CHECK(memcmp(y1, x, (size_t)(m * r) * 4) == 0);
    msbnb_lora_linear_free(l);
    /* p = 0 in training mode: no dropout either */
    c.dropout = 0.0f;
    CHECK_OK(msbnb_lora_linear_from_linear(&l, r, r, w, NULL, &f32, &c));
    CHECK_OK(msbnb_lora_linear_set_adapter_weights(l, "default", I, sh, I, sh));
    CHECK_OK(msbnb_lora_linear_set_training(l, 1));
    CHECK_OK(msbnb_lora_linear_forward(l, y1, x, m));
    CHECK(memcmp(y1, x, (size_t)(m * r) * 4) == 0);
    msbnb_lora_linear_free(l);
    free(w);
    free(I);
    free(x);
    free(dy);
    free(y1);
    free(y2);
    free(dx);
}

/* Edge shapes: K = 1 (rank 1), a single output, K = 4097 with rank = min(K, N) = N,
 * m = 1 and 3: forward and dA, dB, dx against a float64 reference on the dequantized
 * base. */
static void test_edge_shapes(void) {
    static const int64_t shapes[][4] = {{1, 5, 1, 1}, {7, 1, 1, 3}, {4097, 3, 3, 3}, {4097, 3, 3, 1}};
    kind_t ks[16];
    int nk = kinds(ks);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int ki = 0; ki < nk; ki++) {
            const kind_t *k = &ks[ki];
            if (!k->fd_x) continue; /* LLM.int8's activation rounding: covered above */
            const int64_t K = shapes[si][0], N = shapes[si][1], r = shapes[si][2], m = shapes[si][3];
            msbnb_lora_config c = msbnb_lora_config_default();
            c.rank = r;
            c.alpha = 5.0f;
            c.use_rslora = (int)(si & 1);
            c.seed = tu_rng_u64(&g_rng);
            float *w = fvec((size_t)(N * K), 0.2f), *bias = fvec((size_t)N, 0.1f);
            float *A = fvec((size_t)(r * K), 0.3f), *B = fvec((size_t)(N * r), 0.3f);
            float *x = fvec((size_t)(m * K), 1.0f), *dy = fvec((size_t)(m * N), 1.0f);
            float *y = fvec((size_t)(m * N), 0), *dx = fvec((size_t)(m * K), 0), *wd = fvec((size_t)(N * K), 0);
            msbnb_lora_linear_t *l = make_layer(k, K, N, w, bias, &c, A, B, 0);
            if (!l) continue;
            msbnb_lora_adapter a;
            CHECK_OK(msbnb_lora_linear_adapter(l, NULL, &a));
            const double s = c.use_rslora ? 5.0 / sqrt((double)r) : 5.0 / (double)r;
            CHECK(fabs(a.scaling - s) < 1e-6);
            CHECK_OK(msbnb_linear_dequantize_weight(msbnb_lora_linear_base(l), wd));
            CHECK_OK(msbnb_lora_linear_forward(l, y, x, m));
            CHECK_OK(msbnb_lora_linear_backward(l, dx, dy, x, m));
            int bad = 0;
            /* h = x Aᵀ and hm = |x| |A|ᵀ, the scale of h's f32 rounding (over K terms) */
            double *h = calloc((size_t)(m * r), sizeof(double)), *dh = calloc((size_t)(m * r), sizeof(double));
            double *hm = calloc((size_t)(m * r), sizeof(double));
            for (int64_t i = 0; i < m; i++)
                for (int64_t j = 0; j < r; j++) {
                    for (int64_t kk = 0; kk < K; kk++) {
                        h[i * r + j] += (double)x[i * K + kk] * A[j * K + kk];
                        hm[i * r + j] += fabs((double)x[i * K + kk] * A[j * K + kk]);
                    }
                    for (int64_t n = 0; n < N; n++) dh[i * r + j] += s * dy[i * N + n] * B[n * r + j];
                }
            for (int64_t i = 0; i < m; i++)
                for (int64_t n = 0; n < N; n++) { /* y = x Wdᵀ + b + s h Bᵀ */
                    double v = bias[n], mag = fabs(bias[n]);
                    for (int64_t kk = 0; kk < K; kk++) {
                        v += (double)x[i * K + kk] * wd[n * K + kk];
                        mag += fabs((double)x[i * K + kk] * wd[n * K + kk]);
                    }
                    for (int64_t j = 0; j < r; j++) {
                        v += s * h[i * r + j] * B[n * r + j];
                        mag += fabs(s * hm[i * r + j] * B[n * r + j]);
                    }
                    bad += fabs(y[i * N + n] - v) > 2e-5 * mag + 1e-6;
                }
            for (int64_t i = 0; i < m; i++)
                for (int64_t kk = 0; kk < K; kk++) { /* dx = dy Wd + dh A */
                    double v = 0, mag = 0;
                    for (int64_t n = 0; n < N; n++) {
                        v += (double)dy[i * N + n] * wd[n * K + kk];
                        mag += fabs((double)dy[i * N + n] * wd[n * K + kk]);
                    }
                    for (int64_t j = 0; j < r; j++) {
                        v += dh[i * r + j] * A[j * K + kk];
                        mag += fabs(dh[i * r + j] * A[j * K + kk]);
                    }
                    bad += fabs(dx[i * K + kk] - v) > 2e-5 * mag + 1e-6;
                }
            for (int64_t j = 0; j < r; j++) { /* dA = dhᵀ x, dB = s dyᵀ h */
                for (int64_t kk = 0; kk < K; kk++) {
                    double v = 0, mag = 0;
                    for (int64_t i = 0; i < m; i++) {
                        v += dh[i * r + j] * x[i * K + kk];
                        mag += fabs(dh[i * r + j] * x[i * K + kk]);
                    }
                    bad += fabs(a.dA[j * K + kk] - v) > 2e-5 * mag + 1e-6;
                }
                for (int64_t n = 0; n < N; n++) {
                    double v = 0, mag = 0;
                    for (int64_t i = 0; i < m; i++) {
                        v += s * dy[i * N + n] * h[i * r + j];
                        mag += fabs(s * dy[i * N + n] * hm[i * r + j]);
                    }
                    bad += fabs(a.dB[n * r + j] - v) > 2e-5 * mag + 1e-6;
                }
            }
            CHECKF(bad == 0, "%s K=%lld N=%lld r=%lld m=%lld: %d values off the f64 reference", k->name,
                   (long long)K, (long long)N, (long long)r, (long long)m, bad);
            msbnb_lora_linear_free(l);
            free(h);
            free(dh);
            free(hm);
            free(w);
            free(bias);
            free(A);
            free(B);
            free(x);
            free(dy);
            free(y);
            free(dx);
            free(wd);
        }
}

int main(void) {
    tu_rng_init(&g_rng, tu_seed());
    RUN_TEST(test_lora_gradients_every_kind);
    RUN_TEST(test_dropout_mask);
    RUN_TEST(test_edge_shapes);
    RUN_TEST(test_lora_init_and_noop);
    RUN_TEST(test_from_layer);
    RUN_TEST(test_multiple_adapters);
    RUN_TEST(test_merge_unmerge);
    RUN_TEST(test_register_and_train_frozen_base);
    RUN_TEST(test_bad_input);
    RUN_TEST(test_adapter_weights_shapes_and_nan_grad);
    return tu_finish();
}
