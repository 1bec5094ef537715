"""The one torch-free ONNX layer: loading, custom-op detection, sessions, inference, MAC counting.

Everything in the project that touches an ONNX graph outside ``torch.onnx`` goes through here:
the exporter's fp16 pass and validation, the graph statistics of ``sr-bench``, the ONNX Runtime
backend and ``sr-upscale``. One place decides:

* **loading** (:func:`load`): path, bytes or ``ModelProto`` in, ``ModelProto`` out, with a one-line
  error for missing or corrupt files. Callers pass the proto along instead of re-parsing the file.
* **custom ops** (:func:`custom_ops`): op types outside the standard domains, read from the
  graph's nodes (never a byte search).
* **sessions** (:func:`session`): an ONNX Runtime session that runs plugin graphs too. When the
  graph has custom ops, :mod:`srdeploy.plugins.ort` registers its numpy reference kernels and
  cast-wraps fp16 plugin nodes; otherwise the plain session. Every session in the project is made
  here, so no caller can forget the plugin case (that omission is what made
  ``sr-export --fp16 --plugins`` crash).
* **intermediates** (:func:`run_with_intermediates`): run a graph and also return inner tensors.
* **types and shapes** (:func:`infer`): ONNX shape inference (non-strict, with data propagation)
  plus the types of plugin outputs, which ONNX cannot infer (a plugin output has its first
  input's element type).
* **MACs** (:func:`node_macs`): one convention, used for the manifest's fp16 MAC share and for
  ``results.json``: one multiply-add = 1 MAC; ``Conv``, ``ConvTranspose``, ``Gemm``, ``MatMul``,
  ``Einsum`` and the plugin ops at their true cost; biases not counted.

onnx and onnxruntime are imported inside the functions, so ``import srdeploy.onnxlayer`` is cheap.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from srdeploy.errors import BackendError, MissingDependencyError, SrdeployError, one_line

#: Domains whose ops ONNX Runtime implements itself; anything else is a custom (plugin) op.
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")

Shape = tuple[int, ...]
ModelLike = str | os.PathLike[str] | bytes | Any  # Any: onnx.ModelProto (onnx imported lazily)


# ---------------------------------------------------------------------------------------- load


def load(model: ModelLike, *, external_data: bool = True) -> Any:
    """An ``onnx.ModelProto`` from a path, bytes or a proto (returned as is)."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    try:
        if isinstance(model, bytes):
            return onnx.load_from_string(model)
        path = Path(model)
        if not path.is_file():
            raise SrdeployError(f"ONNX file {path} does not exist; export one with sr-export")
        return onnx.load(str(path), load_external_data=external_data)
    except SrdeployError:
        raise
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError... for corrupt files
        what = "the given bytes" if isinstance(model, bytes) else str(model)
        raise BackendError(f"{what} is not a valid ONNX model ({type(exc).__name__}: {exc}); re-export it") from exc


def metadata(model: Any, prefix: str = "srdeploy.") -> dict[str, str]:
    """The graph's ``metadata_props`` whose key starts with ``prefix`` (prefix dropped)."""
    return {p.key.removeprefix(prefix): p.value for p in model.metadata_props if p.key.startswith(prefix)}


def custom_ops(model: Any) -> list[str]:
    """Sorted op types of the main graph's nodes outside :data:`STANDARD_DOMAINS`."""
    return sorted({n.op_type for n in model.graph.node if n.domain not in STANDARD_DOMAINS})


def graph_inputs(model: Any) -> list[str]:
    """Names of the real graph inputs (initializers listed as inputs excluded)."""
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


# ------------------------------------------------------------------------------------ sessions


@dataclass(frozen=True)
class SessionConfig:
    """ONNX Runtime session settings; ``None`` means ONNX Runtime's default."""

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    optimization: str = "all"  # all | extended | basic | disable
    intra_op_threads: int | None = None
    log_severity: int = 3
    config_entries: tuple[tuple[str, str], ...] = ()


_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
           "disable": "ORT_DISABLE_ALL"}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(f"onnxruntime is not installed ({exc}); pip install 'srdeploy[ort]'") from exc
    return onnxruntime


def session(model: ModelLike, config: SessionConfig | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``model``, plugin graphs included.

    A graph with custom ops is prepared by :func:`srdeploy.plugins.ort.prepare_session`
    (reference kernels registered, fp16 plugin nodes cast-wrapped); the plugin package is imported
    only then.
    """
    ort = _ort()
    cfg = config or SessionConfig()
    if cfg.optimization not in _LEVELS:
        raise SrdeployError(f"unknown graph optimisation {cfg.optimization!r}; one of {', '.join(_LEVELS)}")
    proto = load(model)
    opts = ort.SessionOptions()
    opts.log_severity_level = cfg.log_severity
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[cfg.optimization])
    if cfg.intra_op_threads:
        opts.intra_op_num_threads = cfg.intra_op_threads
    for k, v in cfg.config_entries:
        opts.add_session_config_entry(k, v)
    custom = custom_ops(proto)
    if custom:
        try:
            from srdeploy.plugins.ort import prepare_session
        except ImportError as exc:
            raise MissingDependencyError(
                f"the graph holds plugin ops {custom}; running it on ONNX Runtime needs srdeploy.plugins and "
                f"onnxruntime-extensions ({exc}): pip install 'srdeploy[dev]'"
            ) from exc
        proto = prepare_session(proto, opts)
    data = proto.SerializeToString() if not isinstance(model, bytes) or custom else model
    try:
        return ort.InferenceSession(data, opts, providers=list(cfg.providers))
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph...)
        hint = (
            "; check that its plugin nodes carry every attribute of plugins/<Op>.json" if custom else "; re-export it"
        )
        raise BackendError(f"ONNX Runtime cannot load the model ({one_line(exc)[:300]}){hint}") from exc


def run_with_intermediates(
    model: Any, feed: Mapping[str, np.ndarray], names: Iterable[str], *, threads: int = 2
) -> dict[str, np.ndarray]:
    """Run ``model`` (unoptimised, CPU) and return its outputs plus the tensors in ``names``."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    inits = {t.name for t in m.graph.initializer}
    for name in names:
        if name and name not in have and name not in inits and name not in feed:
            m.graph.output.append(onnx.ValueInfoProto(name=name))
            have.add(name)
    sess = session(m, SessionConfig(optimization="disable", intra_op_threads=threads))
    outs = sess.run(None, dict(feed))
    return {o.name: v for o, v in zip(sess.get_outputs(), outs, strict=True)}


# ------------------------------------------------------------------------- types and shapes


@dataclass
class Inferred:
    """Static shapes (``None`` where not fully known) and element types of a graph's tensors."""

    shapes: dict[str, Shape | None]
    types: dict[str, int]


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


def _infer_once(model: Any) -> Inferred:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # inference failures of exotic ops: keep what the graph records
        inferred = model
    g = inferred.graph
    shapes: dict[str, Shape | None] = {}
    types: dict[str, int] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        shapes[vi.name] = _dims(vi)
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
        types[init.name] = init.data_type
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = tuple(int(d) for d in a.t.dims)
                    types[node.output[0]] = a.t.data_type
    return Inferred(shapes, types)


def infer(model: Any) -> Inferred:
    """Shapes and element types of every tensor, typed through the custom (plugin) nodes too.

    ONNX shape inference stops at nodes without a schema, so everything downstream of a plugin
    would be untyped; a plugin's output has its first input's type, so declare that on a copy and
    infer again until nothing changes (at most once per plugin node).
    """
    import onnx
    from onnx import helper

    custom = [n for n in model.graph.node if n.domain not in STANDARD_DOMAINS]
    if not custom:
        return _infer_once(model)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    result = _infer_once(probe)
    for _ in range(len(custom)):
        added = False
        for node in custom:
            out, first = node.output[0], node.input[0]
            if out not in result.types and first in result.types:
                probe.graph.value_info.append(helper.make_tensor_value_info(out, result.types[first], None))
                added = True
        if not added:
            break
        result = _infer_once(probe)
    return result


def elem_types(model: Any) -> dict[str, int]:
    """Element types (``onnx.TensorProto`` codes) of the graph's tensors; see :func:`infer`."""
    return infer(model).types


# ---------------------------------------------------------------------------------------- MACs

#: ops :func:`node_macs` counts (plugin ops come from :func:`plugin_mac_formulas`).
MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum")


def attr(node: Any, name: str, default: Any) -> Any:
    """Attribute ``name`` of ``node`` as a Python value, or ``default``."""
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def need(shapes: Sequence[Shape | None], idx: int, op: str) -> Shape:
    """Shape ``idx`` of ``shapes``, or a one-line error saying the graph needs static shapes there."""
    s = shapes[idx] if idx < len(shapes) else None
    if s is None:
        raise BackendError(f"cannot resolve the shape of input {idx} of a {op} node; re-export with static shapes")
    return s


def plugin_mac_formulas() -> Mapping[str, Callable[[list[Shape | None]], int]]:
    """MAC formulas of the project's plugin ops (from the plugin registry; empty without it)."""
    try:
        from srdeploy.plugins.registry import mac_formulas
    except ImportError:
        return {}
    return mac_formulas()


def node_macs(
    node: Any,
    ins: list[Shape | None],
    outs: list[Shape | None],
    plugins: Mapping[str, Callable[[list[Shape | None]], int]] | None = None,
) -> int:
    """Multiply-adds of one node from its input/output shapes (0 for ops that do none).

    The one convention of the project: ``Conv`` = out elements x Cin/group x kernel area,
    ``ConvTranspose`` = in elements x Cout/group x kernel area, ``Gemm``/``MatMul`` = M x K x N
    (x batch), ``Einsum`` = product of every index's size; plugin ops by their registered formula.
    """
    op = node.op_type
    formulas = plugin_mac_formulas() if plugins is None else plugins
    if node.domain not in STANDARD_DOMAINS:
        if op in formulas:
            return int(formulas[op](ins))
        raise BackendError(
            f"the graph holds custom op {node.domain}::{op} whose cost is unknown; register its MAC formula "
            "in srdeploy.plugins.registry so MACs cannot be under-counted"
        )
    if op == "Conv":
        w = need(ins, 1, op)
        y = need(outs, 0, op)
        return math.prod(y) * w[1] * math.prod(w[2:])
    if op == "ConvTranspose":
        x = need(ins, 0, op)
        w = need(ins, 1, op)  # (Cin, Cout/group, *k)
        return math.prod(x) * w[1] * math.prod(w[2:])
    if op == "Gemm":
        a = need(ins, 0, op)
        b = need(ins, 1, op)
        m, k = (a[1], a[0]) if attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if attr(node, "transB", 0) else b[1]
        return m * k * n
    if op == "MatMul":
        a = need(ins, 0, op)
        b = need(ins, 1, op)
        if len(a) == 1:
            a = (1, a[0])
        if len(b) == 1:
            b = (b[0], 1)
        batch = np.broadcast_shapes(a[:-2], b[:-2])
        return math.prod(batch) * a[-2] * a[-1] * b[-1]
    if op == "Einsum":
        raw = attr(node, "equation", b"")
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


def counts_macs(node: Any, plugins: Mapping[str, Any] | None = None) -> bool:
    """Whether :func:`node_macs` can be non-zero for ``node`` (it needs shapes for these)."""
    if node.domain not in STANDARD_DOMAINS:
        return True
    return node.op_type in MAC_OPS


def graph_macs(model: Any, shapes: Mapping[str, Shape | None]) -> dict[int, int]:
    """MACs per node index (only nodes that do any), from ``shapes`` (initializers read from the graph)."""
    init_shapes = {t.name: tuple(int(d) for d in t.dims) for t in model.graph.initializer}
    formulas = plugin_mac_formulas()

    def shape(name: str) -> Shape | None:
        return init_shapes.get(name) or shapes.get(name) if name else None

    out: dict[int, int] = {}
    for idx, node in enumerate(model.graph.node):
        if not counts_macs(node):
            continue
        n = node_macs(node, [shape(t) for t in node.input], [shape(t) for t in node.output], formulas)
        if n:
            out[idx] = n
    return out
