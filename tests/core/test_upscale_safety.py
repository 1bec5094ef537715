"""Issue 14 part A: sr-upscale never destroys an input, checks its options, finishes batches.

Each reproduction of the issue for these items is a test here. They run the tiny hand-built ONNX
upscaler of tests/runtime/rt_helpers.py (two 3x3 convolutions, ms per image on ORT CPU), through
the real ``sr-upscale`` entry point as a subprocess where the behaviour is the command line's
(exit status, stderr lines, signals), in-process otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from rt_helpers import save_tiny, tiny_sr_model

from srdeploy.atomic import atomic_write_bytes, output_dir
from srdeploy.cli import upscale as up
from srdeploy.cli.upscale import main, resolve_tiling, upscale_batch
from srdeploy.errors import BackendError, SrdeployError
from srdeploy.inputs import expand_inputs
from srdeploy.options import check_range
from srdeploy.pipeline import upscale_file
from srdeploy.records import ArtifactRecord
from srdeploy.tiling import Tiling

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _cli() -> list[str]:
    exe = shutil.which("sr-upscale", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "srdeploy.cli.upscale"]


def _run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_cli(), *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def _img(path: Path, h: int = 24, w: int = 20, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _lines(text: str) -> list[str]:
    return [ln for ln in text.replace("\r", "\n").splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """x2, random weights (the record has no weights hash), min size 1."""
    return save_tiny(tmp_path_factory.mktemp("tiny"), 2, channels=8)


@pytest.fixture(scope="module")
def tiny_trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same graph whose record carries a weights sha256 (as sr-export --weights writes) and
    a minimum input size of 24."""
    import onnx

    rec = ArtifactRecord("tiny", 2, weights_sha256="ab" * 32, descriptor={"min_size": 24, "default_tiling": None})
    model = tiny_sr_model(2, 8, metadata=rec.to_metadata())
    path = tmp_path_factory.mktemp("trained") / "trained_x2.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    d = tmp_path / "photos"
    for i, n in enumerate("abc"):
        _img(d / f"{n}.png", seed=i)
    return d


# ---------------------------------------------------------------------------------------------
# (1) inputs are sacred; existing outputs need --overwrite; the umask is honoured
# ---------------------------------------------------------------------------------------------


def test_output_into_the_input_folder_is_refused(tiny: Path, photos: Path) -> None:
    """The issue's reproduction: ``sr-upscale --onnx X photos/baboon.png -o photos`` replaced the original."""
    before = (photos / "a.png").read_bytes()
    r = _run("--onnx", str(tiny), str(photos / "a.png"), "-o", str(photos))
    assert r.returncode == 2, r.stderr
    assert _lines(r.stderr) == [f"error: the output {photos / 'a.png'} would overwrite an input "
                                f"({photos / 'a.png'}); choose another -o or add --suffix"]
    assert (photos / "a.png").read_bytes() == before
    assert sorted(p.name for p in photos.iterdir()) == ["a.png", "b.png", "c.png"]  # nothing written


def test_symlink_and_hard_link_to_an_input_are_refused(tiny: Path, photos: Path, tmp_path: Path, capsys) -> None:
    before = (photos / "a.png").read_bytes()
    (tmp_path / "alias").symlink_to(photos)  # -o is the input folder under another name
    assert main(["--onnx", str(tiny), str(photos / "a.png"), "-o", str(tmp_path / "alias")]) == 2
    assert "would overwrite an input" in capsys.readouterr().err
    linked = tmp_path / "linked"
    linked.mkdir()
    os.link(photos / "a.png", linked / "a.png")  # the output name is another name of the input's inode
    assert main(["--onnx", str(tiny), str(photos / "a.png"), "-o", str(linked), "--overwrite"]) == 2
    assert "would overwrite an input" in capsys.readouterr().err
    assert (photos / "a.png").read_bytes() == before
    # control: with a suffix the same command writes beside the input
    assert main(["--onnx", str(tiny), str(photos / "a.png"), "-o", str(photos), "--suffix", "_x2", "-q"]) == 0
    with Image.open(photos / "a_x2.png") as im:
        assert im.size == (40, 48)


def test_existing_outputs_need_overwrite(tiny: Path, photos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["--onnx", str(tiny), str(photos), "-o", str(out), "-q"]) == 0
    capsys.readouterr()
    (out / "b.png").write_bytes(b"mine")  # a file the user cares about
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["--onnx", str(tiny), str(photos), "-o", str(out), "-q"]) == 2
    err = _lines(capsys.readouterr().err)
    assert err[-1] == (f"error: 3 output file(s) exist already, first {out / 'a.png'} (and 2 more); pass "
                       "--overwrite to replace them, or choose another -o or --suffix")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamp  # refused before any work
    assert (out / "b.png").read_bytes() == b"mine"
    assert main(["--onnx", str(tiny), str(photos), "-o", str(out), "-q", "--overwrite"]) == 0
    with Image.open(out / "b.png") as im:
        assert im.size == (40, 48)


def test_ray_refuses_foreign_existing_outputs_before_starting(tiny: Path, photos: Path, tmp_path: Path,
                                                              capsys) -> None:
    """--ray resumes in a folder holding its records; a file it did not write is refused (no Ray start)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.png").write_bytes(b"mine")
    assert main(["--onnx", str(tiny), str(photos), "-o", str(out), "--ray"]) == 2
    assert f"1 output file(s) exist already, first {out / 'b.png'};" in capsys.readouterr().err
    assert (out / "b.png").read_bytes() == b"mine"


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_outputs_get_the_umask(mask: int, tiny: Path, photos: Path, tmp_path: Path) -> None:
    """mkstemp creates 0600; the outputs must get 0666 & ~umask like any other file the user writes."""
    old = os.umask(mask)
    try:
        atomic_write_bytes(tmp_path / "plain.bin", b"x")
        assert main(["--onnx", str(tiny), str(photos / "a.png"), "-o", str(tmp_path / "out"), "-q"]) == 0
    finally:
        os.umask(old)
    want = 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode) == want
    assert stat.S_IMODE((tmp_path / "out" / "a.png").stat().st_mode) == want


# ---------------------------------------------------------------------------------------------
# (2, run-time side) random weights are visible; --weights with an artifact is refused
# ---------------------------------------------------------------------------------------------


def test_random_weights_warning_and_weights_with_artifact(tiny: Path, tiny_trained: Path, photos: Path,
                                                          tmp_path: Path) -> None:
    r = _run("--onnx", str(tiny), str(photos / "a.png"), "-o", str(tmp_path / "o1"))
    assert r.returncode == 0, r.stderr
    warn = [ln for ln in _lines(r.stderr) if ln.startswith("warning:")]
    assert len(warn) == 1 and "has random weights" in warn[0] and str(tiny) in warn[0], r.stderr
    r = _run("--onnx", str(tiny_trained), str(photos / "a.png"), "-o", str(tmp_path / "o2"))
    assert r.returncode == 0, r.stderr
    assert "random weights" not in r.stderr  # control: a record with a weights hash is quiet
    r = _run("--onnx", str(tiny_trained), str(photos / "a.png"), "-o", str(tmp_path / "o3"), "--weights", "w.pth")
    assert r.returncode == 2
    assert _lines(r.stderr) == ["error: --weights is not used with --onnx: an exported artifact carries its weights; "
                                "re-export it with sr-export --weights FILE, or run --model NAME --weights FILE"]
    assert not (tmp_path / "o3").exists()


def test_model_without_weights_warns(photos: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("torch")
    small = _img(tmp_path / "s.png", 8, 8)
    assert main(["--model", "span", "--scale", "2", str(small), "-o", str(tmp_path / "out"), "-q"]) == 0
    warn = [ln for ln in _lines(capsys.readouterr().err) if ln.startswith("warning:")]
    assert warn == ["warning: --model span x2 without --weights has random weights: its outputs and PSNR figures "
                    "are meaningless; pass --weights FILE (or 'official') for a trained model"]


# ---------------------------------------------------------------------------------------------
# (4) options are checked, nothing is clamped
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "line"), [
    (["--tile", "32", "--tile-overlap", "40"],
     "error: --tile-overlap 40 must be below --tile 32; give --tile-overlap 8 or a larger --tile "
     "(or --tile 0 for whole images)"),
    (["--tile", "16"], "error: --tile-overlap 16 (the default) must be below --tile 16; give --tile-overlap 4 or a "
                       "larger --tile (or --tile 0 for whole images)"),
    (["--tile", "16", "--tile-overlap", "4", "TRAINED"],
     "error: --tile 16 is below tiny's minimum input size 24; give --tile 24 or more (or --tile 0 for whole images)"),
])  # fmt: skip
def test_bad_tiling_is_refused_not_clamped(flags: list[str], line: str, tiny: Path, tiny_trained: Path,
                                           tmp_path: Path) -> None:
    """The issue's reproduction: --tile 32 --tile-overlap 40 on 64x64 ran 1089 tiles (overlap clamped to 31)."""
    art = tiny_trained if "TRAINED" in flags else tiny
    src = _img(tmp_path / "in.png", 64, 64)
    r = _run("--onnx", str(art), str(src), "-o", str(tmp_path / "out"), *[f for f in flags if f != "TRAINED"])
    assert r.returncode == 2
    assert [ln for ln in _lines(r.stderr) if not ln.startswith("warning:")] == [line]
    assert not (tmp_path / "out").exists()


def test_resolve_tiling_returns_what_was_asked() -> None:
    def ns(tile: object, overlap: int | None, blend: str | None = None) -> argparse.Namespace:
        return argparse.Namespace(tile=tile, tile_overlap=overlap, tile_blend=blend)

    assert resolve_tiling(ns(32, 31), None) == Tiling(32, 31, "crop")  # the largest overlap allowed, kept
    assert resolve_tiling(ns("auto", 8), Tiling(64, 16, "linear")) == Tiling(64, 8, "linear")
    for args in (ns(32, 32), ns("auto", 64)):
        with pytest.raises(SrdeployError, match="must be below --tile"):
            resolve_tiling(args, Tiling(64, 16))
    # --tile auto: the overlap given is kept on the tile the plan chooses (it used to be halved to tile // 2)
    from srdeploy.pipeline import TilePlan
    from srdeploy.tiling import SizeRule

    assert TilePlan("auto", None, 20, "crop", cap=32).resolve(100, 90, 2, SizeRule()) == Tiling(32, 20, "crop")
    with pytest.raises(SrdeployError, match=r"--tile auto chose 32x32 tiles, which cannot hold --tile-overlap 40"):
        TilePlan("auto", None, 40, "crop", cap=32).resolve(100, 90, 2, SizeRule())


@pytest.mark.parametrize(("flag", "value", "need"), [
    ("--tile", "-1", "must be 'auto', 0 (whole image) or a positive size, got -1"),
    ("--tile-overlap", "-2", "must be at least 0, got -2"),
    ("--scale", "0", "must be at least 1, got 0"),
    ("--max-pixels", "0", "must be at least 1, got 0"),
    ("--tile-memory", "0", "must be at least 1 MiB, got 0"),
    ("--crf", "99", "must be between 0 and 63, got 99"),
    ("--batch", "0", "must be between 1 and 256, got 0"),
    ("--start", "-1", "must be at least 0, got -1"),
    ("--duration", "0", "must be above 0, got 0"),
    ("--ray-actors", "-1", "must be at least 0, got -1"),
    ("--ray-cpus-per-actor", "0", "must be above 0, got 0"),
    ("--server-timeout", "nan", "must be a finite number, got nan"),
    ("--tile", "big", "takes 'auto' or a number of LR pixels, not 'big'"),
])  # fmt: skip
def test_numeric_options_are_range_checked(flag: str, value: str, need: str, tiny: Path, tmp_path: Path,
                                           capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--onnx", str(tiny), str(tmp_path / "x.png"), "-o", str(tmp_path / "out"), flag, value])
    assert exc.value.code == 2
    assert _lines(capsys.readouterr().err) == [f"sr-upscale: error: argument {flag}: {need}; see sr-upscale --help"]


def test_library_options_use_the_same_bounds() -> None:
    from srdeploy.video import VideoOptions

    with pytest.raises(SrdeployError, match=r"^--crf must be between 0 and 63, got 70$"):
        VideoOptions(crf=70)
    with pytest.raises(SrdeployError, match=r"^--duration must be above 0 seconds, got 0$"):
        VideoOptions(duration=0)
    with pytest.raises(SrdeployError, match=r"^x must be at least 1, got 0$"):
        check_range("x", 0, 1)
    check_range("x", None, 1)  # "not given" is fine
    from srdeploy.runtime.ray_batch import BatchOptions

    with pytest.raises(SrdeployError, match="tile overlap must be in"):
        BatchOptions("a.onnx", "onnxruntime", "out", tile=16, tile_overlap=16)


# ---------------------------------------------------------------------------------------------
# (6) batches finish; Ctrl-C keeps finished outputs; no empty folders
# ---------------------------------------------------------------------------------------------


def test_batch_skips_a_bad_input_and_summarises(tiny: Path, photos: Path, tmp_path: Path) -> None:
    """The issue's reproduction: one bad file stopped the batch and later files were never processed."""
    (photos / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # sorted second: a, b, c
    out = tmp_path / "out"
    r = _run("--onnx", str(tiny), str(photos), "-o", str(out))
    assert r.returncode == 1, r.stderr
    err = [ln for ln in _lines(r.stderr) if not ln.startswith("warning:")]
    assert err[0].startswith(f"skipped: {photos / 'b.png'} is not a readable image"), err
    assert err[1:] == ["done 2, skipped 1, failed 0", f"  skipped: {photos / 'b.png'}"]
    assert _lines(r.stdout) == [str(out / "a.png"), str(out / "c.png")]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]


def test_failures_are_counted_and_long_lists_go_to_a_file(photos: Path, tmp_path: Path, monkeypatch,
                                                          capsys) -> None:
    """An error while running (not a bad input) is 'failed'; above SUMMARY_LIST_MAX the not-done
    inputs go to a list file that sr-upscale takes back as its input."""
    calls = []

    def predict(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape)
        if len(calls) > 1:
            raise BackendError("the runtime failed (test)")
        return np.repeat(np.repeat(x, 2, axis=2), 2, axis=3)

    monkeypatch.setattr(up, "SUMMARY_LIST_MAX", 1)
    out = tmp_path / "out"
    with output_dir(out):
        result = upscale_batch(predict, 2, sorted(photos.iterdir()), out, progress=False)
    assert result.line() == "done 1, skipped 0, failed 2"
    assert up.report_batch(result, out) == 1
    listing = out / up.SUMMARY_FILE
    err = _lines(capsys.readouterr().err)
    assert err[-1] == f"done 1, skipped 0, failed 2; the 2 not done are listed in {listing}"
    assert expand_inputs([str(listing)]) == [(photos / "b.png").resolve(), (photos / "c.png").resolve()]


def test_interrupt_in_process_keeps_finished_removes_current(photos: Path, tmp_path: Path, capsys) -> None:
    n = []

    def predict(x: np.ndarray) -> np.ndarray:
        n.append(1)
        if len(n) == 2:
            raise KeyboardInterrupt
        return np.repeat(np.repeat(x, 2, axis=2), 2, axis=3)

    out = tmp_path / "out"
    out.mkdir()
    result = upscale_batch(predict, 2, sorted(photos.iterdir()), out, progress=False)
    assert result.done == [out / "a.png"] and result.interrupted == photos / "b.png" and result.not_started == 1
    assert up.report_batch(result, out) == 130
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]  # no temporary file of b.png
    err = _lines(capsys.readouterr().err)
    assert err[0] == "done 1, skipped 0, failed 0"
    assert err[1] == (f"interrupted: kept the 1 finished output(s) in {out} (listed on stdout); removed the "
                      f"unfinished output of {photos / 'b.png'}; 1 input(s) not started")
    assert not any("no partial output was left behind" in ln for ln in err)


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to a child process")
def test_ctrl_c_through_the_entry_point(tiny: Path, tmp_path: Path) -> None:
    """SIGINT once the first output exists: it is kept and printed, nothing half-written remains, exit 130."""
    src = tmp_path / "in"
    for i in range(8):
        _img(src / f"im{i}.png", 160, 160, seed=i)
    out = tmp_path / "out"
    proc = subprocess.Popen([*_cli(), "--onnx", str(tiny), str(src), "-o", str(out), "--tile", "8",
                             "--tile-overlap", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not (out / "im0.png").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    finished = [Path(s) for s in _lines(stdout)]
    assert finished and sorted(p.name for p in out.iterdir()) == sorted(p.name for p in finished)
    for p in finished:
        with Image.open(p) as im:
            im.load()
            assert im.size == (320, 320)
    last = _lines(stderr)[-1]
    assert last.startswith(f"interrupted: kept the {len(finished)} finished output(s)"), stderr
    assert "no partial output was left behind" not in stderr


def test_failed_commands_leave_no_empty_folder(tiny: Path, photos: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    new = tmp_path / "new" / "deeper"
    assert main(["--onnx", str(tiny), str(bad), "-o", str(new)]) == 2  # one input: its own error
    assert not (tmp_path / "new").exists()
    assert main(["--onnx", str(tiny), str(bad), str(tmp_path / "bad2.png"), "-o", str(new)]) == 2  # missing input
    assert not (tmp_path / "new").exists()
    shutil.copy(bad, tmp_path / "bad2.png")
    assert main(["--onnx", str(tiny), str(bad), str(tmp_path / "bad2.png"), "-o", str(new), "-q"]) == 1
    assert "done 0, skipped 2, failed 0" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # a batch in which nothing succeeded
    existing = tmp_path / "existing"
    existing.mkdir()
    assert main(["--onnx", str(tiny), str(bad), "-o", str(existing)]) == 2
    assert existing.is_dir()  # a folder that was there before is never removed


def test_failed_weights_fetch_leaves_no_cache_folder(tmp_path: Path, monkeypatch) -> None:
    from srdeploy.cli import weights as cli

    for var in ("SRDEPLOY_CACHE", "SRDEPLOY_WEIGHTS_MIRROR", "SRDEPLOY_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    mirror = tmp_path / "mirror"  # laid out like the cache, but empty: the download fails
    mirror.mkdir()
    cache = tmp_path / "cache"
    assert cli.main(["fetch", "agdn_x2", "--cache", str(cache), "--mirror", str(mirror), "--no-progress"]) != 0
    assert not cache.exists()


# ---------------------------------------------------------------------------------------------
# (9) progress on the whole-image path; --help lists the models
# ---------------------------------------------------------------------------------------------


def test_whole_image_path_shows_progress(tmp_path: Path, capsys) -> None:
    src = _img(tmp_path / "in.png", 12, 10)

    def predict(x: np.ndarray) -> np.ndarray:
        time.sleep(0.6)  # long enough for the bar's refresh thread to tick
        return np.repeat(np.repeat(x, 2, axis=2), 2, axis=3)

    upscale_file(predict, 2, src, tmp_path / "a.png", None, progress=True)
    assert "in.png (whole image)" in capsys.readouterr().err
    upscale_file(predict, 2, src, tmp_path / "b.png", None)  # default: only on a terminal (captured: none)
    assert "whole image" not in capsys.readouterr().err


def test_help_lists_the_registered_models() -> None:
    models = pytest.importorskip("srdeploy.models")
    r = _run("--help")
    assert r.returncode == 0
    listed = r.stdout.split("models (--model):", 1)[1]
    assert [s.strip() for s in " ".join(listed.split()).split(",")] == models.list_models()


@pytest.mark.parametrize(("flag", "value", "need"), [
    ("--repeats", "0", "must be at least 1, got 0"),
    ("--threads", "-4", "must be at least 1, got -4"),
    ("--warmup", "-1", "must be at least 0, got -1"),
])  # fmt: skip
def test_bench_numeric_options_are_range_checked(flag: str, value: str, need: str, tiny: Path, capsys) -> None:
    from srdeploy.cli import bench

    with pytest.raises(SystemExit) as exc:
        bench.main(["--onnx", str(tiny), flag, value])
    assert exc.value.code == 2
    assert _lines(capsys.readouterr().err)[-1] == f"sr-bench: error: argument {flag}: {need}"
