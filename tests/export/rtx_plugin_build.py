"""Subprocess body of test_rtx_plugins.py: build one plugin graph in TensorRT-RTX, print a JSON line.

Run with ``LD_LIBRARY_PATH`` holding a ``libtensorrt_rtx.so -> libtensorrt_rtx.so.1`` symlink: the
RTX ONNX parser ``dlopen``s the unversioned name when it meets a plugin node, the wheel ships only
the ``.so.1``, and the failed open ends the process in ``std::terminate``. A separate process keeps
such an abort (and the loaded plugin library) out of the test session.

    python rtx_plugin_build.py GRAPH.onnx PLUGIN_LIB MIN OPT MAX [EXTRA_JSON]   (sizes as HxW)

EXTRA_JSON: the profile of inputs besides ``lr`` (a two-graph decoder's features and queries), as
``[[name, min_shape, opt_shape, max_shape], ...]``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path


def main(argv: list[str]) -> int:
    import tensorrt_rtx_bindings as trt
    from srdeploy.export.engines import EngineOptions, build_serialized_engine, get_flavour, memory_report
    from srdeploy.export.manifest import BatchedProfile
    from srdeploy.models.registry import ShapeProfile

    from srdeploy.sizes import parse_size

    onnx_path, lib, lo, opt, hi = argv[:5]
    extra = tuple((n, tuple(a), tuple(b), tuple(c)) for n, a, b, c in json.loads(argv[5])) if len(argv) > 5 else ()
    data = Path(onnx_path).read_bytes()
    logger = trt.Logger(trt.Logger.ERROR)
    if trt.get_plugin_registry().load_library(lib) is None:
        print(json.dumps({"error": f"could not load {lib}"}))
        return 1
    creators = sorted(c.name for c in trt.get_plugin_registry().all_creators)
    builder = trt.Builder(logger)
    net = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(net, logger)
    if not parser.parse(data):
        print(json.dumps({"error": [str(parser.get_error(i)) for i in range(parser.num_errors)]}))
        return 1
    types = Counter(net.get_layer(i).type.name for i in range(net.num_layers))
    prof = BatchedProfile.from_shapes(ShapeProfile(parse_size(lo), parse_size(opt), parse_size(hi)))
    messages: list[str] = []
    # the library is already in the registry; EngineOptions.plugin_libraries would load it again
    engine, _ = build_serialized_engine(data, EngineOptions((prof,), extra_inputs=extra), api=trt,
                                        flavour=get_flavour("rtx"), log=lambda m: None, messages=messages)
    print(json.dumps({"layer_types": dict(types), "engine_bytes": len(engine), "creators": creators,
                      "memory": memory_report(messages)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
