"""A strict recording test double of the TensorRT Python API subset common to 10.3 and 11.x.

Only the names the engine builder may use exist here; anything else (``BuilderFlag.FP16``,
``set_flag``, precision constraints, ``EXPLICIT_BATCH``) raises ``AttributeError``, as it would
on TensorRT 11. Every call is recorded as ``(qualified name, args)`` in ``double.calls``.
Argument types are checked the way the pybind11 bindings check them.
"""

from __future__ import annotations

import hashlib
from typing import Any


class _Strict:
    """Attributes are fixed by ``__slots__``: setting an unknown one raises AttributeError."""

    __slots__ = ("_api",)

    def __init__(self, api: FakeTensorRT) -> None:
        object.__setattr__(self, "_api", api)

    def _rec(self, name: str, *args: Any) -> None:
        self._api.calls.append((f"{type(self).__name__}.{name}", args))


class _Enum:
    def __init__(self, name: str, value: int) -> None:
        self.name, self.value = name, value

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return self.name


class NetworkDefinitionCreationFlag:
    STRONGLY_TYPED = _Enum("STRONGLY_TYPED", 1)
    # no EXPLICIT_BATCH: deprecated in 10, gone in 11


class BuilderFlag:
    """TensorRT 11's BuilderFlag has no FP16/INT8/precision-constraint members."""

    TF32 = _Enum("TF32", 7)
    DISABLE_TIMING_CACHE = _Enum("DISABLE_TIMING_CACHE", 4)


class MemoryPoolType:
    WORKSPACE = _Enum("WORKSPACE", 0)


class Dims(tuple):  # type: ignore[type-arg]
    def __new__(cls, shape: list[int]) -> Dims:
        if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
            raise TypeError(f"Dims expects a list of int, got {shape!r}")
        return super().__new__(cls, shape)


class Logger:
    WARNING = _Enum("WARNING", 2)
    ERROR = _Enum("ERROR", 1)

    def __init__(self, severity: _Enum) -> None:
        self.severity = severity


class HostMemory(bytes):
    pass


class TimingCache(_Strict):
    __slots__ = ("data",)

    def __init__(self, api: FakeTensorRT, data: bytes) -> None:
        super().__init__(api)
        object.__setattr__(self, "data", data)

    def serialize(self) -> HostMemory:
        return HostMemory(b"TIMING:" + self.data)


class OptimizationProfile(_Strict):
    __slots__ = ("shapes",)

    def __init__(self, api: FakeTensorRT) -> None:
        super().__init__(api)
        object.__setattr__(self, "shapes", {})

    def set_shape(self, input: str, min: Dims, opt: Dims, max: Dims) -> None:
        for d in (min, opt, max):
            if not isinstance(d, Dims):
                raise TypeError(f"set_shape expects Dims, got {type(d).__name__}")
        self._rec("set_shape", input, tuple(min), tuple(opt), tuple(max))
        self.shapes[input] = (tuple(min), tuple(opt), tuple(max))


class BuilderConfig(_Strict):
    __slots__ = ("_level", "pools", "profiles", "timing_cache")

    def __init__(self, api: FakeTensorRT) -> None:
        super().__init__(api)
        object.__setattr__(self, "_level", 3)
        object.__setattr__(self, "profiles", [])
        object.__setattr__(self, "pools", {})
        object.__setattr__(self, "timing_cache", None)

    @property
    def builder_optimization_level(self) -> int:
        return self._level

    @builder_optimization_level.setter
    def builder_optimization_level(self, value: int) -> None:
        if not isinstance(value, int):
            raise TypeError("builder_optimization_level must be int")
        self._rec("builder_optimization_level=", value)
        object.__setattr__(self, "_level", value)

    def set_memory_pool_limit(self, pool: _Enum, pool_size: int) -> None:
        if pool is not MemoryPoolType.WORKSPACE or not isinstance(pool_size, int):
            raise TypeError("set_memory_pool_limit(MemoryPoolType, int)")
        self._rec("set_memory_pool_limit", pool.name, pool_size)
        self.pools[pool.name] = pool_size

    def add_optimization_profile(self, profile: OptimizationProfile) -> int:
        self._rec("add_optimization_profile", dict(profile.shapes))
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, serialized_timing_cache: bytes) -> TimingCache:
        self._rec("create_timing_cache", bytes(serialized_timing_cache))
        return TimingCache(self._api, bytes(serialized_timing_cache))

    def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
        if not isinstance(ignore_mismatch, bool):
            raise TypeError("ignore_mismatch must be bool")
        self._rec("set_timing_cache", cache.data, ignore_mismatch)
        object.__setattr__(self, "timing_cache", cache)
        return True

    def get_timing_cache(self) -> TimingCache:
        return TimingCache(self._api, b"updated" + (self.timing_cache.data if self.timing_cache else b""))


class Network(_Strict):
    __slots__ = ("flags", "parsed")

    def __init__(self, api: FakeTensorRT, flags: int) -> None:
        super().__init__(api)
        object.__setattr__(self, "flags", flags)
        object.__setattr__(self, "parsed", b"")


class OnnxParser(_Strict):
    __slots__ = ("network",)

    def __init__(self, network: Network, logger: Logger) -> None:
        super().__init__(network._api)
        object.__setattr__(self, "network", network)
        self._rec("__init__")

    def parse(self, model: bytes, path: str | None = None) -> bool:
        if not isinstance(model, bytes | bytearray | memoryview):
            raise TypeError("parse expects a buffer")
        self._rec("parse", len(model))
        object.__setattr__(self.network, "parsed", bytes(model))
        return not self._api.parser_errors

    @property
    def num_errors(self) -> int:
        return len(self._api.parser_errors)

    def get_error(self, index: int) -> str:
        return self._api.parser_errors[index]


class Builder(_Strict):
    __slots__ = ()

    def __init__(self, logger: Logger) -> None:
        super().__init__(FakeTensorRT.current)
        self._rec("__init__")

    def create_network(self, flags: int = 0) -> Network:
        if not isinstance(flags, int):
            raise TypeError("create_network(flags: int)")
        self._rec("create_network", flags)
        return Network(self._api, flags)

    def create_builder_config(self) -> BuilderConfig:
        self._rec("create_builder_config")
        return BuilderConfig(self._api)

    def create_optimization_profile(self) -> OptimizationProfile:
        return OptimizationProfile(self._api)

    def build_serialized_network(self, network: Network, config: BuilderConfig) -> HostMemory | None:
        self._rec("build_serialized_network", network.flags, len(config.profiles))
        self._api.builds += 1
        if self._api.fail_build:
            return None
        digest = hashlib.sha256(network.parsed).hexdigest()[:16]
        return HostMemory(f"ENGINE:{self._api.__version__}:{digest}".encode())


class PluginRegistry(_Strict):
    __slots__ = ()

    def load_library(self, plugin_path: str) -> object | None:
        self._rec("load_library", plugin_path)
        return object() if plugin_path not in self._api.bad_plugins else None


class Engine:
    def __init__(self, data: bytes) -> None:
        self.data = data


class Runtime(_Strict):
    __slots__ = ()

    def __init__(self, logger: Logger) -> None:
        super().__init__(FakeTensorRT.current)

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> Engine | None:
        self._rec("deserialize_cuda_engine", len(serialized_engine))
        if not bytes(serialized_engine).startswith(f"ENGINE:{self._api.__version__}:".encode()):
            return None
        return Engine(bytes(serialized_engine))


class FakeTensorRT:
    """Use as the ``api`` argument; ``calls`` lists what the builder did."""

    current: FakeTensorRT

    NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    BuilderFlag = BuilderFlag
    MemoryPoolType = MemoryPoolType
    Dims = Dims
    Logger = Logger
    Builder = Builder
    OnnxParser = OnnxParser
    Runtime = Runtime

    def __init__(self, version: str = "10.3.0.26") -> None:
        self.__version__ = version
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.parser_errors: list[str] = []
        self.bad_plugins: set[str] = set()
        self.fail_build = False
        self.builds = 0
        FakeTensorRT.current = self

    def get_plugin_registry(self) -> PluginRegistry:
        return PluginRegistry(self)

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]
