"""The window-attention core: ONE named, replaceable function (cross-team contract A).

``window_attention(q, k, v, bias_table, *, window, bias_index="k-q", scale=None)``

* ``q``, ``k``, ``v``: ``(B*nW, heads, N, d)`` with ``N = window * window``; the tokens of a window
  are laid out row-major (token ``t`` sits at row ``t // window``, column ``t % window``).
* ``bias_table``: the COMPACT relative-position table ``(heads, (2*window-1)**2)`` exactly as the
  checkpoints store it. Callers never expand it; this function gathers the ``(heads, N, N)`` bias
  from it with two small index tensors (``window x window`` each), so an exported graph carries
  no expanded ``(heads, 1024, 1024)`` constant per layer, only the compact table (15,876 floats for
  ESC) and two 1,024-entry index constants.
* returns ``softmax(scale * q @ k^T + bias) @ v`` of shape ``(B*nW, heads, N, d)``; ``scale``
  defaults to ``d ** -0.5``.

Bias for query ``(qy, qx)`` and key ``(ky, kx)``, with ``w = window`` and ``R = 2*w - 1``:

* ``"k-q"`` (ESC): ``table[h, (ky - qy + w - 1) * R + (kx - qx + w - 1)]``
* ``"q-k"`` (ASID, Swin): ``table[h, (qy - ky + w - 1) * R + (qx - kx + w - 1)]``

The implementation is plain matmul / softmax / matmul so that it exports to standard ONNX ops;
plugin paths replace it per module instance (ESC's attention stores it in ``self.core``).
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch

BiasIndex = Literal["k-q", "q-k"]

__all__ = [
    "AttentionCore",
    "BiasIndex",
    "chunked_window_attention",
    "expand_bias",
    "native_window_attention",
    "use_native_attention",
    "window_attention",
]


class AttentionCore(Protocol):
    """The signature every replacement of :func:`window_attention` must have."""

    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias_table: torch.Tensor,
        *,
        window: int,
        bias_index: BiasIndex = "k-q",
        scale: float | None = None,
    ) -> torch.Tensor: ...


def _axis_index(window: int, bias_index: BiasIndex, device: torch.device) -> torch.Tensor:
    """``(window, window)`` table of the 1-D relative offset (shifted to >= 0) for (query, key)."""
    pos = torch.arange(window, device=device)
    if bias_index == "k-q":
        rel = pos[None, :] - pos[:, None]  # [query, key] = key - query
    elif bias_index == "q-k":
        rel = pos[:, None] - pos[None, :]
    else:
        raise ValueError(f"bias_index must be 'k-q' or 'q-k', got {bias_index!r}")
    return rel + (window - 1)


def expand_bias(bias_table: torch.Tensor, window: int, bias_index: BiasIndex = "k-q") -> torch.Tensor:
    """The ``(heads, N, N)`` bias (query rows, key columns) gathered from the compact table.

    Two gathers with ``(window, window)`` indices instead of one with an ``N*N`` index: the table is
    viewed as ``(heads, R, R)`` (row offset, column offset); gathering the row offsets gives
    ``(heads, qy, ky, R)``, gathering the column offsets gives ``(heads, qy, ky, qx, kx)``, which a
    permute turns into ``(heads, qy*w + qx, ky*w + kx)``. Values are copied exactly.
    """
    heads, entries = bias_table.shape
    span = 2 * window - 1
    if entries != span * span:
        raise ValueError(
            f"bias_table has {entries} entries per head but window {window} needs {span * span}; "
            "pass the compact (heads, (2*window-1)**2) table of the same window"
        )
    idx = _axis_index(window, bias_index, bias_table.device)
    table = bias_table.reshape(heads, span, span)
    rows = table[:, idx]  # (heads, qy, ky, R)
    full = rows[..., idx]  # (heads, qy, ky, qx, kx)
    n = window * window
    return full.permute(0, 1, 3, 2, 4).reshape(heads, n, n)


def _check_window_args(q: torch.Tensor, bias_table: torch.Tensor, window: int) -> int:
    """The contract-A shape checks shared by the portable and native cores; returns the head dim."""
    n, d = q.shape[-2], q.shape[-1]
    if n != window * window:
        raise ValueError(f"q has {n} tokens per window but window {window} needs {window * window}")
    if bias_table.shape[0] != q.shape[1]:
        raise ValueError(f"bias_table has {bias_table.shape[0]} heads but q has {q.shape[1]}")
    return d


def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias_table: torch.Tensor,
    *,
    window: int,
    bias_index: BiasIndex = "k-q",
    scale: float | None = None,
) -> torch.Tensor:
    """Multi-head attention inside windows with a relative position bias (see the module doc)."""
    d = _check_window_args(q, bias_table, window)
    if scale is None:
        scale = d**-0.5
    bias = expand_bias(bias_table, window, bias_index).to(q.dtype)
    score = (q @ k.transpose(-2, -1)) * scale + bias
    return torch.softmax(score, dim=-1) @ v


def chunked_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias_table: torch.Tensor,
    *,
    window: int,
    bias_index: BiasIndex = "k-q",
    scale: float | None = None,
    chunks: int,
) -> torch.Tensor:
    """:func:`window_attention` computed for the queries in ``chunks`` equal row blocks.

    Softmax is per query row, so each block ``softmax(scale * q[rows] @ k^T + bias[rows]) @ v`` is
    exactly the same rows of the unchunked result; the blocks are concatenated along the token axis.
    The point is the exported graph: the largest tensor is ``(B*nW, heads, N/chunks, N)`` instead of
    ``(B*nW, heads, N, N)`` (``N`` is fixed by the window, so the blocks are static slices and the
    window count stays dynamic). TensorRT-RTX has no fp32 fused attention, and the unchunked fp32 ESC
    graph needs about 4.5 GiB of activations at 270x480 (docs/export.md).

    Independent blocks are not enough: TensorRT-RTX's Myelin compiler keeps every block's scores live
    at once (measured on the attention alone, 240 windows: 8062 MB unchunked, 8124 MB in 8 independent
    blocks). So each block after the first reads the previous block's output through
    ``q_block + 0 * prev[:, :, :1, :1]``: the blocks run in order and one block's scores are dead before
    the next one's exist (1141 MB in 8 chained blocks). Adding that zero leaves finite values exactly
    as they were; a NaN or Inf in one block's output would spread into the next blocks.
    """
    d = _check_window_args(q, bias_table, window)
    n = q.shape[-2]
    if chunks < 1 or n % chunks:
        raise ValueError(f"chunks must be >= 1 and divide the {n} tokens of a window, got {chunks}")
    if scale is None:
        scale = d**-0.5
    bias = expand_bias(bias_table, window, bias_index).to(q.dtype)
    kt = k.transpose(-2, -1)
    rows = n // chunks
    outs: list[torch.Tensor] = []
    for i in range(chunks):
        sl = slice(i * rows, (i + 1) * rows)
        qb = q[:, :, sl]
        if outs:  # the order the builder must keep (see above)
            qb = qb + outs[-1][:, :, :1, :1] * 0.0
        score = (qb @ kt) * scale + bias[:, sl]
        outs.append(torch.softmax(score, dim=-1) @ v)
    return torch.cat(outs, dim=2)


NATIVE_MIN_OPSET = 23
# The exporters write this placeholder (TorchScript stops at opset 20); export/native_attention.py
# rewrites it into the standard ``Attention`` node and raises the graph to opset 23.
NATIVE_PLACEHOLDER_DOMAIN = "srdeploy.native"
NATIVE_PLACEHOLDER_OP = "WindowAttention"
NATIVE_BUILDERS = "TensorRT >= 10.14, TensorRT 11.x and TensorRT-RTX >= 1.7 (not TensorRT 10.3 / JetPack 6)"


def native_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias_table: torch.Tensor,
    *,
    window: int,
    bias_index: BiasIndex = "k-q",
    scale: float | None = None,
) -> torch.Tensor:
    """:func:`window_attention` as ONE ONNX ``Attention`` node (opset 23) when exported.

    The relative-position bias is the node's additive float mask ``(1, heads, N, N)``, gathered in
    the graph from the compact table (the same two gathers as :func:`expand_bias`), so the graph
    carries the compact table, not an expanded constant. Outside export it is :func:`window_attention`
    itself. During export it writes a placeholder node (both exporters; ``torch.onnx.ops.attention``
    adds shape guards on the window count that break the dynamic export, and TorchScript stops at
    opset 20), which :func:`srdeploy.export.native_attention.to_native_attention` rewrites into ``Attention``.
    TensorRT >= 10.14 / 11.x / TensorRT-RTX parse the node into their fused attention layer.
    """
    d = _check_window_args(q, bias_table, window)
    if not torch.onnx.is_in_onnx_export():
        return window_attention(q, k, v, bias_table, window=window, bias_index=bias_index, scale=scale)
    bias = expand_bias(bias_table, window, bias_index).to(q.dtype).unsqueeze(0)
    s = float(d**-0.5 if scale is None else scale)
    if torch.compiler.is_exporting() or torch.compiler.is_compiling():
        return torch.onnx.ops.symbolic(
            f"{NATIVE_PLACEHOLDER_DOMAIN}::{NATIVE_PLACEHOLDER_OP}", [q, k, v, bias], {"scale": s},
            dtype=q.dtype, shape=q.shape, version=1,
        )  # fmt: skip
    return _PlaceholderAttention.apply(q, k, v, bias, s)


class _PlaceholderAttention(torch.autograd.Function):
    """TorchScript-exporter path (opset <= 20): a placeholder node the export pass turns into Attention."""

    @staticmethod
    def forward(ctx, q, k, v, bias, scale: float):  # type: ignore[no-untyped-def]
        return torch.softmax((q @ k.transpose(-2, -1)) * scale + bias, dim=-1) @ v

    @staticmethod
    def symbolic(g, q, k, v, bias, scale: float):  # type: ignore[no-untyped-def]
        out = g.op(f"{NATIVE_PLACEHOLDER_DOMAIN}::{NATIVE_PLACEHOLDER_OP}", q, k, v, bias, scale_f=scale)
        out.setType(q.type())
        return out


def use_native_attention(model: torch.nn.Module) -> int:
    """Swap every contract-A attention core (``module.core is window_attention``) for the native form.

    Returns how many modules were changed (0: the model has no such attention).
    """
    count = 0
    for mod in model.modules():
        if getattr(mod, "core", None) is window_attention:
            mod.core = native_window_attention  # type: ignore[assignment]
            count += 1
    return count
