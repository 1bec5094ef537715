// Plain launchers for the srdeploy CUDA kernels (no TensorRT dependency).
//
// Every launcher takes a stream, raw device pointers and dimensions, validates the
// dimensions, launches, and returns an error code: 0 on success, a negative SrStatus on
// invalid arguments (nothing launched), or the positive cudaError_t of the launch.
#pragma once

#include <cstdint>
#include <cuda_runtime_api.h>

namespace srdeploy
{

enum class SrDType : int32_t
{
    kFloat32 = 0,
    kFloat16 = 1,
};

enum SrStatus : int32_t
{
    kSrOk = 0,
    kSrBadDType = -1,
    kSrBadWindow = -2,
    kSrBadHeadDim = -3,
    kSrBadShape = -4,
    kSrBadScale = -5,
    kSrNullPointer = -6,
    kSrMisaligned = -7, //!< q, k, v, out must be 16-byte aligned (TensorRT and cudaMalloc give 256)
};

// Tile sizes shared by both window-attention kernels (and by the CPU emulation in
// plugins/emulation.py): one CTA owns kWinAttnTile query rows of one (window, head) and
// walks the keys in tiles of kWinAttnTile.
constexpr int32_t kWinAttnTile = 64;

//! Window self-attention with a compact relative-position bias table.
//!
//! q, k, v, out: (batchWindows, heads, window*window, headDim), contiguous, io dtype.
//! table: (heads, (2*window-1)^2), contiguous, tableType (fp32 or fp16).
//! out = softmax(scale * q k^T + bias) v, where bias(query, key) is
//!   table[h, (ky-qy+w-1)*(2w-1) + (kx-qx+w-1)]   if biasQMinusK == 0 ("k-q", ESC)
//!   table[h, (qy-ky+w-1)*(2w-1) + (qx-kx+w-1)]   if biasQMinusK != 0 ("q-k", ASID).
//! window in {8, 16, 32}; headDim in {16, 32}. fp32 I/O runs on the FMA pipe (validation
//! precision); fp16 I/O runs on tensor cores (mma.sync m16n8k16, fp32 accumulation, sm_80+).
int32_t launchWindowAttention(cudaStream_t stream, SrDType io, void const* q, void const* k, void const* v,
    void const* table, SrDType tableType, void* out, int64_t batchWindows, int32_t heads, int32_t window,
    int32_t headDim, float scale, int32_t biasQMinusK);

//! CiaoSR local ensemble over 4 neighbours.
//!
//! query: (nQueries, c1); keys: (nQueries, 4, c1); values: (nQueries, 4, c2); out: (nQueries, c2).
//! scores_i = keys_i . query (no scaling); p = softmax over the 4 scores in fp32;
//! out = sum_i p_i values_i. One warp per query, one pass over the data.
int32_t launchLocalEnsemble(cudaStream_t stream, SrDType io, void const* query, void const* keys,
    void const* values, void* out, int64_t nQueries, int32_t c1, int32_t c2);

//! Validation shared by the launchers and the TensorRT plugins (host only).
int32_t checkWindowAttentionDims(int64_t batchWindows, int32_t heads, int32_t window, int32_t headDim, float scale);
int32_t checkLocalEnsembleDims(int64_t nQueries, int32_t c1, int32_t c2);

} // namespace srdeploy
