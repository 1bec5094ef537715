"""Atomic output: files appear complete or not at all (errors and Ctrl-C leave nothing)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from srdeploy.errors import SrdeployError


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only on success.

    ``keep_suffix``: the temporary name ends with ``dest``'s extension (``.x.part.mp4``), for
    writers that choose the format from the file name (FFmpeg's muxers).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if keep_suffix:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=f".part{dest.suffix}", dir=dest.parent)
    else:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(dest, text.encode("utf-8"))


@contextlib.contextmanager
def staged_dir(outdir: str | os.PathLike[str]) -> Iterator[Path]:
    """Stage several output files in a hidden directory inside ``outdir``.

    On success every staged file is moved into ``outdir`` (each move is atomic); on any error
    the staging directory is removed, so no partial artifact set is left behind.
    """
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from .errors import SrdeployError

        raise SrdeployError(f"cannot create output directory {outdir}: {exc.strerror}") from exc
    if not os.access(outdir, os.W_OK):
        from .errors import SrdeployError

        raise SrdeployError(f"output directory {outdir} is not writable; choose another with -o")
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=outdir))
    try:
        yield stage
        for item in sorted(stage.iterdir()):
            os.replace(item, outdir / item.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def check_outdir(outdir: Path) -> None:
    """Create ``outdir`` if needed and check it is writable, before any work is done."""
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SrdeployError(
            f"cannot create output directory {outdir} ({exc.strerror}); choose another with -o"
        ) from exc
    if not os.access(outdir, os.W_OK):
        raise SrdeployError(f"output directory {outdir} is not writable; choose another with -o")
