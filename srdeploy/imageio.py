"""Image reading and writing without PyTorch.

Images travel as float32 arrays ``(3, H, W)`` RGB in [0, 1]. Grayscale inputs are replicated to
RGB and written back as grayscale; an alpha channel is split off, resized on its own and merged
back (or dropped with a notice); 16-bit PNGs keep 16 bits end to end.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import InputImageError, SrdeployError

SUPPORTED_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: Largest input accepted by default (pixels). Bigger images need an explicit --max-pixels.
DEFAULT_MAX_PIXELS = 64_000_000


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`read_image` found, so :func:`write_image` can write the same kind back."""

    grayscale: bool
    bits: int  # 8 or 16
    alpha: np.ndarray | None  # (H, W) float32 in [0, 1], or None


def _pil():  # imported lazily: a module import should not cost PIL's plugin scan
    from PIL import Image

    return Image


def read_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, ImageInfo]:
    """Read an image as ``(3, H, W)`` float32 RGB in [0, 1] plus its :class:`ImageInfo`."""
    Image = _pil()
    path = Path(path)
    if not path.is_file():
        raise InputImageError(f"input {path} does not exist or is not a file")
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # we check the size ourselves, with our own message
    try:
        with Image.open(path) as im:
            w, h = im.size
            if h * w > max_pixels:
                raise InputImageError(
                    f"{path} is {h}x{w} = {h * w / 1e6:.1f} MP, above the {max_pixels / 1e6:.0f} MP limit; "
                    "downscale it or raise --max-pixels (and use --tile to bound memory)"
                )
            im.load()
            arr, info = _to_float(im)
    except SrdeployError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises these for non-images
        raise InputImageError(f"{path} is not a readable image ({exc}); give a PNG, JPEG or WebP file") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    return arr, info


def _to_float(im) -> tuple[np.ndarray, ImageInfo]:
    mode = im.mode
    alpha = None
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if a.max(initial=0) > 255 or mode.startswith("I;16") else 255.0
        g = (a / peak).astype(np.float32)
        return np.repeat(g[None], 3, axis=0), ImageInfo(True, 16 if peak > 255 else 8, None)
    if mode in ("L", "1", "P", "LA", "PA", "RGBA", "RGBa", "CMYK", "YCbCr", "RGB", "F"):
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            mode = im.mode
        if mode in ("LA", "PA"):
            im = im.convert("LA")
            la = np.asarray(im, dtype=np.float32) / 255.0
            g = la[..., 0]
            alpha = la[..., 1]
            return np.repeat(g[None], 3, axis=0), ImageInfo(True, 8, alpha)
        if mode in ("L", "1"):
            g = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
            return np.repeat(g[None], 3, axis=0), ImageInfo(True, 8, None)
        if mode == "F":
            g = np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)
            return np.repeat(g[None], 3, axis=0), ImageInfo(True, 16, None)
        if mode in ("RGBA", "RGBa"):
            rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
            return np.ascontiguousarray(rgba[..., :3].transpose(2, 0, 1)), ImageInfo(False, 8, rgba[..., 3])
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        return np.ascontiguousarray(rgb.transpose(2, 0, 1)), ImageInfo(False, 8, None)
    if mode.startswith(("RGB;16", "RGBA;16")) or mode in ("I;16N",):
        raise InputImageError(f"image mode {mode} is not supported; convert the file to 8- or 16-bit PNG")
    rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)), ImageInfo(False, 8, None)


def resize_plane(plane: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bicubic resize of one float plane in [0, 1] (used for alpha channels)."""
    Image = _pil()
    im = Image.fromarray(plane.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)


def to_uint(arr: np.ndarray, bits: int = 8) -> np.ndarray:
    """Clamp to [0, 1] and round to uint8 / uint16 (NaN is an error, not a black pixel)."""
    if not np.isfinite(arr).all():
        raise SrdeployError("the model produced NaN or Inf values; try fp32 instead of fp16, or another backend")
    peak = 65535.0 if bits == 16 else 255.0
    out = np.clip(arr, 0.0, 1.0) * peak
    return np.rint(out).astype(np.uint16 if bits == 16 else np.uint8)


def write_image(path: str | os.PathLike[str], rgb: np.ndarray, info: ImageInfo | None = None) -> None:
    """Write ``(3, H, W)`` RGB in [0, 1] atomically, matching ``info`` (gray, 16-bit, alpha)."""
    Image = _pil()
    path = Path(path)
    info = info or ImageInfo(False, 8, None)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise SrdeployError(f"cannot write {path}: use one of {', '.join(SUPPORTED_SUFFIXES)}")
    bits = info.bits if suffix == ".png" else 8
    if info.grayscale:
        plane = rgb.mean(axis=0)
        if info.alpha is not None:
            img = Image.fromarray(np.stack([to_uint(plane), to_uint(info.alpha)], axis=-1), mode="LA")
        elif bits == 16:
            img = Image.fromarray(to_uint(plane, 16))
        else:
            img = Image.fromarray(to_uint(plane), mode="L")
    else:
        hwc = rgb.transpose(1, 2, 0)
        if info.alpha is not None:
            rgba = np.concatenate([hwc, info.alpha[..., None]], axis=-1)
            img = Image.fromarray(to_uint(rgba), mode="RGBA")
        else:
            # PIL has no 16-bit RGB writer; 16-bit RGB inputs are written as 8-bit RGB PNG.
            img = Image.fromarray(to_uint(hwc), mode="RGB")
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(suffix, suffix[1:].upper())
    if fmt == "JPEG" and img.mode in ("RGBA", "LA"):
        img = img.convert("RGB" if img.mode == "RGBA" else "L")
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
