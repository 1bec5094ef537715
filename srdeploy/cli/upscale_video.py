"""``sr-upscale`` on video files: the options and the dispatch to :mod:`srdeploy.video`.

    sr-upscale --onnx esc-light_x4.onnx clip.mp4 -o clip_x4.mp4
    sr-upscale --onnx esc-light_x4.onnx clip.mkv -o out/ --codec ffv1          # lossless, RGB
    sr-upscale --engine esc_x4.engine clip.mov -o x4.mov --crf 18 --start 10 --duration 5

``srdeploy.cli.upscale`` adds :func:`add_video_args` to its parser and hands the parsed
arguments here when an input is a video (by suffix, :data:`srdeploy.video.VIDEO_SUFFIXES`);
images keep their own path. The predictor is built through the same public functions as for
images (``open_predictor`` for ``--onnx``/``--engine``, ``torch_predict`` for ``--model``).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from srdeploy.atomic import output_dir
from srdeploy.errors import SrdeployError, one_line
from srdeploy.options import float_in, int_in, non_negative_float, positive_float
from srdeploy.tiling import Tiling
from srdeploy.video import VIDEO_SUFFIXES, VideoOptions, is_video_path, upscale_video

Predict = Callable[[np.ndarray], np.ndarray]


def add_video_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("video (inputs with a video suffix: " + " ".join(VIDEO_SUFFIXES[:5]) + " ...)")
    g.add_argument("--codec", default=None,
                   help="video encoder: libx264 (default for mp4/mkv/mov), libx265, ffv1 (lossless), libsvtav1, "
                        "libvpx-vp9 (default for webm), h264_nvenc")
    g.add_argument("--crf", type=float_in(0, 63), default=None, help="constant quality (lower is better; NVENC: cq)")
    g.add_argument("--bitrate", default=None, help="target bit rate, e.g. 8M or 2500k (exclusive with --crf)")
    g.add_argument("--pix-fmt", default=None,
                   help="output pixel format (default: the input's, 10-bit kept; ffv1: RGB bgr0/gbrp10le)")
    g.add_argument("--encoder-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="encoder option passed as is, repeatable (e.g. preset=veryfast, tune=film)")
    g.add_argument("--start", type=non_negative_float, default=None, help="start at this time (seconds)")
    g.add_argument("--duration", type=positive_float, default=None, help="process this many seconds")
    g.add_argument("--skip-errors", action="store_true",
                   help="drop frames whose packet does not decode (counted and reported) instead of failing")
    g.add_argument("--batch", type=int_in(1, 256), default=1,
                   help="frames per model call (graph needs a dynamic batch)")
    g.add_argument("--no-audio", action="store_true", help="do not copy audio streams")
    g.add_argument("--no-subtitles", action="store_true", help="do not copy subtitle streams")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def wants_video(inputs: list[str]) -> bool:
    """True when the inputs are videos; a mix of images and videos is refused."""
    videos = [s for s in inputs if is_video_path(s)]
    if videos and len(videos) != len(inputs):
        raise SrdeployError("give video files and images in separate sr-upscale runs")
    return bool(videos)


def parse_bitrate(text: str | None) -> int | None:
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*", text)
    if not m:
        raise SrdeployError(f"--bitrate {text!r} is not a bit rate; write e.g. 8M, 2500k or 800000")
    mult = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


def parse_encoder_opts(items: list[str]) -> dict[str, str]:
    opts = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SrdeployError(f"--encoder-opt {item!r} is not KEY=VALUE; write e.g. --encoder-opt preset=veryfast")
        opts[key] = value
    return opts


def options_from_args(args: argparse.Namespace) -> VideoOptions:
    return VideoOptions(
        codec=args.codec, crf=args.crf, bitrate=parse_bitrate(args.bitrate), pix_fmt=args.pix_fmt,
        start=args.start, duration=args.duration, skip_errors=args.skip_errors, batch=args.batch,
        queue_frames=max(8, 2 * args.batch + 2), copy_audio=not args.no_audio,
        copy_subtitles=not args.no_subtitles, encoder_options=parse_encoder_opts(args.encoder_opt),
    )


def destinations(inputs: list[Path], output: str, suffix: str) -> list[Path]:
    """``-o`` is the output file for one input when it has a suffix (and is no directory), else a directory."""
    out = Path(output)
    if len(inputs) == 1 and out.suffix and not out.is_dir():
        return [out]
    if is_video_path(out) and not out.is_dir():
        raise SrdeployError(f"-o {out} names one file but {len(inputs)} videos were given; give a directory")
    return [out / f"{p.stem}{suffix}{p.suffix}" for p in inputs]


def check_destinations(inputs: list[Path], dests: list[Path], overwrite: bool) -> None:
    """Never over an input (same path or same file); existing outputs only with ``--overwrite``."""
    from srdeploy.inputs import check_no_existing_outputs, file_ids, same_as_any

    resolved, inodes = {p.resolve() for p in inputs}, file_ids(inputs)
    for src, dest in zip(inputs, dests, strict=True):
        if same_as_any(dest, resolved, inodes):
            raise SrdeployError(f"output {dest} is the input file {src} (or another name of it); choose another "
                                "-o or add --suffix (inputs are never overwritten)")
    check_no_existing_outputs(dests, overwrite)


@contextmanager
def _predictor(args: argparse.Namespace) -> Iterator[tuple[Predict, int, Tiling | None]]:
    from srdeploy.cli.upscale import min_size_guard, resolve_tiling, torch_model, torch_predict, warn_if_random

    if args.onnx or args.engine:
        from srdeploy.runtime.backends import RunOptions
        from srdeploy.runtime.predict import open_predictor

        options = RunOptions(device=args.device, plugin_library=args.plugin_library)
        predictor, art = open_predictor(args.onnx or args.engine, getattr(args, "backend", None), options, args.scale)
        tiling = resolve_tiling(args, art.default_tiling, art.min_size, art.model)
        warn_if_random(art, args.onnx or args.engine)
        if not float(predictor.scale).is_integer():
            raise SrdeployError(f"video needs an integer scale; {art.model} runs at x{predictor.scale}")
        with predictor:
            yield min_size_guard(predictor, art.model, art.min_size), int(predictor.scale), tiling
        return
    desc, tiling, model = torch_model(args)
    yield min_size_guard(torch_predict(model), args.model, desc.min_size), args.scale, tiling


def main_video(args: argparse.Namespace) -> int:
    """Upscale every input video; print one summary line per output file.

    One video: its error ends the command (exit 2, nothing written). Several: a video that fails
    (corrupt, unreadable, too large) is reported in one ``failed:`` line and the others still run,
    like a batch of images; the command then ends with a summary and exit 1.
    """
    inputs = [Path(s) for s in args.inputs]
    opts = options_from_args(args)  # validate the cheap things before loading a model
    dests = destinations(inputs, args.output, args.suffix)
    check_destinations(inputs, dests, args.overwrite)
    with contextlib.ExitStack() as folders, _predictor(args) as (predict, scale, tiling):
        for d in sorted({dest.parent for dest in dests}):  # removed again if the command ends with them empty
            folders.enter_context(output_dir(d))
        finished: list[Path] = []
        failed: list[str] = []
        for src, dest in zip(inputs, dests, strict=True):
            try:
                rep = upscale_video(predict, scale, src, dest, opts, tiling,
                                    progress=not (args.no_progress or args.quiet))
            except SrdeployError as exc:
                if len(inputs) == 1:
                    raise
                failed.append(str(src))  # upscale_video left no output for it; the next video still runs
                print(f"failed: {src}: {one_line(exc)}", file=sys.stderr)
                continue
            except KeyboardInterrupt:
                if not finished:
                    raise  # nothing finished: the common "no partial output was left behind" is true
                print(f"interrupted: kept the {len(finished)} finished video(s) (listed on stdout); removed the "
                      f"unfinished output of {src}", file=sys.stderr)
                return 130
            finished.append(rep.dest)
            copied = ", ".join(rep.copied) or "none"
            skipped = f"; skipped {rep.skipped} corrupt frame(s) (--skip-errors)" if rep.skipped else ""
            print(f"{rep.dest}: {rep.frames} frames {rep.out_size[0]}x{rep.out_size[1]} {rep.codec} {rep.pix_fmt}, "
                  f"copied {copied}, {rep.fps:.1f} fps{skipped}")
            if rep.skipped:
                print(f"notice: {src}: {rep.skipped} frame(s) did not decode and were dropped", file=sys.stderr)
    if failed:
        print(f"videos: done {len(finished)}, failed {len(failed)} (first: {failed[0]}); fix or remove the failed "
              "input(s) and rerun them", file=sys.stderr)
        return 1
    return 0
