"""Metrics against hand-computed values and an independent implementation (scikit-image)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from srdeploy.runtime import metrics

from srdeploy.errors import SrdeployError


def _img(seed: int, h: int = 40, w: int = 36) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_psnr_rgb_hand_computed() -> None:
    hr = np.full((20, 20, 3), 100, np.uint8)
    sr = hr.copy()
    sr[4:-4, 4:-4] += 10  # MSE 100 inside the shave-4 crop
    sr[:4] = 255  # the border is shaved away
    assert metrics.psnr_rgb(sr, hr, shave=4) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-12)
    assert metrics.psnr_rgb(hr, hr, shave=4) == math.inf


def test_psnr_rgb_uses_all_channels() -> None:
    hr = np.zeros((12, 12, 3), np.uint8)
    sr = hr.copy()
    sr[..., 0] = 3  # one channel off by 3: MSE = 9 / 3 = 3
    assert metrics.psnr_rgb(sr, hr, shave=2) == pytest.approx(10 * math.log10(255**2 / 3), abs=1e-12)


def test_to_uint8_clamps_and_rounds_before_psnr() -> None:
    x = np.array([-0.2, 0.0, 0.5 / 255, 1.49 / 255, 1.2], np.float32).reshape(1, 1, 5).repeat(3, 0)
    assert metrics.to_uint8(x)[0, :, 0].tolist() == [0, 0, 0, 1, 255]
    with pytest.raises(SrdeployError, match="NaN"):
        metrics.to_uint8(np.full((3, 2, 2), np.nan, np.float32))


def test_y_channel_matlab_coefficients() -> None:
    assert metrics.rgb_to_y(np.zeros((1, 1, 3), np.uint8))[0, 0] == pytest.approx(16.0)
    assert metrics.rgb_to_y(np.full((1, 1, 3), 255, np.uint8))[0, 0] == pytest.approx(235.0)
    assert metrics.rgb_to_y(np.array([[[1.0, 0.0, 0.0]]]))[0, 0] == pytest.approx(16 + 65.481)


def test_psnr_y_and_ssim_match_scikit_image() -> None:
    skm = pytest.importorskip("skimage.metrics")
    a = _img(1)
    b = np.clip(a.astype(int) + np.random.default_rng(2).integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    ya, yb = metrics.rgb_to_y(a)[3:-3, 3:-3], metrics.rgb_to_y(b)[3:-3, 3:-3]
    ref_psnr = skm.peak_signal_noise_ratio(ya, yb, data_range=255)
    assert metrics.psnr_y(a, b, crop=3) == pytest.approx(ref_psnr, abs=1e-9)
    ref_ssim = skm.structural_similarity(ya, yb, data_range=255, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False)
    assert metrics.ssim_y(a, b, crop=3) == pytest.approx(ref_ssim, abs=1e-9)
    assert metrics.ssim_y(a, a, crop=3) == pytest.approx(1.0)


def test_metric_errors() -> None:
    with pytest.raises(SrdeployError, match="differ in size"):
        metrics.psnr_rgb(_img(0, 40, 36), _img(0, 40, 40), shave=4)
    with pytest.raises(SrdeployError, match="too small"):
        metrics.psnr_rgb(_img(0, 8, 8), _img(0, 8, 8), shave=4)
    with pytest.raises(SrdeployError, match="multiple"):
        metrics.bicubic_downscale(_img(0, 41, 40), 4)


def test_modcrop_and_downscale() -> None:
    hr = metrics.modcrop(_img(3, 42, 39), 4)
    assert hr.shape == (40, 36, 3)
    assert metrics.bicubic_downscale(hr, 4).shape == (10, 9, 3)
