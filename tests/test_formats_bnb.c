/* Bit-identity with bitsandbytes 0.50: every q4.*, q8b.*, int8row.* entry of the
 * reference file (tests/data/formats.safetensors, produced by bitsandbytes itself). */
#include "testutil.h"

#include <stdlib.h>

static tu_st *g_ref;

typedef struct {
    const void *data;
    msbnb_dtype dt;
    int64_t n, rows, cols;
} input_t;

static input_t get_input(const char *which) {
    char key[128];
    snprintf(key, sizeof key, "in.%s", which);
    const char *dt;
    int64_t shape[8];
    int nd;
    size_t nb;
    input_t in = {0};
    in.data = tu_st_get(g_ref, key, &dt, shape, &nd, &nb);
    if (!in.data) return in;
    msbnb_dtype_from_name(dt, &in.dt);
    in.n = (int64_t)(nb / msbnb_dtype_size(in.dt));
    in.rows = nd == 2 ? shape[0] : 1;
    in.cols = nd == 2 ? shape[1] : shape[0];
    return in;
}

/* Every reference key the tests compared, so that main can check none was left out. */
enum { MAX_SEEN = 1024 };
static char g_seen[MAX_SEEN][160];
static int g_nseen;

static void mark_seen(const char *key) {
    for (int i = 0; i < g_nseen; i++)
        if (strcmp(g_seen[i], key) == 0) return;
    if (g_nseen < MAX_SEEN) snprintf(g_seen[g_nseen++], sizeof g_seen[0], "%s", key);
}

static const void *ref(const char *prefix, const char *suffix, size_t *nbytes) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", prefix, suffix);
    mark_seen(key);
    const void *p = tu_st_get(g_ref, key, NULL, NULL, NULL, nbytes);
    CHECKF(p != NULL, "missing %s", key);
    return p;
}

static int count_diff_bytes(const uint8_t *a, const uint8_t *b, size_t n) {
    int d = 0;
    for (size_t i = 0; i < n; i++) d += a[i] != b[i];
    return d;
}

static int count_diff_f32(const float *a, const float *b, size_t n, uint32_t max_ulp) {
    int d = 0;
    for (size_t i = 0; i < n; i++)
        d += tu_ulp_diff(a[i], b[i]) > max_ulp || (a[i] == 0 && b[i] == 0 && signbit(a[i]) != signbit(b[i]));
    return d;
}

static void test_q4_matches_bnb(void) {
    static const char *types[] = {"nf4", "fp4"};
    static const int bss[] = {32, 64, 128, 256};
    static const char *ins[] = {"a", "tail", "zeros", "outl", "bf16"};
    int cases = 0;
    for (int t = 0; t < 2; t++)
        for (int b = 0; b < 4; b++)
            for (int dq = 0; dq < 2; dq++)
                for (int k = 0; k < 5; k++) {
                    char prefix[96];
                    snprintf(prefix, sizeof prefix, "q4.%s.bs%d.dq%d.%s", types[t], bss[b], dq, ins[k]);
                    input_t in = get_input(ins[k]);
                    CHECK(in.data != NULL);
                    if (!in.data) continue;
                    msbnb_qtype qt = t == 0 ? MSBNB_QTYPE_NF4 : MSBNB_QTYPE_FP4;
                    int64_t nb = msbnb_nblocks(in.n, bss[b]);
                    uint8_t *packed = malloc((size_t)(in.n + 1) / 2);
                    float *absmax = malloc((size_t)nb * 4);
                    CHECK_OK(msbnb_quantize_4bit(packed, absmax, in.data, in.dt, in.n, bss[b], qt, 0));
                    size_t sz;
                    const uint8_t *rp = ref(prefix, "packed", &sz);
                    CHECK(sz == (size_t)(in.n + 1) / 2);
                    int d = count_diff_bytes(packed, rp, sz);
                    CHECKF(d == 0, "%s: %d packed bytes differ", prefix, d);
                    const float *code = ref(prefix, "code", &sz);
                    CHECK(memcmp(code, qt == MSBNB_QTYPE_NF4 ? msbnb_nf4_code() : msbnb_fp4_code(), 64) == 0);
                    float *am = absmax;
                    float *am_dq = NULL;
                    if (!dq) {
                        const float *ra = ref(prefix, "absmax", &sz);
                        CHECK(sz == (size_t)nb * 4);
                        CHECKF(memcmp(absmax, ra, sz) == 0, "%s: absmax differs", prefix);
                    } else {
                        uint8_t *qa = malloc((size_t)nb);
                        int64_t nn = msbnb_nblocks(nb, 256);
                        float *nested = malloc((size_t)nn * 4), off;
                        CHECK_OK(msbnb_double_quant_absmax(qa, nested, &off, absmax, nb));
                        const uint8_t *rqa = ref(prefix, "absmax", &sz);
                        CHECK(sz == (size_t)nb);
                        d = count_diff_bytes(qa, rqa, (size_t)nb);
                        CHECKF(d == 0, "%s: %d quantized absmax differ", prefix, d);
                        const float *rn = ref(prefix, "nested_absmax", &sz);
                        CHECK(sz == (size_t)nn * 4);
                        CHECKF(memcmp(nested, rn, sz) == 0, "%s: nested absmax differs", prefix);
                        const float *ro = ref(prefix, "offset", &sz);
                        CHECKF(memcmp(&off, ro, 4) == 0, "%s: offset %.9g vs %.9g", prefix, off, ro[0]);
                        const float *rc = ref(prefix, "nested_code", &sz);
                        CHECK(memcmp(rc, msbnb_dynamic_map(), 1024) == 0);
                        am_dq = malloc((size_t)nb * 4);
                        CHECK_OK(msbnb_double_dequant_absmax(am_dq, rqa, rn, ro[0], nb));
                        am = am_dq;
                        free(qa);
                        free(nested);
                    }
                    /* Dequantize from bnb's own state and compare with its dequant. */
                    float *out = malloc((size_t)in.n * 4);
                    CHECK_OK(msbnb_dequantize_4bit(out, MSBNB_DTYPE_F32, rp, am, in.n, bss[b], qt, 0));
                    if (in.dt == MSBNB_DTYPE_BF16) { /* bnb returns bf16 for bf16 input */
                        for (int64_t i = 0; i < in.n; i++) out[i] = msbnb_bf16_to_f32(msbnb_f32_to_bf16(out[i]));
                    }
                    const float *rd = ref(prefix, "dequant", &sz);
                    d = count_diff_f32(out, rd, (size_t)in.n, 1);
                    CHECKF(d == 0, "%s: %d dequantized values differ by > 1 ulp", prefix, d);
                    free(out);
                    free(am_dq);
                    free(packed);
                    free(absmax);
                    cases++;
                }
    CHECK(cases == 80);
}

static void test_q8_blockwise_matches_bnb(void) {
    static const int bss[] = {64, 256, 2048, 4096};
    static const char *ins[] = {"a", "tail", "outl"};
    size_t sz;
    const float *dyn = tu_st_get(g_ref, "dyn8.code", NULL, NULL, NULL, &sz);
    CHECK(dyn && sz == 1024 && memcmp(dyn, msbnb_dynamic_map(), 1024) == 0);
    for (int b = 0; b < 4; b++)
        for (int k = 0; k < 3; k++) {
            char prefix[64];
            snprintf(prefix, sizeof prefix, "q8b.bs%d.%s", bss[b], ins[k]);
            input_t in = get_input(ins[k]);
            int64_t nb = msbnb_nblocks(in.n, bss[b]);
            uint8_t *q = malloc((size_t)in.n);
            float *absmax = malloc((size_t)nb * 4), *out = malloc((size_t)in.n * 4);
            CHECK_OK(msbnb_quantize_blockwise_8bit(q, absmax, in.data, in.dt, in.n, bss[b], NULL, 0));
            const uint8_t *rq = ref(prefix, "q", &sz);
            int d = count_diff_bytes(q, rq, (size_t)in.n);
            CHECKF(d == 0, "%s: %d codes differ", prefix, d);
            const float *ra = ref(prefix, "absmax", &sz);
            CHECKF(memcmp(absmax, ra, (size_t)nb * 4) == 0, "%s: absmax differs", prefix);
            CHECK_OK(msbnb_dequantize_blockwise_8bit(out, MSBNB_DTYPE_F32, rq, ra, in.n, bss[b], NULL, 0));
            const float *rd = ref(prefix, "dequant", &sz);
            d = count_diff_f32(out, rd, (size_t)in.n, 1);
            CHECKF(d == 0, "%s: %d dequantized values differ", prefix, d);
            free(q);
            free(absmax);
            free(out);
        }
}

static void test_int8_vectorwise_matches_bnb(void) {
    const char *dt;
    int64_t shape[8];
    int nd;
    size_t sz;
    const uint16_t *a = tu_st_get(g_ref, "int8row.input_fp16", &dt, shape, &nd, &sz);
    CHECK(a && strcmp(dt, "F16") == 0 && nd == 2);
    if (!a) return;
    int64_t rows = shape[0], cols = shape[1];
    for (int thr = 0; thr <= 6; thr += 6) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "int8row.thr%d", thr);
        int8_t *q = malloc((size_t)(rows * cols));
        float *rs = malloc((size_t)rows * 4);
        int64_t outl[64], nout = -1;
        CHECK_OK(msbnb_int8_vectorwise_quant(q, rs, outl, 64, &nout, a, MSBNB_DTYPE_F16, rows, cols,
                                             (float)thr));
        const int8_t *rq = ref(prefix, "q", &sz);
        int d = count_diff_bytes((const uint8_t *)q, (const uint8_t *)rq, sz);
        CHECKF(d == 0, "%s: %d codes differ", prefix, d);
        const float *rr = ref(prefix, "rowstats", &sz);
        CHECKF(memcmp(rs, rr, sz) == 0, "%s: row stats differ", prefix);
        const int64_t *ro = ref(prefix, "outlier_cols", &sz);
        CHECKF((size_t)nout * 8 == sz, "%s: %lld outlier cols, want %zu", prefix, (long long)nout, sz / 8);
        if ((size_t)nout * 8 == sz) CHECK(memcmp(outl, ro, sz) == 0);
        free(q);
        free(rs);
    }
}

/* The loops above name the entries they expect; this checks the file holds no q4.*,
 * q8b.* or int8row.* entry they did not compare (a new key in the reference data would
 * otherwise go untested). */
static void test_every_reference_entry_compared(void) {
    msbnb_st_file_t *f = NULL;
    CHECK_OK(msbnb_st_open(&f, tu_data_path("formats.safetensors")));
    if (!f) return;
    int total = 0, missed = 0;
    for (size_t i = 0; i < msbnb_st_count(f); i++) {
        msbnb_st_tensor_info ti;
        CHECK_OK(msbnb_st_get(f, i, &ti));
        if (strncmp(ti.name, "q4.", 3) && strncmp(ti.name, "q8b.", 4) && strncmp(ti.name, "int8row.thr", 11))
            continue;
        total++;
        int seen = 0;
        for (int k = 0; k < g_nseen && !seen; k++) seen = strcmp(g_seen[k], ti.name) == 0;
        if (!seen) {
            missed++;
            CHECKF(0, "reference entry %s was not compared", ti.name);
        }
    }
    printf("  %d reference entries compared, %d missed\n", total - missed, missed);
    CHECK(total == 482 && missed == 0); /* 80 q4 cases (440 keys), 12 q8b (36), 2 int8row (6) */
    msbnb_st_close(f);
}

int main(void) {
    g_ref = tu_st_open("formats.safetensors");
    if (!g_ref) {
        printf("0 passed, 1 failed\n");
        return 1;
    }
    RUN_TEST(test_q4_matches_bnb);
    RUN_TEST(test_q8_blockwise_matches_bnb);
    RUN_TEST(test_int8_vectorwise_matches_bnb);
    RUN_TEST(test_every_reference_entry_compared);
    tu_st_close(g_ref);
    return tu_finish();
}
