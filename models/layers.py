"""Building blocks shared by several architectures (not an architecture file itself)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ESA(nn.Module):
    """Enhanced spatial attention as RFDN introduced it and RLFN and Omni-SR/ASID reuse it.

    1x1 reduce to ``f`` channels, a stride-2 valid 3x3 conv, 7x7/3 max-pool, 3x3 conv, bilinear
    resize back, add the 1x1 ``conv_f`` branch, 1x1 expand, sigmoid gate. The attribute names are
    the authors' state-dict keys (``conv1``, ``conv_f``, ``conv2``, ``conv3``, ``conv4``).
    """

    def __init__(self, f: int, n_feats: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(n_feats, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, n_feats, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        pooled = F.max_pool2d(self.conv2(c1_), kernel_size=7, stride=3)
        c3 = F.interpolate(self.conv3(pooled), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))
