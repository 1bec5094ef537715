"""EFDN: Edge-enhanced Feature Distillation Network (Wang, NTIRE 2022), the NTIRE 2025 ESR baseline.

Implemented from the organisers' deploy-form baseline (``models/team00_EFDN.py`` of the NTIRE 2025
ESR harness: re-parameterised edge blocks as plain 3x3 convs + PReLU, 48 channels, 4 cells, ESA
with the ``conv_max`` / ``conv3_`` branch), read not copied. State-dict keys are those of
``team00_EFDN.pth``. The network works on [0, 1] (``data_range = 1``). The organisers' module clamps
its output to [0, 1]; following the project contract (unclamped output) the clamp is left to the
consumer (the NTIRE measurement clamps before the PSNR anyway).
Published (organisers, 256x256 input): 0.276 M parameters, 16.70 G (fvcore MACs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from srdeploy.sizes import Size

from .registry import Descriptor, ShapeProfile, register


class ESA(nn.Module):
    """Enhanced spatial attention as in RFDN (with the ``conv_max`` and ``conv3_`` branch)."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        f = n_feats // 4
        self.conv1 = nn.Conv2d(n_feats, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv_max = nn.Conv2d(f, f, 3, padding=1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv3_ = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, n_feats, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        pooled = F.max_pool2d(self.conv2(c1_), kernel_size=7, stride=3)
        c3 = F.relu(self.conv3(F.relu(self.conv_max(pooled))))
        c3 = F.interpolate(self.conv3_(c3), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


class PointwisePReLU(nn.Module):
    """1x1 conv + per-channel PReLU (keys ``conv1x1``, ``act``)."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(n_feats, n_feats, 1)
        self.act = nn.PReLU(n_feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv1x1(x))


class EdgeBlockDeploy(nn.Module):
    """The re-parameterised edge-enhanced diverse branch block: 3x3 conv + PReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.rep_conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.rep_conv(x))


class Cell(nn.Module):
    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.conv1 = PointwisePReLU(n_feats)
        self.conv2 = EdgeBlockDeploy(n_feats, n_feats)
        self.conv3 = EdgeBlockDeploy(n_feats, n_feats)
        self.fuse = nn.Conv2d(n_feats * 2, n_feats, 1)
        self.att = ESA(n_feats)
        self.branch = nn.ModuleList([nn.Conv2d(n_feats, n_feats // 2, 1) for _ in range(4)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1 = self.conv1(x)
        o2 = self.conv2(o1)
        o3 = self.conv3(o2)
        taps = [b(t) for b, t in zip(self.branch, (x, o1, o2, o3), strict=True)]
        return self.att(self.fuse(torch.cat(taps, dim=1))) + x


class EFDN(nn.Module):
    def __init__(self, scale: int = 4, n_feats: int = 48) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, n_feats, 3, padding=1)
        self.cells = nn.ModuleList([Cell(n_feats) for _ in range(4)])
        self.local_fuse = nn.ModuleList([nn.Conv2d(n_feats * 2, n_feats, 1) for _ in range(3)])
        self.tail = nn.Sequential(nn.Conv2d(n_feats, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out0 = self.head(x)
        out1 = self.cells[0](out0)
        out2 = self.cells[1](out1)
        out3 = self.cells[2](self.local_fuse[0](torch.cat([out1, out2], 1)))
        fused3 = self.local_fuse[1](torch.cat([out2, out3], 1))
        out4 = self.cells[3](fused3)
        # the organisers' graph concatenates out2 (not out3) with out4 in the last local fusion
        out = self.local_fuse[2](torch.cat([out2, out4], 1)) + out0
        return self.tail(out)


@register(
    Descriptor(
        name="efdn",
        family="efdn",
        variant=None,
        scales=(2, 3, 4),
        input_range="0-1",
        size_multiple=1,
        min_size=15,  # ESA: a stride-2 3x3 conv then a 7x7 max pool: (15 - 3) // 2 + 1 = 7
        default_tiling=None,
        trt_profile=ShapeProfile(Size(16, 16), Size(180, 320), Size(540, 960)),
        fp16=True,
        needs_fusion=False,
        weights_license="MIT (icandle/EFDN); checkpoint team00_EFDN.pth from Amazingren/NTIRE2025_ESR",
        paper="Wang, Edge-enhanced Feature Distillation Network for Efficient Super-Resolution, CVPRW 2022",
        hparams={"n_feats": 48, "cells": 4},
        source="Amazingren/NTIRE2025_ESR models/team00_EFDN.py (EFDN, deploy form)",
    )
)
def build_efdn(scale: int) -> EFDN:
    """The NTIRE 2025 baseline EFDN (deploy form; x4 weights published)."""
    return EFDN(scale)
