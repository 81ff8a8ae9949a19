/* Whole-checkpoint conversion: byte identity with transformers + bitsandbytes' saves of
 * tiny-llama, round trips quantize -> read back -> dequantize for every format (against
 * the functional API and within each format's error), sharded input, module selection,
 * loading into linear layers, and failures that leave no output behind. */
#include "io_testutil.h"

#include <math.h>

static tu_rng g_rng;
static char *g_dir;
static int g_case;

static char *fresh(const char *stem) {
    char name[64];
    snprintf(name, sizeof name, "%s-%d", stem, g_case++);
    return io_join(g_dir, name);
}

static int files_equal(const char *a, const char *b) {
    size_t la = 0, lb = 0;
    void *x = io_read_file(a, &la), *y = io_read_file(b, &lb);
    int eq = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return eq;
}

/* Converts tiny-llama/fp32 with cfg and compares every tensor (and the files) with the
 * folder transformers + bitsandbytes wrote. */
static void check_matches_bnb(const char *folder, msbnb_qconfig cfg) {
    char ref_dir[512];
    snprintf(ref_dir, sizeof ref_dir, "%s", tu_data_path("tiny-llama/"));
    char *in = io_join(ref_dir, "fp32"), *ref = io_join(ref_dir, folder), *out = fresh(folder);
    msbnb_convert_report rep;
    msbnb_convert_options opt = msbnb_convert_options_default();
    opt.nthreads = 1 + (int)(tu_rng_u64(&g_rng) % 3); /* results must not depend on it */
    CHECK_OK(msbnb_convert_quantize(in, out, &cfg, &opt, &rep));
    CHECK(rep.n_quantized == 14 && rep.n_copied == 7 && rep.n_tensors_in == 21);
    msbnb_st_file_t *a = NULL, *b = NULL;
    char *ref_st = io_join(ref, "model.safetensors"), *out_st = io_join(out, "model.safetensors");
    CHECK_OK(msbnb_st_open(&a, ref_st));
    CHECK_OK(msbnb_st_open(&b, out_st));
    if (a && b) {
        CHECK(msbnb_st_count(a) == msbnb_st_count(b));
        CHECK((int64_t)msbnb_st_count(b) == rep.n_tensors_out);
        for (size_t i = 0; i < msbnb_st_count(a); i++) {
            msbnb_st_tensor_info x, y;
            CHECK_OK(msbnb_st_get(a, i, &x));
            if (msbnb_st_find(b, x.name, &y) != MSBNB_OK) {
                CHECKF(0, "%s: missing %s", folder, x.name);
                continue;
            }
            CHECKF(x.dtype == y.dtype && x.ndim == y.ndim && x.nbytes == y.nbytes, "%s: %s", folder, x.name);
            for (int d = 0; d < x.ndim && d < y.ndim; d++) CHECK(x.shape[d] == y.shape[d]);
            if (x.nbytes == y.nbytes && x.nbytes)
                CHECKF(memcmp(x.data, y.data, x.nbytes) == 0, "%s: data of %s differ", folder, x.name);
        }
    }
    msbnb_st_close(a);
    msbnb_st_close(b);
    /* the whole files too: same header layout, same config.json, side files copied */
    CHECKF(files_equal(ref_st, out_st), "%s: model.safetensors differs", folder);
    char *rc = io_join(ref, "config.json"), *oc = io_join(out, "config.json");
    CHECKF(files_equal(rc, oc), "%s: config.json differs", folder);
    char *rg = io_join(ref, "generation_config.json"), *og = io_join(out, "generation_config.json");
    CHECK(files_equal(rg, og));
    /* and the config reads back as cfg */
    size_t len = 0;
    char *text = io_read_file(oc, &len);
    msbnb_qconfig back;
    CHECK_OK(msbnb_qconfig_from_json(&back, text, len));
    CHECK(back.format.type == cfg.format.type && back.format.double_quant == cfg.format.double_quant);
    free(text);
    free(rc), free(oc), free(rg), free(og), free(ref_st), free(out_st);
    free(in), free(ref), free(out);
}

static void test_nf4dq_matches_bnb(void) {
    msbnb_qconfig c = msbnb_int4_config_default(MSBNB_QTYPE_NF4);
    c.format.double_quant = 1;
    check_matches_bnb("nf4dq", c);
}

static void test_fp4_matches_bnb(void) {
    check_matches_bnb("fp4", msbnb_int4_config_default(MSBNB_QTYPE_FP4));
}

static void test_int8_matches_bnb(void) {
    check_matches_bnb("int8", msbnb_int8_config_default());
}

/* ---- a generated checkpoint with odd shapes and mixed dtypes */

typedef struct {
    char name[64];
    msbnb_dtype dt;
    int64_t r, c;
    void *data;
} gen_t;

enum { NGEN = 7 };
static gen_t gen[NGEN];

static void make_gen(void) {
    static const struct {
        const char *name;
        msbnb_dtype dt;
        int64_t r, c;
    } spec[NGEN] = {
        {"model.embed_tokens.weight", MSBNB_DTYPE_F32, 11, 8},
        {"model.layers.0.self_attn.q_proj.weight", MSBNB_DTYPE_F32, 3, 5},   /* odd element count */
        {"model.layers.0.mlp.down_proj.weight", MSBNB_DTYPE_BF16, 7, 130},   /* bf16, tail block */
        {"model.layers.0.mlp.up_proj.weight", MSBNB_DTYPE_F16, 1, 4097},     /* one long row */
        {"model.layers.0.mlp.up_proj.bias", MSBNB_DTYPE_F32, 1, 1},
        {"model.norm.weight", MSBNB_DTYPE_F32, 1, 8},
        {"lm_head.weight", MSBNB_DTYPE_F32, 11, 8},
    };
    for (int i = 0; i < NGEN; i++) {
        gen_t *g = &gen[i];
        snprintf(g->name, sizeof g->name, "%s", spec[i].name);
        g->dt = spec[i].dt;
        g->r = spec[i].r;
        g->c = spec[i].c;
        int64_t n = g->r * g->c;
        float *f = malloc((size_t)n * sizeof *f);
        tu_fill_normal(&g_rng, f, (size_t)n, 0.05f);
        g->data = malloc((size_t)n * msbnb_dtype_size(g->dt));
        msbnb_convert(g->data, g->dt, f, MSBNB_DTYPE_F32, n);
        free(f);
    }
}

static void free_gen(void) {
    for (int i = 0; i < NGEN; i++) free(gen[i].data);
}

static int is_1d(const gen_t *g) { return strstr(g->name, "norm") || strstr(g->name, "bias"); }

/* Writes the generated tensors as one file (nshards == 1) or as a sharded folder. */
static void write_gen(const char *dir, int nshards) {
    mkdir(dir, 0755);
    io_tensor t[NGEN];
    for (int i = 0; i < NGEN; i++) {
        t[i] = (io_tensor){gen[i].name, gen[i].dt, is_1d(&gen[i]) ? 1 : 2, {gen[i].r, gen[i].c}, gen[i].data};
        if (is_1d(&gen[i])) t[i].shape[0] = gen[i].r * gen[i].c;
    }
    static const char cfg[] = "{\n  \"model_type\": \"llama\",\n  \"vocab_size\": 11\n}\n";
    char *cp = io_join(dir, "config.json");
    CHECK(io_write_file(cp, cfg, sizeof cfg - 1));
    free(cp);
    if (nshards == 1) {
        char *p = io_join(dir, "model.safetensors");
        CHECK_OK(io_write_st(p, t, NGEN));
        free(p);
        return;
    }
    /* shard k holds tensors i with i % nshards == k */
    char idx[4096];
    size_t k = (size_t)snprintf(idx, sizeof idx, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
    for (int s = 0; s < nshards; s++) {
        io_tensor part[NGEN];
        int np = 0;
        char fname[64];
        snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, nshards);
        for (int i = s; i < NGEN; i += nshards) {
            part[np++] = t[i];
            k += (size_t)snprintf(idx + k, sizeof idx - k, "%s\"%s\": \"%s\"", k > 60 ? ", " : "",
                                  t[i].name, fname);
        }
        char *p = io_join(dir, fname);
        CHECK_OK(io_write_st(p, part, np));
        free(p);
    }
    snprintf(idx + k, sizeof idx - k, "}}");
    char *ip = io_join(dir, "model.safetensors.index.json");
    CHECK(io_write_file(ip, idx, strlen(idx)));
    free(ip);
}

typedef struct {
    const char *name;
    msbnb_qconfig cfg;
    double max_rel; /* bound on ||w - deq|| / ||w|| for N(0, s) weights */
} fmt_case;

static int n_cases(fmt_case *c) {
    int n = 0;
    c[n++] = (fmt_case){"nf4-dq", msbnb_int4_config_default(MSBNB_QTYPE_NF4), 0.13};
    c[n] = (fmt_case){"nf4-b32", msbnb_int4_config_default(MSBNB_QTYPE_NF4), 0.13};
    c[n].cfg.format.block = 32;
    c[n++].cfg.format.double_quant = 0;
    c[n++] = (fmt_case){"fp4", msbnb_int4_config_default(MSBNB_QTYPE_FP4), 0.16};
    c[n] = (fmt_case){"fp4-dq-b128", msbnb_int4_config_default(MSBNB_QTYPE_FP4), 0.17};
    c[n].cfg.format.block = 128;
    c[n++].cfg.format.double_quant = 1;
    c[n++] = (fmt_case){"int8-bnb", msbnb_int8_config_default(), 0.012};
    c[n] = (fmt_case){"int8-asym", msbnb_int8_config_default(), 0.012};
    c[n++].cfg.format.symmetric = 0;
    c[n] = (fmt_case){"int8-asym-tensor", msbnb_int8_config_default(), 0.03};
    c[n].cfg.format.symmetric = 0;
    c[n++].cfg.format.per_tensor = 1;
    c[n] = (fmt_case){"int4-g32", msbnb_int4_config_default(MSBNB_QTYPE_INT4), 0.16};
    c[n++].cfg.format.block = 32;
    c[n] = (fmt_case){"int4-g6-asym", msbnb_int4_config_default(MSBNB_QTYPE_INT4), 0.12};
    c[n].cfg.format.block = 6;
    c[n++].cfg.format.symmetric = 0;
    return n;
}

/* The reference: functional-API quantize + dequantize of w (f32 copy of the tensor). */
static void reference_dequant(const msbnb_qparams *p, const gen_t *g, float *out) {
    int64_t n = g->r * g->c;
    float *w = malloc((size_t)n * sizeof *w);
    msbnb_convert(w, MSBNB_DTYPE_F32, g->data, g->dt, n);
    if (p->type == MSBNB_QTYPE_NF4 || p->type == MSBNB_QTYPE_FP4) {
        int64_t nb = msbnb_nblocks(n, p->block);
        uint8_t *pk = malloc((size_t)(n + 1) / 2), *qa = malloc((size_t)nb);
        float *am = malloc((size_t)nb * 4), *na = malloc((size_t)(nb / 256 + 1) * 4), off = 0;
        CHECK_OK(msbnb_quantize_4bit(pk, am, g->data, g->dt, n, p->block, p->type, 1));
        if (p->double_quant) {
            CHECK_OK(msbnb_double_quant_absmax(qa, na, &off, am, nb));
            CHECK_OK(msbnb_double_dequant_absmax(am, qa, na, off, nb));
        }
        CHECK_OK(msbnb_dequantize_4bit(out, MSBNB_DTYPE_F32, pk, am, n, p->block, p->type, 1));
        free(pk), free(qa), free(am), free(na);
    } else if (p->type == MSBNB_QTYPE_INT8 && p->symmetric) {
        uint16_t *h = malloc((size_t)n * 2);
        int8_t *q = malloc((size_t)n);
        float *scb = malloc((size_t)g->r * 4);
        int64_t no = 0;
        msbnb_convert(h, MSBNB_DTYPE_F16, g->data, g->dt, n);
        CHECK_OK(msbnb_int8_vectorwise_quant(q, scb, NULL, 0, &no, h, MSBNB_DTYPE_F16, g->r, g->c, 0));
        CHECK_OK(msbnb_int8_vectorwise_dequant(out, q, scb, g->r, g->c));
        free(h), free(q), free(scb);
    } else if (p->type == MSBNB_QTYPE_INT8) {
        int8_t *q = malloc((size_t)n);
        float *s = malloc((size_t)g->r * 4), *z = malloc((size_t)g->r * 4);
        CHECK_OK(msbnb_quantize_8bit(q, s, z, w, g->r, g->c, 0, p->per_tensor));
        CHECK_OK(msbnb_dequantize_8bit(out, q, s, z, g->r, g->c, 0, p->per_tensor));
        free(q), free(s), free(z);
    } else {
        int64_t gpr = 0, pb = 0;
        CHECK_OK(msbnb_int4_sizes(g->r, g->c, p->block, &gpr, &pb));
        uint8_t *pk = malloc((size_t)pb);
        float *s = malloc((size_t)(g->r * gpr) * 4), *m = malloc((size_t)(g->r * gpr) * 4);
        CHECK_OK(msbnb_quantize_int4(pk, s, m, w, g->r, g->c, p->block, p->symmetric));
        CHECK_OK(msbnb_dequantize_int4(out, pk, s, m, g->r, g->c, p->block, p->symmetric));
        free(pk), free(s), free(m);
    }
    free(w);
}

static int selected(const gen_t *g) {
    return !is_1d(g) && !strstr(g->name, "embed") && !strstr(g->name, "lm_head");
}

/* Quantizes the generated checkpoint (from in) with every format, reads every module back
 * (equal bit for bit to the functional API, error within bound), dequantizes the folder
 * and checks it, and checks that copied tensors are untouched. */
static void round_trip_all(const char *in, int expect_shards) {
    fmt_case cases[16];
    int nc = n_cases(cases);
    for (int ci = 0; ci < nc; ci++) {
        fmt_case *fc = &cases[ci];
        char *out = fresh(fc->name), *deq = fresh("deq");
        msbnb_convert_options opt = msbnb_convert_options_default();
        opt.nthreads = 1 + ci % 3;
        msbnb_convert_report rep;
        msbnb_status st = msbnb_convert_quantize(in, out, &fc->cfg, &opt, &rep);
        CHECKF(st == MSBNB_OK, "%s: %s", fc->name, msbnb_last_error());
        if (st != MSBNB_OK) continue;
        CHECKF(rep.n_quantized == 3 && rep.n_copied == NGEN - 3, "%s: %lld quantized", fc->name,
               (long long)rep.n_quantized);
        CHECKF(rep.max_rel_error < fc->max_rel && rep.mean_rel_error > 0, "%s: error %g", fc->name,
               rep.max_rel_error);
        msbnb_st_file_t *q = NULL, *d = NULL;
        CHECK_OK(msbnb_st_open(&q, out));
        if (!q) continue;
        CHECK(msbnb_st_shard_count(q) == expect_shards);
        CHECK_OK(msbnb_convert_dequantize(out, deq, &opt, NULL));
        CHECK_OK(msbnb_st_open(&d, deq));
        for (int i = 0; i < NGEN && d; i++) {
            const gen_t *g = &gen[i];
            int64_t n = g->r * g->c;
            msbnb_st_tensor_info ti;
            if (!selected(g)) { /* copied unchanged, both ways */
                CHECK_OK(msbnb_st_find(q, g->name, &ti));
                CHECK(ti.dtype == g->dt && memcmp(ti.data, g->data, ti.nbytes) == 0);
                CHECK_OK(msbnb_st_find(d, g->name, &ti));
                CHECK(ti.dtype == g->dt && memcmp(ti.data, g->data, ti.nbytes) == 0);
                continue;
            }
            msbnb_qtensor t;
            st = msbnb_qtensor_load(&t, q, g->name);
            CHECKF(st == MSBNB_OK, "%s %s: %s", fc->name, g->name, msbnb_last_error());
            if (st != MSBNB_OK) continue;
            CHECK(t.rows == g->r && t.cols == g->c && t.params.type == fc->cfg.format.type);
            CHECK(t.params.block == fc->cfg.format.block || fc->cfg.format.type == MSBNB_QTYPE_INT8);
            float *got = malloc((size_t)n * 4), *want = malloc((size_t)n * 4), *w = malloc((size_t)n * 4);
            CHECK_STATUS(msbnb_qtensor_dequantize(&t, got, n - 1, 1), MSBNB_ERR_BUFFER_TOO_SMALL);
            CHECK_OK(msbnb_qtensor_dequantize(&t, got, n, 2));
            reference_dequant(&fc->cfg.format, g, want);
            CHECKF(memcmp(got, want, (size_t)n * 4) == 0, "%s %s: read-back differs from the functional API",
                   fc->name, g->name);
            msbnb_convert(w, MSBNB_DTYPE_F32, g->data, g->dt, n);
            msbnb_error_stats es;
            CHECK_OK(msbnb_estimate_quantization_error(&es, w, got, n));
            CHECKF(es.rel_frobenius < fc->max_rel, "%s %s: rel error %g", fc->name, g->name, es.rel_frobenius);
            /* our checkpoints load into layers too (every format, msbnb's asymmetric and
             * per-tensor int8 included), holding the same weight */
            msbnb_linear_t *l = NULL;
            st = msbnb_checkpoint_load_linear(&l, q, g->name);
            {
                CHECKF(st == MSBNB_OK, "%s %s: load_linear: %s", fc->name, g->name, msbnb_last_error());
                if (l) {
                    float *lw = malloc((size_t)n * 4);
                    CHECK(msbnb_linear_in_features(l) == g->c && msbnb_linear_out_features(l) == g->r);
                    CHECK_OK(msbnb_linear_dequantize_weight(l, lw));
                    int64_t nd = 0;
                    for (int64_t k = 0; k < n; k++) nd += lw[k] != got[k]; /* ==: FP4's -0 may come back +0 */
                    CHECKF(nd == 0, "%s %s: layer weight differs in %lld places", fc->name, g->name, (long long)nd);
                    free(lw);
                }
                msbnb_linear_free(l);
            }
            /* the dequantized checkpoint holds the same values, in the original dtype */
            CHECK_OK(msbnb_st_find(d, g->name, &ti));
            msbnb_dtype want_dt = (fc->cfg.format.type == MSBNB_QTYPE_INT8 && fc->cfg.format.symmetric)
                                      ? MSBNB_DTYPE_F32 : g->dt;
            CHECKF(ti.dtype == want_dt && ti.numel == n, "%s %s: dequantized dtype %s", fc->name,
                   g->name, msbnb_dtype_name(ti.dtype));
            if (ti.dtype == want_dt && ti.numel == n) {
                float *dd = malloc((size_t)n * 4), *rr = malloc((size_t)n * 4), *tmp = malloc((size_t)n * 4);
                msbnb_convert(dd, MSBNB_DTYPE_F32, ti.data, ti.dtype, n);
                msbnb_convert(tmp, want_dt, want, MSBNB_DTYPE_F32, n); /* round like the writer */
                msbnb_convert(rr, MSBNB_DTYPE_F32, tmp, want_dt, n);
                free(tmp);
                CHECKF(memcmp(dd, rr, (size_t)n * 4) == 0, "%s %s: dequantized file differs", fc->name, g->name);
                free(dd), free(rr);
            }
            free(got), free(want), free(w);
            msbnb_qtensor_clear(&t);
        }
        /* nothing but weights remains in the dequantized checkpoint */
        if (d) CHECK(msbnb_st_count(d) == NGEN);
        msbnb_st_close(q);
        msbnb_st_close(d);
        io_rm_rf(out);
        io_rm_rf(deq);
        free(out);
        free(deq);
    }
}

static void test_round_trip_every_format(void) {
    char *in = fresh("gen1");
    write_gen(in, 1);
    round_trip_all(in, 1);
    io_rm_rf(in);
    free(in);
}

static void test_sharded_input(void) {
    char *in = fresh("gen3"), *single = fresh("gen1s");
    write_gen(in, 3);
    write_gen(single, 1);
    round_trip_all(in, 3);
    /* a sharded conversion holds the same tensors as the single-file one, and an index */
    msbnb_qconfig cfg = msbnb_int4_config_default(MSBNB_QTYPE_NF4);
    char *o1 = fresh("o1"), *o3 = fresh("o3");
    CHECK_OK(msbnb_convert_quantize(single, o1, &cfg, NULL, NULL));
    CHECK_OK(msbnb_convert_quantize(in, o3, &cfg, NULL, NULL));
    char *idx = io_join(o3, "model.safetensors.index.json");
    CHECK(io_exists(idx));
    msbnb_st_file_t *a = NULL, *b = NULL;
    CHECK_OK(msbnb_st_open(&a, o1));
    CHECK_OK(msbnb_st_open(&b, idx)); /* the index we wrote is valid and complete */
    if (a && b) {
        CHECK(msbnb_st_count(a) == msbnb_st_count(b) && msbnb_st_shard_count(b) == 3);
        for (size_t i = 0; i < msbnb_st_count(a); i++) {
            msbnb_st_tensor_info x, y;
            CHECK_OK(msbnb_st_get(a, i, &x));
            CHECK_OK(msbnb_st_find(b, x.name, &y));
            CHECK(x.nbytes == y.nbytes && (!x.nbytes || memcmp(x.data, y.data, x.nbytes) == 0));
        }
    }
    msbnb_st_close(a);
    msbnb_st_close(b);
    char *c3 = io_join(o3, "config.json");
    CHECK(io_exists(c3));
    free(c3);
    free(idx);
    io_rm_rf(o1), io_rm_rf(o3), io_rm_rf(in), io_rm_rf(single);
    free(o1), free(o3), free(in), free(single);
}

static void test_targets_and_skips(void) {
    char *in = fresh("gen-sel");
    write_gen(in, 1);
    msbnb_qconfig cfg = msbnb_int4_config_default(MSBNB_QTYPE_NF4);
    CHECK_OK(msbnb_qconfig_add_target(&cfg, "mlp"));
    CHECK_OK(msbnb_qconfig_add_skip(&cfg, "*.down_proj"));
    char *out = fresh("sel");
    msbnb_convert_report rep;
    CHECK_OK(msbnb_convert_quantize(in, out, &cfg, NULL, &rep));
    CHECK(rep.n_quantized == 1); /* only up_proj: q_proj not targeted, down_proj skipped */
    msbnb_st_file_t *f = NULL;
    CHECK_OK(msbnb_st_open(&f, out));
    msbnb_st_tensor_info ti;
    CHECK_OK(msbnb_st_find(f, "model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4", &ti));
    CHECK_OK(msbnb_st_find(f, "model.layers.0.mlp.down_proj.weight", &ti));
    CHECK(ti.dtype == MSBNB_DTYPE_BF16);
    msbnb_st_close(f);
    /* the skip list is recorded in the config */
    char *cp = io_join(out, "config.json");
    size_t len = 0;
    char *text = io_read_file(cp, &len);
    CHECK(text && strstr(text, "\"llm_int8_skip_modules\": [") && strstr(text, "*.down_proj"));
    free(text);
    free(cp);
    io_rm_rf(out), io_rm_rf(in);
    free(out), free(in);
}

/* Layers built from transformers' saved checkpoints compute with the stored weights. */
static void test_bnb_checkpoints_load_into_layers(void) {
    static const char *folders[3] = {"tiny-llama/nf4dq", "tiny-llama/fp4", "tiny-llama/int8"};
    static const char *mods[3] = {"model.layers.0.self_attn.k_proj", "model.layers.1.mlp.down_proj",
                                  "lm_head"};
    for (int fi = 0; fi < 3; fi++) {
        msbnb_st_file_t *f = NULL;
        CHECK_OK(msbnb_st_open(&f, tu_data_path(folders[fi])));
        if (!f) continue;
        for (int mi = 0; mi < 3; mi++) {
            msbnb_linear_t *l = NULL;
            msbnb_qtensor t;
            CHECK_OK(msbnb_qtensor_load(&t, f, mods[mi]));
            msbnb_status st = msbnb_checkpoint_load_linear(&l, f, mods[mi]);
            CHECKF(st == MSBNB_OK, "%s %s: %s", folders[fi], mods[mi], msbnb_last_error());
            if (st != MSBNB_OK) {
                msbnb_qtensor_clear(&t);
                continue;
            }
            int64_t N = t.rows, K = t.cols, M = 3;
            CHECK(msbnb_linear_in_features(l) == K && msbnb_linear_out_features(l) == N);
            float *w = malloc((size_t)(N * K) * 4), *lw = malloc((size_t)(N * K) * 4);
            float *x = malloc((size_t)(M * K) * 4), *y = malloc((size_t)(M * N) * 4);
            CHECK_OK(msbnb_qtensor_dequantize(&t, w, N * K, 1));
            CHECK_OK(msbnb_linear_dequantize_weight(l, lw));
            /* the layer holds exactly the checkpoint's weights */
            int64_t ndiff = 0, first = -1;
            for (int64_t k = 0; k < N * K; k++)
                if (w[k] != lw[k]) { /* == : FP4 code 8 is -0.0, the layer may give +0.0 */
                    if (first < 0) first = k;
                    ndiff++;
                }
            CHECKF(ndiff == 0, "%s %s: layer weight differs in %lld places (first %lld: %.9g vs %.9g)",
                   folders[fi], mods[mi], (long long)ndiff, (long long)first, first >= 0 ? w[first] : 0.0,
                   first >= 0 ? lw[first] : 0.0);
            tu_fill_normal(&g_rng, x, (size_t)(M * K), 1.0f);
            /* exact = 1: f32 arithmetic; 0: the AVX2 4-bit kernels' 15-bit integer dot products */
            for (int exact = 1; exact >= 0; exact--) {
                CHECK_OK(msbnb_linear_set_exact(l, exact));
                CHECK_OK(msbnb_linear_forward(l, y, x, M));
                double num = 0, den = 0;
                for (int64_t m = 0; m < M; m++)
                    for (int64_t n = 0; n < N; n++) {
                        double r = 0;
                        for (int64_t k = 0; k < K; k++) r += (double)x[m * K + k] * w[n * K + k];
                        num += (y[m * N + n] - r) * (y[m * N + n] - r);
                        den += r * r;
                    }
                /* int8 also quantizes the activations (LLM.int8): ~1% error; float kernels
                 * 1e-5; 15-bit integer products ~1e-5 of Σ|x w|, a few 1e-5 of |y| */
                const int q4 = t.params.type == MSBNB_QTYPE_NF4 || t.params.type == MSBNB_QTYPE_FP4 ||
                               t.params.type == MSBNB_QTYPE_INT4;
                double tol = t.params.type == MSBNB_QTYPE_INT8 ? 3e-2 : q4 && !exact ? 3e-4 : 1e-5;
                CHECKF(sqrt(num / den) < tol, "%s %s exact=%d: forward error %g", folders[fi], mods[mi],
                       exact, sqrt(num / den));
            }
            free(w), free(lw), free(x), free(y);
            msbnb_linear_free(l);
            msbnb_qtensor_clear(&t);
        }
        msbnb_qtensor t;
        CHECK_STATUS(msbnb_qtensor_load(&t, f, "model.nope"), MSBNB_ERR_NOT_FOUND);
        msbnb_st_close(f);
    }
}

static void test_failures_leave_nothing(void) {
    msbnb_qconfig cfg = msbnb_int4_config_default(MSBNB_QTYPE_NF4);
    char *in = fresh("gen-f");
    write_gen(in, 1);
    /* an already quantized checkpoint */
    char *out = fresh("f-out");
    CHECK_STATUS(msbnb_convert_quantize(tu_data_path("tiny-llama/nf4dq"), out, &cfg, NULL, NULL),
                 MSBNB_ERR_STATE);
    CHECK(!io_exists(out) && !io_has_tmp_leftover(g_dir));
    /* an output folder that is not empty is refused and left alone */
    CHECK_STATUS(msbnb_convert_quantize(in, in, &cfg, NULL, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK(io_count_entries(in) == 2);
    /* an empty existing folder is filled */
    mkdir(out, 0755);
    CHECK_OK(msbnb_convert_quantize(in, out, &cfg, NULL, NULL));
    CHECK(io_count_entries(out) == 2);
    io_rm_rf(out);
    /* a NaN in a weight: the error names the tensor; nothing is left */
    float *w = gen[2].data; /* bf16 down_proj: poison one value */
    uint16_t *h = (uint16_t *)w, saved = h[200];
    h[200] = 0x7fc0;
    char *bad = fresh("gen-nan");
    write_gen(bad, 1);
    h[200] = saved;
    for (int fmt = 0; fmt < 3; fmt++) {
        msbnb_qconfig c = fmt == 0 ? cfg : fmt == 1 ? msbnb_int8_config_default()
                                                     : msbnb_int4_config_default(MSBNB_QTYPE_INT4);
        msbnb_status st = msbnb_convert_quantize(bad, out, &c, NULL, NULL);
        CHECKF(st == MSBNB_ERR_NON_FINITE, "fmt %d: %s", fmt, msbnb_status_str(st));
        CHECKF(strstr(msbnb_last_error(), "model.layers.0.mlp.down_proj.weight") != NULL, "message: %s",
               msbnb_last_error());
        CHECK(!io_exists(out) && !io_has_tmp_leftover(g_dir));
    }
    /* bad arguments */
    CHECK_STATUS(msbnb_convert_quantize(NULL, out, &cfg, NULL, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_convert_quantize(in, NULL, &cfg, NULL, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_convert_quantize(in, out, NULL, NULL, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    msbnb_qconfig badc = cfg;
    badc.format.block = 48;
    CHECK(msbnb_convert_quantize(in, out, &badc, NULL, NULL) != MSBNB_OK);
    CHECK(msbnb_convert_quantize("/nonexistent/dir", out, &cfg, NULL, NULL) != MSBNB_OK);
    msbnb_convert_options o = msbnb_convert_options_default();
    o.out_dtype = MSBNB_DTYPE_I8;
    CHECK_STATUS(msbnb_convert_dequantize(in, out, &o, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK(!io_exists(out) && !io_has_tmp_leftover(g_dir));
    io_rm_rf(bad), io_rm_rf(in);
    free(bad), free(in), free(out);
}

static msbnb_status count_module(void *u, const char *module, int quantized) {
    int *c = u;
    c[0]++;
    c[1] += quantized;
    CHECK(strstr(module, ".weight") == NULL);
    return MSBNB_OK;
}

static msbnb_status stop_at_third(void *u, const char *module, int quantized) {
    (void)module, (void)quantized;
    return ++*(int *)u == 3 ? MSBNB_ERR_STATE : MSBNB_OK;
}

static void test_checkpoint_modules(void) {
    static const char *folders[4] = {"tiny-llama/fp32", "tiny-llama/nf4dq", "tiny-llama/fp4", "tiny-llama/int8"};
    for (int i = 0; i < 4; i++) {
        msbnb_st_file_t *f = NULL;
        CHECK_OK(msbnb_st_open(&f, tu_data_path(folders[i])));
        int c[2] = {0, 0};
        CHECK_OK(msbnb_checkpoint_modules(f, count_module, c));
        CHECKF(c[0] == 16 && c[1] == (i ? 14 : 0), "%s: %d modules, %d quantized", folders[i], c[0], c[1]);
        int k = 0;
        CHECK(msbnb_checkpoint_modules(f, stop_at_third, &k) == MSBNB_ERR_STATE); /* fn's status, as is */
        CHECK(k == 3);
        msbnb_st_close(f);
    }
}

/* A bitsandbytes checkpoint with one part tampered with: reading the module fails with
 * MSBNB_ERR_FORMAT (or UNSUPPORTED) naming it, and dequantizing the folder leaves nothing. */
static void tampered(const char *what, const char *victim, const void *data, msbnb_dtype dt, int64_t numel,
                     msbnb_status want) {
    msbnb_st_file_t *f = NULL;
    CHECK_OK(msbnb_st_open(&f, tu_data_path("tiny-llama/nf4dq")));
    if (!f) return;
    size_t n = msbnb_st_count(f);
    io_tensor *t = calloc(n, sizeof *t);
    for (size_t i = 0; i < n; i++) {
        msbnb_st_tensor_info ti;
        CHECK_OK(msbnb_st_get(f, i, &ti));
        t[i] = (io_tensor){ti.name, ti.dtype, ti.ndim, {0}, ti.data};
        for (int d = 0; d < ti.ndim && d < 4; d++) t[i].shape[d] = ti.shape[d];
        if (!strcmp(ti.name, victim)) t[i] = (io_tensor){ti.name, dt, 1, {numel}, data};
    }
    char *dir = fresh("tampered"), *out = fresh("tampered-out");
    mkdir(dir, 0755);
    char *p = io_join(dir, "model.safetensors");
    CHECK_OK(io_write_st(p, t, (int)n));
    msbnb_st_file_t *g = NULL;
    CHECK_OK(msbnb_st_open(&g, p));
    msbnb_qtensor q;
    msbnb_status st = g ? msbnb_qtensor_load(&q, g, "model.layers.0.self_attn.q_proj") : MSBNB_ERR_IO;
    CHECKF(st == want, "%s: %s (%s)", what, msbnb_status_str(st), msbnb_last_error());
    CHECKF(strstr(msbnb_last_error(), "model.layers.0.self_attn.q_proj") != NULL, "%s: %s", what, msbnb_last_error());
    st = msbnb_convert_dequantize(dir, out, NULL, NULL);
    CHECKF(st == want && strstr(msbnb_last_error(), p) != NULL, "%s: dequantize %s: %s", what,
           msbnb_status_str(st), msbnb_last_error());
    CHECK(!io_exists(out) && !io_has_tmp_leftover(g_dir));
    msbnb_st_close(g);
    msbnb_st_close(f);
    io_rm_rf(dir);
    free(p), free(dir), free(out), free(t);
}

static void test_rejects_tampered_quant_states(void) {
    const char *qs = "model.layers.0.self_attn.q_proj.weight.quant_state.bitsandbytes__nf4";
    static const char bad_json[] = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\"";
    tampered("bad json", qs, bad_json, MSBNB_DTYPE_U8, (int64_t)strlen(bad_json), MSBNB_ERR_FORMAT);
    static const char bad_shape[] = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", "
                                    "\"shape\": [128, 129], \"nested_blocksize\": 256, \"nested_dtype\": "
                                    "\"float32\", \"nested_offset\": 0.05}";
    tampered("shape disagrees with the parts", qs, bad_shape, MSBNB_DTYPE_U8, (int64_t)strlen(bad_shape),
             MSBNB_ERR_FORMAT);
    static const char bad_block[] = "{\"quant_type\": \"nf4\", \"blocksize\": 48, \"dtype\": \"float32\", "
                                    "\"shape\": [128, 128]}";
    tampered("bad block size", qs, bad_block, MSBNB_DTYPE_U8, (int64_t)strlen(bad_block), MSBNB_ERR_FORMAT);
    static const char bad_type[] = "{\"quant_type\": \"fp4\", \"blocksize\": 64, \"dtype\": \"float32\", "
                                   "\"shape\": [128, 128]}";
    tampered("quant_type disagrees", qs, bad_type, MSBNB_DTYPE_U8, (int64_t)strlen(bad_type), MSBNB_ERR_FORMAT);
    static const char huge_off[] = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", "
                                   "\"shape\": [128, 128], \"nested_blocksize\": 256, \"nested_dtype\": "
                                   "\"float32\", \"nested_offset\": 1e300}";
    tampered("nested offset beyond float", qs, huge_off, MSBNB_DTYPE_U8, (int64_t)strlen(huge_off),
             MSBNB_ERR_UNSUPPORTED);
    static const float absmax[100] = {0};
    tampered("absmax of the wrong size", "model.layers.0.self_attn.q_proj.weight.absmax", absmax,
             MSBNB_DTYPE_U8, 100, MSBNB_ERR_FORMAT);
    float code[16];
    memcpy(code, msbnb_nf4_code(), sizeof code);
    code[3] += 0.01f;
    tampered("non-standard code", "model.layers.0.self_attn.q_proj.weight.quant_map", code, MSBNB_DTYPE_F32,
             16, MSBNB_ERR_UNSUPPORTED);
}

/* Tensors at odd file offsets (legal in safetensors, never written by the reference
 * writer): converting gives the same bytes as the same tensors stored aligned. */
static void test_unaligned_tensors(void) {
    enum { R = 3, C = 70 };
    uint16_t wb[R * C];
    float wf[R * C], tmp[R * C];
    tu_rng r;
    tu_rng_init(&r, tu_seed() + 17);
    tu_fill_normal(&r, tmp, R * C, 0.05f);
    msbnb_convert(wb, MSBNB_DTYPE_BF16, tmp, MSBNB_DTYPE_F32, R * C);
    tu_fill_normal(&r, wf, R * C, 0.05f);
    char hdr[512];
    snprintf(hdr, sizeof hdr,
             "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
             "\"m.up_proj.weight\":{\"dtype\":\"BF16\",\"shape\":[%d,%d],\"data_offsets\":[1,%d]},"
             "\"m.down_proj.weight\":{\"dtype\":\"F32\",\"shape\":[%d,%d],\"data_offsets\":[%d,%d]}}",
             R, C, 1 + R * C * 2, R, C, 1 + R * C * 2, 1 + R * C * 6);
    size_t hl = strlen(hdr), dl = 1 + (size_t)R * C * 6, len = 8 + hl + dl;
    uint8_t *img = malloc(len);
    for (int i = 0; i < 8; i++) img[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(img + 8, hdr, hl);
    img[8 + hl] = 7;
    memcpy(img + 8 + hl + 1, wb, sizeof wb);
    memcpy(img + 8 + hl + 1 + sizeof wb, wf, sizeof wf);
    char *ua = fresh("unaligned"), *al = fresh("aligned");
    mkdir(ua, 0755);
    mkdir(al, 0755);
    char *pu = io_join(ua, "model.safetensors"), *pa = io_join(al, "model.safetensors");
    CHECK(io_write_file(pu, img, len));
    static const uint8_t one = 7;
    io_tensor t[3] = {{"a", MSBNB_DTYPE_U8, 1, {1}, &one},
                      {"m.up_proj.weight", MSBNB_DTYPE_BF16, 2, {R, C}, wb},
                      {"m.down_proj.weight", MSBNB_DTYPE_F32, 2, {R, C}, wf}};
    CHECK_OK(io_write_st(pa, t, 3));
    fmt_case cases[16];
    int nc = n_cases(cases);
    for (int ci = 0; ci < nc; ci++) {
        char *ou = fresh("ou"), *oa = fresh("oa");
        msbnb_status st = msbnb_convert_quantize(ua, ou, &cases[ci].cfg, NULL, NULL);
        CHECKF(st == MSBNB_OK, "%s: %s", cases[ci].name, msbnb_last_error());
        CHECK_OK(msbnb_convert_quantize(al, oa, &cases[ci].cfg, NULL, NULL));
        msbnb_st_file_t *x = NULL, *y = NULL;
        CHECK_OK(msbnb_st_open(&x, ou));
        CHECK_OK(msbnb_st_open(&y, oa));
        if (x && y) {
            CHECK(msbnb_st_count(x) == msbnb_st_count(y));
            for (size_t i = 0; i < msbnb_st_count(y); i++) {
                msbnb_st_tensor_info a, b;
                CHECK_OK(msbnb_st_get(y, i, &b));
                CHECK_OK(msbnb_st_find(x, b.name, &a));
                CHECKF(a.nbytes == b.nbytes && (!a.nbytes || memcmp(a.data, b.data, a.nbytes) == 0), "%s: %s",
                       cases[ci].name, b.name);
            }
        }
        msbnb_st_close(x);
        msbnb_st_close(y);
        io_rm_rf(ou), io_rm_rf(oa);
        free(ou), free(oa);
    }
    /* float weights at odd offsets load into layers too */
    msbnb_st_file_t *fu = NULL;
    CHECK_OK(msbnb_st_open(&fu, ua));
    for (int k = 0; k < 2 && fu; k++) {
        msbnb_linear_t *l = NULL;
        CHECK_OK(msbnb_checkpoint_load_linear(&l, fu, k ? "m.down_proj" : "m.up_proj"));
        float *lw = malloc(sizeof(float) * R * C);
        if (l) CHECK_OK(msbnb_linear_dequantize_weight(l, lw));
        float *want = k ? wf : tmp;
        if (!k) msbnb_convert(tmp, MSBNB_DTYPE_F32, wb, MSBNB_DTYPE_BF16, R * C);
        CHECK(l && memcmp(lw, want, sizeof(float) * R * C) == 0);
        free(lw);
        msbnb_linear_free(l);
    }
    msbnb_st_close(fu);
    io_rm_rf(ua), io_rm_rf(al);
    free(pu), free(pa), free(ua), free(al), free(img);
}

static msbnb_status load_each(void *u, const char *module, int quantized) {
    const msbnb_st_file_t *f = u;
    msbnb_qtensor t;
    msbnb_status st = msbnb_qtensor_load(&t, f, module);
    if (st == MSBNB_OK) {
        int64_t n = t.rows * t.cols;
        float *w = malloc((size_t)n * sizeof *w);
        CHECK(w != NULL);
        if (w) {
            msbnb_status d = msbnb_qtensor_dequantize(&t, w, n, 1);
            CHECK(d == MSBNB_OK);
        }
        free(w);
        msbnb_linear_t *l = NULL;
        if (msbnb_qtensor_to_linear(&l, &t, NULL) == MSBNB_OK) msbnb_linear_free(l);
        msbnb_qtensor_clear(&t);
    } else {
        CHECK(st == MSBNB_ERR_FORMAT || st == MSBNB_ERR_UNSUPPORTED || st == MSBNB_ERR_NOT_FOUND);
    }
    (void)quantized;
    return MSBNB_OK;
}

/* Random corruption of bitsandbytes' checkpoints (header bytes, quant-state JSON, parts)
 * never crashes the reader or the module loader: every image parses and loads or fails
 * with a format error (run under ASan/UBSan by make test-sanitize). */
static void test_corrupted_checkpoints_never_crash(void) {
    static const char *files[3] = {"tiny-llama/nf4dq/model.safetensors", "tiny-llama/fp4/model.safetensors",
                                   "tiny-llama/int8/model.safetensors"};
    tu_rng r;
    tu_rng_init(&r, tu_seed() + 99);
    for (int fi = 0; fi < 3; fi++) {
        size_t len = 0;
        uint8_t *orig = io_read_file(tu_data_path(files[fi]), &len);
        CHECK(orig != NULL && len > 16);
        if (!orig) continue;
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--) hl = (hl << 8) | orig[i];
        uint8_t *img = malloc(len);
        for (int it = 0; it < 150; it++) {
            memcpy(img, orig, len);
            int flips = 1 + (int)(tu_rng_u64(&r) % 4);
            for (int k = 0; k < flips; k++) {
                /* mostly the header (structure), sometimes the data (quant states, parts) */
                size_t at = (tu_rng_u64(&r) % 4) ? 8 + tu_rng_u64(&r) % hl : tu_rng_u64(&r) % len;
                static const char pick[] = "0123456789[]{},:\"-.e ";
                img[at] = (tu_rng_u64(&r) % 2) ? (uint8_t)pick[tu_rng_u64(&r) % (sizeof pick - 1)]
                                                : (uint8_t)tu_rng_u64(&r);
            }
            msbnb_st_file_t *f = NULL;
            msbnb_status st = msbnb_st_open_memory(&f, img, len, "corrupt");
            CHECK(st == MSBNB_OK || st == MSBNB_ERR_FORMAT);
            if (st == MSBNB_OK) CHECK_OK(msbnb_checkpoint_modules(f, load_each, f));
            msbnb_st_close(f);
        }
        free(img);
        free(orig);
    }
}

static int g_calls;
static void count_progress(void *u, const msbnb_convert_progress *p) {
    (void)u;
    g_calls++;
    CHECK(p->tensors_done == g_calls && p->bytes_done <= p->bytes_total && p->current);
}

static void test_progress_and_report(void) {
    char *in = fresh("gen-p"), *out = fresh("p-out");
    write_gen(in, 1);
    msbnb_qconfig cfg = msbnb_int4_config_default(MSBNB_QTYPE_FP4);
    msbnb_convert_options opt = msbnb_convert_options_default();
    opt.progress = count_progress;
    msbnb_convert_report rep;
    CHECK_OK(msbnb_convert_quantize(in, out, &cfg, &opt, &rep));
    CHECK(g_calls == NGEN);
    int64_t cnt = 0;
    uint64_t bin = 0, bout = 0;
    for (int k = 0; k < rep.n_kinds; k++) {
        cnt += rep.kinds[k].count;
        bin += rep.kinds[k].bytes_in;
        bout += rep.kinds[k].bytes_out;
    }
    CHECK(cnt == NGEN && bin == rep.bytes_in && bout == rep.bytes_out && rep.bytes_out < rep.bytes_in);
    CHECK(rep.file_bytes_out > rep.bytes_out && rep.file_bytes_in > rep.bytes_in);
    io_rm_rf(out), io_rm_rf(in);
    free(out), free(in);
}

int main(void) {
    tu_rng_init(&g_rng, tu_seed());
    g_dir = io_mkdtemp();
    CHECK(g_dir != NULL);
    if (!g_dir) return tu_finish();
    make_gen();
    RUN_TEST(test_nf4dq_matches_bnb);
    RUN_TEST(test_fp4_matches_bnb);
    RUN_TEST(test_int8_matches_bnb);
    RUN_TEST(test_round_trip_every_format);
    RUN_TEST(test_sharded_input);
    RUN_TEST(test_targets_and_skips);
    RUN_TEST(test_bnb_checkpoints_load_into_layers);
    RUN_TEST(test_failures_leave_nothing);
    RUN_TEST(test_progress_and_report);
    RUN_TEST(test_checkpoint_modules);
    RUN_TEST(test_unaligned_tensors);
    RUN_TEST(test_corrupted_checkpoints_never_crash);
    RUN_TEST(test_rejects_tampered_quant_states);
    free_gen();
    io_rm_rf(g_dir);
    free(g_dir);
    return tu_finish();
}
