"""The three CiaoSR encoders: EDSR-baseline, RDN and SwinIR, without their upsampling tails.

Each backbone maps the mean-shifted LR image ``(N, 3, H, W)`` to a feature map ``(N, D, H, W)``
and names its sub-modules exactly as the authors' generator does, because the CiaoSR model adopts
them at its top level (their checkpoints hold ``conv_first.*``, ``body.*``, ``rdbs.*``,
``layers.*``... next to ``imnet_*`` and ``cs_attn``). Written from the architecture description
(docs/architectures.md section 5.1) and checked against the authors' code by the fixtures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------- EDSR-baseline


class ResidualBlockNoBN(nn.Module):
    """conv3x3 - ReLU - conv3x3 plus identity (residual scale 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(x)))


class EDSRBaseline(nn.Module):
    """mmedit ``EDSR`` (mid 64, 16 blocks) up to ``conv_after_body`` plus the long skip."""

    def __init__(self, channels: int = 64, blocks: int = 16) -> None:
        super().__init__()
        self.feat_dim = channels
        self.conv_first = nn.Conv2d(3, channels, 3, 1, 1)
        self.body = nn.Sequential(*[ResidualBlockNoBN(channels) for _ in range(blocks)])
        self.conv_after_body = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_first(x)
        return self.conv_after_body(self.body(x)) + x


# ----------------------------------------------------------------------------- RDN


class DenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, growth, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, torch.relu(self.conv(x))], 1)


class RDB(nn.Module):
    """Residual dense block: ``layers`` dense 3x3 convs, 1x1 local fusion ``lff``, local residual."""

    def __init__(self, channels: int, growth: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[DenseLayer(channels + growth * i, growth) for i in range(layers)])
        self.lff = nn.Conv2d(channels + growth * layers, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.lff(self.layers(x))


class RDN(nn.Module):
    """mmedit ``RDN`` (mid 64, 16 RDBs of 8 layers, growth 64) up to global feature fusion."""

    def __init__(self, channels: int = 64, blocks: int = 16, layers: int = 8, growth: int = 64) -> None:
        super().__init__()
        self.feat_dim = channels
        self.sfe1 = nn.Conv2d(3, channels, 3, 1, 1)
        self.sfe2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.rdbs = nn.ModuleList([RDB(channels, growth, layers) for _ in range(blocks)])
        self.gff = nn.Sequential(nn.Conv2d(channels * blocks, channels, 1), nn.Conv2d(channels, channels, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sfe1 = self.sfe1(x)
        y = self.sfe2(sfe1)
        local = []
        for rdb in self.rdbs:
            y = rdb(y)
            local.append(y)
        return self.gff(torch.cat(local, 1)) + sfe1


# ----------------------------------------------------------------------------- SwinIR


def _windows(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, ws*ws, C), windows in raster order, tokens row-major."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def _unwindows(x: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    c = x.shape[-1]
    x = x.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def shift_mask(h: int, w: int, ws: int, shift: int, device: torch.device | None = None) -> torch.Tensor:
    """The shifted-window attention mask ``(nW, ws*ws, ws*ws)``: 0 within a region, -100 across.

    Regions are the 3 x 3 bands ``[0, h-ws)``, ``[h-ws, h-shift)``, ``[h-shift, h)`` (same for
    columns) of the cyclically shifted map; computed with comparisons instead of slice writes.
    """
    ys = torch.arange(h, device=device)
    xs = torch.arange(w, device=device)
    band_y = (ys >= h - ws).long() + (ys >= h - shift).long()
    band_x = (xs >= w - ws).long() + (xs >= w - shift).long()
    region = (band_y[:, None] * 3 + band_x[None, :]).to(torch.float32)
    win = _windows(region.view(1, h, w, 1), ws).squeeze(-1)  # (nW, ws*ws)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return torch.where(diff != 0, torch.full_like(diff, -100.0), torch.zeros_like(diff))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ws x ws windows with SwinIR's relative position bias."""

    relative_position_index: torch.Tensor

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.window = window
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        yy, xx = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        flat = torch.stack([yy.flatten(), xx.flatten()])  # (2, N)
        rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0)  # query - key, (N, N, 2)
        index = (rel[..., 0] + window - 1) * (2 * window - 1) + (rel[..., 1] + window - 1)
        # persistent: the authors' checkpoints carry it
        self.register_buffer("relative_position_index", index)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        attn = torch.softmax(attn, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm (shifted) window attention + MLP, SwinIR's ``SwinTransformerBlock``."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float, train_size: int) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        if shift > 0:
            # Kept for checkpoint compatibility only (the authors store the mask of their 48x48
            # training size); forward always recomputes the mask for the actual size, which
            # equals the stored one at 48x48.
            self.register_buffer("attn_mask", shift_mask(train_size, train_size, window, shift))
        else:
            self.attn_mask = None

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift > 0:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
            mask: torch.Tensor | None = shift_mask(h, w, self.window, self.shift, x.device).to(x.dtype)
        else:
            mask = None
        y = self.attn(_windows(y, self.window), mask)
        y = _unwindows(y, self.window, h, w)
        if self.shift > 0:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class BasicLayer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float, train_size: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                SwinBlock(dim, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio, train_size)
                for i in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, h, w)
        return x


class RSTB(nn.Module):
    """Residual Swin Transformer block: a stage of Swin blocks, a 3x3 conv, a residual."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float, train_size: int) -> None:
        super().__init__()
        self.residual_group = BasicLayer(dim, depth, heads, window, mlp_ratio, train_size)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        y = self.residual_group(x, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.conv(y).flatten(2).transpose(1, 2) + x


class PatchEmbed(nn.Module):
    """Tokens (B, HW, C) from a feature map, then LayerNorm (``patch_embed.norm``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.flatten(2).transpose(1, 2))


class SwinIREncoder(nn.Module):
    """SwinIR (classical SR configuration) up to ``conv_after_body`` plus the long skip.

    The input is reflect-padded to a multiple of the window (8) and the feature cropped back, as
    the authors' ``gen_feature`` does; so the LR input must be at least 5 pixels on each side
    (a reflect pad must be smaller than the side it pads).
    """

    def __init__(
        self,
        dim: int = 180,
        depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6),
        heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6),
        window: int = 8,
        mlp_ratio: float = 2.0,
        train_size: int = 48,
    ) -> None:
        super().__init__()
        self.feat_dim = dim
        self.window = window
        self.conv_first = nn.Conv2d(3, dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(dim)
        stages = zip(depths, heads, strict=True)
        self.layers = nn.ModuleList([RSTB(dim, d, h, window, mlp_ratio, train_size) for d, h in stages])
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        ws = self.window
        x = F.pad(img, (0, (-w) % ws, 0, (-h) % ws), mode="reflect")
        x = self.conv_first(x)
        b, c, hp, wp = x.shape
        t = self.patch_embed(x)
        for layer in self.layers:
            t = layer(t, hp, wp)
        t = self.norm(t).transpose(1, 2).reshape(b, c, hp, wp)
        res = self.conv_after_body(t) + x
        return res[:, :, :h, :w]
