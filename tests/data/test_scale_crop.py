"""MTAN's RandomScaleCrop, shared by Cityscapes and NYUv2: the source's index rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smto.data.scale_crop import SCALES, ScaleCrop


def test_nearest_takes_the_legacy_floor_index_and_keeps_integer_dtypes():
    labels = torch.arange(32 * 64).view(1, 32, 64)
    crop = ScaleCrop(1.5, top=4, left=9)
    out = crop.apply(labels, "nearest")
    assert out.dtype == torch.int64 and out.shape == (1, 32, 64)
    rows = 4 + np.floor(np.arange(32) * 21 / 32).astype(int)  # int(32 / 1.5) = 21
    cols = 9 + np.floor(np.arange(64) * 42 / 64).astype(int)  # int(64 / 1.5) = 42
    assert torch.equal(out[0], labels[0][rows[:, None], cols[None, :]])


def test_bilinear_aligns_the_corners_of_the_crop():
    image = torch.rand(3, 32, 64, generator=torch.Generator().manual_seed(0))
    crop = ScaleCrop(1.2, top=2, left=7)
    out = crop.apply(image, "bilinear")
    h, w = crop.size(32, 64)
    assert (h, w) == (26, 53)
    assert torch.allclose(out[:, 0, 0], image[:, 2, 7])
    assert torch.allclose(out[:, -1, -1], image[:, 2 + h - 1, 7 + w - 1])
    assert torch.equal(ScaleCrop(1.0).apply(image, "bilinear"), image)


def test_draws_cover_the_scales_and_every_fitting_corner():
    generator = torch.Generator().manual_seed(0)
    draws = [ScaleCrop.draw(generator, 10, 20) for _ in range(3000)]
    assert {d.scale for d in draws} == set(SCALES)
    for scale in SCALES:
        h, w = ScaleCrop(scale).size(10, 20)
        tops = {d.top for d in draws if d.scale == scale}
        lefts = {d.left for d in draws if d.scale == scale}
        assert tops == set(range(10 - h + 1)) and lefts == set(range(20 - w + 1))


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode must be one of"):
        ScaleCrop(1.2).apply(torch.zeros(1, 4, 4), "bicubic")
