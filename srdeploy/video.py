"""Video super-resolution without PyTorch: decode, upscale and encode in one pipelined pass.

Container and codec work is PyAV's (the ``av`` package, FFmpeg in its wheels): demuxing,
decoding, pixel-format/colour conversion (swscale), encoding and muxing, stream copy of audio
and subtitles, the display matrix (rotation). This module only arranges the work:

* **three stages, concurrently**: a decoder thread (demux + decode + YUV -> RGB), an inference
  thread (frames batched, through the existing torch-free :func:`srdeploy.tiling.tiled_apply`),
  and the encoder on the calling thread (RGB -> YUV, encode, mux). ONNX Runtime, TensorRT and
  FFmpeg release the GIL while they work, so the stages overlap.
* **bounded memory**: at most ``queue_frames`` video frames are in flight between decoder and
  encoder (a semaphore taken by the decoder, given back by the encoder); audio and subtitle
  packets travel in order with the frames, so nothing grows with the clip's length.
* **timestamps**: every output frame keeps its input presentation timestamp (variable frame rate
  stays variable); copied packets keep theirs. ``start`` shifts both to begin at zero.
* **colour**: YUV is converted to RGB with the input's own matrix and range, and back with the
  same, and the output stream is tagged with the input's range/primaries/transfer/matrix.
* **atomic output**: the file is written to a hidden temporary file beside the target (same
  extension, so FFmpeg picks the same container) and renamed onto it only when complete; an
  error or Ctrl-C removes it.

The predictor is any callable ``(N, 3, h, w) float32 RGB [0, 1] -> (N, 3, s*h, s*w)``: a
runtime predictor (:func:`srdeploy.runtime.predict.open_predictor`), a PyTorch wrapper, or
anything a VapourSynth/GStreamer user writes. :func:`upscale_frames` is the same without files.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputImageError, MissingDependencyError, SrdeployError
from .imageio import to_uint
from .options import check_range
from .tiling import Tiling, tiled_apply

Predict = Callable[[np.ndarray], np.ndarray]

#: Suffixes ``sr-upscale`` treats as video (anything FFmpeg demuxes works through the API).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mkv", ".mov", ".webm", ".avi", ".nut", ".ts", ".mts", ".m2ts", ".flv",
                  ".mxf", ".mpg", ".mpeg", ".ogv", ".y4m", ".3gp", ".wmv")

#: Encoder used when ``codec`` is not given, by output suffix (then the container's own default).
DEFAULT_CODECS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264",
                  ".webm": "libvpx-vp9", ".nut": "ffv1", ".avi": "ffv1"}

#: Lossless codecs get an RGB pixel format by default, so the output holds exactly the model's
#: (quantised) RGB frames, the same pixels the image path writes.
LOSSLESS_RGB = {"ffv1": ("bgr0", "gbrp10le", "gbrp16le")}

# AVColorSpace (frame/stream metadata) -> swscale colour matrix, for RGB -> YUV on the way out.
_SWS_MATRIX = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}


class VideoError(InputImageError):
    """A video cannot be read, decoded or encoded as asked; the message names the fix."""


def _av() -> Any:
    try:
        import av
    except ImportError as exc:
        raise MissingDependencyError(
            f"video needs PyAV ({exc}); install it with: pip install 'srdeploy[video]'"
        ) from exc
    return av


def is_video_path(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` has a video suffix (what ``sr-upscale`` dispatches on)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoOptions:
    """How to encode and which part of the clip to process. ``None`` means "the default"."""

    codec: str | None = None  # encoder name; default by output suffix (DEFAULT_CODECS)
    crf: float | None = None  # constant quality (x264/x265/vp9/svtav1: crf, NVENC: cq)
    bitrate: int | None = None  # bits per second; exclusive with crf
    pix_fmt: str | None = None  # default: input's if the encoder takes it, else 8/10-bit 4:2:0
    start: float | None = None  # seconds from the start of the clip
    duration: float | None = None  # seconds
    skip_errors: bool = False  # drop frames whose packet fails to decode (counted) instead of failing
    batch: int = 1  # frames per model call (needs a graph with a dynamic batch axis)
    queue_frames: int = 8  # video frames in flight between decoder and encoder (bounds memory)
    copy_audio: bool = True
    copy_subtitles: bool = True
    encoder_options: dict[str, str] = field(default_factory=dict)  # passed to the encoder as is

    def __post_init__(self) -> None:
        if self.crf is not None and self.bitrate is not None:
            raise SrdeployError("--crf and --bitrate exclude each other; give one")
        check_range("--batch", self.batch, 1, 256)  # the same bounds as sr-upscale's argparse types
        check_range("--crf", self.crf, 0, 63)
        check_range("--start", self.start, 0, what=" seconds")
        check_range("--duration", self.duration, 0, lo_open=True, what=" seconds")
        if self.queue_frames < self.batch + 1:
            raise SrdeployError(f"queue_frames ({self.queue_frames}) must exceed batch ({self.batch})")


@dataclass
class VideoReport:
    """What :func:`upscale_video` did."""

    src: Path
    dest: Path
    frames: int
    skipped: int
    in_size: tuple[int, int]  # HxW
    out_size: tuple[int, int]
    codec: str
    pix_fmt: str
    copied: list[str]  # "audio:aac", "subtitle:subrip", ...
    seconds: float  # wall time, open to rename
    infer_seconds: float = 0.0  # time the inference stage spent in the model (+ tiling, quantising)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# frames in, frames out
# ---------------------------------------------------------------------------------------------


def _peak(dtype: np.dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    raise SrdeployError(f"frames must be uint8 or uint16 (H, W, 3) RGB arrays, got {dtype}")


def _run_batch(predict: Predict, frames: list[np.ndarray], scale: int, tiling: Tiling | None) -> list[np.ndarray]:
    """(H, W, 3) uint8/uint16 RGB frames -> upscaled frames of the same dtype (one model call per batch)."""
    dtype = frames[0].dtype
    peak = _peak(dtype)
    x = np.stack([f.transpose(2, 0, 1) for f in frames]).astype(np.float32) / np.float32(peak)
    sr = tiled_apply(predict, x, scale, tiling)
    return [_quantise(o, peak, dtype) for o in sr]


def _quantise(chw: np.ndarray, peak: float, dtype: np.dtype) -> np.ndarray:
    """(3, H, W) float -> (H, W, 3) ``dtype``: the same numbers as :func:`srdeploy.imageio.to_uint`.

    ``rint(clip(x * peak, 0, peak))`` equals ``rint(clip(x, 0, 1) * peak)`` for every float ``x``
    (the product is the same single rounding), done in place in HWC order; about 1.7x faster than
    ``to_uint`` on a 360x640 frame, which matters at video rates (the FFV1 tests check equality).
    """
    hwc = np.empty((chw.shape[1], chw.shape[2], chw.shape[0]), np.float32)  # C-contiguous HWC
    np.multiply(chw.transpose(1, 2, 0), np.float32(peak), out=hwc)
    lo, hi = hwc.min(), hwc.max()  # NaN propagates; Inf shows as +-inf
    if not (np.isfinite(lo) and np.isfinite(hi)):
        to_uint(chw)  # raises the image path's one-line error
    np.clip(hwc, 0.0, peak, out=hwc)
    np.rint(hwc, out=hwc)
    return hwc.astype(dtype)


def upscale_frames(
    predict: Predict,
    frames: Iterable[np.ndarray],
    scale: int,
    tiling: Tiling | None = None,
    batch: int = 1,
) -> Iterator[np.ndarray]:
    """Upscale a stream of ``(H, W, 3)`` uint8/uint16 RGB frames; yield the results in order.

    The quantisation is the image path's (:func:`srdeploy.imageio.to_uint`: clamp, round), so a
    frame comes out exactly as ``sr-upscale`` would write it as a PNG. Frames of one batch must
    share a size; a size change starts a new batch.
    """
    pending: list[np.ndarray] = []
    for f in frames:
        if f.ndim != 3 or f.shape[2] != 3:
            raise SrdeployError(f"frames must be (H, W, 3) RGB arrays, got shape {f.shape}")
        if pending and (f.shape != pending[0].shape or f.dtype != pending[0].dtype):
            yield from _run_batch(predict, pending, scale, tiling)
            pending = []
        pending.append(f)
        if len(pending) >= batch:
            yield from _run_batch(predict, pending, scale, tiling)
            pending = []
    if pending:
        yield from _run_batch(predict, pending, scale, tiling)


# ---------------------------------------------------------------------------------------------
# file to file
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _atomic_video(dest: Path) -> Iterator[Path]:
    """A hidden temporary file beside ``dest`` with the same extension, renamed onto it on success."""
    from .atomic import atomic_path

    with contextlib.ExitStack() as stack:
        try:
            tmp_path = stack.enter_context(atomic_path(dest, keep_suffix=True))
        except OSError as exc:  # only the temporary file's creation, not the writer's own errors
            raise SrdeployError(f"cannot write into {dest.parent} ({exc.strerror}); choose another -o") from exc
        yield tmp_path


def _bits(pix_fmt: str | None) -> int:
    av = _av()
    if not pix_fmt:
        return 8
    try:
        return max(c.bits for c in av.VideoFormat(pix_fmt).components)
    except (ValueError, TypeError):
        return 8


def _choose_codec(dest: Path, codec: str | None) -> Any:
    av = _av()
    name = codec or DEFAULT_CODECS.get(dest.suffix.lower())
    if name is None:
        name = "libx264"
    try:
        c = av.codec.Codec(name, "w")
    except Exception as exc:  # av.codec.codec.UnknownCodecError (a ValueError)
        raise VideoError(
            f"unknown encoder {name!r} ({exc}); use libx264, libx265, ffv1, libsvtav1, libvpx-vp9 or h264_nvenc"
        ) from exc
    if c.type != "video":
        raise VideoError(f"{name} is a {c.type} encoder; give a video encoder with --codec")
    return c


def _choose_pix_fmt(codec: Any, in_pix_fmt: str, requested: str | None) -> str:
    formats = [f.name for f in (codec.video_formats or [])]
    if requested:
        if formats and requested not in formats:
            raise VideoError(f"{codec.name} cannot encode --pix-fmt {requested}; it takes {', '.join(formats)}")
        return requested
    bits = _bits(in_pix_fmt)
    if codec.name in LOSSLESS_RGB:
        b8, b10, b16 = LOSSLESS_RGB[codec.name]
        return b8 if bits <= 8 else b10 if bits <= 10 else b16
    if not formats or in_pix_fmt in formats:
        return in_pix_fmt
    for cand in (["yuv420p10le"] if bits > 8 else []) + ["yuv420p"]:
        if cand in formats:
            return cand
    return formats[0]


@dataclass
class _Range:
    """The [start, end) window of the clip to process, in seconds, and the output offset."""

    start: float
    end: float | None
    shift: bool

    def keep(self, t: float | None) -> bool:
        if t is None:
            return True
        # without --start nothing is cut at the front (AAC priming packets have negative times)
        after_start = not self.shift or t >= self.start - 1e-9
        return after_start and (self.end is None or t < self.end - 1e-9)


_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Pipeline:
    """The three stages and the queues between them; the encoder is driven by the caller."""

    def __init__(self, predict: Predict, scale: int, tiling: Tiling | None, opts: VideoOptions) -> None:
        self.predict, self.scale, self.tiling, self.opts = predict, scale, tiling, opts
        self.stop = threading.Event()
        self.slots = threading.Semaphore(opts.queue_frames)
        self.decoded: queue.Queue[Any] = queue.Queue()
        self.upscaled: queue.Queue[Any] = queue.Queue()
        self.skipped = 0
        self.infer_seconds = 0.0
        self.threads: list[threading.Thread] = []

    def _put(self, q: queue.Queue[Any], item: Any) -> None:
        q.put(item)

    def _acquire_slot(self) -> bool:
        while not self.stop.is_set():
            if self.slots.acquire(timeout=0.1):
                return True
        return False

    def _get(self, q: queue.Queue[Any]) -> Any:
        while True:
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():
                    return _END

    # -- stage 1 --------------------------------------------------------------------------
    def decode(self, inp: Any, vstream: Any, copied: dict[int, Any], rng: _Range, src: Path, fmt: str) -> None:
        av = _av()
        try:
            streams = [vstream, *[inp.streams[i] for i in copied]]
            for packet in inp.demux(*streams):
                if self.stop.is_set():
                    return
                if packet.stream.index != vstream.index:
                    if packet.dts is None or packet.size == 0:
                        continue  # demuxer flush marker
                    t = float(packet.pts * packet.time_base) if packet.pts is not None else None
                    if rng.keep(t):
                        self._put(self.decoded, ("packet", packet))
                    continue
                try:
                    frames = vstream.decode(packet)
                except av.error.FFmpegError as exc:
                    t = float(packet.pts * packet.time_base) if packet.pts is not None else float("nan")
                    if not self.opts.skip_errors:
                        raise VideoError(
                            f"{src}: video packet at {t:.3f}s does not decode ({exc}); "
                            "pass --skip-errors to drop such frames"
                        ) from exc
                    self.skipped += 1
                    continue
                for frame in frames:
                    if frame.pts is None:
                        continue
                    t = float(frame.pts * frame.time_base)
                    if not rng.keep(t):
                        if rng.end is not None and t >= rng.end:
                            self._put(self.decoded, _END)
                            return
                        continue
                    arr = frame.to_ndarray(format=fmt)
                    if not self._acquire_slot():
                        return
                    self._put(self.decoded, ("frame", frame.pts, frame.time_base, arr))
            self._put(self.decoded, _END)
        except BaseException as exc:  # handed to the caller's thread, which raises it
            self._put(self.decoded, _Failed(exc))

    # -- stage 2 --------------------------------------------------------------------------
    def infer(self) -> None:
        try:
            held: list[Any] = []  # frames of the batch being filled and the packets between them
            nframes = 0
            while True:
                item = self._get(self.decoded)
                if self.stop.is_set():  # the caller stopped (error, Ctrl-C): drop what is queued
                    return
                if isinstance(item, _Failed) or item is _END:
                    if nframes and item is _END and not self.stop.is_set():
                        self._flush(held)
                    self._put(self.upscaled, item)
                    return
                if item[0] == "frame" and held and nframes and item[3].shape != self._first_frame(held).shape:
                    self._flush(held)
                    held, nframes = [], 0
                if item[0] == "packet" and not nframes:
                    self._put(self.upscaled, item)  # no batch open: pass it straight on
                    continue
                held.append(item)
                if item[0] == "frame":
                    nframes += 1
                    if nframes >= self.opts.batch:
                        self._flush(held)
                        held, nframes = [], 0
        except BaseException as exc:
            self._put(self.upscaled, _Failed(exc))

    @staticmethod
    def _first_frame(held: list[Any]) -> np.ndarray:
        return next(it[3] for it in held if it[0] == "frame")

    def _flush(self, held: list[Any]) -> None:
        frames = [it[3] for it in held if it[0] == "frame"]
        t0 = time.perf_counter()
        results = iter(_run_batch(self.predict, frames, self.scale, self.tiling))
        self.infer_seconds += time.perf_counter() - t0
        for it in held:
            if it[0] == "frame":
                self._put(self.upscaled, ("frame", it[1], it[2], next(results)))
            else:
                self._put(self.upscaled, it)

    def start(self, *decode_args: Any) -> None:
        self.threads = [
            threading.Thread(target=self.decode, args=decode_args, name="sr-video-decode", daemon=True),
            threading.Thread(target=self.infer, name="sr-video-infer", daemon=True),
        ]
        for t in self.threads:
            t.start()

    def results(self) -> Iterator[tuple[Any, ...]]:
        """Yield ("frame", pts, time_base, array) and ("packet", packet) in order; re-raise stage errors."""
        while True:
            item = self._get(self.upscaled)
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item
            if item[0] == "frame":
                self.slots.release()

    def close(self) -> None:
        """Stop both stages and wait for them: a model call in flight finishes before the predictor
        (and the input container) are released, both stages check ``stop`` between items."""
        self.stop.set()
        for t in self.threads:
            t.join()


def _colour_of(vstream: Any, first: Any | None) -> dict[str, int]:
    cc = vstream.codec_context
    src = first if first is not None else cc
    return {k: int(getattr(src, k) or getattr(cc, k) or 0)
            for k in ("color_range", "color_primaries", "color_trc", "colorspace")}


def _display_matrix(frame: Any) -> list[int] | None:
    """The input's 3x3 display matrix (FFmpeg attaches the stream's to decoded frames), or None."""
    from av.sidedata.sidedata import Type

    sd = frame.side_data.get(Type.DISPLAYMATRIX)
    if sd is None:
        return None
    m = np.frombuffer(bytes(sd), dtype=np.int32)
    identity = [65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30]
    return None if m.size != 9 or m.tolist() == identity else m.tolist()


def _first_frame(path: Path, vstream_index: int) -> Any | None:
    """Decode the first frame (in a separate open) for what the stream header may lack: rotation, colour."""
    av = _av()
    try:
        with av.open(str(path)) as c:
            s = c.streams[vstream_index]
            for packet in c.demux(s):
                try:
                    frames = s.decode(packet)
                except av.error.FFmpegError:
                    continue  # a corrupt packet: the pipeline reports or skips it; look further here
                if frames:
                    return frames[0]
    except av.error.FFmpegError:
        return None
    return None


def upscale_video(
    predict: Predict,
    scale: int,
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    options: VideoOptions | None = None,
    tiling: Tiling | None = None,
    progress: bool = True,
) -> VideoReport:
    """Upscale the video stream of ``src`` into ``dest``; copy audio/subtitles; return a report.

    ``dest``'s extension picks the container. Nothing is left at ``dest`` unless the whole clip
    was written; a decode error (without ``skip_errors``), an encoder error, a full disk or
    Ctrl-C raise with the temporary file removed.
    """
    av = _av()
    opts = options or VideoOptions()
    src, dest = Path(src), Path(dest)
    t0 = time.perf_counter()
    if not src.is_file():
        raise VideoError(f"input {src} does not exist or is not a file")
    if dest.exists() and dest.resolve() == src.resolve():
        raise VideoError(f"output {dest} is the input file; choose another -o (inputs are never overwritten)")
    codec = _choose_codec(dest, opts.codec)
    try:
        inp = av.open(str(src))
    except av.error.FFmpegError as exc:
        raise VideoError(f"{src} is not a video FFmpeg can read ({exc}); give an mp4/mkv/mov/webm file") from exc
    with contextlib.closing(inp):
        if not inp.streams.video:
            kinds = ", ".join(sorted({s.type for s in inp.streams})) or "nothing"
            raise VideoError(f"{src} has no video stream (it holds {kinds}); give a file with video")
        vstream = inp.streams.video[0]
        if vstream.codec_context is None or not vstream.codec_context.is_decoder:
            raise VideoError(f"{src}: the video codec {vstream.codec_context.name if vstream.codec_context else '?'}"
                             " has no decoder in this FFmpeg build; transcode it first")
        vstream.thread_type = "AUTO"
        first = _first_frame(src, vstream.index)
        if first is None:
            raise VideoError(f"{src}: no video frame decodes (unknown codec or corrupt stream); check the file")
        h, w = first.height, first.width
        in_pix = first.format.name
        bits = _bits(in_pix)
        rgb_fmt = "rgb48le" if bits > 8 else "rgb24"
        pix_fmt = _choose_pix_fmt(codec, in_pix, opts.pix_fmt)
        colour = _colour_of(vstream, first)
        matrix = _display_matrix(first)

        start = opts.start or 0.0
        rng = _Range(start, start + opts.duration if opts.duration else None, shift=start > 0)
        if start > 0:
            inp.seek(int(start / vstream.time_base), stream=vstream, backward=True, any_frame=False)
        total = _estimate_frames(vstream, inp, opts)

        with _atomic_video(dest) as tmp:
            try:
                out = av.open(str(tmp), "w")
            except ValueError as exc:
                raise VideoError(f"cannot tell the container from {dest.name} ({exc}); use .mp4, .mkv, .mov or "
                                 ".webm") from exc
            pipe = _Pipeline(predict, scale, tiling, opts)
            with contextlib.closing(out):
                ovs, copied = _open_output(out, codec, inp, vstream, scale, h, w, pix_fmt, colour, matrix, opts)
                frames = _run(pipe, out, ovs, copied, inp, vstream, rng, src, rgb_fmt, pix_fmt, colour,
                              total, progress)
            if frames == 0:  # inside the atomic block: the temporary file goes, dest stays as it was
                raise VideoError(f"{src}: no frame in the chosen range (--start {start:g}, --duration "
                                 f"{opts.duration}); check the clip's length")
    return VideoReport(src, dest, frames, pipe.skipped, (h, w), (h * scale, w * scale), codec.name, pix_fmt,
                       [f"{s.type}:{s.codec_context.name if s.codec_context else '?'}" for s in copied.values()],
                       time.perf_counter() - t0, pipe.infer_seconds)


def _estimate_frames(vstream: Any, inp: Any, opts: VideoOptions) -> int | None:
    rate = vstream.average_rate or vstream.guessed_rate
    if vstream.frames and not opts.start and not opts.duration:
        return int(vstream.frames)
    dur = None
    if vstream.duration is not None and vstream.time_base is not None:
        dur = float(vstream.duration * vstream.time_base)
    elif inp.duration is not None:
        dur = inp.duration / 1e6
    if dur is None or not rate:
        return None
    dur = max(0.0, dur - (opts.start or 0.0))
    if opts.duration:
        dur = min(dur, opts.duration)
    return max(1, round(dur * float(rate)))


def _open_output(out: Any, codec: Any, inp: Any, vstream: Any, scale: int, h: int, w: int, pix_fmt: str,
                 colour: dict[str, int], matrix: list[int] | None, opts: VideoOptions) -> tuple[Any, dict[int, Any]]:
    av = _av()
    rate = vstream.average_rate or vstream.guessed_rate or Fraction(25)
    ovs = out.add_stream(codec.name, rate=rate)
    ovs.width, ovs.height = w * scale, h * scale
    ovs.pix_fmt = pix_fmt
    ovs.time_base = vstream.time_base
    cc = ovs.codec_context
    cc.time_base = vstream.time_base
    for k, v in colour.items():
        if v:
            setattr(cc, k, v)
    if vstream.sample_aspect_ratio:
        cc.sample_aspect_ratio = vstream.sample_aspect_ratio
    enc_opts = dict(opts.encoder_options)
    if opts.crf is not None:
        key = "cq" if "nvenc" in codec.name else "crf"
        enc_opts[key] = f"{opts.crf:g}"
    if opts.bitrate is not None:
        cc.bit_rate = int(opts.bitrate)
    cc.options = enc_opts
    if matrix is not None:
        ovs.set_display_matrix(matrix)  # rotation and flips, as the input's stream declared them
    copied: dict[int, Any] = {}
    for s in inp.streams:
        if (s.type == "audio" and opts.copy_audio) or (s.type == "subtitle" and opts.copy_subtitles):
            try:
                copied[s.index] = out.add_stream_from_template(s)
            except (ValueError, av.error.FFmpegError) as exc:
                flag = "--no-audio" if s.type == "audio" else "--no-subtitles"
                raise VideoError(
                    f"cannot copy the {s.type} stream ({s.codec_context.name if s.codec_context else '?'}) into "
                    f"{out.format.name} ({exc}); use an .mkv output, or drop it with {flag}"
                ) from exc
    try:
        cc.open()
    except av.error.FFmpegError as exc:
        raise VideoError(f"the encoder {codec.name} does not open with these settings ({exc}); "
                         "pick another --codec/--pix-fmt/--crf") from exc
    return ovs, copied


def _run(pipe: _Pipeline, out: Any, ovs: Any, copied: dict[int, Any], inp: Any, vstream: Any, rng: _Range,
         src: Path, rgb_fmt: str, pix_fmt: str, colour: dict[str, int], total: int | None,
         progress: bool) -> int:
    av = _av()
    from tqdm import tqdm

    matrix = _SWS_MATRIX.get(colour["colorspace"])
    out_range = colour["color_range"] or 1  # MPEG (limited) unless the input says otherwise
    written = 0
    vshift = int(rng.start / vstream.time_base) if rng.shift else 0
    bar = tqdm(total=total, desc=src.name, unit="frame", disable=not progress, dynamic_ncols=True)
    pipe.start(inp, vstream, copied, rng, src, rgb_fmt)
    try:
        for item in pipe.results():
            if item[0] == "packet":
                packet = item[1]
                ostream = copied[packet.stream.index]
                if rng.shift:
                    off = int(rng.start / packet.time_base)
                    if packet.pts is not None:
                        packet.pts -= off
                    if packet.dts is not None:
                        packet.dts -= off
                packet.stream = ostream
                out.mux(packet)
                continue
            _, pts, tb, arr = item
            frame = av.VideoFrame.from_ndarray(arr, format=rgb_fmt)
            kw: dict[str, Any] = {"format": pix_fmt}
            if not pix_fmt.startswith(("gbr", "rgb", "bgr")):
                kw["dst_color_range"] = out_range
                if matrix:
                    kw["dst_colorspace"] = matrix
            frame = frame.reformat(**kw)
            frame.pts = pts - vshift
            frame.time_base = tb
            out.mux(ovs.encode(frame))
            written += 1
            bar.update(1)
        out.mux(ovs.encode(None))
    except av.error.FFmpegError as exc:
        raise VideoError(f"encoding/writing failed ({exc}); check free disk space and the --codec settings") from exc
    except OSError as exc:
        raise VideoError(f"writing the output failed ({exc.strerror or exc}); check free disk space") from exc
    finally:
        pipe.close()
        bar.close()
    return written
