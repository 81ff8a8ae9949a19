/* libFuzzer target: reading quantized weights back from a checkpoint image — the
 * bitsandbytes quant-state JSON (`quant_state.bitsandbytes__nf4/fp4`), msbnb's own
 * `msbnb__int4/int8` states, the SCB/absmax/nested parts and their sizes — through
 * msbnb_qtensor_load, msbnb_qtensor_dequantize and msbnb_qtensor_to_linear. Anything a
 * loader accepts must dequantize into exactly rows x cols values without reading past a
 * part (ASan) and must build a layer of that shape. */
#include "msbnb/convert.h"
#include "msbnb/linear.h"
#include "msbnb/safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void fuzz_assert(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fuzz_qstate: invariant violated: %s\n", what);
        abort();
    }
}

static msbnb_status load_one(void *user, const char *module, int quantized) {
    const msbnb_st_file_t *f = user;
    (void)quantized;
    msbnb_qtensor t = {0};
    if (msbnb_qtensor_load(&t, f, module) != MSBNB_OK) return MSBNB_OK;
    fuzz_assert(t.rows > 0 && t.cols > 0, "loaded shape positive");
    /* Keep the harness' own allocation bounded; a huge declared shape backed by real
     * parts cannot come from an 8 KiB input anyway. */
    if (t.rows * t.cols <= (1 << 20)) {
        float *w = malloc((size_t)(t.rows * t.cols) * sizeof *w);
        if (w) {
            msbnb_status st = msbnb_qtensor_dequantize(&t, w, t.rows * t.cols, 1);
            fuzz_assert(st == MSBNB_OK, "a loaded tensor dequantizes");
            fuzz_assert(msbnb_qtensor_dequantize(&t, w, t.rows * t.cols - 1, 1) != MSBNB_OK,
                        "short output buffer refused");
            free(w);
        }
        msbnb_linear_t *l = NULL;
        if (msbnb_qtensor_to_linear(&l, &t, NULL) == MSBNB_OK) {
            fuzz_assert(msbnb_linear_in_features(l) == t.cols &&
                            msbnb_linear_out_features(l) == t.rows,
                        "layer shape = stored shape");
            msbnb_linear_free(l);
        }
    }
    msbnb_qtensor_clear(&t);
    return MSBNB_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    msbnb_st_file_t *f = NULL;
    if (msbnb_st_open_memory(&f, data, size, "fuzz") != MSBNB_OK) return 0;
    fuzz_assert(msbnb_checkpoint_modules(f, load_one, f) == MSBNB_OK, "module walk");
    msbnb_st_close(f);
    return 0;
}
