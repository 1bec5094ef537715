// CiaoSRLocalEnsemble: IPluginV3 class and creator (definitions in plugin.cpp, kernel in kernel.cu).
// Its name and version constants come from plugins/CiaoSRLocalEnsemble.json via sr_plugin_table.gen.h.
#pragma once

#include "sr_plugins.h"

namespace srdeploy
{

//! Validate fields (it takes none); false (and logs why) on any unknown field.
bool parseLocalEnsembleFields(nvinfer1::PluginFieldCollection const* fc) noexcept;

class LocalEnsemblePlugin final : public PluginBase
{
public:
    LocalEnsemblePlugin() = default;
    nvinfer1::IPluginV3* clone() noexcept override;
    char const* getPluginName() const noexcept override
    {
        return kLocalEnsembleName;
    }
    char const* getPluginVersion() const noexcept override
    {
        return kLocalEnsembleVersion;
    }
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    bool checkDims(nvinfer1::Dims const& query, nvinfer1::Dims const& keys, nvinfer1::Dims const& values) const noexcept;
    nvinfer1::PluginFieldCollection mFc{0, nullptr};
};

class LocalEnsembleCreator final : public nvinfer1::IPluginCreatorV3One
{
public:
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override
    {
        return &mFc;
    }
    char const* getPluginName() const noexcept override
    {
        return kLocalEnsembleName;
    }
    char const* getPluginVersion() const noexcept override
    {
        return kLocalEnsembleVersion;
    }
    char const* getPluginNamespace() const noexcept override
    {
        return kPluginNamespace;
    }

private:
    nvinfer1::PluginFieldCollection mFc{0, nullptr};
};

} // namespace srdeploy
