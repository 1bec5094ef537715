"""A2N / A2N-M: registry, shapes, parameter counts, faithfulness to the authors' code, the 0-255
range, the bilinear skip, batching, deploy-time fusion and checkpoint loading."""

from __future__ import annotations

import collections
import io
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from srdeploy.models._testing import load_fixture, rel_max_err, seeded_input, seeded_state_dict
from srdeploy.models.a2n import A2B, A2N, FusedA2B
from srdeploy.models.checkpoint import read_checkpoint
from srdeploy.models.fusion import fuse_model, is_fused

from srdeploy import models
from srdeploy.errors import CheckpointError

NAMES = ["a2n", "a2n.m"]
SCALES = [2, 3, 4]
PARAMS = {
    ("a2n", 2): 1_036_443,
    ("a2n", 3): 1_036_443,
    ("a2n", 4): 1_047_459,
    ("a2n.m", 2): 831_643,
    ("a2n.m", 3): 831_643,
    ("a2n.m", 4): 842_659,
}


def seeded(name: str, scale: int, seed: int = 7) -> A2N:
    model = models.build(name, scale)
    model.load_state_dict(seeded_state_dict(model.state_dict(), seed))
    return model


def test_registered_with_descriptor() -> None:
    assert {"a2n", "a2n.m"} <= set(models.list_models())
    for name in NAMES:
        d = models.descriptor(name)
        assert d.family == "a2n" and d.scales == (2, 3, 4)
        assert d.input_range == "0-255" and d.needs_fusion
        assert d.source == "haoyuc/A2N@210b38c"
        assert "all rights reserved" in d.weights_license
        assert d.trt_profile.min.h >= d.min_size
    assert models.descriptor("a2n.m").variant == "m"
    assert models.descriptor("a2n").hparams["non_attention_kernel"] == 3
    assert models.descriptor("a2n.m").hparams["non_attention_kernel"] == 1


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", SCALES)
def test_build_params_and_odd_forward(name: str, scale: int) -> None:
    model = seeded(name, scale)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[(name, scale)]
    with torch.no_grad():
        y = model(seeded_input((1, 3, 7, 9), 1))
    assert y.shape == (1, 3, 7 * scale, 9 * scale)
    assert torch.isfinite(y).all()


def test_min_size_input() -> None:
    """descriptor min_size is 1: a 1x1 LR input runs."""
    model = seeded("a2n", 4)
    with torch.no_grad():
        y = model(seeded_input((1, 3, 1, 1), 2))
    assert y.shape == (1, 3, 4, 4) and torch.isfinite(y).all()


def test_unsupported_scale_is_refused() -> None:
    from srdeploy.errors import UnsupportedScaleError

    with pytest.raises(UnsupportedScaleError, match="supported scales: 2, 3, 4"):
        models.build("a2n", 8)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", SCALES)
def test_matches_authors_code(name: str, scale: int, fixtures_dir: Path) -> None:
    fx = load_fixture(fixtures_dir / "a2n" / f"{name}_x{scale}.npz")
    meta = fx["meta"]
    assert meta["variant"] == name and meta["args"]["scale"] == [scale]
    assert meta["commit"].startswith("210b38c") and meta["file"] == "code/model/aan.py"
    # float64 on both sides: with seeded random weights float32 rounding is amplified through the
    # trunk (~3e-5 relative just from the thread count), which would hide real differences
    model = seeded(name, scale, seed=meta["seed"]).double()
    with torch.no_grad():
        out = model(torch.from_numpy(fx["input"]).double())
    # the authors' module ran on 255 * input and returned 0-255
    assert rel_max_err(out * 255.0, fx["output"]) <= 1e-5


def test_input_range_is_0_255_inside() -> None:
    """The body sees 255 * x and its output is divided by 255 before the [0,1] skip is added."""
    model = seeded("a2n", 2)
    seen: dict[str, torch.Tensor] = {}
    model.conv_first.register_forward_hook(lambda m, i, o: seen.__setitem__("body_in", i[0]))
    model.conv_last.register_forward_hook(lambda m, i, o: seen.__setitem__("body_out", o))
    x = seeded_input((1, 3, 6, 5), 3)
    with torch.no_grad():
        y = model(x)
    torch.testing.assert_close(seen["body_in"], x * 255.0)
    skip = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(y, seen["body_out"] / 255.0 + skip)


@pytest.mark.parametrize("scale", SCALES)
def test_global_skip_is_bilinear(scale: int) -> None:
    """With every weight zeroed only the global skip is left: bilinear, align_corners=False."""
    model = models.build("a2n", scale)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        x = seeded_input((2, 3, 5, 7), 4)
        y = model(x)
    ref = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-7)
    for other in (
        F.interpolate(x, scale_factor=scale, mode="nearest"),
        F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=True),
    ):
        assert (y - other).abs().max() > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_single_runs(name: str) -> None:
    """Per-sample branch weights: a batch of two equals two single runs (float64, see below)."""
    model = seeded(name, 3).double()
    x = torch.cat([seeded_input((1, 3, 9, 7), 5), seeded_input((1, 3, 9, 7), 6)]).double()
    with torch.no_grad():
        both = model(x)
        one = torch.cat([model(x[:1]), model(x[1:])])
    assert rel_max_err(both, one) <= 1e-10


# --- deploy-time fusion -----------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", [2, 4])
def test_fused_equals_unfused(name: str, scale: int) -> None:
    """Exact by linearity. Checked in float64: with seeded random weights float32 rounding alone
    moves the output by up to ~4e-3 relative (chaotic trunk), for fused and unfused alike; with
    the released x2/x3 weights float32 fused vs unfused differ by ~2e-7 (see the golden test)."""
    model = seeded(name, scale).double()
    x = torch.cat([seeded_input((1, 3, 6, 7), 8), seeded_input((1, 3, 6, 7), 9)]).double()
    with torch.no_grad():
        ref = model(x)
    applied = fuse_model(model)
    assert len(applied) == 16 and all(a.startswith("A2B@AAB_trunk.") for a in applied)
    assert is_fused(model)
    assert all(isinstance(b, FusedA2B) for b in model.AAB_trunk)
    assert not any(isinstance(m, A2B) for m in model.modules())
    assert not any("non_attention" in k or "k4" in k for k in model.state_dict())
    assert all(p.dtype == torch.float64 for p in model.parameters())
    with torch.no_grad():
        out = model(x)
    assert rel_max_err(out, ref) <= 1e-9
    assert fuse_model(model) == applied  # applied once


def test_fused_kernel_layout_a2n_m() -> None:
    """A2N-M's 1x1 kernel is the centre tap of the zero-padded 3x3 half of the fused kernel."""
    model = seeded("a2n.m", 2)
    block = model.AAB_trunk[0]
    k4, na = block.attention.k4.weight.clone(), block.non_attention.weight.clone()
    fused = block.fuse()
    w = fused.branch_conv.weight
    assert w.shape == (40, 80, 3, 3)
    torch.testing.assert_close(w[:, :40], k4)
    torch.testing.assert_close(w[:, 40:, 1, 1], na[:, :, 0, 0])
    w_ring = w[:, 40:].clone()
    w_ring[:, :, 1, 1] = 0
    assert w_ring.abs().max() == 0


def _onnx_convs(model: torch.nn.Module, x: torch.Tensor) -> int:
    onnx = pytest.importorskip("onnx", reason="the ONNX export check needs onnx (extra: export)")
    pytest.importorskip("onnxscript", reason="torch.onnx dynamo export needs onnxscript (extra: export)")

    prog = torch.onnx.export(model, (x,), dynamo=True, input_names=["lr"], output_names=["sr"], verbose=False)
    proto = prog.model_proto
    assert isinstance(proto, onnx.ModelProto)
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    for fn in proto.functions:  # count nodes inside local functions as well
        ops.update(n.op_type for n in fn.node)
    return ops["Conv"]


@pytest.mark.slow
def test_fusion_removes_one_conv_per_block_in_onnx() -> None:
    """~20 s: two small dynamo exports of A2N x2 (16 blocks -> 16 fewer Conv nodes)."""
    model = seeded("a2n", 2)
    x = seeded_input((1, 3, 8, 8), 10)
    unfused_convs = _onnx_convs(model, x)
    fuse_model(model)
    fused_convs = _onnx_convs(model, x)
    assert unfused_convs - fused_convs == 16
    assert unfused_convs == 1 + 16 * 7 + 1 + 3 + 1  # conv_first, 7 per A2B, trunk, up/PA/HR, last


# --- checkpoints ------------------------------------------------------------------------------


class _NotATensor:
    """Any custom class: unpickling it would need arbitrary code."""

    def __init__(self) -> None:
        self.payload = 1


def _load(name: str, scale: int, path: Path) -> A2N:
    return models.build(name, scale, weights=path)


def _same(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> bool:
    own = model.state_dict()
    return own.keys() == sd.keys() and all(torch.equal(own[k], sd[k]) for k in sd)


@pytest.fixture(scope="module")
def sd_x2() -> dict[str, torch.Tensor]:
    return seeded_state_dict(models.build("a2n", 2).state_dict(), 11)


def test_checkpoint_legacy_pickle_plain(tmp_path: Path, sd_x2: dict[str, torch.Tensor]) -> None:
    """The authors' format: a plain state dict in the legacy (non-zip) pickle format."""
    path = tmp_path / "aan_x2.pt"
    torch.save(sd_x2, path, _use_new_zipfile_serialization=False)
    with open(path, "rb") as f:
        assert f.read(2) != b"PK"  # really not a zip archive
    model = _load("a2n", 2, path)
    assert _same(model, sd_x2)
    assert len(model._srdeploy_weights["sha256"]) == 64


def test_checkpoint_safetensors(tmp_path: Path, sd_x2: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "a2n_x2.safetensors"
    save_file(sd_x2, str(path))
    assert _same(_load("a2n", 2, path), sd_x2)


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda sd, other: {f"module.{k}": v for k, v in sd.items()}, id="module-prefix"),
        pytest.param(lambda sd, other: {"params": other, "params_ema": sd}, id="basicsr-ema-preferred"),
        pytest.param(lambda sd, other: {"params": sd}, id="basicsr-params"),
        pytest.param(
            lambda sd, other: {"meta": {"epoch": 3}, "state_dict": {f"generator.{k}": v for k, v in sd.items()}},
            id="mmcv-generator",
        ),
    ],
)
def test_checkpoint_wrappers(tmp_path: Path, sd_x2: dict[str, torch.Tensor], wrap) -> None:
    other = {k: v + 1.0 for k, v in sd_x2.items()}  # params differ from params_ema
    path = tmp_path / "wrapped.pth"
    torch.save(wrap(sd_x2, other), path)
    assert _same(_load("a2n", 2, path), sd_x2)


def test_checkpoint_needing_code_is_refused(tmp_path: Path, sd_x2: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"params": sd_x2, "extra": _NotATensor()}, path)
    with pytest.raises(CheckpointError, match="arbitrary pickled code"):
        _load("a2n", 2, path)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_truncated_checkpoint_is_refused(tmp_path: Path, sd_x2: dict[str, torch.Tensor], legacy: bool) -> None:
    buf = io.BytesIO()
    torch.save(sd_x2, buf, _use_new_zipfile_serialization=not legacy)
    path = tmp_path / "truncated.pt"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pt"):
        _load("a2n", 2, path)


def test_corrupt_safetensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        read_checkpoint(path)


def test_wrong_scale_names_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "aan_x4.pt"
    torch.save(seeded_state_dict(models.build("a2n", 4).state_dict(), 1), path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError) as err:
        _load("a2n", 2, path)
    msg = str(err.value)
    assert "a2n x2" in msg and "unexpected keys" in msg
    assert "upconv2.weight" in msg and "HRconv2" in msg and "att2.conv" in msg


def test_wrong_variant_names_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "a2n_m_x2.pt"
    torch.save(seeded_state_dict(models.build("a2n.m", 2).state_dict(), 1), path)
    with pytest.raises(CheckpointError) as err:
        _load("a2n", 2, path)
    msg = str(err.value)
    assert "mis-shaped" in msg and "AAB_trunk.0.non_attention.weight (40, 40, 1, 1) vs (40, 40, 3, 3)" in msg


# --- golden: the released weights (all rights reserved: never bundled) -------------------------


@pytest.mark.slow
def test_released_x2_weights_golden(data_dir: Path) -> None:
    """Runs where `sr-weights fetch a2n_x2` has put the authors' file into the cache.

    Baboon, 96x96 LR crop (PIL bicubic downscale): the released x2 network must beat bicubic
    clearly, feeding it [0,1] instead of 0-255 must not, and float32 fusion stays within 1e-5.
    """
    import copy

    import numpy as np
    from PIL import Image
    from srdeploy.weights import Store, find_entry

    entry = find_entry("official", "a2n", 2)
    path = Store(offline=True).path(entry)
    if not path.is_file():
        pytest.skip("the A2N weights are all rights reserved and not bundled; run `sr-weights fetch a2n_x2`")
    model = models.build("a2n", 2, weights=path)
    hr = np.asarray(Image.open(data_dir / "baboon.png").convert("RGB"))[:192, :192]
    lr = np.asarray(Image.fromarray(hr).resize((96, 96), Image.BICUBIC))
    bicubic = np.asarray(Image.fromarray(lr).resize((192, 192), Image.BICUBIC))
    x = torch.from_numpy(lr.copy()).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        y = model(x)
        wrong = model(x / 255.0) * 255.0  # the body fed [0,1]: the classic range bug
    fused = copy.deepcopy(model)
    fuse_model(fused)
    with torch.no_grad():
        assert rel_max_err(fused(x), y) <= 1e-5

    def psnr(out: np.ndarray) -> float:
        d = out[2:-2, 2:-2].astype(np.float64) - hr[2:-2, 2:-2].astype(np.float64)
        return float(10 * np.log10(255.0**2 / np.mean(d**2)))

    def to_u8(t: torch.Tensor) -> np.ndarray:
        return (t[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255.0).round()

    gain = psnr(to_u8(y)) - psnr(bicubic)
    assert gain >= 0.8, f"A2N x2 is only {gain:.2f} dB above bicubic"
    assert psnr(to_u8(wrong)) < psnr(bicubic)
