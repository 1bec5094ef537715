#!/usr/bin/env python3
"""Benchmark: SRWindowAttention kernel vs PyTorch SDPA (math / memory-efficient, bias as a
materialised mask) vs compiled flex_attention (score_mod bias from the compact table), at ESC's
shapes, side by side in one run. Needs a CUDA GPU, torch with CUDA, nvcc and cmake.

    python benchmarks/bench_window_attention.py [--json results.json] [--repeats 50]

Shapes (attention core of one ESC layer, fp16, 4 heads x d16, 32x32 windows = 1024 tokens):
  x4 HD (1280x720 output, 320x180 LR): 60 windows;  x2 HD (640x360 LR): 240 windows.

What is timed: device time of the attention call only, CUDA events around `repeats` back-to-back
calls after `warmup` calls, median of 5 such groups; inputs resident on the GPU; the SDPA mask is
expanded once per layer outside the timed region (its one-off cost and memory are reported
separately). Peak memory = max_memory_allocated during the timed calls minus the resident inputs.
FLOP = 4 N^2 C per window (C = heads*d); bytes = (3 reads + 1 write) N C 2 per window + the table.
Floor (docs/tensorrt.md 6.3): max(tensor-core time, DRAM time, exp time at 16 exp/clk/SM).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from srdeploy.plugins import build
from srdeploy.plugins.reference import relative_position_index, window_attention_ref

SHAPES = {"x4_HD": 60, "x2_HD": 240}
HEADS, HEAD_DIM, WINDOW = 4, 16, 32
# peak figures used for the floor when the device is not in this table: --peak-* flags
PEAKS = {  # dense fp16 tensor TFLOP/s, DRAM TB/s, boost clock GHz
    "H100 SXM": (989.0, 3.35, 1.98),
    "H100 PCIe": (756.0, 2.0, 1.755),
    "H200": (989.0, 4.8, 1.98),
}


def device_peaks(name: str, args: argparse.Namespace) -> tuple[float, float, float, str]:
    if args.peak_tflops and args.peak_tbps and args.clock_ghz:
        return args.peak_tflops, args.peak_tbps, args.clock_ghz, "command line"
    for key, vals in PEAKS.items():
        if all(part in name for part in key.split()):
            return (*vals, f"table entry '{key}'")
    if "H100" in name and "PCIe" not in name:
        return (*PEAKS["H100 SXM"], "table entry 'H100 SXM'")
    raise SystemExit(f"error: no peak figures for '{name}'; pass --peak-tflops, --peak-tbps and --clock-ghz")


def cuda_time_us(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    groups = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            fn()
        end.record()
        torch.cuda.synchronize()
        groups.append(start.elapsed_time(end) * 1000.0 / repeats)
    return statistics.median(groups)


def peak_extra_mb(fn: Callable[[], object]) -> float:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--build-dir", default=None, help="default: build/plugins-sm<arch> (built here) or the prebuilt build/plugins"
    )
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-flex", action="store_true", help="skip compiled flex_attention (slow first compile)")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--peak-tbps", type=float, default=None)
    ap.add_argument("--clock-ghz", type=float, default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no CUDA GPU visible to torch; run this on a GPU machine", file=sys.stderr)
        return 2
    major, minor = torch.cuda.get_device_capability()
    build_dir = build.libraries_for_gpu(args.build_dir, f"{major}{minor}", no_build=args.no_build)
    print(f"libraries: {build_dir}")
    lib = build.load_launchers(build_dir, "kernels")

    props = torch.cuda.get_device_properties(0)
    name = torch.cuda.get_device_name()
    tflops, tbps, ghz, peak_src = device_peaks(name, args)
    sms = props.multi_processor_count
    exp_per_s = 16 * sms * ghz * 1e9
    n = WINDOW * WINDOW
    c = HEADS * HEAD_DIM
    scale = HEAD_DIM**-0.5
    gen = torch.Generator(device="cuda").manual_seed(0)
    idx = relative_position_index(WINDOW, "k-q").cuda()

    flex = None
    if not args.no_flex:
        from torch.nn.attention.flex_attention import flex_attention

        flex = torch.compile(flex_attention, dynamic=False)

    rows: list[dict] = []
    for shape, windows in SHAPES.items():
        q, k, v = (torch.randn(windows, HEADS, n, HEAD_DIM, device="cuda", generator=gen).half() for _ in range(3))
        table = torch.randn(HEADS, (2 * WINDOW - 1) ** 2, device="cuda", generator=gen)
        out = torch.empty_like(q)
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)

        def ours(q=q, k=k, v=v, table=table, out=out, windows=windows, stream=stream) -> None:
            status = lib.srdeploy_window_attention(
                1,
                q.data_ptr(),
                k.data_ptr(),
                v.data_ptr(),
                table.data_ptr(),
                0,
                out.data_ptr(),
                windows,
                HEADS,
                WINDOW,
                HEAD_DIM,
                scale,
                0,
                stream,
            )
            if status:
                raise RuntimeError(f"srdeploy_window_attention failed with status {status}")

        t0 = time.time()
        mask = table[:, idx].half().unsqueeze(0)  # (1, heads, N, N): the materialised bias
        torch.cuda.synchronize()
        mask_mb = mask.numel() * mask.element_size() / 2**20
        mask_ms = (time.time() - t0) * 1000

        def sdpa(backend, q=q, k=k, v=v, mask=mask):
            from torch.nn.attention import sdpa_kernel

            def run() -> torch.Tensor:
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)

            return run

        def score_mod(score, b, h, q_idx, kv_idx, table=table):
            qy, qx = q_idx // WINDOW, q_idx % WINDOW
            ky, kx = kv_idx // WINDOW, kv_idx % WINDOW
            return score + table[h, (ky - qy + WINDOW - 1) * (2 * WINDOW - 1) + (kx - qx + WINDOW - 1)]

        from torch.nn.attention import SDPBackend

        contenders: dict[str, Callable[[], object]] = {
            "srdeploy SRWindowAttention (fp16, tensor cores)": ours,
            "SDPA math + bias mask": sdpa(SDPBackend.MATH),
            "SDPA mem-efficient + bias mask": sdpa(SDPBackend.EFFICIENT_ATTENTION),
        }
        if flex is not None:
            contenders["flex_attention compiled, score_mod bias"] = lambda q=q, k=k, v=v: flex(
                q, k, v, score_mod=score_mod, scale=scale
            )

        ref = window_attention_ref(q[:3].float(), k[:3].float(), v[:3].float(), table, window=WINDOW, scale=scale)
        flop = 4.0 * n * n * c * windows
        bytes_io = 4.0 * n * c * 2 * windows + table.numel() * 4
        floor_us = max(flop / (tflops * 1e12), bytes_io / (tbps * 1e12), HEADS * n * n * windows / exp_per_s) * 1e6
        for label, fn in contenders.items():
            try:
                res = fn()
                torch.cuda.synchronize()
                got = (out if res is None else res)[:3].float()
                err = float((got - ref).abs().max() / ref.abs().max())
                t_us = cuda_time_us(fn, args.warmup, args.repeats)
                mem = peak_extra_mb(fn)
            except Exception as exc:  # a contender unsupported on this device/version is reported, not fatal
                rows.append({"shape": shape, "windows": windows, "impl": label, "error": str(exc).splitlines()[0]})
                continue
            rows.append(
                {
                    "shape": shape,
                    "windows": windows,
                    "impl": label,
                    "time_us": t_us,
                    "tflops": flop / t_us / 1e6,
                    "gbps": bytes_io / t_us / 1e3,
                    "peak_extra_mb": mem,
                    "max_rel_err": err,
                    "floor_us": floor_us,
                    "x_floor": t_us / floor_us,
                }
            )
        rows.append(
            {
                "shape": shape,
                "windows": windows,
                "impl": "(bias mask expansion, once per layer)",
                "wall_ms": mask_ms,
                "mask_mb": mask_mb,
            }
        )

    print(f"device: {name}, {sms} SMs; peaks from {peak_src}: {tflops} TFLOP/s fp16, {tbps} TB/s, {ghz} GHz")
    print(
        f"torch {torch.__version__}; timed: device time, CUDA events, warmup {args.warmup}, "
        f"{args.repeats} calls x 5 groups (median)"
    )
    hdr = f"{'shape':<6} {'implementation':<48} {'time us':>9} {'TFLOP/s':>8} {'GB/s':>8} {'peak MB':>8} "
    print(hdr + f"{'x floor':>8} {'rel err':>9}")
    for r in rows:
        if "time_us" in r:
            print(
                f"{r['shape']:<6} {r['impl']:<48} {r['time_us']:9.1f} {r['tflops']:8.1f} {r['gbps']:8.0f} "
                f"{r['peak_extra_mb']:8.1f} {r['x_floor']:8.2f} {r['max_rel_err']:9.2e}"
            )
        elif "error" in r:
            print(f"{r['shape']:<6} {r['impl']:<48} unavailable: {r['error']}")
        else:
            print(f"{r['shape']:<6} {r['impl']:<48} {r['wall_ms']:9.2f} ms wall, {r['mask_mb']:.1f} MB")
    verdicts = []
    for shape in SHAPES:
        by = {r["impl"]: r for r in rows if r["shape"] == shape and "time_us" in r}
        ours_r = by.get("srdeploy SRWindowAttention (fp16, tensor cores)")
        if ours_r is None:
            continue
        for other, target in (
            ("SDPA math + bias mask", 3.0),
            ("SDPA mem-efficient + bias mask", 3.0),
            ("flex_attention compiled, score_mod bias", 1.5),
        ):
            if other in by:
                speedup = by[other]["time_us"] / ours_r["time_us"]
                ok = speedup >= target
                verdicts.append({"shape": shape, "vs": other, "speedup": speedup, "target": target, "met": ok})
                print(f"{shape}: {speedup:5.2f}x faster than {other} (target {target}x: {'met' if ok else 'NOT met'})")
        print(f"{shape}: floor {ours_r['floor_us']:.1f} us, ours at {ours_r['x_floor']:.2f}x the floor")
    if args.json:
        meta = {
            "device": name,
            "sms": sms,
            "peaks": {"tflops": tflops, "tbps": tbps, "ghz": ghz, "source": peak_src},
            "torch": torch.__version__,
            "timed": "device time of the attention call, CUDA events",
            "warmup": args.warmup,
            "repeats": args.repeats,
            "precision": "fp16 I/O, fp32 accumulation",
            "heads": HEADS,
            "head_dim": HEAD_DIM,
            "window": WINDOW,
        }
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows, "verdicts": verdicts}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
