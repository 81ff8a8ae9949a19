/* The seed's model conversion: convert_to_quantized_model(model, Int4Config(nf4, double
 * quant)) and Int8Config, for a checkpoint on disk. Converts the bundled tiny LLaMA
 * (tests/data/tiny-llama/fp32, or the folder given as argv[1]) to NF4 + double quant and
 * to LLM.int8 in bitsandbytes' layout, prints what it did, then loads one quantized
 * layer back and compares its output with the float layer's. Run from the repository root. */
#include "msbnb/msbnb.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TRY(call)                                                                          \
    do {                                                                                   \
        msbnb_status st_ = (call);                                                         \
        if (st_ != MSBNB_OK) {                                                             \
            fprintf(stderr, "%s failed: %s (%s)\n", #call, msbnb_status_str(st_),          \
                    msbnb_last_error());                                                   \
            return 1;                                                                      \
        }                                                                                  \
    } while (0)

static void remove_folder(const char *dir) {
    /* the converter writes only regular files at the top level of its output folder */
    static const char *files[] = {"model.safetensors", "config.json", "generation_config.json"};
    char p[1024];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

/* Output of module `m` of checkpoint f on a fixed input, as a float layer and as stored. */
static int compare_layer(const char *model_dir, const char *qdir, const char *m) {
    msbnb_st_file_t *f = NULL, *q = NULL;
    TRY(msbnb_st_open(&f, model_dir));
    TRY(msbnb_st_open(&q, qdir));
    msbnb_linear_t *fl = NULL, *ql = NULL;
    TRY(msbnb_checkpoint_load_linear(&fl, f, m));
    TRY(msbnb_checkpoint_load_linear(&ql, q, m));
    int64_t K = msbnb_linear_in_features(fl), N = msbnb_linear_out_features(fl), M = 4;
    float *x = malloc(sizeof(float) * (size_t)(M * K)), *y0 = malloc(sizeof(float) * (size_t)(M * N)),
          *y1 = malloc(sizeof(float) * (size_t)(M * N));
    if (!x || !y0 || !y1) return 1;
    uint64_t s = 7;
    for (int64_t i = 0; i < M * K; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    TRY(msbnb_linear_forward(fl, y0, x, M));
    TRY(msbnb_linear_forward(ql, y1, x, M));
    double num = 0, den = 0;
    for (int64_t i = 0; i < M * N; i++) {
        num += (double)(y1[i] - y0[i]) * (y1[i] - y0[i]);
        den += (double)y0[i] * y0[i];
    }
    msbnb_qparams p = msbnb_linear_qparams(ql);
    printf("  %s loaded back as a %s layer (%.2f bits/weight): output rel. error %.4f vs float\n", m,
           msbnb_qtype_name(p.type), msbnb_linear_bits_per_weight(ql), sqrt(num / den));
    int bad = !(sqrt(num / den) < 0.2);
    free(x), free(y0), free(y1);
    msbnb_linear_free(fl);
    msbnb_linear_free(ql);
    msbnb_st_close(f);
    msbnb_st_close(q);
    return bad;
}

int main(int argc, char **argv) {
    const char *model = argc > 1 ? argv[1] : "tests/data/tiny-llama/fp32";
    char tmpl[] = "/tmp/msbnb-example-XXXXXX";
    if (!mkdtemp(tmpl)) return 1;
    struct {
        const char *name;
        msbnb_qconfig cfg;
    } runs[2] = {{"Int4Config(nf4, double_quant=True)", msbnb_int4_config_default(MSBNB_QTYPE_NF4)},
                 {"Int8Config()", msbnb_int8_config_default()}};
    runs[0].cfg.format.double_quant = 1;
    int bad = 0;
    for (int r = 0; r < 2; r++) {
        char out[256];
        snprintf(out, sizeof out, "%s/%s", tmpl, r == 0 ? "nf4dq" : "int8");
        msbnb_convert_report rep;
        TRY(msbnb_convert_quantize(model, out, &runs[r].cfg, NULL, &rep));
        printf("%s: %s -> %s\n", runs[r].name, model, out);
        printf("  %lld tensors: %lld quantized, %lld copied; %.1f KB -> %.1f KB (%.2fx), mean rel. "
               "error %.4f\n", (long long)rep.n_tensors_in, (long long)rep.n_quantized,
               (long long)rep.n_copied, rep.file_bytes_in / 1e3, rep.file_bytes_out / 1e3,
               (double)rep.file_bytes_in / (double)rep.file_bytes_out, rep.mean_rel_error);
        for (int k = 0; k < rep.n_kinds; k++)
            printf("    %-12s x%lld  %8.1f KB -> %8.1f KB\n", rep.kinds[k].kind,
                   (long long)rep.kinds[k].count, rep.kinds[k].bytes_in / 1e3,
                   rep.kinds[k].bytes_out / 1e3);
        bad |= compare_layer(model, out, "model.layers.0.mlp.down_proj");
        remove_folder(out);
    }
    rmdir(tmpl);
    return bad;
}
