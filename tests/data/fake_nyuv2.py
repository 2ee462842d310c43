"""A small fake NYUv2 tree in MTAN's preprocessed layout.

``<root>/train/{image,label,depth,normal}/<i>.npy`` and ``<root>/val/...`` (the official test
set) with MTAN's arrays, at a small size: image (H, W, 3) float32 in [0, 1], label (H, W)
float32 (0..12, -1 unlabelled), depth (H, W, 1) float32 (0 invalid), normal (H, W, 3) float32
unit vectors (0 invalid). Each image has a band of unlabelled rows, invalid-depth columns and
an invalid-normal block, so that every ignore rule is exercised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 64, 32
SHAPE = (WIDTH, HEIGHT)
UNLABELLED_ROWS = slice(0, 3)
INVALID_DEPTH_COLS = slice(0, 5)
INVALID_NORMAL = (slice(HEIGHT - 4, HEIGHT), slice(WIDTH - 8, WIDTH))


def sample(index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The four arrays of one image."""
    image = rng.random((HEIGHT, WIDTH, 3), dtype=np.float32)
    columns = np.arange(WIDTH)[None, :] // 5 + np.arange(HEIGHT)[:, None] // 8 + index
    label = (columns % 13).astype(np.float32)
    label[UNLABELLED_ROWS] = -1
    depth = rng.uniform(0.5, 10.0, (HEIGHT, WIDTH, 1)).astype(np.float32)
    depth[:, INVALID_DEPTH_COLS] = 0
    normal = rng.normal(size=(HEIGHT, WIDTH, 3))
    normal = (normal / np.linalg.norm(normal, axis=-1, keepdims=True)).astype(np.float32)
    normal[INVALID_NORMAL] = 0
    return {"image": image, "label": label, "depth": depth, "normal": normal}


def write_tree(root: Path, n_train: int = 12, n_test: int = 4, seed: int = 0) -> Path:
    """A fake tree with ``n_train`` official train and ``n_test`` official test images."""
    rng = np.random.default_rng(seed)
    for folder, count in (("train", n_train), ("val", n_test)):
        for kind in ("image", "label", "depth", "normal"):
            (root / folder / kind).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            for kind, array in sample(i, rng).items():
                np.save(root / folder / kind / f"{i}.npy", array)
    return root


def read(root: Path, folder: str, kind: str, index: int) -> np.ndarray:
    """One array of the tree as written."""
    return np.load(root / folder / kind / f"{index}.npy")
