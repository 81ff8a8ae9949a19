/* avx2 kernels of the linear layer (work in progress: reference entries for now). */
#include "cpu/gemv.h"

const msbnb__gemv_table msbnb__gemv_avx2 = {MSBNB_CPU_AVX2, msbnb__dequant_rows_ref, msbnb__gemv_ref,
                                            msbnb__gemv_i8_ref};
