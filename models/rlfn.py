"""RLFN: Residual Local Feature Network (Kong et al., CVPRW 2022), the NTIRE 2024 ESR baseline.

Implemented from the organisers' baseline definition (Amazingren/NTIRE2024_ESR,
``models/team00_RLFN.py``, class ``RLFN_Prune``: 46 feature / 48 mid channels, 4 blocks, ESA with
16 channels), read not copied. State-dict keys are those of ``team00_rlfn.pth``. The network works
on [0, 255] internally (the harness's ``data_range = 255``); ``forward`` takes and returns [0, 1].
Published (organisers, 256x256 input): 0.317 M parameters, 19.67 G (fvcore MACs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from srdeploy.sizes import Size

from .layers import ESA
from .registry import Descriptor, ShapeProfile, register


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=(k - 1) // 2)


class RLFB(nn.Module):
    """Residual local feature block: three 3x3 convs with LeakyReLU(0.05), a residual, 1x1, ESA."""

    def __init__(self, channels: int, mid_channels: int, esa_channels: int = 16) -> None:
        super().__init__()
        self.c1_r = _conv(channels, mid_channels, 3)
        self.c2_r = _conv(mid_channels, mid_channels, 3)
        self.c3_r = _conv(mid_channels, channels, 3)
        self.c5 = _conv(channels, channels, 1)
        self.esa = ESA(esa_channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.c1_r(x), 0.05)
        out = F.leaky_relu(self.c2_r(out), 0.05)
        out = F.leaky_relu(self.c3_r(out), 0.05)
        return self.esa(self.c5(out + x))


class RLFN(nn.Module):
    def __init__(self, scale: int = 4, feature_channels: int = 46, mid_channels: int = 48,
                 num_blocks: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.conv_1 = _conv(3, feature_channels, 3)
        for i in range(1, num_blocks + 1):
            setattr(self, f"block_{i}", RLFB(feature_channels, mid_channels))
        self.num_blocks = num_blocks
        self.conv_2 = _conv(feature_channels, feature_channels, 3)
        self.upsampler = nn.Sequential(_conv(feature_channels, 3 * scale * scale, 3), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_1(x * 255.0)
        out = feat
        for i in range(1, self.num_blocks + 1):
            out = getattr(self, f"block_{i}")(out)
        return self.upsampler(self.conv_2(out) + feat) / 255.0


_PROFILE = ShapeProfile(Size(16, 16), Size(180, 320), Size(540, 960))


@register(
    Descriptor(
        name="rlfn",
        family="rlfn",
        variant=None,
        scales=(2, 3, 4),
        input_range="0-255",
        size_multiple=1,
        min_size=15,  # ESA: a stride-2 3x3 conv then a 7x7 max pool: (15 - 3) // 2 + 1 = 7
        default_tiling=None,
        trt_profile=_PROFILE,
        fp16=True,
        needs_fusion=False,
        weights_license="MIT (bytedance/RLFN); checkpoint team00_rlfn.pth from Amazingren/NTIRE2024_ESR",
        paper="Kong et al., Residual Local Feature Network for Efficient Super-Resolution, CVPRW 2022",
        hparams={"feature_channels": 46, "mid_channels": 48, "num_blocks": 4, "esa_channels": 16},
        source="Amazingren/NTIRE2024_ESR models/team00_RLFN.py (RLFN_Prune)",
    )
)
def build_rlfn(scale: int) -> RLFN:
    """The NTIRE 2024 baseline RLFN (x4 weights published; x2/x3 are the same architecture)."""
    return RLFN(scale)
