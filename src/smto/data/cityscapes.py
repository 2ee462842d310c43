"""Cityscapes from its official on-disk layout: segmentation, disparity and instance targets.

Cityscapes (Cordts et al. 2016) needs an account to download, so smto reads the tree a user
already has, from a directory they name, in the official layout (either the three folders
themselves, or the ``*_trainvaltest`` folders the archives unpack to)::

    leftImg8bit/{train,val}/<city>/<stem>_leftImg8bit.png       8-bit RGB
    gtFine/{train,val}/<city>/<stem>_gtFine_labelIds.png        8-bit label ids
    gtFine/{train,val}/<city>/<stem>_gtFine_instanceIds.png     16-bit: id, or id * 1000 + k
    disparity/{train,val}/<city>/<stem>_disparity.png           16-bit: 0 invalid

Every file a split needs is checked before anything is decoded. Each split is decoded and
resized once per resolution (PIL's bilinear for the image, as torchvision's ``Resize`` on a
PIL image; nearest for the three label maps) and cached as a checked ``.npz``
(:mod:`smto.data.npz_cache`): decoding 2048 x 1024 PNGs every epoch would dominate a run.
The targets are made per sample (:class:`CityscapesSplit`, a ``torch.utils.data.Dataset``):

* segmentation: label ids to Cityscapes' 19 train ids or its 7 categories with its own label
  table (:data:`LABELS`); -1 is ignored;
* disparity: d = (raw - 1) / (256 (2048 / W)) where raw > 0 (disparity in pixels at width W),
  NaN (no label) elsewhere;
* instance: per pixel of an instance of a class with instances (id * 1000 + k), the offset
  (dy, dx) from the pixel to its instance's centroid, in pixels; NaN elsewhere;
* augmentation (training only): the main study's, a horizontal flip with p = 0.5 and a
  rotation by an angle in [-10, 10] degrees (rotated-in pixels are ignored in every target);
  or Elich et al.'s (after MTAN and CAGrad's ``RandomScaleCrop``), a crop of 1/1, 1/1.2 or
  1/1.5 of the image resized back, the disparity divided by the scale, then the flip. The
  instance offsets are computed after it, so the flip negates dx. Each sample's draw comes
  from the epoch's seed and the sample's index, so it does not depend on the number of
  loader workers.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional

from smto._optional import require
from smto.data import npz_cache, paths
from smto.data.scale_crop import ScaleCrop
from smto.errors import ConfigError, DataError, MissingError

FORMAT_VERSION = 1
KINDS = ("leftImg8bit", "gtFine", "disparity")
SPLIT_FILES = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FULL_WIDTH = 2048
MAX_ROTATION = 10.0
AUGMENTATIONS = ("rotate_flip", "scale_crop")
ARRAYS = ("image", "label", "instance", "disparity")


@dataclass(frozen=True)
class Label:
    """One row of Cityscapes' label table (cityscapesScripts ``helpers/labels.py``)."""

    name: str
    id: int
    train_id: int
    category_id: int
    has_instances: bool
    ignore_in_eval: bool


LABELS = (
    Label("unlabeled", 0, 255, 0, False, True),
    Label("ego vehicle", 1, 255, 0, False, True),
    Label("rectification border", 2, 255, 0, False, True),
    Label("out of roi", 3, 255, 0, False, True),
    Label("static", 4, 255, 0, False, True),
    Label("dynamic", 5, 255, 0, False, True),
    Label("ground", 6, 255, 0, False, True),
    Label("road", 7, 0, 1, False, False),
    Label("sidewalk", 8, 1, 1, False, False),
    Label("parking", 9, 255, 1, False, True),
    Label("rail track", 10, 255, 1, False, True),
    Label("building", 11, 2, 2, False, False),
    Label("wall", 12, 3, 2, False, False),
    Label("fence", 13, 4, 2, False, False),
    Label("guard rail", 14, 255, 2, False, True),
    Label("bridge", 15, 255, 2, False, True),
    Label("tunnel", 16, 255, 2, False, True),
    Label("pole", 17, 5, 3, False, False),
    Label("polegroup", 18, 255, 3, False, True),
    Label("traffic light", 19, 6, 3, False, False),
    Label("traffic sign", 20, 7, 3, False, False),
    Label("vegetation", 21, 8, 4, False, False),
    Label("terrain", 22, 9, 4, False, False),
    Label("sky", 23, 10, 5, False, False),
    Label("person", 24, 11, 6, True, False),
    Label("rider", 25, 12, 6, True, False),
    Label("car", 26, 13, 7, True, False),
    Label("truck", 27, 14, 7, True, False),
    Label("bus", 28, 15, 7, True, False),
    Label("caravan", 29, 255, 7, True, True),
    Label("trailer", 30, 255, 7, True, True),
    Label("train", 31, 16, 7, True, False),
    Label("motorcycle", 32, 17, 7, True, False),
    Label("bicycle", 33, 18, 7, True, False),
)
"""Cityscapes' labels (the license plate, id -1, never appears in a label-id PNG)."""
CLASSES = (7, 19)
INSTANCE_LABEL_IDS = tuple(
    label.id for label in LABELS if label.has_instances and not label.ignore_in_eval
)
"""The label ids whose instances are targets: the 8 classes with instances that are evaluated
(person, rider, car, truck, bus, train, motorcycle, bicycle)."""


def class_table(classes: int) -> np.ndarray:
    """Label id (0..255) -> class: the 19 train ids, or the 7 categories (category id - 1) of
    the labels Cityscapes evaluates; -1 (ignored) for every other label, as Cityscapes'
    evaluation ignores the ``ignoreInEval`` labels at both levels."""
    if classes not in CLASSES:
        raise ConfigError(f"classes must be 7 (categories) or 19 (train ids), got {classes!r}")
    table = np.full(256, -1, dtype=np.int64)
    for label in LABELS:
        if not label.ignore_in_eval:
            table[label.id] = label.train_id if classes == 19 else label.category_id - 1
    return table


# ------------------------------------------------------------------ the files


@dataclass(frozen=True)
class SampleFiles:
    """The four files of one image."""

    image: Path
    label: Path
    instance: Path
    disparity: Path

    def all(self) -> tuple[Path, ...]:
        """The four paths."""
        return (self.image, self.label, self.instance, self.disparity)


def find_layout(root: str | Path) -> dict[str, Path]:
    """The folders ``leftImg8bit``, ``gtFine`` and ``disparity`` of the tree at ``root``
    (directly in it, or in the ``<kind>_trainvaltest`` folder an archive unpacks to)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MissingError(
            f"no Cityscapes directory {root}: name the directory holding leftImg8bit/, gtFine/ "
            "and disparity/ (the problem option root, or SMTO_CITYSCAPES)"
        )
    layout, missing = {}, []
    for kind in KINDS:
        found = [p for p in (root / kind, root / f"{kind}_trainvaltest" / kind) if p.is_dir()]
        if found:
            layout[kind] = found[0]
        else:
            missing.append(kind)
    if missing:
        raise MissingError(
            f"the Cityscapes directory {root} lacks {', '.join(m + '/' for m in missing)} "
            f"(looked for <root>/<name> and <root>/<name>_trainvaltest/<name>); Cityscapes' "
            "leftImg8bit, gtFine and disparity archives are needed"
        )
    return layout


def sample_files(layout: dict[str, Path], entry: str) -> SampleFiles:
    """The four files of ``entry``, "<split>/<city>/<stem>" (e.g.
    "train/aachen/aachen_000000_000019")."""
    split, city, stem = entry.split("/")
    folder = f"{split}/{city}"
    return SampleFiles(
        image=layout["leftImg8bit"] / folder / f"{stem}_leftImg8bit.png",
        label=layout["gtFine"] / folder / f"{stem}_gtFine_labelIds.png",
        instance=layout["gtFine"] / folder / f"{stem}_gtFine_instanceIds.png",
        disparity=layout["disparity"] / folder / f"{stem}_disparity.png",
    )


def entry_of(line: str) -> str:
    """A split file's line (an image path ending ``.../leftImg8bit/<split>/<city>/<stem>_
    leftImg8bit.png``, as in the study's files) -> "<split>/<city>/<stem>"."""
    parts = line.strip().replace("\\", "/").split("/")
    if len(parts) < 3 or not parts[-1].endswith("_leftImg8bit.png"):
        raise ValueError(line)
    stem = parts[-1][: -len("_leftImg8bit.png")]
    return f"{parts[-3]}/{parts[-2]}/{stem}"


def read_split_file(path: Path) -> list[str]:
    """The entries of one of the study's split files (one image path per line)."""
    if not path.is_file():
        raise MissingError(
            f"no split file {path}: name the directory of the study's train.txt, val.txt and "
            "test.txt (split_dir), or use split='seed'"
        )
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(entry_of(line))
        except ValueError:
            raise DataError(
                f"{path}, line {number}: {line.strip()!r} is not a Cityscapes image path "
                "(.../leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png)"
            ) from None
    if not entries:
        raise DataError(f"the split file {path} lists no image")
    return entries


def official_entries(layout: dict[str, Path], split: str) -> list[str]:
    """The images of the official ``split`` ("train" or "val") found in the tree, sorted."""
    folder = layout["leftImg8bit"] / split
    files = sorted(folder.glob("*/*_leftImg8bit.png"))
    if not files:
        raise MissingError(f"no image of Cityscapes' {split} set under {folder}")
    return [f"{split}/{f.parent.name}/{f.name[: -len('_leftImg8bit.png')]}" for f in files]


def seeded_splits(layout: dict[str, Path], seed: int) -> dict[str, list[str]]:
    """The study's split rule without its files: 80 % of the official train set (shuffled
    with ``seed``) is train, the rest val, and the official val set is test."""
    train = official_entries(layout, "train")
    order = np.random.default_rng(seed).permutation(len(train))
    n_train = int(0.8 * len(train))
    return {
        "train": [train[i] for i in order[:n_train]],
        "val": [train[i] for i in order[n_train:]],
        "test": official_entries(layout, "val"),
    }


def check_files(layout: dict[str, Path], entries: Sequence[str], split: str) -> list[SampleFiles]:
    """The files of ``entries``; one MissingError naming the first missing file (and how many
    are missing) otherwise, before anything is decoded."""
    files = [sample_files(layout, e) for e in entries]
    paths.require_files(
        (p for f in files for p in f.all()),
        "Cityscapes file",
        split,
        "check the directory and that the leftImg8bit, gtFine and disparity archives are unpacked",
    )
    return files


# ------------------------------------------------------------------ decoding and the cache


def nearest_indices(source: int, target: int) -> np.ndarray:
    """The source index each of ``target`` output positions takes under nearest resizing
    (the output pixel's centre mapped back: floor((i + 0.5) source / target), PIL's rule)."""
    return np.minimum(((np.arange(target) + 0.5) * source / target).astype(np.int64), source - 1)


def resize_nearest(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``array`` (H, W) resized to ``shape`` = (width, height) by nearest neighbour."""
    width, height = shape
    rows = nearest_indices(array.shape[0], height)
    cols = nearest_indices(array.shape[1], width)
    return array[rows[:, None], cols[None, :]]


def decode_sample(files: SampleFiles, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """One image's four arrays at ``shape`` = (width, height): the RGB image (H, W, 3) uint8
    (bilinear), the label ids (uint8), the instance ids and the raw disparity (uint16)."""
    image_module = require("PIL.Image", "vision", "the Cityscapes loader")
    arrays = {}
    try:
        with image_module.open(files.image) as image:
            rgb = image.convert("RGB").resize(shape, image_module.Resampling.BILINEAR)
            arrays["image"] = np.asarray(rgb, dtype=np.uint8)
        for name, path, dtype in (
            ("label", files.label, np.uint8),
            ("instance", files.instance, np.uint16),
            ("disparity", files.disparity, np.uint16),
        ):
            with image_module.open(path) as image:
                raw = np.asarray(image)
            if raw.ndim != 2 or raw.min() < 0 or raw.max() > np.iinfo(dtype).max:
                raise DataError(f"{path} is not a one-channel {np.dtype(dtype).name} map")
            arrays[name] = resize_nearest(raw, shape).astype(dtype)
    except DataError:
        raise
    except (OSError, ValueError) as error:
        raise DataError(f"cannot decode a Cityscapes file of {files.image.name}: {error}") from None
    return arrays


def _decode_one(job: tuple[SampleFiles, tuple[int, int]]) -> dict[str, np.ndarray]:
    return decode_sample(*job)


def decode_split(
    files: Sequence[SampleFiles], shape: tuple[int, int], workers: int = 0
) -> dict[str, np.ndarray]:
    """The stacked arrays of ``files`` at ``shape``, decoded on ``workers`` processes."""
    jobs = [(f, shape) for f in files]
    if workers > 1 and len(jobs) > 1:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            decoded = list(pool.map(_decode_one, jobs, chunksize=8))
    else:
        decoded = [_decode_one(job) for job in jobs]
    return {name: np.stack([d[name] for d in decoded]) for name in ARRAYS}


def cache_key(files: Sequence[SampleFiles], shape: tuple[int, int]) -> str:
    """What a cached split was built from: the format, the resolution and every source
    file's name and size (checksumming gigabytes of PNGs on every start would cost minutes)."""
    listing = [[str(p.name), p.stat().st_size] for f in files for p in f.all()]
    text = json.dumps([FORMAT_VERSION, list(shape), listing])
    return hashlib.sha256(text.encode()).hexdigest()


def load_split(
    files: Sequence[SampleFiles],
    shape: tuple[int, int],
    cache: Path,
    split: str,
    workers: int = 0,
) -> dict[str, np.ndarray]:
    """The split's arrays at ``shape`` from its cache file in ``cache``, built (and cached)
    when the file is missing, stale or corrupt."""
    key = cache_key(files, shape)
    path = cache / f"{split}-{shape[0]}x{shape[1]}-{key[:16]}.npz"
    if path.is_file():
        try:
            return npz_cache.read_verified(path, key, ARRAYS)
        except DataError:
            path.unlink(missing_ok=True)
    arrays = decode_split(files, shape, workers)
    npz_cache.write_atomic(path, key, arrays)
    return arrays


# ------------------------------------------------------------------ targets and augmentation


def normalize_image(image: Tensor) -> Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float, standardized with ImageNet's mean and std."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image.permute(2, 0, 1).float() / 255.0 - mean) / std


def disparity_target(raw: Tensor, width: int) -> Tensor:
    """Raw disparity -> disparity in pixels at ``width``: (raw - 1) / (256 (2048 / width))
    where raw > 0, NaN (no label) elsewhere."""
    values = (raw.double() - 1.0) / (256.0 * FULL_WIDTH / width)
    return torch.where(raw > 0, values, torch.nan).float()


def instance_offsets(instance_ids: Tensor, valid: Tensor | None = None) -> Tensor:
    """(2, H, W): at each pixel of an instance (id * 1000 + k, of a class in
    :data:`INSTANCE_LABEL_IDS`, and ``valid`` where given), the offset (dy, dx) from the pixel
    to the centroid of its instance's pixels, in pixels; NaN elsewhere."""
    ids = instance_ids.long()
    height, width = ids.shape
    thing = (ids >= 1000) & torch.isin(ids // 1000, torch.tensor(INSTANCE_LABEL_IDS))
    if valid is not None:
        thing &= valid
    offsets = torch.full((2, height, width), torch.nan)
    if not thing.any():
        return offsets
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64),
        torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    _, inverse = torch.unique(ids[thing], return_inverse=True)
    count = torch.bincount(inverse).double()
    y, x = ys[thing], xs[thing]
    centre_y = torch.bincount(inverse, weights=y) / count
    centre_x = torch.bincount(inverse, weights=x) / count
    offsets[0][thing] = (centre_y[inverse] - y).float()
    offsets[1][thing] = (centre_x[inverse] - x).float()
    return offsets


def rotation_grid(angle: float, height: int, width: int) -> Tensor:
    """The sampling grid (1, H, W, 2) of a rotation by ``angle`` degrees about the centre (in
    pixel space: normalized coordinates are scaled by the aspect ratio, so it does not shear)."""
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    theta = torch.tensor([[c, -s * height / width, 0.0], [s * width / height, c, 0.0]])
    return functional.affine_grid(theta[None], [1, 1, height, width], align_corners=False)


def rotate(image: Tensor, maps: Tensor, angle: float) -> tuple[Tensor, Tensor, Tensor]:
    """Rotates the (3, H, W) float image (bilinear, 0 filled in) and the (C, H, W) label maps
    (nearest) by ``angle`` degrees; also returns where the output comes from inside the input
    (H, W) bool: the rotated-in pixels are False."""
    height, width = image.shape[-2:]
    grid = rotation_grid(angle, height, width)
    kwargs = {"padding_mode": "zeros", "align_corners": False}
    image = functional.grid_sample(image[None], grid, mode="bilinear", **kwargs)[0]
    stacked = torch.cat([maps.double(), torch.ones(1, height, width, dtype=torch.float64)])
    sampled = functional.grid_sample(stacked[None], grid.double(), mode="nearest", **kwargs)[0]
    return image, sampled[:-1].to(maps.dtype), sampled[-1] > 0.5


@dataclass(frozen=True)
class Augmentation:
    """One sample's draw: a horizontal flip, a rotation angle in degrees, and a crop of
    ``(height / scale, width / scale)`` at (``top``, ``left``) resized back (scale 1: none)."""

    flip: bool
    angle: float = 0.0
    scale: float = 1.0
    top: int = 0
    left: int = 0

    @classmethod
    def draw(
        cls, generator: torch.Generator, kind: str = "rotate_flip", size: tuple[int, int] = (1, 1)
    ) -> Augmentation:
        """``kind`` "rotate_flip" (the main study): flip with p = 0.5, an angle uniform in
        [-10, 10] degrees. "scale_crop" (MTAN's and CAGrad's ``RandomScaleCrop``, which Elich
        et al. use): a scale from (1.0, 1.2, 1.5), a uniform crop position in the (H, W)
        ``size``, then a flip with p = 0.5."""
        if kind == "rotate_flip":
            flip = bool(torch.rand((), generator=generator) < 0.5)
            angle = torch.empty(()).uniform_(-MAX_ROTATION, MAX_ROTATION, generator=generator)
            return cls(flip, float(angle))
        if kind != "scale_crop":
            raise ConfigError(f"augmentation must be one of {AUGMENTATIONS}, got {kind!r}")
        crop = ScaleCrop.draw(generator, *size)
        flip = bool(torch.rand((), generator=generator) < 0.5)
        return cls(flip, 0.0, crop.scale, crop.top, crop.left)


def make_sample(
    arrays: dict[str, np.ndarray],
    index: int,
    table: Tensor,
    augmentation: Augmentation | None = None,
) -> dict[str, Tensor]:
    """Sample ``index`` of a split's arrays: the normalized image and the S, D, I targets
    (``table`` from :func:`class_table`), after ``augmentation`` where given (the crop, then
    the flip, then the rotation). A crop at scale s divides the disparity by s, as
    ``RandomScaleCrop`` divides its depth."""
    image = normalize_image(torch.from_numpy(np.ascontiguousarray(arrays["image"][index])))
    maps = torch.stack(
        [torch.from_numpy(arrays[name][index].astype(np.int64)) for name in ARRAYS[1:]]
    )
    valid = torch.ones(maps.shape[1:], dtype=torch.bool)
    scale = 1.0
    if augmentation is not None:
        if augmentation.scale != 1.0:
            crop = ScaleCrop(augmentation.scale, augmentation.top, augmentation.left)
            image, maps = crop.apply(image, "bilinear"), crop.apply(maps, "nearest")
            scale = augmentation.scale
        if augmentation.flip:
            image, maps = image.flip(-1), maps.flip(-1)
        if augmentation.angle != 0.0:
            image, maps, valid = rotate(image, maps, augmentation.angle)
    label, instance, raw = maps
    segmentation = torch.where(valid, table[label], -1)
    disparity = torch.where(valid, disparity_target(raw, raw.shape[-1]) / scale, torch.nan)
    return {
        "image": image,
        "S": segmentation,
        "D": disparity,
        "I": instance_offsets(instance, valid),
    }


class CityscapesSplit(torch.utils.data.Dataset):
    """One split's samples as a map-style Dataset (for a DataLoader with workers).

    Set :attr:`epoch_seed` to augment: sample i is then drawn (:meth:`Augmentation.draw`,
    of kind ``augmentation``) from a generator seeded with (epoch_seed, i), the same whichever
    worker loads it; None (the default) does not augment.
    """

    def __init__(
        self, arrays: dict[str, np.ndarray], classes: int, augmentation: str = "rotate_flip"
    ) -> None:
        self.arrays = arrays
        self.classes = classes
        self.augmentation = augmentation
        self.table = torch.from_numpy(class_table(classes))
        self.epoch_seed: int | None = None

    def __len__(self) -> int:
        return len(self.arrays["image"])

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        augmentation = None
        if self.epoch_seed is not None:
            seed = (self.epoch_seed * 1_000_003 + int(index)) % (2**63 - 1)
            generator = torch.Generator().manual_seed(seed)
            size = self.arrays["label"].shape[1:]
            augmentation = Augmentation.draw(generator, self.augmentation, size)
        return make_sample(self.arrays, int(index), self.table, augmentation)


__all__ = [
    "CLASSES",
    "INSTANCE_LABEL_IDS",
    "LABELS",
    "Augmentation",
    "CityscapesSplit",
    "SampleFiles",
    "check_files",
    "class_table",
    "decode_split",
    "disparity_target",
    "find_layout",
    "instance_offsets",
    "load_split",
    "make_sample",
    "read_split_file",
    "rotate",
    "seeded_splits",
]
