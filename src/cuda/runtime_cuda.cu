/* Device discovery, buffers and copies: thin wrappers that turn every CUDA error into an
 * msbnb_status carrying cudaGetErrorString. */
#include "cuda/cuda_internal.cuh"

#include <string.h>

extern "C" int msbnb_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError(); /* "no device" is an answer, not a sticky error */
        return 0;
    }
    return n;
}

extern "C" msbnb_status msbnb_cuda_device_info_get(msbnb_cuda_device_info *out) {
    MSBNB_CHECK_NULL(out);
    int dev = 0;
    MSBNB_CUDA_TRY(cudaGetDevice(&dev));
    cudaDeviceProp p;
    MSBNB_CUDA_TRY(cudaGetDeviceProperties(&p, dev));
    memset(out, 0, sizeof *out);
    strncpy(out->name, p.name, sizeof out->name - 1);
    out->cc_major = p.major;
    out->cc_minor = p.minor;
    out->sm_count = p.multiProcessorCount;
    out->total_mem = (int64_t)p.totalGlobalMem;
    out->l2_bytes = p.l2CacheSize;
    return MSBNB_OK;
}

extern "C" msbnb_status msbnb_cuda_malloc(void **ptr, size_t bytes) {
    MSBNB_CHECK_NULL(ptr);
    *ptr = NULL;
    if (bytes == 0) return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: bytes must be positive", __func__);
    cudaError_t e = cudaMalloc(ptr, bytes);
    if (e != cudaSuccess) {
        *ptr = NULL;
        return msbnb__fail(MSBNB_ERR_CUDA, "%s: cudaMalloc(%zu bytes): %s", __func__, bytes,
                           cudaGetErrorString(e));
    }
    return MSBNB_OK;
}

extern "C" msbnb_status msbnb_cuda_free(void *ptr) {
    if (!ptr) return MSBNB_OK;
    MSBNB_CUDA_TRY(cudaFree(ptr));
    return MSBNB_OK;
}

extern "C" msbnb_status msbnb_cuda_memcpy(void *dst, const void *src, size_t bytes,
                                         msbnb_cuda_copy kind) {
    if (bytes == 0) return MSBNB_OK;
    MSBNB_CHECK_NULL(dst);
    MSBNB_CHECK_NULL(src);
    cudaMemcpyKind k;
    switch (kind) {
    case MSBNB_CUDA_HOST_TO_DEVICE: k = cudaMemcpyHostToDevice; break;
    case MSBNB_CUDA_DEVICE_TO_HOST: k = cudaMemcpyDeviceToHost; break;
    case MSBNB_CUDA_DEVICE_TO_DEVICE: k = cudaMemcpyDeviceToDevice; break;
    default: return msbnb__fail(MSBNB_ERR_INVALID_ARGUMENT, "%s: bad copy kind %d", __func__, (int)kind);
    }
    if (k == cudaMemcpyDeviceToDevice) MSBNB_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, k, 0));
    else MSBNB_CUDA_TRY(cudaMemcpy(dst, src, bytes, k));
    return MSBNB_OK;
}

extern "C" msbnb_status msbnb_cuda_memset(void *dst, int value, size_t bytes) {
    if (bytes == 0) return MSBNB_OK;
    MSBNB_CHECK_NULL(dst);
    MSBNB_CUDA_TRY(cudaMemsetAsync(dst, value, bytes, 0));
    return MSBNB_OK;
}

extern "C" msbnb_status msbnb_cuda_synchronize(void) {
    MSBNB_CUDA_TRY(cudaDeviceSynchronize());
    return MSBNB_OK;
}

msbnb_status msbnb__cuda_flag_alloc(int **flag) {
    MSBNB_TRY(msbnb_cuda_malloc((void **)flag, sizeof(int)));
    cudaError_t e = cudaMemsetAsync(*flag, 0, sizeof(int), 0);
    if (e != cudaSuccess) {
        cudaFree(*flag);
        *flag = NULL;
        return msbnb__fail(MSBNB_ERR_CUDA, "%s: %s", __func__, cudaGetErrorString(e));
    }
    return MSBNB_OK;
}

msbnb_status msbnb__cuda_flag_read(int *flag, int *value) {
    cudaError_t e = cudaMemcpy(value, flag, sizeof(int), cudaMemcpyDeviceToHost);
    cudaFree(flag);
    if (e != cudaSuccess)
        return msbnb__fail(MSBNB_ERR_CUDA, "%s: %s", __func__, cudaGetErrorString(e));
    return MSBNB_OK;
}
