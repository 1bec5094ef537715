"""Test support shared by the tests and the fixture generators (not a public API).

``seeded_state_dict`` is the one recipe that fills a state dict with reproducible random
weights, keyed by parameter name, so that a fixture made by running the AUTHORS' module with
these weights can be checked against our module with the same weights, and only the input and
output need to be stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._seeding import seeded_input, seeded_tensor

__all__ = ["load_fixture", "rel_max_err", "seeded_input", "seeded_state_dict", "seeded_tensor"]


def seeded_state_dict(reference: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """A state dict with the keys and shapes of ``reference`` filled by :func:`seeded_tensor`.

    Non-floating entries (index buffers) are copied unchanged.
    """
    out = {}
    for k, v in reference.items():
        if v.is_floating_point():
            out[k] = seeded_tensor(k, tuple(v.shape), seed)
        else:
            out[k] = v.clone()
    return out


def rel_max_err(out: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray) -> float:
    """max |out - ref| / max |ref| (the faithfulness metric, tolerance 1e-5)."""
    out_a = np.asarray(out, dtype=np.float64)
    ref_a = np.asarray(ref, dtype=np.float64)
    if out_a.shape != ref_a.shape:
        raise AssertionError(f"shape {out_a.shape} != reference shape {ref_a.shape}")
    return float(np.abs(out_a - ref_a).max() / max(np.abs(ref_a).max(), 1e-12))


def load_fixture(path: str | Path) -> dict[str, Any]:
    """Load a reference fixture ``.npz`` made by a generator in tests/fixtures/."""
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    if "meta" in data:
        import json

        data["meta"] = json.loads(str(data["meta"]))
    return data


class TinyLocalSR(nn.Module):
    """A purely local test-only model: two 3x3 convs and a pixel shuffle (receptive radius 2).

    Used to show that tiled inference equals untiled inference exactly.
    """

    def __init__(self, scale: int, seed: int = 0) -> None:
        super().__init__()
        self.scale = scale
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 3 * scale * scale, 3, padding=1)
        self.load_state_dict(seeded_state_dict(self.state_dict(), seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c2(torch.relu(self.c1(x)))
        return nn.functional.pixel_shuffle(y, self.scale) + nn.functional.interpolate(
            x, scale_factor=self.scale, mode="nearest"
        )
