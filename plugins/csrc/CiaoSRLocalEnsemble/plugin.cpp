// CiaoSRLocalEnsemble: the IPluginV3 class, its creator and its field parser (see plugin.h).
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

bool parseLocalEnsembleFields(PluginFieldCollection const* fc) noexcept
{
    if (fc != nullptr && fc->nbFields > 0)
    {
        std::string const name = (fc->fields != nullptr && fc->fields[0].name != nullptr) ? fc->fields[0].name : "";
        logError("CiaoSRLocalEnsemble: takes no fields, got '" + name + "'");
        return false;
    }
    return true;
}

// ---------------------------------------------------------------------------------------
// CiaoSRLocalEnsemble: query (..., C1), keys (..., 4, C1), values (..., 4, C2) -> (..., C2).
// ---------------------------------------------------------------------------------------
IPluginV3* LocalEnsemblePlugin::clone() noexcept
{
    return new (std::nothrow) LocalEnsemblePlugin(*this);
}

PluginFieldCollection const* LocalEnsemblePlugin::getFieldsToSerialize() noexcept
{
    return &mFc;
}

bool LocalEnsemblePlugin::checkDims(Dims const& query, Dims const& keys, Dims const& values) const noexcept
{
    int32_t const r = query.nbDims;
    if (r < 1 || keys.nbDims != r + 1 || values.nbDims != r + 1)
    {
        logError("CiaoSRLocalEnsemble: expected query (..., C1), keys (..., 4, C1), values (..., 4, C2)");
        return false;
    }
    for (int32_t i = 0; i < r - 1; ++i)
    {
        if (!dimIs(keys.d[i], query.d[i]) || !dimIs(values.d[i], query.d[i])
            || (keys.d[i] >= 0 && values.d[i] >= 0 && keys.d[i] != values.d[i]))
        {
            logError("CiaoSRLocalEnsemble: query, keys and values must share their leading (query) dims");
            return false;
        }
    }
    if (!dimIs(keys.d[r - 1], 4) || !dimIs(values.d[r - 1], 4) || !dimIs(keys.d[r], query.d[r - 1]))
    {
        logError("CiaoSRLocalEnsemble: keys must be (..., 4, C1) with C1 = query's last dim; values (..., 4, C2)");
        return false;
    }
    return true;
}

int32_t LocalEnsemblePlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != 3 || nbOutputs != 1)
    {
        return -1;
    }
    return checkDims(in[0].desc.dims, in[1].desc.dims, in[2].desc.dims) ? 0 : -1;
}

int32_t LocalEnsemblePlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (outputTypes == nullptr || inputTypes == nullptr || nbOutputs != 1 || nbInputs != 3
        || !isFloatOrHalf(inputTypes[0]))
    {
        return -1;
    }
    outputTypes[0] = inputTypes[0];
    return 0;
}

int32_t LocalEnsemblePlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& /*exprBuilder*/) noexcept
{
    if (inputs == nullptr || outputs == nullptr || nbInputs != 3 || nbOutputs != 1 || nbShapeInputs != 0)
    {
        return -1;
    }
    int32_t const r = inputs[0].nbDims;
    if (r < 1 || inputs[2].nbDims != r + 1)
    {
        return -1;
    }
    outputs[0] = inputs[0];
    outputs[0].d[r - 1] = inputs[2].d[r];
    return 0;
}

bool LocalEnsemblePlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != 3 || nbOutputs != 1 || pos < 0 || pos >= 4)
    {
        return false;
    }
    PluginTensorDesc const& d = inOut[pos].desc;
    if (d.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    return pos == 0 ? isFloatOrHalf(d.type) : d.type == inOut[0].desc.type;
}

int32_t LocalEnsemblePlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != 3 || nbOutputs != 1)
    {
        return -1;
    }
    if (!checkDims(in[0].dims, in[1].dims, in[2].dims))
    {
        return -1;
    }
    int32_t const r = in[0].dims.nbDims;
    if (out[0].dims.nbDims != r || out[0].dims.d[r - 1] != in[2].dims.d[r])
    {
        logError("CiaoSRLocalEnsemble: output must be (..., C2)");
        return -1;
    }
    return 0;
}

int32_t LocalEnsemblePlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    if (inputDesc == nullptr || inputs == nullptr || outputs == nullptr)
    {
        return -1;
    }
    Dims const& q = inputDesc[0].dims;
    int64_t nQueries = 1;
    for (int32_t i = 0; i + 1 < q.nbDims; ++i)
    {
        nQueries *= q.d[i];
    }
    Dims const& v = inputDesc[2].dims;
    int32_t const status = launchLocalEnsemble(stream, toSrDType(inputDesc[0].type), inputs[0], inputs[1], inputs[2],
        outputs[0], nQueries, static_cast<int32_t>(q.d[q.nbDims - 1]), static_cast<int32_t>(v.d[v.nbDims - 1]));
    if (status != 0)
    {
        logError("CiaoSRLocalEnsemble: kernel launch failed with status " + std::to_string(status));
    }
    return status;
}

IPluginV3* LocalEnsembleCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    if (!parseLocalEnsembleFields(fc))
    {
        return nullptr;
    }
    return new (std::nothrow) LocalEnsemblePlugin();
}

} // namespace srdeploy
