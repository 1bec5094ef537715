"""AGDN / AGDN-S: shapes, parameter counts, faithfulness to the authors' code, TLC, real weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from srdeploy.models._testing import load_fixture, rel_max_err, seeded_input, seeded_state_dict
from srdeploy.models.agdn import AGDN, SparseAttention, local_variance, tlc_starts

from srdeploy import models
from srdeploy.errors import CheckpointError, SrdeployError

# parameter counts of the authors' modules (and the sum of the released checkpoint's tensors)
PARAMS = {
    ("agdn", 2): 280_530,
    ("agdn", 3): 286_215,
    ("agdn", 4): 294_174,
    ("agdn.s", 2): 61_460,
    ("agdn.s", 3): 64_715,
    ("agdn.s", 4): 69_272,
}
# Golden test, measured on the 240x246 LR baboon (PIL bicubic x1/2), RGB, uint8, shave 2:
# AGDN x2 (TLC on) 24.23 dB, bicubic upsampling 22.69 dB, i.e. +1.53 dB. Asserted: >= +1.3 dB.
MIN_GAIN_OVER_BICUBIC_DB = 1.3


def _build_seeded(name: str, scale: int, seed: int, **options) -> AGDN:
    model = models.build(name, scale, **options)
    model.load_state_dict(seeded_state_dict(model.state_dict(), seed), strict=True)
    return model


@pytest.mark.parametrize(("name", "scale"), sorted(PARAMS))
def test_builds_with_exact_params_and_contract_shape(name: str, scale: int) -> None:
    model = _build_seeded(name, scale, seed=1)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[(name, scale)]
    assert not any(k.endswith("mean") for k in model.state_dict())  # the mean shift is not a weight
    x = seeded_input((1, 3, 23, 19), 1)  # odd sizes, above the minimum of 15
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 3, 23 * scale, 19 * scale)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


def test_descriptors() -> None:
    for name, channels, blocks, window in (("agdn", 42, 7, 48), ("agdn.s", 24, 4, 96)):
        d = models.descriptor(name)
        assert d.family == "agdn"
        assert d.scales == (2, 3, 4)
        assert d.input_range == "0-1"
        assert d.min_size == 15
        assert d.default_tiling is None
        assert d.fp16 and not d.needs_fusion
        assert d.weights_license == "MIT"
        assert d.source == "daydreamer2024/AGDN@4eb39dc"
        assert dict(d.hparams)["channels"] == channels
        assert dict(d.hparams)["blocks"] == blocks
        assert dict(d.hparams)["tlc_window"] == window
        assert d.trt_profile.min.h == d.min_size


def test_min_size_is_tight() -> None:
    """The descriptor's min_size (15) runs; one pixel less fails inside ESA."""
    model = _build_seeded("agdn.s", 2, seed=1)
    with torch.no_grad():
        assert model(seeded_input((1, 3, 15, 15), 1)).shape == (1, 3, 30, 30)
        with pytest.raises(RuntimeError):
            model(seeded_input((1, 3, 14, 20), 1))


def _seeded_fixtures() -> list[Path]:
    return sorted(p for p in (Path(__file__).parents[1] / "fixtures" / "agdn").glob("agdn*.npz"))


def test_fixtures_present() -> None:
    names = {p.name for p in _seeded_fixtures()}
    assert {"agdn_x2.npz", "agdn.s_x3.npz", "agdn_x4_global.npz"} <= names


@pytest.mark.parametrize("path", _seeded_fixtures(), ids=lambda p: p.stem)
def test_matches_authors_code(path: Path) -> None:
    """Our module with seeded weights reproduces the authors' module (fixtures from make_agdn.py)."""
    fx = load_fixture(path)
    meta = fx["meta"]
    assert meta["source"] == "daydreamer2024/AGDN" and meta["commit"].startswith("4eb39dc")
    model = _build_seeded(meta["variant"], meta["args"]["upscale"], meta["seed"], tlc=meta["tlc"])
    with torch.no_grad():
        out = model(torch.from_numpy(fx["input"]))
    assert rel_max_err(out, fx["output"]) <= 1e-5


def test_tlc_window_layout() -> None:
    # one window when the side fits; otherwise ceil(n / k) windows, the last one snapped
    assert tlc_starts(30, 48) == [0]
    assert tlc_starts(48, 48) == [0]
    assert tlc_starts(50, 48) == [0, 2]
    assert tlc_starts(62, 48) == [0, 14]
    assert tlc_starts(100, 48) == [0, 26, 52]
    assert tlc_starts(240, 48) == [0, 48, 96, 144, 192]
    assert tlc_starts(246, 48) == [0, 40, 80, 120, 160, 198]
    assert tlc_starts(98, 96) == [0, 2]
    for n in range(1, 200):
        for k in (48, 96):
            starts = tlc_starts(n, k)
            win = min(n, k)
            covered = np.zeros(n, bool)
            for s in starts:
                assert 0 <= s <= n - win
                covered[s : s + win] = True
            assert covered.all()
            assert len(starts) == (n - 1) // win + 1


def test_tlc_batch_equals_single_runs() -> None:
    """TLC stacks windows on the batch axis; batch 2 must equal two batch-1 runs."""
    model = _build_seeded("agdn.s", 3, seed=3, tlc_window=24)  # small windows keep it fast
    x = seeded_input((2, 3, 30, 41), 3)  # 2 x 2 overlapping windows
    with torch.no_grad():
        both = model(x)
        singles = torch.cat([model(x[:1]), model(x[1:])])
    assert rel_max_err(both, singles) <= 1e-5
    assert rel_max_err(both[0], both[1]) > 1e-2  # the two samples really differ


def test_tlc_switches() -> None:
    attn = SparseAttention(24, 3, tlc_window=16)
    attn.load_state_dict(seeded_state_dict(attn.state_dict(), 4))
    attn.eval()
    x = seeded_input((2, 24, 20, 37), 4)
    with torch.no_grad():
        tlc = attn(x)
        attn.tlc_window = 64  # one window covering everything is global attention, exactly
        assert torch.equal(attn(x), attn.project_out(attn.attend(attn.qkv_dwconv(attn.qkv(x)))))
        attn.tlc_window = None
        glob = attn(x)
        attn.tlc_window = 16
        attn.train()  # as in the authors' code, training always attends globally
        assert torch.equal(attn(x), glob)
    assert rel_max_err(tlc, glob) > 1e-3

    model = models.build("agdn.s", 2, tlc=False)
    assert all(m.tlc_window is None for m in model.modules() if isinstance(m, SparseAttention))
    model.set_tlc(32)
    assert all(m.tlc_window == 32 for m in model.modules() if isinstance(m, SparseAttention))
    model = models.build("agdn", 2, tlc_window=64)
    assert all(m.tlc_window == 64 for m in model.modules() if isinstance(m, SparseAttention))
    with pytest.raises(SrdeployError, match="tlc_window"):
        models.build("agdn", 2, tlc_window=0)
    with pytest.raises(SrdeployError, match="valid options: tlc, tlc_window"):
        models.build("agdn", 2, tlc_size=48)


@pytest.mark.parametrize("kernel", [5, 7])
def test_local_variance_equals_unfold_form(kernel: int) -> None:
    """The pooled-moments local variance equals the authors' unfold + unbiased var form."""
    g = torch.Generator().manual_seed(kernel)
    x = torch.randn(2, 6, 23, 18, generator=g) * 0.5 + 4.0  # an offset that would hurt E[x^2]-E[x]^2
    ref = F.pad(x, (1, 1, 1, 1), mode="reflect").unfold(2, kernel, 3).unfold(3, kernel, 3)
    ref = ref.var(dim=(-1, -2), unbiased=True)
    out = local_variance(x, kernel)
    assert out.shape == ref.shape
    assert rel_max_err(out, ref) <= 1e-5


def test_checkpoint_loads_strictly(data_dir: Path) -> None:
    path = data_dir / "AGDN_x2.pth"
    model = models.build("agdn", 2, weights=path)
    ema = torch.load(path, map_location="cpu", weights_only=True)["params_ema"]
    state = model.state_dict()
    assert set(state) == set(ema) and len(state) == 492
    assert all(torch.equal(state[k], ema[k]) for k in ema)
    assert sum(v.numel() for v in ema.values()) == PARAMS[("agdn", 2)]
    with pytest.raises(CheckpointError, match=r"upsampler\.0\.weight"):
        models.build("agdn", 3, weights=path)
    with pytest.raises(CheckpointError, match="unexpected keys: B5"):
        models.build("agdn.s", 2, weights=path)


# ---------------------------------------------------------------------------------------------
# Golden test with the released x2 weights on a real photograph
# ---------------------------------------------------------------------------------------------


def _psnr_u8(a: np.ndarray, b: np.ndarray, shave: int) -> float:
    a = a[..., shave:-shave, shave:-shave].astype(np.float64)
    b = b[..., shave:-shave, shave:-shave].astype(np.float64)
    return float(10 * np.log10(255.0**2 / np.mean((a - b) ** 2)))


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


@pytest.fixture(scope="module")
def baboon_x2(data_dir: Path) -> dict[str, np.ndarray]:
    """HR baboon, its bicubic LR (PIL BICUBIC on uint8), our x2 output and bicubic upsampling."""
    from PIL import Image

    with Image.open(data_dir / "baboon.png") as im:
        hr = im.convert("RGB")
    lr = hr.resize((hr.width // 2, hr.height // 2), Image.Resampling.BICUBIC)
    bic = lr.resize(hr.size, Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(lr, dtype=np.float32).transpose(2, 0, 1) / 255.0)[None]
    model = models.build("agdn", 2, weights=data_dir / "AGDN_x2.pth")
    with torch.inference_mode():
        sr = model(x)[0].numpy()
    return {
        "hr": np.asarray(hr).transpose(2, 0, 1),
        "bicubic": np.asarray(bic).transpose(2, 0, 1),
        "lr": x[0].numpy(),
        "sr": sr,
    }


@pytest.mark.slow
def test_golden_psnr_beats_bicubic(baboon_x2: dict[str, np.ndarray]) -> None:
    hr = baboon_x2["hr"]
    assert baboon_x2["sr"].shape == hr.shape
    ours = _psnr_u8(_to_u8(baboon_x2["sr"]), hr, shave=2)
    bicubic = _psnr_u8(baboon_x2["bicubic"], hr, shave=2)
    assert ours >= bicubic + MIN_GAIN_OVER_BICUBIC_DB, (ours, bicubic)


@pytest.mark.slow
def test_golden_crop_matches_authors_code(baboon_x2: dict[str, np.ndarray], fixtures_dir: Path) -> None:
    fx = load_fixture(fixtures_dir / "agdn" / "golden_baboon_x2.npz")
    meta = fx["meta"]
    assert meta["commit"].startswith("4eb39dc") and meta["tlc"] and meta["scale"] == 2
    assert list(baboon_x2["lr"].shape) == meta["lr_shape"]
    y0, x0, h, w = meta["lr_crop_yxhw"]
    crop = baboon_x2["sr"][:, 2 * y0 : 2 * (y0 + h), 2 * x0 : 2 * (x0 + w)]
    diff = np.abs(_to_u8(crop).astype(np.int16) - fx["output_crop_u8"].astype(np.int16))
    assert diff.max() <= 1  # one uint8 level: rounding of values that differ by float noise
    assert np.abs(crop - fx["output_crop"]).max() <= 1e-4
