#include "testutil.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int tu_checks_failed = 0;
int tu_tests_passed = 0, tu_tests_failed = 0;

void tu_run(const char *name, void (*fn)(void)) {
    const char *only = getenv("MSBNB_TEST_ONLY"); /* run only the tests whose name contains it */
    if (only && *only && !strstr(name, only)) return;
    int before = tu_checks_failed;
    fn();
    if (tu_checks_failed == before) {
        tu_tests_passed++;
        printf("PASS %s\n", name);
    } else {
        tu_tests_failed++;
        printf("FAIL %s (%d checks)\n", name, tu_checks_failed - before);
    }
    fflush(stdout);
}

int tu_report_tier_skips(void) {
    int n = 0;
    for (int t = MSBNB_CPU_SCALAR; t <= MSBNB_CPU_AVX512; t++)
        if (!msbnb_cpu_tier_supported((msbnb_cpu_tier)t)) {
            printf("SKIPPED: %s tier: this CPU does not support it, so its kernels are not "
                   "checked against the scalar tier in this run\n",
                   msbnb_cpu_tier_name((msbnb_cpu_tier)t));
            n++;
        }
    fflush(stdout);
    return n;
}

int tu_finish(void) {
    printf("%d passed, %d failed\n", tu_tests_passed, tu_tests_failed);
    return tu_tests_failed == 0 ? 0 : 1;
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
void tu_rng_init(tu_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix(&seed);
}
uint64_t tu_rng_u64(tu_rng *r) {
    uint64_t *s = r->s;
    uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45);
    return res;
}
float tu_rng_uniform(tu_rng *r) { return (float)(tu_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }
float tu_rng_normal(tu_rng *r) {
    double u1 = ((tu_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (tu_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
uint64_t tu_seed(void) {
    static uint64_t seed = 0;
    if (seed == 0) {
        const char *e = getenv("MSBNB_TEST_SEED");
        if (e && *e) seed = strtoull(e, NULL, 10);
        else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            seed = ((uint64_t)ts.tv_sec * 1000000007ULL) ^ (uint64_t)ts.tv_nsec;
        }
        if (seed == 0) seed = 1;
        printf("seed %llu (replay with MSBNB_TEST_SEED=%llu)\n", (unsigned long long)seed,
               (unsigned long long)seed);
    }
    return seed;
}
void tu_fill_normal(tu_rng *r, float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = scale * tu_rng_normal(r);
}

const char *tu_data_path(const char *relpath) {
    static char buf[4096];
    const char *dir = getenv("MSBNB_TEST_DATA");
    if (!dir || !*dir) dir = "tests/data";
    snprintf(buf, sizeof buf, "%s/%s", dir, relpath);
    return buf;
}

struct tu_st {
    unsigned char *data;
    size_t size;
    uint64_t hlen;
    cJSON *header;
};

tu_st *tu_st_open(const char *relpath) {
    const char *path = tu_data_path(relpath);
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "cannot open %s\n", path);
        return NULL;
    }
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    tu_st *f = calloc(1, sizeof *f);
    f->size = (size_t)sz;
    f->data = malloc(f->size);
    if (fread(f->data, 1, f->size, fp) != f->size) {
        fclose(fp);
        free(f->data);
        free(f);
        return NULL;
    }
    fclose(fp);
    memcpy(&f->hlen, f->data, 8);
    char *h = malloc(f->hlen + 1);
    memcpy(h, f->data + 8, f->hlen);
    h[f->hlen] = 0;
    f->header = cJSON_Parse(h);
    free(h);
    return f;
}

void tu_st_close(tu_st *f) {
    if (!f) return;
    cJSON_Delete(f->header);
    free(f->data);
    free(f);
}

const void *tu_st_get(tu_st *f, const char *name, const char **dtype, int64_t *shape, int *ndim,
                      size_t *nbytes) {
    cJSON *t = cJSON_GetObjectItemCaseSensitive(f->header, name);
    if (!t) return NULL;
    cJSON *dt = cJSON_GetObjectItemCaseSensitive(t, "dtype");
    cJSON *sh = cJSON_GetObjectItemCaseSensitive(t, "shape");
    cJSON *off = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
    if (dtype) *dtype = dt->valuestring;
    int nd = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, sh) {
        if (shape && nd < 8) shape[nd] = (int64_t)it->valuedouble;
        nd++;
    }
    if (ndim) *ndim = nd;
    size_t b = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble;
    size_t e = (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
    if (nbytes) *nbytes = e - b;
    return f->data + 8 + f->hlen + b;
}

uint32_t tu_ulp_diff(float a, float b) {
    if (isnan(a) || isnan(b)) return (isnan(a) && isnan(b)) ? 0 : UINT32_MAX;
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    if (ia < 0) ia = (int32_t)(0x80000000u - (uint32_t)ia);
    if (ib < 0) ib = (int32_t)(0x80000000u - (uint32_t)ib);
    int64_t d = (int64_t)ia - (int64_t)ib;
    return (uint32_t)(d < 0 ? -d : d);
}
