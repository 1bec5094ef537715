"""The library side of ``sr-bench``: open a model, measure it, write the results folder.

:func:`run_bench` is what the CLI and the benchmark suite call; it needs no PyTorch unless the
model is given by registry name (then :mod:`srdeploy.export` is imported lazily to export it) or
the ``torch`` backend is chosen.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srdeploy.errors import MissingDependencyError, SrdeployError
from srdeploy.sizes import Size
from srdeploy.tiling import Tiling

from .artifact import Artifact
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
from .predict import Predictor, open_predictor, torch_predictor
from .runners import OrtOptions


@dataclass
class BenchConfig:
    """Everything ``sr-bench`` needs; ``None`` means "use the default"."""

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


def export_for_bench(model: str, scale: int, weights: str | None, precision: str, outdir: Path) -> Path:
    """Export ``model`` with the project's exporter (imported lazily); return the .onnx path."""
    import importlib

    export_model = None
    for mod in ("srdeploy.export", "srdeploy.export.api"):
        try:
            export_model = getattr(importlib.import_module(mod), "export_model", None)
        except ImportError as exc:
            raise MissingDependencyError(
                f"--model needs the exporter and PyTorch ({exc}); pip install 'srdeploy[export]', or pass --onnx FILE"
            ) from exc
        if export_model is not None:
            break
    if export_model is None:
        raise SrdeployError(
            "this installation's srdeploy.export has no export_model(); export with sr-export and pass --onnx FILE"
        )
    result = export_model(model, scale, weights=weights, outdir=str(outdir), fp16=precision == "fp16")
    for attr in ("onnx_path", "path", "onnx"):
        p = getattr(result, attr, None)
        if p:
            return Path(p)
    if isinstance(result, (str, Path)):
        return Path(result)
    if isinstance(result, dict) and result.get("onnx"):
        return Path(result["onnx"])
    candidates = sorted(outdir.glob("*.onnx"))
    if not candidates:
        raise SrdeployError(f"the exporter wrote no .onnx file into {outdir}")
    return candidates[0]


def _stats_for(art: Artifact, size: Size, log: Callable[[str], None]) -> dict[str, Any] | None:
    graph = art.files.get("sr") or art.files.get("onnx")
    if art.graph != "sr" or graph is None:
        log("graph statistics: skipped (no single ONNX graph: an engine without its .onnx beside it, or an "
            "encoder/decoder pair)")
        return None
    import onnx

    proto = onnx.load(str(graph), load_external_data=False)
    inp = proto.graph.input[0].type.tensor_type.shape.dim
    static = [d.dim_value if d.HasField("dim_value") else None for d in inp]
    shape = (1, 3, size.h, size.w)
    if len(static) == 4 and static[2] and static[3] and (static[2], static[3]) != (size.h, size.w):
        shape = (1, 3, static[2], static[3])
        log(f"graph statistics: the graph is static at {static[2]}x{static[3]}; counted there, not at {size}")
    st = graph_stats(graph, shape)
    d = st.as_dict()
    log(f"graph statistics at LR {d['input_shape']}: {st.gmacs:.3f} GMACs, {st.params / 1e6:.4f} M params, "
        f"{st.num_conv} Conv ({st.shape_source})")
    return d


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Measure one model per ``cfg`` and write ``results.json``/``results.txt``/``bench.log``."""
    sources = [x for x in (cfg.onnx, cfg.engine, cfg.model) if x]
    if len(sources) != 1:
        raise SrdeployError("give exactly one of --model NAME, --onnx FILE, --engine FILE")
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
        if cfg.backend == "torch" and not cfg.model:
            raise SrdeployError("--backend torch runs PyTorch models: give --model NAME (not --onnx/--engine)")
        if cfg.backend == "torch" and precision != "fp32":
            raise SrdeployError("--backend torch measures fp32 eager models (as the NTIRE harness); drop --precision")
        if cfg.model and cfg.backend == "torch":
            predictor, key, random_weights, stats = _torch_path(cfg, log)
            scale = int(predictor.scale)
        else:
            path = cfg.onnx or cfg.engine
            if cfg.model:
                if cfg.scale is None:
                    raise SrdeployError("--model needs --scale")
                out = Path(cfg.export_dir) if cfg.export_dir else None
                if out is None:
                    tmp = tempfile.TemporaryDirectory(prefix="srbench-")
                    out = Path(tmp.name)
                log(f"exporting {cfg.model} x{cfg.scale} ({precision}) into {out}")
                path = str(export_for_bench(cfg.model, cfg.scale, cfg.weights, precision, out))
            assert path is not None
            options = None
            backend = cfg.backend or ("tensorrt" if cfg.engine else "onnxruntime")
            if backend == "onnxruntime":
                options = OrtOptions(device=cfg.device if cfg.device != "cpu" else "cpu", intra_op_threads=cfg.threads)
            predictor, art = open_predictor(path, backend, options, cfg.scale, cfg.plugin_library)
            if cfg.precision and art.get("precision") and cfg.precision != art.precision:
                raise SrdeployError(
                    f"{path} is a {art.precision} graph but --precision {cfg.precision} was given; "
                    "export the other precision or drop --precision"
                )
            precision = art.precision
            random_weights = art.random_weights if (art.meta or art.manifest) else cfg.weights is None
            scale = int(predictor.scale)
            key = cfg.name or art.stem
            stats = _stats_for(art, cfg.flops_size, log)
        if cfg.data_from_image is not None:
            if tmp is None:
                tmp = tempfile.TemporaryDirectory(prefix="srbench-")
            cfg.data = str(make_crop_sets(cfg.data_from_image, Path(tmp.name) / "data"))
            log(f"data: crops of {cfg.data_from_image} (valid 3, test 1; LR by bicubic downscaling)")
        if cfg.data is not None:
            sets = load_sets(cfg.data, scale)
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
                                 "data": cfg.data or f"synthetic {cfg.synthetic}",
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


def _torch_path(cfg: BenchConfig, log: Callable[[str], None]) -> tuple[Predictor, str, bool, dict[str, Any] | None]:
    """``--backend torch --model NAME``: eager PyTorch (the harness's own setting)."""
    try:
        from srdeploy import models
    except ImportError as exc:
        raise MissingDependencyError(f"--backend torch needs PyTorch ({exc}); pip install 'srdeploy[torch]'") from exc
    if cfg.scale is None:
        raise SrdeployError("--model needs --scale")
    m = models.build(cfg.model, cfg.scale, cfg.weights)  # type: ignore[arg-type]
    from srdeploy.models.fusion import fuse_model

    fuse_model(m)
    stats: dict[str, Any] = {"params": sum(p.numel() for p in m.parameters()), "input_shape": str(cfg.flops_size)}
    try:
        from .graphstats import fvcore_gmacs

        stats["gmacs"] = fvcore_gmacs(m, (cfg.flops_size.h, cfg.flops_size.w))
        stats["flops_tool"] = "fvcore FlopCountAnalysis (NTIRE convention)"
    except MissingDependencyError as exc:
        log(f"FLOPs: not counted ({exc})")
    from .graphstats import torch_activations

    stats["activations"], stats["num_conv"] = torch_activations(m, (cfg.flops_size.h, cfg.flops_size.w))
    return (torch_predictor(m, cfg.scale, cfg.device, cudnn_benchmark=cfg.mode == "steady"),
            cfg.name or f"{cfg.model}_x{cfg.scale}_torch", cfg.weights is None, stats)


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
