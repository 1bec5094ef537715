"""INT8 graph pass: explicit Q/DQ for TensorRT, calibrated on real images, gated on held-out PSNR.

Entry point: :func:`quantize_int8` (fp32 ONNX proto + calibration set -> Q/DQ proto + manifest
section). What it produces, and who does what:

* **Placement and calibration: ONNX Runtime's static quantizer** (``onnxruntime.quantization``,
  ``QuantFormat.QDQ``): symmetric per-channel INT8 weights (stored as INT8 initializers feeding a
  ``DequantizeLinear``) and symmetric per-tensor INT8 activations on the *inputs* of
  Conv/ConvTranspose/MatMul/Gemm (``OpTypesToExcludeOutputQuantization`` for those ops, biases
  left in float): the pattern TensorRT fuses into an INT8 kernel, with no Q/DQ after every op.
  Calibration runs once (ranges cached in a temporary ``TensorsData`` file) with the chosen
  method (``max`` = ORT MinMax, ``percentile``, ``entropy``). The choice of ORT over NVIDIA
  ModelOpt is measured and explained in docs/int8.md.
* **Everything else in fp16**: the caller's fp16 pass (``srdeploy.export.fp16`` with its measured
  fp32 islands) converts the *unquantized* graph; the quantizer's Q/DQ nodes (scales, zero
  points, INT8 weights, as ORT computed them) are then re-attached to the same-named nodes of the
  fp16 graph with onnx-graphsurgeon, in fp16 where the consumer runs in fp16 (opset >= 19 for
  fp16 ``QuantizeLinear``/``DequantizeLinear``). The result is a mixed INT8 + fp16 graph with fp32
  islands.
* **Sensitivity-driven fallback**: each quantized layer's effect on the output is measured alone
  (that one layer INT8, everything else fp32) on held-out crops, through one ONNX Runtime session
  whose Q/DQ are switched per layer by a mask input. Layers are then kept out of INT8, most
  damaging first, in growing shares of the measured damage, until the held-out Y-PSNR of the
  final graph is within the gate of the fp32 graph's, or nothing is left to quantize.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from srdeploy.errors import ExportError, SrdeployError

from .calibration import CalibrationSet, HeldOut

INT8_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
#: method name -> onnxruntime CalibrationMethod member
METHODS = {"max": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
#: Default by measurement (docs/int8.md): on AGDN x2 with its released weights, all layers INT8,
#: percentile lost 1.32 dB held-out Y-PSNR against 1.65 dB for max.
DEFAULT_METHOD = "percentile"
DEFAULT_GATE_DB = 0.1
#: cumulative shares of the measured solo damage kept out of INT8, one per round
FALLBACK_SHARES = (0.0, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 1.0)
FP16_MIN_SCALE = 2.0**-24  # smallest fp16 subnormal: a scale below it would round to 0


class Int8GateError(ExportError):
    """The INT8 graph misses the held-out PSNR gate even after the fallback."""


@dataclass
class Int8Result:
    model: onnx.ModelProto
    manifest: dict[str, Any]
    int8_nodes: list[str] = field(default_factory=list)


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every node a unique name (the quantizer and the fp16 pass match nodes by name)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)
    return model


def y_psnr(outs: Sequence[np.ndarray], heldout: HeldOut) -> float:
    """Mean paper Y-PSNR (uint8-rounded, border = scale) of SR outputs against the HR crops."""
    from srdeploy.runtime.metrics import psnr_y, to_uint8

    vals = [psnr_y(to_uint8(np.asarray(o, dtype=np.float32)), hr, heldout.scale) for o, hr in zip(outs, heldout.hr,
                                                                                                   strict=True)]
    return float(np.mean(vals))


def _session(model: onnx.ModelProto | bytes) -> Any:
    from srdeploy import onnxlayer  # the project's one session helper (plugin-aware)

    return onnxlayer.session(model, onnxlayer.SessionConfig(intra_op_threads=2))


def run_batched(model: onnx.ModelProto | bytes, lr: np.ndarray, batch: int = 4) -> np.ndarray:
    sess = _session(model)
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: lr[i : i + batch]})[0] for i in range(0, len(lr), batch)]
    return np.concatenate(outs).astype(np.float32)


# --- ONNX Runtime quantizer -------------------------------------------------------------------


class _Reader:
    """ORT ``CalibrationDataReader`` over the calibration crops, in batches, with a progress bar."""

    def __init__(self, crops: np.ndarray, input_name: str, batch: int, progress: bool) -> None:
        from tqdm import tqdm

        self.crops, self.name, self.batch = crops, input_name, batch
        self.i = 0
        self.bar = tqdm(total=len(crops), desc="int8 calibration", unit="crop", disable=not progress)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.crops):
            self.bar.close()
            return None
        b = self.crops[self.i : self.i + self.batch]
        self.i += len(b)
        self.bar.update(len(b))
        return {self.name: np.ascontiguousarray(b)}

    def __len__(self) -> int:
        return -(-len(self.crops) // self.batch)


def _ort_quantize(
    model_path: Path, out_path: Path, cache: Path, reader: _Reader | None, method: str, exclude: Sequence[str]
) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return None if reader is None else reader.get_next()

    # ORT's calibrators print progress to stdout and log a pre-processing hint on the root logger:
    # stdout belongs to sr-export's file list, so send the prints to stderr and mute the hint.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            _quantize_static(model_path, out_path, Reader(), method, exclude, cache)
    finally:
        root.setLevel(level)
    return onnx.load(str(out_path))


def _quantize_static(
    model_path: Path, out_path: Path, reader: Any, method: str, exclude: Sequence[str], cache: Path
) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(model_path),
        str(out_path),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(INT8_OPS),
        per_channel=True,
        reduce_range=False,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(exclude),
        calibrate_method=getattr(CalibrationMethod, METHODS[method]),
        calibration_cache_path=str(cache),
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "CalibTensorRangeSymmetric": True,
            "QuantizeBias": False,
            "OpTypesToExcludeOutputQuantization": list(INT8_OPS),
        },
    )


def _quantized_inputs(qmodel: onnx.ModelProto) -> dict[str, dict[int, onnx.NodeProto]]:
    """Quantized node name -> {input index: the DequantizeLinear feeding it}."""
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    out: dict[str, dict[int, onnx.NodeProto]] = {}
    for node in qmodel.graph.node:
        if node.op_type not in INT8_OPS:
            continue
        ins = {k: producer[x] for k, x in enumerate(node.input) if x in producer and producer[x].op_type ==
               "DequantizeLinear"}
        if ins:
            out[node.name] = ins
    return out


# --- per-layer sensitivity ---------------------------------------------------------------------


def _mask_graph(qmodel: onnx.ModelProto, fp32: onnx.ModelProto, layers: Sequence[str]) -> onnx.ModelProto:
    """``qmodel`` with a bool input ``int8_mask[len(layers)]``: layer i reads its Q/DQ inputs
    when ``mask[i]``, else the original fp32 tensors (``Where`` per quantized input)."""
    m = copy.deepcopy(qmodel)
    g = m.graph
    orig = {n.name: n for n in fp32.graph.node}
    fp32_inits = {t.name: t for t in fp32.graph.initializer}
    have = {t.name for t in g.initializer} | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    qin = _quantized_inputs(m)
    g.input.append(helper.make_tensor_value_info("int8_mask", TensorProto.BOOL, [len(layers)]))
    extra_nodes = []
    for i, name in enumerate(layers):
        node = next(n for n in g.node if n.name == name)
        idx = f"int8_mask_idx_{i}"
        g.initializer.append(numpy_helper.from_array(np.array(i, dtype=np.int64), idx))
        cond = f"int8_mask_{i}"
        extra_nodes.append(helper.make_node("Gather", ["int8_mask", idx], [cond], name=f"int8_mask_gather_{i}"))
        for k in qin[name]:
            src = orig[name].input[k]
            if src not in have:
                if src not in fp32_inits:
                    continue  # the original tensor is not reachable here: keep that input INT8
                g.initializer.append(copy.deepcopy(fp32_inits[src]))
                have.add(src)
            sel = f"{node.input[k]}__sel_{i}_{k}"
            extra_nodes.append(helper.make_node("Where", [cond, node.input[k], src], [sel], name=f"int8_sel_{i}_{k}"))
            node.input[k] = sel
    # Where nodes must precede their consumers: rebuild in topological order.
    nodes = list(g.node) + extra_nodes
    del g.node[:]
    g.node.extend(_toposort(nodes, {t.name for t in g.initializer} | {i.name for i in g.input}))
    return m


def _toposort(nodes: Sequence[onnx.NodeProto], ready: set[str]) -> list[onnx.NodeProto]:
    avail = set(ready) | {""}
    pending = list(nodes)
    out: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for n in pending:
            if all(x in avail for x in n.input):
                out.append(n)
                avail.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ExportError("internal: the INT8 sensitivity graph has a cycle; report this model")
        pending = rest
    return out


def solo_damage(
    qmodel: onnx.ModelProto,
    fp32: onnx.ModelProto,
    layers: Sequence[str],
    lr: np.ndarray,
    ref: np.ndarray,
    progress: bool,
) -> dict[str, float]:
    """Per layer: output MSE (against the fp32 graph) with only that layer in INT8."""
    from tqdm import tqdm

    sess = _session(_mask_graph(qmodel, fp32, layers))
    name = sess.get_inputs()[0].name
    n = len(layers)
    out: dict[str, float] = {}
    for i in tqdm(range(n), desc="int8 sensitivity", unit="layer", disable=not progress):
        mask = np.zeros(n, dtype=bool)
        mask[i] = True
        y = sess.run(None, {name: lr, "int8_mask": mask})[0]
        out[layers[i]] = float(np.mean((y.astype(np.float64) - ref) ** 2))
    return out


# --- fp16 + Q/DQ ------------------------------------------------------------------------------


def _without(qmodel: onnx.ModelProto, fp32: onnx.ModelProto, drop: set[str]) -> onnx.ModelProto:
    """``qmodel`` with the layers in ``drop`` reading their original fp32 inputs (dead Q/DQ removed)."""
    import onnx_graphsurgeon as gs

    m = copy.deepcopy(qmodel)
    orig = {n.name: n for n in fp32.graph.node}
    fp32_inits = {t.name: t for t in fp32.graph.initializer}
    have = {t.name for t in m.graph.initializer} | {o for n in m.graph.node for o in n.output}
    have |= {i.name for i in m.graph.input}
    qin = _quantized_inputs(m)
    for node in m.graph.node:
        if node.name in drop and node.name in qin:
            for k in qin[node.name]:
                src = orig[node.name].input[k]
                if src not in have and src in fp32_inits:
                    m.graph.initializer.append(copy.deepcopy(fp32_inits[src]))
                    have.add(src)
                if src in have:
                    node.input[k] = src
    g = gs.import_onnx(m)
    g.cleanup()
    out = gs.export_onnx(g)
    out.ir_version = qmodel.ir_version
    return out


def attach_qdq(fp16_model: onnx.ModelProto, qmodel: onnx.ModelProto) -> onnx.ModelProto:
    """Re-attach ``qmodel``'s Q/DQ (ORT's scales, zero points and INT8 weights) to the same-named
    nodes of ``fp16_model``, in the dtype each consumer reads (fp16 or fp32)."""
    import onnx_graphsurgeon as gs

    inferred = onnx.shape_inference.infer_shapes(fp16_model, strict_mode=False)
    graph = gs.import_onnx(inferred)
    by_name = {n.name: n for n in graph.nodes}
    qinits = {t.name: numpy_helper.to_array(t) for t in qmodel.graph.initializer}
    qconst = {
        n.output[0]: numpy_helper.to_array(n.attribute[0].t)
        for n in qmodel.graph.node
        if n.op_type == "Constant" and n.attribute and n.attribute[0].type == onnx.AttributeProto.TENSOR
    }
    producer = {o: n for n in qmodel.graph.node for o in n.output}

    def value(name: str) -> np.ndarray:
        if name in qinits:
            return qinits[name]
        if name in qconst:
            return qconst[name]
        raise ExportError(f"internal: quantizer parameter {name} is not a constant")

    act_cache: dict[tuple[str, str], gs.Variable] = {}
    for layer, inputs in _quantized_inputs(qmodel).items():
        target = by_name.get(layer)
        if target is None:
            raise ExportError(f"internal: quantized node {layer} is missing from the fp16 graph")
        for k, dq in inputs.items():
            tensor = target.inputs[k]
            half = tensor.dtype == np.float16 or (
                isinstance(tensor, gs.Constant) and tensor.values.dtype == np.float16
            )
            fdt = np.float16 if half else np.float32
            scale = value(dq.input[1]).astype(np.float32)
            if half:
                scale = np.maximum(scale, FP16_MIN_SCALE)
            scale = np.asarray(scale, dtype=fdt)
            zp = np.asarray(value(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else np.zeros(scale.shape, np.int8))
            attrs = {a.name: helper.get_attribute_value(a) for a in dq.attribute}
            src = producer.get(dq.input[0])
            out = gs.Variable(f"{layer}__int8_in{k}", dtype=fdt)
            if src is not None and src.op_type == "QuantizeLinear":  # activation: Q -> DQ
                key = (tensor.name, dq.input[1])
                if key not in act_cache:
                    q_out = gs.Variable(f"{tensor.name}__q", dtype=np.int8)
                    dq_out = gs.Variable(f"{tensor.name}__dq", dtype=fdt)
                    s = gs.Constant(f"{tensor.name}__scale", scale)
                    z = gs.Constant(f"{tensor.name}__zp", zp)
                    graph.nodes.append(gs.Node("QuantizeLinear", f"{tensor.name}/Q", inputs=[tensor, s, z],
                                               outputs=[q_out]))
                    graph.nodes.append(gs.Node("DequantizeLinear", f"{tensor.name}/DQ", inputs=[q_out, s, z],
                                               outputs=[dq_out]))
                    act_cache[key] = dq_out
                target.inputs[k] = act_cache[key]
            else:  # weight: INT8 initializer -> DQ
                w = gs.Constant(f"{layer}__w_int8_{k}", np.asarray(value(dq.input[0])))
                graph.nodes.append(
                    gs.Node("DequantizeLinear", f"{layer}/w{k}/DQ", attrs=attrs,
                            inputs=[w, gs.Constant(f"{layer}__w_scale_{k}", scale),
                                    gs.Constant(f"{layer}__w_zp_{k}", zp)], outputs=[out])
                )
                target.inputs[k] = out
    graph.cleanup().toposort()
    graph.opset = max(graph.opset, 19)  # fp16 QuantizeLinear/DequantizeLinear
    out_model = gs.export_onnx(graph)
    out_model.ir_version = fp16_model.ir_version
    del out_model.opset_import[:]
    for op in fp16_model.opset_import:
        out_model.opset_import.append(helper.make_opsetid(op.domain, max(op.version, 19) if op.domain in ("",
                                      "ai.onnx") else op.version))
    out_model.graph.ClearField("value_info")
    return out_model


def int8_macs(fp32: onnx.ModelProto, lr: np.ndarray, int8_nodes: set[str]) -> tuple[int, int]:
    """(total, INT8) MACs at ``lr``'s size, by the project's one MAC rule (srdeploy.onnxlayer)."""
    from srdeploy import onnxlayer

    from . import fp16 as fp16_pass

    base = fp16_pass.constants_to_initializers(copy.deepcopy(fp32))
    wanted = [x for n in base.graph.node if onnxlayer.counts_macs(n) for x in [*n.input, *n.output] if x]
    name = base.graph.input[0].name
    values = onnxlayer.run_with_intermediates(base, {name: lr}, wanted)
    shapes: dict[str, tuple[int, ...] | None] = {k: tuple(v.shape) for k, v in values.items()}
    shapes[name] = tuple(lr.shape)
    per_node = onnxlayer.graph_macs(base, shapes)
    total = sum(per_node.values())
    q = sum(n for i, n in per_node.items() if base.graph.node[i].name in int8_nodes)
    return total, q


# --- the pass --------------------------------------------------------------------------------


def quantize_int8(
    model: onnx.ModelProto,
    calib: CalibrationSet,
    *,
    method: str = DEFAULT_METHOD,
    gate_db: float = DEFAULT_GATE_DB,
    to_fp16: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None,
    weights_meaningful: bool = True,
    sensitivity_crops: int = 1,
    sensitivity_size: int | None = 16,
    batch: int = 4,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Int8Result:
    """fp32 ``model`` -> INT8 Q/DQ graph (+ fp16 elsewhere via ``to_fp16``) that passes the gate.

    The gate: mean Y-PSNR on ``calib.heldout`` of the returned graph >= the fp32 graph's minus
    ``gate_db``. Raises :class:`Int8GateError` (naming the best result and the layers tried)
    when no fallback reaches it.
    """
    import onnxruntime as ort

    if method not in METHODS:
        raise SrdeployError(f"unknown --calib-method {method!r}; choose one of {', '.join(METHODS)}")
    if not gate_db >= 0:
        raise SrdeployError(f"--int8-gate must be a non-negative dB value, got {gate_db}")
    say = log or (lambda _msg: None)
    t0 = time.perf_counter()
    fp32 = name_nodes(copy.deepcopy(model))
    held = calib.heldout
    held_lr = held.batch()
    ref = run_batched(fp32, held_lr, batch)
    psnr32 = y_psnr(list(ref), held)

    with tempfile.TemporaryDirectory(prefix="srdeploy-int8-") as tmp:
        src, cache = Path(tmp) / "fp32.onnx", Path(tmp) / "calib.json"
        onnx.save(fp32, str(src))
        reader = _Reader(calib.crops, fp32.graph.input[0].name, batch, progress)
        qfull = _ort_quantize(src, Path(tmp) / "q.onnx", cache, reader, method, [])
    say(f"int8: calibrated ({method}) and quantized in {time.perf_counter() - t0:.1f} s")
    layers = [n.name for n in qfull.graph.node if n.name in _quantized_inputs(qfull)]
    if not layers:
        raise ExportError("the graph has no Conv/ConvTranspose/MatMul/Gemm the quantizer could quantize; drop --int8")

    n_sens = max(1, min(sensitivity_crops, len(held_lr)))
    # A centre sub-crop keeps the per-layer runs cheap (one run per quantized layer); the gate
    # itself is always measured on the whole held-out set.
    sens_lr = held_lr[:n_sens]
    if sensitivity_size is not None and sensitivity_size < min(sens_lr.shape[-2:]):
        y0 = (sens_lr.shape[-2] - sensitivity_size) // 2
        x0 = (sens_lr.shape[-1] - sensitivity_size) // 2
        sens_lr = np.ascontiguousarray(sens_lr[..., y0 : y0 + sensitivity_size, x0 : x0 + sensitivity_size])
    sens_ref = run_batched(fp32, sens_lr, batch).astype(np.float64)
    damage = solo_damage(qfull, fp32, layers, sens_lr, sens_ref, progress)
    say(f"int8: solo sensitivity of {len(layers)} layers in {time.perf_counter() - t0:.1f} s")
    ranked = sorted(layers, key=lambda n: -damage[n])
    total = sum(damage.values()) or 1.0
    op_of = {n.name: n.op_type for n in fp32.graph.node}
    fp16_base = to_fp16(fp32) if to_fp16 is not None else None

    def build(drop: set[str]) -> onnx.ModelProto:
        q = _without(qfull, fp32, drop) if drop else qfull
        return attach_qdq(fp16_base, q) if fp16_base is not None else q

    def prefix_for(share: float) -> int:
        if share >= 1.0:
            return len(ranked)
        acc, k = 0.0, 0
        while k < len(ranked) and acc < share * total - 1e-30:
            acc += damage[ranked[k]]
            k += 1
        return k

    rounds: list[dict[str, Any]] = []
    tried: dict[int, float] = {}
    best: tuple[float, int, onnx.ModelProto] | None = None
    chosen: tuple[int, onnx.ModelProto, float] | None = None

    def evaluate(k: int, why: str) -> float:
        nonlocal best
        graph = build(set(ranked[:k]))
        p = y_psnr(list(run_batched(graph, held_lr, batch)), held)
        tried[k] = p
        say(f"int8: evaluated at {time.perf_counter() - t0:.1f} s")
        rounds.append({"round": len(rounds), "kept_out": k, "why": why, "y_psnr_db": round(p, 4),
                       "drop_db": round(psnr32 - p, 4)})
        say(f"int8 round {len(rounds) - 1}: {k}/{len(ranked)} layers kept out of INT8, held-out Y-PSNR "
            f"{p:.3f} dB (fp32 {psnr32:.3f}, drop {psnr32 - p:+.3f} dB)")
        if best is None or p > best[0]:
            best = (p, k, graph)
        return p

    passing = lambda p: p >= psnr32 - gate_db  # noqa: E731
    lo = -1  # largest k known to fail
    for share in FALLBACK_SHARES:
        k = prefix_for(share)
        if k in tried or k <= lo:
            continue
        p = evaluate(k, f"{share:.1%} of the measured solo damage kept out")
        if passing(p):
            chosen = (k, best[2] if best and best[1] == k else build(set(ranked[:k])), p)
            break
        lo = k
        if k >= len(ranked):
            break
    if chosen is not None and chosen[0] < len(ranked):
        # refine: fewer layers kept out, by bisection between the last failing and the passing prefix
        hi_k, hi_graph, hi_p = chosen
        lo_k = max(lo, 0)
        for _ in range(3):
            if hi_k - lo_k <= 1:
                break
            mid = (lo_k + hi_k) // 2
            p = evaluate(mid, "bisection towards fewer layers kept out")
            if passing(p):
                hi_k, hi_p = mid, p
                hi_graph = best[2] if best and best[1] == mid else build(set(ranked[:mid]))
            else:
                lo_k = mid
        chosen = (hi_k, hi_graph, hi_p)
    if chosen is None or chosen[0] >= len(ranked):
        b = best
        assert b is not None
        raise Int8GateError(
            f"INT8 misses the {gate_db:g} dB gate on the held-out images, nothing written: best held-out Y-PSNR "
            f"{b[0]:.3f} dB vs fp32 {psnr32:.3f} dB with {b[1]}/{len(ranked)} layers kept out of INT8 "
            f"(tried {sorted(tried)} layers out, most damaging first: {', '.join(ranked[:5])}...); relax "
            "--int8-gate, try another --calib-method, or give more calibration images"
        )
    k, graph, p = chosen
    kept = ranked[:k]
    int8_nodes = [n for n in layers if n not in set(kept)]
    total_macs, macs8 = int8_macs(fp32, held_lr[:1], set(int8_nodes))
    manifest: dict[str, Any] = {
        "quantizer": f"onnxruntime.quantization.quantize_static {ort.__version__} (QDQ, per-channel symmetric "
        "INT8 weights, per-tensor symmetric INT8 activations on Conv/ConvTranspose/MatMul/Gemm inputs, "
        "float biases)",
        "placement": "Q/DQ on the op inputs only (TensorRT explicit quantization); non-INT8 ops as the fp16 pass "
        "left them" if fp16_base is not None else "Q/DQ on the op inputs only; non-INT8 ops fp32",
        "calibration_method": method,
        **calib.as_dict(),
        "gate": {
            "metric": "mean Y-PSNR (uint8-rounded, border = scale) on the held-out crops",
            "max_drop_db": gate_db,
            "fp32_y_psnr_db": round(psnr32, 4),
            "int8_y_psnr_db": round(p, 4),
            "drop_db": round(psnr32 - p, 4),
            "passed": True,
        },
        "quality_meaningful": weights_meaningful,
        "quality_note": None if weights_meaningful else "seeded random weights: the PSNR figures are meaningless "
        "(they show the mechanism, not the quality of a real network)",
        "layers_quantizable": len(layers),
        "layers_int8": len(int8_nodes),
        "kept_out_of_int8": [
            {
                "node": n,
                "op_type": op_of.get(n, "?"),
                "reason": "sensitivity: with only this layer in INT8 the output is "
                f"{_db(damage[n], sens_ref)} from fp32 "
                f"(rank {i + 1}/{len(ranked)}, {damage[n] / total:.1%} of the summed solo damage)",
            }
            for i, n in enumerate(kept)
        ],
        "macs_total": total_macs,
        "macs_int8": macs8,
        "int8_mac_fraction": round(macs8 / total_macs, 6) if total_macs else 0.0,
        "mac_count_lr_size": f"{held_lr.shape[-2]}x{held_lr.shape[-1]}",
        "sensitivity": {
            "measure": "output MSE vs the fp32 graph with only that layer in INT8",
            "crops": n_sens,
            "lr_size": f"{sens_lr.shape[-2]}x{sens_lr.shape[-1]}",
        },
        "rounds": rounds,
    }
    return Int8Result(graph, manifest, int8_nodes)


def _db(mse: float, ref: np.ndarray) -> str:
    peak = float(np.abs(ref).max()) or 1.0
    if mse <= 0:
        return "no measurable loss (inf dB)"
    return f"{10 * math.log10(peak * peak / mse):.1f} dB"


class Int8Pass:
    """The registered graph pass (srdeploy.export.passes): ``--int8 --calib DIR``.

    It runs on the fp32 graph (the config refuses ``--int8`` with ``--fp16``: the ops left out of
    INT8 go through the fp16 pass here, where the model allows fp16) and owns the ``int8``
    manifest section.
    """

    name = "int8"

    def enabled(self, ctx: Any) -> bool:
        return bool(getattr(ctx.config, "int8", False))

    def run(self, graph: onnx.ModelProto, ctx: Any) -> tuple[onnx.ModelProto, dict[str, Any], list[str]]:
        import sys

        from . import fp16 as fp16_pass
        from .calibration import load_calibration
        from .compare import tolerance_for

        cfg, desc = ctx.config, ctx.descriptor
        m = desc.size_multiple
        crop = -(-max(cfg.calib_crop, desc.min_size) // m) * m
        cset = load_calibration(cfg.calib, cfg.scale, crop=crop)
        weights_kind = getattr(ctx, "weights_kind", "random")
        fp16_section: dict[str, Any] = {}

        def to_fp16(g: onnx.ModelProto) -> onnx.ModelProto:
            tol = tolerance_for("fp16", weights_kind)
            target = tol.min_psnr_db if tol.min_psnr_db is not None else fp16_pass.FP16_DEFAULT_TARGET_DB
            proto, report, history = fp16_pass.derive_fp16(g, ctx.calibration, ctx.reference(ctx.calibration),
                                                           target, psnr=ctx.psnr)
            fp16_section.update(report.as_dict(), escalation=history)
            return proto

        res = quantize_int8(
            graph,
            cset,
            method=cfg.calib_method,
            gate_db=cfg.int8_gate,
            to_fp16=to_fp16 if desc.fp16 else None,
            weights_meaningful=weights_kind == "real",
            sensitivity_size=-(-max(16, desc.min_size) // m) * m,
            progress=sys.stderr.isatty(),
            log=lambda msg: print(msg, file=sys.stderr),
        )
        # the fp16 part of the mixed graph is reported inside this pass's section (manifest["int8"]["fp16"])
        return res.model, {**res.manifest, "fp16": fp16_section or None}, []


PASS = Int8Pass()
