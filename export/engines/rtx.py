"""TensorRT-RTX flavour (1.7+): ahead-of-time builds on a machine without a GPU.

What TensorRT-RTX does for us: a real NVIDIA ONNX parser and builder that compiles an engine for a
list of target compute capabilities on CPU (no GPU needed), fuses ONNX ``Attention`` natively, and
at load time answers "is this engine valid here" (``Runtime.get_engine_validity``) before
deserialising. It is imported as ``tensorrt_rtx`` (front package) or ``tensorrt_rtx_bindings``
(the ``tensorrt-rtx-cu13-bindings`` wheel we pin).

Differences from TensorRT that this module owns:

* no timing cache (its docs: one prevents the CPU-only build); a *runtime* cache file beside the
  engine is used by the runner instead (kernels compiled on first run on the GPU);
* target compute capabilities instead of a build GPU (``--compute-capability 7.5`` for Turing;
  none = the library's portable default set), so the cache key has no GPU name;
* no custom plugins at run time (NVIDIA documents them as unsupported; its ONNX parser aborts the
  process on a plugin node when ``libtensorrt_rtx.so`` is missing), so the exporter refuses plugin
  graphs for this flavour before the builder is touched;
* weight-stripped plans through ``BuilderFlag.STRIP_PLAN``.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from srdeploy.errors import ExportError

from .base import DeviceInfo, EngineOptions, Flavour, TensorRTUnavailableError

MODULES = ("tensorrt_rtx", "tensorrt_rtx_bindings")
INSTALL = "pip install 'srdeploy[rtx]' (tensorrt-rtx-cu13-libs and -bindings 1.7.1.116)"
DEFAULT_TARGETS = "library default"


def import_rtx() -> ModuleType:
    """Import the TensorRT-RTX Python API or raise a one-line error naming the install."""
    errors = []
    for name in MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError as exc:  # a broken libs wheel also lands here (OSError is wrapped)
            errors.append(f"{name}: {exc}")
            continue
        if hasattr(mod, "Builder") and hasattr(mod, "OnnxParser"):
            return mod
        errors.append(f"{name} has no Builder/OnnxParser")
    raise TensorRTUnavailableError(f"TensorRT-RTX is not installed ({'; '.join(errors)}); {INSTALL}")


def sm_enum(api: Any, cc: str) -> Any:
    member = getattr(api.ComputeCapability, "SM" + cc.replace(".", ""), None)
    if member is None:
        known = [k[2:-1] + "." + k[-1] for k in api.ComputeCapability.__members__ if k.startswith("SM")]
        raise ExportError(
            f"TensorRT-RTX {api.__version__} cannot target compute capability {cc}; choose from {', '.join(known)}"
        )
    return member


class RtxFlavour(Flavour):
    name: ClassVar[str] = "rtx"
    display: ClassVar[str] = "TensorRT-RTX"
    uses_timing_cache: ClassVar[bool] = False
    supports_plugins: ClassVar[bool] = False

    def import_api(self) -> ModuleType:
        return import_rtx()

    def device(self, api: Any, options: EngineOptions) -> DeviceInfo | None:
        return None  # CPU-only AOT build: no GPU name

    def targets(self, api: Any, options: EngineOptions) -> list[str]:
        for cc in options.compute_capabilities:
            sm_enum(api, cc)  # unknown targets fail before anything is built
        return list(options.compute_capabilities) or [DEFAULT_TARGETS]

    def configure(self, api: Any, config: Any, options: EngineOptions) -> None:
        ccs = options.compute_capabilities
        if ccs:
            config.num_compute_capabilities = len(ccs)
            for i, cc in enumerate(ccs):
                if not config.set_compute_capability(sm_enum(api, cc), i):
                    raise ExportError(f"TensorRT-RTX refused target compute capability {cc}")
        if options.strip_weights:
            config.set_flag(api.BuilderFlag.STRIP_PLAN)

    def after_parse(self, api: Any, network: Any, log: Any) -> None:
        """Let fused attention fall back to its decomposition where no dedicated kernel exists.

        TensorRT-RTX 1.7 has dedicated fused-attention kernels for fp16/bf16 only; an fp32
        ``Attention`` node otherwise fails the build ("not supported by a dedicated kernel").
        ``IAttention.decomposable`` lets the builder lower such a layer to its matmul/softmax form.
        Only fp32 layers are marked: an fp16 layer must get the fused kernel or fail the build.
        """
        n = 0
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type == api.LayerType.ATTENTION_INPUT:
                layer.__class__ = api.IAttentionInputLayer
                attn = layer.attention
                if layer.get_input(0).dtype == api.DataType.FLOAT and not attn.decomposable:
                    attn.decomposable = True
                    n += 1
        if n:
            log(f"[EngineFromOnnx] {n} attention layers are fp32 and may decompose (TensorRT-RTX fuses fp16/bf16 only)")

    def explain_failure(self, options: EngineOptions, messages: Sequence[str]) -> str | None:
        """Weight-stripped plans do not build CPU-only: measured with TensorRT-RTX 1.7.1 on a machine
        without a GPU, every graph with ``STRIP_PLAN`` (one Conv to two 256-channel Convs) failed in
        Myelin's code generator with ``CHECK(status == CUDA_SUCCESS)``, and built without it."""
        if options.strip_weights and any("CUDA_SUCCESS" in m for m in messages):
            return ("TensorRT-RTX cannot build a weight-stripped engine without a GPU (its CPU-only build fails "
                    "with STRIP_PLAN: Myelin needs CUDA); drop --strip-weights, or build on a machine with an RTX GPU")
        return None

    def check_engine(self, api: Any, data: bytes, path: Path, meta: Mapping[str, Any] | None) -> None:
        """Sidecar version, then ``Runtime.get_engine_validity`` (runtime/engine_check.py)."""
        from srdeploy.runtime.engine_check import check_engine_bytes

        check_engine_bytes(path, data, api, dict(meta) if meta is not None else {"fields": {"flavour": "rtx"}})

    def manifest_fields(self, api: Any, options: EngineOptions) -> dict[str, Any]:
        return {
            **super().manifest_fields(api, options),
            "target_compute_capabilities": self.targets(api, options),
            "timing_cache": False,
            "weight_stripped": options.strip_weights,
            "note": "CPU-only ahead-of-time build; running the engine needs an RTX-class GPU "
            "(SM75/80/86/89/120/121), which has not been done here",
        }


def sidecar_flavour(engine: Path) -> str | None:
    """The flavour recorded beside an engine file, if any."""
    side = engine.with_name(engine.name + ".json")
    try:
        return str(json.loads(side.read_text()).get("fields", {}).get("flavour") or "") or None
    except (OSError, json.JSONDecodeError):
        return None
