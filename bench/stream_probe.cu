/* stream_probe: how fast one kernel can read S cold bytes on this GPU, by access scheme.
 * It bounds what an M = 1 GEMV over a weight of S bytes can reach (bench/RESULTS.md).
 * Each launch reads the next of enough device copies (>= 512 MiB) that nothing sits in L2;
 * median over 15 batches of the mean of 32 back-to-back launches (CUDA events).
 *   grid-stride  plain 16-byte loads, U per thread in flight, block-contiguous tiles
 *   range        each block of a persistent grid reads one contiguous range, U in flight
 *   task         the M = 1 GEMV's pattern: warps walk tasks of R rows, U chunks a row per batch
 *   bulk         cp.async.bulk (the copy engine) into a ring of ST stages of C bytes per
 *                block, completing on an mbarrier; the block's threads consume the stage
 * The consumers XOR the words (a stand-in for a decode that costs nothing).
 * Build: nvcc -O3 -arch=sm_90 -o stream_probe bench/stream_probe.cu */
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <algorithm>
#include <vector>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_)); exit(1); } } while (0)

__device__ __forceinline__ uint4 ld_nc(const void *p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}

/* One tile of the block: U 16-byte loads a thread in flight (pieces t0 + u blockDim + tid
 * below end), then their XOR into acc. */
template <int U>
__device__ __forceinline__ void read_tile(const uint4 *w, int64_t t0, int64_t end, unsigned &acc) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int64_t i = t0 + (int64_t)u * blockDim.x + threadIdx.x;
        v[u] = i < end ? ld_nc(w + i) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < U; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
}

template <int U>
__global__ void grid_stride(const uint4 *w, int64_t n16, unsigned *out) {
    unsigned acc = 0;
    const int64_t tile = (int64_t)U * blockDim.x;
    for (int64_t t0 = (int64_t)blockIdx.x * tile; t0 < n16; t0 += (int64_t)gridDim.x * tile)
        read_tile<U>(w, t0, n16, acc);
    if (acc == 0x9e3779b9u) out[blockIdx.x] = acc;
}

template <int U>
__global__ void range_read(const uint4 *w, int64_t n16, unsigned *out) {
    const int64_t per = (n16 + gridDim.x - 1) / gridDim.x;
    const int64_t b = (int64_t)blockIdx.x * per, e = min(n16, b + per);
    unsigned acc = 0;
    for (int64_t t0 = b; t0 < e; t0 += (int64_t)U * blockDim.x) read_tile<U>(w, t0, e, acc);
    if (acc == 0x9e3779b9u) out[blockIdx.x] = acc;
}

/* The access pattern of the M = 1 GEMV (gemv4_m1): a persistent grid, each warp walks tasks of
 * R rows of rowb bytes; a batch is chunk column bt of its R rows (U 16-byte chunks a lane per
 * row, a warp load covering 512 contiguous bytes of a row), the next batch's loads in flight
 * while the current is consumed; AM: also one absmax-code byte per chunk (NF4 + double quant,
 * blocksize 64: the 30.3 MB size holds the codes and one byte per block). */
template <int R, int U, bool AM>
__global__ void task_read(const uint8_t *w, const uint8_t *am, int N, int rowb, unsigned *out) {
    const int lane = threadIdx.x & 31, nch = rowb / 16, wpb = blockDim.x >> 5;
    const int ntask = (N + R - 1) / R, nbat = (nch + 32 * U - 1) / (32 * U), stride = gridDim.x * wpb;
    int t = blockIdx.x * wpb + (threadIdx.x >> 5), bt = 0;
    uint4 cur[R][U], nxt[R][U];
    uint32_t ca[R][U], na[R][U];
    auto load = [&](uint4 (&q)[R][U], uint32_t (&a)[R][U], int tt, int b) {
#pragma unroll
        for (int r = 0; r < R; r++) {
            const int64_t row = min(tt * R + r, N - 1);
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int c = (b * U + u) * 32 + lane;
                if (c < nch) {
                    q[r][u] = ld_nc(w + row * rowb + (int64_t)c * 16);
                    if (AM) a[r][u] = __ldg(am + ((row * rowb + (int64_t)c * 16) >> 5));
                }
            }
        }
    };
    if (t >= ntask) return;
    load(cur, ca, t, 0);
    unsigned acc = 0;
    for (;;) {
        int t2 = t, bt2 = bt + 1;
        if (bt2 == nbat) bt2 = 0, t2 += stride;
        if (t2 < ntask) load(nxt, na, t2, bt2);
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int c = (bt * U + u) * 32 + lane;
                if (c < nch) acc ^= cur[r][u].x ^ cur[r][u].y ^ cur[r][u].z ^ cur[r][u].w ^ (AM ? ca[r][u] : 0u);
            }
        if (t2 >= ntask) break;
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int u = 0; u < U; u++) cur[r][u] = nxt[r][u], ca[r][u] = na[r][u];
        t = t2, bt = bt2;
    }
    if (acc == 0x9e3779b9u) out[blockIdx.x] = acc;
}

__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t phase) {
    asm volatile(
        "{\n .reg .pred p;\n W: mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra W;\n}\n"
        :: "r"(bar), "r"(phase) : "memory");
}

/* Ring of ST stages of C bytes; thread 0 issues one bulk copy per stage. */
template <int ST, int C>
__global__ void bulk_read(const uint8_t *w, int64_t nbytes, unsigned *out) {
    extern __shared__ __align__(128) uint8_t sbuf[];
    __shared__ __align__(8) uint64_t bar[ST];
    const int64_t per = ((nbytes + gridDim.x - 1) / gridDim.x + C - 1) / C * C;
    const int64_t b = (int64_t)blockIdx.x * per, e = min(nbytes, b + per);
    const int nst = b < e ? (int)((e - b + C - 1) / C) : 0;
    if (threadIdx.x == 0) {
        for (int s = 0; s < ST; s++)
            asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" :: "r"(smem_u32(&bar[s])));
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    auto issue = [&](int i) {
        const int s = i % ST;
        const int64_t off = b + (int64_t)i * C;
        const uint32_t len = (uint32_t)min((int64_t)C, e - off);
        const uint32_t bb = smem_u32(&bar[s]);
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(bb), "r"(len) : "memory");
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                     :: "r"(smem_u32(sbuf + s * C)), "l"(w + off), "r"(len), "r"(bb) : "memory");
    };
    if (threadIdx.x == 0)
        for (int i = 0; i < ST && i < nst; i++) issue(i);
    unsigned acc = 0;
    for (int i = 0; i < nst; i++) {
        const int s = i % ST;
        mbar_wait(smem_u32(&bar[s]), (uint32_t)((i / ST) & 1));
        const int64_t off = b + (int64_t)i * C;
        const int n16 = (int)(min((int64_t)C, e - off) / 16);
        const uint4 *sp = (const uint4 *)(sbuf + s * C);
        for (int j = threadIdx.x; j < n16; j += blockDim.x) {
            uint4 v = sp[j];
            acc ^= v.x ^ v.y ^ v.z ^ v.w;
        }
        __syncthreads(); /* stage s consumed */
        if (threadIdx.x == 0 && i + ST < nst) issue(i + ST);
    }
    if (acc == 0x9e3779b9u) out[blockIdx.x] = acc;
}

struct bufs { std::vector<uint8_t *> p; int64_t bytes; };

template <class F>
static double time_ms(const bufs &B, F launch) {
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
    std::vector<double> t;
    int k = 0;
    for (int w = 0; w < 8; w++) launch(B.p[k++ % B.p.size()]);
    for (int rep = 0; rep < 15; rep++) {
        CK(cudaEventRecord(a));
        for (int i = 0; i < 32; i++) launch(B.p[k++ % B.p.size()]);
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        float ms; CK(cudaEventElapsedTime(&ms, a, b));
        t.push_back(ms / 32);
    }
    CK(cudaGetLastError());
    std::sort(t.begin(), t.end());
    cudaEventDestroy(a); cudaEventDestroy(b);
    return t[t.size() / 2];
}

int main(void) {
    cudaDeviceProp pr; CK(cudaGetDeviceProperties(&pr, 0));
    const int sms = pr.multiProcessorCount;
    printf("%s, %d SMs, L2 %d MB\n", pr.name, sms, pr.l2CacheSize >> 20);
    unsigned *out; CK(cudaMalloc(&out, 1 << 20));
    const int64_t sizes[] = {8650752, 30277632, 117440512}; /* nf4 (4096,4096), nf4 (4096,14336), bf16 (4096,14336) */
    for (int64_t S : sizes) {
        bufs B; B.bytes = S;
        const int nb = (int)std::max<int64_t>(4, ((int64_t)640 << 20) / S);
        for (int i = 0; i < nb; i++) { uint8_t *p; CK(cudaMalloc(&p, S)); CK(cudaMemset(p, i, S)); B.p.push_back(p); }
        uint8_t *dst; CK(cudaMalloc(&dst, S));
        const double tc = time_ms(B, [&](uint8_t *p) { CK(cudaMemcpyAsync(dst, p, S, cudaMemcpyDeviceToDevice)); });
        const double copy = 2.0 * S / tc / 1e9;
        printf("\n%.1f MB: device copy %.4f ms = %.2f TB/s (read + write)\n", S / 1e6, tc, copy);
        printf("| scheme | threads | blocks | ms | read TB/s | %% copy |\n|---|---|---|---|---|---|\n");
        auto row = [&](const char *name, int thr, int blocks, double ms) {
            printf("| %s | %d | %d | %.4f | %.2f | %.0f %% |\n", name, thr, blocks, ms, S / ms / 1e9, 100.0 * S / ms / 1e9 / copy);
        };
        const int64_t n16 = S / 16;
#define GS(U, T, BPS) row("grid-stride U=" #U, T, sms * BPS, time_ms(B, [&](uint8_t *p) { grid_stride<U><<<sms * BPS, T>>>((const uint4 *)p, n16, out); }))
#define RR(U, T, BPS) row("range U=" #U, T, sms * BPS, time_ms(B, [&](uint8_t *p) { range_read<U><<<sms * BPS, T>>>((const uint4 *)p, n16, out); }))
        GS(1, 256, 8); GS(2, 256, 8); GS(4, 256, 8); GS(8, 256, 4); GS(4, 512, 4); GS(8, 512, 2); GS(4, 1024, 2);
        GS(4, 256, 2); GS(8, 256, 2); GS(16, 256, 2); /* the GEMV's occupancy: 16 warps an SM */
        RR(2, 256, 8); RR(4, 256, 8); RR(8, 256, 4); RR(4, 512, 4); RR(8, 1024, 1); RR(4, 1024, 2);
        if (S == 30277632) { /* NF4 (4096, 14336): rows of 2048 bytes, then the absmax (blocksize 64) */
            const int N = 14336, rowb = 2048;
            const int64_t wb = (int64_t)N * rowb;
#define TK(R, U, AM, BPS) row("task R=" #R " U=" #U " am=" #AM, 256, sms * BPS, time_ms(B, [&](uint8_t *p) { \
                task_read<R, U, AM><<<sms * BPS, 256>>>(p, p + wb, N, rowb, out); }))
            TK(4, 1, true, 2); TK(4, 1, false, 2); TK(4, 2, true, 2); TK(4, 4, true, 2); TK(8, 1, true, 2);
            TK(2, 2, true, 2); TK(1, 4, true, 2); TK(4, 1, true, 4); TK(4, 1, true, 8); TK(2, 1, true, 8); TK(4, 2, true, 4);
        }
#define BK(ST, C, T, BPS) do { \
            auto k = bulk_read<ST, C>; \
            CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, ST * C)); \
            row("bulk ST=" #ST " C=" #C, T, sms * BPS, time_ms(B, [&](uint8_t *p) { k<<<sms * BPS, T, ST * C>>>(p, S, out); })); \
        } while (0)
        BK(4, 8192, 256, 4); BK(4, 16384, 256, 2); BK(8, 8192, 256, 2); BK(6, 16384, 512, 2); BK(12, 16384, 1024, 1);
        BK(4, 32768, 512, 1); BK(3, 32768, 256, 2); BK(8, 4096, 128, 8);
        for (auto p : B.p) cudaFree(p);
        cudaFree(dst);
    }
    return 0;
}
