/* Quantized checkpoint weights into linear layers (msbnb/linear.h), from their stored
 * parts: no requantization, so a layer computes with exactly the weights bitsandbytes
 * (or msbnb) saved. */
#include "msbnb/convert.h"

#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

msbnb_status msbnb_qtensor_to_linear(msbnb_linear_t **out, const msbnb_qtensor *t, const float *bias) {
    MSBNB_CHECK_NULL(out);
    MSBNB_CHECK_NULL(t);
    *out = NULL;
    if (t->rows <= 0 || t->cols <= 0 || !t->arena_)
        return msbnb__fail(MSBNB_ERR_STATE, "%s: qtensor is not loaded", __func__);
    int64_t K = t->cols, N = t->rows;
    const msbnb_qparams *p = &t->params;
    switch (p->type) {
    case MSBNB_QTYPE_NF4:
    case MSBNB_QTYPE_FP4:
        return msbnb_linear_create_4bit_from_parts(out, K, N, p, t->packed, t->absmax, t->qabsmax,
                                                   t->nested_absmax, t->nested_offset, bias);
    case MSBNB_QTYPE_INT8:
        if (t->bnb_layout) /* LLM.int8: CB + SCB */
            return msbnb_linear_create_int8_from_parts(out, K, N, t->q8, t->scales, bias);
        /* msbnb's layout (asymmetric, per-tensor, or symmetric with a scale per row):
         * (q - zero) * scale, exactly as msbnb_qtensor_dequantize computes it */
        return msbnb_linear_create_int8_scaled_from_parts(out, K, N, t->q8, t->scales,
                                                         p->symmetric ? NULL : t->mins, p->per_tensor, bias);
    case MSBNB_QTYPE_INT4:
        return msbnb_linear_create_int4_from_parts(out, K, N, p, t->packed, t->scales, t->mins, bias);
    case MSBNB_QTYPE_F32:
    case MSBNB_QTYPE_F16:
    case MSBNB_QTYPE_BF16: {
        int64_t n = N * K;
        float *w = msbnb__alloc((size_t)n * sizeof(float));
        if (!w) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "module '%s': out of memory", t->module);
        msbnb_status st = msbnb_convert(w, MSBNB_DTYPE_F32, t->weight, t->orig_dtype, n);
        msbnb_qparams fmt = msbnb_qparams_default(p->type);
        if (st == MSBNB_OK) st = msbnb_linear_create(out, K, N, w, bias, p->type == MSBNB_QTYPE_F32 ? NULL : &fmt);
        msbnb__free(w);
        return st;
    }
    default:
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "module '%s': format %d has no layer", t->module,
                           (int)p->type);
    }
}

msbnb_status msbnb_checkpoint_load_linear(msbnb_linear_t **out, const msbnb_st_file_t *f,
                                          const char *module) {
    MSBNB_CHECK_NULL(out);
    MSBNB_CHECK_NULL(f);
    MSBNB_CHECK_NULL(module);
    *out = NULL;
    msbnb_qtensor t;
    MSBNB_TRY(msbnb_qtensor_load(&t, f, module));
    char name[300];
    snprintf(name, sizeof name, "%s.bias", t.module);
    msbnb_st_tensor_info bi;
    float *bias = NULL;
    msbnb_status st = MSBNB_OK;
    if (msbnb_st_find(f, name, &bi) == MSBNB_OK) {
        if (bi.ndim != 1 || bi.numel != t.rows ||
            (bi.dtype != MSBNB_DTYPE_F32 && bi.dtype != MSBNB_DTYPE_F16 && bi.dtype != MSBNB_DTYPE_BF16))
            st = msbnb__fail(MSBNB_ERR_FORMAT, "module '%s': bias '%s' must be a float vector of %lld",
                             t.module, name, (long long)t.rows);
        else if (!(bias = msbnb__alloc((size_t)t.rows * sizeof(float))))
            st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
        else {
            /* decode from an aligned copy: safetensors data may sit at any offset */
            memcpy(bias, bi.data, (size_t)bi.nbytes);
            if (bi.dtype != MSBNB_DTYPE_F32) {
                uint16_t *h = malloc((size_t)bi.nbytes);
                if (!h) st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
                else {
                    memcpy(h, bi.data, (size_t)bi.nbytes);
                    st = msbnb_convert(bias, MSBNB_DTYPE_F32, h, bi.dtype, t.rows);
                    free(h);
                }
            }
        }
    }
    if (st == MSBNB_OK) st = msbnb_qtensor_to_linear(out, &t, bias);
    msbnb__free(bias);
    msbnb_qtensor_clear(&t);
    return st;
}
