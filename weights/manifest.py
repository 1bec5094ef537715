"""The released-weights manifest (``manifest.json`` beside this file): data, not code.

One :class:`WeightEntry` per released file. ``name`` is the registry name, optionally with a
training-set tag (``esc:dflip``); each model's DIV2K-trained file is its ``default`` and is what
``--weights official`` means. ``sha256``/``size`` are ``None`` where unknown: such files are
trusted on first use and pinned in the user's lock file from then on (see :mod:`.store`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from srdeploy.errors import CheckpointError

__all__ = ["MANIFEST_PATH", "WeightEntry", "entries", "entry_by_id", "load_manifest", "select"]

MANIFEST_PATH = Path(__file__).with_name("manifest.json")

# Licences under which a file may be used without a notice; anything else is shown on download.
PERMISSIVE = ("MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause")
WRAPPERS = ("plain", "params_ema", "params", "mmcv-generator")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)?(:[a-z0-9_]+)?$")


@dataclass(frozen=True)
class WeightEntry:
    """One released checkpoint file."""

    name: str  # registry name plus optional ":tag" (training set), e.g. "esc:dflip"
    model: str  # registry name the file loads into
    scale: int | None  # None: one file for every scale (arbitrary-scale models)
    file: str
    url: str
    sha256: str | None
    size: int | None
    license: str
    wrapper: str  # how the state dict is wrapped: plain | params_ema | params | mmcv-generator
    input_range: str
    training_set: str
    default: bool  # the model's official file for this scale
    reference_psnr: Mapping[str, Any] | None
    notes: str

    @property
    def id(self) -> str:
        """Unique id: ``name_xS`` (``name`` alone for scale-free files)."""
        return self.name if self.scale is None else f"{self.name}_x{self.scale}"

    @property
    def relpath(self) -> str:
        """Path inside the cache and inside a mirror: ``<id>/<file>`` (``:`` written as ``-``)."""
        return f"{self.id.replace(':', '-')}/{self.file}"

    @property
    def pinned(self) -> bool:
        """Whether the manifest itself pins the content (else: trust on first use)."""
        return self.sha256 is not None

    @property
    def permissive(self) -> bool:
        return self.license in PERMISSIVE

    def matches_scale(self, scale: int | float | None) -> bool:
        return scale is None or self.scale is None or float(self.scale) == float(scale)


def _entry(raw: Mapping[str, Any], where: str) -> WeightEntry:
    fields = set(WeightEntry.__dataclass_fields__)
    missing = sorted(fields - set(raw))
    unknown = sorted(set(raw) - fields)
    if missing or unknown:
        raise CheckpointError(f"{where}: missing fields {missing} / unknown fields {unknown}; fix the manifest")
    e = WeightEntry(**{k: raw[k] for k in fields})
    problems = []
    if not _NAME.match(e.name) or e.name.split(":")[0] != e.model:
        problems.append(f"name {e.name!r} must be the model name {e.model!r} with an optional ':tag'")
    if e.sha256 is not None and not _SHA.match(e.sha256):
        problems.append("sha256 must be 64 lowercase hex digits or null")
    if e.size is not None and (not isinstance(e.size, int) or e.size <= 0):
        problems.append("size must be a positive integer or null")
    if e.wrapper not in WRAPPERS:
        problems.append(f"wrapper must be one of {', '.join(WRAPPERS)}")
    if not e.url.startswith("https://"):
        problems.append("url must be https")
    if "/" in e.file or not e.file:
        problems.append("file must be a bare file name")
    if problems:
        raise CheckpointError(f"{where} ({e.name}): " + "; ".join(problems))
    return e


def load_manifest(path: str | os.PathLike[str] | None = None) -> list[WeightEntry]:
    """Read and validate a manifest (default: the packaged ``manifest.json``)."""
    path = Path(path) if path is not None else MANIFEST_PATH
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read the weights manifest {path} ({exc}); reinstall srdeploy") from exc
    out = [_entry(raw, f"{path.name} entry {i}") for i, raw in enumerate(doc.get("entries", []))]
    ids = [e.id for e in out]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise CheckpointError(f"{path.name}: duplicate entries {', '.join(dupes)}; fix the manifest")
    defaults = [(e.model, e.scale) for e in out if e.default]
    dup_defaults = sorted({f"{m} x{s}" for m, s in defaults if defaults.count((m, s)) > 1})
    if dup_defaults:
        raise CheckpointError(f"{path.name}: several default entries for {', '.join(dup_defaults)}")
    return out


@lru_cache(maxsize=1)
def _packaged() -> tuple[WeightEntry, ...]:
    return tuple(load_manifest())


def entries() -> list[WeightEntry]:
    """The packaged manifest (read once)."""
    return list(_packaged())


def entry_by_id(entry_id: str, manifest: Iterable[WeightEntry] | None = None) -> WeightEntry:
    pool = list(manifest) if manifest is not None else entries()
    for e in pool:
        if e.id == entry_id:
            return e
    raise CheckpointError(f"no weights entry {entry_id!r}; valid ids: {', '.join(e.id for e in pool)}")


def select(
    names: Iterable[str], scale: int | None = None, manifest: Iterable[WeightEntry] | None = None
) -> list[WeightEntry]:
    """Entries for CLI arguments: an id (``esc:dflip_x4``), a name (all its scales), or ``all``."""
    pool = list(manifest) if manifest is not None else entries()
    chosen: list[WeightEntry] = []
    for arg in names:
        hits = [e for e in pool if arg in (e.id, e.name, "all") and (scale is None or e.matches_scale(scale))]
        if not hits:
            valid = sorted({e.name for e in pool})
            raise CheckpointError(
                f"unknown weights {arg!r}; valid names: {', '.join(valid)}, all (add _x2/_x3/_x4 for one file)"
            )
        chosen.extend(e for e in hits if e not in chosen)
    return chosen
