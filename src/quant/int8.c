/* INT8 formats: per-row/per-tensor symmetric and asymmetric (the seed's quantize_8bit),
 * and LLM.int8 row-wise quantization with outlier columns (bitsandbytes
 * int8_vectorwise_quant). */
#include "cpu/kernels.h"
#include "internal.h"
#include "msbnb/quant.h"
#include "quant/codebooks.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static msbnb_status check_dims(int64_t rows, int64_t cols, const char *fn) {
    if (rows <= 0 || cols <= 0)
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: rows and cols must be positive (got %lld x %lld)",
                           fn, (long long)rows, (long long)cols);
    int64_t n;
    if (!msbnb__mul_ok(rows, cols, &n) || n > INT64_MAX / 8)
        return msbnb__fail(MSBNB_ERR_OVERFLOW, "%s: %lld x %lld elements overflow", fn,
                           (long long)rows, (long long)cols);
    return MSBNB_OK;
}

/* First non-finite element of x[0, n), or -1 (vectorised check, scalar search only on
 * failure). */
static int64_t first_non_finite(const msbnb__kernel_table *k, const float *x, int64_t n) {
    if (!isnan(k->absmax(x, n))) return -1;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return i;
    return -1;
}

typedef struct {
    const msbnb__kernel_table *k;
    int8_t *q;
    float *scale, *offset;
    const float *w;
    int64_t len; /* elements per group (row, or the whole tensor in chunks) */
    int symmetric;
    int per_tensor;
    float pt_s, pt_md, pt_z; /* per-tensor: scale, multiplier (sym) or divisor, zero point */
} q8_job;

/* Symmetric: q = round(x * 127/amax); asymmetric: q = round(x / s) + z, with the range
 * widened to contain 0 so that 0 is exactly representable (as PyTorch's observers do),
 * s = (max - min)/255 and z = -128 - round(min / s). */
static void q8_params(float mn, float mx, int symmetric, float *scale, float *mul_or_div,
                      float *z) {
    if (symmetric) {
        float amax = fmaxf(fabsf(mn), fabsf(mx));
        *scale = amax / 127.0f;
        *mul_or_div = amax > 0 ? 127.0f / amax : 0.0f;
        *z = 0.0f;
        return;
    }
    if (mn > 0) mn = 0;
    if (mx < 0) mx = 0;
    float s = (mx - mn) / 255.0f;
    *scale = s;
    *mul_or_div = s;
    if (s == 0) {
        *z = 0.0f;
        return;
    }
    float zz = -128.0f - rintf(mn / s);
    *z = zz < -128 ? -128 : zz > 127 ? 127 : zz;
}

static void q8_range(void *ctx, int64_t begin, int64_t end, int tid) {
    const q8_job *j = ctx;
    (void)tid;
    for (int64_t g = begin; g < end; g++) {
        const float *x = j->w + g * j->len;
        int8_t *o = j->q + g * j->len;
        float s = j->pt_s, md = j->pt_md, z = j->pt_z;
        if (!j->per_tensor) {
            float mn, mx;
            j->k->minmax(x, j->len, &mn, &mx);
            q8_params(mn, mx, j->symmetric, &s, &md, &z);
            j->scale[g] = s;
            if (!j->symmetric) j->offset[g] = z;
        }
        if (!j->symmetric && s == 0) memset(o, 0, (size_t)j->len);
        else j->k->q8_row(o, x, j->len, md, !j->symmetric, z, NULL);
    }
}

msbnb_status msbnb_quantize_8bit(int8_t *q, float *scale, float *offset, const float *w,
                                 int64_t rows, int64_t cols, int symmetric, int per_tensor) {
    MSBNB_CHECK_NULL(q);
    MSBNB_CHECK_NULL(scale);
    MSBNB_CHECK_NULL(w);
    if (!symmetric) MSBNB_CHECK_NULL(offset);
    MSBNB_TRY(check_dims(rows, cols, __func__));
    msbnb_cpu_tier tier;
    MSBNB_TRY(msbnb_cpu_check_env(&tier)); /* MSBNB_CPU naming a tier this CPU lacks: an error */
    const msbnb__kernel_table *k = msbnb__kernels(tier);
    int64_t bad = first_non_finite(k, w, rows * cols);
    if (bad >= 0)
        return msbnb__fail(MSBNB_ERR_NON_FINITE, "%s: row %lld contains NaN or Inf", __func__,
                           (long long)(per_tensor ? 0 : bad / cols));
    /* Per row: one group per row. Per tensor: the tensor's one range and scale, applied
     * to row-sized pieces so that the work still spreads over threads. */
    q8_job j = {k, q, scale, offset, w, cols, symmetric, per_tensor, 0, 0, 0};
    if (per_tensor) {
        float mn, mx;
        k->minmax(w, rows * cols, &mn, &mx);
        q8_params(mn, mx, symmetric, &j.pt_s, &j.pt_md, &j.pt_z);
        scale[0] = j.pt_s;
        if (!symmetric) offset[0] = j.pt_z;
    }
    msbnb__parallel_for(0, rows, (1 << 16) / cols + 1, q8_range, &j);
    return MSBNB_OK;
}

msbnb_status msbnb_dequantize_8bit(float *out, const int8_t *q, const float *scale,
                                   const float *offset, int64_t rows, int64_t cols,
                                   int symmetric, int per_tensor) {
    MSBNB_CHECK_NULL(out);
    MSBNB_CHECK_NULL(q);
    MSBNB_CHECK_NULL(scale);
    if (!symmetric) MSBNB_CHECK_NULL(offset);
    MSBNB_TRY(check_dims(rows, cols, __func__));
    int64_t groups = per_tensor ? 1 : rows, len = per_tensor ? rows * cols : cols;
    for (int64_t g = 0; g < groups; g++) {
        float s = scale[g], z = symmetric ? 0.0f : offset[g];
        for (int64_t i = 0; i < len; i++) out[g * len + i] = ((float)q[g * len + i] - z) * s;
    }
    return MSBNB_OK;
}

typedef struct {
    const msbnb__kernel_table *k;
    const void *a;
    msbnb_dtype a_type;
    int64_t cols;
    float threshold;
    float *rowbuf;      /* [nthreads][cols] (F16/BF16 input widened here) */
    uint8_t *outl;      /* pass 1: [nthreads][cols] per-thread flags; pass 2: [cols] merged */
    int64_t *bad;       /* [nthreads]: first non-finite element index seen, or -1 */
    int8_t *q;
    float *row_absmax;
} vq_job;

static const float *vq_row(const vq_job *j, int64_t r, int tid) {
    if (j->a_type == MSBNB_DTYPE_F32) return (const float *)j->a + r * j->cols;
    float *row = j->rowbuf + (int64_t)tid * j->cols;
    msbnb__load_f32(row, j->a, j->a_type, r * j->cols, j->cols);
    return row;
}

/* Pass 1: outlier columns (|a| >= threshold anywhere in the column) and the NaN check. */
static void vq_scan(void *ctx, int64_t begin, int64_t end, int tid) {
    const vq_job *j = ctx;
    uint8_t *fl = j->outl ? j->outl + (int64_t)tid * j->cols : NULL;
    for (int64_t r = begin; r < end; r++) {
        const float *row = vq_row(j, r, tid);
        if (isnan(j->k->absmax(row, j->cols))) {
            for (int64_t c = 0; c < j->cols; c++)
                if (!isfinite(row[c])) {
                    j->bad[tid] = r * j->cols + c;
                    return;
                }
        }
        if (fl) {
            float t = j->threshold;
            for (int64_t c = 0; c < j->cols; c++) fl[c] |= (uint8_t)(fabsf(row[c]) >= t);
        }
    }
}

/* Pass 2: per row, absmax over the entries with |a| <= threshold (bitsandbytes'
 * kInt8VectorQuant skips |a| > threshold), then q = round(a * 127 / absmax); outlier
 * columns get 0. */
static void vq_quant(void *ctx, int64_t begin, int64_t end, int tid) {
    const vq_job *j = ctx;
    for (int64_t r = begin; r < end; r++) {
        const float *row = vq_row(j, r, tid);
        float m;
        if (j->outl) {
            float lane[8] = {0}, t = j->threshold;
            int64_t c = 0;
            for (; c + 8 <= j->cols; c += 8)
                for (int l = 0; l < 8; l++) {
                    float v = fabsf(row[c + l]);
                    v = v > t ? 0.0f : v;
                    lane[l] = v > lane[l] ? v : lane[l];
                }
            m = 0.0f;
            for (; c < j->cols; c++) {
                float v = fabsf(row[c]);
                v = v > t ? 0.0f : v;
                m = v > m ? v : m;
            }
            for (int l = 0; l < 8; l++) m = lane[l] > m ? lane[l] : m;
        } else {
            m = j->k->absmax(row, j->cols);
        }
        j->row_absmax[r] = m;
        /* bitsandbytes: __fdividef(127, absmax) = RN(127 * rcp.approx(absmax)); m == 0 gives
         * inf, and 0 * inf = NaN -> code 0. */
        float s = 127.0f * msbnb__bnb_rcp(m);
        j->k->q8_row(j->q + r * j->cols, row, j->cols, s, 0, 0.0f, j->outl);
    }
}

msbnb_status msbnb_int8_vectorwise_quant(int8_t *q, float *row_absmax, int64_t *outlier_cols,
                                         int64_t outlier_cap, int64_t *n_outlier_cols,
                                         const void *a, msbnb_dtype a_type, int64_t rows,
                                         int64_t cols, float threshold) {
    MSBNB_CHECK_NULL(q);
    MSBNB_CHECK_NULL(row_absmax);
    MSBNB_CHECK_NULL(a);
    MSBNB_TRY(check_dims(rows, cols, __func__));
    MSBNB_TRY(msbnb__check_float_type(a_type, __func__, "a_type"));
    if (!(threshold >= 0.0f) || isinf(threshold))
        return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: threshold must be finite and >= 0",
                           __func__);
    if (threshold > 0) {
        MSBNB_CHECK_NULL(n_outlier_cols);
        /* a negative capacity is a caller bug, not a buffer that happens to be full */
        if (outlier_cap < 0)
            return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: outlier_cap must be >= 0 (got %lld)",
                               __func__, (long long)outlier_cap);
        if (outlier_cap > 0) MSBNB_CHECK_NULL(outlier_cols);
    }
    msbnb_cpu_tier tier;
    MSBNB_TRY(msbnb_cpu_check_env(&tier)); /* MSBNB_CPU naming a tier this CPU lacks: an error */
    int nt = msbnb__resolve_threads(0);
    if (nt > rows) nt = (int)rows;
    int64_t grain = (1 << 15) / cols + 1;
    vq_job j = {msbnb__kernels(tier), a, a_type, cols, threshold,
                NULL, NULL, NULL, q, row_absmax};
    msbnb_status st = MSBNB_OK;
    if (a_type != MSBNB_DTYPE_F32) {
        int64_t bytes;
        if (!msbnb__mul_ok((int64_t)nt * 4, cols, &bytes))
            return msbnb__fail(MSBNB_ERR_OVERFLOW, "%s: scratch size overflows", __func__);
        MSBNB_TRY(msbnb__alloc_checked((void **)&j.rowbuf, (size_t)bytes, __func__));
    }
    j.bad = malloc((size_t)nt * sizeof *j.bad);
    if (threshold > 0) j.outl = calloc((size_t)nt, (size_t)cols);
    if (!j.bad || (threshold > 0 && !j.outl)) {
        st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "%s: out of memory", __func__);
        goto done;
    }
    for (int t = 0; t < nt; t++) j.bad[t] = -1;
    msbnb__parallel_for(nt, rows, grain, vq_scan, &j);
    int64_t bad = -1;
    for (int t = 0; t < nt; t++)
        if (j.bad[t] >= 0 && (bad < 0 || j.bad[t] < bad)) bad = j.bad[t];
    if (bad >= 0) {
        /* Report the first bad element in row-major order (threads stop at their own). */
        for (int64_t i = 0; i < bad; i++) {
            float v;
            msbnb__load_f32(&v, a, a_type, i, 1);
            if (!isfinite(v)) {
                bad = i;
                break;
            }
        }
        st = msbnb__fail(MSBNB_ERR_NON_FINITE, "%s: a[%lld, %lld] is not finite", __func__,
                         (long long)(bad / cols), (long long)(bad % cols));
        goto done;
    }
    if (j.outl)
        for (int t = 1; t < nt; t++)
            for (int64_t c = 0; c < cols; c++) j.outl[c] |= j.outl[(int64_t)t * cols + c];
    msbnb__parallel_for(nt, rows, grain, vq_quant, &j);
    if (threshold > 0) {
        int64_t k = 0;
        for (int64_t c = 0; c < cols; c++) {
            if (!j.outl[c]) continue;
            if (k < outlier_cap) outlier_cols[k] = c;
            k++;
        }
        *n_outlier_cols = k;
        if (k > outlier_cap)
            st = msbnb__fail(MSBNB_ERR_BUFFER_TOO_SMALL, "%s: %lld outlier columns, capacity %lld",
                             __func__, (long long)k, (long long)outlier_cap);
    } else if (n_outlier_cols) {
        *n_outlier_cols = 0;
    }
done:
    msbnb__free(j.rowbuf);
    free(j.outl);
    free(j.bad);
    return st;
}

msbnb_status msbnb_int8_vectorwise_dequant(float *out, const int8_t *q, const float *row_absmax,
                                           int64_t rows, int64_t cols) {
    MSBNB_CHECK_NULL(out);
    MSBNB_CHECK_NULL(q);
    MSBNB_CHECK_NULL(row_absmax);
    MSBNB_TRY(check_dims(rows, cols, __func__));
    for (int64_t r = 0; r < rows; r++) {
        float s = row_absmax[r] / 127.0f;
        for (int64_t c = 0; c < cols; c++) out[r * cols + c] = (float)q[r * cols + c] * s;
    }
    return MSBNB_OK;
}
