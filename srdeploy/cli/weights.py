"""``sr-weights``: the authors' released checkpoints: list, fetch into the verified cache, verify.

    sr-weights list [--model esc] [--paths]
    sr-weights fetch esc_x4 agdn esc:dflip --scale 4
    sr-weights verify [NAME...]            # re-hash cached files against their pins
    sr-weights verify agdn_x2 --file AGDN_x2.pth

``--weights official`` (or a manifest name) in sr-upscale, sr-export and sr-bench goes through the
same manifest and cache. Environment: ``SRDEPLOY_CACHE``, ``SRDEPLOY_WEIGHTS_MIRROR``,
``SRDEPLOY_OFFLINE=1`` (see docs/weights.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from srdeploy.errors import CheckpointError, SrdeployError, cli_errors, one_line
from srdeploy.options import positive_int
from srdeploy.weights import Store, WeightsIntegrityError, entries, select
from srdeploy.weights.manifest import WeightEntry


def _store_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cache and network")
    g.add_argument("--cache", default=None, help="weights cache folder (default: $SRDEPLOY_CACHE/weights)")
    g.add_argument(
        "--mirror", default=None, help="base URL or folder laid out like the cache ($SRDEPLOY_WEIGHTS_MIRROR)"
    )
    g.add_argument("--offline", action="store_true", default=None, help="never touch the network ($SRDEPLOY_OFFLINE=1)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sr-weights",
        description="The authors' released checkpoints: where they come from, their licences, a verified cache.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="table of released files: name, scale, licence, pinned?, cached?")
    ls.add_argument("--model", default=None, help="only this registry name")
    ls.add_argument("--paths", action="store_true", help="also show the cache/mirror path of each file")
    _store_args(ls)
    fe = sub.add_parser("fetch", help="download and verify files into the cache")
    fe.add_argument("names", nargs="+", help="ids (esc_x4), names (esc:dflip = all its scales) or 'all'")
    fe.add_argument("--scale", type=positive_int, default=None, help="only this scale")
    _store_args(fe)
    ve = sub.add_parser("verify", help="re-hash cached files (or --file) against the manifest / lock file")
    ve.add_argument("names", nargs="*", help="ids or names (default: every cached file)")
    ve.add_argument("--scale", type=positive_int, default=None, help="only this scale")
    ve.add_argument("--file", default=None, help="verify this local file instead of the cached copy (one entry)")
    _store_args(ve)
    return p


def _store(args: argparse.Namespace) -> Store:
    return Store(args.cache, mirror=args.mirror, offline=args.offline, progress=not args.no_progress)


_STATUS = {"pinned": "sha256", "locked": "lock", "tofu": "no (TOFU)"}


def _table(rows: list[list[str]], head: list[str]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _licence(e: WeightEntry, width: int = 38) -> str:
    return e.license if len(e.license) <= width else e.license[: width - 3] + "..."


def cmd_list(args: argparse.Namespace) -> int:
    store = _store(args)
    pool = [e for e in entries() if args.model in (None, e.model)]
    if not pool:
        raise SrdeployError(
            f"no released weights for {args.model!r}; models with weights: "
            + ", ".join(sorted({e.model for e in entries()}))
        )
    head = ["id", "model", "scale", "licence", "pinned", "cached", "default"]
    if args.paths:
        head.append("path (cache and mirror layout)")
    rows = []
    for e in pool:
        row = [
            e.id,
            e.model,
            "any" if e.scale is None else f"x{e.scale}",
            _licence(e),
            _STATUS[store.status(e)],
            "yes" if store.is_cached(e) else "no",
            "yes" if e.default else "",
        ]
        if args.paths:
            row.append(e.relpath)
        rows.append(row)
    print(_table(rows, head))
    n_pinned = sum(e.pinned for e in pool)
    print(
        f"\n{n_pinned} of {len(pool)} files are pinned by sha256 in the manifest; the others are trusted on "
        f"first download and then pinned in {store.lock_path} ('lock').\ncache: {store.cache_dir}"
        + (f"\nmirror: {store.mirror}" if store.mirror else "")
    )
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    store = _store(args)
    chosen = select(args.names, args.scale)
    failed = []
    for e in chosen:
        try:
            path = store.ensure(e)
        except CheckpointError as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
            failed.append(e.id)
            continue
        print(f"{e.id}\t{_STATUS[store.status(e)]}\t{path}")
    if failed:
        raise CheckpointError(f"{len(failed)} of {len(chosen)} files failed: {', '.join(failed)}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.file is not None:
        chosen = select(args.names, args.scale) if args.names else []
        if len(chosen) != 1:
            raise SrdeployError("--file needs exactly one entry id, e.g. sr-weights verify agdn_x2 --file AGDN_x2.pth")
        e = chosen[0]
        path = Path(args.file)
        if not path.is_file():
            raise SrdeployError(f"{path} does not exist")
        if store.pin(e) is None:
            raise SrdeployError(f"{e.id} is not pinned (manifest or lock file): nothing to verify {path} against")
        digest = store.verify_file(e, path)
        print(f"OK\t{e.id}\t{digest}\t{path}")
        return 0
    chosen = select(args.names, args.scale) if args.names else entries()
    bad = checked = 0
    for e in chosen:
        dest = store.path(e)
        if not dest.is_file():
            if args.names:
                print(f"missing\t{e.id}\t(not cached; sr-weights fetch {e.id})")
                bad += 1
            continue
        checked += 1
        try:
            digest = store.verify_file(e, dest, delete=True)
        except WeightsIntegrityError as exc:
            print(f"MISMATCH\t{e.id}\t{one_line(exc)}")
            bad += 1
            continue
        status = store.status(e)
        if status == "tofu":
            store.record(e, digest, dest.stat().st_size)
            status = "locked"
        print(f"OK\t{e.id}\t{_STATUS[status]}\t{dest}")
    if not checked and not bad:
        print(f"no cached files to verify in {store.cache_dir}")
    if bad:
        raise CheckpointError(f"{bad} file(s) missing or not matching their pins (mismatching files were deleted)")
    return 0


@cli_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"list": cmd_list, "fetch": cmd_fetch, "verify": cmd_verify}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
