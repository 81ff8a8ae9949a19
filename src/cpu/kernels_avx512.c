/* AVX-512 (F/BW/DQ/VL) kernels. */
#include "cpu/kernels.h"

const msbnb__kernel_table msbnb__kernels_avx512 = {.tier = MSBNB_CPU_AVX512};
