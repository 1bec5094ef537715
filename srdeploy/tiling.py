"""Tiled inference without PyTorch: the one tiling utility every backend reuses.

Sizes are in LR pixels. A tile of ``tile`` pixels is cut every ``tile - overlap`` pixels, the last
tile snapped to the border. Two ways to merge the upscaled tiles:

* ``crop`` (default): every output pixel comes from the one tile whose core holds it, with the
  core boundary in the middle of each overlap. For a model whose receptive field radius is at
  most ``overlap // 2`` LR pixels, the result equals untiled inference exactly.
* ``average``: overlapping outputs are averaged uniformly (the protocol of the ASID and CiaoSR
  authors' test scripts).

Real SR models all have some global operation (pooling, channel statistics), so tiled output is
close to, not equal to, untiled output; the tests state the PSNR measured on a real image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import SrdeployError

Blend = Literal["crop", "average"]


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
        if self.blend not in ("crop", "average"):
            raise SrdeployError(f"unknown tile blend {self.blend!r}; use 'crop' or 'average'")


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


def tiled_apply(
    fn: Callable[[np.ndarray], np.ndarray],
    lr: np.ndarray,
    scale: int,
    tiling: Tiling | None,
    progress: bool = False,
    desc: str = "tiles",
) -> np.ndarray:
    """Apply ``fn`` ((N, C, h, w) -> (N, C', s*h, s*w)) to ``lr`` tile by tile.

    ``tiling=None`` (or a tile at least as large as the image) runs the whole image at once.
    """
    if lr.ndim != 4:
        raise SrdeployError(f"expected an (N, C, H, W) array, got shape {lr.shape}")
    n, _, h, w = lr.shape
    if tiling is None or (tiling.tile >= h and tiling.tile >= w):
        return fn(lr)
    ys = tile_starts(h, tiling.tile, tiling.overlap)
    xs = tile_starts(w, tiling.tile, tiling.overlap)
    th, tw = min(tiling.tile, h), min(tiling.tile, w)
    out: np.ndarray | None = None
    weight = None
    ybounds = _core_bounds(ys, tiling.tile, h)
    xbounds = _core_bounds(xs, tiling.tile, w)
    rects = [(iy, ix) for iy in range(len(ys)) for ix in range(len(xs))]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(rects), desc=desc, unit="tile", leave=False)
    try:
        for iy, ix in rects:
            y0, x0 = ys[iy], xs[ix]
            sr = fn(np.ascontiguousarray(lr[:, :, y0 : y0 + th, x0 : x0 + tw]))
            if sr.shape[-2:] != (th * scale, tw * scale):
                raise SrdeployError(
                    f"tile output has shape {sr.shape[-2:]}, expected {(th * scale, tw * scale)}; "
                    "is the scale right for this model?"
                )
            if out is None:
                out = np.zeros((n, sr.shape[1], h * scale, w * scale), dtype=np.float32)
                if tiling.blend == "average":
                    weight = np.zeros((1, 1, h * scale, w * scale), dtype=np.float32)
            if tiling.blend == "average":
                assert weight is not None
                out[:, :, y0 * scale : (y0 + th) * scale, x0 * scale : (x0 + tw) * scale] += sr
                weight[:, :, y0 * scale : (y0 + th) * scale, x0 * scale : (x0 + tw) * scale] += 1.0
            else:
                (ylo, yhi), (xlo, xhi) = ybounds[iy], xbounds[ix]
                out[:, :, ylo * scale : yhi * scale, xlo * scale : xhi * scale] = sr[
                    :, :, (ylo - y0) * scale : (yhi - y0) * scale, (xlo - x0) * scale : (xhi - x0) * scale
                ]
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    assert out is not None
    if weight is not None:
        out /= weight
    return out
