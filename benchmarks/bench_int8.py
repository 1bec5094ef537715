"""INT8 (Q/DQ + fp16) against fp32 on ONNX Runtime CPU: latency ratio and held-out Y-PSNR.

    python benchmarks/bench_int8.py --calib DIR [-o out/bench_int8] [--models agdn rlfn span]
        [--size 96x96] [--rounds 5] [--crop 32]

For each model: export fp32 (AGDN x2 with its bundled released weights; the others with seeded
random weights, whose PSNR is labelled meaningless), derive the INT8 graph with ``sr-export
--int8``'s pass from the same fp32 graph, then time both graphs in turns (round-robin, so machine
load drifts hit both alike) on one LR input of ``--size``, median of ``--rounds`` after a warm-up,
and print one line per model: fp32 ms, INT8 ms, fp32/INT8, INT8 MAC share, held-out Y-PSNR of
both. ``DIR`` needs >= 2 images (the last quarter by name is held out), e.g. baboon + astronaut.

What the ratio means here: this CPU has AVX2 but no AVX-512 VNNI (no ``vpdpbusd``). The graph is
built for TensorRT (Q/DQ in front of the Conv inputs only, fp16 everywhere else), not for ONNX
Runtime's CPU QLinearConv fusion, which needs a Q after each Conv output; ORT CPU therefore runs
DequantizeLinear + a float Conv (and casts the fp16 ops internally), so the INT8 graph is expected
to be *slower* on this CPU. The number that matters, TensorRT on Orin/RTX, needs a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def _session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calib", required=True, help="calibration image directory (>= 2 images)")
    p.add_argument("-o", "--output", default="out/bench_int8")
    p.add_argument("--models", nargs="*", default=["agdn", "rlfn", "span"])
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--size", default="96x96", help="LR size HxW for the timing")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--crop", type=int, default=32, help="LR calibration/held-out crop side")
    args = p.parse_args(argv)

    from srdeploy.export.api import export_model

    from srdeploy.sizes import parse_size

    data = Path(__file__).resolve().parents[1] / "tests" / "data"
    real = {("agdn", 2): data / "AGDN_x2.pth"}
    size = parse_size(args.size)
    out = Path(args.output)
    rows = []
    for name in args.models:
        weights = real.get((name, args.scale))
        t0 = time.perf_counter()
        base = export_model(name, args.scale, out / name / "fp32", weights=weights)
        q = export_model(
            name, args.scale, out / name / "int8", weights=weights, int8=True, calib=args.calib,
            calib_crop=args.crop, reuse=base,
        )
        print(f"[{name}] exported fp32 + int8 in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        x = np.random.default_rng(0).random((1, 3, size.h, size.w), dtype=np.float32)
        sess = {"fp32": _session(base.onnx_path, args.threads), "int8": _session(q.onnx_path, args.threads)}
        times: dict[str, list[float]] = {k: [] for k in sess}
        for s in sess.values():
            s.run(None, {"lr": x})  # warm-up
        for _ in range(args.rounds):
            for k, s in sess.items():
                t = time.perf_counter()
                s.run(None, {"lr": x})
                times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        g = q.manifest["int8"]
        rows.append(
            f"{name:6s} x{args.scale} {'real' if weights else 'seeded':6s} fp32 {med['fp32']:8.1f} ms  "
            f"int8 {med['int8']:8.1f} ms  fp32/int8 {med['fp32'] / med['int8']:5.2f}x  "
            f"INT8 MACs {g['int8_mac_fraction']:6.1%}  kept out {len(g['kept_out_of_int8']):3d}/"
            f"{g['layers_quantizable']:3d}  held-out Y-PSNR fp32 {g['gate']['fp32_y_psnr_db']:.3f} "
            f"int8 {g['gate']['int8_y_psnr_db']:.3f} dB"
            + ("" if g["quality_meaningful"] else "  (seeded weights: PSNR meaningless)")
        )
        print(rows[-1], flush=True)
    print(f"\nONNX Runtime CPU EP, {args.threads} threads, LR {size}, median of {args.rounds} round-robin runs")
    for r in rows:
        print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
