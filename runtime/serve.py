"""Online upscaling on Ray Serve (``sr-serve``) and its HTTP client (``sr-upscale --server URL``).

What Ray Serve does for us: the HTTP proxy (uvicorn/starlette), routing, replicas placed on
GPUs or CPU cores of a cluster, autoscaling between bounds, request batching
(``@serve.batch``: max batch size and wait time), the request timeout, and the ``/-/healthz`` and
``/-/routes`` endpoints (metrics go through Ray's Prometheus exporter). We write no server, queue
or RPC of our own: a deployment class and the request/response format.

Protocol: ``POST /`` with

* PNG / JPEG / WebP / BMP bytes (any ``Content-Type``; the bytes are sniffed), or
* raw ``uint8`` ``HxWx3`` RGB: ``Content-Type: application/octet-stream`` and header
  ``X-Shape: H,W,3`` (``X-Dtype: uint8`` optional; any other dtype is refused),

and get the upscaled image back as ``image/png``. Alpha is dropped and grayscale is served as RGB.
Bad requests get a 4xx with a one-line ``text/plain`` reason (400 malformed / not an image,
413 above ``max_pixels`` or ``max_bytes``, 415 wrong dtype); the replica stays up. ``GET /``
describes the model and the limits as JSON.

Batching groups the requests that arrive within the wait time by size and runs each group of
equal sizes as one batch (different sizes cannot share a tensor); the artifact's tiling applies
inside, as in ``sr-upscale``.

Torch-free: ray and starlette are imported lazily, and nothing here imports srdeploy.models or
srdeploy.export.
"""

from __future__ import annotations

import io
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from srdeploy.errors import MissingDependencyError, SrdeployError, one_line
from srdeploy.tiling import Tiling, tiled_apply

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")


class RequestError(SrdeployError):
    """A request the server refuses; ``status`` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServeOptions:
    artifact: str
    backend: str = "onnxruntime"
    device: str = "cpu"
    plugin_library: str | None = None
    scale: int | None = None
    tile: int | None = None
    tile_overlap: int = 16
    tile_blend: str = "crop"
    max_pixels: int = 4_000_000  # per request, LR pixels
    max_bytes: int = 32 << 20
    batching: bool = True
    max_batch_size: int = 8
    batch_wait_s: float = 0.01
    intra_op_threads: int | None = None

    @property
    def tiling(self) -> Tiling | None:
        return None if self.tile is None else Tiling(self.tile, self.tile_overlap, self.tile_blend)  # type: ignore[arg-type]


def _shape_header(value: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in value.replace("x", ",").split(",") if v.strip())
    except ValueError as exc:
        raise RequestError(400, f"X-Shape {value!r} is not H,W,3") from exc
    return dims


def decode_request(body: bytes, headers: Mapping[str, str], max_pixels: int, max_bytes: int) -> np.ndarray:
    """The request body as an ``(H, W, 3)`` uint8 RGB array, or a :class:`RequestError`."""
    if not body:
        raise RequestError(400, "empty request body; POST PNG/JPEG bytes, or raw uint8 HxWx3 with X-Shape")
    if len(body) > max_bytes:
        raise RequestError(413, f"request body is {len(body)} bytes, above the server's {max_bytes} limit")
    h = {k.lower(): v for k, v in headers.items()}
    if "x-shape" in h or h.get("content-type", "").startswith("application/octet-stream"):
        dtype = h.get("x-dtype", "uint8").strip().lower()
        if dtype != "uint8":
            raise RequestError(415, f"raw dtype {dtype} is not supported; send uint8 HxWx3 RGB")
        if "x-shape" not in h:
            raise RequestError(400, "raw request without X-Shape; add the header X-Shape: H,W,3")
        dims = _shape_header(h["x-shape"])
        if len(dims) != 3 or dims[2] != 3 or min(dims) <= 0:
            raise RequestError(400, f"X-Shape {h['x-shape']!r} must be H,W,3 (rank 3, 3 channels, positive)")
        if dims[0] * dims[1] > max_pixels:
            raise RequestError(413, f"{dims[0]}x{dims[1]} is above the server's {max_pixels} pixel limit")
        if len(body) != dims[0] * dims[1] * 3:
            raise RequestError(400, f"X-Shape {dims} needs {dims[0] * dims[1] * 3} bytes, the body has {len(body)}")
        return np.frombuffer(body, np.uint8).reshape(dims)
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own limit, our own message
    try:
        with Image.open(io.BytesIO(body), formats=IMAGE_FORMATS) as im:
            w, hh = im.size
            if w * hh > max_pixels:
                raise RequestError(413, f"{hh}x{w} is above the server's {max_pixels} pixel limit")
            im.load()
            rgb = im.convert("RGB")
    except RequestError:
        raise
    except Exception as exc:  # PIL: UnidentifiedImageError, truncated data, decoder errors
        raise RequestError(400, f"the body is not a readable PNG/JPEG/WebP/BMP image ({type(exc).__name__})") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = old
    return np.asarray(rgb, dtype=np.uint8)


def to_lr(img: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32 in [0, 1] (the model contract)."""
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def encode_png(sr: np.ndarray) -> bytes:
    """``(3, H, W)`` float in [0, 1] -> PNG bytes (uint8, rounded as sr-upscale writes files)."""
    from PIL import Image

    from srdeploy.imageio import to_uint

    buf = io.BytesIO()
    Image.fromarray(to_uint(sr.transpose(1, 2, 0)), mode="RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class UpscaleCore:
    """What one replica does without Ray: open the artifact once, run groups of equal-size images."""

    def __init__(self, options: ServeOptions) -> None:
        from .backends import RunOptions
        from .predict import open_predictor

        run = RunOptions(device=options.device, threads=options.intra_op_threads, plugin_library=options.plugin_library)
        predictor, art = open_predictor(options.artifact, options.backend, run, options.scale)
        predictor.__enter__()
        self.predictor, self.options = predictor, options
        self.info = {"model": art.model, "scale": predictor.scale, "min_size": art.min_size,
                     "max_pixels": options.max_pixels, "max_bytes": options.max_bytes,
                     "batching": options.batching, "max_batch_size": options.max_batch_size}
        self.min_size = art.min_size
        self.largest_batch = 0  # the largest group run as one runner batch so far (GET / shows it)

    def check(self, img: np.ndarray) -> None:
        if min(img.shape[:2]) < self.min_size:
            raise RequestError(400, f"{img.shape[0]}x{img.shape[1]} is below the model's minimum "
                                    f"{self.min_size}x{self.min_size}")

    def run(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Upscale ``(3, H, W)`` images; equal sizes go through the runner as one batch."""
        out: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(im.shape, []).append(i)
        for idx in groups.values():
            batch = np.stack([images[i] for i in idx])
            self.largest_batch = max(self.largest_batch, len(idx))
            sr = tiled_apply(self.predictor, batch, int(self.predictor.scale), self.options.tiling)
            for j, i in enumerate(idx):
                out[i] = sr[j]
        return out  # type: ignore[return-value]


def build_app(options: ServeOptions, replicas: int | None = 1, min_replicas: int | None = None,
              max_replicas: int | None = None, cpus_per_replica: float = 1.0, gpus_per_replica: float = 0.0) -> Any:
    """The Ray Serve application (``serve.run(build_app(...))``)."""
    try:
        from ray import serve
        from starlette.requests import Request
        from starlette.responses import Response
    except ImportError as exc:
        raise MissingDependencyError(f"sr-serve needs Ray Serve ({exc}); pip install 'srdeploy[ray]'") from exc

    deploy_kw: dict[str, Any] = {"ray_actor_options": {"num_cpus": cpus_per_replica}}
    if gpus_per_replica:
        deploy_kw["ray_actor_options"]["num_gpus"] = gpus_per_replica
    if min_replicas is not None or max_replicas is not None:
        lo = min_replicas if min_replicas is not None else 1
        deploy_kw["autoscaling_config"] = {"min_replicas": lo, "max_replicas": max(lo, max_replicas or lo),
                                           "target_ongoing_requests": max(1, options.max_batch_size // 2)}
    else:
        deploy_kw["num_replicas"] = replicas or 1
    deploy_kw["max_ongoing_requests"] = max(16, 2 * options.max_batch_size)

    @serve.deployment(name="srdeploy_upscaler", **deploy_kw)
    class SRDeployment:
        def __init__(self, opts: ServeOptions) -> None:
            import asyncio

            self._asyncio = asyncio
            self.core = UpscaleCore(opts)
            self.opts = opts
            self.batched.set_max_batch_size(opts.max_batch_size)  # type: ignore[attr-defined]
            self.batched.set_batch_wait_timeout_s(opts.batch_wait_s)  # type: ignore[attr-defined]

        async def _in_thread(self, images: list[np.ndarray]) -> list[np.ndarray]:
            loop = self._asyncio.get_running_loop()
            return await loop.run_in_executor(None, self.core.run, images)

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
        async def batched(self, images: list[np.ndarray]) -> list[np.ndarray]:
            return await self._in_thread(images)

        async def __call__(self, request: Request) -> Response:
            if request.method == "GET":
                info = {**self.core.info, "largest_batch": self.core.largest_batch}
                return Response(json.dumps(info), media_type="application/json")
            if request.method != "POST":
                return Response("POST an image to /\n", status_code=405, media_type="text/plain")
            try:
                body = await request.body()
                img = decode_request(body, request.headers, self.opts.max_pixels, self.opts.max_bytes)
                self.core.check(img)
                lr = to_lr(img)
                sr = await self.batched(lr) if self.opts.batching else (await self._in_thread([lr]))[0]
                png = encode_png(sr)
            except RequestError as exc:
                return Response(one_line(exc) + "\n", status_code=exc.status, media_type="text/plain")
            except SrdeployError as exc:
                return Response(one_line(exc) + "\n", status_code=422, media_type="text/plain")
            return Response(png, media_type="image/png")

    return SRDeployment.bind(options)  # type: ignore[attr-defined]


def options_json(options: ServeOptions) -> str:
    return json.dumps(asdict(options))


# ---- client (stdlib only: no Ray needed to call the server) ----------------------------------

def post_image(url: str, path: Path, timeout: float = 120.0) -> bytes:
    """POST one image file to ``url``; return the PNG bytes, or raise with the server's reason."""
    data = path.read_bytes()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/x-image"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        reason = exc.read().decode("utf-8", "replace").strip() or exc.reason
        raise SrdeployError(f"{path}: the server answered {exc.code}: {reason}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise SrdeployError(f"cannot reach the server at {url} ({exc}); is sr-serve running there?") from exc


def upscale_via_server(url: str, inputs: Sequence[Path], outdir: Path, suffix: str = "",
                       timeout: float = 120.0) -> tuple[list[Path], dict[str, str]]:
    """Send each input to ``sr-serve``; write ``STEM{suffix}.png`` atomically. Returns (written, failed)."""
    from tqdm import tqdm

    from srdeploy.atomic import atomic_write_bytes
    from srdeploy.options import check_range

    check_range("--server-timeout", timeout, 0, lo_open=True, what=" seconds")
    written: list[Path] = []
    failed: dict[str, str] = {}
    for path in tqdm(inputs, desc="images (server)", unit="img", disable=len(inputs) < 2, file=sys.stderr):
        try:
            png = post_image(url, path, timeout)
        except SrdeployError as exc:
            if "cannot reach" in str(exc):
                raise
            failed[str(path)] = one_line(exc)
            continue
        dest = outdir / f"{path.stem}{suffix}.png"
        atomic_write_bytes(dest, png)
        written.append(dest)
    return written, failed

