"""Predictors: an LR batch in, the SR batch out, through one or two runners, with timing.

:class:`SRPredictor` drives a single ``lr -> sr`` graph; :class:`ImplicitPredictor` drives the
CiaoSR encoder/decoder pair (contract C): the encoder once per image, then the decoder over
chunks of query coordinates through :func:`srdeploy.implicit.decode_image`. Both accumulate the
device and end-to-end time of every runner call made for one image (tiles and chunks included),
so the measurement code times any model the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from srdeploy.errors import ShapeError, SrdeployError
from srdeploy.tiling import Tiling, tiled_apply

from .artifact import Artifact, open_artifact
from .runners import MemoryReport, Runner, make_runner


@dataclass
class CallTiming:
    device_ms: float = 0.0
    e2e_ms: float = 0.0
    calls: int = 0
    clock: str = ""


class Predictor:
    """Base: ``__call__(lr) -> sr`` on (N, 3, H, W) float32 in [0, 1]; :attr:`timing` of the last image."""

    scale: int
    runners: list[Runner]

    def __init__(self) -> None:
        self.timing = CallTiming()

    def __enter__(self) -> Predictor:
        for r in self.runners:
            r.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        for r in self.runners:
            r.deactivate()

    def _timed(self, runner: Runner, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = runner.infer(feed)
        t = runner.last_timing
        assert t is not None
        self.timing.device_ms += t.device_ms
        self.timing.e2e_ms += t.e2e_ms
        self.timing.calls += 1
        self.timing.clock = t.clock
        return out

    def predict(self, lr: np.ndarray, tiling: Tiling | None = None) -> np.ndarray:
        """Run one image (or batch); :attr:`timing` then holds its summed device/e2e time."""
        self.timing = CallTiming()
        t0 = time.perf_counter()
        out = tiled_apply(self, lr, self.scale, tiling)
        self.timing.e2e_ms = (time.perf_counter() - t0) * 1e3
        return out

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def reset_peak_memory(self) -> bool:
        return all([r.reset_peak_memory() for r in self.runners])

    def peak_memory(self) -> MemoryReport:
        reports = [r.peak_memory() for r in self.runners]
        if len(reports) == 1:
            return reports[0]
        return MemoryReport(max(r.peak_bytes for r in reports), reports[0].note + " (max over encoder/decoder)")

    def describe(self) -> dict[str, Any]:
        return self.runners[0].describe()


class SRPredictor(Predictor):
    """A graph with one float input (``lr``) and one output (``sr``)."""

    def __init__(self, runner: Runner, scale: int, *, io_dtype: np.dtype | None = None) -> None:
        super().__init__()
        self.runner = runner
        self.runners = [runner]
        self.scale = scale
        self._io_dtype = io_dtype

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        meta = self.runner.inputs[0]
        x = np.ascontiguousarray(lr, dtype=meta.dtype)
        out = self._timed(self.runner, {meta.name: x})
        sr = out[self.runner.outputs[0].name]
        if sr.shape[-2:] != (lr.shape[-2] * self.scale, lr.shape[-1] * self.scale):
            raise ShapeError(
                f"the graph returned {sr.shape} for input {lr.shape}; is x{self.scale} the model's scale?"
            )
        return sr.astype(np.float32, copy=False)


class ImplicitPredictor(Predictor):
    """CiaoSR-style encoder + decoder pair at an (arbitrary) integer or fractional scale."""

    def __init__(self, encoder: Runner, decoder: Runner, scale: float, chunk: int = 30000) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.runners = [encoder, decoder]
        self.scale = scale  # type: ignore[assignment]
        self.chunk = chunk

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        try:
            from srdeploy.implicit import decode_image, hr_size
        except ImportError as exc:
            raise SrdeployError(f"implicit (encoder/decoder) models need srdeploy.implicit ({exc})") from exc
        x = np.ascontiguousarray(lr, dtype=np.float32)
        enc = self._timed(self.encoder, {self.encoder.inputs[0].name: x})
        if not {"feat_k", "feat_v"} <= set(enc):
            raise SrdeployError(f"the encoder graph returns {sorted(enc)}, expected feat_k and feat_v; re-export it")
        names = {m.name for m in self.decoder.inputs}
        want = ("feat_k", "feat_v", "lr", "coord", "cell")
        if names != set(want):
            raise SrdeployError(f"the decoder graph takes {sorted(names)}, expected {list(want)}; re-export it")

        def decoder_fn(*args: np.ndarray) -> np.ndarray:
            return self._timed(self.decoder, dict(zip(want, args, strict=True)))[self.decoder.outputs[0].name]

        out_h, out_w = hr_size(lr.shape[-2], lr.shape[-1], self.scale)
        return decode_image(decoder_fn, enc["feat_k"], enc["feat_v"], x, out_h, out_w, chunk=self.chunk)


def open_predictor(
    path: str | Path,
    backend: str | None = None,
    options: Any = None,
    scale: float | None = None,
    plugin_library: str | None = None,
) -> tuple[Predictor, Artifact]:
    """Open an exported artifact (``.onnx``/``.engine``/pair) as a predictor on ``backend``."""
    art = open_artifact(path)
    if backend is None:
        backend = "tensorrt" if "engine" in art.files else "onnxruntime"
    if "engine" in art.files and backend != "tensorrt":
        raise SrdeployError(f"{path} is a TensorRT engine; use --backend tensorrt (or give the .onnx file)")
    if backend == "tensorrt" and "engine" not in art.files:
        raise SrdeployError("--backend tensorrt runs engine files; build one with sr-export --engine and pass --engine")
    if backend == "tensorrt" and options is None and plugin_library:
        from .runners import TrtOptions

        options = TrtOptions(plugin_library=plugin_library)
    s = scale if scale is not None else art.scale
    if s is None:
        raise SrdeployError(f"{path} records no scale; give --scale")
    if art.graph == "implicit":
        enc = make_runner(backend, str(art.files["encoder"]), options)
        dec = make_runner(backend, str(art.files["decoder"]), options)
        return ImplicitPredictor(enc, dec, s), art
    if art.scale is not None and scale is not None and int(scale) != art.scale:
        raise SrdeployError(f"{art.stem} is a x{art.scale} model, --scale {scale} was given; drop --scale")
    key = "engine" if "engine" in art.files else "sr"
    return SRPredictor(make_runner(backend, str(art.files[key]), options), int(s)), art


def torch_predictor(module: Any, scale: int, device: str = "cpu", cudnn_benchmark: bool = False) -> Predictor:
    """A predictor over a PyTorch module (the optional ``torch`` backend)."""
    from .runners import TorchOptions, TorchRunner

    return SRPredictor(TorchRunner(module, TorchOptions(device, cudnn_benchmark)), scale)


Predict = Callable[[np.ndarray], np.ndarray]
