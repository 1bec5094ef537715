"""Released-weights manifest, verified cache and sr-weights, against a local HTTP server.

No internet: every download is served by an ``http.server`` on 127.0.0.1 inside the test, through
the mirror override (``<mirror>/<entry.relpath>``).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from srdeploy.weights import (
    Store,
    WeightsDownloadError,
    WeightsIntegrityError,
    entries,
    find_entry,
    load_manifest,
    resolve,
    select,
)
from srdeploy.weights.manifest import entry_by_id

from srdeploy.cli import weights as cli
from srdeploy.errors import CheckpointError

AGDN_X2_SHA = "950fd2370dfbea4f936b4b34b3db2a61e1e38c9743ee3fe504eccc46feb08014"


# ---------------------------------------------------------------------------- local server


@dataclass
class Served:
    """What the test server holds and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut: dict[str, int] = field(default_factory=dict)  # path -> how many more responses to cut short
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, relpath: str, data: bytes) -> None:
        self.files["/" + relpath] = data

    def count(self, relpath: str) -> int:
        return sum(1 for p, _ in self.requests if p == "/" + relpath)


def _handler(served: Served) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            from urllib.parse import unquote

            path = unquote(self.path)
            rng = self.headers.get("Range")
            with served.lock:
                served.requests.append((path, rng))
                data = served.files.get(path)
                cut = served.cut.get(path, 0)
                if cut:
                    served.cut[path] = cut - 1
            if data is None:
                self.send_error(404, "not found")
                return
            start = 0
            if rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[len("bytes=") : -1])
            body = data[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if cut:  # promise the whole body, send a third, drop the connection
                self.wfile.write(body[: max(1, len(body) // 3)])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    served = Served()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may see the user's cache, mirror or offline setting."""
    monkeypatch.setenv("SRDEPLOY_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.delenv("SRDEPLOY_WEIGHTS_MIRROR", raising=False)
    monkeypatch.delenv("SRDEPLOY_OFFLINE", raising=False)


def _store(tmp_path: Path, mirror: str | None, **kw) -> tuple[Store, list[str]]:
    notices: list[str] = []
    store = Store(tmp_path / "cache", mirror=mirror, progress=False, notice=notices.append, **kw)
    return store, notices


def _files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---------------------------------------------------------------------------- manifest


def test_manifest_is_valid_and_complete() -> None:
    pool = load_manifest()
    ids = {e.id for e in pool}
    for s in (2, 3, 4):
        assert {f"esc_x{s}", f"esc:dflip_x{s}", f"esc.light_x{s}", f"esc.fp_x{s}"} <= ids
        assert {f"a2n_x{s}", f"agdn_x{s}", f"asid_x{s}", f"asid.d8_x{s}"} <= ids
    assert {"esc.real_x4", "ciaosr.rdn"} <= ids
    pins = {e.id: e.sha256 for e in pool}
    assert pins["agdn_x2"] == AGDN_X2_SHA
    assert pins["a2n_x2"] == "076f3ef50212a0641262d71210aeeda71e03324ecec14032630d1f2225887dfb"
    assert pins["a2n_x4"] is None  # unknown: trust on first use, never invented
    assert all(e.sha256 is None for e in pool if e.model.startswith(("esc", "asid", "ciaosr")))
    assert entry_by_id("esc:dflip_x4").default is False and entry_by_id("esc_x4").default
    assert entry_by_id("ciaosr.rdn").license.startswith("CC BY-NC")
    assert not entry_by_id("a2n_x2").permissive and entry_by_id("agdn_x2").permissive
    assert entry_by_id("a2n_x2").url.startswith(
        "https://raw.githubusercontent.com/haoyuc/A2N/210b38cbe721f0283aa5ad20c98373c5822f917a/"
    )
    assert len({e.relpath for e in pool}) == len(pool)  # ASID's files share a name: paths must not


def test_manifest_matches_the_registry() -> None:
    """Every entry names a registered model at a scale it supports, with the same input range."""
    models = pytest.importorskip("srdeploy.models", reason="needs PyTorch (extra: torch)")
    registered = set(models.list_models())
    for e in entries():
        assert e.model in registered, f"manifest entry {e.id} names unregistered model {e.model}"
        d = models.descriptor(e.model)
        if e.scale is not None:
            d.check_scale(e.scale)
        assert e.input_range == d.input_range, e.id
    for name in {"a2n", "agdn"}:
        for s in (2, 3, 4):
            assert find_entry("official", name, s).scale == s


def test_bad_manifest_is_refused(tmp_path: Path) -> None:
    raw = json.loads((Path(__file__).parents[2] / "weights" / "manifest.json").read_text())
    raw["entries"].append(dict(raw["entries"][0]))
    bad = tmp_path / "dup.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="duplicate entries esc_x2"):
        load_manifest(bad)
    raw["entries"].pop()
    raw["entries"][0]["sha256"] = "abc"
    bad.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="sha256 must be 64"):
        load_manifest(bad)


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(CheckpointError) as err:
        resolve("nope", "esc", 4)
    msg = str(err.value)
    assert "official" in msg and "esc:dflip" in msg and "esc_x4" in msg
    with pytest.raises(CheckpointError, match=r"are for esc, not esc\.light"):
        resolve("esc:dflip", "esc.light", 4)
    with pytest.raises(CheckpointError, match=r"valid names: .*agdn"):
        select(["nope"])
    with pytest.raises(CheckpointError, match="no such file"):
        resolve("missing/dir/x.pth", "agdn", 2)


def test_scale_free_entries_match_any_scale() -> None:
    assert find_entry("official", "ciaosr.rdn", 2.5).id == "ciaosr.rdn"
    assert find_entry("ciaosr.rdn", "ciaosr.rdn", 4).file == "rdn-ciaosr.pth"
    with pytest.raises(CheckpointError, match="no released weights"):
        find_entry("official", "a2n.m", 2)


def test_existing_path_is_returned_as_is(data_dir: Path) -> None:
    assert resolve(data_dir / "AGDN_x2.pth", "agdn", 2) == data_dir / "AGDN_x2.pth"


# ---------------------------------------------------------------------------- cache and downloads


def test_fetch_through_mirror_then_cache_hit(tmp_path: Path, server, data_dir: Path) -> None:
    url, served = server
    entry = entry_by_id("agdn_x2")
    served.put(entry.relpath, (data_dir / "AGDN_x2.pth").read_bytes())
    store, notices = _store(tmp_path, url)
    path = store.ensure(entry)
    assert path == tmp_path / "cache" / "agdn_x2" / "AGDN_x2.pth"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == AGDN_X2_SHA
    assert served.count(entry.relpath) == 1
    assert store.ensure(entry) == path  # second call: cache hit
    assert served.count(entry.relpath) == 1
    assert notices == []  # MIT and pinned: nothing to say
    assert not store.lock_path.exists()  # pinned entries never touch the lock file


def test_pinned_agdn_x2_verifies_against_the_real_file(tmp_path: Path, data_dir: Path) -> None:
    store, _ = _store(tmp_path, None)
    assert store.verify_file(entry_by_id("agdn_x2"), data_dir / "AGDN_x2.pth") == AGDN_X2_SHA
    with pytest.raises(WeightsIntegrityError, match="agdn_x3 as pinned by the manifest"):
        store.verify_file(entry_by_id("agdn_x3"), data_dir / "AGDN_x2.pth")
    assert (data_dir / "AGDN_x2.pth").is_file()  # verify alone never deletes


def test_hash_mismatch_is_rejected_and_cleaned(tmp_path: Path, server) -> None:
    url, served = server
    entry = entry_by_id("agdn_x3")
    served.put(entry.relpath, b"not the released file" * 100)
    store, _ = _store(tmp_path, url)
    with pytest.raises(WeightsIntegrityError, match="agdn_x3"):
        store.ensure(entry)
    assert _files_in(tmp_path / "cache") == []


def test_interrupted_download_leaves_nothing(tmp_path: Path, server) -> None:
    url, served = server
    entry = entry_by_id("esc_x3")
    served.put(entry.relpath, bytes(range(256)) * 400)
    served.cut["/" + entry.relpath] = 99  # every response is cut short
    store, _ = _store(tmp_path, url)
    with pytest.raises(WeightsDownloadError, match="after 3 attempts"):
        store.ensure(entry)
    assert served.count(entry.relpath) == 3
    assert _files_in(tmp_path / "cache") == []  # no partial file, no lock entry


def test_dropped_connection_resumes_with_range(tmp_path: Path, server) -> None:
    url, served = server
    entry = entry_by_id("esc_x2")
    data = bytes(range(256)) * 400
    served.put(entry.relpath, data)
    served.cut["/" + entry.relpath] = 1  # only the first response is cut short
    store, _ = _store(tmp_path, url)
    path = store.ensure(entry)
    assert path.read_bytes() == data
    ranges = [r for p, r in served.requests if p == "/" + entry.relpath]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert _files_in(tmp_path / "cache") == sorted(["esc_x2/ESC_DIV2K_X2.pth", "weights.lock.json"])


def test_http_error_fails_cleanly(tmp_path: Path, server) -> None:
    url, _ = server  # serves nothing: 404
    store, _ = _store(tmp_path, url)
    with pytest.raises(WeightsDownloadError, match="HTTP 404"):
        store.ensure(entry_by_id("esc_x4"))
    assert _files_in(tmp_path / "cache") == []


def test_unpinned_entry_is_locked_on_first_use_then_enforced(tmp_path: Path, server) -> None:
    url, served = server
    entry = entry_by_id("a2n_x4")
    first = b"first release" * 1000
    served.put(entry.relpath, first)
    store, notices = _store(tmp_path, url)
    assert store.status(entry) == "tofu"
    path = store.ensure(entry)
    lock = json.loads(store.lock_path.read_text())["entries"]
    assert lock["a2n_x4"]["sha256"] == hashlib.sha256(first).hexdigest()
    assert lock["a2n_x4"]["size"] == len(first)
    assert store.status(entry) == "locked"
    # licence notice on the first download of a non-permissive file, and the TOFU notice
    assert any("all rights reserved" in n for n in notices)
    assert any("trust on first use" in n for n in notices)
    n_notices = len(notices)
    assert store.ensure(entry) == path and len(notices) == n_notices  # cache hit: no licence notice again
    # the upstream file changes: the lock is enforced, the new file is rejected and removed
    path.unlink()
    served.put(entry.relpath, b"something else" * 1000)
    with pytest.raises(WeightsIntegrityError, match="pinned by the lock file"):
        store.ensure(entry)
    assert not path.exists()
    # a tampered cached copy is caught on use as well
    served.put(entry.relpath, first)
    store.ensure(entry)
    path.write_bytes(b"tampered")
    with pytest.raises(WeightsIntegrityError, match="deleted it"):
        store.ensure(entry)
    assert not path.exists()


def test_offline_never_touches_the_network(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    url, served = server
    entry = entry_by_id("agdn_x2")
    store, _ = _store(tmp_path, url, offline=True)
    with pytest.raises(WeightsDownloadError, match="offline"):
        store.ensure(entry)
    monkeypatch.setenv("SRDEPLOY_OFFLINE", "1")
    monkeypatch.setenv("SRDEPLOY_WEIGHTS_MIRROR", url)
    with pytest.raises(WeightsDownloadError, match="offline"):
        resolve("official", "agdn", 2)
    assert served.requests == []


def test_offline_uses_a_verified_cached_file(tmp_path: Path, data_dir: Path) -> None:
    store, _ = _store(tmp_path, None, offline=True)
    entry = entry_by_id("agdn_x2")
    dest = store.path(entry)
    dest.parent.mkdir(parents=True)
    dest.write_bytes((data_dir / "AGDN_x2.pth").read_bytes())
    assert store.ensure(entry) == dest


def test_mirror_can_be_a_local_folder(tmp_path: Path, data_dir: Path) -> None:
    """An air-gapped mirror laid out like the cache (here: a plain folder path)."""
    entry = entry_by_id("agdn_x2")
    mirror = tmp_path / "mirror"
    (mirror / "agdn_x2").mkdir(parents=True)
    (mirror / entry.relpath).write_bytes((data_dir / "AGDN_x2.pth").read_bytes())
    store, _ = _store(tmp_path, str(mirror))
    assert hashlib.sha256(store.ensure(entry).read_bytes()).hexdigest() == AGDN_X2_SHA


def test_build_official_resolves_through_the_mirror(
    tmp_path: Path, server, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = pytest.importorskip("srdeploy.models", reason="needs PyTorch (extra: torch)")
    url, served = server
    entry = entry_by_id("agdn_x2")
    served.put(entry.relpath, (data_dir / "AGDN_x2.pth").read_bytes())
    monkeypatch.setenv("SRDEPLOY_CACHE", str(tmp_path / "env-cache"))
    monkeypatch.setenv("SRDEPLOY_WEIGHTS_MIRROR", url + "/")
    model = models.build("agdn", 2, weights="official")
    assert model._srdeploy_weights["sha256"] == AGDN_X2_SHA
    assert Path(model._srdeploy_weights["path"]) == tmp_path / "env-cache" / "weights" / entry.relpath
    models.build("agdn", 2, weights="agdn")  # by name; a cache hit
    assert served.count(entry.relpath) == 1


# ---------------------------------------------------------------------------- CLI


def test_cli_list_fetch_verify(tmp_path: Path, server, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url, served = server
    served.put(entry_by_id("agdn_x2").relpath, (data_dir / "AGDN_x2.pth").read_bytes())
    served.put(entry_by_id("esc.real_x4").relpath, b"esc real" * 100)
    common = ["--cache", str(tmp_path / "c"), "--mirror", url, "--no-progress"]

    assert cli.main(["fetch", "agdn_x2", "esc.real", *common]) == 0
    out = capsys.readouterr().out
    assert "agdn_x2\tsha256\t" in out and "esc.real_x4\tlock\t" in out

    assert cli.main(["list", *common]) == 0
    table = capsys.readouterr().out
    rows = {line.split()[0]: line for line in table.splitlines() if line and not line.startswith("-")}
    assert rows["agdn_x2"].split()[-3:] == ["sha256", "yes", "yes"]
    assert "lock" in rows["esc.real_x4"] and " yes " in rows["esc.real_x4"]
    assert "no (TOFU)" in rows["esc_x2"] and rows["agdn_x3"].split()[-3:] == ["sha256", "no", "yes"]
    assert "CC BY-NC 4.0" in rows["ciaosr.rdn"]
    assert "pinned by sha256 in the manifest" in table

    assert cli.main(["verify", *common]) == 0
    out = capsys.readouterr().out
    assert "OK\tagdn_x2" in out and "OK\tesc.real_x4" in out

    assert cli.main(["verify", "agdn_x2", "--file", str(data_dir / "AGDN_x2.pth"), *common]) == 0
    assert "OK\tagdn_x2\t" + AGDN_X2_SHA in capsys.readouterr().out

    cached = tmp_path / "c" / "agdn_x2" / "AGDN_x2.pth"
    cached.write_bytes(b"corrupt")
    assert cli.main(["verify", *common]) != 0
    captured = capsys.readouterr()
    assert "MISMATCH\tagdn_x2" in captured.out and "error:" in captured.err
    assert not cached.exists()


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--cache", str(tmp_path / "c"), "--offline"]
    assert cli.main(["fetch", "nope", *common]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown weights 'nope'") and "\n" not in err
    assert cli.main(["fetch", "agdn_x2", *common]) != 0
    assert "offline" in capsys.readouterr().err
