"""One tolerance table and one comparator for every validation in the exporter.

Units are in the field names: ``max_rel_err`` is ``max|out - ref| / max|ref|`` (dimensionless),
``min_psnr_db`` is a PSNR in dB with the peak taken as ``max|ref|`` (the outputs are unclamped
[0, 1] images, so the peak is about 1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

Precision = Literal["fp32", "fp16", "int8"]
WeightsKind = Literal["random", "real"]


@dataclass(frozen=True)
class Tolerance:
    """A pass/fail rule; ``None`` fields are not checked.

    ``fp32_noise_factor``: for fp32, the allowed ``max_rel_err`` is
    ``max(max_rel_err, fp32_noise_factor * floor)`` where ``floor`` is the model's own fp32
    rounding noise on that input (PyTorch fp32 against PyTorch fp64). Some models are
    ill-conditioned with random weights (A2N works on a 0-255 range: PyTorch fp32 itself is
    5e-4 away from fp64); an exported graph must not add more than a few times that noise.
    """

    max_rel_err: float | None = None
    min_psnr_db: float | None = None
    fp32_noise_factor: float | None = None

    def allowed_rel_err(self, floor: float | None) -> float | None:
        if self.max_rel_err is None:
            return None
        if floor is None or self.fp32_noise_factor is None:
            return self.max_rel_err
        return max(self.max_rel_err, self.fp32_noise_factor * floor)

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


# The table: (precision, kind of weights) -> rule. fp16 is checked against fp32 PyTorch.
TOLERANCES: dict[tuple[Precision, WeightsKind], Tolerance] = {
    ("fp32", "random"): Tolerance(max_rel_err=1e-4, fp32_noise_factor=3.0),
    ("fp32", "real"): Tolerance(max_rel_err=1e-4, fp32_noise_factor=3.0),
    ("fp16", "random"): Tolerance(min_psnr_db=40.0),
    ("fp16", "real"): Tolerance(min_psnr_db=45.0),
    # INT8: a sanity bound at the validation sizes/batches (dynamic shapes, no NaN); the quality
    # rule is the held-out Y-PSNR gate of srdeploy.export.int8.
    ("int8", "random"): Tolerance(min_psnr_db=20.0),
    ("int8", "real"): Tolerance(min_psnr_db=30.0),
}


def tolerance_for(precision: Precision, weights: WeightsKind) -> Tolerance:
    return TOLERANCES[(precision, weights)]


@dataclass(frozen=True)
class Comparison:
    """Error statistics of ``out`` against ``ref`` (all in float64)."""

    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel_err: float
    psnr_db: float
    nonfinite: int  # NaN/Inf values in ``out``
    fp32_noise_floor: float | None = None  # max_rel_err of PyTorch fp32 vs fp64 on this input

    def as_dict(self) -> dict[str, float | int]:
        d = asdict(self)
        if math.isinf(self.psnr_db):
            d["psnr_db"] = "inf"
        return d

    def failures(self, tol: Tolerance) -> list[str]:
        """Human-readable reasons why ``tol`` is not met (empty: passed)."""
        bad = []
        if self.nonfinite:
            bad.append(f"{self.nonfinite} NaN/Inf values in the output")
        allowed = tol.allowed_rel_err(self.fp32_noise_floor)
        if allowed is not None and not self.max_rel_err <= allowed:
            bad.append(f"max_rel_err {self.max_rel_err:.3g} > {allowed:.3g}")
        if tol.min_psnr_db is not None and not self.psnr_db >= tol.min_psnr_db:
            bad.append(f"PSNR {self.psnr_db:.2f} dB < {tol.min_psnr_db:g} dB")
        return bad


def compare(out: np.ndarray, ref: np.ndarray, ref64: np.ndarray | None = None) -> Comparison:
    """Compare ``out`` with ``ref`` (same shape); PSNR peak = max|ref|.

    ``ref64``: the same reference computed in float64, to measure the fp32 noise floor.
    """
    o = np.asarray(out, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if o.shape != r.shape:
        raise ValueError(f"output shape {o.shape} != reference shape {r.shape}")
    nonfinite = int(o.size - np.isfinite(o).sum())
    diff = np.abs(np.nan_to_num(o, nan=np.inf) - r)
    peak = max(float(np.abs(r).max()), 1e-12)
    mse = float(np.mean(np.square(diff))) if diff.size else 0.0
    if not math.isfinite(mse):
        psnr = -math.inf
    elif mse == 0.0:
        psnr = math.inf
    else:
        psnr = 10.0 * math.log10(peak * peak / mse)
    max_abs = float(diff.max()) if diff.size else 0.0
    return Comparison(
        max_abs=max_abs,
        mean_abs=float(diff.mean()) if diff.size else 0.0,
        p99_abs=float(np.percentile(diff, 99)) if diff.size else 0.0,
        max_rel_err=max_abs / peak,
        psnr_db=psnr,
        nonfinite=nonfinite,
        fp32_noise_floor=None if ref64 is None else rel_err(ref, ref64),
    )


def image_difference(out: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """``(max, mean)`` absolute difference in 8-bit levels and PSNR in dB (peak 255) of two
    [0, 1] images, each clamped to [0, 1] first (what a saved image would show, before rounding)."""
    o = np.clip(np.asarray(out, dtype=np.float64), 0.0, 1.0) * 255.0
    r = np.clip(np.asarray(ref, dtype=np.float64), 0.0, 1.0) * 255.0
    if o.shape != r.shape:
        raise ValueError(f"output shape {o.shape} != reference shape {r.shape}")
    diff = np.abs(np.nan_to_num(o, nan=255.0) - r)
    mse = float(np.mean(np.square(diff))) if diff.size else 0.0
    psnr = math.inf if mse == 0.0 else 10.0 * math.log10(255.0 * 255.0 / mse)
    return (float(diff.max()) if diff.size else 0.0), (float(diff.mean()) if diff.size else 0.0), psnr


def rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    o = np.asarray(out, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    return float(np.abs(o - r).max() / max(float(np.abs(r).max()), 1e-12))
