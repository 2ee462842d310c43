"""MTAN's ``RandomScaleCrop``: the augmentation of Elich et al. on Cityscapes and NYUv2.

A scale s drawn from (1.0, 1.2, 1.5), a crop of (int(H / s), int(W / s)) at a position drawn
uniformly where it fits (both ends included, as Python's ``random.randint``), resized back
to (H, W): bilinear with aligned corners for images (and NYUv2's normals), torch's (legacy)
nearest for label maps. The code (Liu et al.'s MTAN, copied by CAGrad and LibMTL) then
divides depth by s; the datasets do that themselves. One place for both datasets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional

SCALES = (1.0, 1.2, 1.5)
"""The crop scales of ``RandomScaleCrop``."""
MODES = ("bilinear", "nearest")


@dataclass(frozen=True)
class ScaleCrop:
    """One draw: the scale and the crop's top-left corner."""

    scale: float
    top: int = 0
    left: int = 0

    @classmethod
    def draw(cls, generator: torch.Generator, height: int, width: int) -> ScaleCrop:
        """The scale uniformly from :data:`SCALES`, then the corner uniformly where the crop
        fits in (``height``, ``width``)."""
        scale = SCALES[int(torch.randint(len(SCALES), (), generator=generator))]
        crop_h, crop_w = cls(scale).size(height, width)
        top = int(torch.randint(height - crop_h + 1, (), generator=generator))
        left = int(torch.randint(width - crop_w + 1, (), generator=generator))
        return cls(scale, top, left)

    def size(self, height: int, width: int) -> tuple[int, int]:
        """The crop's (height, width): (int(H / s), int(W / s)), as MTAN."""
        return int(height / self.scale), int(width / self.scale)

    def apply(self, x: Tensor, mode: str) -> Tensor:
        """The crop of the (C, H, W) ``x`` resized back to (H, W) by ``mode``: "bilinear"
        (aligned corners) or "nearest" (exact for integer maps, which keep their dtype)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        height, width = x.shape[-2:]
        crop_h, crop_w = self.size(height, width)
        crop = x[None, :, self.top : self.top + crop_h, self.left : self.left + crop_w]
        if mode == "bilinear":
            return functional.interpolate(
                crop, size=(height, width), mode="bilinear", align_corners=True
            )[0]
        resized = functional.interpolate(crop.double(), size=(height, width), mode="nearest")
        return resized[0].to(x.dtype)
