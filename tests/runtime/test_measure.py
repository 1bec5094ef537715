"""Measurement protocol of the two modes, with a fake predictor that records what was called."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest
from rt_helpers import make_dataset
from srdeploy.runtime.backends import MemoryReport
from srdeploy.runtime.measure import build_result, load_sets, measure, results_txt, synthetic_set
from srdeploy.runtime.predict import Predictor
from srdeploy.runtime.results import WeightsIdentity

from srdeploy.errors import SrdeployError
from srdeploy.tiling import Tiling


class FakePredictor(Predictor):
    """Nearest-neighbour x2 with a scripted device time; records calls and memory resets."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = 2
        self.runners = []
        self.calls = 0
        self.resets = 0
        self.clock_ms = iter(float(t) for t in range(100, 10_000))

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.timing.device_ms += next(self.clock_ms)
        self.timing.calls += 1
        self.timing.clock = "fake"
        return lr.repeat(2, axis=2).repeat(2, axis=3)

    def reset_peak_memory(self) -> bool:
        self.resets += 1
        return True

    def peak_memory(self) -> MemoryReport:
        return MemoryReport(1024**2 * (1 + self.resets), "fake")


def test_ntire_mode_is_cold_single_shot_and_never_resets(tmp_path: Path, data_dir: Path) -> None:
    sets = load_sets(make_dataset(tmp_path, data_dir, scale=2), 2)
    p = FakePredictor()
    res = measure(p, sets, 2, "ntire", progress=False)
    assert p.calls == 3  # one call per image, no warm-up
    assert p.resets == 0  # never: the window opened when the model was loaded (weights count)
    assert res["valid"].runtime_ms == [100.0, 101.0] and res["test"].runtime_ms == [102.0]
    assert res["valid"].memory_mb == res["test"].memory_mb == 1.0
    out = build_result("m", res, mode="ntire", scale=2, stats=None, predictor_info={}, clock="fake",
                       memory_note="fake", precision="fp32", weights=WeightsIdentity("ab" * 32)).to_json()
    assert out["valid_ave_runtime"] == 100.5 and out["srdeploy"]["ave_runtime"] == statistics.fmean([100.5, 102.0])
    assert "never reset" in out["srdeploy"]["memory_note"]
    with pytest.raises(SrdeployError, match="whole images"):
        measure(p, sets, 2, "ntire", tiling=Tiling(8, 2), progress=False)


def test_steady_mode_warms_up_repeats_and_resets_per_set(tmp_path: Path, data_dir: Path) -> None:
    sets = load_sets(make_dataset(tmp_path, data_dir, scale=2), 2)
    p = FakePredictor()
    res = measure(p, sets, 2, "steady", warmup=4, repeats=3, progress=False)
    assert p.calls == 2 * 4 + 3 * 3  # warm-up per set + repeats per image
    assert p.resets == 2
    assert res["valid"].runtime_ms[0] == 105.0  # median of 104, 105, 106 after 4 warm-up calls
    out = build_result("m", res, mode="steady", scale=2, stats=None, predictor_info={}, clock="fake",
                       memory_note="fake", precision="fp32", weights=WeightsIdentity(), warmup=4,
                       repeats=3).to_json()
    assert out["srdeploy"]["warmup"] == 4 and out["srdeploy"]["valid_p90_runtime"] >= 105.0
    assert "RANDOM WEIGHTS" in out["srdeploy"]["psnr_note"]


def test_results_txt_without_test_set() -> None:
    p = FakePredictor()
    res = measure(p, synthetic_set(8, 8, 2), 2, "ntire", progress=False)
    entry = build_result("m", res, mode="ntire", scale=2, stats=None, predictor_info={}, clock="fake",
                         memory_note="fake", precision="fp32", weights=WeightsIdentity())
    lines = results_txt([entry]).splitlines()
    assert [c.strip() for c in lines[0].split("\t")] == ["Model", "Val PSNR", "Val Time [ms]", "Params [M]",
                                                          "FLOPs [G]", "Acts [M]", "Mem [M]", "Conv"]
    assert lines[1].split("\t")[1].strip() == "n/a"  # synthetic inputs: no PSNR


def test_lr_made_by_bicubic_when_no_lr_folder(tmp_path: Path, data_dir: Path) -> None:
    sets = load_sets(make_dataset(tmp_path, data_dir, scale=4, with_lr=False), 4)
    lr, hr, how = sets["valid"][0].load(4)
    assert hr is not None and lr.shape[0] * 4 == hr.shape[0] and "bicubic" in how


def test_results_json_accumulates_by_model_key(tmp_path: Path) -> None:
    import json

    from srdeploy.runtime.measure import write_results

    for key in ("a", "b", "a"):
        res = measure(FakePredictor(), synthetic_set(8, 8, 1), 2, "ntire", progress=False)
        entry = build_result(key, res, mode="ntire", scale=2, stats=None, predictor_info={}, clock="fake",
                             memory_note="fake", precision="fp32", weights=WeightsIdentity())
        write_results(tmp_path, [entry], ["log"])
    assert sorted(json.loads((tmp_path / "results.json").read_text())) == ["a", "b"]
    assert len((tmp_path / "results.txt").read_text().splitlines()) == 3
    (tmp_path / "results.json").write_text("{broken")
    with pytest.raises(SrdeployError, match="not valid JSON"):
        write_results(tmp_path, [entry], ["log"])
