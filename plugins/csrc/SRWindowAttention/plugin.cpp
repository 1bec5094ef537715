// SRWindowAttention: the IPluginV3 class, its creator and its field parser (see plugin.h).
#include "plugin.h"

#include "sr_kernels.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>

using namespace nvinfer1;

namespace srdeploy
{

using namespace detail;

bool parseWindowAttentionFields(PluginFieldCollection const* fc, WindowAttentionParams& out) noexcept
{
    if (fc == nullptr || (fc->nbFields > 0 && fc->fields == nullptr))
    {
        logError("SRWindowAttention: no plugin fields given; pass window (int), bias_index and scale");
        return false;
    }
    WindowAttentionParams p;
    bool haveWindow = false;
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        std::string const name = f.name != nullptr ? f.name : "";
        if (name == "window")
        {
            if (!readInt(f, p.window) || (p.window != 8 && p.window != 16 && p.window != 32))
            {
                logError("SRWindowAttention: field 'window' must be one int32 in {8, 16, 32}");
                return false;
            }
            haveWindow = true;
        }
        else if (name == "bias_index")
        {
            std::string s;
            if (!readString(f, s) || (s != "k-q" && s != "q-k"))
            {
                logError("SRWindowAttention: field 'bias_index' must be the string \"k-q\" or \"q-k\"");
                return false;
            }
            p.biasQMinusK = s == "q-k" ? 1 : 0;
        }
        else if (name == "scale")
        {
            if (!readFloat(f, p.scale) || !std::isfinite(p.scale) || p.scale < 0.F)
            {
                logError("SRWindowAttention: field 'scale' must be one finite float32 >= 0 (0 = head_dim^-0.5)");
                return false;
            }
        }
        else
        {
            logError("SRWindowAttention: unknown field '" + name + "'; expected window, bias_index, scale");
            return false;
        }
    }
    if (!haveWindow)
    {
        logError("SRWindowAttention: missing field 'window' (8, 16 or 32)");
        return false;
    }
    out = p;
    return true;
}

// ---------------------------------------------------------------------------------------
// SRWindowAttention: inputs q, k, v (B*nW, heads, w*w, d) and table (heads, (2w-1)^2).
// ---------------------------------------------------------------------------------------
WindowAttentionPlugin::WindowAttentionPlugin(WindowAttentionParams const& params)
    : mParams(params)
    , mBiasIndex(params.biasQMinusK != 0 ? "q-k" : "k-q")
{
    initFields();
}

WindowAttentionPlugin::WindowAttentionPlugin(WindowAttentionPlugin const& other)
    : PluginBase(other)
    , mParams(other.mParams)
    , mBiasIndex(other.mBiasIndex)
{
    initFields();
}

void WindowAttentionPlugin::initFields() noexcept
{
    mFields.clear();
    mFields.emplace_back("window", &mParams.window, PluginFieldType::kINT32, 1);
    mFields.emplace_back(
        "bias_index", mBiasIndex.c_str(), PluginFieldType::kCHAR, static_cast<int32_t>(mBiasIndex.size() + 1));
    mFields.emplace_back("scale", &mParams.scale, PluginFieldType::kFLOAT32, 1);
    mFc.nbFields = static_cast<int32_t>(mFields.size());
    mFc.fields = mFields.data();
}

IPluginV3* WindowAttentionPlugin::clone() noexcept
{
    return new (std::nothrow) WindowAttentionPlugin(*this);
}

PluginFieldCollection const* WindowAttentionPlugin::getFieldsToSerialize() noexcept
{
    return &mFc;
}

bool WindowAttentionPlugin::checkDims(Dims const& q, Dims const& k, Dims const& v, Dims const& table) const noexcept
{
    int64_t const w = mParams.window;
    int64_t const span = 2 * w - 1;
    if (q.nbDims != 4 || !dimsMatch(q, k) || !dimsMatch(q, v))
    {
        logError("SRWindowAttention: q, k, v must share one shape (windows, heads, window*window, head_dim)");
        return false;
    }
    if (!dimIs(q.d[2], w * w) || (q.d[3] >= 0 && q.d[3] != 16 && q.d[3] != 32))
    {
        logError("SRWindowAttention: q must be (windows, heads, " + std::to_string(w * w) + ", 16|32)");
        return false;
    }
    if (table.nbDims != 2 || !dimIs(table.d[1], span * span) || (q.d[1] >= 0 && !dimIs(table.d[0], q.d[1])))
    {
        logError("SRWindowAttention: the bias table must be the compact (heads, " + std::to_string(span * span)
            + ") table");
        return false;
    }
    return true;
}

int32_t WindowAttentionPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != 4 || nbOutputs != 1)
    {
        return -1;
    }
    return checkDims(in[0].desc.dims, in[1].desc.dims, in[2].desc.dims, in[3].desc.dims) ? 0 : -1;
}

int32_t WindowAttentionPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (outputTypes == nullptr || inputTypes == nullptr || nbOutputs != 1 || nbInputs != 4
        || !isFloatOrHalf(inputTypes[0]))
    {
        return -1;
    }
    outputTypes[0] = inputTypes[0];
    return 0;
}

int32_t WindowAttentionPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& /*exprBuilder*/) noexcept
{
    if (inputs == nullptr || outputs == nullptr || nbInputs != 4 || nbOutputs != 1 || nbShapeInputs != 0
        || inputs[0].nbDims != 4 || inputs[3].nbDims != 2)
    {
        return -1;
    }
    outputs[0] = inputs[0];
    return 0;
}

bool WindowAttentionPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != 4 || nbOutputs != 1 || pos < 0 || pos >= 5)
    {
        return false;
    }
    PluginTensorDesc const& d = inOut[pos].desc;
    if (d.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    switch (pos)
    {
    case 0: return isFloatOrHalf(d.type);
    case 3: return isFloatOrHalf(d.type); // the table may stay fp32 in an fp16 graph
    default: return d.type == inOut[0].desc.type;
    }
}

int32_t WindowAttentionPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != 4 || nbOutputs != 1)
    {
        return -1;
    }
    for (int32_t i = 0; i < 4; ++i)
    {
        for (int32_t j = 0; j < in[i].dims.nbDims; ++j)
        {
            if (in[i].dims.d[j] < 0)
            {
                logError("SRWindowAttention: onShapeChange needs concrete dims");
                return -1;
            }
        }
    }
    if (!checkDims(in[0].dims, in[1].dims, in[2].dims, in[3].dims) || !dimsMatch(in[0].dims, out[0].dims))
    {
        return -1;
    }
    return 0;
}

int32_t WindowAttentionPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    if (inputDesc == nullptr || inputs == nullptr || outputs == nullptr)
    {
        return -1;
    }
    Dims const& q = inputDesc[0].dims;
    auto const headDim = static_cast<int32_t>(q.d[3]);
    float const scale = mParams.scale > 0.F ? mParams.scale : 1.F / std::sqrt(static_cast<float>(headDim));
    int32_t const status = launchWindowAttention(stream, toSrDType(inputDesc[0].type), inputs[0], inputs[1],
        inputs[2], inputs[3], toSrDType(inputDesc[3].type), outputs[0], q.d[0], static_cast<int32_t>(q.d[1]),
        mParams.window, headDim, scale, mParams.biasQMinusK);
    if (status != 0)
    {
        logError("SRWindowAttention: kernel launch failed with status " + std::to_string(status));
    }
    return status;
}

WindowAttentionCreator::WindowAttentionCreator()
{
    mFields.emplace_back("window", nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back("bias_index", nullptr, PluginFieldType::kCHAR, 4);
    mFields.emplace_back("scale", nullptr, PluginFieldType::kFLOAT32, 1);
    mFc.nbFields = static_cast<int32_t>(mFields.size());
    mFc.fields = mFields.data();
}

IPluginV3* WindowAttentionCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    WindowAttentionParams params;
    if (!parseWindowAttentionFields(fc, params))
    {
        return nullptr;
    }
    return new (std::nothrow) WindowAttentionPlugin(params);
}

} // namespace srdeploy
