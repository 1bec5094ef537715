"""``sr-upscale``: super-resolve images with a registered model (PyTorch) or an exported one.

    sr-upscale --model esc --scale 4 [--weights FILE] photo.png more/*.jpg -o out/
    sr-upscale --onnx esc_x4_fp16.onnx photo.png -o out/         # torch-free (ONNX Runtime)
    sr-upscale --engine esc_x4_fp16.engine photo.png -o out/     # torch-free (TensorRT)

Tiled inference (``--tile``, ``--tile-overlap``, LR pixels) bounds memory on large images; the
tiling utility is torch-free and shared with the runtime. Every output file is written
atomically: an error or Ctrl-C leaves no half-written file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from srdeploy.atomic import check_outdir
from srdeploy.errors import InputImageError, ShapeError, SrdeployError, cli_errors
from srdeploy.imageio import DEFAULT_MAX_PIXELS, SUPPORTED_SUFFIXES, read_image, resize_plane, write_image
from srdeploy.tiling import Tiling, tiled_apply

Predict = Callable[[np.ndarray], np.ndarray]


def add_tiling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tiling (LR pixels)")
    g.add_argument("--tile", type=int, default=None, help="tile size; 0 = whole image; default: the model's")
    g.add_argument("--tile-overlap", type=int, default=None, help="overlap between tiles (default: 16 or the model's)")
    g.add_argument("--tile-blend", choices=["crop", "average"], default=None, help="how overlaps are merged")


def resolve_tiling(args: argparse.Namespace, default: Tiling | None) -> Tiling | None:
    if args.tile == 0:
        return None
    if args.tile is None and args.tile_overlap is None and args.tile_blend is None:
        return default
    tile = args.tile if args.tile is not None else (default.tile if default else None)
    if tile is None:
        raise SrdeployError("--tile-overlap/--tile-blend need --tile (this model has no default tiling)")
    overlap = args.tile_overlap if args.tile_overlap is not None else (default.overlap if default else 16)
    blend = args.tile_blend or (default.blend if default else "crop")
    return Tiling(tile, min(overlap, tile - 1), blend)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sr-upscale",
        description="Super-resolve PNG/JPEG/WebP images with a registered model on CPU.",
    )
    p.add_argument("inputs", nargs="+", help="input images")
    p.add_argument("-o", "--output", required=True, help="output directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="registered model name, run with PyTorch")
    src.add_argument("--onnx", help="exported .onnx (or STEM.encoder.onnx), run torch-free with ONNX Runtime")
    src.add_argument("--engine", help="TensorRT engine file, run torch-free")
    p.add_argument("--scale", type=int, default=None, help="upscaling factor (read from --onnx/--engine artifacts)")
    p.add_argument("--backend", choices=_artifact_backends(), default=None,
                   help="--onnx/--engine: the backend (default: the registry's for the artifact kind)")
    p.add_argument("--device", default="cpu", help="--onnx: ONNX Runtime provider cpu | cuda | tensorrt")
    p.add_argument("--plugin-library", default=None, help="--engine: TensorRT plugin library to load")
    p.add_argument("--weights", default=None, help="checkpoint file, manifest name, or 'official'")
    p.add_argument("--alpha", choices=["upscale", "drop"], default="upscale",
                   help="alpha channel: upscale it separately (bicubic) or drop it with a notice")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger inputs")
    p.add_argument("--suffix", default="", help="text added to output file names")
    add_tiling_args(p)
    return p


def _artifact_backends() -> list[str]:
    """Backends that run exported files (the registry of srdeploy.runtime.backends)."""
    from srdeploy.runtime.backends import backends

    return [name for name, b in backends().items() if {"onnx", "engine"} & set(b.accepts)]


def _check_inputs(inputs: Sequence[str]) -> list[Path]:
    paths = []
    for s in inputs:
        path = Path(s)
        if not path.is_file():
            raise InputImageError(f"input {path} does not exist or is not a file")
        paths.append(path)
    return paths


def upscale_files(
    predict: Predict,
    scale: int,
    inputs: Sequence[Path],
    outdir: Path,
    tiling: Tiling | None,
    alpha: str = "upscale",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    suffix: str = "",
) -> list[Path]:
    """Upscale ``inputs`` into ``outdir`` with ``predict``; return the written paths."""
    from tqdm import tqdm

    written = []
    for path in tqdm(inputs, desc="images", unit="img", disable=len(inputs) < 2):
        rgb, info = read_image(path, max_pixels=max_pixels)
        sr = tiled_apply(predict, rgb[None], scale, tiling, progress=True, desc=path.name)[0]
        if info.alpha is not None:
            if alpha == "drop":
                print(f"notice: {path.name}: alpha channel dropped (--alpha drop)", file=sys.stderr)
                info = type(info)(info.grayscale, info.bits, None)
            else:
                info = type(info)(info.grayscale, info.bits, resize_plane(info.alpha, sr.shape[1], sr.shape[2]))
        ext = path.suffix.lower() if path.suffix.lower() in SUPPORTED_SUFFIXES else ".png"
        dest = outdir / f"{path.stem}{suffix}{ext}"
        write_image(dest, sr, info)
        written.append(dest)
    return written


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
    inputs = _check_inputs(args.inputs)
    if args.onnx or args.engine:
        return _main_runtime(args, inputs)
    if args.scale is None:
        raise SrdeployError("--model needs --scale")
    try:
        from srdeploy import models
    except ImportError as exc:
        raise SrdeployError(f"--model needs PyTorch ({exc}); pip install 'srdeploy[torch]'") from exc
    # validate everything cheap before touching the output directory
    desc = models.descriptor(args.model)
    desc.check_scale(args.scale)
    tiling = resolve_tiling(args, desc.default_tiling)
    if tiling is not None and tiling.tile < desc.min_size:
        raise SrdeployError(f"--tile {tiling.tile} is below {args.model}'s minimum input size {desc.min_size}")
    model = models.build(args.model, args.scale, args.weights)
    outdir = Path(args.output)
    check_outdir(outdir)
    predict = min_size_guard(torch_predict(model), args.model, desc.min_size)
    written = upscale_files(predict, args.scale, inputs, outdir, tiling, args.alpha, args.max_pixels, args.suffix)
    for w in written:
        print(w)
    return 0


def _main_runtime(args: argparse.Namespace, inputs: list[Path]) -> int:
    """``--onnx``/``--engine``: torch-free, through srdeploy.runtime's runners and the artifact's tiling."""
    from srdeploy.runtime.backends import RunOptions
    from srdeploy.runtime.predict import open_predictor

    options = RunOptions(device=args.device, plugin_library=args.plugin_library)
    predictor, art = open_predictor(args.onnx or args.engine, args.backend, options, args.scale)
    tiling = resolve_tiling(args, art.default_tiling)
    if tiling is not None and tiling.tile < art.min_size:
        raise SrdeployError(f"--tile {tiling.tile} is below {art.model}'s minimum input size {art.min_size}")
    outdir = Path(args.output)
    check_outdir(outdir)
    with predictor:
        predict = min_size_guard(predictor, art.model, art.min_size)
        written = upscale_files(predict, predictor.scale, inputs, outdir, tiling, args.alpha, args.max_pixels,
                                args.suffix)
    for w in written:
        print(w)
    return 0


if __name__ == "__main__":
    sys.exit(main())
