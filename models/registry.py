"""The model registry and the typed descriptor every model carries.

Each architecture file registers its names with :func:`register`. Names are ``family`` or
``family.variant`` (``esc``, ``esc.light``). Registering a name twice is an error.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from srdeploy.errors import UnknownModelError, UnsupportedScaleError
from srdeploy.sizes import Size
from srdeploy.tiling import Tiling

InputRange = Literal["0-1", "0-255", "-1-1"]
#: how expensive a model is to build, run and export on a CPU, for the test suite's selection:
#: ``fast`` runs in every generic per-model test; ``slow`` runs there under the ``slow`` marker;
#: ``heavy`` is skipped by the generic tests (its family's own slow tests cover it)
TestTier = Literal["fast", "slow", "heavy"]
TEST_TIERS: tuple[str, ...] = ("fast", "slow", "heavy")


@dataclass(frozen=True)
class SizePath:
    """A size-dependent code path: the model computes differently once an LR side exceeds ``above``.

    Validation runs at least one case above every declared threshold (both H and W above it), so a
    graph that handles only the small-size form cannot pass unnoticed. ``hparam``: the descriptor
    hparam (and build option) that overrides the threshold, e.g. ``tlc_window``. ``dynamic_form``:
    set when a dynamic-shape export replaces this path by another computation (an intentional,
    declared deviation from the PyTorch model, measured and reported at export); ``switch_option``:
    the boolean build option that turns the path off in PyTorch too (then nothing deviates).
    """

    name: str
    above: int
    what: str
    hparam: str | None = None
    dynamic_form: str | None = None
    switch_option: str | None = None

    def threshold(self, options: Mapping[str, Any] | None = None) -> int:
        """The threshold in LR pixels, after a build option that overrides it."""
        value = (options or {}).get(self.hparam) if self.hparam else None
        return int(value) if value else self.above

    def active(self, options: Mapping[str, Any] | None = None) -> bool:
        """Whether the path is on in the model built with ``options``."""
        return not self.switch_option or (options or {}).get(self.switch_option, True) is not False

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "above": self.above, "what": self.what, "hparam": self.hparam,
                "dynamic_form": self.dynamic_form, "switch_option": self.switch_option}


@dataclass(frozen=True)
class ShapeProfile:
    """A TensorRT optimisation profile over the LR input (batch 1), ``HxW`` each."""

    min: Size
    opt: Size
    max: Size

    def as_dict(self) -> dict[str, str]:
        return {"min": str(self.min), "opt": str(self.opt), "max": str(self.max)}


@dataclass(frozen=True)
class Descriptor:
    """What the rest of the toolkit needs to know about a model, without building it.

    ``input_range`` is the range the authors' network works in *internally*; every built model
    still takes and returns [0, 1] (the conversion happens inside ``forward``).
    """

    name: str
    family: str
    variant: str | None
    scales: tuple[int, ...] | None  # None: any scale (arbitrary-scale models)
    input_range: InputRange
    size_multiple: int  # LR H and W are padded internally to this multiple
    min_size: int  # smallest LR H and W the model accepts
    default_tiling: Tiling | None  # None: whole-image inference by default
    trt_profile: ShapeProfile
    fp16: bool  # whether fp16 deployment is supported
    needs_fusion: bool  # whether export must call fuse_model() first
    weights_license: str
    paper: str
    hparams: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""  # the authors' repository and commit the implementation follows
    # "sr": one lr -> sr graph; "encoder+decoder": an arbitrary-scale pair (CiaoSR, contract C)
    graph: str = "sr"
    # the TensorRT plugins `sr-export --plugins` swaps in (srdeploy.plugins.registry names)
    plugin_points: tuple[str, ...] = ()
    # the size-dependent paths validation must exercise (see SizePath); () = size-agnostic
    size_paths: tuple[SizePath, ...] = ()
    test_tier: TestTier = "fast"
    # with fp16=False: the measured reason, quoted in the one-line refusal of --fp16
    fp16_refusal: str = ""

    def __post_init__(self) -> None:
        if self.test_tier not in TEST_TIERS:
            raise ValueError(f"{self.name}: test_tier must be one of {TEST_TIERS}, not {self.test_tier!r}")
        if self.graph not in ("sr", "encoder+decoder"):
            raise ValueError(f"{self.name}: graph must be 'sr' or 'encoder+decoder', not {self.graph!r}")
        object.__setattr__(self, "size_paths", tuple(self.size_paths))
        object.__setattr__(self, "plugin_points", tuple(self.plugin_points))

    def check_scale(self, scale: int | float) -> None:
        if self.scales is None:
            if scale <= 0:
                raise UnsupportedScaleError(f"{self.name}: scale must be positive, got {scale}")
            return
        if scale not in self.scales:
            valid = ", ".join(str(s) for s in self.scales)
            raise UnsupportedScaleError(f"{self.name} has no x{scale} model; supported scales: {valid}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "variant": self.variant,
            "scales": list(self.scales) if self.scales is not None else "any",
            "input_range": self.input_range,
            "size_multiple": self.size_multiple,
            "min_size": self.min_size,
            "default_tiling": None
            if self.default_tiling is None
            else {
                "tile": self.default_tiling.tile,
                "overlap": self.default_tiling.overlap,
                "blend": self.default_tiling.blend,
            },
            "trt_profile": self.trt_profile.as_dict(),
            "fp16": self.fp16,
            "fp16_refusal": self.fp16_refusal,
            "needs_fusion": self.needs_fusion,
            "weights_license": self.weights_license,
            "paper": self.paper,
            "hparams": dict(self.hparams),
            "source": self.source,
            "graph": self.graph,
            "plugin_points": list(self.plugin_points),
            "size_paths": [p.as_dict() for p in self.size_paths],
            "test_tier": self.test_tier,
        }


Builder = Callable[..., Any]  # (scale: int, **typed options) -> torch.nn.Module


@dataclass(frozen=True)
class Entry:
    descriptor: Descriptor
    builder: Builder


_REGISTRY: dict[str, Entry] = {}


def register(descriptor: Descriptor) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder`` under ``descriptor.name``."""

    def deco(builder: Builder) -> Builder:
        if descriptor.name in _REGISTRY:
            raise RuntimeError(f"model {descriptor.name!r} is registered twice")
        params = inspect.signature(builder).parameters
        if "scale" not in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            raise TypeError(f"builder for {descriptor.name} must take `scale` and typed options, no **kwargs")
        _REGISTRY[descriptor.name] = Entry(descriptor, builder)
        return builder

    return deco


def entry(name: str) -> Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(sorted(_REGISTRY))
        raise UnknownModelError(f"unknown model {name!r}; valid names: {valid}") from None


def names() -> list[str]:
    return sorted(_REGISTRY)
