"""Image-quality metrics, implemented once, in numpy (no PyTorch).

Conventions (written down here and nowhere else):

* :func:`psnr_rgb` is the NTIRE Efficient SR convention: both images uint8 RGB ``(H, W, 3)``, the
  border of ``shave`` pixels (= scale) removed on every side, MSE over all three channels of the
  uint8 values, peak 255. The SR output is clamped and rounded to uint8 *before* the PSNR
  (:func:`to_uint8`).
* :func:`psnr_y` / :func:`ssim_y` are the paper convention: Y of YCbCr with the MATLAB (BT.601
  "studio swing") coefficients ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` on RGB in [0, 1],
  border crop = scale, float64 arithmetic. SSIM uses an 11x11 Gaussian window (sigma 1.5), the
  standard constants ``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2`` and 'valid' filtering, as in
  the reference implementation of Wang et al. and BasicSR.
* :func:`modcrop` crops HR images to a multiple of the scale (what the NTIRE harness does).
"""

from __future__ import annotations

import math

import numpy as np

from srdeploy.errors import SrdeployError


def to_uint8(chw: np.ndarray) -> np.ndarray:
    """(3, H, W) float RGB in [0, 1] -> (H, W, 3) uint8, clamped and rounded (NTIRE order)."""
    if chw.ndim != 3:
        raise SrdeployError(f"expected a (3, H, W) image, got shape {chw.shape}")
    if not np.isfinite(chw).all():
        raise SrdeployError("the output contains NaN or Inf; try fp32 instead of fp16, or another backend")
    return np.rint(np.clip(chw, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop an (H, W[, C]) image so that H and W are multiples of ``scale``."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def _check_pair(a: np.ndarray, b: np.ndarray, shave: int) -> None:
    if a.shape != b.shape:
        raise SrdeployError(
            f"SR output {a.shape} and HR image {b.shape} differ in size; "
            "check that LR and HR belong together and that the scale is right"
        )
    if a.shape[0] <= 2 * shave or a.shape[1] <= 2 * shave:
        raise SrdeployError(f"image {a.shape[:2]} is too small for a border crop of {shave} pixels")


def _psnr_from_mse(mse: float, peak: float) -> float:
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def psnr_rgb(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """NTIRE PSNR: uint8 (H, W, 3) images, border ``shave`` removed, all channels, peak 255."""
    _check_pair(sr, hr, shave)
    a = sr.astype(np.float64)
    b = hr.astype(np.float64)
    if shave:
        a = a[shave:-shave, shave:-shave]
        b = b[shave:-shave, shave:-shave]
    return _psnr_from_mse(float(np.mean((a - b) ** 2)), 255.0)


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Y channel (float64, range [16, 235]) of an (H, W, 3) image, uint8 or float in [0, 1]."""
    x = img.astype(np.float64)
    if img.dtype == np.uint8:
        x = x / 255.0
    return 16.0 + x @ np.array([65.481, 128.553, 24.966])


def psnr_y(sr: np.ndarray, hr: np.ndarray, crop: int) -> float:
    """Paper PSNR on Y (MATLAB coefficients), border ``crop`` = scale, float64, peak 255."""
    _check_pair(sr, hr, crop)
    a, b = rgb_to_y(sr), rgb_to_y(hr)
    if crop:
        a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    return _psnr_from_mse(float(np.mean((a - b) ** 2)), 255.0)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(ax**2) / (2.0 * sigma * sigma))
    g /= g.sum()
    return g


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D float64 image with the 1-D window ``g``."""
    k = g.size
    h, w = img.shape
    rows = np.zeros((h, w - k + 1))
    for i in range(k):
        rows += g[i] * img[:, i : i + w - k + 1]
    out = np.zeros((h - k + 1, w - k + 1))
    for i in range(k):
        out += g[i] * rows[i : i + h - k + 1]
    return out


def ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two float64 planes in [0, 255] (Gaussian 11/1.5, valid region, standard C1, C2)."""
    if min(a.shape) < 11:
        raise SrdeployError(f"SSIM needs images of at least 11x11 pixels after the crop, got {a.shape}")
    c1 = (0.01 * 255.0) ** 2
    c2 = (0.03 * 255.0) ** 2
    g = _gaussian_window()
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    saa = _filter_valid(a * a, g) - mu_a**2
    sbb = _filter_valid(b * b, g) - mu_b**2
    sab = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * sab + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2)
    return float(np.mean(num / den))


def ssim_y(sr: np.ndarray, hr: np.ndarray, crop: int) -> float:
    """Paper SSIM on Y (MATLAB coefficients), border ``crop`` = scale."""
    _check_pair(sr, hr, crop)
    a, b = rgb_to_y(sr), rgb_to_y(hr)
    if crop:
        a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    return ssim_plane(a, b)


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """(H, W, 3) uint8 HR (modcropped) -> uint8 LR by PIL bicubic with antialiasing.

    PIL's antialiased bicubic is close to, not identical with, MATLAB ``imresize`` (the DIV2K LR
    images); results on LR made here are labelled so.
    """
    from PIL import Image

    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise SrdeployError(f"HR size {h}x{w} is not a multiple of the scale {scale}; modcrop it first")
    im = Image.fromarray(hr, mode="RGB").resize((w // scale, h // scale), Image.Resampling.BICUBIC)
    return np.asarray(im, dtype=np.uint8)
