"""What TensorRT-RTX's builder does with an ONNX graph (e.g. ``sr-export --int8``'s Q/DQ graph).

    python benchmarks/rtx_int8_build.py GRAPH.onnx [GRAPH2.onnx ...] [--shape 1x3x32x32]

Needs ``tensorrt-rtx-cu13-libs`` / ``tensorrt-rtx-cu13-bindings`` 1.7.1.116 (module
``tensorrt_rtx_bindings``; builds on a CPU-only machine, ahead of time). For each graph: parse,
build a strongly typed engine for one static input shape, and print the result (parse errors,
build success and engine size, or the builder's error lines). Engines cannot be run without a GPU.
TensorRT-RTX has no INT8 convolutions, so this records what it does with Conv Q/DQ.
"""

from __future__ import annotations

import argparse
import sys


def build(path: str, shape: tuple[int, ...]) -> str:
    import tensorrt_rtx_bindings as trt  # type: ignore[import-not-found]

    msgs: list[str] = []

    class Log(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            if int(severity) <= int(trt.ILogger.Severity.WARNING):
                msgs.append(f"{severity.name}: {msg}")

    logger = Log()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    with open(path, "rb") as f:
        ok = parser.parse(f.read())
    if not ok:
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        return f"{path}: PARSE FAILED: " + " | ".join(errs[:3])
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    inp = network.get_input(0)
    profile.set_shape(inp.name, shape, shape, shape)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        return f"{path}: BUILD FAILED: " + " | ".join(m for m in msgs if m.startswith("ERROR"))[:600]
    warn = [m for m in msgs if "int8" in m.lower() or "quant" in m.lower()]
    return f"{path}: built, {plan.nbytes / 1e6:.1f} MB; Q/DQ-related messages: {warn[:3] or 'none'}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("graphs", nargs="+")
    p.add_argument("--shape", default="1x3x32x32")
    args = p.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split("x"))
    try:
        import tensorrt_rtx_bindings  # noqa: F401  # type: ignore[import-not-found]
    except ImportError as exc:
        print(f"error: TensorRT-RTX is not installed ({exc}); pip install tensorrt-rtx-cu13-libs==1.7.1.116 "
              "tensorrt-rtx-cu13-bindings==1.7.1.116", file=sys.stderr)
        return 2
    for g in args.graphs:
        print(build(g, shape), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
