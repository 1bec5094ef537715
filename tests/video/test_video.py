"""sr-upscale on video: frame-exact FFV1 round trip against the image path, timestamps, audio and
subtitle stream copy, colour/rotation metadata, 10-bit, --start/--duration, bad inputs, interruption.

Clips are made in the session by PyAV (tests/video/video_helpers.py); the model is a tiny ONNX
graph run by ONNX Runtime through the same runtime predictor as ``sr-upscale --onnx``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from video_helpers import VFR_STEPS_MS, Clip, H, W, decode_frames, make_clip, packets

from srdeploy.cli.upscale import main
from srdeploy.errors import SrdeployError
from srdeploy.video import VideoOptions, upscale_frames, upscale_video

# libx264 at its default CRF 23 (4:2:0) on the 48x64 synthetic clip upscaled x4 by the random-weight
# tiny graph (noisy output, hard to encode), against the same frames upscaled losslessly: measured
# 31.8 dB (worst frame); decoding with the wrong (BT.709) matrix gives 27.1 dB, one frame off 16.9 dB.
MIN_LOSSY_PSNR_DB = 29.5
# FFV1 yuv444p (no subsampling, no loss): only the RGB -> YUV -> RGB round trip with the input's
# BT.709 matrix remains: measured 52.1 dB; with the BT.601 matrix on the way back 28.4 dB.
MIN_YUV444_PSNR_DB = 45.0


def _files(d: Path) -> list[Path]:
    """Every file under ``d``, hidden ones (temporary outputs) included."""
    return sorted(p for p in d.rglob("*") if p.is_file()) if d.exists() else []


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _ort_predict(onnx_path: Path):
    from srdeploy.runtime.predict import open_predictor

    predictor, _ = open_predictor(onnx_path)
    return predictor


@pytest.fixture(scope="module")
def ffv1_x2(tmp_path_factory: pytest.TempPathFactory, onnx_x2: Path, cfr_mp4: Clip) -> Path:
    """The 8-bit clip upscaled x2 by the CLI into FFV1 (lossless, RGB), shared by the tests below."""
    out = tmp_path_factory.mktemp("ffv1") / "x2.mkv"
    assert main(["--onnx", str(onnx_x2), str(cfr_mp4.path), "-o", str(out), "--codec", "ffv1",
                 "--no-progress"]) == 0
    return out


# ---------------------------------------------------------------------------------------------
# (1) FFV1: every frame equals the image path on the decoded frame
# ---------------------------------------------------------------------------------------------


def test_ffv1_frames_equal_image_path(ffv1_x2: Path, onnx_x2: Path, cfr_mp4: Clip, tmp_path: Path) -> None:
    lr, _, _ = decode_frames(cfr_mp4.path)
    pngs = []
    for i, a in enumerate(lr):
        pngs.append(tmp_path / "lr" / f"f{i:03d}.png")
        pngs[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(a).save(pngs[-1])
    assert main(["--onnx", str(onnx_x2), *map(str, pngs), "-o", str(tmp_path / "sr")]) == 0
    sr, _, meta = decode_frames(ffv1_x2)
    assert meta[0]["format"] == "bgr0"
    assert len(sr) == len(lr) == cfr_mp4.frames
    for i, frame in enumerate(sr):
        image = np.asarray(Image.open(tmp_path / "sr" / f"f{i:03d}.png").convert("RGB"))
        assert frame.shape == (2 * H, 2 * W, 3)
        np.testing.assert_array_equal(frame, image, err_msg=f"frame {i}")
    assert not np.array_equal(sr[0], sr[1])  # the clip moves: frames are not all one picture


def test_ffv1_keeps_timestamps_and_audio_bit_exact(ffv1_x2: Path, cfr_mp4: Clip) -> None:
    _, t_in, _ = decode_frames(cfr_mp4.path)
    _, t_out, _ = decode_frames(ffv1_x2)
    a_in, a_out = packets(cfr_mp4.path, "audio"), packets(ffv1_x2, "audio")
    assert len(a_in) > 10
    assert [p for p, _ in a_out] == [p for p, _ in a_in]
    # The AAC track starts with a priming packet at -21 ms; Matroska stores no negative times, so
    # its muxer shifts every stream by the same amount (as ffmpeg -c copy does). Relative to the
    # first video frame, video and audio times agree to the coarser time base (mkv: 1 ms).
    assert a_in[0][1] < 0
    shift = t_out[0] - t_in[0]
    assert 0 <= shift <= 0.03
    np.testing.assert_allclose(np.array(t_out) - shift, t_in, atol=1e-3)
    np.testing.assert_allclose(np.array([t for _, t in a_out]) - shift, [t for _, t in a_in], atol=1e-3)


def test_batched_equals_unbatched(ffv1_x2: Path, onnx_x2: Path, cfr_mp4: Clip, tmp_path: Path) -> None:
    out = tmp_path / "b3.mkv"
    assert main(["--onnx", str(onnx_x2), str(cfr_mp4.path), "-o", str(out), "--codec", "ffv1", "--batch", "3",
                 "--no-progress"]) == 0
    a, _, _ = decode_frames(out)
    b, _, _ = decode_frames(ffv1_x2)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert [p for p, _ in packets(out, "audio")] == [p for p, _ in packets(cfr_mp4.path, "audio")]


# ---------------------------------------------------------------------------------------------
# (2) x4, lossy defaults: mp4 -> mp4 with libx264, VFR mkv with subtitles
# ---------------------------------------------------------------------------------------------


def test_mp4_x4_defaults(onnx_x4: Path, cfr_mp4: Clip, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "clip_x4.mp4"
    assert main(["--onnx", str(onnx_x4), str(cfr_mp4.path), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "24 frames 192x256 libx264 yuv420p, copied audio:aac" in captured.out
    assert "frame" in captured.err  # the tqdm bar: frames, rate, time left
    assert _files(tmp_path) == [out]
    sr, t_out, meta = decode_frames(out)
    lr, t_in, _ = decode_frames(cfr_mp4.path)
    assert len(sr) == cfr_mp4.frames and sr[0].shape == (4 * H, 4 * W, 3)
    assert meta[0]["format"] == "yuv420p"
    np.testing.assert_allclose(t_out, t_in, atol=1e-6)
    assert [p for p, _ in packets(out, "audio")] == [p for p, _ in packets(cfr_mp4.path, "audio")]
    with _ort_predict(onnx_x4) as predict:
        ref = list(upscale_frames(predict, lr, 4))
    psnrs = [_psnr(a, b) for a, b in zip(sr, ref, strict=True)]
    assert min(psnrs) > MIN_LOSSY_PSNR_DB, psnrs


def test_vfr_and_subtitles_kept(onnx_x2: Path, vfr_mkv: Clip, tmp_path: Path) -> None:
    out = tmp_path / "vfr_x2.mkv"
    assert main(["--onnx", str(onnx_x2), str(vfr_mkv.path), "-o", str(out), "--no-progress"]) == 0
    _, t_in, _ = decode_frames(vfr_mkv.path)
    _, t_out, _ = decode_frames(out)
    steps = np.round(np.diff(t_out) * 1000).astype(int)
    assert sorted(set(steps.tolist())) == sorted(VFR_STEPS_MS)  # still variable
    assert t_out == t_in
    subs = packets(out, "subtitles")
    assert subs == packets(vfr_mkv.path, "subtitles") and [p for p, _ in subs] == [b"hello", b"world"]
    assert [p for p, _ in packets(out, "audio")] == [p for p, _ in packets(vfr_mkv.path, "audio")]


def test_colour_and_rotation_kept(onnx_x2: Path, video_dir: Path, tmp_path: Path) -> None:
    clip = make_clip(video_dir / "bt709_rot90.mp4", n=6, bt709=True, rotation=90, audio=False)
    out = tmp_path / "x2.mkv"
    assert main(["--onnx", str(onnx_x2), str(clip.path), "-o", str(out), "--codec", "ffv1", "--pix-fmt", "yuv444p",
                 "--no-progress"]) == 0
    lr, _, m_in = decode_frames(clip.path)
    sr, _, m_out = decode_frames(out)
    assert m_in[0]["rotation"] == 90 and m_out[0]["rotation"] == 90
    for key in ("color_range", "colorspace", "color_primaries", "color_trc"):
        assert m_out[0][key] == m_in[0][key] == 1, key  # 1 = limited range / BT.709
    # the BT.709 matrix was used both ways (decode_frames converts with the output's own tags)
    with _ort_predict(onnx_x2) as predict:
        ref = list(upscale_frames(predict, lr, 2))
    assert min(_psnr(a, b) for a, b in zip(sr, ref, strict=True)) > MIN_YUV444_PSNR_DB


def test_ten_bit(onnx_x2: Path, ten_bit_mkv: Clip, tmp_path: Path) -> None:
    """10-bit in: 10-bit x264 out by default; with 16-bit RGB FFV1, frames equal the frames API exactly."""
    out = tmp_path / "x2_10.mkv"
    assert main(["--onnx", str(onnx_x2), str(ten_bit_mkv.path), "-o", str(out), "--no-progress"]) == 0
    _, _, meta = decode_frames(out)
    assert meta[0]["format"] == "yuv420p10le"
    exact = tmp_path / "x2_16.mkv"
    assert main(["--onnx", str(onnx_x2), str(ten_bit_mkv.path), "-o", str(exact), "--codec", "ffv1",
                 "--pix-fmt", "gbrp16le", "--no-progress"]) == 0
    lr, _, _ = decode_frames(ten_bit_mkv.path, "rgb48le")
    sr, _, _ = decode_frames(exact, "rgb48le")
    assert lr[0].dtype == np.uint16 and len(sr) == ten_bit_mkv.frames
    with _ort_predict(onnx_x2) as predict:
        ref = list(upscale_frames(predict, lr, 2))
    for a, b in zip(sr, ref, strict=True):
        np.testing.assert_array_equal(a, b)
    # 10-bit precision really travelled: more than 256 levels in one channel
    assert len(np.unique(lr[0][..., 0])) > 256 or len(np.unique(sr[0][..., 0] >> 6)) > 256


def test_start_duration(onnx_x2: Path, cfr_mp4: Clip, tmp_path: Path) -> None:
    out = tmp_path / "part.mkv"
    assert main(["--onnx", str(onnx_x2), str(cfr_mp4.path), "-o", str(out), "--start", "0.25", "--duration",
                 "0.5", "--codec", "ffv1", "--no-progress"]) == 0
    sr, t_out, _ = decode_frames(out)
    _, t_in, _ = decode_frames(cfr_mp4.path)
    kept = [t for t in t_in if 0.25 <= t < 0.75]
    assert len(sr) == len(kept) == 12
    np.testing.assert_allclose(t_out, np.array(kept) - 0.25, atol=1e-3)  # shifted by --start
    audio = packets(out, "audio")
    assert audio and all(-1e-3 <= t < 0.5 + 0.03 for _, t in audio)


# ---------------------------------------------------------------------------------------------
# (3) library API
# ---------------------------------------------------------------------------------------------


def test_library_file_to_file_and_frames(onnx_x2: Path, cfr_mp4: Clip, ffv1_x2: Path, tmp_path: Path) -> None:
    with _ort_predict(onnx_x2) as predict:
        rep = upscale_video(predict, 2, cfr_mp4.path, tmp_path / "lib.mkv", VideoOptions(codec="ffv1"),
                            progress=False)
        lr, _, _ = decode_frames(cfr_mp4.path)
        frames = list(upscale_frames(predict, iter(lr), 2, batch=4))
    assert (rep.frames, rep.skipped, rep.out_size, rep.codec, rep.pix_fmt) == (24, 0, (96, 128), "ffv1", "bgr0")
    assert rep.copied == ["audio:aac"]
    ref, _, _ = decode_frames(ffv1_x2)
    for a, b, c in zip(decode_frames(tmp_path / "lib.mkv")[0], ref, frames, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(c, b)


# ---------------------------------------------------------------------------------------------
# (4) bad inputs, errors mid-stream and interruption leave nothing behind
# ---------------------------------------------------------------------------------------------


def _corrupt_copy(src: Path, dest: Path, bad: int) -> None:
    """Remux ``src`` with the payload of video packet ``bad`` replaced by garbage."""
    with av.open(str(src)) as inp, av.open(str(dest), "w") as out:
        s = out.add_stream_from_template(inp.streams.video[0])
        k = 0
        for p in inp.demux(video=0):
            if p.dts is None:
                continue
            if k == bad:
                q = av.Packet(b"\x00garbage" * 20)
                q.pts, q.dts, q.time_base, q.is_keyframe = p.pts, p.dts, p.time_base, True
                p = q
            p.stream = s
            out.mux(p)
            k += 1


@pytest.fixture(scope="module")
def corrupt_mkv(video_dir: Path) -> Path:
    clean = make_clip(video_dir / "mjpeg.mkv", n=10, codec="mjpeg", audio=False)
    bad = video_dir / "corrupt.mkv"
    _corrupt_copy(clean.path, bad, 4)
    return bad


def test_corrupt_packet_fails_or_is_skipped(onnx_x2: Path, corrupt_mkv: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o" / "x2.mkv"
    assert main(["--onnx", str(onnx_x2), str(corrupt_mkv), "-o", str(out), "--no-progress"]) == 2
    line = _error_line(capsys)
    assert "does not decode" in line and "--skip-errors" in line and "0.16" in line
    assert _files(tmp_path / "o") == []
    assert main(["--onnx", str(onnx_x2), str(corrupt_mkv), "-o", str(out), "--no-progress", "--skip-errors"]) == 0
    cap = capsys.readouterr()
    assert "skipped 1 corrupt frame" in cap.out and "1 frame(s) did not decode" in cap.err
    assert len(decode_frames(out)[0]) == 9


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("audio_only", "has no video stream (it holds audio)"),
        ("not_video", "is not a video FFmpeg can read"),
        ("codec", "unknown encoder 'nosuchcodec'"),
        ("crf_bitrate", "--crf and --bitrate exclude each other"),
        ("pix_fmt", "libx264 cannot encode --pix-fmt bgr0"),
        ("container", "use .mp4, .mkv, .mov or .webm"),
        ("mp4_srt", "use an .mkv output, or drop it with --no-subtitles"),
        ("mixed", "give video files and images in separate"),
        ("past_end", "no frame in the chosen range (--start 30"),
    ],
)
def test_bad_inputs(case: str, expect: str, onnx_x2: Path, cfr_mp4: Clip, vfr_mkv: Clip, tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    src, out, extra = cfr_mp4.path, tmp_path / "out" / "x2.mp4", []
    if case == "audio_only":
        src = tmp_path / "audio.mka"
        with av.open(str(cfr_mp4.path)) as inp, av.open(str(src), "w") as o:
            s = o.add_stream_from_template(inp.streams.audio[0])
            for p in inp.demux(audio=0):
                if p.dts is not None:
                    p.stream = s
                    o.mux(p)
        src = src.rename(tmp_path / "audio.mkv")
    elif case == "not_video":
        src = tmp_path / "text.mp4"
        src.write_text("this is not a video\n" * 50)
    elif case == "codec":
        extra = ["--codec", "nosuchcodec"]
    elif case == "crf_bitrate":
        extra = ["--crf", "20", "--bitrate", "4M"]
    elif case == "pix_fmt":
        extra = ["--pix-fmt", "bgr0"]
    elif case == "container":
        out = tmp_path / "out" / "x2.zzz"
        extra = ["--codec", "libx264"]
    elif case == "mp4_srt":
        src = vfr_mkv.path
    elif case == "past_end":
        extra = ["--start", "30", "--overwrite"]  # past the --overwrite check: the earlier output survives a failure
        out.parent.mkdir()
        out.write_bytes(b"an earlier output")  # left as it was
    elif case == "mixed":
        png = tmp_path / "a.png"
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
        extra = [str(png)]
    before = _files(tmp_path)
    assert main(["--onnx", str(onnx_x2), str(src), *extra, "-o", str(out), "--no-progress"]) == 2
    assert expect in _error_line(capsys)
    assert _files(tmp_path) == before  # no output, no temporary file
    if case == "past_end":
        assert out.read_bytes() == b"an earlier output"


def test_never_overwrites_input(onnx_x2: Path, video_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = make_clip(video_dir / "self.mkv", n=3, audio=False)
    data = clip.path.read_bytes()
    assert main(["--onnx", str(onnx_x2), str(clip.path), "-o", str(clip.path), "--no-progress"]) == 2
    assert "is the input file" in _error_line(capsys)
    assert clip.path.read_bytes() == data


def test_error_mid_stream_leaves_nothing(cfr_mp4: Clip, tmp_path: Path) -> None:
    calls = []

    def predict(x: np.ndarray) -> np.ndarray:
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # what Ctrl-C raises; arrives here in the inference thread
        return x.repeat(2, -1).repeat(2, -2)

    with pytest.raises(KeyboardInterrupt):
        upscale_video(predict, 2, cfr_mp4.path, tmp_path / "x2.mp4", progress=False)
    with pytest.raises(SrdeployError, match="NaN"):
        upscale_video(lambda x: x.repeat(2, -1).repeat(2, -2) * np.nan, 2, cfr_mp4.path, tmp_path / "x2.mp4",
                      progress=False)
    assert _files(tmp_path) == []


def test_ctrl_c_cli_leaves_nothing(onnx_x4: Path, video_dir: Path, tmp_path: Path) -> None:
    """A real SIGINT to a running ``sr-upscale`` (subprocess, torch blocked): exit 130, nothing written."""
    import signal
    import time

    clip = make_clip(video_dir / "long.mp4", n=1000, audio=True)
    out = tmp_path / "o" / "long_x4.mp4"
    code = ("import sys; sys.modules['torch'] = None\n"
            "from srdeploy.cli.upscale import main\n"
            "rc = main(sys.argv[1:])\n"
            "bad = [m for m in sys.modules if m.startswith(('srdeploy.models', 'srdeploy.export'))]\n"
            "assert not bad, bad\n"
            "sys.exit(rc)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, "--onnx", str(onnx_x4), str(clip.path), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list((tmp_path / "o").glob(".*.part.mp4")):
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    time.sleep(0.3)  # well inside the clip (1000 frames at x4 take about 6 s here)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; no partial output was left behind" in err
    assert _files(tmp_path / "o") == []


def test_quantise_equals_image_path_rounding() -> None:
    """The video path's in-place quantiser gives to_uint's numbers (out of range, .5 ties), or its error."""
    from srdeploy.imageio import to_uint
    from srdeploy.video import _quantise

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 37, 53)) * 0.7 + 0.5).astype(np.float32)
    x.flat[::7] = (rng.integers(0, 255, x.size)[::7] + 0.5) / 255  # ties at 8 bits
    for peak, dtype, bits in ((255.0, np.uint8, 8), (65535.0, np.uint16, 16)):
        q = _quantise(x, peak, np.dtype(dtype))
        assert q.dtype == dtype and q.flags.c_contiguous
        np.testing.assert_array_equal(q, to_uint(x, bits).transpose(1, 2, 0))
    x[1, 2, 3] = np.inf
    with pytest.raises(SrdeployError, match="NaN or Inf"):
        _quantise(x, 255.0, np.dtype(np.uint8))


def test_interrupt_stops_promptly_and_joins_stages(cfr_mp4: Clip, tmp_path: Path) -> None:
    """Ctrl-C in the caller's thread while a slow model has frames queued: the queued frames are
    dropped (not run), the model call in flight finishes before return, no stage thread survives."""
    import _thread
    import threading
    import time

    calls: list[float] = []
    in_flight = threading.Event()

    def slow(x: np.ndarray) -> np.ndarray:
        in_flight.set()
        time.sleep(0.2)
        calls.append(time.perf_counter())
        in_flight.clear()
        return x.repeat(2, -1).repeat(2, -2)

    timer = threading.Timer(0.7, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        upscale_video(slow, 2, cfr_mp4.path, tmp_path / "x2.mp4", VideoOptions(queue_frames=8), progress=False)
    t_raised = time.perf_counter()
    timer.cancel()
    assert 2 <= len(calls) <= 6, len(calls)  # ~0.7 s at 0.2 s a call; 24 frames would be 4.8 s
    assert not in_flight.is_set() and calls[-1] <= t_raised  # the call in flight ended before return
    assert not [t for t in threading.enumerate() if t.name.startswith("sr-video")]
    assert _files(tmp_path) == []


def test_model_backend_and_output_directory(video_dir: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """``--model`` (PyTorch) on two videos into a directory: one output per input, named like it."""
    pytest.importorskip("torch", reason="--model runs PyTorch")
    a = make_clip(video_dir / "four_a.mp4", n=4, audio=False)
    b = make_clip(video_dir / "four_b.mkv", n=4, audio=True)
    out = tmp_path / "out"
    assert main(["--model", "span", "--scale", "2", str(a.path), str(b.path), "-o", str(out), "--suffix", "_x2",
                 "--no-progress"]) == 0
    assert [p.name for p in _files(out)] == ["four_a_x2.mp4", "four_b_x2.mkv"]
    for p in _files(out):
        frames, _, _ = decode_frames(p)
        assert len(frames) == 4 and frames[0].shape == (2 * H, 2 * W, 3)
    assert "copied audio:flac" in capsys.readouterr().out


def test_encoder_options_reach_the_encoder(onnx_x2: Path, cfr_mp4: Clip, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """--encoder-opt and --crf are passed to x264: the writing library records them in the stream."""
    out = tmp_path / "fast.mkv"
    assert main(["--onnx", str(onnx_x2), str(cfr_mp4.path), "-o", str(out), "--encoder-opt", "preset=ultrafast",
                 "--crf", "30", "--no-progress"]) == 0
    # x264 writes its settings into an SEI of the first frame: ultrafast means no CABAC, crf=30.0
    with av.open(str(out)) as c:
        first = next(p for p in c.demux(video=0) if p.size)
        sei = bytes(first)
    assert b"cabac=0" in sei and b"crf=30.0" in sei
    assert main(["--onnx", str(onnx_x2), str(cfr_mp4.path), "-o", str(tmp_path / "x.mkv"), "--encoder-opt",
                 "preset"]) == 2
    assert "is not KEY=VALUE" in _error_line(capsys)


def test_tiled_equals_untiled(ffv1_x2: Path, onnx_x2: Path, cfr_mp4: Clip, tmp_path: Path) -> None:
    """--tile goes through the shared tiling: the tiny graph's receptive radius (2 LR pixels) is within
    half the overlap, so crop-blended tiles give exactly the untiled frames."""
    out = tmp_path / "tiled.mkv"
    assert main(["--onnx", str(onnx_x2), str(cfr_mp4.path), "-o", str(out), "--codec", "ffv1", "--tile", "24",
                 "--tile-overlap", "8", "--no-progress"]) == 0
    for a, b in zip(decode_frames(out)[0], decode_frames(ffv1_x2)[0], strict=True):
        np.testing.assert_array_equal(a, b)


def test_corrupt_first_packet_is_skipped(onnx_x2: Path, video_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    clean = make_clip(video_dir / "mjpeg_first.mkv", n=5, codec="mjpeg", audio=False)
    bad = tmp_path / "bad_first.mkv"
    _corrupt_copy(clean.path, bad, 0)
    out = tmp_path / "o" / "x2.mkv"
    assert main(["--onnx", str(onnx_x2), str(bad), "-o", str(out), "--no-progress"]) == 2
    assert "at 0.000s does not decode" in _error_line(capsys)
    assert main(["--onnx", str(onnx_x2), str(bad), "-o", str(out), "--no-progress", "--skip-errors"]) == 0
    assert len(decode_frames(out)[0]) == 4


def test_a_bad_video_does_not_stop_the_others(onnx_x2: Path, cfr_mp4: Clip, corrupt_mkv: Path, video_dir: Path,
                                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Several videos: the corrupt one is reported in one line and leaves no output; the others are written."""
    other = make_clip(video_dir / "four_c.mp4", n=4, audio=False)
    out = tmp_path / "out"
    rc = main(["--onnx", str(onnx_x2), str(cfr_mp4.path), str(corrupt_mkv), str(other.path), "-o", str(out),
               "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 1, cap.err
    assert re.search(rf"failed: .*{corrupt_mkv.name}: .*does not decode", cap.err), cap.err
    assert "videos: done 2, failed 1" in cap.err
    assert sorted(p.name for p in _files(out)) == sorted([cfr_mp4.path.name, "four_c.mp4"])
    assert len(decode_frames(out / "four_c.mp4")[0]) == 4
