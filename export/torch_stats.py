"""Torch-side model statistics in the NTIRE conventions (fvcore MACs, Conv-hook activations).

They count a PyTorch module, so they live on the torch side (the runtime counts the exported
ONNX graph instead, with :func:`srdeploy.runtime.graphstats.graph_stats`). ``sr-bench --backend
torch --model NAME`` and the baseline tests use them.
"""

from __future__ import annotations

from typing import Any


def fvcore_gmacs(model: Any, input_hw: tuple[int, int] = (256, 256)) -> float:
    """The NTIRE convention: fvcore ``FlopCountAnalysis`` on ``torch.rand(1, 3, H, W)``, in G.

    Needs torch and fvcore (imported lazily); fvcore counts one multiply-add as one "flop".
    """
    from srdeploy.errors import require

    torch = require("torch", "torch")
    fv = require("fvcore.nn", "dev")
    x = torch.rand(1, 3, *input_hw)  # type: ignore[attr-defined]
    analysis = fv.FlopCountAnalysis(model, x)  # type: ignore[attr-defined]
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return float(analysis.total()) / 1e9


def torch_activations(model: Any, input_hw: tuple[int, int] = (256, 256)) -> tuple[int, int]:
    """The NTIRE hook convention: (elements of all ``nn.Conv2d`` outputs, number of Conv2d calls).

    Functional ``F.conv2d`` calls are invisible to these hooks, as in the official harness.
    """
    from srdeploy.errors import require

    torch = require("torch", "torch")
    counts = [0, 0]

    def hook(_m: Any, _i: Any, out: Any) -> None:
        counts[0] += int(out.numel())
        counts[1] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d)]  # type: ignore[attr-defined]
    try:
        with torch.no_grad():  # type: ignore[attr-defined]
            model(torch.rand(1, 3, *input_hw))  # type: ignore[attr-defined]
    finally:
        for h in handles:
            h.remove()
    return counts[0], counts[1]
