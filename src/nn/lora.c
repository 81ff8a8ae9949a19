/* LoRA layer: a base msbnb_linear plus named low-rank adapters (PEFT LoraLayer semantics),
 * forward/backward, merge/unmerge, registration in a parameter container. */
#include "internal.h"
#include "msbnb/lora.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 63

typedef struct {
    char name[NAME_MAX_LEN + 1];
    msbnb_lora_config cfg;
    float scaling;
    float *A, *B, *dA, *dB; /* one allocation: A [r,K], B [N,r], dA, dB */
} adapter;

struct msbnb_lora_linear {
    msbnb_linear_t *base;
    int64_t K, N;
    adapter *ad;
    int nad, cap;
    int active; /* index or -1 */
    int training;
    /* dropout draw of the last training forward (counter-based, replayed by backward) */
    uint64_t drop_counter;
    int64_t drop_m;   /* rows of the last training forward with dropout, 0 if none */
    /* merge state */
    int merged;             /* index of the merged adapter + 1, or 0 */
    float *w_saved;         /* f32 base: the weight before merging */
    msbnb_linear_t *base_saved; /* other formats: the base before merging */
};

msbnb_lora_config msbnb_lora_config_default(void) {
    msbnb_lora_config c;
    memset(&c, 0, sizeof c);
    c.rank = 8;
    c.alpha = 16.0f;
    c.dropout = 0.0f;
    c.use_rslora = 0;
    c.seed = 0;
    return c;
}

/* ---------------------------------------------------------------- random numbers */

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Uniform [0, 1) from the top 24 bits. */
static float u01(uint64_t h) { return (float)(h >> 40) * (1.0f / 16777216.0f); }

/* Keep-mask factor of element i in the dropout draw `counter`: 0 or 1/(1-p). */
static inline float drop_factor(uint64_t seed, uint64_t counter, int64_t i, float p, float keep) {
    uint64_t h = splitmix64(splitmix64(seed ^ (counter * 0xD1B54A32D192ED03ull)) + (uint64_t)i);
    return u01(h) < p ? 0.0f : keep;
}

/* ---------------------------------------------------------------- lifecycle */

msbnb_status msbnb_lora_linear_create(msbnb_lora_linear_t **out, msbnb_linear_t *base) {
    MSBNB_CHECK_NULL(out);
    *out = NULL;
    MSBNB_CHECK_NULL(base);
    if (msbnb_linear_in_features(base) > INT_MAX || msbnb_linear_out_features(base) > INT_MAX)
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED,
                           "msbnb_lora_linear_create: layer dimensions above INT_MAX (BLAS limit)");
    msbnb_lora_linear_t *l = calloc(1, sizeof *l);
    if (!l) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "msbnb_lora_linear_create: out of memory");
    l->base = base;
    l->K = msbnb_linear_in_features(base);
    l->N = msbnb_linear_out_features(base);
    l->active = -1;
    *out = l;
    return MSBNB_OK;
}

msbnb_status msbnb_lora_linear_from_linear(msbnb_lora_linear_t **out, int64_t in_features,
                                           int64_t out_features, const float *weight,
                                           const float *bias, const msbnb_qparams *fmt,
                                           const msbnb_lora_config *cfg) {
    MSBNB_CHECK_NULL(out);
    *out = NULL;
    msbnb_qparams nf4 = msbnb_qparams_default(MSBNB_QTYPE_NF4);
    msbnb_lora_config dc = msbnb_lora_config_default();
    msbnb_linear_t *base = NULL;
    MSBNB_TRY(msbnb_linear_create(&base, in_features, out_features, weight, bias, fmt ? fmt : &nf4));
    msbnb_lora_linear_t *l = NULL;
    msbnb_status st = msbnb_lora_linear_create(&l, base);
    if (st != MSBNB_OK) {
        msbnb_linear_free(base);
        return st;
    }
    st = msbnb_lora_linear_add_adapter(l, "default", cfg ? cfg : &dc);
    if (st != MSBNB_OK) {
        msbnb_lora_linear_free(l);
        return st;
    }
    *out = l;
    return MSBNB_OK;
}

static int same_format(const msbnb_qparams *a, const msbnb_qparams *b) {
    if (a->type != b->type) return 0;
    switch (a->type) {
    case MSBNB_QTYPE_INT8: return a->symmetric == b->symmetric && a->per_tensor == b->per_tensor;
    case MSBNB_QTYPE_INT4: return a->symmetric == b->symmetric && a->block == b->block;
    case MSBNB_QTYPE_NF4:
    case MSBNB_QTYPE_FP4: return a->block == b->block && !a->double_quant == !b->double_quant;
    case MSBNB_QTYPE_Q8_DYNAMIC: return a->block == b->block;
    default: return 1;
    }
}

msbnb_status msbnb_lora_linear_from_layer(msbnb_lora_linear_t **out, const msbnb_linear_t *layer,
                                          const msbnb_qparams *fmt, const msbnb_lora_config *cfg) {
    MSBNB_CHECK_NULL(out);
    *out = NULL;
    MSBNB_CHECK_NULL(layer);
    const char *fn = "msbnb_lora_linear_from_layer";
    msbnb_qparams have = msbnb_linear_qparams(layer), nf4 = msbnb_qparams_default(MSBNB_QTYPE_NF4);
    if (fmt) MSBNB_TRY(msbnb_qparams_validate(fmt));
    if (have.type != MSBNB_QTYPE_F32 && fmt && !same_format(fmt, &have))
        return msbnb__fail(MSBNB_ERR_STATE, "%s: the layer is already stored as %s; requested %s", fn,
                           msbnb_qtype_name(have.type), msbnb_qtype_name(fmt->type));
    msbnb_lora_config dc = msbnb_lora_config_default();
    msbnb_linear_t *base = NULL;
    MSBNB_TRY(msbnb_linear_clone(&base, layer));
    msbnb_status st = MSBNB_OK;
    const msbnb_qparams *want = fmt ? fmt : &nf4;
    if (have.type == MSBNB_QTYPE_F32 && want->type != MSBNB_QTYPE_F32)
        st = msbnb_linear_quantize_weights(base, want);
    msbnb_lora_linear_t *l = NULL;
    if (st == MSBNB_OK) st = msbnb_lora_linear_create(&l, base);
    if (st != MSBNB_OK) {
        msbnb_linear_free(base);
        return st;
    }
    st = msbnb_lora_linear_add_adapter(l, "default", cfg ? cfg : &dc);
    if (st != MSBNB_OK) {
        msbnb_lora_linear_free(l);
        return st;
    }
    *out = l;
    return MSBNB_OK;
}

void msbnb_lora_linear_free(msbnb_lora_linear_t *l) {
    if (!l) return;
    for (int i = 0; i < l->nad; i++) msbnb__free(l->ad[i].A);
    free(l->ad);
    msbnb_linear_free(l->base);
    msbnb_linear_free(l->base_saved);
    msbnb__free(l->w_saved);
    free(l);
}

static int find_adapter(const msbnb_lora_linear_t *l, const char *name) {
    for (int i = 0; i < l->nad; i++)
        if (strcmp(l->ad[i].name, name) == 0) return i;
    return -1;
}

msbnb_status msbnb_lora_linear_add_adapter(msbnb_lora_linear_t *l, const char *name,
                                           const msbnb_lora_config *cfg) {
    MSBNB_CHECK_NULL(l);
    MSBNB_CHECK_NULL(name);
    MSBNB_CHECK_NULL(cfg);
    const char *fn = "msbnb_lora_linear_add_adapter";
    size_t nl = strlen(name);
    if (nl == 0 || nl > NAME_MAX_LEN || strchr(name, '.'))
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT,
                           "%s: adapter name must have 1..%d characters and no '.'", fn, NAME_MAX_LEN);
    int64_t maxr = l->K < l->N ? l->K : l->N;
    if (cfg->rank < 1 || cfg->rank > maxr)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT,
                           "%s: rank %lld must be in [1, min(in_features %lld, out_features %lld)]",
                           fn, (long long)cfg->rank, (long long)l->K, (long long)l->N);
    if (!isfinite(cfg->alpha))
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: lora_alpha must be finite", fn);
    if (!(cfg->dropout >= 0.0f && cfg->dropout < 1.0f))
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: dropout %g must be in [0, 1)", fn,
                           cfg->dropout);
    if (find_adapter(l, name) >= 0)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: adapter '%s' already exists", fn, name);
    if (l->merged)
        return msbnb__fail(MSBNB_ERR_STATE, "%s: unmerge before adding adapters", fn);
    int64_t na, nb, tot;
    MSBNB_TRY(msbnb__mul_checked(cfg->rank, l->K, &na, "lora_A"));
    MSBNB_TRY(msbnb__mul_checked(cfg->rank, l->N, &nb, "lora_B"));
    if (na > INT64_MAX / 64 || nb > INT64_MAX / 64)
        return msbnb__fail(MSBNB_ERR_OVERFLOW, "%s: adapter too large", fn);
    tot = 2 * (na + nb);
    if (l->nad == l->cap) {
        int cap = l->cap ? 2 * l->cap : 4;
        adapter *a = realloc(l->ad, (size_t)cap * sizeof *a);
        if (!a) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
        l->ad = a;
        l->cap = cap;
    }
    float *buf = msbnb__calloc((size_t)tot * sizeof(float));
    if (!buf) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
    adapter *a = &l->ad[l->nad];
    memset(a, 0, sizeof *a);
    memcpy(a->name, name, nl + 1);
    a->cfg = *cfg;
    a->scaling = cfg->use_rslora ? (float)(cfg->alpha / sqrt((double)cfg->rank))
                                 : cfg->alpha / (float)cfg->rank;
    a->A = buf;
    a->B = buf + na;
    a->dA = buf + na + nb;
    a->dB = buf + 2 * na + nb;
    /* PEFT reset_lora_parameters: nn.init.kaiming_uniform_(lora_A, a=sqrt(5)), i.e.
     * gain sqrt(2/(1+5)), bound = gain*sqrt(3/fan_in) = 1/sqrt(in_features); B = 0. */
    float bound = (float)(1.0 / sqrt((double)l->K));
    uint64_t s = splitmix64(cfg->seed ^ 0x4C6F5241ull);
    for (int64_t i = 0; i < na; i++) a->A[i] = (2.0f * u01(splitmix64(s + (uint64_t)i)) - 1.0f) * bound;
    if (l->nad == 0) l->active = 0;
    l->nad++;
    return MSBNB_OK;
}

msbnb_status msbnb_lora_linear_delete_adapter(msbnb_lora_linear_t *l, const char *name) {
    MSBNB_CHECK_NULL(l);
    MSBNB_CHECK_NULL(name);
    int i = find_adapter(l, name);
    if (i < 0) return msbnb__fail(MSBNB_ERR_NOT_FOUND, "adapter '%s' not found", name);
    if (l->merged)
        return msbnb__fail(MSBNB_ERR_STATE, "msbnb_lora_linear_delete_adapter: unmerge first");
    msbnb__free(l->ad[i].A);
    memmove(&l->ad[i], &l->ad[i + 1], (size_t)(l->nad - i - 1) * sizeof(adapter));
    l->nad--;
    if (l->active == i) l->active = -1;
    else if (l->active > i) l->active--;
    l->drop_m = 0;
    return MSBNB_OK;
}

msbnb_status msbnb_lora_linear_set_active(msbnb_lora_linear_t *l, const char *name) {
    MSBNB_CHECK_NULL(l);
    if (l->merged) return msbnb__fail(MSBNB_ERR_STATE, "msbnb_lora_linear_set_active: unmerge first");
    if (!name) {
        l->active = -1;
        return MSBNB_OK;
    }
    int i = find_adapter(l, name);
    if (i < 0) return msbnb__fail(MSBNB_ERR_NOT_FOUND, "adapter '%s' not found", name);
    l->active = i;
    l->drop_m = 0;
    return MSBNB_OK;
}

const char *msbnb_lora_linear_active(const msbnb_lora_linear_t *l) {
    return l && l->active >= 0 ? l->ad[l->active].name : NULL;
}

int msbnb_lora_linear_num_adapters(const msbnb_lora_linear_t *l) { return l ? l->nad : 0; }

msbnb_status msbnb_lora_linear_adapter(msbnb_lora_linear_t *l, const char *name,
                                       msbnb_lora_adapter *out) {
    MSBNB_CHECK_NULL(l);
    MSBNB_CHECK_NULL(out);
    int i;
    if (name) {
        i = find_adapter(l, name);
        if (i < 0) return msbnb__fail(MSBNB_ERR_NOT_FOUND, "adapter '%s' not found", name);
    } else {
        i = l->active;
        if (i < 0) return msbnb__fail(MSBNB_ERR_STATE, "msbnb_lora_linear_adapter: no active adapter");
    }
    adapter *a = &l->ad[i];
    out->name = a->name;
    out->rank = a->cfg.rank;
    out->in_features = l->K;
    out->out_features = l->N;
    out->alpha = a->cfg.alpha;
    out->scaling = a->scaling;
    out->dropout = a->cfg.dropout;
    out->A = a->A;
    out->B = a->B;
    out->dA = a->dA;
    out->dB = a->dB;
    return MSBNB_OK;
}

msbnb_status msbnb_lora_linear_set_adapter_weights(msbnb_lora_linear_t *l, const char *name,
                                                   const float *A, const int64_t a_shape[2],
                                                   const float *B, const int64_t b_shape[2]) {
    MSBNB_CHECK_NULL(l);
    MSBNB_CHECK_NULL(name);
    MSBNB_CHECK_NULL(A);
    MSBNB_CHECK_NULL(a_shape);
    MSBNB_CHECK_NULL(B);
    MSBNB_CHECK_NULL(b_shape);
    const char *fn = "msbnb_lora_linear_set_adapter_weights";
    int i = find_adapter(l, name);
    if (i < 0) return msbnb__fail(MSBNB_ERR_NOT_FOUND, "%s: adapter '%s' not found", fn, name);
    adapter *a = &l->ad[i];
    int64_t r = a->cfg.rank;
    if (a_shape[0] != r || a_shape[1] != l->K)
        return msbnb__fail(MSBNB_ERR_SHAPE,
                           "%s: lora_A is [%lld, %lld], adapter '%s' needs [%lld, %lld]", fn,
                           (long long)a_shape[0], (long long)a_shape[1], name, (long long)r,
                           (long long)l->K);
    if (b_shape[0] != l->N || b_shape[1] != r)
        return msbnb__fail(MSBNB_ERR_SHAPE,
                           "%s: lora_B is [%lld, %lld], adapter '%s' needs [%lld, %lld]", fn,
                           (long long)b_shape[0], (long long)b_shape[1], name, (long long)l->N,
                           (long long)r);
    if (l->merged) return msbnb__fail(MSBNB_ERR_STATE, "%s: unmerge first", fn);
    for (int64_t j = 0; j < r * l->K; j++)
        if (!isfinite(A[j]))
            return msbnb__fail(MSBNB_ERR_NON_FINITE, "%s: lora_A[%lld] is not finite", fn,
                               (long long)j);
    for (int64_t j = 0; j < l->N * r; j++)
        if (!isfinite(B[j]))
            return msbnb__fail(MSBNB_ERR_NON_FINITE, "%s: lora_B[%lld] is not finite", fn,
                               (long long)j);
    memcpy(a->A, A, (size_t)(r * l->K) * sizeof(float));
    memcpy(a->B, B, (size_t)(l->N * r) * sizeof(float));
    return MSBNB_OK;
}

const msbnb_linear_t *msbnb_lora_linear_base(const msbnb_lora_linear_t *l) { return l ? l->base : NULL; }

msbnb_status msbnb_lora_linear_set_training(msbnb_lora_linear_t *l, int training) {
    MSBNB_CHECK_NULL(l);
    l->training = training != 0;
    return MSBNB_OK;
}

int msbnb_lora_linear_is_merged(const msbnb_lora_linear_t *l) { return l ? l->merged != 0 : 0; }

/* ---------------------------------------------------------------- forward / backward */

/* xd = dropout(x) rows [m, K] into xd (or x itself when no dropout is in effect). */
static const float *dropped_input(const msbnb_lora_linear_t *l, const adapter *a, float *xd,
                                  const float *x, int64_t m) {
    if (!l->training || a->cfg.dropout <= 0.0f) return x;
    float p = a->cfg.dropout, keep = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < m * l->K; i++)
        xd[i] = x[i] * drop_factor(a->cfg.seed, l->drop_counter, i, p, keep);
    return xd;
}

/* The adapter's products are small dense GEMMs (one side has r columns); they go to
 * OpenBLAS (row-major, f32). int casts are safe: callers bound m*K, m*N and r*K. */

/* h [m, r] = xd [m, K] · Aᵀ, A [r, K]. */
static void lora_down(float *restrict h, const float *restrict xd, const float *restrict A,
                      int64_t m, int64_t K, int64_t r) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)r, (int)K, 1.0f, xd, (int)K,
                A, (int)K, 0.0f, h, (int)r);
}

msbnb_status msbnb_lora_linear_forward(msbnb_lora_linear_t *l, float *y, const float *x, int64_t m) {
    MSBNB_CHECK_NULL(l);
    MSBNB_CHECK_NULL(y);
    MSBNB_CHECK_NULL(x);
    MSBNB_CHECK_POS(m);
    int64_t mk, mn;
    MSBNB_TRY(msbnb__mul_checked(m, l->K, &mk, "x"));
    MSBNB_TRY(msbnb__mul_checked(m, l->N, &mn, "y"));
    if (m > INT_MAX)
        return msbnb__fail(MSBNB_ERR_OVERFLOW, "msbnb_lora_linear_forward: %lld rows exceed INT_MAX",
                           (long long)m);
    MSBNB_TRY(msbnb_linear_forward(l->base, y, x, m));
    if (l->active < 0 || l->merged) return MSBNB_OK;
    const adapter *a = &l->ad[l->active];
    int64_t r = a->cfg.rank, K = l->K, N = l->N;
    int drop = l->training && a->cfg.dropout > 0.0f;
    float *xd = NULL, *h = msbnb__alloc((size_t)(m * r) * sizeof(float));
    if (drop) xd = msbnb__alloc((size_t)mk * sizeof(float));
    if (!h || (drop && !xd)) {
        msbnb__free(h);
        msbnb__free(xd);
        return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "msbnb_lora_linear_forward: out of memory");
    }
    if (drop) {
        l->drop_counter++;
        l->drop_m = m;
    }
    const float *xin = dropped_input(l, a, xd, x, m);
    lora_down(h, xin, a->A, m, K, r);
    /* y [m, N] += s · h [m, r] · Bᵀ, B [N, r] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)N, (int)r, a->scaling, h,
                (int)r, a->B, (int)r, 1.0f, y, (int)N);
    msbnb__free(h);
    msbnb__free(xd);
    return MSBNB_OK;
}

msbnb_status msbnb_lora_linear_backward(msbnb_lora_linear_t *l, float *dx, const float *dy,
                                        const float *x, int64_t m) {
    MSBNB_CHECK_NULL(l);
    MSBNB_CHECK_NULL(dy);
    MSBNB_CHECK_POS(m);
    const char *fn = "msbnb_lora_linear_backward";
    if (l->merged)
        return msbnb__fail(MSBNB_ERR_STATE, "%s: the adapter is merged; unmerge to train it", fn);
    int64_t mk;
    MSBNB_TRY(msbnb__mul_checked(m, l->K, &mk, "x"));
    if (m > INT_MAX)
        return msbnb__fail(MSBNB_ERR_OVERFLOW, "%s: %lld rows exceed INT_MAX", fn, (long long)m);
    if (l->active < 0) {
        if (!dx) return MSBNB_OK;
        return msbnb_linear_backward(l->base, dx, NULL, NULL, dy, NULL, m);
    }
    MSBNB_CHECK_NULL(x);
    const adapter *a = &l->ad[l->active];
    int drop = l->training && a->cfg.dropout > 0.0f;
    if (drop && l->drop_m != m)
        return msbnb__fail(MSBNB_ERR_STATE,
                           "%s: backward of %lld rows does not follow a training forward of them", fn,
                           (long long)m);
    int64_t r = a->cfg.rank, K = l->K, N = l->N;
    float s = a->scaling;
    float *h = msbnb__alloc((size_t)(m * r) * sizeof(float));
    float *dh = msbnb__alloc((size_t)(m * r) * sizeof(float));
    float *xd = drop ? msbnb__alloc((size_t)mk * sizeof(float)) : NULL;
    if (!h || !dh || (drop && !xd)) {
        msbnb__free(h);
        msbnb__free(dh);
        msbnb__free(xd);
        return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    msbnb_status st = MSBNB_OK;
    if (dx) st = msbnb_linear_backward(l->base, dx, NULL, NULL, dy, NULL, m);
    if (st == MSBNB_OK) {
        const float *xin = dropped_input(l, a, xd, x, m);
        lora_down(h, xin, a->A, m, K, r);
        /* dh [m, r] = s · dy [m, N] · B [N, r] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)r, (int)N, s, dy,
                    (int)N, a->B, (int)r, 0.0f, dh, (int)r);
        /* dB [N, r] += s · dyᵀ · h */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)N, (int)r, (int)m, s, dy, (int)N,
                    h, (int)r, 1.0f, a->dB, (int)r);
        /* dA [r, K] += dhᵀ · xd */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)K, (int)m, 1.0f, dh,
                    (int)r, xin, (int)K, 1.0f, a->dA, (int)K);
        /* dx [m, K] += (dh · A) ⊙ mask; without dropout straight into dx, with it through
         * the xd buffer (no longer needed) and the replayed mask */
        if (dx && !drop) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)K, (int)r, 1.0f, dh,
                        (int)r, a->A, (int)K, 1.0f, dx, (int)K);
        } else if (dx) {
            float p = a->cfg.dropout, keep = 1.0f / (1.0f - p);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)K, (int)r, 1.0f, dh,
                        (int)r, a->A, (int)K, 0.0f, xd, (int)K);
            for (int64_t i = 0; i < mk; i++)
                dx[i] += xd[i] * drop_factor(a->cfg.seed, l->drop_counter, i, p, keep);
        }
    }
    msbnb__free(h);
    msbnb__free(dh);
    msbnb__free(xd);
    return st;
}

/* ---------------------------------------------------------------- merge */

/* w [N, K] += s · B [N, r] · A [r, K] */
static void add_delta(float *w, const adapter *a, int64_t N, int64_t K) {
    int64_t r = a->cfg.rank;
    for (int64_t n = 0; n < N; n++) {
        float *wr = w + n * K;
        for (int64_t j = 0; j < r; j++) {
            float g = a->scaling * a->B[n * r + j];
            const float *ar = a->A + j * K;
            for (int64_t k = 0; k < K; k++) wr[k] += g * ar[k];
        }
    }
}

msbnb_status msbnb_lora_linear_merge(msbnb_lora_linear_t *l, msbnb_error_stats *added) {
    MSBNB_CHECK_NULL(l);
    const char *fn = "msbnb_lora_linear_merge";
    if (l->active < 0) return msbnb__fail(MSBNB_ERR_STATE, "%s: no active adapter", fn);
    if (l->merged) return msbnb__fail(MSBNB_ERR_STATE, "%s: already merged", fn);
    const adapter *a = &l->ad[l->active];
    int64_t nk = l->N * l->K;
    msbnb_qparams q = msbnb_linear_qparams(l->base);
    if (q.type == MSBNB_QTYPE_F32) {
        float *w = NULL;
        MSBNB_TRY(msbnb_linear_f32_params(l->base, &w, NULL));
        float *save = msbnb__alloc((size_t)nk * sizeof(float));
        if (!save) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
        memcpy(save, w, (size_t)nk * sizeof(float));
        add_delta(w, a, l->N, l->K);
        l->w_saved = save;
        if (added) {
            memset(added, 0, sizeof *added);
            added->n = nk;
            added->snr_db = INFINITY;
            added->cosine = 1.0;
        }
        l->merged = l->active + 1;
        return MSBNB_OK;
    }
    /* Quantized base: dequantize, add, re-quantize in the same format. */
    float *w = msbnb__alloc((size_t)nk * sizeof(float)), *back = NULL;
    if (!w) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
    msbnb_linear_t *nb = NULL;
    msbnb_status st = msbnb_linear_dequantize_weight(l->base, w);
    if (st == MSBNB_OK) {
        add_delta(w, a, l->N, l->K);
        st = msbnb_linear_create(&nb, l->K, l->N, w, msbnb_linear_bias(l->base), &q);
    }
    if (st == MSBNB_OK && q.type == MSBNB_QTYPE_INT8 && q.symmetric)
        st = msbnb_linear_set_int8_threshold(nb, msbnb_linear_int8_threshold(l->base));
    if (st == MSBNB_OK) st = msbnb_linear_set_threads(nb, msbnb_linear_threads(l->base));
    if (st == MSBNB_OK) st = msbnb_linear_set_cpu_tier(nb, msbnb_linear_cpu_tier(l->base));
    if (st == MSBNB_OK && added) {
        back = msbnb__alloc((size_t)nk * sizeof(float));
        if (!back) st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
        if (st == MSBNB_OK) st = msbnb_linear_dequantize_weight(nb, back);
        if (st == MSBNB_OK) st = msbnb_estimate_quantization_error(added, w, back, nk);
    }
    msbnb__free(w);
    msbnb__free(back);
    if (st != MSBNB_OK) {
        msbnb_linear_free(nb);
        return st;
    }
    l->base_saved = l->base;
    l->base = nb;
    l->merged = l->active + 1;
    return MSBNB_OK;
}

msbnb_status msbnb_lora_linear_unmerge(msbnb_lora_linear_t *l) {
    MSBNB_CHECK_NULL(l);
    if (!l->merged) return msbnb__fail(MSBNB_ERR_STATE, "msbnb_lora_linear_unmerge: not merged");
    if (l->w_saved) {
        float *w = NULL;
        MSBNB_TRY(msbnb_linear_f32_params(l->base, &w, NULL));
        memcpy(w, l->w_saved, (size_t)(l->N * l->K) * sizeof(float));
        msbnb__free(l->w_saved);
        l->w_saved = NULL;
    } else {
        msbnb_linear_free(l->base);
        l->base = l->base_saved;
        l->base_saved = NULL;
    }
    l->merged = 0;
    return MSBNB_OK;
}

/* ---------------------------------------------------------------- parameters */

msbnb_status msbnb_lora_linear_register_params(msbnb_lora_linear_t *l, msbnb_params_t *p,
                                               const char *module) {
    MSBNB_CHECK_NULL(l);
    MSBNB_CHECK_NULL(p);
    MSBNB_CHECK_NULL(module);
    if (module[0] == '\0' || strlen(module) > 400)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT,
                           "msbnb_lora_linear_register_params: module name must have 1..400 characters");
    char name[512];
    int64_t wsh[2] = {l->N, l->K};
    float *w = NULL, *b = NULL;
    if (msbnb_linear_qparams(l->base).type == MSBNB_QTYPE_F32)
        MSBNB_TRY(msbnb_linear_f32_params(l->base, &w, &b));
    snprintf(name, sizeof name, "base_model.model.%s.weight", module);
    MSBNB_TRY(msbnb_params_add(p, name, w, NULL, 2, wsh));
    if (msbnb_linear_has_bias(l->base)) {
        snprintf(name, sizeof name, "base_model.model.%s.bias", module);
        MSBNB_TRY(msbnb_params_add(p, name, b, NULL, 1, &l->N));
    }
    for (int i = 0; i < l->nad; i++) {
        adapter *a = &l->ad[i];
        int def = strcmp(a->name, "default") == 0;
        int64_t ash[2] = {a->cfg.rank, l->K}, bsh[2] = {l->N, a->cfg.rank};
        /* PEFT: saved files drop the adapter name ("default"); in memory it is
         * "<module>.lora_A.<adapter>.weight". */
        if (def) snprintf(name, sizeof name, "base_model.model.%s.lora_A.weight", module);
        else snprintf(name, sizeof name, "base_model.model.%s.lora_A.%s.weight", module, a->name);
        MSBNB_TRY(msbnb_params_add(p, name, a->A, a->dA, 2, ash));
        if (def) snprintf(name, sizeof name, "base_model.model.%s.lora_B.weight", module);
        else snprintf(name, sizeof name, "base_model.model.%s.lora_B.%s.weight", module, a->name);
        MSBNB_TRY(msbnb_params_add(p, name, a->B, a->dB, 2, bsh));
    }
    return MSBNB_OK;
}
