"""The engine stage of ``export_model``: resolve the builder first, build last.

Kept out of export/api.py so that the pipeline only calls two functions:
:func:`resolve_engine` before anything is exported (a missing builder or a plugin graph for
TensorRT-RTX costs one line and writes nothing) and :func:`build_engine` after the artifact is
written (the engine, its sidecar, and the manifest's ``engine`` section).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from srdeploy.atomic import atomic_write_text
from srdeploy.errors import ExportError

from ..manifest import BatchedProfile
from . import choose_flavour, get_flavour
from .base import DeviceInfo, EngineFromOnnx, EngineMemoryError, EngineOptions, EngineResult, Flavour

DEFAULT_WORKSPACE_MIB = 4096
MAX_AUTO_WORKSPACE_MIB = 32768


@dataclass(frozen=True)
class EngineRequest:
    flavour: Flavour
    api: ModuleType
    compute_capabilities: tuple[str, ...] = ()
    strip_weights: bool = False


def resolve_engine(
    engine: bool | str,
    *,
    trt_api: ModuleType | None = None,
    plugins: bool = False,
    compute_capabilities: Sequence[str] = (),
    strip_weights: bool = False,
) -> EngineRequest | None:
    """``engine``: False (no engine), True/"auto", "tensorrt" or "rtx". Imports the builder now."""
    if engine is False or engine is None:
        if compute_capabilities or strip_weights:
            raise ExportError(f"{'--compute-capability' if compute_capabilities else '--strip-weights'} needs "
                              "--engine rtx")
        return None
    name = "auto" if engine is True else str(engine)
    if trt_api is not None:  # a test double or a module the caller imported
        flav = get_flavour("tensorrt" if name == "auto" else name)
        api = trt_api
    else:
        flav, api = choose_flavour(name)
    if compute_capabilities and flav.name != "rtx":
        raise ExportError(f"--compute-capability is a TensorRT-RTX option; {flav.display} builds for its own GPU")
    if strip_weights and flav.name != "rtx":
        raise ExportError("--strip-weights is done for TensorRT-RTX engines here (the runner refits them from "
                          "the ONNX); use --engine rtx")
    if plugins and not flav.supports_plugins:
        raise ExportError(
            f"{flav.display} has no custom plugins (NVIDIA documents them as unsupported at run time); drop "
            "--plugins and use --attention native for a fused attention without a plugin"
        )
    return EngineRequest(flav, api, tuple(compute_capabilities), strip_weights)


def grown_workspace_mib(workspace_mib: int, requested_bytes: int) -> int | None:
    """The workspace to retry with after the builder asked for ``requested_bytes``: 1.25x the request
    rounded up to 256 MiB, at least double; None above :data:`MAX_AUTO_WORKSPACE_MIB`."""
    grown = max(workspace_mib * 2, -(-int(requested_bytes * 1.25) // (256 << 20)) * 256)
    return grown if grown <= MAX_AUTO_WORKSPACE_MIB else None


def build_engine(
    req: EngineRequest,
    onnx_path: Path,
    manifest_path: Path,
    manifest: dict[str, Any],
    profile: BatchedProfile,
    *,
    workspace_mib: int,
    workspace_given: bool = False,
    opt_level: int,
    plugin_libs: Sequence[str] = (),
    cache_dir: str | os.PathLike[str] | None = None,
    device: DeviceInfo | None = None,
) -> EngineResult:
    """Build (or fetch) ``STEM.engine`` beside ``onnx_path`` and record it in the manifest.

    The default workspace (:data:`DEFAULT_WORKSPACE_MIB`) is a starting point: when the builder runs
    out of it and says how much it requested (fp32 ESC's portable attention materialises
    (windows, heads, 1024, 1024) scores: 4.3 GB at 270x480), the build is repeated once or twice with
    a workspace above that request, and the manifest records the workspace that built. Any other
    ``--workspace`` is a hard limit.
    """
    dest = onnx_path.with_suffix(".engine")
    source = "--workspace" if workspace_given or workspace_mib != DEFAULT_WORKSPACE_MIB else "default"
    for attempt in range(3):
        opts = EngineOptions(
            (profile,),
            workspace_bytes=workspace_mib << 20,
            optimization_level=opt_level,
            plugin_libraries=tuple(plugin_libs),
            compute_capabilities=req.compute_capabilities,
            strip_weights=req.strip_weights,
        )
        builder = EngineFromOnnx(onnx_path, opts, cache_dir=cache_dir, api=req.api, device=device, flavour=req.flavour)
        try:
            res = builder(dest)
            break
        except EngineMemoryError as exc:
            if source == "--workspace" or not exc.requested_bytes or attempt == 2:
                raise
            grown = grown_workspace_mib(workspace_mib, exc.requested_bytes)
            if grown is None:
                raise
            print(f"notice: the builder requested {exc.requested_bytes >> 20} MiB, more than the {workspace_mib} MiB "
                  f"workspace; building again with {grown} MiB", file=sys.stderr)
            workspace_mib, source = grown, "grown from the builder's request"
    manifest["engine"] = {
        **req.flavour.manifest_fields(req.api, opts),
        "file": dest.name,
        "key": res.key,
        "from_cache": res.cached,
        "build_seconds": round(res.build_seconds, 3),
        "engine_mib": round(dest.stat().st_size / 2**20, 2),
        "workspace_mib": workspace_mib,
        "workspace_source": source,
        # the builder's own report for the profile (MiB); empty for a test double
        "builder_memory": {"profile": profile.as_dict(), **res.memory},
    }
    if req.flavour.name == "rtx":
        from srdeploy.runtime.engine_check import runtime_cache_file

        manifest["engine"]["runtime_cache"] = runtime_cache_file(dest).name
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2, default=str) + "\n")
    return res
