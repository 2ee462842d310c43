"""A small fake CelebA tree in exactly the official format.

``img_align_celeba/<000001..>.jpg``: 178 x 218 RGB JPEGs (a smooth gradient with one coloured
block, so that the resize is not of pure noise); ``list_attr_celeba.txt``: the count, the 40
names, then one row per image (the image name and 40 values in {-1, 1}, padded as in the
official file); ``list_eval_partition.txt``: ``<image> <0|1|2>``. Attributes are random
except Smiling and Male, which are bright / tall blocks in the image, so a tiny model can
learn them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from smto.data.celeba import ATTRIBUTES

WIDTH, HEIGHT = 178, 218
SMILING, MALE = ATTRIBUTES.index("Smiling"), ATTRIBUTES.index("Male")


@dataclass(frozen=True)
class FakeTree:
    """Where the fake tree is, its image names, their (N, 40) 0/1 attributes and split ids."""

    root: Path
    names: list[str]
    attributes: np.ndarray
    splits: np.ndarray


def image_of(attributes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A (218, 178, 3) uint8 image: a gradient, noise, and blocks that show two attributes."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    image = np.stack([xs * 255 // WIDTH, ys * 255 // HEIGHT, np.full_like(xs, 96)], axis=-1)
    image = image + rng.integers(-20, 20, image.shape)
    if attributes[SMILING]:
        image[120:200, 20:160] = (250, 250, 250)
    if attributes[MALE]:
        image[10:110, 60:120] = (10, 10, 10)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_tree(
    root: Path, counts: tuple[int, int, int] = (20, 5, 5), seed: int = 0, nested: bool = False
) -> FakeTree:
    """A fake tree of ``counts`` (train, val, test) images, interleaved in the lists as the
    official one is not (its splits are contiguous) to test that each split is selected by
    its id; under ``root/celeba`` (torchvision's layout) with ``nested``."""
    rng = np.random.default_rng(seed)
    folder = root / "celeba" if nested else root
    images = folder / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    total = sum(counts)
    splits = np.concatenate([np.full(n, i) for i, n in enumerate(counts)])
    splits = splits[rng.permutation(total)]
    attributes = rng.integers(0, 2, (total, len(ATTRIBUTES))).astype(np.uint8)
    names = [f"{i + 1:06d}.jpg" for i in range(total)]
    for name, row in zip(names, attributes):
        Image.fromarray(image_of(row, rng), "RGB").save(images / name, quality=90)
    lines = [str(total), " ".join(ATTRIBUTES) + " "]
    for name, row in zip(names, attributes):
        lines.append(name + "".join(f"{1 if v else -1:>3d}" for v in row))
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    partition = [f"{name} {split}" for name, split in zip(names, splits)]
    (folder / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
    return FakeTree(root, names, attributes, splits)
