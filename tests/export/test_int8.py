"""INT8 Q/DQ pass: AGDN x2 with its released weights (gate + INT8 MAC share), and fast error paths.

The real-weight test calibrates on crops of tests/data/baboon.png and gates on crops of
scikit-image's bundled ``astronaut.png`` (a dev dependency; read in place, not copied): the
held-out image is a different photograph, never calibrated on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from srdeploy.cli.export import main

GATE_DB = 0.1
MIN_INT8_MAC_SHARE = 0.5


def _calib_dir(root: Path, data_dir: Path) -> Path:
    import skimage.data

    d = root / "calib"
    d.mkdir(parents=True, exist_ok=True)
    # sorted by name: a_ is calibrated on, b_ (the last quarter, at least one image) is held out
    (d / "a_baboon.png").symlink_to(data_dir / "baboon.png")
    (d / "b_astronaut.png").symlink_to(Path(os.path.dirname(skimage.data.__file__)) / "astronaut.png")
    return d


@pytest.fixture(scope="module")
def agdn_int8(tmp_path_factory: pytest.TempPathFactory, data_dir: Path):
    from srdeploy.export.api import export_model

    root = tmp_path_factory.mktemp("int8")
    calib = _calib_dir(root, data_dir)
    res = export_model(
        "agdn", 2, root / "out", weights=data_dir / "AGDN_x2.pth", int8=True, calib=calib, calib_crop=32
    )
    return res, calib


def test_agdn_real_weights_pass_gate_with_int8_share(agdn_int8) -> None:
    from srdeploy.export.calibration import load_calibration
    from srdeploy.export.int8 import run_batched, y_psnr

    res, calib = agdn_int8
    m = res.manifest
    q = m["int8"]
    assert res.stem == "agdn_x2_int8" and m["precision"] == "int8"
    assert q["quality_meaningful"] is True and q["calibration_method"] == "percentile"
    assert q["calibration_images"] == ["a_baboon.png"] and q["heldout_images"] == ["b_astronaut.png"]
    assert q["int8_mac_fraction"] >= MIN_INT8_MAC_SHARE
    assert all(k["reason"].startswith("sensitivity:") for k in q["kept_out_of_int8"])
    # Independent check of the gate: the written graph in ONNX Runtime against the PyTorch model
    # (the unfused reference) on the same held-out crops, scored against the HR crops.
    import torch

    held = load_calibration(calib, 2, crop=32).heldout
    lr = held.batch()
    with torch.inference_mode():
        ref = res.prepared.reference(torch.from_numpy(lr)).numpy()
    got = run_batched(res.onnx_path.read_bytes(), lr)
    p_ref, p_int8 = y_psnr(list(ref), held), y_psnr(list(got), held)
    assert p_int8 >= p_ref - GATE_DB - 0.01, (p_int8, p_ref)  # 0.01 dB: ONNX fp32 vs PyTorch fp32
    assert abs(p_int8 - q["gate"]["int8_y_psnr_db"]) < 1e-3


def test_agdn_int8_graph_is_explicit_qdq_for_tensorrt(agdn_int8) -> None:
    res, _ = agdn_int8
    g = onnx.load(str(res.onnx_path)).graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    dqs = [n for n in g.node if n.op_type == "DequantizeLinear"]
    assert dqs and any(n.op_type == "QuantizeLinear" for n in g.node)
    weight_dqs = 0
    for dq in dqs:
        # Q/DQ only in front of the INT8 ops (TensorRT fuses DQ -> Conv), never after every op
        assert {c.op_type for c in consumers[dq.output[0]]} <= {"Conv", "ConvTranspose", "MatMul", "Gemm"}
        if dq.input[0] in inits:  # weight: INT8 initializer, per output channel, symmetric
            weight_dqs += 1
            assert inits[dq.input[0]].data_type == onnx.TensorProto.INT8
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            assert list(inits[dq.input[1]].dims) == [inits[dq.input[0]].dims[axis]]  # one scale per channel
            assert not np.any(onnx.numpy_helper.to_array(inits[dq.input[2]]))
    assert weight_dqs >= 100
    # the rest of the graph is the fp16 pass's: fp16 initializers exist, I/O stays fp32
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in g.initializer)
    assert g.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    written = json.loads(res.manifest_path.read_text())
    assert written["int8"]["gate"]["passed"] and written["int8"]["fp16"]["fp16_mac_fraction"] > 0.9


@pytest.mark.usefixtures("tiny_model")
def test_int8_without_calib_is_one_line(tmp_path: Path, tiny_model: str, capsys) -> None:
    assert main(["--model", tiny_model, "--int8", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --int8 needs calibration images: pass --calib DIR") and "\n" not in err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


@pytest.mark.usefixtures("tiny_model")
def test_int8_calib_dir_with_one_image_is_one_line(tmp_path: Path, tiny_model: str, data_dir: Path, capsys) -> None:
    d = tmp_path / "one"
    d.mkdir()
    (d / "x.png").symlink_to(data_dir / "baboon.png")
    assert main(["--model", tiny_model, "--int8", "--calib", str(d), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "has 1 image(s); give at least 2" in err and "\n" not in err
    assert not (tmp_path / "o").exists()  # the folder the failed export created is removed too


@pytest.mark.usefixtures("tiny_model")
def test_int8_seeded_weights_labelled_meaningless(tmp_path: Path, tiny_model: str, data_dir: Path, capsys) -> None:
    calib = _calib_dir(tmp_path, data_dir)
    # seeded random weights: the quality figures mean nothing, so the gate is relaxed here
    rc = main(["--model", tiny_model, "--int8", "--calib", str(calib), "--int8-gate", "3", "-o", str(tmp_path / "o")])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "seeded random weights: PSNR figures meaningless" in cap.err
    # stdout is the file list only (the quantizer's own prints go to stderr)
    assert [Path(x).suffix for x in cap.out.split()] == [".onnx", ".json"]
    m = json.loads((tmp_path / "o" / f"{tiny_model}_x3_int8.json").read_text())
    assert m["int8"]["quality_meaningful"] is False and "meaningless" in m["int8"]["quality_note"]
    assert m["int8"]["gate"]["max_drop_db"] == 3.0


def _nearest_x2_graph() -> onnx.ModelProto:
    """A real (not random) x2 upscaler: a 1x1 Conv copying each channel 4x + DepthToSpace (nearest)."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((12, 3, 1, 1), np.float32)
    for c in range(3):
        w[c * 4 : c * 4 + 4, c] = 1.0
    g = helper.make_graph(
        [
            helper.make_node("Conv", ["lr", "w"], ["t"], name="copy"),
            helper.make_node("DepthToSpace", ["t"], ["sr"], blocksize=2, mode="CRD", name="d2s"),
        ],
        "nearest_x2",
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["N", 3, "H2", "W2"])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def test_gate_miss_names_best_result(tmp_path: Path, data_dir: Path) -> None:
    from PIL import Image
    from srdeploy.export.calibration import load_calibration
    from srdeploy.export.int8 import Int8GateError, quantize_int8

    calib = _calib_dir(tmp_path, data_dir)
    (calib / "a_baboon.png").unlink()
    Image.new("RGB", (128, 128)).save(calib / "a_black.png")  # ranges from a black image clip real inputs
    cset = load_calibration(calib, 2, crop=16, calib_crops=4, heldout_crops=2)
    with pytest.raises(Int8GateError, match=r"misses the 0.1 dB gate.*best held-out Y-PSNR .* 1/1 layers kept out"):
        quantize_int8(_nearest_x2_graph(), cset, progress=False)

