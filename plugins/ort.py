"""ONNX Runtime (CPU) execution of plugin graphs through onnxruntime-extensions PyOp. Torch-free.

:func:`srdeploy.onnxlayer.session` (the one place sessions are made) calls
:func:`prepare_session` for graphs with custom ops: it registers the numpy reference kernel of
every plugin in :data:`srdeploy.plugins.registry.PLUGINS` in domain ``trt.plugins``.

PyOp only handles fp32: an fp16 tensor reaching a PyOp aborts the whole process ("Type float16
not supported by python customops api"). :func:`prepare_session` therefore wraps every plugin
node whose inputs are fp16 in Cast(fp32) -> ``<Op>_Fp16Emulation`` -> Cast(fp16)
(``cast_wrap_plugins``). The wrapped op is not the fp32 reference: its PyOp kernel turns the
(exactly representable) fp32 inputs back into fp16 and runs the plugin's ``fp16_emulation``, the
CPU replay of the fp16 CUDA kernel's algorithm (fp16 operands, fp32 accumulation, P split in
two fp16 parts for P.V, fp16 output), so an fp16 plugin graph validates with the kernel's numerics. And
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
from srdeploy.onnxlayer import SessionConfig, elem_types, session

from .registry import PLUGINS, np_local_ensemble, np_window_attention, plugin_nodes
from .spec import PLUGIN_DOMAIN

__all__ = ["cast_wrap_plugins", "np_local_ensemble", "np_window_attention", "ort_session", "plugin_nodes",
           "prepare_session", "register_reference_ops", "run_isolated"]

_REGISTERED = False
#: op-type suffix of the cast-wrapped fp16 plugin nodes (registered by :func:`register_reference_ops`)
EMULATION_SUFFIX = "_Fp16Emulation"
_PYOP_ATTR_TYPES = {"int": "dt_int64", "string": "dt_string", "float": "dt_float"}


def register_reference_ops() -> None:
    """Register the numpy reference kernel of every registered plugin, once per process."""
    global _REGISTERED
    if _REGISTERED:
        return
    require("onnxruntime_extensions", "dev")
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    f32 = PyCustomOpDef.dt_float
    for plugin in PLUGINS.values():
        attrs = {name: getattr(PyCustomOpDef, _PYOP_ATTR_TYPES[kind]) for name, kind in plugin.pyop_attrs.items()}
        onnx_op(op_type=f"{PLUGIN_DOMAIN}::{plugin.op_type}", inputs=[f32] * plugin.pyop_inputs, outputs=[f32],
                attrs=attrs or None)(_kernel(plugin.numpy_reference, tuple(plugin.pyop_attrs)))
        if plugin.fp16_emulation is not None:
            onnx_op(op_type=f"{PLUGIN_DOMAIN}::{plugin.op_type}{EMULATION_SUFFIX}", inputs=[f32] * plugin.pyop_inputs,
                    outputs=[f32], attrs=attrs or None)(
                _fp16_kernel(plugin.fp16_emulation, tuple(plugin.pyop_attrs), plugin.spec.follows_first()))
    _REGISTERED = True


def _kernel(fn: Any, attr_names: tuple[str, ...]) -> Any:
    """PyOp passes the inputs positionally and the attributes as keyword arguments."""

    def run(*tensors: np.ndarray, **attrs: Any) -> np.ndarray:
        return fn(*tensors, **{k: attrs[k] for k in attr_names})

    return run


def _fp16_kernel(fn: Any, attr_names: tuple[str, ...], tied: tuple[bool, ...]) -> Any:
    """The fp16 emulation behind an fp32 PyOp: the inputs typed like the first back to fp16
    (exact: they were cast from fp16), the others (an fp32 or fp16 bias table) as given, the
    kernel's fp16 algorithm, the fp16 result widened (exact) for PyOp."""

    def run(*tensors: np.ndarray, **attrs: Any) -> np.ndarray:
        half = [t.astype(np.float16) if i < len(tied) and tied[i] else t for i, t in enumerate(tensors)]
        return np.asarray(fn(*half, **{k: attrs[k] for k in attr_names})).astype(np.float32)

    return run


def cast_wrap_plugins(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Copy of ``model`` with fp16 plugin nodes wrapped in Cast(fp32) -> emulation -> Cast(fp16).

    A plugin node counts as fp16 when its first input is fp16 (its output has the first input's
    type); it becomes ``<Op>_Fp16Emulation`` (the fp16 kernel's CPU replay). A plugin whose kernel
    has no fp16 variant cannot hold fp16 tensors (the fp16 pass never types it so): error.
    Returns (model, number of wrapped nodes).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    types = elem_types(out)
    wrapped = 0
    new_nodes: list[onnx.NodeProto] = []
    for node in out.graph.node:
        if not (node.domain == PLUGIN_DOMAIN and node.op_type in PLUGINS):
            new_nodes.append(node)
            continue
        if types.get(node.input[0]) != TensorProto.FLOAT16:
            new_nodes.append(node)
            continue
        if PLUGINS[node.op_type].fp16_emulation is None:
            raise BackendError(
                f"plugin node {node.name or node.op_type} takes fp16 but {node.op_type} has no fp16 kernel; "
                "re-export with the current sr-export (it keeps such nodes in fp32)"
            )
        wrapped += 1
        node.op_type = f"{node.op_type}{EMULATION_SUFFIX}"
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


def prepare_session(model: onnx.ModelProto, opts: Any) -> onnx.ModelProto:
    """Make ``model`` runnable on ONNX Runtime CPU: register the reference kernels with ``opts``
    and cast-wrap fp16 plugin nodes (returns a copy when anything was wrapped)."""
    require("onnxruntime_extensions", "dev")
    from onnxruntime_extensions import get_library_path

    register_reference_ops()
    opts.register_custom_ops_library(get_library_path())
    if plugin_nodes(model):
        model, _ = cast_wrap_plugins(model)
    return model


def ort_session(model_path_or_bytes: str | Path | bytes | onnx.ModelProto, threads: int | None = None) -> Any:
    """A CPU session: :func:`srdeploy.onnxlayer.session` (kept as this package's entry point)."""
    return session(model_path_or_bytes, SessionConfig(intra_op_threads=threads))


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
