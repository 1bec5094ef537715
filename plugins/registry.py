"""Every plugin defined once (torch-free): the records everything that iterates over plugins reads.

One :class:`PluginDef` per plugin holds what the Python side needs to know about it:

* ``op_type`` and its spec (``plugins/<op_type>.json``: domain, version, inputs, attributes, tolerances),
* ``macs``: its cost from its input shapes (read by :func:`srdeploy.onnxlayer.node_macs`, so the
  graph statistics and the fp16 pass's MAC share count plugins the same way),
* ``numpy_reference``: a plain float64 numpy implementation (the ONNX Runtime PyOp kernel),
* ``pyop_inputs`` / ``pyop_attrs``: the launcher signature registered with onnxruntime-extensions,
* ``fp16_emulation``: the CPU replay of the kernel's fp16 variant (:mod:`srdeploy.plugins.emulation`),
  or ``None`` when the kernel has no fp16 variant. ONNX Runtime runs fp16 plugin nodes through it
  (cast-wrapped, since PyOp is fp32 only; see :mod:`srdeploy.plugins.ort`). Which inputs and
  outputs may be fp16 is the spec's (``PluginSpec.fp16_inputs``); :meth:`PluginDef.fp16_inputs`
  combines both, and the fp16 graph pass reads it.

The torch-side record (PyTorch reference, ONNX emitter, the model attribute it replaces) lives in
:mod:`srdeploy.plugins.onnx_ops` (``TORCH_PLUGINS``), which needs torch. A new plugin adds one
``PluginDef`` here, one ``TorchPlugin`` there, its JSON spec, and its CUDA/C++ folder.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from .spec import LOCAL_ENSEMBLE, PLUGIN_DOMAIN, WINDOW_ATTENTION, PluginSpec, load_spec

Shape = tuple[int, ...]


def _need(shapes: Sequence[Shape | None], idx: int, op: str) -> Shape:
    from srdeploy.onnxlayer import need

    return need(shapes, idx, op)


# ------------------------------------------------------------------------------ window attention


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


def window_attention_macs(shapes: list[Shape | None]) -> int:
    """q, k, v: (B*nW, heads, N, d): ``q k^T`` and ``P v`` -> B*nW * heads * N * N * (d + d_v)."""
    q = _need(shapes, 0, WINDOW_ATTENTION)
    v = _need(shapes, 2, WINDOW_ATTENTION)
    bn, heads, n, d = q
    return bn * heads * n * n * d + bn * heads * n * n * v[-1]


# -------------------------------------------------------------------------------- local ensemble


def np_local_ensemble(query: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Plain numpy CiaoSRLocalEnsemble (float64 math, float32 result) used by the PyOp."""
    scores = np.sum(keys.astype(np.float64) * query.astype(np.float64)[..., None, :], axis=-1)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    return np.sum(p[..., None] * values.astype(np.float64), axis=-2).astype(np.float32)


def local_ensemble_macs(shapes: list[Shape | None]) -> int:
    """query (Q, C1), keys (Q, 4, C1), values (Q, 4, C2): 4 dot products + a weighted sum of 4 values."""
    k = _need(shapes, 1, LOCAL_ENSEMBLE)
    v = _need(shapes, 2, LOCAL_ENSEMBLE)
    return math.prod(k) + math.prod(v)


# -------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class PluginDef:
    """One plugin, as the torch-free code sees it (see the module docstring)."""

    op_type: str
    macs: Callable[[list[Shape | None]], int]
    numpy_reference: Callable[..., np.ndarray]
    pyop_inputs: int  # float32 tensors in, one float32 tensor out
    pyop_attrs: Mapping[str, str]  # attribute -> "int" | "string" | "float"
    fp16_emulation: Callable[..., np.ndarray] | None = None

    @property
    def fp16(self) -> bool:
        """Whether the kernel has an fp16 variant and the spec lets its first input be fp16."""
        return self.fp16_emulation is not None and self.spec.fp16_inputs()[0]

    def fp16_inputs(self) -> tuple[bool, ...]:
        """Per input: may it be fp16 (kernel variant and spec)? All False without an fp16 kernel."""
        allowed = self.spec.fp16_inputs()
        return allowed if self.fp16 else tuple(False for _ in allowed)

    def fp16_outputs(self) -> tuple[bool, ...]:
        allowed = self.spec.fp16_outputs()
        return allowed if self.fp16 else tuple(False for _ in allowed)

    @property
    def spec(self) -> PluginSpec:
        return load_spec(self.op_type)

    @property
    def domain(self) -> str:
        return PLUGIN_DOMAIN


PLUGINS: dict[str, PluginDef] = {}


def register(plugin: PluginDef) -> PluginDef:
    """Add ``plugin`` to :data:`PLUGINS` (one line per plugin below)."""
    if plugin.op_type in PLUGINS:
        raise ValueError(f"plugin {plugin.op_type} is registered twice")
    PLUGINS[plugin.op_type] = plugin
    return plugin


def _emulated_window_attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, table: np.ndarray, *, window: int, bias_index: str, scale: float
) -> np.ndarray:
    """``windowAttentionF16`` replayed on CPU register by register (fp16 q, k, v; fp16 out).

    The lane-level replay, not the algorithm-level :func:`~srdeploy.plugins.emulation.emulate_window_attention`:
    on esc.light x2 (seeded weights) the two differ by ~0.9 dB end to end, and the lane replay is
    the one that follows the kernel's instructions (vectorised over windows and heads; bit-identical
    to the per-warp loop, tested)."""
    from .emulation import emulate_window_attention_f16_lanes_batched as replay

    return replay(q, k, v, table, window=int(window), bias_index=str(bias_index), scale=float(scale) if scale else None)


def _emulated_local_ensemble(query: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``localEnsembleKernel`` (half instantiation) replayed on CPU."""
    from .emulation import emulate_local_ensemble

    return emulate_local_ensemble(query, keys, values)


register(PluginDef(WINDOW_ATTENTION, window_attention_macs, np_window_attention, 4,
                   {"window": "int", "bias_index": "string", "scale": "float"}, _emulated_window_attention))
# The kernel has a __half instantiation, so the node is typed fp16 like any other node; whether
# it stays there is measured by the fp16 pass (on EDSR its fp16 error was 0.24).
register(PluginDef(LOCAL_ENSEMBLE, local_ensemble_macs, np_local_ensemble, 3, {}, _emulated_local_ensemble))


@cache
def _formulas() -> dict[str, Callable[[list[Shape | None]], int]]:
    return {name: p.macs for name, p in PLUGINS.items()}


def mac_formulas() -> Mapping[str, Callable[[list[Shape | None]], int]]:
    """op type -> MAC formula of every registered plugin."""
    return _formulas()


def plugin_nodes(model: Any) -> list[Any]:
    """The registered plugin nodes (domain ``trt.plugins``) of the main graph."""
    return [n for n in model.graph.node if n.domain == PLUGIN_DOMAIN and n.op_type in PLUGINS]
