"""CelebA from its official files: 64 x 64 aligned faces and their 40 binary attributes.

CelebA (Liu et al. 2015, "Deep Learning Face Attributes in the Wild") is read from a
directory the user has, in the official layout of the aligned images, or in the layout
``torchvision.datasets.CelebA(root)`` downloads (the same files under ``<root>/celeba/``)::

    img_align_celeba/000001.jpg ... 202599.jpg    the aligned 178 x 218 JPEGs
    list_attr_celeba.txt                          the count, the 40 names, one row per image
    list_eval_partition.txt                       "<image> <split>": 0 train, 1 val, 2 test

Both lists are parsed strictly (the count line, the 40 official names in order, 40 values in
{-1, 1} on every row, split ids in {0, 1, 2}, the same images in both); every image of the
requested splits is checked before anything is decoded. The original split has 162,770 /
19,867 / 19,962 images.

Images: the whole aligned image is resized to ``size`` x ``size`` (64 by default), bilinear,
without a crop first: that is what Sener & Koltun's CelebA loader does
(github.com/isl-org/MultiObjectiveOptimization, ``multi_task/loaders/celeba_loader.py``:
``scipy.misc.imresize(img, (64, 64))`` on the aligned image, bilinear being ``imresize``'s
default, with ``img_rows = img_cols = 64`` in its ``configs.json``), the setting RLW (Lin et
al.) and Elich et al. ("re-size images to 64x64 pixels as done in [RLW]") follow. The
decoded split is stored as uint8 (N, size, size, 3) in a checked ``.npz`` cache
(:mod:`smto.data.npz_cache`). Normalization: ImageNet's per-channel mean and std (as
:mod:`smto.data.cityscapes`), not the loader's own: it subtracts a fixed per-channel mean
marked "TODO(compute this mean)" and then rescales each image by ``imresize``'s min-max
conversion, which is not a rule worth reproducing; ImageNet's statistics are also what
torchvision's ResNet weights (the ``pretrained`` option) expect.

Task names: CelebA's attribute names contain "_", which joins task names in smto, so each
task is its attribute's name with the underscores removed, in the official order
(:data:`TASKS`; :data:`ATTRIBUTES` holds the official names)::

    5_o_Clock_Shadow -> 5oClockShadow    Arched_Eyebrows -> ArchedEyebrows
    Attractive -> Attractive             Bags_Under_Eyes -> BagsUnderEyes
    Bald, Bangs, Big_Lips -> BigLips, Big_Nose -> BigNose, Black_Hair -> BlackHair,
    Blond_Hair -> BlondHair, Blurry, Brown_Hair -> BrownHair,
    Bushy_Eyebrows -> BushyEyebrows, Chubby, Double_Chin -> DoubleChin, Eyeglasses,
    Goatee, Gray_Hair -> GrayHair, Heavy_Makeup -> HeavyMakeup,
    High_Cheekbones -> HighCheekbones, Male, Mouth_Slightly_Open -> MouthSlightlyOpen,
    Mustache, Narrow_Eyes -> NarrowEyes, No_Beard -> NoBeard, Oval_Face -> OvalFace,
    Pale_Skin -> PaleSkin, Pointy_Nose -> PointyNose,
    Receding_Hairline -> RecedingHairline, Rosy_Cheeks -> RosyCheeks, Sideburns, Smiling,
    Straight_Hair -> StraightHair, Wavy_Hair -> WavyHair,
    Wearing_Earrings -> WearingEarrings, Wearing_Hat -> WearingHat,
    Wearing_Lipstick -> WearingLipstick, Wearing_Necklace -> WearingNecklace,
    Wearing_Necktie -> WearingNecktie, Young
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from smto._optional import require
from smto.data import npz_cache, paths
from smto.errors import DataError, MissingError

FORMAT_VERSION = 1
IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip
"""CelebA's 40 attributes, in the order of ``list_attr_celeba.txt``."""

TASKS = tuple(name.replace("_", "") for name in ATTRIBUTES)
"""The task name of each attribute (the name without its underscores), in the same order."""


def task_name(attribute: str) -> str:
    """The task name of an official attribute name ("Bags_Under_Eyes" -> "BagsUnderEyes")."""
    return TASKS[ATTRIBUTES.index(attribute)]


# ------------------------------------------------------------------ the files


@dataclass(frozen=True)
class Layout:
    """Where a CelebA tree's images and two lists are."""

    images: Path
    attributes: Path
    partition: Path


def find_layout(root: str | Path) -> Layout:
    """The files of the tree at ``root``: directly in it, or in ``<root>/celeba/`` (the layout
    ``torchvision.datasets.CelebA(root)`` downloads). One MissingError naming what lacks."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MissingError(
            f"no CelebA directory {root}: name the directory holding {IMAGE_DIR}/, {ATTR_FILE} "
            "and list_eval_partition.txt (the problem option root, or SMTO_CELEBA)"
        )
    names = (IMAGE_DIR, ATTR_FILE, PARTITION_FILE)
    candidates = [root, root / "celeba"]
    for folder in candidates:
        if all((folder / name).exists() for name in names):
            return Layout(folder / IMAGE_DIR, folder / ATTR_FILE, folder / PARTITION_FILE)
    folder = max(candidates, key=lambda f: sum((f / name).exists() for name in names))
    missing = [name for name in names if not (folder / name).exists()]
    raise MissingError(
        f"the CelebA directory {folder} lacks {', '.join(missing)} (looked in {root} and "
        f"{root / 'celeba'}); CelebA's aligned images ({IMAGE_DIR}.zip, unpacked), {ATTR_FILE} "
        f"and {PARTITION_FILE} are needed"
    )


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise MissingError(f"no CelebA list {path}")
    try:
        return path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {path}: {error}") from None


def _image_name(path: Path, number: int, name: str) -> str:
    if not name.endswith(".jpg") or "/" in name or "\\" in name:
        raise DataError(f"{path}, line {number}: {name!r} is not an image name (e.g. 000001.jpg)")
    return name


def read_attributes(path: Path) -> tuple[list[str], np.ndarray]:
    """The image names and their (N, 40) attributes, 1 (present) or 0 (absent), of
    ``list_attr_celeba.txt``; a DataError naming the file and line for any deviation from the
    official format."""
    lines = _lines(path)
    if len(lines) < 2:
        raise DataError(f"{path}: expected the image count on line 1 and the 40 names on line 2")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise DataError(f"{path}, line 1: {lines[0].strip()!r} is not the image count") from None
    header = tuple(lines[1].split())
    if header != ATTRIBUTES:
        raise DataError(
            f"{path}, line 2: expected CelebA's 40 attribute names in the official order "
            f"({ATTRIBUTES[0]} ... {ATTRIBUTES[-1]}), got {len(header)} names starting "
            f"{' '.join(header[:3])!r}"
        )
    names: list[str] = []
    rows: list[list[int]] = []
    for number, line in enumerate(lines[2:], 3):
        fields = line.split()
        if not fields:
            continue
        names.append(_image_name(path, number, fields[0]))
        values = fields[1:]
        if len(values) != len(ATTRIBUTES) or any(v not in ("1", "-1") for v in values):
            raise DataError(
                f"{path}, line {number}: expected {fields[0]} and 40 values in {{-1, 1}}, got "
                f"{len(values)} values {' '.join(values[:4])!r}..."
            )
        rows.append([v == "1" for v in values])
    if len(names) != count:
        raise DataError(f"{path}: line 1 gives {count} images, the file lists {len(names)}")
    if len(set(names)) != len(names):
        raise DataError(f"{path} lists an image twice")
    return names, np.array(rows, dtype=np.uint8).reshape(len(rows), len(ATTRIBUTES))


def read_partition(path: Path) -> tuple[list[str], np.ndarray]:
    """The image names and their split ids (0 train, 1 val, 2 test) of
    ``list_eval_partition.txt``; a DataError naming the file and line otherwise."""
    names: list[str] = []
    splits: list[int] = []
    for number, line in enumerate(_lines(path), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise DataError(
                f"{path}, line {number}: expected '<image> <0|1|2>', got {line.strip()!r}"
            )
        names.append(_image_name(path, number, fields[0]))
        splits.append(int(fields[1]))
    if not names:
        raise DataError(f"{path} lists no image")
    if len(set(names)) != len(names):
        raise DataError(f"{path} lists an image twice")
    return names, np.array(splits, dtype=np.int64)


def read_splits(layout: Layout) -> dict[str, tuple[list[str], np.ndarray]]:
    """The image names and attributes of each split ("train", "val", "test"), in the order of
    the lists; a DataError where the two lists do not name the same images."""
    names, attributes = read_attributes(layout.attributes)
    partition_names, split_ids = read_partition(layout.partition)
    if names != partition_names:
        only_attr = sorted(set(names) - set(partition_names))
        only_part = sorted(set(partition_names) - set(names))
        detail = (
            f"{only_attr[0]} is only in {layout.attributes.name}"
            if only_attr
            else f"{only_part[0]} is only in {layout.partition.name}"
            if only_part
            else "they list them in different orders"
        )
        raise DataError(
            f"{layout.attributes} and {layout.partition} do not list the same images: {detail}"
        )
    result = {}
    for split, split_id in SPLIT_IDS.items():
        chosen = np.flatnonzero(split_ids == split_id)
        result[split] = ([names[i] for i in chosen], attributes[chosen])
    return result


def check_images(layout: Layout, names: Sequence[str], split: str) -> tuple[Path, ...]:
    """The image files of ``names``; one MissingError naming the first missing file (and how
    many are missing) otherwise, before anything is decoded."""
    files = tuple(layout.images / name for name in names)
    paths.require_files(
        files, "CelebA image", split, f"check that {IMAGE_DIR}.zip is fully unpacked"
    )
    return files


# ------------------------------------------------------------------ decoding and the cache


def decode_image(path: Path, size: int) -> np.ndarray:
    """One image as (size, size, 3) uint8: the whole aligned image resized, bilinear."""
    image_module = require("PIL.Image", "vision", "the CelebA loader")
    try:
        with image_module.open(path) as image:
            rgb = image.convert("RGB").resize((size, size), image_module.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot decode the CelebA image {path}: {error}") from None


def _decode_one(job: tuple[Path, int]) -> np.ndarray:
    return decode_image(*job)


def decode_images(files: Sequence[Path], size: int, workers: int = 0) -> np.ndarray:
    """The (N, size, size, 3) uint8 images of ``files``, decoded on ``workers`` processes."""
    jobs = [(f, size) for f in files]
    images = np.empty((len(jobs), size, size, 3), dtype=np.uint8)  # filled in place: the
    # train split is 2 GB at 64 x 64, so a list of arrays and its stack would double that
    if workers > 1 and len(jobs) > 1:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for i, image in enumerate(pool.map(_decode_one, jobs, chunksize=64)):
                images[i] = image
    else:
        for i, job in enumerate(jobs):
            images[i] = _decode_one(job)
    return images


def cache_key(files: Sequence[Path], size: int) -> str:
    """What a cached split was built from: the format, the image size and every image's name
    and size in bytes (checksumming gigabytes of JPEGs on every start would cost minutes)."""
    listing = [[f.name, f.stat().st_size] for f in files]
    text = json.dumps([FORMAT_VERSION, size, listing])
    return hashlib.sha256(text.encode()).hexdigest()


def load_images(
    files: Sequence[Path], size: int, cache: Path, split: str, workers: int = 0
) -> np.ndarray:
    """The split's (N, size, size, 3) uint8 images from its cache file in ``cache``, decoded
    (and cached) when the file is missing, stale or corrupt."""
    key = cache_key(files, size)
    path = cache / f"{split}-{size}-{key[:16]}.npz"
    if path.is_file():
        try:
            return npz_cache.read_verified(path, key, ("image",))["image"]
        except DataError:
            path.unlink(missing_ok=True)
    images = decode_images(files, size, workers)
    npz_cache.write_atomic(path, key, {"image": images})
    return images


# ------------------------------------------------------------------ samples


def normalize_images(images: Tensor) -> Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float, standardized with ImageNet's mean and
    std."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (images.movedim(-1, -3).float() / 255.0 - mean) / std


class CelebASplit(torch.utils.data.Dataset):
    """One split's images and the attributes of the selected tasks, as a map-style Dataset.

    An integer index gives one sample; a sequence of indices (what a DataLoader with
    ``batch_size=None`` over a sampler of index lists passes) gives the whole batch at once,
    which is much faster than collating hundreds of 64 x 64 samples one by one. A sample or
    batch is a dict: "image" (normalized, (3, H, W) or (B, 3, H, W)) and one 0/1 float target
    per task.
    """

    def __init__(self, images: np.ndarray, attributes: np.ndarray, tasks: Sequence[str]) -> None:
        if len(images) != len(attributes):
            raise ValueError("one row of attributes per image")
        self.images = images
        self.attributes = attributes
        self.tasks = tuple(tasks)
        self.columns = [TASKS.index(t) for t in self.tasks]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int | Sequence[int] | Tensor) -> dict[str, Tensor]:
        if isinstance(index, Tensor):
            index = index.tolist()
        rows = int(index) if np.ndim(index) == 0 else np.asarray(index, dtype=np.int64)
        image = torch.from_numpy(np.ascontiguousarray(self.images[rows]))
        targets = torch.from_numpy(self.attributes[rows][..., self.columns].astype(np.float32))
        sample = {"image": normalize_images(image)}
        for i, task in enumerate(self.tasks):
            sample[task] = targets[..., i]
        return sample

    def limited(self, count: int | None) -> CelebASplit:
        """The first ``count`` samples (all for None)."""
        if count is None or count >= len(self):
            return self
        return CelebASplit(self.images[:count], self.attributes[:count], self.tasks)


__all__ = [
    "ATTRIBUTES",
    "TASKS",
    "CelebASplit",
    "Layout",
    "check_images",
    "decode_image",
    "decode_images",
    "find_layout",
    "load_images",
    "normalize_images",
    "read_attributes",
    "read_partition",
    "read_splits",
    "task_name",
]
