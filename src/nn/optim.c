/* AdamW with f32 or blockwise 8-bit states, gradient accumulation and clipping, the
 * warm-up + cosine schedule, and optimizer state files. Formulas in msbnb/optim.h. */
#include "adamw8_kernels.h"
#include "adamw_kernels.h"
#include "internal.h"
#include "msbnb/optim.h"
#include "msbnb/quant.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define Q8_BLOCK MSBNB__Q8_BLOCK /* bitsandbytes' blockwise 8-bit optimizers */
#define Q8_GRAIN 64               /* blocks per task at least (16K parameters) */
#define F32_GRAIN 16384           /* parameters per task at least (f32 states) */

/* ---------------------------------------------------------------- dynamic maps */

/* torch.linspace(start, end, steps) in float32 as it evaluates on CUDA, where the
 * compiler contracts start + step*i into one fma: the first half counts up from start,
 * the second half down from end (aten LinspaceOp). This is what reproduces bitsandbytes'
 * stored signed map bit for bit (tests/test_optim.c checks it). */
static void linspace_f32(float *o, float start, float end, int steps) {
    float step = (end - start) / (float)(steps - 1);
    int half = steps / 2;
    for (int i = 0; i < steps; i++)
        o[i] = i < half ? fmaf(step, (float)i, start) : fmaf(-step, (float)(steps - i - 1), end);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* bitsandbytes functional.create_dynamic_map(signed, max_exponent_bits=7, total_bits=8). */
msbnb_status msbnb_create_dynamic_map(float *code, int is_signed) {
    MSBNB_CHECK_NULL(code);
    static const float scale[7] = {1e-6f, 1e-5f, 1e-4f, 1e-3f, 1e-2f, 1e-1f, 1.0f};
    float b[130];
    int n = 0;
    for (int i = 0; i < 7; i++) {
        /* non_sign_bits = 7: 2^i + 1 (signed) or 2^(i+1) + 1 (unsigned) boundaries */
        int items = is_signed ? (1 << i) + 1 : (1 << (i + 1)) + 1;
        linspace_f32(b, 0.1f, 1.0f, items);
        for (int k = 0; k + 1 < items; k++) {
            float mean = (b[k] + b[k + 1]) / 2.0f;
            code[n++] = scale[i] * mean;
            if (is_signed) code[n++] = -scale[i] * mean;
        }
    }
    code[n++] = 0.0f;
    code[n++] = 1.0f;
    while (n < 256) code[n++] = 0.0f;
    qsort(code, 256, sizeof(float), cmp_float);
    return MSBNB_OK;
}

/* ---------------------------------------------------------------- config */

msbnb_optim_config msbnb_optim_config_default(msbnb_optim_kind kind) {
    msbnb_optim_config c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.lr = 1e-3f;
    c.beta1 = 0.9f;
    c.beta2 = 0.999f;
    c.eps = 1e-8f;
    c.weight_decay = 0.01f;
    c.max_grad_norm = 0.0;
    c.accum_steps = 1;
    c.min_8bit_size = 4096;
    return c;
}

static msbnb_status check_config(const msbnb_optim_config *c) {
    const char *fn = "msbnb_optim_create";
    if (c->kind != MSBNB_OPTIM_ADAMW && c->kind != MSBNB_OPTIM_ADAMW_8BIT)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: unknown optimizer kind %d", fn, (int)c->kind);
    if (!(c->lr >= 0) || !isfinite(c->lr))
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: lr must be finite and >= 0 (got %g)", fn, c->lr);
    if (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1))
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: betas (%g, %g) must lie in [0, 1)", fn,
                           c->beta1, c->beta2);
    if (!(c->eps > 0) || !isfinite(c->eps))
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: eps must be positive (got %g)", fn, c->eps);
    if (!(c->weight_decay >= 0) || !isfinite(c->weight_decay))
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: weight_decay must be >= 0 (got %g)", fn,
                           c->weight_decay);
    if (!(c->max_grad_norm >= 0) || !isfinite(c->max_grad_norm))
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: max_grad_norm must be >= 0 (got %g)", fn,
                           c->max_grad_norm);
    if (c->accum_steps < 1)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: accum_steps must be >= 1 (got %d)", fn,
                           c->accum_steps);
    if (c->min_8bit_size < 0)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: min_8bit_size must be >= 0", fn);
    return MSBNB_OK;
}

/* ---------------------------------------------------------------- state */

typedef struct {
    int has, q8;
    int64_t numel, nblocks;
    float *m, *v;        /* f32 states */
    uint8_t *qm, *qv;    /* 8-bit codes */
    float *am, *av;      /* per-block absmax */
} slot;

struct msbnb_optim {
    msbnb_params_t *params;
    msbnb_optim_config cfg;
    int64_t t;      /* updates applied */
    int micro;      /* calls since the last update */
    double last_norm;
    slot *slots;
    int64_t nslots;
    float ucode[256]; /* unsigned dynamic map for v */
    msbnb_cpu_tier tier; /* AdamW kernel tier */
    int nthreads;        /* 0: msbnb_default_threads() */
    int maps_ok;         /* threshold tables built (else the composed path runs) */
    msbnb__q8map mmap, vmap; /* signed map for m, unsigned for v, with thresholds */
};

static void slot_clear(slot *s) {
    msbnb__free(s->m);
    msbnb__free(s->v);
    msbnb__free(s->qm);
    msbnb__free(s->qv);
    msbnb__free(s->am);
    msbnb__free(s->av);
    memset(s, 0, sizeof *s);
}

static int wants_q8(const msbnb_optim_t *o, int64_t numel) {
    return o->cfg.kind == MSBNB_OPTIM_ADAMW_8BIT && numel >= o->cfg.min_8bit_size;
}

/* Zero-initialised state for numel elements (8-bit: all-zero absmax makes every code 0). */
static msbnb_status slot_alloc(slot *s, int64_t numel, int q8) {
    memset(s, 0, sizeof *s);
    s->numel = numel;
    s->q8 = q8;
    if (q8) {
        s->nblocks = msbnb__ceil_div(numel, Q8_BLOCK);
        s->qm = msbnb__calloc((size_t)numel);
        s->qv = msbnb__calloc((size_t)numel);
        s->am = msbnb__calloc((size_t)s->nblocks * sizeof(float));
        s->av = msbnb__calloc((size_t)s->nblocks * sizeof(float));
        if (!s->qm || !s->qv || !s->am || !s->av) goto oom;
    } else {
        s->m = msbnb__calloc((size_t)numel * sizeof(float));
        s->v = msbnb__calloc((size_t)numel * sizeof(float));
        if (!s->m || !s->v) goto oom;
    }
    s->has = 1;
    return MSBNB_OK;
oom:
    slot_clear(s);
    return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "optimizer state for %lld elements: out of memory",
                       (long long)numel);
}

static msbnb_status grow_slots(msbnb_optim_t *o) {
    int64_t n = msbnb_params_count(o->params);
    if (n <= o->nslots) return MSBNB_OK;
    slot *s = realloc(o->slots, (size_t)n * sizeof *s);
    if (!s) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "optimizer: out of memory");
    memset(s + o->nslots, 0, (size_t)(n - o->nslots) * sizeof *s);
    o->slots = s;
    o->nslots = n;
    return MSBNB_OK;
}

msbnb_status msbnb_optim_create(msbnb_optim_t **out, msbnb_params_t *params,
                                const msbnb_optim_config *cfg) {
    MSBNB_CHECK_NULL(out);
    *out = NULL;
    MSBNB_CHECK_NULL(params);
    MSBNB_CHECK_NULL(cfg);
    MSBNB_TRY(check_config(cfg));
    /* MSBNB_CPU forces a tier; naming one this CPU lacks is an error, as for layers */
    msbnb_cpu_tier tier;
    MSBNB_TRY(msbnb_cpu_check_env(&tier));
    msbnb_optim_t *o = calloc(1, sizeof *o);
    if (!o) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "msbnb_optim_create: out of memory");
    o->params = params;
    o->cfg = *cfg;
    msbnb_create_dynamic_map(o->ucode, 0);
    o->tier = tier;
    if (cfg->kind == MSBNB_OPTIM_ADAMW_8BIT) { /* ~3 ms: thresholds and buckets of both maps */
        float scode[256];
        msbnb_create_dynamic_map(scode, 1);
        o->maps_ok = msbnb__q8map_init(&o->mmap, scode) == 0 && msbnb__q8map_init(&o->vmap, o->ucode) == 0;
    }
    *out = o;
    return MSBNB_OK;
}

void msbnb_optim_free(msbnb_optim_t *o) {
    if (!o) return;
    for (int64_t i = 0; i < o->nslots; i++) slot_clear(&o->slots[i]);
    free(o->slots);
    free(o);
}

msbnb_status msbnb_optim_set_lr(msbnb_optim_t *o, float lr) {
    MSBNB_CHECK_NULL(o);
    if (!(lr >= 0) || !isfinite(lr))
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "msbnb_optim_set_lr: lr must be finite and >= 0 (got %g)", lr);
    o->cfg.lr = lr;
    return MSBNB_OK;
}

float msbnb_optim_get_lr(const msbnb_optim_t *o) { return o ? o->cfg.lr : 0.0f; }
int64_t msbnb_optim_num_updates(const msbnb_optim_t *o) { return o ? o->t : 0; }
double msbnb_optim_last_grad_norm(const msbnb_optim_t *o) { return o ? o->last_norm : 0.0; }

int64_t msbnb_optim_state_bytes(const msbnb_optim_t *o) {
    if (!o) return 0;
    int64_t b = 0;
    for (int64_t i = 0; i < o->nslots; i++) {
        const slot *s = &o->slots[i];
        if (!s->has) continue;
        b += s->q8 ? 2 * s->numel + 2 * s->nblocks * (int64_t)sizeof(float)
                   : 2 * s->numel * (int64_t)sizeof(float);
    }
    return b;
}

msbnb_status msbnb_optim_set_cpu_tier(msbnb_optim_t *o, msbnb_cpu_tier t) {
    MSBNB_CHECK_NULL(o);
    if (t != MSBNB_CPU_SCALAR && t != MSBNB_CPU_AVX2 && t != MSBNB_CPU_AVX512)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: unknown CPU tier %d", __func__, (int)t);
    if (!msbnb_cpu_tier_supported(t))
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "%s: this CPU does not support %s", __func__,
                           msbnb_cpu_tier_name(t));
    o->tier = t;
    return MSBNB_OK;
}

msbnb_cpu_tier msbnb_optim_cpu_tier(const msbnb_optim_t *o) { return o ? o->tier : MSBNB_CPU_SCALAR; }

msbnb_status msbnb_optim_set_threads(msbnb_optim_t *o, int nthreads) {
    MSBNB_CHECK_NULL(o);
    if (nthreads < 0)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: nthreads must be >= 0 (got %d)", __func__,
                           nthreads);
    o->nthreads = nthreads;
    return MSBNB_OK;
}

int msbnb_optim_threads(const msbnb_optim_t *o) { return o ? o->nthreads : 0; }

/* ---------------------------------------------------------------- update */

/* The scalar reference of the AdamW update (adamw_kernels.h states the exact operation
 * order the SIMD tiers reproduce). */
void msbnb__adamw_ref(float *restrict p, float *restrict m, float *restrict v,
                      const float *restrict g, int64_t n, const msbnb__adamw_k *k) {
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * k->gm;
        m[i] = k->b1 * m[i] + k->omb1 * gi;
        v[i] = k->b2 * v[i] + k->omb2 * gi * gi;
        float denom = sqrtf(v[i]) / k->bc2_sqrt + k->eps;
        p[i] = p[i] * k->decay - k->step * m[i] / denom;
    }
}

static msbnb__adamw_fn adamw_kernel(msbnb_cpu_tier t) {
    return t == MSBNB_CPU_AVX512 ? msbnb__adamw_avx512
           : t == MSBNB_CPU_AVX2 ? msbnb__adamw_avx2
                                 : msbnb__adamw_ref;
}

static msbnb__adamw8_fn adamw8_kernel(msbnb_cpu_tier t) {
    return t == MSBNB_CPU_AVX512 ? msbnb__adamw8_avx512
           : t == MSBNB_CPU_AVX2 ? msbnb__adamw8_avx2
                                 : msbnb__adamw8_ref;
}

typedef struct {
    msbnb__adamw_fn f32;
    msbnb__adamw8_fn q8;
    const msbnb_optim_t *o;
    slot *s;
    float *p, *g;
    const msbnb__adamw_k *k;
    volatile int bad; /* a block's new m or v was NaN/Inf */
    volatile int64_t bad_block;
} update_job;

static void update_f32_range(void *ctx, int64_t i0, int64_t i1, int tid) {
    update_job *j = ctx;
    (void)tid;
    for (int64_t c = i0; c < i1; c += F32_GRAIN) { /* zero g while it is in cache */
        int64_t len = i1 - c < F32_GRAIN ? i1 - c : F32_GRAIN;
        j->f32(j->p + c, j->s->m + c, j->s->v + c, j->g + c, len, j->k);
        memset(j->g + c, 0, (size_t)len * sizeof(float));
    }
}

static void update_q8_range(void *ctx, int64_t b0, int64_t b1, int tid) {
    update_job *j = ctx;
    slot *s = j->s;
    (void)tid;
    int64_t i = b0 * Q8_BLOCK, end = b1 * Q8_BLOCK < s->numel ? b1 * Q8_BLOCK : s->numel;
    int64_t bad = j->q8(j->p + i, j->g + i, s->qm + i, s->am + b0, s->qv + i, s->av + b0, end - i,
                        j->k, &j->o->mmap, &j->o->vmap);
    if (bad >= 0) {
        j->bad = 1;
        j->bad_block = b0 + bad;
    }
}

/* One AdamW update of a slot; zeroes g. Elementwise f32 work splits anywhere; the 8-bit
 * step runs the fused per-block kernel (dequantize, update, absmax, re-quantize: the
 * composed sequence bit for bit, adamw8_kernels.h) over blocks in parallel. */
static msbnb_status update_slot(msbnb_optim_t *o, slot *s, float *p, float *g, const msbnb__adamw_k *k) {
    update_job j = {adamw_kernel(o->tier), adamw8_kernel(o->tier), o, s, p, g, k, 0, 0};
    msbnb_status st = MSBNB_OK;
    if (!s->q8) {
        msbnb__parallel_for(o->nthreads, s->numel, F32_GRAIN, update_f32_range, &j);
        return MSBNB_OK;
    } else if (!o->maps_ok) {
        st = msbnb__adamw8_composed(p, g, s->qm, s->am, s->qv, s->av, s->numel, k, o->mmap.code,
                                    o->vmap.code);
    } else {
        msbnb__parallel_for(o->nthreads, s->nblocks, Q8_GRAIN, update_q8_range, &j);
        if (j.bad)
            st = msbnb__fail(MSBNB_ERR_NON_FINITE,
                             "msbnb_optim_step: 8-bit state block %lld became NaN or Inf",
                             (long long)j.bad_block);
        if (st == MSBNB_OK) return MSBNB_OK; /* the kernel zeroed g */
    }
    memset(g, 0, (size_t)s->numel * sizeof(float));
    return st;
}

msbnb_status msbnb_optim_step(msbnb_optim_t *o, int *applied) {
    MSBNB_CHECK_NULL(o);
    if (applied) *applied = 0;
    if (o->micro + 1 < o->cfg.accum_steps) {
        o->micro++;
        return MSBNB_OK;
    }
    MSBNB_TRY(grow_slots(o));
    int64_t n = o->nslots;
    /* Validate everything and allocate missing state before touching any parameter. */
    double sq = 0;
    for (int64_t i = 0; i < n; i++) {
        msbnb_param e;
        MSBNB_TRY(msbnb_params_get(o->params, i, &e));
        if (!e.trainable) continue;
        double s = 0;
        for (int64_t j = 0; j < e.numel; j++) s += (double)e.grad[j] * e.grad[j];
        if (!isfinite(s))
            return msbnb__fail(MSBNB_ERR_NON_FINITE,
                               "msbnb_optim_step: gradient of '%s' contains NaN or Inf", e.name);
        sq += s;
        slot *sl = &o->slots[i];
        if (sl->has && sl->numel != e.numel)
            return msbnb__fail(MSBNB_ERR_SHAPE, "msbnb_optim_step: '%s' changed size (%lld -> %lld)",
                               e.name, (long long)sl->numel, (long long)e.numel);
        if (!sl->has) MSBNB_TRY(slot_alloc(sl, e.numel, wants_q8(o, e.numel)));
    }
    double inv_acc = 1.0 / o->cfg.accum_steps;
    double norm = sqrt(sq) * inv_acc;
    double gm = inv_acc;
    if (o->cfg.max_grad_norm > 0 && norm > o->cfg.max_grad_norm)
        gm *= o->cfg.max_grad_norm / (norm + 1e-6); /* torch clip_grad_norm_ */
    o->last_norm = norm;
    o->t++;
    o->micro = 0;
    msbnb__adamw_k k;
    k.gm = (float)gm;
    k.b1 = o->cfg.beta1;
    k.omb1 = 1.0f - o->cfg.beta1;
    k.b2 = o->cfg.beta2;
    k.omb2 = 1.0f - o->cfg.beta2;
    k.decay = 1.0f - o->cfg.lr * o->cfg.weight_decay;
    k.step = o->cfg.lr / (float)(1.0 - pow(o->cfg.beta1, (double)o->t));
    k.bc2_sqrt = (float)sqrt(1.0 - pow(o->cfg.beta2, (double)o->t));
    k.eps = o->cfg.eps;
    msbnb_status st = MSBNB_OK;
    for (int64_t i = 0; i < n && st == MSBNB_OK; i++) {
        msbnb_param e;
        msbnb_params_get(o->params, i, &e);
        if (!e.trainable) continue;
        st = update_slot(o, &o->slots[i], e.data, e.grad, &k);
    }
    if (st == MSBNB_OK && applied) *applied = 1;
    return st;
}

msbnb_status msbnb_optim_get_moments(const msbnb_optim_t *o, int64_t index, float *m, float *v,
                                     int64_t n) {
    MSBNB_CHECK_NULL(o);
    MSBNB_CHECK_NULL(m);
    MSBNB_CHECK_NULL(v);
    if (index < 0 || index >= o->nslots || !o->slots[index].has)
        return msbnb__fail(MSBNB_ERR_STATE, "msbnb_optim_get_moments: entry %lld has no state",
                           (long long)index);
    const slot *s = &o->slots[index];
    if (n < s->numel)
        return msbnb__fail(MSBNB_ERR_BUFFER_TOO_SMALL, "msbnb_optim_get_moments: need %lld elements",
                           (long long)s->numel);
    if (!s->q8) {
        memcpy(m, s->m, (size_t)s->numel * sizeof(float));
        memcpy(v, s->v, (size_t)s->numel * sizeof(float));
        return MSBNB_OK;
    }
    MSBNB_TRY(msbnb_dequantize_blockwise_8bit(m, MSBNB_DTYPE_F32, s->qm, s->am, s->numel, Q8_BLOCK,
                                              NULL, 1));
    return msbnb_dequantize_blockwise_8bit(v, MSBNB_DTYPE_F32, s->qv, s->av, s->numel, Q8_BLOCK,
                                           o->ucode, 1);
}

/* ---------------------------------------------------------------- schedule */

msbnb_status msbnb_lr_schedule_at(const msbnb_lr_schedule *s, int64_t step, float *lr) {
    MSBNB_CHECK_NULL(s);
    MSBNB_CHECK_NULL(lr);
    if (!(s->base_lr >= 0) || !isfinite(s->base_lr) || s->warmup_steps < 0 || s->total_steps <= 0 ||
        s->total_steps < s->warmup_steps || !(s->min_ratio >= 0 && s->min_ratio <= 1))
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT,
                           "msbnb_lr_schedule_at: bad schedule (base_lr %g, warmup %lld, total %lld, "
                           "min_ratio %g)",
                           s->base_lr, (long long)s->warmup_steps, (long long)s->total_steps,
                           s->min_ratio);
    if (step < 0)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "msbnb_lr_schedule_at: step %lld < 0", (long long)step);
    double f;
    if (step < s->warmup_steps) {
        f = (double)step / (double)s->warmup_steps;
    } else {
        int64_t span = s->total_steps - s->warmup_steps;
        double p = (double)(step - s->warmup_steps) / (double)(span > 1 ? span : 1);
        if (p > 1) p = 1;
        f = s->min_ratio + (1.0 - s->min_ratio) * 0.5 * (1.0 + cos(M_PI * p));
    }
    *lr = (float)(s->base_lr * f);
    return MSBNB_OK;
}

/* ---------------------------------------------------------------- state files */

#define OPT_MAGIC "MSBNBOPT"
#define OPT_VERSION 1u

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int oom;
} wbuf;

static void wb_put(wbuf *b, const void *src, size_t len) {
    if (b->oom) return;
    if (b->n + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + len) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, len);
    b->n += len;
}

static uint64_t fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static int little_endian(void) {
    uint16_t x = 1;
    uint8_t b;
    memcpy(&b, &x, 1);
    return b == 1;
}

/* Writes buf to path atomically: temp file in the same directory, fsync, rename, fsync
 * of the directory. */
static msbnb_status write_atomic(const char *path, const uint8_t *buf, size_t n) {
    size_t pl = strlen(path);
    char *tmp = malloc(pl + 16);
    if (!tmp) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    memcpy(tmp, path, pl);
    memcpy(tmp + pl, ".tmp.XXXXXX", 12);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        msbnb_status st = msbnb__fail(MSBNB_ERR_IO, "cannot create temporary file for '%s': %s",
                                      path, strerror(errno));
        free(tmp);
        return st;
    }
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, buf + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    int ok = off == n && fsync(fd) == 0;
    ok = (close(fd) == 0) && ok;
    if (ok && rename(tmp, path) != 0) ok = 0;
    if (!ok) {
        msbnb_status st = msbnb__fail(MSBNB_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return st;
    }
    /* make the rename itself durable: fsync the directory (best effort; some file
     * systems refuse fsync on directories, and the data is already safe on disk) */
    const char *slash = strrchr(path, '/');
    if (slash == path) memcpy(tmp, "/", 2);
    else if (slash) {
        memcpy(tmp, path, (size_t)(slash - path));
        tmp[slash - path] = '\0';
    } else memcpy(tmp, ".", 2);
    int dfd = open(tmp, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    free(tmp);
    return MSBNB_OK;
}

msbnb_status msbnb_optim_save(const msbnb_optim_t *o, const char *path) {
    MSBNB_CHECK_NULL(o);
    MSBNB_CHECK_NULL(path);
    if (!little_endian())
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "msbnb_optim_save: big-endian hosts are not supported");
    wbuf b = {0};
    uint32_t ver = OPT_VERSION, kind = (uint32_t)o->cfg.kind;
    int32_t acc = o->cfg.accum_steps, micro = o->micro;
    int64_t nent = 0;
    for (int64_t i = 0; i < o->nslots; i++) nent += o->slots[i].has;
    wb_put(&b, OPT_MAGIC, 8);
    wb_put(&b, &ver, 4);
    wb_put(&b, &kind, 4);
    wb_put(&b, &o->cfg.lr, 4);
    wb_put(&b, &o->cfg.beta1, 4);
    wb_put(&b, &o->cfg.beta2, 4);
    wb_put(&b, &o->cfg.eps, 4);
    wb_put(&b, &o->cfg.weight_decay, 4);
    wb_put(&b, &o->cfg.max_grad_norm, 8);
    wb_put(&b, &acc, 4);
    wb_put(&b, &micro, 4);
    wb_put(&b, &o->cfg.min_8bit_size, 8);
    wb_put(&b, &o->t, 8);
    wb_put(&b, &o->last_norm, 8);
    wb_put(&b, &nent, 8);
    for (int64_t i = 0; i < o->nslots; i++) {
        const slot *s = &o->slots[i];
        if (!s->has) continue;
        msbnb_param e;
        MSBNB_TRY(msbnb_params_get(o->params, i, &e));
        uint32_t nl = (uint32_t)strlen(e.name), q8 = (uint32_t)s->q8;
        wb_put(&b, &nl, 4);
        wb_put(&b, e.name, nl);
        wb_put(&b, &s->numel, 8);
        wb_put(&b, &q8, 4);
        if (s->q8) {
            wb_put(&b, s->qm, (size_t)s->numel);
            wb_put(&b, s->qv, (size_t)s->numel);
            wb_put(&b, s->am, (size_t)s->nblocks * 4);
            wb_put(&b, s->av, (size_t)s->nblocks * 4);
        } else {
            wb_put(&b, s->m, (size_t)s->numel * 4);
            wb_put(&b, s->v, (size_t)s->numel * 4);
        }
    }
    uint64_t h = b.oom ? 0 : fnv1a(b.p, b.n);
    wb_put(&b, &h, 8);
    if (b.oom) {
        free(b.p);
        return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "msbnb_optim_save: out of memory");
    }
    msbnb_status st = write_atomic(path, b.p, b.n);
    free(b.p);
    return st;
}

typedef struct {
    const uint8_t *p;
    size_t n, off;
} rbuf;

static int rb_get(rbuf *r, void *dst, size_t len) {
    if (len > r->n - r->off) return 0;
    memcpy(dst, r->p + r->off, len);
    r->off += len;
    return 1;
}

static msbnb_status read_file(const char *path, uint8_t **out, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return msbnb__fail(MSBNB_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 1 << 16;
            uint8_t *p = realloc(buf, cap);
            if (!p) {
                free(buf);
                fclose(f);
                return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "reading '%s': out of memory", path);
            }
            buf = p;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return msbnb__fail(MSBNB_ERR_IO, "cannot read '%s'", path);
    }
    *out = buf;
    *n = len;
    return MSBNB_OK;
}

msbnb_status msbnb_optim_load(msbnb_optim_t *o, const char *path) {
    MSBNB_CHECK_NULL(o);
    MSBNB_CHECK_NULL(path);
    if (!little_endian())
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "msbnb_optim_load: big-endian hosts are not supported");
    MSBNB_TRY(grow_slots(o));
    uint8_t *buf = NULL;
    size_t n = 0;
    MSBNB_TRY(read_file(path, &buf, &n));
    msbnb_status st = MSBNB_OK;
    slot *fresh = NULL;
    char *name = NULL;
    int64_t ns = o->nslots;
#define BAD(...)                                                                         \
    do {                                                                                 \
        st = msbnb__fail(MSBNB_ERR_FORMAT, __VA_ARGS__);                                 \
        goto done;                                                                       \
    } while (0)
    if (n < 8 + 8) BAD("'%s' is not an optimizer state file (too short)", path);
    uint64_t h;
    memcpy(&h, buf + n - 8, 8);
    if (memcmp(buf, OPT_MAGIC, 8) != 0) BAD("'%s' is not an optimizer state file (bad magic)", path);
    if (fnv1a(buf, n - 8) != h) BAD("'%s': checksum mismatch (truncated or corrupted)", path);
    rbuf r = {buf, n - 8, 8};
    uint32_t ver, kind;
    msbnb_optim_config c = o->cfg;
    int32_t acc, micro;
    int64_t t, nent;
    double last_norm;
    if (!rb_get(&r, &ver, 4) || !rb_get(&r, &kind, 4) || !rb_get(&r, &c.lr, 4) ||
        !rb_get(&r, &c.beta1, 4) || !rb_get(&r, &c.beta2, 4) || !rb_get(&r, &c.eps, 4) ||
        !rb_get(&r, &c.weight_decay, 4) || !rb_get(&r, &c.max_grad_norm, 8) ||
        !rb_get(&r, &acc, 4) || !rb_get(&r, &micro, 4) || !rb_get(&r, &c.min_8bit_size, 8) ||
        !rb_get(&r, &t, 8) || !rb_get(&r, &last_norm, 8) || !rb_get(&r, &nent, 8))
        BAD("'%s': truncated header", path);
    if (ver != OPT_VERSION) BAD("'%s': unsupported version %u (want %u)", path, ver, OPT_VERSION);
    if (kind != (uint32_t)o->cfg.kind)
        BAD("'%s': state of optimizer kind %u, this optimizer is kind %d", path, kind, (int)o->cfg.kind);
    c.kind = o->cfg.kind;
    c.accum_steps = acc;
    if (check_config(&c) != MSBNB_OK) BAD("'%s': invalid hyperparameters (%s)", path, msbnb_last_error());
    if (t < 0 || micro < 0 || micro >= acc || nent < 0 || nent > ns)
        BAD("'%s': invalid counters (updates %lld, micro %d, entries %lld)", path, (long long)t, micro,
            (long long)nent);
    fresh = calloc((size_t)(ns ? ns : 1), sizeof *fresh);
    if (!fresh) {
        st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "msbnb_optim_load: out of memory");
        goto done;
    }
    for (int64_t k = 0; k < nent; k++) {
        uint32_t nl, q8;
        int64_t numel, idx;
        if (!rb_get(&r, &nl, 4) || nl == 0 || nl > r.n - r.off) BAD("'%s': entry %lld: bad name", path, (long long)k);
        free(name);
        name = malloc(nl + 1);
        if (!name) {
            st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "msbnb_optim_load: out of memory");
            goto done;
        }
        rb_get(&r, name, nl);
        name[nl] = '\0';
        if (strlen(name) != nl) BAD("'%s': entry %lld: name contains NUL", path, (long long)k);
        if (!rb_get(&r, &numel, 8) || !rb_get(&r, &q8, 4) || numel <= 0 || numel > INT64_MAX / 16 || q8 > 1)
            BAD("'%s': entry '%s': bad header", path, name);
        if (msbnb_params_find(o->params, name, &idx) != MSBNB_OK) {
            st = msbnb__fail(MSBNB_ERR_SHAPE, "'%s': parameter '%s' is not in this model", path, name);
            goto done;
        }
        msbnb_param e;
        msbnb_params_get(o->params, idx, &e);
        if (e.numel != numel) {
            st = msbnb__fail(MSBNB_ERR_SHAPE, "'%s': '%s' has %lld elements, the model's has %lld", path,
                             name, (long long)numel, (long long)e.numel);
            goto done;
        }
        int want_q8 = c.kind == MSBNB_OPTIM_ADAMW_8BIT && numel >= c.min_8bit_size;
        if ((int)q8 != want_q8) BAD("'%s': '%s' stored %s states, expected %s", path, name,
                                    q8 ? "8-bit" : "f32", want_q8 ? "8-bit" : "f32");
        if (fresh[idx].has) BAD("'%s': '%s' appears twice", path, name);
        size_t need = q8 ? (size_t)numel * 2 + (size_t)msbnb__ceil_div(numel, Q8_BLOCK) * 8 : (size_t)numel * 8;
        if (need > r.n - r.off) BAD("'%s': '%s': truncated data", path, name);
        st = slot_alloc(&fresh[idx], numel, (int)q8);
        if (st != MSBNB_OK) goto done;
        slot *s = &fresh[idx];
        if (q8) {
            rb_get(&r, s->qm, (size_t)numel);
            rb_get(&r, s->qv, (size_t)numel);
            rb_get(&r, s->am, (size_t)s->nblocks * 4);
            rb_get(&r, s->av, (size_t)s->nblocks * 4);
            for (int64_t j = 0; j < s->nblocks; j++)
                if (!(s->am[j] >= 0) || !isfinite(s->am[j]) || !(s->av[j] >= 0) || !isfinite(s->av[j]))
                    BAD("'%s': '%s': invalid block scale", path, name);
        } else {
            rb_get(&r, s->m, (size_t)numel * 4);
            rb_get(&r, s->v, (size_t)numel * 4);
            for (int64_t j = 0; j < numel; j++)
                if (!isfinite(s->m[j]) || !(s->v[j] >= 0) || !isfinite(s->v[j]))
                    BAD("'%s': '%s': non-finite or negative moment", path, name);
        }
    }
    if (r.off != r.n) BAD("'%s': %zu trailing bytes", path, r.n - r.off);
    /* Commit. */
    for (int64_t i = 0; i < ns; i++) {
        slot_clear(&o->slots[i]);
        o->slots[i] = fresh[i];
    }
    free(fresh);
    fresh = NULL;
    o->cfg = c;
    o->t = t;
    o->micro = micro;
    o->last_norm = last_norm;
done:
#undef BAD
    if (fresh) {
        for (int64_t i = 0; i < ns; i++) slot_clear(&fresh[i]);
        free(fresh);
    }
    free(name);
    free(buf);
    return st;
}
