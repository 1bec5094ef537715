"""The verified download cache for released checkpoints (urllib only; no PyTorch).

* Cache: ``weights/`` below the project cache root (``$SRDEPLOY_CACHE``, default
  ``$XDG_CACHE_HOME/srdeploy``, i.e. ``~/.cache/srdeploy/weights``; see :mod:`srdeploy.cache`); each file lives at
  ``<cache>/<entry.relpath>``.
* Mirror: ``$SRDEPLOY_WEIGHTS_MIRROR`` (an ``http(s)://`` or ``file://`` base URL, or a local
  folder) replaces every source URL by ``<mirror>/<entry.relpath>``, the same layout as the cache,
  so a copied cache folder is a valid mirror.
* Offline: ``$SRDEPLOY_OFFLINE=1`` (or ``offline=True``) never touches the network.
* Integrity: a file is used only after its sha256 matched the manifest's pin or, for entries the
  manifest does not pin, the hash recorded in the user's lock file ``<cache>/weights.lock.json``
  on the first verified download (trust on first use). A mismatch deletes the file and fails.
* Downloads go to a ``.part`` file beside the target, resume with HTTP ``Range`` after a dropped
  connection (a few attempts), and are renamed into place only once complete and verified; a
  download that finally fails leaves nothing in the cache.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from srdeploy.atomic import atomic_write_text, made_dirs
from srdeploy.cache import cache_dir, sha256_file
from srdeploy.errors import CheckpointError

from .manifest import WeightEntry

__all__ = [
    "LOCK_NAME",
    "Store",
    "WeightsDownloadError",
    "WeightsIntegrityError",
    "default_cache_dir",
    "env_offline",
    "sha256_file",
]

LOCK_NAME = "weights.lock.json"
_CHUNK = 1 << 16
_USER_AGENT = "srdeploy-weights/1 (+urllib)"


class WeightsDownloadError(CheckpointError):
    """A download failed (network, HTTP error, incomplete file); nothing was left in the cache."""


class WeightsIntegrityError(CheckpointError):
    """A file's sha256 or size does not match its pin; the file was deleted."""


def default_cache_dir() -> Path:
    """``weights/`` of the project cache (:func:`srdeploy.cache.cache_dir`)."""
    return cache_dir("weights")


def env_offline() -> bool:
    return os.environ.get("SRDEPLOY_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _mirror_base(mirror: str) -> str:
    if "://" in mirror:
        return mirror.rstrip("/")
    return Path(mirror).expanduser().resolve().as_uri()


@dataclass(frozen=True)
class Pin:
    sha256: str
    size: int | None
    source: str  # "manifest" | "lock"


class Store:
    """Cache + lock file + downloader. Construct with explicit settings or from the environment."""

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        mirror: str | None = None,
        offline: bool | None = None,
        progress: bool = True,
        attempts: int = 3,
        timeout_s: float = 60.0,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        env_mirror = os.environ.get("SRDEPLOY_WEIGHTS_MIRROR") or None
        self.mirror = mirror if mirror is not None else env_mirror
        self.offline = env_offline() if offline is None else offline
        self.progress = progress
        self.attempts = max(1, attempts)
        self.timeout_s = timeout_s
        self.notice = notice or (lambda msg: print(msg, file=sys.stderr))

    # ------------------------------------------------------------------ paths and pins
    @property
    def lock_path(self) -> Path:
        return self.cache_dir / LOCK_NAME

    def path(self, entry: WeightEntry) -> Path:
        return self.cache_dir / entry.relpath

    def url(self, entry: WeightEntry) -> str:
        if self.mirror:
            return f"{_mirror_base(self.mirror)}/{urllib.parse.quote(entry.relpath)}"
        return entry.url

    def read_lock(self) -> dict[str, dict[str, Any]]:
        try:
            doc = json.loads(self.lock_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(
                f"weights lock file {self.lock_path} is unreadable ({exc}); fix or delete it (pins are lost)"
            ) from exc
        return dict(doc.get("entries", {}))

    def pin(self, entry: WeightEntry) -> Pin | None:
        """The hash a file must have: the manifest's, else the lock file's, else None (unknown)."""
        if entry.sha256 is not None:
            return Pin(entry.sha256, entry.size, "manifest")
        rec = self.read_lock().get(entry.id)
        if rec is None:
            return None
        if rec.get("url") not in (None, entry.url):
            self.notice(f"notice: {entry.id}: the manifest URL changed since it was locked; keeping the lock")
        return Pin(str(rec["sha256"]), rec.get("size"), "lock")

    def record(self, entry: WeightEntry, digest: str, size: int) -> None:
        """Trust on first use: remember the hash of a verified download of an unpinned entry."""
        lock = self.read_lock()
        lock[entry.id] = {
            "sha256": digest,
            "size": size,
            "url": entry.url,
            "file": entry.file,
            "recorded": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        doc = {
            "about": "sha256 of released weights the srdeploy manifest does not pin, recorded on first "
            "download (trust on first use) and enforced from then on. Delete an entry to re-trust it.",
            "entries": dict(sorted(lock.items())),
        }
        atomic_write_text(self.lock_path, json.dumps(doc, indent=1) + "\n")

    def status(self, entry: WeightEntry) -> str:
        """``pinned`` (manifest), ``locked`` (recorded on first use) or ``tofu`` (nothing yet)."""
        pin = self.pin(entry)
        return "tofu" if pin is None else ("pinned" if pin.source == "manifest" else "locked")

    def is_cached(self, entry: WeightEntry) -> bool:
        return self.path(entry).is_file()

    # ------------------------------------------------------------------ verification
    def verify_file(self, entry: WeightEntry, path: str | os.PathLike[str], *, delete: bool = False) -> str:
        """Check ``path`` against the entry's pin; return its sha256.

        Raises :class:`WeightsIntegrityError` on a mismatch (deleting the file if ``delete``).
        Unpinned, unlocked entries pass (the caller decides whether to record them).
        """
        path = Path(path)
        digest = sha256_file(path)
        size = path.stat().st_size
        pin = self.pin(entry)
        if pin is None:
            return digest
        bad = []
        if pin.size is not None and size != pin.size:
            bad.append(f"size {size} != {pin.size}")
        if digest != pin.sha256:
            bad.append(f"sha256 {digest[:12]}... != {pin.sha256[:12]}... ({pin.source})")
        if bad:
            if delete:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            where = "the manifest" if pin.source == "manifest" else f"the lock file {self.lock_path}"
            fix = (
                "deleted it; run `sr-weights fetch " + entry.id + "` again"
                if delete
                else "this is not the released file"
            )
            raise WeightsIntegrityError(
                f"{path} does not match {entry.id} as pinned by {where}: {'; '.join(bad)}; {fix}"
            )
        return digest

    # ------------------------------------------------------------------ fetching
    def ensure(self, entry: WeightEntry) -> Path:
        """Return the verified cached file for ``entry``, downloading it if needed."""
        dest = self.path(entry)
        if dest.is_file():
            digest = self.verify_file(entry, dest, delete=True)
            if self.pin(entry) is None:  # a file put into the cache by hand: trust it now
                self.record(entry, digest, dest.stat().st_size)
                self.notice(f"notice: {entry.id}: recorded sha256 {digest} of the cached file (trust on first use)")
            return dest
        if self.offline:
            raise WeightsDownloadError(
                f"{entry.id} is not in the cache {self.cache_dir} and offline mode is on; run "
                f"`sr-weights fetch {entry.id}` where the network is reachable, or copy the file to {dest}"
            )
        if not entry.permissive:
            self.notice(
                f"notice: {entry.id} ({entry.file}) is licensed: {entry.license}. "
                "Use it only under those terms; srdeploy does not redistribute it."
            )
        self._download(entry, dest)
        return dest

    def _download(self, entry: WeightEntry, dest: Path) -> None:
        url = self.url(entry)
        with made_dirs(dest.parent):  # a failed download removes the cache folders it created
            self._download_into(entry, dest, url)

    def _download_into(self, entry: WeightEntry, dest: Path, url: str) -> None:
        part = dest.with_name(f".{dest.name}.part")
        last_error = "no attempt"
        try:
            for attempt in range(1, self.attempts + 1):
                try:
                    self._transfer(url, part, entry)
                    break
                except (urllib.error.URLError, OSError, _Incomplete) as exc:
                    if isinstance(exc, urllib.error.HTTPError) and exc.code == 416:  # stale .part: start over
                        part.unlink(missing_ok=True)
                        last_error = "HTTP 416 on resume"
                        continue
                    if isinstance(exc, urllib.error.HTTPError) and exc.code not in (408, 429, 500, 502, 503, 504):
                        raise WeightsDownloadError(
                            f"downloading {entry.id} from {url} failed: HTTP {exc.code} {exc.reason}; "
                            "check the URL or $SRDEPLOY_WEIGHTS_MIRROR"
                        ) from exc
                    last_error = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
                    if attempt < self.attempts:
                        time.sleep(0.2 * attempt)
            else:
                raise WeightsDownloadError(
                    f"downloading {entry.id} from {url} failed after {self.attempts} attempts ({last_error}); "
                    "nothing was kept; try again or set $SRDEPLOY_WEIGHTS_MIRROR"
                )
            size = part.stat().st_size
            if entry.size is not None and size != entry.size:
                raise WeightsIntegrityError(
                    f"downloaded {entry.id} has {size} bytes, the manifest says {entry.size}; deleted it"
                )
            pin = self.pin(entry)
            digest = self.verify_file(entry, part, delete=True)
            if pin is None:
                self.record(entry, digest, size)
                self.notice(
                    f"notice: {entry.id} is not pinned by the manifest; recorded sha256 {digest} in "
                    f"{self.lock_path} (trust on first use, enforced from now on)"
                )
            os.replace(part, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()

    def _transfer(self, url: str, part: Path, entry: WeightEntry) -> None:
        """One attempt: continue ``part`` with a Range request if it holds bytes already."""
        have = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        if have:
            req.add_header("Range", f"bytes={have}-")
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            status = getattr(resp, "status", 200)
            if have and status != 206:  # the server ignored Range: start over
                have = 0
            length = resp.headers.get("Content-Length")
            expected = have + int(length) if length is not None else entry.size
            with open(part, "ab" if have else "wb") as out:
                got = have + _copy(resp, out, expected, have, entry.id, self.progress)
        if expected is not None and got != expected:
            raise _Incomplete(f"connection closed after {got} of {expected} bytes")


class _Incomplete(Exception):
    pass


def _copy(src: BinaryIO, dst: BinaryIO, total: int | None, initial: int, desc: str, progress: bool) -> int:
    from tqdm import tqdm

    n = 0
    with tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        disable=not progress,
        leave=False,
    ) as bar:
        while True:
            try:
                chunk = src.read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:  # reset, IncompleteRead
                raise _Incomplete(str(exc) or type(exc).__name__) from exc
            if not chunk:
                break
            dst.write(chunk)
            n += len(chunk)
            bar.update(len(chunk))
    return n
