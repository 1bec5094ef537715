"""The one typed results record: written by measurement, read by the report, ``results.txt`` and the log.

:class:`BenchResult` holds everything one ``sr-bench`` run measured for one model. It is built
once by :func:`srdeploy.runtime.measure.build_result` and then

* serialised to the ``results.json`` entry by :meth:`BenchResult.to_json` (the NTIRE keys plus an
  ``srdeploy`` section; sizes stay :class:`~srdeploy.sizes.Size` until this writer),
* read back by :meth:`BenchResult.from_json` (also from an NTIRE-harness ``results.json`` without
  our section),
* rendered in ``results.txt``, ``bench.log`` and the report through :func:`cell`, so a figure that
  appears in several places is computed once (:attr:`BenchResult.ave_runtime`,
  :attr:`BenchResult.memory_mb`, :attr:`BenchResult.flops_g`, ...) and printed with one format and
  one label (:data:`LABELS`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from srdeploy.errors import SrdeployError
from srdeploy.sizes import Size, parse_size

#: The label every output uses for a shared figure (the NTIRE ``results.txt`` column names).
LABELS: dict[str, str] = {
    "valid_psnr": "Val PSNR",
    "test_psnr": "Test PSNR",
    "valid_runtime": "Val Time [ms]",
    "test_runtime": "Test Time [ms]",
    "runtime": "Ave Time [ms]",
    "params": "Params [M]",
    "flops": "FLOPs [G]",
    "acts": "Acts [M]",
    "memory": "Mem [M]",
    "conv": "Conv",
}
#: ...and the one format spec for it.
SPECS: dict[str, str] = {"valid_psnr": ".2f", "test_psnr": ".2f", "valid_runtime": ".2f", "test_runtime": ".2f",
                         "runtime": ".2f", "params": ".3f", "flops": ".2f", "acts": ".2f", "memory": ".2f",
                         "conv": "d"}
#: The label a PSNR of random weights carries wherever it is printed.
RANDOM_LABEL = "(random weights)"
#: A run is flagged busy when the per-image runtime spread p90/p10 exceeds this.
SPREAD_LIMIT = 1.5

FLOPS_MEANING = ("FLOPs [G] are GMACs (one multiply-add = 1, the NTIRE convention), in fvcore's convention, "
                 "counted from the exported graph")
MEMORY_MEANING = "Mem [M] is the peak memory in MB over all sets (ntire: never reset, so the test set's figure)"


def _frozen(d: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(d or {}))


def _mean(xs: Sequence[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


@dataclass(frozen=True)
class SetRecord:
    """One image set (``valid`` or ``test``) as measured."""

    name: str
    runtime_ms: tuple[float, ...]  # the reported (device) time per image
    e2e_ms: tuple[float, ...] = ()
    psnr: tuple[float, ...] = ()  # NTIRE RGB PSNR per image (empty without HR)
    psnr_y: tuple[float, ...] = ()
    ssim_y: tuple[float, ...] = ()
    memory_mb: float = 0.0
    images: tuple[str, ...] = ()
    lr_sizes: tuple[Size, ...] = ()
    lr_source: str = ""

    @property
    def mean_runtime(self) -> float | None:
        return _mean(self.runtime_ms)

    @property
    def mean_psnr(self) -> float | None:
        return _mean(self.psnr)

    @property
    def mean_ssim(self) -> float | None:
        return _mean(self.ssim_y)


@dataclass(frozen=True)
class Provenance:
    """Where the images came from and how the LR inputs were made."""

    source: str  # e.g. "corner crops of tests/data/baboon.png", "folder bench_data", "synthetic"
    lr_method: str = ""
    seed: int | None = None  # synthetic inputs only; crops and folders are deterministic
    hr_crop: Size | None = None  # --data-from-image: the HR crop size

    def describe(self, sets: Sequence[SetRecord]) -> str:
        counts = ", ".join(f"{s.name} {len(s.runtime_ms)}" for s in sets)
        sizes = sorted({str(sz) for s in sets for sz in s.lr_sizes})
        parts = [self.source, f"images: {counts}", f"LR {', '.join(sizes) or 'n/a'}"]
        if self.hr_crop is not None:
            parts.append(f"HR crops {self.hr_crop}")
        parts.append(f"LR method: {self.lr_method or 'n/a'}")
        parts.append(f"seed {self.seed}" if self.seed is not None else "no random inputs (seed n/a)")
        return "; ".join(parts)


@dataclass(frozen=True)
class WeightsIdentity:
    """Which weights were measured: a file by its sha256, or seeded random ones."""

    sha256: str = ""  # "" for random weights
    seed: int | None = None

    @property
    def random(self) -> bool:
        return not self.sha256

    def describe(self) -> str:
        if not self.random:
            return f"file sha256 {self.sha256}"
        return f"random, seed {self.seed}" if self.seed is not None else "random (seed not recorded)"


@dataclass(frozen=True)
class HostLoad:
    """``os.getloadavg()`` (1/5/15 min) before and after the timed loop, and the core count."""

    cpu_count: int
    before: tuple[float, float, float]
    after: tuple[float, float, float]

    def describe(self) -> str:
        return (f"load avg (1/5/15 min) before {'/'.join(f'{v:.2f}' for v in self.before)}, after "
                f"{'/'.join(f'{v:.2f}' for v in self.after)} on {self.cpu_count} cores")


@dataclass(frozen=True)
class Spread:
    """Spread of the per-image runtime (ms) over the images it was computed on."""

    n: int
    p10: float
    p90: float
    min: float
    max: float
    scope: str  # which images

    @property
    def ratio(self) -> float:
        return self.p90 / self.p10 if self.p10 > 0 else math.inf

    def describe(self) -> str:
        return (f"p10 {self.p10:.2f} / p90 {self.p90:.2f} ms (p90/p10 {self.ratio:.2f}), min {self.min:.2f} / "
                f"max {self.max:.2f} ms over {self.n} images ({self.scope})")


@dataclass(frozen=True)
class BenchResult:
    """Everything measured for one model in one run; see the module docstring."""

    key: str
    sets: tuple[SetRecord, ...]
    model: str = ""
    scale: int | None = None
    mode: str = "ntire"
    precision: str = "fp32"
    backend: str = "?"
    device: str = "?"
    clock: str = ""
    memory_note: str = ""
    weights: WeightsIdentity = field(default_factory=WeightsIdentity)
    provenance: Provenance | None = None
    load: HostLoad | None = None
    warmup: int = 0
    repeats: int = 1
    stats: Mapping[str, Any] = field(default_factory=lambda: _frozen(None))
    environment: Mapping[str, Any] = field(default_factory=lambda: _frozen(None))
    runner: Mapping[str, Any] = field(default_factory=lambda: _frozen(None))
    extra: Mapping[str, Any] = field(default_factory=lambda: _frozen(None))
    deviations: tuple[Mapping[str, str], ...] = ()
    utilisation: Mapping[str, Any] | None = None
    harness: bool = False  # read from a results.json without an srdeploy section

    def __post_init__(self) -> None:
        object.__setattr__(self, "sets", tuple(self.sets))
        object.__setattr__(self, "deviations", tuple(_frozen(d) for d in self.deviations))
        for name in ("stats", "environment", "runner", "extra"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    # ------------------------------------------------------------------------ derived figures
    def set(self, name: str) -> SetRecord | None:
        return next((s for s in self.sets if s.name == name), None)

    def figure_set_has(self, name: str) -> bool:
        """Whether set ``name`` was measured (has at least one timed image)."""
        s = self.set(name)
        return s is not None and bool(s.runtime_ms)

    @property
    def ave_runtime(self) -> float | None:
        """The reported runtime: the mean per set, then the mean of the set means (NTIRE)."""
        means = [m for m in (s.mean_runtime for s in self.sets) if m is not None]
        return statistics.fmean(means) if means else None

    @property
    def memory_mb(self) -> float | None:
        """Peak memory over all sets (ntire never resets, so this is the test set's figure)."""
        return max((s.memory_mb for s in self.sets), default=None)

    @property
    def flops_g(self) -> float | None:
        """NTIRE "FLOPs [G]": GMACs in fvcore's convention when the graph count has it."""
        return flops_g_from_stats(self.stats)

    @property
    def params_m(self) -> float | None:
        p = self.stats.get("params")
        return None if p is None else float(p) / 1e6

    @property
    def acts_m(self) -> float | None:
        a = self.stats.get("activations")
        return None if a is None else float(a) / 1e6

    @property
    def num_conv(self) -> int | None:
        n = self.stats.get("num_conv")
        return None if n is None else int(n)

    @property
    def random_weights(self) -> bool:
        return self.weights.random

    @property
    def flops_input(self) -> str:
        shape = str(self.stats.get("input_shape", ""))
        return "x".join(shape.split("x")[-2:]) if shape else "256x256 (NTIRE)"

    @property
    def per_image_runtime(self) -> list[float]:
        return [t for s in self.sets for t in s.runtime_ms]

    @property
    def spread(self) -> Spread | None:
        """Spread of the per-image runtime; in ntire mode without the cold first image."""
        xs = self.per_image_runtime
        scope = "all images"
        if self.mode == "ntire" and len(xs) >= 4:
            xs, scope = xs[1:], "all but the cold first image"
        if not xs:
            return None
        a = np.asarray(xs, dtype=np.float64)
        return Spread(len(xs), float(np.percentile(a, 10)), float(np.percentile(a, 90)), float(a.min()),
                      float(a.max()), scope)

    @property
    def busy_reasons(self) -> list[str]:
        """Why the timing is not trustworthy: a loaded host or a large spread (empty when fine)."""
        out = []
        if self.load is not None and self.load.before[0] > self.load.cpu_count:
            out.append(f"1-min load {self.load.before[0]:.2f} before the run exceeds the {self.load.cpu_count} "
                       "cores")
        sp = self.spread
        if sp is not None and sp.n >= 3 and sp.ratio > SPREAD_LIMIT:
            out.append(f"per-image runtime p90/p10 = {sp.ratio:.2f} > {SPREAD_LIMIT} ({sp.scope})")
        return out

    @property
    def busy(self) -> bool:
        return bool(self.busy_reasons)

    # ------------------------------------------------------------------------------ writers
    def to_json(self) -> dict[str, Any]:
        """The ``results.json`` entry: exactly the NTIRE keys, plus the ``srdeploy`` section."""
        entry: dict[str, Any] = {}
        for s in self.sets:
            entry[f"{s.name}_runtime"] = list(s.runtime_ms)
            entry[f"{s.name}_psnr"] = list(s.psnr)
            entry[f"{s.name}_memory"] = s.memory_mb
            entry[f"{s.name}_ave_runtime"] = s.mean_runtime
            entry[f"{s.name}_ave_psnr"] = s.mean_psnr
            if s.ssim_y:
                entry[f"{s.name}_ssim"] = list(s.ssim_y)
                entry[f"{s.name}_ave_ssim"] = s.mean_ssim
        entry["activations"] = self.acts_m
        entry["num_conv"] = self.num_conv
        entry["flops"] = self.flops_g
        entry["num_parameters"] = self.params_m
        sp = self.spread
        ours: dict[str, Any] = {
            "model": self.model,
            "scale": self.scale,
            "mode": self.mode,
            "precision": self.precision,
            "backend": self.backend,
            "device": self.device,
            "timing_scope": "device time per image (reported runtime); end-to-end time (copies, conversions, "
                            "tiling) in e2e_runtime",
            "clock": self.clock,
            "warmup": self.warmup,
            "repeats_per_image": self.repeats,
            "statistic": "mean per set, then mean of set means" if self.mode == "ntire"
                         else "median per image over repeats; mean per set, then mean of set means",
            "ave_runtime": self.ave_runtime,
            "memory_mb": self.memory_mb,
            "memory_note": self.memory_note,
            "psnr_note": "RGB, uint8-rounded output, shave = scale, HR modcropped (NTIRE)"
                         + ("; RANDOM WEIGHTS: quality figures are meaningless" if self.random_weights else ""),
            "quality_valid": not self.random_weights,
            "random_weights": self.random_weights,
            "weights": {"sha256": self.weights.sha256, "seed": self.weights.seed,
                        "identity": self.weights.describe()},
            "provenance": None if self.provenance is None else {
                "source": self.provenance.source, "lr_method": self.provenance.lr_method,
                "seed": self.provenance.seed,
                "hr_crop": None if self.provenance.hr_crop is None else str(self.provenance.hr_crop),
                "summary": self.provenance.describe(self.sets)},
            "load": None if self.load is None else {"cpu_count": self.load.cpu_count, "before": list(self.load.before),
                                                     "after": list(self.load.after)},
            "spread": None if sp is None else {"n": sp.n, "p10": sp.p10, "p90": sp.p90, "min": sp.min, "max": sp.max,
                                               "p90_over_p10": sp.ratio, "scope": sp.scope},
            "busy": self.busy,
            "busy_reasons": self.busy_reasons,
            "flops_convention": FLOPS_MEANING + f" at LR {self.flops_input}"
                                + ("" if "macs_fvcore_convention" in self.stats
                                   else " (the tool's own count: see graph_stats)"),
            "deviations": [dict(d) for d in self.deviations],
            "graph_stats": dict(self.stats) or None,
            "runner": dict(self.runner),
            "environment": dict(self.environment),
        }
        for s in self.sets:
            ours[f"{s.name}_e2e_runtime"] = list(s.e2e_ms)
            ours[f"{s.name}_psnr_y"] = list(s.psnr_y)
            ours[f"{s.name}_names"] = list(s.images)
            ours[f"{s.name}_lr_sizes"] = [str(x) for x in s.lr_sizes]
            ours[f"{s.name}_lr_source"] = s.lr_source
            if self.mode == "steady" and s.runtime_ms:
                ours[f"{s.name}_median_runtime"] = statistics.median(s.runtime_ms)
                ours[f"{s.name}_p90_runtime"] = float(np.percentile(np.asarray(s.runtime_ms), 90))
                ours[f"{s.name}_median_e2e_runtime"] = statistics.median(s.e2e_ms) if s.e2e_ms else None
        if self.utilisation is not None:
            ours["utilisation"] = dict(self.utilisation)
        ours.update(dict(self.extra))
        entry["srdeploy"] = ours
        return entry

    # ------------------------------------------------------------------------------ reader
    @classmethod
    def from_json(cls, key: str, entry: Mapping[str, Any], origin: str = "results.json") -> BenchResult:
        """Read an entry written by :meth:`to_json` (or by the NTIRE harness: no ``srdeploy`` section)."""
        if not isinstance(entry, Mapping) or "valid_ave_runtime" not in entry:
            raise SrdeployError(f"{origin}: entry {key!r} lacks the NTIRE keys (valid_ave_runtime...); "
                                "is this a results.json from sr-bench or the NTIRE harness?")
        ours = entry.get("srdeploy") or {}
        try:
            sets = []
            for name in ("valid", "test"):
                if f"{name}_runtime" not in entry and entry.get(f"{name}_ave_runtime") is None:
                    continue
                rt = [float(x) for x in entry.get(f"{name}_runtime") or []]
                if not rt and entry.get(f"{name}_ave_runtime") is not None:
                    rt = [float(entry[f"{name}_ave_runtime"])]
                sets.append(SetRecord(
                    name=name, runtime_ms=tuple(rt),
                    e2e_ms=tuple(float(x) for x in ours.get(f"{name}_e2e_runtime") or []),
                    psnr=tuple(float(x) for x in entry.get(f"{name}_psnr") or []),
                    psnr_y=tuple(float(x) for x in ours.get(f"{name}_psnr_y") or []),
                    ssim_y=tuple(float(x) for x in entry.get(f"{name}_ssim") or []),
                    memory_mb=float(entry.get(f"{name}_memory") or 0.0),
                    images=tuple(str(x) for x in ours.get(f"{name}_names") or []),
                    lr_sizes=tuple(parse_size(str(x)) for x in ours.get(f"{name}_lr_sizes") or []),
                    lr_source=str(ours.get(f"{name}_lr_source") or ""),
                ))
            stats = dict(ours.get("graph_stats") or {})
            if not ours:  # the NTIRE harness: the figures are given, not counted by us
                for k, scale_ in (("params", 1e6), ("activations", 1e6)):
                    src = "num_parameters" if k == "params" else "activations"
                    if entry.get(src) is not None:
                        stats[k] = float(entry[src]) * scale_
                if entry.get("num_conv") is not None:
                    stats["num_conv"] = int(entry["num_conv"])
                if entry.get("flops") is not None:
                    stats["gmacs"] = float(entry["flops"])
            w = ours.get("weights") or {}
            sha = str(w.get("sha256") or "")
            if not sha and not ours.get("random_weights", False):
                # trained weights whose file hash was not written: the NTIRE harness, or an older sr-bench
                sha = "not recorded (" + ("NTIRE harness results" if not ours else "older sr-bench results") + ")"
            prov = ours.get("provenance")
            load = ours.get("load")
            known = {"model", "scale", "mode", "precision", "backend", "device", "clock", "memory_note", "warmup",
                     "repeats_per_image", "weights", "provenance", "load", "deviations", "graph_stats", "runner",
                     "environment", "utilisation"}
            derived = {"timing_scope", "statistic", "ave_runtime", "memory_mb", "psnr_note", "quality_valid",
                       "random_weights", "spread", "busy", "busy_reasons", "flops_convention"}
            per_set = ("_e2e_runtime", "_psnr_y", "_names", "_lr_sizes", "_lr_source", "_median_runtime",
                       "_p90_runtime", "_median_e2e_runtime")
            extra = {k: v for k, v in ours.items() if k not in known | derived and not k.endswith(per_set)}
            scale = ours.get("scale")
            return cls(
                key=key, sets=tuple(sets), model=str(ours.get("model") or ""),
                scale=None if scale is None else int(scale), mode=str(ours.get("mode", "ntire (official harness)")),
                precision=str(ours.get("precision", "fp32")), backend=str(ours.get("backend", "?")),
                device=str(ours.get("device", "?")), clock=str(ours.get("clock", "")),
                memory_note=str(ours.get("memory_note", "")),
                weights=WeightsIdentity(sha, w.get("seed")),
                provenance=None if not prov else Provenance(
                    str(prov.get("source", "")), str(prov.get("lr_method", "")), prov.get("seed"),
                    parse_size(prov["hr_crop"]) if prov.get("hr_crop") else None),
                load=None if not load else HostLoad(int(load["cpu_count"]), tuple(load["before"]),
                                                    tuple(load["after"])),
                warmup=int(ours.get("warmup", 0)), repeats=int(ours.get("repeats_per_image", 1)),
                stats=stats, environment=ours.get("environment") or {}, runner=ours.get("runner") or {},
                extra=extra, deviations=tuple(ours.get("deviations") or ()),
                utilisation=ours.get("utilisation"), harness=not ours,
            )
        except (KeyError, TypeError, ValueError, SrdeployError) as exc:
            raise SrdeployError(f"{origin}: entry {key!r} is malformed ({exc}); re-run sr-bench") from exc


def flops_g_from_stats(stats: Mapping[str, Any] | None) -> float | None:
    """NTIRE "FLOPs [G]" from graph statistics: fvcore-convention GMACs, else the tool's GMACs."""
    if not stats:
        return None
    fv = stats.get("macs_fvcore_convention")
    if fv is not None:
        return float(fv) / 1e9
    g = stats.get("gmacs")
    return None if g is None else float(g)


def figure(r: BenchResult, quantity: str) -> float | int | None:
    """The value of a shared ``quantity`` (a key of :data:`LABELS`)."""
    if quantity in ("valid_psnr", "test_psnr"):
        s = r.set(quantity.split("_")[0])
        return None if s is None else s.mean_psnr
    if quantity in ("valid_runtime", "test_runtime"):
        s = r.set(quantity.split("_")[0])
        return None if s is None else s.mean_runtime
    return {"runtime": r.ave_runtime, "params": r.params_m, "flops": r.flops_g, "acts": r.acts_m,
            "memory": r.memory_mb, "conv": r.num_conv}[quantity]


def cell(r: BenchResult, quantity: str) -> str:
    """The printed form of a shared figure: one format, and the random-weights label on PSNRs."""
    v = figure(r, quantity)
    if v is None:
        return "n/a"
    s = format(v, SPECS[quantity])
    if quantity.endswith("_psnr") and r.random_weights:
        s += " " + RANDOM_LABEL
    return s


def summary_line(r: BenchResult) -> str:
    """The log's one-line summary of a model: the shared figures as ``Label value`` pairs, ``;``-separated."""
    qs = ["runtime", "valid_psnr", "test_psnr", "params", "flops", "acts", "memory", "conv"]
    figs = "; ".join(f"{LABELS[q]} {cell(r, q)}" for q in qs if figure(r, q) is not None)
    return f"{r.key}: {figs}; weights {r.weights.describe()}"
