"""The TensorRT-RTX flavour against the real library, on a one-Conv graph (builds in < 1 s).

Covers what the model builds (test_rtx_build.py) do not: cache key fields and hits, target compute
capabilities, the validity check before loading (another version, corrupt, no usable GPU), the
one-line errors of ``sr-bench --engine``, and the out-of-memory message.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from srdeploy.export.engines import EngineFromOnnx, EngineOptions, get_flavour, load_engine
from srdeploy.export.engines.base import EngineMemoryError, build_serialized_engine
from srdeploy.export.manifest import BatchedProfile
from srdeploy.models.registry import ShapeProfile

from srdeploy.errors import BackendError, ExportError
from srdeploy.sizes import Size

trt = pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX bindings not installed (srdeploy[rtx])")
RTX = get_flavour("rtx")
PROFILE = BatchedProfile.from_shapes(ShapeProfile(Size(16, 16), Size(32, 32), Size(64, 64)))


@pytest.fixture
def conv_onnx(tmp_path: Path) -> Path:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["lr", "w"], ["sr"], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["N", 8, "H", "W"])], [w],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = tmp_path / "conv.onnx"
    onnx.save(model, path)
    return path


def _build(onnx_path: Path, cache: Path, dest: Path, **kw: object) -> object:
    opts = EngineOptions((PROFILE,), **kw)  # type: ignore[arg-type]
    return EngineFromOnnx(onnx_path, opts, cache_dir=cache, api=trt, flavour=RTX, log=lambda m: None)(dest)


@pytest.mark.tensorrt
def test_rtx_build_cache_key_and_hit(conv_onnx: Path, tmp_path: Path) -> None:
    r1 = _build(conv_onnx, tmp_path / "c", tmp_path / "a.engine")
    assert not r1.cached and r1.memory["activation_mib"] > 0  # type: ignore[attr-defined]
    f = r1.fields  # type: ignore[attr-defined]
    assert f["flavour"] == "rtx" and f["tensorrt_version"] == trt.__version__
    assert f["gpu_name"] is None and f["target_compute_capabilities"] == ["library default"]
    assert not (tmp_path / "a.engine.timing.cache").exists()  # a timing cache would prevent the CPU-only build
    r2 = _build(conv_onnx, tmp_path / "c", tmp_path / "b.engine")
    assert r2.cached and r2.key == r1.key  # type: ignore[attr-defined]
    assert (tmp_path / "b.engine").read_bytes() == (tmp_path / "a.engine").read_bytes()
    r3 = _build(conv_onnx, tmp_path / "c", tmp_path / "t.engine", compute_capabilities=("7.5",))
    assert not r3.cached and r3.key != r1.key  # type: ignore[attr-defined]
    assert r3.fields["target_compute_capabilities"] == ["7.5"]  # type: ignore[attr-defined]
    assert (tmp_path / "t.engine").read_bytes() != (tmp_path / "a.engine").read_bytes()


@pytest.mark.tensorrt
def test_unknown_compute_capability_is_one_line(conv_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"cannot target compute capability 9\.0; choose from 7\.5, 8\.0"):
        _build(conv_onnx, tmp_path / "c", tmp_path / "x.engine", compute_capabilities=("9.0",))
    assert not (tmp_path / "x.engine").exists()


@pytest.mark.tensorrt
def test_engine_validity_is_checked_before_loading(conv_onnx: Path, tmp_path: Path) -> None:
    r = _build(conv_onnx, tmp_path / "c", tmp_path / "a.engine")
    path = r.engine_path  # type: ignore[attr-defined]
    validity, _ = trt.Runtime(trt.Logger(trt.Logger.ERROR)).get_engine_validity(path.read_bytes())
    if validity == trt.EngineValidity.INVALID:  # no RTX-class GPU here: one line, before deserialising
        with pytest.raises(BackendError, match=r"not valid for this TensorRT-RTX .* sr-export --engine rtx"):
            load_engine(path, api=trt)
    else:  # an RTX GPU: the engine loads
        assert load_engine(path, api=trt) is not None
    side = json.loads(r.sidecar_path.read_text())  # type: ignore[attr-defined]
    side["fields"]["tensorrt_version"] = "1.6.0.0"
    r.sidecar_path.write_text(json.dumps(side))  # type: ignore[attr-defined]
    with pytest.raises(BackendError, match=r"built with TensorRT-RTX 1\.6\.0\.0, this is 1\.7.*--engine rtx"):
        load_engine(path, api=trt)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(BackendError, match="corrupt"):
        load_engine(path, api=trt)


@pytest.mark.tensorrt
def test_sr_bench_on_a_foreign_engine_is_one_line(conv_onnx: Path, tmp_path: Path, capsys) -> None:
    from srdeploy.cli.bench import main

    r = _build(conv_onnx, tmp_path / "c", tmp_path / "a.engine")
    side = json.loads(r.sidecar_path.read_text())  # type: ignore[attr-defined]
    side["fields"]["tensorrt_version"] = "1.6.0.0"
    r.sidecar_path.write_text(json.dumps(side))  # type: ignore[attr-defined]
    out = tmp_path / "bench"
    code = main(["--engine", str(r.engine_path), "--scale", "2", "--synthetic", "32x32", "-o", str(out)])  # type: ignore[attr-defined]
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and err and err[-1].startswith("error: ") and "sr-export --engine rtx" in err[-1], err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.tensorrt
def test_out_of_memory_is_one_line_with_workspace_and_profile(tmp_path: Path) -> None:
    """Attention-like scores (N, 3, 4096, 4096) fp32 (3 GiB at N=16) cannot fit a 1 MiB workspace."""
    lr = helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["N", 3, "H", "W"])
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["lr"], ["lt"], perm=[0, 1, 3, 2]),
         helper.make_node("MatMul", ["lr", "lt"], ["m"]), helper.make_node("Softmax", ["m"], ["sm"], axis=-1),
         helper.make_node("MatMul", ["sm", "lr"], ["sr"])],
        "g", [lr], [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["N", 3, "H", "W"])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    prof = BatchedProfile((1, Size(4096, 8)), (4, Size(4096, 8)), (16, Size(4096, 8)))
    opts = EngineOptions((prof,), workspace_bytes=1 << 20)
    try:
        build_serialized_engine(model.SerializeToString(), opts, api=trt, flavour=RTX, log=lambda m: None)
    except EngineMemoryError as exc:
        msg = str(exc)
        assert "\n" not in msg and "workspace 1 MiB" in msg and "max 16x3x4096x8" in msg, msg
        assert exc.requested_bytes is None or exc.requested_bytes > 1 << 20
    else:
        pytest.skip("TensorRT-RTX fitted this graph in 1 MiB (it tiles the MatMul); no OOM to check here")


def _has_cuda_gpu() -> bool:
    from srdeploy.memplan import device_memory

    return device_memory(0) is not None


@pytest.mark.tensorrt
def test_weight_stripped_engine(conv_onnx: Path, tmp_path: Path) -> None:
    """``sr-export --strip-weights`` (STRIP_PLAN). Without a GPU TensorRT-RTX 1.7's build of it fails in
    Myelin (CUDA needed): that is one line saying so, with nothing written. With a GPU the plan must
    be smaller than the full one and its sidecar must say it is stripped (the runner refits it)."""
    full = _build(conv_onnx, tmp_path / "c", tmp_path / "full.engine")
    if not _has_cuda_gpu():
        with pytest.raises(ExportError, match=r"cannot build a weight-stripped engine without a GPU.*--strip-weights"):
            _build(conv_onnx, tmp_path / "c", tmp_path / "strip.engine", strip_weights=True)
        assert not (tmp_path / "strip.engine").exists() and not (tmp_path / "strip.engine.json").exists()
        return
    strip = _build(conv_onnx, tmp_path / "c", tmp_path / "strip.engine", strip_weights=True)
    assert strip.key != full.key  # type: ignore[attr-defined]
    assert (tmp_path / "strip.engine").stat().st_size < (tmp_path / "full.engine").stat().st_size
    from srdeploy.runtime.engine_check import weight_stripped

    assert weight_stripped(json.loads(strip.sidecar_path.read_text()))  # type: ignore[attr-defined]


def test_strip_weights_needs_the_rtx_flavour() -> None:
    from srdeploy.export.engines.export_step import resolve_engine

    with pytest.raises(ExportError, match="--strip-weights needs --engine rtx"):
        resolve_engine(False, strip_weights=True)
    with pytest.raises(ExportError, match="--strip-weights is done for TensorRT-RTX engines here"):
        resolve_engine("tensorrt", trt_api=object(), strip_weights=True)  # type: ignore[arg-type]


@pytest.mark.tensorrt
def test_a_failed_engine_build_leaves_no_new_files(tiny_model: str, tmp_path: Path) -> None:
    """The .onnx/.json an export just created are removed when its engine then fails to build (here:
    --strip-weights without a GPU); files that were there before the command are kept."""
    if _has_cuda_gpu():
        pytest.skip("a GPU is present: the weight-stripped build succeeds, so it cannot be the failure here")
    from srdeploy.export.api import export_model

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="cannot build a weight-stripped engine"):
        export_model(tiny_model, 2, out, engine="rtx", strip_weights=True, run_validation=False)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
