"""Super-resolution architectures, faithful to the authors' released checkpoints.

Public API (later issues and users rely on these names)::

    list_models() -> list[str]
    build(name, scale, weights=None, **options) -> torch.nn.Module   # eval mode
    descriptor(name) -> Descriptor

Contract for every model: input float32 RGB (N, 3, H, W) in [0, 1]; output
(N, 3, scale*H, scale*W) in [0, 1] (unclamped). Model-specific input ranges and mean shifts
are handled inside the model.

Every non-private module in this package is an architecture file and is imported (so it
registers its names) the first time the registry is used.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
from typing import Any

from srdeploy.errors import SrdeployError

from .registry import Descriptor, ShapeProfile, entry, names, register

__all__ = [
    "Descriptor",
    "ShapeProfile",
    "architecture_modules",
    "build",
    "descriptor",
    "list_models",
    "load_weights",
    "register",
]

_NOT_ARCHITECTURES = {"registry", "checkpoint", "fusion", "layers", "attention"}
_loaded = False


def architecture_modules() -> list[str]:
    """Names of the architecture files in this package (every one must register a model)."""
    return sorted(
        m.name
        for m in pkgutil.iter_modules(__path__)
        if not m.name.startswith("_") and m.name not in _NOT_ARCHITECTURES
    )


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for mod in architecture_modules():
        importlib.import_module(f"{__name__}.{mod}")
    _loaded = True


def list_models() -> list[str]:
    """Registered names: ``family`` or ``family.variant``."""
    _load_all()
    return names()


def descriptor(name: str) -> Descriptor:
    _load_all()
    return entry(name).descriptor


def build(name: str, scale: int, weights: str | os.PathLike[str] | None = None, **options: Any):
    """Build model ``name`` at ``scale`` in eval mode, optionally loading ``weights``.

    ``weights`` is a checkpoint path (.pth/.pt/.safetensors in any supported wrapper), a manifest
    name, or ``"official"`` (resolved by the torch-free :mod:`srdeploy.weights`). ``options`` are
    the model's own typed keyword options (e.g. ``tlc=False`` for AGDN); unknown ones are errors.
    """
    _load_all()
    ent = entry(name)
    desc = ent.descriptor
    desc.check_scale(scale)
    params = inspect.signature(ent.builder).parameters
    unknown = sorted(set(options) - set(params) - {"scale"})
    if unknown:
        valid = sorted(p for p in params if p != "scale")
        raise SrdeployError(
            f"{name} has no option(s) {', '.join(unknown)}; valid options: {', '.join(valid) or 'none'}"
        )
    model = ent.builder(scale=scale, **options)
    if weights is not None:
        load_weights(model, name, scale, weights)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_weights(model, name: str, scale: int | float, weights: str | os.PathLike[str]) -> str:
    """Load ``weights`` into ``model`` strictly; return the sha256 of the file used."""
    from srdeploy.weights import find_entry, resolve

    from srdeploy.cache import sha256_file

    from .checkpoint import load_into, read_checkpoint

    path = resolve(weights, model=name, scale=scale)
    # a manifest name ("official", "agdn_x2"...) declares how its file is wrapped: honour it
    wrapper = None if os.path.isfile(weights) else find_entry(os.fspath(weights), name, scale).wrapper
    state = read_checkpoint(path, wrapper)
    remap = getattr(model, "remap_checkpoint", None)
    if callable(remap):
        state = remap(state)
    load_into(model, state, f"{name} x{scale}", str(path))
    digest = sha256_file(path)
    model._srdeploy_weights = {"path": str(path), "sha256": digest}
    return digest
