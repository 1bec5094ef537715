"""The engine-building interface: options, cache key, one build routine, the cache, engine loading.

What differs between builders lives in a :class:`Flavour` (one module per flavour:
``tensorrt.py`` for TensorRT 10.3 / 11.x, ``rtx.py`` for TensorRT-RTX 1.7+); everything here is
written against the Python API the flavours share:

* the network is created **strongly typed** (precision comes from the graph's tensor types) and no
  removed API is used: no ``BuilderFlag.FP16/INT8``, no precision constraints, no ``EXPLICIT_BATCH``;
* optimisation profiles, a workspace limit, the builder optimisation level, plugin libraries loaded
  through ``get_plugin_registry().load_library``, and a timing cache beside the engine where the
  flavour allows one (TensorRT-RTX's CPU-only build does not).

The builder's own memory report ("Total Activation Memory", "Total Weights Memory", persistent
memory; TensorRT logs them at INFO level) is captured from its log and goes into the sidecar and
manifest.

Cache key = sha256 of the ONNX bytes + every builder option + flavour + library version + the
target (GPU name and compute capability for TensorRT; the target compute capabilities for a
CPU-only TensorRT-RTX build, which has no GPU) + sha256 of every plugin library. An engine built for
another library or target therefore has another key and is rebuilt, never loaded.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from srdeploy.atomic import atomic_write_bytes, atomic_write_text
from srdeploy.cache import cache_dir as project_cache_dir
from srdeploy.cache import sha256_bytes
from srdeploy.errors import BackendError, ExportError, MissingDependencyError

from ..manifest import BatchedProfile

KEY_SCHEMA = 2


class TensorRTUnavailableError(MissingDependencyError):
    """The chosen engine builder (TensorRT or TensorRT-RTX) cannot be imported here."""


class EngineMemoryError(ExportError):
    """The builder ran out of memory (workspace or host) for this graph and profile."""

    def __init__(self, message: str, requested_bytes: int | None = None) -> None:
        super().__init__(message)
        self.requested_bytes = requested_bytes


def default_cache_dir() -> Path:
    """``engines/`` of the project cache (:func:`srdeploy.cache.cache_dir`)."""
    return project_cache_dir("engines")


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    compute_capability: str  # "8.7"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class EngineOptions:
    """Every builder option; all of them are part of the cache key.

    ``compute_capabilities`` (TensorRT-RTX only): target SMs such as ``("7.5",)``; empty means the
    library's default portable set. ``strip_weights``: a weight-stripped plan (refit at load time
    from the ONNX file) where the flavour supports it.
    """

    profiles: tuple[BatchedProfile, ...]
    input_name: str = "lr"
    workspace_bytes: int = 4 << 30
    optimization_level: int = 3
    plugin_libraries: tuple[str, ...] = ()
    compute_capabilities: tuple[str, ...] = ()
    strip_weights: bool = False
    # more inputs of the same profile (e.g. CiaoSR's decoder): (name, min, opt, max) shapes
    extra_inputs: tuple[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...] = ()

    def __post_init__(self) -> None:
        if not self.profiles:
            raise ExportError("an engine needs at least one optimisation profile")
        if not 0 <= self.optimization_level <= 5:
            raise ExportError(f"builder optimisation level {self.optimization_level} is outside 0..5")
        if self.workspace_bytes <= 0:
            raise ExportError("the workspace limit must be positive")
        for p in self.profiles:
            lo, opt, hi = p.shapes().values()
            if not all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True)):
                raise ExportError(f"profile {p.as_dict()} is not ordered min <= opt <= max in every dimension")
        for name, e_lo, e_opt, e_hi in self.extra_inputs:
            if not all(a <= b <= c for a, b, c in zip(e_lo, e_opt, e_hi, strict=True)):
                raise ExportError(f"input {name} shapes {e_lo} / {e_opt} / {e_hi} are not ordered min <= opt <= max")
        for cc in self.compute_capabilities:
            if not re.fullmatch(r"\d+\.\d+", cc):
                raise ExportError(f"compute capability {cc!r} is not MAJOR.MINOR, e.g. --compute-capability 7.5")

    def key_fields(self) -> dict[str, Any]:
        return {
            "profiles": [p.as_dict() for p in self.profiles],
            "input_name": self.input_name,
            "workspace_bytes": self.workspace_bytes,
            "optimization_level": self.optimization_level,
            "strongly_typed": True,
            "plugin_libraries": [os.path.basename(p) for p in self.plugin_libraries],
            "compute_capabilities": list(self.compute_capabilities),
            "strip_weights": self.strip_weights,
            "extra_inputs": [[n, list(a), list(b), list(c)] for n, a, b, c in self.extra_inputs],
        }


def cache_key(
    onnx_sha256: str,
    options: EngineOptions,
    trt_version: str,
    device: DeviceInfo | None,
    plugin_sha256: Sequence[str] = (),
    *,
    flavour: str = "tensorrt",
    targets: Sequence[str] = (),
) -> tuple[str, dict[str, Any]]:
    """The content address of an engine and the fields it is made of.

    ``device`` is the build GPU (TensorRT builds for the GPU it runs on); ``None`` for a CPU-only
    TensorRT-RTX build, whose ``targets`` (compute capabilities) take its place.
    """
    fields = {
        "schema": KEY_SCHEMA,
        "flavour": flavour,
        "onnx_sha256": onnx_sha256,
        "builder": options.key_fields(),
        "tensorrt_version": trt_version,
        "gpu_name": device.name if device else None,
        "compute_capability": device.compute_capability if device else None,
        "target_compute_capabilities": list(targets),
        "plugin_sha256": list(plugin_sha256),
    }
    key = sha256_bytes(json.dumps(fields, sort_keys=True).encode())[:32]
    return key, fields


@dataclass
class EngineResult:
    engine_path: Path
    sidecar_path: Path
    key: str
    fields: dict[str, Any]
    cached: bool
    build_seconds: float
    memory: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)


# --- builder memory report --------------------------------------------------------------------

_MEMORY_LINES = {
    "activation_bytes": re.compile(r"Total Activation Memory: (\d+) bytes"),
    "weights_bytes": re.compile(r"Total Weights Memory: (\d+) bytes"),
    "device_persistent_bytes": re.compile(r"Total Device Persistent Memory: (\d+) bytes"),
    "host_persistent_bytes": re.compile(r"Total Host Persistent Memory: (\d+) bytes"),
    "scratch_bytes": re.compile(r"Max Scratch Memory: (\d+) bytes"),
}
_OOM = re.compile(r"out ?of ?memory|within workspace limit", re.IGNORECASE)
_REQUESTED = re.compile(r"Requested size was (\d+) bytes")


def memory_report(messages: Sequence[str]) -> dict[str, Any]:
    """The builder's memory lines, in MiB. TensorRT prints one set per built engine; with several
    profiles the activation figure is the largest profile's (the engine's device memory)."""
    out: dict[str, Any] = {}
    for msg in messages:
        for key, rx in _MEMORY_LINES.items():
            m = rx.search(msg)
            if m:
                out[key.replace("_bytes", "_mib")] = round(int(m.group(1)) / 2**20, 2)
    return out


def make_logger(api: Any, sink: list[tuple[int, str]], echo: Callable[[str], None]) -> Any:
    """A logger that keeps INFO-and-above messages (the memory report) and echoes warnings/errors.

    A test double without ``ILogger`` gets the plain ``Logger(WARNING)``.
    """
    if not hasattr(api, "ILogger"):
        return api.Logger(api.Logger.WARNING)
    warn = int(api.ILogger.Severity.WARNING)
    info = int(api.ILogger.Severity.INFO)

    class _Capture(api.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            api.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            sev = int(severity)
            if sev <= info:
                sink.append((sev, msg))
            if sev <= warn:
                echo(f"[TensorRT] {msg}")

    return _Capture()


# --- flavours ---------------------------------------------------------------------------------


class Flavour(ABC):
    """What one engine builder does differently. A new flavour = one module + its test."""

    name: ClassVar[str]  # "tensorrt", "rtx"
    display: ClassVar[str]  # "TensorRT", "TensorRT-RTX"
    uses_timing_cache: ClassVar[bool] = True
    supports_plugins: ClassVar[bool] = True

    @abstractmethod
    def import_api(self) -> ModuleType:
        """Import the builder module or raise :class:`TensorRTUnavailableError` naming what to install."""

    def version(self, api: Any) -> str:
        return str(api.__version__)

    @abstractmethod
    def device(self, api: Any, options: EngineOptions) -> DeviceInfo | None:
        """The GPU the engine is built for, or None when the build targets compute capabilities."""

    def targets(self, api: Any, options: EngineOptions) -> list[str]:
        """Target compute capabilities (for flavours that build for a list of them)."""
        return []

    @abstractmethod
    def configure(self, api: Any, config: Any, options: EngineOptions) -> None:
        """Flavour-specific builder-config settings (after the common ones)."""

    def after_parse(self, api: Any, network: Any, log: Callable[[str], None]) -> None:  # noqa: B027
        """Flavour-specific changes to the parsed network (default: none)."""

    def explain_failure(self, options: EngineOptions, messages: Sequence[str]) -> str | None:
        """A flavour-specific one-line reason for a failed build (None: the generic message)."""
        return None

    def check_engine(self, api: Any, data: bytes, path: Path, meta: Mapping[str, Any] | None) -> None:
        """Raise :class:`BackendError` (one line) if ``data`` is not valid for this runtime and GPU."""
        want = (meta or {}).get("fields", {}).get("tensorrt_version")
        if want and want != self.version(api):
            raise BackendError(
                f"engine {path} was built with {self.display} {want}, this is {self.version(api)}; "
                f"rebuild it with {rebuild_hint(meta)}"
            )

    def manifest_fields(self, api: Any, options: EngineOptions) -> dict[str, Any]:
        return {"flavour": self.name, "library": self.display, "version": self.version(api)}


def rebuild_hint(meta: Mapping[str, Any] | None) -> str:
    flav = (meta or {}).get("fields", {}).get("flavour", "tensorrt")
    return f"sr-export --engine {flav} (same --model/--scale/shapes)"


def build_serialized_engine(
    onnx_bytes: bytes,
    options: EngineOptions,
    *,
    timing_cache: bytes | None = None,
    api: ModuleType | None = None,
    flavour: Flavour | None = None,
    log: Callable[[str], None] = print,
    messages: list[str] | None = None,
) -> tuple[bytes, bytes]:
    """Build an engine; return (serialized engine, serialized timing cache or b"").

    ``api`` is the builder module (the tests pass a recording double); ``flavour`` defaults to
    TensorRT. The builder's INFO messages are appended to ``messages`` (for :func:`memory_report`).
    """
    if flavour is None:
        from .tensorrt import TensorRTFlavour

        flavour = TensorRTFlavour()
    if TYPE_CHECKING:
        import tensorrt as trt
    else:
        trt = api if api is not None else flavour.import_api()

    captured: list[tuple[int, str]] = []
    logger = make_logger(trt, captured, log)
    from srdeploy.plugins.library import load_plugin_library  # type: ignore[import-not-found,unused-ignore]  # the one loader; mypy cannot follow the editable mapping

    for lib in options.plugin_libraries:
        load_plugin_library(trt, lib)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(
            f"{flavour.display}'s ONNX parser rejected the graph: {'; '.join(errors) or 'no detail'}"
        )
    flavour.after_parse(trt, network, log)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    config.builder_optimization_level = options.optimization_level
    if flavour.uses_timing_cache:
        cache = config.create_timing_cache(timing_cache or b"")
        config.set_timing_cache(cache, False)
    for prof in options.profiles:
        profile = builder.create_optimization_profile()
        s = prof.shapes()
        profile.set_shape(
            options.input_name, trt.Dims(list(s["min"])), trt.Dims(list(s["opt"])), trt.Dims(list(s["max"]))
        )
        for name, lo, opt, hi in options.extra_inputs:
            profile.set_shape(name, trt.Dims(list(lo)), trt.Dims(list(opt)), trt.Dims(list(hi)))
        config.add_optimization_profile(profile)
    flavour.configure(trt, config, options)
    log(f"[EngineFromOnnx] {flavour.display} {trt.__version__}, builder config: {json.dumps(options.key_fields())}")
    t0 = time.perf_counter()
    engine = builder.build_serialized_network(network, config)
    if messages is not None:
        messages.extend(m for _, m in captured)
    if engine is None:
        texts = [m for _, m in captured]
        oom = [m for m in texts if _OOM.search(m)]
        prof = "; ".join(f"{k} {v}" for k, v in options.profiles[0].as_dict().items())
        if oom:
            req = next((int(m.group(1)) for t in oom if (m := _REQUESTED.search(t))), None)
            asked = f" (it requested {req / 2**20:.0f} MiB)" if req else ""
            raise EngineMemoryError(
                f"{flavour.display} ran out of memory building the engine{asked} with workspace "
                f"{options.workspace_bytes >> 20} MiB and profile {prof}; raise --workspace or lower --max-shape "
                "(fp32 window attention materialises its scores: --fp16 --attention native fuses them)",
                req,
            )
        last = next((m for s, m in reversed(captured) if s <= 1), "see the log above")
        why = flavour.explain_failure(options, texts)
        if why:
            raise ExportError(why)
        # the workspace it had and the free GPU memory (srdeploy.memplan), then the builder's own last error
        from srdeploy.memplan import build_failure_message

        msg = build_failure_message(options.workspace_bytes, options.profiles, " ".join(texts))
        raise ExportError(f"{msg.replace('TensorRT', flavour.display, 1)} ({flavour.display}: {last})")
    log(f"[EngineFromOnnx] built in {time.perf_counter() - t0:.1f} s")
    timing = b""
    if flavour.uses_timing_cache:
        timing = bytes(memoryview(config.get_timing_cache().serialize()))
    return bytes(memoryview(engine)), timing


def load_engine(
    path: str | os.PathLike[str], *, api: ModuleType | None = None, flavour: Flavour | None = None
) -> Any:
    """Check, then deserialize an engine file; a corrupt, foreign or invalid engine gives one line.

    The flavour comes from the sidecar (``STEM.engine.json``) when not given.
    """
    path = Path(path)
    sidecar = path.with_name(path.name + ".json")
    if not path.is_file():
        raise BackendError(f"engine file {path} does not exist; build one with sr-export --engine")
    data = path.read_bytes()
    meta: dict[str, Any] | None = None
    if sidecar.exists():
        try:
            meta = json.loads(sidecar.read_text())
        except json.JSONDecodeError as exc:
            raise BackendError(f"engine sidecar {sidecar} is not JSON ({exc.msg}); rebuild the engine") from exc
    if flavour is None:
        from . import get_flavour

        flavour = get_flavour(((meta or {}).get("fields") or {}).get("flavour", "tensorrt"))
    if TYPE_CHECKING:
        import tensorrt as trt
    else:
        trt = api if api is not None else flavour.import_api()
    if meta is not None and meta.get("engine_sha256") not in (None, sha256_bytes(data)):
        raise BackendError(f"engine {path} is corrupt (sha256 differs from {sidecar.name}); rebuild it with "
                           f"{rebuild_hint(meta)}")
    flavour.check_engine(trt, data, path, meta)
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(data)
    if engine is None:
        raise BackendError(
            f"engine {path} is corrupt or from another TensorRT/GPU; rebuild it with {rebuild_hint(meta)}"
        )
    return engine


class EngineFromOnnx:
    """Build (or fetch from the cache) the engine of an ONNX file."""

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        options: EngineOptions,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        api: ModuleType | None = None,
        device: DeviceInfo | None = None,
        flavour: Flavour | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if flavour is None:
            from .tensorrt import TensorRTFlavour

            flavour = TensorRTFlavour()
        self.onnx_path = Path(onnx_path)
        self.options = options
        self.flavour = flavour
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.api = api
        self.device = device
        self.log = log or (lambda msg: print(msg, file=sys.stderr))

    def _api(self) -> Any:
        if self.api is None:
            self.api = self.flavour.import_api()
        return self.api

    def key(self) -> tuple[str, dict[str, Any]]:
        trt = self._api()
        device = self.device or self.flavour.device(trt, self.options)
        plugin_hashes = []
        for lib in self.options.plugin_libraries:
            try:
                plugin_hashes.append(sha256_bytes(Path(lib).read_bytes()))
            except OSError as exc:
                raise ExportError(
                    f"plugin library {lib} cannot be read ({exc.strerror}); build the plugins first"
                ) from exc
        onnx_sha = sha256_bytes(self.onnx_path.read_bytes())
        return cache_key(
            onnx_sha,
            self.options,
            self.flavour.version(trt),
            device,
            plugin_hashes,
            flavour=self.flavour.name,
            targets=self.flavour.targets(trt, self.options),
        )

    def __call__(self, dest: str | os.PathLike[str]) -> EngineResult:
        """Write the engine to ``dest`` (+ ``dest.json`` sidecar, + timing cache beside it)."""
        dest = Path(dest)
        key, fields = self.key()
        cached_engine = self.cache_dir / f"{key}.engine"
        cached_side = self.cache_dir / f"{key}.engine.json"
        timing = dest.with_name(dest.name + ".timing.cache")
        cached = False
        t_build = 0.0
        memory: dict[str, Any] = {}
        data = b""
        if cached_engine.exists() and cached_side.exists():
            try:
                meta = json.loads(cached_side.read_text())
            except json.JSONDecodeError:
                meta = {}
            data = cached_engine.read_bytes()
            if meta.get("key") == key and meta.get("engine_sha256") == sha256_bytes(data):
                cached = True
                memory = dict(meta.get("builder_memory") or {})
                t_build = float(meta.get("build_seconds") or 0.0)
                self.log(f"[EngineFromOnnx] cache hit {cached_engine} (key {key}); not rebuilt")
            else:
                print(f"notice: cached engine {cached_engine} does not match its key or hash; rebuilding it",
                      file=sys.stderr)
        if not cached:
            prior = timing.read_bytes() if timing.exists() and self.flavour.uses_timing_cache else None
            messages: list[str] = []
            t0 = time.perf_counter()
            data, timing_bytes = build_serialized_engine(
                self.onnx_path.read_bytes(),
                self.options,
                timing_cache=prior,
                api=self._api(),
                flavour=self.flavour,
                log=self.log,
                messages=messages,
            )
            t_build = time.perf_counter() - t0
            memory = memory_report(messages)
            if timing_bytes:
                atomic_write_bytes(timing, timing_bytes)
            side = self._sidecar(key, fields, data, t_build, memory)
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cached_engine, data)
            atomic_write_text(cached_side, side)
        side_text = self._sidecar(key, fields, data, t_build, memory, cached=cached)
        atomic_write_bytes(dest, data)
        sidecar = dest.with_name(dest.name + ".json")
        atomic_write_text(sidecar, side_text)
        return EngineResult(dest, sidecar, key, fields, cached, t_build, memory)

    def _sidecar(
        self,
        key: str,
        fields: Mapping[str, Any],
        data: bytes,
        seconds: float,
        memory: Mapping[str, Any],
        cached: bool = False,
    ) -> str:
        return json.dumps(
            {
                "key": key,
                "fields": dict(fields),
                "engine_sha256": sha256_bytes(data),
                "engine_mib": round(len(data) / 2**20, 2),
                "onnx_file": self.onnx_path.name,
                "build_seconds": round(seconds, 3),
                "builder_memory": dict(memory),
                "from_cache": cached,
            },
            indent=2,
            sort_keys=True,
        )
