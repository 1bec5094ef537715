// CiaoSR local ensemble: per query, 4 dot products with the neighbour keys, an fp32 softmax
// over the 4 scores (no scaling), and the weighted blend of the 4 neighbour values.
//
// One warp per query, one pass: lane l accumulates channels l, l+32, ... in order (fp32 FMA),
// the 4 partial dots are combined by an xor butterfly (16, 8, 4, 2, 1), every lane then holds
// the same 4 scores, and lane l writes output channels l, l+32, ... as
// fma(p3, v3, fma(p2, v2, fma(p1, v1, p0*v0))). plugins/emulation.py reproduces this order.
// Bandwidth-bound by design: 9 values read per output-channel pair, ~1 FLOP per byte.
#include "sr_kernels.h"

#include <cuda_fp16.h>

namespace srdeploy
{
namespace
{

constexpr int32_t kWarpsPerBlock = 8;

__device__ __forceinline__ float toFloat(float x)
{
    return x;
}
__device__ __forceinline__ float toFloat(__half x)
{
    return __half2float(x);
}
template <typename T>
__device__ __forceinline__ T fromFloat(float x);
template <>
__device__ __forceinline__ float fromFloat<float>(float x)
{
    return x;
}
template <>
__device__ __forceinline__ __half fromFloat<__half>(float x)
{
    return __float2half_rn(x);
}

template <typename T>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) localEnsembleKernel(T const* __restrict__ query,
    T const* __restrict__ keys, T const* __restrict__ values, T* __restrict__ out, int64_t nQueries, int32_t c1,
    int32_t c2)
{
    int64_t const qi = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
    if (qi >= nQueries)
    {
        return; // whole warps exit together: qi is uniform within a warp
    }
    int32_t const lane = threadIdx.x & 31;
    T const* qRow = query + qi * c1;
    T const* kRow = keys + qi * 4 * c1;
    float d[4] = {0.F, 0.F, 0.F, 0.F};
    for (int32_t c = lane; c < c1; c += 32)
    {
        float const qv = toFloat(qRow[c]);
#pragma unroll
        for (int32_t i = 0; i < 4; ++i)
        {
            d[i] = fmaf(qv, toFloat(kRow[i * c1 + c]), d[i]);
        }
    }
#pragma unroll
    for (int32_t off = 16; off > 0; off >>= 1)
    {
#pragma unroll
        for (int32_t i = 0; i < 4; ++i)
        {
            d[i] += __shfl_xor_sync(0xffffffffU, d[i], off);
        }
    }
    float const m = fmaxf(fmaxf(d[0], d[1]), fmaxf(d[2], d[3]));
    float p[4];
    float sum = 0.F;
#pragma unroll
    for (int32_t i = 0; i < 4; ++i)
    {
        p[i] = expf(d[i] - m);
        sum += p[i];
    }
    float const inv = 1.F / sum;
#pragma unroll
    for (int32_t i = 0; i < 4; ++i)
    {
        p[i] *= inv;
    }
    T const* vRow = values + qi * 4 * c2;
    T* oRow = out + qi * c2;
    for (int32_t c = lane; c < c2; c += 32)
    {
        float acc = p[0] * toFloat(vRow[c]);
        acc = fmaf(p[1], toFloat(vRow[c2 + c]), acc);
        acc = fmaf(p[2], toFloat(vRow[2 * c2 + c]), acc);
        acc = fmaf(p[3], toFloat(vRow[3 * c2 + c]), acc);
        oRow[c] = fromFloat<T>(acc);
    }
}

} // namespace

int32_t checkLocalEnsembleDims(int64_t nQueries, int32_t c1, int32_t c2)
{
    if (nQueries < 0 || c1 <= 0 || c2 <= 0)
    {
        return kSrBadShape;
    }
    if ((nQueries + kWarpsPerBlock - 1) / kWarpsPerBlock > 0x7fffffffLL)
    {
        return kSrBadShape;
    }
    return kSrOk;
}

int32_t launchLocalEnsemble(cudaStream_t stream, SrDType io, void const* query, void const* keys,
    void const* values, void* out, int64_t nQueries, int32_t c1, int32_t c2)
{
    if (io != SrDType::kFloat32 && io != SrDType::kFloat16)
    {
        return kSrBadDType;
    }
    int32_t const status = checkLocalEnsembleDims(nQueries, c1, c2);
    if (status != kSrOk)
    {
        return status;
    }
    if (nQueries == 0)
    {
        return kSrOk;
    }
    if (query == nullptr || keys == nullptr || values == nullptr || out == nullptr)
    {
        return kSrNullPointer;
    }
    auto const blocks = static_cast<unsigned>((nQueries + kWarpsPerBlock - 1) / kWarpsPerBlock);
    if (io == SrDType::kFloat32)
    {
        localEnsembleKernel<float><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(static_cast<float const*>(query),
            static_cast<float const*>(keys), static_cast<float const*>(values), static_cast<float*>(out), nQueries, c1,
            c2);
    }
    else
    {
        localEnsembleKernel<__half><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(static_cast<__half const*>(query),
            static_cast<__half const*>(keys), static_cast<__half const*>(values), static_cast<__half*>(out), nQueries,
            c1, c2);
    }
    return static_cast<int32_t>(cudaGetLastError());
}

} // namespace srdeploy
