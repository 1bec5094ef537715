"""CiaoSR's encoder fold without Col2Im equals today's ``F.fold`` form exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from srdeploy.models.ciaosr import CrossScaleAttention, fold_blocks


@pytest.mark.parametrize(("h", "w"), [(1, 1), (5, 7), (9, 4), (12, 12)])
def test_fold_blocks_equals_f_fold_bit_for_bit(h: int, w: int) -> None:
    g = torch.Generator().manual_seed(h * 100 + w)
    c, s, big, pad = 3, 2, 6, 2
    for cols in (torch.randint(-50, 50, (2, c * big * big, h * w), generator=g).float(),
                 torch.randn(2, c * big * big, h * w, generator=g)):
        ref = F.fold(cols, (h * s, w * s), kernel_size=big, stride=s, padding=pad)
        got = fold_blocks(cols, (h * s, w * s), big, s, pad)
        assert got.shape == ref.shape and torch.equal(got, ref)


def test_fold_blocks_other_ratio_and_bad_kernel() -> None:
    cols = torch.randn(1, 2 * 9 * 9, 4 * 5)
    ref = F.fold(cols, (12, 15), kernel_size=9, stride=3, padding=3)
    assert torch.equal(fold_blocks(cols, (12, 15), 9, 3, 3), ref)
    with pytest.raises(ValueError, match="multiple of stride"):
        fold_blocks(cols, (12, 15), 7, 3, 3)


def test_cross_scale_attention_matches_the_fold_form(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module with the new fold equals the module with ``F.fold`` (today's form) swapped back in."""
    import srdeploy.models.ciaosr as mod

    torch.manual_seed(0)
    csa = CrossScaleAttention(8).eval()
    x = torch.randn(1, 8, 11, 14)
    with torch.no_grad():
        new = csa(x)
        monkeypatch.setattr(mod, "fold_blocks", lambda c, size, k, s, p: F.fold(c, size, kernel_size=k, stride=s,
                                                                                   padding=p))
        old = csa(x)
    assert torch.equal(new, old)
