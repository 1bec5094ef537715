"""``EngineFromOnnx``: TensorRT engines from an exported graph, with a content-addressed cache.

Written against the TensorRT Python API common to 10.3 (JetPack 6) and 11.x:

* the network is created **strongly typed** (precision comes from the graph's tensor types; the
  flag exists on 10.x and is implied on 11.x) and no removed API is used: no
  ``BuilderFlag.FP16/INT8``, no precision constraints, no ``EXPLICIT_BATCH``;
* optimisation profiles, a workspace limit, the builder optimisation level, a timing cache beside
  the engine, and plugin libraries loaded through ``get_plugin_registry().load_library``.

TensorRT is imported lazily and never required: it cannot be pip-installed on Jetson, and no
builder exists on the project's CI machines. The logic is tested against a strict recording test
double (tests/export/export_trt_double.py); **engine building has not been run against a real TensorRT
here.**

Cache key = sha256 of the ONNX bytes + every builder option + TensorRT version + GPU name and
compute capability + sha256 of every plugin library. An engine built for another TensorRT or GPU
therefore has another key and is rebuilt, never loaded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from srdeploy.atomic import atomic_write_bytes, atomic_write_text
from srdeploy.cache import cache_dir as project_cache_dir
from srdeploy.cache import sha256_bytes
from srdeploy.errors import BackendError, ExportError, MissingDependencyError

from .manifest import BatchedProfile

KEY_SCHEMA = 1


class TensorRTUnavailableError(MissingDependencyError):
    """TensorRT (with its builder) cannot be imported here."""


def import_tensorrt() -> ModuleType:
    """Import the TensorRT builder API or raise a one-line error saying what to do."""
    try:
        import tensorrt
    except ImportError as exc:
        raise TensorRTUnavailableError(
            f"TensorRT is not installed ({exc}); build the engine on a TensorRT machine with the "
            "manifest's trtexec command, or install TensorRT (JetPack: apt python3-libnvinfer)"
        ) from exc
    if not hasattr(tensorrt, "Builder") or not hasattr(tensorrt, "OnnxParser"):
        raise TensorRTUnavailableError(
            "the importable 'tensorrt' has no builder or ONNX parser (type stubs or the lean runtime only); "
            "build the engine on a TensorRT machine with the manifest's trtexec command"
        )
    return tensorrt


def default_cache_dir() -> Path:
    """``engines/`` of the project cache (:func:`srdeploy.cache.cache_dir`)."""
    return project_cache_dir("engines")


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    compute_capability: str  # "8.7"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def query_device(index: int = 0) -> DeviceInfo:
    """GPU name and compute capability through the CUDA driver API (works on x86 and Jetson)."""
    path = ctypes.util.find_library("cuda") or "libcuda.so.1"
    try:
        cuda = ctypes.CDLL(path)
    except OSError as exc:
        raise BackendError(f"no CUDA driver found ({exc}); engines can only be built on a GPU machine") from exc
    dev = ctypes.c_int()
    major, minor = ctypes.c_int(), ctypes.c_int()
    name = ctypes.create_string_buffer(256)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(dev), index) != 0:
        raise BackendError(f"CUDA driver found no GPU {index}; check nvidia-smi / the device permissions")
    cuda.cuDeviceGetName(name, 256, dev)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # COMPUTE_CAPABILITY_MINOR
    return DeviceInfo(name.value.decode(errors="replace"), f"{major.value}.{minor.value}")


@dataclass(frozen=True)
class EngineOptions:
    """Every builder option; all of them are part of the cache key."""

    profiles: tuple[BatchedProfile, ...]
    input_name: str = "lr"
    workspace_bytes: int = 4 << 30
    optimization_level: int = 3
    plugin_libraries: tuple[str, ...] = ()

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

    def key_fields(self) -> dict[str, Any]:
        return {
            "profiles": [p.as_dict() for p in self.profiles],
            "input_name": self.input_name,
            "workspace_bytes": self.workspace_bytes,
            "optimization_level": self.optimization_level,
            "strongly_typed": True,
            "plugin_libraries": [os.path.basename(p) for p in self.plugin_libraries],
        }


def cache_key(
    onnx_sha256: str,
    options: EngineOptions,
    trt_version: str,
    device: DeviceInfo,
    plugin_sha256: Sequence[str] = (),
) -> tuple[str, dict[str, Any]]:
    """The content address of an engine and the fields it is made of."""
    fields = {
        "schema": KEY_SCHEMA,
        "onnx_sha256": onnx_sha256,
        "builder": options.key_fields(),
        "tensorrt_version": trt_version,
        "gpu_name": device.name,
        "compute_capability": device.compute_capability,
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
    log: list[str] = field(default_factory=list)


def build_serialized_engine(
    onnx_bytes: bytes,
    options: EngineOptions,
    *,
    timing_cache: bytes | None = None,
    api: ModuleType | None = None,
    log: Callable[[str], None] = print,
) -> tuple[bytes, bytes]:
    """Build an engine; return (serialized engine, serialized timing cache).

    ``api`` is the ``tensorrt`` module (the tests pass a recording double).
    """
    if TYPE_CHECKING:
        import tensorrt as trt
    else:
        trt = api if api is not None else import_tensorrt()

    logger = trt.Logger(trt.Logger.WARNING)
    from srdeploy.plugins.library import load_plugin_library  # type: ignore[import-not-found,unused-ignore]  # mypy cannot follow the editable mapping of srdeploy.plugins

    for lib in options.plugin_libraries:
        load_plugin_library(trt, lib)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT's ONNX parser rejected the graph: {'; '.join(errors) or 'no detail'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    config.builder_optimization_level = options.optimization_level
    cache = config.create_timing_cache(timing_cache or b"")
    config.set_timing_cache(cache, False)
    for prof in options.profiles:
        profile = builder.create_optimization_profile()
        s = prof.shapes()
        profile.set_shape(
            options.input_name, trt.Dims(list(s["min"])), trt.Dims(list(s["opt"])), trt.Dims(list(s["max"]))
        )
        config.add_optimization_profile(profile)
    log(f"[EngineFromOnnx] TensorRT {trt.__version__}, builder config: {json.dumps(options.key_fields())}")
    t0 = time.perf_counter()
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ExportError("TensorRT failed to build the engine (see the TensorRT log above)")
    log(f"[EngineFromOnnx] built in {time.perf_counter() - t0:.1f} s")
    return bytes(memoryview(engine)), bytes(memoryview(config.get_timing_cache().serialize()))


def load_engine(path: str | os.PathLike[str], *, api: ModuleType | None = None) -> Any:
    """Deserialize an engine file; a corrupt or foreign engine gives a clear error."""
    if TYPE_CHECKING:
        import tensorrt as trt
    else:
        trt = api if api is not None else import_tensorrt()
    path = Path(path)
    sidecar = path.with_name(path.name + ".json")
    data = path.read_bytes()
    if sidecar.exists():
        meta = json.loads(sidecar.read_text())
        if meta.get("engine_sha256") not in (None, sha256_bytes(data)):
            raise BackendError(
                f"engine {path} is corrupt (sha256 differs from {sidecar.name}); rebuild it with sr-export --engine"
            )
        want = meta.get("fields", {}).get("tensorrt_version")
        if want and want != trt.__version__:
            raise BackendError(
                f"engine {path} was built with TensorRT {want}, this is {trt.__version__}; "
                "rebuild it with sr-export --engine"
            )
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(data)
    if engine is None:
        raise BackendError(f"engine {path} is corrupt or from another TensorRT/GPU; rebuild it with sr-export --engine")
    return engine


class EngineFromOnnx:
    """Build (or fetch from the cache) the engine of an ONNX file; ``None`` options mean defaults."""

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        options: EngineOptions,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        api: ModuleType | None = None,
        device: DeviceInfo | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.onnx_path = Path(onnx_path)
        self.options = options
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.api = api
        self.device = device
        self.log = log or (lambda msg: print(msg, file=sys.stderr))

    def key(self) -> tuple[str, dict[str, Any]]:
        trt = self.api if self.api is not None else import_tensorrt()
        device = self.device or query_device()
        plugin_hashes = []
        for lib in self.options.plugin_libraries:
            try:
                plugin_hashes.append(sha256_bytes(Path(lib).read_bytes()))
            except OSError as exc:
                raise ExportError(
                    f"plugin library {lib} cannot be read ({exc.strerror}); build the plugins first"
                ) from exc
        onnx_sha = sha256_bytes(self.onnx_path.read_bytes())
        return cache_key(onnx_sha, self.options, str(trt.__version__), device, plugin_hashes)

    def __call__(self, dest: str | os.PathLike[str]) -> EngineResult:
        """Write the engine to ``dest`` (+ ``dest.json`` sidecar, + timing cache beside it)."""
        dest = Path(dest)
        key, fields = self.key()
        cached_engine = self.cache_dir / f"{key}.engine"
        cached_side = self.cache_dir / f"{key}.engine.json"
        timing = dest.with_name(dest.name + ".timing.cache")
        cached = False
        t_build = 0.0
        if cached_engine.exists() and cached_side.exists():
            meta = json.loads(cached_side.read_text())
            data = cached_engine.read_bytes()
            if meta.get("key") != key or meta.get("engine_sha256") != sha256_bytes(data):
                raise ExportError(
                    f"cached engine {cached_engine} is corrupt (hash or key mismatch); delete it and run again"
                )
            cached = True
            self.log(f"[EngineFromOnnx] cache hit {cached_engine}")
        else:
            prior = timing.read_bytes() if timing.exists() else None
            t0 = time.perf_counter()
            data, timing_bytes = build_serialized_engine(
                self.onnx_path.read_bytes(), self.options, timing_cache=prior, api=self.api, log=self.log
            )
            t_build = time.perf_counter() - t0
            atomic_write_bytes(timing, timing_bytes)
            side = self._sidecar(key, fields, data, t_build)
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cached_engine, data)
            atomic_write_text(cached_side, side)
        side_text = self._sidecar(key, fields, data, t_build, cached=cached)
        atomic_write_bytes(dest, data)
        sidecar = dest.with_name(dest.name + ".json")
        atomic_write_text(sidecar, side_text)
        return EngineResult(dest, sidecar, key, fields, cached, t_build)

    def _sidecar(self, key: str, fields: Mapping[str, Any], data: bytes, seconds: float, cached: bool = False) -> str:
        return json.dumps(
            {
                "key": key,
                "fields": dict(fields),
                "engine_sha256": sha256_bytes(data),
                "onnx_file": self.onnx_path.name,
                "build_seconds": round(seconds, 3),
                "from_cache": cached,
            },
            indent=2,
            sort_keys=True,
        )
