/* The quantized linear layer (the seed's Linear8bit / Linear4bit): storage, validation,
 * and the forward/backward drivers that split work over threads and choose between the
 * fused small-M kernels (src/cpu/gemv_*.c) and dequantized panels multiplied by OpenBLAS. */
#include "msbnb/linear.h"

#include "cpu/gemv.h"
#include "internal.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* OpenBLAS extension (cblas.h of libopenblas-dev declares it; repeated for clarity). */
void openblas_set_num_threads(int num_threads);

struct msbnb_linear {
    int64_t k, n;
    msbnb_qparams fmt;
    int nthreads;          /* <= 0: default */
    msbnb_threadpool_t *pool; /* borrowed, or NULL: threads per call */
    int64_t ws_bytes;      /* dequantization panel budget; 0: default */
    msbnb_cpu_tier tier;
    float int8_threshold;
    int exact;             /* msbnb_linear_set_exact */
    float *bias;           /* [N] or NULL */
    /* storage, one allocation per array (freed in clear_weight) */
    float *f32;
    uint16_t *u16;
    int8_t *q8;
    float *rscale, *rzero, *scb;
    uint8_t *packed, *qb;
    float *absmax, *mins;
    uint8_t *qabsmax;      /* double quant parts */
    float *nested;
    float dq_offset;
    int64_t bytes;         /* format storage */
};

/* bitsandbytes kdequant_mm_int32_fp16: MM_DEQUANT_CONST = 1/(127*127) */
#define MM_DEQUANT_CONST 6.200012e-05f

static void clear_weight(msbnb_linear_t *l) {
    msbnb__free(l->f32);
    msbnb__free(l->u16);
    msbnb__free(l->q8);
    msbnb__free(l->rscale);
    msbnb__free(l->rzero);
    msbnb__free(l->scb);
    msbnb__free(l->packed);
    msbnb__free(l->qb);
    msbnb__free(l->absmax);
    msbnb__free(l->mins);
    msbnb__free(l->qabsmax);
    msbnb__free(l->nested);
    l->f32 = l->absmax = l->mins = l->nested = l->rscale = l->rzero = l->scb = NULL;
    l->u16 = NULL;
    l->q8 = NULL;
    l->packed = l->qb = l->qabsmax = NULL;
    l->dq_offset = 0;
}

void msbnb_linear_free(msbnb_linear_t *l) {
    if (!l) return;
    clear_weight(l);
    msbnb__free(l->bias);
    free(l);
}

static msbnb_status alloc_arr(void **p, int64_t count, size_t elem, const char *what) {
    size_t bytes;
    if (count <= 0 || !msbnb__mulz_ok((size_t)count, elem, &bytes))
        return msbnb__fail(MSBNB_ERR_OVERFLOW, "linear: %s size overflows", what);
    return msbnb__alloc_checked(p, bytes, what);
}

static msbnb_status check_dims(int64_t k, int64_t n, const char *fn) {
    if (k <= 0 || n <= 0)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT,
                           "%s: in_features and out_features must be positive (got %lld, %lld)", fn,
                           (long long)k, (long long)n);
    int64_t nk;
    if (!msbnb__mul_ok(n, k, &nk) || nk > INT64_MAX / 16)
        return msbnb__fail(MSBNB_ERR_OVERFLOW, "%s: %lld x %lld weight overflows", fn, (long long)n,
                           (long long)k);
    return MSBNB_OK;
}

static msbnb_status check_fmt(const msbnb_qparams *p, const char *fn) {
    MSBNB_TRY(msbnb_qparams_validate(p));
    if (p->type == MSBNB_QTYPE_INT8 && p->per_tensor)
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "%s: per-tensor int8 is not a layer format "
                                                  "(use per-row int8)", fn);
    return MSBNB_OK;
}

static msbnb_status new_layer(msbnb_linear_t **out, int64_t k, int64_t n, const float *bias) {
    msbnb_linear_t *l = calloc(1, sizeof *l);
    if (!l) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "linear: out of memory");
    l->k = k;
    l->n = n;
    l->fmt = msbnb_qparams_default(MSBNB_QTYPE_F32);
    /* MSBNB_CPU forces a tier; naming one this CPU lacks is an error, not a fallback */
    msbnb_status est = msbnb_cpu_check_env(&l->tier);
    if (est != MSBNB_OK) {
        free(l);
        return est;
    }
    if (bias) {
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(bias[i])) {
                free(l);
                return msbnb__fail(MSBNB_ERR_NON_FINITE, "linear: bias[%lld] is not finite",
                                   (long long)i);
            }
        msbnb_status st = alloc_arr((void **)&l->bias, n, sizeof(float), "linear bias");
        if (st != MSBNB_OK) {
            free(l);
            return st;
        }
        memcpy(l->bias, bias, (size_t)n * sizeof(float));
    }
    *out = l;
    return MSBNB_OK;
}

/* Fills the storage of a layer (whose weight arrays are empty) from a dense f32 weight. */
static msbnb_status store_weight(msbnb_linear_t *l, const float *w, const msbnb_qparams *p) {
    const int64_t n = l->n, k = l->k, nk = n * k;
    msbnb_status st = MSBNB_OK;
    for (int64_t i = 0; i < nk; i++)
        if (!isfinite(w[i]))
            return msbnb__fail(MSBNB_ERR_NON_FINITE, "linear: weight[%lld] is not finite", (long long)i);
    switch (p->type) {
    case MSBNB_QTYPE_F32:
        MSBNB_TRY(alloc_arr((void **)&l->f32, nk, sizeof(float), "f32 weight"));
        memcpy(l->f32, w, (size_t)nk * sizeof(float));
        break;
    case MSBNB_QTYPE_BF16:
    case MSBNB_QTYPE_F16:
        MSBNB_TRY(alloc_arr((void **)&l->u16, nk, 2, "16-bit weight"));
        st = msbnb_convert(l->u16, p->type == MSBNB_QTYPE_BF16 ? MSBNB_DTYPE_BF16 : MSBNB_DTYPE_F16,
                           w, MSBNB_DTYPE_F32, nk);
        if (st == MSBNB_OK && p->type == MSBNB_QTYPE_F16)
            for (int64_t i = 0; i < nk; i++)
                if ((l->u16[i] & 0x7c00) == 0x7c00)
                    return msbnb__fail(MSBNB_ERR_NON_FINITE,
                                       "linear: weight[%lld] overflows float16", (long long)i);
        break;
    case MSBNB_QTYPE_INT8:
        MSBNB_TRY(alloc_arr((void **)&l->q8, nk, 1, "int8 codes"));
        MSBNB_TRY(alloc_arr((void **)&l->rscale, n, sizeof(float), "int8 scales"));
        if (p->symmetric) {
            /* bitsandbytes Int8Params: int8_vectorwise_quant of the float16 weight */
            uint16_t *h = NULL;
            MSBNB_TRY(alloc_arr((void **)&h, nk, 2, "f16 weight"));
            st = msbnb_convert(h, MSBNB_DTYPE_F16, w, MSBNB_DTYPE_F32, nk);
            if (st == MSBNB_OK) st = alloc_arr((void **)&l->scb, n, sizeof(float), "int8 SCB");
            if (st == MSBNB_OK)
                st = msbnb_int8_vectorwise_quant(l->q8, l->scb, NULL, 0, NULL, h, MSBNB_DTYPE_F16,
                                                 n, k, 0.0f);
            msbnb__free(h);
            MSBNB_TRY(st);
            for (int64_t r = 0; r < n; r++) l->rscale[r] = l->scb[r] / 127.0f;
        } else {
            MSBNB_TRY(alloc_arr((void **)&l->rzero, n, sizeof(float), "int8 zero points"));
            MSBNB_TRY(msbnb_quantize_8bit(l->q8, l->rscale, l->rzero, w, n, k, 0, 0));
        }
        break;
    case MSBNB_QTYPE_INT4: {
        int64_t gpr, pb;
        MSBNB_TRY(msbnb_int4_sizes(n, k, p->block, &gpr, &pb));
        MSBNB_TRY(alloc_arr((void **)&l->packed, pb, 1, "int4 codes"));
        MSBNB_TRY(alloc_arr((void **)&l->absmax, n * gpr, sizeof(float), "int4 scales"));
        if (!p->symmetric) MSBNB_TRY(alloc_arr((void **)&l->mins, n * gpr, sizeof(float), "int4 mins"));
        MSBNB_TRY(msbnb_quantize_int4(l->packed, l->absmax, l->mins, w, n, k, p->block, p->symmetric));
        break;
    }
    case MSBNB_QTYPE_NF4:
    case MSBNB_QTYPE_FP4: {
        int64_t nb = msbnb_nblocks(nk, p->block);
        MSBNB_TRY(alloc_arr((void **)&l->packed, (nk + 1) / 2, 1, "4-bit codes"));
        MSBNB_TRY(alloc_arr((void **)&l->absmax, nb, sizeof(float), "absmax"));
        MSBNB_TRY(msbnb_quantize_4bit(l->packed, l->absmax, w, MSBNB_DTYPE_F32, nk, p->block,
                                      p->type, l->nthreads));
        if (p->double_quant) {
            MSBNB_TRY(alloc_arr((void **)&l->qabsmax, nb, 1, "qabsmax"));
            MSBNB_TRY(alloc_arr((void **)&l->nested, msbnb__ceil_div(nb, MSBNB_NESTED_BLOCKSIZE),
                                sizeof(float), "nested absmax"));
            MSBNB_TRY(msbnb_double_quant_absmax(l->qabsmax, l->nested, &l->dq_offset, l->absmax, nb));
            /* kernels read the decoded absmax (what bnb's dequantize_4bit computes) */
            MSBNB_TRY(msbnb_double_dequant_absmax(l->absmax, l->qabsmax, l->nested, l->dq_offset, nb));
        }
        break;
    }
    case MSBNB_QTYPE_Q8_DYNAMIC: {
        int64_t nb = msbnb_nblocks(nk, p->block);
        MSBNB_TRY(alloc_arr((void **)&l->qb, nk, 1, "q8 codes"));
        MSBNB_TRY(alloc_arr((void **)&l->absmax, nb, sizeof(float), "absmax"));
        MSBNB_TRY(msbnb_quantize_blockwise_8bit(l->qb, l->absmax, w, MSBNB_DTYPE_F32, nk, p->block,
                                                NULL, l->nthreads));
        break;
    }
    default: return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "linear: unsupported format %d", (int)p->type);
    }
    MSBNB_TRY(st);
    l->fmt = *p;
    MSBNB_TRY(msbnb_qparams_storage(p, n, k, &l->bytes, NULL));
    return MSBNB_OK;
}

msbnb_status msbnb_linear_create(msbnb_linear_t **out, int64_t in_features, int64_t out_features,
                                 const float *weight, const float *bias, const msbnb_qparams *fmt) {
    MSBNB_CHECK_NULL(out);
    *out = NULL;
    MSBNB_CHECK_NULL(weight);
    MSBNB_TRY(check_dims(in_features, out_features, __func__));
    msbnb_qparams p = fmt ? *fmt : msbnb_qparams_default(MSBNB_QTYPE_F32);
    MSBNB_TRY(check_fmt(&p, __func__));
    msbnb_linear_t *l;
    MSBNB_TRY(new_layer(&l, in_features, out_features, bias));
    msbnb_status st = store_weight(l, weight, &p);
    if (st != MSBNB_OK) {
        msbnb_linear_free(l);
        return st;
    }
    *out = l;
    return MSBNB_OK;
}

static msbnb_status copy_in(void **dst, const void *src, int64_t count, size_t elem, const char *what) {
    MSBNB_TRY(alloc_arr(dst, count, elem, what));
    memcpy(*dst, src, (size_t)count * elem);
    return MSBNB_OK;
}

static msbnb_status finite_arr(const float *a, int64_t n, const char *what) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(a[i]))
            return msbnb__fail(MSBNB_ERR_NON_FINITE, "linear: %s[%lld] is not finite", what,
                               (long long)i);
    return MSBNB_OK;
}

static msbnb_status parts_4bit(msbnb_linear_t *l, const msbnb_qparams *p, const uint8_t *packed,
                               const float *absmax, const uint8_t *qabsmax, const float *nested,
                               float offset) {
    const int64_t nk = l->n * l->k, nb = msbnb_nblocks(nk, p->block);
    MSBNB_TRY(copy_in((void **)&l->packed, packed, (nk + 1) / 2, 1, "4-bit codes"));
    MSBNB_TRY(alloc_arr((void **)&l->absmax, nb, sizeof(float), "absmax"));
    if (p->double_quant) {
        int64_t nn = msbnb__ceil_div(nb, MSBNB_NESTED_BLOCKSIZE);
        MSBNB_TRY(finite_arr(nested, nn, "nested_absmax"));
        if (!isfinite(offset)) return msbnb__fail(MSBNB_ERR_NON_FINITE, "linear: offset is not finite");
        MSBNB_TRY(copy_in((void **)&l->qabsmax, qabsmax, nb, 1, "qabsmax"));
        MSBNB_TRY(copy_in((void **)&l->nested, nested, nn, sizeof(float), "nested absmax"));
        l->dq_offset = offset;
        MSBNB_TRY(msbnb_double_dequant_absmax(l->absmax, l->qabsmax, l->nested, offset, nb));
    } else {
        MSBNB_TRY(finite_arr(absmax, nb, "absmax"));
        memcpy(l->absmax, absmax, (size_t)nb * sizeof(float));
    }
    return MSBNB_OK;
}

static msbnb_status finish_parts(msbnb_linear_t **out, msbnb_linear_t *l, msbnb_status st,
                                 const msbnb_qparams *p) {
    if (st == MSBNB_OK) {
        l->fmt = *p;
        st = msbnb_qparams_storage(p, l->n, l->k, &l->bytes, NULL);
    }
    if (st != MSBNB_OK) {
        msbnb_linear_free(l);
        return st;
    }
    *out = l;
    return MSBNB_OK;
}

msbnb_status msbnb_linear_create_4bit_from_parts(msbnb_linear_t **out, int64_t in_features,
                                                 int64_t out_features, const msbnb_qparams *fmt,
                                                 const uint8_t *packed, const float *absmax,
                                                 const uint8_t *qabsmax,
                                                 const float *nested_absmax, float offset,
                                                 const float *bias) {
    MSBNB_CHECK_NULL(out);
    *out = NULL;
    MSBNB_CHECK_NULL(fmt);
    MSBNB_CHECK_NULL(packed);
    MSBNB_TRY(check_dims(in_features, out_features, __func__));
    MSBNB_TRY(check_fmt(fmt, __func__));
    if (fmt->type != MSBNB_QTYPE_NF4 && fmt->type != MSBNB_QTYPE_FP4)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: format must be nf4 or fp4 (got %s)",
                           __func__, msbnb_qtype_name(fmt->type));
    if (fmt->double_quant) {
        MSBNB_CHECK_NULL(qabsmax);
        MSBNB_CHECK_NULL(nested_absmax);
    } else {
        MSBNB_CHECK_NULL(absmax);
    }
    msbnb_linear_t *l;
    MSBNB_TRY(new_layer(&l, in_features, out_features, bias));
    msbnb_status st = parts_4bit(l, fmt, packed, absmax, qabsmax, nested_absmax, offset);
    return finish_parts(out, l, st, fmt);
}

msbnb_status msbnb_linear_create_int8_from_parts(msbnb_linear_t **out, int64_t in_features,
                                                 int64_t out_features, const int8_t *cb,
                                                 const float *scb, const float *bias) {
    MSBNB_CHECK_NULL(out);
    *out = NULL;
    MSBNB_CHECK_NULL(cb);
    MSBNB_CHECK_NULL(scb);
    MSBNB_TRY(check_dims(in_features, out_features, __func__));
    msbnb_linear_t *l;
    MSBNB_TRY(new_layer(&l, in_features, out_features, bias));
    const int64_t n = out_features;
    msbnb_status st = finite_arr(scb, n, "SCB");
    if (st == MSBNB_OK) st = copy_in((void **)&l->q8, cb, n * in_features, 1, "int8 codes");
    if (st == MSBNB_OK) st = copy_in((void **)&l->scb, scb, n, sizeof(float), "SCB");
    if (st == MSBNB_OK) st = alloc_arr((void **)&l->rscale, n, sizeof(float), "int8 scales");
    if (st == MSBNB_OK)
        for (int64_t r = 0; r < n; r++) l->rscale[r] = l->scb[r] / 127.0f;
    msbnb_qparams p = msbnb_qparams_default(MSBNB_QTYPE_INT8);
    return finish_parts(out, l, st, &p);
}

msbnb_status msbnb_linear_create_int8_scaled_from_parts(msbnb_linear_t **out, int64_t in_features,
                                                        int64_t out_features, const int8_t *q,
                                                        const float *scale, const float *zero,
                                                        int per_tensor, const float *bias) {
    MSBNB_CHECK_NULL(out);
    *out = NULL;
    MSBNB_CHECK_NULL(q);
    MSBNB_CHECK_NULL(scale);
    MSBNB_TRY(check_dims(in_features, out_features, __func__));
    const int64_t n = out_features, ns = per_tensor ? 1 : n;
    MSBNB_TRY(finite_arr(scale, ns, "scale"));
    if (zero) MSBNB_TRY(finite_arr(zero, ns, "zero point"));
    msbnb_linear_t *l;
    MSBNB_TRY(new_layer(&l, in_features, out_features, bias));
    /* the layer's asymmetric int8 kind: (q - z) * s per row, as msbnb_dequantize_8bit */
    msbnb_status st = copy_in((void **)&l->q8, q, n * in_features, 1, "int8 codes");
    if (st == MSBNB_OK) st = alloc_arr((void **)&l->rscale, n, sizeof(float), "int8 scales");
    if (st == MSBNB_OK) st = alloc_arr((void **)&l->rzero, n, sizeof(float), "int8 zero points");
    if (st == MSBNB_OK)
        for (int64_t r = 0; r < n; r++) {
            l->rscale[r] = scale[per_tensor ? 0 : r];
            l->rzero[r] = zero ? zero[per_tensor ? 0 : r] : 0.0f;
        }
    msbnb_qparams p = msbnb_qparams_default(MSBNB_QTYPE_INT8);
    p.symmetric = 0;
    return finish_parts(out, l, st, &p);
}

msbnb_status msbnb_linear_create_int4_from_parts(msbnb_linear_t **out, int64_t in_features,
                                                 int64_t out_features, const msbnb_qparams *fmt,
                                                 const uint8_t *packed, const float *scales,
                                                 const float *mins, const float *bias) {
    MSBNB_CHECK_NULL(out);
    *out = NULL;
    MSBNB_CHECK_NULL(fmt);
    MSBNB_CHECK_NULL(packed);
    MSBNB_CHECK_NULL(scales);
    MSBNB_TRY(check_dims(in_features, out_features, __func__));
    MSBNB_TRY(check_fmt(fmt, __func__));
    if (fmt->type != MSBNB_QTYPE_INT4)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: format must be int4 (got %s)", __func__,
                           msbnb_qtype_name(fmt->type));
    if (!fmt->symmetric) MSBNB_CHECK_NULL(mins);
    int64_t gpr, pb;
    MSBNB_TRY(msbnb_int4_sizes(out_features, in_features, fmt->block, &gpr, &pb));
    msbnb_linear_t *l;
    MSBNB_TRY(new_layer(&l, in_features, out_features, bias));
    int64_t ng = out_features * gpr;
    msbnb_status st = finite_arr(scales, ng, "scales");
    if (st == MSBNB_OK && !fmt->symmetric) st = finite_arr(mins, ng, "mins");
    if (st == MSBNB_OK) st = copy_in((void **)&l->packed, packed, pb, 1, "int4 codes");
    if (st == MSBNB_OK) st = copy_in((void **)&l->absmax, scales, ng, sizeof(float), "int4 scales");
    if (st == MSBNB_OK && !fmt->symmetric)
        st = copy_in((void **)&l->mins, mins, ng, sizeof(float), "int4 mins");
    return finish_parts(out, l, st, fmt);
}

static msbnb_status dup_arr(void **dst, const void *src, int64_t count, size_t elem) {
    *dst = NULL;
    if (!src) return MSBNB_OK;
    return copy_in(dst, src, count, elem, "linear clone");
}

msbnb_status msbnb_linear_clone(msbnb_linear_t **out, const msbnb_linear_t *src) {
    MSBNB_CHECK_NULL(out);
    *out = NULL;
    MSBNB_CHECK_NULL(src);
    msbnb_linear_t *l = calloc(1, sizeof *l);
    if (!l) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "linear clone: out of memory");
    *l = *src;
    l->f32 = l->absmax = l->mins = l->nested = l->rscale = l->rzero = l->scb = l->bias = NULL;
    l->u16 = NULL;
    l->q8 = NULL;
    l->packed = l->qb = l->qabsmax = NULL;
    const int64_t n = src->n, nk = src->n * src->k;
    const msbnb_qtype t = src->fmt.type;
    int64_t nscale = t == MSBNB_QTYPE_INT4 ? n * msbnb__ceil_div(src->k, src->fmt.block)
                     : (t == MSBNB_QTYPE_NF4 || t == MSBNB_QTYPE_FP4 || t == MSBNB_QTYPE_Q8_DYNAMIC)
                         ? msbnb_nblocks(nk, src->fmt.block)
                         : 0;
    msbnb_status st = dup_arr((void **)&l->f32, src->f32, nk, sizeof(float));
    if (st == MSBNB_OK) st = dup_arr((void **)&l->u16, src->u16, nk, 2);
    if (st == MSBNB_OK) st = dup_arr((void **)&l->q8, src->q8, nk, 1);
    if (st == MSBNB_OK) st = dup_arr((void **)&l->rscale, src->rscale, n, sizeof(float));
    if (st == MSBNB_OK) st = dup_arr((void **)&l->rzero, src->rzero, n, sizeof(float));
    if (st == MSBNB_OK) st = dup_arr((void **)&l->scb, src->scb, n, sizeof(float));
    if (st == MSBNB_OK) st = dup_arr((void **)&l->packed, src->packed, (nk + 1) / 2, 1);
    if (st == MSBNB_OK) st = dup_arr((void **)&l->qb, src->qb, nk, 1);
    if (st == MSBNB_OK) st = dup_arr((void **)&l->absmax, src->absmax, nscale, sizeof(float));
    if (st == MSBNB_OK) st = dup_arr((void **)&l->mins, src->mins, nscale, sizeof(float));
    if (st == MSBNB_OK) st = dup_arr((void **)&l->qabsmax, src->qabsmax, nscale, 1);
    if (st == MSBNB_OK)
        st = dup_arr((void **)&l->nested, src->nested, msbnb__ceil_div(nscale, MSBNB_NESTED_BLOCKSIZE),
                     sizeof(float));
    if (st == MSBNB_OK) st = dup_arr((void **)&l->bias, src->bias, n, sizeof(float));
    if (st != MSBNB_OK) {
        msbnb_linear_free(l);
        return st;
    }
    *out = l;
    return MSBNB_OK;
}

msbnb_status msbnb_linear_quantize_weights(msbnb_linear_t *l, const msbnb_qparams *fmt) {
    MSBNB_CHECK_NULL(l);
    MSBNB_CHECK_NULL(fmt);
    MSBNB_TRY(check_fmt(fmt, __func__));
    if (l->fmt.type != MSBNB_QTYPE_F32)
        return msbnb__fail(MSBNB_ERR_STATE, "%s: layer is already %s (only f32 layers convert)",
                           __func__, msbnb_qtype_name(l->fmt.type));
    /* build the new storage in a scratch layer so that a failure leaves l unchanged */
    msbnb_linear_t tmp = *l;
    tmp.f32 = NULL;
    tmp.bias = NULL;
    msbnb_status st = store_weight(&tmp, l->f32, fmt);
    if (st != MSBNB_OK) {
        clear_weight(&tmp);
        return st;
    }
    float *bias = l->bias;
    clear_weight(l);
    *l = tmp;
    l->bias = bias;
    return MSBNB_OK;
}

/* ---------------------------------------------------------------- queries and settings */

int64_t msbnb_linear_in_features(const msbnb_linear_t *l) { return l ? l->k : 0; }
int64_t msbnb_linear_out_features(const msbnb_linear_t *l) { return l ? l->n : 0; }
msbnb_qparams msbnb_linear_qparams(const msbnb_linear_t *l) {
    if (!l) {
        msbnb_qparams z;
        memset(&z, 0, sizeof z);
        return z;
    }
    return l->fmt;
}
int64_t msbnb_linear_weight_bytes(const msbnb_linear_t *l) { return l ? l->bytes : 0; }
double msbnb_linear_bits_per_weight(const msbnb_linear_t *l) {
    return l ? 8.0 * (double)l->bytes / ((double)l->n * (double)l->k) : 0.0;
}
int msbnb_linear_has_bias(const msbnb_linear_t *l) { return l && l->bias; }
const float *msbnb_linear_bias(const msbnb_linear_t *l) { return l ? l->bias : NULL; }

msbnb_status msbnb_linear_set_threads(msbnb_linear_t *l, int nthreads) {
    MSBNB_CHECK_NULL(l);
    l->nthreads = nthreads > 0 ? nthreads : 0;
    return MSBNB_OK;
}
int msbnb_linear_threads(const msbnb_linear_t *l) { return l ? msbnb__resolve_threads(l->nthreads) : 0; }

msbnb_status msbnb_linear_set_threadpool(msbnb_linear_t *l, msbnb_threadpool_t *pool) {
    MSBNB_CHECK_NULL(l);
    l->pool = pool;
    return MSBNB_OK;
}

msbnb_status msbnb_linear_set_cpu_tier(msbnb_linear_t *l, msbnb_cpu_tier t) {
    MSBNB_CHECK_NULL(l);
    if (t != MSBNB_CPU_SCALAR && t != MSBNB_CPU_AVX2 && t != MSBNB_CPU_AVX512)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: unknown CPU tier %d", __func__, (int)t);
    if (!msbnb_cpu_tier_supported(t))
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "%s: this CPU does not support %s", __func__,
                           msbnb_cpu_tier_name(t));
    l->tier = t;
    return MSBNB_OK;
}
msbnb_status msbnb_linear_set_workspace(msbnb_linear_t *l, int64_t bytes) {
    MSBNB_CHECK_NULL(l);
    if (bytes < 0)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: bytes must be >= 0 (got %lld)", __func__,
                           (long long)bytes);
    l->ws_bytes = bytes;
    return MSBNB_OK;
}

msbnb_cpu_tier msbnb_linear_cpu_tier(const msbnb_linear_t *l) { return l ? l->tier : MSBNB_CPU_SCALAR; }

msbnb_status msbnb_linear_set_int8_threshold(msbnb_linear_t *l, float threshold) {
    MSBNB_CHECK_NULL(l);
    if (l->fmt.type != MSBNB_QTYPE_INT8 || !l->fmt.symmetric)
        return msbnb__fail(MSBNB_ERR_STATE, "%s: the threshold applies to symmetric int8 layers",
                           __func__);
    if (!(threshold >= 0.0f) || isinf(threshold))
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: threshold must be finite and >= 0",
                           __func__);
    l->int8_threshold = threshold;
    return MSBNB_OK;
}
float msbnb_linear_int8_threshold(const msbnb_linear_t *l) { return l ? l->int8_threshold : 0.0f; }

msbnb_status msbnb_linear_set_exact(msbnb_linear_t *l, int exact) {
    MSBNB_CHECK_NULL(l);
    if (exact != 0 && exact != 1)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: exact must be 0 or 1 (got %d)", __func__, exact);
    l->exact = exact;
    return MSBNB_OK;
}
int msbnb_linear_exact(const msbnb_linear_t *l) { return l ? l->exact : 0; }

msbnb_status msbnb_linear_f32_params(msbnb_linear_t *l, float **weight, float **bias) {
    MSBNB_CHECK_NULL(l);
    if (l->fmt.type != MSBNB_QTYPE_F32)
        return msbnb__fail(MSBNB_ERR_STATE, "%s: layer is %s, not f32", __func__,
                           msbnb_qtype_name(l->fmt.type));
    if (weight) *weight = l->f32;
    if (bias) *bias = l->bias;
    return MSBNB_OK;
}

msbnb_status msbnb_linear_4bit_parts(const msbnb_linear_t *l, const uint8_t **packed,
                                     const float **absmax, const uint8_t **qabsmax,
                                     const float **nested_absmax, float *offset) {
    MSBNB_CHECK_NULL(l);
    if (l->fmt.type != MSBNB_QTYPE_NF4 && l->fmt.type != MSBNB_QTYPE_FP4)
        return msbnb__fail(MSBNB_ERR_STATE, "%s: layer is %s, not nf4/fp4", __func__,
                           msbnb_qtype_name(l->fmt.type));
    if (packed) *packed = l->packed;
    if (absmax) *absmax = l->absmax;
    if (qabsmax) *qabsmax = l->qabsmax;
    if (nested_absmax) *nested_absmax = l->nested;
    if (offset) *offset = l->dq_offset;
    return MSBNB_OK;
}

msbnb_status msbnb_linear_int8_parts(const msbnb_linear_t *l, const int8_t **cb, const float **scb) {
    MSBNB_CHECK_NULL(l);
    if (l->fmt.type != MSBNB_QTYPE_INT8 || !l->fmt.symmetric)
        return msbnb__fail(MSBNB_ERR_STATE, "%s: layer is not symmetric int8", __func__);
    if (cb) *cb = l->q8;
    if (scb) *scb = l->scb;
    return MSBNB_OK;
}

msbnb_status msbnb_linear_int4_parts(const msbnb_linear_t *l, const uint8_t **packed,
                                     const float **scales, const float **mins) {
    MSBNB_CHECK_NULL(l);
    if (l->fmt.type != MSBNB_QTYPE_INT4)
        return msbnb__fail(MSBNB_ERR_STATE, "%s: layer is %s, not int4", __func__,
                           msbnb_qtype_name(l->fmt.type));
    if (packed) *packed = l->packed;
    if (scales) *scales = l->absmax;
    if (mins) *mins = l->mins;
    return MSBNB_OK;
}

/* ---------------------------------------------------------------- compute */

static msbnb__wview view_of(const msbnb_linear_t *l) {
    msbnb__wview w;
    memset(&w, 0, sizeof w);
    w.type = l->fmt.type;
    w.symmetric = l->fmt.symmetric;
    w.n = l->n;
    w.k = l->k;
    w.block = l->fmt.block;
    w.gpr = l->fmt.type == MSBNB_QTYPE_INT4 ? msbnb__ceil_div(l->k, l->fmt.block) : 0;
    w.exact = l->exact;
    /* the decode of the 4-bit integer kernels (an environment read): only 4-bit layers use it */
    const int q4 = l->fmt.type == MSBNB_QTYPE_NF4 || l->fmt.type == MSBNB_QTYPE_FP4 || l->fmt.type == MSBNB_QTYPE_INT4;
    w.i16_perm = q4 ? msbnb__i16_decode_perm() : 0;
    w.f32 = l->f32;
    w.u16 = l->u16;
    w.q8 = l->q8;
    w.rscale = l->rscale;
    w.rzero = l->rzero;
    w.scb = l->scb;
    w.packed = l->packed;
    w.qb = l->qb;
    w.absmax = l->absmax;
    w.mins = l->mins;
    /* Double quant: the small-m kernels read the 8-bit scale codes of weights that stream
     * from memory (cold (14336, 4096) NF4 M = 1: 1.16 against 1.26 ms, 8 % fewer bytes), and
     * the decoded f32 copy of weights small enough to stay in a core's L2, where the decode
     * costs more than the bytes (4096 x 384 hot: 49 against 45 us). AMD Zen 4, 2026-12-02. */
    const int dq8 = l->qabsmax ? msbnb__i16_dq_inline() : 0;
    if ((l->fmt.type == MSBNB_QTYPE_NF4 || l->fmt.type == MSBNB_QTYPE_FP4) &&
        (dq8 == 2 || (dq8 == 1 && l->n * l->k / 2 >= ((int64_t)4 << 20)))) {
        w.qabsmax = l->qabsmax;
        w.nested = l->nested;
        w.dq_offset = l->dq_offset;
    }
    w.code = l->fmt.type == MSBNB_QTYPE_NF4   ? msbnb_nf4_code()
             : l->fmt.type == MSBNB_QTYPE_FP4 ? msbnb_fp4_code()
             : l->fmt.type == MSBNB_QTYPE_Q8_DYNAMIC ? msbnb_dynamic_map()
                                                     : NULL;
    return w;
}

static msbnb_status check_call(const msbnb_linear_t *l, int64_t m, const char *fn) {
    if (m <= 0)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: m must be positive (got %lld)", fn,
                           (long long)m);
    int64_t t;
    if (m > INT32_MAX || l->k > INT32_MAX || l->n > INT32_MAX ||
        !msbnb__mul_ok(m, l->k > l->n ? l->k : l->n, &t) || t > INT64_MAX / 16)
        return msbnb__fail(MSBNB_ERR_OVERFLOW, "%s: m = %lld overflows", fn, (long long)m);
    return MSBNB_OK;
}

typedef struct {
    const msbnb__gemv_table *kt;
    const msbnb__wview *w;
    float *y;
    const float *x;
    const int8_t *xq;
    int64_t *acc;
    int64_t m, ld;
    float *panel;
    int64_t r0, k0, k1, ldp; /* dequant: tile rows r0 + [b, e), cols [k0, k1), panel stride */
    int raw;
} job_t;

/* Small-m forward over threads with dynamic scheduling: rows are cut into chunks of about
 * 256 KiB of weight and each thread takes the next chunk from an atomic counter, so a
 * thread that the OS deschedules (a shared machine, unequal cores) does not hold the
 * others up, as it does with one fixed range per thread. Each thread allocates its
 * scratch and prepares x once. */
typedef struct {
    job_t *j;
    int i8; /* gemv_i8 instead of gemv */
    int64_t n, chunk;
    atomic_llong next;
} sched_t;

static void *sched_worker(void *arg) {
    sched_t *sc = arg;
    job_t *j = sc->j;
    float *scratch = NULL;
    if (!sc->i8) {
        scratch = msbnb__alloc((size_t)msbnb__gemv_scratch(j->w->k, j->m) * sizeof(float));
        if (!scratch) return NULL; /* take no rows: the other threads finish them */
    }
    for (int ready = 0;; ready = 1) {
        const int64_t b = (int64_t)atomic_fetch_add(&sc->next, (long long)sc->chunk);
        if (b >= sc->n) break;
        const int64_t e = sc->n - b < sc->chunk ? sc->n : b + sc->chunk;
        if (sc->i8)
            j->kt->gemv_i8(j->w, j->acc, j->ld, j->xq, j->m, b, e);
        else
            j->kt->gemv(j->w, j->y, j->ld, j->x, j->m, b, e, scratch, ready);
    }
    msbnb__free(scratch);
    return NULL;
}

static void sched_pool_job(void *arg, int tid) {
    (void)tid;
    sched_worker(arg);
}

/* Runs the gemv (or gemv_i8) kernel of job j over all N rows with nt threads (the
 * layer's pool's, when it has one). */
static msbnb_status run_rows(const msbnb_linear_t *l, job_t *j, int i8, int nt) {
    sched_t sc;
    sc.j = j;
    sc.i8 = i8;
    sc.n = l->n;
    const int64_t row_bytes = l->bytes / l->n + 1;
    sc.chunk = (256 << 10) / row_bytes;
    if (sc.chunk < 1) sc.chunk = 1;
    if (sc.chunk * nt > sc.n) sc.chunk = (sc.n + nt - 1) / nt; /* small layers: one range each */
    atomic_init(&sc.next, 0);
    const int64_t nchunks = (sc.n + sc.chunk - 1) / sc.chunk;
    if (nt > nchunks) nt = (int)nchunks;
    if (nt > 64) nt = 64;
    if (l->pool) {
        msbnb__pool_run(l->pool, nt, sched_pool_job, &sc);
    } else {
        pthread_t th[64];
        int started[64] = {0};
        for (int t = 1; t < nt; t++) started[t] = pthread_create(&th[t], NULL, sched_worker, &sc) == 0;
        sched_worker(&sc);
        for (int t = 1; t < nt; t++)
            if (started[t]) pthread_join(th[t], NULL);
    }
    /* rows are left only if every thread failed to allocate its scratch */
    if (atomic_load(&sc.next) < sc.n)
        return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "linear forward: out of memory");
    return MSBNB_OK;
}

static void dequant_job(void *ctx, int64_t b, int64_t e, int tid) {
    job_t *j = ctx;
    j->kt->dequant_tile(j->w, j->panel + b * j->ldp, j->ldp, j->r0 + b, j->r0 + e, j->k0, j->k1,
                        j->raw);
}

#define DEFAULT_PANEL_BYTES ((int64_t)8 << 20)

/* Rows of W per dequantized row panel: the panel budget over K columns, a
 * multiple of 16 rows, at least 16. */
static int64_t panel_rows(const msbnb_linear_t *l) {
    const int64_t budget = l->ws_bytes ? l->ws_bytes : DEFAULT_PANEL_BYTES;
    int64_t r = budget / (4 * l->k) / 16 * 16;
    if (r < 16) r = 16;
    return r > l->n ? l->n : r;
}

/* Columns of W per dequantized column panel: the panel budget over
 * all N rows, a multiple of 64 columns (the SIMD tiles' alignment); by default at least
 * 256 (sgemm's own K blocking is a few hundred; thinner slices re-read Y too often). */
static int64_t panel_cols(const msbnb_linear_t *l) {
    const int64_t budget = l->ws_bytes ? l->ws_bytes : DEFAULT_PANEL_BYTES;
    const int64_t lo = l->ws_bytes ? 64 : 256;
    int64_t c = budget / (4 * l->n) / 64 * 64;
    if (c < lo) c = lo;
    return c > l->k ? l->k : c;
}

/* Y[m, N] = X[m, K] · Wᵀ (no bias) for the SIMD tiers at large m: the weight is
 * dequantized one panel at a time (never the whole float weight) and multiplied by sgemm.
 * Row panels W[r0:r1, :] give Y[:, r0:r1] directly but make sgemm repack all of X for
 * each panel (4·m·K bytes, N/rows times); column panels W[:, k0:k1] accumulate
 * Y += X[:, k0:k1] · panelᵀ, re-reading and re-writing Y for each panel (8·m·N bytes, K/cols
 * times). With panels of equal size the first moves 4·m·N·K²/P bytes, the second
 * 8·m·N²·K/P: row panels when K < 2N. raw: INT8 symmetric codes. */
static msbnb_status forward_panels(const msbnb_linear_t *l, const msbnb__gemv_table *kt,
                                   const msbnb__wview *w, float *y, const float *x, int64_t m,
                                   int raw) {
    const int64_t K = l->k, N = l->n;
    const int nt = msbnb__resolve_threads(l->nthreads);
    const int by_rows = K < 2 * N;
    const int64_t step = by_rows ? panel_rows(l) : panel_cols(l);
    float *panel;
    MSBNB_TRY(alloc_arr((void **)&panel, step * (by_rows ? K : N), sizeof(float), "weight panel"));
    openblas_set_num_threads(nt);
    if (by_rows) {
        for (int64_t r0 = 0; r0 < N; r0 += step) {
            const int64_t rows = N - r0 < step ? N - r0 : step;
            job_t j = {.kt = kt, .w = w, .panel = panel, .r0 = r0, .k0 = 0, .k1 = K, .ldp = K,
                       .raw = raw};
            msbnb__parallel_for(nt, rows, 4, dequant_job, &j);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)rows, (int)K, 1.0f,
                        x, (int)K, panel, (int)K, 0.0f, y + r0, (int)N);
        }
    } else {
        for (int64_t k0 = 0; k0 < K; k0 += step) {
            const int64_t cols = K - k0 < step ? K - k0 : step;
            job_t j = {.kt = kt, .w = w, .panel = panel, .r0 = 0, .k0 = k0, .k1 = k0 + cols,
                       .ldp = cols, .raw = raw};
            msbnb__parallel_for(nt, N, 16, dequant_job, &j);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)N, (int)cols, 1.0f,
                        x + k0, (int)K, panel, (int)cols, k0 == 0 ? 0.0f : 1.0f, y, (int)N);
        }
    }
    msbnb__free(panel);
    return MSBNB_OK;
}

static msbnb_status forward_float(const msbnb_linear_t *l, const msbnb__gemv_table *kt,
                                  const msbnb__wview *w, float *y, const float *x, int64_t m) {
    const int nt = msbnb__resolve_threads(l->nthreads);
    const int64_t K = l->k, N = l->n;
    if (kt->tier != MSBNB_CPU_SCALAR && l->fmt.type == MSBNB_QTYPE_F32) {
        /* the f32 layer is OpenBLAS itself (the baseline the quantized kinds are measured to) */
        openblas_set_num_threads(nt);
        if (m == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)N, (int)K, 1.0f, l->f32, (int)K, x, 1,
                        0.0f, y, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)N, (int)K, 1.0f, x,
                        (int)K, l->f32, (int)K, 0.0f, y, (int)N);
        return MSBNB_OK;
    }
    if (m > MSBNB__GEMV_MAX_M && kt->tier != MSBNB_CPU_SCALAR)
        return forward_panels(l, kt, w, y, x, m, 0);
    job_t j = {.kt = kt, .w = w, .y = y, .x = x, .m = m, .ld = N};
    return run_rows(l, &j, 0, nt);
}

/* LLM.int8 (bitsandbytes MatMul8bitLt): X is quantized row-wise (outlier columns, if a
 * threshold is set, excluded and zeroed); Y = (Xq · CBᵀ) · sx · SCB / 127² exactly
 * accumulated, plus X[:, outliers] · W_dequant[:, outliers]ᵀ in float. */
static msbnb_status forward_int8(const msbnb_linear_t *l, const msbnb__gemv_table *kt,
                                 const msbnb__wview *w, float *y, const float *x, int64_t m) {
    const int64_t K = l->k, N = l->n;
    const int nt = msbnb__resolve_threads(l->nthreads);
    int8_t *xq = NULL;
    float *sx = NULL;
    int64_t *outl = NULL, nout = 0;
    msbnb_status st = alloc_arr((void **)&xq, m * K, 1, "quantized activation");
    if (st == MSBNB_OK) st = alloc_arr((void **)&sx, m, sizeof(float), "activation scales");
    if (st == MSBNB_OK) st = alloc_arr((void **)&outl, K, sizeof(int64_t), "outlier columns");
    if (st == MSBNB_OK)
        st = msbnb_int8_vectorwise_quant(xq, sx, outl, K, &nout, x, MSBNB_DTYPE_F32, m, K,
                                         l->int8_threshold);
    if (st == MSBNB_OK && (m <= MSBNB__GEMV_MAX_M || kt->tier == MSBNB_CPU_SCALAR)) {
        int64_t *acc = NULL;
        st = alloc_arr((void **)&acc, m * N, sizeof(int64_t), "int8 accumulators");
        if (st == MSBNB_OK) {
            job_t j = {.kt = kt, .w = w, .xq = xq, .acc = acc, .m = m, .ld = N};
            st = run_rows(l, &j, 1, nt);
            for (int64_t i = 0; st == MSBNB_OK && i < m; i++)
                for (int64_t r = 0; r < N; r++)
                    y[i * N + r] = (float)acc[i * N + r] * sx[i] * l->scb[r] * MM_DEQUANT_CONST;
        }
        msbnb__free(acc);
    } else if (st == MSBNB_OK) {
        /* large m: the integer codes as floats through sgemm (products exact, sums in f32) */
        float *xf = NULL;
        st = alloc_arr((void **)&xf, m * K, sizeof(float), "activation codes");
        if (st == MSBNB_OK) {
            for (int64_t i = 0; i < m * K; i++) xf[i] = (float)xq[i];
            st = forward_panels(l, kt, w, y, xf, m, 1);
        }
        if (st == MSBNB_OK)
            for (int64_t i = 0; i < m; i++)
                for (int64_t r = 0; r < N; r++)
                    y[i * N + r] = y[i * N + r] * sx[i] * l->scb[r] * MM_DEQUANT_CONST;
        msbnb__free(xf);
    }
    if (st == MSBNB_OK && nout > 0) {
        /* outlier columns in float against the dequantized weight columns */
        for (int64_t r = 0; r < N; r++) {
            const int8_t *q = l->q8 + r * K;
            float s = l->rscale[r];
            for (int64_t i = 0; i < m; i++) {
                const float *xi = x + i * K;
                float acc = 0.0f;
                for (int64_t c = 0; c < nout; c++) acc += xi[outl[c]] * ((float)q[outl[c]] * s);
                y[i * N + r] += acc;
            }
        }
    }
    msbnb__free(xq);
    msbnb__free(sx);
    msbnb__free(outl);
    return st;
}

msbnb_status msbnb_linear_forward(const msbnb_linear_t *l, float *y, const float *x, int64_t m) {
    MSBNB_CHECK_NULL(l);
    MSBNB_CHECK_NULL(y);
    MSBNB_CHECK_NULL(x);
    MSBNB_TRY(check_call(l, m, __func__));
    const msbnb__gemv_table *kt = msbnb__gemv_kernels(l->tier);
    msbnb__wview w = view_of(l);
    if (l->fmt.type == MSBNB_QTYPE_INT8 && l->fmt.symmetric)
        MSBNB_TRY(forward_int8(l, kt, &w, y, x, m));
    else
        MSBNB_TRY(forward_float(l, kt, &w, y, x, m));
    if (l->bias)
        for (int64_t i = 0; i < m; i++)
            for (int64_t r = 0; r < l->n; r++) y[i * l->n + r] += l->bias[r];
    return MSBNB_OK;
}

msbnb_status msbnb_linear_forward_bf16(const msbnb_linear_t *l, void *y, msbnb_dtype y_type,
                                       const uint16_t *x, int64_t m) {
    MSBNB_CHECK_NULL(l);
    MSBNB_CHECK_NULL(y);
    MSBNB_CHECK_NULL(x);
    MSBNB_TRY(check_call(l, m, __func__));
    if (y_type != MSBNB_DTYPE_F32 && y_type != MSBNB_DTYPE_BF16)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: y_type must be F32 or BF16", __func__);
    float *xf = NULL, *yf = NULL;
    msbnb_status st = alloc_arr((void **)&xf, m * l->k, sizeof(float), "activation");
    if (st == MSBNB_OK && y_type == MSBNB_DTYPE_BF16)
        st = alloc_arr((void **)&yf, m * l->n, sizeof(float), "output");
    if (st == MSBNB_OK) st = msbnb_convert(xf, MSBNB_DTYPE_F32, x, MSBNB_DTYPE_BF16, m * l->k);
    if (st == MSBNB_OK) st = msbnb_linear_forward(l, yf ? yf : (float *)y, xf, m);
    if (st == MSBNB_OK && yf) st = msbnb_convert(y, MSBNB_DTYPE_BF16, yf, MSBNB_DTYPE_F32, m * l->n);
    msbnb__free(xf);
    msbnb__free(yf);
    return st;
}

msbnb_status msbnb_linear_backward(const msbnb_linear_t *l, float *dx, float *dw, float *db,
                                   const float *dy, const float *x, int64_t m) {
    MSBNB_CHECK_NULL(l);
    MSBNB_CHECK_NULL(dy);
    MSBNB_TRY(check_call(l, m, __func__));
    const int64_t K = l->k, N = l->n;
    const msbnb_qtype t = l->fmt.type;
    if (dw) {
        if (t != MSBNB_QTYPE_F32 && t != MSBNB_QTYPE_BF16 && t != MSBNB_QTYPE_F16)
            return msbnb__fail(MSBNB_ERR_STATE, "%s: dw requested for a quantized (%s) layer",
                               __func__, msbnb_qtype_name(t));
        MSBNB_CHECK_NULL(x);
    }
    const msbnb__gemv_table *kt = msbnb__gemv_kernels(l->tier);
    const int nt = msbnb__resolve_threads(l->nthreads);
    const int scalar = kt->tier == MSBNB_CPU_SCALAR;
    if (dx) {
        /* dX = dY · W, one dequantized panel of W rows at a time: dX += dY[:, panel] · P */
        msbnb__wview w = view_of(l);
        const int64_t pr = panel_rows(l);
        float *panel;
        MSBNB_TRY(alloc_arr((void **)&panel, pr * K, sizeof(float), "weight panel"));
        memset(dx, 0, (size_t)(m * K) * sizeof(float));
        openblas_set_num_threads(nt);
        for (int64_t r0 = 0; r0 < N; r0 += pr) {
            int64_t rows = N - r0 < pr ? N - r0 : pr;
            if (t == MSBNB_QTYPE_F32 && !scalar) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)K, (int)rows,
                            1.0f, dy + r0, (int)N, l->f32 + r0 * K, (int)K, 1.0f, dx, (int)K);
                continue;
            }
            job_t j = {.kt = kt, .w = &w, .panel = panel, .r0 = r0, .k0 = 0, .k1 = K, .ldp = K,
                       .raw = 0};
            msbnb__parallel_for(nt, rows, 4, dequant_job, &j);
            if (!scalar) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)K, (int)rows,
                            1.0f, dy + r0, (int)N, panel, (int)K, 1.0f, dx, (int)K);
            } else {
                for (int64_t i = 0; i < m; i++)
                    for (int64_t r = 0; r < rows; r++) {
                        float g = dy[i * N + r0 + r];
                        const float *p = panel + r * K;
                        float *dxi = dx + i * K;
                        for (int64_t k = 0; k < K; k++) dxi[k] += g * p[k];
                    }
            }
        }
        msbnb__free(panel);
    }
    if (dw) {
        /* dW[N, K] += dYᵀ · X */
        if (!scalar) {
            openblas_set_num_threads(nt);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)N, (int)K, (int)m, 1.0f, dy,
                        (int)N, x, (int)K, 1.0f, dw, (int)K);
        } else {
            for (int64_t r = 0; r < N; r++)
                for (int64_t i = 0; i < m; i++) {
                    float g = dy[i * N + r];
                    for (int64_t k = 0; k < K; k++) dw[r * K + k] += g * x[i * K + k];
                }
        }
    }
    if (db)
        for (int64_t i = 0; i < m; i++)
            for (int64_t r = 0; r < N; r++) db[r] += dy[i * N + r];
    return MSBNB_OK;
}

msbnb_status msbnb_linear_dequantize_weight(const msbnb_linear_t *l, float *w_out) {
    MSBNB_CHECK_NULL(l);
    MSBNB_CHECK_NULL(w_out);
    msbnb__wview w = view_of(l);
    msbnb__dequant_tile_ref(&w, w_out, l->k, 0, l->n, 0, l->k, 0);
    return MSBNB_OK;
}

/* The layer's weight as a read-only kernel view (borrowed; valid while the layer is
 * unchanged). Internal: the CUDA backend (src/cuda/linear_cuda.cu) uploads a layer through it. */
msbnb__wview msbnb__linear_view(const msbnb_linear_t *l) { return view_of(l); }
