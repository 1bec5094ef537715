"""``sr-serve``: an HTTP upscaling service on Ray Serve (see srdeploy/runtime/serve.py for the protocol).

    sr-serve --onnx esc_x4.onnx [--port 8000] [--address RAY]      # POST an image to http://host:port/
    sr-serve --engine esc_x4.engine --gpus-per-replica 1 --min-replicas 1 --max-replicas 4

Ray Serve gives the proxy, replicas, autoscaling, batching, request timeout and ``/-/healthz``.
The command runs until Ctrl-C or SIGTERM, then shuts the deployment down (and the local Ray
cluster, if it started one).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from srdeploy.errors import SrdeployError, cli_errors, one_line
from srdeploy.options import OneLineParser, int_in, non_negative_float, non_negative_int, positive_float, positive_int


def build_parser() -> argparse.ArgumentParser:
    from srdeploy.cli.upscale import add_tiling_args

    p = OneLineParser(prog="sr-serve", description="Serve an exported SR model over HTTP on Ray Serve.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--onnx", help="exported .onnx, run with ONNX Runtime")
    src.add_argument("--engine", help="TensorRT engine file")
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address (0.0.0.0 to serve other machines)")
    p.add_argument("--port", type=int_in(1, 65535), default=8000, help="HTTP port")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: this machine's, else a new one)")
    p.add_argument("--device", default="cpu", help="--onnx: ONNX Runtime provider cpu | cuda | tensorrt")
    p.add_argument("--plugin-library", default=None, help="--engine: TensorRT plugin library to load")
    p.add_argument("--scale", type=positive_int, default=None, help="upscaling factor (read from the artifact)")
    g = p.add_argument_group("replicas")
    g.add_argument("--replicas", type=positive_int, default=1, help="fixed number of replicas")
    g.add_argument("--min-replicas", type=non_negative_int, default=None, help="autoscaling lower bound")
    g.add_argument("--max-replicas", type=positive_int, default=None, help="autoscaling upper bound")
    g.add_argument("--cpus-per-replica", type=positive_float, default=1.0,
                   help="CPU cores each replica reserves and uses")
    g.add_argument("--gpus-per-replica", type=non_negative_float, default=None,
                   help="GPUs per replica (default: 1 for --engine or --device cuda/tensorrt, else 0)")
    b = p.add_argument_group("batching and limits")
    b.add_argument("--max-batch-size", type=positive_int, default=8, help="requests of one size run as one batch")
    b.add_argument("--batch-wait-ms", type=non_negative_float, default=10.0, help="how long a batch waits to fill")
    b.add_argument("--no-batching", action="store_true", help="run each request on its own")
    b.add_argument("--max-pixels", type=positive_int, default=4_000_000, help="largest request (LR pixels); above: 413")
    b.add_argument("--max-bytes", type=positive_int, default=32 << 20, help="largest request body; above: 413")
    b.add_argument("--request-timeout", type=positive_float, default=60.0,
                   help="seconds before Ray Serve drops a request")
    add_tiling_args(p)
    return p


@cli_errors
def main(argv: Sequence[str] | None = None) -> int:
    from srdeploy.cli.upscale import resolve_tiling
    from srdeploy.runtime.artifact import open_artifact
    from srdeploy.runtime.ray_batch import connect, require_ray
    from srdeploy.runtime.serve import ServeOptions, build_app

    args = build_parser().parse_args(argv)
    path = args.onnx or args.engine
    art = open_artifact(path)  # a missing or corrupt artifact fails before Ray starts
    tiling = resolve_tiling(args, art.default_tiling, art.min_size, art.model)
    backend = getattr(args, "backend", None) or ("tensorrt" if args.engine else "onnxruntime")
    gpus = args.gpus_per_replica
    if gpus is None:
        gpus = 1.0 if backend == "tensorrt" or args.device in ("cuda", "tensorrt") else 0.0
    options = ServeOptions(
        artifact=str(Path(path).resolve()), backend=backend, device=args.device,
        plugin_library=args.plugin_library, scale=args.scale,
        tile=tiling.tile if tiling else None, tile_overlap=tiling.overlap if tiling else 16,
        tile_blend=tiling.blend if tiling else "crop", max_pixels=args.max_pixels, max_bytes=args.max_bytes,
        batching=not args.no_batching, max_batch_size=args.max_batch_size, batch_wait_s=args.batch_wait_ms / 1e3,
        intra_op_threads=max(1, int(args.cpus_per_replica)),
    )
    require_ray()
    from ray import serve

    app = build_app(options, args.replicas, args.min_replicas, args.max_replicas, args.cpus_per_replica, gpus)
    started = connect(args.address)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        try:
            serve.start(http_options={"host": args.host, "port": args.port,
                                      "request_timeout_s": args.request_timeout})
            serve.run(app, name="srdeploy", route_prefix="/", blocking=False)
        except Exception as exc:  # replica constructor failed, port taken, ...
            first = one_line(exc)[:300]
            raise SrdeployError(f"the deployment did not start ({type(exc).__name__}: {first}); "
                                "check the artifact, the port and the cluster's free resources") from exc
        print(f"serving {art.model} x{art.scale} on http://{args.host}:{args.port}/ "
              f"(health: /-/healthz); Ctrl-C stops", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        print("stopping", file=sys.stderr, flush=True)
        serve.shutdown()
        if started:
            import ray

            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
