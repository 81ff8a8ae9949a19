/* Internal glue for reading quantized modules (qtensor.c) from convert.c. */
#ifndef MSBNB_QTENSOR_INTERNAL_H
#define MSBNB_QTENSOR_INTERNAL_H
#include "msbnb/convert.h"
/* If `module` has a quant_state entry, writes its name and returns 1 nf4, 2 fp4,
 * 3 msbnb int4, 4 msbnb int8; else 0. */
int msbnb__qstate_name(const msbnb_st_file_t *f, const char *module, char *out, size_t cap);
/* Dequantizes elements [e0, e1) (row-aligned for row formats, block-aligned and even
 * for 4-bit) into out[0 .. e1-e0). */
msbnb_status msbnb__qtensor_dequant_range(const msbnb_qtensor *t, float *out, int64_t e0, int64_t e1);
#endif
