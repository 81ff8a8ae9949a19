/* The seed's basic usage: Linear8bit(768, 3072) and Linear4bit(768, 3072, group_size=128)
 * (and NF4), quantize a float layer's weights, forward a batch, and report the memory saved
 * and the output error against the float layer. */
#include "msbnb/msbnb.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define IN 768
#define OUT 3072
#define BATCH 16

static float randn(uint64_t *s) { /* Box-Muller on a 64-bit LCG: deterministic, no deps */
    double u[2];
    for (int i = 0; i < 2; i++) {
        *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
        u[i] = ((*s >> 11) + 0.5) / 9007199254740992.0;
    }
    return (float)(sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]));
}

#define TRY(call)                                                                          \
    do {                                                                                   \
        msbnb_status st_ = (call);                                                         \
        if (st_ != MSBNB_OK) {                                                             \
            fprintf(stderr, "%s failed: %s (%s)\n", #call, msbnb_status_str(st_),          \
                    msbnb_last_error());                                                   \
            return 1;                                                                      \
        }                                                                                  \
    } while (0)

int main(void) {
    uint64_t seed = 42;
    float *w = malloc(sizeof(float) * IN * OUT), *b = malloc(sizeof(float) * OUT);
    float *x = malloc(sizeof(float) * BATCH * IN);
    float *y_ref = malloc(sizeof(float) * BATCH * OUT), *y = malloc(sizeof(float) * BATCH * OUT);
    if (!w || !b || !x || !y_ref || !y) return 1;
    for (int i = 0; i < IN * OUT; i++) w[i] = randn(&seed) * 0.036f; /* ~ kaiming for 768 */
    for (int i = 0; i < OUT; i++) b[i] = randn(&seed) * 0.01f;
    for (int i = 0; i < BATCH * IN; i++) x[i] = randn(&seed);

    /* the float layer: nn.Linear(768, 3072) */
    msbnb_linear_t *fl;
    TRY(msbnb_linear_create(&fl, IN, OUT, w, b, NULL));
    TRY(msbnb_linear_forward(fl, y_ref, x, BATCH));
    printf("float32 Linear(%d, %d): %.2f MiB of weights\n", IN, OUT,
           msbnb_linear_weight_bytes(fl) / 1048576.0);

    struct {
        const char *name;
        msbnb_qparams p;
    } kinds[4] = {{"Linear8bit(768, 3072)", msbnb_qparams_default(MSBNB_QTYPE_INT8)},
                  {"Linear4bit(768, 3072, group_size=128)", msbnb_qparams_default(MSBNB_QTYPE_INT4)},
                  {"Linear4bit NF4 (block 64)", msbnb_qparams_default(MSBNB_QTYPE_NF4)},
                  {"Linear4bit NF4 + double quant", msbnb_qparams_default(MSBNB_QTYPE_NF4)}};
    kinds[1].p.block = 128;
    kinds[3].p.double_quant = 1;
    for (int k = 0; k < 4; k++) {
        msbnb_linear_t *l;
        TRY(msbnb_linear_create(&l, IN, OUT, w, b, NULL)); /* a float layer ... */
        TRY(msbnb_linear_quantize_weights(l, &kinds[k].p)); /* ... layer.quantize_weights() */
        TRY(msbnb_linear_forward(l, y, x, BATCH));
        double num = 0, den = 0, maxerr = 0;
        for (int i = 0; i < BATCH * OUT; i++) {
            double d = (double)y[i] - y_ref[i];
            num += d * d;
            den += (double)y_ref[i] * y_ref[i];
            if (fabs(d) > maxerr) maxerr = fabs(d);
        }
        int64_t bytes = msbnb_linear_weight_bytes(l);
        printf("%-40s %6.2f MiB (%.2f bits/weight, %.1f%% memory saved), output rel. error %.4f, "
               "max abs error %.4f\n",
               kinds[k].name, bytes / 1048576.0, msbnb_linear_bits_per_weight(l),
               100.0 * (1.0 - (double)bytes / msbnb_linear_weight_bytes(fl)), sqrt(num / den),
               maxerr);
        /* a quantized layer is genuinely low precision, but not useless */
        if (!(sqrt(num / den) < 0.2)) {
            fprintf(stderr, "unexpectedly large error\n");
            return 1;
        }
        msbnb_linear_free(l);
    }
    msbnb_linear_free(fl);
    free(w);
    free(b);
    free(x);
    free(y_ref);
    free(y);
    return 0;
}
