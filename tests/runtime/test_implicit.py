"""The encoder/decoder (CiaoSR, contract C) path: ImplicitPredictor, sr-upscale and sr-bench on a pair."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rt_helpers import implicit_pair, make_dataset, run_without_torch
from srdeploy.runtime.backends.onnxruntime import OrtOptions
from srdeploy.runtime.predict import ImplicitPredictor, open_predictor

from srdeploy.errors import SrdeployError

pytest.importorskip("onnxruntime")
pytest.importorskip("srdeploy.implicit")


def test_pair_is_opened_and_decoded_in_chunks(tmp_path: Path) -> None:
    enc = implicit_pair(tmp_path)
    for given in (enc, tmp_path / "fake_ciao.decoder.onnx"):
        pred, art = open_predictor(given, options=OrtOptions(intra_op_threads=1), scale=2.5)
        assert isinstance(pred, ImplicitPredictor) and art.graph == "implicit"
    lr = np.random.default_rng(0).random((2, 3, 7, 9), dtype=np.float32)
    with pred:
        pred.chunk = 1000
        whole = pred.predict(lr)
        calls_whole = pred.timing.calls
        pred.chunk = 37
        chunked = pred.predict(lr)
        assert pred.timing.calls > calls_whole  # encoder once + many decoder chunks
    assert whole.shape == (2, 3, 18, 22)  # round(7 * 2.5) = 18 (half to even), round(9 * 2.5) = 22
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    # pixel centres sampled bilinearly from lr: the mean colour is preserved closely
    assert abs(float(whole.mean()) - float(lr.mean())) < 0.02


def test_missing_half_of_the_pair(tmp_path: Path) -> None:
    implicit_pair(tmp_path)
    (tmp_path / "fake_ciao.decoder.onnx").unlink()
    with pytest.raises(SrdeployError, match="needs both"):
        open_predictor(tmp_path / "fake_ciao.encoder.onnx")


def test_upscale_and_bench_pair_without_torch(tmp_path: Path, data_dir: Path) -> None:
    from PIL import Image

    enc = implicit_pair(tmp_path)
    src = tmp_path / "in.png"
    Image.open(data_dir / "baboon.png").convert("RGB").crop((0, 0, 20, 16)).save(src)
    code = "import sys; from srdeploy.cli.{0} import main; sys.exit(main(sys.argv[1:]))"
    r = run_without_torch(["-c", code.format("upscale"), "--onnx", str(enc), "--scale", "3", str(src), "-o",
                           str(tmp_path / "o")], tmp_path)
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "o" / "in.png").size == (60, 48)
    data = make_dataset(tmp_path / "data", data_dir, scale=4)
    r = run_without_torch(["-c", code.format("bench"), "--onnx", str(enc), "--data", str(data), "--no-progress",
                           "--threads", "1", "-o", str(tmp_path / "b")], tmp_path)
    assert r.returncode == 0, r.stderr
    e = json.loads((tmp_path / "b" / "results.json").read_text())["fake_ciao"]
    assert len(e["valid_psnr"]) == 2 and e["srdeploy"]["artifact"]["graph"] == "implicit"
    assert all(p > 15 for p in e["valid_psnr"])  # bilinear upscaling of a bicubic LR
