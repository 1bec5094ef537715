"""The TensorRT engine builder and cache, against a strict recording double of the TensorRT API.

No TensorRT builder can be installed on CI or dev machines: these tests check the builder's
flag/profile/cache-key logic only. Engine building has not been run against a real TensorRT.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from export_trt_double import FakeTensorRT
from srdeploy.export import engine as eng
from srdeploy.export.manifest import BatchedProfile
from srdeploy.models.registry import ShapeProfile

from srdeploy.errors import BackendError, ExportError
from srdeploy.sizes import Size

GPU = eng.DeviceInfo("NVIDIA Jetson AGX Orin", "8.7")
PROFILE = BatchedProfile.from_shapes(ShapeProfile(Size(16, 16), Size(64, 96), Size(128, 192)), max_batch=2)


def _opts(**kw: object) -> eng.EngineOptions:
    base: dict[str, object] = {"profiles": (PROFILE,)}
    base.update(kw)
    return eng.EngineOptions(**base)  # type: ignore[arg-type]


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    p = tmp_path / "m.onnx"
    p.write_bytes(b"onnx-bytes-v1")
    return p


def test_build_is_strongly_typed_with_profile_workspace_level_and_timing_cache() -> None:
    trt = FakeTensorRT("11.4.0.106")
    logs: list[str] = []
    data, timing = eng.build_serialized_engine(
        b"graph", _opts(workspace_bytes=1 << 30, optimization_level=5), timing_cache=b"old", api=trt, log=logs.append
    )
    assert data.startswith(b"ENGINE:11.4.0.106:")
    assert timing == b"TIMING:updatedold"
    calls = dict(trt.calls)
    assert calls["Builder.create_network"] == (1 << 1,)  # STRONGLY_TYPED only, no EXPLICIT_BATCH
    assert calls["BuilderConfig.set_memory_pool_limit"] == ("WORKSPACE", 1 << 30)
    assert calls["BuilderConfig.builder_optimization_level="] == (5,)
    assert calls["BuilderConfig.set_timing_cache"] == (b"old", False)
    assert calls["OptimizationProfile.set_shape"] == ("lr", (1, 3, 16, 16), (1, 3, 64, 96), (2, 3, 128, 192))
    order = trt.names()
    assert order.index("OnnxParser.parse") < order.index("BuilderConfig.add_optimization_profile")
    assert order[-1] == "Builder.build_serialized_network"
    assert any("builder config" in line and '"optimization_level": 5' in line for line in logs)
    assert any(re.search(r"built in \d", line) for line in logs)


def test_no_removed_tensorrt_11_api_in_builder_source() -> None:
    from srdeploy.export.engines import base, tensorrt

    src = "\n".join(Path(m.__file__).read_text() for m in (base, tensorrt))
    code = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("#", "*", "``")))
    for banned in ("BuilderFlag.FP16", "BuilderFlag.INT8", "set_flag(", "PRECISION_CONSTRAINTS", "EXPLICIT_BATCH"):
        assert f"trt.{banned}" not in code and f".{banned}" not in code.replace("BuilderFlag.FP16/INT8", "")


def test_plugin_libraries_are_loaded_and_failure_is_clear(tmp_path: Path) -> None:
    from srdeploy.errors import BackendError, MissingDependencyError

    good, bad = tmp_path / "libsrplug.so", tmp_path / "bad.so"
    good.write_bytes(b"")
    bad.write_bytes(b"")
    trt = FakeTensorRT()
    eng.build_serialized_engine(b"g", _opts(plugin_libraries=(str(good),)), api=trt, log=lambda m: None)
    assert ("PluginRegistry.load_library", (str(good),)) in trt.calls
    trt = FakeTensorRT()
    trt.bad_plugins.add(str(bad))
    with pytest.raises(BackendError, match=r"could not load plugin library .*bad.so"):
        eng.build_serialized_engine(b"g", _opts(plugin_libraries=(str(bad),)), api=trt, log=lambda m: None)
    with pytest.raises(MissingDependencyError, match=r"does not exist; build it with `python -m srdeploy"):
        eng.build_serialized_engine(b"g", _opts(plugin_libraries=(str(tmp_path / "none.so"),)), api=FakeTensorRT(),
                                    log=lambda m: None)


def test_parser_errors_and_failed_build_raise() -> None:
    trt = FakeTensorRT()
    trt.parser_errors = ["node 3: unsupported op Foo"]
    with pytest.raises(ExportError, match="unsupported op Foo"):
        eng.build_serialized_engine(b"g", _opts(), api=trt, log=lambda m: None)
    trt = FakeTensorRT()
    trt.fail_build = True
    with pytest.raises(ExportError, match="failed to build"):
        eng.build_serialized_engine(b"g", _opts(), api=trt, log=lambda m: None)


def test_options_are_checked() -> None:
    with pytest.raises(ExportError, match="min <= opt <= max"):
        bad = BatchedProfile((1, Size(64, 64)), (1, Size(32, 64)), (1, Size(128, 128)))
        eng.EngineOptions((bad,))
    with pytest.raises(ExportError, match=r"0..5"):
        _opts(optimization_level=7)
    with pytest.raises(ExportError, match="at least one"):
        eng.EngineOptions(())


def test_cache_key_covers_every_field(tmp_path: Path) -> None:
    lib = tmp_path / "libsrplug.so"
    lib.write_bytes(b"v1")
    base_key, fields = eng.cache_key("abc", _opts(), "10.3.0.26", GPU, ["p1"])
    assert fields["tensorrt_version"] == "10.3.0.26" and fields["compute_capability"] == "8.7"
    variants = [
        eng.cache_key("abd", _opts(), "10.3.0.26", GPU, ["p1"]),
        eng.cache_key("abc", _opts(workspace_bytes=1 << 20), "10.3.0.26", GPU, ["p1"]),
        eng.cache_key("abc", _opts(optimization_level=4), "10.3.0.26", GPU, ["p1"]),
        eng.cache_key("abc", _opts(plugin_libraries=(str(lib),)), "10.3.0.26", GPU, ["p1"]),
        eng.cache_key("abc", _opts(), "11.4.0.106", GPU, ["p1"]),
        eng.cache_key("abc", _opts(), "10.3.0.26", eng.DeviceInfo("NVIDIA H100", "9.0"), ["p1"]),
        eng.cache_key("abc", _opts(), "10.3.0.26", GPU, ["p2"]),
        eng.cache_key("abc", _opts(profiles=(BatchedProfile.from_shapes(ShapeProfile(Size(16, 16), Size(64, 96),
                                                                                      Size(128, 192)), 1),)),
                      "10.3.0.26", GPU, ["p1"]),
    ]
    keys = {k for k, _ in variants}
    assert base_key not in keys and len(keys) == len(variants)
    assert eng.cache_key("abc", _opts(), "10.3.0.26", GPU, ["p1"])[0] == base_key


def test_cache_hit_rebuild_on_new_tensorrt_or_gpu(tmp_path: Path, onnx_file: Path) -> None:
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    out.mkdir()
    trt = FakeTensorRT("10.3.0.26")
    r1 = eng.EngineFromOnnx(onnx_file, _opts(), cache_dir=cache, api=trt, device=GPU, log=lambda m: None)(
        out / "m.engine"
    )
    assert not r1.cached and trt.builds == 1
    assert (out / "m.engine.timing.cache").exists()
    side = json.loads((out / "m.engine.json").read_text())
    assert side["key"] == r1.key and side["fields"]["gpu_name"] == GPU.name
    assert (cache / f"{r1.key}.engine").read_bytes() == (out / "m.engine").read_bytes()

    r2 = eng.EngineFromOnnx(onnx_file, _opts(), cache_dir=cache, api=trt, device=GPU, log=lambda m: None)(
        out / "m2.engine"
    )
    assert r2.cached and r2.key == r1.key and trt.builds == 1

    trt11 = FakeTensorRT("11.4.0.106")
    r3 = eng.EngineFromOnnx(onnx_file, _opts(), cache_dir=cache, api=trt11, device=GPU, log=lambda m: None)(
        out / "m3.engine"
    )
    assert not r3.cached and r3.key != r1.key and trt11.builds == 1
    h100 = eng.DeviceInfo("NVIDIA H100 80GB HBM3", "9.0")
    r4 = eng.EngineFromOnnx(onnx_file, _opts(), cache_dir=cache, api=trt11, device=h100, log=lambda m: None)(
        out / "m4.engine"
    )
    assert not r4.cached and trt11.builds == 2

    onnx_file.write_bytes(b"onnx-bytes-v2")
    r5 = eng.EngineFromOnnx(onnx_file, _opts(), cache_dir=cache, api=trt11, device=h100, log=lambda m: None)(
        out / "m5.engine"
    )
    assert not r5.cached and r5.key != r4.key


def test_corrupt_engines_give_clear_errors(tmp_path: Path, onnx_file: Path, capsys) -> None:
    cache = tmp_path / "cache"
    trt = FakeTensorRT("10.3.0.26")
    build = eng.EngineFromOnnx(onnx_file, _opts(), cache_dir=cache, api=trt, device=GPU, log=lambda m: None)
    r = build(tmp_path / "m.engine")
    assert eng.load_engine(r.engine_path, api=trt).data == r.engine_path.read_bytes()

    (cache / f"{r.key}.engine").write_bytes(b"garbage")  # a cache entry that fails its hash: rebuilt, one notice
    builds = trt.builds
    again = build(tmp_path / "again.engine")
    assert not again.cached and trt.builds == builds + 1 and again.engine_path.read_bytes() != b"garbage"
    notices = [line for line in capsys.readouterr().err.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and "rebuilding" in notices[0]

    r.engine_path.write_bytes(b"garbage")
    with pytest.raises(BackendError, match=r"corrupt.*rebuild"):
        eng.load_engine(r.engine_path, api=trt)
    r.sidecar_path.unlink()
    with pytest.raises(BackendError, match="corrupt or from another TensorRT"):
        eng.load_engine(r.engine_path, api=trt)

    good = tmp_path / "good.engine"
    eng.EngineFromOnnx(onnx_file, _opts(), cache_dir=tmp_path / "c2", api=trt, device=GPU, log=lambda m: None)(good)
    with pytest.raises(BackendError, match=r"built with TensorRT 10.3.0.26, this is 11.4"):
        eng.load_engine(good, api=FakeTensorRT("11.4.0.106"))


def test_missing_tensorrt_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(eng.TensorRTUnavailableError, match="trtexec"):
        eng.import_tensorrt()
    import types

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # e.g. only the type stubs
    with pytest.raises(eng.TensorRTUnavailableError, match="no builder"):
        eng.import_tensorrt()


def test_default_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SRDEPLOY_CACHE", str(tmp_path))
    assert eng.default_cache_dir() == tmp_path / "engines"


def _patched_stubs(dest: Path) -> Path:
    """tensorrt-stubs 10.13 ships .pyi files mypy cannot parse (parameters named ``in``, a
    non-default after defaults) and without a py.typed marker next to them: copy them with those
    syntax fixes into ``dest`` for MYPYPATH. Only syntax is changed, no API."""
    import site

    root = next(Path(p) for p in site.getsitepackages() if (Path(p) / "tensorrt_stubs").is_dir())
    for rel in ("tensorrt/__init__.pyi", "tensorrt_bindings/__init__.pyi", "tensorrt_bindings/tensorrt.pyi"):
        text = (root / rel).read_text()
        text = re.sub(r"([(,] *)in:", r"\1in_:", text)
        text = text.replace("channel_axis: int) -> IScaleLayer", "channel_axis: int = 0) -> IScaleLayer")
        text = text.replace("import tensorrt_libs\n", "")
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return dest


def _mypy_errors(path: Path, stubs: Path) -> list[str]:
    import os

    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", "--no-incremental", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MYPYPATH": str(stubs)},
        cwd=Path(eng.__file__).parents[1],
    )
    return [line for line in proc.stdout.splitlines() if line.startswith(f"{path.name}:") or f"/{path.name}:" in line]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tensorrt_stubs") is None, reason="tensorrt-stubs not installed")
@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy not installed")
def test_engine_module_type_checks_against_tensorrt_stubs(tmp_path: Path) -> None:
    from srdeploy.export.engines import base

    stubs = _patched_stubs(tmp_path / "stubs")
    assert _mypy_errors(Path(base.__file__), stubs) == []
    # the check can fail: a misspelt TensorRT method in a copy of the module is reported
    bad = tmp_path / "engine_mutant.py"
    src = Path(base.__file__).read_text()
    pkg = "srdeploy.export.engines"
    for rel, absolute in (("from ..", "from srdeploy.export."), ("from . import", f"from {pkg} import"),
                          ("from .", f"from {pkg}.")):
        src = src.replace(rel, absolute)
    bad.write_text(src.replace("config.set_memory_pool_limit(", "config.set_memory_pool_limt("))
    errors = _mypy_errors(bad, stubs)
    assert any("set_memory_pool_limt" in e for e in errors), errors
