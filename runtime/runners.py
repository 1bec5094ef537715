"""Backends behind one small runner protocol, and one registry that maps a name to a runner.

Every runner is a context manager with input/output metadata and ``infer(feed) -> outputs``; it
validates names, dtypes and ranks before running and records, for the last call, the *device*
time (what the hardware spent on the graph: CUDA events, TensorRT's stream, or the synchronous
host clock on CPU) separately from the *end-to-end* time (host copies and conversions included).
Per-backend options live in frozen dataclasses. Heavy modules are imported only when a runner is
created; a missing backend raises :class:`MissingDependencyError` with the install command.

Backends: ``onnxruntime`` (CPU; CUDA / TensorRT execution providers with onnxruntime-gpu),
``tensorrt`` (an engine file, optional plugin library, CUDA memory through cuda-python: no
PyTorch), ``torch`` (an ``nn.Module``, eager; only when PyTorch is installed).
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from srdeploy.errors import BackendError, MissingDependencyError, ShapeError, SrdeployError

from . import memory


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


# --------------------------------------------------------------------------------------------
# ONNX Runtime
# --------------------------------------------------------------------------------------------

_ORT_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8}


@dataclass(frozen=True)
class OrtOptions:
    """ONNX Runtime options. ``device``: cpu | cuda | tensorrt (execution provider)."""

    device: str = "cpu"
    intra_op_threads: int | None = None  # None: ONNX Runtime's default (all cores)
    graph_optimization: str = "all"  # all | extended | basic | disable
    session_options: Mapping[str, str] = field(default_factory=dict)


class OrtRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, model: str | os.PathLike[str] | bytes, options: OrtOptions | None = None) -> None:
        super().__init__()
        self.model = model
        self.options = options or OrtOptions()
        if self.options.device not in _ORT_PROVIDERS:
            raise SrdeployError(f"unknown ONNX Runtime device {self.options.device!r}; use cpu, cuda or tensorrt")
        self.device_kind = self.options.device
        self._sess: Any = None
        self._rss_base = 0

    def _load(self) -> None:
        ort = _require("onnxruntime", "ort")
        from .graphstats import load_onnx

        proto = load_onnx(self.model)
        self.metadata = {p.key: p.value for p in proto.metadata_props}
        data = proto.SerializeToString() if not isinstance(self.model, bytes) else self.model
        providers = _ORT_PROVIDERS[self.options.device]
        missing = [p for p in providers[:-1] if p not in ort.get_available_providers()]
        if missing:
            raise MissingDependencyError(
                f"ONNX Runtime has no {', '.join(missing)} here (available: {ort.get_available_providers()}); "
                "install onnxruntime-gpu: pip install 'srdeploy[gpu]'"
            )
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
        opts.graph_optimization_level = levels[self.options.graph_optimization]
        if self.options.intra_op_threads:
            opts.intra_op_num_threads = self.options.intra_op_threads
        for k, v in self.options.session_options.items():
            opts.add_session_config_entry(k, v)
        self._rss_base = memory.current_rss_bytes()
        memory.reset_peak_rss()
        custom = sorted({n.op_type for n in proto.graph.node if n.domain not in ("", "ai.onnx", "com.microsoft")})
        try:
            if custom:
                try:
                    from srdeploy.plugins import ort_session
                except ImportError as exc:
                    raise MissingDependencyError(
                        f"the graph holds plugin ops {custom}; ONNX Runtime needs srdeploy.plugins.ort_session "
                        "and onnxruntime-extensions: pip install 'srdeploy[dev]'"
                    ) from exc
                self._sess = ort_session(data, sess_options=opts, providers=providers)
            else:
                self._sess = ort.InferenceSession(data, opts, providers=providers)
        except SrdeployError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph...)
            raise BackendError(f"ONNX Runtime cannot load the model ({' '.join(str(exc).split())[:300]})") from exc
        self.inputs = [TensorMeta(i.name, np.dtype(_ORT_TYPES.get(i.type, np.float32)), _ort_shape(i.shape))
                       for i in self._sess.get_inputs()]
        self.outputs = [TensorMeta(o.name, np.dtype(_ORT_TYPES.get(o.type, np.float32)), _ort_shape(o.shape))
                        for o in self._sess.get_outputs()]

    def _unload(self) -> None:
        self._sess = None

    def _run(self, feed: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float | None, str]:
        if self.device_kind != "cpu":
            return self._run_bound(feed)
        t0 = time.perf_counter()
        try:
            outs = self._sess.run(None, dict(feed))
        except Exception as exc:  # onnxruntime's runtime errors carry the node and shapes
            raise BackendError(f"ONNX Runtime failed to run ({' '.join(str(exc).split())[:300]})") from exc
        dt = (time.perf_counter() - t0) * 1e3
        clock = "host perf_counter around session.run (synchronous CPU execution)"
        return {m.name: o for m, o in zip(self.outputs, outs, strict=True)}, dt, clock

    def _run_bound(self, feed: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float | None, str]:
        """GPU providers: inputs and outputs bound on the GPU so the timed call excludes the copies."""
        import onnxruntime as ort

        try:
            binding = self._sess.io_binding()
            for name, arr in feed.items():
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0))
            for meta in self.outputs:
                binding.bind_output(meta.name, "cuda", 0)
            t0 = time.perf_counter()
            self._sess.run_with_iobinding(binding)  # returns after the CUDA stream is synchronised
            dt = (time.perf_counter() - t0) * 1e3
            outs = binding.copy_outputs_to_cpu()
        except Exception as exc:  # onnxruntime's runtime errors carry the node and shapes
            raise BackendError(f"ONNX Runtime failed to run ({' '.join(str(exc).split())[:300]})") from exc
        clock = "host perf_counter around run_with_iobinding, I/O bound on the GPU (copies excluded)"
        return {m.name: o for m, o in zip(self.outputs, outs, strict=True)}, dt, clock

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        d = super().describe()
        d.update({"onnxruntime": ort.__version__, "providers": self._sess.get_providers() if self._sess else None,
                  "intra_op_threads": self.options.intra_op_threads or "default"})
        return d

    def reset_peak_memory(self) -> bool:
        if self.device_kind != "cpu":
            return False
        self._rss_base = memory.current_rss_bytes()
        return memory.reset_peak_rss()

    def peak_memory(self) -> MemoryReport:
        if self.device_kind != "cpu":
            return MemoryReport(0, "device memory of ONNX Runtime GPU providers is not observable; not measured")
        peak = max(memory.peak_rss_bytes() - self._rss_base, 0)
        return MemoryReport(peak, "CPU peak RSS delta (VmHWM minus RSS at the start of the window, which opens "
                                  "before the session is created): weights, ONNX Runtime arena, activations, "
                                  "host buffers")


def _ort_shape(shape: list[Any]) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


# --------------------------------------------------------------------------------------------
# TensorRT (engine file; cuda-python for memory and streams)
# --------------------------------------------------------------------------------------------


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

    def _check(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise BackendError(f"CUDA call failed with {err}; check the GPU and driver (nvidia-smi)")
        return rest[0] if len(rest) == 1 else rest

    def _load(self) -> None:
        # issue 13: the sidecar names the flavour; RTX engines load through TensorRT-RTX, and every
        # engine is checked (sha256, version, RTX validity) before it is deserialised
        from .engine_check import check_engine_bytes, engine_flavour, import_rtx_runtime, read_sidecar

        meta = read_sidecar(self.engine_path) if self.engine_path.is_file() else None
        rtx = engine_flavour(meta) == "rtx"
        trt = import_rtx_runtime() if rtx else _require("tensorrt", "gpu")
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
            lib = Path(self.options.plugin_library)
            if not lib.is_file():
                raise SrdeployError(f"plugin library {lib} does not exist; build plugins/ with CMake first")
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
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


# --------------------------------------------------------------------------------------------
# PyTorch eager (optional)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TorchOptions:
    device: str = "cpu"  # cpu | cuda | cuda:N
    cudnn_benchmark: bool = False  # the NTIRE harness turns it off


class TorchRunner(Runner):
    """Runs an ``nn.Module`` (input ``lr`` -> output ``sr``) in eager mode, fp32, no grad."""

    backend = "torch"

    def __init__(self, module: Any, options: TorchOptions | None = None) -> None:
        super().__init__()
        self.module = module
        self.options = options or TorchOptions()
        self.device_kind = "cuda" if self.options.device.startswith("cuda") else "cpu"
        self._rss_base = 0

    def _load(self) -> None:
        torch = _require("torch", "torch")
        self._torch = torch
        if self.device_kind == "cuda":
            if not torch.cuda.is_available():
                raise BackendError("--device cuda but PyTorch sees no CUDA GPU; use --device cpu")
            torch.backends.cudnn.benchmark = self.options.cudnn_benchmark
        self.module = self.module.to(self.options.device).eval()
        self.inputs = [TensorMeta("lr", np.dtype(np.float32), (None, 3, None, None))]
        self.outputs = [TensorMeta("sr", np.dtype(np.float32), (None, 3, None, None))]
        self._rss_base = memory.current_rss_bytes()
        memory.reset_peak_rss()

    def _run(self, feed: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float | None, str]:
        torch = self._torch
        x = torch.from_numpy(feed["lr"]).to(self.options.device)
        with torch.inference_mode():
            if self.device_kind == "cuda":
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                y = self.module(x)
                end.record()
                torch.cuda.synchronize()
                ms: float = start.elapsed_time(end)
                clock = "cuda events around forward (copies excluded), as the NTIRE harness"
            else:
                t0 = time.perf_counter()
                y = self.module(x)
                ms = (time.perf_counter() - t0) * 1e3
                clock = "host perf_counter around forward (synchronous CPU execution)"
        return {"sr": y.float().cpu().numpy()}, ms, clock

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["torch"] = self._torch.__version__
        if self.device_kind == "cuda":
            d["gpu"] = self._torch.cuda.get_device_name()
        return d

    def reset_peak_memory(self) -> bool:
        if self.device_kind == "cuda":
            self._torch.cuda.reset_peak_memory_stats()
            return True
        self._rss_base = memory.current_rss_bytes()
        return memory.reset_peak_rss()

    def peak_memory(self) -> MemoryReport:
        if self.device_kind == "cuda":
            return MemoryReport(int(self._torch.cuda.max_memory_allocated()),
                                "torch.cuda.max_memory_allocated (the NTIRE harness's figure)")
        return MemoryReport(max(memory.peak_rss_bytes() - self._rss_base, 0),
                            "CPU peak RSS delta (VmHWM minus RSS at the start of the window)")


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------


def _require(module: str, extra: str) -> Any:
    from srdeploy.errors import require

    return require(module, extra)


@dataclass(frozen=True)
class Backend:
    name: str
    factory: Callable[..., Runner]
    module: str  # the import that must succeed
    extra: str  # the pip extra that provides it
    probe: str = ""  # an attribute the module must have (namespace-only installs do not count)

    def is_available(self) -> bool:
        import importlib

        try:
            mod = importlib.import_module(self.module)
        except ImportError:
            return False
        return not self.probe or hasattr(mod, self.probe)


RUNNERS: dict[str, Backend] = {
    "onnxruntime": Backend("onnxruntime", OrtRunner, "onnxruntime", "ort"),
    "tensorrt": Backend("tensorrt", TrtRunner, "tensorrt", "gpu", "Runtime"),
    "torch": Backend("torch", TorchRunner, "torch", "torch"),
}


def make_runner(backend: str, model: Any, options: Any = None) -> Runner:
    """Create the runner ``backend`` for ``model`` (ONNX path/bytes, engine path, or nn.Module)."""
    try:
        b = RUNNERS[backend]
    except KeyError:
        raise SrdeployError(f"unknown backend {backend!r}; choose one of {', '.join(RUNNERS)}") from None
    return b.factory(model, options)


def available_backends() -> list[str]:
    return [name for name, b in RUNNERS.items() if b.is_available()]
