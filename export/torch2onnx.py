"""PyTorch -> ONNX: model preparation (weights, fusion) and ``onnx_from_torch``.

``exporter="auto"`` tries the TorchScript exporter first, then the dynamo exporter (one non-strict
``torch.export``), then torch.onnx's lenient dynamo cascade. Measured on this project's models
(2-core CPU, dynamic N/H/W): TorchScript exports every single-graph model in 0.4-55 s; the
non-strict ``torch.export`` takes 17-120 s where it succeeds (A2N, AGDN) and fails only after up
to 110 s on the window/padding size logic of ESC, ASID and EFDN; where both succeed, the graphs
run at the same speed in ONNX Runtime (AGDN-S x4 at 180x320: 304 vs 337 ms; A2N: 1472 vs 1476
ms). CiaoSR's encoder (Col2Im with dynamic sizes) needs the last step. Either way, the
validation step re-runs the graph at several sizes (one odd) and batch sizes, so a size that was
silently baked in is caught there.
"""

from __future__ import annotations

import copy
import io
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import onnx
import torch
from srdeploy.models import Descriptor, build, descriptor
from srdeploy.models.fusion import fuse_model
from srdeploy.models.registry import SizePath

from srdeploy.errors import CheckpointError, ExportError

Exporter = Literal["auto", "dynamo", "torchscript"]
ORT_MAX_IR_VERSION = 10  # ONNX Runtime 1.31 reads IR <= 13; 10 is what every supported ORT reads


@dataclass
class Prepared:
    """A model ready for export: the fused module and the unfused reference."""

    name: str
    scale: int
    descriptor: Descriptor
    module: torch.nn.Module  # fused, eval
    reference: torch.nn.Module  # unfused, eval (what validation compares against)
    fusions: list[str]
    weights_sha256: str  # "" for seeded random weights
    weights_path: str | None
    options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # the declared size paths this export replaced by their dynamic form (intentional deviations)
    # and the model as the user built it, before that replacement (None: nothing was replaced)
    replaced_paths: list[SizePath] = field(default_factory=list)
    as_built: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def weights_kind(self) -> Literal["random", "real"]:
        return "real" if self.weights_sha256 else "random"

    @property
    def hparams(self) -> dict[str, Any]:
        hp = dict(self.descriptor.hparams)
        hp.update(self.options)
        return hp


def seed_parameters(model: torch.nn.Module, seed: int) -> None:
    """Fill every parameter with the project's seeded values (buffers keep their values)."""
    from srdeploy.models._seeding import seeded_tensor

    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.is_floating_point():
                p.copy_(seeded_tensor(name, tuple(p.shape), seed))


#: how the exporter switches a declared size path (``SizePath.dynamic_form``) to its dynamic form,
#: by path name; a descriptor that declares a dynamic form the exporter cannot switch is refused
DYNAMIC_FORMS: dict[str, Callable[[torch.nn.Module], None]] = {
    "tlc": lambda m: m.set_tlc(None),  # AGDN: global channel attention
}


def prepare(
    name: str,
    scale: int,
    weights: str | os.PathLike[str] | None = None,
    options: Mapping[str, Any] | None = None,
    seed: int = 0,
    dynamic: bool = True,
) -> Prepared:
    """Build ``name`` at ``scale`` (real weights or seeded random ones) and fuse a copy.

    Size-dependent test-time procedures cannot be exported with dynamic H/W: a size path the
    descriptor declares with a ``dynamic_form`` (AGDN's test-time local converter, whose window
    list depends on the input size) is switched to that form for dynamic export (``--static``
    keeps it); the model as built is kept as ``as_built`` so validation can measure the difference.
    """
    desc = descriptor(name)
    desc.check_scale(scale)
    opts = dict(options or {})
    try:
        model = build(name, scale, weights, **opts)
    except CheckpointError:
        raise
    except RuntimeError as exc:  # a mismatched checkpoint that slipped past the loader
        raise CheckpointError(f"cannot load {weights} into {name} x{scale}: {exc}") from exc
    info = getattr(model, "_srdeploy_weights", None)
    if weights is None:
        seed_parameters(model, seed)
    notes: list[str] = []
    replaced: list[SizePath] = []
    as_built = None
    for path in desc.size_paths if dynamic else ():
        if path.dynamic_form is None or not path.active(opts):
            continue
        if path.switch_option and opts.get(path.switch_option) is True:
            raise ExportError(f"{name}: {path.name} needs a fixed input size; add --static HxW or use "
                              f"--option {path.switch_option}=false")
        switch = DYNAMIC_FORMS.get(path.name)
        if switch is None:
            raise ExportError(f"{name} declares a dynamic form for size path {path.name!r} that the exporter cannot "
                              "switch to; add it to srdeploy.export.torch2onnx.DYNAMIC_FORMS or export with --static")
        if as_built is None:
            as_built = copy.deepcopy(model).eval()
        switch(model)
        replaced.append(path)
        notes.append(f"{path.what} replaced by {path.dynamic_form}, which differs above {path.threshold(opts)} LR "
                     f"pixels (export --static HxW to keep {path.name})")
    reference = copy.deepcopy(model).eval()
    fusions = fuse_model(model)
    model.eval()
    return Prepared(
        name=name,
        scale=scale,
        descriptor=desc,
        module=model,
        reference=reference,
        fusions=fusions,
        weights_sha256=info["sha256"] if info else "",
        weights_path=info["path"] if info else None,
        options=opts,
        notes=notes,
        replaced_paths=replaced,
        as_built=as_built,
    )


def _dynamo_export(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, tuple[str, int]]],
    opset: int,
    retries: bool = False,
) -> onnx.ModelProto:
    """``retries=False``: one non-strict ``torch.export`` (fails fast on a specialised size);
    ``retries=True``: torch.onnx's own cascade (strict, then draft export), slower but lenient."""
    import inspect

    params = [p for p in inspect.signature(module.forward).parameters if p != "self"]
    shapes: dict[str, Any] = {}
    for pname, iname in zip(params, input_names, strict=False):
        axes = dynamic_axes.get(iname, {})
        shapes[pname] = {ax: torch.export.Dim(dim, min=lo, max=1 << 15) for ax, (dim, lo) in axes.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Default: one non-strict torch.export, so a model that specialises a dynamic size fails at
        # once instead of going through torch.onnx's strict and draft-export retries (minutes each).
        # With retries, torch.onnx gets the module and runs that cascade itself.
        target = module if retries else torch.export.export(module, example, dynamic_shapes=shapes, strict=False)
        prog = torch.onnx.export(
            target,
            example,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamo=True,
            dynamic_shapes=shapes if retries else None,
            opset_version=opset,
            optimize=True,
            verbose=False,
        )
    if prog is None:
        raise ExportError("torch.onnx.export returned no program")
    return prog.model_proto


def _torchscript_export(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, tuple[str, int]]],
    opset: int,
) -> onnx.ModelProto:
    buf = io.BytesIO()
    axes = {k: {ax: dim for ax, (dim, _lo) in v.items()} for k, v in dynamic_axes.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            buf,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=axes,
            opset_version=min(opset, 20),
            dynamo=False,
        )
    return onnx.load_from_string(buf.getvalue())


def _dims_ok(model: onnx.ModelProto, dynamic_axes: Mapping[str, Mapping[int, tuple[str, int]]]) -> bool:
    """Whether every axis requested dynamic is symbolic in the exported graph's inputs."""
    for inp in model.graph.input:
        for ax in dynamic_axes.get(inp.name, {}):
            dims = inp.type.tensor_type.shape.dim
            if ax >= len(dims) or dims[ax].HasField("dim_value"):
                return False
    return True


# auto: TorchScript (fast; see the module doc), then one non-strict torch.export, then torch.onnx's
# lenient retries (CiaoSR's Col2Im has no TorchScript symbolic for dynamic sizes; the draft export
# keeps them dynamic)
AUTO_ORDER: tuple[str, ...] = ("torchscript", "dynamo", "dynamo-retries")
# for graphs whose TorchScript trace is known to bake in a size (CiaoSR's decoder: measured 2-16 %
# error at other sizes, caught by validation): the dynamo path first
DYNAMO_FIRST: tuple[str, ...] = ("dynamo", "torchscript", "dynamo-retries")


@dataclass(frozen=True)
class Exported:
    model: onnx.ModelProto
    exporter: str
    seconds: float
    notes: tuple[str, ...] = ()


def onnx_from_torch(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    *,
    input_names: Sequence[str] = ("lr",),
    output_names: Sequence[str] = ("sr",),
    dynamic_axes: Mapping[str, Mapping[int, tuple[str, int]]] | None = None,
    opset: int = 18,
    exporter: Exporter = "auto",
    auto_order: Sequence[str] = AUTO_ORDER,
) -> Exported:
    """Export ``module`` to an ONNX ``ModelProto`` (not yet written anywhere).

    ``dynamic_axes``: input name -> {axis: (symbol, minimum)}; outputs follow from the graph.
    ``auto_order``: the exporters ``exporter="auto"`` tries, in order.
    """
    dyn = dynamic_axes or {}
    t0 = time.perf_counter()
    notes: list[str] = []
    order: list[str] = list(auto_order) if exporter == "auto" else [exporter]
    last: Exception | None = None
    for kind in order:
        try:
            with torch.no_grad():
                if kind.startswith("dynamo"):
                    retries = kind == "dynamo-retries"
                    proto = _dynamo_export(module, example, input_names, output_names, dyn, opset, retries)
                else:
                    proto = _torchscript_export(module, example, input_names, output_names, dyn, opset)
        except Exception as exc:  # exporter internals raise many types; we report and fall back
            last = exc
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            notes.append(f"{kind} exporter failed: {type(exc).__name__}: {first}")
            continue
        if not _dims_ok(proto, dyn):
            notes.append(f"{kind} exporter made a requested dynamic axis static")
            last = ExportError(notes[-1])
            continue
        proto.ir_version = min(proto.ir_version, ORT_MAX_IR_VERSION)
        return Exported(proto, kind, time.perf_counter() - t0, tuple(notes))
    raise ExportError(f"ONNX export failed ({'; '.join(notes)})") from last
