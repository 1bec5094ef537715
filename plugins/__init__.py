"""srdeploy.plugins: TensorRT plugins (SRWindowAttention, CiaoSRLocalEnsemble), their PyTorch
references, CPU emulations of the CUDA kernels, ONNX emission and ONNX Runtime CPU execution.

Public entry points (imported lazily so that ``import srdeploy.plugins`` needs neither torch nor
onnxruntime):

* ``apply_plugins(model) -> list[str]``: swap the models' attention/ensemble functions for
  plugin-emitting ones before ``torch.onnx.export`` (needs torch).
* ``ort_session(model_path_or_bytes, **session_kwargs)``: an ONNX Runtime CPU session that runs
  plugin graphs through PyOp reference kernels (needs onnxruntime + onnxruntime-extensions).

See docs/plugins.md.
"""

from __future__ import annotations

from typing import Any

from .spec import LOCAL_ENSEMBLE, OP_TYPES, PLUGIN_DOMAIN, WINDOW_ATTENTION, load_spec

__all__ = [
    "LOCAL_ENSEMBLE",
    "OP_TYPES",
    "PLUGIN_DOMAIN",
    "WINDOW_ATTENTION",
    "apply_plugins",
    "load_spec",
    "ort_session",
]


def apply_plugins(model: Any) -> list[str]:
    """See :func:`srdeploy.plugins.onnx_ops.apply_plugins`."""
    from .onnx_ops import apply_plugins as _apply

    return _apply(model)


def ort_session(model_path_or_bytes: Any, **session_kwargs: Any) -> Any:
    """See :func:`srdeploy.plugins.ort.ort_session`."""
    from .ort import ort_session as _session

    return _session(model_path_or_bytes, **session_kwargs)
