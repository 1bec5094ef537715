"""NTIRE-style and steady-state measurement of a predictor over image sets.

``ntire`` reproduces the official Efficient SR harness, quirks included: no warm-up (the first
image of the first set is timed cold), one timed call per image, the arithmetic mean per set and
the mean of the set means, peak memory never reset between sets, PSNR on RGB of the
uint8-rounded output with ``shave = scale``, whole images (no tiling), batch 1. Where a backend has
no CUDA events or ``max_memory_allocated``, the closest equivalent is used and the output says so
(the runner's ``clock`` and memory ``note``).

``steady`` warms up, times every image ``repeats`` times, reports the median and p90, resets the
peak memory per set, and states the achieved fraction of the device's peak arithmetic rate and
memory bandwidth when the peaks are known.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from srdeploy.errors import InputImageError, SrdeployError
from srdeploy.imageio import SUPPORTED_SUFFIXES, read_image
from srdeploy.sizes import Size
from srdeploy.tiling import Tiling

from . import metrics
from .predict import Predictor
from .results import (
    LABELS,
    BenchResult,
    HostLoad,
    Provenance,
    SetRecord,
    WeightsIdentity,
    cell,
    summary_line,
)

Mode = Literal["ntire", "steady"]

#: FP16 tensor peak (dense) FLOP/s and memory bandwidth (bytes/s) for the steady-mode fractions.
DEVICE_PEAKS: dict[str, tuple[float, float]] = {
    "jetson-agx-orin": (42.5e12, 204.8e9),
    "jetson-orin-nano-super": (17e12, 102e9),
    "rtx-4090": (165e12, 1008e9),
    "rtx-a6000": (155e12, 768e9),
    "h100-sxm": (990e12, 3.35e12),
}


@dataclass
class Sample:
    """One evaluation image: HR path (or None for synthetic), LR path or a made-up LR array."""

    name: str
    hr_path: Path | None
    lr_path: Path | None = None
    lr_array: np.ndarray | None = None  # uint8 (H, W, 3) for synthetic inputs

    def load(self, scale: int) -> tuple[np.ndarray, np.ndarray | None, str]:
        """Return (LR uint8 HWC, HR uint8 HWC modcropped or None, how the LR was obtained)."""
        hr = None
        if self.hr_path is not None:
            hr = metrics.modcrop(_read_uint8(self.hr_path), scale)
        if self.lr_array is not None:
            return self.lr_array, hr, "synthetic (uniform noise)"
        if self.lr_path is not None:
            lr = _read_uint8(self.lr_path)
            how = "given"
        else:
            assert hr is not None
            lr = metrics.bicubic_downscale(hr, scale)
            how = "bicubic downscaling of HR (PIL, antialiased)"
        if hr is not None and (lr.shape[0] * scale, lr.shape[1] * scale) != hr.shape[:2]:
            raise InputImageError(
                f"{self.name}: LR {lr.shape[0]}x{lr.shape[1]} x{scale} does not match HR "
                f"{hr.shape[0]}x{hr.shape[1]} (after modcrop); check the pair and the scale"
            )
        return lr, hr, how


def _read_uint8(path: Path) -> np.ndarray:
    rgb, _ = read_image(path)
    return np.rint(rgb * 255.0).astype(np.uint8).transpose(1, 2, 0)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)


def _match_lr(hr: Path, lrs: dict[str, Path], scale: int) -> Path | None:
    for key in (hr.stem, f"{hr.stem}x{scale}", f"{hr.stem}_x{scale}"):
        if key in lrs:
            return lrs[key]
    return None


def load_sets(root: str | Path, scale: int) -> dict[str, list[Sample]]:
    """``root/valid`` (and optional ``root/test``), each with ``HR/`` and optional ``LR/``.

    LR files match HR files by stem (``0801.png``, ``0801x4.png`` or ``0801_x4.png``). Without
    ``LR/`` the LR images are made by bicubic downscaling of the modcropped HR.
    """
    root = Path(root)
    if not root.is_dir():
        raise SrdeployError(f"data folder {root} does not exist; give --data DIR with valid/HR (and LR)")
    sets: dict[str, list[Sample]] = {}
    for name in ("valid", "test"):
        folder = root / name
        if not folder.is_dir():
            continue
        hr_dir, lr_dir = folder / "HR", folder / "LR"
        if not hr_dir.is_dir():
            raise SrdeployError(f"{folder} has no HR/ folder; PSNR needs ground truth (LR/ alone is not enough)")
        hrs = _images(hr_dir)
        if not hrs:
            raise SrdeployError(f"{hr_dir} holds no images ({', '.join(SUPPORTED_SUFFIXES)})")
        lrs = {p.stem: p for p in _images(lr_dir)} if lr_dir.is_dir() else None
        samples = []
        for hr in hrs:
            lr = None
            if lrs is not None:
                lr = _match_lr(hr, lrs, scale)
                if lr is None:
                    raise SrdeployError(
                        f"{hr.name} in {hr_dir} has no LR image in {lr_dir} (expected {hr.stem}x{scale})"
                    )
            samples.append(Sample(hr.stem, hr, lr))
        if lrs is not None and len(lrs) != len(hrs):
            raise SrdeployError(f"{lr_dir} holds {len(lrs)} images but {hr_dir} holds {len(hrs)}; pair them one to one")
        sets[name] = samples
    if "valid" not in sets:
        raise SrdeployError(f"{root} has no valid/ folder; expected valid/HR (and optionally valid/LR, test/)")
    return sets


def make_crop_sets(image: str | Path, root: str | Path, crop: int = 192) -> Path:
    """Write ``valid/HR`` (3 crops) and ``test/HR`` (1 crop) cut from the corners of ``image``.

    For a quick, self-contained run on a bundled photograph (LR made by bicubic downscaling).
    """
    from PIL import Image

    src = Path(image)
    if not src.is_file():
        raise SrdeployError(f"image {src} does not exist; give a PNG/JPEG for --data-from-image")
    rgb, _ = read_image(src)
    h, w = rgb.shape[1:]
    if h < crop or w < crop:
        raise SrdeployError(f"{src} is {h}x{w}; --data-from-image needs at least {crop}x{crop}")
    arr = np.rint(rgb * 255).astype(np.uint8).transpose(1, 2, 0)
    corners = {"valid": [(0, 0), (0, w - crop), (h - crop, 0)], "test": [(h - crop, w - crop)]}
    root = Path(root)
    for split, origins in corners.items():
        (root / split / "HR").mkdir(parents=True, exist_ok=True)
        for i, (y, x) in enumerate(origins):
            Image.fromarray(arr[y : y + crop, x : x + crop]).save(root / split / "HR" / f"{src.stem}_{split}{i}.png")
    return root


def synthetic_set(h: int, w: int, count: int, seed: int = 0) -> dict[str, list[Sample]]:
    """``count`` uniform-noise LR images of ``h`` x ``w`` (no HR: no PSNR)."""
    rng = np.random.default_rng(seed)
    return {"valid": [Sample(f"synthetic_{i:03d}", None, None, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
                      for i in range(count)]}


@dataclass
class SetResult:
    """The mutable accumulator :func:`measure` fills per set; :meth:`record` freezes it."""

    runtime_ms: list[float] = field(default_factory=list)  # the reported (device) time per image
    e2e_ms: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    ssim_y: list[float] = field(default_factory=list)
    psnr_y: list[float] = field(default_factory=list)
    memory_mb: float = 0.0
    names: list[str] = field(default_factory=list)
    lr_sizes: list[Size] = field(default_factory=list)
    lr_source: str = ""

    def record(self, name: str) -> SetRecord:
        return SetRecord(name, tuple(self.runtime_ms), tuple(self.e2e_ms), tuple(self.psnr), tuple(self.psnr_y),
                         tuple(self.ssim_y), self.memory_mb, tuple(self.names), tuple(self.lr_sizes),
                         self.lr_source)


def measure(
    predictor: Predictor,
    sets: dict[str, list[Sample]],
    scale: int,
    mode: Mode = "ntire",
    *,
    warmup: int = 10,
    repeats: int = 5,
    tiling: Tiling | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    ssim: bool = False,
) -> dict[str, SetResult]:
    """Time ``predictor`` over ``sets`` (``valid`` first, then ``test``) in ``mode``."""
    if mode not in ("ntire", "steady"):
        raise SrdeployError(f"unknown mode {mode!r}; use ntire or steady")
    if mode == "ntire" and tiling is not None:
        raise SrdeployError("--mode ntire runs whole images, as the challenge; drop --tile or use --mode steady")
    from tqdm import tqdm

    say = log or (lambda s: None)
    results: dict[str, SetResult] = {}
    # ntire: never reset. The window opened when the runner loaded the model, so weights count, as
    # in the harness's max_memory_allocated (the model is on the GPU before the first image).
    for set_name in ("valid", "test"):
        samples = sets.get(set_name)
        if not samples:
            continue
        res = SetResult()
        if mode == "steady":
            predictor.reset_peak_memory()
            lr0, _, _ = samples[0].load(scale)
            x0 = (lr0.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
            for _ in range(warmup):
                predictor.predict(x0, tiling)
        for sample in tqdm(samples, desc=f"{set_name} ({mode})", unit="img", disable=not progress):
            lr, hr, how = sample.load(scale)
            res.lr_source = how
            x = np.ascontiguousarray(lr.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
            dev, e2e = [], []
            sr = None
            for _ in range(1 if mode == "ntire" else repeats):
                sr = predictor.predict(x, tiling)
                dev.append(predictor.timing.device_ms)
                e2e.append(predictor.timing.e2e_ms)
            assert sr is not None
            res.runtime_ms.append(dev[0] if mode == "ntire" else statistics.median(dev))
            res.e2e_ms.append(e2e[0] if mode == "ntire" else statistics.median(e2e))
            res.names.append(sample.name)
            res.lr_sizes.append(Size(int(lr.shape[0]), int(lr.shape[1])))
            if hr is not None:
                out = metrics.to_uint8(sr[0])
                res.psnr.append(metrics.psnr_rgb(out, hr, shave=scale))
                res.psnr_y.append(metrics.psnr_y(out, hr, crop=scale))
                if ssim:
                    res.ssim_y.append(metrics.ssim_y(out, hr, crop=scale))
                say(f"{sample.name}: {res.runtime_ms[-1]:.2f} ms, PSNR {res.psnr[-1]:.2f} dB")
            else:
                say(f"{sample.name}: {res.runtime_ms[-1]:.2f} ms")
        res.memory_mb = predictor.peak_memory().peak_mb
        say(f"{set_name}: mean {res.record(set_name).mean_runtime:.2f} ms, memory {res.memory_mb:.2f} MB (this set)")
        results[set_name] = res
    return results


def environment() -> dict[str, Any]:
    """Host, Python and library versions for the report's environment block."""
    import importlib.metadata as md

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": __import__("os").cpu_count(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for pkg in ("srdeploy", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "torch"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
        env["cpu"] = cpu
    except (OSError, StopIteration):
        pass
    return env




def host_load() -> tuple[float, float, float]:
    """``os.getloadavg()`` (1, 5, 15 min); zeros where the platform has none."""
    import os

    try:
        a, b, c = os.getloadavg()
    except (AttributeError, OSError):
        return (0.0, 0.0, 0.0)
    return (a, b, c)


def build_result(
    key: str,
    sets: dict[str, SetResult],
    *,
    mode: Mode,
    scale: int,
    stats: dict[str, Any] | None,
    predictor_info: dict[str, Any],
    clock: str,
    memory_note: str,
    precision: str,
    weights: WeightsIdentity,
    model: str = "",
    backend: str = "?",
    device: str = "?",
    provenance: Provenance | None = None,
    load: HostLoad | None = None,
    deviations: Sequence[dict[str, str]] = (),
    extra: dict[str, Any] | None = None,
    peaks: tuple[float, float] | None = None,
    warmup: int = 0,
    repeats: int = 1,
) -> BenchResult:
    """The one :class:`BenchResult` of a measured model (serialised by ``BenchResult.to_json``)."""
    records = tuple(r.record(name) for name, r in sets.items())
    util = None
    if mode == "steady" and stats and "valid" in sets and sets["valid"].runtime_ms:
        util = _utilisation(stats, sets["valid"], peaks)
    return BenchResult(
        key=key, sets=records, model=model or key, scale=scale, mode=mode, precision=precision, backend=backend,
        device=device, clock=clock,
        memory_note=memory_note + ("; never reset between sets (NTIRE)" if mode == "ntire" else "; reset per set"),
        weights=weights, provenance=provenance, load=load,
        warmup=0 if mode == "ntire" else warmup, repeats=1 if mode == "ntire" else repeats,
        stats=stats or {}, environment=environment(), runner=predictor_info, extra=extra or {},
        deviations=tuple(deviations), utilisation=util,
    )


def _utilisation(stats: dict[str, Any], r: SetResult, peaks: tuple[float, float] | None) -> dict[str, Any]:
    """Achieved FLOP/s and bytes/s over the valid set, from MACs/traffic per LR pixel."""
    h, w = (int(v) for v in str(stats["input_shape"]).split("x")[-2:])
    per_px_macs = stats["macs"] / (h * w)
    per_px_bytes = stats["traffic_bytes"] / (h * w)
    flops, bytes_, secs = 0.0, 0.0, 0.0
    for size, ms in zip(r.lr_sizes, r.runtime_ms, strict=True):
        flops += 2 * per_px_macs * size.h * size.w
        bytes_ += per_px_bytes * size.h * size.w
        secs += ms / 1e3
    out: dict[str, Any] = {
        "achieved_tflops": flops / secs / 1e12,
        "achieved_gbps_upper_bound": bytes_ / secs / 1e9,
        "note": "FLOPs = 2 x MACs scaled by LR pixels from the counted size; bytes = unfused tensor traffic "
                "(an upper bound)",
    }
    if peaks:
        out["peak_tflops"], out["peak_gbps"] = peaks[0] / 1e12, peaks[1] / 1e9
        out["fraction_of_peak_flops"] = flops / secs / peaks[0]
        out["fraction_of_peak_bandwidth"] = bytes_ / secs / peaks[1]
    else:
        out["fraction_of_peak_flops"] = None
        out["fraction_of_peak_bandwidth"] = None
        out["note"] += "; device peaks unknown (give --device-peak or --peak-tflops/--peak-gbps)"
    return out


def results_txt(results: Sequence[BenchResult]) -> str:
    """The NTIRE ``results.txt`` layout (tab-separated; test columns when every entry has them).

    Every figure is :func:`srdeploy.runtime.results.cell` of the record, as in the report and the
    log; a PSNR of random weights carries the ``(random weights)`` label. ``Ave Time`` is the mean
    of the set means and ``Mem`` the peak over all sets, the same figures the report shows.
    """
    include_test = bool(results) and all(r.figure_set_has("test") for r in results)
    qs = ["valid_psnr", *(["test_psnr"] if include_test else []), "valid_runtime",
          *(["test_runtime", "runtime"] if include_test else []), "params", "flops", "acts", "memory", "conv"]
    widths = {"valid_psnr": 27, "test_psnr": 27, "valid_runtime": 14, "test_runtime": 14, "runtime": 14,
              "params": 10, "flops": 10, "acts": 8, "memory": 8, "conv": 8}
    def row(first: str, cells: list[str]) -> str:
        return "\t".join([f"{first:20s}", *(f"{c:{widths[q]}s}" for q, c in zip(qs, cells, strict=True))]) + "\n"

    s = row("Model", [LABELS[q] for q in qs])
    for r in results:
        s += row(r.key, [cell(r, q) for q in qs])
    return s


def write_results(outdir: str | Path, results: Sequence[BenchResult], log_lines: Sequence[str]) -> list[Path]:
    """Write ``results.json``, ``results.txt`` and ``bench.log`` atomically into ``outdir``.

    Like the NTIRE harness, an existing ``results.json`` in ``outdir`` is kept and updated by model
    key, so several runs into one folder build one table. ``bench.log`` is appended to, each run
    under a ``=== sr-bench run ... ===`` header, never overwritten.
    """
    from srdeploy.atomic import staged_dir

    outdir = Path(outdir)
    previous = outdir / "results.json"
    old: dict[str, Any] = {}
    if previous.is_file():
        try:
            data = json.loads(previous.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SrdeployError(
                f"{previous} exists but is not valid JSON ({exc}); remove it or use another -o"
            ) from exc
        if isinstance(data, dict):
            old = data
    new = {r.key: r for r in results}
    merged: dict[str, Any] = {k: v for k, v in old.items() if k not in new}
    merged.update({k: r.to_json() for k, r in new.items()})
    records = [new[k] if k in new else BenchResult.from_json(k, v, str(previous)) for k, v in merged.items()]
    log_path = outdir / "bench.log"
    earlier = log_path.read_text() if log_path.is_file() else ""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    header = f"=== sr-bench run {stamp} ({', '.join(new)}) ==="
    summary = [summary_line(r) for r in results]
    text = "\n".join([header, *log_lines, *summary]) + "\n"
    with staged_dir(outdir) as stage:
        (stage / "results.json").write_text(json.dumps(merged, indent=2, default=_json_default))
        (stage / "results.txt").write_text(results_txt(records))
        (stage / "bench.log").write_text(earlier + ("\n" if earlier and not earlier.endswith("\n") else "") + text)
    return [outdir / "results.json", outdir / "results.txt", outdir / "bench.log"]


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
