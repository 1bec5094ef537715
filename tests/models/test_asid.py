"""ASID / ASID-D8: structure, faithfulness to the authors' code, and the traps of this family.

Fixtures in tests/fixtures/asid/ come from the authors' modules (tests/fixtures/make_asid.py) run
with seeded weights on inputs whose sizes are not multiples of 8, in float64.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from srdeploy.models._testing import load_fixture, rel_max_err, seeded_input, seeded_state_dict
from srdeploy.models.asid import (
    ASID,
    SpatialAttention,
    grid_partition,
    grid_unpartition,
    relative_position_index,
    window_partition,
    window_unpartition,
)

from srdeploy import models
from srdeploy.errors import CheckpointError, ShapeError
from srdeploy.tiling import Tiling, tiled_apply

PARAMS = {
    ("asid", 2): 297_516,
    ("asid", 3): 304_011,
    ("asid", 4): 313_104,
    ("asid.d8", 2): 732_146,
    ("asid.d8", 3): 738_641,
    ("asid.d8", 4): 747_734,
}
LAYERS = ("SLA1", "SGA1", "SLA2", "SGA2", "SLA3", "SGA3")  # the order of the shared maps a1..a6
FIXTURES = sorted((Path(__file__).parents[1] / "fixtures" / "asid").glob("*.npz"))
SEED = 7


def _seeded(name: str, scale: int, seed: int = SEED) -> ASID:
    model = models.build(name, scale)
    model.load_state_dict(seeded_state_dict(model.state_dict(), seed))
    return model


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize(("name", "scale"), sorted(PARAMS))
def test_builds_with_exact_params_and_odd_forward(name: str, scale: int) -> None:
    model = _seeded(name, scale)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name, scale]
    x = seeded_input((1, 3, 11, 13), 1)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 3, 11 * scale, 13 * scale)
    assert torch.isfinite(y).all()


def test_descriptor() -> None:
    for name in ("asid", "asid.d8"):
        d = models.descriptor(name)
        assert d.family == "asid" and d.scales == (2, 3, 4)
        assert d.input_range == "-1-1" and d.size_multiple == 8 and d.min_size == 9
        assert d.default_tiling == Tiling(64, 24, "average")
        assert d.fp16 and not d.needs_fusion
        assert d.weights_license == "not stated by the authors"
        assert "saturnian77/ASID@" in d.source and "Omni-SR@" in d.source
    assert models.descriptor("asid").hparams["res_num"] == 3
    assert models.descriptor("asid.d8").hparams["res_num"] == 8


def test_min_size() -> None:
    """ESA's stride-2 valid conv + 7x7 max-pool need 16 padded pixels: 9 is the smallest LR side."""
    model = _seeded("asid", 2)
    with torch.no_grad():
        assert model(seeded_input((1, 3, 9, 40), 2)).shape == (1, 3, 18, 80)
        with pytest.raises(ShapeError, match="at least 9x9"):
            model(seeded_input((1, 3, 8, 40), 2))


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.stem)
def test_state_dict_keys_identical_to_authors(fixture: Path) -> None:
    meta = load_fixture(fixture)["meta"]
    model = models.build(meta["variant"], meta["scale"])
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == meta["state_dict"]
    assert not any("rel_pos_indices" in k for k in ours)  # non-persistent, as the authors have it


def test_partitions_invert_and_grid_is_dilated() -> None:
    x = torch.arange(2 * 3 * 16 * 24, dtype=torch.float32).reshape(2, 3, 16, 24)
    for part, unpart in ((window_partition, window_unpartition), (grid_partition, grid_unpartition)):
        t = part(x, 8)
        assert t.shape == (2 * 2 * 3, 64, 3)
        assert torch.equal(unpart(t, 8, 2, 16, 24), x)
    # grid group (i, j) of image b holds pixels (i + m * H/8, j + n * W/8), token m * 8 + n
    g = grid_partition(x, 8).reshape(2, 2, 3, 8, 8, 3)
    b, i, j, m, n = 1, 1, 2, 5, 7
    assert torch.equal(g[b, i, j, m, n], x[b, :, i + m * 2, j + n * 3])
    w = window_partition(x, 8).reshape(2, 2, 3, 8, 8, 3)
    assert torch.equal(w[b, i, j, m, n], x[b, :, i * 8 + m, j * 8 + n])


# ----------------------------------------------------------------------------- faithfulness


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.stem)
def test_matches_authors_code(fixture: Path) -> None:
    fx = load_fixture(fixture)
    meta = fx["meta"]
    assert meta["input_shape"][2] % 8 and meta["input_shape"][3] % 8  # exercises pad-and-crop
    model = models.build(meta["variant"], meta["scale"])
    model.load_state_dict(seeded_state_dict(model.state_dict(), meta["seed"]))
    x = torch.from_numpy(fx["input"])
    with torch.no_grad():
        out64 = model.double()(x.double())
        out32 = model.float()(x)
    assert rel_max_err(out64, fx["output"]) <= 1e-5
    # float32 (the deployed precision) stays close to the float64 reference too
    assert rel_max_err(out32, fx["output"]) <= 1e-4


# ----------------------------------------------------------------------------- attention traps


def _naive_attention_map(x: torch.Tensor, attn: SpatialAttention) -> torch.Tensor:
    """Independent loop version of block0's map for (G, 64, d) tokens, bias = table[q - k]."""
    w = attn.window
    table = attn.rel_pos_bias.weight[:, 0]
    q, k, _ = attn.to_qkv(x).chunk(3, dim=-1)
    sim = q @ k.transpose(-2, -1) / math.sqrt(x.shape[-1])
    bias = torch.empty(w * w, w * w, dtype=x.dtype)
    for qi in range(w * w):
        qy, qx = divmod(qi, w)
        for ki in range(w * w):
            ky, kx = divmod(ki, w)
            bias[qi, ki] = table[(qy - ky + w - 1) * (2 * w - 1) + (qx - kx + w - 1)]
    return (sim + bias).softmax(-1).unsqueeze(1)


def test_position_bias_is_query_minus_key() -> None:
    torch.manual_seed(0)
    attn = SpatialAttention(12, 8, computes_map=True).double()
    with torch.no_grad():
        attn.rel_pos_bias.weight.copy_(torch.randn(225, 1, dtype=torch.float64) * 3)  # asymmetric table
        x = torch.randn(3, 64, 12, dtype=torch.float64)
        got, _ = attn.attention_map(x)
        want = _naive_attention_map(x, attn)
        # the opposite convention (ESC's key-minus-query) would be the transposed index
        idx = relative_position_index(8)
        assert torch.equal(idx, (224 - idx).T) and not torch.equal(idx, idx.T)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    flipped = attn.rel_pos_bias.weight.flip(0)  # table[k - q] == flipped[q - k]
    with torch.no_grad():
        attn.rel_pos_bias.weight.copy_(flipped)
        other, _ = attn.attention_map(x)
    assert (other - want).abs().max() > 1e-2


def test_bias_convention_matches_contract_window_attention() -> None:
    """Our map applied to v equals the shared core's ``bias_index="q-k"`` (contract A)."""
    from srdeploy.models import attention
    torch.manual_seed(1)
    attn = SpatialAttention(12, 8, computes_map=True).double()
    x = torch.randn(2, 64, 12, dtype=torch.float64)
    with torch.no_grad():
        attn.rel_pos_bias.weight.copy_(torch.randn(225, 1, dtype=torch.float64))
        amap, v = attn.attention_map(x)
        q, k, _ = attn.to_qkv(x).unsqueeze(1).chunk(3, dim=-1)
        table = attn.rel_pos_bias.weight.T  # (heads=1, 225): the compact table of the contract
        ref = attention.window_attention(q, k, v, table, window=8, bias_index="q-k")
    torch.testing.assert_close(amap @ v, ref, rtol=0, atol=1e-12)


def test_later_blocks_have_no_query_key_or_bias() -> None:
    model = models.build("asid.d8", 2)
    first, *rest = model.blocks()
    assert all(getattr(first.block, n).attn.computes_map for n in LAYERS)
    for blk in rest:
        names = [n for n, _ in blk.named_parameters()]
        assert not any("to_qkv" in n or "rel_pos_bias" in n for n in names)
        for layer in LAYERS:
            attn = getattr(blk.block, layer).attn
            assert not attn.computes_map
            assert {n for n, _ in attn.named_parameters()} == {"to_v.weight", "to_out.0.weight"}
    # channel attentions are never shared: every group has its own q/k for them
    for blk in model.blocks():
        assert blk.block.BlockC.cttn1.qkv.weight.shape == (144, 48, 1, 1)


def test_block0_maps_are_what_later_blocks_consume() -> None:
    model = _seeded("asid", 2)
    produced: dict[str, torch.Tensor] = {}
    consumed: dict[str, list[torch.Tensor]] = {n: [] for n in LAYERS}
    hooks = []
    for n in LAYERS:
        layer = getattr(model.block0.block, n)
        hooks.append(layer.register_forward_hook(lambda m, a, out, n=n: produced.__setitem__(n, out[1])))
        for blk in model.blocks()[1:]:
            sub = getattr(blk.block, n).attn
            hooks.append(sub.register_forward_pre_hook(lambda m, a, n=n: consumed[n].append(a[1])))
    x = seeded_input((1, 3, 24, 40), 3)
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    n_groups = (24 // 8) * (40 // 8)
    for n in LAYERS:
        assert produced[n].shape == (n_groups, 1, 64, 64)
        torch.testing.assert_close(produced[n].sum(-1), torch.ones(n_groups, 1, 64))  # post-softmax
        assert len(consumed[n]) == 2 and all(c is produced[n] for c in consumed[n])


@pytest.mark.parametrize("layer", ["SLA1", "SGA3"])
def test_perturbing_block0_maps_changes_later_blocks(layer: str) -> None:
    """Replace ONE map block0 returns (its features untouched): later groups must change."""
    model = _seeded("asid", 2)
    x = seeded_input((1, 3, 24, 24), 4)
    seen: list[torch.Tensor] = []
    with torch.no_grad():
        base_feat, base_maps = model.block0(model.input((x - 0.5) * 2))
        base = model(x)

        def swap(m: torch.nn.Module, a: tuple, out: tuple) -> tuple:
            uniform = torch.full_like(out[1], 1.0 / 64)
            seen.append(uniform)
            return out[0], uniform

        hook = getattr(model.block0.block, layer).register_forward_hook(swap)
        feat, maps = model.block0(model.input((x - 0.5) * 2))
        perturbed = model(x)
        hook.remove()
    assert torch.equal(feat, base_feat)  # block0's own output does not depend on the returned map
    i = LAYERS.index(layer)
    assert maps[i] is seen[0]
    assert all(torch.equal(maps[j], base_maps[j]) for j in range(6) if j != i)
    assert (perturbed - base).abs().max() > 1e-3


# ----------------------------------------------------------------------------- batch, loading


def test_batch_equals_single_runs() -> None:
    model = _seeded("asid", 3).double()
    x = seeded_input((2, 3, 19, 26), 5).double()
    with torch.no_grad():
        both = model(x)
        one = torch.cat([model(x[:1]), model(x[1:])])
    torch.testing.assert_close(both, one, rtol=0, atol=1e-12)


def test_raw_state_dict_checkpoint_loads(tmp_path: Path) -> None:
    ref = _seeded("asid", 4, seed=11)
    path = tmp_path / "epoch0_ASID.pth"
    torch.save(ref.state_dict(), path)  # the authors' checkpoints are the raw state dict
    model = models.build("asid", 4, weights=path)
    x = seeded_input((1, 3, 12, 17), 6)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="unexpected keys: block3"):
        models.build("asid", 4, weights=_save(_seeded("asid.d8", 4), tmp_path / "d8.pth"))
    with pytest.raises(CheckpointError, match="mis-shaped"):
        models.build("asid", 2, weights=path)  # x4 weights into the x2 model


def _save(model: torch.nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path


# ----------------------------------------------------------------------------- tiling protocol


def _authors_tile_protocol(fn, lr: np.ndarray, scale: int, tile: int = 64, overlap: int = 24) -> np.ndarray:
    """The test protocol of tester_Matlab.py, re-implemented: one square tile of min(tile, h, w),
    starts every tile - overlap plus the last one snapped to the border, uniform averaging."""
    n, _, h, w = lr.shape
    tile = min(tile, h, w)
    stride = tile - overlap
    ys = [*range(0, h - tile, stride), h - tile]
    xs = [*range(0, w - tile, stride), w - tile]
    acc = np.zeros((n, 3, h * scale, w * scale))
    cnt = np.zeros_like(acc)
    for y in ys:
        for x in xs:
            acc[..., y * scale : (y + tile) * scale, x * scale : (x + tile) * scale] += fn(
                lr[..., y : y + tile, x : x + tile]
            )
            cnt[..., y * scale : (y + tile) * scale, x * scale : (x + tile) * scale] += 1
    return acc / cnt


@pytest.mark.slow
def test_default_tiling_reproduces_authors_protocol() -> None:
    """For LR images of at least 64x64, tiled_apply with the descriptor's tiling is the authors'
    protocol (same tiles, same averaging). Smaller images differ: see docs/asid.md."""
    model = _seeded("asid", 2)
    cache: dict[bytes, np.ndarray] = {}  # both protocols cut the same tiles: run each once

    def fn(a: np.ndarray) -> np.ndarray:
        key = np.ascontiguousarray(a).tobytes() + bytes(str(a.shape), "ascii")
        if key not in cache:
            with torch.no_grad():
                cache[key] = model(torch.from_numpy(np.ascontiguousarray(a))).numpy()
        return cache[key]

    lr = seeded_input((1, 3, 72, 90), 8).numpy()
    ours = tiled_apply(fn, lr, 2, models.descriptor("asid").default_tiling)
    np.testing.assert_allclose(ours, _authors_tile_protocol(fn, lr, 2), rtol=0, atol=1e-6)
    assert len(cache) == 4  # tiles at rows 0, 8 and columns 0, 26
    # grid attention sees the tile: whole-image inference is a different function
    whole = fn(lr)
    assert np.abs(whole - ours).max() > 1e-3
