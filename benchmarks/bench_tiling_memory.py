"""Peak memory of tiled x4 upscaling on ONNX Runtime CPU: streamed uint8 output vs float copies.

    python benchmarks/bench_tiling_memory.py [-o out/bench_tiling_memory] [--sizes 1000 4000]
        [--tile 256] [--legacy-sizes 1000] [--auto] [--onnx MODEL.onnx]

Each run is a fresh ``sr-upscale --onnx`` subprocess on a synthetic square RGB PNG of each size;
its peak RSS (``ru_maxrss`` of the child, from ``os.wait4``) is printed beside the size of the
uint8 output image (H x W x 3 bytes) and the ratio of the two. A second column of runs does the
same work the pre-streaming way (float32 input, float32 output of ``tiled_apply``, Pillow write:
what ``sr-upscale`` did before issue 15), in-process in a child, for ``--legacy-sizes`` only: at
4000x4000 x4 it needs about 10 GB. A "floor" run loads the model and exits: the process's fixed
cost (Python, numpy, ONNX Runtime, the model). The last lines give the growth of the peak between
the two largest sizes over the growth of the output: about 1 when memory grows with the uint8
output, about 4 or more when it grows with float copies.

The model (unless ``--onnx``) is a tiny x4 upscaler built with onnx.helper (3x3 conv 3->48 then
DepthToSpace): a memory benchmark of the pipeline, not of a network's activations. With a real
network (e.g. ``--onnx span_x4.onnx``) the activations of one tile add a constant to every row.
This is a benchmark, not a test: the 4000x4000 case writes a 16000x16000 PNG (about a minute).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MiB = 1024**2


def tiny_x4_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.random((48, 3, 3, 3)) / 27.0 * 1.8).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["lr", "W"], ["f"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
         helper.make_node("DepthToSpace", ["f"], ["sr"], blocksize=4, mode="DCR")],
        "tiny_x4",
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["N", 3, "H4", "W4"])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"srdeploy.model": "tiny_x4", "srdeploy.scale": "4"})
    onnx.save(model, str(path))
    return path


def synthetic_png(path: Path, n: int) -> Path:
    """A smooth colour field with mild noise (compresses like a photo, not like white noise)."""
    from PIL import Image

    if path.exists():
        return path
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) / n
    rng = np.random.default_rng(n)
    img = np.stack([np.sin(6 * x + 2 * y), np.cos(5 * y - 3 * x), np.sin(4 * (x + y))], axis=-1) * 100 + 128
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    im.save(path, **({"compress_level": 1} if path.suffix == ".png" else {"quality": 95}))
    return path


def child_peak_mib(cmd: list[str]) -> tuple[float, float, int]:
    """Run ``cmd``; return (peak RSS MiB, seconds, exit code).

    The parent must stay small: a forked child's ``ru_maxrss`` includes the RSS it had before
    ``exec`` (the parent's), so the inputs are generated in a child of their own.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        print(f"  (exit {proc.returncode}: {err.strip().splitlines()[-1] if err.strip() else ''})", file=sys.stderr)
    return usage.ru_maxrss / 1024, time.perf_counter() - t0, proc.returncode


def legacy_child(onnx: str, src: str, dest: str, tile: int) -> int:
    """The pre-issue-15 pipeline: float32 image, float32 tiled output, Pillow write."""
    from srdeploy.runtime.predict import open_predictor

    from srdeploy.imageio import read_image, write_image
    from srdeploy.tiling import Tiling, tiled_apply

    predictor, _ = open_predictor(onnx, "onnxruntime")
    with predictor:
        rgb, info = read_image(src, max_pixels=10**9)
        sr = tiled_apply(predictor, rgb[None], predictor.scale, Tiling(tile, 16))[0]
        write_image(dest, sr, info)
    return 0


def floor_child(onnx: str) -> int:
    from srdeploy.runtime.predict import open_predictor

    predictor, _ = open_predictor(onnx, "onnxruntime")
    with predictor:
        predictor(np.zeros((1, 3, 64, 64), np.float32))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", default="out/bench_tiling_memory")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000], help="square LR sizes (default 1000 4000)")
    p.add_argument("--legacy-sizes", type=int, nargs="*", default=[1000],
                   help="sizes also run the pre-streaming way (default 1000; 4000 needs ~10 GB)")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--auto", action="store_true", help="also run --tile auto (the default) at each size")
    p.add_argument("--onnx", default=None, help="an x4 .onnx to use instead of the tiny built-in one")
    p.add_argument("--jpeg", action="store_true",
                   help="also run a JPEG input/output (Pillow encodes whole images: the output is held)")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "gen":
            synthetic_png(Path(rest[0]), int(rest[1]))
            return 0
        return legacy_child(rest[0], rest[1], rest[2], int(rest[3])) if kind == "legacy" else floor_child(rest[0])

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    onnx = args.onnx or str(tiny_x4_onnx(out / "tiny_x4.onnx"))
    me = [sys.executable, os.path.abspath(__file__)]
    floor, _, _ = child_peak_mib([*me, "--child", "floor", onnx])
    print(f"floor (python + numpy + ONNX Runtime + model, one 64x64 call): {floor:.0f} MiB peak RSS")
    print(f"{'LR size':>10} {'run':>18} {'output uint8':>13} {'peak RSS':>10} {'peak/output':>12} "
          f"{'(peak-floor)/output':>20} {'time':>7}")
    rows: dict[str, list[tuple[int, float, float]]] = {}
    for n in args.sizes:
        src = out / f"in_{n}.png"
        if not src.exists():  # in a child: a parent grown by the image would inflate the children's
            # ru_maxrss (Linux carries the pre-exec RSS of a forked child into its maxrss)
            subprocess.run([*me, "--child", "gen", str(src), str(n)], check=True)
        out_mib = (4 * n) ** 2 * 3 / MiB
        runs = [(f"streamed --tile {args.tile}", [sys.executable, "-m", "srdeploy.cli.upscale", str(src),
                                                    "--onnx", onnx, "-o", str(out / "streamed"),
                                                    "--tile", str(args.tile), "--max-pixels", str(10**9)])]
        if args.auto:
            runs.append(("streamed --tile auto", [sys.executable, "-m", "srdeploy.cli.upscale", str(src), "--onnx",
                                                  onnx, "-o", str(out / "auto"), "--max-pixels", str(10**9)]))
        if args.jpeg:
            jpg = out / f"in_{n}.jpg"
            if not jpg.exists():
                subprocess.run([*me, "--child", "gen", str(jpg), str(n)], check=True)
            runs.append((f"jpeg --tile {args.tile}", [sys.executable, "-m", "srdeploy.cli.upscale", str(jpg),
                                                     "--onnx", onnx, "-o", str(out / "jpeg"), "--tile",
                                                     str(args.tile), "--max-pixels", str(10**9)]))
        if n in args.legacy_sizes:
            runs.append(("float (before)", [*me, "--child", "legacy", onnx, str(src),
                                            str(out / "legacy" / src.name), str(args.tile)]))
            (out / "legacy").mkdir(exist_ok=True)
        for name, cmd in runs:
            peak, secs, rc = child_peak_mib(cmd)
            if rc != 0:
                print(f"{n:>5}x{n:<4} {name:>18}  failed (exit {rc})")
                continue
            rows.setdefault(name, []).append((n, out_mib, peak))
            print(f"{n:>5}x{n:<4} {name:>18} {out_mib:>9.0f} MiB {peak:>6.0f} MiB {peak / out_mib:>11.2f}x "
                  f"{(peak - floor) / out_mib:>19.2f}x {secs:>6.0f}s")
    for name, pts in rows.items():
        if len(pts) >= 2:
            (n0, o0, p0), (n1, o1, p1) = pts[0], pts[-1]
            print(f"{name}: peak grew {p1 - p0:.0f} MiB for {o1 - o0:.0f} MiB more uint8 output "
                  f"({n0} -> {n1}): {(p1 - p0) / (o1 - o0):.2f} bytes of peak per output byte")
    return 0


if __name__ == "__main__":
    sys.exit(main())
