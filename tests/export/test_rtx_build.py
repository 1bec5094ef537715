"""A real builder in CI: every registered model's export built by TensorRT-RTX on CPU.

TensorRT-RTX (``tensorrt-rtx-cu13-bindings``, pinned in the dev extra) parses and compiles
engines ahead of time without a GPU. Each test takes the export the suite already made (the
session ``exports`` fixture of tests/export/conftest.py), builds it with the descriptor's
optimisation profile, and checks what the real builder produced: an engine, the builder's memory
report, and for fp16 graphs fp16 layers in the parsed network. Running the engines needs an RTX
GPU (SM75/80/86/89/120) and is not done here.

What this checks that the recording double (test_engine.py) cannot: that the ONNX graphs parse in
NVIDIA's parser (every op, every dynamic shape), that the strongly typed network and the profile
are accepted and compile, and the builder's activation/weights memory. What stays on the double:
TensorRT 10.3 / 11.x specifics (timing cache, GPU-bound cache key, trtexec/sidecar version check).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import onnx
import pytest
from rtx_helpers import conv_output_dtypes, rtx_network_types, two_graph_shapes
from srdeploy.export.engines import get_flavour
from srdeploy.export.engines.base import EngineMemoryError
from srdeploy.export.engines.export_step import EngineRequest, build_engine, grown_workspace_mib
from srdeploy.export.manifest import BatchedProfile
from srdeploy.models import descriptor, list_models

trt = pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX bindings not installed (pip install "
                          "'srdeploy[rtx]')")

HEAVY = {"esc.real", "ciaosr.rdn", "ciaosr.swinir"}
SINGLE = [n for n in list_models() if descriptor(n).scales is not None]
TWO_GRAPH = [n for n in list_models() if descriptor(n).scales is None]
# seeded random A2N weights fail the fp16 validation gate (tests/export/test_export_models.py
# ILL_CONDITIONED_FP16); their fp16 graph is still a real graph to build, made without the gate.
UNGATED_FP16 = {"a2n", "a2n.m"}


# The heavy builds (ESC-Real, CiaoSR-RDN/SwinIR: 1-3 min each on 2 idle cores, most of it their
# export) run in CI; they are marked slow (``-m "not slow"`` skips them) and SRDEPLOY_RTX_QUICK=1
# skips them too for a quick local run.
HEAVY_SKIP = pytest.mark.skipif(bool(os.environ.get("SRDEPLOY_RTX_QUICK")),
                                reason="heavy TensorRT-RTX build skipped (SRDEPLOY_RTX_QUICK is set)")


def _params(names: list[str]) -> list[Any]:
    return [pytest.param(n, marks=[pytest.mark.slow, HEAVY_SKIP]) if n in HEAVY else n for n in names]


def network_stats(data: bytes) -> dict[str, Any]:
    return {"types": rtx_network_types(trt, data), "conv_dtypes": conv_output_dtypes(trt, data)}


def rtx_build(onnx_path: Path, manifest: dict[str, Any], profile: BatchedProfile, tmp: Path) -> dict[str, Any]:
    """Build like ``sr-export --engine rtx`` (default workspace, growth on OOM) into ``tmp``."""
    local = tmp / onnx_path.name
    local.write_bytes(onnx_path.read_bytes())
    man = copy.deepcopy(manifest)
    req = EngineRequest(get_flavour("rtx"), trt)
    res = build_engine(req, local, tmp / "manifest.json", man, profile, workspace_mib=4096, opt_level=3,
                       cache_dir=tmp / "cache")
    assert res.engine_path.stat().st_size > 100_000 and not res.cached
    eng = json.loads((tmp / "manifest.json").read_text())["engine"]
    assert eng["flavour"] == "rtx" and eng["version"] == trt.__version__
    assert eng["builder_memory"]["activation_mib"] > 0 and eng["builder_memory"]["weights_mib"] > 0
    print(f"{onnx_path.name}: {eng['build_seconds']:.1f} s, {eng['engine_mib']} MiB engine, "
          f"{eng['builder_memory']['activation_mib']} MiB activations, workspace {eng['workspace_mib']} MiB")
    return eng


# CI builds at a small profile (descriptor min, opt = max = 96x96 or the descriptor's max if smaller):
# at the descriptor profiles (up to 720x1280) a build took up to 231 s (ASID-D8) and ESC-Real
# fp32 more than 10 minutes on the shared 2-core machine, far over this file's CI share. The
# descriptor profiles were built once by hand for docs/export.md's table; one test below keeps
# esc.light fp32 at its descriptor profile, which must fit the default workspace.
CI_SIDE = 96


def _profile(name: str) -> BatchedProfile:
    from srdeploy.models.registry import ShapeProfile

    from srdeploy.sizes import Size

    p = descriptor(name).trt_profile
    top = Size(min(max(CI_SIDE, p.min.h), p.max.h), min(max(CI_SIDE, p.min.w), p.max.w))
    return BatchedProfile.from_shapes(ShapeProfile(p.min, top, top))


@pytest.mark.tensorrt
def test_rtx_fp32_esc_light_descriptor_profile_fits_the_default_workspace(exports, tmp_path: Path) -> None:
    """Portable fp32 ESC materialises (windows, 4, N, 1024) scores; unchunked, 4 GiB was not enough
    at 360x640 (the builder requested 4101 MiB, benchmarks/bench_chunked_attention.py). In 8 chained
    query blocks (the builders' default attn_chunks=8) it builds with the default workspace."""
    res = exports.get("esc.light")
    assert sum(1 for n in onnx.load(res.onnx_path).graph.node if n.op_type == "Softmax") == 3 * 8
    eng = rtx_build(res.onnx_path, res.manifest, BatchedProfile.from_shapes(descriptor("esc.light").trt_profile),
                    tmp_path)
    assert eng["workspace_source"] == "default" and eng["workspace_mib"] == 4096
    assert eng["builder_memory"]["activation_mib"] < 2048


@pytest.mark.tensorrt
@pytest.mark.parametrize("name", _params(SINGLE))
def test_rtx_builds_fp32(exports, name: str, tmp_path: Path) -> None:
    res = exports.get(name)
    stats = network_stats(res.onnx_path.read_bytes())
    assert stats["conv_dtypes"]["FLOAT"] > 0 and stats["conv_dtypes"]["HALF"] == 0
    eng = rtx_build(res.onnx_path, res.manifest, _profile(name), tmp_path)
    assert eng["workspace_source"] == "default"


@pytest.mark.tensorrt
@pytest.mark.parametrize("name", _params([n for n in SINGLE if descriptor(n).fp16]))
def test_rtx_builds_fp16_with_fp16_layers(exports, name: str, tmp_path: Path) -> None:
    if name in UNGATED_FP16:
        from srdeploy.export.api import export_model

        base = exports.get(name)
        res = export_model(name, exports.scale(name), tmp_path / "fp16", fp16=True, reuse=base, run_validation=False)
    else:
        res = exports.get(name, fp16=True)
    stats = network_stats(res.onnx_path.read_bytes())
    half, full = stats["conv_dtypes"]["HALF"], stats["conv_dtypes"]["FLOAT"]
    assert half > 0 and half >= full, stats["conv_dtypes"]  # fp16 layers, a minority of fp32 islands
    eng = rtx_build(res.onnx_path, res.manifest, _profile(name), tmp_path)
    assert eng["workspace_source"] == "default"


@pytest.mark.parametrize("name", _params(TWO_GRAPH))
def test_ciaosr_encoder_parses_in_rtx_without_col2im(exports, name: str) -> None:
    res = exports.get(name)
    path = res.outdir / res.manifest["graphs"]["encoder"]["file"]
    assert not any(n.op_type == "Col2Im" for n in onnx.load(path).graph.node)
    assert network_stats(path.read_bytes())["types"]  # parses (asserted inside)


@pytest.mark.tensorrt
@pytest.mark.parametrize("name", _params(TWO_GRAPH))
@pytest.mark.parametrize("role", ["encoder", "decoder"])
def test_rtx_builds_ciaosr_graphs(exports, name: str, role: str, tmp_path: Path) -> None:
    res = exports.get(name)
    path = res.outdir / res.manifest["graphs"][role]["file"]
    nodes = onnx.load(path).graph.node
    assert not any(n.op_type == "Col2Im" for n in nodes), "the encoder fold must not use Col2Im"
    # the cross-scale attention's 1/2 bilinear downsample is strided slices: TensorRT-RTX 1.7's Myelin
    # failed on its traced Resize ("Resize shape dims should be non-negative")
    assert role == "decoder" or not any(n.op_type == "Resize" for n in nodes)
    network_stats(path.read_bytes())
    prof, extra = two_graph_shapes(res.manifest, role)
    # measured: the SwinIR encoder asks 4145 MiB at 192x192, so with 4096 MiB it fails for memory;
    # it starts at what sr-export's growth rule reaches (8192 MiB) to spare CI the failed attempt
    workspace = 8192 if (name, role) == ("ciaosr.swinir", "encoder") else 4096
    try:
        out = _build_two_graph(path, prof, extra, workspace, tmp_path / f"{role}.engine")
    except EngineMemoryError as exc:  # sr-export's rule for the default workspace: grow past the request once
        grown = grown_workspace_mib(workspace, exc.requested_bytes or 0)
        assert grown, exc
        workspace = grown
        out = _build_two_graph(path, prof, extra, workspace, tmp_path / f"{role}.engine")
    assert out.engine_path.stat().st_size > 10_000 and out.memory.get("activation_mib", 0) > 0
    print(f"{name} {role}: {out.build_seconds:.1f} s, workspace {workspace} MiB, {out.memory}")


def _build_two_graph(path: Path, prof: BatchedProfile, extra: tuple[Any, ...], workspace_mib: int,
                     dest: Path) -> Any:
    from srdeploy.export.engines import EngineFromOnnx, EngineOptions

    opts = EngineOptions((prof,), extra_inputs=extra, workspace_bytes=workspace_mib << 20)
    return EngineFromOnnx(path, opts, cache_dir=dest.parent / "cache", api=trt, flavour=get_flavour("rtx"),
                          log=lambda m: None)(dest)
