"""CPU emulations (numpy) of the CUDA kernels' exact algorithms, tested against the references.

These are not references: they replay what ``plugins/csrc/*.cu`` do, step by step, so that the
kernels' algorithm (tiling, online-softmax rescaling, exp2 with folded log2(e), precision of
each intermediate) is executed in CI without a GPU.

Window attention (both kernels): 64-row query tiles (rows are independent), keys walked in
tiles of ``key_tile`` = 64 in order; per tile s = fma(q.k, scale*log2e, table*log2e),
m' = max(m, max_tile s), alpha = exp2(m - m'), l = l*alpha + sum exp2(s - m'),
o = o*alpha + exp2(s - m') @ v; out = o / l. The fp16 kernel computes q.k from fp16 inputs with
fp32 accumulation and rounds P to fp16 before the P.V product (l is summed from fp32 P).
Within one tile numpy sums in its own order, and np.exp2 stands for the kernels' MUFU
``ex2.approx.ftz`` (relative error <= 2^-22); both differ only at fp32 rounding level, which the
tolerances cover.

Local ensemble: lane-strided fp32 accumulation (lane l takes channels l, l+32, ...), then an xor
butterfly over offsets 16, 8, 4, 2, 1, softmax over 4 with exp, and the blend
p0*v0 + p1*v1 + p2*v2 + p3*v3 accumulated in that order, all in fp32.
"""

from __future__ import annotations

import numpy as np

from .spec import WINDOW_ATTENTION, load_spec

LOG2E = np.float32(1.4426950408889634)
WARP = 32


def _relative_index(window: int, bias_index: str) -> np.ndarray:
    ys, xs = np.meshgrid(np.arange(window), np.arange(window), indexing="ij")
    ky, kx = ys.reshape(-1), xs.reshape(-1)
    span = 2 * window - 1
    sign = 1 if bias_index == "k-q" else -1
    # idx = qBase(query) + sign * kOff(key), exactly as the kernels compute it.
    k_off = ky * span + kx
    q_base = (window - 1) * span + (window - 1) - sign * k_off
    return q_base[:, None] + sign * k_off[None, :]


def emulate_window_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    bias_table: np.ndarray,
    *,
    window: int,
    bias_index: str = "k-q",
    scale: float | None = None,
) -> np.ndarray:
    """Replay of ``windowAttentionF32`` (float32 q) or ``windowAttentionF16`` (float16 q)."""
    if q.dtype not in (np.float32, np.float16):
        raise TypeError(f"q must be float32 or float16, got {q.dtype}")
    if bias_index not in ("k-q", "q-k"):
        raise ValueError(f"bias_index must be 'k-q' or 'q-k', got {bias_index!r}")
    spec = load_spec(WINDOW_ATTENTION)
    key_tile = int(spec.kernel["key_tile"])
    fp16 = q.dtype == np.float16
    n, d = q.shape[-2], q.shape[-1]
    if n != window * window or n % key_tile:
        raise ValueError(f"N = {n} must equal window^2 = {window * window} (a multiple of {key_tile})")
    s_val = np.float32(d**-0.5 if scale is None else scale)
    scale_log2e = np.float32(s_val * LOG2E)
    table = bias_table.astype(np.float32) * LOG2E  # (heads, span^2), as loaded into shared memory
    idx = _relative_index(window, bias_index)  # (N, N), gathered per key tile like the kernels
    qf, kf, vf = (x.astype(np.float32) for x in (q, k, v))

    m = np.full(q.shape[:-1], -np.inf, dtype=np.float32)
    l_sum = np.zeros(q.shape[:-1], dtype=np.float32)
    acc = np.zeros(q.shape, dtype=np.float32)
    for kt in range(n // key_tile):
        ks = slice(kt * key_tile, (kt + 1) * key_tile)
        dot = np.matmul(qf, np.swapaxes(kf[..., ks, :], -1, -2))  # fp32 accumulation
        s = (dot * scale_log2e + table[:, idx[:, ks]][None]).astype(np.float32)
        m_new = np.maximum(m, s.max(axis=-1))
        with np.errstate(invalid="ignore"):
            alpha = np.exp2(m - m_new).astype(np.float32)  # exp2(-inf) = 0 on the first tile
        p = np.exp2(s - m_new[..., None]).astype(np.float32)
        l_sum = l_sum * alpha + p.sum(axis=-1, dtype=np.float32)
        p_mm = p.astype(np.float16).astype(np.float32) if fp16 else p
        acc = acc * alpha[..., None] + np.matmul(p_mm, vf[..., ks, :])
        m = m_new
    out = acc * (np.float32(1.0) / l_sum)[..., None]
    return out.astype(q.dtype)


def emulate_local_ensemble(query: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Replay of ``localEnsembleKernel`` for (..., C1), (..., 4, C1), (..., 4, C2)."""
    if query.dtype not in (np.float32, np.float16):
        raise TypeError(f"query must be float32 or float16, got {query.dtype}")
    lead = query.shape[:-1]
    c1, c2 = query.shape[-1], values.shape[-1]
    qf = query.astype(np.float32).reshape(-1, c1)
    kf = keys.astype(np.float32).reshape(-1, 4, c1)
    vf = values.astype(np.float32).reshape(-1, 4, c2)
    rounds = -(-c1 // WARP)
    pad = rounds * WARP - c1
    qp = np.pad(qf, ((0, 0), (0, pad))).reshape(-1, 1, rounds, WARP)
    kp = np.pad(kf, ((0, 0), (0, 0), (0, pad))).reshape(-1, 4, rounds, WARP)
    lanes = np.zeros((qf.shape[0], 4, WARP), dtype=np.float32)
    for r in range(rounds):  # lane l accumulates channels l, l+32, ... in order
        lanes = lanes + qp[:, :, r, :] * kp[:, :, r, :]
    lane_ids = np.arange(WARP)
    for off in (16, 8, 4, 2, 1):  # __shfl_xor_sync butterfly
        lanes = lanes + lanes[..., lane_ids ^ off]
    d = lanes[..., 0]  # every lane holds the same value
    m = d.max(axis=-1, keepdims=True)
    e = np.exp(d - m).astype(np.float32)
    total = ((e[:, 0] + e[:, 1]) + e[:, 2]) + e[:, 3]
    p = e * (np.float32(1.0) / total)[:, None]
    out = p[:, 0:1] * vf[:, 0]
    for i in range(1, 4):
        out = out + p[:, i : i + 1] * vf[:, i]
    return out.reshape(*lead, c2).astype(query.dtype)
