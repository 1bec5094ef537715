"""Typed records that cross package boundaries (contract D), torch-free.

:class:`ArtifactRecord` is what the exporter states about an artifact and the runtime reads back:
written once by the exporter as the ONNX ``metadata_props`` (string values, prefix ``srdeploy.``)
and as the typed head of ``STEM.json``, and read by :func:`srdeploy.runtime.artifact.open_artifact`
from whichever of the two is present. One class, so a schema change breaks the tests that build
their fixtures from it, not a report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from srdeploy.errors import SrdeployError
from srdeploy.tiling import Tiling

META_PREFIX = "srdeploy."
_JSON_FIELDS = ("descriptor", "hparams", "fusions", "plugins", "deviations")
#: the keys every ``deviations`` entry carries (``what``/``measured``: one line each; levels are
#: 8-bit levels of the [0, 1] output, ``size`` is the LR ``HxW`` the difference was measured at)
DEVIATION_KEYS = ("what", "measured", "max_abs_levels", "mean_abs_levels", "psnr_db", "size")


def _number(v: Any) -> float:
    f = float(v)
    return int(f) if f.is_integer() else f


def _seed(v: Any) -> int | None:
    return None if v is None or v == "" else int(v)


def _frozen(d: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class ArtifactRecord:
    """The facts of one exported graph (or graph pair)."""

    model: str
    scale: float | None
    precision: str = "fp32"  # fp32 | fp16
    io_dtype: str = "float32"
    graph: str = "sr"  # sr | encoder | decoder | encoder+decoder
    variant: str = ""
    weights_sha256: str = ""  # "" for seeded random weights
    weights_license: str = ""
    plugins: tuple[str, ...] = ()
    fusions: tuple[str, ...] = ()
    hparams: Mapping[str, Any] = field(default_factory=lambda: _frozen(None))
    descriptor: Mapping[str, Any] = field(default_factory=lambda: _frozen(None))
    version: str = ""
    # intentional, declared differences of the graph from the PyTorch model (e.g. AGDN's TLC off
    # for dynamic shapes), each with its measured size (DEVIATION_KEYS); () = none
    deviations: tuple[Mapping[str, Any], ...] = ()
    weights_seed: int | None = None  # the seed of the random weights; None for real weights

    def __post_init__(self) -> None:
        object.__setattr__(self, "deviations", tuple(_frozen(d) for d in self.deviations))
        object.__setattr__(self, "plugins", tuple(self.plugins))
        object.__setattr__(self, "fusions", tuple(self.fusions))
        object.__setattr__(self, "hparams", _frozen(self.hparams))
        object.__setattr__(self, "descriptor", _frozen(self.descriptor))

    # --------------------------------------------------------------------------- derived facts
    @property
    def random_weights(self) -> bool:
        return not self.weights_sha256

    @property
    def int_scale(self) -> int | None:
        return None if self.scale is None else int(self.scale)

    @property
    def min_size(self) -> int:
        return int(self.descriptor.get("min_size", 1))

    @property
    def default_tiling(self) -> Tiling | None:
        t = self.descriptor.get("default_tiling")
        if not t:
            return None
        return Tiling(int(t["tile"]), int(t["overlap"]), t.get("blend", "crop"))

    # ------------------------------------------------------------------------------ writers
    def to_manifest(self) -> dict[str, Any]:
        """The typed JSON head of ``STEM.json``."""
        return {
            "model": self.model,
            "variant": self.variant,
            "scale": self.scale,
            "precision": self.precision,
            "io_dtype": self.io_dtype,
            "graph": self.graph,
            "weights_sha256": self.weights_sha256,
            "weights_license": self.weights_license,
            "plugins": list(self.plugins),
            "fusions": list(self.fusions),
            "hparams": dict(self.hparams),
            "descriptor": dict(self.descriptor),
            "version": self.version,
            "deviations": [dict(d) for d in self.deviations],
            "weights_seed": self.weights_seed,
        }

    def to_metadata(self) -> dict[str, str]:
        """ONNX ``metadata_props``: the same fields as strings (JSON for the structured ones)."""
        out: dict[str, str] = {}
        for k, v in self.to_manifest().items():
            if k in _JSON_FIELDS:
                text = json.dumps(v, sort_keys=True, default=str)
            elif k == "scale":
                text = "" if v is None else f"{v:g}"
            elif k == "weights_seed":
                text = "" if v is None else str(v)
            else:
                text = str(v)
            out[META_PREFIX + k] = text
        return out

    # ------------------------------------------------------------------------------ readers
    @classmethod
    def from_manifest(cls, data: Mapping[str, Any], origin: str = "manifest") -> ArtifactRecord:
        try:
            scale = data.get("scale")
            return cls(
                model=str(data["model"]),
                scale=None if scale in (None, "") else _number(scale),
                precision=str(data.get("precision") or "fp32"),
                io_dtype=str(data.get("io_dtype") or "float32"),
                graph=str(data.get("graph") or "sr"),
                variant=str(data.get("variant") or ""),
                weights_sha256=str(data.get("weights_sha256") or ""),
                weights_license=str(data.get("weights_license") or ""),
                plugins=tuple(data.get("plugins") or ()),
                fusions=tuple(data.get("fusions") or ()),
                hparams=data.get("hparams") or {},
                descriptor=data.get("descriptor") or {},
                version=str(data.get("version") or ""),
                deviations=tuple(dict(d) for d in data.get("deviations") or ()),
                weights_seed=_seed(data.get("weights_seed")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SrdeployError(f"{origin} is not an srdeploy artifact record ({exc!r}); re-export the model") from exc

    @classmethod
    def from_metadata(cls, props: Mapping[str, str], origin: str = "ONNX metadata") -> ArtifactRecord | None:
        """The record in ``metadata_props`` (keys with or without the prefix); ``None`` without one."""
        plain = {k.removeprefix(META_PREFIX): v for k, v in props.items()}
        if "model" not in plain:
            return None
        data: dict[str, Any] = dict(plain)
        for k in _JSON_FIELDS:
            if isinstance(data.get(k), str):
                try:
                    data[k] = json.loads(data[k]) if data[k] else None
                except json.JSONDecodeError as exc:
                    raise SrdeployError(f"{origin}: srdeploy.{k} is not valid JSON; re-export the model") from exc
        return cls.from_manifest(data, origin)
