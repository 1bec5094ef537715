"""``export_model``: registered model -> validated deployment artifact (what ``sr-export`` runs).

Stages (each a small callable, ``None`` meaning "the default"):
prepare (weights, fusion) -> onnx_from_torch -> fp16 pass (optional) -> onnx.checker ->
validate in ONNX Runtime against PyTorch -> write ``STEM.onnx`` + ``STEM.json`` atomically ->
``EngineFromOnnx`` (optional).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
from srdeploy.models import Descriptor, descriptor
from srdeploy.models.registry import ShapeProfile

from srdeploy.atomic import staged_dir
from srdeploy.errors import ExportError, ShapeError, SrdeployError
from srdeploy.sizes import Size, parse_size

from . import fp16 as fp16_pass
from .compare import compare, tolerance_for
from .engines.base import DeviceInfo, EngineResult
from .manifest import (
    BatchedProfile,
    artifact_stem,
    metadata,
    polygraphy_command,
    set_metadata,
    sha256_bytes,
    trtexec_command,
)
from .torch2onnx import Exporter, Prepared, onnx_from_torch, prepare
from .validate import Case, Validation, check_model, ort_session, validate, validation_cases

DEFAULT_OPSET = 18
FP16_MIN_MAC_FRACTION = 0.90
FP16_PSNR_MARGIN_DB = 3.0  # escalate islands until fp16 beats the tolerance by this margin
FP16_MAX_ROUNDS = 4


@dataclass
class ExportResult:
    """What ``export_model`` wrote, and how it validated."""

    stem: str
    outdir: Path
    files: list[Path]
    manifest: dict[str, Any]
    validation: Validation | None
    fp16_report: fp16_pass.Fp16Report | None
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


def _as_size(v: Size | str | None) -> Size | None:
    if v is None or isinstance(v, Size):
        return v
    return parse_size(v)


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


def resolve_profile(
    desc: Descriptor,
    static: Size | None,
    min_shape: Size | None,
    opt_shape: Size | None,
    max_shape: Size | None,
) -> tuple[ShapeProfile, bool]:
    """The LR shape profile (from the flags or the descriptor) and whether it came from flags."""
    given = [s for s in (min_shape, opt_shape, max_shape) if s is not None]
    if static is not None and given:
        raise SrdeployError("--static excludes --min-shape/--opt-shape/--max-shape; give one or the other")
    if static is not None:
        check_shape(desc, static, "--static")
        return ShapeProfile(static, static, static), True
    if given:
        if len(given) != 3:
            raise SrdeployError("give all three of --min-shape, --opt-shape and --max-shape")
        assert min_shape and opt_shape and max_shape
        for s, what in ((min_shape, "--min-shape"), (opt_shape, "--opt-shape"), (max_shape, "--max-shape")):
            check_shape(desc, s, what)
        if not (min_shape.h <= opt_shape.h <= max_shape.h and min_shape.w <= opt_shape.w <= max_shape.w):
            raise ShapeError(
                f"shapes must satisfy min <= opt <= max in H and W, got {min_shape}, {opt_shape}, {max_shape}"
            )
        return ShapeProfile(min_shape, opt_shape, max_shape), True
    return desc.trt_profile, False


def _check_outdir(outdir: Path) -> None:
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SrdeployError(
            f"cannot create output directory {outdir} ({exc.strerror}); choose another with -o"
        ) from exc
    if not os.access(outdir, os.W_OK):
        raise SrdeployError(f"output directory {outdir} is not writable; choose another with -o")


def make_inputs(
    cases: Sequence[Case], image: str | os.PathLike[str] | None, seed: int
) -> list[tuple[Case, np.ndarray]]:
    """Validation inputs: crops of a real image when given, else the project's seeded images."""
    from srdeploy.models._testing import seeded_input

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
    import copy

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


def derive_fp16(
    graph: onnx.ModelProto,
    calib: np.ndarray,
    reference: np.ndarray,
    target_psnr_db: float,
    *,
    io_fp16: bool = False,
) -> tuple[onnx.ModelProto, fp16_pass.Fp16Report, list[dict[str, Any]]]:
    """The fp16 graph pass with measurement-driven islands.

    Round 0 keeps the sensitive ops and the measured overflow tensors in fp32. While the fp16
    graph's PSNR (against fp32 PyTorch, on ``calib``) misses ``target + margin``, the nodes whose
    own error gain is largest become fp32 islands too.
    """
    in_name = graph.graph.input[0].name
    feed = {in_name: calib}
    extra: dict[str, str] = {}
    history: list[dict[str, Any]] = []
    for rnd in range(FP16_MAX_ROUNDS):
        proto, report, info = fp16_pass.convert(graph, feed, io_fp16=io_fp16, extra_islands=extra)
        feed16 = {in_name: calib.astype(np.float16 if io_fp16 else np.float32)}
        sess = ort_session(proto.SerializeToString())
        out = sess.run(None, feed16)[0].astype(np.float32)
        psnr = compare(out, reference).psnr_db
        history.append({"round": rnd, "psnr_db": round(psnr, 3), "islands": len(report.islands)})
        if psnr >= target_psnr_db + FP16_PSNR_MARGIN_DB or rnd == FP16_MAX_ROUNDS - 1:
            return proto, report, history
        island_names = {i.node for i in report.islands}
        candidates = [
            idx
            for idx in sorted(info.data_nodes)
            if fp16_pass._node_name(graph_nodes(graph)[idx], idx) not in island_names
        ]
        gains = fp16_pass.error_gain(graph, proto, info, feed, feed16, candidates)
        ranked = sorted(gains.items(), key=lambda kv: -kv[1])
        nodes = graph_nodes(graph)
        producer = {out: i for i, n in enumerate(nodes) for out in n.output}
        added = 0
        for idx, gain in ranked:
            if gain < 2.0 or added >= 4:
                break
            node = nodes[idx]
            extra[fp16_pass._node_name(node, idx)] = f"precision: measured error gain {gain:.1f}x"
            added += 1
            # A gate (sigmoid/softmax) amplifies the *absolute* fp16 error of its input, so the
            # Conv/MatMul computing that input joins the island.
            for name in node.input:
                j = producer.get(name)
                if j is not None and j in info.data_nodes and nodes[j].op_type in ("Conv", "MatMul", "Gemm"):
                    extra.setdefault(fp16_pass._node_name(nodes[j], j), f"precision: feeds {node.op_type} island")
        if not added:
            return proto, report, history
    raise AssertionError("unreachable")


def graph_nodes(graph: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes as the fp16 pass indexes them (Constant nodes folded into initializers)."""
    import copy

    return list(fp16_pass.constants_to_initializers(copy.deepcopy(graph)).graph.node)


def _manifest_head(
    stem: str, props: dict[str, str], desc: Descriptor, prepared: Prepared, plugin_ops: list[str]
) -> dict[str, Any]:
    """The manifest fields shared by single-graph and encoder/decoder artifacts."""
    return {
        "stem": stem,
        **{k.removeprefix("srdeploy."): v for k, v in props.items()},
        "descriptor": desc.as_dict(),
        "hparams": prepared.hparams,
        "fusions": prepared.fusions,
        "plugins": plugin_ops,
        "weights": {
            "kind": prepared.weights_kind,
            "sha256": prepared.weights_sha256,
            "file": os.path.basename(prepared.weights_path) if prepared.weights_path else None,
            "license": desc.weights_license,
        },
    }


def export_model(
    model: str,
    scale: int,
    outdir: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    fp16: bool = False,
    fp16_io: bool = False,
    opset: int = DEFAULT_OPSET,
    static: Size | str | None = None,
    min_shape: Size | str | None = None,
    opt_shape: Size | str | None = None,
    max_shape: Size | str | None = None,
    max_batch: int = 1,
    run_validation: bool = True,
    engine: bool | str = False,
    plugins: bool = False,
    options: Mapping[str, Any] | None = None,
    exporter: Exporter = "auto",
    validation_image: str | os.PathLike[str] | None = None,
    seed: int = 0,
    reuse: ExportResult | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    trt_api: ModuleType | None = None,
    device: DeviceInfo | None = None,
    workspace_mib: int = 4096,
    opt_level: int = 3,
    compute_capabilities: Sequence[str] = (),
    attention: str = "portable",
) -> ExportResult:
    """Export registered ``model`` at ``scale`` into ``outdir``; see docs/export.md.

    ``reuse``: a previous result for the same model, scale, weights and shapes; its prepared
    model and fp32 graph are reused (the test suite derives fp16 from fp32 this way). Raises an
    :class:`~srdeploy.errors.SrdeployError` (nothing written) when anything fails.
    """
    t_start = time.perf_counter()
    desc = descriptor(model)
    desc.check_scale(scale)
    if fp16_io and not fp16:
        raise SrdeployError("--fp16-io needs --fp16")
    if fp16 and not desc.fp16:
        raise SrdeployError(f"{model} does not support fp16 deployment (descriptor fp16=False); drop --fp16")
    if max_batch < 1:
        raise SrdeployError("--max-batch must be >= 1")
    static_s = _as_size(static)
    profile, from_flags = resolve_profile(desc, static_s, _as_size(min_shape), _as_size(opt_shape), _as_size(max_shape))
    out = Path(outdir)
    _check_outdir(out)
    # issue 13: the engine builder is imported (and plugin graphs refused for TensorRT-RTX) first
    from .engines.export_step import build_engine, resolve_engine

    engine_req = resolve_engine(engine, trt_api=trt_api, plugins=plugins, compute_capabilities=compute_capabilities)
    if attention not in ("portable", "native"):
        raise SrdeployError(f"--attention must be portable or native, not {attention!r}")

    # 1. prepare (weights, fusion, plugins)
    if reuse is not None and reuse.prepared is not None and reuse.fp32_graph is not None:
        prepared, base, exporter_used, export_s, notes = reuse.prepared, reuse.fp32_graph, "reuse", 0.0, ()
        plugin_ops = list(reuse.manifest.get("plugins", []))
    else:
        prepared = prepare(model, scale, weights, options, seed, dynamic=static_s is None)
        if attention == "native":  # issue 13: ONNX Attention (opset 23) instead of matmul/softmax/matmul
            from .native_attention import apply_native_attention

            opset = apply_native_attention(prepared, opset, plugins)
        plugin_ops = []
        if plugins:
            from srdeploy import plugins as plugin_pkg

            apply = getattr(plugin_pkg, "apply_plugins", None)
            if apply is None:
                raise SrdeployError("--plugins needs srdeploy.plugins.apply_plugins, which this install lacks")
            plugin_ops = list(apply(prepared.module))
        from .implicit_export import is_two_graph

        if is_two_graph(prepared.module):
            return _export_two_graph_model(
                prepared,
                out,
                opset=opset,
                exporter=exporter,
                seed=seed,
                run_validation=run_validation,
                engine=engine,
                plugin_ops=plugin_ops,
                validation_image=validation_image,
                profile=profile,
                from_flags=from_flags,
                static_s=static_s,
                t_start=t_start,
                workspace_mib=workspace_mib,
                opt_level=opt_level,
            )
        import torch

        lo = profile.min if from_flags else Size(max(desc.min_size, 16), max(desc.min_size, 16))
        example = torch.from_numpy(make_inputs([Case(2, lo)], None, seed)[0][1])  # N=2: N=1 would specialise
        dyn: dict[str, dict[int, tuple[str, int]]] = {"lr": {0: ("N", 1)}}
        if static_s is None:
            dyn["lr"].update({2: ("H", max(desc.min_size, 2)), 3: ("W", max(desc.min_size, 2))})
        exported = onnx_from_torch(prepared.module, (example,), dynamic_axes=dyn, opset=opset, exporter=exporter)
        base, exporter_used, export_s, notes = exported.model, exported.exporter, exported.seconds, exported.notes
        if attention == "native":
            from .native_attention import to_native_attention

            base = to_native_attention(base)

    precision = "fp16" if fp16 else "fp32"
    tol = tolerance_for(precision, prepared.weights_kind)
    cases = validation_cases(desc, static_s, profile if from_flags else None)
    inputs = make_inputs(cases, validation_image, seed)
    ref_fn = torch_reference(prepared.reference)

    # 2. fp16 pass
    report = None
    fp16_history: list[dict[str, Any]] = []
    graph = base
    if fp16:
        calib = inputs[0][1]
        target = tol.min_psnr_db if tol.min_psnr_db is not None else 40.0
        graph, report, fp16_history = derive_fp16(base, calib, ref_fn(calib), target, io_fp16=fp16_io)

    io_dtype = "float16" if fp16_io else "float32"
    props = metadata(
        desc=desc,
        scale=scale,
        hparams=prepared.hparams,
        weights_sha256=prepared.weights_sha256,
        fusions=prepared.fusions,
        precision=precision,
        io_dtype=io_dtype,
        graph="sr",
        plugins=plugin_ops,
    )
    import copy

    graph = copy.deepcopy(graph)
    set_metadata(graph, props)
    check_model(graph)
    data = graph.SerializeToString()

    # 3. validation
    validation = None
    if run_validation:
        session = ort_session(data)
        ref64 = _float64_reference(prepared.reference, inputs[0][1]) if precision == "fp32" else None
        validation = validate(
            session, ref_fn, inputs, precision, tol, np.float16 if fp16_io else np.float32, reference64=ref64
        )
        if report is not None and report.fp16_mac_fraction < FP16_MIN_MAC_FRACTION:
            validation.failures.append(
                f"only {report.fp16_mac_fraction:.1%} of Conv/MatMul MACs run in fp16 (< {FP16_MIN_MAC_FRACTION:.0%})"
            )
        if not validation.passed:
            raise ExportError(
                f"validation of {artifact_stem(model, scale, fp16, plugins)} failed, nothing written: "
                + "; ".join(validation.failures[:4])
            )

    # 4. manifest + atomic write
    stem = artifact_stem(model, scale, fp16, bool(plugin_ops) or plugins)
    bprof = BatchedProfile.from_shapes(profile, max_batch)
    plugin_libs = _plugin_libs(plugin_ops)
    engine_name = f"{stem}.engine"
    manifest: dict[str, Any] = {
        **_manifest_head(stem, props, desc, prepared, plugin_ops),
        "onnx": {
            "file": f"{stem}.onnx",
            "sha256": sha256_bytes(data),
            "opset": next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), opset),
            "ir_version": graph.ir_version,
            "exporter": exporter_used,
            "exporter_notes": list(notes),
            "model_notes": list(prepared.notes),
            "input": {
                "name": "lr",
                "dtype": io_dtype,
                "layout": "N,3,H,W RGB [0,1]",
                "dynamic": "N" if static_s is not None else "N,H,W",
            },
            "output": {"name": "sr", "dtype": io_dtype, "layout": f"N,3,{scale}H,{scale}W"},
            "nodes": len(graph.graph.node),
        },
        "attention": _attention_manifest(attention, graph),
        "shape_constraints": {"min_size": desc.min_size, "size_multiple": desc.size_multiple},
        "trt_profile": {**bprof.as_dict(), "source": "flags" if from_flags else "descriptor"},
        "validation": validation.as_dict() if validation else {"skipped": True},
        "sizes_validated": [str(c) for c, _ in inputs] if validation else [],
        "fp16": None if report is None else {**report.as_dict(), "escalation": fp16_history},
        "tensorrt": {
            "trtexec": trtexec_command(
                f"{stem}.onnx",
                engine_name,
                bprof,
                workspace_mib=workspace_mib,
                opt_level=opt_level,
                plugin_libs=plugin_libs,
            ),
            "polygraphy": polygraphy_command(
                f"{stem}.onnx", bprof, plugin_libs=plugin_libs, atol=1e-2 if fp16 else 1e-3, rtol=1e-2 if fp16 else 1e-3
            ),
            "plugin_libraries": plugin_libs,
            "strongly_typed": True,
            "note": "precision comes from the graph's tensor types (no fp16 builder flag)",
        },
        "export_seconds": round(export_s, 3),
        "total_seconds": None,
    }
    manifest["total_seconds"] = round(time.perf_counter() - t_start, 3)
    with staged_dir(out) as stage:
        (stage / f"{stem}.onnx").write_bytes(data)
        (stage / f"{stem}.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    files = [out / f"{stem}.onnx", out / f"{stem}.json"]
    result = ExportResult(
        stem, out, files, manifest, validation, report, prepared=prepared, fp32_graph=base, onnx_model=graph
    )

    # 5. engine (issue 13: export/engines/export_step.py)
    if engine_req is not None:
        result.engine = build_engine(
            engine_req, out / f"{stem}.onnx", out / f"{stem}.json", manifest, bprof, workspace_mib=workspace_mib,
            opt_level=opt_level, plugin_libs=plugin_libs, cache_dir=cache_dir, device=device,
        )
        result.files += [result.engine.engine_path, result.engine.sidecar_path]
    return result


def _attention_manifest(attention: str, graph: onnx.ModelProto) -> dict[str, Any]:
    from .native_attention import native_manifest

    return native_manifest(graph) if attention == "native" else {"form": "portable"}


def _plugin_libs(plugin_ops: Sequence[str]) -> list[str]:
    if not plugin_ops:
        return []
    from srdeploy import plugins as plugin_pkg

    fn = getattr(plugin_pkg, "library_path", None)
    return [str(fn())] if callable(fn) else ["libsrplug.so"]


def _export_two_graph_model(
    prepared: Prepared,
    out: Path,
    *,
    opset: int,
    exporter: Exporter,
    seed: int,
    run_validation: bool,
    engine: bool,
    plugin_ops: list[str],
    validation_image: str | os.PathLike[str] | None,
    profile: ShapeProfile,
    from_flags: bool,
    static_s: Size | None,
    t_start: float,
    workspace_mib: int,
    opt_level: int,
) -> ExportResult:
    """CiaoSR-style models: ``STEM.encoder.onnx`` + ``STEM.decoder.onnx`` + ``STEM.json``."""
    from .implicit_export import export_two_graphs, validate_two_graphs

    desc = prepared.descriptor
    if engine:
        raise SrdeployError(
            f"--engine is not implemented for the two-graph {desc.name} export; build each graph with the "
            "manifest's trtexec commands"
        )
    m = desc.size_multiple
    lo = -(-max(desc.min_size, 16) // m) * m
    graphs = export_two_graphs(prepared, lo, opset, exporter, seed)
    stem = artifact_stem(desc.name, prepared.scale, False, bool(plugin_ops))
    tol = tolerance_for("fp32", prepared.weights_kind)
    validation = None
    cases = validation_cases(desc, static_s, profile if from_flags else None)
    inputs = make_inputs(cases, validation_image, seed)
    blobs: dict[str, bytes] = {}
    for role, g in (("encoder", graphs.encoder), ("decoder", graphs.decoder)):
        props = metadata(
            desc=desc,
            scale=prepared.scale,
            hparams=prepared.hparams,
            weights_sha256=prepared.weights_sha256,
            fusions=prepared.fusions,
            precision="fp32",
            io_dtype="float32",
            graph=role,
            plugins=plugin_ops,
        )
        set_metadata(g, props)
        check_model(g)
        blobs[role] = g.SerializeToString()
    if run_validation:
        validation = validate_two_graphs(
            prepared, graphs.encoder, graphs.decoder, inputs, tol, (float(prepared.scale), prepared.scale + 0.5)
        )
        if not validation.passed:
            raise ExportError(f"validation of {stem} failed, nothing written: " + "; ".join(validation.failures[:4]))

    def channels(g: onnx.ModelProto, name: str) -> int:
        inp = next(i for i in g.graph.input if i.name == name)
        return int(inp.type.tensor_type.shape.dim[1].dim_value)

    ck, cv = channels(graphs.decoder, "feat_k"), channels(graphs.decoder, "feat_v")
    p = profile
    chunk = int(desc.hparams.get("eval_bsize", 30000))
    enc_shapes = {"lr": {"min": (1, 3, *p.min), "opt": (1, 3, *p.opt), "max": (1, 3, *p.max)}}
    dec_shapes = {
        name: {"min": (1, c, *p.min), "opt": (1, c, *p.opt), "max": (1, c, *p.max)}
        for name, c in (("feat_k", ck), ("feat_v", cv), ("lr", 3))
    }
    dec_shapes.update({k: {"min": (1, 1, 2), "opt": (1, chunk, 2), "max": (1, chunk, 2)} for k in ("coord", "cell")})
    libs = _plugin_libs(plugin_ops)
    props = metadata(
        desc=desc,
        scale=prepared.scale,
        hparams=prepared.hparams,
        weights_sha256=prepared.weights_sha256,
        fusions=prepared.fusions,
        precision="fp32",
        io_dtype="float32",
        graph="encoder+decoder",
        plugins=plugin_ops,
    )
    manifest: dict[str, Any] = {
        **_manifest_head(stem, props, desc, prepared, plugin_ops),
        "graphs": {
            role: {
                "file": f"{stem}.{role}.onnx",
                "sha256": sha256_bytes(blobs[role]),
                "inputs": [i.name for i in g.graph.input],
                "outputs": [o.name for o in g.graph.output],
                "trtexec": trtexec_command(
                    f"{stem}.{role}.onnx",
                    f"{stem}.{role}.engine",
                    shapes,
                    workspace_mib=workspace_mib,
                    opt_level=opt_level,
                    plugin_libs=libs,
                ),
                "polygraphy": polygraphy_command(f"{stem}.{role}.onnx", shapes, plugin_libs=libs),
            }
            for role, g, shapes in (("encoder", graphs.encoder, enc_shapes), ("decoder", graphs.decoder, dec_shapes))
        },
        "onnx": {
            "opset": opset,
            "ir_version": graphs.encoder.ir_version,
            "exporter": graphs.exporter,
            "exporter_notes": list(graphs.notes),
        },
        "runtime": "srdeploy.implicit.decode_image drives the decoder in chunks of "
        f"{chunk} queries; any scale (integer or not) uses the same pair",
        "shape_constraints": {"min_size": desc.min_size, "size_multiple": desc.size_multiple},
        "trt_profile": {**desc.trt_profile.as_dict(), "source": "flags" if from_flags else "descriptor"},
        "validation": validation.as_dict() if validation else {"skipped": True},
        "sizes_validated": [str(c) for c, _ in inputs] if validation else [],
        "fp16": None,
        "export_seconds": round(graphs.seconds, 3),
        "total_seconds": round(time.perf_counter() - t_start, 3),
    }
    with staged_dir(out) as stage:
        for role in ("encoder", "decoder"):
            (stage / f"{stem}.{role}.onnx").write_bytes(blobs[role])
        (stage / f"{stem}.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    files = [out / f"{stem}.encoder.onnx", out / f"{stem}.decoder.onnx", out / f"{stem}.json"]
    return ExportResult(
        stem, out, files, manifest, validation, None, prepared=prepared, fp32_graph=None, onnx_model=graphs.decoder
    )
