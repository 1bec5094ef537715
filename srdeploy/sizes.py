"""Sizes are written ``HxW`` (height x width) everywhere: flags, file names, docs."""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import SrdeployError


class Size(NamedTuple):
    h: int
    w: int

    def __str__(self) -> str:
        return f"{self.h}x{self.w}"


_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_size(text: str) -> Size:
    """Parse ``"180x320"`` into ``Size(h=180, w=320)``."""
    m = _RE.match(text)
    if not m:
        raise SrdeployError(f"bad size {text!r}: write it as HxW (height x width), e.g. 180x320")
    h, w = int(m.group(1)), int(m.group(2))
    if h <= 0 or w <= 0:
        raise SrdeployError(f"bad size {text!r}: height and width must be positive")
    return Size(h, w)


def format_size(h: int, w: int) -> str:
    return f"{h}x{w}"
