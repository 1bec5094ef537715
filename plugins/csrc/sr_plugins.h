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

#include "sr_kernels.h"
#include "sr_plugin_table.gen.h"

namespace srdeploy
{

// k<Plugin>Name / k<Plugin>Version come from the specs: sr_plugin_table.gen.h (generated).
constexpr char const* kPluginNamespace = "";

//! Route plugin errors to TensorRT's logger (set by setLoggerFinder) or to stderr.
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;
void logError(std::string const& message) noexcept;

namespace detail
{
// Field and shape helpers shared by the plugin classes (sr_plugins.cpp).
bool isFloatOrHalf(nvinfer1::DataType t) noexcept;
SrDType toSrDType(nvinfer1::DataType t) noexcept;
bool dimIs(int64_t actual, int64_t expected) noexcept;
bool dimsMatch(nvinfer1::Dims const& a, nvinfer1::Dims const& b) noexcept;
bool readInt(nvinfer1::PluginField const& f, int32_t& out) noexcept;
bool readFloat(nvinfer1::PluginField const& f, float& out) noexcept;
bool readString(nvinfer1::PluginField const& f, std::string& out) noexcept;
} // namespace detail

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

} // namespace srdeploy

// Every plugin's class and creator (plugins/csrc/<Op>/plugin.h), from the generated table.
#include "sr_plugin_classes.gen.h"
