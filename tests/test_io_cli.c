/* The msbnb command-line tool, driven as a user would: exit codes, help, errors on
 * stderr, and quantize / inspect / dequantize on the bundled tiny LLaMA (the quantized
 * file must equal transformers + bitsandbytes' save byte for byte). Runs ./msbnb from the
 * build folder (CTest's working directory). */
#include "io_testutil.h"

#include <sys/wait.h>

static char *g_dir;
static char g_out[600], g_err[600];

/* Runs "./msbnb ARGS" with stdout/stderr captured to files; returns the exit code. */
static int run(const char *args) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "./msbnb %s >%s 2>%s", args, g_out, g_err);
    int r = system(cmd);
    return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

static int contains(const char *file, const char *needle) {
    size_t n = 0;
    char *t = io_read_file(file, &n);
    if (!t) return 0;
    char *z = realloc(t, n + 1);
    if (!z) { free(t); return 0; }
    z[n] = 0;
    int r = strstr(z, needle) != NULL;
    free(z);
    return r;
}

static long file_len(const char *file) {
    struct stat sb;
    return stat(file, &sb) == 0 ? (long)sb.st_size : -1;
}

static void test_version_and_help(void) {
    CHECK(run("--version") == 0 && contains(g_out, MSBNB_VERSION_STRING) && file_len(g_err) == 0);
    CHECK(run("--help") == 0 && contains(g_out, "quantize IN OUT") && contains(g_out, "dequantize IN OUT") &&
          contains(g_out, "inspect PATH") && contains(g_out, "bench"));
    /* each command's help names its own options */
    static const char *cmds[] = {"quantize", "inspect", "dequantize", "bench"};
    static const char *opts[] = {"--compute-dtype", "--against", "--dtype", "bench_linear"};
    for (int i = 0; i < 4; i++) {
        char a[64];
        snprintf(a, sizeof a, "%s --help", cmds[i]);
        CHECKF(run(a) == 0 && contains(g_out, "usage: msbnb") && contains(g_out, opts[i]) && file_len(g_err) == 0,
               "%s --help", cmds[i]);
    }
    static const char *qopts[] = {"--type", "--block", "--double-quant", "--skip", "--target", "--threads"};
    CHECK(run("quantize --help") == 0);
    for (int i = 0; i < 6; i++) CHECKF(contains(g_out, qopts[i]), "quantize --help lacks %s", qopts[i]);
}

static void test_usage_errors(void) {
    CHECK(run("") == 2);
    CHECK(run("frobnicate") == 2 && contains(g_err, "unknown command"));
    CHECK(run("quantize") == 2 && contains(g_err, "needs IN and OUT"));
    CHECK(run("quantize a b --type int3") == 2 && contains(g_err, "--type"));
    CHECK(run("quantize a b --block") == 2);
    CHECK(run("quantize a b --threads 0") == 2);
    CHECK(run("quantize a b --bogus") == 2 && contains(g_err, "unknown option"));
    CHECK(run("quantize a b --type int8 --double-quant") == 2);
    CHECK(run("quantize a b --type nf4 --threshold 6") == 2);
    CHECK(run("quantize a b --type int8 --threshold x") == 2);
    CHECK(run("inspect") == 2);
    CHECK(run("dequantize a b --dtype i8") == 2);
    CHECK(run("quantize a b --compute-dtype f8") == 2 && contains(g_err, "--compute-dtype"));
    CHECK(run("quantize a b --type int8 --compute-dtype bf16") == 2);
    /* usage errors go to stderr only, with a pointer to the command's help */
    CHECK(run("quantize a b --bogus") == 2 && file_len(g_out) == 0 && contains(g_err, "Try 'msbnb quantize --help'"));
    CHECK(run("inspect a b") == 2 && file_len(g_out) == 0 && contains(g_err, "Try 'msbnb inspect --help'"));
    CHECK(run("frobnicate") == 2 && file_len(g_out) == 0 && contains(g_err, "Try 'msbnb --help'"));
    /* run-time errors: exit 1, message on stderr, nothing on stdout */
    CHECK(run("inspect /nonexistent/model.safetensors") == 1 && file_len(g_out) == 0 &&
          contains(g_err, "/nonexistent/model.safetensors"));
    CHECK(run("dequantize /nonexistent/in /nonexistent/out -q") == 1 && file_len(g_out) == 0 &&
          contains(g_err, "error"));
}

/* With stderr on a terminal, progress is one bar redrawn in place (tensors, bytes, rate,
 * ETA). util-linux script(1) provides the pseudo-terminal; without it the test says so. */
static void test_progress_bar_on_a_terminal(void) {
    if (access("/usr/bin/script", X_OK) != 0) {
        printf("  (no /usr/bin/script: progress bar not checked)\n");
        return;
    }
    char *o = io_join(g_dir, "tty"), cmd[4096];
    snprintf(cmd, sizeof cmd, "script -qec './msbnb quantize %s %s --threads 1' /dev/null >%s 2>&1",
             tu_data_path("tiny-llama/fp32"), o, g_out);
    int r = system(cmd);
    CHECK(WIFEXITED(r) && WEXITSTATUS(r) == 0);
    CHECK(contains(g_out, "\r[") && contains(g_out, "] 100% 21/21 tensors") && contains(g_out, "/s ETA "));
    CHECK(!contains(g_out, "[1/21] ")); /* not the plain lines */
    CHECK(io_exists(o));
    io_rm_rf(o);
    free(o);
}

/* Loads module m of checkpoint dir and returns its format (F32 for a plain weight). */
static msbnb_qtype module_type(const char *dir, const char *m, int64_t *block) {
    msbnb_st_file_t *f = NULL;
    msbnb_qtype t = MSBNB_QTYPE_COUNT_;
    if (msbnb_st_open(&f, dir) != MSBNB_OK) return t;
    msbnb_qtensor q;
    if (msbnb_qtensor_load(&q, f, m) == MSBNB_OK) {
        t = q.params.type;
        if (block) *block = q.params.block;
        msbnb_qtensor_clear(&q);
    }
    msbnb_st_close(f);
    return t;
}

/* The quantize flags change the output as they say. */
static void test_quantize_flags_take_effect(void) {
    char fp32[512], args[2048];
    snprintf(fp32, sizeof fp32, "%s", tu_data_path("tiny-llama/fp32"));
    char *o = io_join(g_dir, "flags");
    /* --skip / --target: only layer 1's attention projections become fp4 */
    snprintf(args, sizeof args, "quantize %s %s -q --type fp4 --skip mlp --target layers.1", fp32, o);
    CHECK(run(args) == 0);
    CHECK(module_type(o, "model.layers.1.self_attn.q_proj", NULL) == MSBNB_QTYPE_FP4);
    CHECK(module_type(o, "model.layers.1.self_attn.o_proj", NULL) == MSBNB_QTYPE_FP4);
    CHECK(module_type(o, "model.layers.0.self_attn.q_proj", NULL) == MSBNB_QTYPE_F32);
    CHECK(module_type(o, "model.layers.1.mlp.up_proj", NULL) == MSBNB_QTYPE_F32);
    CHECK(module_type(o, "lm_head", NULL) == MSBNB_QTYPE_F32);
    char *cfg = io_join(o, "config.json");
    CHECK(contains(cfg, "\"llm_int8_skip_modules\"") && contains(cfg, "\"mlp\""));
    io_rm_rf(o);
    /* --block and --compute-dtype reach the quant state and the config */
    snprintf(args, sizeof args, "quantize %s %s -q --type nf4 --block 128 --compute-dtype bf16 --threads 1", fp32, o);
    CHECK(run(args) == 0);
    int64_t block = 0;
    CHECK(module_type(o, "model.layers.0.mlp.down_proj", &block) == MSBNB_QTYPE_NF4 && block == 128);
    CHECK(contains(cfg, "\"bnb_4bit_compute_dtype\": \"bfloat16\"") && contains(cfg, "\"bnb_4bit_quant_type\": \"nf4\""));
    CHECK(contains(cfg, "\"bnb_4bit_use_double_quant\": false"));
    io_rm_rf(o);
    /* --threshold is recorded for LLM.int8 */
    snprintf(args, sizeof args, "quantize %s %s -q --type int8 --threshold 4.5", fp32, o);
    CHECK(run(args) == 0);
    CHECK(module_type(o, "model.layers.0.mlp.down_proj", NULL) == MSBNB_QTYPE_INT8);
    CHECK(contains(cfg, "\"llm_int8_threshold\": 4.5") && contains(cfg, "\"load_in_8bit\": true"));
    io_rm_rf(o);
    free(cfg), free(o);
}

/* dequantize writes a float checkpoint: the tensors of the original, plain weights of the
 * original shape in the requested dtype, close to the original values, no quant state. */
static void check_float_checkpoint(const char *dir, msbnb_dtype want, double max_rel) {
    msbnb_st_file_t *d = NULL, *o = NULL;
    CHECK_OK(msbnb_st_open(&d, dir));
    CHECK_OK(msbnb_st_open(&o, tu_data_path("tiny-llama/fp32")));
    if (!d || !o) goto done;
    CHECKF(msbnb_st_count(d) == msbnb_st_count(o), "%s: %zu tensors", dir, msbnb_st_count(d));
    for (size_t i = 0; i < msbnb_st_count(o); i++) {
        msbnb_st_tensor_info a, b;
        CHECK_OK(msbnb_st_get(o, i, &a));
        if (msbnb_st_find(d, a.name, &b) != MSBNB_OK) {
            CHECKF(0, "%s: no %s", dir, a.name);
            continue;
        }
        int quantized = a.ndim == 2 && !strstr(a.name, "embed") && !strstr(a.name, "lm_head");
        CHECKF(b.dtype == (quantized ? want : a.dtype) && b.ndim == a.ndim && b.numel == a.numel, "%s: %s is %s",
               dir, a.name, msbnb_dtype_name(b.dtype));
        if (b.numel != a.numel || b.dtype == MSBNB_DTYPE_I8 || b.dtype == MSBNB_DTYPE_U8) continue;
        float *x = malloc((size_t)a.numel * 4), *y = malloc((size_t)a.numel * 4), *t = malloc((size_t)b.nbytes + 1);
        memcpy(t, b.data, (size_t)b.nbytes);
        memcpy(x, a.data, (size_t)a.nbytes);
        CHECK_OK(msbnb_convert(y, MSBNB_DTYPE_F32, t, b.dtype, b.numel));
        msbnb_error_stats es;
        CHECK_OK(msbnb_estimate_quantization_error(&es, x, y, a.numel));
        CHECKF(es.rel_frobenius <= (quantized ? max_rel : 0.0), "%s: %s rel. error %g", dir, a.name, es.rel_frobenius);
        free(x), free(y), free(t);
    }
    for (size_t i = 0; i < msbnb_st_count(d); i++) {
        msbnb_st_tensor_info b;
        CHECK_OK(msbnb_st_get(d, i, &b));
        CHECKF(!strstr(b.name, "quant_state") && !strstr(b.name, "absmax") && !strstr(b.name, "SCB"), "%s: %s left", dir,
               b.name);
    }
    char *c = io_join(dir, "config.json");
    CHECK(io_exists(c) && !contains(c, "quantization_config"));
    free(c);
done:
    msbnb_st_close(d);
    msbnb_st_close(o);
}

static void test_dequantize_writes_float_checkpoint(void) {
    char args[2048], nf4[512], int8[512];
    snprintf(nf4, sizeof nf4, "%s", tu_data_path("tiny-llama/nf4dq"));
    snprintf(int8, sizeof int8, "%s", tu_data_path("tiny-llama/int8"));
    char *d = io_join(g_dir, "deq-f32");
    /* bitsandbytes' own saves, as transformers wrote them */
    snprintf(args, sizeof args, "dequantize %s %s", nf4, d);
    /* progress counts the 91 stored tensors (weights and their quant-state parts) */
    CHECK(run(args) == 0 && contains(g_out, "dequantized") && contains(g_out, "21 tensors out") &&
          contains(g_out, "larger") && contains(g_err, "[91/91] "));
    check_float_checkpoint(d, MSBNB_DTYPE_F32, 0.13);
    io_rm_rf(d);
    snprintf(args, sizeof args, "dequantize %s %s -q --dtype bf16 --threads 2", int8, d);
    CHECK(run(args) == 0 && file_len(g_err) == 0);
    check_float_checkpoint(d, MSBNB_DTYPE_BF16, 0.02);
    /* an existing non-empty output is refused and left as it was */
    snprintf(args, sizeof args, "dequantize %s %s -q", nf4, d);
    CHECK(run(args) == 1 && file_len(g_out) == 0 && contains(g_err, "not an empty directory"));
    check_float_checkpoint(d, MSBNB_DTYPE_BF16, 0.02);
    io_rm_rf(d);
    free(d);
}

static void test_quantize_inspect_dequantize(void) {
    const char *fp32 = tu_data_path("tiny-llama/fp32");
    char fp32c[512];
    snprintf(fp32c, sizeof fp32c, "%s", fp32);
    char *q = io_join(g_dir, "nf4dq"), *d = io_join(g_dir, "deq"), args[2048];
    snprintf(args, sizeof args, "quantize %s %s --type nf4 --double-quant --threads 2", fp32c, q);
    CHECK(run(args) == 0);
    /* stderr is no terminal here: plain progress lines, one per tensor, with tensors,
     * bytes, rate and ETA; the summary table (per module type) goes to stdout */
    CHECK(contains(g_err, "[1/21] ") && contains(g_err, "[21/21] ") && contains(g_err, "/s, ETA ") &&
          !contains(g_err, "\r"));
    CHECK(contains(g_out, "down_proj") && contains(g_out, "reduction"));
    CHECK(contains(g_out, "module type") && contains(g_out, "count") && contains(g_out, "bytes before") &&
          contains(g_out, "bytes after") && contains(g_out, "mean rel. error") && contains(g_out, "(copied)") &&
          contains(g_out, "14 quantized, 7 copied"));
    char *qf = io_join(q, "model.safetensors");
    size_t la = 0, lb = 0;
    void *a = io_read_file(qf, &la), *b = io_read_file(tu_data_path("tiny-llama/nf4dq/model.safetensors"), &lb);
    CHECK(a && b && la == lb && memcmp(a, b, la) == 0);
    free(a), free(b);
    snprintf(args, sizeof args, "inspect %s --against %s", q, fp32c);
    CHECK(run(args) == 0 && contains(g_out, "nf4 b64 dq") && contains(g_out, "reduction") &&
          contains(g_out, "model.layers.1.mlp.up_proj"));
    snprintf(args, sizeof args, "dequantize %s %s --quiet", q, d);
    CHECK(run(args) == 0);
    char *dc = io_join(d, "config.json");
    a = io_read_file(dc, &la);
    b = io_read_file(tu_data_path("tiny-llama/fp32/config.json"), &lb);
    CHECK(a && b && la == lb && memcmp(a, b, la) == 0);
    free(a), free(b);
    /* errors: output exists, malformed input; message on stderr, exit 1, nothing left */
    snprintf(args, sizeof args, "quantize %s %s --quiet", fp32c, q);
    CHECK(run(args) == 1 && contains(g_err, "not an empty directory"));
    snprintf(args, sizeof args, "quantize %s %s --quiet", q, d);
    CHECK(run(args) == 1 && contains(g_err, "already quantized"));
    char *bad = io_join(g_dir, "bad.safetensors"), *bo = io_join(g_dir, "bad-out");
    CHECK(io_write_file(bad, "\x10\0\0\0\0\0\0\0{\"a\":", 13));
    snprintf(args, sizeof args, "inspect %s", bad);
    CHECK(run(args) == 1 && contains(g_err, bad));
    snprintf(args, sizeof args, "quantize %s %s -q --block 48", fp32c, bo);
    CHECK(run(args) == 1 && contains(g_err, "48"));
    CHECK(!io_exists(bo));
    /* the format can come from a transformers config.json: same bytes as bnb's save */
    char *q2 = io_join(g_dir, "from-config"), cfgp[512];
    snprintf(cfgp, sizeof cfgp, "%s", tu_data_path("tiny-llama/nf4dq/config.json"));
    snprintf(args, sizeof args, "quantize %s %s -q --config %s", fp32c, q2, cfgp);
    CHECK(run(args) == 0);
    char *q2f = io_join(q2, "model.safetensors");
    a = io_read_file(q2f, &la);
    b = io_read_file(tu_data_path("tiny-llama/nf4dq/model.safetensors"), &lb);
    CHECK(a && b && la == lb && memcmp(a, b, la) == 0);
    free(a), free(b), free(q2f), free(q2);
    snprintf(args, sizeof args, "quantize %s %s -q --config %s --type int8", fp32c, bo, cfgp);
    CHECK(run(args) == 2 && contains(g_err, "disagrees"));
    /* other formats run too */
    static const char *fmts[] = {"--type int8 --threshold 4.5", "--type int4 --block 32", "--type int4 --asymmetric",
                                 "--type int8 --asymmetric", "--type fp4 --skip mlp --target layers.1"};
    for (int i = 0; i < 5; i++) {
        char *o = io_join(g_dir, "fmt");
        snprintf(args, sizeof args, "quantize %s %s -q %s", fp32c, o, fmts[i]);
        int rc = run(args);
        if (rc != 0) {
            size_t n = 0;
            char *e = io_read_file(g_err, &n);
            fprintf(stderr, "stderr: %.*s\n", (int)n, e ? e : "");
            free(e);
        }
        CHECKF(rc == 0, "%s", fmts[i]);
        snprintf(args, sizeof args, "inspect %s --against %s", o, fp32c);
        CHECKF(run(args) == 0, "inspect %s", fmts[i]);
        io_rm_rf(o);
        free(o);
    }
    free(bad), free(bo), free(dc), free(qf), free(q), free(d);
}

int main(void) {
    if (access("./msbnb", X_OK) != 0) {
        fprintf(stderr, "test_io_cli: ./msbnb not found (run from the build folder)\n");
        return 1;
    }
    g_dir = io_mkdtemp();
    CHECK(g_dir != NULL);
    if (!g_dir) return tu_finish();
    snprintf(g_out, sizeof g_out, "%s/stdout.txt", g_dir);
    snprintf(g_err, sizeof g_err, "%s/stderr.txt", g_dir);
    RUN_TEST(test_version_and_help);
    RUN_TEST(test_usage_errors);
    RUN_TEST(test_quantize_inspect_dequantize);
    RUN_TEST(test_quantize_flags_take_effect);
    RUN_TEST(test_progress_bar_on_a_terminal);
    RUN_TEST(test_dequantize_writes_float_checkpoint);
    io_rm_rf(g_dir);
    free(g_dir);
    return tu_finish();
}
