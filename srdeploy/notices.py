"""One-line notices on stderr that a user must not miss (torch-free).

Every command that runs or writes a model with random weights, or a graph that intentionally
differs from its PyTorch model, says so through these helpers, so the wording is the same in
``sr-export``, ``sr-upscale``, ``sr-bench`` and the Ray/serve/video paths.
"""

from __future__ import annotations

import sys
from typing import TextIO


def random_weights_text(subject: str, seed: int | None = None) -> str:
    """``"<subject> has random weights (seed N): outputs are noise; pass --weights ..."``."""
    seeded = f" (seed {seed})" if seed is not None else ""
    return (
        f"{subject} has random weights{seeded}: its outputs and PSNR figures are meaningless; "
        "pass --weights FILE (or 'official') for a trained model"
    )


def warn(message: str, stream: TextIO | None = None) -> None:
    """Write ``warning: <message>`` as one line on stderr (or ``stream``)."""
    line = " ".join(str(message).split())
    print(f"warning: {line}", file=stream or sys.stderr, flush=True)


def warn_random_weights(subject: str, seed: int | None = None, stream: TextIO | None = None) -> None:
    """The random-weights notice, one line on stderr."""
    warn(random_weights_text(subject, seed), stream)
