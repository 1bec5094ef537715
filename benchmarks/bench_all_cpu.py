"""Benchmark every registered model on CPU ONNX Runtime at the papers' HD setting; one combined report.

    python benchmarks/bench_all_cpu.py -o out/bench_all [--models esc rlfn span] [--scale 4]
        [--size 180x320] [--mode steady] [--images 3] [--threads N]

Each model is exported with its random (or ``--weights-official``) weights, measured with
``sr-bench``'s library entry point on synthetic LR inputs of ``--size`` (LR 180x320 = 1280x720
output at x4, the papers' setting), and the combined ``sr-report`` is written to ``OUT/report``
(open ``OUT/report/index.html``). A model that fails to export or run is listed in
``OUT/failures.txt`` with its one-line error; the others still run. This is a benchmark, not a test:
it takes minutes per attention model on a CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", default="out/bench_all", help="output folder")
    p.add_argument("--models", nargs="*", help="registry names (default: every registered model)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--size", default="180x320", help="LR size HxW (default: 180x320, HD output at x4)")
    p.add_argument("--mode", choices=["ntire", "steady"], default="steady")
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--baseline", default="span", help="row to score against (default: span, the 2026 baseline)")
    args = p.parse_args(argv)

    from srdeploy.export.bench_source import run_bench_model
    from srdeploy.runtime.bench import BenchConfig
    from srdeploy.runtime.report import write_report

    from srdeploy import models
    from srdeploy.errors import SrdeployError
    from srdeploy.sizes import parse_size

    out = Path(args.output)
    size = parse_size(args.size)
    names = args.models or models.list_models()
    done, failures = [], []
    for name in names:
        desc = models.descriptor(name)
        if desc.scales is not None and args.scale not in desc.scales:
            failures.append(f"{name}: no x{args.scale} model")
            continue
        t0 = time.perf_counter()
        cfg = BenchConfig(
            model=name, scale=args.scale, synthetic=size, images=args.images, mode=args.mode, warmup=args.warmup,
            repeats=args.repeats, threads=args.threads, outdir=str(out / name), export_dir=str(out / name / "onnx"),
            flops_size=size, progress=False,
        )
        try:
            res = run_bench_model(cfg)
        except SrdeployError as exc:
            failures.append(f"{name}: {' '.join(str(exc).split())}")
            print(f"[fail] {name}: {exc}", file=sys.stderr)
            continue
        entry = next(iter(res.values()))
        done.append(out / name / "results.json")
        print(f"[ok] {name}: {entry['srdeploy']['ave_runtime']:.1f} ms/image, {entry['flops']:.2f} GMACs at LR {size}"
              f" ({time.perf_counter() - t0:.0f} s)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "failures.txt").write_text("\n".join(failures) + ("\n" if failures else ""))
    if not done:
        print("nothing was measured; see failures.txt", file=sys.stderr)
        return 1
    baseline = args.baseline if any(p.parent.name == args.baseline for p in done) else None
    written = write_report(done, out / "report", baseline=baseline)
    print(f"report: {written[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
