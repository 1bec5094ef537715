"""The runner protocol every backend implements, and the record a backend module declares.

Every runner is a context manager with input/output metadata and ``infer(feed) -> outputs``; it
validates names, dtypes and ranks before running and records, for the last call, the *device*
time (what the hardware spent on the graph: CUDA events, TensorRT's stream, or the synchronous
host clock on CPU) separately from the *end-to-end* time (host copies and conversions included).
Per-backend options live in frozen dataclasses. Heavy modules are imported only when a runner is
loaded; a missing backend raises :class:`MissingDependencyError` with the install command.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from srdeploy.errors import BackendError, ShapeError

#: what a backend can run: an exported ONNX graph (or encoder/decoder pair), a TensorRT engine
#: file, or an in-memory PyTorch module
ArtifactKind = str  # "onnx" | "engine" | "module"


@dataclass(frozen=True)
class RunOptions:
    """The backend-independent options ``sr-bench``/``sr-upscale`` collect; each backend maps
    them to its own options dataclass (:attr:`BackendInfo.options`)."""

    device: str = "cpu"
    threads: int | None = None
    plugin_library: str | None = None
    cudnn_benchmark: bool = False


@dataclass(frozen=True)
class BackendInfo:
    """What a backend module declares as ``BACKEND``; :mod:`srdeploy.runtime.backends` collects them."""

    name: str
    runner: Callable[..., Runner]  # runner(model, options)
    options: Callable[[RunOptions], Any]  # RunOptions -> this backend's options
    accepts: tuple[ArtifactKind, ...]
    requires: str  # the import that must succeed
    install: str  # what to run when ``requires`` is missing
    probe: str = ""  # an attribute the module must have (namespace-only installs do not count)
    priority: int = 100  # the default backend for an artifact kind is the lowest priority accepting it

    def is_available(self) -> bool:
        try:
            mod = importlib.import_module(self.requires)
        except ImportError:
            return False
        return not self.probe or hasattr(mod, self.probe)


@dataclass(frozen=True)
class TensorMeta:
    """Name, numpy dtype and shape (``None`` for a dynamic dimension) of one runner input/output."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class Timing:
    """Times of one ``infer`` call in milliseconds and how they were taken."""

    device_ms: float
    e2e_ms: float
    clock: str  # e.g. "cuda events", "host perf_counter (synchronous CPU execution)"


@dataclass(frozen=True)
class MemoryReport:
    """Peak memory in bytes and a note of what it counts."""

    peak_bytes: int
    note: str

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 1024**2


class Runner:
    """Base class: subclasses implement ``_load``, ``_run``, and the memory hooks."""

    backend: ClassVar[str] = ""
    device_kind: str = "cpu"

    def __init__(self) -> None:
        self.inputs: list[TensorMeta] = []
        self.outputs: list[TensorMeta] = []
        self.last_timing: Timing | None = None
        self.metadata: dict[str, str] = {}
        self._active = False

    # context manager -------------------------------------------------------------------------
    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def activate(self) -> None:
        if not self._active:
            self._load()
            self._active = True

    def deactivate(self) -> None:
        if self._active:
            self._unload()
            self._active = False

    # protocol --------------------------------------------------------------------------------
    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; validate ``feed`` first. Sets :attr:`last_timing`."""
        if not self._active:
            raise BackendError(f"{self.backend} runner used outside its `with` block; call activate() first")
        t0 = time.perf_counter()
        self._validate(feed)
        outputs, device_ms, clock = self._run(feed)
        e2e = (time.perf_counter() - t0) * 1e3
        self.last_timing = Timing(device_ms if device_ms is not None else e2e, e2e, clock)
        return outputs

    def describe(self) -> dict[str, Any]:
        """Backend, device and version facts for reports."""
        return {"backend": self.backend, "device": self.device_kind}

    def reset_peak_memory(self) -> bool:
        """Start a new peak-memory window; ``False`` if this backend cannot reset it."""
        return False

    def peak_memory(self) -> MemoryReport:
        raise NotImplementedError

    # hooks -----------------------------------------------------------------------------------
    def _load(self) -> None:
        raise NotImplementedError

    def _unload(self) -> None:
        pass

    def _run(self, feed: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float | None, str]:
        raise NotImplementedError

    def _validate(self, feed: Mapping[str, np.ndarray]) -> None:
        names = {m.name for m in self.inputs}
        if set(feed) != names:
            raise ShapeError(f"{self.backend}: feed has inputs {sorted(feed)}, the model expects {sorted(names)}")
        for meta in self.inputs:
            arr = feed[meta.name]
            if not isinstance(arr, np.ndarray):
                raise ShapeError(f"{self.backend}: input {meta.name!r} must be a numpy array, got {type(arr).__name__}")
            if arr.dtype != meta.dtype:
                raise ShapeError(
                    f"{self.backend}: input {meta.name!r} is {arr.dtype}, the model expects {meta.dtype}; "
                    "convert it (fp16 graphs keep fp32 I/O unless exported with --fp16-io)"
                )
            if len(arr.shape) != len(meta.shape):
                raise ShapeError(f"{self.backend}: input {meta.name!r} has rank {arr.ndim}, expected {len(meta.shape)}")
            for got, want in zip(arr.shape, meta.shape, strict=True):
                if want is not None and got != want:
                    raise ShapeError(
                        f"{self.backend}: input {meta.name!r} has shape {arr.shape}, the model is static "
                        f"{meta.shape}; re-export with dynamic shapes or resize the input"
                    )


