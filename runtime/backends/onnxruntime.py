"""ONNX Runtime backend: CPU, or the CUDA / TensorRT execution providers of onnxruntime-gpu.

Sessions come from :func:`srdeploy.onnxlayer.session` (plugin graphs included).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from srdeploy import onnxlayer
from srdeploy.errors import BackendError, MissingDependencyError, SrdeployError, one_line, require

from .. import memory
from .base import BackendInfo, MemoryReport, Runner, RunOptions, TensorMeta

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

    def __init__(self, model: str | os.PathLike[str] | bytes | Any, options: OrtOptions | None = None) -> None:
        super().__init__()
        self.model = model
        self.options = options or OrtOptions()
        if self.options.device not in _ORT_PROVIDERS:
            raise SrdeployError(f"unknown ONNX Runtime device {self.options.device!r}; use cpu, cuda or tensorrt")
        self.device_kind = self.options.device
        self._sess: Any = None
        self._rss_base = 0

    def _load(self) -> None:
        ort = require("onnxruntime", "ort")
        proto = onnxlayer.load(self.model)
        self.metadata = {p.key: p.value for p in proto.metadata_props}
        providers = _ORT_PROVIDERS[self.options.device]
        missing = [p for p in providers[:-1] if p not in ort.get_available_providers()]
        if missing:
            raise MissingDependencyError(
                f"ONNX Runtime has no {', '.join(missing)} here (available: {ort.get_available_providers()}); "
                "install onnxruntime-gpu: pip install 'srdeploy[gpu]'"
            )
        config = onnxlayer.SessionConfig(
            providers=tuple(providers),
            optimization=self.options.graph_optimization,
            intra_op_threads=self.options.intra_op_threads,
            config_entries=tuple(self.options.session_options.items()),
        )
        self._rss_base = memory.current_rss_bytes()
        memory.reset_peak_rss()
        self._sess = onnxlayer.session(proto, config)
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
            raise BackendError(f"ONNX Runtime failed to run ({one_line(exc)[:300]})") from exc
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
            raise BackendError(f"ONNX Runtime failed to run ({one_line(exc)[:300]})") from exc
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


def _options(o: RunOptions) -> OrtOptions:
    return OrtOptions(device=o.device, intra_op_threads=o.threads)


BACKEND = BackendInfo("onnxruntime", OrtRunner, _options, accepts=("onnx",), requires="onnxruntime",
                      install="pip install 'srdeploy[ort]'",
                      priority=10)
