"""The fp16 graph pass on small hand-built graphs (fast, no PyTorch export)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from srdeploy.export import fp16
from srdeploy.export.compare import compare

RNG = np.random.default_rng(0)


def _model(nodes, inits, out_shape=("N", 3, "H2", "W2")) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, list(out_shape))],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 10
    onnx.checker.check_model(m, full_check=True)
    return m


def _run(m: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"lr": x})[0]


def _sr_graph(big: float = 1.0) -> onnx.ModelProto:
    """conv -> *big -> conv -> /big -> softmax over C -> resize x2 (scales: fp32 input) + skip."""
    w1 = (RNG.standard_normal((8, 3, 3, 3)) / 5).astype(np.float32)
    w2 = (RNG.standard_normal((3, 8, 3, 3)) / 8).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["lr", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Mul", ["c1", "big"], ["c1b"], name="scale_up"),
        helper.make_node("Conv", ["c1b", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Div", ["c2", "big"], ["c2s"], name="scale_down"),
        helper.make_node("Softmax", ["c2s"], ["att"], axis=1, name="softmax"),
        helper.make_node("Mul", ["att", "lr"], ["gated"], name="gate"),
        helper.make_node("Shape", ["lr"], ["shp"], name="shape"),
        helper.make_node("Resize", ["gated", "", "scales"], ["up"], mode="nearest", name="resize"),
        helper.make_node("Add", ["up", "up"], ["sr"], name="out_add"),
    ]
    inits = {
        "w1": w1,
        "w2": w2,
        "big": np.array(big, np.float32),
        "scales": np.array([1, 1, 2, 2], np.float32),
    }
    return _model(nodes, inits)


def test_pass_types_islands_and_accuracy() -> None:
    m = _sr_graph()
    x = RNG.random((2, 3, 9, 11), dtype=np.float32)
    conv, report, _ = fp16.convert(m, {"lr": x})
    onnx.checker.check_model(conv, full_check=True)
    assert [i.node for i in report.islands] == ["softmax"]
    assert report.fp16_mac_fraction == 1.0 and report.macs_total == 2 * 9 * 11 * (8 * 27 + 3 * 72)
    g = conv.graph
    assert g.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert g.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    inits = {t.name: t for t in g.initializer}
    convs = [n for n in g.node if n.op_type == "Conv"]
    assert all(inits[n.input[1]].data_type == TensorProto.FLOAT16 for n in convs)
    resize = next(n for n in g.node if n.op_type == "Resize")
    assert inits[resize.input[2]].data_type == TensorProto.FLOAT  # Resize scales keep their fixed type
    casts = [n for n in g.node if n.op_type == "Cast"]
    # lr->fp16 (conv1, gate), c2s->fp32 (softmax island), att->fp16 (gate), sr->fp32 (output)
    assert len(casts) == report.casts_inserted == 4
    out = _run(conv, x)
    ref = _run(m, x)
    assert compare(out, ref).psnr_db > 50


def test_measured_overflow_becomes_island() -> None:
    m = _sr_graph(big=3e5)  # c1b reaches ~5e5: beyond the fp16 range (65504)
    x = RNG.random((1, 3, 8, 8), dtype=np.float32)
    conv, report, _ = fp16.convert(m, {"lr": x})
    reasons = {i.node: i.reason for i in report.islands}
    assert reasons["scale_up"].startswith("overflow") and reasons["conv2"].startswith("overflow")
    assert "conv1" not in reasons
    assert 0 < report.fp16_mac_fraction < 1
    out = _run(conv, x)
    assert np.isfinite(out).all()
    assert compare(out, _run(m, x)).psnr_db > 45
    # without the measurement (no headroom check) the same graph overflows to Inf/NaN
    naive, _, _ = fp16.convert(m, {"lr": x}, overflow_margin=1e-9)
    naive_out = _run(naive, x)
    assert compare(naive_out, _run(m, x)).nonfinite > 0 or compare(naive_out, _run(m, x)).psnr_db < 30


def test_fp16_io_and_shape_math_stays_fp32() -> None:
    m = _sr_graph()
    x = RNG.random((1, 3, 8, 8), dtype=np.float32)
    conv, report, _ = fp16.convert(m, {"lr": x}, io_fp16=True)
    g = conv.graph
    assert g.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert g.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    shape_node = next(n for n in g.node if n.op_type == "Shape")
    assert shape_node.input[0] == "lr"  # no Cast in front of a shape read
    assert report.io_dtype == "float16"
    out = ort.InferenceSession(conv.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"lr": x.astype(np.float16)}
    )[0]
    assert out.dtype == np.float16 and compare(out, _run(m, x)).psnr_db > 45


def test_extra_islands_and_unknown_ops() -> None:
    m = _sr_graph()
    x = RNG.random((1, 3, 8, 8), dtype=np.float32)
    _, report, _ = fp16.convert(m, {"lr": x}, extra_islands={"conv2": "precision: test"})
    assert {i.node: i.reason for i in report.islands}["conv2"] == "precision: test"
    assert report.fp16_mac_fraction == pytest.approx(8 * 27 / (8 * 27 + 3 * 72))


def test_plugin_graph_fp16_macs_agree_with_graph_stats() -> None:
    """The fp16 pass runs plugin graphs (sessions come from srdeploy.onnxlayer, plugin-aware) and
    counts MACs by the same rule as graph_stats, plugin nodes included."""
    pytest.importorskip("onnxruntime_extensions", reason="plugin reference ops need onnxruntime-extensions")
    from srdeploy.plugins.registry import np_local_ensemble
    from srdeploy.runtime.graphstats import graph_stats

    from srdeploy import onnxlayer

    q_n, c1, c2 = 16, 8, 5
    w = (RNG.standard_normal((c1, c1)) / 3).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["q", "w"], ["q2"], name="proj"),
        helper.make_node("CiaoSRLocalEnsemble", ["q2", "k", "v"], ["e"], domain="trt.plugins", name="ens",
                         plugin_version="1", plugin_namespace=""),
    ]
    shapes = {"q": (q_n, c1), "k": (q_n, 4, c1), "v": (q_n, 4, c2)}
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(s)) for k, s in shapes.items()],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [q_n, c2])], [numpy_helper.from_array(w, "w")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("trt.plugins", 1)])
    m.ir_version = 10
    feed = {k: RNG.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    converted, report, _ = fp16.convert(m, feed)
    stats = graph_stats(m, shapes, observe=False)
    assert report.macs_total == stats.macs == q_n * c1 * c1 + q_n * 4 * c1 + q_n * 4 * c2
    # the plugin node is typed fp16 (its spec and kernel allow it) and no measurement islanded it here,
    # so its MACs count as fp16 by the same rule as the MatMul's
    assert "ens" not in {i.node for i in report.islands}
    assert report.macs_fp16 == report.macs_total
    out = onnxlayer.session(converted).run(None, feed)[0]
    ref = np_local_ensemble(feed["q"] @ w, feed["k"], feed["v"])
    assert compare(out, ref).max_rel_err <= 2e-3  # fp16 MatMul feeding the fp16 plugin
