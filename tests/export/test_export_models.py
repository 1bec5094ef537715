"""Every registered model: export + ONNX Runtime validation, fp32 and fp16; fusion checks.

Parametrised over the registry, so models registered later are covered automatically. Each
model is exported once per session at a small size (``exports`` fixture); fp16 is derived from
the fp32 graph by the graph pass. Variants whose descriptor's ``test_tier`` is not "fast" run in
the slow tier.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from srdeploy.export.compare import compare, tolerance_for
from srdeploy.models import descriptor, list_models
from srdeploy.models._testing import seeded_input

from srdeploy.onnxlayer import session as ort_session

# the descriptor's test tier: "slow" and "heavy" models run in the slow tier here
HEAVY = {n for n in list_models() if descriptor(n).test_tier != "fast"}
META_KEYS = {
    "srdeploy.model", "srdeploy.scale", "srdeploy.descriptor", "srdeploy.hparams", "srdeploy.weights_sha256",
    "srdeploy.weights_license", "srdeploy.fusions", "srdeploy.precision", "srdeploy.io_dtype",
    "srdeploy.version", "srdeploy.graph", "srdeploy.plugins", "srdeploy.deviations", "srdeploy.weights_seed",
}


def _params(names: list[str]) -> list[object]:
    return [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in names]


MODELS = _params(list_models())
SINGLE_GRAPH = _params([n for n in list_models() if descriptor(n).scales is not None])
# A2N computes in a 0-255 range; with seeded random weights it is ill-conditioned: an fp32-vs-fp64
# rounding difference grows about 1.35x per A2B block (1.2e-6 relative after block 0, 1.3e-4 after
# block 15, 1.4e-3 at the x4 output; measured with forward hooks), so fp16's ~8000x larger
# rounding cannot stay within 40 dB unless most Conv MACs stay fp32. Its fp16 graph reaches ~31-35
# dB on seeded weights whatever the islands (measured); with the authors' x2 checkpoint the same
# pass gives 79.6 dB (that checkpoint has no licence file, so it is not bundled for CI).
ILL_CONDITIONED_FP16 = {"a2n", "a2n.m"}


def _fp16_params(names: list[str]) -> list[object]:
    out: list[object] = []
    for n in names:
        marks = [pytest.mark.slow] if n in HEAVY else []
        if n in ILL_CONDITIONED_FP16:
            marks.append(pytest.mark.xfail(strict=True, reason="seeded random A2N weights: fp16 < 40 dB (see above)"))
        out.append(pytest.param(n, marks=marks))
    return out


FP16 = _fp16_params([n for n in list_models() if descriptor(n).fp16])


def _fresh_input(name: str, batch: int = 1) -> np.ndarray:
    """An input the exporter's own validation did not use (another seed, another odd size)."""
    d = descriptor(name)
    s = max(d.min_size, 16) + 3
    return seeded_input((batch, 3, s, s + 4), 1234).numpy()


@pytest.mark.parametrize("name", SINGLE_GRAPH)
def test_fp32_export_matches_pytorch(exports, name: str) -> None:
    res = exports.get(name)
    assert res.validation.passed
    cases = [str(c) for c, _ in res.validation.results]
    assert any(c.startswith("2x") for c in cases) and any(int(c.split("x")[-1]) % 2 for c in cases)
    model = onnx.load(res.onnx_path)
    meta = {p.key: p.value for p in model.metadata_props}
    assert set(meta) >= META_KEYS and meta["srdeploy.model"] == name and meta["srdeploy.precision"] == "fp32"
    assert [i.name for i in model.graph.input] == ["lr"] and [o.name for o in model.graph.output] == ["sr"]
    # independent re-check on an unseen input, outside the exporter's own validation
    x = _fresh_input(name)
    out = ort_session(res.onnx_path.read_bytes()).run(None, {"lr": x})[0]
    ref_model = res.prepared.reference
    with torch.inference_mode():
        ref = ref_model(torch.from_numpy(x)).numpy()
        ref64 = copy.deepcopy(ref_model).double()(torch.from_numpy(x).double()).numpy()
    cmp = compare(out, ref, ref64)
    assert out.shape == (1, 3, res.prepared.scale * x.shape[2], res.prepared.scale * x.shape[3])
    assert not cmp.failures(tolerance_for("fp32", "random")), cmp


@pytest.mark.parametrize("name", FP16)
def test_fp16_graph_pass(exports, name: str) -> None:
    res = exports.get(name, fp16=True)
    assert res.validation.passed
    rep = res.manifest["fp16"]
    assert rep["fp16_mac_fraction"] >= 0.9
    model = onnx.load(res.onnx_path)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    conv_w = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    half_w = [t for t in model.graph.initializer if t.name in conv_w and t.data_type == TensorProto.FLOAT16]
    assert half_w, "no Conv runs on fp16 weights"
    islands = res.manifest["fp16"]["islands"]
    assert len(islands) == rep["num_islands"] and all(i["reason"] for i in islands)
    x = _fresh_input(name, batch=2)
    out = ort_session(res.onnx_path.read_bytes()).run(None, {"lr": x})[0]
    with torch.inference_mode():
        ref = res.prepared.reference(torch.from_numpy(x)).numpy()
    cmp = compare(out, ref)
    assert cmp.nonfinite == 0 and cmp.psnr_db >= 40.0, cmp


@pytest.mark.parametrize("name", MODELS)
def test_fusion_is_exact(exports, name: str) -> None:
    """Fused vs unfused in float64 (isolates the rewrite from fp32 rounding): <= 1e-5."""
    from srdeploy.export.torch2onnx import prepare

    p = prepare(name, exports.scale(name))
    if not p.fusions:
        assert not descriptor(name).needs_fusion, "descriptor says needs_fusion but nothing was fused"
        pytest.skip(f"{name} has no deploy-time fusion")
    x = torch.from_numpy(_fresh_input(name, batch=2)).double()
    with torch.inference_mode():
        a = copy.deepcopy(p.reference).double()(x)
        b = copy.deepcopy(p.module).double()(x)
    err = float((a - b).abs().max() / a.abs().max())
    assert err <= 1e-5, err


def _convs(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "Conv"]


@pytest.mark.parametrize("name", [n for n in list_models() if n.split(".")[0] == "a2n"])
def test_a2n_fused_graph_has_one_conv_fewer_per_block(exports, name: str) -> None:
    from srdeploy.export.torch2onnx import onnx_from_torch

    res = exports.get(name)
    fused = onnx.load(res.onnx_path)
    x = torch.from_numpy(_fresh_input(name, batch=2))  # an example batch of 1 would fix N
    dyn = {"lr": {0: ("N", 1), 2: ("H", 2), 3: ("W", 2)}}
    unfused = onnx_from_torch(res.prepared.reference, (x,), dynamic_axes=dyn, exporter=res.manifest["onnx"]["exporter"])
    blocks = [f for f in res.prepared.fusions if f.startswith("A2B@")]
    assert len(blocks) == 16
    assert len(_convs(unfused.model)) - len(_convs(fused)) == len(blocks)


@pytest.mark.parametrize("name", _params([n for n in list_models() if n.split(".")[0] == "esc"]))
def test_esc_graph_has_no_scatter_or_flip_and_a_constant_large_kernel(exports, name: str) -> None:
    res = exports.get(name)
    model = onnx.load(res.onnx_path)
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"ScatterND", "ScatterElements", "ReverseSequence"}
    inits = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:  # a flip exports as Slice with a negative step
        if n.op_type == "Slice" and len(n.input) > 4 and n.input[4] in inits:
            assert (numpy_helper.to_array(inits[n.input[4]]) > 0).all(), f"{n.name} slices backwards (flip)"
    k = int(descriptor(name).hparams.get("kernel_size", 13))
    large = [n for n in _convs(model) if n.input[1] in inits and tuple(inits[n.input[1]].dims[2:]) == (k, k)]
    assert large, f"no {k}x{k} convolution with a constant (initializer) kernel"
    for n in _convs(model):  # a convolution with a runtime weight must not be the large kernel
        if n.input[1] not in inits:
            ks = next((list(a.ints) for a in n.attribute if a.name == "kernel_shape"), None)
            assert ks != [k, k], f"{n.name}: the {k}x{k} kernel is computed at run time"


@pytest.mark.parametrize("name", _params([n for n in list_models() if n.split(".")[0] == "esc"]))
def test_esc_attention_scale_is_a_constant(exports, name: str) -> None:
    """The q.k^T scaling must be a constant, so ONNX Runtime folds it into the MatMul: computed
    from traced shapes it was a separate Mul over every score tensor (15% of esc.light on CPU)."""
    res = exports.get(name)
    model = onnx.load(res.onnx_path)
    consts = {t.name for t in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    matmul_out = {n.output[0] for n in model.graph.node if n.op_type == "MatMul"}
    scaled = [n for n in model.graph.node if n.op_type == "Mul" and set(n.input) & matmul_out]
    assert scaled, "no scaled attention scores found"
    for n in scaled:
        other = [i for i in n.input if i not in matmul_out]
        assert other and all(i in consts for i in other), f"{n.name}: scale {other} is computed at run time"


@pytest.mark.slow
def test_agdn_x2_fp16_real_weights_real_image(tmp_path, data_dir) -> None:
    """The issue's gate: AGDN x2 with the authors' weights on crops of a real image, >= 45 dB."""
    from srdeploy.export.api import export_model

    base = export_model("agdn", 2, tmp_path, weights=data_dir / "AGDN_x2.pth", validation_image=data_dir / "baboon.png")
    assert base.validation.passed and base.manifest["weights"]["sha256"]
    res = export_model("agdn", 2, tmp_path, fp16=True, reuse=base, validation_image=data_dir / "baboon.png")
    assert res.validation.tolerance.min_psnr_db == 45.0
    worst = min(c.psnr_db for _, c in res.validation.results)
    assert worst >= 45.0 and res.manifest["fp16"]["fp16_mac_fraction"] >= 0.9


@pytest.mark.parametrize("name", _params([n for n in list_models() if descriptor(n).scales is None]))
def test_two_graph_export_encoder_decoder(exports, name: str) -> None:
    """Arbitrary-scale models (contract C): encoder + decoder graphs, chunked pipeline validated."""
    res = exports.get(name)
    stem = res.stem
    assert [p.name for p in res.files] == [f"{stem}.encoder.onnx", f"{stem}.decoder.onnx", f"{stem}.json"]
    enc = onnx.load(res.outdir / f"{stem}.encoder.onnx")
    dec = onnx.load(res.outdir / f"{stem}.decoder.onnx")
    assert [o.name for o in enc.graph.output] == ["feat_k", "feat_v"]
    assert [i.name for i in dec.graph.input] == ["feat_k", "feat_v", "lr", "coord", "cell"]
    q_dim = dec.graph.input[3].type.tensor_type.shape.dim[1]
    assert not q_dim.HasField("dim_value"), "the query axis must be dynamic"
    roles = [{p.key: p.value for p in m.metadata_props}["srdeploy.graph"] for m in (enc, dec)]
    assert roles == ["encoder", "decoder"]
    cases = [c["input"] for c in res.manifest["validation"]["cases"]]
    assert res.validation.passed
    assert len(cases) >= 11  # 3 inputs x (feat_k, feat_v, decoder) + 2 whole-pipeline scales
    assert "trtexec --onnx=" in res.manifest["graphs"]["decoder"]["trtexec"]


@pytest.mark.slow
def test_plugins_flag_emits_plugin_nodes(tmp_path) -> None:
    """--plugins: window attention becomes SRWindowAttention nodes, validated through the plugins'
    ONNX Runtime reference session; the trtexec command loads the plugin library."""
    from srdeploy.export.api import export_model

    res = export_model("esc.light", 2, tmp_path, plugins=True)
    assert res.stem == "esc-light_x2_plugins" and res.validation.passed
    model = onnx.load(res.onnx_path)
    plugin_nodes = [n for n in model.graph.node if n.domain == "trt.plugins"]
    assert plugin_nodes and {n.op_type for n in plugin_nodes} == {"SRWindowAttention"}
    assert res.manifest["plugins"] == ["SRWindowAttention"]
    assert "--dynamicPlugins=" in res.manifest["tensorrt"]["trtexec"]
