"""The input images of an image problem, read and replaced (what robustness tests corrupt).

An image problem (Cityscapes, NYUv2, CelebA) keeps each split's decoded images in memory.
:class:`ImageProblem` is what :mod:`smto.evaluation.robustness` needs of it: a split's images
as (N, H, W, 3) uint8 RGB, the format of the ImageNet-C corruptions
(:mod:`smto.data.corruptions`), and a copy of the problem that reads other images of that
shape for the split, with the same targets and the same preprocessing. The problem itself is
left unchanged.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from smto.errors import ConfigError
from smto.problems.base import SPLITS, Problem


@runtime_checkable
class ImageProblem(Protocol):
    """A problem whose inputs are one RGB image per sample."""

    def split_images(self, split: str) -> np.ndarray:
        """The split's images as (N, H, W, 3) uint8 RGB, in sample order."""
        ...

    def with_split_images(self, split: str, images: np.ndarray) -> Problem:
        """A copy of the problem whose ``split`` reads ``images`` (as :meth:`split_images`
        gives them) in place of its own; the other splits and all targets are shared."""
        ...


def check_replacement(split: str, current: np.ndarray, images: np.ndarray) -> None:
    """A ConfigError unless ``images`` can stand for ``current``: uint8, the same shape."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise ConfigError(f"the {split} images must be a uint8 array, got {images!r:.60}")
    if images.shape != current.shape:
        raise ConfigError(
            f"the {split} images must have the split's shape {current.shape}, got {images.shape}"
        )


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] -> uint8 (rounded, clipped): how a float-stored split is corrupted."""
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)


def to_unit_float(images: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 in [0, 1]."""
    return images.astype(np.float32) / np.float32(255.0)
