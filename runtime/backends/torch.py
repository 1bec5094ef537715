"""PyTorch eager backend (optional): an ``nn.Module``, fp32, no grad.

The one runtime module allowed to use torch, imported when the runner loads (never at import).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from srdeploy.errors import BackendError, require

from .. import memory
from .base import BackendInfo, MemoryReport, Runner, RunOptions, TensorMeta


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
        torch = require("torch", "torch")
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


def _options(o: RunOptions) -> TorchOptions:
    return TorchOptions(device=o.device, cudnn_benchmark=o.cudnn_benchmark)


BACKEND = BackendInfo("torch", TorchRunner, _options, accepts=("module",), requires="torch",
                      install="pip install 'srdeploy[torch]'",
                      priority=10)
