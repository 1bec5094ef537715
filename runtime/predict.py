"""Predictors: an LR batch in, the SR batch out, through one or two runners, with timing.

:class:`SRPredictor` drives a single ``lr -> sr`` graph; :class:`ImplicitPredictor` drives the
CiaoSR encoder/decoder pair (contract C): the encoder once per image, then the decoder over
chunks of query coordinates through :func:`srdeploy.implicit.decode_image`. Both accumulate the
device and end-to-end time of every runner call made for one image (tiles and chunks included),
so the measurement code times any model the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from srdeploy.errors import ShapeError, SrdeployError
from srdeploy.tiling import Tiling, tiled_apply

from . import backends
from .artifact import Artifact, open_artifact
from .backends import MemoryReport, Runner


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
) -> tuple[Predictor, Artifact]:
    """Open an exported artifact (``.onnx``/``.engine``/pair) as a predictor on ``backend``.

    ``backend`` ``None``: the registry's default for the artifact's kind. ``options``: the
    backend's options or a :class:`~srdeploy.runtime.backends.RunOptions`.
    """
    art = open_artifact(path)
    kind = art.kind
    info = backends.default_backend(kind) if backend is None else backends.backend(backend)
    backends.check_accepts(info, kind, str(path))
    s = scale if scale is not None else art.scale
    if s is None:
        raise SrdeployError(f"{path} records no scale; give --scale")
    # the proto is parsed once here and passed to the runners (not re-read from the file)
    if art.graph == "implicit":
        enc = backends.make_runner(info.name, art.proto("encoder"), options)
        dec = backends.make_runner(info.name, art.proto("decoder"), options)
        return ImplicitPredictor(enc, dec, s), art
    if art.scale is not None and scale is not None and int(scale) != art.scale:
        raise SrdeployError(f"{art.stem} is a x{art.scale} model, --scale {scale} was given; drop --scale")
    model = str(art.files["engine"]) if kind == "engine" else art.proto("sr")
    return SRPredictor(backends.make_runner(info.name, model, options), int(s)), art


def module_predictor(module: Any, scale: int, backend: str = "torch", options: Any = None) -> Predictor:
    """A predictor over an in-memory model (an ``nn.Module``) on a backend that accepts modules."""
    info = backends.backend(backend)
    backends.check_accepts(info, "module", "an in-memory model")
    return SRPredictor(backends.make_runner(info.name, module, options), scale)
