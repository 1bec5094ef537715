"""Challenge-style reports from ``results.json`` files: Markdown, self-contained HTML, PNG plots.

Rows are :class:`~srdeploy.runtime.results.BenchResult` records read back from ``results.json``;
every shared figure is printed with :func:`~srdeploy.runtime.results.cell`, the same function
``results.txt`` and ``bench.log`` use, so the files cannot disagree. The report is built once as a
list of blocks and rendered to Markdown and HTML from that list.

The NTIRE score (2024-2026 definition) is ``w_r exp(2 R/R_b) + w_f exp(2 F/F_b) + w_p exp(2 P/P_b)``
for runtime R, FLOPs (GMACs) F and parameters P against a baseline b measured on the SAME device,
backend, mode and scale; lower is better and the baseline itself scores e^2 = 7.389. The
challenge's own baseline figures come from other GPUs and are shown for reference only.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srdeploy.errors import SrdeployError

from .results import FLOPS_MEANING, LABELS, MEMORY_MEANING, BenchResult, cell

#: Scoring weights (runtime, FLOPs, params) per challenge year.
SCORE_WEIGHTS: dict[int, tuple[float, float, float]] = {2024: (0.7, 0.15, 0.15), 2025: (0.7, 0.15, 0.15),
                                                        2026: (0.8, 0.1, 0.1)}


@dataclass(frozen=True)
class OfficialBaseline:
    year: int
    model: str  # registry name
    runtime_ms: float
    params_m: float
    flops_g: float
    gpu: str


OFFICIAL_BASELINES: dict[int, OfficialBaseline] = {
    2024: OfficialBaseline(2024, "rlfn", 13.54, 0.317, 19.67, "RTX 3090"),
    2025: OfficialBaseline(2025, "efdn", 16.69, 0.276, 16.70, "RTX A6000"),
    2026: OfficialBaseline(2026, "span", 7.74, 0.151, 9.83, "RTX A6000"),
}


#: A quantity more than this many times the baseline's is far outside the range the score was made for.
RATIO_LIMIT = 3.0

SCORE_FORMULA = ("score = w_r·exp(2·R/R_b) + w_f·exp(2·F/F_b) + w_p·exp(2·P/P_b), where R = Ave Time [ms], "
                 "F = FLOPs [G], P = Params [M] of the row and R_b, F_b, P_b those of the baseline measured "
                 "here")
SCORE_DIRECTION = ("Lower is better; the baseline scores e^2 = 7.389 against itself, and a row equal to the baseline "
                   "in all three quantities scores the same.")


@dataclass
class Row:
    """One model in the report: its record, where it was read from, and the score filled in later."""

    result: BenchResult
    key: str
    source: str
    score: float | None = None
    ratios: dict[str, float] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:  # delegate the record's fields and figures
        if name == "result":
            raise AttributeError(name)
        return getattr(self.result, name)

    @property
    def model_name(self) -> str:
        meta = self.result.extra.get("artifact", {}).get("metadata", {}) if self.result.extra else {}
        return str(meta.get("model") or self.result.model or self.key)

    @property
    def platform(self) -> tuple[str, str, str]:
        """What must match for a fair comparison: backend, device and the host/GPU model."""
        env = dict(self.result.environment)
        host = self.result.runner.get("gpu") or env.get("gpu") or env.get("cpu") or env.get("processor") or ""
        return self.result.backend, self.result.device, str(host)


def load_rows(paths: Sequence[str | os.PathLike[str]]) -> list[Row]:
    """Read every model entry of every ``results.json`` given."""
    rows: list[Row] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            path = path / "results.json"
        if not path.is_file():
            raise SrdeployError(f"{path} does not exist; give results.json files written by sr-bench")
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SrdeployError(f"{path} is not valid JSON ({exc}); re-run sr-bench") from exc
        if not isinstance(data, dict) or not data:
            raise SrdeployError(f"{path} holds no results; re-run sr-bench")
        for key, e in data.items():
            rows.append(Row(BenchResult.from_json(key, e, str(path)), key, str(path)))
    keys = [r.key for r in rows]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        for r in rows:
            if r.key in dup:
                r.key = f"{r.key} ({Path(r.source).parent.name})"
    return rows


def _quantities(row: Row) -> dict[str, float | None]:
    return {"runtime": row.result.ave_runtime, "FLOPs": row.result.flops_g, "params": row.result.params_m}


def ntire_score(row: Row, base: Row, year: int) -> float:
    """The NTIRE ESR score of ``row`` against ``base`` (lower is better; the baseline scores e^2)."""
    wr, wf, wp = SCORE_WEIGHTS[year]
    mine, theirs = _quantities(row), _quantities(base)
    ratios: dict[str, float] = {}
    for what in ("runtime", "FLOPs", "params"):
        a, b = mine[what], theirs[what]
        if a is None or b is None or b <= 0:
            raise SrdeployError(f"cannot score {row.key}: {what} missing for it or for the baseline {base.key}")
        ratios[what] = a / b
    row.ratios = ratios
    return (wr * math.exp(2 * ratios["runtime"]) + wf * math.exp(2 * ratios["FLOPs"])
            + wp * math.exp(2 * ratios["params"]))


def pick_baseline(rows: list[Row], name: str | None, year: int) -> Row | None:
    """The row named ``name`` (key or model), else the year's official baseline model if measured."""
    want = name or OFFICIAL_BASELINES[year].model
    for r in rows:
        if r.key == want or r.model_name == want or r.key.split("_x")[0] == want:
            return r
    if name:
        raise SrdeployError(f"baseline {name!r} is not among the results ({', '.join(r.key for r in rows)}); "
                            "benchmark it on the same device and pass its results.json too")
    return None


def score_rows(rows: list[Row], base: Row | None, year: int) -> list[str]:
    """Fill ``Row.score`` for rows comparable with ``base``; return notes for the report."""
    notes = []
    if base is None:
        notes.append(f"No NTIRE score: no baseline measured ({OFFICIAL_BASELINES[year].model} for {year}); "
                     "benchmark it on the same device and backend, or pass --baseline.")
        return notes
    for r in rows:
        if r.platform != base.platform or r.mode != base.mode:
            notes.append(f"{r.key}: not scored, measured on {' / '.join(r.platform)} ({r.mode}), the baseline on "
                         f"{' / '.join(base.platform)} ({base.mode})")
            continue
        if r.flops_input != base.flops_input:
            notes.append(f"{r.key}: not scored, FLOPs counted at LR {r.flops_input}, the baseline's at "
                         f"{base.flops_input}")
            continue
        if r.result.scale is not None and base.result.scale is not None and r.result.scale != base.result.scale:
            notes.append(f"{r.key}: not scored, a x{r.result.scale} model against a x{base.result.scale} baseline "
                         "(the challenge scores x4 entries against a x4 baseline)")
            continue
        try:
            r.score = ntire_score(r, base, year)
        except SrdeployError as exc:
            notes.append(str(exc))
            continue
        far = {k: v for k, v in r.ratios.items() if v > RATIO_LIMIT}
        if far and r is not base:
            wr = SCORE_WEIGHTS[year][0]
            worst = max(far, key=lambda k: far[k])
            notes.append(
                f"{r.key}: far outside the range the formula was made for: "
                + ", ".join(f"{k} {v:.1f}x the baseline's" for k, v in far.items())
                + f". Each term grows as exp(2x) (the formula was made for entries near the baseline, x around 1): "
                f"the {worst} term {wr if worst == 'runtime' else SCORE_WEIGHTS[year][1]:g}·e^{2 * far[worst]:.1f} "
                f"alone makes up the score of {r.score:.3g}, so the score only says 'far from the baseline'; "
                "compare the ratios instead."
            )
    return notes


FACT_HEAD = ["Model", "Backend", "Device", "Mode", "Precision", "Weights", LABELS["valid_psnr"], LABELS["test_psnr"],
             LABELS["runtime"], LABELS["params"], LABELS["flops"], "FLOPs at LR", LABELS["acts"], LABELS["memory"],
             LABELS["conv"], "NTIRE score", "Flags"]
#: kept for callers of the previous name
TABLE_HEAD = FACT_HEAD


def _weights_short(r: Row) -> str:
    w = r.result.weights
    if w.random:
        return w.describe()
    return f"sha256 {w.sha256[:12]}" if len(w.sha256) == 64 else w.sha256


def _flags(r: Row) -> str:
    out = []
    if r.result.busy:
        out.append("BUSY MACHINE")
    if r.result.random_weights:
        out.append("random weights")
    if r.result.deviations:
        out.append(f"{len(r.result.deviations)} deviation(s) from PyTorch")
    return "; ".join(out) or "-"


def table_rows(rows: list[Row]) -> list[list[str]]:
    return [[r.key, r.result.backend, r.result.device, r.result.mode, r.result.precision, _weights_short(r),
             cell(r.result, "valid_psnr"), cell(r.result, "test_psnr"), cell(r.result, "runtime"),
             cell(r.result, "params"), cell(r.result, "flops"), r.result.flops_input, cell(r.result, "acts"),
             cell(r.result, "memory"), cell(r.result, "conv"), "n/a" if r.score is None else format(r.score, ".4g"),
             _flags(r)] for r in rows]


def _bubble_points(size: float, dpi: float) -> float:
    """Radius in display pixels of a scatter marker of area ``size`` (points^2)."""
    return math.sqrt(size) / 2 * dpi / 72


def plot_pareto(rows: list[Row], path: Path) -> bool:
    """Save :func:`pareto_figure` to ``path``; returns whether every bubble fits inside the axes."""
    import matplotlib.pyplot as plt

    fig, _, inside = pareto_figure(rows)
    fig.savefig(path)
    plt.close(fig)
    return inside


def pareto_figure(rows: list[Row]) -> tuple[Any, Any, bool]:
    """PSNR (valid) vs runtime, bubble area proportional to parameters (front: trained weights only).

    The axis limits are widened until every bubble lies inside the axes (the returned flag says
    whether that held), and the runtime axis is logarithmic when the runtimes span more than 10x.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    pts: list[tuple[Row, float, float]] = []
    for r in rows:
        valid = r.result.set("valid")
        ms, psnr = r.result.ave_runtime, valid.mean_psnr if valid else None
        if ms is not None and psnr is not None:  # rows without PSNR (synthetic inputs) have no point here
            pts.append((r, ms, psnr))
    sizes = [40 + 3000 * (r.result.params_m or 0.0) for r, _, _ in pts]
    for (r, ms, psnr), size in zip(pts, sizes, strict=True):
        ax.scatter([ms], [psnr], s=size, alpha=0.5, edgecolors="black",
                   hatch="//" if r.result.random_weights else None)
        ax.annotate(r.key, (ms, psnr), fontsize=8, ha="center", va="bottom")
    front: list[tuple[float, float]] = []
    best = -math.inf
    for r, ms, psnr in sorted(pts, key=lambda p: p[1]):
        if psnr > best and not r.result.random_weights:  # a random-weight PSNR is no point on a front
            best = psnr
            front.append((ms, psnr))
    if len(front) > 1:
        ax.plot([f[0] for f in front], [f[1] for f in front], "k--", lw=0.8, label="Pareto front")
        ax.legend(loc="best", fontsize=8)
    if pts and max(p[1] for p in pts) > 10 * min(p[1] for p in pts):
        ax.set_xscale("log")
    ax.set_xlabel(f"{LABELS['runtime']} per image (mean of set means)")
    ax.set_ylabel(f"{LABELS['valid_psnr']} (RGB) [dB]")
    title = "PSNR vs runtime (bubble area = parameters)"
    if any(r.result.random_weights for r, _, _ in pts):
        title += "\nhatched: random weights, PSNR meaningless"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    inside = _fit_bubbles(fig, ax, [(ms, p) for _, ms, p in pts], sizes)
    return fig, ax, inside


def _fit_bubbles(fig: Any, ax: Any, centres: list[tuple[float, float]], sizes: list[float]) -> bool:
    """Widen the limits until every bubble (centre +- radius, in pixels) lies inside the axes."""
    if not centres:
        return True
    for _ in range(12):
        fig.canvas.draw()
        box = ax.get_window_extent()
        inv = ax.transData.inverted()
        lo_x, hi_x = ax.get_xlim()
        lo_y, hi_y = ax.get_ylim()
        grow = False
        for (x, y), s in zip(centres, sizes, strict=True):
            cx, cy = ax.transData.transform((x, y))
            rad = _bubble_points(s, fig.dpi) * 1.02
            if cx - rad < box.x0 or cx + rad > box.x1 or cy - rad < box.y0 or cy + rad > box.y1:
                grow = True
                pad = rad * 1.5  # widen past the edge: the new limits shrink the scale, so converge in a few steps
                (x0, y0), (x1, y1) = inv.transform([(cx - pad, cy - pad), (cx + pad, cy + pad)])
                lo_x, hi_x, lo_y, hi_y = min(lo_x, x0), max(hi_x, x1), min(lo_y, y0), max(hi_y, y1)
        if not grow:
            return True
        ax.set_xlim(lo_x, hi_x)
        ax.set_ylim(lo_y, hi_y)
    return False


def plot_per_image(rows: list[Row], path: Path) -> None:
    """Per-image runtime in measurement order (valid then test): shows the cold first image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for r in rows:
        per = r.result.per_image_runtime
        if per:
            ax.plot(range(1, len(per) + 1), per, marker=".", lw=1, label=f"{r.key} ({r.result.mode})")
            v = r.result.set("valid")
            n_valid = len(v.runtime_ms) if v else 0
            if n_valid and n_valid < len(per):
                ax.axvline(n_valid + 0.5, color="grey", lw=0.6, ls=":")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("image index (valid, then test)")
    ax.set_ylabel("runtime [ms]")
    ax.set_yscale("log")
    ax.set_title("Per-image runtime (ntire mode has no warm-up: image 1 is cold)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------------------ the document
Block = tuple[Any, ...]  # ("h1"|"h2"|"h3"|"p"|"warn", text) | ("ul", [items]) | ("table", head, rows) | ("img", name)


def _measured_rows(rows: list[Row]) -> list[list[str]]:
    out = []
    for r in rows:
        res = r.result
        sp = res.spread
        out.append([
            r.key,
            res.provenance.describe(res.sets) if res.provenance else "not recorded (results from the NTIRE harness)"
            if res.harness else "not recorded",
            res.weights.describe(),
            f"{res.backend} / {res.device}; {res.clock}",
            res.load.describe() if res.load else "not recorded",
            f"warm-up {res.warmup}, {res.repeats} timed run(s) per image",
            sp.describe() if sp else "n/a",
            "BUSY: " + "; ".join(res.busy_reasons) if res.busy else "no",
        ])
    return out


def document(rows: list[Row], notes: list[str], year: int, base: Row | None) -> list[Block]:
    """The report's content, rendered by :func:`_markdown` and :func:`_html`."""
    doc: list[Block] = [("h1", "srdeploy efficiency report")]
    busy = [r for r in rows if r.result.busy]
    if busy:
        doc.append(("warn", "Timed on a busy machine: " + "; ".join(
            f"{r.key} ({'; '.join(r.result.busy_reasons)})" for r in busy)
            + ". These runtimes (and the scores built on them) are not trustworthy; re-run on an idle machine."))
    doc += [("h2", "Factsheet (NTIRE Efficient SR layout)"), ("table", FACT_HEAD, table_rows(rows)),
            ("p", f"{FLOPS_MEANING} at the LR size in 'FLOPs at LR'; scores compare rows counted at the same size. "
                  f"{MEMORY_MEANING}. {LABELS['runtime']}: the mean per set, then the mean of the set means. Every "
                  "row states its measurement mode; the same figures, formatted the same way, are in results.txt "
                  "and bench.log.")]
    doc += [("h2", f"NTIRE score ({year} weights w_r, w_f, w_p = {', '.join(f'{w:g}' for w in SCORE_WEIGHTS[year])})"),
            ("p", SCORE_FORMULA + "."), ("p", SCORE_DIRECTION),
            ("p", f"Baseline: {base.key} measured on {' / '.join(base.platform)}" if base
             else "Baseline: none measured")]
    scored = [r for r in rows if r.score is not None]
    if scored:
        doc.append(("table", ["Model", "R/R_b", "F/F_b", "P/P_b", "NTIRE score (lower is better)"],
                    [[r.key, *(f"{r.ratios[k]:.3g}" for k in ("runtime", "FLOPs", "params")), f"{r.score:.4g}"]
                     for r in scored]))
    if notes:
        doc.append(("ul", notes))
    doc.append(("p", "Official challenge baselines (other GPUs; reference only, never used for the score):"))
    doc.append(("table", ["Year", "Baseline", "Runtime [ms]", "Params [M]", "FLOPs [G]", "GPU"],
                [[str(b.year), b.model, str(b.runtime_ms), str(b.params_m), str(b.flops_g), b.gpu]
                 for b in OFFICIAL_BASELINES.values()]))
    doc += [("h2", "What was measured"),
            ("table", ["Model", "Data", "Weights", "Backend / device / clock", "Host load", "Repeats",
                       "Spread of per-image runtime", "Busy"], _measured_rows(rows))]
    devs = [(r, d) for r in rows for d in r.result.deviations]
    if devs:
        doc += [("h2", "Deviations from the PyTorch model"),
                ("table", ["Model", "What differs", "Measured difference"],
                 [[r.key, str(d.get("what", "")), str(d.get("measured", ""))] for r, d in devs])]
    doc += [("h2", "Plots"), ("img", "pareto.png"), ("img", "runtime_per_image.png"), ("h2", "Environment")]
    for r in rows:
        env = {"timing": r.result.clock, "memory": r.result.memory_note, **dict(r.result.environment)}
        doc += [("h3", r.key), ("table", ["", ""], [[str(k), _plain(v)] for k, v in env.items()])]
    return doc


def _plain(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _markdown(doc: list[Block]) -> str:
    lines: list[str] = []
    for b in doc:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + b[1], ""]
        elif kind == "p":
            lines += [b[1], ""]
        elif kind == "warn":
            lines += [f"> **WARNING:** {b[1]}", ""]
        elif kind == "ul":
            lines += [*(f"- {n}" for n in b[1]), ""]
        elif kind == "table":
            lines.append("| " + " | ".join(_md_cell(h) for h in b[1]) + " |")
            lines.append("|" + "---|" * len(b[1]))
            lines += ["| " + " | ".join(_md_cell(c) for c in cells) + " |" for cells in b[2]]
            lines.append("")
        elif kind == "img":
            lines += [f"![{b[1]}]({b[1]})", ""]
    return "\n".join(lines)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:1em 0;max-width:100%}
td,th{border:1px solid #bbb;padding:3px 7px;font-size:13px;vertical-align:top;overflow-wrap:anywhere}
th{background:#eee}img{max-width:100%}.warn{background:#fde2e1;border:1px solid #c33;padding:8px}
table.env td:first-child{white-space:nowrap;font-weight:600}table.env td{font-family:monospace;font-size:12px}"""


def _html(doc: list[Block], images: dict[str, bytes]) -> str:
    e = html.escape
    parts: list[str] = []
    env_next = False
    for b in doc:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{e(b[1])}</{kind}>")
            env_next = env_next or (kind == "h2" and b[1] == "Environment")
        elif kind == "p":
            parts.append(f"<p>{e(b[1])}</p>")
        elif kind == "warn":
            parts.append(f'<p class="warn"><strong>WARNING:</strong> {e(b[1])}</p>')
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in b[1]) + "</ul>")
        elif kind == "table":
            cls = ' class="env"' if env_next else ""
            head = "" if not any(b[1]) else "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in b[1]) + "</tr></thead>"
            body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>" for cells in b[2])
            parts.append(f"<table{cls}>{head}<tbody>{body}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(images[b[1]]).decode()
            parts.append(f'<figure><img alt="{e(b[1])}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{e(b[1])}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>srdeploy efficiency report"
            f"</title>\n<style>\n{CSS}\n</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def write_report(
    results: Sequence[str | os.PathLike[str]],
    outdir: str | os.PathLike[str],
    *,
    baseline: str | None = None,
    year: int = 2026,
) -> list[Path]:
    """Write ``index.html`` (self-contained), ``report.md`` and the PNG plots into ``outdir``."""
    from srdeploy.atomic import staged_dir

    if year not in SCORE_WEIGHTS:
        raise SrdeployError(f"unknown scoring year {year}; choose one of {', '.join(map(str, SCORE_WEIGHTS))}")
    if not results:
        raise SrdeployError("give at least one results.json")
    rows = load_rows(results)
    base = pick_baseline(rows, baseline, year)
    notes = score_rows(rows, base, year)
    if any(r.result.random_weights for r in rows):
        notes.append("Rows marked 'random weights' were measured without trained weights: their PSNR is "
                     "meaningless (their runtime, FLOPs and parameters are not).")
    outdir = Path(outdir)
    names = ["pareto.png", "runtime_per_image.png"]
    doc = document(rows, notes, year, base)
    with staged_dir(outdir) as stage:
        plot_pareto(rows, stage / names[0])
        plot_per_image(rows, stage / names[1])
        images = {n: (stage / n).read_bytes() for n in names}
        (stage / "report.md").write_text(_markdown(doc))
        (stage / "index.html").write_text(_html(doc, images))
    return [outdir / "index.html", outdir / "report.md", *(outdir / n for n in names)]
