"""The ordered list of graph passes ``export_model`` runs between ONNX-from-torch and validation.

A graph pass is one module that defines an object with

* ``name``: its manifest section (``manifest[name]``; ``None`` there when the pass did not run),
* ``enabled(ctx) -> bool``: whether the export config asks for it,
* ``run(graph, ctx) -> (graph, section, problems)``: the rewritten graph (a new proto: the input
  is the fp32 graph other passes and ``reuse`` still read), its manifest section (what it did and
  what it measured) and the problems validation must report (an empty list when none),

and one registration line below. Passes run in list order, each on the previous one's output; the
native attention pass is first (it rewrites fp32 ops), then fp16, then INT8. See docs/where-to-add.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import onnx

from . import fp16, int8, native_attention
from .compare import Tolerance


@dataclass(frozen=True)
class PassContext:
    """What a pass may read: the export config, a calibration input and the PyTorch reference."""

    config: Any  # srdeploy.export.config.ExportConfig
    descriptor: Any  # srdeploy.models.Descriptor
    calibration: np.ndarray  # one validation input (N, 3, H, W) float32
    reference: Callable[[np.ndarray], np.ndarray]  # fp32 PyTorch
    tolerance: Tolerance
    weights_kind: str  # "real" | "random" (quality figures of random weights are labelled meaningless)
    psnr: Callable[[np.ndarray, np.ndarray], float]  # psnr(out, ref) in dB, the validation's rule


class GraphPass(Protocol):
    name: str

    def enabled(self, ctx: PassContext) -> bool: ...

    def run(self, graph: onnx.ModelProto, ctx: PassContext) -> tuple[onnx.ModelProto, dict[str, Any], list[str]]: ...


PASSES: list[GraphPass] = []


def register(p: GraphPass) -> GraphPass:
    if any(q.name == p.name for q in PASSES):
        raise ValueError(f"graph pass {p.name!r} is registered twice")
    PASSES.append(p)
    return p


# one line per pass, in the order they run
register(native_attention.PASS)  # --attention native: before any precision pass
register(fp16.PASS)
register(int8.PASS)


def run_passes(
    graph: onnx.ModelProto, ctx: PassContext
) -> tuple[onnx.ModelProto, dict[str, dict[str, Any] | None], list[str]]:
    """Run every enabled pass in order; return the graph, ``{pass name: section or None}`` and problems."""
    sections: dict[str, dict[str, Any] | None] = {}
    problems: list[str] = []
    for p in PASSES:
        if not p.enabled(ctx):
            sections[p.name] = None
            continue
        graph, section, found = p.run(graph, ctx)
        sections[p.name] = section
        problems.extend(found)
    return graph, sections, problems
