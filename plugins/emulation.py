"""CPU emulations (numpy) of the CUDA kernels' exact algorithms, tested against the references.

These are not references: they replay what ``plugins/csrc/<Op>/kernel.cu`` do, step by step, so that the
kernels' algorithm (tiling, online-softmax rescaling, exp2 with folded log2(e), precision of
each intermediate) is executed in CI without a GPU.

Window attention (both kernels): 64-row query tiles (rows are independent), keys walked in
tiles of ``key_tile`` = 64 in order; per tile s = fma(q.k, scale*log2e, table*log2e),
m' = max(m, max_tile s), alpha = exp2(m - m'), l = l*alpha + sum exp2(s - m'),
o = o*alpha + exp2(s - m') @ v; out = o / l. The fp16 kernel computes q.k from fp16 inputs with
fp32 accumulation and feeds P to the P.V product as two fp16 parts, fp16(P) and
fp16(P - fp16(P)), one mma each into the same fp32 accumulator (l is summed from fp32 P).
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


def split_half(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """fp32 ``x`` as two fp16 parts, ``fp16(x)`` and ``fp16(x - fp16(x))`` (the kernel's splitHalf2)."""
    hi = x.astype(np.float16)
    return hi, (x - hi.astype(np.float32)).astype(np.float16)


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
        if fp16:  # two fp16 parts, two products: Phi.V then Plo.V into the same accumulator
            p_hi, p_lo = split_half(p)
            acc = acc * alpha[..., None] + np.matmul(p_hi.astype(np.float32), vf[..., ks, :])
            acc = acc + np.matmul(p_lo.astype(np.float32), vf[..., ks, :])
        else:
            acc = acc * alpha[..., None] + np.matmul(p, vf[..., ks, :])
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


# ---------------------------------------------------------------------------------------------
# Lane-level replay of windowAttentionF16: every register of every lane, the mma.sync.m16n8k16
# fragment layouts of the PTX ISA, the shared-memory addressing and the quad shuffles, so that
# the kernel's index arithmetic (not only its algorithm) runs in CI.
# ---------------------------------------------------------------------------------------------
_LANE = np.arange(WARP)
_G = _LANE >> 2  # groupID: row within the 8-row group
_T = _LANE & 3  # thread in the quad


def _mma16816(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """D = A @ B + C for one warp. a: (32, 8) fp16 regs a0..a7, b: (32, 4) b0..b3, c: (32, 4) fp32.

    PTX ISA layouts (row.col, .f16 inputs, .f32 accumulators):
    a0,a1: (g, 2t+{0,1}); a2,a3: (g+8, 2t+{0,1}); a4,a5: (g, 2t+8+{0,1}); a6,a7: (g+8, 2t+8+{0,1})
    b0,b1: (k=2t+{0,1}, n=g); b2,b3: (k=2t+8+{0,1}, n=g); c0,c1: (g, 2t+{0,1}); c2,c3: (g+8, 2t+{0,1}).
    """
    amat = np.zeros((16, 16), np.float32)
    bmat = np.zeros((16, 8), np.float32)
    cmat = np.zeros((16, 8), np.float32)
    for r, (dr, dc) in enumerate([(0, 0), (0, 1), (8, 0), (8, 1), (0, 8), (0, 9), (8, 8), (8, 9)]):
        amat[_G + dr, 2 * _T + dc] = a[:, r]
    for r, dk in enumerate([0, 1, 8, 9]):
        bmat[2 * _T + dk, _G] = b[:, r]
    for r, (dr, dc) in enumerate([(0, 0), (0, 1), (8, 0), (8, 1)]):
        cmat[_G + dr, 2 * _T + dc] = c[:, r]
    dmat = amat.astype(np.float32) @ bmat.astype(np.float32) + cmat
    return np.stack([dmat[_G + dr, 2 * _T + dc] for dr, dc in [(0, 0), (0, 1), (8, 0), (8, 1)]], axis=1)


def _quad_allreduce(x: np.ndarray, op: np.ufunc) -> np.ndarray:
    for off in (1, 2):  # __shfl_xor_sync(..., off) within the quad
        x = op(x, x[_LANE ^ off])
    return x


def emulate_window_attention_f16_lanes(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    bias_table: np.ndarray,
    *,
    window: int,
    bias_index: str = "k-q",
    scale: float | None = None,
) -> np.ndarray:
    """Register-level replay of ``windowAttentionF16`` (fp16 q, k, v; (windows, heads, N, D)).

    Slow (one numpy step per warp instruction group): keep inputs to a few windows and w <= 16.
    """
    if q.dtype != np.float16:
        raise TypeError("the fp16 kernel takes float16 q, k, v")
    tile = int(load_spec(WINDOW_ATTENTION).kernel["key_tile"])
    n, d = q.shape[-2], q.shape[-1]
    span = 2 * window - 1
    log_w = int(window).bit_length() - 1
    sign = 1 if bias_index == "k-q" else -1
    scale_log2e = np.float32(np.float32(d**-0.5 if scale is None else scale) * LOG2E)
    stride_k, stride_v = d + 8, tile + 8
    out = np.full(q.shape, np.nan, dtype=np.float16)

    def key_offset(key: np.ndarray) -> np.ndarray:
        return (key >> log_w) * span + (key & (window - 1))

    for bw, head in np.ndindex(q.shape[0], q.shape[1]):
        s_table = bias_table[head].astype(np.float32) * LOG2E
        qh, kh, vh = q[bw, head], k[bw, head], v[bw, head]
        for q_tile, warp in np.ndindex(n // tile, 4):
            row_lo = q_tile * tile + warp * 16 + _G
            row_hi = row_lo + 8
            a_q = [  # aQ[ks][0..3], each 2 halves: (lo, 2t), (hi, 2t), (lo, 2t+8), (hi, 2t+8)
                np.stack([qh[row_lo, ks * 16 + 2 * _T], qh[row_lo, ks * 16 + 2 * _T + 1],
                          qh[row_hi, ks * 16 + 2 * _T], qh[row_hi, ks * 16 + 2 * _T + 1],
                          qh[row_lo, ks * 16 + 2 * _T + 8], qh[row_lo, ks * 16 + 2 * _T + 9],
                          qh[row_hi, ks * 16 + 2 * _T + 8], qh[row_hi, ks * 16 + 2 * _T + 9]], axis=1)
                for ks in range(d // 16)
            ]  # fmt: skip
            q_base_lo = (window - 1) * span + (window - 1) - sign * key_offset(row_lo)
            q_base_hi = (window - 1) * span + (window - 1) - sign * key_offset(row_hi)
            m_lo = np.full(WARP, -np.inf, np.float32)
            m_hi = np.full(WARP, -np.inf, np.float32)
            l_lo = np.zeros(WARP, np.float32)
            l_hi = np.zeros(WARP, np.float32)
            o = np.zeros((d // 8, WARP, 4), np.float32)
            for kt in range(n // tile):
                # shared memory as the CTA's 128 threads store it (16-byte chunks, V transposed)
                s_k = np.zeros(tile * stride_k, np.float16)
                s_vt = np.zeros(d * stride_v, np.float16)
                for c in range(tile * d // 8):
                    key, d0 = c // (d // 8), (c % (d // 8)) * 8
                    s_k[key * stride_k + d0 : key * stride_k + d0 + 8] = kh[kt * tile + key, d0 : d0 + 8]
                    s_vt[(d0 + np.arange(8)) * stride_v + key] = vh[kt * tile + key, d0 : d0 + 8]
                s = np.zeros((tile // 8, WARP, 4), np.float32)
                for nt in range(tile // 8):
                    k_row = (nt * 8 + _G) * stride_k + 2 * _T
                    for ks in range(d // 16):
                        b = np.stack([s_k[k_row + ks * 16], s_k[k_row + ks * 16 + 1],
                                      s_k[k_row + ks * 16 + 8], s_k[k_row + ks * 16 + 9]], axis=1)  # fmt: skip
                        s[nt] = _mma16816(a_q[ks], b, s[nt])
                tm_lo = np.full(WARP, -np.inf, np.float32)
                tm_hi = np.full(WARP, -np.inf, np.float32)
                for nt in range(tile // 8):
                    for e in range(2):
                        k_off = sign * key_offset(kt * tile + nt * 8 + 2 * _T + e)
                        s[nt][:, e] = s[nt][:, e] * scale_log2e + s_table[q_base_lo + k_off]
                        s[nt][:, e + 2] = s[nt][:, e + 2] * scale_log2e + s_table[q_base_hi + k_off]
                        tm_lo = np.maximum(tm_lo, s[nt][:, e])
                        tm_hi = np.maximum(tm_hi, s[nt][:, e + 2])
                tm_lo, tm_hi = _quad_allreduce(tm_lo, np.maximum), _quad_allreduce(tm_hi, np.maximum)
                new_lo, new_hi = np.maximum(m_lo, tm_lo), np.maximum(m_hi, tm_hi)
                with np.errstate(invalid="ignore"):
                    alpha_lo, alpha_hi = np.exp2(m_lo - new_lo), np.exp2(m_hi - new_hi)
                m_lo, m_hi = new_lo, new_hi
                l_lo, l_hi = l_lo * alpha_lo, l_hi * alpha_hi
                o[:, :, 0:2] *= alpha_lo[None, :, None]
                o[:, :, 2:4] *= alpha_hi[None, :, None]
                for nt in range(tile // 8):
                    s[nt][:, 0:2] = np.exp2(s[nt][:, 0:2] - new_lo[:, None])
                    s[nt][:, 2:4] = np.exp2(s[nt][:, 2:4] - new_hi[:, None])
                    l_lo = l_lo + (s[nt][:, 0] + s[nt][:, 1])
                    l_hi = l_hi + (s[nt][:, 2] + s[nt][:, 3])
                for kk in range(tile // 16):
                    p, p_lo = split_half(np.concatenate([s[2 * kk][:, 0:2], s[2 * kk][:, 2:4], s[2 * kk + 1][:, 0:2],
                                                         s[2 * kk + 1][:, 2:4]], axis=1))  # fmt: skip
                    for nt in range(d // 8):
                        v_row = (nt * 8 + _G) * stride_v + kk * 16 + 2 * _T
                        b = np.stack([s_vt[v_row], s_vt[v_row + 1], s_vt[v_row + 8], s_vt[v_row + 9]], axis=1)
                        o[nt] = _mma16816(p, b, o[nt])
                        o[nt] = _mma16816(p_lo, b, o[nt])
            l_lo, l_hi = _quad_allreduce(l_lo, np.add), _quad_allreduce(l_hi, np.add)
            for nt in range(d // 8):
                for e in range(2):
                    out[bw, head, row_lo, nt * 8 + 2 * _T + e] = (o[nt][:, e] * (1 / l_lo)).astype(np.float16)
                    out[bw, head, row_hi, nt * 8 + 2 * _T + e] = (o[nt][:, e + 2] * (1 / l_hi)).astype(np.float16)
    return out


def _mma16816_batched(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """:func:`_mma16816` for many warps at once (leading dims are independent warps)."""
    lead = a.shape[:-2]
    amat = np.zeros((*lead, 16, 16), np.float32)
    bmat = np.zeros((*lead, 16, 8), np.float32)
    cmat = np.zeros((*lead, 16, 8), np.float32)
    for r, (dr, dc) in enumerate([(0, 0), (0, 1), (8, 0), (8, 1), (0, 8), (0, 9), (8, 8), (8, 9)]):
        amat[..., _G + dr, 2 * _T + dc] = a[..., r]
    for r, dk in enumerate([0, 1, 8, 9]):
        bmat[..., 2 * _T + dk, _G] = b[..., r]
    for r, (dr, dc) in enumerate([(0, 0), (0, 1), (8, 0), (8, 1)]):
        cmat[..., _G + dr, 2 * _T + dc] = c[..., r]
    dmat = np.matmul(amat, bmat) + cmat
    return np.stack([dmat[..., _G + dr, 2 * _T + dc] for dr, dc in [(0, 0), (0, 1), (8, 0), (8, 1)]], axis=-1)


def emulate_window_attention_f16_lanes_batched(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    bias_table: np.ndarray,
    *,
    window: int,
    bias_index: str = "k-q",
    scale: float | None = None,
) -> np.ndarray:
    """:func:`emulate_window_attention_f16_lanes` with every (window, head) warp set replayed at
    once: the same per-lane registers, shared-memory addresses and instruction order, vectorised
    over the windows and heads (which the kernel runs in independent CTAs). Fast enough for
    validating whole fp16 plugin graphs on CPU."""
    if q.dtype != np.float16:
        raise TypeError("the fp16 kernel takes float16 q, k, v")
    tile = int(load_spec(WINDOW_ATTENTION).kernel["key_tile"])
    n, d = q.shape[-2], q.shape[-1]
    span = 2 * window - 1
    log_w = int(window).bit_length() - 1
    sign = 1 if bias_index == "k-q" else -1
    scale_log2e = np.float32(np.float32(d**-0.5 if scale is None else scale) * LOG2E)
    stride_k, stride_v = d + 8, tile + 8
    lead = q.shape[:2]
    out = np.full(q.shape, np.nan, dtype=np.float16)
    table = bias_table.astype(np.float32) * LOG2E  # (heads, span^2)

    def key_offset(key: np.ndarray) -> np.ndarray:
        return (key >> log_w) * span + (key & (window - 1))

    def bias(idx: np.ndarray) -> np.ndarray:
        return table[:, idx][None]  # (1, heads, 32)

    for q_tile, warp in np.ndindex(n // tile, 4):
        row_lo = q_tile * tile + warp * 16 + _G
        row_hi = row_lo + 8
        a_q = [
            np.stack([q[:, :, row_lo, ks * 16 + 2 * _T], q[:, :, row_lo, ks * 16 + 2 * _T + 1],
                      q[:, :, row_hi, ks * 16 + 2 * _T], q[:, :, row_hi, ks * 16 + 2 * _T + 1],
                      q[:, :, row_lo, ks * 16 + 2 * _T + 8], q[:, :, row_lo, ks * 16 + 2 * _T + 9],
                      q[:, :, row_hi, ks * 16 + 2 * _T + 8], q[:, :, row_hi, ks * 16 + 2 * _T + 9]], axis=-1)
            for ks in range(d // 16)
        ]  # fmt: skip
        q_base_lo = (window - 1) * span + (window - 1) - sign * key_offset(row_lo)
        q_base_hi = (window - 1) * span + (window - 1) - sign * key_offset(row_hi)
        m_lo = np.full((*lead, WARP), -np.inf, np.float32)
        m_hi = np.full((*lead, WARP), -np.inf, np.float32)
        l_lo = np.zeros((*lead, WARP), np.float32)
        l_hi = np.zeros((*lead, WARP), np.float32)
        o = np.zeros((d // 8, *lead, WARP, 4), np.float32)
        for kt in range(n // tile):
            s_k = np.zeros((*lead, tile * stride_k), np.float16)
            s_vt = np.zeros((*lead, d * stride_v), np.float16)
            for c in range(tile * d // 8):
                key, d0 = c // (d // 8), (c % (d // 8)) * 8
                s_k[..., key * stride_k + d0 : key * stride_k + d0 + 8] = k[:, :, kt * tile + key, d0 : d0 + 8]
                s_vt[..., (d0 + np.arange(8)) * stride_v + key] = v[:, :, kt * tile + key, d0 : d0 + 8]
            s = np.zeros((tile // 8, *lead, WARP, 4), np.float32)
            for nt in range(tile // 8):
                k_row = (nt * 8 + _G) * stride_k + 2 * _T
                for ks in range(d // 16):
                    b = np.stack([s_k[..., k_row + ks * 16], s_k[..., k_row + ks * 16 + 1],
                                  s_k[..., k_row + ks * 16 + 8], s_k[..., k_row + ks * 16 + 9]], axis=-1)  # fmt: skip
                    s[nt] = _mma16816_batched(a_q[ks], b, s[nt])
            tm_lo = np.full((*lead, WARP), -np.inf, np.float32)
            tm_hi = np.full((*lead, WARP), -np.inf, np.float32)
            for nt in range(tile // 8):
                for e in range(2):
                    k_off = sign * key_offset(kt * tile + nt * 8 + 2 * _T + e)
                    s[nt][..., e] = s[nt][..., e] * scale_log2e + bias(q_base_lo + k_off)
                    s[nt][..., e + 2] = s[nt][..., e + 2] * scale_log2e + bias(q_base_hi + k_off)
                    tm_lo = np.maximum(tm_lo, s[nt][..., e])
                    tm_hi = np.maximum(tm_hi, s[nt][..., e + 2])
            for off in (1, 2):
                tm_lo = np.maximum(tm_lo, tm_lo[..., _LANE ^ off])
                tm_hi = np.maximum(tm_hi, tm_hi[..., _LANE ^ off])
            new_lo, new_hi = np.maximum(m_lo, tm_lo), np.maximum(m_hi, tm_hi)
            with np.errstate(invalid="ignore"):
                alpha_lo, alpha_hi = np.exp2(m_lo - new_lo), np.exp2(m_hi - new_hi)
            m_lo, m_hi = new_lo, new_hi
            l_lo, l_hi = l_lo * alpha_lo, l_hi * alpha_hi
            o[..., 0:2] *= alpha_lo[None, ..., None]
            o[..., 2:4] *= alpha_hi[None, ..., None]
            for nt in range(tile // 8):
                s[nt][..., 0:2] = np.exp2(s[nt][..., 0:2] - new_lo[..., None])
                s[nt][..., 2:4] = np.exp2(s[nt][..., 2:4] - new_hi[..., None])
                l_lo = l_lo + (s[nt][..., 0] + s[nt][..., 1])
                l_hi = l_hi + (s[nt][..., 2] + s[nt][..., 3])
            for kk in range(tile // 16):
                p, p_lo = split_half(np.concatenate([s[2 * kk][..., 0:2], s[2 * kk][..., 2:4], s[2 * kk + 1][..., 0:2],
                                                     s[2 * kk + 1][..., 2:4]], axis=-1))  # fmt: skip
                for nt in range(d // 8):
                    v_row = (nt * 8 + _G) * stride_v + kk * 16 + 2 * _T
                    b = np.stack([s_vt[..., v_row], s_vt[..., v_row + 1], s_vt[..., v_row + 8], s_vt[..., v_row + 9]],
                                 axis=-1)
                    o[nt] = _mma16816_batched(p, b, o[nt])
                    o[nt] = _mma16816_batched(p_lo, b, o[nt])
        for off in (1, 2):
            l_lo = l_lo + l_lo[..., _LANE ^ off]
            l_hi = l_hi + l_hi[..., _LANE ^ off]
        for nt in range(d // 8):
            for e in range(2):
                out[:, :, row_lo, nt * 8 + 2 * _T + e] = (o[nt][..., e] * (1 / l_lo)).astype(np.float16)
                out[:, :, row_hi, nt * 8 + 2 * _T + e] = (o[nt][..., e + 2] * (1 / l_hi)).astype(np.float16)
    return out
