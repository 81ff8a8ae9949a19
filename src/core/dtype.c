/* dtype table; names are safetensors' (https://github.com/huggingface/safetensors). */
#include "internal.h"

#include <string.h>

static const struct {
    const char *name;
    size_t size;
} k_dtypes[MSBNB_DTYPE_COUNT_] = {
    [MSBNB_DTYPE_F32] = {"F32", 4},  [MSBNB_DTYPE_F16] = {"F16", 2},
    [MSBNB_DTYPE_BF16] = {"BF16", 2}, [MSBNB_DTYPE_F64] = {"F64", 8},
    [MSBNB_DTYPE_I64] = {"I64", 8},  [MSBNB_DTYPE_I32] = {"I32", 4},
    [MSBNB_DTYPE_I16] = {"I16", 2},  [MSBNB_DTYPE_I8] = {"I8", 1},
    [MSBNB_DTYPE_U8] = {"U8", 1},    [MSBNB_DTYPE_BOOL] = {"BOOL", 1},
};

size_t msbnb_dtype_size(msbnb_dtype t) {
    if ((unsigned)t >= MSBNB_DTYPE_COUNT_) return 0;
    return k_dtypes[t].size;
}

const char *msbnb_dtype_name(msbnb_dtype t) {
    if ((unsigned)t >= MSBNB_DTYPE_COUNT_) return NULL;
    return k_dtypes[t].name;
}

msbnb_status msbnb_dtype_from_name(const char *name, msbnb_dtype *out) {
    MSBNB_CHECK_NULL(name);
    MSBNB_CHECK_NULL(out);
    for (int i = 0; i < MSBNB_DTYPE_COUNT_; i++) {
        if (strcmp(name, k_dtypes[i].name) == 0) {
            *out = (msbnb_dtype)i;
            return MSBNB_OK;
        }
    }
    return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "unsupported dtype '%.32s'", name);
}
