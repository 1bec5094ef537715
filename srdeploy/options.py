"""Range checks for numeric options, shared by the command lines and the library entry points (torch-free).

Every numeric flag of ``sr-upscale`` (tile, overlap, scale, batch, crf, workers, timeouts ...) is
parsed by an argparse type from :func:`int_in` / :func:`float_in`, so a value out of range is a
one-line usage error (exit 2) naming the allowed range before anything runs. Library callers that
take the same options (:class:`srdeploy.video.VideoOptions`, ``srdeploy.runtime.ray_batch``,
``srdeploy.runtime.serve``) call :func:`check_range` with the same bounds, which raises
:class:`~srdeploy.errors.SrdeployError`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

from .errors import SrdeployError


def _bounds(lo: float | None, hi: float | None, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"between {lo:g} and {hi:g}"
    if lo is not None:
        return f"above {lo:g}" if lo_open else ("at least " + f"{lo:g}")
    if hi is not None:
        return f"at most {hi:g}"
    return "a number"


def range_problem(value: float, lo: float | None = None, hi: float | None = None, *,
                  lo_open: bool = False) -> str | None:
    """``None`` when ``lo <= value <= hi`` (``lo < value`` with ``lo_open``), else what it must be."""
    if isinstance(value, float) and not math.isfinite(value):
        return "a finite number"
    if lo is not None and (value <= lo if lo_open else value < lo):
        return _bounds(lo, hi, lo_open)
    if hi is not None and value > hi:
        return _bounds(lo, hi, lo_open)
    return None


def check_range(name: str, value: float | None, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, what: str = "") -> None:
    """Raise a one-line :class:`SrdeployError` when ``value`` (unless ``None``) is out of range."""
    if value is None:
        return
    need = range_problem(value, lo, hi, lo_open=lo_open)
    if need is not None:
        unit = what if math.isfinite(value) else ""
        raise SrdeployError(f"{name} must be {need}{unit}, got {value:g}")


def int_in(lo: int | None = None, hi: int | None = None, what: str = "") -> Callable[[str], int]:
    """An argparse type: an integer in ``[lo, hi]`` (``what`` is appended to the message, e.g. a unit)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        need = range_problem(v, lo, hi)
        if need is not None:
            raise argparse.ArgumentTypeError(f"must be {need}{what}, got {v}")
        return v

    parse.__name__ = "int"  # argparse names the type in its message: "invalid int value"
    return parse


def float_in(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
             what: str = "") -> Callable[[str], float]:
    """An argparse type: a finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        need = range_problem(v, lo, hi, lo_open=lo_open)
        if need is not None:
            unit = what if math.isfinite(v) else ""
            raise argparse.ArgumentTypeError(f"must be {need}{unit}, got {text}")
        return v

    parse.__name__ = "float"
    return parse


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (``PROG: error: ...; see PROG --help``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}; see {self.prog} --help\n")


#: the common ones
positive_int = int_in(1)
non_negative_int = int_in(0)
positive_float = float_in(0.0, lo_open=True)
non_negative_float = float_in(0.0)
