"""``sr-export --triton-repo``: a Triton model repository whose config.pbtxt parses against Triton's schema.

The schema is Triton's own ModelConfig protobuf as shipped by tritonclient; no Triton server runs
here, so loading the repository in ``tritonserver`` is not tested.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from srdeploy.cli.export import main
from srdeploy.errors import SrdeployError

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient is not installed (srdeploy[triton])")
from google.protobuf import text_format
from srdeploy.export.triton import TritonConfigError, validate_config, write_triton_repo
from tritonclient.grpc import model_config_pb2 as pb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from rt_helpers import save_tiny


@pytest.mark.usefixtures("tiny_model")
def test_cli_writes_repository_for_onnxruntime(tmp_path: Path, tiny_model: str, capsys) -> None:
    repo = tmp_path / "repo"
    argv = ["--model", tiny_model, "--scale", "2", "-o", str(tmp_path / "a"), "--exporter", "torchscript",
            "--max-batch", "4", "--triton-repo", str(repo)]
    assert main(argv) == 0
    stem = f"{tiny_model}_x2"
    cap = capsys.readouterr()
    assert "not run here" in cap.err and str(repo / stem / "config.pbtxt") in cap.out
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file()) == [
        f"{stem}/1/model.onnx", f"{stem}/config.pbtxt"]
    assert (repo / stem / "1" / "model.onnx").read_bytes() == (tmp_path / "a" / f"{stem}.onnx").read_bytes()
    cfg = pb.ModelConfig()
    text_format.Parse((repo / stem / "config.pbtxt").read_text(), cfg)  # strict: unknown fields would fail
    assert cfg.name == stem and cfg.backend == "onnxruntime" and cfg.max_batch_size == 4
    assert [(t.name, pb.DataType.Name(t.data_type), list(t.dims)) for t in cfg.input] == [("lr", "TYPE_FP32",
                                                                                           [3, -1, -1])]
    assert [(t.name, list(t.dims)) for t in cfg.output] == [("sr", [3, -1, -1])]
    assert list(cfg.dynamic_batching.preferred_batch_size) == [1, 2, 4]
    prof = json.loads((tmp_path / "a" / f"{stem}.json").read_text())["trt_profile"]
    acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert acc.name == "tensorrt" and acc.parameters["trt_profile_max_shapes"] == f"lr:{prof['max']}"
    assert prof["max"].startswith("4x3x")
    # a second export into the same repository refuses instead of overwriting the model
    assert main(argv) == 2 and "exists" in capsys.readouterr().err


def test_tensorrt_backend_and_static_batch(tmp_path: Path) -> None:
    onnx_path = save_tiny(tmp_path, 2)
    engine = tmp_path / "tiny_x2.engine"
    engine.write_bytes(b"opaque engine bytes: copied, not read")  # the config does not depend on them
    files = write_triton_repo(onnx_path, tmp_path / "repo", engine=engine, max_batch=8)
    cfg = validate_config(files[0], onnx_path)
    assert cfg.backend == "tensorrt" and files[1].name == "model.plan" and files[1].read_bytes() == engine.read_bytes()
    assert cfg.max_batch_size == 8 and not cfg.optimization.HasField("execution_accelerators")


def test_static_sizes_and_fixed_batch(tmp_path: Path) -> None:
    import onnx

    static = save_tiny(tmp_path, 2, static=(32, 32))
    cfg = validate_config(write_triton_repo(static, tmp_path / "r1")[0], static)
    assert cfg.max_batch_size == 1 and list(cfg.input[0].dims) == [3, 32, 32]
    model = onnx.load(str(static))  # batch fixed to 1: Triton then takes full shapes and cannot batch
    for v in (*model.graph.input, *model.graph.output):
        v.type.tensor_type.shape.dim[0].dim_value = 1
    fixed = tmp_path / "fixed" / "fixed_x2.onnx"
    fixed.parent.mkdir()
    onnx.save(model, str(fixed))
    cfg = validate_config(write_triton_repo(fixed, tmp_path / "r2")[0], fixed)
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching") and list(cfg.input[0].dims) == [1, 3, 32,
                                                                                                           32]


def test_validation_catches_bad_configs(tmp_path: Path) -> None:
    onnx_path = save_tiny(tmp_path, 2)
    good = write_triton_repo(onnx_path, tmp_path / "repo")[0]
    text = good.read_text()
    bad = tmp_path / "bad.pbtxt"
    for broken, match in (
        (text + "\nmax_batch_sizes: 3\n", "does not parse"),  # unknown field
        (text.replace("TYPE_FP32", "TYPE_FLOAT32", 1), "does not parse"),  # unknown enum value
        (text.replace('name: "lr"', 'name: "input"'), "input names"),
        (text.replace("dims: 3", "dims: 4", 1), "the graph has"),
        (text.replace('backend: "onnxruntime"', 'backend: "pytorch"'), "not onnxruntime or tensorrt"),
    ):
        bad.write_text(broken)
        with pytest.raises(TritonConfigError, match=match):
            validate_config(bad, onnx_path)
    with pytest.raises(SrdeployError, match="exists"):
        write_triton_repo(onnx_path, tmp_path / "repo")
