"""The backend registry: one module per backend in this package, each declaring ``BACKEND``.

Every module here except ``base`` is a backend: it defines its runner (a
:class:`~srdeploy.runtime.backends.base.Runner`), its frozen options dataclass and a
``BACKEND = BackendInfo(...)`` record saying which artifact kinds it runs (``onnx``, ``engine``,
``module``), how it maps the common :class:`~srdeploy.runtime.backends.base.RunOptions` to its
own options, and what it needs installed. The predictor, ``sr-bench``, ``sr-upscale`` and the
``--backend`` choices of both CLIs read :func:`backends`; nothing else dispatches on a backend's
name. Adding a backend = adding one module here (plus its test). Backend modules import their
heavy dependency (onnxruntime, tensorrt, torch) only when a runner loads.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any

from srdeploy.errors import SrdeployError

from .base import ArtifactKind, BackendInfo, MemoryReport, Runner, RunOptions, TensorMeta, Timing

__all__ = [
    "ArtifactKind", "BackendInfo", "MemoryReport", "RunOptions", "Runner", "TensorMeta", "Timing",
    "backend", "backends", "default_backend", "make_runner", "names",
]


@cache
def backends() -> dict[str, BackendInfo]:
    """name -> :class:`BackendInfo` of every backend module in this package, sorted by name."""
    found: dict[str, BackendInfo] = {}
    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
        if mod == "base":
            continue
        info = getattr(importlib.import_module(f"{__name__}.{mod}"), "BACKEND", None)
        if not isinstance(info, BackendInfo):
            raise SrdeployError(f"backend module {__name__}.{mod} defines no BACKEND = BackendInfo(...)")
        found[info.name] = info
    return found


def names() -> list[str]:
    """The backend names, for ``--backend`` choices."""
    return list(backends())


def backend(name: str) -> BackendInfo:
    try:
        return backends()[name]
    except KeyError:
        raise SrdeployError(f"unknown backend {name!r}; choose one of {', '.join(backends())}") from None


def default_backend(kind: ArtifactKind) -> BackendInfo:
    """The backend that runs ``kind`` by default (lowest priority among those accepting it)."""
    fits = sorted((b for b in backends().values() if kind in b.accepts), key=lambda b: (b.priority, b.name))
    if not fits:
        raise SrdeployError(f"no backend runs {kind} artifacts")
    return fits[0]


def check_accepts(info: BackendInfo, kind: ArtifactKind, what: str) -> None:
    """A one-line error when backend ``info`` cannot run a ``kind`` artifact."""
    if kind not in info.accepts and info.accepts == ("module",):
        raise SrdeployError(f"--backend {info.name} runs in-memory models: give --model NAME (not --onnx/--engine)")
    if kind not in info.accepts:
        others = ", ".join(b.name for b in backends().values() if kind in b.accepts) or "none"
        raise SrdeployError(
            f"{what} is a {kind} artifact; --backend {info.name} runs {'/'.join(info.accepts)} artifacts "
            f"(backends for {kind}: {others})"
        )


def make_runner(name: str, model: Any, options: Any = None) -> Runner:
    """Create backend ``name``'s runner for ``model`` (ONNX path/bytes/proto, engine path, or nn.Module).

    ``options``: the backend's own options dataclass, a :class:`RunOptions` (mapped by the
    backend), or ``None`` for its defaults.
    """
    info = backend(name)
    if isinstance(options, RunOptions):
        options = info.options(options)
    return info.runner(model, options)
