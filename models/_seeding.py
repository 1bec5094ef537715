"""The project's seeded random weights and images (used by the exporter for random-weight exports
and validation inputs, and by the tests and fixture generators through ``models._testing``).

Private (underscore): not a model family and not a public API."""

from __future__ import annotations

import math
import zlib

import torch
from torch import nn


def seeded_tensor(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The deterministic random value of parameter ``name`` for ``seed`` (float32)."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63))
    t = torch.randn(shape, generator=g, dtype=torch.float32)
    if len(shape) <= 1:
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "weight":  # norm / PReLU / scale weights stay near 1
            return 1.0 + 0.1 * t
        return 0.05 * t
    fan_in = math.prod(shape[1:])
    return t / math.sqrt(fan_in)


def seeded_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A smooth-ish random image in [0, 1] (uniform noise blurred by a 3x3 box)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    x = nn.functional.avg_pool2d(nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    return x.clamp(0, 1)
