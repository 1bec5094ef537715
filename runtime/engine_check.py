"""Is this engine file valid here? Checked before deserialising (torch-free, no export import).

An engine has a sidecar ``STEM.engine.json`` (written by ``sr-export --engine``) that names its
flavour (``tensorrt`` or ``rtx``), library version and sha256. Before the runner deserialises:

* the bytes must match the sidecar's sha256 (else: corrupt);
* the library that loads it must be the version that built it (TensorRT engines are not portable
  across versions; the sidecar is TensorRT's only check);
* TensorRT-RTX also answers ``Runtime.get_engine_validity`` (version, compute capability, driver,
  CUDA runtime, memory) without deserialising, so a mismatch is one line instead of a failure
  deep inside deserialisation.

Each failure is a :class:`~srdeploy.errors.BackendError` naming the command that rebuilds the engine.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from srdeploy.errors import BackendError, MissingDependencyError

RTX_MODULES = ("tensorrt_rtx", "tensorrt_rtx_bindings")
RTX_TARGETS = "SM75/80/86/89/120/121"


def read_sidecar(engine: Path) -> dict[str, Any] | None:
    side = engine.with_name(engine.name + ".json")
    if not side.exists():
        return None
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise BackendError(f"engine sidecar {side} is not JSON ({exc.msg}); rebuild the engine") from exc
    return meta if isinstance(meta, dict) else None


def engine_flavour(meta: dict[str, Any] | None) -> str:
    return str(((meta or {}).get("fields") or {}).get("flavour") or "tensorrt")


def weight_stripped(meta: dict[str, Any] | None) -> bool:
    """Whether the sidecar records a weight-stripped build (``fields.builder.strip_weights``)."""
    return bool((((meta or {}).get("fields") or {}).get("builder") or {}).get("strip_weights"))


def runtime_cache_file(engine: Path) -> Path:
    """``STEM.engine.runtime.cache``: the TensorRT-RTX runtime (JIT kernel) cache the runner keeps
    beside an engine; sr-export records this name in the manifest."""
    return engine.with_name(engine.name + ".runtime.cache")


def rebuild_hint(meta: dict[str, Any] | None) -> str:
    return f"sr-export --engine {engine_flavour(meta)} (same --model/--scale/shapes)"


def import_rtx_runtime() -> ModuleType:
    for name in RTX_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(mod, "Runtime"):
            return mod
    raise MissingDependencyError("this engine was built by TensorRT-RTX; pip install 'srdeploy[rtx]' to load it")


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def check_engine_bytes(path: Path, data: bytes, api: Any, meta: dict[str, Any] | None) -> None:
    """Raise one line if ``data`` (the file ``path``) cannot be loaded by ``api`` here."""
    flavour = engine_flavour(meta)
    display = "TensorRT-RTX" if flavour == "rtx" else "TensorRT"
    if meta is not None and meta.get("engine_sha256") not in (None, _sha256(data)):
        raise BackendError(f"engine {path} is corrupt (sha256 differs from its sidecar); rebuild it with "
                           f"{rebuild_hint(meta)}")
    want = ((meta or {}).get("fields") or {}).get("tensorrt_version")
    if want and want != str(api.__version__):
        raise BackendError(f"engine {path} was built with {display} {want}, this is {api.__version__}; "
                           f"rebuild it with {rebuild_hint(meta)}")
    if flavour != "rtx" or not hasattr(api.Runtime, "get_engine_validity"):
        return
    validity, diag = api.Runtime(api.Logger(api.Logger.ERROR)).get_engine_validity(data)
    if validity == api.EngineValidity.VALID:
        return
    names = [k for k, v in api.EngineInvalidityDiagnostics.__members__.items() if int(diag) & int(v)]
    if validity == api.EngineValidity.SUBOPTIMAL:
        print(f"notice: engine {path} is valid but suboptimal here ({', '.join(names) or 'no detail'})",
              file=sys.stderr)
        return
    why = ", ".join(names) or f"no diagnostic: TensorRT-RTX found no usable GPU (it runs on {RTX_TARGETS})"
    raise BackendError(
        f"engine {path} is not valid for this TensorRT-RTX {api.__version__} / GPU ({why}); "
        f"rebuild it with {rebuild_hint(meta)}"
    )
