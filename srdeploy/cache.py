"""The one cache-folder layout and the one sha256 helper of the project (torch-free).

``$SRDEPLOY_CACHE`` names the cache *root*; without it the root is
``$XDG_CACHE_HOME/srdeploy`` (``~/.cache/srdeploy`` when XDG_CACHE_HOME is unset). Below it each
kind of cached file has its own folder:

* ``weights/``: verified released checkpoints (:mod:`srdeploy.weights`),
* ``engines/``: content-addressed TensorRT engines (:mod:`srdeploy.export.engine`),
* ``headers/``: the pinned TensorRT headers the plugin build downloads (:mod:`srdeploy.plugins.build`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

CACHE_ENV = "SRDEPLOY_CACHE"
CacheKind = Literal["weights", "engines", "headers"]
KINDS: tuple[CacheKind, ...] = ("weights", "engines", "headers")

_CHUNK = 1 << 20


def cache_root() -> Path:
    """``$SRDEPLOY_CACHE``, else ``$XDG_CACHE_HOME/srdeploy``, else ``~/.cache/srdeploy``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "srdeploy"


def cache_dir(kind: CacheKind) -> Path:
    """The folder for one kind of cached file (not created here)."""
    if kind not in KINDS:
        raise ValueError(f"unknown cache kind {kind!r}; one of {', '.join(KINDS)}")
    return cache_root() / kind


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (checkpoints and engines can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
