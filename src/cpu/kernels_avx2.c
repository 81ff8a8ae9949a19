/* AVX2 + FMA + F16C kernels. */
#include "cpu/kernels.h"

const msbnb__kernel_table msbnb__kernels_avx2 = {.tier = MSBNB_CPU_AVX2};
