"""Core utilities: sizes, tiling, image I/O, atomic writes (all torch-free)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from srdeploy.atomic import atomic_path, staged_dir
from srdeploy.errors import InputImageError, SrdeployError
from srdeploy.imageio import read_image, to_uint, write_image
from srdeploy.sizes import Size, parse_size
from srdeploy.tiling import Tiling, tile_starts, tiled_apply


def test_parse_size_is_height_by_width() -> None:
    assert parse_size("180x320") == Size(180, 320)
    assert str(parse_size(" 64 X 48 ")) == "64x48"
    for bad in ("180", "0x5", "axb", "1x2x3", "-1x4"):
        with pytest.raises(SrdeployError, match=r"HxW|positive"):
            parse_size(bad)


@pytest.mark.parametrize(("length", "tile", "overlap"), [(10, 4, 1), (17, 8, 3), (8, 8, 2), (5, 8, 2), (100, 33, 7)])
def test_tile_starts_cover_everything(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + tile] = True
        assert s >= 0 and (s + min(tile, length)) <= length
    assert covered.all()
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))


def _local_fn(scale: int):
    """A purely local operator (3x3 mean, receptive radius 1) followed by nearest upsampling."""

    def fn(x: np.ndarray) -> np.ndarray:
        p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
        h, w = x.shape[-2:]
        m = sum(p[:, :, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9.0
        return np.repeat(np.repeat(m, scale, axis=2), scale, axis=3).astype(np.float32)

    return fn


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_crop_tiling_is_exact_for_local_operators(scale: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 37, 29), dtype=np.float32)
    # edge padding makes tiles at the image border differ unless the tile reaches the border:
    # it does (the last tile is snapped to the border), so the result must be exact.
    fn = _local_fn(scale)
    ref = fn(x)
    out = tiled_apply(fn, x, scale, Tiling(tile=12, overlap=4, blend="crop"))
    np.testing.assert_array_equal(out, ref)


def test_average_tiling_averages_overlaps() -> None:
    x = np.ones((1, 1, 10, 10), np.float32)
    calls = []

    def fn(t: np.ndarray) -> np.ndarray:
        calls.append(t.shape)
        return t * (len(calls))  # each tile gives a different constant

    out = tiled_apply(fn, x, 1, Tiling(tile=6, overlap=2, blend="average"))
    assert len(calls) == 4
    # pixel (0, 0) is covered by tile 1 only; the centre by all four tiles -> (1+2+3+4)/4
    assert out[0, 0, 0, 0] == 1.0
    assert out[0, 0, 4, 4] == pytest.approx(2.5)


def test_tiling_rejects_bad_recipes() -> None:
    with pytest.raises(SrdeployError):
        Tiling(8, 8)
    with pytest.raises(SrdeployError):
        Tiling(0, 0)
    with pytest.raises(SrdeployError, match="scale"):
        tiled_apply(lambda t: t, np.zeros((1, 3, 20, 20), np.float32), 2, Tiling(8, 2))


def _save(tmp_path, name: str, arr: np.ndarray, mode: str | None = None):
    p = tmp_path / name
    Image.fromarray(arr, mode=mode).save(p)
    return p


def test_read_write_rgb_roundtrip(tmp_path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    arr, info = read_image(_save(tmp_path, "a.png", rgb))
    assert arr.shape == (3, 7, 9) and arr.dtype == np.float32 and not info.grayscale and info.alpha is None
    write_image(tmp_path / "b.png", arr, info)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "b.png")), rgb)


def test_gray_alpha_and_16bit(tmp_path) -> None:
    gray = np.arange(30, dtype=np.uint8).reshape(5, 6) * 8
    arr, info = read_image(_save(tmp_path, "g.png", gray))
    assert info.grayscale and arr.shape == (3, 5, 6)
    write_image(tmp_path / "g2.png", arr, info)
    assert Image.open(tmp_path / "g2.png").mode == "L"

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 128
    arr, info = read_image(_save(tmp_path, "a.png", rgba, "RGBA"))
    assert info.alpha is not None and info.alpha.shape == (4, 4)
    write_image(tmp_path / "a2.png", arr, info)
    assert Image.open(tmp_path / "a2.png").mode == "RGBA"

    g16 = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000).astype(np.uint16)
    p16 = tmp_path / "g16.png"
    Image.fromarray(g16).save(p16)
    arr, info = read_image(p16)
    assert info.bits == 16 and abs(arr[0, 1, 1] - g16[1, 1] / 65535.0) < 1e-6
    write_image(tmp_path / "g16b.png", arr, info)
    back = np.asarray(Image.open(tmp_path / "g16b.png"))
    np.testing.assert_array_equal(back.astype(np.uint16), g16)


def test_bad_images_are_clear_errors(tmp_path) -> None:
    with pytest.raises(InputImageError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    txt = tmp_path / "notes.png"
    txt.write_text("not an image")
    with pytest.raises(InputImageError, match="not a readable image"):
        read_image(txt)
    big = _save(tmp_path, "big.png", np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(InputImageError, match="MP limit"):
        read_image(big, max_pixels=100)


def test_nan_output_is_refused() -> None:
    with pytest.raises(SrdeployError, match="NaN"):
        to_uint(np.array([0.5, np.nan], np.float32))


def test_atomic_path_leaves_nothing_on_error(tmp_path) -> None:
    dest = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(dest) as tmp:
        tmp.write_bytes(b"whole")
    assert dest.read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_staged_dir_is_all_or_nothing(tmp_path) -> None:
    out = tmp_path / "art"
    with pytest.raises(ValueError), staged_dir(out) as stage:
        (stage / "a.onnx").write_bytes(b"x")
        raise ValueError("validation failed")
    assert list(out.iterdir()) == []
    with staged_dir(out) as stage:
        (stage / "a.onnx").write_bytes(b"x")
        (stage / "a.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.onnx"]


def test_cli_exit_codes_tell_usage_from_failure(capsys) -> None:
    from srdeploy.errors import (
        EXIT_FAILED,
        EXIT_MISSING_DEPENDENCY,
        EXIT_USAGE,
        BackendError,
        ExportError,
        MissingDependencyError,
        ShapeError,
        cli_errors,
    )

    def raising(exc: Exception):
        @cli_errors
        def main() -> int:
            raise exc

        return main

    assert len({EXIT_FAILED, EXIT_USAGE, EXIT_MISSING_DEPENDENCY, 0}) == 4
    assert raising(ShapeError("bad size; use 16x16"))() == EXIT_USAGE == 2  # argparse's usage code
    assert raising(ExportError("validation failed"))() == EXIT_FAILED
    assert raising(BackendError("ONNX Runtime failed"))() == EXIT_FAILED
    assert raising(MissingDependencyError("pip install x"))() == EXIT_MISSING_DEPENDENCY
    assert capsys.readouterr().err.count("error: ") == 4
