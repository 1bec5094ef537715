"""srdeploy.plugins: TensorRT plugins (SRWindowAttention, CiaoSRLocalEnsemble), their PyTorch
references, CPU emulations of the CUDA kernels, ONNX emission and ONNX Runtime CPU execution.

Public entry points (imported lazily so that ``import srdeploy.plugins`` needs neither torch nor
onnxruntime):

* ``apply_plugins(model) -> list[str]``: swap the models' attention/ensemble functions for
  plugin-emitting ones before ``torch.onnx.export`` (needs torch).
* ``ort_session(model_path_or_bytes, **session_kwargs)``: an ONNX Runtime CPU session that runs
  plugin graphs through PyOp reference kernels (needs onnxruntime + onnxruntime-extensions).
* ``library_path(variant="plugins") -> Path``: where the TensorRT plugin library is (or will be,
  once built with ``python -m srdeploy.plugins.build``); ``$SRDEPLOY_PLUGIN_LIBRARY`` overrides.

See docs/plugins.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .spec import LOCAL_ENSEMBLE, OP_TYPES, PLUGIN_DOMAIN, WINDOW_ATTENTION, load_spec

__all__ = [
    "LOCAL_ENSEMBLE",
    "OP_TYPES",
    "PLUGIN_DOMAIN",
    "WINDOW_ATTENTION",
    "apply_plugins",
    "library_path",
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


def library_path(variant: str = "plugins") -> Path:
    """Path of a plugin library variant (not checked for existence).

    ``plugins`` (default): libsrdeploy_plugins.so, the getCreators variant for trtexec
    ``--dynamicPlugins``, ``registry.load_library()`` and engine builds; ``plugins_static``: the
    dlopen/ORT-TensorRT-EP variant. ``$SRDEPLOY_PLUGIN_LIBRARY`` overrides the default variant's
    path; otherwise the file is looked up in ``$SRDEPLOY_PLUGIN_BUILD_DIR`` or build/plugins.
    """
    from .build import LIBRARIES, REPO_ROOT

    if variant not in LIBRARIES:
        raise ValueError(f"unknown plugin library variant {variant!r}; one of {', '.join(LIBRARIES)}")
    if variant == "plugins" and os.environ.get("SRDEPLOY_PLUGIN_LIBRARY"):
        return Path(os.environ["SRDEPLOY_PLUGIN_LIBRARY"])
    build_dir = Path(os.environ.get("SRDEPLOY_PLUGIN_BUILD_DIR", REPO_ROOT / "build" / "plugins"))
    return build_dir / LIBRARIES[variant]
