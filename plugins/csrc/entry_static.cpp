// Library variant libsrdeploy_plugins_static.so: static registration ONLY (REGISTER_TENSORRT_PLUGIN
// runs when the library is dlopen()ed: ctypes.CDLL, LD_PRELOAD, ONNX Runtime's TensorRT EP
// trt_extra_plugin_lib_paths). Never pass this variant to loadLibrary/--dynamicPlugins: the load
// fails and leaves a dangling creator in the registry (docs/plugins.md).
#include "sr_plugins.h"

#if !defined(SRDEPLOY_STATIC_REGISTRATION)
#error "entry_static.cpp needs -DSRDEPLOY_STATIC_REGISTRATION"
#endif

namespace srdeploy
{
REGISTER_TENSORRT_PLUGIN(WindowAttentionCreator);
REGISTER_TENSORRT_PLUGIN(LocalEnsembleCreator);
} // namespace srdeploy
