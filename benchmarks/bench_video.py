"""Video pipeline efficiency on ONNX Runtime CPU: end-to-end fps against the model's own fps.

    python benchmarks/bench_video.py [--model span] [--scale 4] [--onnx FILE] [--size 90x160]
        [--frames 48] [--rounds 3] [--codec libx264] [--threads N] [-o out/bench_video]

In one run, on the same synthetic clip (``--frames`` frames of ``--size`` LR pixels, moving
gradients, a sine AAC track, libx264 in mp4, made with PyAV):

1. **model only**: the clip's frames are decoded to RGB once beforehand; then the predictor is
   called on each frame as float32 (exactly what the pipeline feeds it, batch ``--batch``): the
   rate the pipeline could reach at best;
2. **pipeline**: :func:`srdeploy.video.upscale_video` file to file (open, demux, decode, YUV->RGB,
   infer, RGB->YUV, encode ``--codec``, mux, audio copy, atomic rename);

the two alternate for ``--rounds`` rounds after one warm-up each, and the best round of each is
compared (efficiency = pipeline fps / model fps; the issue's aim: above 0.90). Then the peak
resident memory (VmHWM) of a fresh process running the pipeline on the clip and on a clip 10x
longer (aim: unchanged; nothing grows with the clip length). Without ``--onnx`` the model is
exported first with ``sr-export``'s library entry point (random weights: speed does not depend
on them). Decode and encode compete with ONNX Runtime for the same cores on a CPU; on a GPU the
model runs on the device and the CPU stages only have to keep up.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, resource, sys
from srdeploy.runtime.predict import open_predictor
from srdeploy.runtime.backends.onnxruntime import OrtOptions
from srdeploy.video import VideoOptions, upscale_video
onnx, src, dest, codec, threads, batch, spin, preset = sys.argv[1:9]
opts = OrtOptions(intra_op_threads=int(threads) if threads != "0" else None,
                  session_options={"session.intra_op.allow_spinning": "0"} if spin == "1" else {})
predictor, _ = open_predictor(onnx, "onnxruntime", opts)
with predictor:
    rep = upscale_video(predictor, predictor.scale, src, dest, VideoOptions(codec=codec, batch=int(batch),
                        queue_frames=max(8, 2 * int(batch) + 2),
                        encoder_options={"preset": preset} if preset else {}), progress=False)
print(json.dumps({"frames": rep.frames, "fps": rep.fps,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (the load-independent cost)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def make_clip(path: Path, n: int, h: int, w: int, rate: int = 24) -> Path:
    """A synthetic clip (moving gradients + 440 Hz AAC), libx264 yuv420p in mp4, written with PyAV."""
    import av
    import numpy as np

    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=rate)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    aus = out.add_stream("aac", rate=48000, layout="mono")
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        img = np.stack([(xx * 2 + i * 5) % 256, (yy * 3 + i * 2) % 256,
                        128 + 100 * np.sin((xx + yy + 3 * i) / 9.0)], -1).astype(np.uint8)
        f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        f.pts = i
        out.mux(vs.encode(f))
    out.mux(vs.encode(None))
    t = np.arange(48000 * n // rate) / 48000
    a = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for k in range(0, len(a), 1024):
        af = av.AudioFrame.from_ndarray(a[None, k : k + 1024], format="fltp", layout="mono")
        af.sample_rate, af.pts = 48000, k
        out.mux(aus.encode(af))
    out.mux(aus.encode(None))
    out.close()
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="span", help="registry name exported when --onnx is not given")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--onnx", default=None, help="an exported .onnx to use instead of exporting --model")
    p.add_argument("--size", default="90x160", help="LR frame size HxW (default 90x160: 360x640 out at x4)")
    p.add_argument("--frames", type=int, default=48, help="frames of the short clip (the long one has 10x)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--codec", default="libx264")
    p.add_argument("--preset", default=None, help="encoder preset (x264/x265: ultrafast ... veryslow)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    p.add_argument("--no-spin", action="store_true",
                   help="ONNX Runtime threads sleep instead of spin-waiting (frees cores for decode/encode)")
    p.add_argument("--skip-memory", action="store_true", help="skip the 10x-longer-clip memory runs")
    p.add_argument("-o", "--output", default="out/bench_video")
    args = p.parse_args(argv)

    import av
    import numpy as np
    from srdeploy.runtime.backends.onnxruntime import OrtOptions
    from srdeploy.runtime.predict import open_predictor

    from srdeploy.sizes import parse_size
    from srdeploy.video import VideoOptions, upscale_video

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    size = parse_size(args.size)
    h, w = size.h, size.w
    onnx = args.onnx
    if onnx is None:
        from srdeploy.export.api import export_model

        t0 = time.perf_counter()
        res = export_model(args.model, args.scale, out / "onnx")
        onnx = str(res.onnx_path)
        print(f"exported {args.model} x{args.scale} in {time.perf_counter() - t0:.1f} s: {onnx}")
    short = make_clip(out / "clip.mp4", args.frames, h, w)

    with av.open(str(short)) as c:
        rgb = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    lr = [np.ascontiguousarray(f.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255) for f in rgb]
    if args.batch > 1:
        lr = [np.concatenate(lr[i : i + args.batch]) for i in range(0, len(lr), args.batch)]
    spin = {"session.intra_op.allow_spinning": "0"} if args.no_spin else {}
    opts = OrtOptions(intra_op_threads=args.threads or None, session_options=spin)
    predictor, art = open_predictor(onnx, "onnxruntime", opts)
    enc = {"preset": args.preset} if args.preset else {}
    vopts = VideoOptions(codec=args.codec, batch=args.batch, queue_frames=max(8, 2 * args.batch + 2),
                         encoder_options=enc)
    model_fps, pipe_fps, busy_fps, model_cpu, pipe_cpu = [], [], [], [], []
    with predictor:
        scale = int(predictor.scale)
        predictor(lr[0])  # warm-up
        upscale_video(predictor, scale, short, out / "warmup.mp4", vopts, progress=False)
        for r in range(args.rounds):
            c0, t0 = _cpu_seconds(), time.perf_counter()
            for x in lr:
                predictor(x)
            model_fps.append(len(rgb) / (time.perf_counter() - t0))
            model_cpu.append((_cpu_seconds() - c0) / len(rgb))
            c0 = _cpu_seconds()
            rep = upscale_video(predictor, scale, short, out / "x.mp4", vopts, progress=False)
            pipe_cpu.append((_cpu_seconds() - c0) / len(rgb))
            assert rep.frames == len(rgb), (rep.frames, len(rgb))
            pipe_fps.append(rep.fps)
            busy_fps.append(rep.frames / rep.infer_seconds)
            print(f"round {r + 1}: model only {model_fps[-1]:.2f} fps, pipeline {pipe_fps[-1]:.2f} fps "
                  f"(its inference stage alone: {busy_fps[-1]:.2f} fps); CPU time per frame: model "
                  f"{model_cpu[-1] * 1e3:.0f} ms, pipeline {pipe_cpu[-1] * 1e3:.0f} ms")
    best_model, best_pipe = max(model_fps), max(pipe_fps)
    threads = f"{args.threads or 'default'} threads" + (", no spinning" if args.no_spin else "")
    print(f"model {art.model} x{scale}, LR {h}x{w} -> {h * scale}x{w * scale}, {len(rgb)} frames, batch "
          f"{args.batch}, ONNX Runtime CPU ({threads}), encoder {args.codec} {args.preset or ''}")
    print(f"model-only rate   : {best_model:.2f} fps (best of {args.rounds}; frames decoded beforehand)")
    print(f"pipeline rate     : {best_pipe:.2f} fps (best of {args.rounds}; file to file, audio copied)")
    print(f"pipeline efficiency: {best_pipe / best_model:.3f} (aim > 0.90)")
    print(f"inference stage inside the pipeline: {max(busy_fps):.2f} fps (model + quantising while decode and "
          "encode share the cores; wall/busy shows what the pipelining itself loses: "
          f"{best_pipe / max(busy_fps):.3f})")
    mc, pc = min(model_cpu), min(pipe_cpu)
    print(f"CPU time per frame (all threads, least of {args.rounds}): model {mc * 1e3:.0f} ms, pipeline "
          f"{pc * 1e3:.0f} ms; decode + conversions + encode add {(pc - mc) * 1e3:.0f} ms, so where the model "
          f"already fills every core the pipeline can reach at most {mc / pc:.3f} of the model-only rate")
    result = {"model": art.model, "scale": scale, "lr": [h, w], "frames": len(rgb), "batch": args.batch,
              "codec": args.codec, "preset": args.preset, "model_fps": model_fps, "pipeline_fps": pipe_fps,
              "infer_stage_fps": busy_fps,
              "model_cpu_s_per_frame": model_cpu, "pipeline_cpu_s_per_frame": pipe_cpu,
              "efficiency": best_pipe / best_model}

    if not args.skip_memory:
        long = make_clip(out / "clip_x10.mp4", 10 * args.frames, h, w)
        mem = {}
        for name, clip in (("short", short), ("long", long)):
            r = subprocess.run([sys.executable, "-c", _CHILD, str(onnx), str(clip), str(out / f"{name}_sr.mp4"),
                                args.codec, str(args.threads), str(args.batch), str(int(args.no_spin)),
                                args.preset or ""],
                               capture_output=True, text=True, check=False, cwd=REPO)
            if r.returncode != 0:
                print(r.stderr, file=sys.stderr)
                return 1
            mem[name] = json.loads(r.stdout.strip().splitlines()[-1])
        s, lg = mem["short"], mem["long"]
        print(f"peak memory (VmHWM, fresh process): {s['frames']} frames {s['peak_rss_mib']:.0f} MiB, "
              f"{lg['frames']} frames {lg['peak_rss_mib']:.0f} MiB: ratio {lg['peak_rss_mib'] / s['peak_rss_mib']:.3f} "
              "(aim: 1.0)")
        result["memory"] = mem
    (out / "bench_video.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
