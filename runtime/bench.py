"""The library side of ``sr-bench``: open a model, measure it, write the results folder.

:func:`run_bench` measures an exported artifact (``--onnx``/``--engine``) or a prepared
:class:`ModelSource` and needs no PyTorch. A model given by registry name (``--model``) is
resolved on the torch side by :func:`srdeploy.export.bench_source.run_bench_model` (export it, or
build it for the ``torch`` backend), which then calls :func:`run_bench`: this package never
imports ``srdeploy.export`` or ``srdeploy.models``.
"""

from __future__ import annotations

import statistics
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
    build_results,
    load_sets,
    make_crop_sets,
    measure,
    synthetic_set,
    write_results,
)
from .predict import Predictor, open_predictor


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
    log(f"graph statistics at LR {d['input_shape']}: {st.gmacs:.3f} GMACs, {st.params / 1e6:.4f} M params, "
        f"{st.num_conv} Conv ({st.shape_source})")
    return d


def run_bench(cfg: BenchConfig, source: ModelSource | None = None) -> dict[str, Any]:
    """Measure one model per ``cfg`` and write ``results.json``/``results.txt``/``bench.log``.

    ``source``: the model when ``cfg.model`` names a registered one (see the module docstring).
    """
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
        random_weights = cfg.weights is None
        precision = cfg.precision or "fp32"
        if source is not None and source.predictor is not None:
            predictor, random_weights, stats = source.predictor, source.random_weights, source.stats
            key = cfg.name or source.key or "model"
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
            random_weights = art.random_weights if art.record is not None else cfg.weights is None
            scale = int(predictor.scale)
            key = cfg.name or art.stem
            stats = _stats_for(art, cfg.flops_size, log)
        if cfg.data_from_image is not None:
            if tmp is None:
                tmp = tempfile.TemporaryDirectory(prefix="srbench-")
            data = str(make_crop_sets(cfg.data_from_image, Path(tmp.name) / "data"))
            log(f"data: crops of {cfg.data_from_image} (valid 3, test 1; LR by bicubic downscaling)")
        else:
            data = cfg.data
        if data is not None:
            sets = load_sets(data, scale)
        else:
            assert cfg.synthetic is not None
            sets = synthetic_set(cfg.synthetic.h, cfg.synthetic.w, cfg.images)
        log("sets: " + ", ".join(f"{k}={len(v)} images" for k, v in sets.items()))
        with predictor:
            res = measure(predictor, sets, scale, cfg.mode, warmup=cfg.warmup, repeats=cfg.repeats,
                          tiling=cfg.tiling, progress=cfg.progress, log=log, ssim=cfg.ssim)
            info = predictor.describe()
            mem_note = predictor.peak_memory().note
        clock = predictor.timing.clock
        extra: dict[str, Any] = {"backend": info.get("backend"), "device": info.get("device"),
                                 "data": data or f"synthetic {cfg.synthetic}",
                                 "tiling": None if cfg.tiling is None else vars(cfg.tiling)}
        if art is not None:
            files = {k: str(v) for k, v in art.files.items()}
            extra["artifact"] = {"stem": art.stem, "graph": art.graph, "files": files, "metadata": art.meta}
        results = build_results(
            key, res, mode=cfg.mode, scale=scale, stats=stats, predictor_info=info, clock=clock,
            memory_note=mem_note, precision=precision, random_weights=random_weights, extra=extra,
            peaks=cfg.peaks, warmup=cfg.warmup, repeats=cfg.repeats,
        )
        entry = results[key]
        means = [entry[f"{s}_ave_runtime"] for s in res]
        log(f"{key}: {cfg.mode} runtime {statistics.fmean(means):.3f} ms ({clock}); memory: {mem_note}")
        write_results(cfg.outdir, results, log_lines)
        if cfg.report:
            from .report import write_report

            write_report([Path(cfg.outdir) / "results.json"], cfg.report)
        return results
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
