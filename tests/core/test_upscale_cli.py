"""sr-upscale end to end: tiling exactness, real weights tiled vs untiled, image modes, bad input.

The CLI runs in-process through ``main([...])`` (stderr captured) and once as a subprocess.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from srdeploy.models._testing import TinyLocalSR

from srdeploy.cli.upscale import BatchSettings, main, torch_predict, upscale_files
from srdeploy.tiling import Tiling, tiled_apply

# AGDN x2 (real weights), --tile 48 --tile-overlap 16 vs whole image, 70x64 LR baboon crops, uint8
# RGB PSNR: 46.5 dB on the crop used below (max pixel difference 11 levels, at tile seams: CCA/ESA
# statistics and TLC windows are per tile); 45.0 dB and 40.6 dB (image corner) on two others.
MIN_TILED_VS_UNTILED_PSNR_DB = 40.0


def _files(d: Path) -> list[Path]:
    """Every file under ``d`` (hidden ones too); [] if ``d`` does not exist."""
    return sorted(p for p in d.rglob("*") if p.is_file()) if d.exists() else []


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def baboon(data_dir: Path) -> Image.Image:
    with Image.open(data_dir / "baboon.png") as im:
        return im.convert("RGB")


@pytest.fixture(scope="module")
def weights(data_dir: Path) -> str:
    return str(data_dir / "AGDN_x2.pth")


# ---------------------------------------------------------------------------------------------
# (1) crop-blend tiling is exact for a local model
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize(
    ("shape", "tile", "overlap"), [((1, 3, 37, 29), 12, 4), ((2, 3, 51, 23), 16, 5), ((1, 3, 31, 45), 9, 4)]
)
def test_tiled_equals_untiled_exactly(scale: int, shape: tuple[int, ...], tile: int, overlap: int) -> None:
    """TinyLocalSR has a receptive radius of 2: crop blending with overlap >= 4 is exact."""
    predict = torch_predict(TinyLocalSR(scale).eval())
    x = np.random.default_rng(scale).random(shape, dtype=np.float32)
    ref = predict(x)
    out = tiled_apply(predict, x, scale, Tiling(tile, overlap, "crop"))
    assert out.shape == (shape[0], 3, shape[2] * scale, shape[3] * scale)
    np.testing.assert_array_equal(out, ref)
    # control: an overlap below twice the receptive radius is not exact
    assert not np.array_equal(tiled_apply(predict, x, scale, Tiling(tile, 2, "crop")), ref)


def test_upscale_files_tiled_equals_untiled(tmp_path: Path) -> None:
    """The CLI's file pipeline (read, tile, write) gives identical files with and without tiles."""
    src = tmp_path / "in.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (27, 41, 3), dtype=np.uint8)).save(src)
    predict = torch_predict(TinyLocalSR(2).eval())
    (a,) = upscale_files(predict, 2, [src], tmp_path / "whole")
    (b,) = upscale_files(predict, 2, [src], tmp_path / "tiled", BatchSettings(Tiling(13, 6, "crop")))
    with Image.open(a) as ia, Image.open(b) as ib:
        assert ia.size == ib.size == (82, 54)
        np.testing.assert_array_equal(np.asarray(ia), np.asarray(ib))


# ---------------------------------------------------------------------------------------------
# (2) AGDN with the released weights on a real photograph, untiled and tiled
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_agdn_real_weights_tiled_vs_untiled(tmp_path: Path, baboon: Image.Image, weights: str) -> None:
    src = tmp_path / "baboon_crop.png"
    baboon.crop((150, 120, 220, 184)).save(src)  # 70 wide, 64 high: 2 x 2 tiles of 48
    common = [str(src), "--model", "agdn", "--scale", "2", "--weights", weights]
    assert main([*common, "-o", str(tmp_path / "whole")]) == 0
    assert main([*common, "-o", str(tmp_path / "tiled"), "--tile", "48", "--tile-overlap", "16"]) == 0
    with (
        Image.open(tmp_path / "whole" / "baboon_crop.png") as a,
        Image.open(tmp_path / "tiled" / "baboon_crop.png") as b,
    ):
        assert a.mode == b.mode == "RGB"
        assert a.size == b.size == (140, 128)
        whole, tiled = np.asarray(a), np.asarray(b)
    assert not np.array_equal(whole, tiled)  # AGDN is not local: tiles do change the result
    assert _psnr(whole, tiled) >= MIN_TILED_VS_UNTILED_PSNR_DB


# ---------------------------------------------------------------------------------------------
# (3) image modes: RGBA, grayscale, 16-bit
# ---------------------------------------------------------------------------------------------


def _run_ok(src: Path, out: Path, weights: str, *extra: str) -> Image.Image:
    assert main([str(src), "-o", str(out), "--model", "agdn", "--scale", "2", "--weights", weights, *extra]) == 0
    with Image.open(out / src.name) as im:
        im.load()
        return im


def test_rgba_input_keeps_alpha(tmp_path: Path, baboon: Image.Image, weights: str, capsys) -> None:
    rgba = baboon.crop((200, 200, 224, 220)).convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, 24, dtype=np.float32).round().astype(np.uint8), (20, 1))
    rgba.putalpha(Image.fromarray(alpha, mode="L"))
    src = tmp_path / "rgba.png"
    rgba.save(src)
    out = _run_ok(src, tmp_path / "o", weights)
    assert out.mode == "RGBA" and out.size == (48, 40)
    expected = np.asarray(Image.fromarray(alpha, mode="L").resize((48, 40), Image.Resampling.BICUBIC))
    assert np.abs(np.asarray(out)[..., 3].astype(int) - expected.astype(int)).max() <= 2
    dropped = _run_ok(src, tmp_path / "d", weights, "--alpha", "drop")
    assert dropped.mode == "RGB" and dropped.size == (48, 40)
    assert "alpha channel dropped" in capsys.readouterr().err


def test_grayscale_input_stays_grayscale(tmp_path: Path, baboon: Image.Image, weights: str) -> None:
    src = tmp_path / "gray.png"
    baboon.crop((300, 40, 321, 57)).convert("L").save(src)  # 21 x 17
    out = _run_ok(src, tmp_path / "o", weights)
    assert out.mode == "L" and out.size == (42, 34)
    lr = np.asarray(Image.open(src), dtype=np.float64)
    back = np.asarray(out.resize((21, 17), Image.Resampling.BOX), dtype=np.float64)
    assert _psnr(lr, back) > 25  # the output is the input's content, upscaled


def test_16bit_input_stays_16bit(tmp_path: Path, baboon: Image.Image, weights: str) -> None:
    g = np.asarray(baboon.crop((60, 300, 83, 319)).convert("L"), dtype=np.uint16) * 257
    g = g + np.random.default_rng(0).integers(0, 200, g.shape, dtype=np.uint16)  # true 16-bit content
    src = tmp_path / "deep.png"
    Image.fromarray(g).save(src)
    with Image.open(src) as im:
        assert im.mode.startswith("I")  # the input really is 16-bit
    out = _run_ok(src, tmp_path / "o", weights)
    assert out.mode.startswith("I") and out.size == (46, 38)
    arr = np.asarray(out).astype(np.int64)
    assert arr.max() > 255 and np.any(arr % 257 != 0)  # 16-bit precision, not 8 bits scaled


# ---------------------------------------------------------------------------------------------
# (4) bad input: one-line error, non-zero exit, nothing left behind
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def good_png(tmp_path: Path, baboon: Image.Image) -> Path:
    p = tmp_path / "good.png"
    baboon.crop((0, 0, 20, 18)).save(p)
    return p


def _bad_cases(tmp: Path, good: Path, weights: str) -> dict[str, tuple[list[str], str]]:
    (tmp / "notes.png").write_text("not an image\n")
    (tmp / "corrupt.pth").write_bytes(b"PK\x03\x04 definitely not a checkpoint" * 10)
    (tmp / "a_file").write_text("x")
    out = str(tmp / "out")
    agdn = ["--model", "agdn", "--scale", "2"]
    return {
        "unknown model": ([str(good), "-o", out, "--model", "nosuch", "--scale", "2"], r"valid names: .*agdn, agdn\.s"),
        "unsupported scale": ([str(good), "-o", out, "--model", "agdn", "--scale", "5"], "supported scales: 2, 3, 4"),
        "missing file": ([str(tmp / "nope.png"), "-o", out, *agdn], "does not exist"),
        "non-image file": ([str(tmp / "notes.png"), "-o", out, *agdn, "--weights", weights], "not a readable image"),
        "corrupt checkpoint": ([str(good), "-o", out, *agdn, "--weights", str(tmp / "corrupt.pth")], "corrupt"),
        "wrong-scale checkpoint": (
            [str(good), "-o", out, "--model", "agdn", "--scale", "3", "--weights", weights],
            "does not fit",
        ),
        "missing checkpoint": ([str(good), "-o", out, *agdn, "--weights", str(tmp / "none.pth")], "no such file"),
        "output under a file": (
            [str(good), "-o", str(tmp / "a_file" / "sub"), *agdn],
            "cannot create output directory",
        ),
        "output is a file": ([str(good), "-o", str(tmp / "a_file"), *agdn], "cannot create output directory"),
        "tile below min size": ([str(good), "-o", out, *agdn, "--tile", "8"], "minimum input size 15"),
    }


_CASE_NAMES = [
    "unknown model", "unsupported scale", "missing file", "non-image file", "corrupt checkpoint",
    "wrong-scale checkpoint", "missing checkpoint", "output under a file", "output is a file",
    "tile below min size",
]  # fmt: skip


@pytest.mark.parametrize("case", _CASE_NAMES)
def test_bad_input_is_one_line_error(case: str, tmp_path: Path, good_png: Path, weights: str, capsys) -> None:
    argv, pattern = _bad_cases(tmp_path, good_png, weights)[case]
    before = set(_files(tmp_path))
    rc = main(argv)
    assert rc != 0
    line = _error_line(capsys)
    assert re.search(pattern, line), line
    assert set(_files(tmp_path)) == before  # no output (partial or complete) was written
    assert not (tmp_path / "out").exists() or not _files(tmp_path / "out")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_output_dir(tmp_path: Path, good_png: Path, capsys) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main([str(good_png), "-o", str(ro), "--model", "agdn.s", "--scale", "2"]) != 0
        assert "not writable" in _error_line(capsys)
        assert not _files(ro)
    finally:
        ro.chmod(0o700)


def test_bad_file_in_batch_is_skipped_and_the_rest_done(tmp_path: Path, good_png: Path, weights: str,
                                                        capsys) -> None:
    """Issue 14: a bad file first no longer stops the batch: it is reported and skipped, the good
    one after it is written whole, the summary counts both and the exit is 1; no temp file remains."""
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    rc = main([str(bad), str(good_png), "-o", str(out), "--model", "agdn", "--scale", "2", "--weights", weights])
    assert rc == 1
    err = capsys.readouterr().err.splitlines()
    assert any(ln.startswith(f"skipped: {bad} is not a readable image") for ln in err), err
    assert "done 1, skipped 1, failed 0" in err
    assert [p.name for p in _files(out)] == ["good.png"]
    with Image.open(out / "good.png") as im:
        assert im.size == (40, 36)


# ---------------------------------------------------------------------------------------------
# subprocess: the real entry point, exit codes and stderr
# ---------------------------------------------------------------------------------------------


def _cli() -> list[str]:
    exe = shutil.which("sr-upscale", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "srdeploy.cli.upscale"]


@pytest.mark.slow
def test_subprocess_run_and_error(tmp_path: Path, good_png: Path, weights: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # 2 CPU cores shared by the whole suite
    out = tmp_path / "out"
    ok = subprocess.run(
        [*_cli(), str(good_png), "-o", str(out), "--model", "agdn", "--scale", "2", "--weights", weights],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(out / "good.png")
    with Image.open(out / "good.png") as im:
        assert im.size == (40, 36)
    bad = subprocess.run(
        [*_cli(), str(good_png), "-o", str(tmp_path / "o2"), "--model", "agdn", "--scale", "7"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["error: agdn has no x7 model; supported scales: 2, 3, 4"]
    assert not (tmp_path / "o2").exists()
