/* Format registry: names, default parameters, validation and storage cost. */
#include "internal.h"
#include "msbnb/quant.h"

#include <string.h>

static const char *const k_names[MSBNB_QTYPE_COUNT_] = {
    [MSBNB_QTYPE_F32] = "f32", [MSBNB_QTYPE_BF16] = "bf16", [MSBNB_QTYPE_F16] = "f16",
    [MSBNB_QTYPE_INT8] = "int8", [MSBNB_QTYPE_INT4] = "int4", [MSBNB_QTYPE_NF4] = "nf4",
    [MSBNB_QTYPE_FP4] = "fp4", [MSBNB_QTYPE_Q8_DYNAMIC] = "q8dyn",
};

const char *msbnb_qtype_name(msbnb_qtype t) {
    if ((unsigned)t >= MSBNB_QTYPE_COUNT_) return NULL;
    return k_names[t];
}

msbnb_status msbnb_qtype_from_name(const char *name, msbnb_qtype *out) {
    MSBNB_CHECK_NULL(name);
    MSBNB_CHECK_NULL(out);
    for (int i = 0; i < MSBNB_QTYPE_COUNT_; i++) {
        if (strcmp(name, k_names[i]) == 0) {
            *out = (msbnb_qtype)i;
            return MSBNB_OK;
        }
    }
    return msbnb__fail(MSBNB_ERR_UNSUPPORTED,
                       "unknown format '%.32s' (f32, bf16, f16, int8, int4, nf4, fp4, q8dyn)", name);
}

msbnb_qparams msbnb_qparams_default(msbnb_qtype type) {
    msbnb_qparams p = {type, 1, 0, 0, 0};
    switch (type) {
    case MSBNB_QTYPE_INT4: p.block = 128; break;
    case MSBNB_QTYPE_NF4:
    case MSBNB_QTYPE_FP4: p.block = 64; break; /* transformers BitsAndBytesConfig default */
    case MSBNB_QTYPE_Q8_DYNAMIC: p.block = 256; break;
    default: break;
    }
    return p;
}

msbnb_status msbnb_qparams_validate(const msbnb_qparams *p) {
    MSBNB_CHECK_NULL(p);
    if ((unsigned)p->type >= MSBNB_QTYPE_COUNT_)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "unknown format id %d", (int)p->type);
    int64_t b = p->block;
    switch (p->type) {
    case MSBNB_QTYPE_INT4:
        if (b < 2 || (b & 1))
            return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "int4 group size %lld must be even and >= 2",
                               (long long)b);
        break;
    case MSBNB_QTYPE_NF4:
    case MSBNB_QTYPE_FP4:
    case MSBNB_QTYPE_Q8_DYNAMIC:
        if (b < 32 || b > 4096 || (b & (b - 1)))
            return msbnb__fail(MSBNB_ERR_UNSUPPORTED,
                               "%s block size %lld is not a power of two in [32, 4096]",
                               k_names[p->type], (long long)b);
        break;
    default: break;
    }
    if (p->double_quant && p->type != MSBNB_QTYPE_NF4 && p->type != MSBNB_QTYPE_FP4)
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "double quantization applies to nf4/fp4 only");
    return MSBNB_OK;
}

msbnb_status msbnb_qparams_storage(const msbnb_qparams *p, int64_t rows, int64_t cols,
                                   int64_t *bytes, double *bits_per_weight) {
    MSBNB_TRY(msbnb_qparams_validate(p));
    MSBNB_CHECK_POS(rows);
    MSBNB_CHECK_POS(cols);
    int64_t n;
    if (!msbnb__mul_ok(rows, cols, &n) || n > INT64_MAX / 8)
        return msbnb__fail(MSBNB_ERR_OVERFLOW, "storage: %lld x %lld overflows", (long long)rows,
                           (long long)cols);
    int64_t total = 0, nb;
    switch (p->type) {
    case MSBNB_QTYPE_F32: total = 4 * n; break;
    case MSBNB_QTYPE_BF16:
    case MSBNB_QTYPE_F16: total = 2 * n; break;
    case MSBNB_QTYPE_INT8: {
        int64_t ns = p->per_tensor ? 1 : rows;
        total = n + ns * 4 * (p->symmetric ? 1 : 2);
        break;
    }
    case MSBNB_QTYPE_INT4: {
        int64_t groups = rows * msbnb__ceil_div(cols, p->block);
        total = (n + 1) / 2 + groups * 4 * (p->symmetric ? 1 : 2);
        break;
    }
    case MSBNB_QTYPE_NF4:
    case MSBNB_QTYPE_FP4:
        nb = msbnb__ceil_div(n, p->block);
        total = (n + 1) / 2 + (p->double_quant ? nb + msbnb__ceil_div(nb, MSBNB_NESTED_BLOCKSIZE) * 4 + 4
                                               : nb * 4);
        break;
    case MSBNB_QTYPE_Q8_DYNAMIC:
        total = n + msbnb__ceil_div(n, p->block) * 4;
        break;
    default: break;
    }
    if (bytes) *bytes = total;
    if (bits_per_weight) *bits_per_weight = 8.0 * (double)total / (double)n;
    return MSBNB_OK;
}
