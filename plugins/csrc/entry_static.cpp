// Library variant libsrdeploy_plugins_static.so: static registration ONLY (runs when the library
// is dlopen()ed: ctypes.CDLL, LD_PRELOAD, ONNX Runtime's TensorRT EP trt_extra_plugin_lib_paths).
// Never pass this variant to loadLibrary/--dynamicPlugins: the load fails and leaves a dangling
// creator in the registry (docs/plugins.md).
//
// This is REGISTER_TENSORRT_PLUGIN plus one guard: registration is a virtual call into
// IPluginRegistry, whose vtable changed between TensorRT 10 and 11 (the legacy IPluginCreator
// overloads were removed), so a library built against 10.x headers and loaded into an 11.x
// runtime (or the reverse) would call the wrong slot and crash. The guard compares the header
// major version with getInferLibVersion() and logs instead of registering on a mismatch. The
// getCreators variant has no such issue: TensorRT calls into us, not the other way round.
#include "sr_plugins.h"

#include <string>

#if !defined(SRDEPLOY_STATIC_REGISTRATION)
#error "entry_static.cpp needs -DSRDEPLOY_STATIC_REGISTRATION"
#endif

namespace srdeploy
{
namespace
{

template <typename Creator>
class GuardedRegistrar
{
public:
    GuardedRegistrar()
    {
        int32_t const runtimeMajor = getInferLibVersion() / 10000;
        if (runtimeMajor != NV_TENSORRT_MAJOR)
        {
            logError(std::string("not registering ") + mCreator.getPluginName() + ": built against TensorRT "
                + std::to_string(NV_TENSORRT_MAJOR) + " headers but loaded into TensorRT "
                + std::to_string(runtimeMajor) + "; rebuild with -DTensorRT_ROOT of the runtime's version");
            return;
        }
        getPluginRegistry()->registerCreator(mCreator, "");
    }

private:
    Creator mCreator;
};

// one registrar per plugin, from the generated table (sr_plugin_table.gen.h)
#define SRDEPLOY_REGISTRAR(Creator) GuardedRegistrar<Creator> const gRegistrar##Creator;
SRDEPLOY_FOR_EACH_CREATOR(SRDEPLOY_REGISTRAR)
#undef SRDEPLOY_REGISTRAR

} // namespace
} // namespace srdeploy
