"""One fusion protocol for deploy-time re-parameterisation.

A module that can be re-parameterised implements ``fuse(self) -> torch.nn.Module | None``:
either it rewrites itself in place and returns ``None``, or it returns the module that replaces
it. :func:`fuse_model` applies it once, bottom-up, before export; fusing never happens inside
``forward``.
"""

from __future__ import annotations

import torch

_FUSED_FLAG = "_srdeploy_fused"


def _fuse_children(module: torch.nn.Module, applied: list[str], prefix: str) -> None:
    for name, child in list(module.named_children()):
        path = f"{prefix}{name}"
        _fuse_children(child, applied, path + ".")
        fuse = getattr(child, "fuse", None)
        # a submodule that happens to be named ``fuse`` (EFDN's 1x1 conv) is not the protocol
        if callable(fuse) and not isinstance(fuse, torch.nn.Module):
            replacement = fuse()
            applied.append(f"{type(child).__name__}@{path}")
            if replacement is not None:
                setattr(module, name, replacement)


@torch.no_grad()
def fuse_model(model: torch.nn.Module) -> list[str]:
    """Fuse ``model`` in place (once) and return the list of fusions applied."""
    if getattr(model, _FUSED_FLAG, False):
        return list(getattr(model, "_srdeploy_fusions", []))
    applied: list[str] = []
    _fuse_children(model, applied, "")
    top = getattr(model, "fuse", None)
    if callable(top) and not isinstance(top, torch.nn.Module):
        if top() is not None:
            raise TypeError("a top-level model's fuse() must work in place and return None")
        applied.append(f"{type(model).__name__}@<root>")
    setattr(model, _FUSED_FLAG, True)
    model._srdeploy_fusions = applied  # type: ignore[assignment]
    return applied


def is_fused(model: torch.nn.Module) -> bool:
    return bool(getattr(model, _FUSED_FLAG, False))
