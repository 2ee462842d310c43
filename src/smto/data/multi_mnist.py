"""Multi-MNIST as in the main study (PROTOCOL.md "Multi-MNIST"), built vectorized and cached.

A composite puts the left digit at rows/cols [0:28] and the right digit at [6:34] of a
36x36 canvas (pixelwise max where they overlap) and resizes the canvas to 28x28 with
nearest-neighbour resampling.

Nearest-neighbour convention: output pixel i takes canvas pixel floor((i + 0.5) * 36 / 28)
(the pixel-centre convention of PIL's ``Image.NEAREST``), i.e. rows/cols
0, 1, 3, 4, 5, 7, 8, 9, 10, 12, ... 34, 35. The study's loader
(Gabriel-SGama/UnitScal_vs_SMTOs, ``supervised_experiments/loaders/multi_mnist_loader.py``)
builds the canvas as a float64 array and calls
``Image.fromarray(canvas).resize((28, 28), resample=Image.NEAREST)``: a mode "F" image, so
values are kept exactly (no rescaling) and PIL's centre convention applies. (Sener & Koltun's
ancestor used ``scipy.misc.imresize(..., interp='nearest')``, which also resizes with PIL
NEAREST but first byte-scales a float canvas to 0..255; the study dropped that.) OpenCV's
``INTER_NEAREST`` convention floor(i * 36 / 28) would select different rows and is not used.

Splits: train pairs MNIST-train images 0..49,999 (left) with a right digit from the same
range, val uses 50,000..59,999, test the 10,000 MNIST-test images. Right-digit indices are
either drawn with a seeded numpy Generator (``right_indices="seed"``) or read from the study's
files (``right_indices="original"``; ``<data dir>/seed_splits/multi_mnist/``). Index values
are absolute indices into the MNIST-train (train, val) or MNIST-test (test) arrays.

Images and reconstruction targets are kept as uint8; ``normalize`` turns them into the
float32 inputs of the study (``ToTensor`` then ``Normalize(0.1307, 0.3081)``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from smto.data import mnist as mnist_mod
from smto.data import npz_cache, paths
from smto.errors import ConfigError, DataError, MissingError

log = logging.getLogger(__name__)

MEAN = 0.1307
STD = 0.3081

DIGIT = 28
CANVAS = 36
RIGHT_OFFSET = 6
OUT = 28

FORMAT_VERSION = 1
SPLIT_SUBDIR = Path("seed_splits") / "multi_mnist"

SPLITS: dict[str, tuple[str, int, int]] = {
    "train": ("train", 0, 50_000),
    "val": ("train", 50_000, 60_000),
    "test": ("test", 0, 10_000),
}
"""Split -> (MNIST source set, first left index, end of the index range)."""

_SOURCE_SIZES = {"train": 60_000, "test": 10_000}

_BUILT_PARTS = ("images", "left_index", "right_index")
_MEMBERS = (
    "key",
    *(f"{name}_source{suffix}" for name in _SOURCE_SIZES for suffix in ("", "_labels")),
    *(f"{split}_{part}" for split in SPLITS for part in _BUILT_PARTS),
)
"""The arrays of a cache file besides its checksum: the key, the MNIST sources, the splits."""


@dataclass(frozen=True)
class MultiMNISTSplit:
    """One Multi-MNIST split as tensors (N = number of composites).

    ``images`` uint8 (N, 28, 28) composites; ``left`` / ``right`` uint8 (N, 28, 28) the
    original digits (reconstruction targets RL / RR); ``left_labels`` / ``right_labels``
    int64 (N,) (targets CL / CR); ``left_index`` / ``right_index`` int64 (N,) the digits'
    indices in their MNIST source set.
    """

    images: Tensor
    left: Tensor
    right: Tensor
    left_labels: Tensor
    right_labels: Tensor
    left_index: Tensor
    right_index: Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])


def normalize(images: Tensor) -> Tensor:
    """uint8 pixels (0..255) -> float32 ``(x / 255 - 0.1307) / 0.3081``, as the study does."""
    return images.to(torch.float32).div(255.0).sub(MEAN).div(STD)


def nearest_indices(in_size: int = CANVAS, out_size: int = OUT) -> np.ndarray:
    """Source index of each output pixel for PIL-style nearest resizing: floor((i+.5)*in/out)."""
    i = np.arange(out_size, dtype=np.int64)
    return ((2 * i + 1) * in_size) // (2 * out_size)


def _as_index(positions: np.ndarray) -> slice | np.ndarray:
    """A slice where the positions are contiguous (cheaper than fancy indexing)."""
    if positions.size and np.all(np.diff(positions) == 1):
        return slice(int(positions[0]), int(positions[-1]) + 1)
    return positions


def compose(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Composites of digit pairs: uint8 (N, 28, 28) x 2 -> uint8 (N, 28, 28).

    Equivalent to filling the 36x36 canvas (left at [0:28], right at [6:34], max where
    they overlap) and picking rows/cols ``nearest_indices()``, without materializing the
    canvas: each output pixel reads the left and/or right digit pixel under it directly.
    """
    left = np.asarray(left)
    right = np.asarray(right)
    if left.shape != right.shape or left.shape[-2:] != (DIGIT, DIGIT):
        raise ValueError(
            f"left and right must both have shape (N, {DIGIT}, {DIGIT}); "
            f"got {left.shape} and {right.shape}"
        )
    if left.dtype != np.uint8 or right.dtype != np.uint8:
        raise ValueError(f"digits must be uint8, got {left.dtype} and {right.dtype}")
    src = nearest_indices()
    out = np.zeros((*left.shape[:-2], OUT, OUT), dtype=np.uint8)

    l_pos = np.flatnonzero(src < DIGIT)
    l_src = src[l_pos]
    r_pos = np.flatnonzero((src >= RIGHT_OFFSET) & (src < RIGHT_OFFSET + DIGIT))
    r_src = src[r_pos] - RIGHT_OFFSET

    lp, rp = _as_index(l_pos), _as_index(r_pos)
    left_part = left.take(l_src, axis=-2).take(l_src, axis=-1)
    right_part = right.take(r_src, axis=-2).take(r_src, axis=-1)
    if isinstance(lp, slice) and isinstance(rp, slice):
        out[..., lp, lp] = left_part
        np.maximum(out[..., rp, rp], right_part, out=out[..., rp, rp])
    else:
        out[..., l_pos[:, None], l_pos[None, :]] = left_part
        region = out[..., r_pos[:, None], r_pos[None, :]]
        out[..., r_pos[:, None], r_pos[None, :]] = np.maximum(region, right_part)
    return out


def seeded_right_indices(seed: int = 0) -> dict[str, np.ndarray]:
    """Right-digit indices drawn uniformly from each split's range.

    One ``np.random.default_rng(seed)`` draws train, then val, then test.
    """
    rng = np.random.default_rng(seed)
    return {
        split: rng.integers(start, stop, size=stop - start, dtype=np.int64)
        for split, (_, start, stop) in SPLITS.items()
    }


def _split_files(split_dir: Path) -> dict[str, Path]:
    return {split: split_dir / f"{split}_right_idx.txt" for split in SPLITS}


def _read_split_bytes(split_dir: Path) -> dict[str, bytes]:
    files = _split_files(split_dir)
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise MissingError(
            f"original Multi-MNIST right-index files not found: {', '.join(missing)}. "
            f"Set SMTO_DATA (or data_dir) to a directory holding {SPLIT_SUBDIR}/, pass "
            f"split_dir, or use right_indices='seed'."
        )
    return {split: path.read_bytes() for split, path in files.items()}


def parse_right_indices(raw: Mapping[str, bytes], split_dir: Path) -> dict[str, np.ndarray]:
    """Parse the study's ``{split}_right_idx.txt`` contents; keep the first N of each.

    The val file holds 60,000 lines (the original drew ``size=end`` indices); like the
    original, only the first 10,000 are used. Values must lie in the split's range.
    """
    out: dict[str, np.ndarray] = {}
    for split, (_, start, stop) in SPLITS.items():
        path = split_dir / f"{split}_right_idx.txt"
        tokens = raw[split].split()
        n = stop - start
        if len(tokens) < n:
            raise DataError(f"{path}: {len(tokens)} indices, at least {n} needed")
        try:
            values = np.array([int(t) for t in tokens[:n]], dtype=np.int64)
        except ValueError as exc:
            raise DataError(f"{path}: not a file of integers ({exc})") from exc
        bad = np.flatnonzero((values < start) | (values >= stop))
        if bad.size:
            line = int(bad[0])
            raise DataError(
                f"{path}: line {line + 1} holds {int(values[line])}, outside the {split} "
                f"range [{start}, {stop}); {bad.size} values out of range"
            )
        out[split] = values
    return out


def build_arrays(
    source: mnist_mod.MNIST, right: Mapping[str, np.ndarray]
) -> dict[str, dict[str, np.ndarray]]:
    """Composites and indices of every split from MNIST and the right-digit indices."""
    images = {"train": source.train_images, "test": source.test_images}
    for name, size in _SOURCE_SIZES.items():
        if len(images[name]) != size:
            raise DataError(
                f"Multi-MNIST needs the full MNIST-{name} set ({size} images), "
                f"got {len(images[name])}"
            )
    built: dict[str, dict[str, np.ndarray]] = {}
    for split, (src, start, stop) in SPLITS.items():
        left_index = np.arange(start, stop, dtype=np.int64)
        right_index = np.asarray(right[split], dtype=np.int64)
        built[split] = {
            "images": compose(images[src][left_index], images[src][right_index]),
            "left_index": left_index,
            "right_index": right_index,
        }
    return built


def _cache_key(mode: str, seed: int | None, split_hash: str | None) -> str:
    params = {
        "format": FORMAT_VERSION,
        "mode": mode,
        "seed": seed,
        "split_files_sha256": split_hash,
        "mnist_md5": dict(sorted(mnist_mod.MNIST_MD5.items())),
        "resize": "pil-nearest-centre",
    }
    blob = json.dumps(params, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def _cache_members(
    source: mnist_mod.MNIST, built: Mapping[str, Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """The arrays stored in a cache file, by member name (besides the key and checksum)."""
    arrays = {
        "train_source": source.train_images,
        "train_source_labels": source.train_labels,
        "test_source": source.test_images,
        "test_source_labels": source.test_labels,
    }
    for split, parts in built.items():
        for name, value in parts.items():
            arrays[f"{split}_{name}"] = value
    return arrays


def _save_cache(path: Path, key: str, source: mnist_mod.MNIST, built: dict) -> None:
    npz_cache.write_atomic(path, key, _cache_members(source, built))


def _check_array(name: str, array: np.ndarray, shape: tuple[int, ...], dtype: type) -> None:
    if array.shape != shape or array.dtype != dtype:
        raise DataError(
            f"{name} is {array.dtype} {array.shape}, expected {np.dtype(dtype)} {shape}"
        )


def _check_members(arrays: Mapping[str, np.ndarray]) -> None:
    """Shapes, dtypes and value ranges of the cached arrays (a forged checksum aside)."""
    for name, size in _SOURCE_SIZES.items():
        _check_array(f"{name}_source", arrays[f"{name}_source"], (size, DIGIT, DIGIT), np.uint8)
        labels = arrays[f"{name}_source_labels"]
        _check_array(f"{name}_source_labels", labels, (size,), np.int64)
        if labels.min() < 0 or labels.max() > 9:
            raise DataError(f"{name}_source_labels outside 0..9")
    for split, (_, start, stop) in SPLITS.items():
        n = stop - start
        _check_array(f"{split}_images", arrays[f"{split}_images"], (n, OUT, OUT), np.uint8)
        for part in ("left_index", "right_index"):
            idx = arrays[f"{split}_{part}"]
            _check_array(f"{split}_{part}", idx, (n,), np.int64)
            if idx.min() < start or idx.max() >= stop:
                raise DataError(f"{split}_{part} outside [{start}, {stop})")


def _read_cache(path: Path, key: str) -> dict[str, np.ndarray]:
    """The verified arrays of a cache file; DataError says why one is not to be used.

    The zip members' CRC-32 is verified as they are read (a flipped byte is an error), then
    the stored key, the content checksum and the arrays' shapes, dtypes and ranges.
    """
    with np.load(path, allow_pickle=False) as z:
        if str(z["key"]) != key:
            raise DataError("its key is not the key of the requested set")
        if "checksum" not in z.files:
            raise DataError("it has no content checksum (written by an older smto)")
        stored = str(z["checksum"])
        arrays = {name: z[name] for name in _MEMBERS}
    if npz_cache.content_checksum(arrays) != stored:
        raise DataError(
            "its content checksum does not match its arrays (altered after it was written)"
        )
    _check_members(arrays)
    return arrays


def _load_cache(path: Path, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
    """The cached sources and built splits, or None (with a warning naming the file and why)
    when the file is absent, unreadable, of another format or fails verification."""
    if not path.is_file():
        return None
    try:
        arrays = _read_cache(path, key)
    except Exception as exc:
        reason = (
            str(exc) if isinstance(exc, DataError) else f"unreadable ({type(exc).__name__}: {exc})"
        )
        warnings.warn(
            f"ignoring Multi-MNIST cache {path}: {reason}; rebuilding it",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    sources = {name: arrays[f"{name}_source"] for name in _SOURCE_SIZES}
    labels = {f"{name}_labels": arrays[f"{name}_source_labels"] for name in _SOURCE_SIZES}
    built = {split: {part: arrays[f"{split}_{part}"] for part in _BUILT_PARTS} for split in SPLITS}
    return {**sources, **labels}, built


def _to_splits(
    sources: Mapping[str, np.ndarray], built: Mapping[str, Mapping[str, np.ndarray]]
) -> dict[str, MultiMNISTSplit]:
    out = {}
    for split, (src, _, _) in SPLITS.items():
        parts = built[split]
        li, ri = parts["left_index"], parts["right_index"]
        images, labels = sources[src], sources[f"{src}_labels"]
        out[split] = MultiMNISTSplit(
            images=torch.from_numpy(np.ascontiguousarray(parts["images"])),
            left=torch.from_numpy(images[li]),
            right=torch.from_numpy(images[ri]),
            left_labels=torch.from_numpy(labels[li]),
            right_labels=torch.from_numpy(labels[ri]),
            left_index=torch.from_numpy(np.ascontiguousarray(li)),
            right_index=torch.from_numpy(np.ascontiguousarray(ri)),
        )
    return out


def _cache_file(
    key: str,
    cache_dir: str | os.PathLike[str] | None,
    data_dir: str | os.PathLike[str] | None,
) -> Path:
    return paths.cache_dir(cache_dir, data_dir) / "multi_mnist" / f"multi_mnist-{key[:20]}.npz"


def load_multi_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    right_indices: Literal["seed", "original"] = "seed",
    seed: int = 0,
    split_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> dict[str, MultiMNISTSplit]:
    """The train / val / test Multi-MNIST splits, from the cache or built from MNIST.

    ``right_indices="seed"`` draws right digits with ``seed``; ``"original"`` reads the
    study's files from ``split_dir`` (default ``<data dir>/seed_splits/multi_mnist``).
    The built set is cached in ``cache_dir`` (default ``paths.cache_dir``) under a key of
    the mode, the seed, the split files' SHA-256, the MNIST checksums and a format version,
    with a SHA-256 of its arrays; a cache file that fails to load, lacks that checksum or
    does not match it is rebuilt, with a warning naming it.
    """
    if right_indices not in ("seed", "original"):
        raise ConfigError(f"right_indices must be 'seed' or 'original', got {right_indices!r}")
    base = paths.data_dir(data_dir)
    sdir = Path(split_dir).expanduser() if split_dir is not None else base / SPLIT_SUBDIR
    split_raw: dict[str, bytes] | None = None
    split_hash: str | None = None
    if right_indices == "original":
        split_raw = _read_split_bytes(sdir)
        digest = hashlib.sha256()
        for split in SPLITS:
            digest.update(split.encode() + b"\0" + split_raw[split] + b"\0")
        split_hash = digest.hexdigest()
    key = _cache_key(right_indices, seed if right_indices == "seed" else None, split_hash)

    path: Path | None = None
    if use_cache:
        path = _cache_file(key, cache_dir, data_dir)
        cached = _load_cache(path, key)
        if cached is not None:
            log.debug("Multi-MNIST from cache %s", path)
            return _to_splits(*cached)

    if split_raw is not None:
        right = parse_right_indices(split_raw, sdir)
    else:
        right = seeded_right_indices(seed)
    source = mnist_mod.load_mnist(base, download=download)
    built = build_arrays(source, right)
    if path is not None:
        try:
            _save_cache(path, key, source, built)
        except OSError as exc:
            warnings.warn(f"could not write Multi-MNIST cache {path}: {exc}", stacklevel=2)
    sources = {
        "train": source.train_images,
        "test": source.test_images,
        "train_labels": source.train_labels,
        "test_labels": source.test_labels,
    }
    return _to_splits(sources, built)
