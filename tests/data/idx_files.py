"""Test helpers: write IDX files (the MNIST format) independently of smto's parser."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np

TYPE_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``: 0, 0, type code, ndim, big-endian dims, big-endian data."""
    code = TYPE_CODES[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed unless ``compress`` is false)."""
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data, compresslevel=1) if compress else data)
    return path


def md5_file(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def flip_byte(path: Path, offset: int) -> None:
    """XOR one byte of ``path`` (negative offsets count from the end)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))
