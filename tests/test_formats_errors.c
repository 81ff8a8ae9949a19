/* Bad input to every public function of the functional API: a status and a message for
 * NULL pointers, zero/negative sizes, size overflow, unsupported block or group sizes,
 * bad dtypes/enums and too-small buffers. Nothing aborts. */
#include "testutil.h"

#include <stdlib.h>

static uint8_t u8[4096];
static int8_t i8[4096];
static float f[4096], g[4096];
static const int64_t BIG = INT64_MAX / 2;

static void test_null_pointers(void) {
    CHECK_STATUS(msbnb_quantize_4bit(NULL, f, f, MSBNB_DTYPE_F32, 64, 64, MSBNB_QTYPE_NF4, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_quantize_4bit(u8, NULL, f, MSBNB_DTYPE_F32, 64, 64, MSBNB_QTYPE_NF4, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_quantize_4bit(u8, f, NULL, MSBNB_DTYPE_F32, 64, 64, MSBNB_QTYPE_NF4, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_dequantize_4bit(NULL, MSBNB_DTYPE_F32, u8, f, 64, 64, MSBNB_QTYPE_NF4, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_dequantize_4bit(f, MSBNB_DTYPE_F32, NULL, f, 64, 64, MSBNB_QTYPE_NF4, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_quantize_blockwise_8bit(u8, f, NULL, MSBNB_DTYPE_F32, 64, 64, NULL, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_dequantize_blockwise_8bit(f, MSBNB_DTYPE_F32, NULL, f, 64, 64, NULL, 1), MSBNB_ERR_INVALID_ARGUMENT);
    float off;
    CHECK_STATUS(msbnb_double_quant_absmax(u8, f, NULL, g, 4), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_double_dequant_absmax(f, NULL, g, 0, 4), MSBNB_ERR_INVALID_ARGUMENT);
    (void)off;
    CHECK_STATUS(msbnb_quantize_8bit(i8, f, NULL, g, 2, 2, 0, 0), MSBNB_ERR_INVALID_ARGUMENT); /* asym needs offset */
    CHECK_STATUS(msbnb_quantize_8bit(NULL, f, NULL, g, 2, 2, 1, 0), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_dequantize_8bit(f, i8, NULL, NULL, 2, 2, 1, 0), MSBNB_ERR_INVALID_ARGUMENT);
    int64_t no;
    CHECK_STATUS(msbnb_int8_vectorwise_quant(i8, NULL, NULL, 0, &no, g, MSBNB_DTYPE_F32, 2, 2, 0), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_int8_vectorwise_quant(i8, f, NULL, 0, NULL, g, MSBNB_DTYPE_F32, 2, 2, 6), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_int8_vectorwise_dequant(f, NULL, g, 2, 2), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_quantize_int4(u8, f, NULL, g, 2, 64, 32, 0), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_dequantize_int4(NULL, u8, f, g, 2, 64, 32, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_pack_4bit(NULL, u8, 4), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_unpack_4bit(u8, NULL, 4), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_convert(NULL, MSBNB_DTYPE_F16, f, MSBNB_DTYPE_F32, 4), MSBNB_ERR_INVALID_ARGUMENT);
    msbnb_error_stats st;
    CHECK_STATUS(msbnb_estimate_quantization_error(&st, NULL, f, 4), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_estimate_quantization_error(NULL, f, f, 4), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_get_quantization_info(NULL, f, 2, 2, 3), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_qparams_validate(NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_dtype_from_name(NULL, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_qtype_from_name("nf4", NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_cpu_tier_from_name(NULL, NULL), MSBNB_ERR_INVALID_ARGUMENT);
}

static void test_zero_and_negative_sizes(void) {
    static const int64_t bad[] = {0, -1, -4096};
    for (int i = 0; i < 3; i++) {
        int64_t n = bad[i];
        CHECK_STATUS(msbnb_quantize_4bit(u8, f, g, MSBNB_DTYPE_F32, n, 64, MSBNB_QTYPE_NF4, 1), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(msbnb_dequantize_4bit(f, MSBNB_DTYPE_F32, u8, g, n, 64, MSBNB_QTYPE_FP4, 1), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(msbnb_quantize_blockwise_8bit(u8, f, g, MSBNB_DTYPE_F32, n, 64, NULL, 1), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(msbnb_double_quant_absmax(u8, f, g, g, n), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(msbnb_quantize_8bit(i8, f, g, g, n, 4, 1, 0), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(msbnb_quantize_8bit(i8, f, g, g, 4, n, 1, 0), MSBNB_ERR_INVALID_ARGUMENT);
        int64_t no;
        CHECK_STATUS(msbnb_int8_vectorwise_quant(i8, f, NULL, 0, &no, g, MSBNB_DTYPE_F32, n, 4, 0), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(msbnb_quantize_int4(u8, f, g, g, 4, n, 32, 1), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(msbnb_int4_sizes(n, 4, 32, NULL, NULL), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(msbnb_pack_4bit(u8, u8, n), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(msbnb_convert(f, MSBNB_DTYPE_F16, g, MSBNB_DTYPE_F32, n), MSBNB_ERR_INVALID_ARGUMENT);
        msbnb_error_stats st;
        CHECK_STATUS(msbnb_estimate_quantization_error(&st, f, g, n), MSBNB_ERR_INVALID_ARGUMENT);
        msbnb_quant_info info;
        CHECK_STATUS(msbnb_get_quantization_info(&info, f, n, 3, 3), MSBNB_ERR_INVALID_ARGUMENT);
        int64_t by;
        msbnb_qparams p = msbnb_qparams_default(MSBNB_QTYPE_NF4);
        CHECK_STATUS(msbnb_qparams_storage(&p, 3, n, &by, NULL), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK(msbnb_nblocks(n, 64) == 0);
    }
}

static void test_size_overflow(void) {
    CHECK_STATUS(msbnb_quantize_4bit(u8, f, g, MSBNB_DTYPE_F32, BIG, 64, MSBNB_QTYPE_NF4, 1), MSBNB_ERR_OVERFLOW);
    CHECK_STATUS(msbnb_quantize_blockwise_8bit(u8, f, g, MSBNB_DTYPE_F32, BIG, 64, NULL, 1), MSBNB_ERR_OVERFLOW);
    CHECK_STATUS(msbnb_quantize_8bit(i8, f, NULL, g, INT64_MAX / 3, 7, 1, 0), MSBNB_ERR_OVERFLOW);
    CHECK_STATUS(msbnb_dequantize_8bit(f, i8, f, NULL, 1LL << 40, 1LL << 40, 1, 0), MSBNB_ERR_OVERFLOW);
    int64_t no;
    CHECK_STATUS(msbnb_int8_vectorwise_quant(i8, f, NULL, 0, &no, g, MSBNB_DTYPE_F32, 1LL << 33, 1LL << 33, 0), MSBNB_ERR_OVERFLOW);
    CHECK_STATUS(msbnb_int4_sizes(1LL << 40, 1LL << 40, 32, NULL, NULL), MSBNB_ERR_OVERFLOW);
    msbnb_qparams p = msbnb_qparams_default(MSBNB_QTYPE_F32);
    int64_t by;
    CHECK_STATUS(msbnb_qparams_storage(&p, 1LL << 40, 1LL << 40, &by, NULL), MSBNB_ERR_OVERFLOW);
    msbnb_quant_info info;
    CHECK_STATUS(msbnb_get_quantization_info(&info, f, 1LL << 40, 1LL << 40, 3), MSBNB_ERR_OVERFLOW);
    CHECK_STATUS(msbnb_convert(f, MSBNB_DTYPE_F16, g, MSBNB_DTYPE_F32, INT64_MAX), MSBNB_ERR_OVERFLOW);
}

static void test_unsupported_block_and_group_sizes(void) {
    static const int64_t bad_bs[] = {16, 48, 100, 8192, 31};
    for (int i = 0; i < 5; i++) {
        CHECK_STATUS(msbnb_quantize_4bit(u8, f, g, MSBNB_DTYPE_F32, 64, bad_bs[i], MSBNB_QTYPE_NF4, 1), MSBNB_ERR_UNSUPPORTED);
        CHECK_STATUS(msbnb_dequantize_4bit(f, MSBNB_DTYPE_F32, u8, g, 64, bad_bs[i], MSBNB_QTYPE_NF4, 1), MSBNB_ERR_UNSUPPORTED);
        CHECK_STATUS(msbnb_quantize_blockwise_8bit(u8, f, g, MSBNB_DTYPE_F32, 64, bad_bs[i], NULL, 1), MSBNB_ERR_UNSUPPORTED);
        msbnb_qparams p = msbnb_qparams_default(MSBNB_QTYPE_NF4);
        p.block = bad_bs[i];
        CHECK_STATUS(msbnb_qparams_validate(&p), MSBNB_ERR_UNSUPPORTED);
    }
    CHECK(strstr(msbnb_last_error(), "power of two") != NULL);
    static const int64_t bad_g[] = {0, 1, 3, 127, -2};
    for (int i = 0; i < 5; i++) {
        CHECK_STATUS(msbnb_quantize_int4(u8, f, g, g, 2, 64, bad_g[i], 1), MSBNB_ERR_UNSUPPORTED);
        msbnb_qparams p = msbnb_qparams_default(MSBNB_QTYPE_INT4);
        p.block = bad_g[i];
        CHECK_STATUS(msbnb_qparams_validate(&p), MSBNB_ERR_UNSUPPORTED);
    }
    /* wrong enum values / dtypes */
    CHECK_STATUS(msbnb_quantize_4bit(u8, f, g, MSBNB_DTYPE_F32, 64, 64, MSBNB_QTYPE_INT8, 1), MSBNB_ERR_UNSUPPORTED);
    CHECK_STATUS(msbnb_quantize_4bit(u8, f, g, MSBNB_DTYPE_I32, 64, 64, MSBNB_QTYPE_NF4, 1), MSBNB_ERR_UNSUPPORTED);
    CHECK_STATUS(msbnb_dequantize_4bit(f, (msbnb_dtype)99, u8, g, 64, 64, MSBNB_QTYPE_NF4, 1), MSBNB_ERR_UNSUPPORTED);
    CHECK_STATUS(msbnb_convert(f, MSBNB_DTYPE_I8, g, MSBNB_DTYPE_F32, 4), MSBNB_ERR_UNSUPPORTED);
    msbnb_qparams p = msbnb_qparams_default(MSBNB_QTYPE_INT8);
    p.double_quant = 1;
    CHECK_STATUS(msbnb_qparams_validate(&p), MSBNB_ERR_UNSUPPORTED);
    p.type = (msbnb_qtype)42;
    CHECK_STATUS(msbnb_qparams_validate(&p), MSBNB_ERR_INVALID_ARGUMENT);
    msbnb_qtype qt;
    CHECK_STATUS(msbnb_qtype_from_name("nf5", &qt), MSBNB_ERR_UNSUPPORTED);
    msbnb_dtype dt;
    CHECK_STATUS(msbnb_dtype_from_name("F8_E4M3", &dt), MSBNB_ERR_UNSUPPORTED);
    msbnb_cpu_tier tier;
    CHECK_STATUS(msbnb_cpu_tier_from_name("sse9", &tier), MSBNB_ERR_INVALID_ARGUMENT);
    int64_t no;
    CHECK_STATUS(msbnb_int8_vectorwise_quant(i8, f, NULL, 0, &no, g, MSBNB_DTYPE_F32, 2, 2, -1.0f), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_int8_vectorwise_quant(i8, f, NULL, 0, &no, g, MSBNB_DTYPE_F32, 2, 2, NAN), MSBNB_ERR_INVALID_ARGUMENT);
}

static void test_buffer_too_small(void) {
    /* three outlier columns but room for one: the count is still reported */
    float a[2 * 8] = {0};
    a[1] = 10; a[4] = -9; a[8 + 6] = 7;
    int64_t cols[1], n = 0;
    CHECK_STATUS(msbnb_int8_vectorwise_quant(i8, f, cols, 1, &n, a, MSBNB_DTYPE_F32, 2, 8, 6.0f), MSBNB_ERR_BUFFER_TOO_SMALL);
    CHECK(n == 3 && cols[0] == 1);
    int64_t cols3[3];
    CHECK_OK(msbnb_int8_vectorwise_quant(i8, f, cols3, 3, &n, a, MSBNB_DTYPE_F32, 2, 8, 6.0f));
    CHECK(n == 3 && cols3[0] == 1 && cols3[1] == 4 && cols3[2] == 6);
    CHECK(i8[1] == 0 && i8[4] == 0 && i8[8 + 6] == 0);
}

/* The classes above, for the arguments and functions the first tests leave out: every
 * pointer argument of the blockwise and integer formats, overflow of each size, the
 * block/group checks of every dequantizer, and negative capacities. */
static void test_every_argument_checked(void) {
    float off = 0;
    /* NULL in each position */
    CHECK_STATUS(msbnb_dequantize_4bit(f, MSBNB_DTYPE_F32, u8, NULL, 64, 64, MSBNB_QTYPE_NF4, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_quantize_blockwise_8bit(NULL, f, g, MSBNB_DTYPE_F32, 64, 64, NULL, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_quantize_blockwise_8bit(u8, NULL, g, MSBNB_DTYPE_F32, 64, 64, NULL, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_dequantize_blockwise_8bit(NULL, MSBNB_DTYPE_F32, u8, f, 64, 64, NULL, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_dequantize_blockwise_8bit(f, MSBNB_DTYPE_F32, u8, NULL, 64, 64, NULL, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_double_quant_absmax(NULL, f, &off, g, 4), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_double_quant_absmax(u8, NULL, &off, g, 4), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_double_quant_absmax(u8, f, &off, NULL, 4), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_double_dequant_absmax(NULL, u8, g, 0, 4), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_double_dequant_absmax(f, u8, NULL, 0, 4), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_quantize_8bit(i8, NULL, f, g, 2, 2, 1, 0), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_quantize_8bit(i8, f, f, NULL, 2, 2, 1, 0), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_dequantize_8bit(NULL, i8, f, f, 2, 2, 1, 0), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_dequantize_8bit(f, NULL, f, f, 2, 2, 1, 0), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_dequantize_8bit(f, i8, f, NULL, 2, 2, 0, 0), MSBNB_ERR_INVALID_ARGUMENT); /* asym needs offset */
    int64_t no, oc[4];
    CHECK_STATUS(msbnb_int8_vectorwise_quant(NULL, f, NULL, 0, &no, g, MSBNB_DTYPE_F32, 2, 2, 0), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_int8_vectorwise_quant(i8, f, NULL, 0, &no, NULL, MSBNB_DTYPE_F32, 2, 2, 0), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_int8_vectorwise_quant(i8, f, NULL, 4, &no, g, MSBNB_DTYPE_F32, 2, 2, 6), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_int8_vectorwise_dequant(NULL, i8, g, 2, 2), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_int8_vectorwise_dequant(f, i8, NULL, 2, 2), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_quantize_int4(NULL, f, g, g, 2, 64, 32, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_quantize_int4(u8, NULL, g, g, 2, 64, 32, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_quantize_int4(u8, f, g, NULL, 2, 64, 32, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_dequantize_int4(f, NULL, f, g, 2, 64, 32, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_dequantize_int4(f, u8, NULL, g, 2, 64, 32, 1), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_dequantize_int4(f, u8, f, NULL, 2, 64, 32, 0), MSBNB_ERR_INVALID_ARGUMENT); /* asym needs mins */
    CHECK_STATUS(msbnb_pack_4bit(u8, NULL, 4), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_unpack_4bit(NULL, u8, 4), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_convert(f, MSBNB_DTYPE_F16, NULL, MSBNB_DTYPE_F32, 4), MSBNB_ERR_INVALID_ARGUMENT);
    msbnb_error_stats st;
    CHECK_STATUS(msbnb_estimate_quantization_error(&st, f, NULL, 4), MSBNB_ERR_INVALID_ARGUMENT);
    msbnb_quant_info info;
    CHECK_STATUS(msbnb_get_quantization_info(&info, NULL, 2, 2, 3), MSBNB_ERR_INVALID_ARGUMENT);
    int64_t by;
    CHECK_STATUS(msbnb_qparams_storage(NULL, 2, 2, &by, NULL), MSBNB_ERR_INVALID_ARGUMENT);
    msbnb_dtype dt;
    CHECK_STATUS(msbnb_dtype_from_name("F32", NULL), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_dtype_from_name(NULL, &dt), MSBNB_ERR_INVALID_ARGUMENT);
    msbnb_qtype qt;
    CHECK_STATUS(msbnb_qtype_from_name(NULL, &qt), MSBNB_ERR_INVALID_ARGUMENT);
    /* zero / negative sizes of the dequantizers and the other helpers */
    static const int64_t bad[] = {0, -1, INT64_MIN};
    for (int i = 0; i < 3; i++) {
        int64_t n = bad[i];
        CHECK_STATUS(msbnb_dequantize_blockwise_8bit(f, MSBNB_DTYPE_F32, u8, g, n, 64, NULL, 1), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(msbnb_double_dequant_absmax(f, u8, g, 0, n), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(msbnb_dequantize_8bit(f, i8, f, f, n, 2, 1, 0), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(msbnb_dequantize_8bit(f, i8, f, f, 2, n, 1, 1), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(msbnb_int8_vectorwise_quant(i8, f, NULL, 0, &no, g, MSBNB_DTYPE_F32, 4, n, 0), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(msbnb_int8_vectorwise_dequant(f, i8, g, n, 2), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(msbnb_quantize_int4(u8, f, g, g, n, 64, 32, 1), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(msbnb_dequantize_int4(f, u8, f, g, 2, n, 32, 1), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(msbnb_int4_sizes(4, n, 32, NULL, NULL), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(msbnb_unpack_4bit(u8, u8, n), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(msbnb_get_quantization_info(&info, f, 3, n, 3), MSBNB_ERR_INVALID_ARGUMENT);
        msbnb_qparams p = msbnb_qparams_default(MSBNB_QTYPE_INT8);
        CHECK_STATUS(msbnb_qparams_storage(&p, n, 3, &by, NULL), MSBNB_ERR_INVALID_ARGUMENT);
        CHECK(msbnb_nblocks(64, n) == 0);
    }
    /* size arithmetic that would overflow, for every function taking a size */
    CHECK_STATUS(msbnb_dequantize_4bit(f, MSBNB_DTYPE_F32, u8, g, BIG, 64, MSBNB_QTYPE_NF4, 1), MSBNB_ERR_OVERFLOW);
    CHECK_STATUS(msbnb_dequantize_blockwise_8bit(f, MSBNB_DTYPE_F32, u8, g, BIG, 64, NULL, 1), MSBNB_ERR_OVERFLOW);
    CHECK_STATUS(msbnb_double_quant_absmax(u8, f, &off, g, BIG), MSBNB_ERR_OVERFLOW);
    CHECK_STATUS(msbnb_double_dequant_absmax(f, u8, g, 0, BIG), MSBNB_ERR_OVERFLOW);
    CHECK_STATUS(msbnb_quantize_8bit(i8, f, f, g, 1LL << 40, 1LL << 40, 0, 1), MSBNB_ERR_OVERFLOW);
    CHECK_STATUS(msbnb_int8_vectorwise_dequant(f, i8, g, 1LL << 32, 1LL << 32), MSBNB_ERR_OVERFLOW);
    CHECK_STATUS(msbnb_quantize_int4(u8, f, g, g, 1LL << 40, 1LL << 40, 32, 1), MSBNB_ERR_OVERFLOW);
    CHECK_STATUS(msbnb_dequantize_int4(f, u8, f, g, 1LL << 40, 1LL << 40, 32, 1), MSBNB_ERR_OVERFLOW);
    CHECK_STATUS(msbnb_int4_sizes(INT64_MAX, 2, 2, NULL, NULL), MSBNB_ERR_OVERFLOW);
    CHECK_STATUS(msbnb_estimate_quantization_error(&st, f, g, BIG), MSBNB_ERR_OVERFLOW);
    CHECK_STATUS(msbnb_convert(f, MSBNB_DTYPE_BF16, g, MSBNB_DTYPE_F16, INT64_MAX / 2), MSBNB_ERR_OVERFLOW);
    msbnb_qparams p4 = msbnb_qparams_default(MSBNB_QTYPE_NF4);
    p4.double_quant = 1;
    CHECK_STATUS(msbnb_qparams_storage(&p4, INT64_MAX, 2, &by, NULL), MSBNB_ERR_OVERFLOW);
    /* block and group sizes the dequantizers and the size queries refuse */
    static const int64_t bad_bs[] = {0, 16, 96, 8192};
    for (int i = 0; i < 4; i++) {
        CHECK_STATUS(msbnb_dequantize_blockwise_8bit(f, MSBNB_DTYPE_F32, u8, g, 64, bad_bs[i], NULL, 1), MSBNB_ERR_UNSUPPORTED);
        CHECK_STATUS(msbnb_quantize_4bit(u8, f, g, MSBNB_DTYPE_F32, 64, bad_bs[i], MSBNB_QTYPE_FP4, 1), MSBNB_ERR_UNSUPPORTED);
        msbnb_qparams p = msbnb_qparams_default(MSBNB_QTYPE_Q8_DYNAMIC);
        p.block = bad_bs[i];
        CHECK_STATUS(msbnb_qparams_validate(&p), MSBNB_ERR_UNSUPPORTED);
        CHECK_STATUS(msbnb_qparams_storage(&p, 2, 64, &by, NULL), MSBNB_ERR_UNSUPPORTED);
    }
    static const int64_t bad_g[] = {0, 1, 5, -64};
    for (int i = 0; i < 4; i++) {
        CHECK_STATUS(msbnb_dequantize_int4(f, u8, f, g, 2, 64, bad_g[i], 1), MSBNB_ERR_UNSUPPORTED);
        CHECK_STATUS(msbnb_int4_sizes(2, 64, bad_g[i], NULL, NULL), MSBNB_ERR_UNSUPPORTED);
    }
    CHECK_STATUS(msbnb_dequantize_4bit(f, MSBNB_DTYPE_F32, u8, g, 64, 64, MSBNB_QTYPE_Q8_DYNAMIC, 1), MSBNB_ERR_UNSUPPORTED);
    CHECK_STATUS(msbnb_quantize_blockwise_8bit(u8, f, g, MSBNB_DTYPE_U8, 64, 64, NULL, 1), MSBNB_ERR_UNSUPPORTED);
    CHECK_STATUS(msbnb_dequantize_blockwise_8bit(f, MSBNB_DTYPE_I32, u8, g, 64, 64, NULL, 1), MSBNB_ERR_UNSUPPORTED);
    CHECK_STATUS(msbnb_int8_vectorwise_quant(i8, f, NULL, 0, &no, g, MSBNB_DTYPE_F64, 2, 2, 0), MSBNB_ERR_UNSUPPORTED);
    CHECK_STATUS(msbnb_convert(f, MSBNB_DTYPE_F32, g, (msbnb_dtype)-1, 4), MSBNB_ERR_UNSUPPORTED);
    /* capacities: a negative one is refused; zero is a full buffer when outliers exist */
    float a[4] = {0, 9, 0, 1};
    CHECK_STATUS(msbnb_int8_vectorwise_quant(i8, f, oc, -1, &no, a, MSBNB_DTYPE_F32, 2, 2, 6.0f), MSBNB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(msbnb_int8_vectorwise_quant(i8, f, NULL, 0, &no, a, MSBNB_DTYPE_F32, 2, 2, 6.0f), MSBNB_ERR_BUFFER_TOO_SMALL);
    CHECK(no == 1);
    CHECK_STATUS(msbnb_int8_vectorwise_quant(i8, f, oc, 1, &no, a, MSBNB_DTYPE_F32, 2, 2, 6.0f), MSBNB_OK);
    CHECK(no == 1 && oc[0] == 1);
}

/* The format functions with a forced tier: a valid one computes, an unknown or
 * unsupported one is the call's error (never a silent fallback to another tier). */
static void check_format_calls(msbnb_status want) {
    float x[70], back[70];
    uint8_t packed[35], q8[70];
    float absmax[2], scale[8], off[8];
    int8_t c8[70];
    uint16_t h[70];
    for (int i = 0; i < 70; i++) x[i] = (float)(i % 7) - 3.0f;
    CHECK_STATUS(msbnb_quantize_4bit(packed, absmax, x, MSBNB_DTYPE_F32, 70, 64, MSBNB_QTYPE_NF4, 1), want);
    if (want == MSBNB_OK) {
        CHECK_OK(msbnb_dequantize_4bit(back, MSBNB_DTYPE_F32, packed, absmax, 70, 64, MSBNB_QTYPE_NF4, 1));
        CHECK(back[3] == 0.0f && back[6] == 3.0f); /* 0 and the block's absmax are exact in NF4 */
    } else {
        CHECK_STATUS(msbnb_dequantize_4bit(back, MSBNB_DTYPE_F32, packed, absmax, 70, 64,
                                           MSBNB_QTYPE_NF4, 1), want);
    }
    CHECK_STATUS(msbnb_quantize_blockwise_8bit(q8, absmax, x, MSBNB_DTYPE_F32, 70, 64, NULL, 1), want);
    CHECK_STATUS(msbnb_convert(h, MSBNB_DTYPE_BF16, x, MSBNB_DTYPE_F32, 70), want);
    CHECK_STATUS(msbnb_quantize_8bit(c8, scale, off, x, 2, 35, 1, 0), want);
    CHECK_STATUS(msbnb_quantize_int4(packed, scale, off, x, 5, 14, 14, 0), want);
    CHECK_STATUS(msbnb_int8_vectorwise_quant(c8, scale, NULL, 0, NULL, x, MSBNB_DTYPE_F32, 2, 35, 0.0f),
                 want);
}

static void test_cpu_env_override(void) {
    msbnb_cpu_tier t;
    setenv("MSBNB_CPU", "avx9000", 1);
    CHECK_STATUS(msbnb_cpu_check_env(&t), MSBNB_ERR_INVALID_ARGUMENT);
    check_format_calls(MSBNB_ERR_INVALID_ARGUMENT);
    CHECK(strstr(msbnb_last_error(), "avx9000") != NULL);
    setenv("MSBNB_CPU", "scalar", 1);
    CHECK_OK(msbnb_cpu_check_env(&t));
    CHECK(t == MSBNB_CPU_SCALAR);
    check_format_calls(MSBNB_OK);
    for (int tier = MSBNB_CPU_AVX2; tier <= MSBNB_CPU_AVX512; tier++) {
        setenv("MSBNB_CPU", msbnb_cpu_tier_name((msbnb_cpu_tier)tier), 1);
        if (msbnb_cpu_tier_supported((msbnb_cpu_tier)tier)) {
            CHECK_OK(msbnb_cpu_check_env(&t));
            check_format_calls(MSBNB_OK);
        } else { /* e.g. avx512 on an AVX2-only CPU */
            CHECK_STATUS(msbnb_cpu_check_env(&t), MSBNB_ERR_UNSUPPORTED);
            check_format_calls(MSBNB_ERR_UNSUPPORTED);
            CHECK(strstr(msbnb_last_error(), msbnb_cpu_tier_name((msbnb_cpu_tier)tier)) != NULL);
        }
    }
    unsetenv("MSBNB_CPU");
    check_format_calls(MSBNB_OK);
    CHECK_OK(msbnb_cpu_check_env(&t));
    CHECK(t == msbnb_cpu_tier_best());
    CHECK(strcmp(msbnb_status_str(MSBNB_ERR_OVERFLOW), "MSBNB_ERR_OVERFLOW") == 0);
    CHECK(strcmp(msbnb_status_str((msbnb_status)999), "MSBNB_ERR_UNKNOWN") == 0);
}

int main(void) {
    RUN_TEST(test_null_pointers);
    RUN_TEST(test_zero_and_negative_sizes);
    RUN_TEST(test_size_overflow);
    RUN_TEST(test_unsupported_block_and_group_sizes);
    RUN_TEST(test_buffer_too_small);
    RUN_TEST(test_every_argument_checked);
    RUN_TEST(test_cpu_env_override);
    return tu_finish();
}
