/* msbnb — command-line front end: quantize / inspect / dequantize checkpoints, run the
 * layer benchmarks. The only place that prints and maps statuses to exit codes
 * (0 ok, 1 failure, 2 usage error). */
#include "msbnb/msbnb.h"

#include "io/ckpt_internal.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *prog = "msbnb";

static int fail(msbnb_status st) {
    fprintf(stderr, "%s: error: %s (%s)\n", prog, msbnb_last_error(), msbnb_status_str(st));
    return 1;
}

static int usage_error(const char *cmd, const char *fmt, const char *arg) {
    fprintf(stderr, "%s%s%s: ", prog, cmd ? " " : "", cmd ? cmd : "");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry '%s%s%s --help'.\n", prog, cmd ? " " : "", cmd ? cmd : "");
    return 2;
}

static void human(double b, char *out, size_t cap) {
    const char *u[] = {"B", "KB", "MB", "GB", "TB"};
    int k = 0;
    while (b >= 1000.0 && k < 4) {
        b /= 1000.0;
        k++;
    }
    snprintf(out, cap, k ? "%.1f %s" : "%.0f %s", b, u[k]);
}

static int parse_int(const char *s, long long lo, long long hi, long long *out) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || !end || *end || end == s || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

/* ---------------------------------------------------------------- progress */

typedef struct {
    int tty;
    double last;
} progress_t;

static void on_progress(void *user, const msbnb_convert_progress *p) {
    progress_t *pr = user;
    double rate = p->elapsed_s > 0 ? (double)p->bytes_done / p->elapsed_s : 0;
    char done[32], total[32], r[32];
    human((double)p->bytes_done, done, sizeof done);
    human((double)p->bytes_total, total, sizeof total);
    human(rate, r, sizeof r);
    double eta = rate > 0 ? (double)(p->bytes_total - p->bytes_done) / rate : 0;
    if (pr->tty) {
        int last = p->tensors_done == p->tensors_total;
        if (!last && p->elapsed_s - pr->last < 0.1) return;
        pr->last = p->elapsed_s;
        double frac = p->bytes_total ? (double)p->bytes_done / (double)p->bytes_total : 1.0;
        char bar[31];
        int fill = (int)(frac * 30.0);
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = 0;
        fprintf(stderr, "\r[%s] %3.0f%% %lld/%lld tensors %s/%s %s/s ETA %.0fs   ", bar, 100 * frac,
                (long long)p->tensors_done, (long long)p->tensors_total, done, total, r, eta);
        if (last) fputc('\n', stderr);
    } else {
        fprintf(stderr, "[%lld/%lld] %s (%s/%s, %s/s, ETA %.0fs)\n", (long long)p->tensors_done,
                (long long)p->tensors_total, p->current, done, total, r, eta);
    }
    fflush(stderr);
}

static void print_report(const msbnb_convert_report *r, int with_error) {
    char a[32], b[32];
    printf("%-20s %6s %12s %12s %8s%s\n", "module type", "count", "bytes before", "bytes after",
           "ratio", with_error ? "  mean rel. error" : "");
    for (int k = 0; k < r->n_kinds; k++) {
        const msbnb_convert_kind *c = &r->kinds[k];
        human((double)c->bytes_in, a, sizeof a);
        human((double)c->bytes_out, b, sizeof b);
        printf("%-20s %6lld %12s %12s %7.2fx", c->kind, (long long)c->count, a, b,
               c->bytes_out ? (double)c->bytes_in / (double)c->bytes_out : 0.0);
        if (with_error && strcmp(c->kind, "(copied)") != 0)
            printf("  %16.5f", c->count ? c->rel_error_sum / (double)c->count : 0.0);
        printf("\n");
    }
    human((double)r->file_bytes_in, a, sizeof a);
    human((double)r->file_bytes_out, b, sizeof b);
    printf("total: %lld tensors in, %lld quantized, %lld copied, %lld tensors out\n",
           (long long)r->n_tensors_in, (long long)r->n_quantized, (long long)r->n_copied,
           (long long)r->n_tensors_out);
    if (r->file_bytes_out > r->file_bytes_in) /* dequantize: the float checkpoint is the larger one */
        printf("size: %s -> %s (%.2fx larger) in %.2f s (%.2f GB/s of input)\n", a, b,
               r->file_bytes_in ? (double)r->file_bytes_out / (double)r->file_bytes_in : 0.0, r->seconds,
               r->seconds > 0 ? (double)r->bytes_in / r->seconds / 1e9 : 0.0);
    else
        printf("size: %s -> %s (%.2fx smaller, %.1f%% reduction) in %.2f s (%.2f GB/s of input)\n", a, b,
               r->file_bytes_out ? (double)r->file_bytes_in / (double)r->file_bytes_out : 0.0,
               r->file_bytes_in ? 100.0 * (1.0 - (double)r->file_bytes_out / (double)r->file_bytes_in) : 0.0,
               r->seconds, r->seconds > 0 ? (double)r->bytes_in / r->seconds / 1e9 : 0.0);
    if (with_error && r->n_quantized)
        printf("relative error ||w - deq(q(w))|| / ||w||: mean %.5f, max %.5f\n", r->mean_rel_error,
               r->max_rel_error);
}

/* ---------------------------------------------------------------- quantize */

static const char *QUANTIZE_HELP =
    "usage: msbnb quantize IN OUT [options]\n"
    "Quantizes the linear-layer weights of a safetensors checkpoint (a folder with\n"
    "config.json + model.safetensors or a sharded index, or a .safetensors file) into the\n"
    "folder OUT (must not exist, or be empty), in the layout transformers + bitsandbytes save.\n"
    "  --type T          int8 | int4 | nf4 | fp4 (default nf4)\n"
    "  --block N         4-bit block size (power of two in [32, 4096], default 64) or int4\n"
    "                    group size (even, default 128)\n"
    "  --double-quant    quantize the 4-bit absmax again (QLoRA double quantization)\n"
    "  --asymmetric      int8/int4: zero-point (msbnb layout) instead of symmetric\n"
    "  --threshold X     int8: LLM.int8 outlier threshold recorded for inference (6.0)\n"
    "  --compute-dtype D 4-bit: compute dtype recorded in the config: f32 | f16 | bf16\n"
    "                    (default f32, as BitsAndBytesConfig)\n"
    "  --skip PAT        do not quantize modules matching PAT (repeatable; lm_head is\n"
    "                    always skipped, embeddings and norms are never quantized)\n"
    "  --target PAT      only quantize modules matching PAT (repeatable)\n"
    "  --threads N       worker threads (default: all CPUs / MSBNB_THREADS)\n"
    "  --config JSON     start from the quantization_config of a config.json (or of a\n"
    "                    bare quantization_config object); later flags override it\n"
    "  --no-error        skip measuring each tensor's quantization error\n"
    "  --quiet           no progress output\n"
    "A PAT with * ? [ is a glob over the module name; otherwise it matches whole\n"
    "dot-separated components (\"self_attn\", \"layers.0\", \"lm_head\").\n";

static int cmd_quantize(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *type = NULL, *config = NULL;
    long long block = -1, threads = 0;
    int dq = 0, asym = 0, noerr = 0, quiet = 0;
    const char *threshold = NULL, *compute = NULL;
    const char *skips[MSBNB_QCONFIG_MAX_PATTERNS + 1], *targets[MSBNB_QCONFIG_MAX_PATTERNS + 1];
    int ns = 0, nt = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(QUANTIZE_HELP, stdout);
            return 0;
        } else if (!strcmp(a, "--type")) {
            if (!has) return usage_error("quantize", "%s needs a value", a);
            type = argv[++i];
        } else if (!strcmp(a, "--block") || !strcmp(a, "--group")) {
            if (!has || !parse_int(argv[i + 1], 1, 1 << 30, &block))
                return usage_error("quantize", "%s needs a positive integer", a);
            i++;
        } else if (!strcmp(a, "--threads")) {
            if (!has || !parse_int(argv[i + 1], 1, 4096, &threads))
                return usage_error("quantize", "%s needs an integer in [1, 4096]", a);
            i++;
        } else if (!strcmp(a, "--skip") || !strcmp(a, "--target")) {
            if (!has) return usage_error("quantize", "%s needs a pattern", a);
            if ((a[2] == 's' ? ns : nt) >= MSBNB_QCONFIG_MAX_PATTERNS)
                return usage_error("quantize", "too many %s patterns", a);
            if (a[2] == 's') skips[ns++] = argv[++i];
            else targets[nt++] = argv[++i];
        } else if (!strcmp(a, "--threshold")) {
            if (!has) return usage_error("quantize", "%s needs a value", a);
            threshold = argv[++i];
        } else if (!strcmp(a, "--compute-dtype")) {
            if (!has) return usage_error("quantize", "%s needs a value", a);
            compute = argv[++i];
        } else if (!strcmp(a, "--config")) {
            if (!has) return usage_error("quantize", "%s needs a path", a);
            config = argv[++i];
        } else if (!strcmp(a, "--double-quant")) {
            dq = 1;
        } else if (!strcmp(a, "--asymmetric")) {
            asym = 1;
        } else if (!strcmp(a, "--no-error")) {
            noerr = 1;
        } else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
            quiet = 1;
        } else if (a[0] == '-' && a[1]) {
            return usage_error("quantize", "unknown option '%s'", a);
        } else if (!in) {
            in = a;
        } else if (!out) {
            out = a;
        } else {
            return usage_error("quantize", "unexpected argument '%s'", a);
        }
    }
    if (!in || !out) return usage_error("quantize", "%s", "needs IN and OUT");
    msbnb_qconfig cfg;
    msbnb_qtype t;
    msbnb_status st;
    if (config) {
        FILE *fp = fopen(config, "rb");
        if (!fp) {
            fprintf(stderr, "%s: error: cannot open '%s': %s\n", prog, config, strerror(errno));
            return 1;
        }
        char *text = malloc(1 << 20);
        size_t len = text ? fread(text, 1, (1 << 20) - 1, fp) : 0;
        fclose(fp);
        st = text ? msbnb_qconfig_from_json(&cfg, text, len) : MSBNB_ERR_OUT_OF_MEMORY;
        free(text);
        if (st != MSBNB_OK) return fail(st);
        t = cfg.format.type;
        if (type) {
            msbnb_qtype t2;
            if (msbnb_qtype_from_name(type, &t2) != MSBNB_OK || t2 != t)
                return usage_error("quantize", "--type disagrees with --config (%s)", msbnb_qtype_name(t));
        }
        type = msbnb_qtype_name(t);
        if (dq) cfg.format.double_quant = 1;
    } else {
        if (!type) type = "nf4";
        if (msbnb_qtype_from_name(type, &t) != MSBNB_OK ||
            (t != MSBNB_QTYPE_INT8 && t != MSBNB_QTYPE_INT4 && t != MSBNB_QTYPE_NF4 && t != MSBNB_QTYPE_FP4))
            return usage_error("quantize", "--type must be int8, int4, nf4 or fp4 (got '%s')", type);
        cfg = t == MSBNB_QTYPE_INT8 ? msbnb_int8_config_default() : msbnb_int4_config_default(t);
        if (t == MSBNB_QTYPE_NF4 || t == MSBNB_QTYPE_FP4) cfg.format.double_quant = dq;
        else if (dq) return usage_error("quantize", "%s", "--double-quant applies to nf4 and fp4 only");
    }
    if (asym) {
        if (t != MSBNB_QTYPE_INT8 && t != MSBNB_QTYPE_INT4)
            return usage_error("quantize", "%s", "--asymmetric applies to int8 and int4 only");
        cfg.format.symmetric = 0;
    }
    if (threshold) {
        char *end = NULL;
        double v = strtod(threshold, &end);
        if (t != MSBNB_QTYPE_INT8) return usage_error("quantize", "%s", "--threshold applies to int8 only");
        if (!end || *end || end == threshold || !(v >= 0 && v < 1e30))
            return usage_error("quantize", "--threshold needs a number >= 0 (got '%s')", threshold);
        cfg.llm_int8_threshold = (float)v;
    }
    if (compute) {
        if (t == MSBNB_QTYPE_INT8) return usage_error("quantize", "%s", "--compute-dtype applies to 4-bit types only");
        if (!strcmp(compute, "f32") || !strcmp(compute, "float32")) cfg.compute_dtype = MSBNB_DTYPE_F32;
        else if (!strcmp(compute, "f16") || !strcmp(compute, "float16")) cfg.compute_dtype = MSBNB_DTYPE_F16;
        else if (!strcmp(compute, "bf16") || !strcmp(compute, "bfloat16")) cfg.compute_dtype = MSBNB_DTYPE_BF16;
        else return usage_error("quantize", "--compute-dtype must be f32, f16 or bf16 (got '%s')", compute);
    }
    if (block > 0) {
        if (t == MSBNB_QTYPE_INT8) return usage_error("quantize", "%s", "--block does not apply to int8 (per-row scales)");
        cfg.format.block = block;
    }
    for (int i = 0; i < ns; i++)
        if ((st = msbnb_qconfig_add_skip(&cfg, skips[i])) != MSBNB_OK) return fail(st);
    for (int i = 0; i < nt; i++)
        if ((st = msbnb_qconfig_add_target(&cfg, targets[i])) != MSBNB_OK) return fail(st);
    if ((st = msbnb_qconfig_validate(&cfg)) != MSBNB_OK) return fail(st);
    msbnb_convert_options opt = msbnb_convert_options_default();
    opt.nthreads = (int)threads;
    opt.compute_error = !noerr;
    progress_t pr = {isatty(2), -1};
    if (!quiet) {
        opt.progress = on_progress;
        opt.progress_user = &pr;
    }
    msbnb_convert_report rep;
    st = msbnb_convert_quantize(in, out, &cfg, &opt, &rep);
    if (st != MSBNB_OK) return fail(st);
    char desc[64];
    if (t == MSBNB_QTYPE_INT8)
        snprintf(desc, sizeof desc, "int8 (%s)", cfg.format.symmetric ? "LLM.int8 row-wise" : "asymmetric per row");
    else if (t == MSBNB_QTYPE_INT4)
        snprintf(desc, sizeof desc, "int4 group %lld %s", (long long)cfg.format.block,
                 cfg.format.symmetric ? "symmetric" : "asymmetric");
    else
        snprintf(desc, sizeof desc, "%s block %lld%s", type, (long long)cfg.format.block,
                 cfg.format.double_quant ? " + double quant" : "");
    printf("quantized %s -> %s as %s\n", in, out, desc);
    print_report(&rep, !noerr);
    return 0;
}

/* ---------------------------------------------------------------- dequantize */

static const char *DEQUANTIZE_HELP =
    "usage: msbnb dequantize IN OUT [--dtype f32|f16|bf16] [--threads N] [--quiet]\n"
    "Writes a float checkpoint from a quantized one (bitsandbytes' or msbnb's layout):\n"
    "each quantized module becomes <module>.weight again (in --dtype, default the dtype\n"
    "recorded in its quant state), other tensors are copied, and quantization_config is\n"
    "removed from config.json. OUT must not exist, or be an empty folder.\n";

static int cmd_dequantize(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    long long threads = 0;
    int quiet = 0;
    msbnb_convert_options opt = msbnb_convert_options_default();
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(DEQUANTIZE_HELP, stdout);
            return 0;
        } else if (!strcmp(a, "--dtype")) {
            if (i + 1 >= argc) return usage_error("dequantize", "%s needs a value", a);
            const char *d = argv[++i];
            if (!strcmp(d, "f32") || !strcmp(d, "float32")) opt.out_dtype = MSBNB_DTYPE_F32;
            else if (!strcmp(d, "f16") || !strcmp(d, "float16")) opt.out_dtype = MSBNB_DTYPE_F16;
            else if (!strcmp(d, "bf16") || !strcmp(d, "bfloat16")) opt.out_dtype = MSBNB_DTYPE_BF16;
            else return usage_error("dequantize", "--dtype must be f32, f16 or bf16 (got '%s')", d);
        } else if (!strcmp(a, "--threads")) {
            if (i + 1 >= argc || !parse_int(argv[i + 1], 1, 4096, &threads))
                return usage_error("dequantize", "%s needs an integer in [1, 4096]", a);
            i++;
        } else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
            quiet = 1;
        } else if (a[0] == '-' && a[1]) {
            return usage_error("dequantize", "unknown option '%s'", a);
        } else if (!in) {
            in = a;
        } else if (!out) {
            out = a;
        } else {
            return usage_error("dequantize", "unexpected argument '%s'", a);
        }
    }
    if (!in || !out) return usage_error("dequantize", "%s", "needs IN and OUT");
    opt.nthreads = (int)threads;
    progress_t pr = {isatty(2), -1};
    if (!quiet) {
        opt.progress = on_progress;
        opt.progress_user = &pr;
    }
    msbnb_convert_report rep;
    msbnb_status st = msbnb_convert_dequantize(in, out, &opt, &rep);
    if (st != MSBNB_OK) return fail(st);
    printf("dequantized %s -> %s\n", in, out);
    print_report(&rep, 0);
    return 0;
}

/* ---------------------------------------------------------------- inspect */

static const char *INSPECT_HELP =
    "usage: msbnb inspect PATH [--against ORIG]\n"
    "Lists a checkpoint: each quantized module (format, shape, bytes, bits per weight) and\n"
    "each plain tensor (dtype, shape, bytes), with totals. With --against ORIG (the float\n"
    "checkpoint it came from), adds per-module error statistics of the dequantized weights\n"
    "against the originals (relative error, SNR, max |error|, cosine) and the size reduction.\n";

static void shape_str(const int64_t *shape, int nd, char *out, size_t cap) {
    size_t k = (size_t)snprintf(out, cap, "[");
    for (int i = 0; i < nd && k < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (k < cap) snprintf(out + k, cap - k, "]");
}

static uint64_t files_size(const msbnb_st_file_t *f) {
    uint64_t t = 0;
    for (int s = 0; s < msbnb_st_shard_count(f); s++) {
        struct stat sb;
        if (stat(msbnb_st_shard_path(f, s), &sb) == 0) t += (uint64_t)sb.st_size;
    }
    return t;
}

static void format_desc(const msbnb_qtensor *q, char *out, size_t cap) {
    const msbnb_qparams *p = &q->params;
    switch (p->type) {
    case MSBNB_QTYPE_NF4:
    case MSBNB_QTYPE_FP4:
        snprintf(out, cap, "%s b%lld%s (bnb)", msbnb_qtype_name(p->type), (long long)p->block,
                 p->double_quant ? " dq" : "");
        break;
    case MSBNB_QTYPE_INT8:
        snprintf(out, cap, q->bnb_layout ? "int8 row (bnb)" : p->per_tensor ? "int8 tensor %s" : "int8 row %s",
                 p->symmetric ? "sym" : "asym");
        break;
    case MSBNB_QTYPE_INT4:
        snprintf(out, cap, "int4 g%lld %s", (long long)p->block, p->symmetric ? "sym" : "asym");
        break;
    default:
        snprintf(out, cap, "%s", msbnb_qtype_name(p->type));
    }
}

static int cmp_idx_name(const void *a, const void *b, void *f) {
    msbnb_st_tensor_info x, y;
    msbnb_st_get(f, *(const size_t *)a, &x);
    msbnb_st_get(f, *(const size_t *)b, &y);
    return strcmp(x.name, y.name);
}

static int cmd_inspect(int argc, char **argv) {
    const char *path = NULL, *orig = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(INSPECT_HELP, stdout);
            return 0;
        } else if (!strcmp(a, "--against")) {
            if (i + 1 >= argc) return usage_error("inspect", "%s needs a path", a);
            orig = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            return usage_error("inspect", "unknown option '%s'", a);
        } else if (!path) {
            path = a;
        } else {
            return usage_error("inspect", "unexpected argument '%s'", a);
        }
    }
    if (!path) return usage_error("inspect", "%s", "needs PATH");
    msbnb_st_file_t *f = NULL, *o = NULL;
    msbnb_status st = msbnb_st_open(&f, path);
    if (st != MSBNB_OK) return fail(st);
    if (orig && (st = msbnb_st_open(&o, orig)) != MSBNB_OK) {
        msbnb_st_close(f);
        return fail(st);
    }
    size_t n = msbnb_st_count(f);
    size_t *ord = malloc((n ? n : 1) * sizeof *ord);
    if (!ord) {
        msbnb_st_close(f);
        msbnb_st_close(o);
        fprintf(stderr, "%s: out of memory\n", prog);
        return 1;
    }
    for (size_t i = 0; i < n; i++) ord[i] = i;
    qsort_r(ord, n, sizeof *ord, cmp_idx_name, f);
    /* bytes per quantized module: the weight plus its parts */
    uint64_t *mod_bytes = calloc(n ? n : 1, sizeof *mod_bytes);
    char (*mods)[512] = calloc(n ? n : 1, sizeof *mods);
    size_t nm = 0;
    uint64_t quant_bytes = 0, plain_bytes = 0;
    int rc = 0;
    for (size_t i = 0; i < n && mod_bytes && mods; i++) {
        msbnb_st_tensor_info ti;
        msbnb_st_get(f, i, &ti);
        size_t ml = 0;
        if (msbnb__ckpt_classify(f, ti.name, &ml) == 0 || ml >= 512) {
            plain_bytes += ti.nbytes;
            continue;
        }
        quant_bytes += ti.nbytes;
        size_t k = 0;
        for (; k < nm; k++)
            if (strncmp(mods[k], ti.name, ml) == 0 && mods[k][ml] == 0) break;
        if (k == nm) {
            memcpy(mods[nm], ti.name, ml);
            mods[nm][ml] = 0;
            nm++;
        }
        mod_bytes[k] += ti.nbytes;
    }
    printf("%s: %d shard(s), %zu tensors, %zu quantized modules\n", path, msbnb_st_shard_count(f), n, nm);
    if (o)
        printf("%-52s %-16s %-12s %10s %6s %9s %8s %9s %8s\n", "tensor / module", "format", "shape",
               "bytes", "bits", "rel.err", "SNR dB", "max|err|", "cosine");
    else
        printf("%-52s %-16s %-12s %10s %6s\n", "tensor / module", "format", "shape", "bytes", "bits");
    double err_sum = 0;
    int err_n = 0;
    for (size_t r = 0; r < n && rc == 0; r++) {
        msbnb_st_tensor_info ti;
        msbnb_st_get(f, ord[r], &ti);
        char shp[64], b[32];
        int c = msbnb__ckpt_classify(f, ti.name, NULL);
        if (c == 2) continue;
        if (c == 0) {
            shape_str(ti.shape, ti.ndim, shp, sizeof shp);
            human((double)ti.nbytes, b, sizeof b);
            printf("%-52s %-16s %-12s %10s %6s\n", ti.name, msbnb_dtype_name(ti.dtype), shp, b, "");
            continue;
        }
        msbnb_qtensor q;
        if ((st = msbnb_qtensor_load(&q, f, ti.name)) != MSBNB_OK) {
            rc = fail(st);
            break;
        }
        uint64_t mb = 0;
        for (size_t k = 0; k < nm; k++)
            if (!strcmp(mods[k], q.module)) mb = mod_bytes[k];
        char fd[48];
        format_desc(&q, fd, sizeof fd);
        int64_t shape[2] = {q.rows, q.cols};
        shape_str(shape, 2, shp, sizeof shp);
        human((double)mb, b, sizeof b);
        double bits = 8.0 * (double)mb / ((double)q.rows * (double)q.cols);
        printf("%-52s %-16s %-12s %10s %6.2f", q.module, fd, shp, b, bits);
        if (o) {
            char wname[600];
            snprintf(wname, sizeof wname, "%s.weight", q.module);
            msbnb_st_tensor_info oi;
            int64_t cnt = q.rows * q.cols;
            float *x = NULL, *y = NULL;
            if (msbnb_st_find(o, wname, &oi) != MSBNB_OK || oi.numel != cnt ||
                (oi.dtype != MSBNB_DTYPE_F32 && oi.dtype != MSBNB_DTYPE_F16 && oi.dtype != MSBNB_DTYPE_BF16)) {
                printf("  (no float '%s' of %lld elements in ORIG)\n", wname, (long long)cnt);
            } else if (!(x = malloc((size_t)cnt * sizeof *x)) || !(y = malloc((size_t)cnt * sizeof *y))) {
                fprintf(stderr, "%s: out of memory\n", prog);
                rc = 1;
            } else {
                msbnb_error_stats es;
                /* the original's data may sit at an unaligned offset: decode from a copy */
                memcpy(y, oi.data, (size_t)oi.nbytes);
                if ((st = msbnb_convert(x, MSBNB_DTYPE_F32, y, oi.dtype, cnt)) != MSBNB_OK ||
                    (st = msbnb_qtensor_dequantize(&q, y, cnt, 0)) != MSBNB_OK ||
                    (st = msbnb_estimate_quantization_error(&es, x, y, cnt)) != MSBNB_OK) {
                    printf("\n");
                    rc = fail(st);
                } else {
                    printf(" %9.5f %8.2f %9.5f %8.5f\n", es.rel_frobenius, es.snr_db, es.max_abs, es.cosine);
                    err_sum += es.rel_frobenius;
                    err_n++;
                }
            }
            free(x);
            free(y);
        } else {
            printf("\n");
        }
        msbnb_qtensor_clear(&q);
    }
    if (rc == 0) {
        char a[32], b[32], c2[32];
        human((double)quant_bytes, a, sizeof a);
        human((double)plain_bytes, b, sizeof b);
        human((double)files_size(f), c2, sizeof c2);
        printf("total: %s in quantized modules, %s in plain tensors, %s on disk\n", a, b, c2);
        if (o) {
            uint64_t ob = files_size(o), qb = files_size(f);
            human((double)ob, a, sizeof a);
            printf("against %s (%s): %.2fx smaller (%.1f%% reduction); mean relative error %.5f over %d modules\n",
                   orig, a, qb ? (double)ob / (double)qb : 0.0,
                   ob ? 100.0 * (1.0 - (double)qb / (double)ob) : 0.0, err_n ? err_sum / err_n : 0.0, err_n);
        }
    }
    free(ord);
    free(mod_bytes);
    free(mods);
    msbnb_st_close(f);
    msbnb_st_close(o);
    return rc;
}

/* ---------------------------------------------------------------- bench */

static const char *BENCH_HELP =
    "usage: msbnb bench [ARGS...]\n"
    "Runs the layer benchmark (bench_linear, built next to this binary in bench/) with ARGS\n"
    "(e.g. --quick, --tier avx2) and prints its table.\n";

static int cmd_bench(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(BENCH_HELP, stdout);
            return 0;
        }
    char self[PATH_MAX];
    ssize_t l = readlink("/proc/self/exe", self, sizeof self - 1);
    if (l <= 0) {
        fprintf(stderr, "%s bench: cannot locate this executable\n", prog);
        return 1;
    }
    self[l] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    char exe[PATH_MAX + 32];
    snprintf(exe, sizeof exe, "%s/bench/bench_linear", self);
    if (access(exe, X_OK) != 0) {
        fprintf(stderr, "%s bench: '%s' not found (build the benchmarks: make build)\n", prog, exe);
        return 1;
    }
    char **args = calloc((size_t)argc + 2, sizeof *args);
    if (!args) return 1;
    args[0] = exe;
    for (int i = 0; i < argc; i++) args[i + 1] = argv[i];
    fflush(stdout);
    execv(exe, args);
    fprintf(stderr, "%s bench: cannot run '%s': %s\n", prog, exe, strerror(errno));
    free(args);
    return 1;
}

/* ---------------------------------------------------------------- main */

static const char *MAIN_HELP =
    "usage: msbnb COMMAND [ARGS]\n"
    "bitsandbytes-class weight quantization for safetensors checkpoints.\n"
    "commands:\n"
    "  quantize IN OUT [--type int8|int4|nf4|fp4] [--block N] [--double-quant]\n"
    "                  [--asymmetric] [--threshold X] [--compute-dtype D]\n"
    "                  [--skip PAT]... [--target PAT]... [--config JSON] [--threads N]\n"
    "  inspect PATH [--against ORIG]\n"
    "  dequantize IN OUT [--dtype f32|f16|bf16]\n"
    "  bench [ARGS]\n"
    "  --version, --help ('msbnb COMMAND --help' for each command)\n";

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(MAIN_HELP, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(MAIN_HELP, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("msbnb %s (CPU tier %s)\n", msbnb_version(), msbnb_cpu_tier_name(msbnb_cpu_tier_best()));
        return 0;
    }
    if (!strcmp(cmd, "quantize")) return cmd_quantize(argc - 2, argv + 2);
    if (!strcmp(cmd, "dequantize")) return cmd_dequantize(argc - 2, argv + 2);
    if (!strcmp(cmd, "inspect")) return cmd_inspect(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 2, argv + 2);
    return usage_error(NULL, "unknown command '%s'", cmd);
}
