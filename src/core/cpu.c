/* CPU feature detection: cpuid + XGETBV (the OS must have enabled the YMM/ZMM state, not
 * only the CPU support it — Intel SDM vol. 1 §13.3). Filled once with pthread_once: the
 * library's only global state. */
#include "internal.h"

#include <cpuid.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static msbnb__cpu_features g_cpu;
static pthread_once_t g_cpu_once = PTHREAD_ONCE_INIT;

static uint64_t xgetbv0(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

static void detect(void) {
    unsigned a, b, c, d;
    memset(&g_cpu, 0, sizeof g_cpu);
    /* read once: glibc answers _SC_NPROCESSORS_ONLN by opening and reading
     * /sys/devices/system/cpu/online, three system calls (~6 us on a VM) that every forward
     * with the default thread count paid before */
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    g_cpu.ncpu = n > 0 && n <= 4096 ? (int)n : 1;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return;
    g_cpu.amd = b == 0x68747541 && d == 0x69746e65 && c == 0x444d4163; /* "Auth" "enti" "cAMD" */
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    bool osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    bool fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return;
    uint64_t xcr0 = xgetbv0();
    bool ymm_os = (xcr0 & 0x6) == 0x6;          /* SSE + AVX state */
    bool zmm_os = (xcr0 & 0xe6) == 0xe6;        /* + opmask, ZMM_Hi256, Hi16_ZMM */
    if (!ymm_os) return;
    unsigned max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    g_cpu.fma = fma;
    g_cpu.f16c = f16c;
    g_cpu.avx2 = (b >> 5) & 1;
    if (zmm_os) {
        g_cpu.avx512f = (b >> 16) & 1;
        g_cpu.avx512dq = (b >> 17) & 1;
        g_cpu.avx512bw = (b >> 30) & 1;
        g_cpu.avx512vl = (b >> 31) & 1;
        g_cpu.avx512vnni = (c >> 11) & 1;
    }
    unsigned a1, b1, c1, d1;
    __cpuid_count(7, 1, a1, b1, c1, d1);
    g_cpu.avxvnni = (a1 >> 4) & 1;
    if (zmm_os) g_cpu.avx512bf16 = (a1 >> 5) & 1;
}

const msbnb__cpu_features *msbnb__cpu(void) {
    pthread_once(&g_cpu_once, detect);
    return &g_cpu;
}

int msbnb_cpu_tier_supported(msbnb_cpu_tier t) {
    const msbnb__cpu_features *f = msbnb__cpu();
    switch (t) {
    case MSBNB_CPU_SCALAR: return 1;
    case MSBNB_CPU_AVX2: return f->avx2 && f->fma && f->f16c;
    case MSBNB_CPU_AVX512:
        return f->avx2 && f->fma && f->f16c && f->avx512f && f->avx512bw && f->avx512dq &&
               f->avx512vl;
    }
    return 0;
}

msbnb_cpu_tier msbnb_cpu_tier_best(void) {
    if (msbnb_cpu_tier_supported(MSBNB_CPU_AVX512)) return MSBNB_CPU_AVX512;
    if (msbnb_cpu_tier_supported(MSBNB_CPU_AVX2)) return MSBNB_CPU_AVX2;
    return MSBNB_CPU_SCALAR;
}

const char *msbnb_cpu_tier_name(msbnb_cpu_tier t) {
    switch (t) {
    case MSBNB_CPU_SCALAR: return "scalar";
    case MSBNB_CPU_AVX2: return "avx2";
    case MSBNB_CPU_AVX512: return "avx512";
    }
    return "unknown";
}

msbnb_status msbnb_cpu_tier_from_name(const char *name, msbnb_cpu_tier *tier) {
    MSBNB_CHECK_NULL(name);
    MSBNB_CHECK_NULL(tier);
    for (int t = MSBNB_CPU_SCALAR; t <= MSBNB_CPU_AVX512; t++) {
        if (strcmp(name, msbnb_cpu_tier_name((msbnb_cpu_tier)t)) == 0) {
            *tier = (msbnb_cpu_tier)t;
            return MSBNB_OK;
        }
    }
    return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT,
                       "unknown CPU tier '%.32s' (expected scalar, avx2 or avx512)", name);
}

msbnb_status msbnb_cpu_check_env(msbnb_cpu_tier *tier) {
    MSBNB_CHECK_NULL(tier);
    *tier = msbnb_cpu_tier_best();
    const char *env = getenv("MSBNB_CPU");
    if (env == NULL || env[0] == '\0') return MSBNB_OK;
    msbnb_cpu_tier t;
    MSBNB_TRY(msbnb_cpu_tier_from_name(env, &t));
    if (!msbnb_cpu_tier_supported(t))
        return msbnb__fail(MSBNB_ERR_UNSUPPORTED, "MSBNB_CPU=%s: this CPU does not support it",
                           env);
    *tier = t;
    return MSBNB_OK;
}

int msbnb__i16_decode_perm(void) {
    const char *e = getenv("MSBNB_CPU_I16_DECODE");
    if (e && strcmp(e, "perm") == 0) return 1;
    if (e && strcmp(e, "shuf") == 0) return 0;
    return msbnb__cpu()->amd;
}

int msbnb__i16_dq_inline(void) {
    const char *e = getenv("MSBNB_CPU_DQ_SCALES");
    if (e && strcmp(e, "f32") == 0) return 0;
    return e && strcmp(e, "u8") == 0 ? 2 : 1;
}

int msbnb_default_threads(void) {
    const char *env = getenv("MSBNB_THREADS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end == '\0' && v > 0 && v <= 4096) return (int)v;
    }
    return msbnb__cpu()->ncpu;
}
