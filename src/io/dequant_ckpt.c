/* Whole-checkpoint dequantization: every quantized module of a bitsandbytes or msbnb
 * checkpoint becomes <m>.weight in float again; its parts (absmax, quant maps, quant
 * state, SCB, ...) are dropped; every other tensor is copied. */
#include "ckpt_internal.h"
#include "internal.h"
#include "qtensor_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Suffixes of the parts a quantized module stores beside <m>.weight. */
static const char *const PARTS[] = {".weight.absmax", ".weight.quant_map", ".weight.nested_absmax",
                                    ".weight.nested_quant_map", ".SCB", ".weight_format",
                                    ".weight.scales", ".weight.mins", ".weight.zero_points"};

static int ends_with(const char *s, size_t l, const char *suf, size_t *prefix) {
    size_t b = strlen(suf);
    if (l <= b || strcmp(s + l - b, suf) != 0) return 0;
    *prefix = l - b;
    return 1;
}

/* Whether module (first ml bytes of name) is quantized in f. */
static int quantized_module(const msbnb_st_file_t *f, const char *name, size_t ml) {
    char mod[600], qs[700];
    if (ml >= sizeof mod) return 0;
    memcpy(mod, name, ml);
    mod[ml] = 0;
    char scb[620];
    snprintf(scb, sizeof scb, "%s.SCB", mod);
    return msbnb__qstate_name(f, mod, qs, sizeof qs) != 0 || msbnb__st_has(f, scb);
}

int msbnb__ckpt_classify(const msbnb_st_file_t *f, const char *name, size_t *module_len) {
    size_t l = strlen(name), p = 0;
    const char *qs = strstr(name, ".weight.quant_state.");
    int r = 0;
    if (qs && quantized_module(f, name, (size_t)(qs - name))) {
        p = (size_t)(qs - name);
        r = 2;
    } else if (ends_with(name, l, ".weight", &p) && quantized_module(f, name, p)) {
        r = 1;
    } else {
        for (size_t i = 0; i < sizeof PARTS / sizeof PARTS[0] && !r; i++)
            if (ends_with(name, l, PARTS[i], &p) && quantized_module(f, name, p)) r = 2;
    }
    if (module_len) *module_len = r ? p : 0;
    return r;
}

static msbnb_dtype out_dtype(const msbnb_convert_options *opt, const msbnb_qtensor *q) {
    if (opt->out_dtype != MSBNB_DTYPE_COUNT_) return opt->out_dtype;
    /* bitsandbytes' int8 layout records no dtype (its codes come from a float16 cast of
     * whatever the model had): float32 loses nothing */
    if (q->bnb_layout && q->params.type == MSBNB_QTYPE_INT8) return MSBNB_DTYPE_F32;
    return q->orig_dtype;
}

msbnb_status msbnb__dequant_shard(const msbnb_convert_options *opt, const msbnb_st_file_t *f,
                                  int s, msbnb_st_writer_t *w, msbnb_convert_report *rep,
                                  int64_t *done, uint64_t *bytes_done, int64_t total,
                                  uint64_t bytes_total, double t0) {
    size_t n = msbnb_st_count(f);
    const char *label = msbnb_st_shard_path(f, s);
    msbnb_status st = MSBNB_OK;
    char *cls = calloc(n ? n : 1, 1);
    if (!cls) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    /* pass 1: declare */
    for (size_t i = 0; i < n && st == MSBNB_OK; i++) {
        msbnb_st_tensor_info ti;
        msbnb_st_get(f, i, &ti);
        if (ti.shard != s) continue;
        cls[i] = (char)msbnb__ckpt_classify(f, ti.name, NULL);
        if (cls[i] == 0) {
            st = msbnb_st_writer_add(w, ti.name, ti.dtype, ti.shape, ti.ndim);
        } else if (cls[i] == 1) {
            msbnb_qtensor q;
            st = msbnb_qtensor_load(&q, f, ti.name);
            if (st == MSBNB_OK) {
                int64_t shape[2] = {q.rows, q.cols};
                st = msbnb_st_writer_add(w, ti.name, out_dtype(opt, &q), shape, 2);
            }
            msbnb_qtensor_clear(&q);
        }
        if (st != MSBNB_OK) st = msbnb__wrap(st, label, ti.name);
        else if (cls[i] != 2) rep->n_tensors_out++;
    }
    if (st == MSBNB_OK) st = msbnb_st_writer_begin(w);
    /* pass 2: data */
    for (size_t i = 0; i < n && st == MSBNB_OK; i++) {
        msbnb_st_tensor_info ti;
        msbnb_st_get(f, i, &ti);
        if (ti.shard != s) continue;
        uint64_t out = 0;
        char kind[64];
        if (cls[i] == 0) {
            st = msbnb_st_writer_write(w, ti.name, 0, ti.data, ti.nbytes);
            out = ti.nbytes;
            snprintf(kind, sizeof kind, "(copied)");
            rep->n_copied++;
        } else if (cls[i] == 1) {
            msbnb_qtensor q;
            float *buf = NULL;
            st = msbnb_qtensor_load(&q, f, ti.name);
            int64_t cnt = q.rows * q.cols;
            msbnb_dtype dt = out_dtype(opt, &q);
            if (st == MSBNB_OK) {
                buf = msbnb__alloc((size_t)cnt * sizeof(float));
                if (!buf) st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
            }
            if (st == MSBNB_OK) st = msbnb_qtensor_dequantize(&q, buf, cnt, opt->nthreads);
            /* narrowing in place: each element's 2-byte result lands below its 4-byte source */
            if (st == MSBNB_OK && dt != MSBNB_DTYPE_F32) {
                uint16_t *h = (uint16_t *)buf;
                for (int64_t k = 0; k < cnt; k++)
                    h[k] = dt == MSBNB_DTYPE_BF16 ? msbnb_f32_to_bf16(buf[k]) : msbnb_f32_to_f16(buf[k]);
            }
            out = (uint64_t)cnt * msbnb_dtype_size(dt);
            if (st == MSBNB_OK) st = msbnb_st_writer_write(w, ti.name, 0, buf, out);
            msbnb__module_kind(q.module, kind, sizeof kind);
            msbnb__free(buf);
            msbnb_qtensor_clear(&q);
            rep->n_quantized++;
        } else {
            rep->bytes_in += ti.nbytes; /* a part folded into its module's weight */
        }
        if (st != MSBNB_OK) {
            st = msbnb__wrap(st, label, ti.name);
            break;
        }
        msbnb_st_release(f, i);
        if (cls[i] != 2) {
            msbnb__report_add(rep, kind, ti.nbytes, out, 0.0);
            rep->bytes_in += ti.nbytes;
            rep->bytes_out += out;
        }
        (*done)++;
        *bytes_done += ti.nbytes;
        if (opt->progress) {
            msbnb_convert_progress p = {*done, total, *bytes_done, bytes_total, msbnb__now() - t0, ti.name};
            opt->progress(opt->progress_user, &p);
        }
    }
    free(cls);
    return st;
}
