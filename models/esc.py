"""ESC: Emulating Self-attention with Convolution (Lee, Yun, Ro; ICCV 2025).

Follows the authors' code (dslisleedh/ESC@e7e6938, ``esc/archs/esc_arch.py``, ``esc_fp_arch.py``,
``esc_real_arch.py``), not the paper's prose, and keeps their state-dict keys:

* ``esc`` / ``esc.light``: class ``ESC`` (C=64, 5 or 3 blocks), x2/x3/x4.
* ``esc.fp``: class ``ESCFP`` (C=48, decomposed large kernel, bicubic image skip), x2/x3/x4.
* ``esc.real``: class ``ESCReal`` (10 blocks, input skip branch, nearest+conv upsampler), x4.

What differs from the authors' module, on purpose:

* Batch > 1 is correct in eval mode (the authors' eval path reshapes the dynamic kernel as if the
  batch were 1); the dynamic 3x3 kernel is applied per sample.
* No in-place slice writes: ConvAttn splits and concatenates.
* The attention core is one replaceable function (:func:`srdeploy.models.attention.window_attention`,
  stored per instance in ``WindowAttention.core``), written with plain matmul/softmax.
* Deploy-time fusion through the project's protocol (``fuse()``), see :meth:`ESC.fuse` and
  :meth:`ConvolutionalAttention.fuse`.
* ``whole_image_pad=True`` reproduces the authors' test script: the LR image is reflect-padded at
  the bottom/right to a multiple of the window (32) and the output cropped. The default (False)
  relies on the per-layer padding inside every attention layer, exactly as the authors' module.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from srdeploy.errors import ShapeError
from srdeploy.sizes import Size
from srdeploy.tiling import Tiling

from .attention import AttentionCore, chunked_window_attention, window_attention
from .registry import Descriptor, ShapeProfile, SizePath, register

__all__ = [
    "ESC",
    "ESCFP",
    "ConvolutionalAttention",
    "DecomposedConvolutionalAttention",
    "DynamicForm",
    "ESCReal",
    "WindowAttention",
    "d4_symmetrise",
    "dynamic_dw3x3",
]

MIN_SIZE = 17  # reflect padding to the 32-pixel window needs a pad < the side, i.e. a side >= 17

DynamicForm = Literal["grouped", "shifted", "stacked"]

# The dynamic 3x3 form that fuse() selects, chosen by measurement (ONNX Runtime 1.31 CPU, 1 thread,
# one ConvAttn layer + its 1x1 aggr at 1x64x180x320 fp32, forms timed round-robin on a shared,
# loaded 2-core machine; min / median ms of three runs, the last the quietest; docs/esc.md):
#   shifted  (9 Slice/Mul/Add, batch-correct)            183/623  377/705  178/371
#   stacked  (Concat of 9 shifts, Mul, ReduceSum)        167/676  450/696  180/382
#   dynamic-weight depthwise Conv (batch 1 only)         187/610  421/615  177/343
#   3x3 merged into the 13x13 per sample (batch 1 only)  241/779  503/857  215/446
#   static 13x13 alone (lower bound)                     198/638  326/638  169/331
# "shifted" is the fastest form that keeps the batch dynamic and has no runtime conv weight
# (TensorRT-friendly) and no 9x buffer; the batch-1 dynamic-weight Conv is ~8% faster on ORT CPU.
# "grouped" (batch folded into the groups) is the eager reference: exact, but its ONNX Conv
# `group` attribute would freeze the batch size.
FUSED_DYNAMIC_FORM: DynamicForm = "shifted"


# --------------------------------------------------------------------------------------------------
# building blocks


class LayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW tensor (eps 1e-6), as the authors' channels-first LN."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (self.dim,), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class ConvFFN(nn.Module):
    """1x1 expand, GELU, depthwise 3x3 + GELU with a residual, 1x1 project."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, hidden, 1)
        self.dwc = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.aggr = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.proj(x))
        h = F.gelu(self.dwc(h)) + h
        return self.aggr(h)


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad the bottom and right of ``x`` to a multiple of ``multiple`` (no-op when it is one)."""
    h, w = x.shape[-2], x.shape[-1]
    pad_h = (multiple - h % multiple) % multiple
    pad_w = (multiple - w % multiple) % multiple
    return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")


class WindowAttention(nn.Module):
    """Non-overlapping window self-attention with a key-minus-query relative position bias.

    Per layer, the input is reflect-padded at the bottom/right to a multiple of the window and the
    output cropped back, as in the authors' module. Batch-correct for any batch size.
    ``self.core`` is the attention function (contract A); a plugin path swaps it per instance.
    """

    def __init__(self, dim: int, window: int, heads: int, query_chunks: int = 1) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim = dim
        self.window = window
        self.heads = heads
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.to_out = nn.Conv2d(dim, dim, 1)
        self.relative_position_bias = nn.Parameter(torch.randn(heads, (2 * window - 1) ** 2) * 1e-3)
        # a Python float, so a traced export gets a constant scale that ONNX Runtime folds into the
        # MatMul (FusedMatMul alpha) instead of a Mul over the (B*nW, heads, N, N) scores
        self.scale = float((dim // heads) ** -0.5)
        self.core: AttentionCore = window_attention
        # > 1: the portable core runs in this many query blocks (chunked_window_attention), so the
        # exported graph's largest tensor is 1/query_chunks of the (B*nW, heads, N, N) scores; a
        # swapped core (plugin, native Attention) ignores it
        if query_chunks < 1 or (window * window) % query_chunks:
            raise ValueError(f"query_chunks must divide the {window * window} tokens of a window, got {query_chunks}")
        self.query_chunks = query_chunks

    def _to_windows(self, t: torch.Tensor) -> torch.Tensor:
        """(B, heads*d, H, W) -> (B*nW, heads, window*window, d), windows row-major, tokens row-major."""
        b, c, h, w = t.shape
        ws, d = self.window, c // self.heads
        t = t.reshape(b, self.heads, d, h // ws, ws, w // ws, ws)
        t = t.permute(0, 3, 5, 1, 4, 6, 2)  # (B, nh, nw, heads, wy, wx, d)
        return t.reshape(-1, self.heads, ws * ws, d)

    def _from_windows(self, t: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
        ws, d = self.window, t.shape[-1]
        t = t.reshape(b, h // ws, w // ws, self.heads, ws, ws, d)
        t = t.permute(0, 3, 6, 1, 4, 2, 5)  # (B, heads, d, nh, wy, nw, wx)
        return t.reshape(b, self.heads * d, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        x = _pad_to_multiple(x, self.window)
        b, _, hp, wp = x.shape
        q, k, v = self.to_qkv(x).chunk(3, dim=1)
        args = (self._to_windows(q), self._to_windows(k), self._to_windows(v), self.relative_position_bias)
        if self.query_chunks > 1 and self.core is window_attention:
            out = chunked_window_attention(
                *args, window=self.window, bias_index="k-q", scale=self.scale, chunks=self.query_chunks
            )
        else:
            out = self.core(*args, window=self.window, bias_index="k-q", scale=self.scale)
        out = self._from_windows(out, b, hp, wp)[:, :, :h, :w]
        return self.to_out(out)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window={self.window}, heads={self.heads}"


def set_query_chunks(model: nn.Module, chunks: int) -> int:
    """Set ``query_chunks`` on every :class:`WindowAttention` of ``model``; returns how many were set."""
    mods = [m for m in model.modules() if isinstance(m, WindowAttention)]
    for m in mods:
        n = m.window * m.window
        if chunks < 1 or n % chunks:
            raise ValueError(f"attn_chunks must be >= 1 and divide the {n} tokens of a window, got {chunks}")
        m.query_chunks = chunks
    return len(mods)


def d4_symmetrise(kernel: torch.Tensor) -> torch.Tensor:
    """Average of ``kernel`` over the 8 elements of the dihedral group D4 (spatial dims only).

    The authors' "geometric re-parameterisation" of the shared 13x13 kernel: checkpoints store the
    raw kernel and the average is taken on every forward call until :meth:`ESC.fuse` bakes it.
    """
    rot = torch.rot90(kernel, -1, (2, 3))
    total = (
        kernel
        + kernel.flip(3)
        + kernel.flip(2)
        + kernel.flip((2, 3))
        + rot
        + rot.flip(3)
        + rot.flip(2)
        + rot.flip((2, 3))
    )
    return total / 8


def dynamic_dw3x3(x: torch.Tensor, kernel: torch.Tensor, form: DynamicForm) -> torch.Tensor:
    """Per-sample depthwise 3x3 convolution (zero padding 1) with ``kernel`` of shape (B, C*9, 1, 1).

    Channel ``c`` of sample ``b`` uses taps ``kernel[b, 9c:9c+9]`` in row-major (ky, kx) order. All
    forms compute the same function and are batch-correct in eager mode:

    * ``grouped``: fold the batch into the groups of one conv (the authors' training path). In ONNX
      the ``group`` attribute is static, so this freezes the batch size: eager reference only.
    * ``shifted``: zero-pad by 1, multiply the 9 shifted views by the broadcast (B, C, 1, 1) taps and
      add (Slice/Mul/Add in ONNX: no dynamic conv weight, any batch).
    * ``stacked``: the same shifts concatenated into (B, C, 9, H, W), one Mul and one ReduceSum.
    """
    b, c, h, w = x.shape
    if form == "grouped":
        y = F.conv2d(x.reshape(1, b * c, h, w), kernel.reshape(b * c, 1, 3, 3), padding=1, groups=b * c)
        return y.reshape(b, c, h, w)
    xp = F.pad(x, (1, 1, 1, 1))
    if form == "shifted":
        taps = kernel.reshape(b, c, 9, 1, 1).unbind(2)
        out = xp[:, :, 0:h, 0:w] * taps[0]
        for t in range(1, 9):
            dy, dx = divmod(t, 3)
            out = out + xp[:, :, dy : dy + h, dx : dx + w] * taps[t]
        return out
    if form == "stacked":
        views = [xp[:, :, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
        return (torch.stack(views, dim=2) * kernel.reshape(b, c, 9, 1, 1)).sum(2)
    raise ValueError(f"unknown dynamic form {form!r}; use 'grouped', 'shifted' or 'stacked'")


class ConvolutionalAttention(nn.Module):
    """ESC's ConvAttn on the first ``pdim`` channels: shared dense 13x13 conv + dynamic depthwise 3x3.

    The 3x3 kernel is generated per sample from the global average of the input (``dwc_proj``).
    ``fuse()`` switches the dynamic 3x3 to the export form :data:`FUSED_DYNAMIC_FORM`.
    """

    def __init__(self, pdim: int) -> None:
        super().__init__()
        self.pdim = pdim
        last = nn.Conv2d(pdim // 2, pdim * 9, 1)
        nn.init.zeros_(last.weight)  # as the authors: the dynamic kernel starts at zero
        if last.bias is not None:
            nn.init.zeros_(last.bias)
        self.dwc_proj = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(pdim, pdim // 2, 1), nn.GELU(), last)
        self.form: DynamicForm = "grouped"

    def forward(self, x: torch.Tensor, lk_filter: torch.Tensor) -> torch.Tensor:
        x1, x2 = torch.split(x, [self.pdim, x.shape[1] - self.pdim], dim=1)
        kernel = self.dwc_proj(x1)
        pad = lk_filter.shape[-1] // 2
        x1 = F.conv2d(x1, lk_filter, padding=pad) + dynamic_dw3x3(x1, kernel, self.form)
        return torch.cat([x1, x2], dim=1)

    def fuse(self) -> None:
        """Use the export form of the dynamic 3x3 (exact; no dynamic conv weight in the graph)."""
        self.form = FUSED_DYNAMIC_FORM

    def extra_repr(self) -> str:
        return f"pdim={self.pdim}, form={self.form}"


class DecomposedConvolutionalAttention(nn.Module):
    """ESC-FP's ConvAttn: 1x1 channel mix, then ONE per-sample depthwise 13x13 kernel made of the
    shared ``lk_spatial`` plus the dynamic 3x3 kernel zero-padded to 13x13 (as the authors merge it).

    ``fuse()`` splits the merged kernel back by linearity: a static depthwise 13x13 conv with
    ``lk_spatial`` plus the dynamic 3x3 in :data:`FUSED_DYNAMIC_FORM` (instead of 169 dynamic taps).
    """

    def __init__(self, pdim: int) -> None:
        super().__init__()
        self.pdim = pdim
        self.proj = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(pdim, pdim // 4, 1),
            nn.GELU(),
            nn.Conv2d(pdim // 4, pdim * 9, 1),
        )
        self.split = False  # False: merged per-sample 13x13 kernel (authors); True: fused split form
        self.form: DynamicForm = "grouped"

    def forward(self, x: torch.Tensor, lk_channel: torch.Tensor, lk_spatial: torch.Tensor) -> torch.Tensor:
        x1, x2 = torch.split(x, [self.pdim, x.shape[1] - self.pdim], dim=1)
        kernel = self.proj(x1)  # generated from x1 before the channel mix, as in the authors' code
        x1 = F.conv2d(x1, lk_channel)
        size = lk_spatial.shape[-1]
        if self.split:
            x1 = F.conv2d(x1, lk_spatial, padding=size // 2, groups=self.pdim) + dynamic_dw3x3(x1, kernel, self.form)
        else:
            b, c, h, w = x1.shape
            pad = (size - 3) // 2
            merged = F.pad(kernel.reshape(b * c, 1, 3, 3), (pad, pad, pad, pad)) + lk_spatial.repeat(b, 1, 1, 1)
            x1 = F.conv2d(x1.reshape(1, b * c, h, w), merged, padding=size // 2, groups=b * c)
            x1 = x1.reshape(b, c, h, w)
        return torch.cat([x1, x2], dim=1)

    def fuse(self) -> None:
        """Static depthwise 13x13 (lk_spatial) + dynamic 3x3 export form; exact by linearity."""
        self.split = True
        self.form = FUSED_DYNAMIC_FORM

    def extra_repr(self) -> str:
        return f"pdim={self.pdim}, split={self.split}, form={self.form}"


class ConvAttnWrapper(nn.Module):
    """ConvAttn (``plk``) on the first channels, then a 1x1 ``aggr`` over all channels."""

    def __init__(self, dim: int, plk: nn.Module) -> None:
        super().__init__()
        self.plk = plk
        self.aggr = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, *kernels: torch.Tensor) -> torch.Tensor:
        return self.aggr(self.plk(x, *kernels))


class Block(nn.Module):
    """ConvFFN, window attention, ``conv_blocks`` x (LN?, ConvFFN, ConvAttn) residuals, LN, 3x3 conv."""

    def __init__(
        self,
        dim: int,
        *,
        first_hidden: int,
        ffn_hidden: int,
        conv_blocks: int,
        window: int,
        heads: int,
        use_ln: bool,
        decomposed: bool,
        pdim: int,
    ) -> None:
        super().__init__()
        self.ln_proj = LayerNorm(dim)
        self.proj = ConvFFN(dim, first_hidden)
        self.ln_attn = LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.lns = nn.ModuleList([LayerNorm(dim) if use_ln else nn.Identity() for _ in range(conv_blocks)])
        plk_cls = DecomposedConvolutionalAttention if decomposed else ConvolutionalAttention
        self.pconvs = nn.ModuleList([ConvAttnWrapper(dim, plk_cls(pdim)) for _ in range(conv_blocks)])
        self.convffns = nn.ModuleList([ConvFFN(dim, ffn_hidden) for _ in range(conv_blocks)])
        self.ln_out = LayerNorm(dim)
        self.conv_out = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor, *kernels: torch.Tensor) -> torch.Tensor:
        skip = x
        x = self.proj(self.ln_proj(x))
        x = x + self.attn(self.ln_attn(x))
        for ln, pconv, ffn in zip(self.lns, self.pconvs, self.convffns, strict=True):
            x = x + pconv(ffn(ln(x)), *kernels)
        return self.conv_out(self.ln_out(x)) + skip


# --------------------------------------------------------------------------------------------------
# networks


class _ESCBase(nn.Module):
    """Shared trunk plumbing: input checks and optional whole-image padding."""

    window: int
    scale: int
    whole_image_pad: bool

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ShapeError(f"{type(self).__name__} takes (N, 3, H, W) RGB input, got {tuple(x.shape)}")
        h, w = x.shape[-2], x.shape[-1]
        if h < MIN_SIZE or w < MIN_SIZE:
            raise ShapeError(
                f"{type(self).__name__} needs LR height and width >= {MIN_SIZE} (reflect padding to the "
                f"{self.window}-pixel window), got {h}x{w}; pad or enlarge the input"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        if not self.whole_image_pad:
            return self._forward(x)
        h, w = x.shape[-2], x.shape[-1]
        out = self._forward(_pad_to_multiple(x, self.window))
        return out[:, :, : h * self.scale, : w * self.scale]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ESC(_ESCBase):
    """ESC and ESC-light (``esc/archs/esc_arch.py``, class ``ESC``)."""

    def __init__(
        self,
        scale: int,
        *,
        dim: int = 64,
        pdim: int = 16,
        kernel_size: int = 13,
        n_blocks: int = 5,
        conv_blocks: int = 5,
        window: int = 32,
        heads: int = 4,
        exp_ratio: float = 1.25,
        first_ratio: float = 2.0,
        use_ln: bool = False,
        whole_image_pad: bool = False,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.window = window
        self.whole_image_pad = whole_image_pad
        self.plk_filter = nn.Parameter(torch.empty(pdim, pdim, kernel_size, kernel_size))
        nn.init.orthogonal_(self.plk_filter)
        self.kernel_symmetrised = False  # True once fuse() baked the D4 average into plk_filter
        self.proj = nn.Conv2d(3, dim, 3, padding=1)
        self.blocks = nn.ModuleList(
            [
                Block(
                    dim,
                    first_hidden=int(dim * first_ratio),
                    ffn_hidden=int(dim * exp_ratio),
                    conv_blocks=conv_blocks,
                    window=window,
                    heads=heads,
                    use_ln=use_ln,
                    decomposed=False,
                    pdim=pdim,
                )
                for _ in range(n_blocks)
            ]
        )
        self.last = nn.Conv2d(dim, dim, 3, padding=1)
        self._make_head(dim, scale)
        self._register_load_state_dict_pre_hook(self._symmetrise_loaded_kernel)

    def _make_head(self, dim: int, scale: int) -> None:
        self.to_img: nn.Module = nn.Conv2d(dim, 3 * scale * scale, 3, padding=1)

    def _symmetrise_loaded_kernel(self, state_dict, prefix, *args) -> None:  # type: ignore[no-untyped-def]
        # A checkpoint stores the RAW kernel; a fused model applies no D4 average in forward, so a
        # kernel loaded into a fused model is baked on the way in (idempotent for a baked kernel).
        key = prefix + "plk_filter"
        if self.kernel_symmetrised and key in state_dict:
            state_dict[key] = d4_symmetrise(state_dict[key])

    def shared_kernel(self) -> torch.Tensor:
        """The 13x13 kernel the ConvAttn layers use (D4-averaged on the fly until fused)."""
        return self.plk_filter if self.kernel_symmetrised else d4_symmetrise(self.plk_filter)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.proj(x)
        skip = feat
        kernel = self.shared_kernel()
        for block in self.blocks:
            feat = block(feat, kernel)
        return self.last(feat) + skip

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        # to_img(f) + repeat_interleave(x, s*s) then pixel_shuffle == pixel_shuffle(to_img(f)) + nearest(x)
        y = F.pixel_shuffle(self.to_img(self._trunk(x)), self.scale)
        return y + F.interpolate(x, scale_factor=self.scale, mode="nearest")

    @torch.no_grad()
    def fuse(self) -> None:
        """Bake the D4 symmetrisation into ``plk_filter`` once (no flips/rot90 left in forward)."""
        if not self.kernel_symmetrised:
            self.plk_filter.copy_(d4_symmetrise(self.plk_filter))
            self.kernel_symmetrised = True


class ESCReal(ESC):
    """ESC-Real x4 (``esc/archs/esc_real_arch.py``, class ``ESCReal``, ``use_dysample=False``)."""

    def __init__(self, scale: int = 4, *, whole_image_pad: bool = False) -> None:
        if scale != 4:
            raise ValueError(f"ESC-Real is x4 only, got x{scale}")
        super().__init__(
            scale,
            dim=64,
            n_blocks=10,
            exp_ratio=2.0,
            first_ratio=2.0,
            use_ln=True,
            whole_image_pad=whole_image_pad,
        )
        dim = 64
        self.skip = nn.Sequential(
            nn.Conv2d(3, dim * 2, 1),
            nn.Conv2d(dim * 2, dim * 2, 7, padding=3, groups=dim * 2, padding_mode="reflect"),
            nn.LeakyReLU(0.2),
            nn.Conv2d(dim * 2, dim, 1),
        )

    def _make_head(self, dim: int, scale: int) -> None:
        self.to_img = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(dim, dim, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(dim, dim, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(dim, dim, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(dim, 3, 3, padding=1),
        )

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_img(self._trunk(x) + self.skip(x))


class ESCFP(_ESCBase):
    """ESC-FP (``esc/archs/esc_fp_arch.py``, class ``ESCFP``): decomposed kernel, bicubic skip."""

    def __init__(
        self,
        scale: int,
        *,
        dim: int = 48,
        pdim: int = 16,
        kernel_size: int = 13,
        n_blocks: int = 5,
        conv_blocks: int = 5,
        window: int = 32,
        heads: int = 3,
        exp_ratio: float = 1.25,
        whole_image_pad: bool = False,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.window = window
        self.whole_image_pad = whole_image_pad
        self.lk_channel = nn.Parameter(torch.randn(pdim, pdim, 1, 1))
        self.lk_spatial = nn.Parameter(torch.empty(pdim, 1, kernel_size, kernel_size))
        nn.init.orthogonal_(self.lk_spatial)
        self.proj = nn.Conv2d(3, dim, 3, padding=1)
        self.blocks = nn.ModuleList(
            [
                Block(
                    dim,
                    first_hidden=int(dim * 1.5),
                    ffn_hidden=int(dim * exp_ratio),
                    conv_blocks=conv_blocks,
                    window=window,
                    heads=heads,
                    use_ln=True,
                    decomposed=True,
                    pdim=pdim,
                )
                for _ in range(n_blocks)
            ]
        )
        self.ln_last = LayerNorm(dim)
        self.last = nn.Conv2d(dim, dim, 3, padding=1)
        self.to_img = nn.Conv2d(dim, 3 * scale * scale, 3, padding=1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.proj(x)
        skip = feat
        for block in self.blocks:
            feat = block(feat, self.lk_channel, self.lk_spatial)
        feat = self.last(self.ln_last(feat)) + skip
        y = F.pixel_shuffle(self.to_img(feat), self.scale)
        return y + F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)


# --------------------------------------------------------------------------------------------------
# registry

_M = TypeVar("_M", bound=nn.Module)
_SOURCE = "dslisleedh/ESC@e7e6938"
_PAPER = (
    "Lee, Yun, Ro. Emulating Self-attention with Convolution for Efficient Image Super-Resolution. "
    "ICCV 2025. arXiv:2503.06671"
)
# 32x32 = one window; 180x320 LR = 720p output at x4 (the paper's latency size); 360x640 LR = the
# x2 HD input (240 windows: about 2 GB of fp16 attention scores per layer without a fused kernel).
_PROFILE = ShapeProfile(min=Size(32, 32), opt=Size(180, 320), max=Size(360, 640))
# Naive attention materialises (windows x heads x 1024 x 1024) scores twice (logits, softmax):
# a 192x192 LR tile (36 windows) peaks near 1.2 GB in fp32 on CPU instead of ~8 GB for an HD x2
# input. The tile is a multiple of the window (no padding waste); the overlap is one window.
_TILING = Tiling(tile=192, overlap=32, blend="crop")


# The portable attention's query blocks in the builders' default (``--option attn_chunks=N``; 1 is
# the unchunked graph). Chosen by benchmarks/bench_chunked_attention.py (esc.light x4 fp32, the
# descriptor profile up to 360x640, TensorRT-RTX 1.7, hard 4096 MiB workspace): 1 does not build
# (requests 4101 MiB), 4 -> 2531 MiB of activations, 8 -> 1581 MiB (17 s), 16 -> 1105 MiB (36 s).
# The graphs are bit-identical in ONNX Runtime and not slower on its CPU EP (docs/export.md).
ATTN_CHUNKS = 8


def _chunked(model: _M, chunks: int) -> _M:
    set_query_chunks(model, chunks)
    return model


def _descriptor(name: str, variant: str | None, scales: tuple[int, ...], hparams: dict) -> Descriptor:
    return Descriptor(
        name=name,
        family="esc",
        variant=variant,
        scales=scales,
        input_range="0-1",
        size_multiple=1,  # any H, W >= 17: every attention layer pads internally (docs/esc.md)
        min_size=MIN_SIZE,
        default_tiling=_TILING,
        trt_profile=_PROFILE,
        fp16=True,
        needs_fusion=True,
        plugin_points=("SRWindowAttention",),
        weights_license="MIT",
        paper=_PAPER,
        hparams=hparams,
        source=_SOURCE,
        # above one window the attention splits (and reflect-pads) the feature map into windows
        size_paths=(
            SizePath("window_attention", hparams["window_size"],
                     f"{hparams['window_size']}x{hparams['window_size']} window attention: several windows, "
                     "reflect-padded to a multiple", hparam="window_size"),
        ),
        test_tier="slow" if hparams["n_blocks"] > 5 else "fast",
    )


_COMMON = {"pdim": 16, "kernel_size": 13, "conv_blocks": 5, "window_size": 32}
_ESC_H = {"dim": 64, "n_blocks": 5, "num_heads": 4, "exp_ratio": 1.25, **_COMMON}
_LIGHT_H = {"dim": 64, "n_blocks": 3, "num_heads": 4, "exp_ratio": 1.25, **_COMMON}
_FP_H = {"dim": 48, "n_blocks": 5, "num_heads": 3, "exp_ratio": 1.25, **_COMMON}
_REAL_H = {"dim": 64, "n_blocks": 10, "num_heads": 4, "exp_ratio": 2, **_COMMON}


@register(_descriptor("esc", None, (2, 3, 4), _ESC_H))
def esc(scale: int, *, whole_image_pad: bool = False, attn_chunks: int = ATTN_CHUNKS) -> ESC:
    """ESC (options/test/ESC_DIV2K_X*.yaml; also the ESC_DFLIP_X* weights)."""
    return _chunked(ESC(scale, n_blocks=5, whole_image_pad=whole_image_pad), attn_chunks)


@register(_descriptor("esc.light", "light", (2, 3, 4), _LIGHT_H))
def esc_light(scale: int, *, whole_image_pad: bool = False, attn_chunks: int = ATTN_CHUNKS) -> ESC:
    """ESC-light (options/test/ESC_light_X*.yaml)."""
    return _chunked(ESC(scale, n_blocks=3, whole_image_pad=whole_image_pad), attn_chunks)


@register(_descriptor("esc.fp", "fp", (2, 3, 4), _FP_H))
def esc_fp(scale: int, *, whole_image_pad: bool = False, attn_chunks: int = ATTN_CHUNKS) -> ESCFP:
    """ESC-FP (options/test/ESC_FP_X*.yaml)."""
    return _chunked(ESCFP(scale, whole_image_pad=whole_image_pad), attn_chunks)


@register(_descriptor("esc.real", "real", (4,), _REAL_H))
def esc_real(scale: int, *, whole_image_pad: bool = False, attn_chunks: int = ATTN_CHUNKS) -> ESCReal:
    """ESC-Real x4 (options/test/ESC_Real_X4.yaml, ESC_Real_X4_GAN.pth)."""
    return _chunked(ESCReal(scale, whole_image_pad=whole_image_pad), attn_chunks)
