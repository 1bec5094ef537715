"""The runner protocol on ONNX Runtime (CPU); TensorRT and CUDA paths are skipped with a reason."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from rt_helpers import save_tiny
from srdeploy.runtime.backends import backends, make_runner
from srdeploy.runtime.backends.onnxruntime import OrtOptions, OrtRunner
from srdeploy.runtime.backends.tensorrt import TrtRunner
from srdeploy.runtime.predict import SRPredictor, open_predictor

from srdeploy.errors import BackendError, MissingDependencyError, ShapeError, SrdeployError

pytest.importorskip("onnxruntime")


def test_protocol_metadata_infer_and_timing(tmp_path) -> None:
    path = save_tiny(tmp_path, 2)
    with make_runner("onnxruntime", str(path), OrtOptions(intra_op_threads=1)) as r:
        assert [m.name for m in r.inputs] == ["lr"] and r.inputs[0].dtype == np.float32
        assert r.inputs[0].shape == (None, 3, None, None)
        assert r.metadata["srdeploy.scale"] == "2"
        x = np.random.default_rng(0).random((2, 3, 7, 9), dtype=np.float32)
        out = r.infer({"lr": x})
        assert out["sr"].shape == (2, 3, 14, 18)
        t = r.last_timing
        assert t is not None and 0 < t.device_ms <= t.e2e_ms and "host" in t.clock
        # batch 2 equals two batch-1 runs
        one = r.infer({"lr": x[1:]})["sr"]
        np.testing.assert_allclose(out["sr"][1:], one, rtol=0, atol=1e-6)
        mem = r.peak_memory()
        assert mem.peak_bytes >= 0 and "RSS" in mem.note
        assert r.describe()["backend"] == "onnxruntime"


def test_validation_errors(tmp_path) -> None:
    path = save_tiny(tmp_path, 2, static=(8, 8))
    with OrtRunner(path, OrtOptions(intra_op_threads=1)) as r:
        good = np.zeros((1, 3, 8, 8), np.float32)
        with pytest.raises(ShapeError, match="expects"):
            r.infer({"x": good})
        with pytest.raises(ShapeError, match="float64"):
            r.infer({"lr": good.astype(np.float64)})
        with pytest.raises(ShapeError, match="rank"):
            r.infer({"lr": good[0]})
        with pytest.raises(ShapeError, match="static"):
            r.infer({"lr": np.zeros((1, 3, 8, 9), np.float32)})
    with pytest.raises(BackendError, match="outside its `with` block"):
        r.infer({"lr": good})


def test_corrupt_and_missing_models(tmp_path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file at all" * 10)
    with pytest.raises(BackendError, match="not a valid ONNX model"), OrtRunner(bad):
        pass
    with pytest.raises(SrdeployError, match="does not exist"), OrtRunner(tmp_path / "missing.onnx"):
        pass
    with pytest.raises(SrdeployError, match="unknown backend"):
        make_runner("openvino", str(bad))
    with pytest.raises(SrdeployError, match="unknown ONNX Runtime device"):
        OrtRunner(bad, OrtOptions(device="npu"))


def test_gpu_provider_missing_gives_install_hint(tmp_path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here; the hint path cannot be exercised")
    runner = OrtRunner(save_tiny(tmp_path), OrtOptions("cuda"))
    with pytest.raises(MissingDependencyError, match="srdeploy\\[gpu\\]"), runner:
        pass


def test_tensorrt_engine_errors(tmp_path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\x00" * 64)
    if not backends()["tensorrt"].is_available() or importlib.util.find_spec("cuda") is None:
        # no TensorRT bindings or no cuda-python: the runner must say what to install
        with pytest.raises(MissingDependencyError, match="install"), TrtRunner(engine):
            pass
        return
    pytest.skip("TensorRT and cuda-python are installed: the corrupt-engine path needs a CUDA GPU (tensorrt tier)")


def test_missing_engine_file(tmp_path) -> None:
    with pytest.raises(SrdeployError, match="does not exist"):
        open_predictor(tmp_path / "none.engine")


def test_predictor_and_artifact(tmp_path) -> None:
    path = save_tiny(tmp_path, 3)
    pred, art = open_predictor(path, options=OrtOptions(intra_op_threads=1))
    assert isinstance(pred, SRPredictor) and art.scale == 3 and art.random_weights and art.graph == "sr"
    with pred:
        x = np.random.default_rng(1).random((1, 3, 10, 12), dtype=np.float32)
        y = pred.predict(x)
        assert y.shape == (1, 3, 30, 36) and pred.timing.calls == 1
        from srdeploy.tiling import Tiling

        yt = pred.predict(x, Tiling(6, 4))  # receptive radius 2 <= overlap // 2: exact
        assert pred.timing.calls > 1
        np.testing.assert_allclose(yt, y, atol=1e-5)
    with pytest.raises(SrdeployError, match="x3 model"):
        open_predictor(path, scale=2)
    with pytest.raises(SrdeployError, match="engine"):
        open_predictor(path, backend="tensorrt")


def test_registry_lists_backends() -> None:
    reg = backends()
    assert set(reg) == {"onnxruntime", "tensorrt", "torch"}
    assert reg["onnxruntime"].is_available()
    assert {name: b.accepts for name, b in reg.items()} == {
        "onnxruntime": ("onnx",), "tensorrt": ("engine",), "torch": ("module",)}


def test_engine_artifact_reads_the_onnx_beside_it(tmp_path) -> None:
    from srdeploy.runtime.artifact import open_artifact

    save_tiny(tmp_path, 3, stem="m_x3")
    (tmp_path / "m_x3.engine").write_bytes(b"\x00")
    art = open_artifact(tmp_path / "m_x3.engine")
    assert set(art.files) == {"engine", "onnx"} and art.scale == 3
