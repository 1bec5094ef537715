"""Tiled inference without PyTorch: the one tiling utility every backend reuses.

Sizes are in LR pixels. A tile of ``tile`` pixels is cut every ``tile - overlap`` pixels, the last
tile snapped to the border. Ways to merge the upscaled tiles:

* ``crop`` (default): every output pixel comes from the one tile whose core holds it, with the
  core boundary in the middle of each overlap. For a model whose receptive field radius is at
  most ``overlap // 2`` LR pixels, the result equals untiled inference exactly.
* ``average``: overlapping outputs are averaged uniformly (the protocol of the ASID and CiaoSR
  authors' test scripts).
* ``linear`` / ``cosine`` (feathered): each tile's weight ramps from 0 to 1 across every overlap
  it shares with a neighbour (a linear or a raised-cosine ramp, in HR pixels), normalised so the
  weights of the tiles covering a pixel sum to 1. For models with global statistics (pooling,
  channel attention) the tiles disagree near their borders; a ramp hides the seam that a hard
  crop boundary shows.

Real SR models all have some global operation, so tiled output is close to, not equal to,
untiled output; docs/tiling.md states the PSNR of each blend measured on a real image.

**Streaming.** :func:`stream_tiles` is the engine: the input may be any array view (e.g. the
uint8 image as read, transposed without a copy); each tile is cut from it and converted to
float32 on its own, and finished output rows are handed, already converted to the output dtype
(:func:`srdeploy.imageio.uint_converter`), to a callback band by band from top to bottom. With
``crop`` no float copy of the output exists at all (each tile's core is converted as it
arrives); the other blends keep one float32 strip of one tile row (plus its overlap with the
next). :func:`tiled_apply` is the float32 in-memory form of the same thing.

**Small inputs.** :func:`padded` wraps a predict function so that inputs below a model's minimum
(or not of a size it needs) are padded at the bottom/right, ``replicate`` (edge) by default or
``reflect``, and the output cropped back: a 1x1 image gives a 2x2 output at x2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import ShapeError, SrdeployError

Blend = Literal["crop", "average", "linear", "cosine"]
BLENDS: tuple[str, ...] = ("crop", "average", "linear", "cosine")
PadMode = Literal["replicate", "reflect"]
PAD_MODES: tuple[str, ...] = ("replicate", "reflect")

Predict = Callable[[np.ndarray], np.ndarray]
#: ``convert(float32 (N, C, h, w)) -> (N, h, w, K)`` in the output dtype (channel-last, as image files are)
Convert = Callable[[np.ndarray], np.ndarray]
#: ``emit(y0, band)``: HR rows ``[y0, y0 + band.shape[1])`` of the output are final
Emit = Callable[[int, np.ndarray], None]


@dataclass(frozen=True)
class Tiling:
    """A tiling recipe in LR pixels."""

    tile: int
    overlap: int
    blend: Blend = "crop"

    def __post_init__(self) -> None:
        if self.tile <= 0:
            raise SrdeployError(f"tile size must be positive, got {self.tile}")
        if not 0 <= self.overlap < self.tile:
            raise SrdeployError(f"tile overlap must be in [0, tile), got {self.overlap} for tile {self.tile}")
        if self.blend not in BLENDS:
            raise SrdeployError(f"unknown tile blend {self.blend!r}; use one of {', '.join(BLENDS)}")

    def with_tile(self, tile: int) -> Tiling:
        """The same recipe with another tile size (the overlap shrunk to at most half the tile)."""
        return Tiling(tile, min(self.overlap, tile // 2), self.blend)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``[0, length)`` with tiles of ``tile`` and stride ``tile - overlap``."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _core_bounds(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """For ``crop`` blending: the [lo, hi) range of LR pixels each tile contributes."""
    bounds = []
    lo = 0
    for i, s in enumerate(starts):
        if i + 1 < len(starts):
            nxt = starts[i + 1]
            end = min(s + tile, length)
            hi = (nxt + end) // 2  # middle of the overlap with the next tile
        else:
            hi = length
        bounds.append((lo, hi))
        lo = hi
    return bounds


def iter_tiles(h: int, w: int, tiling: Tiling) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(y0, x0, th, tw)`` LR tile rectangles in raster order."""
    for y0 in tile_starts(h, tiling.tile, tiling.overlap):
        for x0 in tile_starts(w, tiling.tile, tiling.overlap):
            yield y0, x0, min(tiling.tile, h), min(tiling.tile, w)


def _ramp(u: np.ndarray, blend: str) -> np.ndarray:
    if blend == "cosine":
        return 0.5 - 0.5 * np.cos(np.pi * u)
    return u


def axis_weights(starts: list[int], tile: int, length: int, scale: int, blend: str) -> list[np.ndarray]:
    """Per-tile 1-D weights over each tile's HR extent (float64, unnormalised for ``average``).

    ``average``: 1 everywhere. ``linear``/``cosine``: a ramp across the overlap with each
    neighbour (sampled at pixel centres, so never exactly 0), normalised so that the weights of
    the tiles covering an HR position sum to 1.
    """
    t = min(tile, length) * scale
    spans = [(s * scale, s * scale + t) for s in starts]
    raw = []
    for i, (a, b) in enumerate(spans):
        p = np.arange(a, b, dtype=np.float64) + 0.5
        r = np.ones(b - a, dtype=np.float64)
        if blend in ("linear", "cosine"):
            if i > 0 and spans[i - 1][1] > a:  # overlap with the previous tile: [a, prev_end)
                ln = spans[i - 1][1] - a
                r = np.minimum(r, _ramp(np.clip((p - a) / ln, 0.0, 1.0), blend))
            if i + 1 < len(spans) and spans[i + 1][0] < b:  # overlap with the next tile: [next_a, b)
                ln = b - spans[i + 1][0]
                r = np.minimum(r, _ramp(np.clip((b - p) / ln, 0.0, 1.0), blend))
        raw.append(r)
    if blend == "average":
        return raw
    total = np.zeros(length * scale, dtype=np.float64)
    for (a, b), r in zip(spans, raw, strict=True):
        total[a:b] += r
    return [r / total[a:b] for (a, b), r in zip(spans, raw, strict=True)]


def _coverage(starts: list[int], tile: int, length: int, scale: int) -> np.ndarray:
    """How many tiles cover each HR position (``average`` divides by it)."""
    c = np.zeros(length * scale, dtype=np.float32)
    t = min(tile, length) * scale
    for s in starts:
        c[s * scale : s * scale + t] += 1.0
    return c


def _chw_to_hwc(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 2, 3, 1)


def iter_bands(
    fn: Predict,
    lr: np.ndarray,
    scale: int,
    tiling: Tiling | None,
    *,
    convert: Convert = _chw_to_hwc,
    in_scale: float = 1.0,
    progress: bool = False,
    desc: str = "tiles",
) -> Iterator[tuple[int, np.ndarray]]:
    """Apply ``fn`` ((N, C, h, w) float32 -> (N, C', s*h, s*w)) to ``lr`` tile by tile, streaming.

    ``lr`` is (N, C, H, W) of any dtype and layout (a transposed view of an HWC uint8 image is
    fine): each tile is cut from it, copied to contiguous float32 and scaled by ``in_scale`` (divided by its peak).
    Yields ``(y0, convert(rows))`` for finished output rows from top to bottom; nothing else of
    the output is kept. ``tiling=None`` (or a tile at least as large as the image) runs the image
    at once.
    """
    if lr.ndim != 4:
        raise SrdeployError(f"expected an (N, C, H, W) array, got shape {lr.shape}")
    _, _, h, w = lr.shape

    def cut(y0: int, x0: int, th: int, tw: int) -> np.ndarray:
        t = np.ascontiguousarray(lr[:, :, y0 : y0 + th, x0 : x0 + tw], dtype=np.float32)
        if in_scale != 1.0:
            # divide by the peak (255, 65535) rather than multiply by its reciprocal: the bits then equal
            # read_image's ``/ 255.0`` (and srdeploy.video's frames), so every path gives the same pixels
            t /= np.float32(round(1.0 / in_scale))
        return t

    def run(y0: int, x0: int, th: int, tw: int) -> np.ndarray:
        sr = fn(cut(y0, x0, th, tw))
        if sr.ndim != 4 or sr.shape[-2:] != (th * scale, tw * scale):
            raise SrdeployError(
                f"tile output has shape {tuple(sr.shape)}, expected (..., {th * scale}, {tw * scale}); "
                "is the scale right for this model?"
            )
        return sr

    if tiling is None or (tiling.tile >= h and tiling.tile >= w):
        yield 0, convert(run(0, 0, h, w))
        return
    ys = tile_starts(h, tiling.tile, tiling.overlap)
    xs = tile_starts(w, tiling.tile, tiling.overlap)
    th, tw = min(tiling.tile, h), min(tiling.tile, w)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(ys) * len(xs), desc=desc, unit="tile", leave=False)
    try:
        if tiling.blend == "crop":
            yield from _stream_crop(run, ys, xs, th, tw, h, w, tiling.tile, scale, convert, bar)
        else:
            yield from _stream_weighted(run, ys, xs, th, tw, h, w, tiling, scale, convert, bar)
    finally:
        if bar is not None:
            bar.close()


def stream_tiles(
    fn: Predict,
    lr: np.ndarray,
    scale: int,
    tiling: Tiling | None,
    emit: Emit,
    *,
    convert: Convert = _chw_to_hwc,
    in_scale: float = 1.0,
    progress: bool = False,
    desc: str = "tiles",
) -> None:
    """:func:`iter_bands` with a callback: ``emit(y0, band)`` for every finished band."""
    for y0, band in iter_bands(fn, lr, scale, tiling, convert=convert, in_scale=in_scale, progress=progress,
                               desc=desc):
        emit(y0, band)


def _stream_crop(run, ys, xs, th, tw, h, w, tile, s, convert, bar):  # type: ignore[no-untyped-def]
    ybounds = _core_bounds(ys, tile, h)
    xbounds = _core_bounds(xs, tile, w)
    for iy, y0 in enumerate(ys):
        ylo, yhi = ybounds[iy]
        band: np.ndarray | None = None
        for ix, x0 in enumerate(xs):
            xlo, xhi = xbounds[ix]
            sr = run(y0, x0, th, tw)
            core = convert(sr[:, :, (ylo - y0) * s : (yhi - y0) * s, (xlo - x0) * s : (xhi - x0) * s])
            del sr
            if band is None:
                band = np.empty((core.shape[0], (yhi - ylo) * s, w * s, core.shape[3]), dtype=core.dtype)
            band[:, :, xlo * s : xhi * s] = core
            if bar is not None:
                bar.update(1)
        assert band is not None
        yield ylo * s, band


def _stream_weighted(run, ys, xs, th, tw, h, w, tiling, s, convert, bar):  # type: ignore[no-untyped-def]
    """average / linear / cosine: a float32 strip for one tile row plus its carry into the next."""
    blend = tiling.blend
    wy = [a.astype(np.float32) for a in axis_weights(ys, tiling.tile, h, s, blend)]
    wx = [a.astype(np.float32) for a in axis_weights(xs, tiling.tile, w, s, blend)]
    cov_y = _coverage(ys, tiling.tile, h, s) if blend == "average" else None
    cov_x = _coverage(xs, tiling.tile, w, s) if blend == "average" else None
    acc: np.ndarray | None = None  # HR rows [acc_y0, acc_y0 + len)
    acc_y0 = 0
    for iy, y0 in enumerate(ys):
        Y0, Y1 = y0 * s, (y0 + th) * s
        for ix, x0 in enumerate(xs):
            sr = run(y0, x0, th, tw)
            if acc is None:
                acc = np.zeros((sr.shape[0], sr.shape[1], Y1 - acc_y0, w * s), dtype=np.float32)
            elif acc_y0 + acc.shape[2] < Y1:  # grow the strip down to this tile row's bottom
                grown = np.zeros((*acc.shape[:2], Y1 - acc_y0, w * s), dtype=np.float32)
                grown[:, :, : acc.shape[2]] = acc
                acc = grown
            X0 = x0 * s
            wt = wy[iy][:, None] * wx[ix][None, :]
            acc[:, :, Y0 - acc_y0 : Y1 - acc_y0, X0 : X0 + tw * s] += sr * wt
            del sr
            if bar is not None:
                bar.update(1)
        assert acc is not None
        done = ys[iy + 1] * s if iy + 1 < len(ys) else Y1  # rows no later tile touches
        rows = acc[:, :, : done - acc_y0]
        if cov_y is not None and cov_x is not None:
            rows = rows / (cov_y[acc_y0:done, None] * cov_x[None, :])
        yield acc_y0, convert(rows)
        acc = acc[:, :, done - acc_y0 :].copy() if done < Y1 else None
        acc_y0 = done


def tiled_apply(
    fn: Predict,
    lr: np.ndarray,
    scale: int,
    tiling: Tiling | None,
    progress: bool = False,
    desc: str = "tiles",
) -> np.ndarray:
    """Apply ``fn`` ((N, C, h, w) -> (N, C', s*h, s*w)) to ``lr`` tile by tile; float32 result in memory.

    ``tiling=None`` (or a tile at least as large as the image) runs the whole image at once.
    """
    if lr.ndim != 4:
        raise SrdeployError(f"expected an (N, C, H, W) array, got shape {lr.shape}")
    n, _, h, w = lr.shape
    if tiling is None or (tiling.tile >= h and tiling.tile >= w):
        return fn(lr)
    out: list[np.ndarray] = []

    def emit(y0: int, band: np.ndarray) -> None:
        if not out:
            out.append(np.empty((n, band.shape[3], h * scale, w * scale), dtype=np.float32))
        out[0][:, :, y0 : y0 + band.shape[1]] = band.transpose(0, 3, 1, 2)

    stream_tiles(fn, lr, scale, tiling, emit, progress=progress, desc=desc)
    return out[0]


# ------------------------------------------------------------------------------------------------
# small inputs: pad to the smallest accepted size, crop back
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeRule:
    """Which LR sizes a model (or graph) accepts: at least ``min_h x min_w``, a multiple of
    ``multiple``, or exactly ``fixed`` (a static-shape graph)."""

    min_h: int = 1
    min_w: int = 1
    multiple: int = 1
    fixed: tuple[int, int] | None = None

    def accepts(self, h: int, w: int) -> bool:
        if self.fixed is not None:
            return (h, w) == self.fixed
        return h >= self.min_h and w >= self.min_w and h % self.multiple == 0 and w % self.multiple == 0

    def accepted(self, h: int, w: int) -> tuple[int, int]:
        """The smallest accepted size at least ``h x w``."""
        if self.fixed is not None:
            fh, fw = self.fixed
            if h > fh or w > fw:
                raise ShapeError(
                    f"input {h}x{w} is larger than the graph's fixed size {fh}x{fw}; tile it (--tile {min(fh, fw)})"
                )
            return fh, fw
        m = self.multiple

        def up(v: int, lo: int) -> int:
            return int(math.ceil(max(v, lo) / m) * m)

        return up(h, self.min_h), up(w, self.min_w)

    @property
    def min_tile(self) -> int:
        """The smallest square tile this rule accepts without padding."""
        if self.fixed is not None:
            return min(self.fixed)
        return int(math.ceil(max(self.min_h, self.min_w) / self.multiple) * self.multiple)


def pad_bottom_right(x: np.ndarray, ph: int, pw: int, mode: str = "replicate") -> np.ndarray:
    """Pad (N, C, H, W) by ``ph`` rows at the bottom and ``pw`` columns at the right.

    ``replicate`` repeats the border pixel; ``reflect`` mirrors without repeating it (numpy's
    ``reflect``, which keeps reflecting when the pad is larger than the image and is ``replicate``
    for a 1-pixel side).
    """
    if mode not in PAD_MODES:
        raise SrdeployError(f"unknown padding {mode!r}; use one of {', '.join(PAD_MODES)}")
    if ph == 0 and pw == 0:
        return x
    np_mode = "edge" if mode == "replicate" else "reflect"
    if mode == "reflect" and (x.shape[-2] == 1 or x.shape[-1] == 1):
        # numpy's reflect of a single pixel is that pixel; do it per axis so the other axis still reflects
        x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, 0)), mode="edge" if x.shape[-2] == 1 else "reflect")
        return np.pad(x, ((0, 0), (0, 0), (0, 0), (0, pw)), mode="edge" if x.shape[-1] == 1 else "reflect")
    return np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=np_mode)


def padded(fn: Predict, rule: SizeRule, scale: int, mode: str = "replicate") -> Predict:
    """Wrap ``fn`` so inputs the rule does not accept are padded (bottom/right) and the output cropped."""
    if mode not in PAD_MODES:
        raise SrdeployError(f"unknown padding {mode!r}; use one of {', '.join(PAD_MODES)}")

    def wrapped(batch: np.ndarray) -> np.ndarray:
        h, w = batch.shape[-2:]
        if rule.accepts(h, w):
            return fn(batch)
        ph, pw = rule.accepted(h, w)
        sr = fn(np.ascontiguousarray(pad_bottom_right(batch, ph - h, pw - w, mode)))
        return sr[..., : h * scale, : w * scale]

    return wrapped
