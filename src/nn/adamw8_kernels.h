/* Fused blockwise 8-bit AdamW step, one kernel per CPU tier (internal).
 *
 * Each block of len <= 256 elements is updated as, bit for bit, the composed
 * sequence msbnb__adamw8_composed (the spec, kept below for tests):
 *   m = mcode[qm[i]] * am, v = vcode[qv[i]] * av        (msbnb_dequantize_blockwise_8bit)
 *   AdamW on (p, m, v, g) in adamw_kernels.h's operation order
 *   am' = max|m|, qm[i] = dQuantize(mcode, m * rcp(am'))  (msbnb_quantize_blockwise_8bit:
 *   the same for v)                                         bnb's rcp, mul.ftz, search)
 * and g is zeroed. A block whose new m or v holds NaN/Inf (the composed path's NON_FINITE)
 * keeps its old codes and absmax (its p and g are written).
 *
 * Quantizer: bitsandbytes' dQuantize<0> search (msbnb__code8_of) is a monotone step
 * function of x for a sorted map, so it equals the count of 255 thresholds
 * thr[k] = min{x : search(x) >= k} that x reaches (x >= thr[k]; NaN reaches none, as the
 * search sends NaN to 0). msbnb__q8map_init derives the thresholds exactly: the search
 * only compares x with map entries and midpoints (code[i] + code[j]) * 0.5, so it is
 * constant on each point and open interval between those constants; evaluating it once
 * per piece proves monotonicity and gives every threshold. The scalar tier counts
 * thresholds in 8 steps; the SIMD tiers look codes up in a bucket table built from them
 * (one gather; an 8-step register search if a map's buckets do not qualify). Tests check
 * all of them against the binary search on many floats and every threshold's neighbours,
 * and every tier's kernel against msbnb__adamw8_composed. */
#ifndef MSBNB_ADAMW8_KERNELS_H
#define MSBNB_ADAMW8_KERNELS_H

#include "adamw_kernels.h"
#include "msbnb/core.h"

#include <stdint.h>

#define MSBNB__Q8_BLOCK 256 /* bitsandbytes' blockwise 8-bit optimizers */
#define MSBNB__Q8_BBASE (101 * 128)     /* |x| bits >> 16 of 2^-26: first bucket */
#define MSBNB__Q8_NBUCKET (27 * 128 + 1) /* buckets per sign: 2^-26 .. 2, then >= 2 */

typedef struct {
    float code[256]; /* the map, ascending */
    float thr[256];  /* thr[k], k = 1..255: smallest float x with search(x) >= k; thr[0] = -inf */
    /* thr regrouped by search level s = 128, 64, ..., 1: lvl[128/s - 1 + j] = thr[(2j+1) s]
     * for j < 128/s (the candidates at that level), plus padding for 16-wide loads */
    float lvl[256 + 16];
    /* One-gather lookup (bucket_ok): bucket j of |x| (its float bits >> 16, i.e. exponent
     * and 7 mantissa bits, from 2^-26 up, both ends clamped; negatives after the
     * positives) holds at most one threshold, so code = entry >> 17 plus 1 if u >= (entry &
     * 0x1ffff), where u is the low 16 bits of |x| (inverted for x < 0; 0x10000: none).
     * Exact for every x except NaN (the kernels route zero/subnormal absmax around it). */
    int bucket_ok;
    uint32_t bucket[2 * MSBNB__Q8_NBUCKET];
} msbnb__q8map;

/* Fills m from a sorted 256-entry map. Returns 0, or -1 if the search is not a monotone
 * step function of x for this map (then m must not be used). */
int msbnb__q8map_init(msbnb__q8map *m, const float *code256);

/* Code of x by threshold count (scalar; equals msbnb__code8_of(m->code, x)). */
uint8_t msbnb__q8map_code(const msbnb__q8map *m, float x);

/* The kernels run over n elements from a block boundary (absmax am[0], av[0] are the first
 * block's): every block as described above. Return -1, or the index (from 0) of a block
 * whose new m or v was NaN/Inf. */
typedef int64_t (*msbnb__adamw8_fn)(float *restrict p, float *restrict g, uint8_t *restrict qm,
                                    float *restrict am, uint8_t *restrict qv, float *restrict av,
                                    int64_t n, const msbnb__adamw_k *k, const msbnb__q8map *mmap,
                                    const msbnb__q8map *vmap);

int64_t msbnb__adamw8_ref(float *restrict p, float *restrict g, uint8_t *restrict qm,
                          float *restrict am, uint8_t *restrict qv, float *restrict av, int64_t n,
                          const msbnb__adamw_k *k, const msbnb__q8map *mmap, const msbnb__q8map *vmap);
int64_t msbnb__adamw8_avx2(float *restrict p, float *restrict g, uint8_t *restrict qm,
                           float *restrict am, uint8_t *restrict qv, float *restrict av, int64_t n,
                           const msbnb__adamw_k *k, const msbnb__q8map *mmap, const msbnb__q8map *vmap);
int64_t msbnb__adamw8_avx512(float *restrict p, float *restrict g, uint8_t *restrict qm,
                             float *restrict am, uint8_t *restrict qv, float *restrict av, int64_t n,
                             const msbnb__adamw_k *k, const msbnb__q8map *mmap, const msbnb__q8map *vmap);

/* The SIMD tiers' quantizer on its own, for tests: codes of x[0..len) (len <= 256) of a
 * block whose max |x| is amax (finite): msbnb__quant8_block_ref's codes, without the
 * absmax scan. */
void msbnb__q8_codes_avx2(uint8_t *q, const float *x, int64_t len, float amax, const msbnb__q8map *m);
void msbnb__q8_codes_avx512(uint8_t *q, const float *x, int64_t len, float amax, const msbnb__q8map *m);

/* The composed spec over a whole tensor of n elements (blocks of 256): the public
 * dequantize, msbnb__adamw_ref, the public quantize, chunk by chunk, one thread. Does not
 * touch g. Returns the quantizers' status. */
msbnb_status msbnb__adamw8_composed(float *p, const float *g, uint8_t *qm, float *am, uint8_t *qv,
                                    float *av, int64_t n, const msbnb__adamw_k *k,
                                    const float *mcode, const float *vcode);

#endif /* MSBNB_ADAMW8_KERNELS_H */
