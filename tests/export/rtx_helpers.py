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
