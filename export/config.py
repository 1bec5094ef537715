"""``ExportConfig``: everything ``sr-export`` / :func:`~srdeploy.export.api.export_model` is asked to do.

Frozen; ``None`` (or the field default) means the library default, so the CLI passes only what the
user gave and never repeats a default. Sizes are typed (:class:`~srdeploy.sizes.Size`) and
strings are parsed once, here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Literal

from srdeploy.errors import SrdeployError
from srdeploy.sizes import Size, parse_size

Exporter = Literal["auto", "dynamo", "torchscript"]

DEFAULT_OPSET = 18
DEFAULT_WORKSPACE_MIB = 4096
DEFAULT_OPT_LEVEL = 3


def _size(v: Size | str | None) -> Size | None:
    return v if v is None or isinstance(v, Size) else parse_size(v)


@dataclass(frozen=True)
class ExportConfig:
    model: str
    scale: int
    outdir: str | os.PathLike[str] = "."
    weights: str | os.PathLike[str] | None = None  # None: seeded random weights
    fp16: bool = False
    fp16_io: bool = False
    opset: int | None = None  # None: DEFAULT_OPSET
    static: Size | None = None
    min_shape: Size | None = None
    opt_shape: Size | None = None
    max_shape: Size | None = None
    max_batch: int = 1
    run_validation: bool = True
    engine: bool | str = False  # True/"auto": TensorRT if its builder imports, else TensorRT-RTX; "tensorrt"; "rtx"
    compute_capabilities: tuple[str, ...] = ()  # TensorRT-RTX targets, e.g. ("7.5",); () = the library's set
    strip_weights: bool = False  # TensorRT-RTX: a weight-stripped plan, refit from the ONNX when loaded
    attention: str = "portable"  # "native": ONNX Attention (opset 23) for the window-attention core
    plugins: bool = False
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    exporter: Exporter = "auto"
    validation_image: str | os.PathLike[str] | None = None
    seed: int = 0
    cache_dir: str | os.PathLike[str] | None = None  # None: $SRDEPLOY_CACHE/engines
    workspace_mib: int | None = None  # None: DEFAULT_WORKSPACE_MIB
    opt_level: int | None = None  # None: DEFAULT_OPT_LEVEL
    # --int8 (export/int8.py, docs/int8.md): explicit Q/DQ calibrated on real images, gated on held-out PSNR
    int8: bool = False
    calib: str | os.PathLike[str] | None = None
    calib_method: str = "percentile"
    int8_gate: float = 0.1  # dB
    calib_crop: int = 48  # LR pixels

    def __post_init__(self) -> None:
        for name in ("static", "min_shape", "opt_shape", "max_shape"):
            object.__setattr__(self, name, _size(getattr(self, name)))
        object.__setattr__(self, "options", MappingProxyType(dict(self.options or {})))
        if self.fp16_io and not self.fp16:
            raise SrdeployError("--fp16-io needs --fp16")
        if self.max_batch < 1:
            raise SrdeployError("--max-batch must be >= 1")
        object.__setattr__(self, "compute_capabilities", tuple(self.compute_capabilities))
        if self.attention not in ("portable", "native"):
            raise SrdeployError(f"--attention must be portable or native, not {self.attention!r}")
        if self.engine not in (False, True, "auto", "tensorrt", "rtx"):
            raise SrdeployError(f"--engine takes auto, tensorrt or rtx, not {self.engine!r}")
        if self.int8:
            if self.calib is None:
                raise SrdeployError("--int8 needs calibration images: pass --calib DIR (a directory of at least 2 "
                                    "real images; a quarter of them is held out for the PSNR gate)")
            if self.fp16:
                raise SrdeployError("--int8 already runs the ops it keeps out of INT8 in fp16 (where the model "
                                    "allows it); drop --fp16")
        elif self.calib is not None:
            raise SrdeployError("--calib is for --int8; add --int8 or drop --calib")

    @property
    def precision(self) -> str:
        """The artifact's precision: int8 (Q/DQ + fp16), fp16 (with fp32 islands) or fp32."""
        return "int8" if self.int8 else "fp16" if self.fp16 else "fp32"

    @classmethod
    def of(cls, **given: Any) -> ExportConfig:
        """A config from keyword arguments where ``None`` means "not given" (the CLI's namespace)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - names)
        if unknown:
            raise TypeError(f"unknown export setting(s) {unknown}")
        return cls(**{k: v for k, v in given.items() if v is not None})

    @property
    def opset_or_default(self) -> int:
        return self.opset if self.opset is not None else DEFAULT_OPSET

    @property
    def workspace(self) -> int:
        return self.workspace_mib if self.workspace_mib is not None else DEFAULT_WORKSPACE_MIB

    @property
    def level(self) -> int:
        return self.opt_level if self.opt_level is not None else DEFAULT_OPT_LEVEL
