"""SPAN: Swift Parameter-free Attention Network (Wan et al., CVPRW 2024), the NTIRE 2026 ESR baseline.

Implemented from the published architecture (hongyuanyu/SPAN, and the NTIRE 2026 ESR harness's
``SPAN(3, 3, upscale=4, feature_channels=28)``), read not copied. The deployed form is built: each
``Conv3XC`` is its single re-parameterised 3x3 ``eval_conv`` (what the organisers' parameter count
of 0.151 M and 9.83 G MACs at 256x256 measure). Training checkpoints that also hold the ``sk`` /
``conv`` branches are folded into ``eval_conv`` by :meth:`SPAN.remap_checkpoint`, so the state-dict
keys of both the authors' and the organisers' files load.

Internally the network works on ``(x - mean) * 255`` and predicts [0, 1] directly (the harness's
``data_range = 1``). Note the authors' in-place SiLU: the block's "mid" output used by the final
concatenation is the *activated* first convolution.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from srdeploy.sizes import Size

from .registry import Descriptor, ShapeProfile, register

_MEAN = (0.4488, 0.4371, 0.4040)


class Conv3XC(nn.Module):
    """Deploy form of SPAN's re-parameterisable conv: one 3x3 conv (key ``eval_conv``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.eval_conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.eval_conv(x)


class SPAB(nn.Module):
    """Swift parameter-free attention block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.c1_r = Conv3XC(channels, channels)
        self.c2_r = Conv3XC(channels, channels)
        self.c3_r = Conv3XC(channels, channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mid = F.silu(self.c1_r(x))
        out3 = self.c3_r(F.silu(self.c2_r(mid)))
        att = torch.sigmoid(out3) - 0.5
        return (out3 + x) * att, mid


def _fold_conv3xc(state: Mapping[str, torch.Tensor], prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold ``sk`` (1x1) + ``conv`` (1x1 -> 3x3 valid on a 1-padded input -> 1x1) into one 3x3 conv."""
    dtype = state[f"{prefix}conv.0.weight"].dtype
    w1, b1 = state[f"{prefix}conv.0.weight"].double(), state[f"{prefix}conv.0.bias"].double()
    w2, b2 = state[f"{prefix}conv.1.weight"].double(), state[f"{prefix}conv.1.bias"].double()
    w3, b3 = state[f"{prefix}conv.2.weight"].double(), state[f"{prefix}conv.2.bias"].double()
    sk_w, sk_b = state[f"{prefix}sk.weight"].double(), state[f"{prefix}sk.bias"].double()
    # W[o, i] = sum_{a, b} w3[o, a] w2[a, b] w1[b, i]   (1x1 kernels are matrices)
    w = torch.einsum("oa,abyx,bi->oiyx", w3[:, :, 0, 0], w2, w1[:, :, 0, 0])
    # Exact at the borders too: the training path pads x before the biased 1x1 conv, so padded
    # taps see b1, which is what the folded bias assumes.
    b = w3[:, :, 0, 0] @ (w2.sum((2, 3)) @ b1 + b2) + b3
    w = w + F.pad(sk_w, [1, 1, 1, 1])
    return w.to(dtype), (b + sk_b).to(dtype)  # folded in float64, returned in the checkpoint's dtype


class SPAN(nn.Module):
    def __init__(self, scale: int = 4, feature_channels: int = 28, num_blocks: int = 6) -> None:
        super().__init__()
        c = feature_channels
        self.num_blocks = num_blocks
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_1 = Conv3XC(3, c)
        for i in range(1, num_blocks + 1):
            setattr(self, f"block_{i}", SPAB(c))
        self.conv_cat = nn.Conv2d(4 * c, c, 1)
        self.conv_2 = Conv3XC(c, c)
        self.upsampler = nn.Sequential(nn.Conv2d(c, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def remap_checkpoint(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Accept training checkpoints: fold ``sk``/``conv`` branches into ``eval_conv``."""
        prefixes = sorted({k[: -len("sk.weight")] for k in state if k.endswith("sk.weight")})
        out = dict(state)
        for p in prefixes:
            w, b = _fold_conv3xc(state, p)
            out[f"{p}eval_conv.weight"], out[f"{p}eval_conv.bias"] = w, b
            for k in list(out):
                if k.startswith((f"{p}sk.", f"{p}conv.")):
                    del out[k]
        out.pop("no_norm", None)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_1((x - self.mean) * 255.0)
        out, mid = feat, feat
        out_b1 = feat
        for i in range(1, self.num_blocks + 1):
            out, mid = getattr(self, f"block_{i}")(out)
            if i == 1:
                out_b1 = out
        out = self.conv_cat(torch.cat([feat, self.conv_2(out), out_b1, mid], 1))
        return self.upsampler(out)


@register(
    Descriptor(
        name="span",
        family="span",
        variant=None,
        scales=(2, 3, 4),
        input_range="0-255",
        size_multiple=1,
        min_size=1,
        default_tiling=None,
        trt_profile=ShapeProfile(Size(16, 16), Size(180, 320), Size(540, 960)),
        fp16=True,
        needs_fusion=False,
        weights_license="Apache-2.0 (hongyuanyu/SPAN); checkpoint team00_SPAN.pth from Amazingren/NTIRE2026_ESR",
        paper="Wan et al., Swift Parameter-free Attention Network for Efficient Super-Resolution, CVPRW 2024",
        hparams={"feature_channels": 28, "num_blocks": 6, "img_range": 255.0, "rgb_mean": list(_MEAN)},
        source="hongyuanyu/SPAN span_arch.py; NTIRE2026_ESR baseline SPAN(3, 3, upscale=4, feature_channels=28)",
    )
)
def build_span(scale: int, feature_channels: int = 28) -> SPAN:
    """SPAN in deploy form; ``feature_channels=28`` is the NTIRE 2026 baseline (48 = SPAN-S)."""
    return SPAN(scale, feature_channels)
