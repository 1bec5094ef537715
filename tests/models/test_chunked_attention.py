"""The portable window attention in chained query blocks (models/attention.chunked_window_attention).

Reference: the unchunked :func:`window_attention` (matmul / softmax / matmul over the whole window),
in PyTorch and as an exported graph in ONNX Runtime. The TensorRT-RTX memory it exists for is
checked in tests/export/test_rtx_build.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from srdeploy.models import build
from srdeploy.models.attention import chunked_window_attention, window_attention
from srdeploy.models.esc import WindowAttention, set_query_chunks


def _qkv(windows: int, heads: int, n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(windows, heads, n, d, generator=g) for _ in range(3))


@pytest.mark.parametrize("bias_index", ["k-q", "q-k"])
@pytest.mark.parametrize("chunks", [1, 2, 4, 16])
def test_chunked_equals_unchunked_in_torch(chunks: int, bias_index: str) -> None:
    q, k, v = _qkv(3, 2, 64, 8)
    table = torch.randn(2, 15 * 15, generator=torch.Generator().manual_seed(1))
    ref = window_attention(q, k, v, table, window=8, bias_index=bias_index)  # type: ignore[arg-type]
    out = chunked_window_attention(q, k, v, table, window=8, bias_index=bias_index, chunks=chunks)  # type: ignore[arg-type]
    assert out.shape == ref.shape
    rel = float((out - ref).abs().max() / ref.abs().max())
    assert rel <= 1e-6, rel


def test_chunks_must_divide_the_window() -> None:
    q, k, v = _qkv(1, 2, 64, 8)
    with pytest.raises(ValueError, match="divide the 64 tokens"):
        chunked_window_attention(q, k, v, torch.zeros(2, 225), window=8, chunks=3)
    with pytest.raises(ValueError, match="attn_chunks must be >= 1"):
        set_query_chunks(build("esc.light", 4), 0)


def test_esc_builders_default_to_chunked_and_take_the_option() -> None:
    chunks = {m.query_chunks for m in build("esc.light", 4).modules() if isinstance(m, WindowAttention)}
    assert chunks == {8}
    chunks = {m.query_chunks for m in build("esc.fp", 4, attn_chunks=1).modules() if isinstance(m, WindowAttention)}
    assert chunks == {1}


def test_chunked_graph_equals_unchunked_graph_in_onnxruntime() -> None:
    """One ESC attention layer (dim 64, 4 heads, 32x32 windows) exported with dynamic H/W, chunked in
    8 blocks and unchunked, run by ONNX Runtime on a padded 2x3-window input: bit-identical here;
    the stated tolerance is 1e-6 relative."""
    from srdeploy.export.torch2onnx import onnx_from_torch

    from srdeploy.onnxlayer import session

    torch.manual_seed(0)
    layer = WindowAttention(64, 32, 4).eval()
    with torch.no_grad():
        layer.relative_position_bias.normal_()
    x = torch.randn(1, 64, 40, 70)
    feed = np.ascontiguousarray(torch.randn(1, 64, 50, 90).numpy())
    outs = []
    for chunks in (1, 8):
        layer.query_chunks = chunks
        graph = onnx_from_torch(layer, (x,), dynamic_axes={"lr": {2: ("H", 2), 3: ("W", 2)}}).model
        n_softmax = sum(1 for node in graph.graph.node if node.op_type == "Softmax")
        assert n_softmax == chunks
        sess = session(graph.SerializeToString())
        outs.append(sess.run(None, {"lr": feed})[0])
    rel = float(np.abs(outs[1] - outs[0]).max() / np.abs(outs[0]).max())
    assert rel <= 1e-6, rel
