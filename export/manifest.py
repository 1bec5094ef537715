"""Artifact naming, ONNX ``metadata_props`` and the manifest's TensorRT commands (contract D)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import onnx
from srdeploy.models import Descriptor
from srdeploy.models.registry import ShapeProfile

import srdeploy
from srdeploy.records import META_PREFIX, ArtifactRecord
from srdeploy.sizes import Size


def artifact_stem(
    name: str, scale: int | float, fp16: bool = False, plugins: bool = False, int8: bool = False
) -> str:
    """``<family>[-<variant>]_x<S>[_fp16|_int8][_plugins]``, e.g. ``esc-light_x4_fp16``."""
    s = f"{name.replace('.', '-')}_x{scale:g}"
    if int8:
        s += "_int8"
    elif fp16:
        s += "_fp16"
    if plugins:
        s += "_plugins"
    return s


@dataclass(frozen=True)
class BatchedProfile:
    """An optimisation profile for input ``lr``: batch and LR size at min/opt/max."""

    min: tuple[int, Size]
    opt: tuple[int, Size]
    max: tuple[int, Size]

    @classmethod
    def from_shapes(cls, profile: ShapeProfile, max_batch: int = 1) -> BatchedProfile:
        return cls((1, profile.min), (1, profile.opt), (max_batch, profile.max))

    def shapes(self, channels: int = 3) -> dict[str, tuple[int, int, int, int]]:
        return {k: (n, channels, s.h, s.w) for k, (n, s) in (("min", self.min), ("opt", self.opt), ("max", self.max))}

    def as_dict(self) -> dict[str, str]:
        return {k: "x".join(str(d) for d in v) for k, v in self.shapes().items()}


def record(
    *,
    desc: Descriptor,
    scale: int | float,
    hparams: Mapping[str, Any],
    weights_sha256: str,
    fusions: Sequence[str],
    precision: str,
    io_dtype: str,
    graph: str = "sr",
    plugins: Sequence[str] = (),
    deviations: Sequence[Mapping[str, Any]] = (),
    weights_seed: int | None = None,
) -> ArtifactRecord:
    """The typed facts of one exported graph (written as metadata and as the manifest's head)."""
    return ArtifactRecord(
        model=desc.name,
        variant=desc.variant or "",
        scale=scale,
        precision=precision,
        io_dtype=io_dtype,
        graph=graph,
        weights_sha256=weights_sha256,
        weights_license=desc.weights_license,
        plugins=tuple(plugins),
        fusions=tuple(fusions),
        hparams=dict(hparams),
        descriptor=desc.as_dict(),
        version=srdeploy.__version__,
        deviations=tuple(deviations),
        weights_seed=weights_seed,
    )


def set_metadata(model: onnx.ModelProto, rec: ArtifactRecord) -> None:
    """Write ``rec`` as the graph's ``srdeploy.*`` metadata_props (replacing any previous ones)."""
    keep = [p for p in model.metadata_props if not p.key.startswith(META_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in rec.to_metadata().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.producer_name = "srdeploy"
    model.producer_version = srdeploy.__version__


def _shape_arg(shape: Sequence[int], sep: str = "x") -> str:
    return sep.join(str(d) for d in shape)


InputShapes = Mapping[str, Mapping[str, Sequence[int]]]  # input -> {"min"|"opt"|"max": shape}


def _as_inputs(profile: BatchedProfile | InputShapes, input_name: str) -> InputShapes:
    return {input_name: profile.shapes()} if isinstance(profile, BatchedProfile) else profile


def trtexec_command(
    onnx_file: str,
    engine_file: str,
    profile: BatchedProfile | InputShapes,
    *,
    input_name: str = "lr",
    workspace_mib: int = 4096,
    opt_level: int = 3,
    plugin_libs: Sequence[str] = (),
) -> str:
    """The strongly typed ``trtexec`` build command (precision comes from the graph)."""
    inputs = _as_inputs(profile, input_name)

    def arg(kind: str) -> str:
        return ",".join(f"{name}:{_shape_arg(s[kind])}" for name, s in inputs.items())

    args = [
        "trtexec",
        f"--onnx={onnx_file}",
        "--stronglyTyped",
        f"--minShapes={arg('min')}",
        f"--optShapes={arg('opt')}",
        f"--maxShapes={arg('max')}",
        f"--memPoolSize=workspace:{workspace_mib}M",
        f"--builderOptimizationLevel={opt_level}",
        f"--timingCacheFile={engine_file}.timing.cache",
        f"--saveEngine={engine_file}",
    ]
    args += [f"--dynamicPlugins={lib}" for lib in plugin_libs]
    return shlex.join(args)


def polygraphy_command(
    onnx_file: str,
    profile: BatchedProfile | InputShapes,
    *,
    input_name: str = "lr",
    plugin_libs: Sequence[str] = (),
    atol: float = 1e-3,
    rtol: float = 1e-3,
) -> str:
    """``polygraphy run``: TensorRT (strongly typed) vs ONNX Runtime on the opt shape."""
    inputs = _as_inputs(profile, input_name)

    def arg(kind: str) -> list[str]:
        return [f"{name}:[{_shape_arg(s[kind], ',')}]" for name, s in inputs.items()]

    args = ["polygraphy", "run", onnx_file, "--trt", "--onnxrt", "--strongly-typed"]
    args += ["--trt-min-shapes", *arg("min"), "--trt-opt-shapes", *arg("opt"), "--trt-max-shapes", *arg("max")]
    args += ["--input-shapes", *arg("opt"), "--atol", f"{atol:g}", "--rtol", f"{rtol:g}"]
    if plugin_libs:
        # issue 12: Polygraphy loads --plugins with ctypes.CDLL, which registers nothing from the
        # getCreators library; it gets the static-registration variant (srdeploy.plugins.library)
        from srdeploy.plugins.library import dlopen_library

        args += ["--plugins", *(dlopen_library(lib) for lib in plugin_libs)]
    return shlex.join(args)
