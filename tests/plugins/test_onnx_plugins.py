"""ONNX side of the plugins: apply_plugins + export emit plugin nodes; the plugin graph runs on
ONNX Runtime CPU (PyOp) and equals the portable graph; fp16 plugin graphs run cast-wrapped in a
child process."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from srdeploy.plugins import LOCAL_ENSEMBLE, PLUGIN_DOMAIN, WINDOW_ATTENTION, apply_plugins, ort_session
from srdeploy.plugins.ort import cast_wrap_plugins, plugin_nodes, run_isolated
from torch import nn

pytest.importorskip("onnxruntime_extensions", reason="onnxruntime-extensions (PyOp) is not installed")


def _rel(out: np.ndarray, ref: np.ndarray) -> float:
    out64, ref64 = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(out64 - ref64).max() / np.abs(ref64).max())


def _export(model: nn.Module, args: tuple, path: Path, names: tuple[list[str], list[str]], **kw) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), input_names=names[0], output_names=names[1], dynamo=True, **kw)
    return onnx.load(str(path))


def _contract_a() -> object:
    from srdeploy.models.attention import window_attention

    return window_attention


def _contract_b() -> object:
    from srdeploy.models.ciaosr import local_ensemble

    return local_ensemble


class TinyWindowAttention(nn.Module):
    """(windows, heads*d, w, w) tokens -> attention with a q-k bias (the ASID convention)."""

    def __init__(self, heads: int = 2, d: int = 16, window: int = 8) -> None:
        super().__init__()
        self.heads, self.d, self.window = heads, d, window
        self.qkv = nn.Linear(heads * d, 3 * heads * d)
        self.table = nn.Parameter(torch.randn(heads, (2 * window - 1) ** 2))
        self.core = _contract_a()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (windows, N, C)
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.d).permute(2, 0, 3, 1, 4).unbind(0)
        out = self.core(q, k, v, self.table, window=self.window, bias_index="q-k", scale=0.3)
        return out.transpose(1, 2).reshape(b, n, self.heads * self.d)


class TinyEnsemble(nn.Module):
    def __init__(self, c1: int = 12, c2: int = 10) -> None:
        super().__init__()
        self.k = nn.Linear(c1, 4 * c1)
        self.v = nn.Linear(c1, 4 * c2)
        self.c1, self.c2 = c1, c2
        self.ensemble = _contract_b()

    def forward(self, query: torch.Tensor) -> torch.Tensor:  # (Q, C1)
        q = query.shape[0]
        return self.ensemble(query, self.k(query).view(q, 4, self.c1), self.v(query).view(q, 4, self.c2))


def test_apply_plugins_swaps_and_reports() -> None:
    model = nn.Sequential(TinyWindowAttention(), nn.Identity())
    assert apply_plugins(model) == [WINDOW_ATTENTION]
    assert apply_plugins(model) == [WINDOW_ATTENTION]  # idempotent
    assert apply_plugins(TinyEnsemble()) == [LOCAL_ENSEMBLE]
    assert apply_plugins(nn.Linear(2, 2)) == []


def test_eager_plugin_model_runs_the_reference() -> None:
    torch.manual_seed(0)
    model = TinyWindowAttention().eval()
    x = torch.randn(3, 64, 32)
    with torch.no_grad():
        ref = model(x)
        plugged = copy.deepcopy(model)
        apply_plugins(plugged)
        out = plugged(x)
    assert _rel(out.numpy(), ref.numpy()) <= 1e-5


def test_window_attention_node_fp32_and_dynamic_windows(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = TinyWindowAttention().eval()
    apply_plugins(model)
    x = torch.randn(3, 64, 32)
    dyn = {"x": {0: torch.export.Dim("windows", min=1, max=64)}}
    m = _export(model, (x,), tmp_path / "wa.onnx", (["x"], ["y"]), dynamic_shapes=dyn)
    nodes = plugin_nodes(m)
    assert [n.op_type for n in nodes] == [WINDOW_ATTENTION] and nodes[0].domain == PLUGIN_DOMAIN
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs == {
        "window": 8,
        "bias_index": b"q-k",
        "scale": pytest.approx(0.3),
        "plugin_version": b"1",
        "plugin_namespace": b"",
    }
    assert not m.functions, "no FunctionProto may shadow the plugin (TensorRT 10.3 would import it)"
    onnx.checker.check_model(m)
    sess = ort_session(tmp_path / "wa.onnx")
    for windows in (3, 5):
        xi = torch.randn(windows, 64, 32)
        with torch.no_grad():
            ref = model(xi).numpy()
        assert _rel(sess.run(None, {"x": xi.numpy()})[0], ref) <= 1e-5


def test_local_ensemble_node_dynamic_queries(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = TinyEnsemble().eval()
    apply_plugins(model)
    query = torch.randn(7, 12)
    dyn = {"query": {0: torch.export.Dim("q", min=2, max=100000)}}
    m = _export(model, (query,), tmp_path / "le.onnx", (["query"], ["out"]), dynamic_shapes=dyn)
    assert [n.op_type for n in plugin_nodes(m)] == [LOCAL_ENSEMBLE]
    sess = ort_session(m.SerializeToString())
    for q in (7, 33):
        qi = torch.randn(q, 12) * 3
        with torch.no_grad():
            ref = model(qi).numpy()
        out = sess.run(None, {"query": qi.numpy()})[0]
        assert out.shape == (q, 10)
        assert _rel(out, ref) <= 1e-5


_RAW_SESSION = textwrap.dedent(
    """
    import sys, numpy as np, onnxruntime as ort, onnxruntime_extensions as ox
    from srdeploy.plugins.ort import register_reference_ops
    register_reference_ops()
    so = ort.SessionOptions(); so.register_custom_ops_library(ox.get_library_path())
    s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
    s.run(None, {"x": np.zeros((2, 64, 32), np.float16)})
    """
)


def test_fp16_plugin_graph_cast_wrapped_in_a_subprocess(tmp_path: Path) -> None:
    torch.manual_seed(3)
    # two chained plugin nodes: the second one's input type is only known through the first
    model = nn.Sequential(TinyWindowAttention(), nn.GELU(), TinyWindowAttention()).eval()
    x = torch.randn(2, 64, 32)
    with torch.no_grad():
        ref = model(x).numpy()
    half = copy.deepcopy(model).half()
    apply_plugins(half)
    path = tmp_path / "wa_fp16.onnx"
    m = _export(half, (x.half(),), path, (["x"], ["y"]))
    del m.graph.value_info[:]  # as after graph passes that drop it: types must flow through the plugins
    onnx.save(m, str(path))
    wrapped, count = cast_wrap_plugins(m)
    assert count == 2
    assert sum(n.op_type == "Cast" for n in wrapped.graph.node) >= sum(n.op_type == "Cast" for n in m.graph.node) + 10
    # unwrapped, the PyOp aborts the process on fp16: that is why validation goes through a child
    raw = subprocess.run([sys.executable, "-c", _RAW_SESSION, str(path)], capture_output=True, timeout=300)
    assert raw.returncode != 0
    out = run_isolated(path, {"x": x.half().numpy()})["y"]
    assert out.dtype == np.float16
    assert _rel(out, ref) <= 1e-2  # fp16 weights, projections and I/O around the ops (op itself: 2e-3)


@pytest.mark.slow
def test_esc_plugin_graph_equals_portable_graph(tmp_path: Path) -> None:
    """Small ESC (esc.light), dynamic LR size: plugin graph == portable graph (fp32) at two odd
    sizes (2 and 4 windows of 32x32 per attention layer)."""
    models = pytest.importorskip("srdeploy.models")
    if "esc.light" not in models.list_models():
        pytest.skip("models/esc.py (esc.light) is not registered")
    from srdeploy.models._testing import seeded_input, seeded_state_dict

    model = models.build("esc.light", 2).eval()
    model.load_state_dict(seeded_state_dict(model.state_dict(), 0))
    plugged = copy.deepcopy(model)
    assert apply_plugins(plugged) == [WINDOW_ATTENTION]
    n_attention = sum(1 for mod in plugged.modules() if mod.__dict__.get("core") is not None)
    x = seeded_input((1, 3, 32, 40), 0)
    dyn = {"x": {2: torch.export.Dim("h", min=17, max=512), 3: torch.export.Dim("w", min=17, max=512)}}
    _export(model, (x,), tmp_path / "esc.onnx", (["lr"], ["sr"]), dynamic_shapes=dyn)
    mp = _export(plugged, (x,), tmp_path / "esc_plugins.onnx", (["lr"], ["sr"]), dynamic_shapes=dyn)
    assert len(plugin_nodes(mp)) == n_attention > 0
    ort = pytest.importorskip("onnxruntime")
    portable = ort.InferenceSession(str(tmp_path / "esc.onnx"), providers=["CPUExecutionProvider"])
    sess = ort_session(tmp_path / "esc_plugins.onnx")
    for shape in ((1, 3, 32, 40), (1, 3, 41, 33)):
        xi = seeded_input(shape, 1).numpy()
        ref = portable.run(None, {"lr": xi})[0]
        out = sess.run(None, {"lr": xi})[0]
        assert out.shape == (1, 3, 2 * shape[2], 2 * shape[3])
        assert _rel(out, ref) <= 1e-5


@pytest.mark.slow
def test_ciaosr_decoder_plugin_graph_equals_portable_graph(tmp_path: Path) -> None:
    """CiaoSR (EDSR encoder) decoder graph: CiaoSRLocalEnsemble plugin == portable graph (fp32)."""
    models = pytest.importorskip("srdeploy.models")
    if "ciaosr" not in models.list_models():
        pytest.skip("models/ciaosr.py (ciaosr) is not registered")
    from srdeploy.models._testing import seeded_input, seeded_state_dict

    from srdeploy import implicit

    model = models.build("ciaosr", 2).eval()
    model.load_state_dict(seeded_state_dict(model.state_dict(), 0))
    lr = seeded_input((1, 3, 6, 7), 0)
    with torch.no_grad():
        feat_k, feat_v = model.encode(lr)
    coord = torch.from_numpy(implicit.make_coord(12, 14))[None, :41]
    cell = torch.from_numpy(implicit.make_cell(12, 14, 41))[None]
    args = (feat_k, feat_v, lr, coord, cell)
    names = (["feat_k", "feat_v", "lr", "coord", "cell"], ["rgb"])
    _export(model.decoder_module(), args, tmp_path / "dec.onnx", names)
    plugged = copy.deepcopy(model)
    assert apply_plugins(plugged) == [LOCAL_ENSEMBLE]
    mp = _export(plugged.decoder_module(), args, tmp_path / "dec_plugins.onnx", names)
    assert [n.op_type for n in plugin_nodes(mp)] == [LOCAL_ENSEMBLE]
    ort = pytest.importorskip("onnxruntime")
    feeds = {n: a.numpy() for n, a in zip(names[0], args, strict=True)}
    ref = ort.InferenceSession(str(tmp_path / "dec.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    out = ort_session(tmp_path / "dec_plugins.onnx").run(None, feeds)[0]
    assert _rel(out, ref) <= 1e-5


def test_run_isolated_reports_a_failing_child(tmp_path: Path) -> None:
    from srdeploy.errors import BackendError

    bogus = tmp_path / "not_a_model.onnx"
    bogus.write_bytes(b"not an onnx file")
    with pytest.raises(BackendError, match="failed in ONNX Runtime"):
        run_isolated(bogus, {"x": np.zeros((1,), np.float32)})


@pytest.mark.parametrize("which", ["attention", "ensemble"])
def test_legacy_torchscript_exporter_emits_the_same_nodes(tmp_path: Path, which: str) -> None:
    """An exporter falling back to dynamo=False still gets plugin nodes, never the decomposition."""
    torch.manual_seed(4)
    model, x, name, op = (
        (TinyWindowAttention().eval(), torch.randn(3, 64, 32), "x", WINDOW_ATTENTION)
        if which == "attention"
        else (TinyEnsemble().eval(), torch.randn(7, 12), "query", LOCAL_ENSEMBLE)
    )
    apply_plugins(model)
    path = tmp_path / "legacy.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            str(path),
            input_names=[name],
            output_names=["y"],
            dynamo=False,
            custom_opsets={PLUGIN_DOMAIN: 1},
            opset_version=17,
        )
    m = onnx.load(str(path))
    nodes = plugin_nodes(m)
    assert [n.op_type for n in nodes] == [op]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs["plugin_version"] == b"1" and attrs["plugin_namespace"] == b""
    if which == "attention":
        assert attrs["window"] == 8 and attrs["bias_index"] == b"q-k" and attrs["scale"] == pytest.approx(0.3)
    with torch.no_grad():
        ref = model(x).numpy()
    assert _rel(ort_session(path).run(None, {name: x.numpy()})[0], ref) <= 1e-5
