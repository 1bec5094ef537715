"""Checkpoint resolution, without PyTorch: the only package module ``srdeploy.models`` imports.

``resolve(spec, model, scale)`` turns what a user passed as ``--weights`` into a local file:

* an existing file path is returned as is;
* ``"official"`` is the model's default manifest entry for that scale (its DIV2K-trained file);
* a manifest name (``esc:dflip``) or id (``esc:dflip_x4``) selects that entry;

manifest entries are fetched into the verified cache (:class:`~.store.Store`): sha256-checked
against the manifest pin or the user's trust-on-first-use lock file, honouring
``$SRDEPLOY_CACHE``, ``$SRDEPLOY_WEIGHTS_MIRROR`` and ``$SRDEPLOY_OFFLINE``.
"""

from __future__ import annotations

import os
from pathlib import Path

from srdeploy.errors import CheckpointError

from .manifest import WeightEntry, entries, load_manifest, select
from .store import Store, WeightsDownloadError, WeightsIntegrityError, default_cache_dir

__all__ = [
    "Store",
    "WeightEntry",
    "WeightsDownloadError",
    "WeightsIntegrityError",
    "default_cache_dir",
    "entries",
    "find_entry",
    "load_manifest",
    "resolve",
    "select",
]

_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors", ".ckpt", ".bin")


def find_entry(spec: str, model: str, scale: int | float | None) -> WeightEntry:
    """The manifest entry ``spec`` ("official", a name or an id) names for ``model`` at ``scale``."""
    pool = entries()
    for_model = [e for e in pool if e.model == model]
    fitting = [e for e in for_model if e.matches_scale(scale)]
    at = f"{model}" + (f" x{scale}" if scale is not None else "")
    wanted = (lambda e: e.default) if spec == "official" else (lambda e: spec in (e.name, e.id))
    hits = [e for e in fitting if wanted(e)]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:  # only possible with scale=None and a per-scale name
        raise CheckpointError(f"weights {spec!r} for {model} need a scale; give one of {[e.id for e in hits]}")
    valid = sorted({"official"} | {e.name for e in fitting} | {e.id for e in fitting}) if fitting else []
    other = [e for e in pool if spec in (e.name, e.id)]
    if other and all(e.model != model for e in other):
        raise CheckpointError(
            f"weights {spec!r} are for {other[0].model}, not {model}; "
            + (f"valid for {at}: {', '.join(valid)}" if valid else f"{at} has no released weights")
        )
    if not valid:
        released = sorted({e.model for e in pool})
        raise CheckpointError(
            f"{at} has no released weights in the manifest; give a checkpoint file "
            f"(models with released weights: {', '.join(released)})"
        )
    raise CheckpointError(f"unknown weights {spec!r} for {at}; valid: {', '.join(valid)} (or a checkpoint file path)")


def resolve(
    spec: str | os.PathLike[str],
    model: str,
    scale: int | float,
    *,
    store: Store | None = None,
) -> Path:
    """Return the local checkpoint file for ``spec`` (a path, a manifest name or "official")."""
    path = Path(spec)
    if path.is_file():
        return path
    text = os.fspath(spec)
    if isinstance(spec, os.PathLike) or os.sep in text or "/" in text or text.endswith(_CHECKPOINT_SUFFIXES):
        raise CheckpointError(
            f"weights {text!r} for {model} x{scale}: no such file; give the path to a checkpoint, "
            "'official' or a name from `sr-weights list`"
        )
    entry = find_entry(text, model, scale)
    return (store or Store()).ensure(entry)
