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

from srdeploy import onnxlayer
from srdeploy.errors import SrdeployError
from srdeploy.records import ArtifactRecord
from srdeploy.tiling import Tiling


@dataclass
class Artifact:
    """One deployable model: its graph file(s) and the facts the exporter recorded."""

    stem: str
    graph: str  # "sr" | "implicit" (encoder + decoder)
    files: dict[str, Path]  # "sr" or "encoder"/"decoder" (or "engine") -> path
    meta: dict[str, str] = field(default_factory=dict)  # srdeploy.* metadata_props as written (prefix dropped)
    manifest: dict[str, Any] = field(default_factory=dict)
    protos: dict[str, Any] = field(default_factory=dict, repr=False)  # role -> onnx.ModelProto, parsed once

    @property
    def kind(self) -> str:
        """The artifact kind backends declare they accept: ``engine`` or ``onnx``."""
        return "engine" if "engine" in self.files else "onnx"

    def proto(self, role: str) -> Any:
        """The parsed graph of ``role`` (``sr``, ``encoder``, ``decoder``, ``onnx``), loaded once."""
        if role not in self.protos:
            self.protos[role] = onnxlayer.load(self.files[role])
        return self.protos[role]

    @property
    def record(self) -> ArtifactRecord | None:
        """The exporter's typed record: from the manifest when there is one, else from the metadata."""
        if self.manifest and "model" in self.manifest:
            return ArtifactRecord.from_manifest(self.manifest, f"manifest of {self.stem}")
        return ArtifactRecord.from_metadata(self.meta, f"metadata of {self.stem}")

    @property
    def model(self) -> str:
        rec = self.record
        return rec.model if rec else self.stem

    @property
    def scale(self) -> int | None:
        rec = self.record
        return rec.int_scale if rec else None

    @property
    def precision(self) -> str:
        rec = self.record
        return rec.precision if rec else "fp32"

    @property
    def random_weights(self) -> bool:
        """True when the exporter recorded no weights hash (random initialisation) or no record at all."""
        rec = self.record
        return rec.random_weights if rec else True

    @property
    def default_tiling(self) -> Tiling | None:
        rec = self.record
        return rec.default_tiling if rec else None

    @property
    def min_size(self) -> int:
        rec = self.record
        return rec.min_size if rec else 1


def _with_meta(art: Artifact, role: str | None) -> Artifact:
    """Read the srdeploy.* metadata from the graph of ``role`` (parsed once, kept on the artifact)."""
    if role is not None:
        art.meta = onnxlayer.metadata(art.proto(role))
    return art


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
            return _with_meta(Artifact(stem, "sr", {"engine": p, "onnx": onnx_beside}, {}, manifest), "onnx")
        return Artifact(stem, "sr", {"engine": p}, {}, manifest)
    enc, dec, single = folder / f"{stem}.encoder.onnx", folder / f"{stem}.decoder.onnx", folder / f"{stem}.onnx"
    if enc.is_file() or dec.is_file() or p.name.endswith((".encoder.onnx", ".decoder.onnx")):
        if not (enc.is_file() and dec.is_file()):
            raise SrdeployError(f"{stem}: an implicit model needs both {enc.name} and {dec.name}; re-export it")
        return _with_meta(Artifact(stem, "implicit", {"encoder": enc, "decoder": dec}, {}, manifest), "encoder")
    if p.suffix == ".json" and not single.is_file():
        raise SrdeployError(f"manifest {p} has no {single.name} beside it; re-export the model")
    if not single.is_file():
        raise SrdeployError(f"ONNX file {single} does not exist; export one with sr-export")
    return _with_meta(Artifact(stem, "sr", {"sr": single}, {}, manifest), "sr")
