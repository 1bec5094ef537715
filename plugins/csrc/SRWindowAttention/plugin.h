// SRWindowAttention: IPluginV3 class and creator (definitions in plugin.cpp, kernel in kernel.cu).
// Its name and version constants come from plugins/SRWindowAttention.json via sr_plugin_table.gen.h.
#pragma once

#include "sr_plugins.h"

namespace srdeploy
{

//! Attributes of SRWindowAttention, as read from a PluginFieldCollection.
struct WindowAttentionParams
{
    int32_t window{0};
    int32_t biasQMinusK{0}; //!< 0: "k-q" (ESC), 1: "q-k" (ASID)
    float scale{0.F};       //!< 0 = default head_dim^-0.5, resolved when the shapes are known
};

//! Parse and validate fields; returns false (and logs why) on any missing/invalid/unknown field.
bool parseWindowAttentionFields(nvinfer1::PluginFieldCollection const* fc, WindowAttentionParams& out) noexcept;

class WindowAttentionPlugin final : public PluginBase
{
public:
    explicit WindowAttentionPlugin(WindowAttentionParams const& params);
    WindowAttentionPlugin(WindowAttentionPlugin const& other);
    WindowAttentionPlugin& operator=(WindowAttentionPlugin const&) = delete;
    ~WindowAttentionPlugin() override = default;

    nvinfer1::IPluginV3* clone() noexcept override;
    char const* getPluginName() const noexcept override
    {
        return kWindowAttentionName;
    }
    char const* getPluginVersion() const noexcept override
    {
        return kWindowAttentionVersion;
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

    WindowAttentionParams const& params() const noexcept
    {
        return mParams;
    }

private:
    //! Shape rules; dims with value -1 (unknown at build time) are skipped.
    bool checkDims(nvinfer1::Dims const& q, nvinfer1::Dims const& k, nvinfer1::Dims const& v,
        nvinfer1::Dims const& table) const noexcept;
    void initFields() noexcept;

    WindowAttentionParams mParams;
    std::string mBiasIndex;
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFc{};
};

class WindowAttentionCreator final : public nvinfer1::IPluginCreatorV3One
{
public:
    WindowAttentionCreator();
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override
    {
        return &mFc;
    }
    char const* getPluginName() const noexcept override
    {
        return kWindowAttentionName;
    }
    char const* getPluginVersion() const noexcept override
    {
        return kWindowAttentionVersion;
    }
    char const* getPluginNamespace() const noexcept override
    {
        return kPluginNamespace;
    }

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFc{};
};

} // namespace srdeploy
