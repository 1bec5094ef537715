"""Registry, descriptor and build() contract, parametrised over every registered model."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from srdeploy.models.registry import Descriptor, ShapeProfile, register

from srdeploy import models
from srdeploy.errors import SrdeployError, UnknownModelError, UnsupportedScaleError
from srdeploy.sizes import Size


def test_every_architecture_file_registers_its_family() -> None:
    names = models.list_models()
    families = {models.descriptor(n).family for n in names}
    for mod in models.architecture_modules():
        assert mod in families, f"models/{mod}.py registers no model of family {mod!r}"


def test_names_are_family_or_family_dot_variant() -> None:
    for name in models.list_models():
        d = models.descriptor(name)
        assert d.name == name
        assert name == (d.family if d.variant is None else f"{d.family}.{d.variant}")
        assert d.min_size >= 1 and d.size_multiple >= 1
        assert d.weights_license and d.source
        p = d.trt_profile
        assert p.min.h <= p.opt.h <= p.max.h and p.min.w <= p.opt.w <= p.max.w
        assert min(p.min) >= d.min_size
        d.as_dict()  # serialisable summary used by manifests and reports


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(UnknownModelError) as exc:
        models.build("nope", 2)
    msg = str(exc.value)
    assert "unknown model 'nope'" in msg
    for name in models.list_models():
        assert name in msg


def test_unsupported_scale_is_clear() -> None:
    fixed = [n for n in models.list_models() if models.descriptor(n).scales is not None]
    if not fixed:
        pytest.skip("no fixed-scale model registered yet")
    name = fixed[0]
    with pytest.raises(UnsupportedScaleError, match="supported scales"):
        models.build(name, 7)


def test_unknown_options_are_errors() -> None:
    name = models.list_models()[0]
    scale = (models.descriptor(name).scales or (2,))[0]
    with pytest.raises(SrdeployError, match="no option"):
        models.build(name, scale, not_an_option=True)


def test_duplicate_registration_is_an_error() -> None:
    d = models.descriptor(models.list_models()[0])
    with pytest.raises(RuntimeError, match="registered twice"):
        register(d)(lambda scale: None)


def test_builders_must_be_typed() -> None:
    d = Descriptor(
        name="tmp.kw", family="tmp", variant="kw", scales=(2,), input_range="0-1", size_multiple=1,
        min_size=1, default_tiling=None,
        trt_profile=ShapeProfile(Size(8, 8), Size(8, 8), Size(8, 8)), fp16=True, needs_fusion=False,
        weights_license="MIT", paper="-",
    )
    with pytest.raises(TypeError, match="kwargs"):
        register(d)(lambda scale, **kw: None)


def test_models_import_no_other_package_module() -> None:
    # models may import only the torch-free srdeploy.weights (and the core) from the package
    for mod in models.architecture_modules():
        m = importlib.import_module(f"srdeploy.models.{mod}")
        src = Path(m.__file__).read_text()
        for forbidden in ("srdeploy.export", "srdeploy.runtime", "srdeploy.plugins"):
            assert forbidden not in src, f"models/{mod}.py imports {forbidden}"


@pytest.mark.parametrize("name", models.list_models())
def test_build_contract_small_odd_input(name: str) -> None:
    d = models.descriptor(name)
    if d.test_tier == "heavy":
        pytest.skip(f"{name} is covered by its family's slow tests")
    scale = (d.scales or (2,))[-1]
    m = models.build(name, scale)
    assert not m.training
    h = max(d.min_size, 19) | 1
    w = h + 2
    with torch.inference_mode():
        y = m(torch.rand(1, 3, h, w))
    assert y.shape == (1, 3, scale * h, scale * w)
    assert torch.isfinite(y).all()
