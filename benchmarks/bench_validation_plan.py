"""Export time with the size-path validation plan against the base plan, side by side in one run.

    python benchmarks/bench_validation_plan.py [--models agdn esc.light] [--scale 2] [--repeat 1]

"base" is the plan before issue 14: two small sizes, batch 1 and 2, no deviation measurement;
"size paths" adds one case above each declared threshold (``Descriptor.size_paths``) and measures
the declared deviations against the model as built. Both run ``export_model`` end to end (seeded
weights, fp32) in turns, so machine load affects both alike; the ratio is what the plan costs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import contextmanager
from typing import Any


@contextmanager
def _base_plan() -> Any:
    from srdeploy.export import api

    real_cases, real_measure = api.validation_cases, api.measure_deviations
    api.validation_cases = lambda *a, **k: [c for c in real_cases(*a, **k) if c.path is None]
    api.measure_deviations = lambda *a, **k: []
    try:
        yield
    finally:
        api.validation_cases, api.measure_deviations = real_cases, real_measure


def _export(name: str, scale: int) -> tuple[float, list[str]]:
    from srdeploy.export.api import export_model

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        res = export_model(name, scale, d)
        return time.perf_counter() - t0, res.manifest["sizes_validated"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="*", default=["agdn", "esc.light"])
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args(argv)
    for name in args.models:
        base, paths = [], []
        for _ in range(args.repeat):
            with _base_plan():
                t, sizes_base = _export(name, args.scale)
            base.append(t)
            t, sizes = _export(name, args.scale)
            paths.append(t)
        b, s = min(base), min(paths)
        print(f"{name} x{args.scale}: base plan {b:.1f} s ({', '.join(sizes_base)}); size paths {s:.1f} s "
              f"({', '.join(sizes)}); ratio {s / b:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
