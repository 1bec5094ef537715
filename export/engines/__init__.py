"""Engine builders: one interface (:mod:`.base`) and one module per flavour.

``FLAVOURS`` maps the ``sr-export --engine`` choice to its class. ``auto`` picks TensorRT when its
builder imports, TensorRT-RTX otherwise. Adding a flavour = one module with a :class:`Flavour`
subclass, one line here, and its test.
"""

from __future__ import annotations

from types import ModuleType

from .base import (
    DeviceInfo,
    EngineFromOnnx,
    EngineMemoryError,
    EngineOptions,
    EngineResult,
    Flavour,
    TensorRTUnavailableError,
    build_serialized_engine,
    cache_key,
    default_cache_dir,
    load_engine,
    memory_report,
)
from .rtx import RtxFlavour
from .tensorrt import TensorRTFlavour

FLAVOURS: dict[str, type[Flavour]] = {"tensorrt": TensorRTFlavour, "rtx": RtxFlavour}

__all__ = [
    "FLAVOURS",
    "DeviceInfo",
    "EngineFromOnnx",
    "EngineMemoryError",
    "EngineOptions",
    "EngineResult",
    "Flavour",
    "TensorRTUnavailableError",
    "build_serialized_engine",
    "cache_key",
    "choose_flavour",
    "default_cache_dir",
    "get_flavour",
    "load_engine",
    "memory_report",
]


def get_flavour(name: str) -> Flavour:
    try:
        return FLAVOURS[name]()
    except KeyError:
        raise TensorRTUnavailableError(
            f"unknown engine flavour {name!r}; choose one of {', '.join(FLAVOURS)}"
        ) from None


def choose_flavour(name: str = "auto") -> tuple[Flavour, ModuleType]:
    """The flavour for ``--engine NAME`` and its imported builder module; nothing is built.

    Called before anything is exported, so a missing builder costs one line and no files.
    """
    if name != "auto":
        flav = get_flavour(name)
        return flav, flav.import_api()
    errors = []
    for cls in FLAVOURS.values():
        flav = cls()
        try:
            return flav, flav.import_api()
        except TensorRTUnavailableError as exc:
            errors.append(f"{flav.display}: {exc}")
    raise TensorRTUnavailableError(
        "no engine builder can be imported (" + " | ".join(errors) + "); pip install 'srdeploy[rtx]' for "
        "TensorRT-RTX, or build on a TensorRT machine with the manifest's trtexec command"
    )
