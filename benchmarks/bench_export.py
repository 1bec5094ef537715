"""Side-by-side CPU timing of three ways to run each model at the papers' HD setting.

For every model (x4: LR 180x320, i.e. a 1280x720 output), in one run:

1. **ours**: the graph ``sr-export`` writes (fused, fp32), in ONNX Runtime (CPU EP);
2. **plain**: ``torch.onnx.export`` of the AUTHORS' own module (what a user would do without this
   tool), in the same ONNX Runtime session options;
3. **eager**: our PyTorch module in eager mode (``torch.inference_mode``).

It prints the median latencies, the ratios ours/plain and ours/eager, and the export times. The
aims are >= 1.2x over the plain export (ESC >= 1.5x) and >= 1.5x over eager; where an aim is not
met the script prints why it thinks so (ops that dominate, or what the plain export lacks).

The authors' code is not part of this repository: pass extracted checkouts, e.g.::

    git --git-dir=/work/.mirror/dslisleedh+ESC/repo archive HEAD | tar -x -C /tmp/esc
    git --git-dir=/work/.mirror/haoyuc+A2N/repo archive HEAD | tar -x -C /tmp/a2n
    git --git-dir=/work/.mirror/daydreamer2024+AGDN/repo archive HEAD | tar -x -C /tmp/agdn
    python benchmarks/bench_export.py --authors esc=/tmp/esc --authors a2n=/tmp/a2n \\
        --authors agdn=/tmp/agdn --models esc.light a2n agdn

Their modules are built through the fixture generators in tests/fixtures/ (which hold none of
their code either); a model whose family has no ``--authors`` path is reported as skipped.
What is timed: ``session.run`` / ``model(x)`` only (no image I/O), batch 1, fp32, after
``--warmup`` runs; median over ``--repeat`` runs; threads as given.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import statistics
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
AIM_PLAIN = {"esc": 1.5}
AIM_PLAIN_DEFAULT = 1.2
AIM_EAGER = 1.5


def _fixture_module(family: str) -> types.ModuleType:
    path = FIXTURES / f"make_{family}.py"
    spec = importlib.util.spec_from_file_location(f"bench_make_{family}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Range255(nn.Module):
    """[0, 1] in/out around a module that works on 0-255 (what a user must add for A2N)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 255.0) / 255.0


def authors_esc(root: Path, name: str, scale: int) -> nn.Module:
    gen = _fixture_module("esc")
    gen._install_registry_stub()
    case = next((c for c in gen.CASES if c["name"] == name), None)
    if case is None:
        raise LookupError(f"no authors' configuration for {name} in tests/fixtures/make_esc.py")
    args = dict(case["args"])
    if "upscaling_factor" in args:
        args["upscaling_factor"] = scale
    mod = gen._load(root, case["file"])
    return getattr(mod, case["cls"])(**args, attn_type="Naive")


def authors_a2n(root: Path, name: str, scale: int) -> nn.Module:
    sys.path.insert(0, str(root / "code"))
    from model.aan import AAN  # the authors' module, from their checkout

    net = AAN(SimpleNamespace(scale=[scale]))
    if name == "a2n.m":
        for block in net.AAB_trunk:
            block.non_attention = nn.Conv2d(40, 40, kernel_size=1, bias=False)
    return _Range255(net)


def authors_agdn(root: Path, name: str, scale: int) -> nn.Module:
    gen = _fixture_module("agdn")
    stem, cls, feat = ("AGDN_arch", "AGDN", 42) if name == "agdn" else ("AGDN_S_arch", "AGDN_S", 24)
    net = getattr(gen._import_arch(root, stem), cls)(num_feat=feat, upscale=scale)
    for m in net.modules():  # TLC has input-size loops: a plain export needs it off too
        if hasattr(m, "tlc_flag"):
            m.tlc_flag = False
    return net


AUTHORS: dict[str, Callable[[Path, str, int], nn.Module]] = {
    "esc": authors_esc,
    "a2n": authors_a2n,
    "agdn": authors_agdn,
}


def _time(fn: Callable[[], Any], warmup: int, repeat: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _session(data: bytes, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _plain_export(net: nn.Module, x: torch.Tensor) -> tuple[bytes, float]:
    """What a user does: torch.onnx.export of the module at the benchmark size (static)."""
    net.eval()
    t0 = time.perf_counter()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            prog = torch.onnx.export(net, (x,), dynamo=True, input_names=["lr"], output_names=["sr"])
            assert prog is not None
            data = prog.model_proto.SerializeToString()
        except Exception:  # the user falls back to the TorchScript exporter, as we do
            torch.onnx.export(net, (x,), buf, dynamo=False, input_names=["lr"], output_names=["sr"], opset_version=17)
            data = buf.getvalue()
    return data, time.perf_counter() - t0


def _top_ops(data: bytes, x: np.ndarray, threads: int, k: int = 3) -> str:
    """The op types that take most of the time in an ORT profile (to say why an aim is missed)."""
    import json

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "prof")
        sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        sess.run(None, {sess.get_inputs()[0].name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and "op_name" in e.get("args", {}):
            per_op[e["args"]["op_name"]] = per_op.get(e["args"]["op_name"], 0.0) + e.get("dur", 0) / 1e3
    total = sum(per_op.values()) or 1.0
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:k]
    return ", ".join(f"{op} {ms / total:.0%}" for op, ms in top)


def bench(name: str, scale: int, lr: tuple[int, int], authors: dict[str, Path], args: argparse.Namespace) -> None:
    from srdeploy.export.api import export_model
    from srdeploy.models import descriptor

    family = descriptor(name).family
    x = torch.rand(1, 3, *lr, generator=torch.Generator().manual_seed(0))
    xn = x.numpy()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = export_model(name, scale, tmp, run_validation=not args.no_validate)
        t_ours_export = time.perf_counter() - t0
        ours_data = res.onnx_path.read_bytes()
    ours = _session(ours_data, args.threads)
    t_ours = _time(lambda: ours.run(None, {"lr": xn}), args.warmup, args.repeat)
    eager_model = res.prepared.module
    with torch.inference_mode():
        t_eager = _time(lambda: eager_model(x), args.warmup, args.repeat)
    line = f"{name:<10} x{scale} LR {lr[0]}x{lr[1]}: ours {t_ours:9.1f} ms | eager {t_eager:9.1f} ms"
    notes = []
    if family in authors and family in AUTHORS:
        net = AUTHORS[family](authors[family], name, scale)
        if res.prepared.weights_kind == "random":
            from srdeploy.models._testing import seeded_state_dict

            net.load_state_dict(seeded_state_dict(net.state_dict(), 0), strict=False)
        plain_data, t_plain_export = _plain_export(net, x)
        plain = _session(plain_data, args.threads)
        t_plain = _time(lambda: plain.run(None, {"lr": xn}), args.warmup, args.repeat)
        r_plain = t_plain / t_ours
        aim = AIM_PLAIN.get(family, AIM_PLAIN_DEFAULT)
        line += f" | plain {t_plain:9.1f} ms | plain/ours {r_plain:5.2f}x (aim {aim}x)"
        line += f" | export ours {t_ours_export:.1f} s, plain {t_plain_export:.1f} s"
        if r_plain < aim:
            notes.append(
                f"plain/ours {r_plain:.2f}x < {aim}x: ours spends {_top_ops(ours_data, xn, args.threads)}; "
                f"plain spends {_top_ops(plain_data, xn, args.threads)}"
            )
    else:
        line += f" | plain: skipped (no --authors {family}=DIR) | export ours {t_ours_export:.1f} s"
    r_eager = t_eager / t_ours
    line += f" | eager/ours {r_eager:5.2f}x (aim {AIM_EAGER}x)"
    if r_eager < AIM_EAGER:
        notes.append(
            f"eager/ours {r_eager:.2f}x < {AIM_EAGER}x: ONNX Runtime CPU runs {_top_ops(ours_data, xn, args.threads)} "
            "of the time; PyTorch's oneDNN kernels are already fast for these ops on CPU"
        )
    print(line, flush=True)
    for n in notes:
        print(f"    why: {n}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--models", nargs="*", default=None, help="registry names (default: every fixed-scale model)")
    p.add_argument(
        "--authors",
        action="append",
        default=[],
        metavar="FAMILY=DIR",
        help="extracted authors' checkout per family (esc, a2n, agdn)",
    )
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--lr", default="180x320", help="LR size HxW (default 180x320 = 720p output at x4)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-validate", action="store_true", help="skip our exporter's validation (faster)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from srdeploy.models import descriptor, list_models

    from srdeploy.sizes import parse_size

    authors = {}
    for item in args.authors:
        fam, _, path = item.partition("=")
        authors[fam] = Path(path)
    lr = tuple(parse_size(args.lr))
    names = args.models or [n for n in list_models() if descriptor(n).scales]
    print(
        f"# ONNX Runtime CPU EP vs plain torch.onnx.export of the authors' module vs PyTorch eager; "
        f"batch 1 fp32, {args.threads} threads, median of {args.repeat} after {args.warmup} warm-up"
    )
    for name in names:
        d = descriptor(name)
        if not d.scales:
            print(
                f"{name:<10} skipped: arbitrary-scale two-graph model; its whole-image HD graph does not fit "
                "(the runtime drives the decoder in chunks)"
            )
            continue
        scale = args.scale if args.scale in d.scales else max(d.scales)
        try:
            bench(name, scale, (int(lr[0]), int(lr[1])), authors, args)
        except Exception as exc:  # keep benchmarking the other models, and say what failed
            print(f"{name:<10} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
