/* Tier -> kernel row. Missing entries in an ISA row fall back to the reference kernel. */
#include "cpu/kernels.h"

#include <pthread.h>

static const msbnb__kernel_table k_ref = {
    .tier = MSBNB_CPU_SCALAR,
    .convert = msbnb__convert_ref,
    .quant4_block = msbnb__quant4_block_ref,
    .dequant4_f32 = msbnb__dequant4_f32_ref,
    .quant8_block = msbnb__quant8_block_ref,
    .dequant8_f32 = msbnb__dequant8_f32_ref,
    .q8_row = msbnb__q8_row_ref,
    .q4_int_codes = msbnb__q4_int_codes_ref,
    .absmax = msbnb__absmax_ref,
    .minmax = msbnb__minmax_ref,
};

static msbnb__kernel_table k_filled[3];
static pthread_once_t k_once = PTHREAD_ONCE_INIT;

#define FILL(row, src, field) (row).field = (src).field ? (src).field : (row).field

static void fill(void) {
    k_filled[0] = k_ref;
    k_filled[1] = k_ref;
    k_filled[1].tier = MSBNB_CPU_AVX2;
    FILL(k_filled[1], msbnb__kernels_avx2, convert);
    FILL(k_filled[1], msbnb__kernels_avx2, quant4_block);
    FILL(k_filled[1], msbnb__kernels_avx2, dequant4_f32);
    FILL(k_filled[1], msbnb__kernels_avx2, quant8_block);
    FILL(k_filled[1], msbnb__kernels_avx2, dequant8_f32);
    FILL(k_filled[1], msbnb__kernels_avx2, q8_row);
    FILL(k_filled[1], msbnb__kernels_avx2, q4_int_codes);
    FILL(k_filled[1], msbnb__kernels_avx2, absmax);
    FILL(k_filled[1], msbnb__kernels_avx2, minmax);
    k_filled[2] = k_filled[1];
    k_filled[2].tier = MSBNB_CPU_AVX512;
    FILL(k_filled[2], msbnb__kernels_avx512, convert);
    FILL(k_filled[2], msbnb__kernels_avx512, quant4_block);
    FILL(k_filled[2], msbnb__kernels_avx512, dequant4_f32);
    FILL(k_filled[2], msbnb__kernels_avx512, quant8_block);
    FILL(k_filled[2], msbnb__kernels_avx512, dequant8_f32);
    FILL(k_filled[2], msbnb__kernels_avx512, q8_row);
    FILL(k_filled[2], msbnb__kernels_avx512, q4_int_codes);
    FILL(k_filled[2], msbnb__kernels_avx512, absmax);
    FILL(k_filled[2], msbnb__kernels_avx512, minmax);
}

const msbnb__kernel_table *msbnb__kernels(msbnb_cpu_tier tier) {
    pthread_once(&k_once, fill);
    while (tier > MSBNB_CPU_SCALAR && !msbnb_cpu_tier_supported(tier))
        tier = (msbnb_cpu_tier)(tier - 1);
    if (tier < MSBNB_CPU_SCALAR || tier > MSBNB_CPU_AVX512) tier = MSBNB_CPU_SCALAR;
    return &k_filled[tier];
}
