"""``sr-upscale --ray`` on a real local Ray cluster (loopback, 2 actors): equal outputs, bad inputs, resume.

Outputs are compared byte for byte with the single-process ``sr-upscale`` (same runner, same
tiling, same writer): the reference is an independent run of the existing command.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srdeploy.cli.upscale import main

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture(scope="module")
def single_outputs(tiny_artifact: Path, image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single")
    assert main(["--onnx", str(tiny_artifact), str(image_dir / "im*.png"), "-o", str(out), "--tile", "64"]) == 0
    assert len(list(out.glob("*.png"))) == 12
    return out


def _pixels(p: Path) -> np.ndarray:
    with Image.open(p) as im:
        return np.asarray(im)


def _assert_same(out: Path, ref: Path) -> None:
    names = sorted(p.name for p in ref.glob("*.png"))
    assert sorted(p.name for p in out.glob("*.png")) == names
    for n in names:
        np.testing.assert_array_equal(_pixels(out / n), _pixels(ref / n), err_msg=n)


def _summary(err: str) -> tuple[int, int, int]:
    m = re.search(r"done (\d+), skipped (\d+) \(already up to date\), failed (\d+)", err)
    assert m, err
    return int(m[1]), int(m[2]), int(m[3])


def test_ray_folder_matches_single_process_and_records_bad_input(
    tiny_artifact: Path, image_dir: Path, single_outputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    shutil.copytree(image_dir, src)
    (src / "broken.png").write_bytes(b"this is not a PNG")
    out = tmp_path / "out"
    argv = ["--onnx", str(tiny_artifact), str(src), "-o", str(out), "--tile", "64", "--ray", "--ray-actors", "2"]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1, err  # one input failed: non-zero exit, the others written
    assert _summary(err) == (12, 0, 1)
    assert re.search(r"failed: .*broken\.png: .*not a readable image", err), err
    assert not (out / "broken.png").exists()
    _assert_same(out, single_outputs)
    side = json.loads((out / ".srdeploy" / "im00.png.json").read_text())
    assert side["options"]["tile"] == 64 and len(side["input_sha256"]) == 64

    # rerun: everything up to date is skipped, the bad input is tried (and fails) again
    assert main(argv) == 1
    assert _summary(capsys.readouterr().err) == (0, 12, 1)
    # other options -> other bytes -> redone
    assert main([*argv[:-2], "--ray-actors", "1", "--tile", "0"]) == 1
    assert _summary(capsys.readouterr().err)[:2] == (12, 0)


def _map_workers() -> list[int]:
    import psutil

    pids = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "MapWorker" in " ".join(p.cmdline()) or "MapWorker" in p.name():
                pids.append(p.pid)
        except psutil.Error:
            continue
    return pids


def _finished(out: Path) -> dict[str, int]:
    """Outputs that count as finished: the image *and* its sidecar (written after it) exist.

    An image whose sidecar was not yet written when the worker died is redone on resume (its options
    are unknown), so it is not counted here.
    """
    return {p.name: p.stat().st_mtime_ns for p in out.glob("*.png") if (out / ".srdeploy" / f"{p.name}.json").is_file()}


def _kill_a_worker_once_an_output_lands(out: Path) -> tuple[threading.Thread, list[int]]:
    """A thread that SIGKILLs one Ray Data worker once the first output is finished (bounded: 120 s)."""
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any((out / ".srdeploy").glob("*.png.json")):
                pids = _map_workers()
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                    return
            time.sleep(0.002)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    return t, killed


def test_ray_resumes_after_killed_worker(
    tiny_artifact: Path, image_dir: Path, single_outputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    # --ray-max-restarts 0: a dead actor stops the job (instead of Ray restarting it), so the rerun must resume
    argv = ["--onnx", str(tiny_artifact), str(image_dir), "-o", str(out), "--tile", "64", "--ray",
            "--ray-actors", "2", "--ray-max-restarts", "0"]
    t, killed = _kill_a_worker_once_an_output_lands(out)
    rc = main(argv)
    t.join(timeout=130)
    err = capsys.readouterr().err
    assert killed, "no Ray Data worker was found to kill"
    finished = _finished(out)
    assert rc == 1 and "rerun the same command to resume" in err, err
    assert 0 < len(finished) < 12, f"kill was not mid-job: {len(finished)} outputs"

    assert main(argv) == 0
    done, skipped, failed = _summary(capsys.readouterr().err)
    assert (done, skipped, failed) == (12 - len(finished), len(finished), 0)
    for name, mtime in finished.items():  # finished files were not redone
        assert (out / name).stat().st_mtime_ns == mtime, name
    _assert_same(out, single_outputs)


def test_ray_default_restarts_finish_despite_killed_worker(
    tiny_artifact: Path, image_dir: Path, single_outputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """By default Ray Data restarts the dead actor and retries its rows: one run finishes everything."""
    out = tmp_path / "out"
    t, killed = _kill_a_worker_once_an_output_lands(out)
    rc = main(["--onnx", str(tiny_artifact), str(image_dir), "-o", str(out), "--tile", "64", "--ray",
               "--ray-actors", "2"])
    t.join(timeout=130)
    err = capsys.readouterr().err
    assert killed, "no Ray Data worker was found to kill"
    assert rc == 0 and _summary(err) == (12, 0, 0), err
    _assert_same(out, single_outputs)
