"""``sr-upscale`` beyond one process: ``--ray [ADDRESS]`` (Ray Data) and ``--server URL`` (sr-serve).

Kept apart from ``srdeploy/cli/upscale.py`` so that the single-process command only gains two
options and one dispatch line; the work is in :mod:`srdeploy.runtime.ray_batch` and
:mod:`srdeploy.runtime.serve`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from srdeploy.atomic import output_dir
from srdeploy.errors import SrdeployError
from srdeploy.options import float_in, int_in, non_negative_float, non_negative_int, positive_float


def add_scaleout_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("beyond one process")
    g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster with Ray Data (--onnx/--engine); no ADDRESS: join the cluster "
                        "started on this machine, else start a local one. Resumable: rerun to finish a job")
    g.add_argument("--ray-actors", type=non_negative_int, default=0,
                   help="actors in the pool (default: one per GPU, or per --ray-cpus-per-actor cores)")
    g.add_argument("--ray-cpus-per-actor", type=positive_float, default=1.0,
                   help="CPU cores each actor reserves (and uses)")
    g.add_argument("--ray-gpus-per-actor", type=non_negative_float, default=None,
                   help="GPUs each actor reserves (default: 1 for --engine or --device cuda/tensorrt, else 0)")
    g.add_argument("--ray-max-restarts", type=int_in(-1, what=" (-1: no limit)"), default=None,
                   help="restarts of a dead actor (default: Ray Data's; 0 stops the job, rerun resumes it)")
    g.add_argument("--server", default=None, metavar="URL", help="send the images to sr-serve at URL")
    g.add_argument("--server-timeout", type=float_in(0, 86400, lo_open=True, what=" seconds"), default=120.0,
                   help="seconds per request with --server")


def wants_scaleout(args: argparse.Namespace) -> bool:
    return args.ray is not None or args.server is not None


def run_scaleout(args: argparse.Namespace, inputs: list[Path]) -> int:
    from srdeploy.inputs import check_unique_stems

    if args.ray is not None and args.server is not None:
        raise SrdeployError("--ray and --server are alternatives; give one")
    check_unique_stems(inputs, args.suffix)
    outdir = Path(args.output)
    if args.server is not None:
        return _server(args, inputs, outdir)
    return _ray(args, inputs, outdir)


def _server(args: argparse.Namespace, inputs: list[Path], outdir: Path) -> int:
    from srdeploy.runtime.serve import upscale_via_server

    if args.model or args.onnx or args.engine:
        print("notice: --server runs the server's model; --model/--onnx/--engine are not used", file=sys.stderr)
    with output_dir(outdir):  # removed again if nothing could be written into it
        written, failed = upscale_via_server(args.server, inputs, outdir, args.suffix, args.server_timeout)
    for w in written:
        print(w)
    for path, err in failed.items():
        print(f"failed: {path}: {err}", file=sys.stderr)
    print(f"done {len(written)}, failed {len(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _ray(args: argparse.Namespace, inputs: list[Path], outdir: Path) -> int:
    from srdeploy.cli.upscale import resolve_tiling, warn_if_random
    from srdeploy.runtime.artifact import open_artifact
    from srdeploy.runtime.ray_batch import BatchOptions, PoolOptions, require_ray, run_batch

    if not (args.onnx or args.engine):
        raise SrdeployError("--ray runs exported artifacts; give --onnx or --engine (export with sr-export)")
    require_ray()
    path = args.onnx or args.engine
    art = open_artifact(path)  # fail here, before Ray starts, on a missing or corrupt artifact
    tiling = resolve_tiling(args, art.default_tiling, art.min_size, art.model)
    warn_if_random(art, path)
    backend = getattr(args, "backend", None) or ("tensorrt" if args.engine else "onnxruntime")
    gpus = args.ray_gpus_per_actor
    if gpus is None:
        gpus = 1.0 if backend == "tensorrt" or args.device in ("cuda", "tensorrt") else 0.0
    options = BatchOptions(
        artifact=str(Path(path).resolve()), backend=backend, outdir=str(outdir.resolve()), device=args.device,
        plugin_library=args.plugin_library, scale=args.scale,
        tile=tiling.tile if tiling else None, tile_overlap=tiling.overlap if tiling else 16,
        tile_blend=tiling.blend if tiling else "crop", alpha=args.alpha, max_pixels=args.max_pixels,
        suffix=args.suffix, intra_op_threads=max(1, int(args.ray_cpus_per_actor)),
    )
    pool = PoolOptions(args.ray_actors, args.ray_cpus_per_actor, gpus, args.ray_max_restarts)
    with output_dir(outdir):  # removed again if the job ends with it empty
        summary = run_batch([p.resolve() for p in inputs], options, pool, args.ray or None)
    for path_s, err in sorted(summary.failed.items()):
        print(f"failed: {path_s}: {err}", file=sys.stderr)
    print(summary.line(), file=sys.stderr)
    return 1 if summary.failed else 0
