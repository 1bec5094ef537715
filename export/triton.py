"""A Triton Inference Server model repository from an exported artifact (``sr-export --triton-repo DIR``).

Layout written (atomically, through a staging folder)::

    DIR/<stem>/config.pbtxt
    DIR/<stem>/1/model.onnx        # backend "onnxruntime"
    DIR/<stem>/1/model.plan        # backend "tensorrt" (from an .engine)

``config.pbtxt`` names the graph's input and output (name, dtype, dims without the batch
dimension, ``-1`` for dynamic H/W), ``max_batch_size`` from the export's TensorRT profile,
dynamic batching (Triton batches only requests whose shapes match), and the profile's
min/opt/max shapes: for the ``tensorrt`` backend they are in the engine itself; for
``onnxruntime`` they are written as the ``trt_profile_*_shapes`` parameters of the TensorRT
execution accelerator, used when the GPU accelerator is enabled.

What tritonclient does for us: the config is built as Triton's own ``ModelConfig`` protobuf
message (``tritonclient.grpc.model_config_pb2``, generated from Triton's model_config.proto) and
printed with protobuf's text format; :func:`validate_config` parses a ``config.pbtxt`` back
strictly against that schema (unknown fields or enum values fail) and checks it against the
graph. **Loading the repository in a real ``tritonserver`` has not been run here**: Triton's
server is not pip-installable, and PyTriton's bundled server does not start models on the
project's Python 3.11 with numpy 2.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srdeploy.atomic import staged_dir
from srdeploy.errors import MissingDependencyError, SrdeployError

ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 2: "TYPE_UINT8", 3: "TYPE_INT8",
                  6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL", 16: "TYPE_BF16"}


class TritonConfigError(SrdeployError):
    """A config.pbtxt does not parse against Triton's schema or does not match its model."""


def _pb() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise MissingDependencyError(
            f"--triton-repo needs tritonclient's model-config protobufs ({exc}); pip install 'srdeploy[triton]'"
        ) from exc
    return model_config_pb2


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # TYPE_FP32 ...
    dims: tuple[int, ...]  # full ONNX dims, -1 where symbolic


def graph_io(onnx_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's (non-initializer) inputs and outputs with Triton dtypes."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}

    def spec(v: Any) -> TensorSpec:
        t = v.type.tensor_type
        if t.elem_type not in ONNX_TO_TRITON:
            raise SrdeployError(f"{onnx_path}: tensor {v.name} has ONNX type {t.elem_type}, which Triton cannot take")
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return TensorSpec(v.name, ONNX_TO_TRITON[t.elem_type], dims)

    return ([spec(v) for v in model.graph.input if v.name not in inits], [spec(v) for v in model.graph.output])


def _profile(manifest: dict[str, Any]) -> dict[str, tuple[int, ...]] | None:
    prof = manifest.get("trt_profile")
    if not isinstance(prof, dict) or not all(k in prof for k in ("min", "opt", "max")):
        return None
    return {k: tuple(int(d) for d in str(prof[k]).split("x")) for k in ("min", "opt", "max")}


def build_config(name: str, backend: str, inputs: list[TensorSpec], outputs: list[TensorSpec],
                 profile: dict[str, tuple[int, ...]] | None, max_batch: int | None = None,
                 queue_delay_us: int = 2000, instance_kind: str = "KIND_AUTO", instances: int = 1) -> Any:
    """Triton's ``ModelConfig`` message for one SR graph."""
    pb = _pb()
    batched = all(t.dims and t.dims[0] == -1 for t in (*inputs, *outputs))
    if max_batch is None:
        max_batch = profile["max"][0] if profile else 1
    cfg = pb.ModelConfig(name=name, backend=backend, max_batch_size=max_batch if batched else 0)
    for src, field in ((inputs, cfg.input), (outputs, cfg.output)):
        for t in src:
            field.add(name=t.name, data_type=getattr(pb.DataType, t.data_type),
                      dims=list(t.dims[1:] if batched else t.dims))
    if batched:
        prefs = sorted({b for b in (1, 2, 4, 8, 16, 32) if b <= max_batch} | {max_batch})
        cfg.dynamic_batching.preferred_batch_size.extend(prefs)
        cfg.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    cfg.instance_group.add(kind=getattr(pb.ModelInstanceGroup.Kind, instance_kind), count=instances)
    if backend == "onnxruntime" and profile and len(inputs) == 1:
        acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        lr = inputs[0].name
        for k in ("min", "opt", "max"):
            acc.parameters[f"trt_profile_{k}_shapes"] = f"{lr}:" + "x".join(str(d) for d in profile[k])
    return cfg


def validate_config(path: str | Path, onnx_path: str | Path | None = None) -> Any:
    """Parse ``config.pbtxt`` strictly against Triton's schema; check it against the graph if given."""
    from google.protobuf import text_format

    pb = _pb()
    path = Path(path)
    cfg = pb.ModelConfig()
    try:
        text_format.Parse(path.read_text(), cfg)
    except (text_format.ParseError, OSError) as exc:
        raise TritonConfigError(f"{path} does not parse as Triton's ModelConfig ({exc}); re-export it") from exc
    if cfg.backend not in ("onnxruntime", "tensorrt") and cfg.platform not in ("onnxruntime_onnx", "tensorrt_plan"):
        raise TritonConfigError(f"{path}: backend {cfg.backend or cfg.platform!r} is not onnxruntime or tensorrt")
    if cfg.max_batch_size < 0:
        raise TritonConfigError(f"{path}: max_batch_size {cfg.max_batch_size} is negative")
    if cfg.HasField("dynamic_batching") and cfg.max_batch_size == 0:
        raise TritonConfigError(f"{path}: dynamic batching needs max_batch_size > 0")
    if onnx_path is not None:
        ins, outs = graph_io(Path(onnx_path))
        for want, got, what in ((ins, cfg.input, "input"), (outs, cfg.output, "output")):
            if [t.name for t in want] != [t.name for t in got]:
                raise TritonConfigError(f"{path}: {what} names {[t.name for t in got]} are not the graph's "
                                        f"{[t.name for t in want]}")
            for t, g in zip(want, got, strict=True):
                dims = t.dims[1:] if cfg.max_batch_size > 0 else t.dims
                if tuple(g.dims) != tuple(dims) or pb.DataType.Name(g.data_type) != t.data_type:
                    raise TritonConfigError(f"{path}: {what} {t.name} is {pb.DataType.Name(g.data_type)} "
                                            f"{list(g.dims)}, the graph has {t.data_type} {list(dims)}")
    return cfg


def write_triton_repo(artifact: str | Path, repo: str | Path, engine: str | Path | None = None,
                      max_batch: int | None = None, name: str | None = None) -> list[Path]:
    """Write ``repo/<name>/`` for an exported artifact; return the written files.

    ``engine``: a TensorRT engine built from the artifact (then the ``tensorrt`` backend);
    otherwise the ONNX graph runs on Triton's ``onnxruntime`` backend.
    """
    from google.protobuf import text_format
    from srdeploy.runtime.artifact import open_artifact

    art = open_artifact(artifact)
    if art.graph != "sr" or ("sr" not in art.files and "onnx" not in art.files):
        raise SrdeployError(f"{art.stem}: --triton-repo writes single-graph models; the encoder/decoder pair "
                            "needs a Triton ensemble, which is not written")
    onnx_path = art.files.get("sr") or art.files["onnx"]
    name = name or art.stem
    backend = "tensorrt" if engine else "onnxruntime"
    inputs, outputs = graph_io(onnx_path)
    cfg = build_config(name, backend, inputs, outputs, _profile(art.manifest), max_batch)
    repo = Path(repo)
    if (repo / name).exists():
        raise SrdeployError(f"{repo / name} exists; remove it or give another --triton-repo")
    with staged_dir(repo) as stage:
        (stage / name / "1").mkdir(parents=True)
        (stage / name / "config.pbtxt").write_text(text_format.MessageToString(cfg))
        shutil.copyfile(engine or onnx_path, stage / name / "1" / ("model.plan" if engine else "model.onnx"))
        validate_config(stage / name / "config.pbtxt", onnx_path)
    model_file = repo / name / "1" / ("model.plan" if engine else "model.onnx")
    return [repo / name / "config.pbtxt", model_file]
