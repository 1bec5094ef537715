"""Kernel algorithms executed on the CPU: emulations vs the PyTorch references, and the references
vs the definitions (explicit loops) and vs the models' own contract-A/B functions."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from srdeploy.plugins import build
from srdeploy.plugins.emulation import emulate_local_ensemble, emulate_window_attention
from srdeploy.plugins.ort import np_local_ensemble, np_window_attention
from srdeploy.plugins.reference import local_ensemble_ref, relative_position_index, window_attention_ref
from srdeploy.plugins.spec import LOCAL_ENSEMBLE, WINDOW_ATTENTION, load_spec


def _rel(out: np.ndarray, ref: np.ndarray) -> float:
    out64, ref64 = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(out64 - ref64).max() / np.abs(ref64).max())


def _inputs(windows: int, heads: int, window: int, d: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    n = window * window
    q, k, v = (torch.randn(windows, heads, n, d, generator=g) for _ in range(3))
    table = torch.randn(heads, (2 * window - 1) ** 2, generator=g)
    return q, k, v, table


def test_relative_index_matches_the_definition() -> None:
    w = 4
    span = 2 * w - 1
    for convention in ("k-q", "q-k"):
        idx = relative_position_index(w, convention)
        for qi in range(w * w):
            qy, qx = divmod(qi, w)
            for ki in range(w * w):
                ky, kx = divmod(ki, w)
                if convention == "k-q":
                    want = (ky - qy + w - 1) * span + (kx - qx + w - 1)
                else:
                    want = (qy - ky + w - 1) * span + (qx - kx + w - 1)
                assert idx[qi, ki] == want


def test_reference_matches_an_explicit_loop() -> None:
    q, k, v, table = _inputs(2, 2, 8, 16, seed=1)
    out = window_attention_ref(q, k, v, table, window=8, bias_index="q-k", scale=0.3).numpy()
    idx = relative_position_index(8, "q-k")
    b, h, i = 1, 1, 37
    logits = np.array([float(q[b, h, i] @ k[b, h, j]) * 0.3 + float(table[h, idx[i, j]]) for j in range(64)])
    p = np.exp(logits - logits.max())
    p /= p.sum()
    want = p @ v[b, h].numpy().astype(np.float64)
    np.testing.assert_allclose(out[b, h, i], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("convention", ["k-q", "q-k"])
def test_reference_matches_models_contract_a(convention: str) -> None:
    from srdeploy.models import attention
    q, k, v, table = _inputs(3, 2, 8, 16, seed=2)
    ours = window_attention_ref(q, k, v, table, window=8, bias_index=convention)
    theirs = attention.window_attention(q, k, v, table, window=8, bias_index=convention)
    assert _rel(ours.numpy(), theirs.numpy()) <= 1e-5


def test_local_ensemble_reference_matches_models_contract_b() -> None:
    from srdeploy.models import ciaosr
    g = torch.Generator().manual_seed(3)
    query, keys, values = torch.randn(9, 20, generator=g), torch.randn(9, 4, 20, generator=g), torch.randn(9, 4, 7)
    theirs = ciaosr.local_ensemble(query, keys, values).numpy()
    assert _rel(local_ensemble_ref(query, keys, values).numpy(), theirs) <= 1e-5


def test_emulation_uses_the_kernel_tile_sizes() -> None:
    """The spec's tile sizes are the ones compiled into the kernels."""
    header = (build.REPO_ROOT / "plugins" / "csrc" / "sr_kernels.h").read_text()
    tile = int(re.search(r"kWinAttnTile = (\d+);", header).group(1))  # type: ignore[union-attr]
    spec = load_spec(WINDOW_ATTENTION)
    assert spec.kernel["query_tile"] == spec.kernel["key_tile"] == tile
    ens = (build.REPO_ROOT / "plugins" / "csrc" / "CiaoSRLocalEnsemble" / "kernel.cu").read_text()
    assert f"kWarpsPerBlock = {load_spec(LOCAL_ENSEMBLE).kernel['warps_per_block']};" in ens


CASES = [
    (8, 16, "k-q", 3, 2),
    (8, 32, "q-k", 2, 1),
    (16, 16, "q-k", 1, 3),
    (16, 32, "k-q", 1, 1),
    (32, 16, "k-q", 1, 4),  # ESC: 32x32 windows, 4 heads x d16
    (32, 32, "q-k", 1, 1),
]


@pytest.mark.parametrize(("window", "d", "convention", "windows", "heads"), CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_window_attention_emulation_vs_reference(
    window: int, d: int, convention: str, windows: int, heads: int, dtype: type
) -> None:
    q, k, v, table = _inputs(windows, heads, window, d, seed=window * d + heads)
    qn, kn, vn = (x.numpy().astype(dtype) for x in (q, k, v))
    # a large-magnitude table makes the online rescaling matter (tile maxima jump between tiles)
    tn = (table * 4).numpy()
    scale = 0.7 / math.sqrt(d)
    emu = emulate_window_attention(qn, kn, vn, tn, window=window, bias_index=convention, scale=scale)
    assert emu.dtype == dtype
    ref = window_attention_ref(
        *(torch.from_numpy(x.astype(np.float32)) for x in (qn, kn, vn)),
        torch.from_numpy(tn),
        window=window,
        bias_index=convention,
        scale=scale,
    ).numpy()
    key = "emulation_vs_reference_" + ("float16" if dtype == np.float16 else "float32")
    assert _rel(emu, ref) <= load_spec(WINDOW_ATTENTION).max_rel(key)


def test_emulation_detects_a_wrong_convention() -> None:
    q, k, v, table = _inputs(1, 2, 8, 16, seed=5)
    emu = emulate_window_attention(q.numpy(), k.numpy(), v.numpy(), (table * 4).numpy(), window=8, bias_index="q-k")
    ref = window_attention_ref(q, k, v, table * 4, window=8, bias_index="k-q").numpy()
    assert _rel(emu, ref) > 1e-2


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(("c1", "c2"), [(36, 30), (1620, 1800), (5, 3)])
def test_local_ensemble_emulation_vs_reference(dtype: type, c1: int, c2: int) -> None:
    g = torch.Generator().manual_seed(c1)
    query = torch.randn(2, 13, c1, generator=g)
    keys = torch.randn(2, 13, 4, c1, generator=g) * (3.0 / math.sqrt(c1))  # scores of a few units
    values = torch.randn(2, 13, 4, c2, generator=g)
    qn, kn, vn = (x.numpy().astype(dtype) for x in (query, keys, values))
    emu = emulate_local_ensemble(qn, kn, vn)
    assert emu.shape == (2, 13, c2) and emu.dtype == dtype
    ref = local_ensemble_ref(*(torch.from_numpy(x.astype(np.float32)) for x in (qn, kn, vn))).numpy()
    key = "emulation_vs_reference_" + ("float16" if dtype == np.float16 else "float32")
    assert _rel(emu, ref) <= load_spec(LOCAL_ENSEMBLE).max_rel(key)


def test_pyop_numpy_kernels_match_the_references() -> None:
    q, k, v, table = _inputs(2, 2, 8, 32, seed=7)
    ref = window_attention_ref(q, k, v, table, window=8, bias_index="q-k", scale=0.2).numpy()
    got = np_window_attention(q.numpy(), k.numpy(), v.numpy(), table.numpy(), window=8, bias_index="q-k", scale=0.2)
    assert _rel(got, ref) <= 1e-6
    g = torch.Generator().manual_seed(8)
    query, keys, values = torch.randn(6, 10, generator=g), torch.randn(6, 4, 10, generator=g), torch.randn(6, 4, 3)
    ref2 = local_ensemble_ref(query, keys, values).numpy()
    assert _rel(np_local_ensemble(query.numpy(), keys.numpy(), values.numpy()), ref2) <= 1e-6


@pytest.mark.parametrize(
    ("window", "d", "convention", "windows", "heads"),
    [(8, 16, "k-q", 2, 2), (8, 32, "q-k", 1, 2), (16, 16, "q-k", 1, 1)],
)
def test_fp16_kernel_lane_level_replay(window: int, d: int, convention: str, windows: int, heads: int) -> None:
    """Every lane's registers, the mma.m16n8k16 fragment layouts, shared-memory addressing and quad
    shuffles of windowAttentionF16, replayed: all outputs written, result within the fp16 tolerance."""
    from srdeploy.plugins.emulation import emulate_window_attention_f16_lanes

    q, k, v, table = _inputs(windows, heads, window, d, seed=11 + d)
    qn, kn, vn = (x.half().numpy() for x in (q, k, v))
    tn = (table * 4).numpy()
    lanes = emulate_window_attention_f16_lanes(qn, kn, vn, tn, window=window, bias_index=convention, scale=0.3)
    assert not np.isnan(lanes).any(), "some output element was never written"
    ref = window_attention_ref(
        *(torch.from_numpy(x.astype(np.float32)) for x in (qn, kn, vn)),
        torch.from_numpy(tn),
        window=window,
        bias_index=convention,
        scale=0.3,
    ).numpy()
    assert _rel(lanes, ref) <= load_spec(WINDOW_ATTENTION).max_rel("emulation_vs_reference_float16")
    tiled = emulate_window_attention(qn, kn, vn, tn, window=window, bias_index=convention, scale=0.3)
    assert _rel(lanes, tiled) <= 2e-3  # the two replays agree up to fp16 output rounding


def test_cpp_names_and_versions_follow_the_specs() -> None:
    """Each plugin's C++ name and version constant equal its spec (plugins/<Op>.json)."""
    from pathlib import Path

    from srdeploy.plugins.registry import PLUGINS

    # the constants are generated from the specs (csrc/sr_plugin_table.gen.h); the plugin classes use them
    header = (Path(build.__file__).parent / "csrc" / "sr_plugin_table.gen.h").read_text()
    consts = dict(re.findall(r'constexpr char const\* (k\w+) = "([^"]*)";', header))
    cpp = {"SRWindowAttention": "kWindowAttention", "CiaoSRLocalEnsemble": "kLocalEnsemble"}
    assert set(cpp) == set(PLUGINS)
    for op, prefix in cpp.items():
        classes = (Path(build.__file__).parent / "csrc" / op / "plugin.h").read_text()
        assert f"return {prefix}Version;" in classes and f"return {prefix}Name;" in classes
    for op, prefix in cpp.items():
        spec = load_spec(op)
        assert consts[f"{prefix}Name"] == spec.op_type
        assert consts[f"{prefix}Version"] == spec.plugin_version
