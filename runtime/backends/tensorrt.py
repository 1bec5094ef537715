"""TensorRT backend: an engine file, an optional plugin library, CUDA memory through cuda-python.

No PyTorch; TensorRT and cuda-python are imported when the runner loads.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from srdeploy.errors import BackendError, MissingDependencyError, ShapeError, SrdeployError

from ..engine_check import runtime_cache_file, weight_stripped
from .base import BackendInfo, MemoryReport, Runner, RunOptions, TensorMeta

#: no srdeploy extra installs TensorRT: it comes from NVIDIA's wheel or JetPack
INSTALL = "pip install tensorrt (x86, CUDA 12/13) or, on Jetson, apt install python3-libnvinfer (JetPack)"


@dataclass(frozen=True)
class TrtOptions:
    """TensorRT options: the plugin library to load before deserialising, and the GPU index."""

    plugin_library: str | None = None
    device_index: int = 0


class TrtRunner(Runner):
    backend = "tensorrt"
    device_kind = "cuda"

    def __init__(self, engine_path: str | os.PathLike[str], options: TrtOptions | None = None) -> None:
        super().__init__()
        self.engine_path = Path(engine_path)
        self.options = options or TrtOptions()
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._engine: Any = None
        self._ctx: Any = None
        self._stream: Any = None
        self._cudart: Any = None
        self._runtime_cache: Any = None  # TensorRT-RTX: the JIT kernel cache, kept beside the engine
        self._cache_path: Path | None = None

    def _check(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise BackendError(f"CUDA call failed with {err}; check the GPU and driver (nvidia-smi)")
        return rest[0] if len(rest) == 1 else rest

    def _load(self) -> None:
        # the sidecar names the flavour: TensorRT-RTX engines load through TensorRT-RTX, and every
        # engine is checked (sha256, version, RTX validity) before it is deserialised
        from ..engine_check import check_engine_bytes, engine_flavour, import_rtx_runtime, read_sidecar

        meta = read_sidecar(self.engine_path) if self.engine_path.is_file() else None
        rtx = engine_flavour(meta) == "rtx"
        if rtx:
            trt = import_rtx_runtime()
        else:
            try:
                import tensorrt as trt
            except ImportError as exc:
                raise MissingDependencyError(f"TensorRT is not installed ({exc}); {INSTALL}") from exc
        if not self.engine_path.is_file():
            raise SrdeployError(f"engine file {self.engine_path} does not exist; build one with sr-export --engine")
        data = self.engine_path.read_bytes()
        if hasattr(trt, "Runtime"):
            check_engine_bytes(self.engine_path, data, trt, meta)  # before cuda-python and deserialisation
        if not hasattr(trt, "Runtime"):  # e.g. only the lean runtime's namespace package is installed
            raise MissingDependencyError(
                "the full TensorRT Python bindings are not installed (tensorrt has no Runtime here); "
                "pip install tensorrt (or use the JetPack python3-libnvinfer package)"
            )
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            try:
                from cuda import cudart  # type: ignore[no-redef]  # cuda-python < 12.6 layout
            except ImportError as exc:
                raise MissingDependencyError(
                    "the TensorRT runner needs cuda-python for device memory and streams; pip install cuda-python"
                ) from exc
        self._cudart = cudart
        if not self.engine_path.is_file():
            raise SrdeployError(f"engine file {self.engine_path} does not exist; build one with sr-export --engine")
        if self.options.plugin_library:
            from srdeploy.plugins.library import load_plugin_library

            load_plugin_library(trt, self.options.plugin_library)  # the builder's way, one library name
        self._check(cudart.cudaSetDevice(self.options.device_index))
        logger = trt.Logger(trt.Logger.WARNING)
        if not rtx:
            trt.init_libnvinfer_plugins(logger, "")
        runtime = trt.Runtime(logger)
        self._engine = runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise BackendError(
                f"TensorRT cannot deserialise {self.engine_path} (corrupt, or built for another TensorRT "
                f"version / GPU; this is TensorRT {trt.__version__}); rebuild it with sr-export --engine"
            )
        if rtx:
            if weight_stripped(meta):
                refit_stripped(trt, self._engine, self.engine_path, meta or {}, logger)
            self._cache_path = runtime_cache_file(self.engine_path)
            self._ctx, self._runtime_cache = context_with_runtime_cache(trt, self._engine, self._cache_path)
        else:
            self._ctx = self._engine.create_execution_context()
        self._stream = self._check(cudart.cudaStreamCreate())
        self._trt = trt
        ins: list[TensorMeta] = []
        outs: list[TensorMeta] = []
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            shape = tuple(d if d >= 0 else None for d in self._engine.get_tensor_shape(name))
            meta = TensorMeta(name, dtype, shape)
            (ins if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outs).append(meta)
        self.inputs, self.outputs = ins, outs
        self._check(cudart.cudaDeviceSynchronize())

    def _alloc(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size >= nbytes:
            return ptr
        if ptr:
            self._check(self._cudart.cudaFree(ptr))
        ptr = self._check(self._cudart.cudaMalloc(max(nbytes, 1)))
        self._buffers[name] = (ptr, nbytes)
        return ptr

    def _run(self, feed: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float | None, str]:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for meta in self.inputs:
            arr = np.ascontiguousarray(feed[meta.name])
            if not self._ctx.set_input_shape(meta.name, arr.shape):
                raise ShapeError(
                    f"input shape {arr.shape} is outside the engine's optimisation profile; rebuild the engine "
                    "with a larger profile or use --tile"
                )
            ptr = self._alloc(meta.name, arr.nbytes)
            self._check(cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d, self._stream))
            self._ctx.set_tensor_address(meta.name, ptr)
        host_out = {}
        for meta in self.outputs:
            shape = tuple(self._ctx.get_tensor_shape(meta.name))
            out = np.empty(shape, dtype=meta.dtype)
            self._ctx.set_tensor_address(meta.name, self._alloc(meta.name, out.nbytes))
            host_out[meta.name] = out
        start = self._check(cudart.cudaEventCreate())
        end = self._check(cudart.cudaEventCreate())
        self._check(cudart.cudaEventRecord(start, self._stream))
        if not self._ctx.execute_async_v3(int(self._stream)):
            raise BackendError("TensorRT execution failed; run with a verbose TensorRT logger to see why")
        self._check(cudart.cudaEventRecord(end, self._stream))
        for name, out in host_out.items():
            ptr = self._buffers[name][0]
            self._check(cudart.cudaMemcpyAsync(out.ctypes.data, ptr, out.nbytes, d2h, self._stream))
        self._check(cudart.cudaStreamSynchronize(self._stream))
        ms = float(self._check(cudart.cudaEventElapsedTime(start, end)))
        cudart.cudaEventDestroy(start)
        cudart.cudaEventDestroy(end)
        return host_out, ms, "cuda events around execute_async_v3 (TensorRT GPU time, copies excluded)"

    def _unload(self) -> None:
        if self._cudart is None:
            return
        if self._runtime_cache is not None and self._cache_path is not None:
            save_runtime_cache(self._runtime_cache, self._cache_path)
            self._runtime_cache = None
        for ptr, _ in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers.clear()
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
        self._ctx = self._engine = self._stream = None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        if self._cudart is not None:
            props = self._check(self._cudart.cudaGetDeviceProperties(self.options.device_index))
            name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
            d.update({"gpu": name.strip("\x00"), "sm": f"{props.major}.{props.minor}"})
        d["tensorrt"] = getattr(getattr(self, "_trt", None), "__version__", None)
        return d

    def peak_memory(self) -> MemoryReport:
        eng = self._engine
        dev = 0
        if eng is not None:
            getter = getattr(eng, "device_memory_size_v2", None)
            dev = int(getter if getter is not None else eng.device_memory_size)
        io = sum(size for _, size in self._buffers.values())
        return MemoryReport(dev + io, "TensorRT engine device memory (activations/scratch) + I/O buffers; "
                                      "weights are not included")


def refit_stripped(trt: Any, engine: Any, engine_path: Path, meta: dict[str, Any], logger: Any) -> None:
    """Put the weights back into a weight-stripped TensorRT-RTX engine from the ONNX it was built from.

    ``sr-export --strip-weights`` writes the plan without its weights (``BuilderFlag.STRIP_PLAN``);
    the sidecar names the ONNX (``onnx_file``), which must sit beside the engine, unchanged.
    """
    name = meta.get("onnx_file")
    onnx_path = engine_path.with_name(str(name)) if name else None
    if onnx_path is None or not onnx_path.is_file():
        raise BackendError(f"engine {engine_path} is weight-stripped and its ONNX ({name or 'unnamed in the sidecar'})"
                           " is not beside it; copy the .onnx next to the engine or rebuild without --strip-weights")
    refitter = trt.Refitter(engine, logger)
    parser = trt.OnnxParserRefitter(refitter, logger)
    if not parser.refit_from_file(str(onnx_path)) or not refitter.refit_cuda_engine():
        errors = "; ".join(str(parser.get_error(i)) for i in range(getattr(parser, "num_errors", 0)))
        raise BackendError(f"refitting the weight-stripped engine {engine_path} from {onnx_path.name} failed"
                           f"{': ' + errors if errors else ''}; the ONNX must be the one it was built from "
                           "(rebuild with sr-export --engine rtx)")


def context_with_runtime_cache(trt: Any, engine: Any, cache_path: Path) -> tuple[Any, Any]:
    """An execution context whose runtime config holds the JIT kernel cache loaded from ``cache_path``.

    TensorRT-RTX compiles kernels for the GPU at first use; the cache keeps them for the next run.
    A cache file that does not load (other GPU, driver, or corrupt) is ignored with a notice and
    rewritten when the runner closes.
    """
    config = engine.create_runtime_config()
    cache = config.create_runtime_cache()
    if cache_path.is_file():
        try:
            ok = cache.deserialize(cache_path.read_bytes())
        except Exception as exc:  # the bindings raise their own types; the cache is only an optimisation
            ok, why = False, str(exc)
        else:
            why = "rejected by TensorRT-RTX"
        if ok is False:
            print(f"notice: runtime cache {cache_path} did not load ({why}); kernels are compiled again",
                  file=sys.stderr)
    config.set_runtime_cache(cache)
    return engine.create_execution_context(config), cache


def save_runtime_cache(cache: Any, cache_path: Path) -> None:
    """Write the runtime cache atomically; a failure costs only the next run's compile time."""
    from srdeploy.atomic import atomic_write_bytes

    try:
        data = bytes(cache.serialize())
        if data:
            atomic_write_bytes(cache_path, data)
    except OSError as exc:
        print(f"notice: the runtime cache was not saved to {cache_path} ({exc})", file=sys.stderr)


def _options(o: RunOptions) -> TrtOptions:
    index = int(o.device.split(":", 1)[1]) if o.device.startswith("cuda:") else 0
    return TrtOptions(plugin_library=o.plugin_library, device_index=index)


BACKEND = BackendInfo("tensorrt", TrtRunner, _options, accepts=("engine",), requires="tensorrt", install=INSTALL,
                      probe="Runtime", priority=10)
