#!/usr/bin/env python3
"""Benchmark: the portable ESC attention in query blocks (``--option attn_chunks=K``) against the
unchunked graph, side by side in one run: TensorRT-RTX builder memory and build time, equality in
ONNX Runtime, and ONNX Runtime CPU latency.

    python benchmarks/bench_chunked_attention.py [--model esc.light] [--chunks 1 4 8 16] [--no-build]

For each K (1 = today's graph): ``export_model`` writes the fp32 graph (seeded weights, dynamic
N/H/W, no validation); ONNX Runtime runs a seeded ``--check`` LR image through every graph and the
largest absolute / relative difference to K=1 is printed; the latency of one ``session.run`` at
``--size`` is the minimum of ``--repeat`` rounds, the sessions in turns (one of each per round, so
that they see the same machine load); then (unless ``--no-build``) TensorRT-RTX builds each graph
on CPU with the descriptor's profile and a hard ``--workspace`` (MiB, the project default 4096),
one build at a time, and the builder's activation memory and build seconds are printed. A build that
does not fit is printed as the builder's one-line error.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_export import _session


def _build(onnx_path: Path, manifest: dict, name: str, workspace: int, tmp: Path) -> str:
    import tensorrt_rtx_bindings as trt
    from srdeploy.export.engines import get_flavour
    from srdeploy.export.engines.export_step import EngineRequest, build_engine
    from srdeploy.export.manifest import BatchedProfile
    from srdeploy.models import descriptor

    from srdeploy.errors import SrdeployError

    prof = descriptor(name).trt_profile
    try:
        build_engine(EngineRequest(get_flavour("rtx"), trt), onnx_path, tmp / "m.json", copy.deepcopy(manifest),
                     BatchedProfile.from_shapes(prof), workspace_mib=workspace, workspace_given=True, opt_level=3,
                     cache_dir=tmp / "cache")
    except SrdeployError as e:
        return f"not built: {e}"
    eng = json.loads((tmp / "m.json").read_text())["engine"]
    mem = eng["builder_memory"]
    return (f"built in {eng['build_seconds']:.1f} s, {eng['engine_mib']} MiB engine, "
            f"{mem['activation_mib']} MiB activations (profile max {prof.max.h}x{prof.max.w}, "
            f"workspace {workspace} MiB)")


def main(argv: list[str] | None = None) -> int:
    from srdeploy.export.api import export_model
    from srdeploy.models._testing import seeded_input

    from srdeploy.sizes import parse_size

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="esc.light")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--chunks", nargs="+", type=int, default=[1, 4, 8, 16])
    p.add_argument("--check", default="64x96", help="LR size of the equality check (several windows, padded)")
    p.add_argument("--size", default="180x320", help="LR size of the latency figure")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workspace", type=int, default=4096)
    p.add_argument("--no-build", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        res = {}
        for k in args.chunks:
            print(f"[{args.model}] exporting attn_chunks={k} ...", file=sys.stderr, flush=True)
            res[k] = export_model(args.model, args.scale, tmp / f"k{k}", options={"attn_chunks": k},
                                  run_validation=False)
        sessions = {k: _session(r.onnx_path.read_bytes(), args.threads) for k, r in res.items()}
        c = parse_size(args.check)
        x = seeded_input((1, 3, c.h, c.w), 0).numpy()
        outs = {k: s.run(None, {s.get_inputs()[0].name: x})[0] for k, s in sessions.items()}
        base = outs[args.chunks[0]]
        for k, o in outs.items():
            diff = np.abs(o.astype(np.float64) - base)
            rel = float(diff.max() / max(np.abs(base).max(), 1e-12))
            print(f"{args.model} x{args.scale} attn_chunks={k}: ORT vs attn_chunks={args.chunks[0]} at {args.check}: "
                  f"max abs {diff.max():.3g}, max rel {rel:.3g}, bit-exact {bool((o == base).all())}", flush=True)
        s = parse_size(args.size)
        x = seeded_input((1, 3, s.h, s.w), 0).numpy()
        best = {k: float("inf") for k in sessions}
        for sess in sessions.values():  # warm-up round
            sess.run(None, {sess.get_inputs()[0].name: x})
        for _ in range(args.repeat):
            for k, sess in sessions.items():
                t0 = time.perf_counter()
                sess.run(None, {sess.get_inputs()[0].name: x})
                best[k] = min(best[k], (time.perf_counter() - t0) * 1e3)
        ref = best[args.chunks[0]]
        for k, ms in best.items():
            print(f"{args.model} x{args.scale} {args.size} ORT CPU attn_chunks={k}: {ms:.0f} ms, "
                  f"ratio to attn_chunks={args.chunks[0]} {ref / ms:.2f}x (> 1: faster; min of {args.repeat}, "
                  f"{args.threads} threads)", flush=True)
        del sessions, outs
        if not args.no_build:
            for k, r in res.items():
                print(f"[{args.model}] TensorRT-RTX build of attn_chunks={k} ...", file=sys.stderr, flush=True)
                line = _build(r.onnx_path, r.manifest, args.model, args.workspace, tmp / f"b{k}")
                print(f"{args.model} x{args.scale} fp32 attn_chunks={k} TensorRT-RTX: {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
