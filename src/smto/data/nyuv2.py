"""NYUv2 in the preprocessed layout of MTAN, CAGrad and LibMTL: segmentation, depth, normals.

NYU Depth V2 (Silberman et al. 2012) as Liu et al. (MTAN, CVPR 2019) preprocessed it: the
official 795 training and 654 test images, resized to 288 x 384, with 13-class labels, depth
and surface normals, one ``.npy`` file per array and image. smto reads the tree a user already
has (``lorenmt/mtan`` ``im2im_pred/create_dataset.py``, class ``NYUv2``)::

    <root>/train/{image,label,depth,normal}/<i>.npy     i = 0..794 (the official train set)
    <root>/val/{image,label,depth,normal}/<i>.npy       i = 0..653 (the official test set)

    image   (H, W, 3) float, RGB in [0, 1]
    label   (H, W)    float or integer: 0..12 for the 13 classes, -1 unlabelled
    depth   (H, W, 1) float, 0 where invalid
    normal  (H, W, 3) float, unit vectors, 0 where invalid

Every file a split needs is checked before any is read; each split is read once, its arrays
checked (shape, dtype, values) and cached as one checked ``.npz`` (:mod:`smto.data.npz_cache`).
The split (:func:`libmtl_splits`) is LibMTL's: Elich et al. take the 159 validation images of
the official train set "as in LibMTL", which is the fixed list of LibMTL's
``examples/nyu/data_split.json`` (commit 6de1af7, January 2022; removed from LibMTL in March
2024; MIT licence), copied into :data:`LIBMTL_VAL`; the other 636 are train and the official
test set is test. :func:`seeded_splits` draws the same proportions with a seed instead.

The targets are made per sample (:class:`NYUv2Split`, a ``torch.utils.data.Dataset``): the
image as stored ((3, H, W), in [0, 1], not standardized, as MTAN and LibMTL feed it), the
labels (-1 ignored), the depth (NaN where invalid) and the normals (normalized to unit length,
NaN where invalid, i.e. where the vector is 0). The augmentation (training only) is MTAN's
(``create_dataset.py`` at 3b6eb5d, the same in CAGrad's ``nyuv2/create_dataset.py`` and
LibMTL's ``examples/nyu/create_dataset.py``), :class:`Augmentation`:

* ``RandomScaleCrop``: a scale s drawn from (1.0, 1.2, 1.5), a crop of (int(H / s),
  int(W / s)) at a uniformly drawn position, resized back to (H, W) with
  ``torch.nn.functional.interpolate``: bilinear (``align_corners=True``) for the image and
  the normals, nearest for the labels and the depth, and the depth divided by s (an object
  seen s times closer);
* then a horizontal flip with p = 0.5 that negates the normals' x component.

The normals are renormalized after the crop (the bilinear blend of two unit vectors is
shorter than 1; MTAN uses the blend as it is). Each sample's draw comes from the epoch's seed
and the sample's index, so it does not depend on the number of loader workers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from smto.data import npz_cache, paths
from smto.data.scale_crop import ScaleCrop
from smto.errors import DataError, MissingError

FORMAT_VERSION = 1
CLASSES = 13
SHAPE = (384, 288)
"""(width, height) of the preprocessed images."""
KINDS = ("image", "label", "depth", "normal")
FOLDERS = {"train": "train", "test": "val"}
"""The folder of each official set: MTAN's layout calls the official test set ``val``."""
OFFICIAL_SIZES = {"train": 795, "test": 654}
ARRAYS = KINDS

LIBMTL_VAL = (
    3, 4, 10, 26, 27, 36, 45, 46, 55, 56, 58, 66, 74, 75, 81, 82, 91, 92, 93, 94, 99, 106, 109,
    113, 114, 120, 122, 127, 131, 144, 148, 157, 161, 165, 168, 170, 171, 182, 185, 186, 187,
    202, 204, 208, 209, 212, 221, 227, 228, 230, 240, 241, 242, 243, 249, 254, 256, 264, 271,
    273, 284, 285, 294, 296, 297, 298, 299, 302, 304, 307, 320, 326, 329, 337, 339, 353, 362,
    365, 370, 371, 373, 375, 376, 378, 381, 387, 391, 397, 399, 403, 404, 406, 407, 417, 423,
    424, 433, 448, 453, 465, 472, 474, 484, 486, 493, 494, 495, 496, 499, 501, 506, 523, 524,
    532, 539, 561, 569, 581, 583, 586, 588, 596, 599, 601, 618, 623, 625, 631, 632, 636, 639,
    644, 645, 653, 656, 661, 669, 672, 673, 682, 684, 692, 696, 697, 702, 704, 708, 714, 720,
    724, 730, 732, 737, 740, 766, 767, 780, 783, 791,
)  # fmt: skip
"""The 159 official train images LibMTL (and so Elich et al.) validate on, sorted: the "val"
list of LibMTL's ``examples/nyu/data_split.json`` (its "train" list is the other 636)."""


# ------------------------------------------------------------------ the files and the split


@dataclass(frozen=True)
class SampleFiles:
    """The four files of one image."""

    image: Path
    label: Path
    depth: Path
    normal: Path

    def all(self) -> tuple[Path, ...]:
        """The four paths."""
        return (self.image, self.label, self.depth, self.normal)


Entry = tuple[str, int]
"""An image: its official set ("train" or "test") and its index in it."""


def find_root(root: str | Path) -> Path:
    """``root``, checked to be a directory with the ``train/`` and ``val/`` folders."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MissingError(
            f"no NYUv2 directory {root}: name the directory holding the preprocessed train/ and "
            "val/ folders of MTAN (the problem option root, or SMTO_NYUV2)"
        )
    missing = [f"{name}/" for name in FOLDERS.values() if not (root / name).is_dir()]
    if missing:
        raise MissingError(
            f"the NYUv2 directory {root} lacks {', '.join(missing)}: the preprocessed NYUv2 of "
            "MTAN has train/ (795 images) and val/ (the 654 test images), each with image/, "
            "label/, depth/ and normal/"
        )
    return root


def libmtl_splits() -> dict[str, list[Entry]]:
    """LibMTL's split: train the 636 official train images not in :data:`LIBMTL_VAL`, val
    those 159, test the 654 official test images (each in index order)."""
    val = set(LIBMTL_VAL)
    return {
        "train": [("train", i) for i in range(OFFICIAL_SIZES["train"]) if i not in val],
        "val": [("train", i) for i in LIBMTL_VAL],
        "test": [("test", i) for i in range(OFFICIAL_SIZES["test"])],
    }


def official_count(root: Path, official: str) -> int:
    """How many images the tree holds of the ``official`` set ("train" or "test"): the
    ``.npy`` files of its ``image/`` folder (numbered 0..n-1 in the layout, as MTAN counts
    them)."""
    return len(list((root / FOLDERS[official] / "image").glob("*.npy")))


def seeded_splits(seed: int, n_train: int, n_test: int) -> dict[str, list[Entry]]:
    """LibMTL's proportions without its list: of the ``n_train`` official train images, 4/5
    (636 of 795) are train and the rest val, in a permutation drawn with ``seed``; the
    ``n_test`` official test images are test."""
    order = np.random.default_rng(seed).permutation(n_train)
    cut = 4 * n_train // 5
    return {
        "train": [("train", int(i)) for i in order[:cut]],
        "val": [("train", int(i)) for i in order[cut:]],
        "test": [("test", i) for i in range(n_test)],
    }


def sample_files(root: Path, entry: Entry) -> SampleFiles:
    """The four files of ``entry``."""
    folder = root / FOLDERS[entry[0]]
    return SampleFiles(*(folder / kind / f"{entry[1]}.npy" for kind in KINDS))


def check_files(root: Path, entries: Sequence[Entry], split: str) -> list[SampleFiles]:
    """The files of ``entries``; one MissingError naming the first missing file (and how many
    are missing) otherwise, before any is read."""
    files = [sample_files(root, e) for e in entries]
    paths.require_files(
        (p for f in files for p in f.all()),
        "NYUv2 file",
        split,
        "the preprocessed NYUv2 of MTAN has <root>/{train,val}/{image,label,depth,normal}/<i>.npy",
    )
    return files


# ------------------------------------------------------------------ reading and the cache


def _read(path: Path, shape: tuple[int, ...], integer_ok: bool = False) -> np.ndarray:
    """The array of ``path``, checked to have ``shape``, a float dtype (or an integer one
    where ``integer_ok``) and finite values."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read the NYUv2 file {path}: {error}") from None
    kinds = "fiu" if integer_ok else "f"
    if not isinstance(array, np.ndarray) or array.dtype.kind not in kinds:
        expected = "a float or integer" if integer_ok else "a float"
        raise DataError(f"{path} is not {expected} array (dtype {getattr(array, 'dtype', '?')})")
    if array.shape != shape:
        raise DataError(f"{path} has shape {array.shape}, expected {shape}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DataError(f"{path} holds NaN or infinite values")
    return array


def read_sample(files: SampleFiles, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """One image's arrays, checked (``shape`` = (width, height)): the image (H, W, 3) float32,
    the labels (H, W) int8 (-1..12), the depth (H, W) float32 (>= 0) and the normals
    (H, W, 3) float32."""
    width, height = shape
    image = _read(files.image, (height, width, 3)).astype(np.float32)
    label = _read(files.label, (height, width), integer_ok=True)
    if not np.array_equal(label, np.round(label)) or label.min() < -1 or label.max() >= CLASSES:
        raise DataError(f"{files.label} holds values other than -1 (unlabelled) and 0..12")
    depth = _read(files.depth, (height, width, 1))[..., 0].astype(np.float32)
    if depth.min() < 0:
        raise DataError(f"{files.depth} holds negative depths (0 marks an invalid pixel)")
    normal = _read(files.normal, (height, width, 3)).astype(np.float32)
    return {"image": image, "label": label.astype(np.int8), "depth": depth, "normal": normal}


def cache_key(files: Sequence[SampleFiles], shape: tuple[int, int]) -> str:
    """What a cached split was built from: the format, the resolution and every source
    file's path below the root and size."""
    listing = [["/".join(p.parts[-3:]), p.stat().st_size] for sample in files for p in sample.all()]
    text = json.dumps([FORMAT_VERSION, list(shape), listing])
    return hashlib.sha256(text.encode()).hexdigest()


def load_split(
    files: Sequence[SampleFiles], shape: tuple[int, int], cache: Path, split: str
) -> dict[str, np.ndarray]:
    """The split's stacked arrays from its cache file in ``cache``, read from the ``.npy``
    files (and cached) when the cache file is missing, stale or corrupt."""
    key = cache_key(files, shape)
    path = cache / f"{split}-{shape[0]}x{shape[1]}-{key[:16]}.npz"
    if path.is_file():
        try:
            return npz_cache.read_verified(path, key, ARRAYS)
        except DataError:
            path.unlink(missing_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for i, sample_files in enumerate(files):  # filled in place: one copy of the split in memory
        for name, array in read_sample(sample_files, shape).items():
            if name not in arrays:
                arrays[name] = np.empty((len(files), *array.shape), array.dtype)
            arrays[name][i] = array
    npz_cache.write_atomic(path, key, arrays)
    return arrays


# ------------------------------------------------------------------ targets and augmentation


@dataclass(frozen=True)
class Augmentation:
    """One sample's draw: MTAN's ``RandomScaleCrop`` (a scale and the crop's top-left corner)
    and a horizontal flip."""

    scale: float
    top: int
    left: int
    flip: bool

    @classmethod
    def draw(cls, generator: torch.Generator, height: int, width: int) -> Augmentation:
        """The crop (:meth:`ScaleCrop.draw <smto.data.scale_crop.ScaleCrop.draw>`), then the
        flip with p = 0.5."""
        crop = ScaleCrop.draw(generator, height, width)
        flip = bool(torch.rand((), generator=generator) < 0.5)
        return cls(crop.scale, crop.top, crop.left, flip)


def scale_crop(maps: dict[str, Tensor], augmentation: Augmentation) -> dict[str, Tensor]:
    """MTAN's ``RandomScaleCrop`` (:class:`~smto.data.scale_crop.ScaleCrop`) of the (C, H, W)
    ``image``, ``normal``, ``depth`` and the (H, W) ``label``: bilinear for the image and the
    normals, nearest for the labels and the depth; the depth divided by the scale."""
    crop = ScaleCrop(augmentation.scale, augmentation.top, augmentation.left)
    return {
        "image": crop.apply(maps["image"], "bilinear"),
        "label": crop.apply(maps["label"][None], "nearest")[0],
        "depth": crop.apply(maps["depth"], "nearest") / augmentation.scale,
        "normal": crop.apply(maps["normal"], "bilinear"),
    }


def normal_target(normal: Tensor) -> Tensor:
    """(3, H, W) normals -> unit vectors where the vector is not 0, NaN (invalid) elsewhere."""
    norm = normal.double().norm(dim=0)
    unit = (normal.double() / norm.clamp(min=1e-300)).float()
    return torch.where(norm > 0, unit, torch.nan)


def make_sample(
    arrays: dict[str, np.ndarray], index: int, augmentation: Augmentation | None = None
) -> dict[str, Tensor]:
    """Sample ``index`` of a split's arrays: the image (3, H, W) and the S (H, W) long, D
    (H, W) and N (3, H, W) targets, after ``augmentation`` where given."""
    maps = {
        "image": torch.from_numpy(arrays["image"][index]).permute(2, 0, 1).contiguous(),
        "label": torch.from_numpy(arrays["label"][index].astype(np.int64)),
        "depth": torch.from_numpy(arrays["depth"][index].copy())[None],
        "normal": torch.from_numpy(arrays["normal"][index]).permute(2, 0, 1).contiguous(),
    }
    if augmentation is not None:
        if augmentation.scale != 1.0:
            maps = scale_crop(maps, augmentation)
        if augmentation.flip:
            maps = {k: v.flip(-1) for k, v in maps.items()}
            maps["normal"] = torch.cat([-maps["normal"][:1], maps["normal"][1:]])
    depth = maps["depth"][0]
    return {
        "image": maps["image"],
        "S": maps["label"],
        "D": torch.where(depth > 0, depth, torch.nan),
        "N": normal_target(maps["normal"]),
    }


class NYUv2Split(torch.utils.data.Dataset):
    """One split's samples as a map-style Dataset (for a DataLoader with workers).

    Set :attr:`epoch_seed` to augment: sample i is then drawn from a generator seeded with
    (epoch_seed, i), the same whichever worker loads it; None (the default) does not augment.
    """

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.epoch_seed: int | None = None

    def __len__(self) -> int:
        return len(self.arrays["image"])

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        augmentation = None
        if self.epoch_seed is not None:
            seed = (self.epoch_seed * 1_000_003 + int(index)) % (2**63 - 1)
            height, width = self.arrays["image"].shape[1:3]
            generator = torch.Generator().manual_seed(seed)
            augmentation = Augmentation.draw(generator, height, width)
        return make_sample(self.arrays, int(index), augmentation)


__all__ = [
    "CLASSES",
    "LIBMTL_VAL",
    "SHAPE",
    "Augmentation",
    "NYUv2Split",
    "SampleFiles",
    "check_files",
    "find_root",
    "libmtl_splits",
    "load_split",
    "make_sample",
    "normal_target",
    "official_count",
    "read_sample",
    "scale_crop",
    "seeded_splits",
]
