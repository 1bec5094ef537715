"""TensorRT flavour: 10.3 (JetPack 6) and 11.x, building for the GPU it runs on.

TensorRT is imported lazily and never required: it cannot be pip-installed on Jetson, and the
builder-less ``tensorrt`` (lean runtime / type stubs) that CI has is rejected with a clear line.
A TensorRT engine is specific to the build GPU, so the cache key holds the GPU name and compute
capability; load-time validity is our sidecar (TensorRT version) and the deserialiser.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from types import ModuleType
from typing import Any, ClassVar

from srdeploy.errors import BackendError

from .base import DeviceInfo, EngineOptions, Flavour, TensorRTUnavailableError


def import_tensorrt() -> ModuleType:
    """Import the TensorRT builder API or raise a one-line error saying what to do."""
    try:
        import tensorrt
    except ImportError as exc:
        raise TensorRTUnavailableError(
            f"TensorRT is not installed ({exc}); install TensorRT (JetPack: apt python3-libnvinfer), use "
            "--engine rtx (pip install 'srdeploy[rtx]'), or build on a TensorRT machine with the manifest's "
            "trtexec command"
        ) from exc
    if not hasattr(tensorrt, "Builder") or not hasattr(tensorrt, "OnnxParser"):
        raise TensorRTUnavailableError(
            "the importable 'tensorrt' has no builder or ONNX parser (type stubs or the lean runtime only); "
            "use --engine rtx, or build the engine on a TensorRT machine with the manifest's trtexec command"
        )
    return tensorrt


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


class TensorRTFlavour(Flavour):
    name: ClassVar[str] = "tensorrt"
    display: ClassVar[str] = "TensorRT"

    def import_api(self) -> ModuleType:
        return import_tensorrt()

    def device(self, api: Any, options: EngineOptions) -> DeviceInfo:
        return query_device()

    def configure(self, api: Any, config: Any, options: EngineOptions) -> None:
        if options.compute_capabilities:
            from srdeploy.errors import ExportError

            raise ExportError("--compute-capability is a TensorRT-RTX option; TensorRT builds for the GPU it runs on")
        if options.strip_weights:
            from srdeploy.errors import ExportError

            raise ExportError("weight-stripped engines: TensorRT-RTX flavour only here; use --engine rtx")
