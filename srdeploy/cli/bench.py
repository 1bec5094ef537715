"""``sr-bench``: measure an exported model NTIRE-style (or in steady state) and write results.

    sr-bench --onnx esc_x4_fp16.onnx --data bench_data/ -o out/bench
    sr-bench --engine esc_x4_fp16.engine --synthetic 180x320 --mode steady --device-peak jetson-agx-orin -o out/
    sr-bench --model rlfn --scale 4 --synthetic 180x320 -o out/rlfn      # exported on the fly
    sr-bench --onnx out/export/esc_x4_fp16.onnx --data-from-image tests/data/baboon.png \
        -o out/bench --report report                                    # one step of the demo

Writes ``results.json`` (NTIRE keys + an ``srdeploy`` section), ``results.txt`` (NTIRE columns)
and ``bench.log`` (appended per run) into ``-o``, all from one record
(:class:`srdeploy.runtime.results.BenchResult`). No PyTorch is needed for ``--onnx``/``--engine``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from srdeploy.errors import MissingDependencyError, cli_errors
from srdeploy.options import non_negative_int, positive_float, positive_int
from srdeploy.sizes import parse_size


def build_parser() -> argparse.ArgumentParser:
    from srdeploy.cli.upscale import add_tiling_args
    from srdeploy.runtime import backends

    p = argparse.ArgumentParser(prog="sr-bench", description=__doc__.split("\n\n")[0].replace("``", ""))
    src = p.add_argument_group("model (one of)")
    src.add_argument("--onnx", help="exported .onnx (or STEM.encoder.onnx of an implicit model)")
    src.add_argument("--engine", help="TensorRT engine file")
    src.add_argument("--model", help="registered model name, exported on the fly (needs the export extra)")
    src.add_argument("--weights", help="checkpoint for --model (default: random weights, labelled so)")
    src.add_argument("--scale", type=positive_int, help="scale (needed with --model; read from the artifact otherwise)")
    src.add_argument("--plugin-library", help="TensorRT plugin library to load for --engine")
    run = p.add_argument_group("backend")
    run.add_argument("--backend", choices=backends.names(), help="default: by input kind")
    run.add_argument("--device", default="cpu", help="cpu | cuda | tensorrt (ONNX Runtime provider) | cuda:N (torch)")
    run.add_argument("--precision", choices=["fp32", "fp16"], help="export precision for --model; checked otherwise")
    run.add_argument("--threads", type=positive_int, help="ONNX Runtime intra-op threads (default: all cores)")
    data = p.add_argument_group("data (one of)")
    data.add_argument("--data", help="folder with valid/{HR,LR} and optionally test/{HR,LR}")
    data.add_argument("--data-from-image", help="build valid/ (3) and test/ (1) from corner crops of one image")
    data.add_argument("--synthetic", type=parse_size, help="random LR inputs of HxW (papers' HD x4: 180x320)")
    data.add_argument("--images", type=positive_int, default=5, help="number of synthetic images (default 5)")
    m = p.add_argument_group("measurement")
    m.add_argument("--mode", choices=["ntire", "steady"], default="ntire",
                   help="ntire: the challenge harness (no warm-up, mean); steady: warm-up, median/p90")
    m.add_argument("--warmup", type=non_negative_int, default=10, help="steady: warm-up runs (default 10)")
    m.add_argument("--repeats", type=positive_int, default=5, help="steady: timed runs per image (default 5)")
    m.add_argument("--flops-size", type=parse_size, default=parse_size("256x256"),
                   help="LR size for MACs/params/activations (NTIRE: 256x256)")
    m.add_argument("--device-peak", help="steady: device peaks for utilisation (e.g. jetson-agx-orin)")
    m.add_argument("--peak-tflops", type=positive_float, help="steady: device peak TFLOP/s")
    m.add_argument("--peak-gbps", type=positive_float, help="steady: device peak memory bandwidth GB/s")
    m.add_argument("--ssim", action="store_true", help="also compute SSIM on Y")
    m.add_argument("--name", help="row name in results (default: the artifact stem)")
    m.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_tiling_args(p)
    p.add_argument("--export-dir", help="keep the on-the-fly export of --model here")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--report", help="also write the sr-report (index.html, report.md, plots) into this folder")
    return p


@cli_errors
def main(argv: Sequence[str] | None = None) -> int:
    from srdeploy.cli.upscale import resolve_tiling
    from srdeploy.runtime.bench import BenchConfig, peaks_from, run_bench

    args = build_parser().parse_args(argv)
    cfg = BenchConfig(
        onnx=args.onnx, engine=args.engine, model=args.model, weights=args.weights, scale=args.scale,
        backend=args.backend, device=args.device, precision=args.precision, data=args.data,
        synthetic=args.synthetic, images=args.images, mode=args.mode, warmup=args.warmup, repeats=args.repeats,
        tiling=resolve_tiling(args, None), threads=args.threads,
        peaks=peaks_from(args.device_peak, args.peak_tflops, args.peak_gbps), flops_size=args.flops_size,
        name=args.name, plugin_library=args.plugin_library, ssim=args.ssim, progress=not args.no_progress,
        outdir=args.output, export_dir=args.export_dir, data_from_image=args.data_from_image, report=args.report,
    )
    if cfg.model:  # a registered model: resolved on the torch side, which then calls run_bench
        try:
            from srdeploy.export.bench_source import run_bench_model
        except ImportError as exc:
            raise MissingDependencyError(
                f"--model needs the exporter and PyTorch ({exc}); pip install 'srdeploy[export]', or pass --onnx FILE"
            ) from exc
        results = run_bench_model(cfg)
    else:
        results = run_bench(cfg)
    from srdeploy.runtime.results import BenchResult, summary_line

    for key, entry in results.items():
        r = BenchResult.from_json(key, entry)
        print(f"mode={r.mode} ({r.clock}) " + summary_line(r))  # the figures and labels of results.txt/report
        if r.busy:
            print(f"{key}: BUSY MACHINE: {'; '.join(r.busy_reasons)}")
    print(f"wrote {args.output}/results.json, results.txt, bench.log")
    if args.report:
        print(f"wrote {args.report}/index.html (open it in a browser)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
