"""TensorRT-RTX as a checker of the plugins' build-time interface (ESC family and CiaoSR plugin graphs).

NVIDIA documents custom plugins as unsupported on TensorRT-RTX at run time, and ``sr-export``
refuses ``--plugins --engine rtx``. The builder still calls every build-time method of a plugin
(output shapes and types, formats, serialisation), so building the plugin graphs here checks our
plugin library against a real NVIDIA builder. Each build runs in a subprocess with the
``libtensorrt_rtx.so`` symlink (see rtx_plugin_build.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from srdeploy.models import descriptor
from srdeploy.plugins import build

rtx_libs = pytest.importorskip("tensorrt_rtx_libs", reason="TensorRT-RTX libs not installed (srdeploy[rtx])")
pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX bindings not installed (srdeploy[rtx])")

BUILD_DIR = build.REPO_ROOT / "build" / "plugins"
HEAVY_SKIP = pytest.mark.skipif(bool(os.environ.get("SRDEPLOY_RTX_QUICK")),
                                reason="heavy TensorRT-RTX plugin build skipped (SRDEPLOY_RTX_QUICK is set)")
ESC_FAMILY = ["esc.light", "esc", pytest.param("esc.fp", marks=[pytest.mark.slow, HEAVY_SKIP]),
              pytest.param("esc.real", marks=[pytest.mark.slow, HEAVY_SKIP])]


@pytest.fixture(scope="module")
def plugin_lib() -> Path:
    missing = build.tools_missing()
    if missing:
        pytest.skip(f"native plugin build needs nvcc and cmake: {missing}")
    build.build_native(BUILD_DIR)
    lib = BUILD_DIR / build.LIBRARIES["plugins"]
    assert lib.is_file()
    return lib


@pytest.fixture(scope="module")
def rtx_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    libdir = Path(next(iter(rtx_libs.__path__)))
    link_dir = tmp_path_factory.mktemp("rtx_symlink")
    (link_dir / "libtensorrt_rtx.so").symlink_to(libdir / "libtensorrt_rtx.so.1")
    return {**os.environ, "LD_LIBRARY_PATH": f"{link_dir}:{libdir}:{os.environ.get('LD_LIBRARY_PATH', '')}"}


def build_plugin_graph(path: Path, op: str, plugin_lib: Path, env: dict[str, str], sizes: tuple[str, str, str],
                       extra: tuple[Any, ...] = ()) -> dict[str, Any]:
    """Build ``path`` in the RTX subprocess (rtx_plugin_build.py) and check that every ``op`` node of
    the graph became a plugin layer of the built network; returns the subprocess's report."""
    import onnx

    argv = [sys.executable, str(Path(__file__).with_name("rtx_plugin_build.py")), str(path), str(plugin_lib), *sizes]
    if extra:
        argv.append(json.dumps([[n, list(a), list(b), list(c)] for n, a, b, c in extra]))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    n_nodes = sum(1 for n in onnx.load(path).graph.node if n.op_type == op)
    assert op in out["creators"]
    assert out["layer_types"].get("PLUGIN_V3", 0) == n_nodes > 0, out["layer_types"]
    assert out["memory"].get("activation_mib", 0) > 0
    out["plugin_layers"] = n_nodes
    return out


@pytest.mark.tensorrt
@pytest.mark.parametrize("name", ESC_FAMILY)
def test_plugin_graph_builds_in_rtx(name: str, plugin_lib: Path, rtx_env: dict[str, str], tmp_path: Path) -> None:
    from srdeploy.export.api import export_model

    res = export_model(name, min(descriptor(name).scales or (2,)), tmp_path, plugins=True, run_validation=False)
    # a small profile (min, opt = max = 96x96) for CI time: the plugin's build-time calls (shape,
    # format, serialisation) are the same at every shape; the descriptor profile was built by hand
    p = descriptor(name).trt_profile
    out = build_plugin_graph(res.onnx_path, "SRWindowAttention", plugin_lib, rtx_env, (str(p.min), "96x96", "96x96"))
    assert out["engine_bytes"] > 100_000
    print(f"{name} plugins: {out['plugin_layers']} plugin layers, {out['engine_bytes'] / 2**20:.1f} MiB, "
          f"{out['memory']}")


CIAOSR = ["ciaosr", pytest.param("ciaosr.rdn", marks=[pytest.mark.slow, HEAVY_SKIP]),
          pytest.param("ciaosr.swinir", marks=[pytest.mark.slow, HEAVY_SKIP])]


@pytest.mark.tensorrt
@pytest.mark.parametrize("name", CIAOSR)
def test_ciaosr_plugin_decoder_builds_in_rtx(name: str, plugin_lib: Path, rtx_env: dict[str, str],
                                             tmp_path: Path) -> None:
    """The decoder with CiaoSRLocalEnsemble nodes, at the profile its manifest's trtexec command names."""
    from rtx_helpers import two_graph_shapes
    from srdeploy.export.api import export_model

    res = export_model(name, 2, tmp_path, plugins=True, run_validation=False)
    dec = res.manifest["graphs"]["decoder"]
    assert dec["plugins"] == ["CiaoSRLocalEnsemble"], dec["plugins"]
    prof, extra = two_graph_shapes(res.manifest, "decoder")
    sizes = (str(prof.min[1]), str(prof.opt[1]), str(prof.max[1]))
    out = build_plugin_graph(res.outdir / dec["file"], "CiaoSRLocalEnsemble", plugin_lib, rtx_env, sizes, extra)
    assert out["engine_bytes"] > 10_000
    print(f"{name} decoder plugins: {out['plugin_layers']} plugin layers, {out['engine_bytes'] / 2**20:.1f} MiB, "
          f"{out['memory']}")
