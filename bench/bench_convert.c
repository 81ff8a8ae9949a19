/* Whole-checkpoint conversion throughput: a generated LLaMA-shaped bf16 checkpoint is
 * converted to each format; GB/s counts input bytes (the bf16 checkpoint) per second of
 * msbnb_convert_quantize, output fsync included. Each conversion runs in a child process
 * so its peak RSS (getrusage of that child) is its own. Baseline in the same run: a
 * conversion that quantizes nothing (every tensor copied through the same writer).
 *   build/bench/bench_convert [--gb X] [--threads N] [--dir D] [--reps R] [--make DIR]
 * (--make DIR only writes the generated checkpoint into DIR, for profiling)
 * (default 2 GB in $TMPDIR or /tmp; the files are deleted afterwards). */
#include "benchutil.h"
#include "msbnb/msbnb.h"

#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

/* LLaMA-2-7B-like layer shapes scaled down (hidden 2048, intermediate 5632, as TinyLlama),
 * bf16, as many layers as fit the size. */
static int write_checkpoint(const char *dir, double gb, uint64_t *bytes) {
    const int64_t H = 2048, I = 5632, V = 32000;
    int64_t per_layer = (4 * H * H + 3 * H * I + 2 * H) * 2;
    int layers = (int)((gb * 1e9 - 2.0 * V * H * 2) / (double)per_layer);
    if (layers < 1) layers = 1;
    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    msbnb_st_writer_t *w = NULL;
    if (msbnb_st_writer_create(&w, path) != MSBNB_OK) return 0;
    msbnb_st_writer_set_metadata(w, "format", "pt");
    static const char *attn[4] = {"q_proj", "k_proj", "v_proj", "o_proj"};
    static const char *mlp[3] = {"gate_proj", "up_proj", "down_proj"};
    char name[128];
    int64_t s_emb[2] = {V, H}, s_hh[2] = {H, H}, s_ih[2] = {I, H}, s_hi[2] = {H, I}, s_n[1] = {H};
    msbnb_st_writer_add(w, "model.embed_tokens.weight", MSBNB_DTYPE_BF16, s_emb, 2);
    msbnb_st_writer_add(w, "lm_head.weight", MSBNB_DTYPE_BF16, s_emb, 2);
    msbnb_st_writer_add(w, "model.norm.weight", MSBNB_DTYPE_BF16, s_n, 1);
    for (int l = 0; l < layers; l++) {
        for (int k = 0; k < 4; k++) {
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.weight", l, attn[k]);
            msbnb_st_writer_add(w, name, MSBNB_DTYPE_BF16, s_hh, 2);
        }
        for (int k = 0; k < 3; k++) {
            snprintf(name, sizeof name, "model.layers.%d.mlp.%s.weight", l, mlp[k]);
            msbnb_st_writer_add(w, name, MSBNB_DTYPE_BF16, k < 2 ? s_ih : s_hi, 2);
        }
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        msbnb_st_writer_add(w, name, MSBNB_DTYPE_BF16, s_n, 1);
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        msbnb_st_writer_add(w, name, MSBNB_DTYPE_BF16, s_n, 1);
    }
    if (msbnb_st_writer_begin(w) != MSBNB_OK) return 0;
    /* a pool of N(0, 0.02) bf16 values; tensors take slices at varying offsets */
    size_t pool_n = (size_t)64 << 20;
    float *f = malloc(pool_n * 4);
    uint16_t *pool = malloc((pool_n + (size_t)I * H) * 2);
    if (!f || !pool) return 0;
    bu_fill_normal(f, pool_n, 7, 0.02f);
    msbnb_convert(pool, MSBNB_DTYPE_BF16, f, MSBNB_DTYPE_F32, (int64_t)pool_n);
    memcpy(pool + pool_n, pool, (size_t)I * H * 2);
    free(f);
    uint64_t off = 0;
    msbnb_st_file_t *dummy = NULL;
    (void)dummy;
    /* write every declared tensor (re-declaring the list in the same order) */
    int ok = 1;
    for (int t = 0; ok; t++) {
        const char *nm = NULL;
        int64_t n = 0;
        if (t == 0) nm = "model.embed_tokens.weight", n = V * H;
        else if (t == 1) nm = "lm_head.weight", n = V * H;
        else if (t == 2) nm = "model.norm.weight", n = H;
        else {
            int l = (t - 3) / 9, k = (t - 3) % 9;
            if (l >= layers) break;
            if (k < 4) snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.weight", l, attn[k]), n = H * H;
            else if (k < 7) snprintf(name, sizeof name, "model.layers.%d.mlp.%s.weight", l, mlp[k - 4]), n = I * H;
            else snprintf(name, sizeof name, "model.layers.%d.%s.weight", l,
                          k == 7 ? "input_layernorm" : "post_attention_layernorm"), n = H;
            nm = name;
        }
        for (int64_t done = 0; done < n && ok;) {
            int64_t c = n - done < (int64_t)pool_n ? n - done : (int64_t)pool_n;
            size_t at = (size_t)((off * 7919) % pool_n);
            if (at + (size_t)c > pool_n + (size_t)I * H) at = 0;
            ok = msbnb_st_writer_write(w, nm, (uint64_t)done * 2, pool + at, (uint64_t)c * 2) == MSBNB_OK;
            done += c;
            off++;
        }
    }
    free(pool);
    ok = ok && msbnb_st_writer_finish(w) == MSBNB_OK;
    *bytes = msbnb_st_writer_file_size(w);
    msbnb_st_writer_free(w);
    if (!ok) fprintf(stderr, "bench_convert: writing the checkpoint failed: %s\n", msbnb_last_error());
    return ok;
}

typedef struct {
    double seconds;
    uint64_t bytes_in, file_out;
    double mean_err;
    long maxrss_kb;
    double cpu_s; /* user + system time of the child */
    int ok;
} result_t;

/* Runs one conversion in a child; its wall time (from the report) and peak RSS. */
static result_t run_child(const char *in, const char *out, const msbnb_qconfig *cfg, int threads,
                          int compute_error) {
    result_t r;
    memset(&r, 0, sizeof r);
    int fd[2];
    if (pipe(fd) != 0) return r;
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        msbnb_convert_options o = msbnb_convert_options_default();
        o.nthreads = threads;
        o.compute_error = compute_error;
        msbnb_convert_report rep;
        result_t c;
        memset(&c, 0, sizeof c);
        if (msbnb_convert_quantize(in, out, cfg, &o, &rep) == MSBNB_OK) {
            c.ok = 1;
            c.seconds = rep.seconds;
            c.bytes_in = rep.file_bytes_in;
            c.file_out = rep.file_bytes_out;
            c.mean_err = rep.mean_rel_error;
        } else {
            fprintf(stderr, "bench_convert: %s\n", msbnb_last_error());
        }
        if (write(fd[1], &c, sizeof c) != (ssize_t)sizeof c) _exit(1);
        _exit(0);
    }
    close(fd[1]);
    if (read(fd[0], &r, sizeof r) != (ssize_t)sizeof r) r.ok = 0;
    close(fd[0]);
    struct rusage ru;
    int status = 0;
    if (wait4(pid, &status, 0, &ru) == pid) {
        r.maxrss_kb = ru.ru_maxrss;
        r.cpu_s = (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
                  (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
    }
    nftw(out, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return r;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    double gb = 2.0;
    int threads = 0, reps = 3;
    const char *base = getenv("TMPDIR");
    if (!base || !base[0]) base = "/tmp";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--gb") && i + 1 < argc) gb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc) base = argv[++i];
        else if (!strcmp(argv[i], "--quick")) gb = 0.25, reps = 1;
        else if (!strcmp(argv[i], "--make") && i + 1 < argc) {
            uint64_t b = 0;
            mkdir(argv[i + 1], 0755);
            return write_checkpoint(argv[i + 1], gb, &b) ? 0 : 1;
        }
        else {
            fprintf(stderr, "usage: bench_convert [--gb X] [--threads N] [--reps R] [--dir D] [--quick]\n");
            return 2;
        }
    }
    if (!(gb > 0) || reps < 1 || reps > 50) return 2;
    struct statvfs vs;
    if (statvfs(base, &vs) == 0 && (double)vs.f_bavail * vs.f_frsize < gb * 1e9 * 2.5) {
        fprintf(stderr, "bench_convert: not enough space in %s for %.2f GB (+ outputs)\n", base, gb);
        return 1;
    }
    char dir[512];
    snprintf(dir, sizeof dir, "%s/msbnb-bench-convert-XXXXXX", base);
    if (!mkdtemp(dir)) return 1;
    char in[560], out[560];
    snprintf(in, sizeof in, "%s/in", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    mkdir(in, 0755);
    uint64_t in_bytes = 0;
    double t0 = bu_now();
    if (!write_checkpoint(in, gb, &in_bytes)) {
        nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
        return 1;
    }
    double tg = bu_now() - t0;
    double load[3] = {0};
    if (getloadavg(load, 3) < 0) load[0] = -1;
    printf("# bench_convert: %.2f GB bf16 checkpoint (generated in %.1f s) in %s; %s; threads %d; "
           "load average %.2f; median of %d\n", in_bytes / 1e9, tg, base, bu_machine(),
           threads > 0 ? threads : msbnb_default_threads(), load[0], reps);
    printf("\n| conversion | median s | GB/s of input | vs copy | CPU s (user+sys) | GB per CPU-s | output GB | ratio | peak RSS MB | mean rel. err |\n"
           "|---|---|---|---|---|---|---|---|---|---|\n");
    struct {
        const char *name;
        msbnb_qtype t;
        int dq, err;
    } runs[] = {{"copy (nothing selected)", MSBNB_QTYPE_NF4, 0, 0},
                {"nf4 b64 + dq", MSBNB_QTYPE_NF4, 1, 1},
                {"nf4 b64 + dq, no error pass", MSBNB_QTYPE_NF4, 1, 0},
                {"nf4 b64", MSBNB_QTYPE_NF4, 0, 1},
                {"fp4 b64", MSBNB_QTYPE_FP4, 0, 1},
                {"int8 (LLM.int8)", MSBNB_QTYPE_INT8, 0, 1},
                {"int4 g128 sym", MSBNB_QTYPE_INT4, 0, 1}};
    double copy_s = 0;
    for (size_t k = 0; k < sizeof runs / sizeof runs[0]; k++) {
        msbnb_qconfig cfg = runs[k].t == MSBNB_QTYPE_INT8 ? msbnb_int8_config_default()
                                                         : msbnb_int4_config_default(runs[k].t);
        if (runs[k].t == MSBNB_QTYPE_NF4 || runs[k].t == MSBNB_QTYPE_FP4) cfg.format.double_quant = runs[k].dq;
        if (k == 0) msbnb_qconfig_add_target(&cfg, "no_such_module");
        double s[50], cpu[50];
        result_t r;
        long rss = 0;
        for (int i = 0; i < reps; i++) {
            r = run_child(in, out, &cfg, threads, runs[k].err);
            if (!r.ok) {
                nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
                return 1;
            }
            s[i] = r.seconds;
            cpu[i] = r.cpu_s;
            if (r.maxrss_kb > rss) rss = r.maxrss_kb;
        }
        qsort(s, (size_t)reps, sizeof s[0], cmp_d);
        qsort(cpu, (size_t)reps, sizeof cpu[0], cmp_d);
        double med = s[reps / 2], mcpu = cpu[reps / 2];
        if (k == 0) copy_s = med;
        printf("| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.3f | %.2fx | %.0f | %s%.4f |\n", runs[k].name, med,
               r.bytes_in / med / 1e9, copy_s / med, mcpu, r.bytes_in / mcpu / 1e9, r.file_out / 1e9,
               (double)r.bytes_in / (double)r.file_out, rss / 1024.0, runs[k].err ? "" : "(off) ",
               r.mean_err);
        fflush(stdout);
    }
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
