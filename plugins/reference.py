"""PyTorch reference implementations of the plugin ops (independent of the model code).

These materialise the full (heads, N, N) bias and score matrices on purpose: they are the
plain definition the kernels, their CPU emulation and the ONNX Runtime PyOp are checked against.
Computation is fp32 (fp16 inputs are upcast), the result has the input dtype.
"""

from __future__ import annotations

from typing import Literal

import torch

BiasIndex = Literal["k-q", "q-k"]


def relative_position_index(window: int, bias_index: BiasIndex = "k-q") -> torch.Tensor:
    """(N, N) int64 index into the compact (2w-1)^2 table, rows = queries, cols = keys.

    "k-q": (ky-qy+w-1)*(2w-1) + (kx-qx+w-1) (ESC); "q-k": the mirrored convention (ASID).
    """
    if bias_index not in ("k-q", "q-k"):
        raise ValueError(f"bias_index must be 'k-q' or 'q-k', got {bias_index!r}")
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=-1)  # (N, 2) row-major tokens
    delta = coords[None, :, :] - coords[:, None, :]  # [query, key] -> key - query
    if bias_index == "q-k":
        delta = -delta
    span = 2 * window - 1
    return (delta[..., 0] + window - 1) * span + (delta[..., 1] + window - 1)


def window_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias_table: torch.Tensor,
    *,
    window: int,
    bias_index: BiasIndex = "k-q",
    scale: float | None = None,
) -> torch.Tensor:
    """softmax(scale * q @ k^T + bias) @ v for (B*nW, heads, N=window^2, d) tensors."""
    if q.dim() != 4 or q.shape[-2] != window * window:
        raise ValueError(f"q must be (windows, heads, {window * window}, d); got {tuple(q.shape)}")
    span = 2 * window - 1
    if bias_table.shape != (q.shape[1], span * span):
        raise ValueError(
            f"bias_table must be the compact ({q.shape[1]}, {span * span}) table; got {tuple(bias_table.shape)}"
        )
    s = float(q.shape[-1] ** -0.5) if scale is None else float(scale)
    idx = relative_position_index(window, bias_index).to(bias_table.device)
    bias = bias_table.float()[:, idx]  # (heads, N, N)
    qf, kf, vf = q.float(), k.float(), v.float()
    attn = torch.matmul(qf, kf.transpose(-2, -1)) * s + bias.unsqueeze(0)
    out = torch.matmul(torch.softmax(attn, dim=-1), vf)
    return out.to(q.dtype)


def local_ensemble_ref(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """CiaoSR local ensemble: (..., C1), (..., 4, C1), (..., 4, C2) -> (..., C2).

    Scores are plain dot products (no sqrt scaling); softmax over the 4 neighbours in fp32.
    """
    if keys.shape[-2] != 4 or values.shape[-2] != 4:
        raise ValueError(
            f"keys/values must have 4 neighbours in dim -2; got {tuple(keys.shape)}, {tuple(values.shape)}"
        )
    scores = torch.sum(keys.float() * query.float().unsqueeze(-2), dim=-1)  # (..., 4)
    p = torch.softmax(scores, dim=-1)
    out = torch.sum(p.unsqueeze(-1) * values.float(), dim=-2)
    return out.to(query.dtype)
