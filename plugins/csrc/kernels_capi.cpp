// extern "C" entry points of libsrdeploy_kernels.so for ctypes (benchmarks/gpu_plugins_check.py,
// benchmarks/bench_window_attention.py). Streams are passed as integers (0 = legacy default stream).
#include "sr_kernels.h"

#include <cstdint>

extern "C"
{

__attribute__((visibility("default"))) int32_t srdeploy_window_attention(int32_t ioType, void const* q,
    void const* k, void const* v, void const* table, int32_t tableType, void* out, int64_t batchWindows,
    int32_t heads, int32_t window, int32_t headDim, float scale, int32_t biasQMinusK, void* stream)
{
    return srdeploy::launchWindowAttention(static_cast<cudaStream_t>(stream), static_cast<srdeploy::SrDType>(ioType),
        q, k, v, table, static_cast<srdeploy::SrDType>(tableType), out, batchWindows, heads, window, headDim, scale,
        biasQMinusK);
}

__attribute__((visibility("default"))) int32_t srdeploy_local_ensemble(int32_t ioType, void const* query,
    void const* keys, void const* values, void* out, int64_t nQueries, int32_t c1, int32_t c2, void* stream)
{
    return srdeploy::launchLocalEnsemble(static_cast<cudaStream_t>(stream), static_cast<srdeploy::SrDType>(ioType),
        query, keys, values, out, nQueries, c1, c2);
}

} // extern "C"
