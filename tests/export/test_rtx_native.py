"""``--attention native``: ONNX ``Attention`` (opset 23) equals the portable graph, and fuses in TensorRT-RTX.

One native export of esc.light per session (fp32, fp16 derived from it); the portable graph is the
suite's shared export of the same model, scale and seeded weights.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from srdeploy.models._testing import seeded_input

from srdeploy.onnxlayer import session as ort_session

MODEL = "esc.light"


@pytest.fixture(scope="module")
def native(exports, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from srdeploy.export.api import export_model

    root = tmp_path_factory.mktemp("native")
    scale = exports.scale(MODEL)
    # fp32 without the exporter's validation: test_native_equals_portable_in_onnx_runtime below is the
    # check, against the portable graph; the fp16 export keeps its gate (asserted below)
    fp32 = export_model(MODEL, scale, root / "fp32", attention="native", run_validation=False)
    fp16 = export_model(MODEL, scale, root / "fp16", attention="native", fp16=True, reuse=fp32)
    return {"fp32": fp32, "fp16": fp16, "portable": exports.get(MODEL)}


def test_native_graph_has_one_attention_node_per_layer(native: dict[str, Any]) -> None:
    from srdeploy.export.torch2onnx import prepare
    from srdeploy.models.attention import window_attention

    for key in ("fp32", "fp16"):
        model = onnx.load(native[key].onnx_path)
        ops = Counter(n.op_type for n in model.graph.node)
        layers = sum(1 for m in prepare(MODEL, 2, None, None, 0).module.modules()
                     if getattr(m, "core", None) is window_attention)
        assert ops["Attention"] == layers > 0 and ops["Softmax"] == 0, ops
        assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 23
        assert not any(n.domain == "srdeploy.native" for n in model.graph.node)
        m = native[key].manifest["attention"]
        assert m["form"] == "native" and m["attention_nodes"] == layers and "not TensorRT 10.3" in m["builds_on"]
    assert native["portable"].manifest["attention"] == {"form": "portable"}


def test_native_equals_portable_in_onnx_runtime(native: dict[str, Any]) -> None:
    """fp32 within 1e-5 relative (to the output's peak) on a size the export did not validate."""
    x = seeded_input((2, 3, 45, 70), 99).numpy()  # 2x3 windows of 32 after padding
    outs = {k: ort_session(native[k].onnx_path.read_bytes()).run(None, {"lr": x})[0] for k in ("fp32", "portable")}
    err = np.abs(outs["fp32"] - outs["portable"]).max() / np.abs(outs["portable"]).max()
    assert err < 1e-5, err
    # fp16 went through the exporter's fp16 gate (PSNR vs PyTorch fp32), as every fp16 export does
    assert native["fp16"].validation.passed and native["fp16"].manifest["fp16"]["fp16_mac_fraction"] >= 0.9


@pytest.mark.tensorrt
def test_native_fp16_builds_fused_in_rtx(native: dict[str, Any], tmp_path: Path) -> None:
    trt = pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX bindings not installed")
    from rtx_helpers import rtx_network_types
    from srdeploy.export.engines import get_flavour
    from srdeploy.export.engines.export_step import EngineRequest, build_engine
    from srdeploy.export.manifest import BatchedProfile
    from srdeploy.models import descriptor
    from srdeploy.models.registry import ShapeProfile

    from srdeploy.sizes import Size

    res = native["fp16"]
    nodes = native["fp16"].manifest["attention"]["attention_nodes"]
    types = rtx_network_types(trt, res.onnx_path.read_bytes())
    assert types["ATTENTION_INPUT"] == types["ATTENTION_OUTPUT"] == nodes, types  # one fused attention per layer
    local = tmp_path / res.onnx_path.name
    local.write_bytes(res.onnx_path.read_bytes())
    man = dict(res.manifest)
    # fp16 layers are not marked decomposable: this build only succeeds with the fused kernel. A small
    # profile (min, opt = max = 96x96: 9 windows) for CI time; the descriptor profile built in 14-29 s
    # by hand (docs/export.md), and the layer count above does not depend on the profile.
    p = descriptor(MODEL).trt_profile
    prof = BatchedProfile.from_shapes(ShapeProfile(p.min, Size(96, 96), Size(96, 96)))
    out = build_engine(EngineRequest(get_flavour("rtx"), trt), local, tmp_path / "m.json", man, prof,
                       workspace_mib=4096, opt_level=3, cache_dir=tmp_path / "cache")
    assert out.engine_path.stat().st_size > 100_000 and man["engine"]["workspace_source"] == "default"
    print(f"native fp16 {MODEL}: {man['engine']['build_seconds']} s, {man['engine']['builder_memory']}")
