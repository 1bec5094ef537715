"""Native plugin code without a GPU: nvcc builds the kernels for every default architecture, the
plugin library compiles with -Wall -Wextra -Werror against the pinned TensorRT headers, exports
the right symbols per variant, and the C++ host test passes (also under valgrind)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from srdeploy.plugins import build


def test_pinned_headers_are_verified(native_build: Path) -> None:
    include = build.tensorrt_headers()
    assert (include / "NvInferRuntime.h").is_file()
    marker = include.parents[3] / "VERIFIED"
    assert marker.read_text().strip() == build.KERNEL_LENS_SHA256
    cache = (native_build / "CMakeCache.txt").read_text()
    assert f"TensorRT_INCLUDE_DIR:PATH={include}" in cache


def test_kernels_built_for_every_default_architecture(native_build: Path) -> None:
    flags = (native_build / "CMakeFiles" / "srdeploy_kernel_objs.dir" / "flags.make").read_text()
    for arch in build.DEFAULT_ARCHS.split(";"):
        assert f"arch=compute_{arch},code=[compute_{arch},sm_{arch}]" in flags
    assert "-Werror=all-warnings" in flags and "-Wextra" in flags
    blob = build.library(native_build, "kernels").read_bytes()
    for arch in build.DEFAULT_ARCHS.split(";"):  # SASS of each arch is embedded in the fatbin
        assert f"sm_{arch}".encode() in blob


def test_plugin_objects_compile_with_werror_and_system_trt_headers(native_build: Path) -> None:
    flags = (native_build / "CMakeFiles" / "srdeploy_plugin_objs.dir" / "flags.make").read_text()
    assert "-Wall -Wextra -Werror" in flags
    assert f"-isystem {build.tensorrt_headers()}" in flags


def _dynamic_symbols(lib: Path, *extra: str) -> set[str]:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    out = subprocess.run([nm, "-D", *extra, str(lib)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_library_variants_export_what_their_loader_needs(native_build: Path) -> None:
    creators = _dynamic_symbols(build.library(native_build, "plugins"), "--defined-only")
    assert {"getCreators", "setLoggerFinder"} <= creators
    assert not any("srdeploy" in s or "Plugin" in s for s in creators - {"getCreators", "setLoggerFinder"})
    static_defined = _dynamic_symbols(build.library(native_build, "plugins_static"), "--defined-only")
    assert "getCreators" not in static_defined and "setLoggerFinder" not in static_defined
    assert "getPluginRegistry" in _dynamic_symbols(build.library(native_build, "plugins_static"), "--undefined-only")
    kernels = _dynamic_symbols(build.library(native_build, "kernels"), "--defined-only")
    assert {"srdeploy_window_attention", "srdeploy_local_ensemble"} <= kernels


def test_host_logic(native_build: Path) -> None:
    proc = subprocess.run([str(native_build / "test_plugin_host")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith(" passed, 0 failed")


def test_host_logic_under_valgrind(native_build: Path) -> None:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.skip("valgrind is not installed")
    proc = subprocess.run(
        [
            valgrind,
            "--error-exitcode=9",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "-q",
            str(native_build / "test_plugin_host"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert " passed, 0 failed" in proc.stdout


def test_ctypes_entry_points_refuse_bad_arguments_without_a_gpu(native_build: Path) -> None:
    """The GPU harness's ctypes signatures resolve; invalid dims are refused before any launch."""

    kernels = build.load_launchers(native_build, "kernels")
    fn = kernels.srdeploy_window_attention
    assert fn(0, None, None, None, None, 0, None, 1, 1, 12, 16, 0.25, 0, None) == -2  # kSrBadWindow
    assert fn(0, None, None, None, None, 0, None, 1, 1, 8, 24, 0.25, 0, None) == -3  # kSrBadHeadDim
    assert fn(0, None, None, None, None, 0, None, 1, 1, 8, 16, -1.0, 0, None) == -5  # kSrBadScale
    assert fn(0, None, None, None, None, 0, None, 1, 1, 8, 16, 0.25, 0, None) == -6  # kSrNullPointer
    assert fn(2, None, None, None, None, 0, None, 1, 1, 8, 16, 0.25, 0, None) == -1  # kSrBadDType
    odd, ok = 0x1008, 0x2000  # never dereferenced: alignment is checked before any launch
    assert fn(1, ok, odd, ok, ok, 0, ok, 1, 1, 8, 16, 0.25, 0, None) == -7  # kSrMisaligned
    le = kernels.srdeploy_local_ensemble
    assert le(0, None, None, None, None, 5, 0, 3, None) == -4  # kSrBadShape
    assert le(0, None, None, None, None, 0, 4, 3, None) == 0  # nothing to do
    harness = build.load_launchers(native_build, "harness")
    h = harness.srdeploy_harness_window_attention
    assert h(0, None, None, None, None, 0, None, 1, 1, 12, 16, 0.25, 0, None) == -101  # creator refuses window 12


def test_trtexec_flags_name_the_getcreators_variant() -> None:
    assert build.trtexec_plugin_flags("/x/libsrdeploy_plugins.so") == ["--dynamicPlugins=/x/libsrdeploy_plugins.so"]
    with pytest.raises(Exception, match="static-registration"):
        build.trtexec_plugin_flags("libsrdeploy_plugins_static.so")


def test_library_path_points_at_the_built_getcreators_variant(native_build: Path, monkeypatch) -> None:
    from srdeploy.plugins import library_path

    monkeypatch.delenv("SRDEPLOY_PLUGIN_LIBRARY", raising=False)
    monkeypatch.setenv("SRDEPLOY_PLUGIN_BUILD_DIR", str(native_build))
    assert library_path() == build.library(native_build, "plugins")
    assert library_path("plugins_static") == build.library(native_build, "plugins_static")
    monkeypatch.setenv("SRDEPLOY_PLUGIN_LIBRARY", "/opt/x/libsrdeploy_plugins.so")
    assert library_path() == Path("/opt/x/libsrdeploy_plugins.so")


def test_a_tampered_header_wheel_is_refused(tmp_path: Path) -> None:
    """The pinned sha256 is enforced (no network needed: a fake wheel is planted in the cache)."""
    cache = tmp_path / f"kernel-lens-{build.KERNEL_LENS_VERSION}"
    cache.mkdir()
    fake = cache / build.KERNEL_LENS_WHEEL
    fake.write_bytes(b"PK\x03\x04 not the pinned wheel")
    with pytest.raises(Exception, match="sha256"):
        build.tensorrt_headers(tmp_path)
    assert not fake.exists(), "a wheel that failed verification must be deleted"
