"""``sr-report``: turn ``results.json`` files into a challenge-style report.

    sr-report out/bench/*/results.json -o report/ [--baseline span] [--year 2026]

Writes ``index.html`` (self-contained: the plots are embedded), ``report.md``, ``pareto.png`` and
``runtime_per_image.png``. The NTIRE score is computed only against a baseline measured on the same
device, backend and mode. No PyTorch needed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from srdeploy.errors import cli_errors


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sr-report", description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("results", nargs="+", help="results.json files (or folders holding one) written by sr-bench")
    p.add_argument("-o", "--output", required=True, help="report folder")
    p.add_argument("--baseline", help="row (results key or model name) to score against; default: the year's "
                                      "official baseline model if it was measured")
    p.add_argument("--year", type=int, default=2026, choices=[2024, 2025, 2026], help="scoring weights (default 2026)")
    return p


@cli_errors
def main(argv: Sequence[str] | None = None) -> int:
    from srdeploy.runtime.report import write_report

    args = build_parser().parse_args(argv)
    written = write_report(args.results, args.output, baseline=args.baseline, year=args.year)
    print(f"wrote {written[0]} (open it in a browser) and {', '.join(p.name for p in written[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
