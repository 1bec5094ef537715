"""``sr-upscale``: super-resolve images with a registered model (PyTorch) or an exported one.

    sr-upscale --model esc --scale 4 [--weights FILE] photo.png more/*.jpg -o out/
    sr-upscale --onnx esc_x4_fp16.onnx photo.png -o out/         # torch-free (ONNX Runtime)
    sr-upscale --engine esc_x4_fp16.engine photo.png -o out/     # torch-free (TensorRT)
    sr-upscale --onnx esc_x4_fp16.onnx clip.mp4 -o clip_x4.mp4   # video: srdeploy/cli/upscale_video.py

Any input size (docs/tiling.md): images below the model's minimum are padded (``--pad``) and the
output cropped back; ``--tile auto`` (default) picks the largest tile that fits the free memory,
tiles are streamed into the uint8/uint16 output (PNG/TIFF written band by band), and an
out-of-memory error halves the tile and retries. The logic lives in srdeploy.pipeline /
srdeploy.tiling / srdeploy.memplan (torch-free). Every output file is written atomically: an
error or Ctrl-C leaves no half-written file.

Safety rules (docs/runtime.md, "What sr-upscale refuses"): an output never replaces an input
(path, symlink or hard link); existing outputs need ``--overwrite``; tile/overlap and every
numeric option are checked, never clamped (srdeploy.options); random weights print a warning; a
batch reports a bad input and goes on, ends with ``done N, skipped N, failed N`` and exits 1 if
anything was not done; Ctrl-C keeps the finished outputs; an ``-o`` folder created for a command
that wrote nothing is removed again.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srdeploy.atomic import output_dir
from srdeploy.cli.scaleout import add_scaleout_args, run_scaleout, wants_scaleout
from srdeploy.errors import InputImageError, ShapeError, SrdeployError, cli_errors, one_line
from srdeploy.imageio import DEFAULT_MAX_PIXELS
from srdeploy.inputs import (
    check_no_existing_outputs,
    check_not_overwriting_inputs,
    check_unique_stems,
    expand_inputs,
    output_name,
)
from srdeploy.memplan import DEFAULT_MARGIN, MemoryProfile, measure_cpu_profile
from srdeploy.notices import warn_random_weights
from srdeploy.options import OneLineParser, int_in, non_negative_int, positive_int
from srdeploy.pipeline import TilePlan, host_budget, upscale_file, want_progress
from srdeploy.tiling import BLENDS, PAD_MODES, SizeRule, Tiling

Predict = Callable[[np.ndarray], np.ndarray]


def _tile_arg(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes 'auto' or a number of LR pixels, not {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 'auto', 0 (whole image) or a positive size, got {v}")
    return v


def add_tiling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tiling (LR pixels)")
    g.add_argument("--tile", type=_tile_arg, default="auto",
                   help="tile size; 0 = whole image; auto (default) = the largest tile that fits the free memory "
                        "(sr-bench: the model's default tiling)")
    g.add_argument("--tile-overlap", type=non_negative_int, default=None,
                   help="overlap between tiles, below --tile (default: 16 or the model's)")
    g.add_argument("--tile-blend", choices=list(BLENDS), default=None,
                   help="how overlaps are merged: crop (exact for local models), average, linear/cosine (feathered)")


def resolve_tiling(args: argparse.Namespace, default: Tiling | None, min_size: int | None = None,
                   model: str = "the model") -> Tiling | None:
    """A fixed tiling from the flags (``auto`` here means the model's default tiling).

    Nothing is clamped: an overlap at or above the tile (which would cut a tile every pixel) and a
    tile below ``min_size`` (the model's smallest input) are refused with one line naming the limit.
    """
    if args.tile == 0:
        return None
    auto = args.tile in (None, "auto")
    if auto and args.tile_overlap is None and args.tile_blend is None:
        return default
    tile = args.tile if not auto else (default.tile if default else None)
    if tile is None:
        raise SrdeployError("--tile-overlap/--tile-blend need --tile (this model has no default tiling)")
    overlap = args.tile_overlap if args.tile_overlap is not None else (default.overlap if default else 16)
    blend = args.tile_blend or (default.blend if default else "crop")
    if min_size is not None and tile < min_size:
        raise SrdeployError(f"--tile {tile} is below {model}'s minimum input size {min_size}; "
                            f"give --tile {min_size} or more (or --tile 0 for whole images)")
    if overlap >= tile:
        given = "" if args.tile_overlap is not None else " (the default)"
        raise SrdeployError(f"--tile-overlap {overlap}{given} must be below --tile {tile}; give --tile-overlap "
                            f"{max(0, tile // 4)} or a larger --tile (or --tile 0 for whole images)")
    return Tiling(tile, overlap, blend)  # type: ignore[arg-type]


def _model_names() -> str:
    """The registry's names for ``--help`` (imports the PyTorch models; without them, says so)."""
    try:
        from srdeploy import models

        return ", ".join(models.list_models())
    except ImportError:
        return "(install 'srdeploy[torch]' to list them; --onnx/--engine need no PyTorch)"


class _Parser(OneLineParser):
    """``--help`` ends with the registered model names, read from the registry when help is shown."""

    def format_help(self) -> str:
        self.epilog = f"models (--model): {_model_names()}"
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="sr-upscale",
        description="Super-resolve PNG/JPEG/WebP images with a registered model on CPU.",
    )
    p.add_argument("inputs", nargs="+", help="images or videos, folders, globs or list files (.txt, one path a line)")
    p.add_argument("-o", "--output", required=True, help="output directory (one video: the output file)")
    src = p.add_mutually_exclusive_group(required=False)  # one of them, unless --server (checked in main)
    src.add_argument("--model", help="registered model name, run with PyTorch")
    src.add_argument("--onnx", help="exported .onnx (or STEM.encoder.onnx), run torch-free with ONNX Runtime")
    src.add_argument("--engine", help="TensorRT engine file, run torch-free")
    p.add_argument("--scale", type=positive_int, default=None,
                   help="upscaling factor (read from --onnx/--engine artifacts)")
    p.add_argument("--backend", choices=_artifact_backends(), default=None,
                   help="--onnx/--engine: the backend (default: the registry's for the artifact kind)")
    p.add_argument("--device", default="cpu", help="--onnx: ONNX Runtime provider cpu | cuda | tensorrt")
    p.add_argument("--plugin-library", default=None, help="--engine: TensorRT plugin library to load")
    p.add_argument("--weights", default=None, help="checkpoint file, manifest name, or 'official'")
    p.add_argument("--alpha", choices=["upscale", "drop"], default="upscale",
                   help="alpha channel: upscale it separately (bicubic) or drop it with a notice")
    p.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, help="refuse larger inputs")
    p.add_argument("--suffix", default="", help="text added to output file names")
    p.add_argument("--overwrite", action="store_true",
                   help="replace output files that exist already (never an input: that is always refused)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars (they are off anyway when "
                   "stderr is not a terminal)")
    p.add_argument("--tile-memory", type=int_in(1, what=" MiB"), default=None, metavar="MiB",
                   help="most working memory --tile auto plans for (default: half the free memory, at most 2048)")
    p.add_argument("--pad", choices=list(PAD_MODES), default="replicate",
                   help="how inputs below the model's minimum size are padded (the output is cropped back)")
    add_tiling_args(p)
    add_scaleout_args(p)  # --ray / --server (issue 18: srdeploy/cli/scaleout.py)
    from srdeploy.cli.upscale_video import add_video_args  # video inputs: see srdeploy/cli/upscale_video.py

    add_video_args(p)
    return p


def resolve_plan(args: argparse.Namespace, default: Tiling | None, **auto: object) -> TilePlan:
    """``--tile``: a fixed tiling, whole images (0), or ``auto`` (``auto`` = TilePlan fields)."""
    if args.tile != "auto":
        return TilePlan.fixed(resolve_tiling(args, default))
    overlap = args.tile_overlap if args.tile_overlap is not None else (default.overlap if default else 16)
    blend = args.tile_blend or (default.blend if default else "crop")
    limit = getattr(args, "tile_memory", None)
    if limit is not None:
        if limit <= 0:
            raise SrdeployError("--tile-memory must be a positive number of MiB")
        base = auto.get("budget")
        cap = limit * 1024**2

        def capped() -> float | None:
            b = base() if callable(base) else host_budget(cap)()
            return None if b is None else min(b, cap)

        auto["budget"] = capped
    return TilePlan("auto", None, overlap, blend, default.tile if default else None, **auto)  # type: ignore[arg-type]


def _artifact_backends() -> list[str]:
    """Backends that run exported files (the registry of srdeploy.runtime.backends)."""
    from srdeploy.runtime.backends import backends

    return [name for name, b in backends().items() if {"onnx", "engine"} & set(b.accepts)]


def _check_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders, globs and list files -> image files (srdeploy.inputs)."""
    paths = expand_inputs(inputs)
    check_unique_stems(paths)
    return paths


@dataclass(frozen=True)
class BatchSettings:
    """How every image of a batch is upscaled (the flags of ``sr-upscale`` that shape one output)."""

    tiling: Tiling | TilePlan | None = None
    alpha: str = "upscale"
    max_pixels: int = DEFAULT_MAX_PIXELS
    suffix: str = ""
    rule: SizeRule | None = None
    pad: str = "replicate"


def upscale_files(
    predict: Predict,
    scale: int,
    inputs: Sequence[Path],
    outdir: Path,
    settings: BatchSettings = BatchSettings(),
    *,
    progress: bool | None = None,
) -> list[Path]:
    """Upscale ``inputs`` into ``outdir`` with ``predict``; return the written paths.

    The library form: the first error is raised (outputs finished before it stay). ``sr-upscale``
    itself goes through :func:`upscale_batch`, which reports a bad input and goes on.
    """
    return upscale_batch(predict, scale, inputs, outdir, settings, progress=progress, keep_going=False).done


@dataclass
class BatchResult:
    """What a batch did: outputs written, inputs skipped (bad input) or failed (error while running)."""

    total: int
    done: list[Path] = field(default_factory=list)
    skipped: dict[Path, str] = field(default_factory=dict)
    failed: dict[Path, str] = field(default_factory=dict)
    interrupted: Path | None = None  # the input whose output was in progress at Ctrl-C
    was_interrupted: bool = False

    def line(self) -> str:
        return f"done {len(self.done)}, skipped {len(self.skipped)}, failed {len(self.failed)}"

    @property
    def not_started(self) -> int:
        in_progress = self.interrupted is not None
        return self.total - len(self.done) - len(self.skipped) - len(self.failed) - in_progress


#: Up to this many skipped/failed inputs the summary lists them on stderr; more go to a list file.
SUMMARY_LIST_MAX = 10
SUMMARY_FILE = "sr-upscale-not-done.txt"


def upscale_batch(
    predict: Predict,
    scale: int,
    inputs: Sequence[Path],
    outdir: Path,
    settings: BatchSettings = BatchSettings(),
    *,
    progress: bool | None = None,
    keep_going: bool = True,
    echo: bool = False,
) -> BatchResult:
    """Upscale every input through :func:`srdeploy.pipeline.upscale_file` (padding, tile plan,
    streaming, out-of-memory retry), each output written atomically.

    ``keep_going``: a bad input (:class:`InputImageError`/:class:`ShapeError`: skipped) or an error
    while running one (failed) is reported on one stderr line and the batch goes on; else it is
    raised. Ctrl-C stops the batch: finished outputs stay, the one in progress is removed (it was
    never renamed into place) and :attr:`BatchResult.interrupted` names its input. ``echo``: print
    each written path on stdout as soon as it is finished.
    """
    from tqdm import tqdm

    result = BatchResult(len(inputs))
    show = want_progress(progress)
    bar = tqdm(inputs, desc="images", unit="img", disable=not show or len(inputs) < 2, file=sys.stderr)
    current: Path | None = None
    try:
        for path in bar:
            dest = outdir / output_name(path, settings.suffix)
            current = path
            try:
                upscale_file(predict, scale, path, dest, settings.tiling, settings.rule, pad=settings.pad,
                             alpha=settings.alpha, max_pixels=settings.max_pixels, progress=show)
            except SrdeployError as exc:
                if not keep_going:
                    raise
                bad = isinstance(exc, (InputImageError, ShapeError))
                msg = one_line(exc)
                (result.skipped if bad else result.failed)[path] = msg
                current = None
                tqdm.write(f"{'skipped' if bad else 'failed'}: {msg if str(path) in msg else f'{path}: {msg}'}",
                           file=sys.stderr)
                continue
            result.done.append(dest)
            current = None
            if echo:
                tqdm.write(str(dest), file=sys.stdout)
                sys.stdout.flush()
    except KeyboardInterrupt:  # also between two images: the batch stops, what is finished stays
        result.interrupted = current  # None: between two images
        result.was_interrupted = True
    finally:
        bar.close()
    return result


def report_batch(result: BatchResult, outdir: Path) -> int:
    """The end of a batch on stderr: the summary line, what was not done, and the exit status
    (0: all done; 1: an input was skipped or failed; 130: interrupted)."""
    bad = [("skipped", p, m) for p, m in result.skipped.items()] + [("failed", p, m) for p, m in result.failed.items()]
    if result.total > 1 or result.was_interrupted:
        where = ""
        if len(bad) > SUMMARY_LIST_MAX and result.done:  # the folder exists: the list goes beside the outputs
            listing = outdir / SUMMARY_FILE
            from srdeploy.atomic import atomic_write_text

            lines = ["# sr-upscale: inputs not upscaled; give this file as the input to retry them"]
            for kind, p, m in bad:
                lines += [f"# {kind}: {m}", str(p.resolve())]
            atomic_write_text(listing, "\n".join(lines) + "\n")
            where = f"; the {len(bad)} not done are listed in {listing}"
        print(result.line() + where, file=sys.stderr)
        if not where:
            for kind, p, _ in bad:
                print(f"  {kind}: {p}", file=sys.stderr)
    if result.was_interrupted:  # last, so it is the line a user sees
        kept = (f"kept the {len(result.done)} finished output(s) in {outdir} (listed on stdout)"
                if result.done else "no output was finished")
        removed = f"removed the unfinished output of {result.interrupted}; " if result.interrupted else ""
        print(f"interrupted: {kept}; {removed}{result.not_started} input(s) not started", file=sys.stderr)
        return 130
    return 1 if bad else 0


def torch_predict(model) -> Predict:
    import torch

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).float().numpy()

    return predict


def min_size_guard(predict: Predict, model_name: str, min_size: int) -> Predict:
    """Refuse inputs (or tiles) smaller than the model's minimum with a one-line error."""

    def guarded(batch: np.ndarray) -> np.ndarray:
        h, w = batch.shape[-2:]
        if h < min_size or w < min_size:
            raise ShapeError(
                f"input {h}x{w} is smaller than {model_name}'s minimum {min_size}x{min_size}; "
                "enlarge the image first or use another model"
            )
        return predict(batch)

    return guarded


@cli_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.model or args.onnx or args.engine or args.server):
        raise SrdeployError("give the model: --model NAME, --onnx FILE or --engine FILE (or --server URL)")
    if args.weights is not None and (args.onnx or args.engine):
        raise SrdeployError(  # exit 2: a usage error
            f"--weights is not used with --{'onnx' if args.onnx else 'engine'}: an exported artifact carries "
            "its weights; re-export it with sr-export --weights FILE, or run --model NAME --weights FILE"
        )
    from srdeploy.cli.upscale_video import main_video, wants_video

    if wants_video(args.inputs):  # video files go through srdeploy.video; images continue below
        if wants_scaleout(args):
            raise SrdeployError("--ray and --server take images, not video files: upscale a clip without them")
        return main_video(args)
    inputs = _check_inputs(args.inputs)
    outdir = Path(args.output)
    ext = ".png" if args.server else None
    check_not_overwriting_inputs(inputs, outdir, args.suffix, ext)
    dests = [outdir / (output_name(p, args.suffix) if ext is None else f"{p.stem}{args.suffix}{ext}") for p in inputs]
    if args.ray is not None and dests:  # --ray resumes: a folder holding its records is its own to redo
        from srdeploy.runtime.ray_batch import sidecar_of

        if sidecar_of(dests[0]).parent.is_dir():
            dests = []
    check_no_existing_outputs(dests, args.overwrite)
    if wants_scaleout(args):
        return run_scaleout(args, inputs)
    if args.onnx or args.engine:
        return _main_runtime(args, inputs)
    desc, _, model = torch_model(args)
    predict = torch_predict(model)
    # sizes: inputs below the minimum are padded (--pad) and cropped back (srdeploy.tiling.padded)
    rule = SizeRule(desc.min_size, desc.min_size)
    plan = resolve_plan(args, desc.default_tiling, profile=lambda: measure_cpu_profile(predict, rule, args.scale))
    with output_dir(outdir):
        result = _batch(args, predict, args.scale, inputs, outdir, plan, rule)
    return report_batch(result, outdir)


def _batch(args: argparse.Namespace, predict: Predict, scale: int, inputs: list[Path], outdir: Path,
           plan: TilePlan, rule: SizeRule) -> BatchResult:
    """One input: its error is the command's (one line, its exit code); several: report and go on."""
    settings = BatchSettings(plan, args.alpha, args.max_pixels, args.suffix, rule, args.pad)
    return upscale_batch(predict, scale, inputs, outdir, settings, progress=False if args.quiet else None,
                         keep_going=len(inputs) > 1, echo=True)


def torch_model(args: argparse.Namespace) -> tuple[Any, Tiling | None, Any]:
    """``--model``: (descriptor, fixed tiling from the flags, built model), checking the cheap things
    (scale, tile size) before the model is built and before any output is touched. Without
    ``--weights`` the model has random weights: one warning line on stderr says so."""
    if args.scale is None:
        raise SrdeployError("--model needs --scale")
    try:
        from srdeploy import models
    except ImportError as exc:
        raise SrdeployError(f"--model needs PyTorch ({exc}); pip install 'srdeploy[torch]'") from exc
    desc = models.descriptor(args.model)
    desc.check_scale(args.scale)
    tiling = resolve_tiling(args, desc.default_tiling, desc.min_size, args.model)
    model = models.build(args.model, args.scale, args.weights)
    if args.weights is None:
        warn_random_weights(f"--model {args.model} x{args.scale} without --weights")
    return desc, tiling, model


def warn_if_random(art: Any, path: str) -> None:
    """The one-line stderr warning when an artifact's record says its weights were random."""
    if art.random_weights:
        seed = getattr(art.record, "seed", None) if art.record is not None else None
        warn_random_weights(f"{path} ({art.model}, exported by sr-export without --weights)", seed)


def _main_runtime(args: argparse.Namespace, inputs: list[Path]) -> int:
    """``--onnx``/``--engine``: torch-free, through srdeploy.runtime's runners and the artifact's tiling."""
    from srdeploy.runtime.backends import RunOptions
    from srdeploy.runtime.predict import open_predictor

    options = RunOptions(device=args.device, plugin_library=args.plugin_library)
    path = args.onnx or args.engine
    predictor, art = open_predictor(path, args.backend, options, args.scale)
    resolve_tiling(args, art.default_tiling, art.min_size, art.model)  # refuse bad flags before any work
    warn_if_random(art, path)
    outdir = Path(args.output)
    from srdeploy.runtime import backends

    backend = args.backend or backends.default_backend(art.kind).name
    with predictor, output_dir(outdir):
        rule, plan = runtime_plan(args, predictor, art, backend)
        result = _batch(args, predictor, predictor.scale, inputs, outdir, plan, rule)
    return report_batch(result, outdir)


def _trt_profile_sides(runner, art) -> tuple[int | None, int | None]:  # type: ignore[no-untyped-def]
    """Smallest min side and smallest max side of the engine's profile 0 (else the descriptor's)."""
    eng = getattr(runner, "_engine", None)
    try:
        mn, _, mx = eng.get_tensor_profile_shape(runner.inputs[0].name, 0)  # type: ignore[union-attr]
        return min(int(mn[-2]), int(mn[-1])), min(int(mx[-2]), int(mx[-1]))
    except Exception:  # no engine API here (older TensorRT, a double): the exporter's descriptor
        prof = art.descriptor.get("trt_profile") or {}

    def side(key: str) -> int | None:
        v = prof.get(key) if isinstance(prof, dict) else None
        return min(int(d) for d in str(v).lower().split("x")) if v else None

    return side("min"), side("max")


def runtime_plan(args: argparse.Namespace, predictor, art, backend: str) -> tuple[SizeRule, TilePlan]:  # type: ignore[no-untyped-def]
    """Size rule and ``--tile`` plan for a torch-free predictor (srdeploy.memplan does the work)."""
    from srdeploy.memplan import device_memory, engine_profile

    runner = predictor.runners[0]
    shape = runner.inputs[0].shape if runner.inputs else ()
    fixed = (shape[2], shape[3]) if len(shape) == 4 and shape[2] and shape[3] else None  # static graph
    rule = SizeRule(art.min_size, art.min_size, 1, fixed)  # type: ignore[arg-type]
    scale = int(predictor.scale) if float(predictor.scale) == int(predictor.scale) else 1  # fractional: untiled
    if backend == "tensorrt":  # the engine's own activation memory, against the free GPU memory
        lo, cap = _trt_profile_sides(runner, art)
        if lo is not None and lo > art.min_size:  # pad up to the engine profile's minimum too
            rule = SizeRule(lo, lo, 1, fixed)  # type: ignore[arg-type]

        def trt_budget() -> float | None:
            mem = device_memory()
            return None if mem is None else mem[0] * DEFAULT_MARGIN + runner.peak_memory().peak_bytes

        def trt_profile() -> MemoryProfile:
            return engine_profile(runner.peak_memory().peak_bytes, (cap or 0, cap or 0), scale)

        plan = resolve_plan(args, art.default_tiling, profile=trt_profile, budget=trt_budget)
        if cap is not None:
            plan.cap = cap if plan.cap is None else min(plan.cap, cap)
        return rule, plan
    if getattr(runner, "device_kind", "cpu") != "cpu":  # ORT GPU providers report no memory
        return rule, resolve_plan(args, art.default_tiling, profile=None, fallback=512)
    return rule, resolve_plan(args, art.default_tiling, profile=lambda: measure_cpu_profile(predictor, rule, scale))


if __name__ == "__main__":
    sys.exit(main())
