"""What the TensorRT runner does for TensorRT-RTX engines before it runs them: refit a
weight-stripped plan from its ONNX, and keep the runtime (JIT kernel) cache beside the engine.

Running an RTX engine needs an RTX-class GPU, which no CI machine has; these tests drive the two
load steps through a recording stand-in for the TensorRT-RTX objects (the calls are the RTX 1.7
Python API: ``Refitter``, ``OnnxParserRefitter``, ``ICudaEngine.create_runtime_config``,
``IRuntimeConfig.create_runtime_cache/set_runtime_cache``, ``IRuntimeCache.deserialize/serialize``)
so that the file handling and the one-line errors are checked; the GPU run is pending.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from srdeploy.runtime.backends.tensorrt import context_with_runtime_cache, refit_stripped, save_runtime_cache
from srdeploy.runtime.engine_check import runtime_cache_file, weight_stripped

from srdeploy.errors import BackendError


class _Api:
    def __init__(self, refit_ok: bool = True) -> None:
        self.calls: list[Any] = []
        api = self

        class Refitter:
            def __init__(self, engine: Any, logger: Any) -> None:
                api.calls.append(("Refitter", engine))

            def refit_cuda_engine(self) -> bool:
                api.calls.append("refit_cuda_engine")
                return True

        class OnnxParserRefitter:
            num_errors = 0 if refit_ok else 1

            def __init__(self, refitter: Any, logger: Any) -> None:
                pass

            def refit_from_file(self, path: str) -> bool:
                api.calls.append(("refit_from_file", path))
                return refit_ok

            def get_error(self, i: int) -> str:
                return "weights of conv1 not found"

        self.Refitter, self.OnnxParserRefitter = Refitter, OnnxParserRefitter


def test_stripped_flag_is_read_from_the_sidecar() -> None:
    assert weight_stripped({"fields": {"builder": {"strip_weights": True}}})
    assert not weight_stripped({"fields": {"builder": {"strip_weights": False}}})
    assert not weight_stripped(None) and not weight_stripped({})


def test_refit_uses_the_onnx_beside_the_engine(tmp_path: Path) -> None:
    engine_path = tmp_path / "m.engine"
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    api = _Api()
    refit_stripped(api, "ENGINE", engine_path, {"onnx_file": "m.onnx"}, logger=None)
    assert api.calls == [("Refitter", "ENGINE"), ("refit_from_file", str(tmp_path / "m.onnx")), "refit_cuda_engine"]


def test_refit_without_its_onnx_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"weight-stripped and its ONNX \(m\.onnx\) is not beside it; copy"):
        refit_stripped(_Api(), "ENGINE", tmp_path / "m.engine", {"onnx_file": "m.onnx"}, logger=None)


def test_refit_from_another_onnx_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"other")
    with pytest.raises(BackendError, match=r"refitting .* failed: weights of conv1 not found; the ONNX must be"):
        refit_stripped(_Api(refit_ok=False), "E", tmp_path / "m.engine", {"onnx_file": "m.onnx"}, logger=None)


class _Cache:
    def __init__(self, fail: bool = False) -> None:
        self.loaded: bytes | None = None
        self.fail = fail

    def deserialize(self, data: bytes) -> bool:
        if self.fail:
            raise RuntimeError("cache from another GPU")
        self.loaded = data
        return True

    def serialize(self) -> bytes:
        return b"kernels-v2"


def _engine(cache: _Cache) -> Any:
    config = SimpleNamespace(create_runtime_cache=lambda: cache, cache=None)
    config.set_runtime_cache = lambda c: setattr(config, "cache", c)
    return SimpleNamespace(create_runtime_config=lambda: config,
                           create_execution_context=lambda cfg: ("context", cfg.cache))


def test_runtime_cache_is_loaded_and_saved_beside_the_engine(tmp_path: Path) -> None:
    path = runtime_cache_file(tmp_path / "m.engine")
    assert path.name == "m.engine.runtime.cache"  # the name sr-export records in the manifest
    ctx, cache = context_with_runtime_cache(None, _engine(c := _Cache()), path)
    assert ctx == ("context", c) and c.loaded is None  # first run: no file yet
    save_runtime_cache(cache, path)
    assert path.read_bytes() == b"kernels-v2"
    context_with_runtime_cache(None, _engine(c2 := _Cache()), path)
    assert c2.loaded == b"kernels-v2"


def test_a_cache_that_does_not_load_is_a_notice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.engine.runtime.cache"
    path.write_bytes(b"junk")
    ctx, _ = context_with_runtime_cache(None, _engine(c := _Cache(fail=True)), path)
    assert ctx == ("context", c)
    assert "did not load (cache from another GPU); kernels are compiled again" in capsys.readouterr().err
