/* Quantization configs: BitsAndBytesConfig defaults, module selection rules, and the
 * config.json quantization_config block read from transformers' files and written back. */
#include "io_testutil.h"

static void test_defaults_follow_bitsandbytes_config(void) {
    msbnb_qconfig c = msbnb_int4_config_default(MSBNB_QTYPE_NF4);
    CHECK(c.format.type == MSBNB_QTYPE_NF4 && c.format.block == 64 && c.skip_lm_head == 1);
    CHECK(c.compute_dtype == MSBNB_DTYPE_F32);
    CHECK_OK(msbnb_qconfig_validate(&c));
    c = msbnb_int4_config_default(MSBNB_QTYPE_FP4);
    CHECK(c.format.type == MSBNB_QTYPE_FP4 && c.format.block == 64 && !c.format.double_quant);
    c = msbnb_int4_config_default(MSBNB_QTYPE_INT4);
    CHECK(c.format.type == MSBNB_QTYPE_INT4 && c.format.block == 128 && c.format.symmetric);
    CHECK_OK(msbnb_qconfig_validate(&c));
    c = msbnb_int8_config_default();
    CHECK(c.format.type == MSBNB_QTYPE_INT8 && c.format.symmetric && c.llm_int8_threshold == 6.0f);
    CHECK_OK(msbnb_qconfig_validate(&c));
    /* invalid configs */
    c = msbnb_int4_config_default(MSBNB_QTYPE_Q8_DYNAMIC);
    CHECK(msbnb_qconfig_validate(&c) != MSBNB_OK);
    c = msbnb_int4_config_default(MSBNB_QTYPE_NF4);
    c.format.block = 48;
    CHECK(msbnb_qconfig_validate(&c) != MSBNB_OK);
    c = msbnb_int4_config_default(MSBNB_QTYPE_INT4);
    c.format.block = 7;
    CHECK(msbnb_qconfig_validate(&c) != MSBNB_OK);
    c = msbnb_int8_config_default();
    c.format.per_tensor = 1; /* symmetric per-tensor is not LLM.int8 */
    CHECK(msbnb_qconfig_validate(&c) != MSBNB_OK);
    c = msbnb_int8_config_default();
    c.llm_int8_threshold = -1;
    CHECK(msbnb_qconfig_validate(&c) != MSBNB_OK);
    CHECK_STATUS(msbnb_qconfig_validate(NULL), MSBNB_ERR_INVALID_ARGUMENT);
}

static void test_patterns(void) {
    CHECK(msbnb_module_matches("lm_head", "lm_head"));
    CHECK(msbnb_module_matches("self_attn", "model.layers.0.self_attn.q_proj"));
    CHECK(msbnb_module_matches("layers.1", "model.layers.1.mlp.up_proj"));
    CHECK(!msbnb_module_matches("layers.1", "model.layers.10.mlp.up_proj"));
    CHECK(!msbnb_module_matches("proj", "model.layers.0.self_attn.q_proj"));
    CHECK(msbnb_module_matches("*.q_proj", "model.layers.0.self_attn.q_proj"));
    CHECK(msbnb_module_matches("model.layers.[01].mlp.*", "model.layers.0.mlp.down_proj"));
    CHECK(!msbnb_module_matches("model.layers.[01].mlp.*", "model.layers.2.mlp.down_proj"));
    CHECK(!msbnb_module_matches("", "x") && !msbnb_module_matches(NULL, "x"));
    msbnb_qconfig c = msbnb_int4_config_default(MSBNB_QTYPE_NF4);
    int64_t s2[2] = {64, 128}, s1[1] = {128};
    CHECK(msbnb_qconfig_selects(&c, "model.layers.0.self_attn.q_proj.weight", MSBNB_DTYPE_F32, s2, 2));
    CHECK(msbnb_qconfig_selects(&c, "model.layers.0.mlp.up_proj.weight", MSBNB_DTYPE_BF16, s2, 2));
    CHECK(!msbnb_qconfig_selects(&c, "lm_head.weight", MSBNB_DTYPE_F32, s2, 2));
    CHECK(!msbnb_qconfig_selects(&c, "model.embed_tokens.weight", MSBNB_DTYPE_F32, s2, 2));
    CHECK(!msbnb_qconfig_selects(&c, "model.norm.weight", MSBNB_DTYPE_F32, s1, 1));
    CHECK(!msbnb_qconfig_selects(&c, "model.layers.0.input_layernorm.weight", MSBNB_DTYPE_F32, s2, 2));
    CHECK(!msbnb_qconfig_selects(&c, "model.layers.0.mlp.up_proj.bias", MSBNB_DTYPE_F32, s2, 2));
    CHECK(!msbnb_qconfig_selects(&c, "model.layers.0.mlp.up_proj.weight", MSBNB_DTYPE_I8, s2, 2));
    CHECK(!msbnb_qconfig_selects(&c, "transformer.wte.weight", MSBNB_DTYPE_F32, s2, 2));
    c.skip_lm_head = 0;
    CHECK(msbnb_qconfig_selects(&c, "lm_head.weight", MSBNB_DTYPE_F32, s2, 2));
    CHECK_OK(msbnb_qconfig_add_target(&c, "self_attn"));
    CHECK_OK(msbnb_qconfig_add_skip(&c, "k_proj"));
    CHECK(msbnb_qconfig_selects(&c, "model.layers.0.self_attn.q_proj.weight", MSBNB_DTYPE_F32, s2, 2));
    CHECK(!msbnb_qconfig_selects(&c, "model.layers.0.self_attn.k_proj.weight", MSBNB_DTYPE_F32, s2, 2));
    CHECK(!msbnb_qconfig_selects(&c, "model.layers.0.mlp.up_proj.weight", MSBNB_DTYPE_F32, s2, 2));
    /* pattern limits */
    CHECK(msbnb_qconfig_add_skip(&c, "") != MSBNB_OK);
    char longp[MSBNB_QCONFIG_PATTERN_LEN + 8];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    CHECK(msbnb_qconfig_add_skip(&c, longp) != MSBNB_OK);
    for (int i = c.n_skip; i < MSBNB_QCONFIG_MAX_PATTERNS; i++) CHECK_OK(msbnb_qconfig_add_skip(&c, "x"));
    CHECK(msbnb_qconfig_add_skip(&c, "x") != MSBNB_OK);
}

static void read_config(const char *rel, msbnb_qconfig *c) {
    size_t n = 0;
    char *t = io_read_file(tu_data_path(rel), &n);
    CHECK(t != NULL);
    if (t) CHECK_OK(msbnb_qconfig_from_json(c, t, n));
    free(t);
}

static void test_reads_transformers_configs(void) {
    msbnb_qconfig c;
    read_config("tiny-llama/nf4dq/config.json", &c);
    CHECK(c.format.type == MSBNB_QTYPE_NF4 && c.format.double_quant == 1 && c.format.block == 64);
    CHECK(c.compute_dtype == MSBNB_DTYPE_F32 && c.n_skip == 0);
    read_config("tiny-llama/fp4/config.json", &c);
    CHECK(c.format.type == MSBNB_QTYPE_FP4 && c.format.double_quant == 0);
    read_config("tiny-llama/int8/config.json", &c);
    CHECK(c.format.type == MSBNB_QTYPE_INT8 && c.format.symmetric && c.llm_int8_threshold == 6.0f);
    msbnb_qconfig d;
    const char *nq = "{\"model_type\": \"llama\"}", *gptq = "{\"quantization_config\": {\"quant_method\": \"gptq\"}}";
    CHECK_STATUS(msbnb_qconfig_from_json(&d, nq, strlen(nq)), MSBNB_ERR_NOT_FOUND);
    CHECK_STATUS(msbnb_qconfig_from_json(&d, gptq, strlen(gptq)), MSBNB_ERR_UNSUPPORTED);
    const char *bad[] = {"{", "[]", "{\"quantization_config\": 3}",
                         "{\"load_in_4bit\": true, \"load_in_8bit\": true}",
                         "{\"load_in_4bit\": true, \"bnb_4bit_quant_type\": \"nf3\"}",
                         "{\"load_in_4bit\": true, \"bnb_4bit_compute_dtype\": \"int8\"}",
                         "{\"load_in_8bit\": true, \"llm_int8_skip_modules\": [1]}",
                         "{\"quant_method\": \"msbnb\", \"quant_type\": \"int4\", \"group_size\": 7}",
                         "{\"quant_method\": \"msbnb\", \"quant_type\": \"int4\", \"group_size\": -2}",
                         "{\"load_in_8bit\": true, \"llm_int8_threshold\": 1e300}",
                         "{\"quant_method\": \"msbnb\", \"quant_type\": \"int4\", \"group_size\": 32.5}",
                         "{\"load_in_8bit\": true, \"llm_int8_threshold\": -1}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECKF(msbnb_qconfig_from_json(&d, bad[i], strlen(bad[i])) == MSBNB_ERR_FORMAT, "%s", bad[i]);
    CHECK_STATUS(msbnb_qconfig_from_json(NULL, "{}", 2), MSBNB_ERR_INVALID_ARGUMENT);
}

static void test_json_round_trip(void) {
    msbnb_qconfig cs[6];
    cs[0] = msbnb_int4_config_default(MSBNB_QTYPE_NF4);
    cs[1] = msbnb_int4_config_default(MSBNB_QTYPE_FP4);
    cs[1].compute_dtype = MSBNB_DTYPE_BF16;
    cs[2] = msbnb_int8_config_default();
    cs[2].llm_int8_threshold = 4.5f;
    cs[3] = msbnb_int4_config_default(MSBNB_QTYPE_INT4);
    cs[3].format.block = 32;
    cs[3].format.symmetric = 0;
    cs[4] = msbnb_int8_config_default();
    cs[4].format.symmetric = 0;
    cs[4].format.per_tensor = 1;
    cs[5] = msbnb_int4_config_default(MSBNB_QTYPE_NF4);
    CHECK_OK(msbnb_qconfig_add_skip(&cs[5], "mlp.down_proj"));
    CHECK_OK(msbnb_qconfig_add_skip(&cs[5], "quote\"d"));
    for (int i = 0; i < 6; i++) {
        char buf[2048];
        size_t len = 0;
        CHECK_OK(msbnb_qconfig_to_json(&cs[i], buf, sizeof buf, &len));
        CHECK(len == strlen(buf));
        msbnb_qconfig back;
        msbnb_status st = msbnb_qconfig_from_json(&back, buf, len);
        CHECKF(st == MSBNB_OK, "%d: %s (%s)", i, buf, msbnb_last_error());
        CHECK(back.format.type == cs[i].format.type && back.format.block == cs[i].format.block);
        CHECK(back.format.symmetric == cs[i].format.symmetric);
        CHECK(back.format.double_quant == cs[i].format.double_quant);
        CHECK(back.format.per_tensor == cs[i].format.per_tensor);
        CHECK(back.compute_dtype == cs[i].compute_dtype && back.n_skip == cs[i].n_skip);
        CHECK(back.llm_int8_threshold == cs[i].llm_int8_threshold);
        for (int k = 0; k < back.n_skip; k++) CHECK(strcmp(back.skip[k], cs[i].skip[k]) == 0);
        /* too small a buffer reports the size */
        size_t need = 0;
        CHECK_STATUS(msbnb_qconfig_to_json(&cs[i], buf, 10, &need), MSBNB_ERR_BUFFER_TOO_SMALL);
        CHECK(need == len);
    }
    /* thresholds at the bound: the double 1e30 (and a longer spelling of it) becomes the
     * float 1.0000000150474662e30, which must read back (fuzz_qconfig found this) */
    static const char *edge[] = {
        "{\"quantization_config\": {\"load_in_4bit\": true, \"llm_int8_threshold\": 1e30}}",
        "{\"quantization_config\": {\"load_in_4bit\": true, \"llm_int8_threshold\": "
        "0001000000000000000000000000000001742850041}}",
    };
    for (int i = 0; i < 2; i++) {
        msbnb_qconfig e, back;
        if (msbnb_qconfig_from_json(&e, edge[i], strlen(edge[i])) != MSBNB_OK) continue; /* a rejection is fine */
        char ebuf[2048];
        size_t elen = 0;
        CHECK_OK(msbnb_qconfig_to_json(&e, ebuf, sizeof ebuf, &elen));
        CHECKF(msbnb_qconfig_from_json(&back, ebuf, elen) == MSBNB_OK, "edge %d: own output %s rejected: %s", i,
               ebuf, msbnb_last_error());
        CHECK(back.llm_int8_threshold == e.llm_int8_threshold);
    }
    const char *over = "{\"quantization_config\": {\"load_in_4bit\": true, \"llm_int8_threshold\": 1.1e30}}";
    msbnb_qconfig o;
    CHECK_STATUS(msbnb_qconfig_from_json(&o, over, strlen(over)), MSBNB_ERR_FORMAT);
    /* bitsandbytes' block is the one transformers writes (nf4dq folder, keys sorted) */
    char buf[2048];
    size_t len = 0;
    msbnb_qconfig c = msbnb_int4_config_default(MSBNB_QTYPE_NF4);
    CHECK_OK(msbnb_qconfig_to_json(&c, buf, sizeof buf, &len));
    CHECK(strstr(buf, "\"bnb_4bit_quant_type\": \"nf4\"") && strstr(buf, "\"quant_method\": \"bitsandbytes\"") &&
          strstr(buf, "\"llm_int8_threshold\": 6.0"));
}

int main(void) {
    RUN_TEST(test_defaults_follow_bitsandbytes_config);
    RUN_TEST(test_patterns);
    RUN_TEST(test_reads_transformers_configs);
    RUN_TEST(test_json_round_trip);
    return tu_finish();
}
