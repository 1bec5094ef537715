#!/usr/bin/env python3
"""Benchmark: ONNX Runtime CPU time of the native-attention graph (one ONNX ``Attention`` node per
layer, opset 23) against the portable graph (MatMul / Add / Softmax / MatMul), side by side in one
run, for esc and esc.light at x4 (seeded weights; the graph sr-export writes, dynamic N/H/W).

    python benchmarks/bench_native_attention.py [--sizes 180x320 90x160] [--threads 2] [--repeat 3]

What is timed: one ``session.run`` of a seeded LR image, the two sessions in turns (one of each per
round, so that both see the same machine load), ``--warmup`` rounds then ``--repeat`` rounds; the
figure is the minimum per graph. ratio = portable ms / native ms (> 1: native is faster). The op
shares come from ONNX Runtime's profiler (one warm run each). Also printed: the constant bytes of
each graph and what an export-time expanded bias would cost instead ((heads, 1024, 1024) floats per
layer).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_export import _op_shares, _session, _top


def _constant_bytes(model: onnx.ModelProto) -> int:
    n = sum(len(t.raw_data) or 0 for t in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            n += sum(len(a.t.raw_data) for a in node.attribute if a.name == "value")
    return n


def _time(sessions: dict[str, object], x: np.ndarray, warmup: int, repeat: int) -> dict[str, float]:
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}  # type: ignore[attr-defined]
    for _ in range(warmup):
        for k, s in sessions.items():
            s.run(None, feeds[k])  # type: ignore[attr-defined]
    best = {k: float("inf") for k in sessions}
    for _ in range(repeat):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds[k])  # type: ignore[attr-defined]
            best[k] = min(best[k], (time.perf_counter() - t0) * 1e3)
    return best


def main(argv: list[str] | None = None) -> int:
    from srdeploy.export.api import export_model
    from srdeploy.models._testing import seeded_input

    from srdeploy.sizes import parse_size

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["esc", "esc.light"])
    p.add_argument("--sizes", nargs="+", default=["180x320", "90x160"])
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            graphs: dict[str, bytes] = {}
            for form in ("portable", "native"):
                print(f"[{name}] exporting the {form} graph ...", file=sys.stderr, flush=True)
                res = export_model(name, args.scale, Path(tmp) / f"{name}-{form}", attention=form)
                graphs[form] = res.onnx_path.read_bytes()
            native = onnx.load_from_string(graphs["native"])
            layers = sum(1 for n in native.graph.node if n.op_type == "Attention")
            heads = 4  # ESC: 4 heads, 32x32 windows
            c_port = _constant_bytes(onnx.load_from_string(graphs["portable"])) / 2**20
            c_nat = _constant_bytes(native) / 2**20
            print(f"{name} x{args.scale}: constants portable {c_port:.2f} MiB, native {c_nat:.2f} MiB (compact "
                  "bias tables, gathered in-graph); an export-time expanded bias would add "
                  f"{layers} x {heads}x1024x1024 fp32 = {layers * heads * 1024 * 1024 * 4 / 2**20:.0f} MiB")
            sessions = {k: _session(v, args.threads) for k, v in graphs.items()}
            for size in args.sizes:
                s = parse_size(size)
                x = seeded_input((1, 3, s.h, s.w), 0).numpy()
                ms = _time(sessions, x, args.warmup, args.repeat)
                shares = {k: _top(_op_shares(v, x, args.threads)) for k, v in graphs.items()}
                print(f"{name} x{args.scale} {size}: portable {ms['portable']:.0f} ms, native {ms['native']:.0f} ms, "
                      f"ratio portable/native {ms['portable'] / ms['native']:.2f}x  (min of {args.repeat}, "
                      f"{args.threads} threads; top ops portable: {shares['portable']}; native: {shares['native']})",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
