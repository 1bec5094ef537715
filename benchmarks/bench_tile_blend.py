"""PSNR of each tile blend against untiled inference, per model family, on a real photograph.

    python benchmarks/bench_tile_blend.py [--crop 96] [--tile 48] [--overlap 16] [--scale 2]
        [--models esc.light a2n agdn asid ciaosr rlfn efdn span] [--threads 2]

For every model: the ``--crop`` x ``--crop`` LR crop of tests/data/baboon.png (top-left at 150,
120) is upscaled whole, and tiled with each blend (crop, average, linear, cosine) using the same
tiles (each tile runs once; the blends only merge them differently). Printed: uint8 RGB PSNR of
each tiled result against the untiled one, as a Markdown table (docs/tiling.md holds its output).

Weights: AGDN uses the released x2 checkpoint in tests/data; every other model uses seeded
random weights (``torch.manual_seed(0)``; the released checkpoints cannot be downloaded here),
so their numbers measure how much the tiles of *that function* disagree, not of the trained
network. A benchmark, not a test (a minute or two on CPU).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BLENDS = ("crop", "average", "linear", "cosine")


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    from srdeploy.imageio import to_uint

    mse = np.mean((to_uint(a).astype(np.float64) - to_uint(b).astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["esc.light", "a2n", "agdn", "asid", "ciaosr", "rlfn", "efdn",
                                                   "span"])
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--tile", type=int, default=48)
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import torch
    from PIL import Image

    from srdeploy import models
    from srdeploy.tiling import Tiling, tiled_apply

    torch.set_num_threads(args.threads)
    with Image.open(ROOT / "tests" / "data" / "baboon.png") as im:
        rgb = im.convert("RGB").crop((150, 120, 150 + args.crop, 120 + args.crop))
    lr = (np.asarray(rgb, np.float32).transpose(2, 0, 1)[None] / 255).copy()
    print(f"baboon {args.crop}x{args.crop} LR crop, x{args.scale}, tile {args.tile}, overlap {args.overlap}; "
          "uint8 RGB PSNR (dB) of tiled vs untiled")
    print()
    print("| model | weights | " + " | ".join(BLENDS) + " |")
    print("|---|---|" + "---:|" * len(BLENDS))
    for name in args.models:
        weights = str(ROOT / "tests" / "data" / "AGDN_x2.pth") if name == "agdn" and args.scale == 2 else None
        torch.manual_seed(0)
        net = models.build(name, args.scale, weights)
        cache: dict[tuple[tuple[int, ...], bytes], np.ndarray] = {}

        def fn(x: np.ndarray, net=net, cache=cache) -> np.ndarray:  # type: ignore[no-untyped-def]
            key = (x.shape, x.tobytes())
            if key not in cache:
                with torch.inference_mode():
                    cache[key] = net(torch.from_numpy(np.ascontiguousarray(x))).float().numpy()
            return cache[key]

        whole = fn(lr)
        row = []
        for blend in BLENDS:
            tiled = tiled_apply(fn, lr, args.scale, Tiling(args.tile, args.overlap, blend))  # type: ignore[arg-type]
            row.append(psnr_u8(tiled[0], whole[0]))
        label = "released x2" if weights else "seeded random"
        print(f"| {name} | {label} | " + " | ".join("exact" if v == float("inf") else f"{v:.1f}" for v in row)
              + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
