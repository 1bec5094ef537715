"""AGDN and AGDN-S: Attention Guidance Distillation Network (Wang et al., NTIRE/CVPRW 2024).

Faithful to ``daydreamer2024/AGDN@4eb39dc`` (``basicsr/archs/AGDN_arch.py``, ``AGDN_S_arch.py``):
state-dict keys are identical to the authors' checkpoints (``pretrain/AGDN_x{2,3,4}.pth``), and
the default forward reproduces the authors' test-time inference, including TLC.

Deviations from the authors' code, all numerically equivalent (tested to 1e-5):

* the MVSA local variance is computed as pooled moments (``AvgPool(x^2) - AvgPool(x)^2``,
  unbiased) instead of ``Tensor.unfold`` + ``var``, which exports to standard ONNX ops;
* TLC (the test-time local converter of the channel attention) works for any batch size; its
  windows are gathered with slices and scattered back with zero padding + sums (no in-place
  slice writes), and the per-pixel overlap count is a shape-derived constant;
* the channel LayerNorm works on NCHW directly (no rearranges).

TLC: at test time the authors cut the attention's ``qkv`` tensor into overlapping windows of
48 (AGDN) or 96 (AGDN-S) LR pixels, attend inside each window and average the overlaps. The
window list depends on the input size, so a graph exported with TLC on is only valid for the
size it was traced at; ``tlc=False`` gives the global channel attention the network was trained
with (fully dynamic shapes; -0.02 dB on bird x2 per the architecture notes, -0.12 dB on the
bicubic-downscaled baboon x2 measured here).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from srdeploy.errors import SrdeployError
from srdeploy.sizes import Size

from .registry import Descriptor, ShapeProfile, SizePath, register

__all__ = ["AGDN", "build_agdn", "build_agdn_s", "local_variance", "tlc_starts"]

RGB_MEAN = (0.4488, 0.4371, 0.4040)
PAPER = "Wang et al., Attention Guidance Distillation Network for Efficient Image Super-Resolution, CVPRW 2024"
SOURCE = "daydreamer2024/AGDN@4eb39dc"
#: ESA needs ceil(H/2) >= 8 so that the 7x7, stride-3 pooled maps are at least 2 wide (their
#: reflect-padded 3x3 convs refuse a 1-pixel map): LR H and W >= 15 (checked on the authors' code).
MIN_SIZE = 15


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


class BSConvU(nn.Module):
    """Blueprint separable conv: 1x1 pointwise (no bias) then a depthwise kxk with reflect padding."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.dw = nn.Conv2d(
            cout, cout, kernel_size, stride=stride, padding=padding, groups=cout, padding_mode="reflect"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(self.pw(x))


def local_variance(x: torch.Tensor, kernel: int, stride: int = 3) -> torch.Tensor:
    """Unbiased variance over ``kernel``-square windows at ``stride`` after a reflect pad of 1.

    Pooled-moments form of the authors' ``unfold(...).var(unbiased=True)``. Each channel is first
    centred on its mean (variance is shift invariant) so that ``E[x^2] - E[x]^2`` does not lose
    digits to cancellation; the result is clamped at 0 against rounding.
    """
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    x = x - x.mean(dim=(2, 3), keepdim=True)
    m1 = F.avg_pool2d(x, kernel, stride)
    m2 = F.avg_pool2d(x * x, kernel, stride)
    n = kernel * kernel
    return ((m2 - m1 * m1) * (n / (n - 1))).clamp_min(0.0)


class ESA(nn.Module):
    """The spatial attention inside MVSA: max-pool and local-variance branches at two ranges."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        f = channels // 4
        self.conv1 = nn.Conv2d(channels, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv2_1 = BSConvU(f, f, 3, 2, 1)
        self.conv2_2 = BSConvU(f, f, 3, 2, 1)
        self.conv2_3 = BSConvU(f, f, 3, 2, 1)
        self.conv2_4 = BSConvU(f, f, 3, 2, 1)
        self.maxPooling_1 = nn.MaxPool2d(kernel_size=5, stride=3, padding=1)
        self.maxPooling_2 = nn.MaxPool2d(kernel_size=7, stride=3, padding=1)
        self.conv_max_1 = BSConvU(f, f)
        self.conv_max_2 = BSConvU(f, f)
        self.conv3_1 = BSConvU(f, f)
        self.conv3_2 = BSConvU(f, f)
        self.conv4 = nn.Conv2d(f, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv1(x)
        p5 = self.maxPooling_1(self.conv2_1(c))
        p7 = self.maxPooling_2(self.conv2_2(c))
        v7 = local_variance(self.conv2_3(c), 7)
        v5 = local_variance(self.conv2_4(c), 5)
        g1 = self.conv3_1(F.gelu(self.conv_max_1(p5 + v5)))
        g2 = self.conv3_2(F.gelu(self.conv_max_2(p7 + v7)))
        size = (x.shape[2], x.shape[3])
        g1 = F.interpolate(g1, size, mode="bilinear", align_corners=False)
        g2 = F.interpolate(g2, size, mode="bilinear", align_corners=False)
        m = torch.sigmoid(self.conv4(g1 + g2 + self.conv_f(c)))
        return x * m


class MVSA(nn.Module):
    """Multi-level variance-aware spatial attention: ESA with a residual (``body.0`` is the ESA)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(ESA(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class ElementScale(nn.Module):
    """A learnable per-channel scale (key ``scale``)."""

    def __init__(self, channels: int, init: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1, channels, 1, 1), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class CCALayer(nn.Module):
    """Contrast channel attention: sigmoid(MLP(std + mean over space)) scales the channels."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()  # population std
        return x * self.conv_du(std + mean)


class RCCA(nn.Module):
    """Reallocated contrast-aware channel attention."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.decompose = nn.Conv2d(channels, 1, 1)
        self.sigma = ElementScale(channels, 1e-5)
        self.cca = CCALayer(channels, channels // (channels // 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.dwconv(x))
        return self.sigma(y - F.gelu(self.decompose(y))) + self.cca(y) + x


class _LayerNormParams(nn.Module):
    """Holds ``weight``/``bias`` under the authors' ``norm*.body`` key path; normalises dim 1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(dim=1, keepdim=True)
        d = x - mu
        var = d.pow(2).mean(dim=1, keepdim=True)
        return d / torch.sqrt(var + 1e-5) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class LayerNorm2d(nn.Module):
    """Channel LayerNorm with bias on NCHW tensors (eps 1e-5, biased variance)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = _LayerNormParams(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class FeedForward(nn.Module):
    """Gated depthwise FFN (Restormer GDFN), expansion 2, no biases."""

    def __init__(self, channels: int, expansion: float = 2.0) -> None:
        super().__init__()
        hidden = int(channels * expansion)
        self.project_in = nn.Conv2d(channels, 2 * hidden, 1, bias=False)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u1, u2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(u1) * u2)


def tlc_starts(length: int, window: int) -> list[int]:
    """Start offsets of TLC windows along one axis, laid out as the authors' TLC does.

    The window is ``min(length, window)``; there are ``ceil(length / window)`` nominal windows,
    the step is ``ceil((length - window) / (count - 1))`` and the window that reaches the border
    is snapped to it.
    """
    k = min(length, window)
    count = (length - 1) // k + 1
    step = k if count == 1 else math.ceil((length - k) / (count - 1) - 1e-8)
    starts = []
    pos = 0
    while pos + k < length:
        starts.append(pos)
        pos += step
    starts.append(length - k)
    return starts


@functools.lru_cache(maxsize=64)
def _tlc_cover(length: int, window: int) -> tuple[int, ...]:
    """How many TLC windows cover each position along one axis."""
    k = min(length, window)
    cover = [0] * length
    for start in tlc_starts(length, window):
        for pos in range(start, start + k):
            cover[pos] += 1
    return tuple(cover)


class SparseAttention(nn.Module):
    """Sparse channel ("transposed") attention: ReLU instead of softmax, optional TLC windows.

    ``tlc_window`` (LR pixels) enables the authors' test-time local converter in eval mode;
    ``None`` attends globally. As in the authors' code, training mode always attends globally.
    """

    def __init__(self, channels: int, heads: int = 3, tlc_window: int | None = 48) -> None:
        super().__init__()
        self.heads = heads
        self.tlc_window = tlc_window
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(3 * channels, 3 * channels, 3, padding=1, groups=3 * channels, bias=False)
        self.project_out = nn.Conv2d(channels, channels, 1, bias=False)

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Global channel attention of ``qkv`` (B, 3C, H, W) -> (B, C, H, W)."""
        b, c3, h, w = qkv.shape
        q, k, v = qkv.reshape(b, 3, self.heads, c3 // (3 * self.heads), h * w).unbind(1)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = torch.relu((q @ k.transpose(-2, -1)) * self.temperature)
        return (attn @ v).reshape(b, c3 // 3, h, w)

    def attend_tlc(self, qkv: torch.Tensor, window: int) -> torch.Tensor:
        """Attention inside overlapping windows, overlaps averaged (any batch size)."""
        b, c3, h, w = qkv.shape
        rows, cols = tlc_starts(h, window), tlc_starts(w, window)
        if len(rows) == 1 and len(cols) == 1:
            return self.attend(qkv)
        kh, kw = min(h, window), min(w, window)
        parts = [qkv[:, :, i : i + kh, j : j + kw] for i in rows for j in cols]
        out = self.attend(torch.cat(parts, dim=0))  # windows stacked on the batch axis
        out = out.reshape(len(rows), len(cols), b, c3 // 3, kh, kw)
        total: torch.Tensor | None = None
        for r, i in enumerate(rows):
            band: torch.Tensor | None = None  # one row of windows, scattered along the width
            for s, j in enumerate(cols):
                piece = F.pad(out[r, s], (j, w - j - kw))
                band = piece if band is None else band + piece
            assert band is not None
            band = F.pad(band, (0, 0, i, h - i - kh))
            total = band if total is None else total + band
        assert total is not None
        # windows form a grid, so the overlap count is (windows over the row) x (over the column)
        cover_h = torch.tensor(_tlc_cover(h, window), dtype=qkv.dtype, device=qkv.device)
        cover_w = torch.tensor(_tlc_cover(w, window), dtype=qkv.dtype, device=qkv.device)
        return total / (cover_h.view(h, 1) * cover_w.view(1, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv_dwconv(self.qkv(x))
        window = None if self.training else self.tlc_window
        return self.project_out(self.attend(qkv) if window is None else self.attend_tlc(qkv, window))


class SparseAttentionLayerBlock(nn.Module):
    """SGSA block: pre-norm sparse channel attention and pre-norm gated FFN, both residual."""

    def __init__(self, channels: int, tlc_window: int | None) -> None:
        super().__init__()
        self.norm3 = LayerNorm2d(channels)
        self.norm4 = LayerNorm2d(channels)
        self.restormer_attn = SparseAttention(channels, 3, tlc_window)
        self.restormer_ffn = FeedForward(channels, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.restormer_attn(self.norm3(x)) + x
        return self.restormer_ffn(self.norm4(x)) + x


class AGDB(nn.Module):
    """Attention-guided distillation block."""

    def __init__(self, channels: int, tlc_window: int | None) -> None:
        super().__init__()
        dc = channels // 2
        self.c1_d = nn.Conv2d(channels, dc, 1)
        self.c1_r = BSConvU(channels, channels)
        self.c2_d = nn.Conv2d(channels, dc, 1)
        self.c2_r = BSConvU(channels, channels)
        self.c3_d = nn.Conv2d(channels, dc, 1)
        self.c3_r = BSConvU(channels, channels)
        self.c4 = nn.Conv2d(channels, dc, 3, padding=1, groups=dc)
        self.c5 = nn.Conv2d(4 * dc, channels, 1)
        self.esa = MVSA(channels)
        self.cca = RCCA(channels)
        self.ea = SparseAttentionLayerBlock(channels, tlc_window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = F.gelu(self.c1_d(x))
        r1 = F.gelu(self.c1_r(x) + x)
        d2 = F.gelu(self.c2_d(r1))
        r2 = F.gelu(self.c2_r(r1) + r1)
        d3 = F.gelu(self.c3_d(r2))
        r3 = F.gelu(self.c3_r(r2) + r2)
        r4 = F.gelu(self.c4(r3))
        out = self.c5(torch.cat([d1, d2, d3, r4], dim=1))
        return self.ea(self.cca(self.esa(out))) + x


class AGDN(nn.Module):
    """AGDN (``channels=42, blocks=7, tlc_window=48``) and AGDN-S (``24, 4, 96``).

    Input RGB (N, 3, H, W) in [0, 1], H, W >= 15; output (N, 3, sH, sW) in [0, 1], unclamped.
    """

    mean: torch.Tensor  # the authors' RGB mean shift: a constant, not a state-dict entry

    def __init__(self, scale: int, channels: int = 42, blocks: int = 7, tlc_window: int | None = 48) -> None:
        super().__init__()
        self.scale = scale
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.fea_conv = nn.Conv2d(3, channels, 3, padding=1)
        self.block_names = [f"B{i + 1}" for i in range(blocks)]
        for name in self.block_names:
            self.add_module(name, AGDB(channels, tlc_window))
        self.c1 = nn.Conv2d(channels * blocks, channels, 1)
        self.c2 = BSConvU(channels, channels)
        self.upsampler = nn.Sequential(nn.Conv2d(channels, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def set_tlc(self, window: int | None) -> None:
        """Switch TLC on with ``window`` LR pixels, or off (global attention) with ``None``."""
        if window is not None and window < 1:
            raise SrdeployError(f"TLC window must be a positive number of LR pixels, got {window}")
        for m in self.modules():
            if isinstance(m, SparseAttention):
                m.tlc_window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - self.mean
        f0 = self.fea_conv(x)
        feats = []
        b = f0
        for name in self.block_names:
            b = getattr(self, name)(b)
            feats.append(b)
        out = self.c2(F.gelu(self.c1(torch.cat(feats, dim=1)))) + f0
        return self.upsampler(out) + self.mean


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------

_PROFILE = ShapeProfile(min=Size(MIN_SIZE, MIN_SIZE), opt=Size(256, 256), max=Size(720, 1280))


def _descriptor(name: str, variant: str | None, channels: int, blocks: int, window: int) -> Descriptor:
    return Descriptor(
        name=name,
        family="agdn",
        variant=variant,
        scales=(2, 3, 4),
        input_range="0-1",
        size_multiple=1,
        min_size=MIN_SIZE,
        # Whole-image inference, as the authors evaluate: the network is light (C <= 42), TLC
        # already bounds the attention's extent, and CCA/ESA use whole-image statistics that
        # tiling would change. Very large inputs can still be tiled with --tile.
        default_tiling=None,
        trt_profile=_PROFILE,
        fp16=True,
        needs_fusion=False,  # local variance is built in its export form; no fuse() rewrites
        weights_license="MIT",
        paper=PAPER,
        hparams={"channels": channels, "blocks": blocks, "heads": 3, "ffn_expansion": 2, "tlc_window": window},
        source=SOURCE,
        # TLC windows of `window` LR pixels: at or below it one window spans the image (= global
        # attention); above it the windows overlap and are averaged. A dynamic-shape export uses the
        # global form (the loops depend on the input size), so above the window it differs.
        size_paths=(
            SizePath("tlc", window, f"TLC (sparse channel attention in overlapping {window}x{window} LR windows)",
                     hparam="tlc_window", dynamic_form="global channel attention for dynamic H/W",
                     switch_option="tlc"),
        ),
        test_tier="fast",
    )


def _build(scale: int, channels: int, blocks: int, window: int, tlc: bool, tlc_window: int | None) -> AGDN:
    if tlc_window is not None and tlc_window < 1:
        raise SrdeployError(f"tlc_window must be a positive number of LR pixels, got {tlc_window}")
    return AGDN(scale, channels, blocks, (tlc_window or window) if tlc else None)


@register(_descriptor("agdn", None, 42, 7, 48))
def build_agdn(scale: int, *, tlc: bool = True, tlc_window: int | None = None) -> AGDN:
    """AGDN (C=42, 7 AGDBs). ``tlc``: the authors' test-time local converter (48-pixel windows,
    or ``tlc_window``); ``tlc=False`` attends globally (exportable with dynamic shapes)."""
    return _build(scale, 42, 7, 48, tlc, tlc_window)


@register(_descriptor("agdn.s", "s", 24, 4, 96))
def build_agdn_s(scale: int, *, tlc: bool = True, tlc_window: int | None = None) -> AGDN:
    """AGDN-S (C=24, 4 AGDBs), TLC windows of 96 by default. The authors released no weights."""
    return _build(scale, 24, 4, 96, tlc, tlc_window)
