/* Parameter container: named, borrowed float tensors with trainable flags; freezing,
 * PEFT-style summary, gradient norm and clipping. */
#include "internal.h"
#include "msbnb/params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct msbnb_params {
    msbnb_param *items;
    int64_t n, cap;
};

msbnb_status msbnb_params_create(msbnb_params_t **out) {
    MSBNB_CHECK_NULL(out);
    *out = NULL;
    msbnb_params_t *p = calloc(1, sizeof *p);
    if (!p) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "msbnb_params_create: out of memory");
    *out = p;
    return MSBNB_OK;
}

void msbnb_params_free(msbnb_params_t *p) {
    if (!p) return;
    for (int64_t i = 0; i < p->n; i++) free((char *)p->items[i].name);
    free(p->items);
    free(p);
}

static int64_t find(const msbnb_params_t *p, const char *name) {
    for (int64_t i = 0; i < p->n; i++)
        if (strcmp(p->items[i].name, name) == 0) return i;
    return -1;
}

msbnb_status msbnb_params_add(msbnb_params_t *p, const char *name, float *data, float *grad,
                              int ndim, const int64_t *shape) {
    MSBNB_CHECK_NULL(p);
    MSBNB_CHECK_NULL(name);
    MSBNB_CHECK_NULL(shape);
    if (name[0] == '\0')
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "msbnb_params_add: empty name");
    if (ndim < 1 || ndim > MSBNB_PARAM_MAX_DIMS)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT,
                           "msbnb_params_add: '%s' has ndim %d, want 1..%d", name, ndim,
                           MSBNB_PARAM_MAX_DIMS);
    if (grad && !data)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT,
                           "msbnb_params_add: '%s' has a gradient but no float data", name);
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] <= 0)
            return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT,
                               "msbnb_params_add: '%s' dim %d is %lld (must be positive)", name,
                               d, (long long)shape[d]);
        if (!msbnb__mul_ok(numel, shape[d], &numel) || numel > INT64_MAX / 8)
            return msbnb__fail(MSBNB_ERR_OVERFLOW, "msbnb_params_add: '%s' is too large", name);
    }
    if (find(p, name) >= 0)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "msbnb_params_add: '%s' already present",
                           name);
    if (p->n == p->cap) {
        int64_t cap = p->cap ? p->cap * 2 : 16;
        msbnb_param *it = realloc(p->items, (size_t)cap * sizeof *it);
        if (!it) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "msbnb_params_add: out of memory");
        p->items = it;
        p->cap = cap;
    }
    char *nm = malloc(strlen(name) + 1);
    if (!nm) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "msbnb_params_add: out of memory");
    strcpy(nm, name);
    msbnb_param *e = &p->items[p->n++];
    memset(e, 0, sizeof *e);
    e->name = nm;
    e->data = data;
    e->grad = grad;
    e->numel = numel;
    e->ndim = ndim;
    for (int d = 0; d < ndim; d++) e->shape[d] = shape[d];
    e->trainable = data && grad;
    return MSBNB_OK;
}

int64_t msbnb_params_count(const msbnb_params_t *p) { return p ? p->n : 0; }

msbnb_status msbnb_params_get(const msbnb_params_t *p, int64_t i, msbnb_param *out) {
    MSBNB_CHECK_NULL(p);
    MSBNB_CHECK_NULL(out);
    if (i < 0 || i >= p->n)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "msbnb_params_get: index %lld not in [0, %lld)",
                           (long long)i, (long long)p->n);
    *out = p->items[i];
    return MSBNB_OK;
}

msbnb_status msbnb_params_find(const msbnb_params_t *p, const char *name, int64_t *index) {
    MSBNB_CHECK_NULL(p);
    MSBNB_CHECK_NULL(name);
    MSBNB_CHECK_NULL(index);
    int64_t i = find(p, name);
    *index = i;
    if (i < 0) return msbnb__fail(MSBNB_ERR_NOT_FOUND, "parameter '%s' not found", name);
    return MSBNB_OK;
}

msbnb_status msbnb_params_set_trainable(msbnb_params_t *p, const char *name, int trainable) {
    MSBNB_CHECK_NULL(p);
    MSBNB_CHECK_NULL(name);
    int64_t i = find(p, name);
    if (i < 0) return msbnb__fail(MSBNB_ERR_NOT_FOUND, "parameter '%s' not found", name);
    msbnb_param *e = &p->items[i];
    if (trainable && !(e->data && e->grad))
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT,
                           "parameter '%s' has no float data or gradient and cannot train", name);
    e->trainable = trainable != 0;
    return MSBNB_OK;
}

msbnb_status msbnb_params_set_trainable_matching(msbnb_params_t *p, const char *substr,
                                                 int trainable, int64_t *n_matched) {
    MSBNB_CHECK_NULL(p);
    MSBNB_CHECK_NULL(substr);
    int64_t m = 0;
    for (int64_t i = 0; i < p->n; i++) {
        msbnb_param *e = &p->items[i];
        if (!strstr(e->name, substr)) continue;
        m++;
        e->trainable = trainable && e->data && e->grad;
    }
    if (n_matched) *n_matched = m;
    return MSBNB_OK;
}

msbnb_status msbnb_params_freeze_except_lora(msbnb_params_t *p, int64_t *n_trainable) {
    MSBNB_CHECK_NULL(p);
    int64_t t = 0;
    for (int64_t i = 0; i < p->n; i++) {
        msbnb_param *e = &p->items[i];
        e->trainable = strstr(e->name, "lora_") != NULL && e->data && e->grad;
        t += e->trainable;
    }
    if (n_trainable) *n_trainable = t;
    return MSBNB_OK;
}

msbnb_status msbnb_params_totals(const msbnb_params_t *p, int64_t *trainable, int64_t *total) {
    MSBNB_CHECK_NULL(p);
    int64_t t = 0, a = 0;
    for (int64_t i = 0; i < p->n; i++) {
        a += p->items[i].numel;
        if (p->items[i].trainable) t += p->items[i].numel;
    }
    if (trainable) *trainable = t;
    if (total) *total = a;
    return MSBNB_OK;
}

/* 1234567 -> "1,234,567" (Python's format spec ",d"). */
static void commas(char *out, int64_t v) {
    char digits[32];
    int n = snprintf(digits, sizeof digits, "%lld", (long long)v);
    int o = 0;
    for (int i = 0; i < n; i++) {
        out[o++] = digits[i];
        int left = n - 1 - i;
        if (left > 0 && left % 3 == 0 && digits[i] != '-') out[o++] = ',';
    }
    out[o] = '\0';
}

msbnb_status msbnb_params_summary(const msbnb_params_t *p, char *buf, size_t cap) {
    MSBNB_CHECK_NULL(p);
    MSBNB_CHECK_NULL(buf);
    MSBNB_CHECK_POS(cap);
    int64_t t, a;
    MSBNB_TRY(msbnb_params_totals(p, &t, &a));
    char ts[40], as[40];
    commas(ts, t);
    commas(as, a);
    /* PEFT PeftModel.print_trainable_parameters */
    int n = snprintf(buf, cap, "trainable params: %s || all params: %s || trainable%%: %.4f", ts,
                     as, a > 0 ? 100.0 * (double)t / (double)a : 0.0);
    if (n < 0 || (size_t)n >= cap)
        return msbnb__fail(MSBNB_ERR_BUFFER_TOO_SMALL, "msbnb_params_summary: needs %d bytes", n + 1);
    return MSBNB_OK;
}

msbnb_status msbnb_params_zero_grad(msbnb_params_t *p) {
    MSBNB_CHECK_NULL(p);
    for (int64_t i = 0; i < p->n; i++)
        if (p->items[i].trainable) memset(p->items[i].grad, 0, (size_t)p->items[i].numel * sizeof(float));
    return MSBNB_OK;
}

msbnb_status msbnb_params_grad_norm(const msbnb_params_t *p, double *norm) {
    MSBNB_CHECK_NULL(p);
    MSBNB_CHECK_NULL(norm);
    double s = 0;
    for (int64_t i = 0; i < p->n; i++) {
        const msbnb_param *e = &p->items[i];
        if (!e->trainable) continue;
        for (int64_t k = 0; k < e->numel; k++) s += (double)e->grad[k] * e->grad[k];
    }
    *norm = sqrt(s);
    return MSBNB_OK;
}

msbnb_status msbnb_params_clip_grad_norm(msbnb_params_t *p, double max_norm, double *norm_before) {
    MSBNB_CHECK_NULL(p);
    if (!(max_norm > 0) || !isfinite(max_norm))
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT,
                           "msbnb_params_clip_grad_norm: max_norm must be positive and finite (got %g)",
                           max_norm);
    double norm;
    MSBNB_TRY(msbnb_params_grad_norm(p, &norm));
    if (norm_before) *norm_before = norm;
    if (!isfinite(norm))
        return msbnb__fail(MSBNB_ERR_NON_FINITE, "msbnb_params_clip_grad_norm: gradient norm is %g",
                           norm);
    if (norm <= max_norm) return MSBNB_OK;
    float c = (float)(max_norm / (norm + 1e-6)); /* torch clip_grad_norm_ */
    for (int64_t i = 0; i < p->n; i++) {
        msbnb_param *e = &p->items[i];
        if (!e->trainable) continue;
        for (int64_t k = 0; k < e->numel; k++) e->grad[k] *= c;
    }
    return MSBNB_OK;
}
