/* safetensors reader and writer: round trip of every dtype, the reference layout, the
 * writer's atomicity, and one test per malformed-file class (each must give
 * MSBNB_ERR_FORMAT naming the file and the tensor, from memory and from disk). */
#include "io_testutil.h"

static tu_rng g_rng;
static char *g_dir;

static void test_writer_reader_round_trip(void) {
    /* every dtype, a scalar, an empty tensor, odd sizes */
    enum { N = 10 };
    static const msbnb_dtype dts[N] = {MSBNB_DTYPE_F32, MSBNB_DTYPE_F16, MSBNB_DTYPE_BF16,
                                       MSBNB_DTYPE_F64, MSBNB_DTYPE_I64, MSBNB_DTYPE_I32,
                                       MSBNB_DTYPE_I16, MSBNB_DTYPE_I8, MSBNB_DTYPE_U8,
                                       MSBNB_DTYPE_BOOL};
    io_tensor t[N + 2];
    char names[N + 2][32];
    uint8_t *bufs[N + 2];
    for (int i = 0; i < N; i++) {
        int64_t d0 = 1 + (int64_t)(tu_rng_u64(&g_rng) % 7), d1 = 1 + (int64_t)(tu_rng_u64(&g_rng) % 13);
        size_t nb = (size_t)(d0 * d1) * msbnb_dtype_size(dts[i]);
        bufs[i] = malloc(nb);
        for (size_t k = 0; k < nb; k++) bufs[i][k] = (uint8_t)tu_rng_u64(&g_rng);
        if (dts[i] == MSBNB_DTYPE_BOOL)
            for (size_t k = 0; k < nb; k++) bufs[i][k] &= 1;
        snprintf(names[i], sizeof names[i], "t.%d.%s", i, msbnb_dtype_name(dts[i]));
        t[i] = (io_tensor){names[i], dts[i], 2, {d0, d1}, bufs[i]};
    }
    static const float scalar = 3.5f;
    t[N] = (io_tensor){"scalar", MSBNB_DTYPE_F32, 0, {0}, &scalar};
    t[N + 1] = (io_tensor){"empty", MSBNB_DTYPE_F32, 2, {0, 5}, NULL};
    char *path = io_join(g_dir, "rt.safetensors");
    CHECK_OK(io_write_st(path, t, N + 2));
    msbnb_st_file_t *f = NULL;
    CHECK_OK(msbnb_st_open(&f, path));
    CHECK(msbnb_st_count(f) == N + 2);
    CHECK(msbnb_st_metadata(f, "format") && strcmp(msbnb_st_metadata(f, "format"), "pt") == 0);
    for (int i = 0; i < N + 2; i++) {
        msbnb_st_tensor_info ti;
        CHECK_OK(msbnb_st_find(f, t[i].name, &ti));
        CHECK(ti.dtype == t[i].dtype && ti.ndim == t[i].ndim);
        int64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) {
            CHECK(ti.shape[d] == t[i].shape[d]);
            numel *= t[i].shape[d];
        }
        CHECK(ti.numel == numel);
        CHECK(ti.nbytes == (uint64_t)numel * msbnb_dtype_size(t[i].dtype));
        if (ti.nbytes) CHECKF(memcmp(ti.data, t[i].data, ti.nbytes) == 0, "tensor %s", t[i].name);
    }
    /* storage order is by dtype (widest first in safetensors' enum order), then name */
    msbnb_st_tensor_info first;
    CHECK_OK(msbnb_st_get(f, 0, &first));
    CHECK(first.dtype == MSBNB_DTYPE_I64);
    msbnb_st_tensor_info dummy;
    CHECK_STATUS(msbnb_st_get(f, N + 2, &dummy), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_find(f, "nope", &dummy), MSBNB_ERR_NOT_FOUND);
    msbnb_st_close(f);
    /* the same image parsed from memory */
    size_t n = 0;
    void *img = io_read_file(path, &n);
    CHECK_OK(msbnb_st_open_memory(&f, img, n, "img"));
    CHECK(msbnb_st_count(f) == N + 2);
    msbnb_st_close(f);
    free(img);
    for (int i = 0; i < N; i++) free(bufs[i]);
    free(path);
}

static void test_writer_matches_reference_layout(void) {
    /* re-writing transformers' tiny-llama file tensor by tensor gives the same bytes */
    const char *ref = tu_data_path("tiny-llama/int8/model.safetensors");
    msbnb_st_file_t *f = NULL;
    CHECK_OK(msbnb_st_open(&f, ref));
    if (!f) return;
    char *path = io_join(g_dir, "copy.safetensors");
    msbnb_st_writer_t *w = NULL;
    CHECK_OK(msbnb_st_writer_create(&w, path));
    CHECK_OK(msbnb_st_writer_set_metadata(w, "format", "pt"));
    size_t n = msbnb_st_count(f);
    for (size_t i = n; i-- > 0;) { /* declaration order does not matter */
        msbnb_st_tensor_info ti;
        CHECK_OK(msbnb_st_get(f, i, &ti));
        CHECK_OK(msbnb_st_writer_add(w, ti.name, ti.dtype, ti.shape, ti.ndim));
    }
    CHECK_OK(msbnb_st_writer_begin(w));
    for (size_t i = 0; i < n; i++) {
        msbnb_st_tensor_info ti;
        CHECK_OK(msbnb_st_get(f, i, &ti));
        /* in two pieces, to exercise partial writes */
        uint64_t h = ti.nbytes / 2;
        CHECK_OK(msbnb_st_writer_write(w, ti.name, h, (const uint8_t *)ti.data + h, ti.nbytes - h));
        if (h) CHECK_OK(msbnb_st_writer_write(w, ti.name, 0, ti.data, h));
    }
    CHECK_OK(msbnb_st_writer_finish(w));
    msbnb_st_writer_free(w);
    size_t la = 0, lb = 0;
    void *a = io_read_file(ref, &la), *b = io_read_file(path, &lb);
    CHECK(la == lb && a && b && memcmp(a, b, la) == 0);
    free(a);
    free(b);
    msbnb_st_close(f);
    free(path);
}

static void test_writer_is_atomic(void) {
    char *sub = io_join(g_dir, "atomic");
    mkdir(sub, 0755);
    char *path = io_join(sub, "out.safetensors");
    float data[6] = {1, 2, 3, 4, 5, 6};
    int64_t shape[2] = {2, 3};
    /* abandoned after begin: nothing under the final name, no temporary left */
    msbnb_st_writer_t *w = NULL;
    CHECK_OK(msbnb_st_writer_create(&w, path));
    CHECK_OK(msbnb_st_writer_add(w, "a", MSBNB_DTYPE_F32, shape, 2));
    CHECK_OK(msbnb_st_writer_add(w, "b", MSBNB_DTYPE_F32, shape, 2));
    CHECK_OK(msbnb_st_writer_begin(w));
    CHECK_OK(msbnb_st_writer_write(w, "a", 0, data, sizeof data));
    CHECK(!io_exists(path));
    msbnb_st_writer_free(w);
    CHECK(io_count_entries(sub) == 0);
    /* finish with a tensor missing data fails and leaves nothing */
    CHECK_OK(msbnb_st_writer_create(&w, path));
    CHECK_OK(msbnb_st_writer_add(w, "a", MSBNB_DTYPE_F32, shape, 2));
    CHECK_OK(msbnb_st_writer_add(w, "b", MSBNB_DTYPE_F32, shape, 2));
    CHECK_OK(msbnb_st_writer_begin(w));
    CHECK_OK(msbnb_st_writer_write(w, "a", 0, data, sizeof data));
    CHECK_STATUS(msbnb_st_writer_write(w, "a", 4, data, sizeof data), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_writer_write(w, "zz", 0, data, 4), MSBNB_ERR_NOT_FOUND);
    CHECK(msbnb_st_writer_finish(w) != MSBNB_OK);
    msbnb_st_writer_free(w);
    CHECK(io_count_entries(sub) == 0);
    /* duplicate names are refused at begin */
    CHECK_OK(msbnb_st_writer_create(&w, path));
    CHECK_OK(msbnb_st_writer_add(w, "a", MSBNB_DTYPE_F32, shape, 2));
    CHECK_OK(msbnb_st_writer_add(w, "a", MSBNB_DTYPE_F32, shape, 2));
    CHECK_STATUS(msbnb_st_writer_begin(w), MSBNB_ERR_INVALID_ARGUMENT);
    msbnb_st_writer_free(w);
    CHECK(io_count_entries(sub) == 0);
    /* bad declarations */
    CHECK_OK(msbnb_st_writer_create(&w, path));
    int64_t neg[2] = {2, -1};
    CHECK(msbnb_st_writer_add(w, "x", MSBNB_DTYPE_F32, neg, 2) != MSBNB_OK);
    CHECK(msbnb_st_writer_add(w, "__metadata__", MSBNB_DTYPE_F32, shape, 2) != MSBNB_OK);
    CHECK(msbnb_st_writer_add(w, "x", MSBNB_DTYPE_COUNT_, shape, 2) != MSBNB_OK);
    int64_t huge[2] = {INT64_MAX / 2, 4};
    CHECK(msbnb_st_writer_add(w, "h", MSBNB_DTYPE_F32, huge, 2) != MSBNB_OK);
    msbnb_st_writer_free(w);
    msbnb_st_writer_free(NULL);
    CHECK(io_count_entries(sub) == 0);
    rmdir(sub);
    free(path);
    free(sub);
}

/* Parses `header` (+ data_len bytes) from memory and from a file; both must fail with
 * MSBNB_ERR_FORMAT and a message holding `needle` (the tensor's name) and the label. */
static void expect_malformed(const char *what, const uint8_t *img, size_t len, const char *needle) {
    msbnb_st_file_t *f = NULL;
    msbnb_status st = msbnb_st_open_memory(&f, img, len, "mem-image");
    CHECKF(st == MSBNB_ERR_FORMAT, "%s: memory open gave %s", what, msbnb_status_str(st));
    CHECKF(f == NULL, "%s: handle on failure", what);
    CHECKF(strstr(msbnb_last_error(), "mem-image") != NULL, "%s: message '%s' lacks the label", what,
           msbnb_last_error());
    if (needle)
        CHECKF(strstr(msbnb_last_error(), needle) != NULL, "%s: message '%s' lacks '%s'", what,
               msbnb_last_error(), needle);
    char *path = io_join(g_dir, "bad.safetensors");
    CHECK(io_write_file(path, img, len));
    st = msbnb_st_open(&f, path);
    CHECKF(st == MSBNB_ERR_FORMAT, "%s: file open gave %s", what, msbnb_status_str(st));
    CHECKF(strstr(msbnb_last_error(), path) != NULL, "%s: message '%s' lacks the path", what,
           msbnb_last_error());
    if (needle)
        CHECKF(strstr(msbnb_last_error(), needle) != NULL, "%s: message '%s' lacks '%s'", what,
               msbnb_last_error(), needle);
    /* and a conversion of it fails without leaving an output folder */
    char *out = io_join(g_dir, "bad-out");
    msbnb_qconfig cfg = msbnb_int4_config_default(MSBNB_QTYPE_NF4);
    st = msbnb_convert_quantize(path, out, &cfg, NULL, NULL);
    CHECKF(st == MSBNB_ERR_FORMAT, "%s: convert gave %s", what, msbnb_status_str(st));
    CHECKF(!io_exists(out) && !io_has_tmp_leftover(g_dir), "%s: output left behind", what);
    remove(path);
    free(out);
    free(path);
}

static void test_rejects_malformed_files(void) {
    static const char *good =
        "{\"__metadata__\":{\"format\":\"pt\"},\"w.a\":{\"dtype\":\"F32\",\"shape\":[2,3],"
        "\"data_offsets\":[0,24]},\"w.b\":{\"dtype\":\"I8\",\"shape\":[5],\"data_offsets\":[24,29]}}";
    size_t len;
    uint8_t *img = io_image(good, 29, &len);
    msbnb_st_file_t *f = NULL;
    CHECK_OK(msbnb_st_open_memory(&f, img, len, "good"));
    msbnb_st_close(f);
    /* truncated: every prefix shorter than the whole image fails, without reading past it */
    for (size_t cut = 0; cut < len; cut += (cut < 16 ? 1 : 7)) {
        uint8_t *p = malloc(cut ? cut : 1);
        memcpy(p, img, cut);
        CHECKF(msbnb_st_open_memory(&f, p, cut, "trunc") == MSBNB_ERR_FORMAT, "cut %zu", cut);
        free(p);
    }
    expect_malformed("truncated data", img, len - 3, "w.b");
    free(img);
    /* bad JSON */
    img = io_image("{\"w.a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]", 24, &len);
    expect_malformed("bad json", img, len, NULL);
    free(img);
    img = io_image("[1,2,3]", 0, &len);
    expect_malformed("not an object", img, len, NULL);
    free(img);
    /* overlapping offsets */
    img = io_image("{\"w.a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                   "\"w.b\":{\"dtype\":\"I8\",\"shape\":[5],\"data_offsets\":[20,25]}}", 25, &len);
    expect_malformed("overlap", img, len, "w.b");
    free(img);
    /* wrong size: dtype x shape disagrees with the offsets */
    img = io_image("{\"w.a\":{\"dtype\":\"F32\",\"shape\":[2,4],\"data_offsets\":[0,24]}}", 24, &len);
    expect_malformed("wrong size", img, len, "w.a");
    free(img);
    /* offsets running past the data region */
    img = io_image("{\"w.a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 20, &len);
    expect_malformed("past end", img, len, "w.a");
    free(img);
    /* offsets out of order: end before begin, and a gap */
    img = io_image("{\"w.a\":{\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4, &len);
    expect_malformed("end before begin", img, len, "w.a");
    free(img);
    img = io_image("{\"w.a\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 8, &len);
    expect_malformed("gap", img, len, "w.a");
    free(img);
    /* huge header length */
    img = io_image("{}", 0, &len);
    for (int i = 0; i < 8; i++) img[i] = 0xff;
    expect_malformed("huge header", img, len, NULL);
    img[7] = 0;
    img[6] = 0; /* 2^48-ish: still above the limit and the file */
    expect_malformed("header past end", img, len, NULL);
    free(img);
    /* duplicate names */
    img = io_image("{\"w.a\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                   "\"w.a\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 8, &len);
    expect_malformed("duplicate", img, len, "w.a");
    free(img);
    /* shape product overflow */
    img = io_image("{\"w.a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
                   "\"data_offsets\":[0,4]}}", 4, &len);
    expect_malformed("overflow", img, len, "w.a");
    free(img);
    /* unknown dtype, negative dim, non-integer offsets */
    img = io_image("{\"w.a\":{\"dtype\":\"F8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, &len);
    expect_malformed("dtype", img, len, "w.a");
    free(img);
    img = io_image("{\"w.a\":{\"dtype\":\"I8\",\"shape\":[-4],\"data_offsets\":[0,4]}}", 4, &len);
    expect_malformed("negative dim", img, len, "w.a");
    free(img);
    img = io_image("{\"w.a\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0.5,4]}}", 4, &len);
    expect_malformed("float offset", img, len, "w.a");
    free(img);
    /* header shorter than its 8-byte length field, or a header length of zero */
    static const uint8_t tiny[5] = {1, 0, 0, 0, 0};
    expect_malformed("shorter than the length field", tiny, sizeof tiny, NULL);
    img = io_image("", 0, &len);
    expect_malformed("empty header", img, len, NULL);
    free(img);
    /* malformed metadata, trailing bytes after the JSON, unknown fields, empty names,
     * non-UTF-8 header, shape/offset fields of the wrong JSON type, too many dims */
    static const struct { const char *what, *hdr, *needle; size_t data; } more[] = {
        {"metadata not an object", "{\"__metadata__\":[1],\"w.a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}", "__metadata__", 1},
        {"metadata value not a string", "{\"__metadata__\":{\"format\":3}}", "format", 0},
        {"trailing bytes", "{\"w.a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}xx", NULL, 1},
        {"unknown field", "{\"w.a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1],\"extra\":1}}", "w.a", 1},
        {"empty name", "{\"\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}", NULL, 1},
        {"entry not an object", "{\"w.a\":[0,1]}", "w.a", 1},
        {"missing offsets", "{\"w.a\":{\"dtype\":\"I8\",\"shape\":[1]}}", "w.a", 1},
        {"shape not an array", "{\"w.a\":{\"dtype\":\"I8\",\"shape\":4,\"data_offsets\":[0,4]}}", "w.a", 4},
        {"three offsets", "{\"w.a\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0,2,4]}}", "w.a", 4},
        {"dtype not a string", "{\"w.a\":{\"dtype\":8,\"shape\":[4],\"data_offsets\":[0,4]}}", "w.a", 4},
        {"nine dims", "{\"w.a\":{\"dtype\":\"I8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", "w.a", 1},
        {"negative offset", "{\"w.a\":{\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[-1,-1]}}", "w.a", 0},
        {"huge offset", "{\"w.a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[18446744073709551615,0]}}", "w.a", 1},
        {"data left over after the last tensor", "{\"w.a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}", NULL, 5},
        {"non-UTF-8 header", "{\"w.\xff\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}", NULL, 1},
    };
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) {
        img = io_image(more[i].hdr, more[i].data, &len);
        expect_malformed(more[i].what, img, len, more[i].needle);
        free(img);
    }
    /* random byte flips of the good image never crash; they either parse or fail cleanly */
    img = io_image(good, 29, &len);
    for (int it = 0; it < 2000; it++) {
        uint8_t *p = malloc(len);
        memcpy(p, img, len);
        int flips = 1 + (int)(tu_rng_u64(&g_rng) % 3);
        for (int k = 0; k < flips; k++) p[tu_rng_u64(&g_rng) % len] = (uint8_t)tu_rng_u64(&g_rng);
        msbnb_status st = msbnb_st_open_memory(&f, p, len, "flip");
        CHECK(st == MSBNB_OK || st == MSBNB_ERR_FORMAT);
        if (st == MSBNB_OK) {
            for (size_t i = 0; i < msbnb_st_count(f); i++) {
                msbnb_st_tensor_info ti;
                CHECK_OK(msbnb_st_get(f, i, &ti));
                CHECK((const uint8_t *)ti.data + ti.nbytes <= p + len || ti.nbytes == 0);
            }
        }
        msbnb_st_close(f);
        free(p);
    }
    free(img);
}

/* Sharded checkpoints: a consistent index opens; a duplicate across shards, a tensor the
 * index misplaces or lists but no shard holds, a missing shard and a path in the index fail. */
static void test_sharded_index_checks(void) {
    char *d = io_join(g_dir, "sharded");
    mkdir(d, 0755);
    float a[4] = {1, 2, 3, 4}, b[2] = {5, 6};
    io_tensor s1[1] = {{"w.a", MSBNB_DTYPE_F32, 1, {4}, a}}, s2[2] = {{"w.b", MSBNB_DTYPE_F32, 1, {2}, b},
                                                                    {"w.a", MSBNB_DTYPE_F32, 1, {4}, a}};
    char *p1 = io_join(d, "s1.safetensors"), *p2 = io_join(d, "s2.safetensors"), *ix = io_join(d, "i.json");
    CHECK_OK(io_write_st(p1, s1, 1));
    CHECK_OK(io_write_st(p2, s2, 1));
    const char *good = "{\"weight_map\": {\"w.a\": \"s1.safetensors\", \"w.b\": \"s2.safetensors\"}}";
    CHECK(io_write_file(ix, good, strlen(good)));
    msbnb_st_file_t *f = NULL;
    CHECK_OK(msbnb_st_open(&f, ix));
    CHECK(f && msbnb_st_count(f) == 2 && msbnb_st_shard_count(f) == 2);
    msbnb_st_tensor_info ti;
    if (f) {
        CHECK_OK(msbnb_st_find(f, "w.b", &ti));
        CHECK(ti.shard == 1 && memcmp(ti.data, b, 8) == 0);
    }
    msbnb_st_close(f);
    const char *bad[] = {
        "{\"weight_map\": {\"w.a\": \"s2.safetensors\", \"w.b\": \"s2.safetensors\"}}", /* misplaced */
        "{\"weight_map\": {\"w.a\": \"s1.safetensors\", \"w.c\": \"s2.safetensors\"}}", /* listed, absent */
        "{\"weight_map\": {\"w.a\": \"../s1.safetensors\"}}",                             /* a path */
        "{\"weight_map\": {}}", "{\"metadata\": {}}", "{\"weight_map\": {\"w.a\": 3}}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(io_write_file(ix, bad[i], strlen(bad[i])));
        CHECKF(msbnb_st_open(&f, ix) == MSBNB_ERR_FORMAT, "index %zu", i);
        CHECKF(strstr(msbnb_last_error(), ix) != NULL, "index %zu: %s", i, msbnb_last_error());
    }
    const char *missing = "{\"weight_map\": {\"w.a\": \"s1.safetensors\", \"w.b\": \"nope.safetensors\"}}";
    CHECK(io_write_file(ix, missing, strlen(missing)));
    CHECK(msbnb_st_open(&f, ix) == MSBNB_ERR_IO && strstr(msbnb_last_error(), "nope.safetensors"));
    /* the same tensor in two shards */
    CHECK_OK(io_write_st(p2, s2, 2));
    CHECK(io_write_file(ix, good, strlen(good)));
    CHECK(msbnb_st_open(&f, ix) == MSBNB_ERR_FORMAT && strstr(msbnb_last_error(), "duplicate") &&
          strstr(msbnb_last_error(), "w.a"));
    io_rm_rf(d);
    free(p1), free(p2), free(ix), free(d);
}

/* Bad arguments and calls out of order on the writer and the reader: a status and a
 * message each, no file left behind. */
static void test_bad_arguments_and_order(void) {
    char *sub = io_join(g_dir, "args");
    mkdir(sub, 0755);
    char *path = io_join(sub, "w.safetensors");
    int64_t shape[2] = {2, 3};
    float data[6] = {0};
    msbnb_st_writer_t *w = NULL;
    CHECK_STATUS(msbnb_st_writer_create(NULL, path), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_writer_create(&w, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_writer_create(&w, ""), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_writer_set_metadata(NULL, "k", "v"), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_writer_add(NULL, "a", MSBNB_DTYPE_F32, shape, 2), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_writer_begin(NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_writer_write(NULL, "a", 0, data, 4), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_writer_finish(NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK(msbnb_st_writer_file_size(NULL) == 0);
    CHECK_OK(msbnb_st_writer_create(&w, path));
    CHECK(msbnb_st_writer_file_size(w) == 0);
    CHECK_STATUS(msbnb_st_writer_set_metadata(w, NULL, "v"), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_writer_set_metadata(w, "k", NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_OK(msbnb_st_writer_set_metadata(w, "k", "v"));
    CHECK_STATUS(msbnb_st_writer_set_metadata(w, "k", "v2"), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_writer_add(w, NULL, MSBNB_DTYPE_F32, shape, 2), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_writer_add(w, "", MSBNB_DTYPE_F32, shape, 2), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_writer_add(w, "a", MSBNB_DTYPE_F32, NULL, 2), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_writer_add(w, "a", MSBNB_DTYPE_F32, shape, -1), MSBNB_ERR_INVALID_ARGUMENT);
    int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    CHECK_STATUS(msbnb_st_writer_add(w, "a", MSBNB_DTYPE_F32, nine, 9), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_writer_add(w, "a", (msbnb_dtype)-3, shape, 2), MSBNB_ERR_INVALID_ARGUMENT);
    int64_t big[3] = {1LL << 31, 1LL << 31, 4};
    CHECK_STATUS(msbnb_st_writer_add(w, "a", MSBNB_DTYPE_F32, big, 3), MSBNB_ERR_OVERFLOW);
    /* writing before begin is out of order */
    CHECK_OK(msbnb_st_writer_add(w, "a", MSBNB_DTYPE_F32, shape, 2));
    CHECK_STATUS(msbnb_st_writer_write(w, "a", 0, data, sizeof data), MSBNB_ERR_STATE);
    CHECK_STATUS(msbnb_st_writer_finish(w), MSBNB_ERR_STATE);
    CHECK_OK(msbnb_st_writer_begin(w));
    CHECK(msbnb_st_writer_file_size(w) > sizeof data);
    /* declaring after begin, beginning twice, writing NULL data or past the end */
    CHECK_STATUS(msbnb_st_writer_add(w, "b", MSBNB_DTYPE_F32, shape, 2), MSBNB_ERR_STATE);
    CHECK_STATUS(msbnb_st_writer_set_metadata(w, "k2", "v"), MSBNB_ERR_STATE);
    CHECK(msbnb_st_writer_begin(w) != MSBNB_OK);
    CHECK_STATUS(msbnb_st_writer_write(w, NULL, 0, data, 4), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_writer_write(w, "a", 0, NULL, 4), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_writer_write(w, "a", UINT64_MAX - 2, data, 4), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_writer_write(w, "a", 0, data, sizeof data + 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK(!io_exists(path));
    CHECK_OK(msbnb_st_writer_write(w, "a", 0, data, sizeof data));
    CHECK_OK(msbnb_st_writer_finish(w));
    CHECK(io_exists(path));
    /* after finish only free is accepted */
    CHECK_STATUS(msbnb_st_writer_finish(w), MSBNB_ERR_STATE);
    CHECK_STATUS(msbnb_st_writer_write(w, "a", 0, data, 4), MSBNB_ERR_STATE);
    msbnb_st_writer_free(w);
    CHECK(io_exists(path) && io_count_entries(sub) == 1); /* the finished file stays, no temporary */
    /* the reader's accessors */
    msbnb_st_file_t *f = NULL;
    CHECK_OK(msbnb_st_open(&f, path));
    msbnb_st_tensor_info ti;
    CHECK_STATUS(msbnb_st_get(NULL, 0, &ti), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_get(f, 0, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_get(f, (size_t)-1, &ti), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_find(NULL, "a", &ti), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_find(f, NULL, &ti), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_find(f, "a", NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK(msbnb_st_metadata(f, NULL) == NULL && msbnb_st_metadata(NULL, "k") == NULL);
    CHECK(msbnb_st_metadata(f, "k") && strcmp(msbnb_st_metadata(f, "k"), "v") == 0);
    CHECK(msbnb_st_shard_path(f, -1) == NULL && msbnb_st_shard_path(f, 1) == NULL && msbnb_st_shard_path(f, 0));
    CHECK(msbnb_st_shard_count(NULL) == 0 && msbnb_st_shard_path(NULL, 0) == NULL);
    msbnb_st_release(f, 99); /* out of range: a no-op */
    msbnb_st_release(NULL, 0);
    msbnb_st_close(f);
    /* a writer whose destination folder does not exist fails at begin and creates nothing */
    char *nodir = io_join(sub, "missing/w.safetensors");
    CHECK_OK(msbnb_st_writer_create(&w, nodir));
    CHECK_OK(msbnb_st_writer_add(w, "a", MSBNB_DTYPE_F32, shape, 2));
    CHECK_STATUS(msbnb_st_writer_begin(w), MSBNB_ERR_IO);
    msbnb_st_writer_free(w);
    CHECK(io_count_entries(sub) == 1);
    io_rm_rf(sub);
    free(nodir), free(path), free(sub);
}

static void test_open_errors(void) {
    msbnb_st_file_t *f = NULL;
    CHECK_STATUS(msbnb_st_open(&f, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_st_open(NULL, "x"), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK(msbnb_st_open(&f, "/nonexistent/model.safetensors") == MSBNB_ERR_IO);
    CHECK(msbnb_st_open(&f, g_dir) == MSBNB_ERR_NOT_FOUND); /* folder without a checkpoint */
    CHECK_STATUS(msbnb_st_open_memory(&f, NULL, 10, "x"), MSBNB_ERR_INVALID_ARGUMENT);
    msbnb_st_close(NULL);
    CHECK(msbnb_st_count(NULL) == 0);
}

int main(void) {
    tu_rng_init(&g_rng, tu_seed());
    g_dir = io_mkdtemp();
    CHECK(g_dir != NULL);
    if (!g_dir) return tu_finish();
    RUN_TEST(test_writer_reader_round_trip);
    RUN_TEST(test_writer_matches_reference_layout);
    RUN_TEST(test_writer_is_atomic);
    RUN_TEST(test_rejects_malformed_files);
    RUN_TEST(test_sharded_index_checks);
    RUN_TEST(test_bad_arguments_and_order);
    RUN_TEST(test_open_errors);
    io_rm_rf(g_dir);
    free(g_dir);
    return tu_finish();
}
