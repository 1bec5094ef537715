"""Model statistics read from an exported ONNX graph, without PyTorch.

:func:`graph_stats` counts, for a stated LR input size:

* **MACs** (one multiply-add = 1, the unit the NTIRE tables and the papers call "FLOPs"):
  ``Conv``, ``ConvTranspose``, ``Gemm``, ``MatMul`` and the project's plugin nodes at their true
  cost (``SRWindowAttention``: ``QK^T`` and ``AV``; ``CiaoSRLocalEnsemble``: scores and weighted
  sum). Biases are not counted (fvcore does not count them either). The per-node rule is
  :func:`srdeploy.onnxlayer.node_macs`, the same one the fp16 pass uses for its MAC share. Custom
  ops cannot hide work from this counter: an op in a custom domain is an error unless the plugin
  registry (:mod:`srdeploy.plugins.registry`) gives its MAC formula.
* **fvcore-convention MACs**: the above plus what fvcore adds for normalisation layers (input
  elements x 5 with an affine, x 4 without; eval BatchNorm x 2), bilinear/bicubic resizes (output
  elements x 4), nearest resizes and global average pools (1 per element), so the two ways of
  counting can be compared on the same footing.
* **parameters**: elements of the floating-point initializers (the deployed, fused weights).
* **activations / #Conv** (NTIRE convention): elements of all ``Conv`` outputs and number of
  ``Conv`` nodes. Unlike the NTIRE hooks (``nn.Conv2d`` modules only), functional convolutions
  appear here too; the note says so.
* **tensor traffic**: bytes of every node's inputs and outputs, an upper bound on memory traffic
  of an unfused execution, used for the achieved-bandwidth fraction in ``steady`` mode.

Shapes come from ONNX shape inference on a copy of the graph with the input fixed to the given
size; when inference cannot resolve a shape that a counted node needs (data-dependent reshapes),
the graph is run once with ONNX Runtime to observe it.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from srdeploy import onnxlayer
from srdeploy.errors import BackendError, SrdeployError

Shape = onnxlayer.Shape

_NORM_OPS = ("LayerNormalization", "InstanceNormalization", "GroupNormalization", "BatchNormalization")


@dataclass
class GraphStats:
    """What :func:`graph_stats` measured. MAC figures are plain counts (divide by 1e9 for G)."""

    input_shape: Shape
    macs: int
    macs_fvcore_convention: int
    params: int
    activations: int
    num_conv: int
    traffic_bytes: int
    macs_by_op: dict[str, int] = field(default_factory=dict)
    plugin_nodes: dict[str, int] = field(default_factory=dict)
    shape_source: str = "onnx shape inference"
    notes: list[str] = field(default_factory=list)

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = "x".join(str(s) for s in self.input_shape)
        d["gmacs"] = self.gmacs
        d["unit"] = "MACs (1 multiply-add = 1); NTIRE tables call GMACs 'FLOPs [G]'"
        return d


_ITEMSIZE = {1: 4, 10: 2, 11: 8, 16: 2, 6: 4, 7: 8, 9: 1, 2: 1, 3: 1, 5: 2, 12: 4, 13: 8}


def _fix_input(model: Any, input_shapes: Mapping[str, Shape]) -> Any:
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name for i in m.graph.initializer}
    for inp in m.graph.input:
        if inp.name in inits:
            continue
        if inp.name not in input_shapes:
            raise SrdeployError(
                f"graph input {inp.name!r} needs a shape; give one for each of "
                f"{[i.name for i in m.graph.input if i.name not in inits]}"
            )
        shape = input_shapes[inp.name]
        dims = inp.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise SrdeployError(f"graph input {inp.name!r} has rank {len(dims)}, got shape {shape}")
        for d, v in zip(dims, shape, strict=True):
            d.Clear()
            d.dim_value = int(v)
    del m.graph.value_info[:]
    return m


def _infer(model: Any) -> tuple[dict[str, Shape | None], dict[str, int]]:
    inferred = onnxlayer.infer(model)
    return inferred.shapes, inferred.types


_FOLDABLE = {
    "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Add", "Sub", "Mul", "Div", "Mod", "Cast",
    "Reshape", "Floor", "Ceil", "Equal", "Less", "Greater", "Where", "Max", "Min", "Neg", "Identity", "Range",
    "ReduceProd", "ConstantOfShape", "Not", "And", "Or", "Abs", "Sqrt", "Pow", "Expand", "Size", "Tile",
    "Transpose", "Split", "Clip", "Sign", "Round", "ReduceSum", "ReduceMax", "ReduceMin", "Reciprocal",
}
_SMALL = 4096  # elements: shape arithmetic, never activations


def _fold_shape_values(model: Any, shapes: dict[str, Shape | None]) -> tuple[Any, int]:
    """Evaluate the small integer subgraphs that compute shapes (pads, reshape targets) in numpy.

    ONNX shape inference cannot see through a ``Pad`` whose pads are computed from ``Shape`` with
    ``Mod``/``Div`` (a model padding to a window multiple); evaluating these tiny tensors with the
    ONNX reference evaluator and turning them into initializers lets inference finish without
    running the network. Returns the new model and the number of tensors folded.
    """
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    values: dict[str, np.ndarray] = {}
    for init in model.graph.initializer:
        if math.prod(init.dims) <= _SMALL:
            values[init.name] = numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and math.prod(a.t.dims) <= _SMALL:
                    values[node.output[0]] = numpy_helper.to_array(a.t)
    folded: set[str] = set()
    for node in model.graph.node:
        if node.op_type not in _FOLDABLE or any(o in values for o in node.output):
            continue
        if node.op_type == "Shape":
            shp = shapes.get(node.input[0])
            if shp is None:
                continue
            start = int(onnxlayer.attr(node, "start", 0))
            end = onnxlayer.attr(node, "end", None)
            values[node.output[0]] = np.array(shp[start:end], dtype=np.int64)
            folded.add(node.output[0])
            continue
        if node.op_type == "Size":
            shp = shapes.get(node.input[0])
            if shp is not None:
                values[node.output[0]] = np.array(math.prod(shp), dtype=np.int64)
                folded.add(node.output[0])
            continue
        if not all((not i) or i in values for i in node.input):
            continue
        g = helper.make_graph(
            [node], "fold", [], [helper.make_empty_tensor_value_info(o) for o in node.output if o],
            [numpy_helper.from_array(values[i], i) for i in dict.fromkeys(node.input) if i],
        )
        try:
            outs = ReferenceEvaluator(helper.make_model(g, opset_imports=model.opset_import)).run(None, {})
        except Exception:  # an op the reference evaluator cannot run here: leave it to ONNX Runtime
            continue
        for name, val in zip([o for o in node.output if o], outs, strict=True):
            arr = np.asarray(val)
            if arr.size <= _SMALL:
                values[name] = arr
                folded.add(name)
    if not folded:
        return model, 0
    m = onnx.ModelProto()
    m.CopyFrom(model)
    keep = [n for n in m.graph.node if not (n.output and all((not o) or o in folded for o in n.output))]
    del m.graph.node[:]
    m.graph.node.extend(keep)
    m.graph.initializer.extend(numpy_helper.from_array(values[n], n) for n in sorted(folded))
    return m, len(folded)


def _observe(model: Any, names: Sequence[str], input_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
    """Run the graph once with ONNX Runtime, exposing ``names`` as outputs, to read their shapes."""
    import onnx

    try:
        import onnxruntime  # noqa: F401 - only to say why observing is impossible
    except ImportError as exc:
        raise BackendError(
            f"ONNX shape inference could not resolve {len(names)} tensor shapes and onnxruntime is not "
            "installed to observe them; pip install 'srdeploy[ort]' or export with static shapes"
        ) from exc
    m = onnx.ModelProto()
    m.CopyFrom(model)
    existing = {o.name for o in m.graph.output}
    for n in names:
        if n not in existing:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    sess = onnxlayer.session(m, onnxlayer.SessionConfig(optimization="disable"))
    feed = {}
    for i in sess.get_inputs():
        dtype = np.float16 if "float16" in i.type else np.float32
        feed[i.name] = np.random.default_rng(0).random(input_shapes[i.name]).astype(dtype)
    outs = sess.run(list(names), feed)
    return {n: tuple(int(d) for d in np.shape(o)) for n, o in zip(names, outs, strict=True)}


def _needed(node: Any) -> list[str]:
    """The tensors whose shapes the counters need for ``node``."""
    op = node.op_type
    if node.domain not in onnxlayer.STANDARD_DOMAINS or op in ("ConvTranspose", "Gemm", "MatMul", "Einsum"):
        return list(node.input)
    if op == "Conv":
        return [node.input[1], node.output[0]]
    if op in _NORM_OPS or op == "GlobalAveragePool":
        return [node.input[0]]
    if op == "Resize":
        return [node.output[0]]
    return []


def _fvcore_extra(node: Any, ins: list[Shape | None], outs: list[Shape | None]) -> int:
    op = node.op_type
    if op in _NORM_OPS:
        x = ins[0]
        if x is None:
            return 0
        if op == "BatchNormalization":
            return math.prod(x) * 2
        affine = len(node.input) > 1 and bool(node.input[1])
        return math.prod(x) * (5 if affine else 4)
    if op == "Resize" and outs and outs[0] is not None:
        mode = onnxlayer.attr(node, "mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        return math.prod(outs[0]) * (1 if mode == "nearest" else 4)
    if op == "GlobalAveragePool" and ins and ins[0] is not None:
        return math.prod(ins[0])
    return 0


def graph_stats(
    model: str | os.PathLike[str] | bytes | Any,
    input_shapes: Mapping[str, Shape] | Shape,
    *,
    observe: bool = True,
) -> GraphStats:
    """Count MACs, parameters, activations and #Conv of an ONNX graph for the given input shape(s).

    ``input_shapes`` is one shape for a single-input graph (e.g. ``(1, 3, 256, 256)``) or a
    mapping from input name to shape. ``observe=False`` forbids the ONNX Runtime fallback.
    """
    import onnx

    proto = onnxlayer.load(model)
    graph_inputs = [i.name for i in proto.graph.input if i.name not in {x.name for x in proto.graph.initializer}]
    if not isinstance(input_shapes, Mapping):
        if len(graph_inputs) != 1:
            raise SrdeployError(f"the graph has inputs {graph_inputs}; give a shape for each by name")
        input_shapes = {graph_inputs[0]: tuple(input_shapes)}
    fixed = _fix_input(proto, input_shapes)
    shapes, dtypes = _infer(fixed)
    notes: list[str] = []
    source = "onnx shape inference"

    formulas = onnxlayer.plugin_mac_formulas()
    unknown = sorted({n.op_type for n in fixed.graph.node if n.domain not in onnxlayer.STANDARD_DOMAINS
                      and n.op_type not in formulas})
    if unknown:
        raise BackendError(
            f"the graph holds custom ops {unknown} whose cost is unknown; register their MAC formula in "
            "srdeploy.plugins.registry so MACs cannot be under-counted"
        )
    def unresolved(model: Any, known: dict[str, Shape | None]) -> list[str]:
        return sorted({t for n in model.graph.node for t in _needed(n) if t and known.get(t) is None})

    missing = unresolved(fixed, shapes)
    for _ in range(200):  # fold shape arithmetic and re-infer until every needed shape is known
        if not missing:
            break
        folded_model, nfold = _fold_shape_values(fixed, shapes)
        if nfold == 0:
            break
        fixed = folded_model
        shapes, dtypes = _infer(fixed)
        missing = unresolved(fixed, shapes)
        source = "onnx shape inference + shape arithmetic folded in numpy"
    if missing:
        if not observe:
            raise BackendError(
                f"shape inference left {len(missing)} tensor shapes unresolved; export with static shapes"
            )
        shapes.update(_observe(fixed, missing, input_shapes))
        source += f" + {len(missing)} shapes observed with ONNX Runtime"

    macs = 0
    extra = 0
    by_op: Counter[str] = Counter()
    plugins: Counter[str] = Counter()
    activations = 0
    num_conv = 0
    traffic = 0
    for node in fixed.graph.node:
        ins = [shapes.get(t) if t else None for t in node.input]
        outs = [shapes.get(t) if t else None for t in node.output]
        n = onnxlayer.node_macs(node, ins, outs, formulas)
        if node.domain not in onnxlayer.STANDARD_DOMAINS:
            plugins[node.op_type] += 1
        macs += n
        if n:
            by_op[node.op_type] += n
        extra += _fvcore_extra(node, ins, outs)
        if node.op_type == "Conv":
            num_conv += 1
            activations += math.prod(onnxlayer.need(outs, 0, "Conv"))
        if node.op_type not in ("Constant", "Shape"):
            for t, s in zip(list(node.input) + list(node.output), ins + outs, strict=True):
                if t and s is not None:
                    traffic += math.prod(s) * _ITEMSIZE.get(dtypes.get(t, 1), 4)
    params = 0
    # Resize roi/scales are float initializers but not weights; scalars are folded constants
    not_weights = {t for n in proto.graph.node if n.op_type == "Resize" for t in n.input[1:]}
    # the fp16 pass keeps an fp32 copy of a weight that fp32 islands also read (e.g. ESC's shared
    # 13x13 kernel): one weight stored in two precisions is one parameter tensor
    names = {init.name for init in proto.graph.initializer}
    for init in proto.graph.initializer:
        if init.name in not_weights or math.prod(init.dims) <= 1:
            continue
        if init.name.endswith("__fp16") and init.name[: -len("__fp16")] in names:
            continue
        if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                              onnx.TensorProto.DOUBLE):
            params += math.prod(init.dims)
    notes.append(
        "activations/#Conv count ONNX Conv nodes (functional convolutions included), "
        "the NTIRE hooks count nn.Conv2d modules only"
    )
    notes.append(
        "parameters = elements of the floating-point initializers of the deployed graph (scalars and Resize "
        "scales excluded; small constant buffers such as mean vectors are included, identical tensors "
        "deduplicated by the exporter and fp32/fp16 copies of one weight are counted once)"
    )
    first = next(iter(input_shapes.values()))
    return GraphStats(
        input_shape=tuple(first),
        macs=int(macs),
        macs_fvcore_convention=int(macs + extra),
        params=int(params),
        activations=int(activations),
        num_conv=num_conv,
        traffic_bytes=int(traffic),
        macs_by_op=dict(by_op),
        plugin_nodes=dict(plugins),
        shape_source=source,
        notes=notes,
    )
