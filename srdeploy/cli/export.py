"""``sr-export``: a registered model -> validated ONNX (+ manifest, + optional TensorRT engine).

    sr-export --model esc --scale 4 --fp16 -o artifacts/
    sr-export --model agdn --scale 2 --weights official --static 180x320 --engine

Writes ``STEM.onnx`` and ``STEM.json`` atomically into OUTDIR (``STEM`` =
``<family>[-<variant>]_x<S>[_fp16][_plugins]``); validation failure exits non-zero and leaves
nothing behind. See docs/export.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from srdeploy.errors import SrdeployError, cli_errors
from srdeploy.sizes import parse_size


def _option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"bad --option {text!r}: write NAME=VALUE, e.g. tlc=false")
    key, raw = text.split("=", 1)
    low = raw.strip().lower()
    value: Any
    if low in ("true", "false"):
        value = low == "true"
    else:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
    return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sr-export",
        description="Export a registered super-resolution model to a validated ONNX artifact "
        "(fp32 or fp16 with fp32 islands) and optionally a TensorRT engine.",
    )
    p.add_argument("--model", required=True, help="registered model name (family or family.variant)")
    p.add_argument("--scale", type=int, default=None, help="upscaling factor (default: the model's largest)")
    p.add_argument("--weights", default=None, help="checkpoint file, manifest name, or 'official' (default: random)")
    p.add_argument("--option", action="append", type=_option, default=[], metavar="NAME=VALUE",
                   help="a typed build option of the model, e.g. --option tlc=false (repeatable)")
    p.add_argument("-o", "--outdir", default=".", help="output directory (default: current directory)")
    prec = p.add_argument_group("precision")
    prec.add_argument("--fp16", action="store_true", help="fp16 graph with fp32 islands (I/O stays fp32)")
    prec.add_argument("--fp16-io", action="store_true", help="with --fp16: fp16 input and output too")
    q = p.add_argument_group("INT8 (explicit Q/DQ, docs/int8.md)")
    q.add_argument("--int8", action="store_true",
                   help="INT8 Q/DQ on Conv/MatMul inputs, fp16 elsewhere; needs --calib; gated on held-out PSNR")
    q.add_argument("--calib", default=None, metavar="DIR",
                   help="calibration images (>= 2; the last quarter by name is held out for the gate)")
    q.add_argument("--calib-method", choices=["max", "percentile", "entropy"], default=None,
                   help="activation range calibration (default percentile, by measurement)")
    q.add_argument("--int8-gate", type=float, default=None, metavar="DB",
                   help="max held-out Y-PSNR drop vs fp32 in dB (default 0.1)")
    g = p.add_argument_group("shapes (LR, HxW)")
    g.add_argument("--static", type=parse_size, default=None, help="fixed LR size, e.g. 180x320")
    g.add_argument("--min-shape", type=parse_size, default=None, help="TensorRT profile minimum")
    g.add_argument("--opt-shape", type=parse_size, default=None, help="TensorRT profile optimum")
    g.add_argument("--max-shape", type=parse_size, default=None, help="TensorRT profile maximum")
    g.add_argument("--max-batch", type=int, default=None, help="TensorRT profile maximum batch (default 1)")
    e = p.add_argument_group("export")
    e.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    e.add_argument("--exporter", choices=["auto", "dynamo", "torchscript"], default=None,
                   help="torch.onnx exporter (auto, the default: TorchScript first, then dynamo, then "
                        "torch.onnx's lenient dynamo retries)")
    e.add_argument("--no-validate", action="store_true", help="skip the ONNX Runtime validation")
    e.add_argument("--validation-image", default=None, help="validate on crops of this image (default: seeded)")
    e.add_argument("--attention", choices=["portable", "native"], default=None,
                   help="window attention as matmul/softmax/matmul (portable, the default) or one ONNX Attention "
                   "node per layer (native, opset 23: TensorRT >= 10.14, 11.x, TensorRT-RTX fuse it without a plugin)")
    e.add_argument("--plugins", action="store_true",
                   help="emit TensorRT plugin nodes (SRWindowAttention, CiaoSRLocalEnsemble) where the model has them")
    t = p.add_argument_group("TensorRT")
    t.add_argument("--engine", nargs="?", const="auto", default=None, choices=["auto", "tensorrt", "rtx"],
                   help="also build STEM.engine: tensorrt, rtx (TensorRT-RTX, CPU-only build), or no value for "
                   "TensorRT when its builder imports, TensorRT-RTX otherwise")
    t.add_argument("--compute-capability", action="append", default=None, metavar="X.Y",
                   help="TensorRT-RTX target compute capability, e.g. 7.5 for Turing (repeatable; default: the "
                   "library's portable set)")
    t.add_argument("--strip-weights", action="store_true",
                   help="TensorRT-RTX: write a weight-stripped engine (smaller; the runner refits it from the "
                   ".onnx beside it when it loads)")
    t.add_argument("--workspace", type=int, default=None, help="builder workspace limit in MiB (default 4096)")
    t.add_argument("--opt-level", type=int, default=None, help="builder optimisation level 0-5 (default 3)")
    t.add_argument("--cache-dir", default=None, help="engine cache (default: $SRDEPLOY_CACHE/engines)")
    t.add_argument("--triton-repo", default=None, metavar="DIR",
                   help="also write a Triton model repository (config.pbtxt + model) into DIR (export/triton.py)")
    return p


def validation_table(val: dict[str, Any]) -> list[str]:
    """The manifest's validation section as table rows: one per case (the gate: ONNX Runtime vs
    PyTorch in the export form), then one per declared deviation (vs PyTorch as built)."""
    rows = [f"  {'input':<14} {'max_rel_err':>11} {'PSNR dB':>8}  against"]
    for c in val["cases"]:
        psnr = c["psnr_db"]
        psnr_text = "inf" if psnr == "inf" else f"{float(psnr):.2f}"
        above = f" (above the {c['size_path']} threshold)" if c.get("size_path") else ""
        rows.append(f"  {c['input']:<14} {c['max_rel_err']:>11.3g} {psnr_text:>8}  PyTorch, export form: passed{above}")
    for d in val.get("deviations", []):
        psnr = d["psnr_db"]
        psnr_text = "inf" if psnr in ("inf", None) else f"{float(psnr):.2f}"
        rows.append(f"  {'1x3x' + d['size']:<14} {'-':>11} {psnr_text:>8}  PyTorch as built: max "
                    f"{d['max_abs_levels']:.1f} / mean {d['mean_abs_levels']:.2f} levels; declared deviation "
                    f"({d['path']}), reported, not failed")
    return rows


@cli_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from srdeploy import models
        from srdeploy.export.api import export_model
        from srdeploy.export.config import ExportConfig
    except ImportError as exc:
        raise SrdeployError(f"sr-export needs PyTorch and ONNX ({exc}); pip install 'srdeploy[export]'") from exc
    desc = models.descriptor(args.model)
    scale = args.scale
    if scale is None:
        if not desc.scales:
            raise SrdeployError(f"{args.model} works at any scale; give --scale")
        scale = max(desc.scales)
    # None = not given: ExportConfig holds the defaults, the CLI does not repeat them
    config = ExportConfig.of(
        model=args.model, scale=scale, outdir=args.outdir, weights=args.weights, fp16=args.fp16,
        fp16_io=args.fp16_io, opset=args.opset, static=args.static, min_shape=args.min_shape,
        opt_shape=args.opt_shape, max_shape=args.max_shape, max_batch=args.max_batch,
        run_validation=not args.no_validate, engine=args.engine, plugins=args.plugins, options=dict(args.option),
        exporter=args.exporter, validation_image=args.validation_image, cache_dir=args.cache_dir,
        workspace_mib=args.workspace, opt_level=args.opt_level,
        int8=args.int8, calib=args.calib, calib_method=args.calib_method, int8_gate=args.int8_gate,
        attention=args.attention,
        compute_capabilities=tuple(args.compute_capability) if args.compute_capability else None,
        strip_weights=args.strip_weights or None,
    )
    result = export_model(config)
    m = result.manifest
    val = m["validation"]
    if val.get("skipped"):
        print("validation: skipped (--no-validate)", file=sys.stderr)
    else:
        worst = min(val["cases"], key=lambda c: float(c["psnr_db"]))
        print(
            f"validation: passed on {', '.join(m['sizes_validated'])}; worst max_rel_err "
            f"{max(c['max_rel_err'] for c in val['cases']):.3g}, PSNR {float(worst['psnr_db']):.2f} dB",
            file=sys.stderr,
        )
        for row in validation_table(val):
            print(row, file=sys.stderr)
    if m.get("fp16_plugins_vs_portable"):
        c = m["fp16_plugins_vs_portable"]
        print(f"fp16 plugins vs portable fp16 (both against PyTorch fp32): {c['plugins_fp16']['psnr_db']:.2f} dB vs "
              f"{c['portable_fp16']['psnr_db']:.2f} dB (reported); plugin nodes vs the fp16 floor: "
              + ", ".join(f"{n['node_db']:.2f}/{n['floor_db']:.2f} dB" for n in c["plugin_nodes"])
              + " (gate: within 1 dB)", file=sys.stderr)
    if m["fp16"]:
        f = m["fp16"]
        print(f"fp16: {f['fp16_mac_fraction']:.1%} of the MACs in fp16, {f['num_islands']} fp32 islands",
              file=sys.stderr)
    if result.engine is not None:
        eng = m.get("engine", {})
        mem = eng.get("builder_memory", {})
        print(f"engine: {eng.get('library')} {eng.get('version')}, "
              + ("cache hit (not rebuilt)" if result.engine.cached else f"built in {result.engine.build_seconds:.1f} s")
              + (f", activations {mem['activation_mib']} MiB" if "activation_mib" in mem else ""), file=sys.stderr)
    if m.get("int8"):
        q = m["int8"]
        note = "" if q["quality_meaningful"] else " (seeded random weights: PSNR figures meaningless)"
        print(f"int8: {q['int8_mac_fraction']:.1%} of Conv/MatMul MACs in INT8, {len(q['kept_out_of_int8'])} layers "
              f"kept out; held-out Y-PSNR {q['gate']['int8_y_psnr_db']:.3f} dB vs fp32 "
              f"{q['gate']['fp32_y_psnr_db']:.3f} (gate {q['gate']['max_drop_db']:g} dB){note}", file=sys.stderr)
    if args.triton_repo:  # issue 18
        from srdeploy.export.triton import write_triton_repo

        engine = result.engine.engine_path if result.engine is not None else None
        result.files += write_triton_repo(result.onnx_path, args.triton_repo, engine, args.max_batch)
        print("triton: config.pbtxt parses against Triton's ModelConfig schema; loading it in a tritonserver "
              "is not run here", file=sys.stderr)
    for path in result.files:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
