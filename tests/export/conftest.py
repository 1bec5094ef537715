"""Export test support: one export per model per session, and a tiny test-only model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from srdeploy.errors import SrdeployError

TINY = "exporttest"


class ExportCache:
    """Exports each (model, precision) once per session; fp16 is derived from the fp32 graph."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.done: dict[tuple[str, bool], Any] = {}

    @staticmethod
    def scale(name: str) -> int:
        from srdeploy.models import descriptor

        scales = descriptor(name).scales
        return min(scales) if scales else 2

    def get(self, name: str, fp16: bool = False) -> Any:
        from srdeploy.export.api import export_model

        key = (name, fp16)
        if key not in self.done:
            try:
                if fp16:
                    base = self.get(name, False)
                    res = export_model(name, self.scale(name), self.root / name, fp16=True, reuse=base)
                else:
                    res = export_model(name, self.scale(name), self.root / name)
            except SrdeployError as exc:
                res = exc
            self.done[key] = res
        res = self.done[key]
        if isinstance(res, Exception):
            raise res
        return res


@pytest.fixture(scope="session")
def exports(tmp_path_factory: pytest.TempPathFactory) -> ExportCache:
    return ExportCache(tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="module")
def tiny_model() -> Iterator[str]:
    """Register a tiny test-only model for the module's tests, and remove it afterwards."""
    from srdeploy.models import Descriptor, ShapeProfile, list_models, register
    from srdeploy.models import registry as reg
    from srdeploy.models._testing import TinyLocalSR

    from srdeploy.sizes import Size

    list_models()  # load the real architectures first

    def build_tiny(scale: int, *, seed: int = 0) -> TinyLocalSR:
        return TinyLocalSR(scale, seed)

    desc = Descriptor(
        name=TINY,
        family=TINY,
        variant=None,
        scales=(2, 3),
        input_range="0-1",
        size_multiple=4,
        min_size=8,
        default_tiling=None,
        trt_profile=ShapeProfile(Size(16, 16), Size(64, 64), Size(128, 128)),
        fp16=True,
        needs_fusion=False,
        weights_license="test only",
        paper="none",
        hparams={"channels": 8},
    )
    register(desc)(build_tiny)
    try:
        yield TINY
    finally:
        reg._REGISTRY.pop(TINY, None)
