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

static inline int8_t sat8(float v) {
    if (v > 127.0f) return 127;
    if (v < -128.0f) return -128;
    return (int8_t)v;
}

/* Range of a span; false if it holds NaN/Inf. */
static bool span_range(const float *x, int64_t n, float *mn, float *mx) {
    float lo = x[0], hi = x[0];
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) return false;
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
    }
    *mn = lo;
    *mx = hi;
    return true;
}

msbnb_status msbnb_quantize_8bit(int8_t *q, float *scale, float *offset, const float *w,
                                 int64_t rows, int64_t cols, int symmetric, int per_tensor) {
    MSBNB_CHECK_NULL(q);
    MSBNB_CHECK_NULL(scale);
    MSBNB_CHECK_NULL(w);
    if (!symmetric) MSBNB_CHECK_NULL(offset);
    MSBNB_TRY(check_dims(rows, cols, __func__));
    int64_t groups = per_tensor ? 1 : rows, len = per_tensor ? rows * cols : cols;
    for (int64_t g = 0; g < groups; g++) {
        const float *x = w + g * len;
        int8_t *o = q + g * len;
        float mn, mx;
        if (!span_range(x, len, &mn, &mx))
            return msbnb__fail(MSBNB_ERR_NON_FINITE, "%s: row %lld contains NaN or Inf", __func__,
                               (long long)(per_tensor ? 0 : g));
        if (symmetric) {
            float amax = fmaxf(fabsf(mn), fabsf(mx));
            float s = amax / 127.0f;
            scale[g] = s;
            float inv = amax > 0 ? 127.0f / amax : 0.0f;
            for (int64_t i = 0; i < len; i++) o[i] = sat8(rintf(x[i] * inv));
        } else {
            /* The range always contains 0 so that 0 is exactly representable (PyTorch's
             * observers do the same); then z = -128 - round(min/scale). */
            if (mn > 0) mn = 0;
            if (mx < 0) mx = 0;
            float s = (mx - mn) / 255.0f;
            scale[g] = s;
            if (s == 0) {
                offset[g] = 0;
                memset(o, 0, (size_t)len);
                continue;
            }
            float z = -128.0f - rintf(mn / s);
            if (z < -128) z = -128;
            if (z > 127) z = 127;
            offset[g] = z;
            for (int64_t i = 0; i < len; i++) o[i] = sat8(rintf(x[i] / s) + z);
        }
    }
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
        if (outlier_cap > 0) MSBNB_CHECK_NULL(outlier_cols);
    }
    float *row = NULL;
    uint8_t *is_outl = NULL;
    MSBNB_TRY(msbnb__alloc_checked((void **)&row, (size_t)cols * sizeof(float), __func__));
    if (threshold > 0) {
        is_outl = calloc((size_t)cols, 1);
        if (!is_outl) {
            msbnb__free(row);
            return msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "%s: out of memory", __func__);
        }
    }
    msbnb_status st = MSBNB_OK;
    /* Pass 1: outlier columns (|a| >= threshold anywhere in the column) and NaN check. */
    for (int64_t r = 0; r < rows && st == MSBNB_OK; r++) {
        msbnb__load_f32(row, a, a_type, r * cols, cols);
        for (int64_t c = 0; c < cols; c++) {
            if (!isfinite(row[c])) {
                st = msbnb__fail(MSBNB_ERR_NON_FINITE, "%s: a[%lld, %lld] is not finite", __func__,
                                 (long long)r, (long long)c);
                break;
            }
            if (is_outl && fabsf(row[c]) >= threshold) is_outl[c] = 1;
        }
    }
    /* Pass 2: per row, absmax over the non-outlier entries (bitsandbytes kInt8VectorQuant
     * skips |a| > threshold), then q = round(a * 127 / absmax); outlier columns get 0. */
    for (int64_t r = 0; r < rows && st == MSBNB_OK; r++) {
        msbnb__load_f32(row, a, a_type, r * cols, cols);
        float m = 0.0f;
        for (int64_t c = 0; c < cols; c++) {
            float v = fabsf(row[c]);
            if (is_outl && v > threshold) continue;
            if (v > m) m = v;
        }
        row_absmax[r] = m;
        /* bitsandbytes: __fdividef(127, absmax) = RN(127 * rcp.approx(absmax)); m == 0 gives
         * inf and 0 * inf = NaN -> code 0 below. */
        float s = 127.0f * msbnb__bnb_rcp(m);
        for (int64_t c = 0; c < cols; c++) {
            float v = row[c] * s;
            int8_t code = (v == v) ? sat8(rintf(v)) : 0;
            if (is_outl && is_outl[c]) code = 0;
            q[r * cols + c] = code;
        }
    }
    if (st == MSBNB_OK && threshold > 0) {
        int64_t k = 0;
        for (int64_t c = 0; c < cols; c++) {
            if (!is_outl[c]) continue;
            if (k < outlier_cap) outlier_cols[k] = c;
            k++;
        }
        *n_outlier_cols = k;
        if (k > outlier_cap)
            st = msbnb__fail(MSBNB_ERR_BUFFER_TOO_SMALL, "%s: %lld outlier columns, capacity %lld",
                             __func__, (long long)k, (long long)outlier_cap);
    } else if (st == MSBNB_OK && n_outlier_cols) {
        *n_outlier_cols = 0;
    }
    msbnb__free(row);
    free(is_outl);
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
