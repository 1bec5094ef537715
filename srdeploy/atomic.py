"""Atomic output: files appear complete or not at all (errors and Ctrl-C leave nothing).

Files get the mode an ordinary ``open()`` would give them (``0o666`` less the user's umask):
:func:`tempfile.mkstemp` creates its file ``0600``, so the temporary file is chmod-ed before the
rename. :func:`output_dir` creates an output folder and removes it again (with any parents it
made) when the command ends with it still empty, so a failed command leaves no empty folder.
"""

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
        with contextlib.suppress(FileNotFoundError):  # a writer may have replaced the file (mode kept)
            os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def current_umask() -> int:
    """The process umask, without changing it (Linux: /proc; elsewhere set and restore it at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
    check_outdir(outdir)
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


def missing_ancestors(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first (for :func:`remove_if_empty`)."""
    out = []
    p = path.absolute()
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


def remove_if_empty(made: list[Path]) -> None:
    """Remove the folders in ``made`` (deepest first) that are empty; stop at the first that is not."""
    for d in made:
        try:
            d.rmdir()
        except OSError:  # not empty (or gone): keep it and everything above it
            return


@contextlib.contextmanager
def output_dir(outdir: str | os.PathLike[str]) -> Iterator[Path]:
    """:func:`check_outdir` (create, check writable), and on exit remove what it created if still empty.

    Used by every command that writes into a folder, so an error, an interrupt or a batch in which
    nothing succeeded leaves no empty folder behind (folders that existed before are never removed).
    """
    outdir = Path(outdir)
    made = missing_ancestors(outdir)
    try:
        check_outdir(outdir)
        yield outdir
    finally:
        remove_if_empty(made)


@contextlib.contextmanager
def made_dirs(path: str | os.PathLike[str]) -> Iterator[Path]:
    """``mkdir -p path``; on an error inside the block, remove the folders this created if empty."""
    path = Path(path)
    made = missing_ancestors(path)
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        remove_if_empty(made)
        raise
