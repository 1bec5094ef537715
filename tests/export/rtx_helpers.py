"""Test helpers: parse a graph into a TensorRT-RTX network and describe its layers."""

from __future__ import annotations

from collections import Counter
from typing import Any


def parse_network(trt: Any, data: bytes) -> tuple[Any, Any, Any]:
    """(builder, network, parser) of ``data`` in a strongly typed network; asserts the parse."""
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    net = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(net, logger)
    assert parser.parse(data), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    return builder, net, parser


def rtx_network_types(trt: Any, data: bytes) -> Counter[str]:
    _, net, _ = parse_network(trt, data)
    return Counter(net.get_layer(i).type.name for i in range(net.num_layers))


def conv_output_dtypes(trt: Any, data: bytes) -> Counter[str]:
    """Output data types of the Convolution and MatMul layers (where the MACs are)."""
    _, net, _ = parse_network(trt, data)
    out: Counter[str] = Counter()
    for i in range(net.num_layers):
        layer = net.get_layer(i)
        if layer.type in (trt.LayerType.CONVOLUTION, trt.LayerType.MATRIX_MULTIPLY):
            out[layer.get_output(0).dtype.name] += 1
    return out


def two_graph_shapes(manifest: dict[str, Any], role: str) -> tuple[Any, tuple[Any, ...]]:
    """The (lr profile, extra input shapes) ``sr-export`` wrote in a two-graph manifest's trtexec command."""
    import re

    from srdeploy.export.manifest import BatchedProfile

    from srdeploy.sizes import Size

    cmd = manifest["graphs"][role]["trtexec"]
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    for kind in ("min", "opt", "max"):
        m = re.search(rf"--{kind}Shapes=(\S+)", cmd)
        assert m, cmd
        for item in m.group(1).split(","):
            n, dims = item.split(":")
            shapes.setdefault(n, {})[kind] = tuple(int(d) for d in dims.split("x"))
    lr = shapes.pop("lr")
    prof = BatchedProfile(*[(lr[k][0], Size(lr[k][2], lr[k][3])) for k in ("min", "opt", "max")])
    return prof, tuple((n, s["min"], s["opt"], s["max"]) for n, s in shapes.items())
