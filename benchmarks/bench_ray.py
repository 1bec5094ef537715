"""Throughput through Ray on ONNX Runtime CPU, side by side in one run: batch (Ray Data) and online (Ray Serve).

    python benchmarks/bench_ray.py [--model span --scale 4 | --onnx A.onnx] [--size 64x64] [--images 24]
        [--requests 48] [--cpus 2]

Prints, for one model:

* images/s of ``sr-upscale``'s single-process path, and of ``--ray`` with 1 actor (all cores) and
  2 actors (cores split), over the same ``--images`` PNG files (outputs checked equal to the
  single-process files): first for the whole job (session / actor-pool start included: what a
  user waits for), then "steady" (single process: the loop alone; Ray: from the first to the last
  finished image). The cluster start-up is printed on its own line;
* the ``sr-serve`` deployment's requests/s and p50/p99 latency with 1 and 8 concurrent clients,
  with and without Ray Serve batching (one replica holding all cores).

The artifact is exported with random weights (speed does not depend on them) unless ``--onnx``
is given. This is a benchmark, not a test; it takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np


def _export(model: str, scale: int, outdir: Path) -> Path:
    from srdeploy.export.api import export_model

    res = export_model(model, scale, outdir, run_validation=False)
    return res.onnx_path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, body: bytes) -> float:
    t0 = time.perf_counter()
    req = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(req, timeout=300) as r:
        r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}")
    return time.perf_counter() - t0


def _clients(url: str, bodies: list[bytes], clients: int) -> tuple[float, list[float]]:
    """``clients`` threads share ``bodies``; returns (wall seconds, latencies)."""
    lat: list[float] = []
    lock = threading.Lock()
    it = iter(bodies)

    def worker() -> None:
        while True:
            with lock:
                body = next(it, None)
            if body is None:
                return
            dt = _post(url, body)
            with lock:
                lat.append(dt)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    return time.perf_counter() - t0, lat


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="span", help="registered model to export (default: span, the NTIRE baseline)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--onnx", default=None, help="use this exported artifact instead of exporting --model")
    p.add_argument("--size", default="64x64", help="LR size HxW of the images and requests")
    p.add_argument("--images", type=int, default=64, help="images for the batch part")
    p.add_argument("--requests", type=int, default=48, help="requests per server configuration")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    args = p.parse_args(argv)

    from PIL import Image

    from srdeploy.cli.upscale import main as upscale
    from srdeploy.sizes import parse_size

    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    try:
        onnx_path = Path(args.onnx) if args.onnx else _export(args.model, args.scale, work / "artifact")
        imgs = work / "images"
        imgs.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.images):
            Image.fromarray(rng.integers(0, 256, (size.h, size.w, 3), dtype=np.uint8)).save(imgs / f"f{i:04d}.png")
        print(f"model {onnx_path.name}, LR {size.h}x{size.w}, {args.images} images, ONNX Runtime CPU, "
              f"{args.cpus} CPUs", flush=True)
        rows: list[tuple[str, str]] = []

        # single process: the whole command (session start included), then the loop alone
        with contextlib.redirect_stdout(io.StringIO()):
            upscale(["--onnx", str(onnx_path), str(imgs), "-o", str(work / "warm"), "--tile", "0"])  # page cache
            t0 = time.perf_counter()
            assert upscale(["--onnx", str(onnx_path), str(imgs), "-o", str(work / "single"), "--tile", "0"]) == 0
            single = args.images / (time.perf_counter() - t0)
        from srdeploy.runtime.predict import open_predictor

        from srdeploy.cli.upscale import upscale_files

        def single_loop() -> float:
            """The single-process loop alone (session open, warm): img/s."""
            predictor, _ = open_predictor(onnx_path, "onnxruntime")
            with predictor, contextlib.redirect_stderr(io.StringIO()):
                upscale_files(predictor, predictor.scale, sorted(imgs.glob("*.png"))[:2], work / "warm")
                t0 = time.perf_counter()
                upscale_files(predictor, predictor.scale, sorted(imgs.glob("*.png")), work / "warm")
                return args.images / (time.perf_counter() - t0)

        before = single_loop()

        import ray
        from srdeploy.runtime import serve as srv
        from srdeploy.runtime.ray_batch import BatchOptions, PoolOptions, run_batch

        t0 = time.perf_counter()
        ray.init(address="local", include_dashboard=False, num_cpus=args.cpus, _node_ip_address="127.0.0.1",
                 log_to_driver=False, logging_level=logging.WARNING)
        print(f"ray.init (local cluster start): {time.perf_counter() - t0:.1f} s", flush=True)
        try:
            inputs = sorted(imgs.glob("*.png"))
            ray_rates: list[tuple[str, float, float]] = []  # (row, job img/s, steady img/s)
            for actors in (1, 2):
                cpus = args.cpus / actors
                out = work / f"ray{actors}"
                opts = BatchOptions(artifact=str(onnx_path), backend="onnxruntime", outdir=str(out),
                                    intra_op_threads=max(1, int(cpus)))
                s = run_batch(inputs, opts, PoolOptions(actors, cpus), progress=False)
                assert len(s.done) == args.images and not s.failed, s.failed
                for f in inputs:
                    if (out / f.name).read_bytes() != (work / "single" / f.name).read_bytes():
                        raise SystemExit(f"ray output {f.name} differs from the single-process output")
                ray_rates.append((f"batch: ray data, {actors} actor(s) x {cpus:g} CPU", args.images / s.seconds,
                                  s.steady_rate() or float("nan")))

            after = single_loop()  # the machine is shared: the loop again, after the Ray jobs
            single_steady = (before + after) / 2
            rows.append(("batch: single process (sr-upscale)",
                         f"{single:7.2f} img/s  1.00x   steady {single_steady:7.2f} img/s  1.00x  "
                         f"(loop before/after Ray: {before:.2f}/{after:.2f})"))
            for name, rate, steady in ray_rates:
                rows.append((name, f"{rate:7.2f} img/s  {rate / single:.2f}x   steady {steady:7.2f} img/s  "
                                   f"{steady / single_steady:.2f}x"))

            from ray import serve

            port = _free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            url = f"http://127.0.0.1:{port}/"
            bodies = []
            for i in range(args.requests):
                buf = io.BytesIO()
                Image.open(inputs[i % len(inputs)]).save(buf, format="PNG")
                bodies.append(buf.getvalue())
            for batching in (False, True):
                opts = srv.ServeOptions(artifact=str(onnx_path), batching=batching, max_batch_size=8,
                                        batch_wait_s=0.01, intra_op_threads=args.cpus)
                serve.run(srv.build_app(opts, 1, cpus_per_replica=float(args.cpus)), name="bench",
                          route_prefix="/")
                _clients(url, bodies[:4], 1)  # warm-up
                for clients in (1, 8):
                    wall, lat = _clients(url, bodies, clients)
                    q = statistics.quantiles(lat, n=100)
                    rows.append((f"serve: {clients} client(s), batching {'on ' if batching else 'off'}",
                                 f"{len(lat) / wall:7.2f} req/s  p50 {q[49] * 1e3:7.1f} ms  p99 {q[98] * 1e3:7.1f} ms"))
                serve.delete("bench")
            serve.shutdown()
        finally:
            ray.shutdown()
        width = max(len(r[0]) for r in rows)
        print()
        for name, val in rows:
            print(f"{name:<{width}}  {val}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
