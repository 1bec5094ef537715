"""Calibration and held-out image sets for the INT8 pass (:mod:`srdeploy.export.int8`).

A calibration directory holds real images. They are read exactly as ``sr-upscale`` reads its
inputs (``srdeploy.imageio.read_image``: float32 RGB in [0, 1], the model's own range applied
inside the graph), so the activation ranges seen during calibration are the ones inference sees.

The images are split by name: the last quarter (at least one image) is *held out* and never
calibrated on; the gate and the per-layer sensitivity are measured on them. Held-out images are
ground truth (HR): crops of them are downscaled with PIL's antialiased bicubic
(``srdeploy.runtime.metrics.bicubic_downscale``) to make the LR input, and the SR output is scored
with the paper Y-PSNR (border = scale) against the HR crop.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from srdeploy.errors import SrdeployError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class CalibrationError(SrdeployError):
    """The calibration set is missing, empty or too small."""


@dataclass
class HeldOut:
    """Held-out LR/HR crop pairs (LR ``(3, h, w)`` float32 [0, 1]; HR ``(sh, sw, 3)`` uint8)."""

    lr: list[np.ndarray]
    hr: list[np.ndarray]
    scale: int
    images: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.lr)

    def batch(self) -> np.ndarray:
        return np.ascontiguousarray(np.stack(self.lr).astype(np.float32))


@dataclass
class CalibrationSet:
    """Calibration crops ``(N, 3, c, c)`` and the held-out pairs, with where they came from."""

    crops: np.ndarray
    heldout: HeldOut
    images: list[str]
    crop: int

    def as_dict(self) -> dict[str, object]:
        return {
            "calibration_images": self.images,
            "calibration_crops": int(self.crops.shape[0]),
            "calibration_crop": f"{self.crop}x{self.crop}",
            "heldout_images": self.heldout.images,
            "heldout_crops": len(self.heldout),
            "heldout_lr_crop": f"{self.heldout.lr[0].shape[1]}x{self.heldout.lr[0].shape[2]}"
            if len(self.heldout)
            else None,
            "heldout_lr": "PIL antialiased bicubic downscale of the HR crop",
        }


def list_images(directory: str | os.PathLike[str]) -> list[Path]:
    d = Path(directory)
    if not d.is_dir():
        raise CalibrationError(f"--calib {d} is not a directory; give a directory of PNG/JPEG images")
    files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < 2:
        raise CalibrationError(
            f"--calib {d} has {len(files)} image(s); give at least 2 (one or more to calibrate on, "
            "and a quarter of them, at least one, held out for the quality gate)"
        )
    return files


def _positions(extent: int, crop: int, n: int) -> list[int]:
    if extent <= crop or n <= 1:
        return [max(0, (extent - crop) // 2)]
    return [round(i * (extent - crop) / (n - 1)) for i in range(n)]


def grid_crops(img: np.ndarray, crop_h: int, crop_w: int, count: int) -> list[np.ndarray]:
    """Up to ``count`` crops on an even grid over a ``(C, H, W)`` or ``(H, W, C)``-agnostic
    ``(3, H, W)`` image (deterministic, so a rerun calibrates identically)."""
    _, h, w = img.shape
    if h < crop_h or w < crop_w:
        return []
    side = max(1, int(np.ceil(np.sqrt(count))))
    out = []
    for y in _positions(h, crop_h, side):
        for x in _positions(w, crop_w, side):
            out.append(img[:, y : y + crop_h, x : x + crop_w])
    return out[:count]


def load_calibration(
    directory: str | os.PathLike[str],
    scale: int,
    *,
    crop: int = 48,
    calib_crops: int = 32,
    heldout_crops: int = 8,
    heldout_files: Sequence[str | os.PathLike[str]] | None = None,
) -> CalibrationSet:
    """Read ``directory``: calibration crops of the first images, held-out pairs of the rest.

    ``crop`` is the LR crop side (a multiple of the model's size multiple, chosen by the caller).
    ``heldout_files`` overrides the split (all of ``directory`` is then calibrated on).
    """
    from srdeploy.runtime.metrics import bicubic_downscale, to_uint8

    from srdeploy.imageio import read_image

    files = list_images(directory) if heldout_files is None else sorted(
        p for p in Path(directory).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
    )
    if heldout_files is None:
        n_held = max(1, len(files) // 4)
        cal_files, held_files = files[:-n_held], files[-n_held:]
    else:
        if not files:
            raise CalibrationError(f"--calib {directory} has no images; give a directory of PNG/JPEG images")
        cal_files, held_files = files, [Path(p) for p in heldout_files]

    per_image = -(-calib_crops // len(cal_files))
    crops: list[np.ndarray] = []
    for p in cal_files:
        img, _ = read_image(p)
        got = grid_crops(img, crop, crop, per_image)
        if not got:
            raise CalibrationError(f"calibration image {p} ({img.shape[1]}x{img.shape[2]}) is smaller than the "
                                   f"{crop}x{crop} crop; remove it or pass larger images")
        crops += got
    crops = crops[:calib_crops]

    hr_side = crop * scale
    per_held = -(-heldout_crops // len(held_files))
    lr_list, hr_list = [], []
    for p in held_files:
        img, _ = read_image(p)
        got = grid_crops(img, hr_side, hr_side, per_held)
        if not got:
            raise CalibrationError(f"held-out image {p} ({img.shape[1]}x{img.shape[2]}) is smaller than the "
                                   f"{hr_side}x{hr_side} HR crop; use larger held-out images")
        for c in got:
            hr8 = to_uint8(c)
            lr = bicubic_downscale(hr8, scale).astype(np.float32).transpose(2, 0, 1) / 255.0
            lr_list.append(np.ascontiguousarray(lr))
            hr_list.append(hr8)
    return CalibrationSet(
        crops=np.ascontiguousarray(np.stack(crops).astype(np.float32)),
        heldout=HeldOut(lr_list[:heldout_crops], hr_list[:heldout_crops], scale, [p.name for p in held_files]),
        images=[p.name for p in cal_files],
        crop=crop,
    )
