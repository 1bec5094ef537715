"""``export_model``: registered model -> validated deployment artifact (what ``sr-export`` runs).

Stages, each a small function below, all reading one frozen :class:`~.config.ExportConfig`:
check -> prepare (weights, fusion, plugins) -> ONNX from torch -> graph passes
(:data:`srdeploy.export.passes.PASSES`: native attention, fp16, INT8) -> metadata + ``onnx.checker`` -> validate
in ONNX Runtime against PyTorch -> write ``STEM.onnx`` + ``STEM.json`` atomically -> TensorRT
engine (optional). Encoder/decoder models (CiaoSR) share every stage but ONNX-from-torch and
validation (:mod:`.implicit_export`); one manifest builder serves both.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
from srdeploy.models import Descriptor, descriptor
from srdeploy.models.registry import ShapeProfile

from srdeploy import notices, onnxlayer
from srdeploy.atomic import check_outdir, missing_ancestors, remove_if_empty, staged_dir
from srdeploy.cache import sha256_bytes
from srdeploy.errors import ExportError, ShapeError, SrdeployError
from srdeploy.records import ArtifactRecord
from srdeploy.sizes import Size

from .compare import compare, tolerance_for
from .config import ExportConfig
from .engines.base import DeviceInfo, EngineResult
from .engines.export_step import EngineRequest, build_engine, resolve_engine
from .manifest import BatchedProfile, artifact_stem, polygraphy_command, record, set_metadata, trtexec_command
from .passes import PassContext, run_passes
from .torch2onnx import Prepared, onnx_from_torch, prepare
from .validate import (
    Case,
    Deviation,
    Validation,
    check_model,
    deviation_text,
    measure_deviations,
    validate,
    validation_cases,
)


@dataclass
class ExportResult:
    """What ``export_model`` wrote, and how it validated."""

    stem: str
    outdir: Path
    files: list[Path]
    manifest: dict[str, Any]
    validation: Validation | None
    engine: EngineResult | None = None
    # Reusable by a second call (e.g. derive fp16 without exporting again):
    prepared: Prepared | None = field(default=None, repr=False)
    fp32_graph: onnx.ModelProto | None = field(default=None, repr=False)
    onnx_model: onnx.ModelProto | None = field(default=None, repr=False)

    @property
    def onnx_path(self) -> Path:
        return self.outdir / f"{self.stem}.onnx"

    @property
    def manifest_path(self) -> Path:
        return self.outdir / f"{self.stem}.json"


def check_shape(desc: Descriptor, size: Size, what: str) -> None:
    """An exporter shape must reach the model's minimum and be a multiple of its size multiple."""
    m = desc.size_multiple
    if size.h < desc.min_size or size.w < desc.min_size:
        raise ShapeError(f"{what} {size} is below {desc.name}'s minimum LR size {desc.min_size}x{desc.min_size}")
    if size.h % m or size.w % m:
        up = Size(-(-size.h // m) * m, -(-size.w // m) * m)
        raise ShapeError(
            f"{what} {size} is not a multiple of {desc.name}'s size multiple {m}; use {up} "
            "(the runtime pads images to it)"
        )


def resolve_profile(desc: Descriptor, cfg: ExportConfig) -> tuple[ShapeProfile, bool]:
    """The LR shape profile (from the flags or the descriptor) and whether it came from flags."""
    static, lo, opt, hi = cfg.static, cfg.min_shape, cfg.opt_shape, cfg.max_shape
    given = [s for s in (lo, opt, hi) if s is not None]
    if static is not None and given:
        raise SrdeployError("--static excludes --min-shape/--opt-shape/--max-shape; give one or the other")
    if static is not None:
        check_shape(desc, static, "--static")
        return ShapeProfile(static, static, static), True
    if given:
        if lo is None or opt is None or hi is None:
            raise SrdeployError("give all three of --min-shape, --opt-shape and --max-shape")
        for s, what in ((lo, "--min-shape"), (opt, "--opt-shape"), (hi, "--max-shape")):
            check_shape(desc, s, what)
        if not (lo.h <= opt.h <= hi.h and lo.w <= opt.w <= hi.w):
            raise ShapeError(f"shapes must satisfy min <= opt <= max in H and W, got {lo}, {opt}, {hi}")
        return ShapeProfile(lo, opt, hi), True
    return desc.trt_profile, False


def make_inputs(
    cases: Sequence[Case], image: str | os.PathLike[str] | None, seed: int
) -> list[tuple[Case, np.ndarray]]:
    """Validation inputs: crops of a real image when given, else the project's seeded images."""
    from srdeploy.models._seeding import seeded_input

    real = None
    if image is not None:
        from srdeploy.imageio import read_image

        real, _ = read_image(image)
    out = []
    for i, case in enumerate(cases):
        h, w = case.size
        if real is not None:
            if real.shape[1] < h or real.shape[2] < w:
                raise ShapeError(
                    f"validation image {image} ({real.shape[1]}x{real.shape[2]}) is smaller than {case.size}"
                )
            crops = []
            for b in range(case.batch):
                y = (b * 37 + i * 11) % (real.shape[1] - h + 1)
                x = (b * 53 + i * 17) % (real.shape[2] - w + 1)
                crops.append(real[:, y : y + h, x : x + w])
            arr = np.stack(crops).astype(np.float32)
        else:
            arr = seeded_input((case.batch, 3, h, w), seed + i).numpy()
        out.append((case, np.ascontiguousarray(arr)))
    return out


def torch_reference(module: Any, dtype: str = "float32") -> Any:
    """A numpy callable running ``module`` in PyTorch (``dtype="float64"``: on a float64 copy)."""
    import torch

    if dtype == "float64":
        module = copy.deepcopy(module).double()
    tdtype = torch.float64 if dtype == "float64" else torch.float32

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(x)).to(tdtype)).numpy()

    return run


def _float64_reference(module: Any, probe: np.ndarray) -> Any:
    """The float64 reference, or None where the model cannot run in float64."""
    try:
        fn = torch_reference(module, "float64")
        fn(probe[:1])
    except (RuntimeError, TypeError):
        return None
    return fn


@dataclass(frozen=True)
class _Plan:
    """What the check stage resolved from the config (shared by the later stages)."""

    cfg: ExportConfig
    desc: Descriptor
    profile: ShapeProfile
    from_flags: bool
    out: Path
    t_start: float
    engine: EngineRequest | None = None  # the builder, imported before anything is exported

    @property
    def cases(self) -> list[Case]:
        return validation_cases(self.desc, self.cfg.static, self.profile if self.from_flags else None,
                                self.cfg.options)


def export_model(
    config: ExportConfig | str,
    scale: int | None = None,
    outdir: str | os.PathLike[str] | None = None,
    *,
    reuse: ExportResult | None = None,
    trt_api: ModuleType | None = None,
    device: DeviceInfo | None = None,
    **settings: Any,
) -> ExportResult:
    """Export per ``config`` (or ``export_model(name, scale, outdir, **settings)``); see docs/export.md.

    ``reuse``: a previous result for the same model, scale, weights and shapes; its prepared
    model and fp32 graph are reused (the test suite derives fp16 from fp32 this way). ``trt_api``
    / ``device``: a TensorRT module and GPU to build with (tests pass a recording double). Raises
    an :class:`~srdeploy.errors.SrdeployError` (nothing written) when anything fails.
    """
    cfg = config if isinstance(config, ExportConfig) else ExportConfig.of(
        model=config, scale=scale, outdir=outdir, **settings)
    made = missing_ancestors(Path(cfg.outdir))  # the folders a failed export must not leave behind
    try:
        return _export(cfg, reuse, trt_api, device)
    except BaseException:
        remove_if_empty(made)
        raise


def _export(
    cfg: ExportConfig, reuse: ExportResult | None, trt_api: ModuleType | None, device: DeviceInfo | None
) -> ExportResult:
    """:func:`export_model`'s stages, on one screen."""
    plan = _check(cfg, trt_api)
    prepared, plugin_ops = _prepare(plan, reuse)
    if plan.desc.graph == "encoder+decoder":
        pair = _export_two_graph_model(plan, prepared, plugin_ops)
        _announce_weights(plan, prepared, pair.stem)
        return pair
    base, onnx_facts = _onnx(plan, prepared, reuse)
    inputs = make_inputs(plan.cases, cfg.validation_image, cfg.seed)
    graph, sections, problems = run_passes(base, _pass_context(plan, prepared, inputs))
    plugin_ops = _written_plugins(plan, plugin_ops, {"sr": graph})
    props = _record(plan, prepared, plugin_ops, "sr")
    data = _finalise(graph, props)
    stem = artifact_stem(cfg.model, cfg.scale, cfg.fp16, bool(plugin_ops) or cfg.plugins, cfg.int8)
    validation = _validate_single(plan, prepared, data, inputs, problems, stem) if cfg.run_validation else None
    deviations = _deviations(plan, prepared, validation)
    if deviations:  # the record (metadata and manifest head) carries them: same checked graph, new metadata
        props = _record(plan, prepared, plugin_ops, "sr", deviations)
        data = _with_metadata(graph, props)
    extra = {}
    if validation is not None and cfg.fp16 and plugin_ops:
        extra["fp16_plugins_vs_portable"] = _compare_portable_fp16(plan, prepared, inputs, validation, stem, graph)
    bprof = BatchedProfile.from_shapes(plan.profile, cfg.max_batch)
    libs = _plugin_libs(plugin_ops)
    manifest = build_manifest(
        plan, prepared, plugin_ops, props, stem, validation, inputs, sections,
        graphs={"onnx": _single_graph_section(plan, graph, data, stem, onnx_facts)},
        tensorrt=_tensorrt_section(plan, stem, bprof, libs),
        export_seconds=onnx_facts["seconds"],
        extra=extra,
    )
    fresh = [f for f in (plan.out / f"{stem}.onnx", plan.out / f"{stem}.json") if not f.exists()]
    files = _write(plan.out, {f"{stem}.onnx": data}, stem, manifest)
    result = ExportResult(stem, plan.out, files, manifest, validation, prepared=prepared, fp32_graph=base,
                          onnx_model=graph)
    if plan.engine is not None:
        try:
            _build_engine(plan, result, bprof, libs, device)
        except BaseException:  # the command failed: the .onnx/.json it just created go too (no partial artifact)
            for f in fresh:
                f.unlink(missing_ok=True)
            raise
    _announce_deviations(stem, deviations)
    _announce_weights(plan, prepared, stem)
    return result


def _announce_weights(plan: _Plan, prepared: Prepared, stem: str) -> None:
    """The one random-weights line, once the artifact is written (a failed export says only why)."""
    if prepared.weights_kind == "random":
        notices.warn_random_weights(f"the exported {stem}", plan.cfg.seed)


def _check(cfg: ExportConfig, trt_api: ModuleType | None = None) -> _Plan:
    """Stage 0: the model, scale, precision and shapes make sense; the output folder is writable."""
    t_start = time.perf_counter()
    desc = descriptor(cfg.model)
    desc.check_scale(cfg.scale)
    if cfg.fp16 and not desc.fp16:
        why = f": {desc.fp16_refusal}" if desc.fp16_refusal else " (descriptor fp16=False)"
        raise SrdeployError(f"{cfg.model} does not support fp16 deployment{why}; drop --fp16")
    if cfg.attention == "native" and cfg.plugins:
        raise SrdeployError("--attention native and --plugins are two forms of the same layer; choose one")
    # the engine builder is imported (and plugin graphs refused for TensorRT-RTX) before anything is exported
    engine = resolve_engine(cfg.engine, trt_api=trt_api, plugins=cfg.plugins,
                            compute_capabilities=cfg.compute_capabilities, strip_weights=cfg.strip_weights)
    if cfg.plugins and not desc.plugin_points:
        raise SrdeployError(f"{cfg.model} has no TensorRT plugin points (descriptor plugin_points=()); drop --plugins")
    profile, from_flags = resolve_profile(desc, cfg)
    out = Path(cfg.outdir)
    check_outdir(out)
    return _Plan(cfg, desc, profile, from_flags, out, t_start, engine)


def _prepare(plan: _Plan, reuse: ExportResult | None) -> tuple[Prepared, list[str]]:
    """Stage 1: weights, fusion, plugin swap (or the prepared model of ``reuse``)."""
    cfg = plan.cfg
    if reuse is not None and reuse.prepared is not None and reuse.fp32_graph is not None:
        return reuse.prepared, list(reuse.manifest.get("plugins", []))
    prepared = prepare(cfg.model, cfg.scale, cfg.weights, cfg.options, cfg.seed, dynamic=cfg.static is None)
    if cfg.attention == "native":  # the cores write placeholders; the native_attention pass makes them Attention
        from .native_attention import apply_native_attention

        apply_native_attention(prepared, cfg.opset_or_default, cfg.plugins)
    plugin_ops: list[str] = []
    if cfg.plugins:
        from srdeploy.plugins import apply_plugins

        plugin_ops = list(apply_plugins(prepared.module))
        if sorted(plugin_ops) != sorted(plan.desc.plugin_points):
            raise ExportError(
                f"{cfg.model} declares plugin points {list(plan.desc.plugin_points)} but the plugin swap found "
                f"{plugin_ops}; fix the descriptor or the model's plugin attributes"
            )
    return prepared, plugin_ops


def _onnx(plan: _Plan, prepared: Prepared, reuse: ExportResult | None) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Stage 2: the fp32 ONNX graph from torch (or the fp32 graph of ``reuse``)."""
    if reuse is not None and reuse.prepared is not None and reuse.fp32_graph is not None:
        return reuse.fp32_graph, {"exporter": "reuse", "seconds": 0.0, "notes": ()}
    import torch

    cfg, desc = plan.cfg, plan.desc
    lo = plan.profile.min if plan.from_flags else Size(max(desc.min_size, 16), max(desc.min_size, 16))
    example = torch.from_numpy(make_inputs([Case(2, lo)], None, cfg.seed)[0][1])  # N=2: N=1 would specialise
    dyn: dict[str, dict[int, tuple[str, int]]] = {"lr": {0: ("N", 1)}}
    if cfg.static is None:
        dyn["lr"].update({2: ("H", max(desc.min_size, 2)), 3: ("W", max(desc.min_size, 2))})
    opset = cfg.opset_or_default
    if cfg.attention == "native":
        from srdeploy.models.attention import NATIVE_MIN_OPSET

        opset = max(opset, NATIVE_MIN_OPSET)
    exported = onnx_from_torch(prepared.module, (example,), dynamic_axes=dyn, opset=opset, exporter=cfg.exporter)
    return exported.model, {"exporter": exported.exporter, "seconds": exported.seconds, "notes": exported.notes}


def _pass_context(plan: _Plan, prepared: Prepared, inputs: list[tuple[Case, np.ndarray]]) -> PassContext:
    precision = plan.cfg.precision
    return PassContext(
        config=plan.cfg,
        descriptor=plan.desc,
        calibration=inputs[0][1],
        reference=torch_reference(prepared.reference),
        tolerance=tolerance_for(precision, prepared.weights_kind),
        weights_kind=prepared.weights_kind,
        psnr=lambda out, ref: compare(out, ref).psnr_db,
    )


def _record(
    plan: _Plan, prepared: Prepared, plugin_ops: list[str], graph: str, deviations: Sequence[Deviation] = ()
) -> ArtifactRecord:
    two = graph != "sr"
    return record(
        desc=plan.desc,
        scale=prepared.scale,
        hparams=prepared.hparams,
        weights_sha256=prepared.weights_sha256,
        fusions=prepared.fusions,
        precision=plan.cfg.precision if not two else "fp32",
        io_dtype="float16" if plan.cfg.fp16_io and not two else "float32",
        graph=graph,
        plugins=plugin_ops,
        deviations=[d.as_record() for d in deviations],
        weights_seed=plan.cfg.seed if prepared.weights_kind == "random" else None,
    )


def _with_metadata(graph: onnx.ModelProto, props: ArtifactRecord) -> bytes:
    """``props`` as the metadata of ``graph`` (already through ``onnx.checker``), serialised."""
    set_metadata(graph, props)
    return graph.SerializeToString()


def _deviations(plan: _Plan, prepared: Prepared, validation: Validation | None) -> list[Deviation]:
    """The declared deviations of this export (measured by validation, else "not measured")."""
    if not prepared.replaced_paths:
        return []
    opts = plan.cfg.options
    return list(validation.deviations if validation is not None else [
        Deviation(p.name, deviation_text(p, opts), None) for p in prepared.replaced_paths])


def _announce_deviations(stem: str, deviations: Sequence[Deviation]) -> None:
    """One warning line on stderr per declared deviation, once the artifact is written."""
    for d in deviations:
        notices.warn(f"{stem} intentionally differs from the PyTorch model: {d.what}; {d.measured} "
                     "(declared, not a failure; --static HxW keeps the exact form)")


def _finalise(graph: onnx.ModelProto, props: ArtifactRecord) -> bytes:
    """Metadata on a copy (the passes' input stays untouched for ``reuse``), onnx.checker, bytes."""
    graph_copy = onnx.ModelProto()
    graph_copy.CopyFrom(graph)
    set_metadata(graph_copy, props)
    check_model(graph_copy)
    set_metadata(graph, props)
    return graph_copy.SerializeToString()


def _validate_single(
    plan: _Plan, prepared: Prepared, data: bytes, inputs: list[tuple[Case, np.ndarray]], problems: list[str],
    stem: str,
) -> Validation:
    """Stage 4: the graph in ONNX Runtime against PyTorch at every validation size."""
    precision = plan.cfg.precision
    tol = tolerance_for(precision, prepared.weights_kind)
    session = onnxlayer.session(data, onnxlayer.SessionConfig(intra_op_threads=2))
    ref64 = _float64_reference(prepared.reference, inputs[0][1]) if precision == "fp32" else None
    validation = validate(session, torch_reference(prepared.reference), inputs, precision, tol,
                          np.float16 if plan.cfg.fp16_io else np.float32, reference64=ref64)
    validation.failures.extend(problems)
    if not validation.passed:
        raise ExportError(f"validation of {stem} failed, nothing written: " + "; ".join(validation.failures[:4]))
    if prepared.as_built is not None and prepared.replaced_paths:
        validation.deviations = measure_deviations(
            session, torch_reference(prepared.as_built), inputs, prepared.replaced_paths, plan.cfg.options,
            np.float16 if plan.cfg.fp16_io else np.float32, validation.path_outputs)
    return validation


# ---- issue 12: the fp16 plugin graph against the portable fp16 graph (one place in this file)


END_TO_END_PLUGIN_MARGIN_DB = 1.0


def end_to_end_plugin_gate(plugin_db: float, portable_db: float, weights_kind: str) -> tuple[bool, str]:
    """Whether the end-to-end "plugin fp16 within 1 dB of portable fp16" gate applies, and why.

    It applies to trained weights. On seeded random weights equally accurate fp16 roundings of the
    attention output move the worst-case PSNR over a ~4 dB band (measured in docs/plugins.md: the
    network's fp32 islands carry values up to 1e6 and amplify last-bit noise), so there the
    per-node gate decides and the end-to-end delta is only reported.
    """
    delta = plugin_db - portable_db
    if weights_kind == "random":
        return False, (f"reported, not gated (delta {delta:+.2f} dB): seeded random weights amplify fp16 "
                       "rounding noise; the per-node gate decides")
    return True, f"plugin fp16 within {END_TO_END_PLUGIN_MARGIN_DB} dB of portable fp16 (delta {delta:+.2f} dB)"


def _compare_portable_fp16(
    plan: _Plan, prepared: Prepared, inputs: list[tuple[Case, np.ndarray]], plugin_validation: Validation, stem: str,
    plugin_graph: onnx.ModelProto,
) -> dict[str, Any]:
    """Validate the portable fp16 graph (same model, weights and fp16 pass, no plugins) through the
    same gate against the same PyTorch fp32 reference and report both worst-case PSNRs; then
    measure every fp16 plugin node where it makes its error (:func:`fp16.plugin_node_precision`,
    on the calibration input) and refuse the export when a node costs more than
    ``PLUGIN_LOCAL_MARGIN_DB`` over the fp16 floor. On trained weights the plugin graph must also be
    within ``END_TO_END_PLUGIN_MARGIN_DB`` of the portable fp16 graph end to end; on seeded weights
    that delta is reported, not gated (:func:`end_to_end_plugin_gate`)."""
    from .fp16 import PLUGIN_LOCAL_MARGIN_DB, plugin_node_precision

    cfg = plan.cfg
    portable = prepare(cfg.model, cfg.scale, cfg.weights, cfg.options, cfg.seed, dynamic=cfg.static is None)
    base, _ = _onnx(plan, portable, None)
    graph, _, problems = run_passes(base, _pass_context(plan, portable, inputs))
    tol = tolerance_for("fp16", prepared.weights_kind)
    session = onnxlayer.session(graph, onnxlayer.SessionConfig(intra_op_threads=2))
    val = validate(session, torch_reference(prepared.reference), inputs, "fp16", tol,
                   np.float16 if cfg.fp16_io else np.float32)
    val.failures.extend(problems)
    if not val.passed or val.worst is None or plugin_validation.worst is None:
        raise ExportError(
            f"{stem}: the portable fp16 graph (the plugin graph's yardstick) failed validation, nothing written: "
            + "; ".join(val.failures[:3])
        )
    io = np.float16 if cfg.fp16_io else np.float32
    nodes = plugin_node_precision(plugin_graph, [{plugin_graph.graph.input[0].name: inputs[0][1].astype(io)}])
    bad = [n for n in nodes if not n["passed"]]
    if bad:
        worst = min(bad, key=lambda n: n["node_db"] - n["floor_db"])
        raise ExportError(
            f"{stem}: fp16 plugin node {worst['node']} is {worst['cost_db']:.2f} dB above the fp16 floor "
            f"({worst['node_db']:.2f} vs {worst['floor_db']:.2f} dB, allowed {PLUGIN_LOCAL_MARGIN_DB}); nothing "
            "written. Export without --plugins, or fix the plugin kernel"
        )
    got, ref = plugin_validation.worst.psnr_db, val.worst.psnr_db
    gated, gate_note = end_to_end_plugin_gate(got, ref, prepared.weights_kind)
    if gated and got < ref - END_TO_END_PLUGIN_MARGIN_DB:
        raise ExportError(
            f"{stem}: the fp16 plugin graph is {ref - got:.2f} dB below the portable fp16 graph on trained weights "
            f"({got:.2f} vs {ref:.2f} dB worst case, allowed {END_TO_END_PLUGIN_MARGIN_DB}); nothing written. "
            "Export without --plugins, or fix the plugin kernel"
        )
    return {
        "reference": "PyTorch fp32",
        "plugins_fp16": {"psnr_db": round(got, 3), "max_rel_err": plugin_validation.worst.max_rel_err},
        "portable_fp16": {"psnr_db": round(ref, 3), "max_rel_err": val.worst.max_rel_err,
                          "cases": [{"input": str(c), **cmp.as_dict()} for c, cmp in val.results]},
        "delta_db": round(got - ref, 3),
        "plugin_nodes": nodes,
        "gate": f"each fp16 plugin node within {PLUGIN_LOCAL_MARGIN_DB} dB of the fp16 floor on the calibration input",
        "end_to_end_gated": gated,
        "end_to_end_gate": gate_note,
        "passed": True,
    }


def _single_graph_section(
    plan: _Plan, graph: onnx.ModelProto, data: bytes, stem: str, facts: dict[str, Any]
) -> dict[str, Any]:
    cfg = plan.cfg
    io_dtype = "float16" if cfg.fp16_io else "float32"
    return {
        "file": f"{stem}.onnx",
        "sha256": sha256_bytes(data),
        "opset": next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), cfg.opset_or_default),
        "ir_version": graph.ir_version,
        "exporter": facts["exporter"],
        "exporter_notes": list(facts["notes"]),
        "input": {
            "name": "lr",
            "dtype": io_dtype,
            "layout": "N,3,H,W RGB [0,1]",
            "dynamic": "N" if cfg.static is not None else "N,H,W",
        },
        "output": {"name": "sr", "dtype": io_dtype, "layout": f"N,3,{cfg.scale}H,{cfg.scale}W"},
        "nodes": len(graph.graph.node),
    }


def _tensorrt_section(plan: _Plan, stem: str, bprof: BatchedProfile, libs: list[str]) -> dict[str, Any]:
    cfg = plan.cfg
    tol = 1e-2 if cfg.precision != "fp32" else 1e-3
    return {
        "trtexec": trtexec_command(f"{stem}.onnx", f"{stem}.engine", bprof, workspace_mib=cfg.workspace,
                                   opt_level=cfg.level, plugin_libs=libs),
        "polygraphy": polygraphy_command(f"{stem}.onnx", bprof, plugin_libs=libs, atol=tol, rtol=tol),
        "plugin_libraries": libs,
        "strongly_typed": True,
        "note": "precision comes from the graph's tensor types (no fp16 builder flag)",
    }


def build_manifest(
    plan: _Plan,
    prepared: Prepared,
    plugin_ops: list[str],
    props: ArtifactRecord,
    stem: str,
    validation: Validation | None,
    inputs: Sequence[tuple[Case, np.ndarray]],
    sections: dict[str, dict[str, Any] | None],
    *,
    graphs: dict[str, Any],
    tensorrt: dict[str, Any] | None = None,
    export_seconds: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The one manifest builder (single-graph and encoder/decoder exports).

    ``graphs``: ``{"onnx": ...}`` for one graph, ``{"graphs": ..., "onnx": ...}`` for a pair;
    ``sections``: each graph pass's own section (``None`` where it did not run).
    """
    desc = plan.desc
    bprof = BatchedProfile.from_shapes(plan.profile, plan.cfg.max_batch)
    manifest: dict[str, Any] = {
        "stem": stem,
        **props.to_manifest(),
        "weights": {
            "kind": prepared.weights_kind,
            "sha256": prepared.weights_sha256,
            "file": os.path.basename(prepared.weights_path) if prepared.weights_path else None,
            "license": desc.weights_license,
            "seed": props.weights_seed,
        },
        **graphs,
        "model_notes": list(prepared.notes),
        **(extra or {}),
        "shape_constraints": {"min_size": desc.min_size, "size_multiple": desc.size_multiple},
        "trt_profile": {**bprof.as_dict(), "source": "flags" if plan.from_flags else "descriptor"},
        "validation": validation.as_dict() if validation else {"skipped": True},
        "sizes_validated": [str(c) for c, _ in inputs] if validation else [],
        **sections,
    }
    if tensorrt is not None:
        manifest["tensorrt"] = tensorrt
    manifest["export_seconds"] = round(export_seconds, 3)
    manifest["total_seconds"] = round(time.perf_counter() - plan.t_start, 3)
    return manifest


def _write(out: Path, blobs: dict[str, bytes], stem: str, manifest: dict[str, Any]) -> list[Path]:
    """Stage 5: every file of the artifact, atomically (all or nothing)."""
    with staged_dir(out) as stage:
        for name, data in blobs.items():
            (stage / name).write_bytes(data)
        (stage / f"{stem}.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return [out / name for name in blobs] + [out / f"{stem}.json"]


def _build_engine(
    plan: _Plan, result: ExportResult, bprof: BatchedProfile, libs: list[str], device: DeviceInfo | None
) -> None:
    """Stage 6: the engine in the chosen flavour (export/engines/), cached by content; its manifest section."""
    assert plan.engine is not None
    cfg = plan.cfg
    result.engine = build_engine(
        plan.engine, result.onnx_path, result.manifest_path, result.manifest, bprof, workspace_mib=cfg.workspace,
        workspace_given=cfg.workspace_mib is not None, opt_level=cfg.level, plugin_libs=libs,
        cache_dir=cfg.cache_dir, device=device,
    )
    result.files += [result.engine.engine_path, result.engine.sidecar_path]


def _written_plugins(plan: _Plan, swapped: Sequence[str], graphs: dict[str, onnx.ModelProto]) -> list[str]:
    """The plugin ops the written graphs hold (what the manifest, metadata, trtexec and Polygraphy
    commands name), checked against the plugin swap: every swapped plugin must appear in some
    graph and no graph may hold a plugin that was not swapped in."""
    held = {role: onnxlayer.custom_ops(g) for role, g in graphs.items()}
    written = sorted({op for ops in held.values() for op in ops})
    if sorted(swapped) != written:
        where = ", ".join(f"{role}: {ops or 'none'}" for role, ops in held.items())
        raise ExportError(
            f"{plan.cfg.model}: the plugin swap put in {sorted(swapped) or 'none'} but the exported graphs hold "
            f"plugin nodes {where}; nothing written. The exporter traced around the plugin emitter "
            "(see srdeploy.plugins.onnx_ops); try --exporter torchscript"
        )
    return written


def _plugin_libs(plugin_ops: Sequence[str]) -> list[str]:
    if not plugin_ops:
        return []
    from srdeploy.plugins import library_path

    return [str(library_path())]


def _export_two_graph_model(plan: _Plan, prepared: Prepared, plugin_ops: list[str]) -> ExportResult:
    """CiaoSR-style models: ``STEM.encoder.onnx`` + ``STEM.decoder.onnx`` + ``STEM.json``."""
    from .implicit_export import export_two_graphs, validate_two_graphs

    cfg, desc = plan.cfg, plan.desc
    if cfg.engine:
        raise SrdeployError(
            f"--engine is not implemented for the two-graph {desc.name} export; build each graph with the "
            "manifest's trtexec commands"
        )
    if cfg.fp16 or cfg.int8:
        flag = "--int8" if cfg.int8 else "--fp16"
        raise SrdeployError(f"{flag} is not implemented for the two-graph {desc.name} export; drop {flag}")
    m = desc.size_multiple
    lo = -(-max(desc.min_size, 16) // m) * m
    graphs = export_two_graphs(prepared, lo, cfg.opset_or_default, cfg.exporter, cfg.seed)
    plugin_ops = _written_plugins(plan, plugin_ops, {"encoder": graphs.encoder, "decoder": graphs.decoder})
    stem = artifact_stem(desc.name, prepared.scale, False, bool(plugin_ops))
    inputs = make_inputs(plan.cases, cfg.validation_image, cfg.seed)
    blobs: dict[str, bytes] = {}
    for role, g in (("encoder", graphs.encoder), ("decoder", graphs.decoder)):
        blobs[f"{stem}.{role}.onnx"] = _finalise(g, _record(plan, prepared, plugin_ops, role))
    validation = None
    if cfg.run_validation:
        tol = tolerance_for("fp32", prepared.weights_kind)
        validation = validate_two_graphs(
            prepared, graphs.encoder, graphs.decoder, inputs, tol, (float(prepared.scale), prepared.scale + 0.5)
        )
        if not validation.passed:
            raise ExportError(f"validation of {stem} failed, nothing written: " + "; ".join(validation.failures[:4]))

    def channels(g: onnx.ModelProto, name: str) -> int:
        inp = next(i for i in g.graph.input if i.name == name)
        return int(inp.type.tensor_type.shape.dim[1].dim_value)

    ck, cv = channels(graphs.decoder, "feat_k"), channels(graphs.decoder, "feat_v")
    p = plan.profile
    chunk = int(desc.hparams.get("eval_bsize", 30000))
    enc_shapes = {"lr": {"min": (1, 3, *p.min), "opt": (1, 3, *p.opt), "max": (1, 3, *p.max)}}
    dec_shapes = {
        name: {"min": (1, c, *p.min), "opt": (1, c, *p.opt), "max": (1, c, *p.max)}
        for name, c in (("feat_k", ck), ("feat_v", cv), ("lr", 3))
    }
    dec_shapes.update({k: {"min": (1, 1, 2), "opt": (1, chunk, 2), "max": (1, chunk, 2)} for k in ("coord", "cell")})
    graph_sections = {
        role: {
            "file": f"{stem}.{role}.onnx",
            "sha256": sha256_bytes(blobs[f"{stem}.{role}.onnx"]),
            "inputs": [i.name for i in g.graph.input],
            "outputs": [o.name for o in g.graph.output],
            "trtexec": trtexec_command(f"{stem}.{role}.onnx", f"{stem}.{role}.engine", shapes,
                                       workspace_mib=cfg.workspace, opt_level=cfg.level,
                                       plugin_libs=_plugin_libs(onnxlayer.custom_ops(g))),
            "polygraphy": polygraphy_command(f"{stem}.{role}.onnx", shapes,
                                             plugin_libs=_plugin_libs(onnxlayer.custom_ops(g))),
            "plugins": onnxlayer.custom_ops(g),
        }
        for role, g, shapes in (("encoder", graphs.encoder, enc_shapes), ("decoder", graphs.decoder, dec_shapes))
    }
    props = _record(plan, prepared, plugin_ops, "encoder+decoder")
    manifest = build_manifest(
        plan, prepared, plugin_ops, props, stem, validation, inputs,
        {"attention": {"form": "portable"}, "fp16": None, "int8": None},
        graphs={
            "graphs": graph_sections,
            "onnx": {"opset": cfg.opset_or_default, "ir_version": graphs.encoder.ir_version,
                     "exporter": graphs.exporter, "exporter_notes": list(graphs.notes)},
        },
        extra={"runtime": "srdeploy.implicit.decode_image drives the decoder in chunks of "
                          f"{chunk} queries; any scale (integer or not) uses the same pair"},
        export_seconds=graphs.seconds,
    )
    files = _write(plan.out, blobs, stem, manifest)
    return ExportResult(stem, plan.out, files, manifest, validation, prepared=prepared, fp32_graph=None,
                        onnx_model=graphs.decoder)
