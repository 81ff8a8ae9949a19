/* Parameter container: registration, freezing (freeze_model_except_lora), PEFT summary,
 * gradient norm and clipping, bad input. */
#include "testutil.h"
#include "msbnb/params.h"

#include <stdlib.h>

static void test_params_add_find_get(void) {
    msbnb_params_t *p = NULL;
    CHECK_OK(msbnb_params_create(&p));
    float w[12] = {0}, g[12] = {0};
    int64_t sh[2] = {3, 4};
    CHECK_OK(msbnb_params_add(p, "base_model.model.fc.weight", w, g, 2, sh));
    CHECK_OK(msbnb_params_add(p, "base_model.model.fc2.weight", NULL, NULL, 2, sh));
    CHECK(msbnb_params_count(p) == 2);
    int64_t idx = -7;
    CHECK_OK(msbnb_params_find(p, "base_model.model.fc2.weight", &idx));
    CHECK(idx == 1);
    CHECK_STATUS(msbnb_params_find(p, "nope", &idx), MSBNB_ERR_NOT_FOUND);
    msbnb_param e;
    CHECK_OK(msbnb_params_get(p, 0, &e));
    CHECK(e.data == w && e.grad == g && e.numel == 12 && e.ndim == 2 && e.trainable == 1);
    CHECK_OK(msbnb_params_get(p, 1, &e));
    CHECK(e.data == NULL && e.trainable == 0 && e.numel == 12);
    CHECK_STATUS(msbnb_params_get(p, 2, &e), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_params_get(p, -1, &e), MSBNB_ERR_INVALID_ARGUMENT);
    /* bad input */
    CHECK_STATUS(msbnb_params_add(p, "base_model.model.fc.weight", w, g, 2, sh), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_params_add(p, "x", w, g, 0, sh), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_params_add(p, "x", w, g, 5, sh), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_params_add(p, "", w, g, 2, sh), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_params_add(p, NULL, w, g, 2, sh), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_params_add(p, "x", NULL, g, 2, sh), MSBNB_ERR_INVALID_ARGUMENT);
    int64_t bad[2] = {3, 0};
    CHECK_STATUS(msbnb_params_add(p, "x", w, g, 2, bad), MSBNB_ERR_INVALID_ARGUMENT);
    int64_t huge[3] = {INT64_MAX / 2, 4, 4};
    CHECK_STATUS(msbnb_params_add(p, "x", NULL, NULL, 3, huge), MSBNB_ERR_OVERFLOW);
    CHECK(msbnb_params_count(p) == 2);
    CHECK_STATUS(msbnb_params_set_trainable(p, "base_model.model.fc2.weight", 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_params_set_trainable(p, "missing", 0), MSBNB_ERR_NOT_FOUND);
    CHECK_OK(msbnb_params_set_trainable(p, "base_model.model.fc.weight", 0));
    CHECK_OK(msbnb_params_get(p, 0, &e));
    CHECK(e.trainable == 0);
    CHECK_STATUS(msbnb_params_create(NULL), MSBNB_ERR_INVALID_ARGUMENT);
    msbnb_params_free(p);
    msbnb_params_free(NULL);
}

/* A model of two quantized base layers with LoRA adapters (PEFT names) and a float head:
 * freeze_except_lora leaves exactly the lora_ entries trainable; the summary line has
 * PEFT's exact format. */
static void test_freeze_except_lora_and_summary(void) {
    msbnb_params_t *p = NULL;
    CHECK_OK(msbnb_params_create(&p));
    static float a1[8 * 1000], b1[1000 * 8], ga1[8 * 1000], gb1[1000 * 8];
    static float head[10 * 1000], ghead[10 * 1000];
    int64_t wsh[2] = {1000, 1000}, ash[2] = {8, 1000}, bsh[2] = {1000, 8}, hsh[2] = {10, 1000};
    CHECK_OK(msbnb_params_add(p, "base_model.model.layers.0.fc.weight", NULL, NULL, 2, wsh));
    CHECK_OK(msbnb_params_add(p, "base_model.model.layers.0.fc.lora_A.weight", a1, ga1, 2, ash));
    CHECK_OK(msbnb_params_add(p, "base_model.model.layers.0.fc.lora_B.weight", b1, gb1, 2, bsh));
    CHECK_OK(msbnb_params_add(p, "base_model.model.head.weight", head, ghead, 2, hsh));
    int64_t t, a, nt = -1;
    CHECK_OK(msbnb_params_totals(p, &t, &a));
    CHECK(t == 16000 + 10000 && a == 1000000 + 16000 + 10000);
    CHECK_OK(msbnb_params_freeze_except_lora(p, &nt));
    CHECK(nt == 2);
    CHECK_OK(msbnb_params_totals(p, &t, &a));
    CHECK(t == 16000 && a == 1026000);
    char line[128];
    CHECK_OK(msbnb_params_summary(p, line, sizeof line));
    /* 100 * 16000 / 1026000 = 1.55945... */
    CHECKF(strcmp(line, "trainable params: 16,000 || all params: 1,026,000 || trainable%: 1.5595") == 0,
           "got '%s'", line);
    char small[10];
    CHECK_STATUS(msbnb_params_summary(p, small, sizeof small), MSBNB_ERR_BUFFER_TOO_SMALL);
    int64_t m = 0;
    CHECK_OK(msbnb_params_set_trainable_matching(p, "head", 1, &m));
    CHECK(m == 1);
    CHECK_OK(msbnb_params_totals(p, &t, NULL));
    CHECK(t == 26000);
    CHECK_OK(msbnb_params_set_trainable_matching(p, "", 0, &m));
    CHECK(m == 4);
    CHECK_OK(msbnb_params_totals(p, &t, NULL));
    CHECK(t == 0);
    /* a quantized entry stays frozen even when asked to train */
    CHECK_OK(msbnb_params_set_trainable_matching(p, "", 1, &m));
    CHECK_OK(msbnb_params_totals(p, &t, NULL));
    CHECK(t == 26000);
    msbnb_params_free(p);
}

static void test_summary_large_counts(void) {
    msbnb_params_t *p = NULL;
    CHECK_OK(msbnb_params_create(&p));
    int64_t sh[2] = {1000003, 7000};
    CHECK_OK(msbnb_params_add(p, "w", NULL, NULL, 2, sh));
    char line[128];
    CHECK_OK(msbnb_params_summary(p, line, sizeof line));
    CHECKF(strcmp(line, "trainable params: 0 || all params: 7,000,021,000 || trainable%: 0.0000") == 0,
           "got '%s'", line);
    msbnb_params_free(p);
}

static void test_clip_grad_norm(void) {
    tu_rng r;
    tu_rng_init(&r, tu_seed());
    msbnb_params_t *p = NULL;
    CHECK_OK(msbnb_params_create(&p));
    enum { N1 = 4097, N2 = 3 };
    float *w1 = calloc(N1, 4), *g1 = calloc(N1, 4), w2[N2] = {0}, g2[N2], fz[5] = {0}, gfz[5];
    tu_fill_normal(&r, g1, N1, 1.0f);
    tu_fill_normal(&r, g2, N2, 1.0f);
    tu_fill_normal(&r, gfz, 5, 100.0f);
    int64_t s1 = N1, s2 = N2, s3 = 5;
    CHECK_OK(msbnb_params_add(p, "a", w1, g1, 1, &s1));
    CHECK_OK(msbnb_params_add(p, "b", w2, g2, 1, &s2));
    CHECK_OK(msbnb_params_add(p, "frozen", fz, gfz, 1, &s3));
    CHECK_OK(msbnb_params_set_trainable(p, "frozen", 0));
    double ref = 0;
    for (int i = 0; i < N1; i++) ref += (double)g1[i] * g1[i];
    for (int i = 0; i < N2; i++) ref += (double)g2[i] * g2[i];
    ref = sqrt(ref);
    double norm;
    CHECK_OK(msbnb_params_grad_norm(p, &norm));
    CHECK(fabs(norm - ref) < 1e-9 * ref);
    float gfz0[5];
    memcpy(gfz0, gfz, sizeof gfz);
    /* below the bound: unchanged */
    float g10 = g1[10];
    CHECK_OK(msbnb_params_clip_grad_norm(p, ref * 2, &norm));
    CHECK(g1[10] == g10);
    CHECK_OK(msbnb_params_clip_grad_norm(p, 1.0, &norm));
    CHECK(fabs(norm - ref) < 1e-9 * ref);
    CHECK_OK(msbnb_params_grad_norm(p, &norm));
    CHECKF(fabs(norm - 1.0) < 1e-5, "norm after clip %g", norm);
    CHECK(memcmp(gfz, gfz0, sizeof gfz) == 0); /* frozen grads untouched */
    CHECK_STATUS(msbnb_params_clip_grad_norm(p, 0.0, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_params_clip_grad_norm(p, NAN, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    g2[1] = NAN;
    float g1_5 = g1[5];
    CHECK_STATUS(msbnb_params_clip_grad_norm(p, 0.5, NULL), MSBNB_ERR_NON_FINITE);
    CHECK(g1[5] == g1_5);
    g2[1] = 0;
    CHECK_OK(msbnb_params_zero_grad(p));
    for (int i = 0; i < N1; i++) CHECK(g1[i] == 0.0f);
    CHECK(memcmp(gfz, gfz0, sizeof gfz) == 0);
    msbnb_params_free(p);
    free(w1);
    free(g1);
}

int main(void) {
    RUN_TEST(test_params_add_find_get);
    RUN_TEST(test_freeze_except_lora_and_summary);
    RUN_TEST(test_summary_large_counts);
    RUN_TEST(test_clip_grad_norm);
    return tu_finish();
}
