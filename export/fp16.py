"""fp32 -> fp16 graph pass with fp32 islands, for strongly typed TensorRT.

TensorRT 11 has no fp16 builder flag: precision comes from the tensor types of the graph. This
pass rewrites an fp32 ONNX graph so that the image data path runs in fp16, except for *islands*
that stay fp32:

* ops whose numerics are known to break in fp16 (softmax, normalisation statistics, reductions,
  exp/log/pow/sqrt): ``reason = "sensitive op"``;
* nodes that produce or read a tensor whose magnitude, **measured** on a calibration input with
  ONNX Runtime, comes within ``overflow_margin`` of the fp16 maximum (large residual sums,
  0-255 internal ranges): ``reason = "overflow"``;
* nodes singled out by the precision-escalation loop in :func:`fp16_from_onnx` (measured error
  gain): ``reason = "precision"``;
* nodes with subgraphs, nodes without an ONNX schema that are not registered plugins, and
  plugin inputs the plugin's spec (``plugins/<Op>.json``, per input) does not allow in fp16.

Registered plugin nodes (:data:`srdeploy.plugins.registry.PLUGINS`) are typed like any other
node: their inputs and outputs become fp16 where the spec allows and the kernel has an fp16
variant, and they become islands only by the same measurements (overflow, error gain).

Shape arithmetic (anything not reachable from the image input through float tensors) is left in
fp32, so sizes never round. Casts are inserted at region borders, fp16 copies of initializers are
made once, and the graph I/O stays fp32 unless ``io_fp16``.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from srdeploy import onnxlayer
from srdeploy.errors import ExportError, SrdeployError, one_line

FP16_MAX = 65504.0

# Ops kept in fp32 by default, with the reason recorded in the manifest.
SENSITIVE_OPS: dict[str, str] = {
    "Softmax": "softmax",
    "LogSoftmax": "softmax",
    "LayerNormalization": "LayerNorm statistics",
    "GroupNormalization": "normalisation statistics",
    "InstanceNormalization": "normalisation statistics",
    "BatchNormalization": "normalisation statistics",
    "ReduceMean": "reduction statistics",
    "ReduceSum": "reduction statistics",
    "ReduceSumSquare": "reduction statistics",
    "ReduceL2": "reduction statistics",
    "ReduceL1": "reduction statistics",
    "ReduceLogSumExp": "reduction statistics",
    "Pow": "pow (variance)",
    "Sqrt": "sqrt (normalisation)",
    "Reciprocal": "reciprocal",
    "Exp": "exp",
    "Log": "log",
}

# Ops whose float output never depends numerically on a float data input (they only read shapes).
_SHAPE_ONLY = {"Shape", "Size", "ConstantOfShape", "EyeLike", "RandomNormalLike", "RandomUniformLike"}
_FLOAT = TensorProto.FLOAT
_HALF = TensorProto.FLOAT16


@dataclass(frozen=True)
class Island:
    node: str
    op_type: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"node": self.node, "op_type": self.op_type, "reason": self.reason}


@dataclass
class Fp16Report:
    """What the pass did: the islands, and how much of the Conv/MatMul work runs in fp16."""

    islands: list[Island] = field(default_factory=list)
    macs_total: int = 0
    macs_fp16: int = 0
    mac_shape: str = ""  # the LR size the MACs were counted at
    casts_inserted: int = 0
    io_dtype: str = "float32"
    max_abs_activation: float = 0.0

    @property
    def fp16_mac_fraction(self) -> float:
        return self.macs_fp16 / self.macs_total if self.macs_total else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "islands": [i.as_dict() for i in self.islands],
            "num_islands": len(self.islands),
            "macs_total": self.macs_total,
            "macs_fp16": self.macs_fp16,
            "fp16_mac_fraction": round(self.fp16_mac_fraction, 6),
            "mac_count_lr_size": self.mac_shape,
            "casts_inserted": self.casts_inserted,
            "io_dtype": self.io_dtype,
            "max_abs_activation_fp32": self.max_abs_activation,
        }


def _node_name(node: onnx.NodeProto, idx: int) -> str:
    return node.name or f"{node.op_type}_{idx}"


def constants_to_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turn ``Constant`` nodes holding a tensor into initializers (one representation for constants)."""
    g = model.graph
    keep = []
    for node in g.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1:
            attr = node.attribute[0]
            if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                t = copy.deepcopy(attr.t)
                t.name = node.output[0]
                g.initializer.append(t)
                continue
            if attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
                arr = helper.get_attribute_value(attr)
                dtype = np.float32 if attr.name.startswith("value_float") else np.int64
                g.initializer.append(numpy_helper.from_array(np.asarray(arr, dtype=dtype), node.output[0]))
                continue
        keep.append(node)
    del g.node[:]
    g.node.extend(keep)
    return model


def _schema(node: onnx.NodeProto, opset: int) -> Any:
    try:
        return onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except Exception:  # onnx raises SchemaError for unknown (custom-domain) ops
        return None


def _plugin(node: onnx.NodeProto) -> Any:
    """The registered plugin (``PluginDef``) of ``node``, or ``None`` for any other node."""
    from srdeploy.plugins.registry import PLUGINS
    from srdeploy.plugins.spec import PLUGIN_DOMAIN

    return PLUGINS.get(node.op_type) if node.domain == PLUGIN_DOMAIN else None


def _plugin_fp16_inputs(node: onnx.NodeProto, plugin: Any, data_tensors: set[str]) -> list[int]:
    """Inputs of an fp16 plugin node that become fp16: those the spec ties to the first input's
    type, and the others the spec allows in fp16 when they are on the data path. An input with its
    own dtype list that is a weight (SRWindowAttention's bias table) stays fp32, like Resize's
    ``scales``: it costs nothing and keeps the bias exact."""
    allowed, tied = plugin.fp16_inputs(), plugin.spec.follows_first()
    return [i for i in range(min(len(node.input), len(allowed)))
            if allowed[i] and (tied[i] or node.input[i] in data_tensors)]


def _same_type_inputs(node: onnx.NodeProto, schema: Any) -> list[int]:
    """Indices of the inputs typed by a type variable that admits float16 (they follow the data).

    Inputs with a fixed type (``tensor(float)``, e.g. Resize's ``scales``) keep their type.
    """
    allows_half = {c.type_param_str for c in schema.type_constraints if "tensor(float16)" in c.allowed_type_strs}
    idx = []
    for i in range(len(node.input)):
        formal = schema.inputs[min(i, len(schema.inputs) - 1)] if schema.inputs else None
        if formal is not None and formal.type_str in allows_half:
            idx.append(i)
    return idx


@dataclass
class GraphInfo:
    """Which nodes are on the image data path, and the float data tensors."""

    data_nodes: set[int]
    data_tensors: set[str]
    types: dict[str, int]
    opset: int


def analyse(model: onnx.ModelProto) -> GraphInfo:
    g = model.graph
    types = onnxlayer.elem_types(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)
    data_tensors = {i.name for i in g.input if i.type.tensor_type.elem_type in (_FLOAT, _HALF)}
    data_nodes: set[int] = set()
    for idx, node in enumerate(g.node):
        if node.op_type in _SHAPE_ONLY:
            continue
        if any(name in data_tensors for name in node.input if name):
            data_nodes.add(idx)
            for out in node.output:
                if out and types.get(out, _FLOAT) in (_FLOAT, _HALF):
                    data_tensors.add(out)
    return GraphInfo(data_nodes, data_tensors, types, opset)


def _islands(
    model: onnx.ModelProto,
    info: GraphInfo,
    magnitudes: Mapping[str, float],
    overflow_limit: float,
    extra: Mapping[str, str],
) -> dict[int, Island]:
    g = model.graph
    big = {name for name, v in magnitudes.items() if not v <= overflow_limit}
    out: dict[int, Island] = {}
    for idx in sorted(info.data_nodes):
        node = g.node[idx]
        name = _node_name(node, idx)
        reason = None
        if name in extra:
            reason = extra[name]
        elif node.op_type in SENSITIVE_OPS:
            reason = f"sensitive op: {SENSITIVE_OPS[node.op_type]}"
        elif any(o in big for o in node.output) or any(i in big for i in node.input):
            worst = max(magnitudes.get(t, 0.0) for t in [*node.input, *node.output])
            reason = f"overflow: |x| up to {worst:.4g} (limit {overflow_limit:.4g})"
        elif any(a.type == onnx.AttributeProto.GRAPH for a in node.attribute):
            reason = "control flow (subgraph)"
        elif (plugin := _plugin(node)) is not None:
            if not plugin.fp16:
                reason = f"plugin {node.op_type}: no fp16 kernel variant (registry) or spec allows no fp16"
        elif _schema(node, info.opset) is None:
            reason = f"no ONNX schema for {node.domain}::{node.op_type} (unregistered custom op)"
        if reason is not None:
            out[idx] = Island(name, node.op_type, reason)
    return out


def _rewrite(
    model: onnx.ModelProto, info: GraphInfo, islands: Mapping[int, Island], io_fp16: bool
) -> tuple[onnx.ModelProto, int]:
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    dtype: dict[str, int] = dict(info.types)
    fp16_of: dict[str, str] = {}
    fp32_of: dict[str, str] = {}
    new_inits: list[TensorProto] = []
    new_nodes: list[onnx.NodeProto] = []
    casts = 0

    if io_fp16:
        for inp in g.input:
            if inp.type.tensor_type.elem_type == _FLOAT:
                inp.type.tensor_type.elem_type = _HALF
                dtype[inp.name] = _HALF

    def as_fp16(name: str) -> str:
        nonlocal casts
        if dtype.get(name) == _HALF:
            return name
        if name in fp16_of:
            return fp16_of[name]
        new = f"{name}__fp16"
        if name in inits:
            arr = numpy_helper.to_array(inits[name])
            with np.errstate(over="ignore"):
                new_inits.append(numpy_helper.from_array(arr.astype(np.float16), new))
        else:
            new_nodes.append(helper.make_node("Cast", [name], [new], to=_HALF, name=f"cast_fp16/{name}"))
            casts += 1
        dtype[new] = _HALF
        fp16_of[name] = new
        return new

    def as_fp32(name: str) -> str:
        nonlocal casts
        if dtype.get(name) != _HALF:
            return name
        if name in fp32_of:
            return fp32_of[name]
        new = f"{name}__fp32"
        new_nodes.append(helper.make_node("Cast", [name], [new], to=_FLOAT, name=f"cast_fp32/{name}"))
        casts += 1
        dtype[new] = _FLOAT
        fp32_of[name] = new
        return new

    for idx, node in enumerate(g.node):
        node = copy.deepcopy(node)
        half = idx in info.data_nodes and idx not in islands
        if half:
            plugin = _plugin(node)
            if plugin is not None:
                follow = _plugin_fp16_inputs(node, plugin, info.data_tensors)
            else:
                follow = _same_type_inputs(node, _schema(node, info.opset))
            for i in follow:
                name = node.input[i]
                if name and dtype.get(name, _FLOAT) in (_FLOAT, _HALF):
                    node.input[i] = as_fp16(name)
            if node.op_type == "Cast":
                for a in node.attribute:
                    if a.name == "to" and a.i == _FLOAT:
                        a.i = _HALF
            for out in node.output:
                if out and out in info.data_tensors:
                    dtype[out] = _HALF
        elif node.op_type not in _SHAPE_ONLY:
            for i, name in enumerate(node.input):
                if name:
                    node.input[i] = as_fp32(name)
        new_nodes.append(node)

    # Graph outputs: fp32 unless io_fp16 (rename the fp16 producer output, then cast back).
    tails = []
    for out in g.output:
        if dtype.get(out.name) == _HALF:
            if io_fp16:
                out.type.tensor_type.elem_type = _HALF
                continue
            inner = f"{out.name}__fp16out"
            for n in new_nodes:
                for i, name in enumerate(n.input):
                    if name == out.name:
                        n.input[i] = inner
                for i, name in enumerate(n.output):
                    if name == out.name:
                        n.output[i] = inner
            tails.append(helper.make_node("Cast", [inner], [out.name], to=_FLOAT, name=f"cast_out/{out.name}"))
            casts += 1
    del g.node[:]
    g.node.extend(new_nodes + tails)
    g.initializer.extend(new_inits)
    used = {name for n in g.node for name in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    g.ClearField("value_info")
    return model, casts


def count_macs(
    model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]], half_nodes: set[int] | None = None
) -> tuple[int, int]:
    """(total, fp16) MACs of the graph by the project's one rule (:func:`srdeploy.onnxlayer.node_macs`).

    ``shapes`` maps tensor names to their runtime shapes (from one ONNX Runtime run);
    initializer shapes are read from the graph. A node counts as fp16 when its index is in
    ``half_nodes``. Plugin nodes count at their registered cost, as in ``results.json``.
    """
    per_node = onnxlayer.graph_macs(model, shapes)
    half = sum(n for idx, n in per_node.items() if half_nodes is not None and idx in half_nodes)
    return sum(per_node.values()), half


def convert(
    model: onnx.ModelProto,
    feed: Mapping[str, np.ndarray],
    *,
    io_fp16: bool = False,
    overflow_margin: float = 16.0,
    extra_islands: Mapping[str, str] | None = None,
) -> tuple[onnx.ModelProto, Fp16Report, GraphInfo]:
    """Convert ``model`` (fp32) to fp16 with fp32 islands, measured on ``feed``.

    ``overflow_margin``: a tensor counts as overflowing when its measured max |x| exceeds
    ``FP16_MAX / overflow_margin`` (headroom for inputs brighter or larger than the calibration).
    """
    base = constants_to_initializers(copy.deepcopy(model))
    info = analyse(base)
    g = base.graph
    wanted = set(info.data_tensors)
    for node in g.node:
        if onnxlayer.counts_macs(node):
            wanted.update(n for n in [*node.input, *node.output] if n)
    values = onnxlayer.run_with_intermediates(base, feed, sorted(wanted))
    magnitudes = {
        k: float(np.nanmax(np.abs(v))) if v.size and np.issubdtype(v.dtype, np.floating) else 0.0
        for k, v in values.items()
        if k in info.data_tensors
    }
    shapes = {k: tuple(v.shape) for k, v in values.items()}
    shapes.update({k: tuple(v.shape) for k, v in feed.items()})  # graph inputs are not re-emitted
    limit = FP16_MAX / overflow_margin
    islands = _islands(base, info, magnitudes, limit, extra_islands or {})
    half_nodes = info.data_nodes - set(islands)
    total, half = count_macs(base, shapes, half_nodes)
    converted, casts = _rewrite(base, info, islands, io_fp16)
    lr = next(iter(feed.values()))
    report = Fp16Report(
        islands=[islands[i] for i in sorted(islands)],
        macs_total=total,
        macs_fp16=half,
        mac_shape=f"{lr.shape[-2]}x{lr.shape[-1]}",
        casts_inserted=casts,
        io_dtype="float16" if io_fp16 else "float32",
        max_abs_activation=max(magnitudes.values(), default=0.0),
    )
    return converted, report, info


def error_gain(
    fp32_model: onnx.ModelProto,
    fp16_model: onnx.ModelProto,
    info: GraphInfo,
    feed: Mapping[str, np.ndarray],
    feed16: Mapping[str, np.ndarray],
    candidates: Sequence[int],
) -> dict[int, float]:
    """Per node: relative error of its output (fp16 graph vs fp32 graph) over the worst
    relative error of its data inputs: how much precision the node itself loses."""
    base = constants_to_initializers(copy.deepcopy(fp32_model))
    g = base.graph
    names = sorted(info.data_tensors)
    ref = onnxlayer.run_with_intermediates(base, feed, names)
    got = onnxlayer.run_with_intermediates(fp16_model, feed16, names)

    def rel(name: str) -> float:
        if name not in ref or name not in got:
            return 0.0
        r = ref[name].astype(np.float64)
        o = got[name].astype(np.float64)
        if r.shape != o.shape or not r.size:
            return 0.0
        scale = max(float(np.abs(r).max()), 1e-6)
        return float(np.abs(o - r).max()) / scale

    errs: dict[str, float] = defaultdict(float)
    gains = {}
    for idx in candidates:
        node = g.node[idx]
        e_in = max((rel(n) for n in node.input if n in info.data_tensors), default=0.0)
        e_out = max((rel(n) for n in node.output if n), default=0.0)
        errs[node.output[0]] = e_out
        gains[idx] = e_out / max(e_in, 1e-4)
    return gains


# ------------------------------------------------------------------- plugin nodes, measured locally

#: how far (dB) a plugin node's own fp16 error may lie above the fp16 floor (see plugin_node_precision)
PLUGIN_LOCAL_MARGIN_DB = 1.0


def _db(ref: np.ndarray, err: np.ndarray) -> float:
    """20 log10(rms(ref) / rms(err)): the signal-to-error ratio of one tensor (inf when exact)."""
    e = float(np.sqrt(np.mean(np.square(err, dtype=np.float64))))
    r = float(np.sqrt(np.mean(np.square(ref, dtype=np.float64))))
    return float("inf") if e == 0.0 else 20.0 * float(np.log10(max(r, 1e-30) / e))


def plugin_node_precision(model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, Any]]:
    """Per fp16 plugin node of ``model``: its output's error where the node itself made it.

    The graph runs in ONNX Runtime (the fp16 plugin nodes through the kernel's replay, see
    :mod:`srdeploy.plugins.ort`) with every plugin node's inputs and output captured. On the
    node's own fp16 inputs, the plugin's float64 reference gives the exact result; the node's
    output is compared with it (``node_db``), and so is that exact result rounded once to the
    output's dtype (``floor_db``: the best any implementation with that output type can do).
    ``node_db`` vs ``floor_db`` is what the kernel's algorithm costs, free of the error that the
    rest of the network adds before and amplifies after the node (which on seeded weights moves a
    graph's end-to-end PSNR by several dB between equally accurate roundings; docs/plugins.md).
    """
    from srdeploy.plugins.registry import PLUGINS, plugin_nodes

    nodes = [n for n in plugin_nodes(model) if PLUGINS[n.op_type].fp16]
    inits = {t.name: t for t in model.graph.initializer}
    names = [x for n in nodes for x in (*n.input, n.output[0]) if x and x not in inits]
    acc: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for feed in feeds:
        got = onnxlayer.run_with_intermediates(model, feed, names)
        for node in nodes:
            if node.input[0] not in got or got[node.input[0]].dtype != np.float16:
                continue  # an fp32 island: nothing of the fp16 kernel to measure
            plugin = PLUGINS[node.op_type]
            args = [got[x] if x in got else numpy_helper.to_array(inits[x]) for x in node.input]
            attrs = {}
            for a in node.attribute:
                if a.name in plugin.pyop_attrs:
                    val = helper.get_attribute_value(a)
                    attrs[a.name] = val.decode() if isinstance(val, bytes) else val
            exact = np.asarray(plugin.numpy_reference(*(x.astype(np.float64) for x in args), **attrs), np.float64)
            out = got[node.output[0]]
            rounded = exact.astype(out.dtype).astype(np.float64)
            acc[node.name or node.output[0]].append(
                (_db(exact, out.astype(np.float64) - exact), _db(exact, rounded - exact)))
    result = []
    for name, pairs in acc.items():
        node_db, floor_db = min(p[0] for p in pairs), min(p[1] for p in pairs)
        result.append({"node": name, "node_db": round(node_db, 3), "floor_db": round(floor_db, 3),
                       "cost_db": round(floor_db - node_db, 3),
                       "passed": node_db >= floor_db - PLUGIN_LOCAL_MARGIN_DB})
    return result


# ------------------------------------------------------------------------------------ the pass

FP16_MIN_MAC_FRACTION = 0.90
FP16_PSNR_MARGIN_DB = 3.0  # escalate islands until fp16 beats the tolerance by this margin
FP16_MAX_ROUNDS = 4
FP16_DEFAULT_TARGET_DB = 40.0  # when the tolerance table gives no PSNR floor


def derive_fp16(
    graph: onnx.ModelProto,
    calib: np.ndarray,
    reference: np.ndarray,
    target_psnr_db: float,
    *,
    io_fp16: bool = False,
    psnr: Callable[[np.ndarray, np.ndarray], float],
) -> tuple[onnx.ModelProto, Fp16Report, list[dict[str, Any]]]:
    """:func:`convert` with measurement-driven islands (the precision-escalation loop).

    Round 0 keeps the sensitive ops and the measured overflow tensors in fp32. While the fp16
    graph's PSNR (``psnr(out, reference)`` on ``calib``) misses ``target + margin``, the nodes
    whose own error gain is largest become fp32 islands too.
    """
    in_name = graph.graph.input[0].name
    feed = {in_name: calib}
    feed16 = {in_name: calib.astype(np.float16 if io_fp16 else np.float32)}
    extra: dict[str, str] = {}
    history: list[dict[str, Any]] = []
    # the node list as the pass indexes it (Constant nodes folded), computed once, not per candidate
    nodes = list(constants_to_initializers(copy.deepcopy(graph)).graph.node)
    names = [_node_name(n, i) for i, n in enumerate(nodes)]
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    for rnd in range(FP16_MAX_ROUNDS):
        proto, report, info = convert(graph, feed, io_fp16=io_fp16, extra_islands=extra)
        out = onnxlayer.session(proto).run(None, feed16)[0].astype(np.float32)
        got = psnr(out, reference)
        history.append({"round": rnd, "psnr_db": round(got, 3), "islands": len(report.islands)})
        if got >= target_psnr_db + FP16_PSNR_MARGIN_DB or rnd == FP16_MAX_ROUNDS - 1:
            return proto, report, history
        island_names = {i.node for i in report.islands}
        candidates = [idx for idx in sorted(info.data_nodes) if names[idx] not in island_names]
        gains = error_gain(graph, proto, info, feed, feed16, candidates)
        added = 0
        for idx, gain in sorted(gains.items(), key=lambda kv: -kv[1]):
            if gain < 2.0 or added >= 4:
                break
            node = nodes[idx]
            extra[names[idx]] = f"precision: measured error gain {gain:.1f}x"
            added += 1
            # A gate (sigmoid/softmax) amplifies the *absolute* fp16 error of its input, so the
            # Conv/MatMul computing that input joins the island.
            for name in node.input:
                j = producer.get(name)
                if j is not None and j in info.data_nodes and nodes[j].op_type in ("Conv", "MatMul", "Gemm"):
                    extra.setdefault(names[j], f"precision: feeds {node.op_type} island")
        if not added:
            return proto, report, history
    raise AssertionError("unreachable")


class Fp16Pass:
    """The fp16 graph pass (registered first in :data:`srdeploy.export.passes.PASSES`).

    Owns its escalation loop, its manifest section (``fp16``) and its measurement (the MAC share
    that runs in fp16, checked against :data:`FP16_MIN_MAC_FRACTION` at validation).
    """

    name = "fp16"

    def enabled(self, ctx: Any) -> bool:
        return bool(ctx.config.fp16)

    def run(self, graph: onnx.ModelProto, ctx: Any) -> tuple[onnx.ModelProto, dict[str, Any], list[str]]:
        calib = ctx.calibration
        target = ctx.tolerance.min_psnr_db if ctx.tolerance.min_psnr_db is not None else FP16_DEFAULT_TARGET_DB
        try:
            out, report, history = derive_fp16(
                graph, calib, ctx.reference(calib), target, io_fp16=bool(ctx.config.fp16_io), psnr=ctx.psnr
            )
        except SrdeployError:
            raise
        except Exception as exc:  # onnx/onnxruntime/numpy failures inside the pass: one line, nothing written
            first = one_line(exc)[:300]
            raise ExportError(
                f"the fp16 pass failed ({type(exc).__name__}: {first}); nothing written. Export without --fp16, "
                "or report this with the model name and flags"
            ) from exc
        problems = []
        if report.fp16_mac_fraction < FP16_MIN_MAC_FRACTION:
            problems.append(
                f"only {report.fp16_mac_fraction:.1%} of the MACs run in fp16 (< {FP16_MIN_MAC_FRACTION:.0%})"
            )
        return out, {**report.as_dict(), "escalation": history}, problems


PASS = Fp16Pass()
