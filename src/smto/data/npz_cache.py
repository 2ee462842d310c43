"""Cache files of derived datasets: NumPy ``.npz`` archives with a key and a content checksum.

A cache file holds named arrays, the key of what was built (the source's checksum, the
build's options, a format version) and a SHA-256 over the arrays. It is written atomically
(a temporary file, then a rename) and verified when read: the key, then the checksum. A
file that fails either, or cannot be read at all, is reported by :func:`read_verified` as a
:class:`~smto.errors.DataError`, so the caller rebuilds it instead of training on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from smto.data import paths
from smto.errors import DataError


def content_checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over each array's name, dtype, shape and bytes, in name order.

    The zip CRC-32 only catches damage; this also catches arrays altered after the file was
    written.
    """
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = arrays[name]
        header = json.dumps([name, array.dtype.str, list(array.shape)])
        digest.update(header.encode() + b"\0")
        digest.update(np.ascontiguousarray(array))
    return digest.hexdigest()


def write_atomic(path: Path, key: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes ``arrays`` with ``key`` and their checksum to ``path``, atomically."""
    members = {"key": np.array(key), **arrays}
    members["checksum"] = np.array(content_checksum(members))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **members)
        paths.set_default_mode(Path(tmp_name))
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def read_verified(path: Path, key: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of the cache file ``path``, verified against ``key`` and the stored
    checksum; DataError saying why the file is not to be used otherwise."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "key" not in z.files or str(z["key"]) != key:
                raise DataError("its key is not the key of the requested build")
            if "checksum" not in z.files:
                raise DataError("it has no content checksum")
            missing = [n for n in names if n not in z.files]
            if missing:
                raise DataError(f"it lacks the arrays {missing}")
            stored = str(z["checksum"])
            arrays = {name: z[name] for name in z.files if name != "checksum"}
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"unreadable ({type(exc).__name__}: {exc})") from None
    if content_checksum(arrays) != stored:
        raise DataError("its content checksum does not match its arrays")
    return {name: arrays[name] for name in names}
