"""Expand the inputs a user names (files, folders, globs, list files) into a list of image files.

``sr-upscale`` and ``sr-upscale --ray`` share this, so a folder means the same thing on one
process and on a cluster:

* a file with an image suffix: itself;
* a folder: the image files directly inside it (sorted by name; no recursion, so an output folder
  placed inside the input folder is not picked up again);
* a pattern with ``*``, ``?`` or ``[``: the image files it matches (``**`` recurses), sorted;
* a ``.txt``/``.lst``/``.list`` file: one path per line, relative to the list file's folder;
  blank lines and lines starting with ``#`` are skipped.

Output names are ``STEM + suffix + ext`` in one folder, so two inputs with the same stem (from
two folders) are refused up front instead of one silently overwriting the other.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from .errors import InputImageError
from .imageio import SUPPORTED_SUFFIXES

LIST_SUFFIXES = (".txt", ".lst", ".list")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def _from_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputImageError(f"cannot read list file {path} ({exc}); give a UTF-8 text file, one path a line") from exc
    out = []
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        p = Path(s) if Path(s).is_absolute() else path.parent / s
        if not p.is_file():
            raise InputImageError(f"{path}:{n}: {s} does not exist or is not a file; fix the list")
        out.append(p)
    return out


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Return the image files that ``inputs`` name, in a stable order, each once."""
    paths: list[Path] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and _is_image(q) and not q.name.startswith("."))
            if not found:
                raise InputImageError(
                    f"folder {p} holds no images ({', '.join(SUPPORTED_SUFFIXES)}); give another folder"
                )
            paths.extend(found)
        elif p.is_file():
            paths.extend(_from_list(p) if p.suffix.lower() in LIST_SUFFIXES else [p])
        elif any(c in s for c in "*?["):
            found = sorted(Path(q) for q in glob.glob(s, recursive=True) if Path(q).is_file() and _is_image(Path(q)))
            if not found:
                raise InputImageError(f"pattern {s!r} matches no image files; check the pattern (quote it)")
            paths.extend(found)
        else:
            raise InputImageError(f"input {p} does not exist; give an image, a folder, a glob or a list file")
    unique: list[Path] = []
    seen: set[Path] = set()
    for p in paths:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def check_unique_stems(paths: Sequence[Path], suffix: str = "") -> None:
    """Refuse two inputs that would write the same output file."""
    by_name: dict[str, Path] = {}
    for p in paths:
        name = output_name(p, suffix)
        if name in by_name:
            raise InputImageError(
                f"{by_name[name]} and {p} would both be written as {name}; rename one or upscale them separately"
            )
        by_name[name] = p


def same_as_any(a: Path, inputs: set[Path], inodes: set[tuple[int, int]]) -> bool:
    if a.resolve() in inputs:
        return True
    try:
        st = a.stat()
    except OSError:
        return False
    return (st.st_dev, st.st_ino) in inodes


def file_ids(paths: Sequence[Path]) -> set[tuple[int, int]]:
    out = set()
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            continue
        out.add((st.st_dev, st.st_ino))
    return out


def check_not_overwriting_inputs(paths: Sequence[Path], outdir: Path, suffix: str = "", ext: str | None = None) -> None:
    """Refuse an output that would replace one of the inputs: the same path (``-o`` = the input
    folder, no suffix), through a symlink, or another name of the same file (a hard link)."""
    inputs = {p.resolve() for p in paths}
    inodes = file_ids(paths)
    for p in paths:
        dest = outdir / (output_name(p, suffix) if ext is None else f"{p.stem}{suffix}{ext}")
        if same_as_any(dest, inputs, inodes):
            raise InputImageError(
                f"the output {dest} would overwrite an input ({p}); choose another -o or add --suffix"
            )


def existing_outputs(dests: Sequence[Path]) -> list[Path]:
    """The destinations that exist already (``sr-upscale`` refuses them without ``--overwrite``)."""
    return [d for d in dests if d.exists() or d.is_symlink()]


def check_no_existing_outputs(dests: Sequence[Path], overwrite: bool = False) -> None:
    """Refuse up front when outputs exist and ``overwrite`` is off: one line, first conflict and count."""
    if overwrite:
        return
    found = existing_outputs(dests)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise InputImageError(
            f"{len(found)} output file(s) exist already, first {found[0]}{more}; pass --overwrite to replace "
            "them, or choose another -o or --suffix"
        )


def output_name(path: Path, suffix: str = "") -> str:
    """The output file name ``sr-upscale`` writes for ``path`` (same rule as the single-process path)."""
    ext = path.suffix.lower() if path.suffix.lower() in SUPPORTED_SUFFIXES else ".png"
    return f"{path.stem}{suffix}{ext}"
