"""Model statistics read from an exported ONNX graph, without PyTorch.

:func:`graph_stats` counts, for a stated LR input size:

* **MACs** (one multiply-add = 1, the unit the NTIRE tables and the papers call "FLOPs"):
  ``Conv``, ``ConvTranspose``, ``Gemm``, ``MatMul`` and the project's plugin nodes at their true
  cost (``SRWindowAttention``: ``QK^T`` and ``AV``; ``CiaoSRLocalEnsemble``: scores and weighted
  sum). Biases are not counted (fvcore does not count them either). Custom ops cannot hide
  work from this counter: an unknown op in a custom domain is an error unless it is in
  :data:`PLUGIN_MACS`.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srdeploy.errors import BackendError, SrdeployError

Shape = tuple[int, ...]

#: Plugin op types (contract E) and their MACs from input shapes.
PLUGIN_MACS: dict[str, Callable[[list[Shape | None]], int]] = {}

_MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum")
_NORM_OPS = ("LayerNormalization", "InstanceNormalization", "GroupNormalization", "BatchNormalization")


def _plugin(name: str) -> Callable[[Callable[[list[Shape | None]], int]], Callable[[list[Shape | None]], int]]:
    def deco(fn: Callable[[list[Shape | None]], int]) -> Callable[[list[Shape | None]], int]:
        PLUGIN_MACS[name] = fn
        return fn

    return deco


def _need(shapes: Sequence[Shape | None], idx: int, op: str) -> Shape:
    s = shapes[idx] if idx < len(shapes) else None
    if s is None:
        raise BackendError(f"cannot resolve the shape of input {idx} of a {op} node; re-export with static shapes")
    return s


@_plugin("SRWindowAttention")
def _window_attention_macs(shapes: list[Shape | None]) -> int:
    # q, k, v: (B*nW, heads, N, d); softmax(q k^T + bias) v -> 2 * B*nW * heads * N * N * d
    q = _need(shapes, 0, "SRWindowAttention")
    v = _need(shapes, 2, "SRWindowAttention")
    bn, heads, n, d = q
    return bn * heads * n * n * d + bn * heads * n * n * v[-1]


@_plugin("CiaoSRLocalEnsemble")
def _local_ensemble_macs(shapes: list[Shape | None]) -> int:
    # query (Q, C1), keys (Q, 4, C1), values (Q, 4, C2): 4 dot products + weighted sum of 4 values
    k = _need(shapes, 1, "CiaoSRLocalEnsemble")
    v = _need(shapes, 2, "CiaoSRLocalEnsemble")
    return math.prod(k) + math.prod(v)


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


def _dims(vi: Any) -> Shape | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = []
    for d in t.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            return None
    return tuple(dims)


_ITEMSIZE = {1: 4, 10: 2, 11: 8, 16: 2, 6: 4, 7: 8, 9: 1, 2: 1, 3: 1, 5: 2, 12: 4, 13: 8}


def load_onnx(model: str | os.PathLike[str] | bytes | Any) -> Any:
    """Load an ONNX model (path, bytes or ModelProto) with a clear error for bad files."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    try:
        if isinstance(model, bytes):
            return onnx.load_from_string(model)
        path = Path(model)
        if not path.is_file():
            raise SrdeployError(f"ONNX file {path} does not exist; export one with sr-export")
        return onnx.load(str(path), load_external_data=True)
    except SrdeployError:
        raise
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError... for corrupt files
        what = "the given bytes" if isinstance(model, bytes) else str(model)
        raise BackendError(f"{what} is not a valid ONNX model ({type(exc).__name__}: {exc}); re-export it") from exc


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
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:  # inference failures of exotic ops: fall back to observed shapes
        inferred = model
        del exc
    shapes: dict[str, Shape | None] = {}
    dtypes: dict[str, int] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        shapes[vi.name] = _dims(vi)
        dtypes[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
        dtypes[init.name] = init.data_type
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = tuple(int(d) for d in a.t.dims)
                    dtypes[node.output[0]] = a.t.data_type
    return shapes, dtypes


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
            start = int(_attr(node, "start", 0))
            end = _attr(node, "end", None)
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
        import onnxruntime as ort
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
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = _session_with_plugins(m.SerializeToString(), opts)
    feed = {}
    for i in sess.get_inputs():
        dtype = np.float16 if "float16" in i.type else np.float32
        feed[i.name] = np.random.default_rng(0).random(input_shapes[i.name]).astype(dtype)
    outs = sess.run(list(names), feed)
    return {n: tuple(int(d) for d in np.shape(o)) for n, o in zip(names, outs, strict=True)}


def _session_with_plugins(data: bytes, opts: Any) -> Any:
    import onnx

    model = onnx.load_from_string(data)
    custom = [n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx", "com.microsoft")]
    if custom:
        try:
            from srdeploy.plugins import ort_session
        except ImportError as exc:
            raise BackendError(
                f"the graph holds plugin nodes {sorted(set(custom))}; running it on ONNX Runtime needs "
                "srdeploy.plugins.ort_session (pip install 'srdeploy[dev]' for onnxruntime-extensions)"
            ) from exc
        return ort_session(data, sess_options=opts)
    import onnxruntime as ort

    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _node_macs(node: Any, ins: list[Shape | None], outs: list[Shape | None]) -> int:
    op = node.op_type
    if op == "Conv":
        w = _need(ins, 1, op)
        y = _need(outs, 0, op)
        # (N, Cout, *spatial_out) x (Cin/group) x prod(kernel)
        return math.prod(y) * w[1] * math.prod(w[2:])
    if op == "ConvTranspose":
        x = _need(ins, 0, op)
        w = _need(ins, 1, op)  # (Cin, Cout/group, *k)
        return math.prod(x) * w[1] * math.prod(w[2:])
    if op == "Gemm":
        a = _need(ins, 0, op)
        b = _need(ins, 1, op)
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return m * k * n
    if op == "MatMul":
        a = _need(ins, 0, op)
        b = _need(ins, 1, op)
        if len(a) == 1:
            a = (1, a[0])
        if len(b) == 1:
            b = (b[0], 1)
        batch = np.broadcast_shapes(a[:-2], b[:-2])
        return math.prod(batch) * a[-2] * a[-1] * b[-1]
    if op == "Einsum":
        # Every distinct index letter of the equation spans one loop: MACs = product of all sizes.
        raw = _attr(node, "equation", b"")
        eq = (raw.decode() if isinstance(raw, bytes) else str(raw)).replace(" ", "")
        lhs = eq.split("->")[0].split(",")
        sizes: dict[str, int] = {}
        for term, shp in zip(lhs, ins, strict=False):
            if shp is None or "..." in term:
                raise BackendError(f"cannot count Einsum {eq!r} without static shapes or with ellipses")
            for ch, d in zip(term, shp, strict=True):
                sizes[ch] = max(sizes.get(ch, 1), d)
        return math.prod(sizes.values()) if len(lhs) > 1 else 0
    return 0


def _needed(node: Any) -> list[str]:
    """The tensors whose shapes the counters need for ``node``."""
    op = node.op_type
    if op in PLUGIN_MACS or op in ("ConvTranspose", "Gemm", "MatMul", "Einsum"):
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
        mode = _attr(node, "mode", b"nearest")
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

    proto = load_onnx(model)
    graph_inputs = [i.name for i in proto.graph.input if i.name not in {x.name for x in proto.graph.initializer}]
    if not isinstance(input_shapes, Mapping):
        if len(graph_inputs) != 1:
            raise SrdeployError(f"the graph has inputs {graph_inputs}; give a shape for each by name")
        input_shapes = {graph_inputs[0]: tuple(input_shapes)}
    fixed = _fix_input(proto, input_shapes)
    shapes, dtypes = _infer(fixed)
    notes: list[str] = []
    source = "onnx shape inference"

    def counted(node: Any) -> bool:
        return node.op_type in _MAC_OPS or node.op_type in PLUGIN_MACS

    known_domains = ("", "ai.onnx", "com.microsoft")
    unknown = sorted({n.op_type for n in fixed.graph.node if n.domain not in known_domains and not counted(n)})
    if unknown:
        raise BackendError(
            f"the graph holds custom ops {unknown} whose cost is unknown; add them to "
            "srdeploy.runtime.graphstats.PLUGIN_MACS so MACs cannot be under-counted"
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
        if node.op_type in PLUGIN_MACS:
            n = PLUGIN_MACS[node.op_type](ins)
            plugins[node.op_type] += 1
        else:
            n = _node_macs(node, ins, outs)
        macs += n
        if n:
            by_op[node.op_type] += n
        extra += _fvcore_extra(node, ins, outs)
        if node.op_type == "Conv":
            num_conv += 1
            activations += math.prod(_need(outs, 0, "Conv"))
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


def fvcore_gmacs(model: Any, input_hw: tuple[int, int] = (256, 256)) -> float:
    """The NTIRE convention: fvcore ``FlopCountAnalysis`` on ``torch.rand(1, 3, H, W)``, in G.

    Needs torch and fvcore (imported lazily); fvcore counts one multiply-add as one "flop".
    """
    from srdeploy.errors import require

    torch = require("torch", "torch")
    fv = require("fvcore.nn", "dev")
    x = torch.rand(1, 3, *input_hw)  # type: ignore[attr-defined]
    analysis = fv.FlopCountAnalysis(model, x)  # type: ignore[attr-defined]
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return float(analysis.total()) / 1e9


def torch_activations(model: Any, input_hw: tuple[int, int] = (256, 256)) -> tuple[int, int]:
    """The NTIRE hook convention: (elements of all ``nn.Conv2d`` outputs, number of Conv2d calls).

    Functional ``F.conv2d`` calls are invisible to these hooks, as in the official harness.
    """
    from srdeploy.errors import require

    torch = require("torch", "torch")
    counts = [0, 0]

    def hook(_m: Any, _i: Any, out: Any) -> None:
        counts[0] += int(out.numel())
        counts[1] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d)]  # type: ignore[attr-defined]
    try:
        with torch.no_grad():  # type: ignore[attr-defined]
            model(torch.rand(1, 3, *input_hw))  # type: ignore[attr-defined]
    finally:
        for h in handles:
            h.remove()
    return counts[0], counts[1]
