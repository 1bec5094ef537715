"""sr-export: manifest content, atomic output, bad input (fast: a tiny test-only model)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import onnx
import pytest
from srdeploy.export import compare as cmp_mod
from srdeploy.export.api import export_model

from srdeploy.cli.export import main

pytestmark = pytest.mark.usefixtures("tiny_model")


def _files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_cli_writes_validated_artifact_and_manifest(tmp_path: Path, tiny_model: str, capsys) -> None:
    argv = ["--model", tiny_model, "--scale", "2", "--fp16", "-o", str(tmp_path), "--exporter", "torchscript"]
    assert main(argv) == 0
    stem = f"{tiny_model}_x2_fp16"
    assert _files(tmp_path) == [f"{stem}.json", f"{stem}.onnx"]
    m = json.loads((tmp_path / f"{stem}.json").read_text())
    for key in ("model", "scale", "descriptor", "hparams", "weights_sha256", "weights_license", "fusions",
                "precision", "io_dtype", "version", "graph", "plugins", "validation", "sizes_validated", "fp16",
                "tensorrt", "trt_profile"):
        assert key in m, key
    assert m["precision"] == "fp16" and m["weights_sha256"] == "" and m["weights"]["kind"] == "random"
    assert m["validation"]["passed"] and len(m["sizes_validated"]) == 3
    assert m["validation"]["tolerance"]["min_psnr_db"] == 40.0
    assert {"max_abs", "mean_abs", "p99_abs", "max_rel_err", "psnr_db"} <= set(m["validation"]["cases"][0])
    assert m["fp16"]["fp16_mac_fraction"] >= 0.9 and "islands" in m["fp16"]
    cmd = shlex.split(m["tensorrt"]["trtexec"])
    assert cmd[0] == "trtexec" and "--stronglyTyped" in cmd and f"--onnx={stem}.onnx" in cmd
    assert "--minShapes=lr:1x3x16x16" in cmd and "--maxShapes=lr:1x3x128x128" in cmd
    assert not any("fp16" in a.lower() and a.startswith("--fp16") for a in cmd)  # precision from the graph
    assert "--strongly-typed" in shlex.split(m["tensorrt"]["polygraphy"])
    meta = {p.key: p.value for p in onnx.load(tmp_path / f"{stem}.onnx").metadata_props}
    assert meta["srdeploy.precision"] == "fp16" and json.loads(meta["srdeploy.descriptor"])["name"] == tiny_model
    assert json.loads(meta["srdeploy.hparams"]) == {"channels": 8}
    assert str(tmp_path / f"{stem}.onnx") in capsys.readouterr().out


def test_static_shape_and_fp16_io(tmp_path: Path, tiny_model: str) -> None:
    res = export_model(tiny_model, 3, tmp_path, static="24x32", fp16=True, fp16_io=True, exporter="torchscript")
    g = onnx.load(res.onnx_path).graph
    dims = [d.dim_value for d in g.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, 24, 32]
    assert g.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert res.manifest["trt_profile"]["min"] == res.manifest["trt_profile"]["max"] == "1x3x24x32"
    assert res.manifest["sizes_validated"] == ["1x3x24x32", "2x3x24x32"]


def test_failed_validation_leaves_nothing(tmp_path: Path, tiny_model: str, monkeypatch, capsys) -> None:
    impossible = cmp_mod.Tolerance(max_rel_err=0.0)
    monkeypatch.setitem(cmp_mod.TOLERANCES, ("fp32", "random"), impossible)
    out = tmp_path / "new" / "out"
    assert main(["--model", tiny_model, "--scale", "2", "-o", str(out), "--exporter", "torchscript"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error: validation of") and "nothing written" in err and len(err.strip().splitlines()) == 1
    # no artifact, no staging directory, and not the (empty) folders the export created (issue 14 item 8)
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    assert main(["--model", tiny_model, "--scale", "2", "-o", str(kept), "--exporter", "torchscript"]) != 0
    assert kept.is_dir() and _files(kept) == []  # a folder that existed before is never removed


def test_no_validate_skips_and_says_so(tmp_path: Path, tiny_model: str, capsys) -> None:
    assert main(["--model", tiny_model, "--scale", "2", "-o", str(tmp_path), "--no-validate",
                 "--exporter", "torchscript"]) == 0
    m = json.loads((tmp_path / f"{tiny_model}_x2.json").read_text())
    assert m["validation"] == {"skipped": True}
    assert "skipped" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "nosuchmodel"], "unknown model 'nosuchmodel'; valid names:"),
        (["--model", "{tiny}", "--scale", "5"], "has no x5 model"),
        (["--model", "{tiny}", "--static", "30x32"], "not a multiple of"),
        (["--model", "{tiny}", "--static", "4x4"], "below"),
        (["--model", "{tiny}", "--min-shape", "16x16", "--opt-shape", "8x8", "--max-shape", "32x32"], "opt <= max"),
        (["--model", "{tiny}", "--min-shape", "16x16", "--opt-shape", "12x16"], "all three"),
        (["--model", "{tiny}", "--static", "16x16", "--min-shape", "16x16"], "excludes"),
        (["--model", "{tiny}", "--fp16-io"], "--fp16-io needs --fp16"),
        (["--model", "{tiny}", "--option", "nosuch=1"], "no option(s) nosuch"),
    ],
)
def test_bad_input_is_one_line_error(
    tmp_path: Path, tiny_model: str, capsys, argv: list[str], message: str
) -> None:
    argv = [a.replace("{tiny}", tiny_model) for a in argv]
    assert main([*argv, "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert _files(tmp_path / "o") == []


def test_unwritable_outdir(tmp_path: Path, tiny_model: str, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["--model", tiny_model, "--scale", "2", "-o", str(blocker / "sub")]) == 2
    assert "cannot create output directory" in capsys.readouterr().err
    if os.geteuid() != 0:  # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        assert main(["--model", tiny_model, "--scale", "2", "-o", str(ro)]) == 2
        assert "not writable" in capsys.readouterr().err


def test_weights_for_another_model(tmp_path: Path, data_dir: Path, capsys) -> None:
    """The AGDN x2 checkpoint given for A2N: a clear error naming the mismatch, nothing written."""
    code = main(["--model", "a2n", "--scale", "2", "--weights", str(data_dir / "AGDN_x2.pth"), "-o", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "AGDN_x2.pth" in err
    assert _files(tmp_path) == []


def test_engine_without_a_builder_is_one_line_and_writes_nothing(tmp_path: Path, tiny_model: str, monkeypatch,
                                                                 capsys) -> None:
    """The builder is imported before the export: a missing one costs one line and no files."""
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    for mod in ("tensorrt_rtx", "tensorrt_rtx_bindings"):
        monkeypatch.setitem(sys.modules, mod, None)
    for flag in (["--engine"], ["--engine", "tensorrt"], ["--engine", "rtx"]):
        code = main(["--model", tiny_model, "--scale", "2", *flag, "-o", str(tmp_path), "--exporter", "torchscript"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and len(err) == 1 and err[0].startswith("error: "), err
        assert "pip install 'srdeploy[rtx]'" in err[0] or "trtexec" in err[0], err
        assert _files(tmp_path) == []


def test_plugins_with_rtx_is_one_line_before_anything(tmp_path: Path, tiny_model: str, capsys) -> None:
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX bindings not installed")
    code = main(["--model", tiny_model, "--scale", "2", "--plugins", "--engine", "rtx", "-o", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "--attention native" in err[0], err
    assert _files(tmp_path) == []


def test_engine_with_tensorrt_double(tmp_path: Path, tiny_model: str) -> None:
    from export_trt_double import FakeTensorRT
    from srdeploy.export.engine import DeviceInfo

    trt = FakeTensorRT("11.4.0.106")
    res = export_model(tiny_model, 2, tmp_path, engine=True, trt_api=trt, device=DeviceInfo("GPU", "9.0"),
                       cache_dir=tmp_path / "cache", exporter="torchscript", min_shape="16x16", opt_shape="32x32",
                       max_shape="64x64")
    assert res.engine is not None and res.engine.engine_path.name == f"{tiny_model}_x2.engine"
    side = json.loads(res.engine.sidecar_path.read_text())
    assert side["fields"]["onnx_sha256"] == res.manifest["onnx"]["sha256"]
    assert ("OptimizationProfile.set_shape", ("lr", (1, 3, 16, 16), (1, 3, 32, 32), (1, 3, 64, 64))) in trt.calls
    assert len(list((tmp_path / "cache").glob("*.engine"))) == 1


def test_ciaosr_fp16_plugins_refusal_names_the_measured_reason(tmp_path: Path, capsys) -> None:
    """Issue 12: CiaoSR ``--fp16 --plugins`` is refused in one line that quotes the measurement."""
    out = tmp_path / "out"
    assert main(["--model", "ciaosr", "--scale", "4", "--fp16", "--plugins", "-o", str(out)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not support fp16" in err[0] and "0.24" in err[0] and "drop --fp16" in err[0]
    assert not out.exists()
