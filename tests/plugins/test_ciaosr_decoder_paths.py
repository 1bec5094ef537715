"""``--model ciaosr --plugins``: the decoder graph holds the CiaoSRLocalEnsemble node on every
exporter path (issue 12). The decoder used to go through ``torch.export`` (dynamo), where
``torch.onnx.is_in_onnx_export()`` is false, and came out with the plain reference ops while the
manifest claimed a plugin. Each path is exported here the way ``export_two_graphs`` exports the
decoder (same inputs, dynamic axes and exporter selection), and the node is looked for in the graph.

Cost: one CiaoSR (EDSR) build and one decoder export per exporter (~10-30 s each on 2 cores).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

import torch
from srdeploy.export.implicit_export import DEC_IN, DYNAMO_FIRST
from srdeploy.export.torch2onnx import onnx_from_torch, prepare
from srdeploy.plugins import LOCAL_ENSEMBLE, apply_plugins
from srdeploy.plugins.registry import plugin_nodes

from srdeploy import onnxlayer


@pytest.fixture(scope="module")
def decoder_case() -> tuple[Any, tuple[Any, ...], dict[str, np.ndarray]]:
    from srdeploy.models._seeding import seeded_input

    from srdeploy.implicit import make_cell, make_coord

    prepared = prepare("ciaosr", 2)
    assert apply_plugins(prepared.module) == [LOCAL_ENSEMBLE]
    dec = prepared.module.decoder_module().eval()
    x = seeded_input((2, 3, 6, 6), 0)
    with torch.inference_mode():
        fk, fv = prepared.module.encoder_module().eval()(x)
    q = 23
    coord = torch.from_numpy(make_coord(12, 12)[:q]).unsqueeze(0).expand(2, q, 2).contiguous()
    cell = torch.from_numpy(make_cell(12, 12, q)).unsqueeze(0).expand(2, q, 2).contiguous()
    args = (fk, fv, x, coord, cell)
    with torch.inference_mode():
        want = dec(*args).numpy()
    return dec, args, {"want": want}


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_decoder_holds_the_plugin_node_on_every_exporter_path(decoder_case: Any, exporter: str) -> None:
    dec, args, ref = decoder_case
    spatial = {0: ("N", 1), 2: ("H", 2), 3: ("W", 2)}
    exported = onnx_from_torch(
        dec, args, input_names=DEC_IN, output_names=("rgb",),
        dynamic_axes={"feat_k": spatial, "feat_v": spatial, "lr": spatial,
                      "coord": {0: ("N", 1), 1: ("Q", 1)}, "cell": {0: ("N", 1), 1: ("Q", 1)}},
        opset=18, exporter=exporter, auto_order=DYNAMO_FIRST,
    )  # fmt: skip
    assert exported.exporter == exporter, exported.notes  # the path under test, not a fallback
    assert [n.op_type for n in plugin_nodes(exported.model)] == [LOCAL_ENSEMBLE]
    assert onnxlayer.custom_ops(exported.model) == [LOCAL_ENSEMBLE]
    # and it computes the decoder (reference PyOp in ONNX Runtime vs PyTorch)
    feeds = {name: a.numpy() for name, a in zip(DEC_IN, args, strict=True)}
    got = onnxlayer.session(exported.model).run(None, feeds)[0]
    np.testing.assert_allclose(got, ref["want"], rtol=1e-4, atol=1e-5)
