// Probe of the GPU's approximate reciprocal (PTX rcp.approx.ftz.f32, what
// `1.0f / x` compiles to under nvcc --use_fast_math, as bitsandbytes is built) against the
// correctly rounded reciprocal, for every float mantissa. Writes the mantissas where the two
// differ with the difference in ulps, so the CPU path can reproduce bitsandbytes bit for bit.
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <vector>

__device__ __forceinline__ float rcp_approx(float x) { float r; asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x)); return r; }
__device__ __forceinline__ float div_approx(float a, float b) { float r; asm("div.approx.ftz.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }

__global__ void probe(int8_t *delta, int *div_mismatch, int *exp_mismatch, int exp_shift) {
    uint32_t m = blockIdx.x * blockDim.x + threadIdx.x;
    if (m >= (1u << 23)) return;
    float x = __uint_as_float(0x3f800000u | m);
    float ra = rcp_approx(x), rn = __frcp_rn(x);
    int d = (int)__float_as_uint(ra) - (int)__float_as_uint(rn);
    delta[m] = (int8_t)d;
    // div.approx(127, x) == RN(127 * rcp.approx(x)) ?
    if (div_approx(127.0f, x) != __fmul_rn(127.0f, ra)) atomicAdd(div_mismatch, 1);
    // exponent independence: rcp(x * 2^e) == rcp(x) * 2^-e for a few e
    for (int e = -20; e <= 20; e += exp_shift) {
        float xe = ldexpf(x, e);
        if (rcp_approx(xe) != ldexpf(ra, -e)) { atomicAdd(exp_mismatch, 1); break; }
    }
}

int main(int argc, char **argv) {
    const int N = 1 << 23;
    int8_t *d_delta; int *d_cnt;
    cudaMalloc(&d_delta, N); cudaMalloc(&d_cnt, 8); cudaMemset(d_cnt, 0, 8);
    probe<<<N / 256, 256>>>(d_delta, d_cnt, d_cnt + 1, 5);
    cudaError_t err = cudaDeviceSynchronize();
    if (err != cudaSuccess) { printf("cuda error %s\n", cudaGetErrorString(err)); return 1; }
    std::vector<int8_t> h(N); int cnt[2];
    cudaMemcpy(h.data(), d_delta, N, cudaMemcpyDeviceToHost);
    cudaMemcpy(cnt, d_cnt, 8, cudaMemcpyDeviceToHost);
    long hist[5] = {0}; long other = 0;
    FILE *f = fopen(argc > 1 ? argv[1] : "rcp_delta.bin", "wb");
    for (int m = 0; m < N; m++) {
        int d = h[m];
        if (d >= -2 && d <= 2) hist[d + 2]++; else other++;
        if (d != 0) { uint32_t rec = (uint32_t)m | ((uint32_t)(uint8_t)d << 24); fwrite(&rec, 4, 1, f); }
    }
    fclose(f);
    printf("delta histogram -2..2: %ld %ld %ld %ld %ld other %ld\n", hist[0], hist[1], hist[2], hist[3], hist[4], other);
    printf("div.approx(127,x) != RN(127*rcp.approx(x)): %d\n", cnt[0]);
    printf("exponent-dependent mantissas: %d\n", cnt[1]);
    return 0;
}
