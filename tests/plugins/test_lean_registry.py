"""The plugin library inside the REAL TensorRT plugin registry (tensorrt-lean wheels, no GPU).

Each check runs in its own process: the registry is process-global, and the wrong-variant load
is expected to leave it in a crashing state.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from srdeploy.plugins import build

pytest.importorskip("tensorrt_lean_bindings", reason="tensorrt-lean-cu13-bindings is not installed (dev dependency)")
pytest.importorskip("tensorrt_lean_libs", reason="tensorrt-lean-cu13-libs is not installed (dev dependency)")

PRELUDE = textwrap.dedent(
    """
    import ctypes, glob, os, sys
    import numpy as np
    import tensorrt_lean_libs
    libdir = os.path.dirname(tensorrt_lean_libs.__file__)
    ctypes.CDLL(glob.glob(os.path.join(libdir, "libnvinfer_lean.so*"))[0], mode=ctypes.RTLD_GLOBAL)
    import tensorrt_lean_bindings as trt
    registry = trt.get_plugin_registry()
    def ours():
        return {(c.name, c.plugin_version, c.plugin_namespace, c.interface_info.kind): c
                for c in registry.all_creators if c.name in ("SRWindowAttention", "CiaoSRLocalEnsemble")}
    def fields(**kw):
        fs = []
        for name, value in kw.items():
            if isinstance(value, str):
                fs.append(trt.PluginField(name, np.frombuffer(value.encode() + b"\\0", np.int8),
                                          trt.PluginFieldType.CHAR))
            elif isinstance(value, float):
                fs.append(trt.PluginField(name, np.array([value], np.float32), trt.PluginFieldType.FLOAT32))
            else:
                fs.append(trt.PluginField(name, np.array([value], np.int32), trt.PluginFieldType.INT32))
        return trt.PluginFieldCollection(fs)
    BUILD = trt.TensorRTPhase.BUILD
    """
)

CHECKS = textwrap.dedent(
    """
    found = ours()
    kind = "PLUGIN CREATOR_V3ONE"
    want = {("SRWindowAttention", "1", "", kind), ("CiaoSRLocalEnsemble", "1", "", kind)}
    assert set(found) == want, found
    wa = [c for k, c in found.items() if k[0] == "SRWindowAttention"][0]
    le = [c for k, c in found.items() if k[0] == "CiaoSRLocalEnsemble"][0]
    names = [(f.name, f.type) for f in wa.field_names]
    assert names == [("window", trt.PluginFieldType.INT32), ("bias_index", trt.PluginFieldType.CHAR),
                     ("scale", trt.PluginFieldType.FLOAT32)], names
    assert len(le.field_names) == 0
    p = wa.create_plugin("attn", fields(window=32, bias_index="k-q", scale=0.25), BUILD)
    assert p is not None
    core = p.get_capability_interface(trt.PluginCapabilityType.CORE)
    assert (core.plugin_name, core.plugin_version) == ("SRWindowAttention", "1")
    assert p.get_capability_interface(trt.PluginCapabilityType.BUILD).num_outputs == 1
    assert wa.create_plugin("attn", fields(window=8, bias_index="q-k"), BUILD) is not None
    for bad in (dict(window=12), dict(window=8, bias_index="k+q"), dict(window=8, scale=-1.0),
                dict(bias_index="k-q"), dict(window=8, heads=4)):
        assert wa.create_plugin("attn", fields(**bad), BUILD) is None, bad
    assert le.create_plugin("ens", trt.PluginFieldCollection([]), BUILD) is not None
    assert le.create_plugin("ens", fields(scale=1.0), BUILD) is None
    print("REGISTRY-OK")
    """
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_load_library_variant_registers_creators(native_build: Path) -> None:
    lib = build.library(native_build, "plugins")
    code = PRELUDE + f"handle = registry.load_library({str(lib)!r})\nassert handle is not None\n" + CHECKS
    proc = _run(code)
    assert proc.returncode == 0 and "REGISTRY-OK" in proc.stdout, proc.stdout + proc.stderr[-3000:]


def _majors() -> tuple[int, int]:
    """(TensorRT major of the headers the library was built with, major of the lean runtime)."""
    import re

    import tensorrt_lean_bindings

    header = (build.tensorrt_headers() / "NvInferVersion.h").read_text()
    m = re.search(r"#define (?:TRT_MAJOR_ENTERPRISE|NV_TENSORRT_MAJOR) (\d+)\s*$", header, re.MULTILINE)
    assert m is not None, "no major version in NvInferVersion.h"
    return int(m.group(1)), int(tensorrt_lean_bindings.__version__.split(".")[0])


def test_static_variant_registers_on_dlopen(native_build: Path) -> None:
    header_major, runtime_major = _majors()
    if header_major != runtime_major:
        pytest.skip(
            f"static registration needs headers of the runtime's major version (headers {header_major}, "
            f"lean runtime {runtime_major}); the version guard is tested instead"
        )
    lib = build.library(native_build, "plugins_static")
    proc = _run(PRELUDE + f"ctypes.CDLL({str(lib)!r})\n" + CHECKS)
    assert proc.returncode == 0 and "REGISTRY-OK" in proc.stdout, proc.stdout + proc.stderr[-3000:]


def test_static_variant_refuses_a_mismatched_runtime(native_build: Path) -> None:
    """IPluginRegistry's vtable differs between TensorRT 10 and 11: registering across majors
    would call the wrong slot (it segfaulted before the guard); the library must log and skip."""
    header_major, runtime_major = _majors()
    if header_major == runtime_major:
        pytest.skip("headers and runtime share a major version; nothing to guard")
    lib = build.library(native_build, "plugins_static")
    proc = _run(PRELUDE + f"ctypes.CDLL({str(lib)!r})\nprint('LOADED', len(ours()))\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LOADED 0" in proc.stdout
    assert f"built against TensorRT {header_major} headers but loaded into TensorRT {runtime_major}" in proc.stderr


def test_wrong_variant_load_fails(native_build: Path) -> None:
    """The static variant handed to load_library() must fail (documented: it then crashes the registry)."""
    lib = build.library(native_build, "plugins_static")
    code = PRELUDE + textwrap.dedent(
        f"""
        handle = registry.load_library({str(lib)!r})
        print("HANDLE-NONE" if handle is None else "HANDLE-OK", flush=True)
        n = len(list(registry.all_creators))
        print("ENUMERATED", n, flush=True)
        """
    )
    proc = _run(code)
    assert "HANDLE-NONE" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    # enumerating afterwards segfaults on TRT 11.4 lean (dangling creator); tolerate a fixed runtime
    assert proc.returncode != 0 or "ENUMERATED" in proc.stdout
