"""A2N: Attention in Attention Network (Chen, Gu, Zhang; arXiv 2104.09497).

Names: ``a2n`` (3x3 non-attention branch, the released x2/x3 checkpoints) and ``a2n.m``
(A2N-M: 1x1 non-attention branch, the README's recommended lighter variant; no weights released).
Follows haoyuc/A2N@210b38c ``code/model/aan.py``; state-dict keys are identical to the authors'
plain (legacy pickle) checkpoints.

The authors' network works on 0-255 RGB (EDSR framework, ``rgb_range=255``, no mean shift). Our
``forward`` takes [0, 1] and returns [0, 1]: the body sees ``255 * x`` and its output is divided
by 255; the bilinear global skip is linear, so it is applied to ``x`` directly.

Deploy-time fusion (:meth:`A2B.fuse`, "fused dynamic-branch weighting"): each block ends with
``w0 * k4(g) + w1 * non_attention(u)`` where ``w`` are the per-sample softmax branch weights and
both convolutions are bias-free. By linearity this equals ONE convolution over
``cat(w0 * g, w1 * u)`` whose kernel is ``cat(k4.weight, non_attention.weight)`` along the input
channels (the 1x1 kernel of A2N-M is zero-padded to 3x3): one convolution instead of two per block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from srdeploy.sizes import Size

from .registry import Descriptor, ShapeProfile, register

_NF = 40  # trunk channels
_UNF = 24  # reconstruction channels
_NB = 16  # A2B blocks
_REDUCTION = 4  # ADM bottleneck
_K = 2  # branches: attention, non-attention
_TEMPERATURE = 30.0
_SLOPE = 0.2
_RGB_RANGE = 255.0

__all__ = ["A2B", "A2N", "AttentionBranch", "FusedA2B", "PixelAttention", "build_a2n", "build_a2n_m"]


class PixelAttention(nn.Module):
    """PA: ``x * sigmoid(conv1x1(x))``."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(nf, nf, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


class AttentionBranch(nn.Module):
    """``k4(k3(u) * sigmoid(k2(lrelu(k1(u)))))``; :meth:`gated` stops before ``k4``."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.k1 = nn.Conv2d(nf, nf, 3, padding=1, bias=False)
        self.k2 = nn.Conv2d(nf, nf, 1)
        self.k3 = nn.Conv2d(nf, nf, 3, padding=1, bias=False)
        self.k4 = nn.Conv2d(nf, nf, 3, padding=1, bias=False)

    def gated(self, u: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.k2(F.leaky_relu(self.k1(u), _SLOPE)))
        return self.k3(u) * gate

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.k4(self.gated(u))


class _GateOnly(nn.Module):
    """The attention branch without ``k4`` (what remains after fusion); keeps k1/k2/k3 keys."""

    def __init__(self, branch: AttentionBranch) -> None:
        super().__init__()
        self.k1, self.k2, self.k3 = branch.k1, branch.k2, branch.k3

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.k3(u) * torch.sigmoid(self.k2(F.leaky_relu(self.k1(u), _SLOPE)))


def _adm(nf: int) -> nn.Sequential:
    """Attention dropout module: GAP features -> K branch logits (keys ``ADM.0``, ``ADM.2``)."""
    return nn.Sequential(
        nn.Linear(nf, nf // _REDUCTION, bias=False),
        nn.ReLU(),
        nn.Linear(nf // _REDUCTION, _K, bias=False),
    )


def _branch_weights(adm: nn.Module, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample softmax (temperature 30) over the two branches, each shaped (N, 1, 1, 1)."""
    w = torch.softmax(adm(u.mean(dim=(2, 3))) / _TEMPERATURE, dim=1)[:, :, None, None]
    return w[:, 0:1], w[:, 1:2]


class A2B(nn.Module):
    """Attention-in-attention block (the authors' ``AAB``)."""

    def __init__(self, nf: int = _NF, non_attention_kernel: int = 3) -> None:
        super().__init__()
        if non_attention_kernel not in (1, 3):
            raise ValueError(f"non_attention_kernel must be 1 or 3, got {non_attention_kernel}")
        self.conv_first = nn.Conv2d(nf, nf, 1, bias=False)
        self.conv_last = nn.Conv2d(nf, nf, 1, bias=False)
        self.ADM = _adm(nf)
        self.attention = AttentionBranch(nf)
        self.non_attention = nn.Conv2d(nf, nf, non_attention_kernel, padding=non_attention_kernel // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = F.leaky_relu(self.conv_first(x), _SLOPE)
        w0, w1 = _branch_weights(self.ADM, u)
        v = self.attention(u) * w0 + self.non_attention(u) * w1
        return self.conv_last(F.leaky_relu(v, _SLOPE)) + x

    @torch.no_grad()
    def fuse(self) -> FusedA2B:
        """Merge ``attention.k4`` and ``non_attention`` into one conv over the weighted inputs."""
        na = self.non_attention.weight
        if na.shape[-1] == 1:
            na = F.pad(na, (1, 1, 1, 1))  # centre tap of a 3x3 kernel, "same" padding is unchanged
        kernel = torch.cat([self.attention.k4.weight, na], dim=1)
        return FusedA2B(self, kernel)


class FusedA2B(nn.Module):
    """An :class:`A2B` after fusion: ``conv(cat(w0 * gated, w1 * u))`` replaces ``k4`` and
    ``non_attention`` (exact by linearity; both are bias-free)."""

    def __init__(self, block: A2B, kernel: torch.Tensor) -> None:
        super().__init__()
        nf = kernel.shape[0]
        self.conv_first = block.conv_first
        self.conv_last = block.conv_last
        self.ADM = block.ADM
        self.attention = _GateOnly(block.attention)
        self.branch_conv = nn.Conv2d(2 * nf, nf, 3, padding=1, bias=False, device=kernel.device, dtype=kernel.dtype)
        self.branch_conv.weight.copy_(kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = F.leaky_relu(self.conv_first(x), _SLOPE)
        w0, w1 = _branch_weights(self.ADM, u)
        v = self.branch_conv(torch.cat([self.attention(u) * w0, u * w1], dim=1))
        return self.conv_last(F.leaky_relu(v, _SLOPE)) + x


class A2N(nn.Module):
    """The authors' ``AAN`` with a [0, 1] interface (see the module docstring)."""

    def __init__(self, scale: int, non_attention_kernel: int = 3) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"A2N supports x2, x3 and x4, got x{scale}")
        self.scale = scale
        self.conv_first = nn.Conv2d(3, _NF, 3, padding=1)
        self.AAB_trunk = nn.Sequential(*(A2B(_NF, non_attention_kernel) for _ in range(_NB)))
        self.trunk_conv = nn.Conv2d(_NF, _NF, 3, padding=1)
        self.upconv1 = nn.Conv2d(_NF, _UNF, 3, padding=1)
        self.att1 = PixelAttention(_UNF)
        self.HRconv1 = nn.Conv2d(_UNF, _UNF, 3, padding=1)
        if scale == 4:  # two x2 stages
            self.upconv2 = nn.Conv2d(_UNF, _UNF, 3, padding=1)
            self.att2 = PixelAttention(_UNF)
            self.HRconv2 = nn.Conv2d(_UNF, _UNF, 3, padding=1)
        self.conv_last = nn.Conv2d(_UNF, 3, 3, padding=1)

    def _upsample(self, fea: torch.Tensor, factor: int, up: nn.Module, att: nn.Module, hr: nn.Module) -> torch.Tensor:
        fea = up(F.interpolate(fea, scale_factor=factor, mode="nearest"))
        fea = F.leaky_relu(att(fea), _SLOPE)
        return F.leaky_relu(hr(fea), _SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.conv_first(x * _RGB_RANGE)
        fea = fea + self.trunk_conv(self.AAB_trunk(fea))
        if self.scale == 4:
            fea = self._upsample(fea, 2, self.upconv1, self.att1, self.HRconv1)
            fea = self._upsample(fea, 2, self.upconv2, self.att2, self.HRconv2)
        else:
            fea = self._upsample(fea, self.scale, self.upconv1, self.att1, self.HRconv1)
        skip = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.conv_last(fea) / _RGB_RANGE + skip


def _descriptor(name: str, variant: str | None, non_attention_kernel: int) -> Descriptor:
    return Descriptor(
        name=name,
        family="a2n",
        variant=variant,
        scales=(2, 3, 4),
        input_range="0-255",
        size_multiple=1,
        # Every op is size-agnostic: "same"-padded convolutions, global average pooling, nearest and
        # bilinear resizes by integer factors; a 1x1 LR input works (tested).
        min_size=1,
        # Whole image by default: activations are 40 channels at LR and 24 at HR, so a 720p output
        # needs well under 1 GB; use --tile for very large inputs (the per-block GAP makes tiled
        # output close to, not equal to, whole-image output).
        default_tiling=None,
        trt_profile=ShapeProfile(min=Size(16, 16), opt=Size(180, 320), max=Size(720, 1280)),
        fp16=True,
        needs_fusion=True,
        weights_license="all rights reserved (no licence file; download only from the author)",
        paper="Attention in Attention Network for Image Super-Resolution (Chen, Gu, Zhang; arXiv 2104.09497)",
        hparams={
            "nf": _NF,
            "unf": _UNF,
            "nb": _NB,
            "reduction": _REDUCTION,
            "K": _K,
            "temperature": _TEMPERATURE,
            "non_attention_kernel": non_attention_kernel,
        },
        source="haoyuc/A2N@210b38c",
    )


@register(_descriptor("a2n", None, 3))
def build_a2n(scale: int) -> A2N:
    """A2N: 3x3 non-attention branch (the released checkpoints)."""
    return A2N(scale, non_attention_kernel=3)


@register(_descriptor("a2n.m", "m", 1))
def build_a2n_m(scale: int) -> A2N:
    """A2N-M: 1x1 non-attention branch (fewer parameters; no weights released)."""
    return A2N(scale, non_attention_kernel=1)
