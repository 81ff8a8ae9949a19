/* The seed's functional example in C: quantize a weight matrix to every format,
 * dequantize it, and print error statistics and the quantization info table.
 *   build/examples/functional_api [rows cols]      (default 1024 x 1024, N(0, 0.02)) */
#include "msbnb/msbnb.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define TRY(call)                                                                         \
    do {                                                                                  \
        msbnb_status st_ = (call);                                                        \
        if (st_ != MSBNB_OK) {                                                            \
            fprintf(stderr, "%s failed: %s: %s\n", #call, msbnb_status_str(st_),          \
                    msbnb_last_error());                                                  \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

/* A weight that looks like a trained layer's: N(0, 0.02) with a few outlier columns. */
static void make_weight(float *w, int64_t rows, int64_t cols) {
    uint64_t s = 0x2545F4914F6CDD1DULL;
    for (int64_t i = 0; i < rows * cols; i += 2) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        double u1 = ((s >> 11) + 1.0) / 9007199254740993.0;
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        double u2 = (s >> 11) / 9007199254740992.0, r = sqrt(-2 * log(u1));
        w[i] = (float)(0.02 * r * cos(6.283185307179586 * u2));
        if (i + 1 < rows * cols) w[i + 1] = (float)(0.02 * r * sin(6.283185307179586 * u2));
    }
    for (int64_t r = 0; r < rows; r++) w[r * cols + 7 % cols] *= 8.0f;
}

static void report(const char *name, const float *w, const float *y, int64_t n, int64_t bytes) {
    msbnb_error_stats st;
    TRY(msbnb_estimate_quantization_error(&st, w, y, n));
    printf("%-16s %10.3f %8.2f  %9.2e %9.2e %8.4f %7.2f %9.6f\n", name, bytes / 1048576.0,
           8.0 * (double)bytes / (double)n, st.max_abs, st.rmse, st.rel_frobenius, st.snr_db,
           st.cosine);
}

int main(int argc, char **argv) {
    int64_t rows = 1024, cols = 1024;
    if (argc == 3) {
        rows = atoll(argv[1]);
        cols = atoll(argv[2]);
    }
    int64_t n = rows * cols;
    if (rows <= 0 || cols <= 0 || n / rows != cols || n > (1LL << 31)) {
        fprintf(stderr, "usage: functional_api [rows cols] (positive, rows*cols <= 2^31)\n");
        return 2;
    }
    float *w = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
    int8_t *q8 = malloc((size_t)n);
    uint8_t *p4 = malloc((size_t)(n + 1) / 2), *q = malloc((size_t)n);
    int64_t nb = msbnb_nblocks(n, 32) + 1;
    float *scale = malloc((size_t)(rows > nb ? rows : nb) * 4 * 2), *off = malloc((size_t)(rows > nb ? rows : nb) * 4 * 2);
    uint8_t *qabs = malloc((size_t)nb);
    if (!w || !y || !q8 || !p4 || !q || !scale || !off || !qabs) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    make_weight(w, rows, cols);
    printf("msbnb %s functional API on a %lld x %lld weight (N(0, 0.02), one 8x outlier column)\n\n",
           msbnb_version(), (long long)rows, (long long)cols);

    msbnb_quant_info info;
    TRY(msbnb_get_quantization_info(&info, w, rows, cols, 3.0));
    printf("range [%.4f, %.4f]  mean %.2e  std %.4f  absmax %.4f\n", info.min, info.max, info.mean,
           info.std, info.absmax);
    printf("per-row absmax: min %.4f  mean %.4f  max %.4f   outliers beyond 3 sigma: %.3f %%\n\n",
           info.row_absmax_min, info.row_absmax_mean, info.row_absmax_max, 100 * info.outlier_fraction);
    printf("%-16s %10s %8s\n", "format", "MiB", "bits/w");
    for (int i = 0; i < info.n_formats; i++)
        printf("%-16s %10.3f %8.3f\n", info.formats[i].name, info.formats[i].bytes / 1048576.0,
               info.formats[i].bits_per_weight);

    printf("\n%-16s %10s %8s  %9s %9s %8s %7s %9s\n", "round trip", "MiB", "bits/w", "max|err|",
           "rmse", "rel.err", "SNR dB", "cosine");
    msbnb_qparams p;
    int64_t bytes;
    /* INT8 per row, symmetric and asymmetric (the seed's quantize_8bit) */
    for (int sym = 1; sym >= 0; sym--) {
        TRY(msbnb_quantize_8bit(q8, scale, off, w, rows, cols, sym, 0));
        TRY(msbnb_dequantize_8bit(y, q8, scale, off, rows, cols, sym, 0));
        p = msbnb_qparams_default(MSBNB_QTYPE_INT8);
        p.symmetric = sym;
        TRY(msbnb_qparams_storage(&p, rows, cols, &bytes, NULL));
        report(sym ? "int8 sym" : "int8 asym", w, y, n, bytes);
    }
    /* LLM.int8 row-wise with outlier threshold (bitsandbytes int8_vectorwise_quant) */
    int64_t n_out = 0;
    int64_t *outl = malloc((size_t)cols * 8);
    TRY(msbnb_int8_vectorwise_quant(q8, scale, outl, cols, &n_out, w, MSBNB_DTYPE_F32, rows, cols, 0.1f));
    TRY(msbnb_int8_vectorwise_dequant(y, q8, scale, rows, cols));
    for (int64_t k = 0; k < n_out; k++) /* outlier columns stay in float */
        for (int64_t r = 0; r < rows; r++) y[r * cols + outl[k]] = w[r * cols + outl[k]];
    report("llm.int8 t=0.1", w, y, n, n + rows * 4 + n_out * rows * 2);
    printf("%-16s (%lld outlier column(s) kept in fp16)\n", "", (long long)n_out);
    free(outl);
    /* INT4 per group */
    for (int sym = 1; sym >= 0; sym--) {
        TRY(msbnb_quantize_int4(p4, scale, off, w, rows, cols, 128, sym));
        TRY(msbnb_dequantize_int4(y, p4, scale, off, rows, cols, 128, sym));
        p = msbnb_qparams_default(MSBNB_QTYPE_INT4);
        p.symmetric = sym;
        TRY(msbnb_qparams_storage(&p, rows, cols, &bytes, NULL));
        report(sym ? "int4-g128 sym" : "int4-g128 asym", w, y, n, bytes);
    }
    /* NF4 / FP4 blockwise, with and without double quantization */
    for (int t = MSBNB_QTYPE_NF4; t <= MSBNB_QTYPE_FP4; t++)
        for (int dq = 0; dq <= 1; dq++) {
            int64_t blocks = msbnb_nblocks(n, 64);
            TRY(msbnb_quantize_4bit(p4, scale, w, MSBNB_DTYPE_F32, n, 64, (msbnb_qtype)t, 0));
            if (dq) {
                float offset;
                TRY(msbnb_double_quant_absmax(qabs, off, &offset, scale, blocks));
                TRY(msbnb_double_dequant_absmax(scale, qabs, off, offset, blocks));
            }
            TRY(msbnb_dequantize_4bit(y, MSBNB_DTYPE_F32, p4, scale, n, 64, (msbnb_qtype)t, 0));
            p = msbnb_qparams_default((msbnb_qtype)t);
            p.double_quant = dq;
            TRY(msbnb_qparams_storage(&p, rows, cols, &bytes, NULL));
            char name[32];
            snprintf(name, sizeof name, "%s-b64%s", msbnb_qtype_name((msbnb_qtype)t), dq ? "-dq" : "");
            report(name, w, y, n, bytes);
        }
    /* 8-bit blockwise dynamic (bitsandbytes quantize_blockwise) */
    TRY(msbnb_quantize_blockwise_8bit(q, scale, w, MSBNB_DTYPE_F32, n, 256, NULL, 0));
    TRY(msbnb_dequantize_blockwise_8bit(y, MSBNB_DTYPE_F32, q, scale, n, 256, NULL, 0));
    TRY(msbnb_qparams_storage(&(msbnb_qparams){MSBNB_QTYPE_Q8_DYNAMIC, 1, 256, 0, 0}, rows, cols, &bytes, NULL));
    report("q8dyn-b256", w, y, n, bytes);
    /* bf16 */
    uint16_t *h = malloc((size_t)n * 2);
    if (!h) return 1;
    TRY(msbnb_convert(h, MSBNB_DTYPE_BF16, w, MSBNB_DTYPE_F32, n));
    TRY(msbnb_convert(y, MSBNB_DTYPE_F32, h, MSBNB_DTYPE_BF16, n));
    report("bf16", w, y, n, 2 * n);
    free(h);

    /* pack / unpack helpers: two codes per byte, element 2i in the high nibble (bnb order) */
    uint8_t codes[5] = {1, 2, 3, 4, 15}, packed[3], back[5];
    TRY(msbnb_pack_4bit(packed, codes, 5));
    TRY(msbnb_unpack_4bit(back, packed, 5));
    printf("\npack_4bit {1,2,3,4,15} -> %02x %02x %02x -> unpack {%d,%d,%d,%d,%d}\n", packed[0],
           packed[1], packed[2], back[0], back[1], back[2], back[3], back[4]);
    int ok = packed[0] == 0x12 && packed[1] == 0x34 && packed[2] == 0xf0 && back[4] == 15;
    free(w); free(y); free(q8); free(p4); free(q); free(scale); free(off); free(qabs);
    return ok ? 0 : 1;
}
