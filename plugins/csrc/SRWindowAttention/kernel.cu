// Flash-style window self-attention with a compact relative-position bias table.
//
// Algorithm (identical for both kernels, emulated on the CPU by plugins/emulation.py):
//   * one CTA = kWinAttnTile (64) query rows of one (window, head); grid is flattened as
//     ((window * heads) + head) * nQueryTiles + queryTile, so tiles of one window are adjacent;
//   * the head's compact table ((2w-1)^2 values) is loaded once into shared memory,
//     pre-multiplied by log2(e), so the softmax runs on exp2;
//   * keys/values are walked in tiles of 64: s = (q.k) * scale*log2(e) + table'[idx] (the scale is
//     applied before the bias is added), then the online softmax: m' = max(m, max_tile s),
//     alpha = exp2(m - m'), l = l*alpha + sum exp2(s - m'), o = o*alpha + sum exp2(s - m') v;
//   * out = o / l. Accumulation is fp32 everywhere; the fp16 kernel feeds P to the P.V
//     tensor-core product as two fp16 parts, fp16(P) and fp16(P - fp16(P)), one mma each, so the
//     weights of the average keep ~fp32 precision against the fp32 row sum l.
// The NxN score or bias matrix is never materialised (per CTA only a 64x64 tile lives in registers).
#include "sr_kernels.h"

#include <cmath>
#include <cuda_fp16.h>

namespace srdeploy
{
namespace
{

constexpr float kLog2e = 1.4426950408889634f;
constexpr int32_t kTile = kWinAttnTile;

// One MUFU.EX2 (max rel. error 2^-22, flushes denormals, exp2(-inf) = 0): the SFU op the
// softmax is bound by; plain exp2f adds range-fixing instructions around it.
__device__ __forceinline__ float fastExp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ float loadTable(void const* table, bool tableHalf, int64_t i)
{
    return tableHalf ? __half2float(static_cast<__half const*>(table)[i]) : static_cast<float const*>(table)[i];
}

// Offsets of the relative-bias index: idx = qBase(query) + sign * kOff(key), with
// kOff = ky*(2w-1) + kx and qBase = (w-1)*(2w-1) + (w-1) - sign*(qy*(2w-1) + qx);
// sign = +1 for "k-q" (ESC), -1 for "q-k" (ASID).
__device__ __forceinline__ int32_t keyOffset(int32_t key, int32_t logW, int32_t span)
{
    return (key >> logW) * span + (key & ((1 << logW) - 1));
}

__device__ __forceinline__ int32_t queryBase(int32_t query, int32_t logW, int32_t window, int32_t span, int32_t sign)
{
    return (window - 1) * span + (window - 1) - sign * keyOffset(query, logW, span);
}

// ---------------------------------------------------------------------------------------
// fp32 I/O: one thread per query row, FMA pipe. The validation-precision variant.
// ---------------------------------------------------------------------------------------
template <int32_t D>
__global__ void __launch_bounds__(kTile) windowAttentionF32(float const* __restrict__ q,
    float const* __restrict__ k, float const* __restrict__ v, void const* __restrict__ table, bool tableHalf,
    float* __restrict__ out, int32_t heads, int32_t window, int32_t logW, int32_t nQueryTiles, float scaleLog2e,
    int32_t sign)
{
    extern __shared__ float smem[];
    int32_t const span = 2 * window - 1;
    int32_t const tableSize = span * span;
    int32_t const tablePad = (tableSize + 3) & ~3;
    float* sTable = smem;
    float* sK = smem + tablePad;
    float* sV = sK + kTile * D;

    int32_t const n = window * window;
    int64_t const block = blockIdx.x;
    int32_t const qTile = static_cast<int32_t>(block % nQueryTiles);
    int64_t const bh = block / nQueryTiles; // window * heads + head
    int32_t const head = static_cast<int32_t>(bh % heads);
    int64_t const base = bh * n * D;
    int32_t const tid = threadIdx.x;

    for (int32_t i = tid; i < tableSize; i += kTile)
    {
        sTable[i] = loadTable(table, tableHalf, static_cast<int64_t>(head) * tableSize + i) * kLog2e;
    }

    int32_t const row = qTile * kTile + tid;
    float qr[D];
#pragma unroll
    for (int32_t c = 0; c < D; ++c)
    {
        qr[c] = q[base + static_cast<int64_t>(row) * D + c];
    }
    int32_t const qBase = queryBase(row, logW, window, span, sign);

    float m = -INFINITY;
    float l = 0.F;
    float acc[D];
#pragma unroll
    for (int32_t c = 0; c < D; ++c)
    {
        acc[c] = 0.F;
    }

    for (int32_t kt = 0; kt < n / kTile; ++kt)
    {
        __syncthreads(); // previous tile fully consumed (and the table loaded, first time)
        int64_t const tileBase = base + static_cast<int64_t>(kt) * kTile * D;
        for (int32_t i = tid; i < kTile * D; i += kTile)
        {
            sK[i] = k[tileBase + i];
            sV[i] = v[tileBase + i];
        }
        __syncthreads();

        float s[kTile];
        float tileMax = -INFINITY;
#pragma unroll 8
        for (int32_t j = 0; j < kTile; ++j)
        {
            float dot = 0.F;
#pragma unroll
            for (int32_t c = 0; c < D; ++c)
            {
                dot = fmaf(qr[c], sK[j * D + c], dot);
            }
            int32_t const key = kt * kTile + j;
            s[j] = fmaf(dot, scaleLog2e, sTable[qBase + sign * keyOffset(key, logW, span)]);
            tileMax = fmaxf(tileMax, s[j]);
        }
        float const mNew = fmaxf(m, tileMax);
        float const alpha = fastExp2(m - mNew);
        l *= alpha;
#pragma unroll
        for (int32_t c = 0; c < D; ++c)
        {
            acc[c] *= alpha;
        }
#pragma unroll 8
        for (int32_t j = 0; j < kTile; ++j)
        {
            float const p = fastExp2(s[j] - mNew);
            l += p;
#pragma unroll
            for (int32_t c = 0; c < D; ++c)
            {
                acc[c] = fmaf(p, sV[j * D + c], acc[c]);
            }
        }
        m = mNew;
    }
    float const inv = 1.F / l;
#pragma unroll
    for (int32_t c = 0; c < D; ++c)
    {
        out[base + static_cast<int64_t>(row) * D + c] = acc[c] * inv;
    }
}

// ---------------------------------------------------------------------------------------
// fp16 I/O: tensor cores. 4 warps x 16 query rows; S = Q K^T and O += P V with
// mma.sync.m16n8k16 (fp16 inputs, fp32 accumulators). The S accumulator layout equals the
// A-operand layout of the P.V product, so P never leaves registers (FlashAttention-2 trick).
// ---------------------------------------------------------------------------------------
__device__ __forceinline__ void mma16816(float (&c)[4], uint32_t const (&a)[4], uint32_t b0, uint32_t b1)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    // CMakeLists.txt refuses architectures below sm_80; this branch only keeps the host pass quiet.
    (void) c;
    (void) a;
    (void) b0;
    (void) b1;
#endif
}

// (lo, hi) -> the fp16 pair fp16(x) and the fp16 pair of the remainders fp16(x - fp16(x)).
__device__ __forceinline__ void splitHalf2(float lo, float hi, uint32_t& head, uint32_t& tail)
{
    __half2 const h = __floats2half2_rn(lo, hi);
    float2 const back = __half22float2(h);
    __half2 const r = __floats2half2_rn(lo - back.x, hi - back.y);
    head = *reinterpret_cast<uint32_t const*>(&h);
    tail = *reinterpret_cast<uint32_t const*>(&r);
}

__device__ __forceinline__ uint32_t ld32(__half const* p)
{
    return *reinterpret_cast<uint32_t const*>(p);
}

template <int32_t D>
__global__ void __launch_bounds__(128) windowAttentionF16(__half const* __restrict__ q,
    __half const* __restrict__ k, __half const* __restrict__ v, void const* __restrict__ table, bool tableHalf,
    __half* __restrict__ out, int32_t heads, int32_t window, int32_t logW, int32_t nQueryTiles, float scaleLog2e,
    int32_t sign)
{
    constexpr int32_t kStrideK = D + 8;     // K tile row stride (halves): padding against bank conflicts
    constexpr int32_t kStrideV = kTile + 8; // V^T tile row stride (halves)
    constexpr int32_t kSteps = D / 16;      // k-steps of the Q.K^T product
    constexpr int32_t kOutTiles = D / 8;    // n-tiles of the P.V product
    constexpr int32_t kKeyTiles = kTile / 8;

    extern __shared__ float smem[];
    int32_t const span = 2 * window - 1;
    int32_t const tableSize = span * span;
    int32_t const tablePad = (tableSize + 7) & ~7; // keeps the half tiles 16-byte aligned
    float* sTable = smem;
    __half* sK = reinterpret_cast<__half*>(smem + tablePad);
    __half* sVt = sK + kTile * kStrideK;

    int32_t const n = window * window;
    int64_t const block = blockIdx.x;
    int32_t const qTile = static_cast<int32_t>(block % nQueryTiles);
    int64_t const bh = block / nQueryTiles;
    int32_t const head = static_cast<int32_t>(bh % heads);
    int64_t const base = bh * n * D;
    int32_t const tid = threadIdx.x;
    int32_t const warp = tid >> 5;
    int32_t const lane = tid & 31;
    int32_t const g = lane >> 2; // row within the 8-row group
    int32_t const t = lane & 3;  // thread within the quad

    for (int32_t i = tid; i < tableSize; i += 128)
    {
        sTable[i] = loadTable(table, tableHalf, static_cast<int64_t>(head) * tableSize + i) * kLog2e;
    }

    int32_t const rowLo = qTile * kTile + warp * 16 + g;
    int32_t const rowHi = rowLo + 8;
    __half const* qLo = q + base + static_cast<int64_t>(rowLo) * D;
    __half const* qHi = q + base + static_cast<int64_t>(rowHi) * D;
    uint32_t aQ[kSteps][4];
#pragma unroll
    for (int32_t ks = 0; ks < kSteps; ++ks)
    {
        aQ[ks][0] = ld32(qLo + ks * 16 + 2 * t);
        aQ[ks][1] = ld32(qHi + ks * 16 + 2 * t);
        aQ[ks][2] = ld32(qLo + ks * 16 + 2 * t + 8);
        aQ[ks][3] = ld32(qHi + ks * 16 + 2 * t + 8);
    }
    int32_t const qBaseLo = queryBase(rowLo, logW, window, span, sign);
    int32_t const qBaseHi = queryBase(rowHi, logW, window, span, sign);

    float mLo = -INFINITY;
    float mHi = -INFINITY;
    float lLo = 0.F; // per-thread partial row sums, reduced over the quad at the end
    float lHi = 0.F;
    float o[kOutTiles][4];
#pragma unroll
    for (int32_t nt = 0; nt < kOutTiles; ++nt)
    {
        o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.F;
    }

    // K/V tiles move global -> registers -> shared memory; the next tile's global loads are issued
    // before the current tile is computed, so their latency hides behind the MMAs and exps.
    constexpr int32_t kChunks = kTile * D / 8; // 16-byte chunks per K or V tile
    constexpr int32_t kChunksPerThread = kChunks / 128;
    static_assert(kChunks % 128 == 0, "tile chunks must divide evenly over the CTA");
    int32_t const nKeyTiles = n / kTile;
    uint4 kNext[kChunksPerThread];
    uint4 vNext[kChunksPerThread];
#pragma unroll
    for (int32_t i = 0; i < kChunksPerThread; ++i)
    {
        int64_t const off = base + static_cast<int64_t>(tid + i * 128) * 8;
        kNext[i] = *reinterpret_cast<uint4 const*>(k + off);
        vNext[i] = *reinterpret_cast<uint4 const*>(v + off);
    }
    for (int32_t kt = 0; kt < nKeyTiles; ++kt)
    {
        __syncthreads(); // every warp is done with the previous tile
#pragma unroll
        for (int32_t i = 0; i < kChunksPerThread; ++i)
        {
            int32_t const c = tid + i * 128;
            int32_t const key = c / (D / 8);
            int32_t const d0 = (c % (D / 8)) * 8;
            *reinterpret_cast<uint4*>(sK + key * kStrideK + d0) = kNext[i];
            __half const* vh = reinterpret_cast<__half const*>(&vNext[i]);
#pragma unroll
            for (int32_t e = 0; e < 8; ++e)
            {
                sVt[(d0 + e) * kStrideV + key] = vh[e];
            }
        }
        __syncthreads();
        if (kt + 1 < nKeyTiles)
        {
            int64_t const nextBase = base + static_cast<int64_t>(kt + 1) * kTile * D;
#pragma unroll
            for (int32_t i = 0; i < kChunksPerThread; ++i)
            {
                int64_t const off = nextBase + static_cast<int64_t>(tid + i * 128) * 8;
                kNext[i] = *reinterpret_cast<uint4 const*>(k + off);
                vNext[i] = *reinterpret_cast<uint4 const*>(v + off);
            }
        }

        // S = Q K^T for this warp's 16 rows x 64 keys.
        float s[kKeyTiles][4];
#pragma unroll
        for (int32_t nt = 0; nt < kKeyTiles; ++nt)
        {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.F;
            __half const* kRow = sK + (nt * 8 + g) * kStrideK + 2 * t;
#pragma unroll
            for (int32_t ks = 0; ks < kSteps; ++ks)
            {
                mma16816(s[nt], aQ[ks], ld32(kRow + ks * 16), ld32(kRow + ks * 16 + 8));
            }
        }
        // Scale, then add the bias; tile row maxima.
        float tmLo = -INFINITY;
        float tmHi = -INFINITY;
#pragma unroll
        for (int32_t nt = 0; nt < kKeyTiles; ++nt)
        {
#pragma unroll
            for (int32_t e = 0; e < 2; ++e)
            {
                int32_t const kOff = sign * keyOffset(kt * kTile + nt * 8 + 2 * t + e, logW, span);
                s[nt][e] = fmaf(s[nt][e], scaleLog2e, sTable[qBaseLo + kOff]);
                s[nt][e + 2] = fmaf(s[nt][e + 2], scaleLog2e, sTable[qBaseHi + kOff]);
                tmLo = fmaxf(tmLo, s[nt][e]);
                tmHi = fmaxf(tmHi, s[nt][e + 2]);
            }
        }
#pragma unroll
        for (int32_t off = 1; off < 4; off <<= 1)
        {
            tmLo = fmaxf(tmLo, __shfl_xor_sync(0xffffffffU, tmLo, off));
            tmHi = fmaxf(tmHi, __shfl_xor_sync(0xffffffffU, tmHi, off));
        }
        float const mNewLo = fmaxf(mLo, tmLo);
        float const mNewHi = fmaxf(mHi, tmHi);
        float const alphaLo = fastExp2(mLo - mNewLo);
        float const alphaHi = fastExp2(mHi - mNewHi);
        mLo = mNewLo;
        mHi = mNewHi;
        lLo *= alphaLo;
        lHi *= alphaHi;
#pragma unroll
        for (int32_t nt = 0; nt < kOutTiles; ++nt)
        {
            o[nt][0] *= alphaLo;
            o[nt][1] *= alphaLo;
            o[nt][2] *= alphaHi;
            o[nt][3] *= alphaHi;
        }
#pragma unroll
        for (int32_t nt = 0; nt < kKeyTiles; ++nt)
        {
            s[nt][0] = fastExp2(s[nt][0] - mNewLo);
            s[nt][1] = fastExp2(s[nt][1] - mNewLo);
            s[nt][2] = fastExp2(s[nt][2] - mNewHi);
            s[nt][3] = fastExp2(s[nt][3] - mNewHi);
            lLo += s[nt][0] + s[nt][1];
            lHi += s[nt][2] + s[nt][3];
        }
        // O += P V: 4 k-steps of 16 keys; P comes straight from the S registers, split in two fp16
        // parts P = Phi + Plo (Phi = fp16(P), Plo = fp16(P - Phi)) and multiplied as Phi.V then Plo.V.
        // One fp16 P (2^-12 relative per weight) skews the weighted average against the fp32 row sum
        // l: measured up to ~0.9 dB over the fp16 output floor when V's spread dwarfs the output; the
        // split leaves ~2^-22 (docs/plugins.md). It costs one more mma per P.V product; the kernel is
        // bound by the MUFU exps, not the tensor cores.
#pragma unroll
        for (int32_t kk = 0; kk < kTile / 16; ++kk)
        {
            uint32_t aP[4];
            uint32_t aPlo[4];
            splitHalf2(s[2 * kk][0], s[2 * kk][1], aP[0], aPlo[0]);
            splitHalf2(s[2 * kk][2], s[2 * kk][3], aP[1], aPlo[1]);
            splitHalf2(s[2 * kk + 1][0], s[2 * kk + 1][1], aP[2], aPlo[2]);
            splitHalf2(s[2 * kk + 1][2], s[2 * kk + 1][3], aP[3], aPlo[3]);
#pragma unroll
            for (int32_t nt = 0; nt < kOutTiles; ++nt)
            {
                __half const* vRow = sVt + (nt * 8 + g) * kStrideV + kk * 16 + 2 * t;
                uint32_t const b0 = ld32(vRow);
                uint32_t const b1 = ld32(vRow + 8);
                mma16816(o[nt], aP, b0, b1);
                mma16816(o[nt], aPlo, b0, b1);
            }
        }
    }
#pragma unroll
    for (int32_t off = 1; off < 4; off <<= 1)
    {
        lLo += __shfl_xor_sync(0xffffffffU, lLo, off);
        lHi += __shfl_xor_sync(0xffffffffU, lHi, off);
    }
    float const invLo = 1.F / lLo;
    float const invHi = 1.F / lHi;
    __half* oLo = out + base + static_cast<int64_t>(rowLo) * D;
    __half* oHi = out + base + static_cast<int64_t>(rowHi) * D;
#pragma unroll
    for (int32_t nt = 0; nt < kOutTiles; ++nt)
    {
        *reinterpret_cast<__half2*>(oLo + nt * 8 + 2 * t) = __floats2half2_rn(o[nt][0] * invLo, o[nt][1] * invLo);
        *reinterpret_cast<__half2*>(oHi + nt * 8 + 2 * t) = __floats2half2_rn(o[nt][2] * invHi, o[nt][3] * invHi);
    }
}

int32_t log2Window(int32_t window)
{
    switch (window)
    {
    case 8: return 3;
    case 16: return 4;
    case 32: return 5;
    default: return -1;
    }
}

template <int32_t D>
int32_t launchWindowAttentionD(cudaStream_t stream, SrDType io, void const* q, void const* k, void const* v,
    void const* table, bool tableHalf, void* out, int64_t batchWindows, int32_t heads, int32_t window, float scale,
    int32_t sign)
{
    int32_t const logW = log2Window(window);
    int32_t const n = window * window;
    int32_t const nQueryTiles = n / kTile;
    int32_t const tableSize = (2 * window - 1) * (2 * window - 1);
    int64_t const blocks = batchWindows * heads * nQueryTiles;
    float const scaleLog2e = scale * kLog2e;
    if (io == SrDType::kFloat32)
    {
        size_t const shmem = (static_cast<size_t>((tableSize + 3) & ~3) + 2 * kTile * D) * sizeof(float);
        windowAttentionF32<D><<<static_cast<unsigned>(blocks), kTile, shmem, stream>>>(static_cast<float const*>(q),
            static_cast<float const*>(k), static_cast<float const*>(v), table, tableHalf, static_cast<float*>(out),
            heads, window, logW, nQueryTiles, scaleLog2e, sign);
    }
    else
    {
        size_t const shmem = static_cast<size_t>((tableSize + 7) & ~7) * sizeof(float)
            + (static_cast<size_t>(kTile) * (D + 8) + static_cast<size_t>(D) * (kTile + 8)) * sizeof(__half);
        windowAttentionF16<D><<<static_cast<unsigned>(blocks), 128, shmem, stream>>>(static_cast<__half const*>(q),
            static_cast<__half const*>(k), static_cast<__half const*>(v), table, tableHalf, static_cast<__half*>(out),
            heads, window, logW, nQueryTiles, scaleLog2e, sign);
    }
    return static_cast<int32_t>(cudaGetLastError());
}

} // namespace

int32_t checkWindowAttentionDims(int64_t batchWindows, int32_t heads, int32_t window, int32_t headDim, float scale)
{
    if (log2Window(window) < 0)
    {
        return kSrBadWindow;
    }
    if (headDim != 16 && headDim != 32)
    {
        return kSrBadHeadDim;
    }
    int32_t const nQueryTiles = window * window / kTile;
    if (batchWindows < 0 || heads <= 0 || batchWindows * heads * nQueryTiles > 0x7fffffffLL)
    {
        return kSrBadShape;
    }
    if (!(scale > 0.F) || !std::isfinite(scale))
    {
        return kSrBadScale;
    }
    return kSrOk;
}

int32_t launchWindowAttention(cudaStream_t stream, SrDType io, void const* q, void const* k, void const* v,
    void const* table, SrDType tableType, void* out, int64_t batchWindows, int32_t heads, int32_t window,
    int32_t headDim, float scale, int32_t biasQMinusK)
{
    if ((io != SrDType::kFloat32 && io != SrDType::kFloat16)
        || (tableType != SrDType::kFloat32 && tableType != SrDType::kFloat16))
    {
        return kSrBadDType;
    }
    int32_t const status = checkWindowAttentionDims(batchWindows, heads, window, headDim, scale);
    if (status != kSrOk)
    {
        return status;
    }
    if (batchWindows == 0)
    {
        return kSrOk;
    }
    if (q == nullptr || k == nullptr || v == nullptr || table == nullptr || out == nullptr)
    {
        return kSrNullPointer;
    }
    // the fp16 kernel moves K/V in 16-byte vectors and Q/O in 4-byte pairs
    auto const misaligned = [](void const* p) { return (reinterpret_cast<uintptr_t>(p) & 15U) != 0; };
    if (misaligned(q) || misaligned(k) || misaligned(v) || misaligned(out))
    {
        return kSrMisaligned;
    }
    bool const tableHalf = tableType == SrDType::kFloat16;
    int32_t const sign = biasQMinusK != 0 ? -1 : 1;
    return headDim == 16
        ? launchWindowAttentionD<16>(stream, io, q, k, v, table, tableHalf, out, batchWindows, heads, window, scale, sign)
        : launchWindowAttentionD<32>(stream, io, q, k, v, table, tableHalf, out, batchWindows, heads, window, scale, sign);
}

} // namespace srdeploy
