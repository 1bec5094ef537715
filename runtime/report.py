"""Challenge-style reports from ``results.json`` files: Markdown, self-contained HTML, PNG plots.

The NTIRE score (2024-2026 definition) is ``w_r exp(2 R/R_b) + w_f exp(2 F/F_b) + w_p exp(2 P/P_b)``
for runtime R, FLOPs (GMACs) F and parameters P against a baseline b measured on the SAME device
and backend; lower is better and the baseline itself scores e^2 = 7.389. The challenge's own
baseline figures come from other GPUs and are shown for reference only.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srdeploy.errors import SrdeployError

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


@dataclass
class Row:
    key: str
    source: str
    model: str
    backend: str
    device: str
    mode: str
    precision: str
    runtime_ms: float | None
    valid_psnr: float | None
    test_psnr: float | None
    params_m: float | None
    flops_g: float | None
    acts_m: float | None
    memory_mb: float | None
    num_conv: int | None
    random_weights: bool
    per_image: list[float] = field(default_factory=list)
    n_valid: int = 0
    clock: str = ""
    memory_note: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    score: float | None = None
    flops_input: str = "256x256 (NTIRE)"

    @property
    def platform(self) -> tuple[str, str, str]:
        """What must match for a fair comparison: backend, device and the host/GPU model."""
        env = self.environment
        host = env.get("gpu") or env.get("cpu") or env.get("processor") or ""
        return self.backend, self.device, str(host)


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


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
            if not isinstance(e, dict) or "valid_ave_runtime" not in e:
                raise SrdeployError(f"{path}: entry {key!r} lacks the NTIRE keys (valid_ave_runtime...); "
                                    "is this a results.json from sr-bench or the NTIRE harness?")
            ours = e.get("srdeploy", {})
            means = [e[f"{s}_ave_runtime"] for s in ("valid", "test") if e.get(f"{s}_ave_runtime") is not None]
            runner = ours.get("runner", {})
            meta = ours.get("artifact", {}).get("metadata", {})
            env = dict(ours.get("environment", {}))
            if runner.get("gpu"):
                env["gpu"] = runner["gpu"]
            rows.append(Row(
                key=key, source=str(path), model=str(meta.get("model") or key), backend=str(ours.get("backend", "?")),
                device=str(ours.get("device", "?")), mode=str(ours.get("mode", "ntire (official harness)")),
                precision=str(ours.get("precision", "fp32")),
                runtime_ms=statistics.fmean(means) if means else None,
                valid_psnr=_num(e.get("valid_ave_psnr")), test_psnr=_num(e.get("test_ave_psnr")),
                params_m=_num(e.get("num_parameters")), flops_g=_num(e.get("flops")), acts_m=_num(e.get("activations")),
                memory_mb=_num(e.get("test_memory", e.get("valid_memory"))), num_conv=e.get("num_conv"),
                random_weights=bool(ours.get("random_weights", False)),
                per_image=list(e.get("valid_runtime", [])) + list(e.get("test_runtime", [])),
                n_valid=len(e.get("valid_runtime", [])), clock=str(ours.get("clock", "")),
                memory_note=str(ours.get("memory_note", "")), environment=env,
                flops_input=_flops_input(ours),
            ))
    keys = [r.key for r in rows]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        for r in rows:
            if r.key in dup:
                r.key = f"{r.key} ({Path(r.source).parent.name})"
    return rows


def _flops_input(ours: dict[str, Any]) -> str:
    shape = str(ours.get("graph_stats", {}).get("input_shape", "")) if ours.get("graph_stats") else ""
    return "x".join(shape.split("x")[-2:]) if shape else "256x256 (NTIRE)"


def ntire_score(row: Row, base: Row, year: int) -> float:
    """The NTIRE ESR score of ``row`` against ``base`` (lower is better; the baseline scores e^2)."""
    wr, wf, wp = SCORE_WEIGHTS[year]
    for what, a, b in (("runtime", row.runtime_ms, base.runtime_ms), ("FLOPs", row.flops_g, base.flops_g),
                       ("params", row.params_m, base.params_m)):
        if a is None or b is None or b <= 0:
            raise SrdeployError(f"cannot score {row.key}: {what} missing for it or for the baseline {base.key}")
    assert row.runtime_ms is not None and base.runtime_ms is not None
    assert row.flops_g is not None and base.flops_g is not None
    assert row.params_m is not None and base.params_m is not None
    return (wr * math.exp(2 * row.runtime_ms / base.runtime_ms) + wf * math.exp(2 * row.flops_g / base.flops_g)
            + wp * math.exp(2 * row.params_m / base.params_m))


def pick_baseline(rows: list[Row], name: str | None, year: int) -> Row | None:
    """The row named ``name`` (key or model), else the year's official baseline model if measured."""
    want = name or OFFICIAL_BASELINES[year].model
    for r in rows:
        if r.key == want or r.model == want or r.key.split("_x")[0] == want:
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
        try:
            r.score = ntire_score(r, base, year)
        except SrdeployError as exc:
            notes.append(str(exc))
    return notes


def _fmt(v: Any, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _psnr_cell(v: float | None, random_weights: bool) -> str:
    s = _fmt(v, ".2f")
    return f"{s} (random weights)" if random_weights and v is not None else s


TABLE_HEAD = ["Model", "Backend", "Device", "Mode", "Precision", "Val PSNR [dB]", "Test PSNR [dB]", "Ave Time [ms]",
              "Params [M]", "FLOPs [G]", "FLOPs at LR", "Acts [M]", "Mem [MB]", "Conv", "NTIRE score"]


def table_rows(rows: list[Row]) -> list[list[str]]:
    return [[r.key, r.backend, r.device, r.mode, r.precision, _psnr_cell(r.valid_psnr, r.random_weights),
             _psnr_cell(r.test_psnr, r.random_weights), _fmt(r.runtime_ms, ".2f"), _fmt(r.params_m, ".3f"),
             _fmt(r.flops_g, ".2f"), r.flops_input, _fmt(r.acts_m, ".2f"), _fmt(r.memory_mb, ".2f"),
             _fmt(r.num_conv, "d"), _fmt(r.score, ".4g")] for r in rows]


def plot_pareto(rows: list[Row], path: Path) -> None:
    """PSNR (valid) vs runtime, bubble area proportional to parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    pts = [(r, r.runtime_ms) for r in rows if r.runtime_ms is not None]
    for r, ms in pts:
        psnr = r.valid_psnr if r.valid_psnr is not None else 0.0
        size = 40 + 3000 * (r.params_m or 0.0)
        ax.scatter([ms], [psnr], s=size, alpha=0.5, edgecolors="black", hatch="//" if r.random_weights else None)
        ax.annotate(r.key, (ms, psnr), fontsize=8, ha="center", va="bottom")
    front: list[tuple[float, float]] = []
    best = -math.inf
    for r, ms in sorted(pts, key=lambda p: p[1]):
        if r.valid_psnr is not None and r.valid_psnr > best:
            best = r.valid_psnr
            front.append((ms, r.valid_psnr))
    if len(front) > 1:
        ax.plot([f[0] for f in front], [f[1] for f in front], "k--", lw=0.8, label="Pareto front")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("runtime per image [ms] (mean of set means)")
    ax.set_ylabel("valid PSNR (RGB) [dB]")
    title = "PSNR vs runtime (bubble area = parameters)"
    if any(r.random_weights for r, _ in pts):
        title += "\nhatched: random weights, PSNR meaningless"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_per_image(rows: list[Row], path: Path) -> None:
    """Per-image runtime in measurement order (valid then test): shows the cold first image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for r in rows:
        if r.per_image:
            ax.plot(range(1, len(r.per_image) + 1), r.per_image, marker=".", lw=1, label=f"{r.key} ({r.mode})")
            if r.n_valid and r.n_valid < len(r.per_image):
                ax.axvline(r.n_valid + 0.5, color="grey", lw=0.6, ls=":")
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


def _markdown(rows: list[Row], notes: list[str], year: int, base: Row | None) -> str:
    lines = ["# srdeploy efficiency report", ""]
    lines.append("## Factsheet (NTIRE Efficient SR layout)")
    lines.append("")
    lines.append("| " + " | ".join(TABLE_HEAD) + " |")
    lines.append("|" + "---|" * len(TABLE_HEAD))
    for cells in table_rows(rows):
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "FLOPs are GMACs (one multiply-add = 1, the NTIRE convention) counted from the exported graph at the "
              "LR size in 'FLOPs at LR'; scores compare rows counted at the same size. Every row states its "
              "measurement mode.", ""]
    lines.append(f"## NTIRE score ({year} weights {SCORE_WEIGHTS[year]})")
    lines.append("")
    lines.append(f"Baseline: {base.key} measured on {' / '.join(base.platform)}" if base else "Baseline: none measured")
    lines += ["", *[f"- {n}" for n in notes], ""]
    lines.append("Official challenge baselines (other GPUs; reference only, never used for the score):")
    lines.append("")
    lines.append("| Year | Baseline | Runtime [ms] | Params [M] | FLOPs [G] | GPU |")
    lines.append("|---|---|---|---|---|---|")
    for b in OFFICIAL_BASELINES.values():
        lines.append(f"| {b.year} | {b.model} | {b.runtime_ms} | {b.params_m} | {b.flops_g} | {b.gpu} |")
    lines += ["", "## Plots", "", "![PSNR vs runtime](pareto.png)", "", "![Per-image runtime](runtime_per_image.png)",
              "", "## Environment", ""]
    for r in rows:
        lines.append(f"### {r.key}")
        lines.append("")
        lines.append(f"- timing: {r.clock}")
        lines.append(f"- memory: {r.memory_note}")
        for k, v in r.environment.items():
            lines.append(f"- {k}: {v}")
        lines.append("")
    return "\n".join(lines)


def _env_block(r: Row) -> dict[str, Any]:
    return {"timing": r.clock, "memory": r.memory_note, **r.environment}


def _html(rows: list[Row], notes: list[str], year: int, base: Row | None, images: dict[str, bytes]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in TABLE_HEAD)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>" for cells in table_rows(rows))
    off = "".join(f"<tr><td>{b.year}</td><td>{e(b.model)}</td><td>{b.runtime_ms}</td><td>{b.params_m}</td>"
                  f"<td>{b.flops_g}</td><td>{e(b.gpu)}</td></tr>" for b in OFFICIAL_BASELINES.values())
    imgs = "".join(f'<figure><img alt="{e(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
                   f"<figcaption>{e(name)}</figcaption></figure>" for name, data in images.items())
    envs = "".join(
        f"<h3>{e(r.key)}</h3><pre>{e(json.dumps(_env_block(r), indent=2))}</pre>" for r in rows
    )
    note_html = "".join(f"<li>{e(n)}</li>" for n in notes)
    base_txt = f"{base.key} measured on {' / '.join(base.platform)}" if base else "none measured"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>srdeploy efficiency report</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #bbb;padding:3px 7px;font-size:13px}}
th{{background:#eee}}img{{max-width:100%}}pre{{background:#f6f6f6;padding:8px;font-size:12px}}
</style></head><body>
<h1>srdeploy efficiency report</h1>
<h2>Factsheet (NTIRE Efficient SR layout)</h2>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p>FLOPs are GMACs (one multiply-add = 1, the NTIRE convention). Every row states its measurement mode.</p>
<h2>NTIRE score ({year} weights {SCORE_WEIGHTS[year]})</h2>
<p>Baseline: {e(base_txt)}</p><ul>{note_html}</ul>
<p>Official challenge baselines (other GPUs; reference only):</p>
<table><thead><tr><th>Year</th><th>Baseline</th><th>Runtime [ms]</th><th>Params [M]</th><th>FLOPs [G]</th><th>GPU</th>
</tr></thead><tbody>{off}</tbody></table>
<h2>Plots</h2>{imgs}
<h2>Environment</h2>{envs}
</body></html>
"""


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
    if any(r.random_weights for r in rows):
        notes.append("Rows marked 'random weights' were exported without trained weights: their PSNR is meaningless.")
    outdir = Path(outdir)
    names = ["pareto.png", "runtime_per_image.png"]
    with staged_dir(outdir) as stage:
        plot_pareto(rows, stage / names[0])
        plot_per_image(rows, stage / names[1])
        images = {n: (stage / n).read_bytes() for n in names}
        (stage / "report.md").write_text(_markdown(rows, notes, year, base))
        (stage / "index.html").write_text(_html(rows, notes, year, base, images))
    return [outdir / "index.html", outdir / "report.md", *(outdir / n for n in names)]
