"""The original MNIST IDX files: checksums, a validating IDX parser, download from mirrors.

Files are looked up in ``<data dir>/mnist/`` then ``<data dir>/`` (see ``smto.data.paths``
for how the data directory is chosen). Every file is checked against the MD5 of the original
release before it is parsed. A missing file is downloaded from the public mirrors (when
``download=True``) into a writable directory, written atomically and verified.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import struct
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from smto.data import paths
from smto.errors import DataError, MissingError

log = logging.getLogger(__name__)

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"

MNIST_MD5: dict[str, str] = {
    TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
    TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
    TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
}
"""File name -> MD5 of the original release (looked up at call time)."""

MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

SUBDIR = "mnist"
DOWNLOAD_TIMEOUT_S = 60.0

Opener = Callable[..., IO[bytes]]
"""A ``urllib.request.urlopen``-like callable: ``opener(url, timeout=...)`` -> readable file."""

_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_HELP = (
    "Set the SMTO_DATA environment variable (or pass data_dir / --data-dir) to a directory "
    "holding the four MNIST .gz files (directly or in a 'mnist/' subfolder)"
)


class IdxFormatError(DataError):
    """An IDX file whose bytes do not form a valid (complete) IDX array."""


class ChecksumError(DataError):
    """A dataset file whose MD5 differs from the original release."""


class DatasetNotFoundError(MissingError):
    """A dataset file that is neither on disk nor downloadable."""


@dataclass(frozen=True)
class MNIST:
    """The MNIST arrays: images uint8 (N, 28, 28), labels int64 (N,), as numpy arrays."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    files: dict[str, Path] = field(default_factory=dict, compare=False)


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file, validating its header against its size.

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a big-endian
    uint32. The data must hold exactly the product of the dimensions times the item size.
    Returns a writable array in native byte order.
    """
    if len(data) < 4:
        raise IdxFormatError(f"{source}: {len(data)} bytes is too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise IdxFormatError(
            f"{source}: bad IDX magic number {data[:4].hex()} (must start with two zero bytes)"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise IdxFormatError(
            f"{source}: unknown IDX type code 0x{code:02X} "
            f"(valid: {', '.join(f'0x{c:02X}' for c in _IDX_DTYPES)})"
        )
    if ndim == 0:
        raise IdxFormatError(f"{source}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(
            f"{source}: truncated IDX header ({len(data)} bytes, {header} needed for {ndim} dims)"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        kind = "truncated" if found < expected else "has trailing bytes"
        raise IdxFormatError(
            f"{source}: IDX data {kind}: header says shape {tuple(dims)} of {dtype.name} "
            f"({expected} bytes) but {found} bytes follow the header"
        )
    array = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    return array.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def _gunzip(data: bytes, source: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise IdxFormatError(
            f"{source}: not a valid gzip stream ({exc}); the file is truncated or corrupt"
        ) from exc


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, gzip-compressed (detected by its magic bytes) or not."""
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data, str(path))
    return parse_idx(data, str(path))


def md5_bytes(data: bytes) -> str:
    """Hex MD5 of ``data``."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _checksum_error(path: Path, expected: str, actual: str) -> ChecksumError:
    return ChecksumError(
        f"{path}: MD5 checksum mismatch (expected {expected}, got {actual}); the file is "
        f"corrupt or not the original MNIST release. Delete it so that it is downloaded "
        f"again (load with download=True), or point SMTO_DATA / --data-dir to a directory "
        f"holding verified copies."
    )


def _search_dirs(base: Path) -> list[Path]:
    dirs = [base / SUBDIR, base]
    fallback = paths.user_cache_root() / SUBDIR
    if fallback not in dirs:
        dirs.append(fallback)
    return dirs


def _download_dir(base: Path) -> Path | None:
    for candidate in (base / SUBDIR, paths.user_cache_root() / SUBDIR):
        if paths.is_writable_dir(candidate):
            return candidate
    return None


def download_file(
    name: str,
    dest_dir: Path,
    md5: str,
    mirrors: Sequence[str] = MIRRORS,
    opener: Opener | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Download ``name`` from the first mirror that serves it with the right MD5.

    The bytes go to a temporary file in ``dest_dir`` that is renamed to ``dest_dir / name``
    only once verified, so an interrupted download never leaves a partial file under the
    final name. Raises ``DatasetNotFoundError`` listing each mirror's failure.
    """
    open_url = opener if opener is not None else urllib.request.urlopen
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / name
    failures: list[str] = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        log.info("downloading %s", url)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest_dir)
        tmp = Path(tmp_name)
        try:
            digest = hashlib.md5(usedforsecurity=False)
            with os.fdopen(fd, "wb") as out, open_url(url, timeout=timeout) as response:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            actual = digest.hexdigest()
            if actual != md5:
                failures.append(f"{url}: MD5 {actual}, expected {md5}")
                continue
            paths.set_default_mode(tmp)
            os.replace(tmp, target)
            return target
        except (OSError, ValueError, http.client.HTTPException) as exc:
            failures.append(f"{url}: {type(exc).__name__}: {exc}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DatasetNotFoundError(
        f"could not download {name} into {dest_dir}: "
        + "; ".join(failures or ["no mirror given"])
        + f". {_HELP}."
    )


def _locate(
    name: str,
    base: Path,
    download: bool,
    mirrors: Sequence[str],
    opener: Opener | None,
) -> Path:
    searched = _search_dirs(base)
    for directory in searched:
        if (directory / name).is_file():
            return directory / name
    where = ", ".join(str(d) for d in searched)
    if not download:
        raise DatasetNotFoundError(
            f"MNIST file {name} not found (searched {where}) and download=False. "
            f"{_HELP}, or allow downloading."
        )
    dest = _download_dir(base)
    if dest is None:
        raise DatasetNotFoundError(
            f"MNIST file {name} not found (searched {where}) and no writable directory to "
            f"download it into. {_HELP}."
        )
    try:
        return download_file(name, dest, MNIST_MD5[name], mirrors, opener)
    except DatasetNotFoundError as exc:
        raise DatasetNotFoundError(
            f"MNIST file {name} not found (searched {where}); {exc}"
        ) from exc


def _read_verified(path: Path, md5: str) -> np.ndarray:
    data = path.read_bytes()
    actual = md5_bytes(data)
    if actual != md5:
        raise _checksum_error(path, md5, actual)
    return parse_idx(_gunzip(data, str(path)), str(path))


def _check_pair(images: np.ndarray, labels: np.ndarray, img_path: Path, lbl_path: Path) -> None:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise IdxFormatError(
            f"{img_path}: expected uint8 images of shape (N, 28, 28), got "
            f"{images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1 or len(labels) != len(images):
        raise IdxFormatError(
            f"{lbl_path}: expected {len(images)} uint8 labels, got {labels.dtype} {labels.shape}"
        )
    if labels.size and labels.max() > 9:
        raise IdxFormatError(f"{lbl_path}: label {int(labels.max())} outside 0..9")


def load_mnist(
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    *,
    mirrors: Sequence[str] = MIRRORS,
    opener: Opener | None = None,
) -> MNIST:
    """Load the four MNIST files from ``root`` (default: ``paths.data_dir()``), verified.

    Files are searched in ``root/mnist/``, ``root/`` and the user cache's ``mnist/`` (where
    downloads land when ``root`` is read-only). Missing files are downloaded when
    ``download`` is true (``opener`` replaces ``urllib.request.urlopen``, e.g. in tests).
    Raises ``DatasetNotFoundError`` (missing), ``ChecksumError`` (corrupt) or
    ``IdxFormatError`` (valid MD5 table entry but malformed content).
    """
    base = paths.data_dir(root)
    found = {name: _locate(name, base, download, mirrors, opener) for name in MNIST_MD5}
    arrays = {name: _read_verified(path, MNIST_MD5[name]) for name, path in found.items()}
    for img, lbl in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        _check_pair(arrays[img], arrays[lbl], found[img], found[lbl])
    return MNIST(
        train_images=arrays[TRAIN_IMAGES],
        train_labels=arrays[TRAIN_LABELS].astype(np.int64),
        test_images=arrays[TEST_IMAGES],
        test_labels=arrays[TEST_LABELS].astype(np.int64),
        files=found,
    )
