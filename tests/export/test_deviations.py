"""A changed model is never silent (issue 14 item 3) and random weights are visible (item 2).

* Every descriptor's declared size paths are exercised by its validation plan.
* AGDN x2 with the bundled real weights, exported with dynamic shapes: TLC is off in the graph,
  so above the 48-pixel TLC window it differs from the PyTorch model as built; the validation
  table shows it, one warning line says it, the manifest and the ONNX metadata carry it.
* A declared deviation is reported, not failed; an undeclared difference still fails.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from srdeploy.export.api import export_model
from srdeploy.export.validate import Case, covers, uncovered_paths, validation_cases
from srdeploy.models import Descriptor, ShapeProfile, build, descriptor, list_models, register
from srdeploy.models import registry as reg
from srdeploy.models._seeding import seeded_input
from srdeploy.models._testing import TinyLocalSR
from srdeploy.models.registry import SizePath

from srdeploy.errors import ExportError
from srdeploy.onnxlayer import session as ort_session
from srdeploy.records import DEVIATION_KEYS, ArtifactRecord
from srdeploy.sizes import Size

DATA = Path(__file__).resolve().parents[1] / "data"
FORM = "formtest"
BIAS_SHIFT = 0.02  # what the test model's declared "dynamic form" changes: +0.02 on every output


# ------------------------------------------------------------------ the plan covers the declarations
@pytest.mark.parametrize("name", list_models())
def test_validation_plan_covers_every_declared_size_path(name: str) -> None:
    d = descriptor(name)
    assert d.test_tier in ("fast", "slow", "heavy")
    for plan in (validation_cases(d), validation_cases(d, profile=d.trt_profile)):
        assert not uncovered_paths(d, plan), (name, plan)
        for path in d.size_paths:
            t = path.threshold()
            if covers(d.trt_profile.max, t):  # checked here without the library's helper too
                assert any(c.size.h > t and c.size.w > t for c in plan), (name, path.name, plan)
            assert all(c.size.h >= d.min_size and c.size.w >= d.min_size for c in plan)
    # a threshold the declaring hparam names is the model's own value
    for path in d.size_paths:
        if path.hparam is not None:
            assert d.hparams[path.hparam] == path.above, (name, path)


def test_plan_follows_option_overrides_and_profile_limits() -> None:
    d = descriptor("agdn")
    assert any(c.size.h > 64 and c.size.w > 64 for c in validation_cases(d, options={"tlc_window": 64}))
    small = ShapeProfile(Size(16, 16), Size(32, 32), Size(40, 40))  # never reaches the 48-pixel window
    plan = validation_cases(d, profile=small)
    assert all(c.size.h <= 40 and c.size.w <= 40 for c in plan) and not uncovered_paths(d, plan, limit=small.max)
    assert validation_cases(d, static=Size(60, 60)) == [Case(1, Size(60, 60)), Case(2, Size(60, 60))]


def test_agdn_tlc_threshold_is_where_the_model_changes() -> None:
    """The declaration is true of the model: TLC on == off up to the window, different above it
    (with the window option at 16, which the declared threshold follows, to keep the inputs small)."""
    on = build("agdn.s", 2, tlc_window=16).eval()
    off = build("agdn.s", 2, tlc=False).eval()
    off.load_state_dict(on.state_dict())
    t = descriptor("agdn.s").size_paths[0].threshold({"tlc_window": 16})
    assert t == 16
    with torch.inference_mode():
        at = seeded_input((1, 3, t, t), 3)
        above = seeded_input((1, 3, t + 9, t + 13), 4)
        assert torch.equal(on(at), off(at))
        assert (on(above) - off(above)).abs().max().item() > 1e-3


# ------------------------------------------------------------------ the AGDN reproduction (real weights)
def test_agdn_dynamic_export_reports_the_tlc_deviation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from srdeploy.cli.export import main

    out = tmp_path / "art"
    assert main(["--model", "agdn", "--scale", "2", "--weights", str(DATA / "AGDN_x2.pth"),
                 "--validation-image", str(DATA / "baboon.png"), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1, err  # the deviation; real weights: no random-weights line
    assert "intentionally differs" in warnings[0] and "TLC" in warnings[0] and "levels" in warnings[0]
    table = [ln for ln in err.splitlines() if "declared deviation (tlc)" in ln]
    assert len(table) == 1 and "reported, not failed" in table[0]

    manifest = json.loads((out / "agdn_x2.json").read_text())
    (dev,) = manifest["deviations"]
    assert set(DEVIATION_KEYS) <= set(dev)
    assert manifest["validation"]["deviations"] == [dev] and manifest["validation"]["passed"]
    assert manifest["weights_seed"] is None and manifest["weights"]["kind"] == "real"
    h, w = (int(v) for v in dev["size"].split("x"))
    assert h > 48 and w > 48 and f"{h}x{w}" in warnings[0] and f"{dev['psnr_db']:.2f}" in warnings[0]
    meta = {p.key: p.value for p in onnx.load(out / "agdn_x2.onnx").metadata_props}
    rec = ArtifactRecord.from_metadata(meta)
    assert rec is not None and [dict(d) for d in rec.deviations] == [dev] and rec.weights_seed is None

    # independent re-measurement on the same crop: the written graph against AGDN built with TLC on
    from srdeploy.export.api import make_inputs

    case_x = dict((str(c), x) for c, x in make_inputs(validation_cases(descriptor("agdn")),
                                                       DATA / "baboon.png", 0))
    x = case_x[f"1x3x{dev['size']}"]
    got = ort_session((out / "agdn_x2.onnx").read_bytes()).run(None, {"lr": x})[0]
    as_built = build("agdn", 2, weights=str(DATA / "AGDN_x2.pth"))
    with torch.inference_mode():
        ref = as_built(torch.from_numpy(x)).numpy()
    diff = np.abs(np.clip(got, 0, 1).astype(np.float64) - np.clip(ref, 0, 1)) * 255.0
    assert abs(diff.max() - dev["max_abs_levels"]) < 0.01 and abs(diff.mean() - dev["mean_abs_levels"]) < 0.001
    assert diff.max() > 5.0  # a real difference, not rounding (measured: 24.8 levels max, 1.82 mean)
    psnr = 10 * np.log10(255.0**2 / np.mean(diff**2))
    assert abs(psnr - dev["psnr_db"]) < 0.01


# ------------------------------------------------------------------ declared vs undeclared (tiny models)
def _form_switch(model: torch.nn.Module) -> None:
    with torch.no_grad():
        model.c2.bias += BIAS_SHIFT  # c2's output goes through a pixel shuffle: +shift on every pixel


@pytest.fixture()
def form_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A tiny test-only model declaring a size path with a dynamic form (and the switch for it)."""
    from srdeploy.export import torch2onnx

    list_models()
    desc = Descriptor(
        name=FORM, family=FORM, variant=None, scales=(2,), input_range="0-1", size_multiple=1, min_size=8,
        default_tiling=None, trt_profile=ShapeProfile(Size(16, 16), Size(64, 64), Size(128, 128)), fp16=True,
        needs_fusion=False, weights_license="test only", paper="none",
        size_paths=(SizePath("tinyform", 20, "the test path", dynamic_form="the test form"),),
    )

    def build_form(scale: int) -> TinyLocalSR:
        return TinyLocalSR(scale)

    register(desc)(build_form)
    monkeypatch.setitem(torch2onnx.DYNAMIC_FORMS, "tinyform", _form_switch)
    try:
        yield FORM
    finally:
        reg._REGISTRY.pop(FORM, None)


def test_declared_deviation_is_reported_not_failed(form_model: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    res = export_model(form_model, 2, tmp_path)
    assert res.validation is not None and res.validation.passed
    assert any(c.size.h > 20 and c.size.w > 20 for c, _ in res.validation.results)
    (dev,) = res.manifest["deviations"]
    assert dev["path"] == "tinyform" and "the test form" in dev["what"]
    assert 0.8 * BIAS_SHIFT * 255 < dev["max_abs_levels"] <= BIAS_SHIFT * 255 + 1e-3
    assert res.manifest["weights_seed"] == 0 and res.manifest["weights"]["seed"] == 0
    err = capsys.readouterr().err
    assert sum("intentionally differs" in ln for ln in err.splitlines()) == 1
    assert sum("random weights (seed 0)" in ln for ln in err.splitlines()) == 1
    # --static keeps the path: nothing replaced, nothing to declare
    static = export_model(form_model, 2, tmp_path / "static", static="24x24")
    assert static.manifest["deviations"] == [] and "intentionally" not in capsys.readouterr().err
    # without validation the deviation is still declared, as not measured
    skipped = export_model(form_model, 2, tmp_path / "skip", run_validation=False)
    assert skipped.manifest["deviations"][0]["measured"].startswith("not measured")
    assert skipped.manifest["deviations"][0]["max_abs_levels"] is None


def test_undeclared_difference_still_fails(tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same change, undeclared (made to the exported module only): the gate fails, nothing written."""
    from srdeploy.export import api

    real_prepare = api.prepare

    def changed(*args, **kwargs):  # type: ignore[no-untyped-def]
        p = real_prepare(*args, **kwargs)
        _form_switch(p.module)
        return p

    monkeypatch.setattr(api, "prepare", changed)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=r"validation of .* failed, nothing written: .*max_rel_err"):
        export_model(tiny_model, 2, out)
    assert not out.exists() or not any(out.iterdir())


# ------------------------------------------------------------------ random weights at export (item 2)
def test_sr_export_random_weights_warns_once_and_records_the_seed(
    tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from srdeploy.cli.export import main

    assert main(["--model", tiny_model, "--scale", "2", "-o", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "random weights" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning:") and "seed 0" in lines[0], err
    manifest = json.loads((tmp_path / f"{tiny_model}_x2.json").read_text())
    assert manifest["weights_seed"] == 0 and manifest["weights"]["kind"] == "random"
    meta = {p.key: p.value for p in onnx.load(tmp_path / f"{tiny_model}_x2.onnx").metadata_props}
    assert meta["srdeploy.weights_seed"] == "0"
    rec = ArtifactRecord.from_metadata(meta)
    assert rec is not None and rec.weights_seed == 0 and rec.random_weights


def test_record_round_trip_with_deviations_and_seed() -> None:
    dev = {"what": "w", "measured": "m", "max_abs_levels": 3.5, "mean_abs_levels": 0.25, "psnr_db": 40.0,
           "size": "73x79"}
    rec = ArtifactRecord(model="agdn", scale=2, deviations=(dev,), weights_seed=7)
    for back in (ArtifactRecord.from_metadata(rec.to_metadata()),
                 ArtifactRecord.from_manifest(json.loads(json.dumps(rec.to_manifest())))):
        assert back is not None and [dict(d) for d in back.deviations] == [dev] and back.weights_seed == 7
    old = ArtifactRecord.from_manifest({"model": "esc", "scale": 4})  # an artifact from before the fields
    assert old.deviations == () and old.weights_seed is None


def test_tlc_option_decides_whether_anything_deviates() -> None:
    from srdeploy.export.torch2onnx import prepare

    with pytest.raises(ExportError, match=r"--static HxW or use --option tlc=false"):
        prepare("agdn", 2, options={"tlc": True})
    off = prepare("agdn", 2, options={"tlc": False})  # TLC off in PyTorch too: nothing to declare
    assert off.replaced_paths == [] and off.as_built is None
    on = prepare("agdn", 2)
    assert [p.name for p in on.replaced_paths] == ["tlc"] and on.as_built is not None
    assert prepare("agdn", 2, dynamic=False).replaced_paths == []  # --static keeps TLC
