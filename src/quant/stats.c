/* Error statistics between an original and a dequantized tensor, and per-tensor
 * quantization info (the seed's estimate_quantization_error / get_quantization_info). */
#include "internal.h"
#include "msbnb/quant.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

msbnb_status msbnb_estimate_quantization_error(msbnb_error_stats *out, const float *x,
                                               const float *y, int64_t n) {
    MSBNB_CHECK_NULL(out);
    MSBNB_CHECK_NULL(x);
    MSBNB_CHECK_NULL(y);
    MSBNB_CHECK_POS(n);
    /* the two buffers hold n floats each: n * 4 bytes must be addressable */
    if (n > INT64_MAX / 8)
        return msbnb__fail(MSBNB_ERR_OVERFLOW, "%s: n = %lld is too large", __func__, (long long)n);
    double maxd = 0, sumd = 0, sumd2 = 0, xx = 0, yy = 0, xy = 0;
    for (int64_t i = 0; i < n; i++) {
        double a = x[i], b = y[i];
        if (!isfinite(a) || !isfinite(b))
            return msbnb__fail(MSBNB_ERR_NON_FINITE, "%s: element %lld is not finite", __func__,
                               (long long)i);
        double d = fabs(a - b);
        if (d > maxd) maxd = d;
        sumd += d;
        sumd2 += d * d;
        xx += a * a;
        yy += b * b;
        xy += a * b;
    }
    memset(out, 0, sizeof *out);
    out->n = n;
    out->max_abs = maxd;
    out->mean_abs = sumd / (double)n;
    out->rmse = sqrt(sumd2 / (double)n);
    out->rel_frobenius = xx > 0 ? sqrt(sumd2 / xx) : (sumd2 > 0 ? INFINITY : 0.0);
    out->snr_db = sumd2 > 0 ? 10.0 * log10(xx / sumd2) : INFINITY;
    out->cosine = (xx > 0 && yy > 0) ? xy / sqrt(xx * yy) : ((xx == 0 && yy == 0) ? 1.0 : 0.0);
    return MSBNB_OK;
}

static void add_format(msbnb_quant_info *info, const char *name, msbnb_qparams p) {
    if (info->n_formats >= MSBNB_INFO_MAX_FORMATS) return;
    msbnb_format_cost *f = &info->formats[info->n_formats];
    if (msbnb_qparams_storage(&p, info->rows, info->cols, &f->bytes, &f->bits_per_weight) != MSBNB_OK)
        return; /* a format this shape cannot hold is simply not listed */
    snprintf(f->name, sizeof f->name, "%s", name);
    f->params = p;
    info->n_formats++;
}

msbnb_status msbnb_get_quantization_info(msbnb_quant_info *out, const float *w, int64_t rows,
                                         int64_t cols, double outlier_sigma) {
    MSBNB_CHECK_NULL(out);
    MSBNB_CHECK_NULL(w);
    MSBNB_CHECK_POS(rows);
    MSBNB_CHECK_POS(cols);
    int64_t n;
    if (!msbnb__mul_ok(rows, cols, &n) || n > INT64_MAX / 8)
        return msbnb__fail(MSBNB_ERR_OVERFLOW, "%s: %lld x %lld overflows", __func__,
                           (long long)rows, (long long)cols);
    if (!(outlier_sigma > 0)) outlier_sigma = 3.0;
    memset(out, 0, sizeof *out);
    out->rows = rows;
    out->cols = cols;
    out->outlier_sigma = outlier_sigma;
    double mn = w[0], mx = w[0], s = 0, s2 = 0;
    double ramin = INFINITY, ramax = 0, rasum = 0;
    for (int64_t r = 0; r < rows; r++) {
        double ra = 0;
        for (int64_t c = 0; c < cols; c++) {
            double v = w[r * cols + c];
            if (!isfinite(v))
                return msbnb__fail(MSBNB_ERR_NON_FINITE, "%s: w[%lld, %lld] is not finite",
                                   __func__, (long long)r, (long long)c);
            if (v < mn) mn = v;
            if (v > mx) mx = v;
            s += v;
            s2 += v * v;
            if (fabs(v) > ra) ra = fabs(v);
        }
        if (ra < ramin) ramin = ra;
        if (ra > ramax) ramax = ra;
        rasum += ra;
    }
    out->min = mn;
    out->max = mx;
    out->mean = s / (double)n;
    double var = s2 / (double)n - out->mean * out->mean;
    out->std = var > 0 ? sqrt(var) : 0;
    out->absmax = fmax(fabs(mn), fabs(mx));
    out->row_absmax_min = ramin;
    out->row_absmax_max = ramax;
    out->row_absmax_mean = rasum / (double)rows;
    int64_t outl = 0;
    double lim = outlier_sigma * out->std;
    for (int64_t i = 0; i < n; i++)
        if (fabs(w[i] - out->mean) > lim) outl++;
    out->outlier_fraction = out->std > 0 ? (double)outl / (double)n : 0.0;
    out->bytes_f32 = 4 * n;

    msbnb_qparams p;
    add_format(out, "f32", msbnb_qparams_default(MSBNB_QTYPE_F32));
    add_format(out, "bf16", msbnb_qparams_default(MSBNB_QTYPE_BF16));
    p = msbnb_qparams_default(MSBNB_QTYPE_INT8);
    add_format(out, "int8-row-sym", p);
    p.symmetric = 0;
    add_format(out, "int8-row-asym", p);
    static const int64_t groups[] = {32, 64, 128, 256};
    for (int i = 0; i < 4; i++) {
        char name[32];
        p = msbnb_qparams_default(MSBNB_QTYPE_INT4);
        p.block = groups[i];
        snprintf(name, sizeof name, "int4-g%lld-sym", (long long)groups[i]);
        add_format(out, name, p);
    }
    p = msbnb_qparams_default(MSBNB_QTYPE_INT4);
    p.symmetric = 0;
    add_format(out, "int4-g128-asym", p);
    p = msbnb_qparams_default(MSBNB_QTYPE_NF4);
    add_format(out, "nf4-b64", p);
    p.double_quant = 1;
    add_format(out, "nf4-b64-dq", p);
    p = msbnb_qparams_default(MSBNB_QTYPE_FP4);
    add_format(out, "fp4-b64", p);
    p.double_quant = 1;
    add_format(out, "fp4-b64-dq", p);
    add_format(out, "q8dyn-b256", msbnb_qparams_default(MSBNB_QTYPE_Q8_DYNAMIC));
    return MSBNB_OK;
}
