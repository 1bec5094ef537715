// libsrdeploy_plugin_harness.so: drives the plugins' own host path without TensorRT:
// getCreators() -> createPlugin(fields) -> clone() -> getFieldsToSerialize() -> createPlugin(kRUNTIME)
// -> onShapeChange() -> enqueue() on caller-provided CUDA buffers. Used by
// benchmarks/gpu_plugins_check.py through ctypes on a GPU machine that has no TensorRT.
#include "sr_plugins.h"

#include <cstring>
#include <memory>

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);

namespace
{
using namespace nvinfer1;

IPluginCreatorV3One* findCreator(char const* name)
{
    int32_t nb = 0;
    IPluginCreatorInterface* const* creators = getCreators(nb);
    for (int32_t i = 0; i < nb; ++i)
    {
        auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (std::strcmp(c->getPluginName(), name) == 0)
        {
            return c;
        }
    }
    return nullptr;
}

// Build-phase creation, then the runtime round trip TensorRT does when it deserialises a plan.
std::unique_ptr<IPluginV3> roundTrip(IPluginCreatorV3One* creator, PluginFieldCollection const& fc)
{
    std::unique_ptr<IPluginV3> built(creator->createPlugin("harness", &fc, TensorRTPhase::kBUILD));
    if (!built)
    {
        return nullptr;
    }
    std::unique_ptr<IPluginV3> cloned(built->clone());
    if (!cloned)
    {
        return nullptr;
    }
    auto* rt = static_cast<IPluginV3OneRuntime*>(cloned->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    return std::unique_ptr<IPluginV3>(creator->createPlugin("harness", rt->getFieldsToSerialize(), TensorRTPhase::kRUNTIME));
}

PluginTensorDesc desc(DataType type, std::initializer_list<int64_t> dims)
{
    PluginTensorDesc d{};
    d.type = type;
    d.format = TensorFormat::kLINEAR;
    d.scale = 1.F;
    d.dims.nbDims = static_cast<int32_t>(dims.size());
    int32_t i = 0;
    for (int64_t x : dims)
    {
        d.dims.d[i++] = x;
    }
    return d;
}

DataType toTrt(int32_t t)
{
    return t == 1 ? DataType::kHALF : DataType::kFLOAT;
}

} // namespace

extern "C"
{

__attribute__((visibility("default"))) int32_t srdeploy_harness_window_attention(int32_t ioType, void const* q,
    void const* k, void const* v, void const* table, int32_t tableType, void* out, int64_t batchWindows,
    int32_t heads, int32_t window, int32_t headDim, float scale, int32_t biasQMinusK, void* stream)
{
    IPluginCreatorV3One* creator = findCreator(srdeploy::kWindowAttentionName);
    if (creator == nullptr)
    {
        return -100;
    }
    char const* biasIndex = biasQMinusK != 0 ? "q-k" : "k-q";
    PluginField const fields[] = {PluginField("window", &window, PluginFieldType::kINT32, 1),
        PluginField("bias_index", biasIndex, PluginFieldType::kCHAR, 4),
        PluginField("scale", &scale, PluginFieldType::kFLOAT32, 1)};
    PluginFieldCollection const fc{3, fields};
    std::unique_ptr<IPluginV3> plugin = roundTrip(creator, fc);
    if (!plugin)
    {
        return -101;
    }
    auto* rt = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    int64_t const n = static_cast<int64_t>(window) * window;
    int64_t const span = 2 * static_cast<int64_t>(window) - 1;
    PluginTensorDesc const in[4] = {desc(toTrt(ioType), {batchWindows, heads, n, headDim}),
        desc(toTrt(ioType), {batchWindows, heads, n, headDim}), desc(toTrt(ioType), {batchWindows, heads, n, headDim}),
        desc(toTrt(tableType), {heads, span * span})};
    PluginTensorDesc const o[1] = {desc(toTrt(ioType), {batchWindows, heads, n, headDim})};
    if (rt->onShapeChange(in, 4, o, 1) != 0)
    {
        return -102;
    }
    void const* inputs[4] = {q, k, v, table};
    void* outputs[1] = {out};
    return rt->enqueue(in, o, inputs, outputs, nullptr, static_cast<cudaStream_t>(stream));
}

__attribute__((visibility("default"))) int32_t srdeploy_harness_local_ensemble(int32_t ioType, void const* query,
    void const* keys, void const* values, void* out, int64_t nQueries, int32_t c1, int32_t c2, void* stream)
{
    IPluginCreatorV3One* creator = findCreator(srdeploy::kLocalEnsembleName);
    if (creator == nullptr)
    {
        return -100;
    }
    PluginFieldCollection const fc{0, nullptr};
    std::unique_ptr<IPluginV3> plugin = roundTrip(creator, fc);
    if (!plugin)
    {
        return -101;
    }
    auto* rt = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    PluginTensorDesc const in[3] = {desc(toTrt(ioType), {nQueries, c1}), desc(toTrt(ioType), {nQueries, 4, c1}),
        desc(toTrt(ioType), {nQueries, 4, c2})};
    PluginTensorDesc const o[1] = {desc(toTrt(ioType), {nQueries, c2})};
    if (rt->onShapeChange(in, 3, o, 1) != 0)
    {
        return -102;
    }
    void const* inputs[3] = {query, keys, values};
    void* outputs[1] = {out};
    return rt->enqueue(in, o, inputs, outputs, nullptr, static_cast<cudaStream_t>(stream));
}

} // extern "C"
