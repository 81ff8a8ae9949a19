/* Whole-checkpoint quantization: safetensors in (single or sharded), a folder out in
 * transformers + bitsandbytes' serialized layout (bitsandbytes QuantState.as_dict(packed=
 * True) for 4-bit, Int8Params' weight + SCB + weight_format for LLM.int8), or msbnb's
 * own formats in the same key style.
 *
 * Each output shard is written in two passes over its input tensors: the first declares
 * every output tensor (name, dtype, shape) so the header can be written, the second
 * quantizes tensor by tensor and streams the data out. The only data-dependent header
 * entry is the packed quant-state JSON of double-quantized 4-bit weights, whose
 * `nested_offset` (mean of the block absmax) changes the JSON's length; the first pass
 * computes it from a cheap absmax reduction, and the second pass checks that the
 * quantizer reproduced it bit for bit. */
#include "msbnb/convert.h"

#include "ckpt_internal.h"
#include "internal.h"
#include "qconfig_internal.h"
#include "qtensor_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

msbnb_convert_options msbnb_convert_options_default(void) {
    msbnb_convert_options o;
    memset(&o, 0, sizeof o);
    o.nthreads = 0;
    o.compute_error = 1;
    o.out_dtype = MSBNB_DTYPE_COUNT_;
    return o;
}

double msbnb__now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void msbnb__module_kind(const char *module, char *out, size_t cap) {
    const char *d = strrchr(module, '.');
    snprintf(out, cap, "%s", d ? d + 1 : module);
}

void msbnb__report_add(msbnb_convert_report *r, const char *kind, uint64_t in, uint64_t out,
                       double rel_err) {
    int k = 0;
    for (; k < r->n_kinds; k++)
        if (strcmp(r->kinds[k].kind, kind) == 0) break;
    if (k == r->n_kinds) {
        if (r->n_kinds < MSBNB_REPORT_MAX_KINDS - 1 ||
            (r->n_kinds == MSBNB_REPORT_MAX_KINDS - 1 && strcmp(kind, "(other)") == 0)) {
            snprintf(r->kinds[k].kind, sizeof r->kinds[k].kind, "%s", kind);
            r->n_kinds++;
        } else {
            msbnb__report_add(r, "(other)", in, out, rel_err);
            return;
        }
    }
    r->kinds[k].count++;
    r->kinds[k].bytes_in += in;
    r->kinds[k].bytes_out += out;
    r->kinds[k].rel_error_sum += rel_err;
}

static const char *torch_dtype_name(msbnb_dtype d) {
    return d == MSBNB_DTYPE_F16 ? "float16" : d == MSBNB_DTYPE_BF16 ? "bfloat16" : "float32";
}

/* ---------------------------------------------------------------- per-tensor plan */

typedef struct {
    size_t idx;
    msbnb_st_tensor_info ti;
    int quant;
    char module[512];
    char *qs;      /* quant-state JSON (quantized tensors) */
    size_t qs_len;
    float offset;  /* double quant: the nested offset found by the first pass */
} item_t;

#define N_SCRATCH 10
typedef struct {
    const msbnb_qconfig *cfg;
    const msbnb_convert_options *opt;
    int nthreads;
    const char *label; /* shard path, for messages */
    /* Buffers reused from tensor to tensor (grown as needed, freed at the end): fresh
     * allocations of this size are fresh mmaps whose pages the kernel zeroes each time. */
    void *scratch[N_SCRATCH];
    size_t scratch_cap[N_SCRATCH];
} ctx_t;

static char *kname(char *buf, size_t cap, const char *module, const char *suffix) {
    snprintf(buf, cap, "%s%s", module, suffix);
    return buf;
}

/* ---- first pass for double quantization: the nested offset from a block-absmax reduction */

typedef struct {
    const uint8_t *x;
    msbnb_dtype dt;
    int64_t n, block;
    float *absmax;
} absmax_job;

/* |x| ordered like the bits with the sign cleared (IEEE formats, finite or not): the
 * block maximum is found on integers, straight from the input dtype, without converting;
 * NaN/Inf compare above every finite value and make the offset non-finite (reported). */
static void absmax_range(void *vctx, int64_t b0, int64_t b1, int tid) {
    (void)tid;
    absmax_job *j = vctx;
    for (int64_t b = b0; b < b1; b++) {
        int64_t s = b * j->block, e = s + j->block < j->n ? s + j->block : j->n;
        if (j->dt == MSBNB_DTYPE_F32) {
            uint32_t m = 0;
            for (int64_t i = s; i < e; i++) {
                uint32_t v;
                memcpy(&v, j->x + (size_t)i * 4, 4);
                v &= 0x7fffffffu;
                m = v > m ? v : m;
            }
            float f;
            memcpy(&f, &m, 4);
            j->absmax[b] = f;
        } else {
            uint16_t m = 0;
            for (int64_t i = s; i < e; i++) {
                uint16_t v;
                memcpy(&v, j->x + (size_t)i * 2, 2);
                v &= 0x7fff;
                m = v > m ? v : m;
            }
            j->absmax[b] = j->dt == MSBNB_DTYPE_BF16 ? msbnb_bf16_to_f32(m) : msbnb_f16_to_f32(m);
        }
    }
}

static msbnb_status nested_offset(const ctx_t *c, const item_t *it, float *offset) {
    int64_t n = it->ti.numel, block = c->cfg->format.block, nb = msbnb__ceil_div(n, block);
    absmax_job j = {it->ti.data, it->ti.dtype, n, block, NULL};
    j.absmax = msbnb__alloc((size_t)nb * sizeof(float));
    uint8_t *q = msbnb__alloc((size_t)nb);
    float *nest = msbnb__alloc((size_t)msbnb__ceil_div(nb, MSBNB_NESTED_BLOCKSIZE) * sizeof(float));
    msbnb_status st = (j.absmax && q && nest) ? MSBNB_OK
                      : msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    if (st == MSBNB_OK) {
        msbnb__parallel_for(c->nthreads, nb, 16384 / block + 1, absmax_range, &j);
        st = msbnb_double_quant_absmax(q, nest, offset, j.absmax, nb);
    }
    msbnb__free(j.absmax);
    msbnb__free(q);
    msbnb__free(nest);
    return st;
}

/* The quant-state JSON, as Python's json.dumps writes the dicts of bitsandbytes'
 * QuantState.as_dict(packed=True) (insertion order, ", " and ": " separators). */
static msbnb_status make_quant_state(const ctx_t *c, item_t *it, float offset) {
    const msbnb_qparams *f = &c->cfg->format;
    msbnb__sbuf b = {0};
    const char *dt = torch_dtype_name(it->ti.dtype);
    long long R = (long long)it->ti.shape[0], C = (long long)it->ti.shape[1];
    if (f->type == MSBNB_QTYPE_NF4 || f->type == MSBNB_QTYPE_FP4) {
        msbnb__sb_printf(&b, "{\"quant_type\": \"%s\", \"blocksize\": %lld, \"dtype\": \"%s\", "
                         "\"shape\": [%lld, %lld]", f->type == MSBNB_QTYPE_NF4 ? "nf4" : "fp4",
                         (long long)f->block, dt, R, C);
        if (f->double_quant) {
            char rep[40];
            msbnb__py_float_repr((double)offset, rep, sizeof rep);
            msbnb__sb_printf(&b, ", \"nested_blocksize\": %d, \"nested_dtype\": \"float32\", "
                             "\"nested_offset\": %s", MSBNB_NESTED_BLOCKSIZE, rep);
        }
        msbnb__sb_puts(&b, "}");
    } else if (f->type == MSBNB_QTYPE_INT4) {
        msbnb__sb_printf(&b, "{\"quant_type\": \"int4\", \"group_size\": %lld, \"symmetric\": %s, "
                         "\"dtype\": \"%s\", \"shape\": [%lld, %lld]}", (long long)f->block,
                         f->symmetric ? "true" : "false", dt, R, C);
    } else {
        msbnb__sb_printf(&b, "{\"quant_type\": \"int8\", \"symmetric\": %s, \"per_tensor\": %s, "
                         "\"dtype\": \"%s\", \"shape\": [%lld, %lld]}",
                         f->symmetric ? "true" : "false", f->per_tensor ? "true" : "false", dt, R, C);
    }
    if (b.err) {
        msbnb__sb_free(&b);
        return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    }
    it->qs = b.s;
    it->qs_len = b.len;
    return MSBNB_OK;
}

static const char *qs_suffix(msbnb_qtype t) {
    switch (t) {
    case MSBNB_QTYPE_NF4: return ".weight.quant_state.bitsandbytes__nf4";
    case MSBNB_QTYPE_FP4: return ".weight.quant_state.bitsandbytes__fp4";
    case MSBNB_QTYPE_INT4: return ".weight.quant_state.msbnb__int4";
    default: return ".weight.quant_state.msbnb__int8";
    }
}

/* Declares the output tensors of one input tensor. */
static msbnb_status add(int64_t *cnt, msbnb_st_writer_t *w, const char *name, msbnb_dtype dt,
                        const int64_t *shape, int nd) {
    (*cnt)++;
    return msbnb_st_writer_add(w, name, dt, shape, nd);
}

static msbnb_status declare(const ctx_t *c, msbnb_st_writer_t *w, item_t *it, int64_t *cnt) {
    const msbnb_st_tensor_info *ti = &it->ti;
    if (!it->quant) return add(cnt, w, ti->name, ti->dtype, ti->shape, ti->ndim);
    const msbnb_qparams *f = &c->cfg->format;
    const char *m = it->module;
    char k[640];
    int64_t R = ti->shape[0], C = ti->shape[1], n = ti->numel;
    float offset = 0.0f;
    if ((f->type == MSBNB_QTYPE_NF4 || f->type == MSBNB_QTYPE_FP4) && f->double_quant)
        MSBNB_TRY(nested_offset(c, it, &offset));
    it->offset = offset;
    MSBNB_TRY(make_quant_state(c, it, offset));
    int64_t qsl = (int64_t)it->qs_len;
    if (f->type == MSBNB_QTYPE_NF4 || f->type == MSBNB_QTYPE_FP4) {
        int64_t nb = msbnb__ceil_div(n, f->block);
        int64_t s_packed[2] = {(n + 1) / 2, 1}, s_nb[1] = {nb}, s16[1] = {16}, s256[1] = {256},
                s_nest[1] = {msbnb__ceil_div(nb, MSBNB_NESTED_BLOCKSIZE)};
        MSBNB_TRY(add(cnt, w, kname(k, sizeof k, m, ".weight"), MSBNB_DTYPE_U8, s_packed, 2));
        MSBNB_TRY(add(cnt, w, kname(k, sizeof k, m, ".weight.absmax"),
                                      f->double_quant ? MSBNB_DTYPE_U8 : MSBNB_DTYPE_F32, s_nb, 1));
        MSBNB_TRY(add(cnt, w, kname(k, sizeof k, m, ".weight.quant_map"), MSBNB_DTYPE_F32, s16, 1));
        if (f->double_quant) {
            MSBNB_TRY(add(cnt, w, kname(k, sizeof k, m, ".weight.nested_absmax"),
                                          MSBNB_DTYPE_F32, s_nest, 1));
            MSBNB_TRY(add(cnt, w, kname(k, sizeof k, m, ".weight.nested_quant_map"),
                                          MSBNB_DTYPE_F32, s256, 1));
        }
    } else if (f->type == MSBNB_QTYPE_INT8 && msbnb__qconfig_is_bnb(c->cfg)) {
        int64_t s_r[1] = {R};
        MSBNB_TRY(add(cnt, w, kname(k, sizeof k, m, ".weight"), MSBNB_DTYPE_I8, ti->shape, 2));
        MSBNB_TRY(add(cnt, w, kname(k, sizeof k, m, ".SCB"), MSBNB_DTYPE_F32, s_r, 1));
        MSBNB_TRY(add(cnt, w, kname(k, sizeof k, m, ".weight_format"), MSBNB_DTYPE_U8, NULL, 0));
        return MSBNB_OK; /* bitsandbytes' int8 layout has no quant_state entry */
    } else if (f->type == MSBNB_QTYPE_INT4) {
        int64_t gpr = 0, pb = 0;
        MSBNB_TRY(msbnb_int4_sizes(R, C, f->block, &gpr, &pb));
        int64_t s_packed[2] = {pb, 1}, s_sc[2] = {R, gpr};
        MSBNB_TRY(add(cnt, w, kname(k, sizeof k, m, ".weight"), MSBNB_DTYPE_U8, s_packed, 2));
        MSBNB_TRY(add(cnt, w, kname(k, sizeof k, m, ".weight.scales"), MSBNB_DTYPE_F32, s_sc, 2));
        if (!f->symmetric)
            MSBNB_TRY(add(cnt, w, kname(k, sizeof k, m, ".weight.mins"), MSBNB_DTYPE_F32, s_sc, 2));
    } else { /* msbnb int8 (asymmetric and/or per tensor) */
        int64_t s_s[1] = {f->per_tensor ? 1 : R};
        MSBNB_TRY(add(cnt, w, kname(k, sizeof k, m, ".weight"), MSBNB_DTYPE_I8, ti->shape, 2));
        MSBNB_TRY(add(cnt, w, kname(k, sizeof k, m, ".weight.scales"), MSBNB_DTYPE_F32, s_s, 1));
        if (!f->symmetric)
            MSBNB_TRY(add(cnt, w, kname(k, sizeof k, m, ".weight.zero_points"),
                                          MSBNB_DTYPE_F32, s_s, 1));
    }
    int64_t s_qs[1] = {qsl};
    return add(cnt, w, kname(k, sizeof k, m, qs_suffix(f->type)), MSBNB_DTYPE_U8, s_qs, 1);
}

/* ---- second pass: quantize one tensor */

/* Row-parallel quantization for the row formats (LLM.int8, msbnb int8, msbnb int4). A
 * work unit is `g` rows, g = 2 when a row has an odd length so that every unit starts on
 * a whole byte of packed nibbles. */
typedef struct {
    const msbnb_qparams *f;
    int bnb;
    const void *x; /* F32 (for LLM.int8: the float16 cast widened back, as bitsandbytes
                      quantizes the float16 cast) */
    int64_t R, C, g, gpr;
    int8_t *q8;
    uint8_t *packed;
    float *scales, *mins;
    msbnb_status *st; /* per unit */
} rows_job;

static void rows_range(void *vctx, int64_t u0, int64_t u1, int tid) {
    (void)tid;
    rows_job *j = vctx;
    int64_t r0 = u0 * j->g, r1 = u1 * j->g;
    if (r1 > j->R) r1 = j->R;
    int64_t nr = r1 - r0, e0 = r0 * j->C;
    msbnb_status st;
    if (j->bnb) {
        int64_t nout = 0;
        st = msbnb_int8_vectorwise_quant(j->q8 + e0, j->scales + r0, NULL, 0, &nout,
                                         (const float *)j->x + e0, MSBNB_DTYPE_F32, nr, j->C, 0.0f);
    } else if (j->f->type == MSBNB_QTYPE_INT4) {
        st = msbnb_quantize_int4(j->packed + e0 / 2, j->scales + r0 * j->gpr,
                                 j->mins ? j->mins + r0 * j->gpr : NULL, (const float *)j->x + e0,
                                 nr, j->C, j->f->block, j->f->symmetric);
    } else {
        st = msbnb_quantize_8bit(j->q8 + e0, j->scales + r0, j->mins ? j->mins + r0 : NULL,
                                 (const float *)j->x + e0, nr, j->C, j->f->symmetric, 0);
    }
    j->st[u0] = st;
    for (int64_t u = u0 + 1; u < u1; u++) j->st[u] = MSBNB_OK;
}

/* Relative error ||w - deq(q(w))|| / ||w|| over units of whole blocks or rows, summed in
 * unit order so the result does not depend on the thread count. */
typedef struct {
    const msbnb_qtensor *q;
    const uint8_t *x;
    msbnb_dtype dt;
    int64_t n, unit;
    float **bx, **bd;
    double *num, *den;
    int fail;
} err_job;

/* Sums of squares over [0, n) in 16 float lanes (a vector_size type, so the compiler
 * emits whatever SIMD the baseline target has), folded into doubles every 1024 elements
 * so the float partial sums stay short. */
typedef float msbnb__v16f __attribute__((vector_size(64)));

static void sq_sums(const float *restrict x, const float *restrict d, int64_t n, double *num, double *den) {
    double nu = 0, de = 0;
    for (int64_t b = 0; b < n; b += 1024) {
        int64_t e = n - b < 1024 ? n - b : 1024, i = 0;
        msbnb__v16f an = {0}, ad = {0};
        for (; i + 16 <= e; i += 16) {
            msbnb__v16f a, q;
            memcpy(&a, x + b + i, sizeof a);
            memcpy(&q, d + b + i, sizeof q);
            msbnb__v16f df = a - q;
            an += df * df;
            ad += a * a;
        }
        for (; i < e; i++) {
            float a = x[b + i], df = a - d[b + i];
            an[0] += df * df;
            ad[0] += a * a;
        }
        for (int l = 0; l < 16; l++) {
            nu += an[l];
            de += ad[l];
        }
    }
    *num = nu;
    *den = de;
}

static void err_range(void *vctx, int64_t u0, int64_t u1, int tid) {
    err_job *j = vctx;
    size_t es = msbnb_dtype_size(j->dt);
    for (int64_t u = u0; u < u1; u++) {
        int64_t e0 = u * j->unit, e1 = e0 + j->unit;
        if (e1 > j->n) e1 = j->n;
        const float *x = j->bx[tid];
        if (j->dt == MSBNB_DTYPE_F32 && ((uintptr_t)j->x % 4) == 0)
            x = (const float *)(const void *)j->x + e0; /* already float: no copy */
        else if (msbnb_convert(j->bx[tid], MSBNB_DTYPE_F32, j->x + (size_t)e0 * es, j->dt, e1 - e0) != MSBNB_OK)
            j->fail = 1;
        if (j->fail || msbnb__qtensor_dequant_range(j->q, j->bd[tid], e0, e1) != MSBNB_OK) {
            j->fail = 1;
            return;
        }
        sq_sums(x, j->bd[tid], e1 - e0, &j->num[u], &j->den[u]);
    }
}

/* x: the original weight, as the input tensor or a float copy of it (dtype xdt). */
static msbnb_status rel_error(const ctx_t *c, const msbnb_qtensor *q, const void *x, msbnb_dtype xdt,
                              int64_t n, double *out) {
    int64_t unit;
    const msbnb_qparams *f = &q->params;
    if (f->type == MSBNB_QTYPE_NF4 || f->type == MSBNB_QTYPE_FP4) {
        unit = f->block * (f->block >= 32768 ? 1 : 32768 / f->block);
    } else {
        int64_t g = (q->cols % 2) ? 2 : 1, rows = 32768 / q->cols;
        if (f->type == MSBNB_QTYPE_INT8 && f->per_tensor) rows = q->rows; /* scale is global */
        rows = rows < g ? g : (rows / g) * g;
        unit = rows * q->cols;
    }
    int64_t nu = msbnb__ceil_div(n, unit);
    int nt = c->nthreads;
    err_job j = {q, x, xdt, n, unit, NULL, NULL, NULL, NULL, 0};
    j.bx = calloc((size_t)nt, sizeof(float *));
    j.bd = calloc((size_t)nt, sizeof(float *));
    j.num = calloc((size_t)nu, sizeof(double));
    j.den = calloc((size_t)nu, sizeof(double));
    msbnb_status st = (j.bx && j.bd && j.num && j.den) ? MSBNB_OK
                      : msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    size_t ub = (size_t)(unit < n ? unit : n) * sizeof(float);
    for (int t = 0; st == MSBNB_OK && t < nt; t++)
        if (!(j.bx[t] = msbnb__alloc(ub)) || !(j.bd[t] = msbnb__alloc(ub)))
            st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    if (st == MSBNB_OK) {
        msbnb__parallel_for(nt, nu, 1, err_range, &j);
        if (j.fail) st = msbnb__fail(MSBNB_ERR_INTERNAL, "error measurement failed: %s", msbnb__errcopy());
    }
    if (st == MSBNB_OK) {
        double num = 0, den = 0;
        for (int64_t u = 0; u < nu; u++) {
            num += j.num[u];
            den += j.den[u];
        }
        *out = den > 0 ? sqrt(num / den) : (num > 0 ? 1.0 : 0.0);
    }
    for (int t = 0; t < nt; t++) {
        if (j.bx) msbnb__free(j.bx[t]);
        if (j.bd) msbnb__free(j.bd[t]);
    }
    free(j.bx);
    free(j.bd);
    free(j.num);
    free(j.den);
    return st;
}

static msbnb_status put(msbnb_st_writer_t *w, const char *m, const char *suffix, const void *p,
                        uint64_t nbytes) {
    char k[640];
    return msbnb_st_writer_write(w, kname(k, sizeof k, m, suffix), 0, p, nbytes);
}

/* msbnb_convert split over threads (the dtype casts before int8/int4 quantization). */
typedef struct {
    void *dst;
    const void *src;
    msbnb_dtype dt, st;
    int fail;
} conv_job;

static void conv_range(void *vctx, int64_t b, int64_t e, int tid) {
    (void)tid;
    conv_job *j = vctx;
    if (msbnb_convert((char *)j->dst + (size_t)b * msbnb_dtype_size(j->dt), j->dt,
                      (const char *)j->src + (size_t)b * msbnb_dtype_size(j->st), j->st, e - b) != MSBNB_OK)
        j->fail = 1;
}

static msbnb_status pconvert(void *dst, msbnb_dtype dt, const void *src, msbnb_dtype st, int64_t n,
                             int nthreads) {
    conv_job j = {dst, src, dt, st, 0};
    msbnb__parallel_for(nthreads, n, 1 << 16, conv_range, &j);
    return j.fail ? msbnb__fail(MSBNB_ERR_INTERNAL, "dtype conversion failed") : MSBNB_OK;
}

/* NF4/FP4 in chunks of whole nested groups (256 blocks), one chunk per task: widen to
 * float, quantize, and measure the error while the chunk is in cache, instead of a
 * tensor-sized float copy read back from memory. Blocks are independent, so the codes and
 * absmax equal a whole-tensor call's. For double quant the chunk's absmax are quantized
 * with the first pass's offset exactly as msbnb_double_quant_absmax does (8-bit blockwise
 * of absmax - offset, block 256) so the error is that of the stored weights; the caller
 * checks those codes against the whole-tensor call. */
typedef struct {
    const ctx_t *c;
    const uint8_t *x;
    msbnb_dtype dt;
    int64_t n, chunk, block;
    msbnb_qtype type;
    int dq, want_err;
    float offset;
    uint8_t *packed, *qab_chk;
    float *absmax;
    float **bx, **bd, **btmp, **beff, **bnest;
    double *num, *den;
    msbnb_status *st;
} q4_job;

static void q4_range(void *vctx, int64_t u0, int64_t u1, int tid) {
    q4_job *j = vctx;
    size_t es = msbnb_dtype_size(j->dt);
    for (int64_t u = u0; u < u1; u++) {
        int64_t e0 = u * j->chunk, len = j->n - e0 < j->chunk ? j->n - e0 : j->chunk;
        int64_t b0 = e0 / j->block, nbk = msbnb__ceil_div(len, j->block);
        const float *x = j->bx[tid];
        msbnb_status st = MSBNB_OK;
        if (j->dt == MSBNB_DTYPE_F32 && ((uintptr_t)j->x % 4) == 0)
            x = (const float *)(const void *)j->x + e0;
        else
            st = msbnb_convert(j->bx[tid], MSBNB_DTYPE_F32, j->x + (size_t)e0 * es, j->dt, len);
        if (st == MSBNB_OK)
            st = msbnb_quantize_4bit(j->packed + e0 / 2, j->absmax + b0, x, MSBNB_DTYPE_F32, len, j->block,
                                     j->type, 1);
        const float *eff = j->absmax + b0;
        if (st == MSBNB_OK && j->dq) {
            float *t = j->btmp[tid];
            for (int64_t i = 0; i < nbk; i++) t[i] = j->absmax[b0 + i] - j->offset;
            st = msbnb_quantize_blockwise_8bit(j->qab_chk + b0, j->bnest[tid], t, MSBNB_DTYPE_F32, nbk,
                                               MSBNB_NESTED_BLOCKSIZE, NULL, 1);
            if (st == MSBNB_OK)
                st = msbnb_double_dequant_absmax(j->beff[tid], j->qab_chk + b0, j->bnest[tid], j->offset, nbk);
            eff = j->beff[tid];
        }
        if (st == MSBNB_OK && j->want_err) {
            st = msbnb_dequantize_4bit(j->bd[tid], MSBNB_DTYPE_F32, j->packed + e0 / 2, eff, len, j->block,
                                       j->type, 1);
            if (st == MSBNB_OK) sq_sums(x, j->bd[tid], len, &j->num[u], &j->den[u]);
        }
        j->st[u] = st;
    }
}

static msbnb_status quant4_chunked(const ctx_t *c, const item_t *it, msbnb_qtensor *q, uint8_t *qab_chk,
                                   double *err) {
    const msbnb_qparams *f = &c->cfg->format;
    int64_t n = it->ti.numel, group = f->block * MSBNB_NESTED_BLOCKSIZE;
    int64_t chunk = group * (group >= 65536 ? 1 : 65536 / group);
    int64_t nu = msbnb__ceil_div(n, chunk), nt = c->nthreads;
    q4_job j = {c, it->ti.data, it->ti.dtype, n, chunk, f->block, f->type, f->double_quant,
                c->opt->compute_error, it->offset, q->packed, qab_chk, q->absmax,
                NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    float ***bufs[5] = {&j.bx, &j.bd, &j.btmp, &j.beff, &j.bnest};
    size_t sizes[5] = {(size_t)chunk * 4, (size_t)chunk * 4, (size_t)(chunk / f->block) * 4,
                       (size_t)(chunk / f->block) * 4, (size_t)(chunk / group + 1) * 4};
    msbnb_status st = MSBNB_OK;
    for (int b = 0; b < 5 && st == MSBNB_OK; b++) {
        *bufs[b] = calloc((size_t)nt, sizeof(float *));
        if (!*bufs[b]) st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
        for (int t = 0; t < nt && st == MSBNB_OK; t++)
            if (!((*bufs[b])[t] = msbnb__alloc(sizes[b])))
                st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    }
    j.num = calloc((size_t)nu, sizeof(double));
    j.den = calloc((size_t)nu, sizeof(double));
    j.st = calloc((size_t)nu, sizeof(msbnb_status));
    if (st == MSBNB_OK && (!j.num || !j.den || !j.st)) st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    if (st == MSBNB_OK) {
        msbnb__parallel_for(c->nthreads, nu, 1, q4_range, &j);
        for (int64_t u = 0; u < nu && st == MSBNB_OK; u++) st = j.st[u];
    }
    if (st == MSBNB_OK) {
        double num = 0, den = 0;
        for (int64_t u = 0; u < nu; u++) {
            num += j.num[u];
            den += j.den[u];
        }
        *err = den > 0 ? sqrt(num / den) : (num > 0 ? 1.0 : 0.0);
    }
    for (int b = 0; b < 5; b++) {
        for (int t = 0; *bufs[b] && t < nt; t++) msbnb__free((*bufs[b])[t]);
        free(*bufs[b]);
    }
    free(j.num);
    free(j.den);
    free(j.st);
    return st;
}

/* Allocation for quantize_one: scratch slot *slot (then the next one), grown when too
 * small; latches the status. */
static void *balloc(msbnb_status *st, ctx_t *c, int *slot, size_t bytes) {
    if (*st != MSBNB_OK) return NULL;
    int k = (*slot)++;
    if (k >= N_SCRATCH) {
        *st = msbnb__fail(MSBNB_ERR_INTERNAL, "convert: out of scratch slots");
        return NULL;
    }
    if (bytes == 0) bytes = 1;
    if (c->scratch_cap[k] < bytes) {
        msbnb__free(c->scratch[k]);
        c->scratch[k] = msbnb__alloc(bytes);
        c->scratch_cap[k] = c->scratch[k] ? bytes : 0;
        if (!c->scratch[k]) {
            *st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory (%zu bytes)", bytes);
            return NULL;
        }
    }
    return c->scratch[k];
}

static msbnb_status quantize_one(ctx_t *c, msbnb_st_writer_t *w, const item_t *item,
                                 uint64_t *bytes_out, double *err) {
    const msbnb_qparams *f = &c->cfg->format;
    int nbufs = 0;
    msbnb_status st = MSBNB_OK;
    /* safetensors does not align data: a tensor at an offset that is no multiple of its
     * element size is copied to aligned memory first, so every kernel below reads aligned
     * elements (rare: the reference writer orders tensors so this never happens) */
    item_t aligned = *item;
    const item_t *it = item;
    if ((uintptr_t)item->ti.data % msbnb_dtype_size(item->ti.dtype) != 0) {
        void *copy = balloc(&st, c, &nbufs, (size_t)item->ti.nbytes);
        if (st != MSBNB_OK) return st;
        memcpy(copy, item->ti.data, (size_t)item->ti.nbytes);
        aligned.ti.data = copy;
        it = &aligned;
    }
    const msbnb_st_tensor_info *ti = &it->ti;
    const char *m = it->module;
    int64_t R = ti->shape[0], C = ti->shape[1], n = ti->numel;
    size_t es = msbnb_dtype_size(ti->dtype);
    int bnb8 = f->type == MSBNB_QTYPE_INT8 && msbnb__qconfig_is_bnb(c->cfg);
#define ALLOC(ptr, bytes) ((ptr) = balloc(&st, c, &nbufs, (size_t)(bytes)))
    /* The input, aligned (safetensors does not align data) and in the dtype the row
     * quantizers take: LLM.int8 the float16 cast (as bitsandbytes), msbnb's formats float32.
     * NF4/FP4 read the tensor chunk by chunk instead (quant4_chunked). */
    const void *x = ti->data;
    msbnb_dtype want = bnb8 ? MSBNB_DTYPE_F16 : MSBNB_DTYPE_F32;
    int four = f->type == MSBNB_QTYPE_NF4 || f->type == MSBNB_QTYPE_FP4;
    if (!four && (want != ti->dtype || ((uintptr_t)x % es) != 0)) {
        void *cx = NULL;
        ALLOC(cx, (size_t)n * msbnb_dtype_size(want));
        if (st == MSBNB_OK) st = pconvert(cx, want, ti->data, ti->dtype, n, c->nthreads);
        x = cx;
    }
    if (bnb8 && st == MSBNB_OK) {
        /* the float16 values widened back to float (exact, SIMD): the row quantizer's float
         * path then gives the codes it gives for F16 input, without per-element decoding */
        void *wide = NULL;
        ALLOC(wide, (size_t)n * sizeof(float));
        if (st == MSBNB_OK) st = pconvert(wide, MSBNB_DTYPE_F32, x, MSBNB_DTYPE_F16, n, c->nthreads);
        x = wide;
    }
    msbnb_qtensor q;
    memset(&q, 0, sizeof q);
    q.params = *f;
    q.rows = R;
    q.cols = C;
    q.orig_dtype = ti->dtype;
    q.bnb_layout = msbnb__qconfig_is_bnb(c->cfg);
    uint64_t out = 0;
    if (f->type == MSBNB_QTYPE_NF4 || f->type == MSBNB_QTYPE_FP4) {
        int64_t nb = msbnb__ceil_div(n, f->block), nn = msbnb__ceil_div(nb, MSBNB_NESTED_BLOCKSIZE);
        uint8_t *qab_chk = NULL;
        ALLOC(q.packed, (n + 1) / 2);
        ALLOC(q.absmax, nb * 4);
        if (f->double_quant) ALLOC(qab_chk, nb);
        if (st == MSBNB_OK) st = quant4_chunked(c, it, &q, qab_chk, err);
        if (st == MSBNB_OK) st = put(w, m, ".weight", q.packed, (uint64_t)(n + 1) / 2);
        const float *code = f->type == MSBNB_QTYPE_NF4 ? msbnb_nf4_code() : msbnb_fp4_code();
        if (st == MSBNB_OK) st = put(w, m, ".weight.quant_map", code, 16 * sizeof(float));
        out += (uint64_t)(n + 1) / 2 + 64 + it->qs_len;
        if (f->double_quant) {
            float off = 0;
            ALLOC(q.qabsmax, nb);
            ALLOC(q.nested_absmax, nn * 4);
            if (st == MSBNB_OK) st = msbnb_double_quant_absmax(q.qabsmax, q.nested_absmax, &off, q.absmax, nb);
            char rep[40], want_qs[64];
            msbnb__py_float_repr((double)off, rep, sizeof rep);
            snprintf(want_qs, sizeof want_qs, "\"nested_offset\": %s}", rep);
            if (st == MSBNB_OK && (it->qs_len < strlen(want_qs) ||
                                   strcmp(it->qs + it->qs_len - strlen(want_qs), want_qs) != 0))
                st = msbnb__fail(MSBNB_ERR_INTERNAL, "nested offset %s differs from the first pass", rep);
            if (st == MSBNB_OK && memcmp(qab_chk, q.qabsmax, (size_t)nb) != 0)
                st = msbnb__fail(MSBNB_ERR_INTERNAL, "chunked double quantization differs from the "
                                 "whole-tensor one");
            if (st == MSBNB_OK) st = put(w, m, ".weight.absmax", q.qabsmax, (uint64_t)nb);
            if (st == MSBNB_OK) st = put(w, m, ".weight.nested_absmax", q.nested_absmax, (uint64_t)nn * 4);
            if (st == MSBNB_OK) st = put(w, m, ".weight.nested_quant_map", msbnb_dynamic_map(), 1024);
            out += (uint64_t)nb + (uint64_t)nn * 4 + 1024;
        } else {
            if (st == MSBNB_OK) st = put(w, m, ".weight.absmax", q.absmax, (uint64_t)nb * 4);
            out += (uint64_t)nb * 4;
        }
    } else {
        rows_job j;
        memset(&j, 0, sizeof j);
        j.f = f;
        j.bnb = bnb8;
        j.x = x;
        j.R = R;
        j.C = C;
        j.g = (f->type == MSBNB_QTYPE_INT4 && (C % 2)) ? 2 : 1;
        int64_t pb = 0, ns = R;
        if (f->type == MSBNB_QTYPE_INT4) {
            if (st == MSBNB_OK) st = msbnb_int4_sizes(R, C, f->block, &j.gpr, &pb);
            ns = R * j.gpr;
            ALLOC(q.packed, pb);
            j.packed = q.packed;
        } else {
            ALLOC(q.q8, n);
            j.q8 = q.q8;
            if (f->per_tensor) ns = 1;
        }
        ALLOC(q.scales, ns * 4);
        j.scales = q.scales;
        if (!f->symmetric) {
            ALLOC(q.mins, ns * 4);
            j.mins = q.mins;
        }
        int64_t nu = msbnb__ceil_div(R, j.g);
        ALLOC(j.st, nu * (int64_t)sizeof(msbnb_status));
        if (st == MSBNB_OK && f->type == MSBNB_QTYPE_INT8 && f->per_tensor) {
            st = msbnb_quantize_8bit(q.q8, q.scales, q.mins, x, R, C, f->symmetric, 1);
        } else if (st == MSBNB_OK) {
            int64_t grain = 4096 / (C * j.g) + 1;
            msbnb__parallel_for(c->nthreads, nu, grain, rows_range, &j);
            for (int64_t u = 0; u < nu && st == MSBNB_OK; u++) st = j.st[u];
        }
        if (f->type == MSBNB_QTYPE_INT4) {
            if (st == MSBNB_OK) st = put(w, m, ".weight", q.packed, (uint64_t)pb);
            out += (uint64_t)pb;
        } else {
            if (st == MSBNB_OK) st = put(w, m, ".weight", q.q8, (uint64_t)n);
            out += (uint64_t)n;
        }
        if (bnb8) {
            static const uint8_t row_major = 0; /* Int8Params weight_format 0: row-major */
            if (st == MSBNB_OK) st = put(w, m, ".SCB", q.scales, (uint64_t)R * 4);
            if (st == MSBNB_OK) st = put(w, m, ".weight_format", &row_major, 1);
            out += (uint64_t)R * 4 + 1;
        } else {
            if (st == MSBNB_OK) st = put(w, m, ".weight.scales", q.scales, (uint64_t)ns * 4);
            if (st == MSBNB_OK && !f->symmetric)
                st = put(w, m, f->type == MSBNB_QTYPE_INT4 ? ".weight.mins" : ".weight.zero_points",
                         q.mins, (uint64_t)ns * 4);
            out += (uint64_t)ns * 4 * (f->symmetric ? 1 : 2) + it->qs_len;
        }
    }
    if (st == MSBNB_OK && !bnb8) st = put(w, m, qs_suffix(f->type), it->qs, it->qs_len);
    if (!four) *err = 0;
    if (st == MSBNB_OK && c->opt->compute_error && !four) {
        q.arena_ = NULL;
        if (bnb8) st = rel_error(c, &q, ti->data, ti->dtype, n, err); /* x is the f16 cast */
        else st = rel_error(c, &q, x, want, n, err);
    }
#undef ALLOC
    *bytes_out = out;
    return st;
}

/* ---------------------------------------------------------------- driver */

static int is_quantized_part(const char *name) {
    size_t l = strlen(name);
    return strstr(name, ".weight.quant_state.") != NULL || (l > 4 && strcmp(name + l - 4, ".SCB") == 0);
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

msbnb_status msbnb__wrap(msbnb_status st, const char *file, const char *tensor) {
    return msbnb__fail(st, "%s: tensor '%s': %s", file, tensor, msbnb__errcopy());
}

static msbnb_status file_size(const char *path, uint64_t *sz) {
    struct stat sb;
    if (stat(path, &sb) != 0) return msbnb__fail(MSBNB_ERR_IO, "cannot stat '%s'", path);
    *sz = (uint64_t)sb.st_size;
    return MSBNB_OK;
}

/* Output shard names: the input's, or model.safetensors for a lone file. */
static const char *out_shard_name(const msbnb_st_file_t *f, int s, int lone) {
    return lone ? "model.safetensors" : base_name(msbnb_st_shard_path(f, s));
}

static int needs_index(const char *in_path, const char *in_dir, const msbnb_st_file_t *f) {
    size_t l = strlen(in_path);
    if (msbnb_st_shard_count(f) > 1 || (l >= 5 && strcmp(in_path + l - 5, ".json") == 0)) return 1;
    if (!in_dir) return 0;
    char *single = msbnb__path_join(in_dir, "model.safetensors");
    int r = single && access(single, F_OK) != 0; /* the folder was opened through its index */
    free(single);
    return r;
}

typedef struct {
    char *name;
    int shard;
} named_t;

static int cmp_named(const void *a, const void *b) {
    return strcmp(((const named_t *)a)->name, ((const named_t *)b)->name);
}

/* model.safetensors.index.json over the written shards (reopened: the writer's layout is
 * the truth). */
static msbnb_status write_index(const msbnb__outdir *od, const char *const *shard_names, int nsh) {
    named_t *v = NULL;
    size_t nv = 0;
    uint64_t total = 0;
    msbnb_status st = MSBNB_OK;
    for (int s = 0; s < nsh && st == MSBNB_OK; s++) {
        msbnb_st_file_t *o = NULL;
        char *p = msbnb__outdir_path(od, shard_names[s]);
        st = p ? msbnb_st_open(&o, p) : msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
        free(p);
        if (st != MSBNB_OK) break;
        size_t m = msbnb_st_count(o);
        named_t *nvv = realloc(v, (nv + m + 1) * sizeof *nvv);
        if (!nvv) st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
        else v = nvv;
        for (size_t i = 0; i < m && st == MSBNB_OK; i++) {
            msbnb_st_tensor_info ti;
            msbnb_st_get(o, i, &ti);
            v[nv].shard = s;
            if (!(v[nv].name = strdup(ti.name))) st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
            else nv++;
            total += ti.nbytes;
        }
        msbnb_st_close(o);
    }
    const char **names = st == MSBNB_OK ? malloc((nv + 1) * sizeof *names) : NULL;
    int *sh = st == MSBNB_OK ? malloc((nv + 1) * sizeof *sh) : NULL;
    if (st == MSBNB_OK && (!names || !sh)) st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    if (st == MSBNB_OK) {
        qsort(v, nv, sizeof *v, cmp_named);
        for (size_t i = 0; i < nv; i++) {
            names[i] = v[i].name;
            sh[i] = v[i].shard;
        }
        st = msbnb__write_index(od, names, sh, nv, shard_names, total);
    }
    for (size_t i = 0; i < nv; i++) free(v[i].name);
    free(v);
    free(names);
    free(sh);
    return st;
}

/* Everything both directions share: open, plan per shard, write, side files, commit.
 * `quantize` selects the direction. */
typedef struct {
    const msbnb_qconfig *cfg;
    const msbnb_convert_options *opt;
    msbnb_convert_report *rep;
    const char *in_path, *out_dir;
    int quantize;
} job_t;


static msbnb_status run_quantize_shard(ctx_t *c, const msbnb_st_file_t *f, int s,
                                       msbnb_st_writer_t *w, msbnb_convert_report *rep,
                                       int64_t *done, uint64_t *bytes_done, int64_t total,
                                       uint64_t bytes_total, double t0) {
    size_t n = msbnb_st_count(f), k = 0;
    item_t *items = calloc(n ? n : 1, sizeof *items);
    if (!items) return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    msbnb_status st = MSBNB_OK;
    for (size_t i = 0; i < n; i++) {
        msbnb_st_tensor_info ti;
        msbnb_st_get(f, i, &ti);
        if (ti.shard != s) continue;
        item_t *it = &items[k++];
        it->idx = i;
        it->ti = ti;
        it->quant = msbnb_qconfig_selects(c->cfg, ti.name, ti.dtype, ti.shape, ti.ndim) &&
                    msbnb__linear_candidate(ti.name, ti.dtype, ti.ndim, it->module, sizeof it->module);
    }
    for (size_t i = 0; i < k && st == MSBNB_OK; i++) {
        if (items[i].quant && c->cfg->format.double_quant) msbnb__st_populate(f, items[i].idx);
        st = declare(c, w, &items[i], &rep->n_tensors_out);
        if (st != MSBNB_OK) st = msbnb__wrap(st, c->label, items[i].ti.name);
        if (items[i].quant) msbnb_st_release(f, items[i].idx); /* the absmax pass read it */
    }
    if (st == MSBNB_OK) st = msbnb_st_writer_begin(w);
    for (size_t i = 0; i < k && st == MSBNB_OK; i++) {
        item_t *it = &items[i];
        uint64_t out = it->ti.nbytes;
        double err = 0;
        char kind[64];
        msbnb__st_populate(f, it->idx);
        if (it->quant) {
            st = quantize_one(c, w, it, &out, &err);
            msbnb__module_kind(it->module, kind, sizeof kind);
            rep->n_quantized++;
            rep->mean_rel_error += err;
            if (err > rep->max_rel_error) rep->max_rel_error = err;
        } else {
            st = msbnb_st_writer_write(w, it->ti.name, 0, it->ti.data, it->ti.nbytes);
            snprintf(kind, sizeof kind, "(copied)");
            rep->n_copied++;
        }
        if (st != MSBNB_OK) {
            st = msbnb__wrap(st, c->label, it->ti.name);
            break;
        }
        msbnb_st_release(f, it->idx);
        msbnb__report_add(rep, kind, it->ti.nbytes, out, err);
        rep->bytes_in += it->ti.nbytes;
        rep->bytes_out += out;
        (*done)++;
        *bytes_done += it->ti.nbytes;
        if (c->opt->progress) {
            msbnb_convert_progress p = {*done, total, *bytes_done, bytes_total, msbnb__now() - t0, it->ti.name};
            c->opt->progress(c->opt->progress_user, &p);
        }
    }
    for (size_t i = 0; i < k; i++) free(items[i].qs);
    free(items);
    return st;
}

static msbnb_status run(const job_t *jb) {
    double t0 = msbnb__now();
    msbnb_convert_report local;
    msbnb_convert_report *rep = jb->rep ? jb->rep : &local;
    memset(rep, 0, sizeof *rep);
    msbnb_st_file_t *f = NULL;
    MSBNB_TRY(msbnb_st_open(&f, jb->in_path));
    msbnb_status st = MSBNB_OK;
    size_t n = msbnb_st_count(f);
    int quantized_in = 0;
    uint64_t bytes_total = 0;
    for (size_t i = 0; i < n; i++) {
        msbnb_st_tensor_info ti;
        msbnb_st_get(f, i, &ti);
        quantized_in |= is_quantized_part(ti.name);
        bytes_total += ti.nbytes;
    }
    if (jb->quantize && quantized_in)
        st = msbnb__fail(MSBNB_ERR_STATE, "%s: the checkpoint is already quantized (it has "
                         "quant_state or SCB tensors); dequantize it first", jb->in_path);
    msbnb__outdir od;
    memset(&od, 0, sizeof od);
    if (st == MSBNB_OK) st = msbnb__outdir_begin(&od, jb->out_dir);
    ctx_t c;
    memset(&c, 0, sizeof c);
    c.cfg = jb->cfg;
    c.opt = jb->opt;
    c.nthreads = msbnb__resolve_threads(jb->opt->nthreads);
    int nsh = msbnb_st_shard_count(f);
    char *in_dir = msbnb__input_folder(jb->in_path);
    int lone = in_dir == NULL && nsh == 1;
    int64_t done = 0;
    uint64_t bytes_done = 0;
    const char **shard_names = calloc((size_t)nsh, sizeof *shard_names);
    if (!shard_names && st == MSBNB_OK) st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
    for (int s = 0; s < nsh && st == MSBNB_OK; s++) {
        uint64_t fsz = 0;
        st = file_size(msbnb_st_shard_path(f, s), &fsz);
        rep->file_bytes_in += fsz;
        shard_names[s] = out_shard_name(f, s, lone);
        char *path = msbnb__outdir_path(&od, shard_names[s]);
        msbnb_st_writer_t *w = NULL;
        if (st == MSBNB_OK) st = path ? msbnb_st_writer_create(&w, path)
                                      : msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "out of memory");
        const char *fmt = msbnb_st_metadata(f, "format");
        if (st == MSBNB_OK && fmt) st = msbnb_st_writer_set_metadata(w, "format", fmt);
        c.label = msbnb_st_shard_path(f, s);
        if (st == MSBNB_OK) {
            if (jb->quantize)
                st = run_quantize_shard(&c, f, s, w, rep, &done, &bytes_done, (int64_t)n, bytes_total, t0);
            else
                st = msbnb__dequant_shard(jb->opt, f, s, w, rep, &done, &bytes_done, (int64_t)n,
                                          bytes_total, t0);
        }
        if (st == MSBNB_OK) {
            rep->file_bytes_out += msbnb_st_writer_file_size(w);
            st = msbnb_st_writer_finish(w);
        }
        msbnb_st_writer_free(w);
        free(path);
    }
    if (st == MSBNB_OK && needs_index(jb->in_path, in_dir, f)) st = write_index(&od, shard_names, nsh);
    if (st == MSBNB_OK && in_dir) {
        msbnb__sbuf b = {0};
        if (jb->quantize) st = msbnb__qconfig_json(jb->cfg, NULL, 0, &b);
        if (st == MSBNB_OK) st = msbnb__copy_side_files(in_dir, &od, jb->quantize ? b.s : NULL);
        msbnb__sb_free(&b);
    }
    for (int k = 0; k < N_SCRATCH; k++) msbnb__free(c.scratch[k]);
    if (st == MSBNB_OK) st = msbnb__outdir_commit(&od);
    msbnb__outdir_abort(&od);
    free(shard_names);
    free(in_dir);
    rep->n_tensors_in = (int64_t)n;
    if (rep->n_quantized) rep->mean_rel_error /= (double)rep->n_quantized;
    rep->seconds = msbnb__now() - t0;
    msbnb_st_close(f);
    return st;
}

msbnb_status msbnb_convert_quantize(const char *in_path, const char *out_dir,
                                    const msbnb_qconfig *cfg, const msbnb_convert_options *opt,
                                    msbnb_convert_report *report) {
    MSBNB_CHECK_NULL(in_path);
    MSBNB_CHECK_NULL(out_dir);
    MSBNB_CHECK_NULL(cfg);
    MSBNB_TRY(msbnb_qconfig_validate(cfg));
    msbnb_convert_options d = msbnb_convert_options_default();
    job_t jb = {cfg, opt ? opt : &d, report, in_path, out_dir, 1};
    return run(&jb);
}

msbnb_status msbnb_convert_dequantize(const char *in_path, const char *out_dir,
                                      const msbnb_convert_options *opt,
                                      msbnb_convert_report *report) {
    MSBNB_CHECK_NULL(in_path);
    MSBNB_CHECK_NULL(out_dir);
    msbnb_convert_options d = msbnb_convert_options_default();
    if (opt && opt->out_dtype != MSBNB_DTYPE_COUNT_ && opt->out_dtype != MSBNB_DTYPE_F32 &&
        opt->out_dtype != MSBNB_DTYPE_F16 && opt->out_dtype != MSBNB_DTYPE_BF16)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: out_dtype must be F32, F16 or BF16",
                           __func__);
    job_t jb = {NULL, opt ? opt : &d, report, in_path, out_dir, 0};
    return run(&jb);
}
