"""sr-bench / sr-report end to end, in a subprocess where ``import torch`` fails."""

from __future__ import annotations

import json
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

import pytest
from rt_helpers import make_dataset, run_without_torch, save_tiny

pytest.importorskip("onnxruntime")

NTIRE_KEYS = {"valid_runtime", "valid_psnr", "valid_memory", "valid_ave_runtime", "valid_ave_psnr",
              "test_runtime", "test_psnr", "test_memory", "test_ave_runtime", "test_ave_psnr",
              "activations", "num_conv", "flops", "num_parameters"}
NTIRE_TXT_HEAD = ["Model", "Val PSNR", "Test PSNR", "Val Time [ms]", "Test Time [ms]", "Ave Time [ms]",
                  "Params [M]", "FLOPs [G]", "Acts [M]", "Mem [M]", "Conv"]


def _cli(module: str, *args: str) -> list[str]:
    return ["-c", f"import sys; from srdeploy.cli.{module} import main; sys.exit(main(sys.argv[1:]))", *args]


def test_runtime_imports_without_torch(tmp_path: Path) -> None:
    code = ("import sys\n"
            "import srdeploy.runtime.backends, srdeploy.runtime.backends.onnxruntime, "
            "srdeploy.runtime.backends.tensorrt, srdeploy.runtime.backends.torch, srdeploy.runtime.measure, "
            "srdeploy.runtime.report, srdeploy.onnxlayer, srdeploy.cache, srdeploy.plugins.registry, "
            "srdeploy.runtime.graphstats, srdeploy.runtime.predict, srdeploy.runtime.bench, srdeploy.cli.bench, "
            "srdeploy.cli.report, srdeploy.cli.upscale\n"
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('srdeploy.models', 'srdeploy.export'))]\n"
            "assert not bad, bad\n"
            "print('ok')\n")
    r = run_without_torch(["-c", code], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_bench_and_report_without_torch(tmp_path: Path, data_dir: Path) -> None:
    onnx_path = save_tiny(tmp_path, 2)
    data = make_dataset(tmp_path / "data", data_dir, scale=2)
    out = tmp_path / "bench"
    r = run_without_torch(_cli("bench", "--onnx", str(onnx_path), "--data", str(data), "--threads", "1",
                               "--no-progress", "-o", str(out)), tmp_path)
    assert r.returncode == 0, r.stderr
    assert "mode=ntire" in r.stdout
    res = json.loads((out / "results.json").read_text())
    assert list(res) == ["tiny_x2"]
    e = res["tiny_x2"]
    assert set(e) >= NTIRE_KEYS and set(e) - NTIRE_KEYS == {"srdeploy"}
    assert len(e["valid_runtime"]) == 2 and len(e["test_runtime"]) == 1
    assert e["valid_ave_runtime"] == pytest.approx(sum(e["valid_runtime"]) / 2)
    assert all(10 < p < 60 for p in e["valid_psnr"] + e["test_psnr"])  # tiny net = nearest upscale + noise
    assert e["num_conv"] == 2 and e["num_parameters"] == pytest.approx((8 * 27 + 8 + 12 * 72 + 12) / 1e6)
    # fvcore convention: conv MACs + 1 per output element of the nearest Resize
    assert e["flops"] == pytest.approx(((8 * 27 + 12 * 72) * 256 * 256 + 3 * 512 * 512) / 1e9)
    assert e["srdeploy"]["graph_stats"]["gmacs"] == pytest.approx((8 * 27 + 12 * 72) * 256 * 256 / 1e9)
    ours = e["srdeploy"]
    assert ours["mode"] == "ntire" and ours["warmup"] == 0 and ours["random_weights"] is True
    assert "synchronous CPU" in ours["clock"] and "never reset" in ours["memory_note"]
    assert ours["valid_lr_source"] == "given"
    lines = (out / "results.txt").read_text().splitlines()
    assert [c.strip() for c in lines[0].split("\t")] == NTIRE_TXT_HEAD
    assert lines[1].split("\t")[0].strip() == "tiny_x2" and len(lines[1].split("\t")) == 11
    assert "valid0" in (out / "bench.log").read_text()

    # steady mode on synthetic inputs: median/p90 and the utilisation block
    out2 = tmp_path / "steady"
    r = run_without_torch(_cli("bench", "--onnx", str(onnx_path), "--synthetic", "24x32", "--images", "2",
                               "--mode", "steady", "--warmup", "1", "--repeats", "2", "--threads", "1",
                               "--device-peak", "jetson-agx-orin", "--no-progress", "-o", str(out2)), tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads((out2 / "results.json").read_text())["tiny_x2"]
    assert s["srdeploy"]["mode"] == "steady" and s["srdeploy"]["repeats_per_image"] == 2
    assert s["valid_psnr"] == [] and s["valid_ave_psnr"] is None
    assert s["srdeploy"]["valid_p90_runtime"] >= s["srdeploy"]["valid_median_runtime"] > 0
    assert 0 < s["srdeploy"]["utilisation"]["fraction_of_peak_flops"] < 1

    rep = tmp_path / "report"
    r = run_without_torch(_cli("report", str(out / "results.json"), str(out2), "-o", str(rep),
                               "--baseline", "tiny_x2 (bench)"), tmp_path)
    assert r.returncode == 0, r.stderr
    html = (rep / "index.html").read_text()
    parser = _Checker()
    parser.feed(html)
    assert parser.tables >= 2 and parser.images == 2 and parser.balanced()
    assert "random weights" in html and "ntire" in html and "steady" in html
    for png in ("pareto.png", "runtime_per_image.png"):
        data = (rep / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    md = (rep / "report.md").read_text()
    assert "7.389" in md  # the baseline scores e^2 against itself
    assert "not scored" in md  # the steady row is another mode


class _Checker(HTMLParser):
    VOID: ClassVar[set[str]] = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors = 0
        self.tables = 0
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables += 1
        if tag == "img":
            src = dict(attrs).get("src") or ""
            assert src.startswith("data:image/png;base64,")  # self-contained
            self.images += 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.errors += 1

    def balanced(self) -> bool:
        return self.errors == 0 and not self.stack


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_hr", "has no HR/ folder"),
        ("mismatched", "does not match HR"),
        ("empty", "holds no images"),
        ("no_valid", "has no valid/ folder"),
        ("corrupt_onnx", "not a valid ONNX model"),
        ("corrupt_engine", "install"),
        ("two_sources", "exactly one of"),
        ("model_no_export", "needs the exporter and PyTorch"),
        ("torch_with_onnx", "give --model NAME"),
    ],
)
def test_bad_inputs_give_one_line_errors(case: str, message: str, tmp_path: Path, data_dir: Path) -> None:
    from PIL import Image

    onnx_path = save_tiny(tmp_path, 2)
    data = tmp_path / "data"
    args = ["--onnx", str(onnx_path), "--data", str(data)]
    if case == "missing_hr":
        (data / "valid" / "LR").mkdir(parents=True)
    elif case == "mismatched":
        make_dataset(data, data_dir, scale=2, test=False)
        lr = next((data / "valid" / "LR").iterdir())
        Image.open(lr).crop((0, 0, 10, 10)).save(lr)
    elif case == "empty":
        (data / "valid" / "HR").mkdir(parents=True)
    elif case == "no_valid":
        data.mkdir()
    elif case == "corrupt_onnx":
        make_dataset(data, data_dir, scale=2)
        onnx_path.write_bytes(b"\x08\x01garbage" * 50)
    elif case == "corrupt_engine":
        make_dataset(data, data_dir, scale=2)
        eng = tmp_path / "m.engine"
        eng.write_bytes(b"\x00" * 100)
        args = ["--engine", str(eng), "--scale", "2", "--data", str(data)]
    elif case == "two_sources":
        args += ["--synthetic", "8x8"]
    elif case == "torch_with_onnx":
        make_dataset(data, data_dir, scale=2)
        args += ["--backend", "torch"]
    elif case == "model_no_export":
        args = ["--model", "rlfn", "--scale", "4", "--synthetic", "8x8"]
    r = run_without_torch(_cli("bench", *args, "--no-progress", "-o", str(tmp_path / "out")), tmp_path)
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert err and err[-1].startswith("error: ") and message in err[-1], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "results.json").exists()


def test_report_bad_inputs(tmp_path: Path) -> None:
    bad = tmp_path / "results.json"
    bad.write_text('{"x": {"foo": 1}}')
    r = run_without_torch(_cli("report", str(bad), "-o", str(tmp_path / "rep")), tmp_path)
    assert r.returncode != 0 and "lacks the NTIRE keys" in r.stderr
    r = run_without_torch(_cli("report", str(tmp_path / "nope.json"), "-o", str(tmp_path / "rep")), tmp_path)
    assert r.returncode != 0 and "does not exist" in r.stderr


def test_help_lists_options() -> None:
    import subprocess

    r = subprocess.run([sys.executable, *_cli("bench", "--help")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--mode {ntire,steady}" in r.stdout and "--synthetic" in r.stdout


def test_upscale_onnx_without_torch(tmp_path: Path, data_dir: Path) -> None:
    import numpy as np
    from PIL import Image
    from srdeploy.runtime.backends.onnxruntime import OrtRunner

    onnx_path = save_tiny(tmp_path, 2)
    src = tmp_path / "in.png"
    Image.open(data_dir / "baboon.png").convert("RGB").crop((0, 0, 40, 30)).save(src)
    r = run_without_torch(_cli("upscale", "--onnx", str(onnx_path), str(src), "-o", str(tmp_path / "o"),
                               "--tile", "16", "--tile-overlap", "8"), tmp_path)
    assert r.returncode == 0, r.stderr
    out = np.asarray(Image.open(tmp_path / "o" / "in.png"))
    assert out.shape == (60, 80, 3)
    # tiled output equals the untiled run (receptive radius 2 <= overlap // 2), up to uint8 rounding
    lr = np.asarray(Image.open(src), dtype=np.float32).transpose(2, 0, 1)[None] / 255.0
    with OrtRunner(onnx_path) as runner:
        ref = runner.infer({"lr": lr})["sr"][0]
    ref8 = np.rint(np.clip(ref, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    assert np.abs(out.astype(int) - ref8.astype(int)).max() <= 1
    r = run_without_torch(_cli("upscale", "--onnx", str(onnx_path), "--scale", "3", str(src), "-o",
                               str(tmp_path / "o2")), tmp_path)
    assert r.returncode != 0 and "x2 model" in r.stderr
