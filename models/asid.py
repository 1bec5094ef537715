"""ASID: Attention-Sharing Information Distillation (Park, Soh, Cho; AAAI 2025).

Names: ``asid`` (3 information-distillation groups, ~300K parameters) and ``asid.d8`` (8 groups,
ASID-D8), each at x2/x3/x4. Follows saturnian77/ASID (``components/ASID.py``,
``components/ASIDd8.py``, ``ops/IDSA.py``, ``ops/IDSG.py``, ``ops/IDSG_A.py``) and the Omni-SR
helpers it imports (``ops/esa.py``, ``ops/layernorm.py``, ``ops/pixelshuffle.py``). State-dict
keys are identical to the authors' raw checkpoints; the relative-position index buffers are
non-persistent, as in the authors' code.

How the network works (and where it is easy to get wrong):

* **Range and padding.** The authors' network works on [-1, 1] (``Normalize(0.5, 0.5)`` in their
  test loader). ``forward`` maps our [0, 1] input with ``(x - 0.5) * 2``, zero-pads bottom/right to
  a multiple of 8 *in that range* (so padding is 0, i.e. mid-grey, exactly as the authors pad),
  runs the network, crops and maps back with ``y / 2 + 0.5``.
* **Attention sharing.** Every group has three local-window (SLA) and three grid (SGA) spatial
  self-attention layers. Only the first group (``block0``) projects queries and keys: it returns
  its six post-softmax attention maps, each ``(B * nGroups, 1, 64, 64)``, and every later group
  applies exactly those maps (same position) to its own value projection, followed by its own
  output projection, norms and FFNs. The later groups have no q/k parameters at all. The channel
  attentions (``BlockC``) are never shared.
* **Window vs grid.** SLA attends inside contiguous 8x8 windows. SGA groups the pixels whose row
  (column) offsets inside an ``H/8`` (``W/8``) stride are equal, i.e. an 8x8 dilated lattice that
  spans the whole (tile) image. The grid, the channel-grid attention, the SE means and ESA's pooling
  therefore depend on the image size: a 64x64 tile (the authors' test protocol, recorded as the
  default tiling) and the whole image give different results.
* **Relative position bias** is indexed query-minus-key (MaxViT convention, opposite of ESC):
  ``bias[q, k] = table[(qy - ky + 7) * 15 + (qx - kx + 7)]`` over token coordinates inside the
  8x8 group. It is an ``nn.Embedding`` looked up with a constant index buffer, i.e. a Gather on two
  constants that export constant-folds into one ``(1, 64, 64)`` initializer.

Export notes: the authors' custom ``LayerNorm2d`` autograd Function is written here as plain
mean/variance ops; einops rearranges are reshape/permute (at most 6-D); einsums are matmuls.
The contract-A ``window_attention`` (``models/attention.py``) is not used because block0 must
expose its post-softmax maps, which that function does not return; the bias convention is the
same as its ``bias_index="q-k"`` (checked in the tests).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from srdeploy.errors import ShapeError
from srdeploy.sizes import Size
from srdeploy.tiling import Tiling

from .layers import ESA
from .registry import Descriptor, ShapeProfile, SizePath, register

__all__ = [
    "ASID",
    "IDSG",
    "ChannelAttention",
    "IDSABlock",
    "SpatialAttention",
    "SpatialAttentionLayer",
    "build_asid",
    "build_asid_d8",
    "grid_partition",
    "grid_unpartition",
    "relative_position_index",
    "window_partition",
    "window_unpartition",
]

_FEATS = 48  # feature_num in the authors' configs
_WINDOW = 8  # window / grid size, also the padding multiple
_MIN_PADDED = 16  # ESA: stride-2 valid 3x3 conv then a 7x7 max-pool needs >= 16 padded pixels
_MIN_SIZE = _MIN_PADDED - _WINDOW + 1  # 9: any LR side above 8 is padded to at least 16

Layout = Literal["window", "grid"]
AttentionMaps = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


# ----------------------------------------------------------------------------- partitions


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * H/w * W/w, w*w, C): contiguous w x w windows, tokens row-major."""
    b, c, h, wd = x.shape
    x = x.reshape(b, c, h // w, w, wd // w, w).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b * (h // w) * (wd // w), w * w, c)


def window_unpartition(t: torch.Tensor, w: int, b: int, h: int, wd: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`."""
    c = t.shape[-1]
    t = t.reshape(b, h // w, wd // w, w, w, c).permute(0, 5, 1, 3, 2, 4)
    return t.reshape(b, c, h, wd)


def grid_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * H/w * W/w, w*w, C): the w x w dilated lattice groups.

    Group ``(i, j)`` holds the pixels at rows ``i + m * H/w`` and columns ``j + n * W/w``
    (``m, n < w``); token ``m * w + n``. This is the authors' ``(w1 x) (w2 y)`` split, window
    factor outside.
    """
    b, c, h, wd = x.shape
    x = x.reshape(b, c, w, h // w, w, wd // w).permute(0, 3, 5, 2, 4, 1)
    return x.reshape(b * (h // w) * (wd // w), w * w, c)


def grid_unpartition(t: torch.Tensor, w: int, b: int, h: int, wd: int) -> torch.Tensor:
    """Inverse of :func:`grid_partition`."""
    c = t.shape[-1]
    t = t.reshape(b, h // w, wd // w, w, w, c).permute(0, 5, 3, 1, 4, 2)
    return t.reshape(b, c, h, wd)


def relative_position_index(w: int) -> torch.Tensor:
    """(w*w, w*w) int64 index into the ((2w-1)**2,) table, query-minus-key (ASID/MaxViT)."""
    t = torch.arange(w * w)
    row, col = t // w, t % w
    d_row = row[:, None] - row[None, :] + (w - 1)
    d_col = col[:, None] - col[None, :] + (w - 1)
    return d_row * (2 * w - 1) + d_col


_PARTITION = {"window": (window_partition, window_unpartition), "grid": (grid_partition, grid_unpartition)}


# ----------------------------------------------------------------------------- small layers


class LayerNorm2d(nn.Module):
    """LayerNorm over channels of an NCHW tensor (eps 1e-6); plain ops instead of the authors'
    autograd Function, same arithmetic (biased variance, ``(x - mu) / sqrt(var + eps)``)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / (var + self.eps).sqrt()
        return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)


class GatedConvFFN(nn.Module):
    """``project_out(gelu(u1) * u2)`` with ``u1, u2 = dwconv(project_in(x))``; bias-free."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.project_in = nn.Conv2d(dim, dim * 2, 1, bias=False)
        self.dwconv = nn.Conv2d(dim * 2, dim * 2, 3, padding=1, groups=dim * 2, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u1, u2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(u1) * u2)


class _GlobalMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class SqueezeExcitation(nn.Module):
    """``x * sigmoid(W2 silu(W1 mean_hw(x)))``; ``gate`` indices 1 and 3 hold the weights."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = int(dim * 0.25)
        self.gate = nn.Sequential(
            _GlobalMean(),
            nn.Linear(dim, hidden, bias=False),
            nn.SiLU(),
            nn.Linear(hidden, dim, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)[:, :, None, None]


class _Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class LocalBlock(nn.Module):
    """LB: a residual MBConv with expansion 1 (1x1, GELU, dw 3x3, GELU, SE, 1x1)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = _Residual(
            nn.Sequential(
                nn.Conv2d(dim, dim, 1),
                nn.GELU(),
                nn.Conv2d(dim, dim, 3, padding=1, groups=dim),
                nn.GELU(),
                SqueezeExcitation(dim),
                nn.Conv2d(dim, dim, 1),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ----------------------------------------------------------------------------- attentions


class SpatialAttention(nn.Module):
    """Single-head self-attention over 64-token groups.

    ``computes_map=True`` (block0, the authors' ``SelfAttentionA``): ``to_qkv``, ``to_out.0`` and
    the relative-position ``rel_pos_bias`` table; returns ``(out, attn)`` with ``attn`` the
    post-softmax map ``(G, 1, N, N)``. ``computes_map=False`` (``SelfAttentionB``): only ``to_v``
    and ``to_out.0``; applies the map it is given and returns it unchanged.
    """

    def __init__(self, dim: int, window: int, computes_map: bool) -> None:
        super().__init__()
        self.dim = dim
        self.window = window
        self.computes_map = computes_map
        self.scale = dim**-0.5
        if computes_map:
            self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
            self.rel_pos_bias = nn.Embedding((2 * window - 1) ** 2, 1)
            self.register_buffer("rel_pos_indices", relative_position_index(window), persistent=False)
        else:
            self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim, bias=False))

    def attention_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(G, N, d) tokens -> (post-softmax map (G, 1, N, N), values (G, 1, N, d))."""
        q, k, v = self.to_qkv(x).unsqueeze(1).chunk(3, dim=-1)
        bias = self.rel_pos_bias(self.rel_pos_indices).permute(2, 0, 1)  # (1, N, N), constant
        sim = torch.matmul(q * self.scale, k.transpose(-2, -1)) + bias
        return sim.softmax(dim=-1), v

    def forward(self, x: torch.Tensor, shared: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.computes_map:
            if shared is not None:
                raise ValueError("this attention computes its own map; it takes no shared map")
            attn, v = self.attention_map(x)
        else:
            if shared is None:
                raise ValueError("this attention reuses block0's map; pass it as `shared`")
            attn, v = shared, self.to_v(x).unsqueeze(1)
        out = torch.matmul(attn, v).squeeze(1)
        return self.to_out(out), attn


class SpatialAttentionLayer(nn.Module):
    """SLA (``layout="window"``) or SGA (``"grid"``): pre-LN attention + gated FFN, residuals."""

    def __init__(self, dim: int, layout: Layout, computes_map: bool, window: int = _WINDOW) -> None:
        super().__init__()
        if layout not in _PARTITION:
            raise ValueError(f"layout must be 'window' or 'grid', got {layout!r}")
        self.layout = layout
        self.window = window
        self.norm = nn.LayerNorm(dim)
        self.attn = SpatialAttention(dim, window, computes_map)
        self.cnorm = LayerNorm2d(dim)
        self.gfn = GatedConvFFN(dim)

    def forward(self, x: torch.Tensor, shared: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        part, unpart = _PARTITION[self.layout]
        b, _, h, w = x.shape
        t = part(x, self.window)
        out, attn = self.attn(self.norm(t), shared)
        x = unpart(out + t, self.window, b, h, w)
        return self.gfn(self.cnorm(x)) + x, attn


class ChannelAttention(nn.Module):
    """Transposed (d x d) attention per 8x8 window (``layout="window"``) or per intra-window
    offset across all windows (``"grid"``); q and k L2-normalised, learned temperature."""

    def __init__(self, dim: int, layout: Layout, window: int = _WINDOW) -> None:
        super().__init__()
        if layout not in _PARTITION:
            raise ValueError(f"layout must be 'window' or 'grid', got {layout!r}")
        self.layout = layout
        self.ps = window
        self.temperature = nn.Parameter(torch.ones(1, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        # (B, d, H, W) -> window: (B, nWin, d, 64); grid: (B, 64, d, nWin)
        b, d, h, w = t.shape
        p = self.ps
        t = t.reshape(b, d, h // p, p, w // p, p)
        if self.layout == "window":
            return t.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), d, p * p)
        return t.permute(0, 3, 5, 1, 2, 4).reshape(b, p * p, d, (h // p) * (w // p))

    def _merge(self, t: torch.Tensor, b: int, d: int, h: int, w: int) -> torch.Tensor:
        p = self.ps
        if self.layout == "window":
            t = t.reshape(b, h // p, w // p, d, p, p).permute(0, 3, 1, 4, 2, 5)
        else:
            t = t.reshape(b, p, p, d, h // p, w // p).permute(0, 3, 4, 1, 5, 2)
        return t.reshape(b, d, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w = x.shape
        q, k, v = (self._split(t) for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (torch.matmul(q, k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        return self.project_out(self._merge(torch.matmul(attn, v), b, d, h, w))


class TrBlockC(nn.Module):
    """Window channel attention + FFN, then grid channel attention + FFN (pre-LN residuals)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.canorm1 = LayerNorm2d(dim)
        self.canorm2 = LayerNorm2d(dim)
        self.cttn1 = ChannelAttention(dim, "window")
        self.cttn2 = ChannelAttention(dim, "grid")
        self.cnorm1 = LayerNorm2d(dim)
        self.cnorm2 = LayerNorm2d(dim)
        self.gfn1 = GatedConvFFN(dim)
        self.gfn2 = GatedConvFFN(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cttn1(self.canorm1(x)) + x
        x = self.gfn1(self.cnorm1(x)) + x
        x = self.cttn2(self.canorm2(x)) + x
        return self.gfn2(self.cnorm2(x)) + x


# ----------------------------------------------------------------------------- blocks


class IDSABlock(nn.Module):
    """Information-distillation block: three distillation steps, each LB -> SLA -> SGA on the
    remaining channels (C - q, C - 2q, C - 3q with q = C/4), then a 1x1 fusion and TrBlockC.

    ``computes_maps=True`` is the authors' ``IDSA_Block1`` (block0): ``forward(x)`` returns
    ``(y, maps)``. Otherwise (``IDSA_Block2``) ``forward(x, maps)`` consumes block0's six maps in
    the same order (SLA1, SGA1, SLA2, SGA2, SLA3, SGA3) and returns ``(y, maps)`` unchanged.
    """

    def __init__(self, channels: int, computes_maps: bool) -> None:
        super().__init__()
        q = channels // 4
        self.ch_split = q
        self.computes_maps = computes_maps
        self.LB1 = LocalBlock(channels)
        self.LB2 = LocalBlock(3 * q)
        self.LB3 = LocalBlock(2 * q)
        self.SLA1 = SpatialAttentionLayer(3 * q, "window", computes_maps)
        self.SLA2 = SpatialAttentionLayer(2 * q, "window", computes_maps)
        self.SLA3 = SpatialAttentionLayer(q, "window", computes_maps)
        self.SGA1 = SpatialAttentionLayer(3 * q, "grid", computes_maps)
        self.SGA2 = SpatialAttentionLayer(2 * q, "grid", computes_maps)
        self.SGA3 = SpatialAttentionLayer(q, "grid", computes_maps)
        self.BlockC = TrBlockC(channels)
        self.pw1 = nn.Conv2d(channels, channels, 1)
        self.pw2 = nn.Conv2d(3 * q, 3 * q, 1)
        self.pw3 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, maps: AttentionMaps | None = None) -> tuple[torch.Tensor, AttentionMaps]:
        if self.computes_maps != (maps is None):
            raise ValueError("block0 computes the attention maps; every later block must be given them")
        s1, g1, s2, g2, s3, g3 = maps if maps is not None else (None,) * 6
        q = self.ch_split

        x = self.LB1(x)
        loc = x[:, :q]
        x, a1 = self.SLA1(x[:, q:], s1)
        x, a2 = self.SGA1(x, g1)
        x = self.pw1(torch.cat((x, loc), 1))
        x1 = x[:, :q]

        x = self.LB2(x[:, q:])
        loc = x[:, :q]
        x, a3 = self.SLA2(x[:, q:], s2)
        x, a4 = self.SGA2(x, g2)
        x = self.pw2(torch.cat((x, loc), 1))
        x2 = x[:, :q]

        x = self.LB3(x[:, q:])
        loc = x[:, :q]
        x, a5 = self.SLA3(x[:, q:], s3)
        x, a6 = self.SGA3(x, g3)
        x = self.pw3(torch.cat((x1, x2, x, loc), 1))
        return self.BlockC(x), (a1, a2, a3, a4, a5, a6)


class IDSG(nn.Module):
    """A group: IDSA block, 1x1 conv, residual, ESA.

    For block0 (``computes_maps=True``) ``residual_layer`` is a one-element ``nn.Sequential`` (the
    authors' ``IDSG_A``; checkpoint keys ``block0.residual_layer.0.*``), for later groups the
    block itself (``block{k}.residual_layer.*``).
    """

    def __init__(self, channels: int, computes_maps: bool) -> None:
        super().__init__()
        self.computes_maps = computes_maps
        block = IDSABlock(channels, computes_maps)
        self.residual_layer: nn.Module = nn.Sequential(block) if computes_maps else block
        self.res_end = nn.Conv2d(channels, channels, 1)
        self.esa = ESA(max(channels // 4, 16), channels)

    @property
    def block(self) -> IDSABlock:
        layer = self.residual_layer
        return layer[0] if isinstance(layer, nn.Sequential) else layer  # type: ignore[return-value]

    def forward(self, x: torch.Tensor, maps: AttentionMaps | None = None) -> tuple[torch.Tensor, AttentionMaps]:
        out, maps = self.block(x, maps)
        return self.esa(self.res_end(out) + x), maps


# ----------------------------------------------------------------------------- network


class ASID(nn.Module):
    """ASID / ASID-D8: ``groups`` IDSGs, the first computing the attention maps for all."""

    def __init__(self, scale: int, groups: int = 3, channels: int = _FEATS) -> None:
        super().__init__()
        if groups < 2:
            raise ValueError(f"ASID needs at least 2 groups (block0 plus sharers), got {groups}")
        if channels % 4:
            raise ValueError(f"channels must be a multiple of 4, got {channels}")
        self.scale = scale
        self.groups = groups
        self.window = _WINDOW
        self.input = nn.Conv2d(3, channels, 3, padding=1)
        for i in range(groups):
            setattr(self, f"block{i}", IDSG(channels, computes_maps=i == 0))
        self.output = nn.Conv2d(channels, channels, 3, padding=1)
        self.up = nn.Sequential(nn.Conv2d(channels, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def blocks(self) -> list[IDSG]:
        return [getattr(self, f"block{i}") for i in range(self.groups)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        if not torch.compiler.is_compiling() and (h < _MIN_SIZE or w < _MIN_SIZE):
            raise ShapeError(
                f"ASID needs an input of at least {_MIN_SIZE}x{_MIN_SIZE} LR pixels, got {h}x{w}; "
                "upscale a larger image or pad it"
            )
        x = (x - 0.5) * 2.0  # the authors' [-1, 1] range; padding below is 0 in THIS range
        pad_h = (self.window - h % self.window) % self.window
        pad_w = (self.window - w % self.window) % self.window
        x = F.pad(x, (0, pad_w, 0, pad_h))

        residual = self.input(x)
        first, *rest = self.blocks()
        out, maps = first(residual)
        for block in rest:
            out, _ = block(out, maps)
        out = self.up(self.output(out) + residual)
        out = out[:, :, : h * self.scale, : w * self.scale]
        return out * 0.5 + 0.5


# ----------------------------------------------------------------------------- registry

_SOURCE = (
    "saturnian77/ASID@e488abcf502bc514dac404a6c2f547956b282ea9 (components/ASID.py, ops/IDSA.py; "
    "components/ASIDd8.py, ops/IDSG.py, ops/IDSG_A.py @eb5af3b4ec923b5fb3e97917fa9cde219ad09a2d) + "
    "Francis0625/Omni-SR@9f45e7a08c3830227e55d2aa9648c461fe844f38 (ops/esa.py, ops/layernorm.py; "
    "ops/pixelshuffle.py @dcabe840a59f5460e3f66bd30a13ff79edfaf037)"
)
_HPARAMS = {
    "feature_num": _FEATS,
    "block_num": 1,
    "window_size": _WINDOW,
    "heads": 1,
    "attention_sharing": "block0 computes 6 spatial maps (SLA1,SGA1,SLA2,SGA2,SLA3,SGA3); later groups reuse",
    "rel_pos_bias": "q-k",
}


def _descriptor(name: str, variant: str | None, groups: int) -> Descriptor:
    return Descriptor(
        name=name,
        family="asid",
        variant=variant,
        scales=(2, 3, 4),
        input_range="-1-1",
        size_multiple=_WINDOW,
        min_size=_MIN_SIZE,
        # The authors evaluate on 64x64 LR tiles, stride 40, uniformly averaged (tester_Matlab.py);
        # the grid attentions see a different lattice on any other tile size.
        default_tiling=Tiling(64, 24, "average"),
        trt_profile=ShapeProfile(min=Size(16, 16), opt=Size(64, 64), max=Size(720, 1280)),
        fp16=True,
        needs_fusion=False,
        weights_license="not stated by the authors",
        paper=(
            "Park, Soh, Cho. Efficient Attention-Sharing Information Distillation Transformer for "
            "Lightweight Single Image Super-Resolution. AAAI 2025"
        ),
        hparams={**_HPARAMS, "res_num": groups},
        source=_SOURCE,
        # every side is padded to a multiple of 8 and to >= 16; above 16 the window (SLA) and grid
        # (SGA) attentions see more than a 2x2 lattice
        size_paths=(
            SizePath("window_grid_attention", _MIN_PADDED,
                     f"{_WINDOW}x{_WINDOW} window (SLA) and grid (SGA) attention over a lattice larger than 2x2"),
        ),
        test_tier="fast",
    )


@register(_descriptor("asid", None, 3))
def build_asid(scale: int) -> ASID:
    """ASID: block0 + 2 attention-sharing groups (297,516 / 304,011 / 313,104 parameters)."""
    return ASID(scale, groups=3)


@register(_descriptor("asid.d8", "d8", 8))
def build_asid_d8(scale: int) -> ASID:
    """ASID-D8: block0 + 7 attention-sharing groups (732,146 / 738,641 / 747,734 parameters)."""
    return ASID(scale, groups=8)
