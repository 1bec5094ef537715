"""One image file through a model with bounded memory: read, pad, plan the tile, stream, write.

The function interface ``sr-upscale`` (and anything else that upscales files) calls:

* :func:`upscale_file` reads the input once in its own dtype (:func:`srdeploy.imageio.read_source`),
  pads what is below the model's minimum (:func:`srdeploy.tiling.padded`), chooses the tile
  (:class:`TilePlan`), streams tiles through the model converting each to uint8/uint16 as it
  arrives (:func:`srdeploy.tiling.iter_bands`) and writes the file band by band where the
  format allows (:func:`srdeploy.imageio.write_bands`), all under
  :func:`srdeploy.memplan.run_with_oom_retry`. Peak memory is the model on one tile plus the
  output band (plus the whole uint8 output for JPEG/WebP/BMP, which Pillow encodes at once).
* :class:`TilePlan` is what ``--tile`` asked for: ``auto`` (default), a fixed tile, or whole images.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .errors import SrdeployError
from .imageio import DEFAULT_MAX_PIXELS, output_bits, read_source, uint_converter, upscale_alpha, write_bands
from .memplan import DEFAULT_MARGIN, MemoryProfile, choose_tile, host_available_bytes, run_with_oom_retry
from .tiling import SizeRule, Tiling, iter_bands, padded

Predict = Callable[[np.ndarray], np.ndarray]
Notice = Callable[[str], None]

#: Most working memory ``--tile auto`` plans for by default (``--tile-memory``), whatever is free:
#: bigger tiles only save a few seams, and other programs share the machine.
DEFAULT_TILE_MEMORY = 2 * 1024**3

#: Up to this many LR pixels ``--tile auto`` runs the whole image without measuring anything: one
#: inference of it costs about what the probes would (the heaviest models here need ~40 kB per LR
#: pixel on CPU: 2.6 GB at 256x256).
AUTO_WHOLE_PIXELS = 256 * 256


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def want_progress(progress: bool | None) -> bool:
    """``None``: a progress bar only when stderr is a terminal (never in logs or pipes)."""
    if progress is None:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    return progress


@contextlib.contextmanager
def whole_image_progress(desc: str, show: bool) -> Iterator[None]:
    """A tqdm bar for one whole-image model call: it cannot count steps inside the call, so a
    thread refreshes it twice a second to show the time spent (a slow model is visibly working)."""
    if not show:
        yield
        return
    from tqdm import tqdm

    bar = tqdm(total=1, desc=f"{desc} (whole image)", unit="img", leave=False, file=sys.stderr)
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.5):
            bar.refresh()

    t = threading.Thread(target=tick, daemon=True)
    t.start()
    try:
        yield
        bar.update(1)
    finally:
        stop.set()
        t.join()
        bar.close()


@dataclass
class TilePlan:
    """``--tile``: ``auto`` (largest tile that fits), ``fixed`` (``tiling``), or ``whole`` images.

    For ``auto``, ``cap`` is the model's own default tile when it has one (a quality choice:
    e.g. the authors' tile protocol), ``profile`` measures the model's memory (called once, when
    the first image large enough needs it) and ``budget`` gives the bytes it may use; ``fallback``
    is the tile to use when no measurement is possible (GPU providers that report no memory).
    """

    mode: Literal["auto", "fixed", "whole"] = "auto"
    tiling: Tiling | None = None
    overlap: int = 16
    blend: str = "crop"
    cap: int | None = None
    profile: Callable[[], MemoryProfile] | None = None
    budget: Callable[[], float | None] = field(default=lambda: _host_budget())
    fallback: int | None = None
    align: int = 8
    _measured: MemoryProfile | None = field(default=None, init=False, repr=False)

    @classmethod
    def fixed(cls, tiling: Tiling | None) -> TilePlan:
        if tiling is None:
            return cls("whole")
        return cls("fixed", tiling, tiling.overlap, tiling.blend)

    def measured(self) -> MemoryProfile | None:
        if self._measured is None and self.profile is not None:
            _stderr("notice: --tile auto: measuring the model's memory per pixel (two probe tiles, once; "
                    "--tile N skips this)")
            self._measured = self.profile()
        return self._measured

    def _tiling(self, tile: int) -> Tiling:
        """The chosen tile with the asked overlap, unchanged: a tile that cannot hold it is refused."""
        if self.overlap >= tile:
            raise SrdeployError(
                f"--tile auto chose {tile}x{tile} tiles, which cannot hold --tile-overlap {self.overlap}; give a "
                f"smaller --tile-overlap (below {tile}) or a fixed --tile"
            )
        return Tiling(tile, self.overlap, self.blend)  # type: ignore[arg-type]

    def resolve(self, h: int, w: int, scale: int, rule: SizeRule, held_bytes: float = 0.0) -> Tiling | None:
        """The tiling for one ``h x w`` image (``None``: whole image)."""
        if self.mode == "whole":
            return None
        if self.mode == "fixed":
            return self.tiling
        side = max(h, w)
        tile: int | None
        if rule.fixed is not None:  # a static-shape graph: its size is the tile (smaller is padded)
            fh, fw = rule.fixed
            if h <= fh and w <= fw:
                return None
            tile = min(fh, fw)
            return self._tiling(tile)
        if self.cap is not None and side <= self.cap:  # within the model's own tile: as before
            return None
        if h * w <= AUTO_WHOLE_PIXELS:  # small: no measurement, the model's own tile if it has one
            if self.cap is None:
                return None
            tile = max(self.cap, rule.min_tile)
            return self._tiling(tile)
        prof = self.measured()
        budget = self.budget()
        if prof is None or budget is None:
            tile = self.fallback if self.fallback is not None else self.cap
        else:
            tile = choose_tile(prof, budget - held_bytes, h, w, scale, rule, self.blend, self.cap, self.align)
        if tile is None or tile >= side:
            return None
        tile = max(tile, rule.min_tile)
        return self._tiling(tile)


def _host_budget(margin: float = DEFAULT_MARGIN, limit: float = DEFAULT_TILE_MEMORY) -> float | None:
    """``margin`` of the available host memory, at most ``limit`` bytes."""
    avail = host_available_bytes()
    return None if avail is None else min(avail * margin, limit)


def host_budget(limit_bytes: float | None = None) -> Callable[[], float | None]:
    """A budget function for :class:`TilePlan`: half the free host memory, at most ``limit_bytes``."""
    return lambda: _host_budget(limit=DEFAULT_TILE_MEMORY if limit_bytes is None else limit_bytes)


def upscale_file(
    predict: Predict,
    scale: int,
    src: Path,
    dest: Path,
    plan: TilePlan | Tiling | None,
    rule: SizeRule | None = None,
    *,
    pad: str = "replicate",
    alpha: str = "upscale",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    notice: Notice | None = None,
    progress: bool | None = None,
) -> Path:
    """Upscale ``src`` into ``dest`` (written atomically; never over ``src``); return ``dest``.

    ``progress``: a tqdm bar on stderr over the tiles, or over the one call of a whole image;
    ``None`` (default) shows it only when stderr is a terminal.
    """
    say = notice or _stderr
    show = want_progress(progress)
    if Path(dest).resolve() == Path(src).resolve():
        raise SrdeployError(f"output {dest} would overwrite the input; choose another -o or --suffix")
    if not isinstance(plan, TilePlan):
        plan = TilePlan.fixed(plan)
    rule = rule or SizeRule()
    img = read_source(src, max_pixels=max_pixels)
    h, w = img.height, img.width
    if float(scale) != int(scale):  # arbitrary-scale (implicit) models: one whole-image call, no tiles
        with whole_image_progress(src.name, show):
            return _upscale_fractional(predict, float(scale), img, src, dest, alpha, say)
    scale = int(scale)
    H, W = h * scale, w * scale
    a_up = None
    if img.alpha is not None:
        if alpha == "drop":
            say(f"notice: {src.name}: alpha channel dropped (--alpha drop)")
        else:
            a_up = upscale_alpha(img.alpha, H, W)
    gray = img.info.grayscale
    k = 1 if gray else 3
    bits = output_bits(dest, img.info.bits, a_up is not None)
    held = float(a_up.nbytes if a_up is not None else 0)
    if Path(dest).suffix.lower() not in (".png", ".tif", ".tiff"):
        held += H * W * (k + (a_up is not None))  # Pillow formats gather the whole uint8 output
    tiling = plan.resolve(h, w, scale, rule, held)
    fn = padded(predict, rule, scale, pad)
    convert = uint_converter(bits, gray)

    def attempt(t: Tiling | None) -> None:
        whole = t is None or (t.tile >= h and t.tile >= w)
        with whole_image_progress(src.name, show and whole):
            bands = iter_bands(fn, img.lr, scale, t, convert=convert, in_scale=img.in_scale,
                               progress=show and not whole, desc=src.name)
            write_bands(dest, bands, H, W, k, bits, a_up)

    run_with_oom_retry(attempt, tiling, h, w, rule, overlap=plan.overlap, blend=plan.blend, what=src.name,
                       notice=say, align=plan.align)
    return dest


def _upscale_fractional(predict: Predict, scale: float, img, src: Path, dest: Path, alpha: str,  # type: ignore[no-untyped-def]
                        say: Notice) -> Path:
    """A non-integer scale: the whole image at once (tiles would not align to HR pixels)."""
    from .implicit import hr_size

    H, W = hr_size(img.height, img.width, scale)
    a_up = None
    if img.alpha is not None:
        if alpha == "drop":
            say(f"notice: {src.name}: alpha channel dropped (--alpha drop)")
        else:
            a_up = upscale_alpha(img.alpha, H, W)
    x = np.ascontiguousarray(img.lr, dtype=np.float32) / np.float32(round(1.0 / img.in_scale))  # as iter_bands
    sr = predict(x)
    if sr.shape[-2:] != (H, W):
        raise SrdeployError(f"the model returned {sr.shape[-2:]} for x{scale} of {img.height}x{img.width}, "
                            f"expected {(H, W)}; is the scale right for this model?")
    bits = output_bits(dest, img.info.bits, a_up is not None)
    band = uint_converter(bits, img.info.grayscale)(sr)
    write_bands(dest, iter([(0, band)]), H, W, band.shape[3], bits, a_up)
    return dest
