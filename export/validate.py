"""Validation: the exported graph in ONNX Runtime (CPU) against PyTorch, from one tolerance table.

The plan (:func:`validation_cases`) runs two small sizes (one odd), batch 1 and 2, plus one case
above every size-dependent threshold the descriptor declares (``Descriptor.size_paths``), so a
path that only changes behaviour on larger inputs (AGDN's TLC windows, ESC's window attention) is
exercised. The gate compares the graph with the PyTorch model in its export form; a declared
dynamic form (an intentional deviation, e.g. TLC off) is also measured against the model as the
user built it (:func:`measure_deviations`), reported, and not failed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx
from srdeploy.models import Descriptor
from srdeploy.models.registry import ShapeProfile, SizePath

from srdeploy.errors import ExportError
from srdeploy.sizes import Size

from .compare import Comparison, Tolerance, compare, image_difference

IR_VERSION_MAX = 10


@dataclass(frozen=True)
class Case:
    batch: int
    size: Size
    path: str | None = None  # the declared size path this case was added for (None: a base case)

    def __str__(self) -> str:
        return f"{self.batch}x3x{self.size}"


@dataclass
class Validation:
    precision: str
    tolerance: Tolerance
    results: list[tuple[Case, Comparison]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    deviations: list[Deviation] = field(default_factory=list)  # declared: reported, never failures
    # the graph's outputs on the size-path cases (batch 1), reused by measure_deviations
    path_outputs: dict[Case, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def worst(self) -> Comparison | None:
        if not self.results:
            return None
        return min((c for _, c in self.results), key=lambda c: (c.psnr_db, -c.max_rel_err))

    def as_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "tolerance": self.tolerance.as_dict(),
            "passed": self.passed,
            "failures": self.failures,
            "cases": [{"input": str(case), **({"size_path": case.path} if case.path else {}), **cmp.as_dict()}
                      for case, cmp in self.results],
            "deviations": [d.as_record() for d in self.deviations],
        }


@dataclass(frozen=True)
class Deviation:
    """A declared difference of the graph from the PyTorch model as built, and its measured size."""

    path: str  # the SizePath's name
    what: str
    size: Size | None  # LR size it was measured at; None: not measured (--no-validate)
    max_abs_levels: float | None = None
    mean_abs_levels: float | None = None
    psnr_db: float | None = None

    @property
    def measured(self) -> str:
        if self.size is None or self.max_abs_levels is None:
            return "not measured (validation skipped)"
        psnr = "inf" if self.psnr_db is None or math.isinf(self.psnr_db) else f"{self.psnr_db:.2f}"
        return (f"vs PyTorch as built at {self.size} LR: max {self.max_abs_levels:.1f} and mean "
                f"{self.mean_abs_levels:.2f} 8-bit levels, PSNR {psnr} dB")

    def as_record(self) -> dict[str, Any]:
        """The ``ArtifactRecord.deviations`` entry (srdeploy.records.DEVIATION_KEYS + ``path``)."""
        psnr: float | str | None = self.psnr_db
        if psnr is not None and math.isinf(psnr):
            psnr = "inf"
        return {
            "what": self.what,
            "measured": self.measured,
            "max_abs_levels": None if self.max_abs_levels is None else round(self.max_abs_levels, 3),
            "mean_abs_levels": None if self.mean_abs_levels is None else round(self.mean_abs_levels, 4),
            "psnr_db": psnr if not isinstance(psnr, float) else round(psnr, 3),
            "size": None if self.size is None else str(self.size),
            "path": self.path,
        }


def deviation_text(path: SizePath, options: Mapping[str, Any] | None = None) -> str:
    """One line: what the graph does instead of the declared path."""
    return f"{path.what} replaced by {path.dynamic_form}, which differs above {path.threshold(options)} LR pixels"


def above_case(threshold: int, limit: Size | None = None) -> Size | None:
    """An odd size above ``threshold`` in H and W (``t + t//4 + 1`` x that + 6: two partly
    overlapping windows of ``t``, neither side a multiple of it), within ``limit``; None where
    ``limit`` does not reach above it."""
    h = (threshold + threshold // 4 + 1) | 1
    size = Size(h, h + 6)
    if limit is not None:
        size = Size(min(size.h, limit.h), min(size.w, limit.w))
    return size if size.h > threshold and size.w > threshold else None


def covers(size: Size, threshold: int) -> bool:
    return size.h > threshold and size.w > threshold


def uncovered_paths(
    desc: Descriptor, cases: Sequence[Case], options: Mapping[str, Any] | None = None, limit: Size | None = None
) -> list[SizePath]:
    """The declared size paths no case exercises although ``limit`` (the largest size) reaches them."""
    out = []
    for path in desc.size_paths:
        t = path.threshold(options)
        if limit is not None and not covers(limit, t):
            continue
        if not any(covers(c.size, t) for c in cases):
            out.append(path)
    return out


def validation_cases(
    desc: Descriptor,
    static: Size | None = None,
    profile: ShapeProfile | None = None,
    options: Mapping[str, Any] | None = None,
) -> list[Case]:
    """Sizes to validate at: two small sizes (the second odd in H and W), batch 1 and 2, and one
    batch-1 case above each declared size path's threshold that those do not exceed (within the
    profile's maximum when the profile comes from flags; ``static``: only that size exists)."""
    if static is not None:
        return [Case(1, static), Case(2, static)]
    limit = None
    if profile is not None:
        lo, hi = profile.min, profile.max
        odd = Size(min(lo.h | 1, hi.h), min(lo.w | 1, hi.w))
        if odd == lo:
            odd = profile.opt
        cases = [Case(1, lo), Case(1, odd), Case(2, odd)]
        limit = hi
    else:
        base = max(desc.min_size, 16)
        a = base + (base % 2)
        cases = [Case(1, Size(a, a + 8)), Case(1, Size(a + 1, a + 7)), Case(2, Size(a + 1, a + 7))]
    for path in sorted(desc.size_paths, key=lambda p: p.threshold(options)):
        t = path.threshold(options)
        size = above_case(t, limit)
        if size is not None and not any(covers(c.size, t) for c in cases):
            cases.append(Case(1, size, path.name))
    return cases


def check_model(model: onnx.ModelProto) -> None:
    """``onnx.checker`` full check and an IR version the pinned ONNX Runtime reads."""
    if model.ir_version > IR_VERSION_MAX:
        raise ExportError(f"graph IR version {model.ir_version} > {IR_VERSION_MAX}; ONNX Runtime cannot read it")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # onnx raises ValidationError/InferenceError
        first = str(exc).strip().splitlines()[0][:300]
        raise ExportError(f"exported graph fails onnx.checker: {first}") from exc


def validate(
    session: Any,
    reference: Callable[[np.ndarray], np.ndarray],
    inputs: Sequence[tuple[Case, np.ndarray]],
    precision: str,
    tolerance: Tolerance,
    io_dtype: type = np.float32,
    reference64: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Validation:
    """Run every input through ``session`` and ``reference`` and compare with ``tolerance``.

    ``reference64`` (fp32 validation): the reference in float64, for the noise floor. It runs on
    the base cases; a size-path case (larger, where float64 attention costs 10-20x float32) takes
    the largest floor measured on them.
    """
    result = Validation(precision, tolerance)
    floors: list[float] = []
    in_name = session.get_inputs()[0].name
    for case, x in inputs:
        try:
            out = session.run(None, {in_name: x.astype(io_dtype)})[0]
        except Exception as exc:  # ORT raises its own Fail/InvalidArgument types
            first = str(exc).strip().splitlines()[0][:300]
            result.failures.append(f"{case}: ONNX Runtime failed: {first}")
            continue
        if case.path is not None and case.batch == 1:
            result.path_outputs[case] = out
        ref = reference(x)
        if out.shape != ref.shape:
            result.failures.append(f"{case}: output shape {tuple(out.shape)} != PyTorch {tuple(ref.shape)}")
            continue
        ref64 = None
        if reference64 is not None and (case.path is None or not floors):
            ref64 = reference64(x)
        cmp = compare(out, ref, ref64)
        if cmp.fp32_noise_floor is not None:
            floors.append(cmp.fp32_noise_floor)
        elif reference64 is not None and floors:
            cmp = replace(cmp, fp32_noise_floor=max(floors))
        result.results.append((case, cmp))
        result.failures.extend(f"{case}: {msg}" for msg in cmp.failures(tolerance))
    return result


def measure_deviations(
    session: Any,
    as_built: Callable[[np.ndarray], np.ndarray],
    inputs: Sequence[tuple[Case, np.ndarray]],
    paths: Sequence[SizePath],
    options: Mapping[str, Any] | None = None,
    io_dtype: type = np.float32,
    outputs: Mapping[Case, np.ndarray] | None = None,
) -> list[Deviation]:
    """Each declared deviation, measured on the graph against the PyTorch model as built at the
    largest batch-1 validation input above its threshold (the largest input when none is).
    ``outputs``: the graph's outputs already computed by :func:`validate`, by case."""
    in_name = session.get_inputs()[0].name
    out: list[Deviation] = []
    for path in paths:
        t = path.threshold(options)
        above = [(c, x) for c, x in inputs if covers(c.size, t)] or list(inputs)
        case, x = max(above, key=lambda cx: (cx[0].size.h * cx[0].size.w, -cx[0].batch))
        x1 = x[:1]
        got = (outputs or {}).get(case) if case.batch == 1 else None
        if got is None:
            got = session.run(None, {in_name: x1.astype(io_dtype)})[0]
        ref = as_built(x1)
        mx, mean, psnr = image_difference(got, ref)
        out.append(Deviation(path.name, deviation_text(path, options), case.size, mx, mean, psnr))
    return out
