// TensorRT IPluginV3 plugins of srdeploy: SRWindowAttention and CiaoSRLocalEnsemble.
// Each plugin has its own version constant; tests/plugins/test_reference_emulation.py checks that
// names and versions equal plugins/<Op>.json (the spec).
//
// Written against the API common to TensorRT 10.3 (JetPack 6.1/6.2) and 11.x: IPluginV3 with
// the IPluginV3One{Core,Build,Runtime} capabilities and IPluginCreatorV3One creators only.
// The library entry points (getCreators/setLoggerFinder, or static registration) live in
// separate translation units so that the two library variants never mix (docs/plugins.md).
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sr_plugin_table.gen.h"

namespace srdeploy
{

// k<Plugin>Name / k<Plugin>Version come from the specs: sr_plugin_table.gen.h (generated).
constexpr char const* kPluginNamespace = "";

//! Route plugin errors to TensorRT's logger (set by setLoggerFinder) or to stderr.
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;
void logError(std::string const& message) noexcept;

//! Attributes of SRWindowAttention, as read from a PluginFieldCollection.
struct WindowAttentionParams
{
    int32_t window{0};
    int32_t biasQMinusK{0}; //!< 0: "k-q" (ESC), 1: "q-k" (ASID)
    float scale{0.F};       //!< 0 = default head_dim^-0.5, resolved when the shapes are known
};

//! Parse and validate fields; returns false (and logs why) on any missing/invalid/unknown field.
bool parseWindowAttentionFields(nvinfer1::PluginFieldCollection const* fc, WindowAttentionParams& out) noexcept;
bool parseLocalEnsembleFields(nvinfer1::PluginFieldCollection const* fc) noexcept;

class PluginBase : public nvinfer1::IPluginV3,
                   public nvinfer1::IPluginV3OneCore,
                   public nvinfer1::IPluginV3OneBuild,
                   public nvinfer1::IPluginV3OneRuntime
{
public:
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    char const* getPluginNamespace() const noexcept override
    {
        return kPluginNamespace;
    }
    int32_t getNbOutputs() const noexcept override
    {
        return 1;
    }
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
};

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
