"""Video test helpers: synthetic clips made with PyAV, a tiny upscaling ONNX graph, readers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

H, W, N = 48, 64, 24  # the clip: 24 frames of 48x64
VFR_STEPS_MS = (30, 50, 40)  # frame durations of the variable-rate clip, repeating
FLAT_COLOURS = ((220, 40, 50), (30, 200, 60), (40, 60, 210), (200, 190, 30))


def tiny_upscaler(path: Path, scale: int, seed: int = 0) -> Path:
    """A small local SR graph: Conv3x3 -> Relu -> Conv3x3 -> DepthToSpace, plus a nearest skip.

    Dynamic batch and size, so it runs whole frames, tiles and batches. Written with onnx.helper,
    with the srdeploy metadata the runtime reads (model, scale, min size, no default tiling).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    c = 6
    arrays = {
        "w1": (rng.standard_normal((c, 3, 3, 3)) * 0.1).astype(np.float32),
        "b1": (rng.standard_normal(c) * 0.01).astype(np.float32),
        "w2": (rng.standard_normal((3 * scale * scale, c, 3, 3)) * 0.05).astype(np.float32),
        "b2": np.zeros(3 * scale * scale, np.float32),
        "scales": np.array([1, 1, scale, scale], np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["lr", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("DepthToSpace", ["c2"], ["d"], blocksize=scale, mode="CRD"),
        helper.make_node("Resize", ["lr", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Add", ["d", "up"], ["sr"]),
    ]
    graph = helper.make_graph(
        nodes, "video_test_sr",
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["N", 3, "SH", "SW"])],
        [numpy_helper.from_array(a, n) for n, a in arrays.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {"srdeploy.model": "videotest", "srdeploy.scale": str(scale), "srdeploy.precision": "fp32",
            "srdeploy.weights_sha256": "", "srdeploy.graph": "sr",
            "srdeploy.descriptor": json.dumps({"min_size": 1, "default_tiling": None})}
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def pattern(i: int, h: int = H, w: int = W) -> np.ndarray:
    """Frame ``i`` of the synthetic clips: moving gradients with some texture, (h, w, 3) uint8."""
    yy, xx = np.mgrid[0:h, 0:w]
    r = (xx * 4 + i * 7) % 256
    g = (yy * 5 + i * 3) % 256
    b = (128 + 100 * np.sin((xx + yy + 2 * i) / 5.0)).astype(np.int64)
    return np.stack([r, g, b], -1).astype(np.uint8)


@dataclass
class Clip:
    path: Path
    frames: int
    pix_fmt: str
    audio: bool


def make_clip(path: Path, *, n: int = N, vfr: bool = False, bits: int = 8, codec: str = "libx264",
              audio: bool = True, rate: int = 24, rotation: float | None = None,
              bt709: bool = False, subtitles: Path | None = None, flat: bool = False) -> Clip:
    """Write a clip with PyAV: ``n`` frames of 48x64, a 440 Hz sine track (AAC in mp4, FLAC otherwise).

    Video timestamps are in milliseconds: 1000 // rate apart, or VFR_STEPS_MS in turn when ``vfr``.
    ``flat``: frames of one saturated colour each (FLAT_COLOURS), where chroma subsampling costs
    nothing and a wrong YUV matrix shows as a colour shift.
    """
    tb = Fraction(1, 1000)
    pix = {8: "yuv420p", 10: "yuv420p10le"}[bits] if codec != "mjpeg" else "yuvj420p"
    out = av.open(str(path), "w")
    vs = out.add_stream(codec, rate=rate)
    vs.width, vs.height, vs.pix_fmt = W, H, pix
    vs.codec_context.time_base = tb
    if bt709:
        cc = vs.codec_context
        cc.color_range, cc.color_primaries, cc.color_trc, cc.colorspace = 1, 1, 1, 1
    if rotation is not None:
        vs.set_display_rotation(rotation)
    aus = None
    if audio:
        acodec = "aac" if path.suffix == ".mp4" else "flac"
        aus = out.add_stream(acodec, rate=48000, layout="mono")
    sub_in = None
    if subtitles is not None:
        sub_in = av.open(str(subtitles))
        ss = out.add_stream_from_template(sub_in.streams[0])
    pts = 0
    for i in range(n):
        kw = {"dst_colorspace": "ITU709", "dst_color_range": 1} if bt709 else {}
        colour = np.array(FLAT_COLOURS[i % len(FLAT_COLOURS)], np.uint8)
        img = np.broadcast_to(colour, (H, W, 3)) if flat else pattern(i)
        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24").reformat(format=pix, **kw)
        f.pts, f.time_base = pts, tb
        pts += VFR_STEPS_MS[i % 3] if vfr else 1000 // rate
        out.mux(vs.encode(f))
    out.mux(vs.encode(None))
    if aus is not None:
        sr = 48000
        t = np.arange(sr * pts // 1000) / sr
        a = 0.3 * np.sin(2 * np.pi * 440 * t)
        fmt = "fltp" if aus.codec_context.name == "aac" else "s16"
        for k in range(0, len(a), 1024):
            chunk = a[k : k + 1024]
            arr = chunk[None].astype(np.float32) if fmt == "fltp" else (chunk * 32767).astype(np.int16)[None]
            af = av.AudioFrame.from_ndarray(arr, format=fmt, layout="mono")
            af.sample_rate, af.pts = sr, k
            out.mux(aus.encode(af))
        out.mux(aus.encode(None))
    if sub_in is not None:
        for p in sub_in.demux():
            if p.size:
                p.stream = ss
                out.mux(p)
        sub_in.close()
    out.close()
    return Clip(path, n, pix, audio)


def decode_frames(path: Path, fmt: str = "rgb24") -> tuple[list[np.ndarray], list[float], list[Any]]:
    """Every video frame of ``path`` as arrays in ``fmt``, their times in seconds, and the frames' metadata."""
    arrays, times, meta = [], [], []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            arrays.append(f.to_ndarray(format=fmt))
            times.append(float(f.pts * f.time_base))
            meta.append({"format": f.format.name, "rotation": f.rotation, "color_range": f.color_range,
                         "colorspace": f.colorspace, "color_primaries": f.color_primaries,
                         "color_trc": f.color_trc})
    return arrays, times, meta


def packets(path: Path, kind: str) -> list[tuple[bytes, float | None]]:
    """The payload and time (seconds) of every ``kind`` ("audio"/"subtitles") packet of ``path``."""
    with av.open(str(path)) as c:
        streams = getattr(c.streams, "audio" if kind == "audio" else "subtitles")
        if not streams:
            return []
        return [(bytes(p), float(p.pts * p.time_base) if p.pts is not None else None)
                for p in c.demux(streams[0]) if p.size]

