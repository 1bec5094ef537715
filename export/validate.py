"""Validation: the exported graph in ONNX Runtime (CPU) against PyTorch, from one tolerance table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from srdeploy.models import Descriptor
from srdeploy.models.registry import ShapeProfile

from srdeploy.errors import ExportError
from srdeploy.sizes import Size

from .compare import Comparison, Tolerance, compare

IR_VERSION_MAX = 10


@dataclass(frozen=True)
class Case:
    batch: int
    size: Size

    def __str__(self) -> str:
        return f"{self.batch}x3x{self.size}"


@dataclass
class Validation:
    precision: str
    tolerance: Tolerance
    results: list[tuple[Case, Comparison]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

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
            "cases": [{"input": str(case), **cmp.as_dict()} for case, cmp in self.results],
        }


def validation_cases(desc: Descriptor, static: Size | None = None, profile: ShapeProfile | None = None) -> list[Case]:
    """Small sizes to validate at: two sizes (the second odd in H and W), batch 1 and 2."""
    if static is not None:
        return [Case(1, static), Case(2, static)]
    if profile is not None:
        lo, hi = profile.min, profile.max
        odd = Size(min(lo.h | 1, hi.h), min(lo.w | 1, hi.w))
        if odd == lo:
            odd = profile.opt
        return [Case(1, lo), Case(1, odd), Case(2, odd)]
    base = max(desc.min_size, 16)
    a = base + (base % 2)
    even = Size(a, a + 8)
    odd = Size(a + 1, a + 7)
    return [Case(1, even), Case(1, odd), Case(2, odd)]


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

    ``reference64`` (fp32 validation): the reference in float64, for the noise floor.
    """
    result = Validation(precision, tolerance)
    in_name = session.get_inputs()[0].name
    for case, x in inputs:
        try:
            out = session.run(None, {in_name: x.astype(io_dtype)})[0]
        except Exception as exc:  # ORT raises its own Fail/InvalidArgument types
            first = str(exc).strip().splitlines()[0][:300]
            result.failures.append(f"{case}: ONNX Runtime failed: {first}")
            continue
        ref = reference(x)
        if out.shape != ref.shape:
            result.failures.append(f"{case}: output shape {tuple(out.shape)} != PyTorch {tuple(ref.shape)}")
            continue
        ref64 = reference64(x) if reference64 is not None else None
        cmp = compare(out, ref, ref64)
        result.results.append((case, cmp))
        result.failures.extend(f"{case}: {msg}" for msg in cmp.failures(tolerance))
    return result
