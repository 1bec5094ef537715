"""Folder / glob / list-file inputs for ``sr-upscale`` (single process), and torch-free imports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rt_helpers import run_without_torch

from srdeploy.cli.upscale import main
from srdeploy.errors import InputImageError
from srdeploy.inputs import check_unique_stems, expand_inputs


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    for rel in ("a/x.png", "a/y.jpg", "a/.hidden.png", "a/sub/z.png", "b/x.png"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(p)
    (tmp_path / "a" / "notes.md").write_text("not an image")
    return tmp_path


def test_expand_folder_glob_list(tree: Path) -> None:
    names = lambda ps: [str(p.relative_to(tree)) for p in ps]  # noqa: E731
    assert names(expand_inputs([str(tree / "a")])) == ["a/x.png", "a/y.jpg"]  # no recursion, no hidden files
    assert names(expand_inputs([str(tree / "a" / "**" / "*.png")])) == ["a/sub/z.png", "a/x.png"]
    lst = tree / "list.txt"
    lst.write_text("# frames\na/sub/z.png\n\nb/x.png\n")
    assert names(expand_inputs([str(lst), str(tree / "b" / "x.png")])) == ["a/sub/z.png", "b/x.png"]  # once each
    with pytest.raises(InputImageError, match=r"would both be written as x\.png"):
        check_unique_stems(expand_inputs([str(tree / "a"), str(tree / "b")]))
    for bad, match in (([str(tree / "nope")], "does not exist; give an image, a folder"),
                       ([str(tree / "*.gif")], "matches no image files")):
        with pytest.raises(InputImageError, match=match):
            expand_inputs(bad)
    (tree / "empty").mkdir()
    with pytest.raises(InputImageError, match="holds no images"):
        expand_inputs([str(tree / "empty")])
    lst.write_text("a/missing.png\n")
    with pytest.raises(InputImageError, match=r"list.txt:1: a/missing.png does not exist"):
        expand_inputs([str(lst)])


def test_sr_upscale_takes_a_folder(tree: Path, tiny_artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tree / "out"
    assert main(["--onnx", str(tiny_artifact), str(tree / "a"), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["x.png", "y.jpg"]
    with Image.open(out / "x.png") as im:
        assert im.size == (20, 24)
    assert main(["--onnx", str(tiny_artifact), str(tree / "a"), str(tree / "b"), "-o", str(out)]) == 2
    assert "would both be written as x.png" in capsys.readouterr().err
    before = (tree / "a" / "x.png").read_bytes()
    assert main(["--onnx", str(tiny_artifact), str(tree / "a"), "-o", str(tree / "a")]) == 2  # never over an input
    assert "would overwrite an input" in capsys.readouterr().err
    assert (tree / "a" / "x.png").read_bytes() == before
    assert main(["--onnx", str(tiny_artifact), str(tree / "a"), "-o", str(tree / "a"), "--suffix", "_x2"]) == 0


def test_scaleout_modules_import_without_torch(tmp_path: Path) -> None:
    code = ("import sys\n"
            "import srdeploy.inputs, srdeploy.runtime.ray_batch, srdeploy.runtime.serve, srdeploy.cli.serve, "
            "srdeploy.cli.scaleout, srdeploy.cli.upscale\n"
            "bad = [m for m in sys.modules if m in ('torch', 'ray') or m.startswith(('srdeploy.models', "
            "'srdeploy.export'))]\n"
            "assert not bad, bad\n"
            "print('ok')\n")
    r = run_without_torch(["-c", code], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_scaleout_argument_errors_need_no_cluster(tree: Path, tiny_artifact: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Wrong combinations fail with one line before any Ray start (so they are fast)."""
    from srdeploy.cli import serve

    out = str(tree / "out")
    cases = [
        (main, [str(tree / "a"), "-o", out], "give the model: --model NAME, --onnx FILE"),
        (main, ["--model", "agdn", "--scale", "2", str(tree / "a"), "-o", out, "--ray"], "--ray runs exported"),
        (main, ["--onnx", str(tiny_artifact), str(tree / "a"), "-o", out, "--ray", "--server", "http://x/"],
         "alternatives"),
        (main, ["--onnx", str(tree / "none.onnx"), str(tree / "a"), "-o", out, "--ray"], "does not exist"),
        (serve.main, ["--onnx", str(tree / "none.onnx")], "does not exist; export one"),
    ]
    for fn, argv, message in cases:
        assert fn(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, (argv, err)
    with pytest.raises(SystemExit) as exc:  # numeric ranges: argparse types (srdeploy.options), one line
        serve.main(["--onnx", str(tiny_artifact), "--max-batch-size", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "sr-serve: error: argument --max-batch-size: must be at least 1, got 0; see sr-serve --help", err
    assert not (tree / "out").exists()  # nothing written


def test_server_client_unreachable(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["--server", f"http://127.0.0.1:{port}/", str(tree / "a"), "-o", str(tree / "out")]) == 2
    assert "is sr-serve running there?" in capsys.readouterr().err
