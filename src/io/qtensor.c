/* Reading a module's quantized weight back from a checkpoint, in bitsandbytes' layout
 * (bitsandbytes QuantState.as_dict(packed=True); Int8Params' SCB + weight_format) or
 * msbnb's (quant_state.msbnb__int4 / msbnb__int8). */
#include "msbnb/convert.h"

#include "internal.h"
#include "io_internal.h"
#include "qtensor_internal.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QT_MAX_PARTS 8
typedef struct {
    void *p[QT_MAX_PARTS];
    int n;
} qt_arena;

void msbnb_qtensor_clear(msbnb_qtensor *t) {
    if (!t) return;
    qt_arena *a = t->arena_;
    if (a) {
        for (int i = 0; i < a->n; i++) msbnb__free(a->p[i]);
        free(a);
    }
    memset(t, 0, sizeof *t);
}

/* Copies tensor `name` (dtype `want`, `numel` elements) into a new aligned buffer. */
static msbnb_status take(msbnb_qtensor *t, const msbnb_st_file_t *f, const char *name,
                         msbnb_dtype want, int64_t numel, void **dst) {
    msbnb_st_tensor_info ti;
    if (msbnb_st_find(f, name, &ti) != MSBNB_OK)
        return msbnb__fail(MSBNB_ERR_FORMAT, "module '%s': missing tensor '%s'", t->module, name);
    if (ti.dtype != want || ti.numel != numel)
        return msbnb__fail(MSBNB_ERR_FORMAT, "module '%s': tensor '%s' is %s with %lld elements, "
                           "expected %s with %lld", t->module, name, msbnb_dtype_name(ti.dtype),
                           (long long)ti.numel, msbnb_dtype_name(want), (long long)numel);
    qt_arena *a = t->arena_;
    if (a->n >= QT_MAX_PARTS) return msbnb__fail(MSBNB_ERR_INTERNAL, "qtensor: too many parts");
    void *p = msbnb__alloc(ti.nbytes ? (size_t)ti.nbytes : 1);
    if (!p) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "module '%s': out of memory for '%s'",
                               t->module, name);
    if (ti.nbytes) memcpy(p, ti.data, (size_t)ti.nbytes);
    a->p[a->n++] = p;
    *dst = p;
    return MSBNB_OK;
}

static msbnb_status new_part(msbnb_qtensor *t, size_t bytes, void **dst) {
    qt_arena *a = t->arena_;
    if (a->n >= QT_MAX_PARTS) return msbnb__fail(MSBNB_ERR_INTERNAL, "qtensor: too many parts");
    void *p = msbnb__alloc(bytes ? bytes : 1);
    if (!p) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "module '%s': out of memory", t->module);
    a->p[a->n++] = p;
    *dst = p;
    return MSBNB_OK;
}

static int same_floats(const msbnb_st_file_t *f, const char *name, const float *ref, int64_t n) {
    msbnb_st_tensor_info ti;
    if (msbnb_st_find(f, name, &ti) != MSBNB_OK || ti.dtype != MSBNB_DTYPE_F32 || ti.numel != n)
        return 0;
    return memcmp(ti.data, ref, (size_t)n * sizeof(float)) == 0;
}

static msbnb_status torch_dtype(const char *s, msbnb_dtype *d) {
    if (!strcmp(s, "float32")) *d = MSBNB_DTYPE_F32;
    else if (!strcmp(s, "float16")) *d = MSBNB_DTYPE_F16;
    else if (!strcmp(s, "bfloat16")) *d = MSBNB_DTYPE_BF16;
    else return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "quant_state dtype '%s' is not supported", s);
    return MSBNB_OK;
}

static const char *const QS_SUFFIX[] = {"bitsandbytes__nf4", "bitsandbytes__fp4", "msbnb__int4",
                                        "msbnb__int8"};

int msbnb__qstate_name(const msbnb_st_file_t *f, const char *module, char *out, size_t cap) {
    for (int i = 0; i < 4; i++) {
        snprintf(out, cap, "%s.weight.quant_state.%s", module, QS_SUFFIX[i]);
        if (msbnb__st_has(f, out)) return i + 1;
    }
    return 0;
}

static int64_t jint(const cJSON *o, const char *k, int64_t dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v) || !(v->valuedouble > -1e15 && v->valuedouble < 1e15) ||
        v->valuedouble != (double)(int64_t)v->valuedouble)
        return dflt;
    return (int64_t)v->valuedouble;
}

msbnb_status msbnb_qtensor_load(msbnb_qtensor *out, const msbnb_st_file_t *f, const char *module) {
    MSBNB_CHECK_NULL(out);
    MSBNB_CHECK_NULL(f);
    MSBNB_CHECK_NULL(module);
    memset(out, 0, sizeof *out);
    size_t ml = strlen(module);
    if (ml >= 7 && strcmp(module + ml - 7, ".weight") == 0) ml -= 7;
    if (ml == 0 || ml >= sizeof out->module)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: bad module name", __func__);
    msbnb_qtensor t;
    memset(&t, 0, sizeof t);
    memcpy(t.module, module, ml);
    t.arena_ = calloc(1, sizeof(qt_arena));
    if (!t.arena_) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    char key[600], qs[600];
    msbnb_status st = MSBNB_OK;
    int kind = msbnb__qstate_name(f, t.module, qs, sizeof qs);
    snprintf(key, sizeof key, "%s.weight", t.module);
    if (kind) {
        msbnb_st_tensor_info qi;
        msbnb_st_find(f, qs, &qi);
        cJSON *j = (qi.dtype == MSBNB_DTYPE_U8 && qi.ndim == 1 && qi.nbytes)
                       ? cJSON_ParseWithLength(qi.data, (size_t)qi.nbytes) : NULL;
        const cJSON *shape = j ? cJSON_GetObjectItemCaseSensitive(j, "shape") : NULL;
        const cJSON *dt = j ? cJSON_GetObjectItemCaseSensitive(j, "dtype") : NULL;
        if (!cJSON_IsArray(shape) || cJSON_GetArraySize(shape) != 2 || !cJSON_IsString(dt)) {
            st = msbnb__fail(MSBNB_ERR_FORMAT, "module '%s': quant state '%s' is not a JSON object "
                             "with a 2-D \"shape\" and a \"dtype\"", t.module, qs);
        } else {
            const cJSON *r = shape->child, *c = r->next;
            t.rows = (cJSON_IsNumber(r) && r->valuedouble >= 1 && r->valuedouble < 1e15 &&
                      r->valuedouble == (double)(int64_t)r->valuedouble) ? (int64_t)r->valuedouble : -1;
            t.cols = (cJSON_IsNumber(c) && c->valuedouble >= 1 && c->valuedouble < 1e15 &&
                      c->valuedouble == (double)(int64_t)c->valuedouble) ? (int64_t)c->valuedouble : -1;
            int64_t n;
            if (t.rows <= 0 || t.cols <= 0 || t.rows > (1LL << 40) || t.cols > (1LL << 40) ||
                !msbnb__mul_ok(t.rows, t.cols, &n) || n > (1LL << 50))
                st = msbnb__fail(MSBNB_ERR_FORMAT, "module '%s': bad shape in quant state", t.module);
            if (st == MSBNB_OK) st = torch_dtype(dt->valuestring, &t.orig_dtype);
        }
        int64_t n = t.rows * t.cols;
        if (st == MSBNB_OK && (kind == 1 || kind == 2)) {
            msbnb_qtype qt = kind == 1 ? MSBNB_QTYPE_NF4 : MSBNB_QTYPE_FP4;
            const cJSON *qtn = cJSON_GetObjectItemCaseSensitive(j, "quant_type");
            t.params = msbnb_qparams_default(qt);
            t.params.block = jint(j, "blocksize", -1);
            t.bnb_layout = 1;
            if (!cJSON_IsString(qtn) || strcmp(qtn->valuestring, kind == 1 ? "nf4" : "fp4"))
                st = msbnb__fail(MSBNB_ERR_FORMAT, "module '%s': quant_type disagrees with '%s'",
                                 t.module, qs);
            else if (msbnb_qparams_validate(&t.params) != MSBNB_OK)
                st = msbnb__fail(MSBNB_ERR_FORMAT, "module '%s': bad blocksize in quant state", t.module);
            if (st == MSBNB_OK) {
                t.nblocks = msbnb__ceil_div(n, t.params.block);
                st = take(&t, f, key, MSBNB_DTYPE_U8, (n + 1) / 2, (void **)&t.packed);
            }
            snprintf(key, sizeof key, "%s.weight.quant_map", t.module);
            if (st == MSBNB_OK &&
                !same_floats(f, key, kind == 1 ? msbnb_nf4_code() : msbnb_fp4_code(), 16))
                st = msbnb__fail(MSBNB_ERR_UNSUPPORTED, "module '%s': '%s' is missing or not the "
                                 "standard %s code", t.module, key, kind == 1 ? "NF4" : "FP4");
            const cJSON *nb = cJSON_GetObjectItemCaseSensitive(j, "nested_blocksize");
            t.params.double_quant = nb != NULL;
            snprintf(key, sizeof key, "%s.weight.absmax", t.module);
            if (st == MSBNB_OK && !t.params.double_quant) {
                st = take(&t, f, key, MSBNB_DTYPE_F32, t.nblocks, (void **)&t.absmax);
            } else if (st == MSBNB_OK) {
                const cJSON *off = cJSON_GetObjectItemCaseSensitive(j, "nested_offset");
                const cJSON *ndt = cJSON_GetObjectItemCaseSensitive(j, "nested_dtype");
                if (jint(j, "nested_blocksize", -1) != MSBNB_NESTED_BLOCKSIZE || !cJSON_IsNumber(off) ||
                    !(fabs(off->valuedouble) <= FLT_MAX) || /* the float cast below must be defined */
                    (ndt && (!cJSON_IsString(ndt) || strcmp(ndt->valuestring, "float32"))))
                    st = msbnb__fail(MSBNB_ERR_UNSUPPORTED, "module '%s': nested quant state must "
                                     "have nested_blocksize 256, float32 and a nested_offset", t.module);
                if (st == MSBNB_OK) {
                    t.nested_offset = (float)off->valuedouble;
                    st = take(&t, f, key, MSBNB_DTYPE_U8, t.nblocks, (void **)&t.qabsmax);
                }
                snprintf(key, sizeof key, "%s.weight.nested_absmax", t.module);
                if (st == MSBNB_OK)
                    st = take(&t, f, key, MSBNB_DTYPE_F32,
                              msbnb__ceil_div(t.nblocks, MSBNB_NESTED_BLOCKSIZE), (void **)&t.nested_absmax);
                snprintf(key, sizeof key, "%s.weight.nested_quant_map", t.module);
                if (st == MSBNB_OK && !same_floats(f, key, msbnb_dynamic_map(), 256))
                    st = msbnb__fail(MSBNB_ERR_UNSUPPORTED, "module '%s': '%s' is missing or not "
                                     "the standard dynamic map", t.module, key);
                if (st == MSBNB_OK) st = new_part(&t, (size_t)t.nblocks * sizeof(float), (void **)&t.absmax);
                if (st == MSBNB_OK)
                    st = msbnb_double_dequant_absmax(t.absmax, t.qabsmax, t.nested_absmax,
                                                     t.nested_offset, t.nblocks);
            }
        } else if (st == MSBNB_OK) { /* msbnb formats */
            const cJSON *sym = cJSON_GetObjectItemCaseSensitive(j, "symmetric");
            t.params = msbnb_qparams_default(kind == 3 ? MSBNB_QTYPE_INT4 : MSBNB_QTYPE_INT8);
            t.params.symmetric = cJSON_IsBool(sym) ? cJSON_IsTrue(sym) : 1;
            if (kind == 3) {
                t.params.block = jint(j, "group_size", -1);
                int64_t gpr = 0, pb = 0;
                if (msbnb_int4_sizes(t.rows, t.cols, t.params.block, &gpr, &pb) != MSBNB_OK)
                    st = msbnb__fail(MSBNB_ERR_FORMAT, "module '%s': bad group_size in quant state", t.module);
                if (st == MSBNB_OK) st = take(&t, f, key, MSBNB_DTYPE_U8, pb, (void **)&t.packed);
                snprintf(key, sizeof key, "%s.weight.scales", t.module);
                if (st == MSBNB_OK) st = take(&t, f, key, MSBNB_DTYPE_F32, t.rows * gpr, (void **)&t.scales);
                snprintf(key, sizeof key, "%s.weight.mins", t.module);
                if (st == MSBNB_OK && !t.params.symmetric)
                    st = take(&t, f, key, MSBNB_DTYPE_F32, t.rows * gpr, (void **)&t.mins);
            } else {
                const cJSON *pt = cJSON_GetObjectItemCaseSensitive(j, "per_tensor");
                t.params.per_tensor = cJSON_IsTrue(pt);
                int64_t ns = t.params.per_tensor ? 1 : t.rows;
                st = take(&t, f, key, MSBNB_DTYPE_I8, n, (void **)&t.q8);
                snprintf(key, sizeof key, "%s.weight.scales", t.module);
                if (st == MSBNB_OK) st = take(&t, f, key, MSBNB_DTYPE_F32, ns, (void **)&t.scales);
                snprintf(key, sizeof key, "%s.weight.zero_points", t.module);
                if (st == MSBNB_OK && !t.params.symmetric)
                    st = take(&t, f, key, MSBNB_DTYPE_F32, ns, (void **)&t.mins);
            }
        }
        cJSON_Delete(j);
    } else {
        char scb[600];
        snprintf(scb, sizeof scb, "%s.SCB", t.module);
        msbnb_st_tensor_info wi;
        if (msbnb_st_find(f, key, &wi) != MSBNB_OK) {
            st = msbnb__fail(MSBNB_ERR_NOT_FOUND, "module '%s': no '%s' in the checkpoint", t.module, key);
        } else if (msbnb__st_has(f, scb)) {
            /* bitsandbytes Int8Params: I8 [rows, cols] + SCB (row absmax) + weight_format 0 */
            t.params = msbnb_qparams_default(MSBNB_QTYPE_INT8);
            t.bnb_layout = 1;
            t.orig_dtype = MSBNB_DTYPE_F16; /* bitsandbytes quantizes the float16 cast */
            if (wi.ndim != 2 || wi.dtype != MSBNB_DTYPE_I8 || wi.shape[0] <= 0 || wi.shape[1] <= 0)
                st = msbnb__fail(MSBNB_ERR_FORMAT, "module '%s': int8 weight must be I8 2-D", t.module);
            char wf[600];
            snprintf(wf, sizeof wf, "%s.weight_format", t.module);
            msbnb_st_tensor_info fi;
            if (st == MSBNB_OK && msbnb_st_find(f, wf, &fi) == MSBNB_OK &&
                (fi.dtype != MSBNB_DTYPE_U8 || fi.numel != 1 || *(const uint8_t *)fi.data != 0))
                st = msbnb__fail(MSBNB_ERR_UNSUPPORTED, "module '%s': weight_format other than 0 "
                                 "(row-major) is not supported", t.module);
            if (st == MSBNB_OK) {
                t.rows = wi.shape[0];
                t.cols = wi.shape[1];
                st = take(&t, f, key, MSBNB_DTYPE_I8, t.rows * t.cols, (void **)&t.q8);
            }
            if (st == MSBNB_OK) st = take(&t, f, scb, MSBNB_DTYPE_F32, t.rows, (void **)&t.scales);
        } else if (wi.ndim == 2 && (wi.dtype == MSBNB_DTYPE_F32 || wi.dtype == MSBNB_DTYPE_F16 ||
                                    wi.dtype == MSBNB_DTYPE_BF16)) {
            t.rows = wi.shape[0];
            t.cols = wi.shape[1];
            t.orig_dtype = wi.dtype;
            t.params = msbnb_qparams_default(wi.dtype == MSBNB_DTYPE_F32   ? MSBNB_QTYPE_F32
                                             : wi.dtype == MSBNB_DTYPE_F16 ? MSBNB_QTYPE_F16
                                                                           : MSBNB_QTYPE_BF16);
            st = take(&t, f, key, wi.dtype, wi.numel, &t.weight);
        } else {
            st = msbnb__fail(MSBNB_ERR_UNSUPPORTED, "module '%s': '%s' is %s with %d dims, not a "
                             "2-D float or quantized weight", t.module, key,
                             msbnb_dtype_name(wi.dtype), wi.ndim);
        }
    }
    if (st != MSBNB_OK) {
        msbnb_qtensor_clear(&t);
        return st;
    }
    *out = t;
    return MSBNB_OK;
}

msbnb_status msbnb__qtensor_dequant_range(const msbnb_qtensor *t, float *out, int64_t e0, int64_t e1) {
    int64_t cols = t->cols, r0 = e0 / cols, nr = (e1 - e0) / cols;
    switch (t->params.type) {
    case MSBNB_QTYPE_NF4:
    case MSBNB_QTYPE_FP4:
        return msbnb_dequantize_4bit(out, MSBNB_DTYPE_F32, t->packed + e0 / 2,
                                     t->absmax + e0 / t->params.block, e1 - e0, t->params.block,
                                     t->params.type, 1);
    case MSBNB_QTYPE_INT8:
        if (t->bnb_layout) return msbnb_int8_vectorwise_dequant(out, t->q8 + e0, t->scales + r0, nr, cols);
        if (t->params.per_tensor)
            return msbnb_dequantize_8bit(out, t->q8 + e0, t->scales, t->mins, nr, cols,
                                         t->params.symmetric, 1);
        return msbnb_dequantize_8bit(out, t->q8 + e0, t->scales + r0, t->mins ? t->mins + r0 : NULL,
                                     nr, cols, t->params.symmetric, 0);
    case MSBNB_QTYPE_INT4: {
        int64_t gpr = msbnb__ceil_div(cols, t->params.block);
        return msbnb_dequantize_int4(out, t->packed + e0 / 2, t->scales + r0 * gpr,
                                     t->mins ? t->mins + r0 * gpr : NULL, nr, cols, t->params.block,
                                     t->params.symmetric);
    }
    default:
        return msbnb_convert(out, MSBNB_DTYPE_F32,
                             (const char *)t->weight + (size_t)e0 * msbnb_dtype_size(t->orig_dtype),
                             t->orig_dtype, e1 - e0);
    }
}

msbnb_status msbnb_qtensor_dequantize(const msbnb_qtensor *t, float *out, int64_t cap, int nthreads) {
    MSBNB_CHECK_NULL(t);
    MSBNB_CHECK_NULL(out);
    if (t->rows <= 0 || t->cols <= 0 || !t->arena_)
        return msbnb__fail(MSBNB_ERR_STATE, "%s: qtensor is not loaded", __func__);
    int64_t n = t->rows * t->cols;
    if (cap < n)
        return msbnb__fail(MSBNB_ERR_BUFFER_TOO_SMALL, "%s: needs %lld floats, got %lld", __func__,
                           (long long)n, (long long)cap);
    if (t->params.type == MSBNB_QTYPE_NF4 || t->params.type == MSBNB_QTYPE_FP4)
        return msbnb_dequantize_4bit(out, MSBNB_DTYPE_F32, t->packed, t->absmax, n, t->params.block,
                                     t->params.type, nthreads);
    return msbnb__qtensor_dequant_range(t, out, 0, n);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

msbnb_status msbnb_checkpoint_modules(const msbnb_st_file_t *f, msbnb_module_fn fn, void *user) {
    MSBNB_CHECK_NULL(f);
    MSBNB_CHECK_NULL(fn);
    size_t n = msbnb_st_count(f), k = 0;
    const char **names = malloc((n ? n : 1) * sizeof *names);
    if (!names) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t i = 0; i < n; i++) {
        msbnb_st_tensor_info ti;
        msbnb_st_get(f, i, &ti);
        size_t l = strlen(ti.name);
        if (l > 7 && strcmp(ti.name + l - 7, ".weight") == 0) names[k++] = ti.name;
    }
    qsort(names, k, sizeof *names, cmp_str);
    msbnb_status st = MSBNB_OK;
    char mod[600], qs[700];
    for (size_t i = 0; i < k && st == MSBNB_OK; i++) {
        size_t l = strlen(names[i]) - 7;
        if (l >= sizeof mod) continue;
        memcpy(mod, names[i], l);
        mod[l] = 0;
        char scb[620];
        snprintf(scb, sizeof scb, "%s.SCB", mod);
        int q = msbnb__qstate_name(f, mod, qs, sizeof qs) != 0 || msbnb__st_has(f, scb);
        msbnb_st_tensor_info ti;
        msbnb_st_find(f, names[i], &ti);
        if (q || ti.ndim == 2) st = fn(user, mod, q);
    }
    free(names);
    return st;
}
