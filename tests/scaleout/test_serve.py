"""``sr-serve`` on Ray Serve over loopback: concurrent clients, equal outputs, malformed requests, clean stop.

The server runs as a real ``sr-serve`` subprocess that joins the session's local Ray cluster on
a free loopback port. Answers are compared with the local runner (``open_predictor`` on the
same artifact, rounded to uint8 as every writer does).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srdeploy.imageio import to_uint

REQUEST_SIZES = [(24, 32), (32, 24), (17, 29), (40, 40), (24, 32)]  # small, mixed; two share a size
MAX_PIXELS = 64 * 64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post(url: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 60.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def server(ray_cluster: str, tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``sr-serve`` in a subprocess on a free port; stopped with SIGINT (then killed) whatever happens."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "sr-serve.log"
    cmd = [sys.executable, "-m", "srdeploy.cli.serve", "--onnx", str(tiny_artifact), "--port", str(port),
           "--address", ray_cluster, "--max-pixels", str(MAX_PIXELS), "--max-batch-size", "8",
           "--batch-wait-ms", "20", "--request-timeout", "60"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 150
        while True:
            assert proc.poll() is None, f"sr-serve exited early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"sr-serve not ready in 150 s:\n{log.read_text()[-3000:]}"
            try:
                if _get(url + "-/healthz")[0] == 200 and _get(url)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        yield url
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def local(tiny_artifact: Path):
    from srdeploy.runtime.predict import open_predictor

    predictor, _ = open_predictor(tiny_artifact, "onnxruntime")
    with predictor:
        yield lambda img: to_uint(predictor(img.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)[0]
                                  ).transpose(1, 2, 0)


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        return np.asarray(im)


def test_concurrent_clients_get_the_local_output(server: str, local) -> None:
    rng = np.random.default_rng(7)
    jobs = []
    for c in range(8):
        for r in range(10):
            h, w = REQUEST_SIZES[(c + r) % len(REQUEST_SIZES)]
            jobs.append((c, r, rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))

    def send(job: tuple[int, int, np.ndarray]) -> tuple[int, bytes]:
        c, r, img = job
        if (c + r) % 2:  # half as PNG bytes, half as raw uint8 with its shape
            return _post(server, _png(img))
        return _post(server, img.tobytes(), {"Content-Type": "application/octet-stream",
                                             "X-Shape": f"{img.shape[0]},{img.shape[1]},3", "X-Dtype": "uint8"})

    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:  # 8 concurrent clients x 10 requests
        answers = list(pool.map(send, jobs, timeout=240))
    assert time.monotonic() - t0 < 240
    for (c, r, img), (status, body) in zip(jobs, answers, strict=True):
        assert status == 200, (c, r, body[:200])
        got = _decode(body)
        assert got.shape == (img.shape[0] * 2, img.shape[1] * 2, 3)
        # batched (N > 1) and single ORT calls round identically here; the PNG path is lossless
        np.testing.assert_array_equal(got, local(img), err_msg=f"client {c} request {r}")
    # Ray Serve batching ran equal-size requests as one runner batch (one replica: its counter)
    assert json.loads(_get(server)[1])["largest_batch"] >= 2


def test_malformed_requests_get_4xx_and_server_keeps_answering(server: str, local) -> None:
    good = np.random.default_rng(3).integers(0, 256, (20, 22, 3), dtype=np.uint8)
    raw = {"Content-Type": "application/octet-stream"}
    big = np.zeros((80, 80, 3), np.uint8)  # 6400 pixels > MAX_PIXELS
    cases = {
        "not an image": (b"hello, this is text", {}, 400),
        "truncated png": (_png(good)[:60], {}, 400),
        "empty": (b"", {}, 400),
        "wrong dtype": (good.astype(np.float32).tobytes(), {**raw, "X-Shape": "20,22,3", "X-Dtype": "float32"}, 415),
        "wrong rank": (good.tobytes(), {**raw, "X-Shape": "20,66"}, 400),
        "wrong channels": (good.tobytes(), {**raw, "X-Shape": "20,11,6"}, 400),
        "shape vs bytes": (good.tobytes()[:-3], {**raw, "X-Shape": "20,22,3"}, 400),
        "raw without shape": (good.tobytes(), raw, 400),
        "oversized png": (_png(big), {}, 413),
        "oversized raw": (big.tobytes(), {**raw, "X-Shape": "80,80,3"}, 413),
    }
    for name, (body, headers, want) in cases.items():
        status, reason = _post(server, body, headers, timeout=30)
        assert status == want, (name, status, reason[:200])
        text = reason.decode()
        assert text.strip() and "\n" not in text.strip(), (name, text)  # one-line reason
        status, out = _post(server, _png(good), timeout=30)  # still up, still right
        assert status == 200, name
        np.testing.assert_array_equal(_decode(out), local(good))
    info = json.loads(_get(server)[1])
    assert info["max_pixels"] == MAX_PIXELS and info["scale"] == 2


def test_sr_upscale_server_client(server: str, local, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from srdeploy.cli.upscale import main

    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(5)
    imgs = {f"a{i}": rng.integers(0, 256, (16 + i, 20, 3), dtype=np.uint8) for i in range(3)}
    for name, img in imgs.items():
        Image.fromarray(img).save(src / f"{name}.png")
    Image.fromarray(np.zeros((90, 90, 3), np.uint8)).save(src / "huge.png")
    out = tmp_path / "out"
    assert main(["--server", server, str(src), "-o", str(out)]) == 1  # huge.png refused by the server
    err = capsys.readouterr().err
    assert "huge.png: the server answered 413" in err and "done 3, failed 1" in err, err
    assert not (out / "huge.png").exists()
    for name, img in imgs.items():
        np.testing.assert_array_equal(_decode((out / f"{name}.png").read_bytes()), local(img))
