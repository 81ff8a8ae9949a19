/* Per-group INT4 along the input dimension, packed two per byte (element 2i high nibble,
 * bitsandbytes' order). Symmetric follows ggml's Q4_0 (d = signed max / -8, so the
 * largest-magnitude value lands exactly on code 0 and all 16 levels are used);
 * asymmetric follows ggml's Q4_1 (d = (max - min)/15 with the group minimum as offset). */
#include "cpu/kernels.h"
#include "internal.h"
#include "msbnb/quant.h"

#include <math.h>
#include <string.h>

msbnb_status msbnb_int4_sizes(int64_t rows, int64_t cols, int64_t group_size,
                              int64_t *groups_per_row, int64_t *packed_bytes) {
    MSBNB_CHECK_POS(rows);
    MSBNB_CHECK_POS(cols);
    if (group_size < 2 || (group_size & 1))
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "int4 group size %lld must be even and >= 2",
                           (long long)group_size);
    int64_t n;
    if (!msbnb__mul_ok(rows, cols, &n) || n > INT64_MAX / 8)
        return msbnb__fail(MSBNB_ERR_OVERFLOW, "int4: %lld x %lld elements overflow", (long long)rows,
                           (long long)cols);
    if (groups_per_row) *groups_per_row = msbnb__ceil_div(cols, group_size);
    if (packed_bytes) *packed_bytes = (n + 1) / 2;
    return MSBNB_OK;
}

static inline void put_nibble(uint8_t *packed, int64_t i, uint8_t v) {
    if (i & 1) packed[i >> 1] = (uint8_t)((packed[i >> 1] & 0xf0) | v);
    else packed[i >> 1] = (uint8_t)((packed[i >> 1] & 0x0f) | (v << 4));
}
static inline uint8_t get_nibble(const uint8_t *packed, int64_t i) {
    return (i & 1) ? (packed[i >> 1] & 15) : (packed[i >> 1] >> 4);
}

/* Writes n codes as nibbles starting at nibble index `base` (element 2i in the high
 * nibble). A partial byte at either end keeps its other nibble. */
static void pack_span(uint8_t *packed, int64_t base, const uint8_t *codes, int64_t n) {
    int64_t i = 0;
    if ((base & 1) && n > 0) {
        put_nibble(packed, base, codes[0]);
        i = 1;
    }
    uint8_t *p = packed + ((base + i) >> 1);
    int64_t pairs = (n - i) / 2;
    for (int64_t k = 0; k < pairs; k++) p[k] = (uint8_t)(codes[i + 2 * k] << 4 | codes[i + 2 * k + 1]);
    i += 2 * pairs;
    if (i < n) put_nibble(packed, base + i, codes[i]);
}

typedef struct {
    const msbnb__kernel_table *k;
    uint8_t *packed;
    float *scales, *mins;
    const float *w;
    int64_t rows, cols, group_size, gpr;
    int symmetric;
    uint8_t *codes; /* [nthreads][cols] */
} q4i_job;

static void q4i_row(const q4i_job *j, int64_t r, uint8_t *codes) {
    for (int64_t g = 0; g < j->gpr; g++) {
        int64_t c0 = g * j->group_size;
        int64_t len = j->cols - c0 < j->group_size ? j->cols - c0 : j->group_size;
        const float *x = j->w + r * j->cols + c0;
        if (j->symmetric) {
            /* d = (signed value of largest magnitude, the first one on ties) / -8 */
            float amax = j->k->absmax(x, len), m = 0.0f;
            if (amax > 0)
                for (int64_t i = 0; i < len; i++)
                    if (fabsf(x[i]) == amax) {
                        m = x[i];
                        break;
                    }
            float d = m / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
            j->scales[r * j->gpr + g] = d;
            j->k->q4_int_codes(codes + c0, x, len, id, 0.0f, 8.0f);
        } else {
            float mn = x[0], mx = x[0];
            for (int64_t i = 1; i < len; i++) {
                if (x[i] < mn) mn = x[i];
                if (x[i] > mx) mx = x[i];
            }
            float d = (mx - mn) / 15.0f, id = d != 0 ? 1.0f / d : 0.0f;
            j->scales[r * j->gpr + g] = d;
            j->mins[r * j->gpr + g] = mn;
            j->k->q4_int_codes(codes + c0, x, len, id, mn, 0.0f);
        }
    }
    pack_span(j->packed, r * j->cols, codes, j->cols);
}

/* Units are pairs of rows: row 2u starts at an even nibble, so when cols is odd the byte
 * shared by rows 2u and 2u+1 is written by one thread, and no byte is shared across
 * units. */
static void q4i_range(void *ctx, int64_t begin, int64_t end, int tid) {
    const q4i_job *j = ctx;
    uint8_t *codes = j->codes + (int64_t)tid * j->cols;
    for (int64_t u = begin; u < end; u++) {
        q4i_row(j, 2 * u, codes);
        if (2 * u + 1 < j->rows) q4i_row(j, 2 * u + 1, codes);
    }
}

msbnb_status msbnb_quantize_int4(uint8_t *packed, float *scales, float *mins, const float *w,
                                 int64_t rows, int64_t cols, int64_t group_size, int symmetric) {
    MSBNB_CHECK_NULL(packed);
    MSBNB_CHECK_NULL(scales);
    MSBNB_CHECK_NULL(w);
    if (!symmetric) MSBNB_CHECK_NULL(mins);
    int64_t gpr, nbytes;
    MSBNB_TRY(msbnb_int4_sizes(rows, cols, group_size, &gpr, &nbytes));
    msbnb_cpu_tier tier;
    MSBNB_TRY(msbnb_cpu_check_env(&tier)); /* MSBNB_CPU naming a tier this CPU lacks: an error */
    const msbnb__kernel_table *k = msbnb__kernels(tier);
    if (isnan(k->absmax(w, rows * cols)))
        for (int64_t i = 0; i < rows * cols; i++)
            if (!isfinite(w[i]))
                return msbnb__fail(MSBNB_ERR_NON_FINITE, "%s: w[%lld] is not finite", __func__,
                                   (long long)i);
    int64_t units = (rows + 1) / 2;
    int nt = msbnb__resolve_threads(0);
    if (nt > units) nt = (int)units;
    int64_t bytes;
    if (!msbnb__mul_ok(nt, cols, &bytes))
        return msbnb__fail(MSBNB_ERR_OVERFLOW, "%s: scratch size overflows", __func__);
    q4i_job j = {k, packed, scales, mins, w, rows, cols, group_size, gpr, symmetric, NULL};
    MSBNB_TRY(msbnb__alloc_checked((void **)&j.codes, (size_t)bytes, __func__));
    if ((rows * cols) & 1) packed[nbytes - 1] = 0; /* pad nibble */
    msbnb__parallel_for(nt, units, (1 << 15) / (2 * cols) + 1, q4i_range, &j);
    msbnb__free(j.codes);
    return MSBNB_OK;
}

msbnb_status msbnb_dequantize_int4(float *out, const uint8_t *packed, const float *scales,
                                   const float *mins, int64_t rows, int64_t cols,
                                   int64_t group_size, int symmetric) {
    MSBNB_CHECK_NULL(out);
    MSBNB_CHECK_NULL(packed);
    MSBNB_CHECK_NULL(scales);
    if (!symmetric) MSBNB_CHECK_NULL(mins);
    int64_t gpr;
    MSBNB_TRY(msbnb_int4_sizes(rows, cols, group_size, &gpr, NULL));
    msbnb_cpu_tier tier;
    MSBNB_TRY(msbnb_cpu_check_env(&tier)); /* MSBNB_CPU naming a tier this CPU lacks: an error */
    if (symmetric && group_size >= 32 && (group_size & (group_size - 1)) == 0 && cols % group_size == 0) {
        /* whole power-of-two groups along the rows are flat blocks of the tensor, and
         * (u - 8) * s is a 16-entry table times the block's scale: the 4-bit blockwise
         * dequantizer of the CPU tier computes exactly that */
        static const float k_sym[16] = {-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7};
        msbnb__kernels(tier)->dequant4_f32(out, packed, scales, k_sym, group_size, 0, rows * cols);
        return MSBNB_OK;
    }
    /* group by group (no division per element), the two formats in separate loops; the
     * element expressions are the specification's, unchanged */
    for (int64_t r = 0; r < rows; r++) {
        const int64_t i0 = r * cols;
        for (int64_t g = 0; g < gpr; g++) {
            const int64_t c0 = g * group_size, c1 = cols - c0 < group_size ? cols : c0 + group_size;
            const float s = scales[r * gpr + g];
            if (symmetric) {
                for (int64_t c = c0; c < c1; c++) out[i0 + c] = ((float)get_nibble(packed, i0 + c) - 8.0f) * s;
            } else {
                const float mn = mins[r * gpr + g];
                for (int64_t c = c0; c < c1; c++) out[i0 + c] = (float)get_nibble(packed, i0 + c) * s + mn;
            }
        }
    }
    return MSBNB_OK;
}

msbnb_status msbnb_pack_4bit(uint8_t *packed, const uint8_t *codes, int64_t n) {
    MSBNB_CHECK_NULL(packed);
    MSBNB_CHECK_NULL(codes);
    MSBNB_CHECK_POS(n);
    for (int64_t i = 0; i + 1 < n; i += 2)
        packed[i / 2] = (uint8_t)((codes[i] & 15) << 4 | (codes[i + 1] & 15));
    if (n & 1) packed[n / 2] = (uint8_t)((codes[n - 1] & 15) << 4);
    return MSBNB_OK;
}

msbnb_status msbnb_unpack_4bit(uint8_t *codes, const uint8_t *packed, int64_t n) {
    MSBNB_CHECK_NULL(packed);
    MSBNB_CHECK_NULL(codes);
    MSBNB_CHECK_POS(n);
    for (int64_t i = 0; i < n; i++) codes[i] = get_nibble(packed, i);
    return MSBNB_OK;
}
