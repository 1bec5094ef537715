"""ONNX Runtime (CPU) execution of plugin graphs through onnxruntime-extensions PyOp.

``ort_session(model)`` registers numpy reference implementations of the plugin ops in domain
``trt.plugins`` and returns an ``onnxruntime.InferenceSession``. Torch-free.

PyOp only handles fp32: an fp16 tensor reaching a PyOp aborts the whole process ("Type float16
not supported by python customops api"). ``ort_session`` therefore wraps every plugin node whose
inputs are fp16 in Cast(fp32) -> plugin -> Cast(fp16) (``cast_wrap_plugins``), and
``run_isolated`` runs a graph in a child process so that an abort fails a check instead of
killing the caller. Usage::

    python -m srdeploy.plugins.ort MODEL.onnx INPUTS.npz OUTPUTS.npz
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from srdeploy.errors import BackendError, require

from .spec import LOCAL_ENSEMBLE, OP_TYPES, PLUGIN_DOMAIN, WINDOW_ATTENTION

_REGISTERED = False


def _np_relative_index(window: int, bias_index: str) -> np.ndarray:
    ys, xs = np.meshgrid(np.arange(window), np.arange(window), indexing="ij")
    coords = np.stack([ys.reshape(-1), xs.reshape(-1)], -1)
    delta = coords[None, :, :] - coords[:, None, :]  # key - query
    if bias_index == "q-k":
        delta = -delta
    span = 2 * window - 1
    return (delta[..., 0] + window - 1) * span + (delta[..., 1] + window - 1)


def np_window_attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, table: np.ndarray, *, window: int, bias_index: str, scale: float
) -> np.ndarray:
    """Plain numpy SRWindowAttention (float64 math, float32 result) used by the PyOp."""
    if bias_index not in ("k-q", "q-k"):
        raise ValueError(f"SRWindowAttention: bias_index must be 'k-q' or 'q-k', got {bias_index!r}")
    bias = table.astype(np.float64)[:, _np_relative_index(window, bias_index)]
    s = np.matmul(q.astype(np.float64), np.swapaxes(k.astype(np.float64), -1, -2)) * scale + bias[None]
    s = np.exp(s - s.max(axis=-1, keepdims=True))
    p = s / s.sum(axis=-1, keepdims=True)
    return np.matmul(p, v.astype(np.float64)).astype(np.float32)


def np_local_ensemble(query: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Plain numpy CiaoSRLocalEnsemble (float64 math, float32 result) used by the PyOp."""
    scores = np.sum(keys.astype(np.float64) * query.astype(np.float64)[..., None, :], axis=-1)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    return np.sum(p[..., None] * values.astype(np.float64), axis=-2).astype(np.float32)


def register_reference_ops() -> None:
    """Register the PyOp reference kernels once per process (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    require("onnxruntime_extensions", "dev")
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    f32 = PyCustomOpDef.dt_float

    @onnx_op(
        op_type=f"{PLUGIN_DOMAIN}::{WINDOW_ATTENTION}",
        inputs=[f32, f32, f32, f32],
        outputs=[f32],
        attrs={
            "window": PyCustomOpDef.dt_int64,
            "bias_index": PyCustomOpDef.dt_string,
            "scale": PyCustomOpDef.dt_float,
        },
    )
    def _window_attention(q, k, v, table, window, bias_index, scale):  # type: ignore[no-untyped-def]
        return np_window_attention(q, k, v, table, window=window, bias_index=bias_index, scale=scale)

    @onnx_op(op_type=f"{PLUGIN_DOMAIN}::{LOCAL_ENSEMBLE}", inputs=[f32, f32, f32], outputs=[f32])
    def _local_ensemble(query, keys, values):  # type: ignore[no-untyped-def]
        return np_local_ensemble(query, keys, values)

    _REGISTERED = True


def plugin_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The plugin nodes (domain ``trt.plugins``, known op types) of the main graph."""
    return [n for n in model.graph.node if n.domain == PLUGIN_DOMAIN and n.op_type in OP_TYPES]


def _recorded_types(model: onnx.ModelProto) -> dict[str, int]:
    # non-strict inference skips the custom-domain nodes and types everything around them
    g = onnx.shape_inference.infer_shapes(model).graph
    types: dict[str, int] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element types of the graph's tensors, propagated through the plugin nodes.

    ONNX shape inference stops at nodes without a schema, so everything downstream of a plugin
    would be untyped; a plugin's output has its first input's type, so declare that and infer
    again until nothing changes.
    """
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    nodes = plugin_nodes(probe)
    for _ in range(len(nodes) + 1):
        types = _recorded_types(probe)
        added = False
        for node in nodes:
            out, first = node.output[0], node.input[0]
            if out not in types and first in types:
                probe.graph.value_info.append(helper.make_tensor_value_info(out, types[first], None))
                added = True
        if not added:
            return types
    return types


def cast_wrap_plugins(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Copy of ``model`` with fp16 plugin nodes wrapped in Cast(fp32) ... Cast(fp16).

    A plugin node counts as fp16 when its first input is fp16 (its output has the first input's
    type). Returns (model, number of wrapped nodes).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    types = _elem_types(out)
    wrapped = 0
    new_nodes: list[onnx.NodeProto] = []
    for node in out.graph.node:
        if not (node.domain == PLUGIN_DOMAIN and node.op_type in OP_TYPES):
            new_nodes.append(node)
            continue
        if types.get(node.input[0]) != TensorProto.FLOAT16:
            new_nodes.append(node)
            continue
        wrapped += 1
        inputs = []
        for i, name in enumerate(node.input):
            cast_name = f"{node.name or node.op_type}_in{i}_f32"
            new_nodes.append(helper.make_node("Cast", [name], [cast_name], to=TensorProto.FLOAT, name=cast_name))
            inputs.append(cast_name)
        original_out = node.output[0]
        f32_out = f"{original_out}__f32"
        del node.input[:]
        node.input.extend(inputs)
        node.output[0] = f32_out
        new_nodes.append(node)
        new_nodes.append(
            helper.make_node("Cast", [f32_out], [original_out], to=TensorProto.FLOAT16, name=f"{original_out}__to_f16")
        )
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    # stale value_info would claim fp16 for the renamed fp32 outputs
    keep = [vi for vi in out.graph.value_info if not vi.name.endswith("__f32")]
    del out.graph.value_info[:]
    out.graph.value_info.extend(keep)
    return out, wrapped


def ort_session(model_path_or_bytes: str | Path | bytes | onnx.ModelProto, **session_kwargs: Any) -> Any:
    """An ``onnxruntime.InferenceSession`` (CPU) able to run plugin graphs.

    ``session_kwargs`` go to ``InferenceSession`` (``sess_options`` is extended, not replaced;
    ``providers`` defaults to CPU). fp16 plugin nodes are cast-wrapped (see module docstring).
    """
    ort = require("onnxruntime", "ort")
    require("onnxruntime_extensions", "dev")
    from onnxruntime_extensions import get_library_path

    register_reference_ops()
    if isinstance(model_path_or_bytes, onnx.ModelProto):
        model = model_path_or_bytes
    elif isinstance(model_path_or_bytes, bytes):
        model = onnx.load_from_string(model_path_or_bytes)
    else:
        model = onnx.load(str(model_path_or_bytes))
    if plugin_nodes(model):
        model, _ = cast_wrap_plugins(model)
    opts = session_kwargs.pop("sess_options", None) or ort.SessionOptions()  # type: ignore[attr-defined]
    opts.register_custom_ops_library(get_library_path())
    providers = session_kwargs.pop("providers", ["CPUExecutionProvider"])
    try:
        return ort.InferenceSession(  # type: ignore[attr-defined]
            model.SerializeToString(), sess_options=opts, providers=providers, **session_kwargs
        )
    except Exception as exc:
        raise BackendError(
            f"ONNX Runtime could not load the plugin graph ({str(exc).splitlines()[0]}); "
            "check that its plugin nodes carry every attribute of plugins/<Op>.json"
        ) from exc


def run_isolated(
    model_path: str | Path, feeds: dict[str, np.ndarray], *, timeout_s: float = 600.0
) -> dict[str, np.ndarray]:
    """Run ``model_path`` through :func:`ort_session` in a child process; return its outputs.

    A PyOp abort (e.g. an fp16 tensor reaching it) becomes a :class:`BackendError` here.
    """
    with tempfile.TemporaryDirectory(prefix="srdeploy-ort-") as tmp:
        inp, outp = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(inp, **feeds)  # type: ignore[arg-type]
        proc = subprocess.run(
            [sys.executable, "-m", "srdeploy.plugins.ort", str(model_path), str(inp), str(outp)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if proc.returncode != 0 or not outp.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise BackendError(
                f"plugin graph failed in ONNX Runtime (exit code {proc.returncode}): {tail[0]}; "
                "run `python -m srdeploy.plugins.ort MODEL IN.npz OUT.npz` to see the full log"
            )
        with np.load(outp) as z:
            return {k: z[k] for k in z.files}


def _main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m srdeploy.plugins.ort MODEL.onnx INPUTS.npz OUTPUTS.npz", file=sys.stderr)
        return 2
    sess = ort_session(argv[0])
    with np.load(argv[1]) as z:
        feeds = {k: z[k] for k in z.files}
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run(names, feeds)
    np.savez(argv[2], **dict(zip(names, outs, strict=True)))  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
