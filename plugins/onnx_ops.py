"""Plugin-emitting replacements for the models' swappable attention/ensemble functions.

``apply_plugins(model)`` walks the modules and swaps, per instance and per record of
:data:`TORCH_PLUGINS`,

* ``module.core`` when it is the window-attention function of contract A
  (``window_attention(q, k, v, bias_table, *, window, bias_index, scale)``), and
* ``module.ensemble`` when it is the CiaoSR local ensemble of contract B
  (``local_ensemble(query, keys, values)``),

for functions that emit one ``trt.plugins::SRWindowAttention`` / ``CiaoSRLocalEnsemble`` node
during ONNX export and run the independent PyTorch reference of :mod:`srdeploy.plugins.reference`
otherwise. The dynamo exporter (default) gets the node from ``torch.onnx.ops.symbolic``; the
legacy TorchScript exporter (``dynamo=False``, e.g. an "auto" fallback) from an
``autograd.Function`` whose ``symbolic`` emits the same node. Call it on a copy if the portable
model is still needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .reference import BiasIndex, local_ensemble_ref, window_attention_ref
from .spec import LOCAL_ENSEMBLE, PLUGIN_DOMAIN, WINDOW_ATTENTION, load_spec


def _plugin_attrs(op_type: str) -> dict[str, Any]:
    spec = load_spec(op_type)
    return {"plugin_version": spec.plugin_version, "plugin_namespace": spec.plugin_namespace}


def _emitting() -> bool:
    """True while an ONNX graph is being traced: inside ``torch.onnx.export`` and inside the
    ``torch.export.export`` that the dynamo path runs first on its own (where
    ``torch.onnx.is_in_onnx_export()`` is still False, so without this the reference ops were
    traced and the CiaoSR decoder lost its plugin node)."""
    return bool(torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting())


def _legacy_export() -> bool:
    """True inside the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``)."""
    return torch.onnx.is_in_onnx_export() and not (torch.compiler.is_exporting() or torch.compiler.is_compiling())


class _LegacyWindowAttention(torch.autograd.Function):
    """TorchScript-exporter path: ``symbolic`` emits the plugin node, ``forward`` the reference."""

    @staticmethod
    def forward(ctx: Any, q, k, v, table, window: int, bias_index: str, scale: float):  # type: ignore[no-untyped-def]
        return window_attention_ref(q, k, v, table, window=window, bias_index=bias_index, scale=scale)  # type: ignore[arg-type]

    @staticmethod
    def symbolic(g, q, k, v, table, window: int, bias_index: str, scale: float):  # type: ignore[no-untyped-def]
        out = g.op(
            f"{PLUGIN_DOMAIN}::{WINDOW_ATTENTION}", q, k, v, table, window_i=window, bias_index_s=bias_index,
            scale_f=scale, plugin_version_s=load_spec(WINDOW_ATTENTION).plugin_version,
            plugin_namespace_s=load_spec(WINDOW_ATTENTION).plugin_namespace,
        )  # fmt: skip
        out.setType(q.type())
        return out


class _LegacyLocalEnsemble(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, query, keys, values):  # type: ignore[no-untyped-def]
        return local_ensemble_ref(query, keys, values)

    @staticmethod
    def symbolic(g, query, keys, values):  # type: ignore[no-untyped-def]
        spec = load_spec(LOCAL_ENSEMBLE)
        return g.op(
            f"{PLUGIN_DOMAIN}::{LOCAL_ENSEMBLE}", query, keys, values, plugin_version_s=spec.plugin_version,
            plugin_namespace_s=spec.plugin_namespace,
        )


def plugin_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias_table: torch.Tensor,
    *,
    window: int,
    bias_index: BiasIndex = "k-q",
    scale: float | None = None,
) -> torch.Tensor:
    """Contract-A function: one SRWindowAttention node at export, the reference otherwise."""
    if bias_index not in ("k-q", "q-k"):
        raise ValueError(f"bias_index must be 'k-q' or 'q-k', got {bias_index!r}")
    if _legacy_export():
        s = float(q.shape[-1] ** -0.5 if scale is None else scale)
        return _LegacyWindowAttention.apply(q, k, v, bias_table, int(window), bias_index, s)
    if _emitting():
        head_dim = int(q.shape[-1])
        attrs: dict[str, Any] = {
            "window": int(window),
            "bias_index": bias_index,
            # always explicit, so TensorRT, the PyOp and the reader of the graph agree
            "scale": float(head_dim**-0.5 if scale is None else scale),
            **_plugin_attrs(WINDOW_ATTENTION),
        }
        return torch.onnx.ops.symbolic(
            f"{PLUGIN_DOMAIN}::{WINDOW_ATTENTION}",
            [q, k, v, bias_table],
            attrs,
            dtype=q.dtype,
            shape=q.shape,
            version=1,
        )
    return window_attention_ref(q, k, v, bias_table, window=window, bias_index=bias_index, scale=scale)


def plugin_local_ensemble(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Contract-B function: one CiaoSRLocalEnsemble node at export, the reference otherwise."""
    if _legacy_export():
        return _LegacyLocalEnsemble.apply(query, keys, values)
    if _emitting():
        return torch.onnx.ops.symbolic(
            f"{PLUGIN_DOMAIN}::{LOCAL_ENSEMBLE}",
            [query, keys, values],
            _plugin_attrs(LOCAL_ENSEMBLE),
            dtype=query.dtype,
            shape=(*query.shape[:-1], values.shape[-1]),
            version=1,
        )
    return local_ensemble_ref(query, keys, values)


@dataclass(frozen=True)
class TorchPlugin:
    """The torch side of one plugin: what it replaces in a model and what replaces it."""

    op_type: str  # the srdeploy.plugins.registry name
    attribute: str  # the per-instance model attribute holding the swappable function
    replaces: frozenset[str]  # __name__ of the portable functions it stands for
    emitter: Callable[..., torch.Tensor]  # one plugin node at export, the reference otherwise
    reference: Callable[..., torch.Tensor]  # the independent PyTorch reference


TORCH_PLUGINS: tuple[TorchPlugin, ...] = (
    TorchPlugin(WINDOW_ATTENTION, "core", frozenset({"window_attention"}), plugin_window_attention,
                window_attention_ref),
    TorchPlugin(LOCAL_ENSEMBLE, "ensemble", frozenset({"local_ensemble"}), plugin_local_ensemble,
                local_ensemble_ref),
)


def _is_function_named(obj: object, names: frozenset[str]) -> bool:
    return callable(obj) and not isinstance(obj, nn.Module) and getattr(obj, "__name__", None) in names


def apply_plugins(model: nn.Module) -> list[str]:
    """Swap every plugin point of ``model`` (see :data:`TORCH_PLUGINS`) for its plugin form.

    Returns the sorted plugin op types now used by the model (the value of the ONNX metadata
    ``srdeploy.plugins``); an empty list means the model has no plugin points. Idempotent.
    """
    used: set[str] = set()
    for module in model.modules():
        for plugin in TORCH_PLUGINS:
            fn = module.__dict__.get(plugin.attribute)
            if fn is plugin.emitter or _is_function_named(fn, plugin.replaces):
                setattr(module, plugin.attribute, plugin.emitter)
                used.add(plugin.op_type)
    return sorted(used)
