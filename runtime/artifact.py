"""Read what the exporter wrote (contract D) without importing it: ONNX metadata and manifest.

An artifact is ``STEM.onnx`` (+ ``STEM.json``), or for implicit models (CiaoSR) the pair
``STEM.encoder.onnx`` + ``STEM.decoder.onnx`` (+ ``STEM.json``), or a TensorRT ``.engine`` with
the manifest of the ONNX it was built from beside it. Any of these paths may be given.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srdeploy.errors import SrdeployError
from srdeploy.tiling import Tiling


@dataclass
class Artifact:
    """One deployable model: its graph file(s) and the facts the exporter recorded."""

    stem: str
    graph: str  # "sr" | "implicit" (encoder + decoder)
    files: dict[str, Path]  # "sr" or "encoder"/"decoder" (or "engine") -> path
    meta: dict[str, str] = field(default_factory=dict)  # srdeploy.* metadata_props (prefix dropped)
    manifest: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.manifest:
            return self.manifest[key]
        return self.meta.get(key, default)

    @property
    def model(self) -> str:
        return str(self.get("model") or self.stem)

    @property
    def scale(self) -> int | None:
        s = self.get("scale")
        try:
            return int(float(s)) if s not in (None, "") else None
        except (TypeError, ValueError):
            return None

    @property
    def precision(self) -> str:
        return str(self.get("precision") or "fp32")

    @property
    def random_weights(self) -> bool:
        """True when the exporter recorded no weights hash (random initialisation)."""
        sha = self.get("weights_sha256")
        return sha is None or sha == ""

    @property
    def descriptor(self) -> dict[str, Any]:
        d = self.get("descriptor") or {}
        if isinstance(d, str):
            try:
                d = json.loads(d)
            except json.JSONDecodeError:
                d = {}
        return d if isinstance(d, dict) else {}

    @property
    def default_tiling(self) -> Tiling | None:
        t = self.descriptor.get("default_tiling")
        if not t:
            return None
        return Tiling(int(t["tile"]), int(t["overlap"]), t.get("blend", "crop"))

    @property
    def min_size(self) -> int:
        return int(self.descriptor.get("min_size", 1))


def _meta_from_onnx(path: Path) -> dict[str, str]:
    import onnx

    from .graphstats import load_onnx

    # metadata only: skip the weights of large external-data models
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # corrupt file: load_onnx raises the clear error
        proto = load_onnx(path)
    return {p.key.removeprefix("srdeploy."): p.value for p in proto.metadata_props if p.key.startswith("srdeploy.")}


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SrdeployError(f"manifest {path} is not valid JSON ({exc}); re-export the model") from exc
    if not isinstance(data, dict):
        raise SrdeployError(f"manifest {path} is not a JSON object; re-export the model")
    return {k.removeprefix("srdeploy."): v for k, v in data.items()}


def _stem_of(path: Path) -> tuple[Path, str]:
    name = path.name
    for suffix in (".encoder.onnx", ".decoder.onnx", ".onnx", ".engine", ".plan", ".json"):
        if name.endswith(suffix):
            return path.parent, name[: -len(suffix)]
    return path.parent, path.stem


def open_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Resolve ``path`` (.onnx, .encoder/.decoder.onnx, .engine or .json) into an :class:`Artifact`."""
    p = Path(path)
    folder, stem = _stem_of(p)
    manifest = _read_manifest(folder / f"{stem}.json")
    if p.suffix in (".engine", ".plan"):
        if not p.is_file():
            raise SrdeployError(f"engine file {p} does not exist; build one with sr-export --engine")
        onnx_beside = folder / f"{stem}.onnx"
        if onnx_beside.is_file():  # the graph the engine was built from: metadata and MAC counts
            return Artifact(stem, "sr", {"engine": p, "onnx": onnx_beside}, _meta_from_onnx(onnx_beside), manifest)
        return Artifact(stem, "sr", {"engine": p}, {}, manifest)
    enc, dec, single = folder / f"{stem}.encoder.onnx", folder / f"{stem}.decoder.onnx", folder / f"{stem}.onnx"
    if enc.is_file() or dec.is_file() or p.name.endswith((".encoder.onnx", ".decoder.onnx")):
        if not (enc.is_file() and dec.is_file()):
            raise SrdeployError(f"{stem}: an implicit model needs both {enc.name} and {dec.name}; re-export it")
        meta = _meta_from_onnx(enc)
        return Artifact(stem, "implicit", {"encoder": enc, "decoder": dec}, meta, manifest)
    if p.suffix == ".json" and not single.is_file():
        raise SrdeployError(f"manifest {p} has no {single.name} beside it; re-export the model")
    if not single.is_file():
        raise SrdeployError(f"ONNX file {single} does not exist; export one with sr-export")
    return Artifact(stem, "sr", {"sr": single}, _meta_from_onnx(single), manifest)
