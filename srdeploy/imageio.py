"""Image reading and writing without PyTorch.

Images travel as float32 arrays ``(3, H, W)`` RGB in [0, 1]. Grayscale inputs are replicated to
RGB and written back as grayscale; an alpha channel is split off, resized on its own and merged
back (or dropped with a notice); 16-bit PNGs keep 16 bits end to end.

For bounded memory (``sr-upscale``), :func:`read_source` keeps the pixels as read (uint8 or
uint16, RGB or gray as a broadcast view: no float copy of the input) and :func:`write_bands`
writes output rows band by band as they are produced:

* PNG through **pypng** (``png.Writer.write_packed`` takes an iterator of packed rows and
  compresses them into IDAT chunks as they come: the whole image is never held). pypng writes
  every row with PNG filter 0, so files are somewhat larger than Pillow's adaptively filtered
  ones; it also writes 16-bit RGB, which Pillow cannot.
* TIFF through **tifffile** (``imwrite`` accepts an iterator of row bands for an uncompressed
  strip image; tifffile cannot stream compressed strips, so banded TIFFs are uncompressed, as
  Pillow's default TIFFs are).
* JPEG, WebP and BMP through Pillow, which needs the whole image: the bands are gathered into
  one uint8 array first (and Pillow holds its own 4-byte-per-pixel copy while encoding).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .atomic import atomic_path
from .errors import InputImageError, SrdeployError

T = TypeVar("T")

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
    return _load(path, max_pixels, "downscale it or raise --max-pixels (and use --tile to bound memory)", _to_float)


def _load(path: str | os.PathLike[str], max_pixels: int, hint: str, convert: Callable[[Any], T]) -> T:
    """Open ``path`` with Pillow, refuse it above ``max_pixels`` (``hint`` says what to do), load it
    and ``convert`` the image; non-images and unreadable files are one-line InputImageErrors."""
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
                    f"{path} is {h}x{w} = {h * w / 1e6:.1f} MP, above the {max_pixels / 1e6:.0f} MP limit; {hint}"
                )
            im.load()
            return convert(im)
    except SrdeployError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises these for non-images
        raise InputImageError(f"{path} is not a readable image ({exc}); give a PNG, JPEG or WebP file") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit


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


@dataclass(frozen=True)
class SourceImage:
    """An input image as read, for streaming: ``lr`` is a (1, 3, H, W) *view* of the pixels."""

    lr: np.ndarray  # (1, 3, H, W) uint8 / uint16 / float32, usually a non-contiguous view
    in_scale: float  # lr * in_scale is in [0, 1]
    info: ImageInfo  # alpha is None here: see ``alpha``
    alpha: np.ndarray | None  # (H, W) uint8, or None

    @property
    def height(self) -> int:
        return int(self.lr.shape[2])

    @property
    def width(self) -> int:
        return int(self.lr.shape[3])


def read_source(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> SourceImage:
    """Read an image for streaming inference: the pixels stay in their integer dtype."""
    return _load(path, max_pixels, "downscale it or raise --max-pixels (tiles are streamed, memory grows with the "
                 "output)", _to_source)


def _gray_view(g: np.ndarray) -> np.ndarray:
    return np.broadcast_to(g[None, None], (1, 3, *g.shape))


def _to_source(im) -> SourceImage:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im)
        sixteen = mode.startswith("I;16") or int(a.max(initial=0)) > 255
        g = np.clip(a, 0, 65535 if sixteen else 255).astype(np.uint16 if sixteen else np.uint8)
        return SourceImage(_gray_view(g), 1 / 65535 if sixteen else 1 / 255, ImageInfo(True, 16 if sixteen else 8,
                                                                                       None), None)
    if mode == "F":
        g = np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)
        return SourceImage(_gray_view(g), 1.0, ImageInfo(True, 16, None), None)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("LA", "PA"):
        la = np.asarray(im.convert("LA"))
        return SourceImage(_gray_view(la[..., 0]), 1 / 255, ImageInfo(True, 8, None), np.ascontiguousarray(la[..., 1]))
    if mode in ("L", "1"):
        return SourceImage(_gray_view(np.asarray(im.convert("L"))), 1 / 255, ImageInfo(True, 8, None), None)
    if mode.startswith(("RGB;16", "RGBA;16")) or mode in ("I;16N",):
        raise InputImageError(f"image mode {mode} is not supported; convert the file to 8- or 16-bit PNG")
    if mode in ("RGBA", "RGBa"):
        rgba = np.asarray(im.convert("RGBA"))
        return SourceImage(rgba[..., :3].transpose(2, 0, 1)[None], 1 / 255, ImageInfo(False, 8, None),
                           np.ascontiguousarray(rgba[..., 3]))
    rgb = np.asarray(im.convert("RGB"))
    return SourceImage(rgb.transpose(2, 0, 1)[None], 1 / 255, ImageInfo(False, 8, None), None)


def uint_converter(bits: int = 8, grayscale: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """``(N, C, h, w)`` float in [0, 1] -> ``(N, h, w, K)`` uint8/uint16 (K = 1 for gray, else C).

    Clamps and rounds like :func:`to_uint`; NaN/Inf is an error, not a black pixel.
    """

    def convert(a: np.ndarray) -> np.ndarray:
        if grayscale:
            a = a.mean(axis=1, keepdims=True)
        return to_uint(a, bits).transpose(0, 2, 3, 1)

    return convert


def upscale_alpha(alpha: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bicubic resize of a uint8 alpha plane to ``h x w`` (uint8, as Pillow's "L" resize)."""
    Image = _pil()
    return np.asarray(Image.fromarray(alpha, mode="L").resize((w, h), Image.Resampling.BICUBIC))


Bands = Iterable[tuple[int, np.ndarray]]


def _with_alpha(bands: Bands, alpha: np.ndarray | None, bits: int) -> Iterable[np.ndarray]:
    """(1, h, W, K) bands -> (h, W, K[+1]) arrays, alpha rows appended; checks bands arrive in order."""
    expect = 0
    for y0, band in bands:
        if y0 != expect:
            raise SrdeployError(f"internal error: output band at row {y0}, expected row {expect}")
        b = band[0]
        if alpha is not None:
            a = alpha[y0 : y0 + b.shape[0], :, None]
            b = np.concatenate([b, a.astype(b.dtype) * (257 if bits == 16 else 1)], axis=-1)
        expect += b.shape[0]
        yield b


def write_bands(
    path: str | os.PathLike[str],
    bands: Bands,
    height: int,
    width: int,
    channels: int,
    bits: int = 8,
    alpha: np.ndarray | None = None,
) -> None:
    """Write an image atomically from ``(y0, (1, h, width, channels))`` uint bands in row order.

    PNG and TIFF are written band by band (pypng / tifffile); other formats are gathered first
    (Pillow). ``alpha`` ((height, width) uint8) is appended as the last channel.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise SrdeployError(f"cannot write {path}: use one of {', '.join(SUPPORTED_SUFFIXES)}")
    k = channels + (alpha is not None)
    rows = _with_alpha(bands, alpha, bits)
    with atomic_path(path) as tmp:
        if suffix == ".png":
            import png

            writer = png.Writer(width, height, greyscale=channels == 1, alpha=alpha is not None, bitdepth=bits)
            big = ">u2" if bits == 16 else None

            def packed() -> Iterable[bytes]:
                for band in rows:
                    flat = band.reshape(band.shape[0], -1)
                    if big is not None:
                        flat = flat.astype(big)
                    for r in flat:
                        yield r.tobytes()

            with open(tmp, "wb") as fh:
                writer.write_packed(fh, packed())
        elif suffix in (".tif", ".tiff"):
            import tifffile

            shape = (height, width) if k == 1 else (height, width, k)
            tifffile.imwrite(
                tmp, (b[..., 0] if k == 1 else b for b in rows), shape=shape,
                dtype=np.uint16 if bits == 16 else np.uint8, photometric="minisblack" if channels == 1 else "rgb",
                extrasamples=("unassalpha",) if alpha is not None else None,
            )  # fmt: skip
        else:
            Image = _pil()
            full = np.empty((height, width, k), dtype=np.uint8)
            y = 0
            for b in rows:
                full[y : y + b.shape[0]] = b if bits == 8 else (b >> 8).astype(np.uint8)
                y += b.shape[0]
            mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[k]
            img = Image.fromarray(full[..., 0] if k == 1 else full, mode=mode)
            del full
            fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(suffix, suffix[1:].upper())
            if fmt == "JPEG" and img.mode in ("RGBA", "LA"):
                img = img.convert("RGB" if img.mode == "RGBA" else "L")
            img.save(tmp, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))


def output_bits(path: str | os.PathLike[str], bits: int, has_alpha: bool) -> int:
    """The bit depth an output file keeps: 16 only for PNG/TIFF without alpha."""
    return bits if Path(path).suffix.lower() in (".png", ".tif", ".tiff") and not has_alpha else 8


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
    out = np.clip(arr.astype(np.float32, copy=False), 0.0, 1.0)  # the one float temporary: scaled, rounded in place
    out *= peak
    np.rint(out, out=out)
    return out.astype(np.uint16 if bits == 16 else np.uint8)


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
