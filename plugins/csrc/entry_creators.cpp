// Library variant libsrdeploy_plugins.so: exports ONLY getCreators and setLoggerFinder, for
// trtexec --dynamicPlugins, IPluginRegistry::loadLibrary / registry.load_library() and
// setPluginsToSerialize. Never add static registration here (docs/plugins.md, "two variants").
#include "sr_plugins.h"

#if defined(SRDEPLOY_STATIC_REGISTRATION)
#error "entry_creators.cpp belongs to the getCreators variant only"
#endif

extern "C"
{

__attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    srdeploy::setLoggerFinder(finder);
}

__attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static srdeploy::WindowAttentionCreator windowAttention;
    static srdeploy::LocalEnsembleCreator localEnsemble;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&windowAttention, &localEnsemble};
    nbCreators = 2;
    return creators;
}

} // extern "C"
