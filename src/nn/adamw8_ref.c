/* Blockwise 8-bit AdamW: threshold tables of the dQuantize search, the scalar fused
 * kernel and the composed spec (adamw8_kernels.h). */
#include "adamw8_kernels.h"
#include "internal.h"
#include "msbnb/quant.h"
#include "quant/codebooks.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_f(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static float f_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t u_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* The bucket table (adamw8_kernels.h); 0 if some bucket holds more than one threshold,
 * or one of the clamped end buckets holds any. */
static int build_buckets(msbnb__q8map *m) {
    const int nb = MSBNB__Q8_NBUCKET;
    for (int s = 0; s < 2; s++)
        for (int b = 0; b < nb; b++) {
            uint32_t lo = b == 0 ? 0u : (uint32_t)(MSBNB__Q8_BBASE + b) << 16;
            uint32_t hi = b == nb - 1 ? 0x7f800000u : ((uint32_t)(MSBNB__Q8_BBASE + b + 1) << 16) - 1u;
            float xlo = s ? -f_of(hi) : f_of(lo), xhi = s ? -f_of(lo) : f_of(hi);
            int c0 = msbnb__q8map_code(m, xlo), c1 = msbnb__q8map_code(m, xhi);
            uint32_t e;
            if (c1 == c0) e = (uint32_t)c0 << 17 | 0x10000u;
            else if (c1 == c0 + 1 && b != 0 && b != nb - 1) {
                uint32_t at = u_of(fabsf(m->thr[c1])) & 0xffffu;
                e = (uint32_t)c0 << 17 | (s ? 0xffffu - at : at);
            } else return 0;
            m->bucket[s * nb + b] = e;
        }
    return 1;
}

int msbnb__q8map_init(msbnb__q8map *m, const float *code256) {
    memset(m, 0, sizeof *m);
    memcpy(m->code, code256, sizeof m->code);
    for (int i = 1; i < 256; i++)
        if (!(code256[i] > code256[i - 1])) return -1;
    if (msbnb__code8_of(code256, NAN) != 0) return -1;
    /* Every constant the search compares x with: entries, midpoints, and +-inf. */
    enum { NC = 256 * 257 / 2 + 2 };
    float *c = malloc(NC * sizeof(float));
    if (!c) return -1;
    int n = 0;
    for (int i = 0; i < 256; i++)
        for (int j = i; j < 256; j++) c[n++] = i == j ? code256[i] : (code256[i] + code256[j]) * 0.5f;
    c[n++] = -INFINITY;
    c[n++] = INFINITY;
    qsort(c, (size_t)n, sizeof(float), cmp_f);
    int u = 0;
    for (int i = 0; i < n; i++)
        if (u == 0 || c[i] > c[u - 1]) c[u++] = c[i]; /* -0 and +0 compare equal: one piece */
    /* Walk the pieces {c_i}, (c_i, c_i+1) upwards; the search is constant on each (the
     * first piece is -inf: codes it already reaches get threshold -inf). */
    int prev = 0, ok = 1;
    for (int k = 0; k < 256; k++) m->thr[k] = NAN; /* unreachable: x >= NaN never holds */
    m->thr[0] = -INFINITY;
    for (int i = 0; i < u && ok; i++) {
        float rep[2] = {c[i], nextafterf(c[i], INFINITY)};
        int npiece = i + 1 < u && rep[1] < c[i + 1] ? 2 : 1;
        for (int q = 0; q < npiece; q++) {
            int f = msbnb__code8_of(code256, rep[q]);
            if (f < prev) {
                ok = 0;
                break;
            }
            for (int k = prev + 1; k <= f; k++) m->thr[k] = rep[q];
            prev = f;
        }
    }
    free(c);
    if (!ok) return -1;
    for (int s = 128; s >= 1; s >>= 1)
        for (int j = 0; j < 128 / s; j++) m->lvl[128 / s - 1 + j] = m->thr[(2 * j + 1) * s];
    m->bucket_ok = build_buckets(m);
    return 0;
}

uint8_t msbnb__q8map_code(const msbnb__q8map *m, float x) {
    int r = 0; /* branch-free: codes of real data are unpredictable */
    for (int s = 128; s >= 1; s >>= 1) r += s & -(int)(x >= m->thr[r + s]);
    return (uint8_t)r;
}

/* max |x|, or NaN if any element is NaN or Inf (as the quantizer's absmax scan). */
static float absmax_nan(const float *x, int64_t len) {
    float m = 0.0f;
    int bad = 0;
    for (int64_t i = 0; i < len; i++) {
        float a = fabsf(x[i]);
        bad |= !(a <= 3.40282347e38f);
        if (a > m) m = a;
    }
    return bad ? NAN : m;
}

/* Codes of a block as msbnb__quant8_block_ref computes them (bnb's rcp, mul.ftz), the
 * search by threshold count; a is the block's max |x| (finite). */
static void quant_block(uint8_t *restrict q, const float *restrict x, int64_t len, float a,
                        const msbnb__q8map *m) {
    float inv = msbnb__bnb_rcp(a);
    for (int64_t i = 0; i < len; i++) q[i] = msbnb__q8map_code(m, msbnb__mul_ftz(x[i], inv));
}

/* Scalar fused kernel: the spec's operations on one block, in the spec's order. */
static int block_ref(float *restrict p, float *restrict g, uint8_t *restrict qm,
                      float *restrict am, uint8_t *restrict qv, float *restrict av, int64_t len,
                      const msbnb__adamw_k *k, const msbnb__q8map *mmap, const msbnb__q8map *vmap) {
    float m[MSBNB__Q8_BLOCK], v[MSBNB__Q8_BLOCK];
    float sm = *am, sv = *av;
    for (int64_t i = 0; i < len; i++) {
        float mi = mmap->code[qm[i]] * sm, vi = vmap->code[qv[i]] * sv;
        float gi = g[i] * k->gm;
        mi = k->b1 * mi + k->omb1 * gi;
        vi = k->b2 * vi + k->omb2 * gi * gi;
        float denom = sqrtf(vi) / k->bc2_sqrt + k->eps;
        p[i] = p[i] * k->decay - k->step * mi / denom;
        g[i] = 0.0f;
        m[i] = mi;
        v[i] = vi;
    }
    float amx = absmax_nan(m, len), avx = absmax_nan(v, len);
    if (!isfinite(amx) || !isfinite(avx)) return -1;
    *am = amx;
    *av = avx;
    quant_block(qm, m, len, amx, mmap);
    quant_block(qv, v, len, avx, vmap);
    return 0;
}

msbnb_status msbnb__adamw8_composed(float *p, const float *g, uint8_t *qm, float *am, uint8_t *qv,
                                    float *av, int64_t n, const msbnb__adamw_k *k,
                                    const float *mcode, const float *vcode) {
    enum { CHUNK = MSBNB__Q8_BLOCK * 64 };
    float *tm = msbnb__alloc(CHUNK * sizeof(float)), *tv = msbnb__alloc(CHUNK * sizeof(float));
    msbnb_status st = MSBNB_OK;
    if (!tm || !tv) st = msbnb__fail(MSBNB_ERR_OUT_OF_MEMORY, "%s: out of memory", __func__);
    /* Chunks start at block boundaries, so blocks are the same as over the whole tensor. */
    for (int64_t c0 = 0; c0 < n && st == MSBNB_OK; c0 += CHUNK) {
        int64_t len = n - c0 < CHUNK ? n - c0 : CHUNK, b0 = c0 / MSBNB__Q8_BLOCK;
        st = msbnb_dequantize_blockwise_8bit(tm, MSBNB_DTYPE_F32, qm + c0, am + b0, len,
                                             MSBNB__Q8_BLOCK, mcode, 1);
        if (st == MSBNB_OK)
            st = msbnb_dequantize_blockwise_8bit(tv, MSBNB_DTYPE_F32, qv + c0, av + b0, len,
                                                 MSBNB__Q8_BLOCK, vcode, 1);
        if (st != MSBNB_OK) break;
        msbnb__adamw_ref(p + c0, tm, tv, g + c0, len, k);
        st = msbnb_quantize_blockwise_8bit(qm + c0, am + b0, tm, MSBNB_DTYPE_F32, len,
                                           MSBNB__Q8_BLOCK, mcode, 1);
        if (st == MSBNB_OK)
            st = msbnb_quantize_blockwise_8bit(qv + c0, av + b0, tv, MSBNB_DTYPE_F32, len,
                                               MSBNB__Q8_BLOCK, vcode, 1);
    }
    msbnb__free(tm);
    msbnb__free(tv);
    return st;
}

int64_t msbnb__adamw8_ref(float *restrict p, float *restrict g, uint8_t *restrict qm, float *restrict am,
          uint8_t *restrict qv, float *restrict av, int64_t n, const msbnb__adamw_k *k,
          const msbnb__q8map *mmap, const msbnb__q8map *vmap) {
    int64_t bad = -1;
    for (int64_t b = 0; b * MSBNB__Q8_BLOCK < n; b++) {
        int64_t i = b * MSBNB__Q8_BLOCK, len = n - i < MSBNB__Q8_BLOCK ? n - i : MSBNB__Q8_BLOCK;
        if (block_ref(p + i, g + i, qm + i, &am[b], qv + i, &av[b], len, k, mmap, vmap) != 0) bad = b;
    }
    return bad;
}
