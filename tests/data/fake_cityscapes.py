"""A small fake Cityscapes tree in the real formats, and the study's split files for it.

PNGs as Cityscapes ships them: 8-bit RGB images, 8-bit label ids, 16-bit instance ids (the
label id, or label id * 1000 + k on a pixel of instance k of a class with instances) and
16-bit raw disparity (0 invalid). Each image has a road/sky background, a block of "static"
(void, ignored), one car and one person instance, and a "caravan" (an instance class that
Cityscapes does not evaluate).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 128, 64
CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt",)}
CAR, PERSON, CARAVAN, ROAD, SKY, STATIC = 26, 24, 29, 7, 23, 4


@dataclass(frozen=True)
class FakeTree:
    """Where the fake tree is, its entries ("<split>/<city>/<stem>") by official split."""

    root: Path
    entries: dict[str, list[str]]


def label_maps(index: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index``'s label ids and instance ids (H, W), with boxes that move with it."""
    label = np.full((HEIGHT, WIDTH), ROAD, dtype=np.uint8)
    label[: HEIGHT // 4] = SKY
    label[HEIGHT // 4 : HEIGHT // 4 + 4, :8] = STATIC
    instance = label.astype(np.int32)
    shift = 4 * (index % 5)
    boxes = (
        (CAR, 1, slice(30, 46), slice(10 + shift, 42 + shift)),
        (PERSON, 3, slice(20, 52), slice(80, 88)),
        (CARAVAN, 1, slice(50, 60), slice(100, 120)),
    )
    for label_id, k, rows, cols in boxes:
        label[rows, cols] = label_id
        instance[rows, cols] = label_id * 1000 + k
    return label, instance


def write_sample(root: Path, entry: str, index: int, rng: np.random.Generator) -> None:
    """The four PNGs of one image."""
    split, city, stem = entry.split("/")
    label, instance = label_maps(index)
    disparity = rng.integers(1, 20_000, (HEIGHT, WIDTH)).astype(np.uint16)
    disparity[:, :4] = 0
    folders = {kind: root / kind / split / city for kind in ("leftImg8bit", "gtFine", "disparity")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(image, "RGB").save(folders["leftImg8bit"] / f"{stem}_leftImg8bit.png")
    Image.fromarray(label, "L").save(folders["gtFine"] / f"{stem}_gtFine_labelIds.png")
    Image.fromarray(instance.astype(np.uint16)).save(
        folders["gtFine"] / f"{stem}_gtFine_instanceIds.png"
    )
    Image.fromarray(disparity).save(folders["disparity"] / f"{stem}_disparity.png")


def write_tree(root: Path, n_train: int = 10, n_val: int = 4, seed: int = 0) -> FakeTree:
    """A fake tree with ``n_train`` official train and ``n_val`` official val images."""
    rng = np.random.default_rng(seed)
    entries: dict[str, list[str]] = {}
    for split, count in (("train", n_train), ("val", n_val)):
        cities = CITIES[split]
        entries[split] = [
            f"{split}/{cities[i % len(cities)]}/{cities[i % len(cities)]}_{i:06d}_000019"
            for i in range(count)
        ]
        for i, entry in enumerate(entries[split]):
            write_sample(root, entry, i, rng)
    return FakeTree(root, entries)


def image_line(entry: str) -> str:
    """The study's split-file line of an entry."""
    return f"city_ori/leftImg8bit_trainvaltest/leftImg8bit/{entry}_leftImg8bit.png"


def write_split_files(folder: Path, tree: FakeTree, n_val: int = 2) -> dict[str, list[str]]:
    """train.txt / val.txt from the official train images (the last ``n_val`` are val) and
    test.txt from the official val images, in the study's format; returns the entries."""
    folder.mkdir(parents=True, exist_ok=True)
    train = tree.entries["train"]
    splits = {"train": train[:-n_val], "val": train[-n_val:], "test": tree.entries["val"]}
    for split, entries in splits.items():
        (folder / f"{split}.txt").write_text("\n".join(image_line(e) for e in entries))
    return splits
