// Host side shared by the srdeploy TensorRT plugins (see sr_plugins.h); each plugin's class,
// creator and field parser are in plugins/csrc/<Op>/plugin.cpp.
#include "sr_plugins.h"

#include "sr_kernels.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <new>

using namespace nvinfer1;

namespace srdeploy
{
namespace
{

ILoggerFinder* gLoggerFinder{nullptr};

} // namespace

namespace detail
{


bool isFloatOrHalf(DataType t) noexcept
{
    return t == DataType::kFLOAT || t == DataType::kHALF;
}

SrDType toSrDType(DataType t) noexcept
{
    return t == DataType::kHALF ? SrDType::kFloat16 : SrDType::kFloat32;
}

// A dim that TensorRT does not know yet (-1) matches anything.
bool dimIs(int64_t actual, int64_t expected) noexcept
{
    return actual < 0 || actual == expected;
}

bool dimsMatch(Dims const& a, Dims const& b) noexcept
{
    if (a.nbDims != b.nbDims)
    {
        return false;
    }
    for (int32_t i = 0; i < a.nbDims; ++i)
    {
        if (a.d[i] >= 0 && b.d[i] >= 0 && a.d[i] != b.d[i])
        {
            return false;
        }
    }
    return true;
}

bool readInt(PluginField const& f, int32_t& out) noexcept
{
    if (f.data == nullptr || f.length != 1)
    {
        return false;
    }
    if (f.type == PluginFieldType::kINT32)
    {
        out = *static_cast<int32_t const*>(f.data);
        return true;
    }
    if (f.type == PluginFieldType::kINT64)
    {
        int64_t const v = *static_cast<int64_t const*>(f.data);
        if (v < INT32_MIN || v > INT32_MAX)
        {
            return false;
        }
        out = static_cast<int32_t>(v);
        return true;
    }
    return false;
}

bool readFloat(PluginField const& f, float& out) noexcept
{
    if (f.data == nullptr || f.length != 1)
    {
        return false;
    }
    if (f.type == PluginFieldType::kFLOAT32)
    {
        out = *static_cast<float const*>(f.data);
        return true;
    }
    if (f.type == PluginFieldType::kFLOAT64)
    {
        out = static_cast<float>(*static_cast<double const*>(f.data));
        return true;
    }
    return false;
}

bool readString(PluginField const& f, std::string& out) noexcept
{
    if (f.type != PluginFieldType::kCHAR || f.data == nullptr || f.length < 0)
    {
        return false;
    }
    char const* s = static_cast<char const*>(f.data);
    out.assign(s, strnlen(s, static_cast<size_t>(f.length)));
    return true;
}

} // namespace detail

void setLoggerFinder(ILoggerFinder* finder) noexcept
{
    gLoggerFinder = finder;
}

void logError(std::string const& message) noexcept
{
    std::string const line = "[srdeploy plugins] " + message;
    ILogger* logger = gLoggerFinder != nullptr ? gLoggerFinder->findLogger() : nullptr;
    if (logger != nullptr)
    {
        logger->log(ILogger::Severity::kERROR, line.c_str());
    }
    else
    {
        std::fprintf(stderr, "%s\n", line.c_str());
    }
}

// ---------------------------------------------------------------------------------------
// PluginBase
// ---------------------------------------------------------------------------------------
IPluginCapability* PluginBase::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* PluginBase::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone(); // no per-context resources
}

} // namespace srdeploy
