"""CiaoSR's cross-scale attention downsamples without ONNX Resize (models/ciaosr.downsample_bilinear).

Reference: ``F.interpolate(x, scale_factor=1/s, mode="bilinear")``, today's (Resize) form, in PyTorch
and, for the whole cross-scale attention, as an exported graph in ONNX Runtime. The TensorRT-RTX
encoder build it exists for is tests/export/test_rtx_build.py::test_rtx_builds_ciaosr_graphs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from srdeploy.models import ciaosr
from srdeploy.models.ciaosr import CrossScaleAttention, downsample_bilinear


@pytest.mark.parametrize("s", [2, 3, 4])
def test_downsample_equals_bilinear_interpolate(s: int) -> None:
    x = torch.randn(2, 5, 6 * s, 4 * s, generator=torch.Generator().manual_seed(s))
    ref = F.interpolate(x, scale_factor=1.0 / s, mode="bilinear")
    out = downsample_bilinear(x, s)
    assert out.shape == ref.shape
    assert float((out - ref).abs().max() / ref.abs().max()) <= 1e-6  # equal up to the last bit


def test_cross_scale_attention_graph_has_no_resize_and_equals_the_resize_form_in_onnxruntime(monkeypatch) -> None:
    from srdeploy.export.torch2onnx import onnx_from_torch

    from srdeploy.onnxlayer import session

    torch.manual_seed(0)
    m = CrossScaleAttention(16).eval()
    x = torch.randn(1, 16, 12, 14)
    feed = np.ascontiguousarray(torch.randn(1, 16, 15, 18).numpy())  # odd H: reflect-padded to 16
    dyn = {"lr": {2: ("H", 2), 3: ("W", 2)}}
    graphs = {"slices": onnx_from_torch(m, (x,), dynamic_axes=dyn).model}
    monkeypatch.setattr(ciaosr, "downsample_bilinear",
                        lambda t, s: F.interpolate(t, scale_factor=1.0 / s, mode="bilinear"))
    graphs["resize"] = onnx_from_torch(m, (x,), dynamic_axes=dyn).model
    assert not any(n.op_type == "Resize" for n in graphs["slices"].graph.node)
    assert any(n.op_type == "Resize" for n in graphs["resize"].graph.node)  # the reference is today's form
    outs = {k: session(g.SerializeToString()).run(None, {"lr": feed})[0] for k, g in graphs.items()}
    rel = float(np.abs(outs["slices"] - outs["resize"]).max() / np.abs(outs["resize"]).max())
    assert rel <= 1e-5, rel
