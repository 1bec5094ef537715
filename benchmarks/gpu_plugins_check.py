#!/usr/bin/env python3
"""GPU correctness harness for the srdeploy plugins (needs a CUDA GPU, torch with CUDA, nvcc, cmake).

Runs, on fresh random CUDA tensors, both
  * the plain kernel launchers (libsrdeploy_kernels.so: srdeploy_window_attention / _local_ensemble), and
  * the plugins' own host path without TensorRT (libsrdeploy_plugin_harness.so: getCreators ->
    createPlugin -> clone -> getFieldsToSerialize -> createPlugin(kRUNTIME) -> onShapeChange -> enqueue),
and compares each with the PyTorch reference (srdeploy.plugins.reference) computed in fp32 from the
same inputs: max|diff|/max|ref| <= 1e-5 (fp32 I/O) and <= 2e-3 (fp16 I/O), tolerances from the specs.
Outputs are poisoned with NaN before every run; window counts are odd; several head counts.

    python benchmarks/gpu_plugins_check.py [--build-dir build/plugins-gpu] [--json out.json] [--quick]

Exit code 0 when every case passes. Builds the libraries for the local GPU's architecture first
unless --no-build is given.
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import sys
import time
from pathlib import Path

import torch
from srdeploy.plugins import build
from srdeploy.plugins.reference import local_ensemble_ref, window_attention_ref
from srdeploy.plugins.spec import LOCAL_ENSEMBLE, WINDOW_ATTENTION, load_spec

DTYPES = {torch.float32: 0, torch.float16: 1}
INVALID_WINDOW = -2  # SrStatus::kSrBadWindow


def _load(build_dir: Path) -> tuple[ctypes.CDLL, ctypes.CDLL]:
    return build.load_launchers(build_dir, "kernels"), build.load_launchers(build_dir, "harness")


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    out64, ref64 = out.double(), ref.double()
    if not torch.isfinite(out64).all():
        return float("inf")
    return float((out64 - ref64).abs().max() / ref64.abs().max().clamp_min(1e-30))


def _stream() -> ctypes.c_void_p:
    return ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)


def check_window_attention(fn, case: dict, gen: torch.Generator) -> dict:  # type: ignore[no-untyped-def]
    windows, heads, w, d = case["windows"], case["heads"], case["window"], case["d"]
    dtype, table_dtype, conv = case["dtype"], case["table_dtype"], case["bias_index"]
    n = w * w
    q, k, v = (torch.randn(windows, heads, n, d, device="cuda", generator=gen).to(dtype) for _ in range(3))
    table = (4 * torch.randn(heads, (2 * w - 1) ** 2, device="cuda", generator=gen)).to(table_dtype)
    scale = case["scale"]
    out = torch.full_like(q, float("nan"))
    status = fn(
        DTYPES[dtype],
        q.data_ptr(),
        k.data_ptr(),
        v.data_ptr(),
        table.data_ptr(),
        DTYPES[table_dtype],
        out.data_ptr(),
        windows,
        heads,
        w,
        d,
        scale,
        1 if conv == "q-k" else 0,
        _stream(),
    )
    torch.cuda.synchronize()
    ref = window_attention_ref(q.float(), k.float(), v.float(), table.float(), window=w, bias_index=conv, scale=scale)
    tol = load_spec(WINDOW_ATTENTION).max_rel("float16" if dtype == torch.float16 else "float32")
    err = _rel(out.float(), ref) if status == 0 else float("inf")
    return {"status": status, "max_rel": err, "tol": tol, "ok": status == 0 and err <= tol}


def check_local_ensemble(fn, case: dict, gen: torch.Generator) -> dict:  # type: ignore[no-untyped-def]
    nq, c1, c2, dtype = case["queries"], case["c1"], case["c2"], case["dtype"]
    query = torch.randn(nq, c1, device="cuda", generator=gen).to(dtype)
    keys = (torch.randn(nq, 4, c1, device="cuda", generator=gen) * (3.0 / c1**0.5)).to(dtype)
    values = torch.randn(nq, 4, c2, device="cuda", generator=gen).to(dtype)
    out = torch.full((nq, c2), float("nan"), device="cuda", dtype=dtype)
    status = fn(
        DTYPES[dtype], query.data_ptr(), keys.data_ptr(), values.data_ptr(), out.data_ptr(), nq, c1, c2, _stream()
    )
    torch.cuda.synchronize()
    ref = local_ensemble_ref(query.float(), keys.float(), values.float())
    tol = load_spec(LOCAL_ENSEMBLE).max_rel("float16" if dtype == torch.float16 else "float32")
    err = _rel(out.float(), ref) if status == 0 else float("inf")
    return {"status": status, "max_rel": err, "tol": tol, "ok": status == 0 and err <= tol}


def window_cases(quick: bool) -> list[dict]:
    cases = []
    heads_for = {8: (1, 3, 6), 16: (2, 5), 32: (4, 3)}
    for w, d, dtype, conv in itertools.product((8, 16, 32), (16, 32), (torch.float32, torch.float16), ("k-q", "q-k")):
        for heads in heads_for[w][: 1 if quick else None]:
            windows = {8: 61, 16: 7, 32: 3}[w]
            table_dtypes = (torch.float32,) if dtype == torch.float32 else (torch.float32, torch.float16)
            for tdt in table_dtypes:
                cases.append(
                    {
                        "window": w,
                        "d": d,
                        "heads": heads,
                        "windows": windows,
                        "dtype": dtype,
                        "table_dtype": tdt,
                        "bias_index": conv,
                        "scale": 0.8 / d**0.5,
                    }
                )
    # ESC's layer shape (x4 HD): 60 windows x 4 heads x 1024 tokens x d16, default scale
    cases.append(
        {
            "window": 32,
            "d": 16,
            "heads": 4,
            "windows": 61,
            "dtype": torch.float16,
            "table_dtype": torch.float32,
            "bias_index": "k-q",
            "scale": 0.25,
        }
    )
    return cases


def ensemble_cases(quick: bool) -> list[dict]:
    sizes = [(1, 36, 30), (999, 36, 30), (4097, 1620, 1800), (3, 5, 3)]
    if quick:
        sizes = sizes[:2]
    return [
        {"queries": q, "c1": c1, "c2": c2, "dtype": dt}
        for (q, c1, c2), dt in itertools.product(sizes, (torch.float32, torch.float16))
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--build-dir", default=None, help="default: build/plugins-sm<arch> (built here) or the prebuilt build/plugins"
    )
    ap.add_argument("--no-build", action="store_true", help="use the libraries already in --build-dir")
    ap.add_argument("--json", default=None, help="write every case and result here")
    ap.add_argument("--quick", action="store_true", help="fewer head counts and sizes")
    ap.add_argument("--seed", type=int, default=None, help="default: time-based (fresh inputs every run)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no CUDA GPU visible to torch; run this on a GPU machine", file=sys.stderr)
        return 2
    major, minor = torch.cuda.get_device_capability()
    t0 = time.time()
    build_dir = build.libraries_for_gpu(args.build_dir, f"{major}{minor}", no_build=args.no_build)
    print(f"libraries for sm_{major}{minor}: {build_dir} ({time.time() - t0:.1f} s)")
    kernels, harness = _load(build_dir)
    seed = args.seed if args.seed is not None else int(time.time())
    gen = torch.Generator(device="cuda").manual_seed(seed)
    results: list[dict] = []
    paths = (
        ("kernel", kernels.srdeploy_window_attention, kernels.srdeploy_local_ensemble),
        ("plugin-enqueue", harness.srdeploy_harness_window_attention, harness.srdeploy_harness_local_ensemble),
    )
    for path, wa_fn, le_fn in paths:
        for case in window_cases(args.quick):
            r = check_window_attention(wa_fn, case, gen)
            results.append({"op": WINDOW_ATTENTION, "path": path, **_printable(case), **r})
        for case in ensemble_cases(args.quick):
            r = check_local_ensemble(le_fn, case, gen)
            results.append({"op": LOCAL_ENSEMBLE, "path": path, **_printable(case), **r})
    # invalid arguments are refused before any launch
    bad = kernels.srdeploy_window_attention(0, None, None, None, None, 0, None, 1, 1, 12, 16, 0.25, 0, _stream())
    results.append(
        {
            "op": WINDOW_ATTENTION,
            "path": "kernel",
            "case": "window=12 refused",
            "status": bad,
            "ok": bad == INVALID_WINDOW,
        }
    )
    failed = [r for r in results if not r["ok"]]
    for r in results:
        flag = "ok  " if r["ok"] else "FAIL"
        print(
            f"{flag} {r['op']:<20} {r['path']:<15} "
            + ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("ok", "op", "path"))
        )
    dev = torch.cuda.get_device_name()
    print(f"\n{len(results) - len(failed)}/{len(results)} passed on {dev} (seed {seed})")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"device": dev, "torch": torch.__version__, "seed": seed, "results": results}, indent=1, default=str
            )
        )
    return 0 if not failed else 1


def _printable(case: dict) -> dict:
    return {k: (str(v).replace("torch.", "") if isinstance(v, torch.dtype) else v) for k, v in case.items()}


if __name__ == "__main__":
    raise SystemExit(main())
