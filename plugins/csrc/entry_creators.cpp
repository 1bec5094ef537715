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
    // one creator per plugin, from the generated table (sr_plugin_table.gen.h)
#define SRDEPLOY_CREATOR_INSTANCE(Creator) static srdeploy::Creator the##Creator;
    SRDEPLOY_FOR_EACH_CREATOR(SRDEPLOY_CREATOR_INSTANCE)
#undef SRDEPLOY_CREATOR_INSTANCE
#define SRDEPLOY_CREATOR_ADDRESS(Creator) &the##Creator,
    static nvinfer1::IPluginCreatorInterface* const creators[] = {SRDEPLOY_FOR_EACH_CREATOR(SRDEPLOY_CREATOR_ADDRESS)};
#undef SRDEPLOY_CREATOR_ADDRESS
    static_assert(sizeof(creators) / sizeof(creators[0]) == SRDEPLOY_PLUGIN_COUNT, "generated table is inconsistent");
    nbCreators = SRDEPLOY_PLUGIN_COUNT;
    return creators;
}

} // extern "C"
