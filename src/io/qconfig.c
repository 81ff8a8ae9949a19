/* Quantization configs: defaults (transformers' BitsAndBytesConfig), module selection,
 * and the config.json `quantization_config` block in both directions. */
#include "msbnb/qconfig.h"

#include "internal.h"
#include "io_internal.h"
#include "qconfig_internal.h"

#include <cjson/cJSON.h>
#include <fnmatch.h>
#include <stdio.h>
#include <string.h>

msbnb_qconfig msbnb_int8_config_default(void) {
    msbnb_qconfig c;
    memset(&c, 0, sizeof c);
    c.format = msbnb_qparams_default(MSBNB_QTYPE_INT8);
    c.format.symmetric = 1;
    c.llm_int8_threshold = 6.0f; /* BitsAndBytesConfig.llm_int8_threshold */
    c.compute_dtype = MSBNB_DTYPE_F32;
    c.skip_lm_head = 1;
    return c;
}

msbnb_qconfig msbnb_int4_config_default(msbnb_qtype type) {
    msbnb_qconfig c = msbnb_int8_config_default();
    msbnb_qtype t = (type == MSBNB_QTYPE_FP4 || type == MSBNB_QTYPE_INT4) ? type : MSBNB_QTYPE_NF4;
    c.format = msbnb_qparams_default(t);
    if (t == MSBNB_QTYPE_NF4) c.format.double_quant = 1; /* QLoRA recipe: NF4 + DQ */
    if (t == MSBNB_QTYPE_FP4) c.format.double_quant = 0;
    if (t == MSBNB_QTYPE_INT4) c.format.symmetric = 1;
    c.format.type = type;
    return c;
}

static msbnb_status check_patterns(const char (*p)[MSBNB_QCONFIG_PATTERN_LEN], int n, const char *what) {
    if (n < 0 || n > MSBNB_QCONFIG_MAX_PATTERNS)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "qconfig: %d %s patterns (at most %d)", n,
                           what, MSBNB_QCONFIG_MAX_PATTERNS);
    for (int i = 0; i < n; i++)
        if (!p[i][0] || !memchr(p[i], 0, MSBNB_QCONFIG_PATTERN_LEN))
            return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "qconfig: %s pattern %d is empty or "
                               "not terminated", what, i);
    return MSBNB_OK;
}

msbnb_status msbnb_qconfig_validate(const msbnb_qconfig *c) {
    MSBNB_CHECK_NULL(c);
    msbnb_qtype t = c->format.type;
    if (t != MSBNB_QTYPE_INT8 && t != MSBNB_QTYPE_INT4 && t != MSBNB_QTYPE_NF4 && t != MSBNB_QTYPE_FP4)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT,
                           "qconfig: format '%s' cannot quantize a model (use int8, int4, nf4 or fp4)",
                           msbnb_qtype_name(t) ? msbnb_qtype_name(t) : "?");
    MSBNB_TRY(msbnb_qparams_validate(&c->format));
    if (t == MSBNB_QTYPE_INT8 && c->format.per_tensor && c->format.symmetric)
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "qconfig: symmetric int8 is bitsandbytes' "
                           "per-row LLM.int8 format; per-tensor scales need asymmetric int8");
    if (!(c->llm_int8_threshold >= 0.0f) || c->llm_int8_threshold > 1e30f)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "qconfig: llm_int8_threshold must be a "
                           "finite value >= 0");
    if (c->compute_dtype != MSBNB_DTYPE_F32 && c->compute_dtype != MSBNB_DTYPE_F16 &&
        c->compute_dtype != MSBNB_DTYPE_BF16)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "qconfig: compute dtype must be F32, F16 or BF16");
    MSBNB_TRY(check_patterns(c->skip, c->n_skip, "skip"));
    MSBNB_TRY(check_patterns(c->target, c->n_target, "target"));
    return MSBNB_OK;
}

static msbnb_status add_pat(char (*p)[MSBNB_QCONFIG_PATTERN_LEN], int *n, const char *pat,
                            const char *what) {
    if (!pat || !pat[0])
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "qconfig: empty %s pattern", what);
    if (strlen(pat) >= MSBNB_QCONFIG_PATTERN_LEN)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "qconfig: %s pattern '%.40s...' longer "
                           "than %d characters", what, pat, MSBNB_QCONFIG_PATTERN_LEN - 1);
    if (*n < 0 || *n >= MSBNB_QCONFIG_MAX_PATTERNS)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "qconfig: more than %d %s patterns",
                           MSBNB_QCONFIG_MAX_PATTERNS, what);
    snprintf(p[*n], MSBNB_QCONFIG_PATTERN_LEN, "%s", pat);
    (*n)++;
    return MSBNB_OK;
}

msbnb_status msbnb_qconfig_add_skip(msbnb_qconfig *c, const char *pattern) {
    MSBNB_CHECK_NULL(c);
    return add_pat(c->skip, &c->n_skip, pattern, "skip");
}

msbnb_status msbnb_qconfig_add_target(msbnb_qconfig *c, const char *pattern) {
    MSBNB_CHECK_NULL(c);
    return add_pat(c->target, &c->n_target, pattern, "target");
}

int msbnb_module_matches(const char *pattern, const char *module) {
    if (!pattern || !module || !pattern[0]) return 0;
    if (strpbrk(pattern, "*?[")) return fnmatch(pattern, module, 0) == 0;
    size_t pl = strlen(pattern), ml = strlen(module);
    for (const char *s = strstr(module, pattern); s; s = strstr(s + 1, pattern)) {
        size_t at = (size_t)(s - module);
        int left = at == 0 || module[at - 1] == '.';
        int right = at + pl == ml || module[at + pl] == '.';
        if (left && right) return 1;
    }
    return 0;
}

/* Embeddings and norms are never quantized (bitsandbytes replaces nn.Linear only). */
static int is_embedding_or_norm(const char *module) {
    const char *p = module;
    while (*p) {
        const char *e = strchr(p, '.');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char comp[128];
        size_t k = n < sizeof comp - 1 ? n : sizeof comp - 1;
        for (size_t i = 0; i < k; i++) comp[i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] + 32 : p[i]);
        comp[k] = 0;
        if (strstr(comp, "embed") || strstr(comp, "norm") || strcmp(comp, "wte") == 0 ||
            strcmp(comp, "wpe") == 0)
            return 1;
        p += n;
        if (*p == '.') p++;
    }
    return 0;
}

int msbnb__linear_candidate(const char *tensor_name, msbnb_dtype dtype, int ndim, char *module,
                            size_t cap) {
    size_t n = strlen(tensor_name);
    if (ndim != 2 || n <= 7 || strcmp(tensor_name + n - 7, ".weight") != 0) return 0;
    if (dtype != MSBNB_DTYPE_F32 && dtype != MSBNB_DTYPE_F16 && dtype != MSBNB_DTYPE_BF16) return 0;
    if (n - 7 >= cap) return 0;
    memcpy(module, tensor_name, n - 7);
    module[n - 7] = 0;
    return !is_embedding_or_norm(module);
}

int msbnb_qconfig_selects(const msbnb_qconfig *c, const char *tensor_name, msbnb_dtype dtype,
                          const int64_t *shape, int ndim) {
    if (!c || !tensor_name || (ndim > 0 && !shape)) return 0;
    char module[1024];
    if (!msbnb__linear_candidate(tensor_name, dtype, ndim, module, sizeof module)) return 0;
    if (shape[0] <= 0 || shape[1] <= 0) return 0;
    if (c->skip_lm_head && msbnb_module_matches("lm_head", module)) return 0;
    int n_skip = c->n_skip < MSBNB_QCONFIG_MAX_PATTERNS ? c->n_skip : MSBNB_QCONFIG_MAX_PATTERNS;
    int n_target = c->n_target < MSBNB_QCONFIG_MAX_PATTERNS ? c->n_target : MSBNB_QCONFIG_MAX_PATTERNS;
    for (int i = 0; i < n_skip; i++)
        if (msbnb_module_matches(c->skip[i], module)) return 0;
    if (n_target <= 0) return 1;
    for (int i = 0; i < n_target; i++)
        if (msbnb_module_matches(c->target[i], module)) return 1;
    return 0;
}

/* ---------------------------------------------------------------- JSON */

static const char *dtype_torch_name(msbnb_dtype d) {
    switch (d) {
    case MSBNB_DTYPE_F16: return "float16";
    case MSBNB_DTYPE_BF16: return "bfloat16";
    default: return "float32";
    }
}

static msbnb_status parse_dtype_name(const char *s, msbnb_dtype *out) {
    const char *p = strncmp(s, "torch.", 6) == 0 ? s + 6 : s;
    if (!strcmp(p, "float32") || !strcmp(p, "float")) *out = MSBNB_DTYPE_F32;
    else if (!strcmp(p, "float16") || !strcmp(p, "half")) *out = MSBNB_DTYPE_F16;
    else if (!strcmp(p, "bfloat16")) *out = MSBNB_DTYPE_BF16;
    else return msbnb__fail(MSBNB_ERR_FORMAT, "quantization_config: unknown dtype '%s'", s);
    return MSBNB_OK;
}

static void put_list(msbnb__sbuf *b, const char (*p)[MSBNB_QCONFIG_PATTERN_LEN], int n,
                     const char *const *extra, int n_extra) {
    if (n + n_extra == 0) {
        msbnb__sb_puts(b, "null");
        return;
    }
    msbnb__sb_puts(b, "[");
    for (int i = 0; i < n; i++) {
        if (i) msbnb__sb_puts(b, ", ");
        msbnb__sb_json_str(b, p[i]);
    }
    for (int i = 0; i < n_extra; i++) {
        if (n + i) msbnb__sb_puts(b, ", ");
        msbnb__sb_json_str(b, extra[i]);
    }
    msbnb__sb_puts(b, "]");
}

int msbnb__qconfig_is_bnb(const msbnb_qconfig *c) {
    return c->format.type == MSBNB_QTYPE_NF4 || c->format.type == MSBNB_QTYPE_FP4 ||
           (c->format.type == MSBNB_QTYPE_INT8 && c->format.symmetric && !c->format.per_tensor);
}

msbnb_status msbnb__qconfig_json(const msbnb_qconfig *c, const char *const *extra_skip,
                                 int n_extra, msbnb__sbuf *b) {
    MSBNB_TRY(msbnb_qconfig_validate(c));
    char thr[40];
    msbnb__py_float_repr(c->llm_int8_threshold, thr, sizeof thr);
    const msbnb_qparams *f = &c->format;
    if (msbnb__qconfig_is_bnb(c)) {
        /* transformers' BitsAndBytesConfig.to_dict(), keys sorted as save_pretrained does. */
        int four = f->type != MSBNB_QTYPE_INT8;
        const char *tf = four ? "true" : "false", *ef = four ? "false" : "true";
        msbnb__sb_printf(b, "{\"_load_in_4bit\": %s, \"_load_in_8bit\": %s, "
                         "\"bnb_4bit_compute_dtype\": \"%s\", \"bnb_4bit_quant_storage\": \"uint8\", "
                         "\"bnb_4bit_quant_type\": \"%s\", \"bnb_4bit_use_double_quant\": %s, "
                         "\"llm_int8_enable_fp32_cpu_offload\": false, "
                         "\"llm_int8_has_fp16_weight\": false, \"llm_int8_skip_modules\": ",
                         tf, ef, dtype_torch_name(c->compute_dtype),
                         f->type == MSBNB_QTYPE_NF4 ? "nf4" : "fp4",
                         four && f->double_quant ? "true" : "false");
        put_list(b, c->skip, c->n_skip, extra_skip, n_extra);
        msbnb__sb_printf(b, ", \"llm_int8_threshold\": %s, \"load_in_4bit\": %s, "
                         "\"load_in_8bit\": %s, \"quant_method\": \"bitsandbytes\"}", thr, tf, ef);
    } else {
        msbnb__sb_printf(b, "{\"compute_dtype\": \"%s\", ", dtype_torch_name(c->compute_dtype));
        if (f->type == MSBNB_QTYPE_INT4) msbnb__sb_printf(b, "\"group_size\": %lld, ", (long long)f->block);
        if (f->type == MSBNB_QTYPE_INT8)
            msbnb__sb_printf(b, "\"per_tensor\": %s, ", f->per_tensor ? "true" : "false");
        msbnb__sb_printf(b, "\"quant_method\": \"msbnb\", \"quant_type\": \"%s\", \"skip_modules\": ",
                         msbnb_qtype_name(f->type));
        put_list(b, c->skip, c->n_skip, extra_skip, n_extra);
        msbnb__sb_printf(b, ", \"symmetric\": %s, \"target_modules\": ", f->symmetric ? "true" : "false");
        put_list(b, c->target, c->n_target, NULL, 0);
        msbnb__sb_puts(b, "}");
    }
    if (b->err) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    return MSBNB_OK;
}

msbnb_status msbnb_qconfig_to_json(const msbnb_qconfig *c, char *buf, size_t cap, size_t *len) {
    MSBNB_CHECK_NULL(c);
    MSBNB_CHECK_NULL(len);
    if (cap && !buf) MSBNB_CHECK_NULL(buf);
    msbnb__sbuf b = {0};
    msbnb_status st = msbnb__qconfig_json(c, NULL, 0, &b);
    if (st != MSBNB_OK) {
        msbnb__sb_free(&b);
        return st;
    }
    *len = b.len;
    if (b.len + 1 > cap) {
        msbnb__sb_free(&b);
        return msbnb__fail(MSBNB_ERR_BUFFER_TOO_SMALL, "%s: needs %zu bytes, got %zu", __func__,
                           (size_t)(*len + 1), cap);
    }
    memcpy(buf, b.s, b.len + 1);
    msbnb__sb_free(&b);
    return MSBNB_OK;
}

static int jbool(const cJSON *o, const char *k, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static msbnb_status read_list(const cJSON *o, const char *k, msbnb_qconfig *c, int skip) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v || cJSON_IsNull(v)) return MSBNB_OK;
    if (cJSON_IsString(v)) /* transformers accepts a single module name too */
        return skip ? msbnb_qconfig_add_skip(c, v->valuestring) : msbnb_qconfig_add_target(c, v->valuestring);
    if (!cJSON_IsArray(v))
        return msbnb__fail(MSBNB_ERR_FORMAT, "quantization_config: '%s' must be a list of strings", k);
    for (const cJSON *e = v->child; e; e = e->next) {
        if (!cJSON_IsString(e))
            return msbnb__fail(MSBNB_ERR_FORMAT, "quantization_config: '%s' must be a list of strings", k);
        msbnb_status st = skip ? msbnb_qconfig_add_skip(c, e->valuestring)
                               : msbnb_qconfig_add_target(c, e->valuestring);
        if (st != MSBNB_OK) return msbnb__fail(MSBNB_ERR_FORMAT, "quantization_config: %s", msbnb_last_error());
    }
    return MSBNB_OK;
}

static msbnb_status from_obj(msbnb_qconfig *out, const cJSON *q) {
    const cJSON *qm = cJSON_GetObjectItemCaseSensitive(q, "quant_method");
    const char *method = cJSON_IsString(qm) ? qm->valuestring : "bitsandbytes";
    msbnb_qconfig c;
    if (strcmp(method, "bitsandbytes") == 0) {
        int l4 = jbool(q, "load_in_4bit", jbool(q, "_load_in_4bit", 0));
        int l8 = jbool(q, "load_in_8bit", jbool(q, "_load_in_8bit", 0));
        if (l4 == l8)
            return msbnb__fail(MSBNB_ERR_FORMAT, "quantization_config: exactly one of load_in_4bit "
                               "and load_in_8bit must be true");
        if (l4) {
            const cJSON *qt = cJSON_GetObjectItemCaseSensitive(q, "bnb_4bit_quant_type");
            const char *t = cJSON_IsString(qt) ? qt->valuestring : "fp4"; /* transformers' default */
            if (strcmp(t, "nf4") && strcmp(t, "fp4"))
                return msbnb__fail(MSBNB_ERR_FORMAT, "quantization_config: unknown bnb_4bit_quant_type '%s'", t);
            c = msbnb_int4_config_default(t[0] == 'n' ? MSBNB_QTYPE_NF4 : MSBNB_QTYPE_FP4);
            c.format.double_quant = jbool(q, "bnb_4bit_use_double_quant", 0);
            const cJSON *cd = cJSON_GetObjectItemCaseSensitive(q, "bnb_4bit_compute_dtype");
            if (cJSON_IsString(cd)) MSBNB_TRY(parse_dtype_name(cd->valuestring, &c.compute_dtype));
        } else {
            c = msbnb_int8_config_default();
        }
        const cJSON *th = cJSON_GetObjectItemCaseSensitive(q, "llm_int8_threshold");
        if (cJSON_IsNumber(th)) {
            /* bounded as the float it becomes, as msbnb_qconfig_validate checks it: the double
             * 1e30 rounds up to the float 1.0000000150474662e30, which must parse back
             * (found by fuzz_qconfig); the double bound first keeps the conversion defined */
            if (!(th->valuedouble >= 0 && th->valuedouble <= 2e30) || !((float)th->valuedouble <= 1e30f))
                return msbnb__fail(MSBNB_ERR_FORMAT, "quantization_config: llm_int8_threshold must be "
                                   "a finite number >= 0");
            c.llm_int8_threshold = (float)th->valuedouble;
        }
        MSBNB_TRY(read_list(q, "llm_int8_skip_modules", &c, 1));
    } else if (strcmp(method, "msbnb") == 0) {
        const cJSON *qt = cJSON_GetObjectItemCaseSensitive(q, "quant_type");
        msbnb_qtype t;
        if (!cJSON_IsString(qt) || msbnb_qtype_from_name(qt->valuestring, &t) != MSBNB_OK)
            return msbnb__fail(MSBNB_ERR_FORMAT, "quantization_config: missing or unknown quant_type");
        c = t == MSBNB_QTYPE_INT8 ? msbnb_int8_config_default() : msbnb_int4_config_default(t);
        c.format.symmetric = jbool(q, "symmetric", c.format.symmetric);
        c.format.per_tensor = jbool(q, "per_tensor", 0);
        c.format.double_quant = jbool(q, "double_quant", c.format.double_quant);
        const cJSON *gs = cJSON_GetObjectItemCaseSensitive(q, "group_size");
        if (!gs) gs = cJSON_GetObjectItemCaseSensitive(q, "blocksize");
        if (cJSON_IsNumber(gs)) {
            if (!(gs->valuedouble >= 1 && gs->valuedouble <= 1 << 30) ||
                gs->valuedouble != (double)(int64_t)gs->valuedouble)
                return msbnb__fail(MSBNB_ERR_FORMAT, "quantization_config: bad group/block size");
            c.format.block = (int64_t)gs->valuedouble;
        }
        const cJSON *cd = cJSON_GetObjectItemCaseSensitive(q, "compute_dtype");
        if (cJSON_IsString(cd)) MSBNB_TRY(parse_dtype_name(cd->valuestring, &c.compute_dtype));
        MSBNB_TRY(read_list(q, "skip_modules", &c, 1));
        MSBNB_TRY(read_list(q, "target_modules", &c, 0));
    } else {
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "quantization_config: quant_method '%s' is not "
                           "supported (bitsandbytes or msbnb)", method);
    }
    msbnb_status st = msbnb_qconfig_validate(&c);
    if (st != MSBNB_OK) return msbnb__fail(MSBNB_ERR_FORMAT, "quantization_config: %s", msbnb_last_error());
    *out = c;
    return MSBNB_OK;
}

msbnb_status msbnb_qconfig_from_json(msbnb_qconfig *out, const char *json, size_t len) {
    MSBNB_CHECK_NULL(out);
    MSBNB_CHECK_NULL(json);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return msbnb__fail(MSBNB_ERR_FORMAT, "config: not a JSON object");
    }
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    if (!q && (cJSON_GetObjectItemCaseSensitive(root, "quant_method") ||
               cJSON_GetObjectItemCaseSensitive(root, "load_in_4bit") ||
               cJSON_GetObjectItemCaseSensitive(root, "load_in_8bit")))
        q = root;
    msbnb_status st;
    if (!q) st = msbnb__fail(MSBNB_ERR_NOT_FOUND, "config: no quantization_config");
    else if (!cJSON_IsObject(q)) st = msbnb__fail(MSBNB_ERR_FORMAT, "config: quantization_config is not an object");
    else st = from_obj(out, q);
    cJSON_Delete(root);
    return st;
}
