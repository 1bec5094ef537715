"""Video test fixtures: the synthetic clips and the ONNX artifacts, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("av", reason="PyAV (srdeploy[video]) is not installed: pip install 'srdeploy[video]'")
pytest.importorskip("onnxruntime", reason="the video tests run an ONNX artifact on ONNX Runtime")

from video_helpers import Clip, make_clip, tiny_upscaler  # after the skips: it imports av


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("video")


@pytest.fixture(scope="session")
def onnx_x2(video_dir: Path) -> Path:
    return tiny_upscaler(video_dir / "videotest_x2.onnx", 2)


@pytest.fixture(scope="session")
def onnx_x4(video_dir: Path) -> Path:
    return tiny_upscaler(video_dir / "videotest_x4.onnx", 4, seed=1)


@pytest.fixture(scope="session")
def cfr_mp4(video_dir: Path) -> Clip:
    return make_clip(video_dir / "cfr.mp4")


@pytest.fixture(scope="session")
def vfr_mkv(video_dir: Path) -> Clip:
    srt = video_dir / "subs.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:00,200\nhello\n\n2\n00:00:00,300 --> 00:00:00,500\nworld\n\n")
    return make_clip(video_dir / "vfr.mkv", vfr=True, subtitles=srt)


@pytest.fixture(scope="session")
def ten_bit_mkv(video_dir: Path) -> Clip:
    return make_clip(video_dir / "ten_bit.mkv", bits=10, audio=False)


@pytest.fixture(autouse=True)
def _python_sigint_handler():
    """The Ctrl-C tests need Python's own SIGINT handler in this process (``_thread.interrupt_main``
    does nothing otherwise) and not an ignored SIGINT for their children to inherit. In the full
    suite something earlier left SIGINT ignored; install the default handler for each video test."""
    import signal

    saved = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, saved)
