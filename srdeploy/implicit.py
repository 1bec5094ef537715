"""Torch-free helpers for implicit (coordinate-query) super-resolution decoders such as CiaoSR.

An implicit decoder is asked for the RGB value at a batch of continuous HR coordinates. The
deployment split (see ``docs/ciaosr.md``) runs an *encoder* once per LR image and a *decoder* on
chunks of queries; this module builds the queries and drives the chunks with any numpy callable
(an ONNX Runtime session, a TensorRT runner or a PyTorch module wrapped in numpy conversion).

Conventions (those of LIIF / CiaoSR and mmediting's ``make_coord``):

* a coordinate is ``(row, col)`` in ``[-1, 1]``, at pixel centres: pixel ``i`` of ``n`` is at
  ``-1 + (2 i + 1) / n``;
* a cell is the size of one HR pixel in the same units: ``(2 / out_h, 2 / out_w)``.

The float32 arithmetic mirrors the authors' torch code operation by operation, so the coordinates
are bit-identical to theirs (the nearest-neighbour lookups in the decoder depend on them).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .errors import ShapeError, SrdeployError

DecoderFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
EncoderFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

DEFAULT_CHUNK = 30000  # queries per decoder call: the authors' eval_bsize


def _axis(n: int) -> np.ndarray:
    # torch: v0 + r + (2 * r) * arange(n).float(), python-float scalars rounded to float32 once
    r = 2.0 / (2 * n)
    return np.float32(2 * r) * np.arange(n, dtype=np.float32) + np.float32(-1 + r)


def make_coord(h: int, w: int) -> np.ndarray:
    """Pixel-centre coordinates of an ``h`` x ``w`` grid: ``(h*w, 2)`` float32 ``(row, col)``, row-major."""
    if h <= 0 or w <= 0:
        raise ShapeError(f"coordinate grid must be at least 1x1, got {h}x{w}")
    rows, cols = _axis(h), _axis(w)
    grid = np.empty((h, w, 2), dtype=np.float32)
    grid[..., 0] = rows[:, None]
    grid[..., 1] = cols[None, :]
    return grid.reshape(h * w, 2)


def make_cell(h: int, w: int, n: int) -> np.ndarray:
    """``n`` copies of the cell of an ``h`` x ``w`` HR grid: ``(n, 2)`` float32 ``(2/h, 2/w)``."""
    if h <= 0 or w <= 0:
        raise ShapeError(f"cell grid must be at least 1x1, got {h}x{w}")
    cell = np.empty((n, 2), dtype=np.float32)
    cell[:, 0] = np.float32(2 / h)
    cell[:, 1] = np.float32(2 / w)
    return cell


def hr_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """The HR size the authors use for an LR ``h`` x ``w`` at ``scale``: ``(round(h*s), round(w*s))``.

    Python's ``round`` (half to even) as in the authors' restorer: 11 x 2.5 -> 28, 13 x 2.5 -> 32.
    """
    if not scale > 0:
        raise SrdeployError(f"scale must be positive, got {scale}")
    out = (round(h * scale), round(w * scale))
    if min(out) < 1:
        raise ShapeError(f"{h}x{w} at scale {scale} gives an empty output; use a larger scale")
    return out


def decode_image(
    decoder_fn: DecoderFn,
    feat_k: np.ndarray,
    feat_v: np.ndarray,
    lr: np.ndarray,
    out_h: int,
    out_w: int,
    chunk: int = DEFAULT_CHUNK,
) -> np.ndarray:
    """Query every pixel centre of an ``out_h`` x ``out_w`` image, ``chunk`` queries per call.

    ``decoder_fn(feat_k, feat_v, lr, coord, cell)`` takes the encoder outputs, the LR image
    ``(N, 3, H, W)`` in [0, 1] and ``coord``/``cell`` of shape ``(N, Q, 2)`` float32, and returns
    ``(N, Q, 3)`` RGB. Returns ``(N, 3, out_h, out_w)`` float32 (unclamped).
    """
    if chunk <= 0:
        raise SrdeployError(f"chunk must be a positive number of queries, got {chunk}")
    if lr.ndim != 4:
        raise ShapeError(f"expected lr of shape (N, 3, H, W), got {lr.shape}")
    n = lr.shape[0]
    if feat_k.shape[0] != n or feat_v.shape[0] != n:
        raise ShapeError(f"batch sizes differ: feat_k {feat_k.shape}, feat_v {feat_v.shape}, lr {lr.shape}")
    coord = make_coord(out_h, out_w)
    q = coord.shape[0]
    cell = make_cell(out_h, out_w, min(chunk, q))
    out = np.empty((n, q, 3), dtype=np.float32)
    for start in range(0, q, chunk):
        stop = min(start + chunk, q)
        c = np.ascontiguousarray(np.broadcast_to(coord[None, start:stop], (n, stop - start, 2)))
        ce = np.ascontiguousarray(np.broadcast_to(cell[None, : stop - start], (n, stop - start, 2)))
        rgb = np.asarray(decoder_fn(feat_k, feat_v, lr, c, ce))
        if rgb.shape != (n, stop - start, 3):
            raise ShapeError(f"decoder returned {rgb.shape}, expected {(n, stop - start, 3)}")
        out[:, start:stop] = rgb
    return np.ascontiguousarray(out.reshape(n, out_h, out_w, 3).transpose(0, 3, 1, 2))


def upscale_image(
    encoder_fn: EncoderFn,
    decoder_fn: DecoderFn,
    lr: np.ndarray,
    out_h: int,
    out_w: int,
    chunk: int = DEFAULT_CHUNK,
) -> np.ndarray:
    """Encode ``lr`` once (``encoder_fn(lr) -> (feat_k, feat_v)``) and decode it to ``out_h`` x ``out_w``."""
    lr = np.ascontiguousarray(lr, dtype=np.float32)
    feat_k, feat_v = encoder_fn(lr)
    return decode_image(decoder_fn, np.asarray(feat_k), np.asarray(feat_v), lr, out_h, out_w, chunk)
