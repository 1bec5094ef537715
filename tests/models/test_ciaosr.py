"""CiaoSR: registry, parameter counts, faithfulness to the authors' code, arbitrary scale, the
encoder/decoder split and the torch-free decode driver.

Reference fixtures come from tests/fixtures/make_ciaosr.py (the authors' generator with seeded
weights). The RDN and SwinIR forward tests are marked slow; inputs stay tiny throughout.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from srdeploy.models._testing import load_fixture, rel_max_err, seeded_input, seeded_state_dict
from srdeploy.models.ciaosr import CiaoSR, local_ensemble, one_hot_patches, torch_decoder_fn

from srdeploy import models
from srdeploy.errors import CheckpointError, ShapeError, SrdeployError, UnsupportedScaleError
from srdeploy.implicit import decode_image, hr_size, make_cell, make_coord, upscale_image
from srdeploy.tiling import Tiling, iter_tiles

TOL = 1e-5
NAMES = {"edsr": "ciaosr", "rdn": "ciaosr.rdn", "swinir": "ciaosr.swinir"}
PARAMS = {"ciaosr": 2_649_030, "ciaosr.rdn": 23_402_566, "ciaosr.swinir": 14_667_218}
FIXTURES = ["edsr_x2", "edsr_x3_b2", "edsr_x2.5", "edsr_x3.7", "rdn_x2", "swinir_x2"]


def _seeded(name: str, scale: int = 2, seed: int = 0, **options: object) -> CiaoSR:
    model = models.build(name, scale, **options)
    model.load_state_dict(seeded_state_dict(model.state_dict(), seed))
    return model


@pytest.fixture(scope="module")
def edsr() -> CiaoSR:
    return _seeded("ciaosr", 2, seed=7)


# ------------------------------------------------------------------ registry and structure


def test_registered_with_descriptors() -> None:
    names = models.list_models()
    for name in PARAMS:
        assert name in names
        d = models.descriptor(name)
        assert d.family == "ciaosr"
        assert d.scales is None  # any scale
        assert d.input_range == "0-1"
        assert d.default_tiling == Tiling(192, 32, "average")
        assert d.weights_license == "CC BY-NC 4.0"
        assert d.source == "caojiezhang/CiaoSR@adac6df"
        assert d.trt_profile.max.h == 192
    assert models.descriptor("ciaosr").min_size == 2
    assert models.descriptor("ciaosr.swinir").min_size == 5
    assert models.descriptor("ciaosr.swinir").hparams["feat_dim"] == 180


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_count_and_keys(name: str) -> None:
    model = models.build(name, 4)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    keys = set(model.state_dict())
    common = {
        "imnet_q.layers.8.weight",
        "imnet_k.layers.0.weight",
        "imnet_v.layers.8.bias",
        "cs_attn.conv_match_1.0.weight",
        "cs_attn.conv_match_2.1.weight",
        "cs_attn.conv_assembly.1.weight",
        "cs_attn.down.weight",
        "cs_attn.escape_NaN",
    }
    specific = {
        "ciaosr": {"conv_first.weight", "body.15.conv2.bias", "conv_after_body.weight"},
        "ciaosr.rdn": {"sfe1.weight", "sfe2.bias", "rdbs.15.layers.7.conv.weight", "rdbs.0.lff.weight", "gff.1.bias"},
        "ciaosr.swinir": {
            "conv_first.weight",
            "patch_embed.norm.weight",
            "layers.5.residual_group.blocks.5.attn.relative_position_bias_table",
            "layers.0.residual_group.blocks.0.attn.relative_position_index",
            "layers.0.residual_group.blocks.1.attn_mask",
            "layers.5.conv.weight",
            "norm.bias",
            "conv_after_body.weight",
        },
    }[name]
    assert common | specific <= keys
    assert not any(k.startswith(("encoder.", "_")) or "unfold_weight" in k or "patch_big" in k for k in keys)
    assert model.imnet_q.layers[0].in_features == 10 * model.feat_dim


def test_copies_keep_the_adopted_backbone_consistent() -> None:
    """The backbone's modules are adopted at the top level (authors' keys); copies and dtype
    casts must move the modules the backbone's forward uses."""
    import copy

    model = models.build("ciaosr", 2)
    clone = copy.deepcopy(model)
    assert clone._encoder_fn[0].conv_first is clone.conv_first is not model.conv_first
    clone.double()
    x = seeded_input((1, 3, 4, 5), 0).double()
    with torch.no_grad():
        assert clone(x).dtype == torch.float64


def test_unfold_as_grouped_conv_is_exact() -> None:
    x = torch.randn(2, 5, 7, 6)
    conv = torch.nn.functional.conv2d(x, one_hot_patches(5, 3), padding=1, groups=5)
    assert torch.equal(conv.flatten(2), torch.nn.functional.unfold(x, 3, padding=1))


def test_cross_scale_attention_equals_per_sample_conv_form() -> None:
    """The batched MatMul/Softmax/fold NLA equals the per-sample conv / conv_transpose form of
    docs/architectures.md 5.2 (kernels from the half-size map, transposed conv with 6x6 patches)."""
    fn = torch.nn.functional
    nla = CiaoSR("edsr").cs_attn
    nla.load_state_dict(seeded_state_dict(nla.state_dict(), 3))
    nla.escape_NaN.fill_(1e-4)  # the released value (seeding randomises buffers too)
    f = torch.randn(2, 64, 7, 10)
    with torch.no_grad():
        ours = nla(f)
        x = fn.pad(f, (0, 0, 0, 1), mode="reflect")  # 7 -> 8 rows
        embed, match = nla.conv_assembly(x), nla.conv_match_1(x)
        ref = nla.conv_match_2(fn.interpolate(x, scale_factor=0.5, mode="bilinear"))
        outs = []
        for i in range(2):
            kern = fn.unfold(ref[i : i + 1], 3, padding=1)[0].t().reshape(-1, 32, 3, 3)  # (L, 32, 3, 3)
            norm = kern.flatten(1).norm(dim=1).clamp_min(1e-4).view(-1, 1, 1, 1)
            score = torch.softmax(fn.conv2d(match[i : i + 1], kern / norm, padding=1) * 10, dim=1)
            patches = fn.unfold(embed[i : i + 1], 6, padding=2, stride=2)[0].t().reshape(-1, 64, 6, 6)
            y = fn.conv_transpose2d(score, patches, stride=2, padding=2)
            outs.append(nla.down(y) / 6)
        direct = torch.cat(outs)[:, :, :7, :10]
    assert ours.shape == (2, 64, 7, 10)
    assert rel_max_err(ours, direct) <= 1e-5
    for pixels in (1, 25, 60):  # bands of 1, 2 and 6 of the 8 padded rows
        nla.pixels_per_step = pixels
        with torch.no_grad():
            assert rel_max_err(nla(f), ours) <= 1e-5


def test_whole_image_option_bounds_nla_memory() -> None:
    x = seeded_input((1, 3, 9, 8), 6)
    one = _seeded("ciaosr", 2, seed=7)
    banded = _seeded("ciaosr", 2, seed=7, nla_pixels_per_step=16)
    assert banded.cs_attn.pixels_per_step == 16 and one.cs_attn.pixels_per_step == 0
    with torch.no_grad():
        assert rel_max_err(banded.encode(x)[1], one.encode(x)[1]) <= 1e-5


# ------------------------------------------------------------------ faithfulness


@pytest.mark.parametrize(
    "fixture", [pytest.param(f, marks=pytest.mark.slow) if not f.startswith("edsr") else f for f in FIXTURES]
)
def test_matches_authors_code(fixture: str, fixtures_dir) -> None:
    data = load_fixture(fixtures_dir / "ciaosr" / f"{fixture}.npz")
    meta = data["meta"]
    name = NAMES[meta["args"]["backbone"]]
    out_h, out_w = meta["out_size"]
    lr = torch.from_numpy(data["input"])
    model = _seeded(name, 2, seed=meta["seed"])
    with torch.no_grad():
        out = model.upscale(lr, out_size=(out_h, out_w))
    assert rel_max_err(out, data["output"]) <= TOL
    h, w = lr.shape[-2:]
    if out_h % h == 0 and out_w % w == 0 and out_h // h == out_w // w:  # integer scale: forward too
        model.scale = out_h // h
        with torch.no_grad():
            assert rel_max_err(model(lr), data["output"]) <= TOL


def test_mmcv_checkpoint_loads(tmp_path, edsr: CiaoSR) -> None:
    state = {"generator." + k: v for k, v in edsr.state_dict().items()}
    path = tmp_path / "ciaosr_edsr.pth"
    torch.save({"meta": {"mmedit_version": "0.16.0"}, "state_dict": state}, path)
    loaded = models.build("ciaosr", 2, weights=path)
    lr = seeded_input((1, 3, 6, 7), 3)
    with torch.no_grad():
        assert torch.equal(loaded(lr), edsr(lr))
    broken = {k: v for k, v in state.items() if "cs_attn.down" not in k}
    torch.save({"state_dict": broken}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"cs_attn\.down"):
        models.build("ciaosr", 2, weights=tmp_path / "broken.pth")


def test_neighbour_offset_is_ciaosr_not_liif(edsr: CiaoSR) -> None:
    """Trap: the 4 neighbours sit (1 - cell)/(H - 1) away (plus 1e-6), not LIIF's 1/H.

    LR 4x4 at x4: cell = 0.125, so the row shift is 0.2917 (LIIF: 0.25). A query at row -0.26
    (LR row 1, [-0.5, 0)) reaches row 2 with the CiaoSR offset but stays in row 1 with LIIF's.
    """
    h = w = 4
    d = edsr.feat_dim
    rows = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1).expand(1, 1, h, w)
    cols = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(1, 1, h, w)
    feat_k = torch.cat([rows, cols, torch.zeros(1, 9 * d - 2, h, w)], 1)
    feat_v = torch.cat([feat_k, torch.zeros(1, d, h, w)], 1)
    coord = torch.tensor([[[-0.26, 0.1]]])
    cell = torch.full((1, 1, 2), 2 / 16)
    seen: list[torch.Tensor] = []
    handle = edsr.imnet_k.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    try:
        with torch.no_grad():
            edsr.decode(feat_k, feat_v, torch.zeros(1, 3, h, w), coord, cell)
    finally:
        handle.remove()
    inp = seen[0].view(4, -1)  # one query, neighbours (-1,-1), (-1,1), (1,-1), (1,1)
    sampled_rows = inp[:, 0].tolist()
    r = (1 - 0.125) / (h - 1)
    assert r != pytest.approx(1 / h)
    expect = [math.floor(((-0.26 + vy * r + 1e-6 + 1) * h) / 2) for vy in (-1, -1, 1, 1)]
    liif = [math.floor(((-0.26 + vy / h + 1e-6 + 1) * h) / 2) for vy in (-1, -1, 1, 1)]
    assert sampled_rows == expect == [0.0, 0.0, 2.0, 2.0]
    assert sampled_rows != liif
    # relative coordinate input = (query - sampled LR centre) * H, cell input = cell * (H, W)
    centre_row = -1 + (2 * 2 + 1) / h
    assert inp[2, -4].item() == pytest.approx((-0.26 - centre_row) * h, abs=1e-6)
    assert inp[2, -2:].tolist() == pytest.approx([0.125 * h, 0.125 * w])


# ------------------------------------------------------------------ arbitrary scale and chunks


def test_forward_shape_and_batch_consistency(edsr: CiaoSR) -> None:
    """Each sample of a batch is processed on its own.

    The backbone convolutions pick batch-size-dependent kernels (~1e-6 relative), and CiaoSR's
    unscaled 576-dim scores (hundreds with these seeded weights) amplify that ~30x at a few
    pixels, so the end-to-end bound is looser than the per-stage ones.
    """
    x = seeded_input((2, 3, 9, 10), 11)
    edsr.scale = 3
    try:
        with torch.no_grad():
            both = edsr(x)
            one = edsr(x[1:])
            feat_k2, feat_v2 = edsr.encode(x)
            feat_k1, feat_v1 = edsr.encode(x[1:])
            coord = torch.from_numpy(make_coord(27, 30))[None].expand(2, -1, 2)
            cell = torch.from_numpy(make_cell(27, 30, 27 * 30))[None].expand(2, -1, 2)
            twice = [t.expand(2, -1, -1, -1) for t in (feat_k1, feat_v1, x[1:])]
            dec2 = edsr.decode(*twice, coord, cell)
            dec1 = edsr.decode(feat_k1, feat_v1, x[1:], coord[:1], cell[:1])
    finally:
        edsr.scale = 2
    assert both.shape == (2, 3, 27, 30)
    assert torch.isfinite(both).all()
    assert rel_max_err(feat_k2[1:], feat_k1) <= TOL and rel_max_err(feat_v2[1:], feat_v1) <= TOL
    assert rel_max_err(dec2[1], dec1[0]) <= 1e-6
    assert rel_max_err(both[1:], one) <= 2e-4


def test_integer_scale_equals_explicit_scale_api(edsr: CiaoSR) -> None:
    x = seeded_input((1, 3, 7, 8), 5)
    model = _seeded("ciaosr", 3, seed=7)
    with torch.no_grad():
        a = model(x)
        b = edsr.upscale(x, scale=3.0)
        c = edsr.upscale(x, out_size=(21, 24))
    assert a.shape == (1, 3, 21, 24)
    assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("scale", [2.5, 3.7, 1.6])
def test_non_integer_scales(edsr: CiaoSR, scale: float) -> None:
    x = seeded_input((1, 3, 11, 13), 2)
    with torch.no_grad():
        out = edsr.upscale(x, scale=scale)
    assert tuple(out.shape[-2:]) == hr_size(11, 13, scale) == (round(11 * scale), round(13 * scale))
    assert torch.isfinite(out).all()


def test_chunked_decoding_equals_unchunked_and_nla_runs_once(edsr: CiaoSR) -> None:
    x = seeded_input((1, 3, 8, 9), 4)
    calls = []
    handle = edsr.cs_attn.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            whole = edsr.upscale(x, out_size=(19, 23), chunk=10**6)
            chunked = edsr.upscale(x, out_size=(19, 23), chunk=37)
    finally:
        handle.remove()
    assert len(calls) == 2  # once per image, not once per chunk (12 chunks here)
    assert rel_max_err(chunked, whole) <= 1e-6


def test_ensemble_is_one_swappable_function(edsr: CiaoSR) -> None:
    q, k, v = torch.randn(5, 12), torch.randn(5, 4, 12), torch.randn(5, 4, 7)
    scores = torch.einsum("qc,qnc->qn", q, k)
    ref = torch.einsum("qn,qnc->qc", torch.softmax(scores, -1), v)
    assert torch.allclose(local_ensemble(q, k, v), ref, atol=1e-6)
    shapes = []

    def spy(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        shapes.append((tuple(query.shape), tuple(keys.shape), tuple(values.shape)))
        return local_ensemble(query, keys, values)

    other = _seeded("ciaosr", 2, seed=7)
    other.ensemble = spy
    x = seeded_input((1, 3, 5, 6), 1)
    with torch.no_grad():
        assert torch.equal(other.upscale(x, chunk=40), edsr.upscale(x, chunk=40))
    d = edsr.feat_dim
    assert shapes[0] == ((40, 9 * d), (40, 4, 9 * d), (40, 4, 10 * d))
    assert len(shapes) == math.ceil(10 * 12 / 40)
    assert edsr.ensemble is local_ensemble  # swapped per instance only


def test_numpy_decode_driver_equals_forward(edsr: CiaoSR) -> None:
    x = seeded_input((2, 3, 6, 7), 9)
    with torch.no_grad():
        ref = edsr(x).numpy()
        feat_k, feat_v = edsr.encoder_module()(x)
    out = decode_image(torch_decoder_fn(edsr), feat_k.numpy(), feat_v.numpy(), x.numpy(), 12, 14, chunk=50)
    assert out.shape == (2, 3, 12, 14) and out.dtype == np.float32
    assert rel_max_err(out, ref) <= 1e-6

    def encoder_fn(lr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            k, v = edsr.encode(torch.from_numpy(lr))
        return k.numpy(), v.numpy()

    again = upscale_image(encoder_fn, torch_decoder_fn(edsr), x.numpy(), 12, 14, chunk=1000)
    assert rel_max_err(again, ref) <= 1e-6


def test_decoder_module_dynamic_query_count(edsr: CiaoSR) -> None:
    x = seeded_input((1, 3, 5, 6), 2)
    dec = edsr.decoder_module()
    with torch.no_grad():
        feat_k, feat_v = edsr.encode(x)
        for q in (1, 7, 60):
            coord = torch.from_numpy(make_coord(6, 10)[:q])[None]
            cell = torch.from_numpy(make_cell(6, 10, q))[None]
            assert dec(feat_k, feat_v, x, coord, cell).shape == (1, q, 3)
    assert feat_k.shape == (1, 9 * 64, 5, 6) and feat_v.shape == (1, 10 * 64, 5, 6)


# ------------------------------------------------------------------ sizes and errors


def test_scale_and_size_errors(edsr: CiaoSR) -> None:
    with pytest.raises(UnsupportedScaleError, match=r"upscale\(lr, scale=2.5\)"):
        models.build("ciaosr", 2.5)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedScaleError):
        models.build("ciaosr", 0)
    with pytest.raises(ShapeError, match="at least 2x2"):
        edsr.upscale(torch.rand(1, 3, 1, 5))
    with torch.no_grad():
        assert edsr.upscale(seeded_input((1, 3, 2, 2), 0)).shape == (1, 3, 4, 4)
    with pytest.raises(SrdeployError, match="chunk must be a positive"):
        models.build("ciaosr", 2, chunk=0)
    with pytest.raises(ValueError, match="either scale or out_size"):
        edsr.upscale(torch.rand(1, 3, 4, 4), scale=2, out_size=(8, 8))


@pytest.mark.slow
def test_swinir_min_size_and_rdn_forward() -> None:
    swin = _seeded("ciaosr.swinir", 2, seed=1)
    with torch.no_grad():
        out = swin(seeded_input((1, 3, 5, 9), 1))  # padded to 8x16 inside
        assert out.shape == (1, 3, 10, 18) and torch.isfinite(out).all()
        with pytest.raises(ShapeError, match="at least 5x5"):
            swin(torch.rand(1, 3, 4, 9))
        rdn = _seeded("ciaosr.rdn", 3, seed=1)
        x = seeded_input((2, 3, 6, 5), 3)
        both = rdn(x)
        assert both.shape == (2, 3, 18, 15) and torch.isfinite(both).all()
        assert rel_max_err(both[:1], rdn(x[:1])) <= TOL


# ------------------------------------------------------------------ srdeploy.implicit


def test_make_coord_and_cell_follow_the_liif_convention() -> None:
    for h, w in [(1, 1), (3, 5), (28, 32), (1080, 7)]:
        coord = make_coord(h, w)
        assert coord.shape == (h * w, 2) and coord.dtype == np.float32
        # the authors' torch arithmetic: -1 + r + 2r * i with r = 1/n, scalars rounded to float32
        rows = (-1 + 1 / h) + (2 / h) * torch.arange(h).float()
        cols = (-1 + 1 / w) + (2 / w) * torch.arange(w).float()
        ref = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), -1).view(-1, 2).numpy()
        assert np.array_equal(coord, ref)
    assert np.allclose(make_coord(2, 4)[:4], [[-0.5, -0.75], [-0.5, -0.25], [-0.5, 0.25], [-0.5, 0.75]])
    cell = make_cell(28, 32, 3)
    assert cell.shape == (3, 2) and np.array_equal(cell[0], np.float32([2 / 28, 2 / 32]))
    assert hr_size(11, 13, 2.5) == (28, 32)  # Python round, half to even, as the authors
    with pytest.raises(SrdeployError):
        hr_size(4, 4, 0)


def test_decode_image_checks_its_callable() -> None:
    k, v, lr = np.zeros((1, 9, 2, 2), np.float32), np.zeros((1, 10, 2, 2), np.float32), np.zeros((1, 3, 2, 2))
    with pytest.raises(ShapeError, match="decoder returned"):
        decode_image(lambda *a: np.zeros((1, 5, 2), np.float32), k, v, lr, 4, 4)
    with pytest.raises(SrdeployError, match="chunk"):
        decode_image(lambda *a: a[3][..., :1].repeat(3, -1), k, v, lr, 4, 4, chunk=0)
    # the driver hands out pixel centres in raster order, chunk after chunk
    out = decode_image(lambda *a: np.repeat(a[3][..., :1], 3, -1), k, v, lr, 3, 5, chunk=4)
    assert np.array_equal(out[0, 0], make_coord(3, 5)[:, 0].reshape(3, 5))


def test_tile_positions_versus_the_authors_clip_test() -> None:
    """Tiling(192, 32, 'average') places the authors' clip_test tiles when both sides are >= 192.

    clip_test uses one square tile of min(192, h, w) for both axes; srdeploy clips each axis on
    its own. For an image thinner than 192 on one side the two differ (documented in
    docs/ciaosr.md).
    """

    def authors(h: int, w: int, tile: int = 192, overlap: int = 32) -> list[tuple[int, int, int, int]]:
        t = min(tile, h, w)
        stride = t - overlap
        hs = [*range(0, h - t, stride), h - t]
        ws = [*range(0, w - t, stride), w - t]
        return [(y, x, t, t) for y in hs for x in ws]

    tiling = Tiling(192, 32, "average")
    for h, w in [(192, 192), (200, 450), (511, 384), (1000, 193)]:
        assert list(iter_tiles(h, w, tiling)) == authors(h, w)
    assert list(iter_tiles(100, 300, tiling)) != authors(100, 300)
