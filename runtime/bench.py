"""The library side of ``sr-bench``: open a model, measure it, write the results folder.

:func:`run_bench` measures an exported artifact (``--onnx``/``--engine``) or a prepared
:class:`ModelSource` and needs no PyTorch. A model given by registry name (``--model``) is
resolved on the torch side by :func:`srdeploy.export.bench_source.run_bench_model` (export it, or
build it for the ``torch`` backend), which then calls :func:`run_bench`: this package never
imports ``srdeploy.export`` or ``srdeploy.models``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srdeploy.errors import SrdeployError
from srdeploy.sizes import Size
from srdeploy.tiling import Tiling

from .artifact import Artifact
from .backends import RunOptions
from .graphstats import graph_stats
from .measure import (
    DEVICE_PEAKS,
    Mode,
    build_result,
    host_load,
    load_sets,
    make_crop_sets,
    measure,
    synthetic_set,
    write_results,
)
from .predict import Predictor, open_predictor
from .results import LABELS, BenchResult, HostLoad, Provenance, WeightsIdentity, flops_g_from_stats

#: ``--data-from-image``: the HR crop size cut from each corner (LR = crop / scale)
CROP = 192
#: ``--synthetic``: the seed of the uniform-noise inputs
SYNTHETIC_SEED = 0


@dataclass(frozen=True)
class BenchConfig:
    """Everything ``sr-bench`` needs; ``None`` means "use the default". Frozen: ``run_bench`` never
    changes it (``log`` collects the log lines)."""

    onnx: str | None = None
    engine: str | None = None
    model: str | None = None
    weights: str | None = None
    scale: int | None = None
    backend: str | None = None
    device: str = "cpu"
    precision: str | None = None  # fp32 | fp16; for --model the export precision
    data: str | None = None
    data_from_image: str | None = None
    synthetic: Size | None = None
    images: int = 5
    mode: Mode = "ntire"
    warmup: int = 10
    repeats: int = 5
    tiling: Tiling | None = None
    threads: int | None = None
    peaks: tuple[float, float] | None = None
    flops_size: Size = field(default_factory=lambda: Size(256, 256))
    name: str | None = None
    plugin_library: str | None = None
    ssim: bool = False
    progress: bool = True
    outdir: str = "bench"
    report: str | None = None  # also write the sr-report here
    export_dir: str | None = None
    log: list[str] = field(default_factory=list)


@dataclass
class ModelSource:
    """A model resolved outside the runtime (``--model``): an exported file, or a ready predictor."""

    path: str | None = None  # an exported .onnx / .engine to open
    predictor: Predictor | None = None  # e.g. an eager PyTorch model on the torch backend
    key: str | None = None
    random_weights: bool = True
    stats: dict[str, Any] | None = None  # model statistics counted on the torch side
    weights_sha256: str = ""  # of the checkpoint file, when known
    weights_seed: int | None = None  # the seed of random weights, when known


def _stats_for(art: Artifact, size: Size, log: Callable[[str], None]) -> dict[str, Any] | None:
    graph = art.files.get("sr") or art.files.get("onnx")
    if art.graph != "sr" or graph is None:
        log("graph statistics: skipped (no single ONNX graph: an engine without its .onnx beside it, or an "
            "encoder/decoder pair)")
        return None
    role = "sr" if "sr" in art.files else "onnx"
    proto = art.proto(role)  # parsed once by open_artifact/open_predictor
    inp = proto.graph.input[0].type.tensor_type.shape.dim
    static = [d.dim_value if d.HasField("dim_value") else None for d in inp]
    shape = (1, 3, size.h, size.w)
    if len(static) == 4 and static[2] and static[3] and (static[2], static[3]) != (size.h, size.w):
        shape = (1, 3, static[2], static[3])
        log(f"graph statistics: the graph is static at {static[2]}x{static[3]}; counted there, not at {size}")
    st = graph_stats(proto, shape)
    d = st.as_dict()
    log(f"graph statistics at LR {d['input_shape']}: {LABELS['flops']} {flops_g_from_stats(d):.2f} (GMACs, fvcore "
        f"convention; Conv/Gemm/MatMul/plugins only: {st.gmacs:.2f}), {LABELS['params']} {st.params / 1e6:.3f}, "
        f"{LABELS['conv']} {st.num_conv} ({st.shape_source})")
    return d


def _weights_of(art: Artifact | None, cfg: BenchConfig, source: ModelSource | None) -> WeightsIdentity:
    """File sha256 from the artifact record (or of --weights), else "random" with the recorded seed."""
    from srdeploy.cache import sha256_file

    if art is not None and art.record is not None:
        rec = art.record
        # weights_seed arrives with issue 14 part C; read it with a default so older artifacts work
        seed = getattr(rec, "weights_seed", None)
        if seed is None:
            seed = art.manifest.get("weights_seed")
        return WeightsIdentity(rec.weights_sha256, None if rec.weights_sha256 or seed is None else int(seed))
    if source is not None and source.predictor is not None:
        if not source.random_weights:
            sha = source.weights_sha256
            if not sha and cfg.weights and Path(cfg.weights).is_file():
                sha = sha256_file(cfg.weights)
            return WeightsIdentity(sha or f"not recorded ({cfg.weights})")
        return WeightsIdentity("", source.weights_seed)
    if cfg.weights is not None and Path(cfg.weights).is_file():
        return WeightsIdentity(sha256_file(cfg.weights))
    return WeightsIdentity("", None)


def _deviations_of(art: Artifact | None) -> list[dict[str, str]]:
    """How the graph intentionally differs from PyTorch (``ArtifactRecord.deviations``, issue 14 part C)."""
    if art is None:
        return []
    rec = art.record
    devs = getattr(rec, "deviations", None) if rec is not None else None
    if devs is None:
        devs = art.manifest.get("deviations") or ()
    out = []
    for d in devs:
        if isinstance(d, dict) or hasattr(d, "get"):
            out.append({"what": str(d.get("what", "")), "measured": str(d.get("measured", "")),
                        **{str(k): str(v) for k, v in dict(d).items() if k not in ("what", "measured")}})
    return out


def run_bench(cfg: BenchConfig, source: ModelSource | None = None) -> dict[str, Any]:
    """Measure one model per ``cfg`` and write ``results.json``/``results.txt``/``bench.log``.

    ``source``: the model when ``cfg.model`` names a registered one (see the module docstring).
    Returns ``{key: results.json entry}``; the typed record is :func:`bench_result`'s.
    """
    result = bench_result(cfg, source)
    return {result.key: result.to_json()}


def bench_result(cfg: BenchConfig, source: ModelSource | None = None) -> BenchResult:
    """:func:`run_bench`, returning the typed :class:`BenchResult` that was written."""
    from srdeploy.notices import warn, warn_random_weights

    sources = [x for x in (cfg.onnx, cfg.engine, cfg.model) if x]
    if len(sources) != 1:
        raise SrdeployError("give exactly one of --model NAME, --onnx FILE, --engine FILE")
    if cfg.model and source is None:
        raise SrdeployError(
            "--model NAME is resolved by srdeploy.export.bench_source.run_bench_model (needs the export extra); "
            "or export with sr-export and pass --onnx FILE"
        )
    if sum(x is not None for x in (cfg.data, cfg.synthetic, cfg.data_from_image)) != 1:
        raise SrdeployError("give exactly one of --data DIR, --data-from-image IMAGE and --synthetic HxW")
    log_lines = cfg.log

    def log(s: str) -> None:
        log_lines.append(s)

    log(f"sr-bench mode={cfg.mode} backend={cfg.backend or 'auto'} device={cfg.device}")
    tmp: tempfile.TemporaryDirectory[str] | None = None
    try:
        predictor: Predictor
        art: Artifact | None = None
        precision = cfg.precision or "fp32"
        model = ""
        if source is not None and source.predictor is not None:
            predictor, stats = source.predictor, source.stats
            key = cfg.name or source.key or "model"
            model = cfg.model or ""
            scale = int(predictor.scale)
        else:
            path = source.path if source is not None else (cfg.onnx or cfg.engine)
            assert path is not None
            run_opts = RunOptions(device=cfg.device, threads=cfg.threads, plugin_library=cfg.plugin_library)
            predictor, art = open_predictor(path, cfg.backend, run_opts, cfg.scale)
            if cfg.precision and art.record is not None and cfg.precision != art.precision:
                raise SrdeployError(
                    f"{path} is a {art.precision} graph but --precision {cfg.precision} was given; "
                    "export the other precision or drop --precision"
                )
            precision = art.precision
            scale = int(predictor.scale)
            key = cfg.name or art.stem
            model = art.model
            stats = _stats_for(art, cfg.flops_size, log)
        weights = _weights_of(art, cfg, source)
        log(f"weights: {weights.describe()}")
        if weights.random:
            warn_random_weights(f"sr-bench: {key}", weights.seed)
        if cfg.data_from_image is not None:
            if tmp is None:
                tmp = tempfile.TemporaryDirectory(prefix="srbench-")
            data = str(make_crop_sets(cfg.data_from_image, Path(tmp.name) / "data", CROP))
            where = (f"corner crops of {cfg.data_from_image} (valid: top-left, top-right, bottom-left; "
                     "test: bottom-right)")
        elif cfg.data is not None:
            data, where = cfg.data, f"folder {cfg.data} (valid/, test/)"
        else:
            data, where = None, "synthetic uniform-noise LR images (no HR: no PSNR)"
        if data is not None:
            sets = load_sets(data, scale)
        else:
            assert cfg.synthetic is not None
            sets = synthetic_set(cfg.synthetic.h, cfg.synthetic.w, cfg.images, SYNTHETIC_SEED)
        log("sets: " + ", ".join(f"{k}={len(v)} images" for k, v in sets.items()))
        before = host_load()
        with predictor:
            res = measure(predictor, sets, scale, cfg.mode, warmup=cfg.warmup, repeats=cfg.repeats,
                          tiling=cfg.tiling, progress=cfg.progress, log=log, ssim=cfg.ssim)
            info = predictor.describe()
            mem_note = predictor.peak_memory().note
        load = HostLoad(os.cpu_count() or 1, before, host_load())
        lr_method = next((r.lr_source for r in res.values() if r.lr_source), "")
        prov = Provenance(where, lr_method, SYNTHETIC_SEED if data is None else None,
                          Size(CROP, CROP) if cfg.data_from_image is not None else None)
        clock = predictor.timing.clock
        extra: dict[str, Any] = {"data": data or f"synthetic {cfg.synthetic}",
                                 "tiling": None if cfg.tiling is None else vars(cfg.tiling)}
        if art is not None:
            files = {k: str(v) for k, v in art.files.items()}
            extra["artifact"] = {"stem": art.stem, "graph": art.graph, "files": files, "metadata": art.meta}
        result = build_result(
            key, res, mode=cfg.mode, scale=scale, stats=stats, predictor_info=info, clock=clock,
            memory_note=mem_note, precision=precision, weights=weights, model=model,
            backend=str(info.get("backend", "?")), device=str(info.get("device", "?")), provenance=prov,
            load=load, deviations=_deviations_of(art), extra=extra, peaks=cfg.peaks, warmup=cfg.warmup,
            repeats=cfg.repeats,
        )
        log(f"data: {prov.describe(result.sets)}")
        log(f"host: {load.describe()}")
        sp = result.spread
        if sp is not None:
            log(f"spread: {sp.describe()}")
        if result.busy:
            reasons = "; ".join(result.busy_reasons)
            log(f"BUSY MACHINE: {reasons}")
            warn(f"sr-bench: {key} was timed on a busy machine ({reasons}); its runtime is not trustworthy, "
                 "re-run on an idle machine")
        log(f"{key}: {cfg.mode} {LABELS['runtime']} {result.ave_runtime:.2f} ({clock}); memory: {mem_note}")
        write_results(cfg.outdir, [result], log_lines)
        if cfg.report:
            from .report import write_report

            write_report([Path(cfg.outdir) / "results.json"], cfg.report)
        return result
    finally:
        if tmp is not None:
            tmp.cleanup()


def peaks_from(name: str | None, tflops: float | None, gbps: float | None) -> tuple[float, float] | None:
    if name:
        try:
            return DEVICE_PEAKS[name]
        except KeyError:
            raise SrdeployError(f"unknown --device-peak {name!r}; choose one of {', '.join(DEVICE_PEAKS)}") from None
    if tflops is not None and gbps is not None:
        return tflops * 1e12, gbps * 1e9
    if (tflops is None) != (gbps is None):
        raise SrdeployError("give both --peak-tflops and --peak-gbps")
    return None
