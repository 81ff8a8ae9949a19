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

static void test_version_and_help(void) {
    CHECK(run("--version") == 0 && contains(g_out, MSBNB_VERSION_STRING));
    CHECK(run("--help") == 0 && contains(g_out, "quantize IN OUT"));
    static const char *cmds[] = {"quantize", "inspect", "dequantize", "bench"};
    for (int i = 0; i < 4; i++) {
        char a[64];
        snprintf(a, sizeof a, "%s --help", cmds[i]);
        CHECKF(run(a) == 0 && contains(g_out, "usage: msbnb"), "%s --help", cmds[i]);
    }
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
}

static void test_quantize_inspect_dequantize(void) {
    const char *fp32 = tu_data_path("tiny-llama/fp32");
    char fp32c[512];
    snprintf(fp32c, sizeof fp32c, "%s", fp32);
    char *q = io_join(g_dir, "nf4dq"), *d = io_join(g_dir, "deq"), args[2048];
    snprintf(args, sizeof args, "quantize %s %s --type nf4 --double-quant --threads 2", fp32c, q);
    CHECK(run(args) == 0);
    /* stderr is no terminal here: plain progress lines, one per tensor */
    CHECK(contains(g_err, "[21/21] "));
    CHECK(contains(g_out, "down_proj") && contains(g_out, "reduction"));
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
    io_rm_rf(g_dir);
    free(g_dir);
    return tu_finish();
}
