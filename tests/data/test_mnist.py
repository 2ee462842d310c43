"""MNIST IDX files: parser, checksums, missing files, downloads, data/cache directories."""

from __future__ import annotations

import gzip
import io
import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from data.idx_files import flip_byte, idx_bytes, md5_file, write_idx
from smto.data import mnist as mnist_mod
from smto.data import paths
from smto.data.mnist import (
    ChecksumError,
    DatasetNotFoundError,
    IdxFormatError,
    load_mnist,
    parse_idx,
    read_idx,
)

NAMES = (
    mnist_mod.TRAIN_IMAGES,
    mnist_mod.TRAIN_LABELS,
    mnist_mod.TEST_IMAGES,
    mnist_mod.TEST_LABELS,
)


def small_mnist(seed: int = 0, n_train: int = 12, n_test: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        mnist_mod.TRAIN_IMAGES: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        mnist_mod.TRAIN_LABELS: rng.integers(0, 10, n_train, dtype=np.uint8),
        mnist_mod.TEST_IMAGES: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        mnist_mod.TEST_LABELS: rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_small_mnist(directory: Path, monkeypatch, seed: int = 0) -> dict[str, np.ndarray]:
    """Write small valid MNIST-format files and make their MD5s the expected ones."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = small_mnist(seed)
    table = {name: md5_file(write_idx(directory / name, a)) for name, a in arrays.items()}
    monkeypatch.setattr(mnist_mod, "MNIST_MD5", table)
    return arrays


# --- read_idx ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        (np.uint8, (3, 28, 28)),
        (np.int8, (7,)),
        (np.int16, (2, 3)),
        (np.int32, (4, 1, 2)),
        (np.float32, (5, 2)),
        (np.float64, (2, 2, 2, 2)),
    ],
)
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trips(tmp_path, dtype, shape, compress):
    rng = np.random.default_rng(1)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    else:
        array = rng.standard_normal(shape).astype(dtype)
    got = read_idx(write_idx(tmp_path / "a.idx", array, compress=compress))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    assert got.shape == shape
    np.testing.assert_array_equal(got, array)
    got[...] = 0  # the result is a writable array of its own


def test_idx_header_checks():
    good = idx_bytes(np.arange(6, dtype=np.uint8).reshape(2, 3))
    with pytest.raises(IdxFormatError, match="magic"):
        parse_idx(b"\x01" + good[1:], "x.idx")
    with pytest.raises(IdxFormatError, match="type code 0x07"):
        parse_idx(good[:2] + b"\x07" + good[3:], "x.idx")
    with pytest.raises(IdxFormatError, match="0 dimensions"):
        parse_idx(good[:3] + b"\x00", "x.idx")
    with pytest.raises(IdxFormatError, match="truncated IDX header"):
        parse_idx(good[:9], "x.idx")
    with pytest.raises(IdxFormatError, match=r"x\.idx: IDX data truncated.*\(2, 3\)"):
        parse_idx(good[:-1], "x.idx")
    with pytest.raises(IdxFormatError, match="trailing bytes"):
        parse_idx(good + b"\x00", "x.idx")
    with pytest.raises(IdxFormatError, match="too short"):
        parse_idx(b"\x00\x00", "x.idx")


def test_truncated_gzip_is_a_clear_error(tmp_path):
    path = write_idx(tmp_path / "t.gz", np.zeros((50, 28, 28), np.uint8) + 7)
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(IdxFormatError, match=r"t\.gz: not a valid gzip stream"):
        read_idx(path)


# --- load_mnist: local files, checksums, missing files ----------------------------------


@pytest.mark.parametrize("subdir", ["mnist", ""])
def test_load_mnist_reads_verified_files(tmp_path, monkeypatch, subdir):
    arrays = write_small_mnist(tmp_path / "data" / subdir, monkeypatch)
    data = load_mnist(tmp_path / "data", download=False)
    np.testing.assert_array_equal(data.train_images, arrays[mnist_mod.TRAIN_IMAGES])
    np.testing.assert_array_equal(data.test_images, arrays[mnist_mod.TEST_IMAGES])
    np.testing.assert_array_equal(data.train_labels, arrays[mnist_mod.TRAIN_LABELS])
    np.testing.assert_array_equal(data.test_labels, arrays[mnist_mod.TEST_LABELS])
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int64
    assert data.files[mnist_mod.TEST_LABELS] == tmp_path / "data" / subdir / mnist_mod.TEST_LABELS


def test_load_mnist_uses_smto_data(tmp_path, monkeypatch):
    arrays = write_small_mnist(tmp_path / "env" / "mnist", monkeypatch, seed=3)
    monkeypatch.setenv("SMTO_DATA", str(tmp_path / "env"))
    data = load_mnist(download=False)
    np.testing.assert_array_equal(data.train_images, arrays[mnist_mod.TRAIN_IMAGES])


@pytest.mark.parametrize("name", NAMES)
def test_corrupted_file_is_rejected(tmp_path, monkeypatch, name):
    write_small_mnist(tmp_path / "mnist", monkeypatch)
    path = tmp_path / "mnist" / name
    expected = mnist_mod.MNIST_MD5[name]
    flip_byte(path, len(path.read_bytes()) // 2)
    actual = md5_file(path)
    assert actual != expected
    with pytest.raises(ChecksumError) as err:
        load_mnist(tmp_path, download=False)
    message = str(err.value)
    assert str(path) in message
    assert expected in message and actual in message
    assert "Delete it" in message and "SMTO_DATA" in message


def test_real_checksums_reject_other_files(tmp_path):
    """With the real MD5 table, a valid IDX file that is not the MNIST release is refused."""
    directory = tmp_path / "mnist"
    directory.mkdir()
    for name, array in small_mnist().items():
        write_idx(directory / name, array)
    with pytest.raises(ChecksumError, match="expected f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        load_mnist(tmp_path, download=False)


def test_bad_label_values_are_rejected(tmp_path, monkeypatch):
    arrays = small_mnist()
    arrays[mnist_mod.TEST_LABELS][2] = 11
    directory = tmp_path / "mnist"
    directory.mkdir()
    table = {name: md5_file(write_idx(directory / name, a)) for name, a in arrays.items()}
    monkeypatch.setattr(mnist_mod, "MNIST_MD5", table)
    with pytest.raises(IdxFormatError, match=r"label 11 outside 0\.\.9"):
        load_mnist(tmp_path, download=False)


def test_missing_file_without_download(tmp_path, monkeypatch):
    write_small_mnist(tmp_path / "mnist", monkeypatch)
    (tmp_path / "mnist" / mnist_mod.TEST_IMAGES).unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        load_mnist(tmp_path, download=False)
    message = str(err.value)
    assert mnist_mod.TEST_IMAGES in message
    assert str(tmp_path / "mnist") in message
    assert "SMTO_DATA" in message and "download=False" in message


# --- downloads through a fake opener ------------------------------------------------------


class FakeWeb:
    """A ``urlopen`` stand-in serving bytes per URL; other URLs fail like a dead mirror."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[str] = []

    def __call__(self, url: str, timeout: float | None = None) -> io.BytesIO:
        self.requests.append(url)
        if url not in self.files:
            raise urllib.error.URLError(f"no route to {url}")
        return io.BytesIO(self.files[url])


def served_mnist(monkeypatch, mirror: str, seed: int = 0):
    arrays = small_mnist(seed)
    blobs = {name: gzip.compress(idx_bytes(a)) for name, a in arrays.items()}
    monkeypatch.setattr(
        mnist_mod, "MNIST_MD5", {name: mnist_mod.md5_bytes(b) for name, b in blobs.items()}
    )
    return arrays, {mirror + name: blob for name, blob in blobs.items()}


def test_download_writes_verifies_and_loads(tmp_path, monkeypatch):
    arrays, files = served_mnist(monkeypatch, "https://second.example/mnist/")
    web = FakeWeb(files)
    mirrors = ("https://first.example/", "https://second.example/mnist")
    data = load_mnist(tmp_path / "root", download=True, mirrors=mirrors, opener=web)
    np.testing.assert_array_equal(data.train_images, arrays[mnist_mod.TRAIN_IMAGES])
    np.testing.assert_array_equal(data.test_labels, arrays[mnist_mod.TEST_LABELS])
    target = tmp_path / "root" / "mnist"
    assert sorted(p.name for p in target.iterdir()) == sorted(NAMES)
    assert all(md5_file(target / n) == mnist_mod.MNIST_MD5[n] for n in NAMES)
    assert len(web.requests) == 8  # the dead first mirror, then the second, per file
    again = FakeWeb({})
    load_mnist(tmp_path / "root", download=True, mirrors=mirrors, opener=again)
    assert again.requests == []  # verified files on disk are not downloaded again


def test_download_skips_a_mirror_serving_wrong_bytes(tmp_path, monkeypatch):
    arrays, files = served_mnist(monkeypatch, "https://good.example/")
    bad = {url.replace("good", "bad"): b"garbage" for url in files}
    web = FakeWeb({**files, **bad})
    data = load_mnist(
        tmp_path, mirrors=("https://bad.example/", "https://good.example/"), opener=web
    )
    np.testing.assert_array_equal(data.train_labels, arrays[mnist_mod.TRAIN_LABELS])


def test_download_failure_is_clear_and_leaves_no_partial_file(tmp_path, monkeypatch):
    _, files = served_mnist(monkeypatch, "https://good.example/")
    wrong = {url.replace("good", "bad"): b"\x1f\x8bnot mnist" for url in files}
    with pytest.raises(DatasetNotFoundError) as err:
        load_mnist(
            tmp_path,
            mirrors=("https://bad.example/", "https://down.example/"),
            opener=FakeWeb(wrong),
        )
    message = str(err.value)
    assert mnist_mod.TRAIN_IMAGES in message
    assert "https://bad.example/train-images-idx3-ubyte.gz: MD5" in message
    assert "https://down.example/train-images-idx3-ubyte.gz: URLError" in message
    assert "SMTO_DATA" in message
    assert list((tmp_path / "mnist").iterdir()) == []


def test_download_into_user_cache_when_data_dir_is_read_only(tmp_path, monkeypatch):
    arrays, files = served_mnist(monkeypatch, "https://m.example/")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o555)
    try:
        data = load_mnist(shared, mirrors=("https://m.example/",), opener=FakeWeb(files))
        assert list(shared.iterdir()) == []
        fallback = tmp_path / "xdg" / "smto" / "mnist"
        assert sorted(p.name for p in fallback.iterdir()) == sorted(NAMES)
        np.testing.assert_array_equal(data.test_images, arrays[mnist_mod.TEST_IMAGES])
        offline = load_mnist(shared, download=False)  # found again in the user cache
        np.testing.assert_array_equal(offline.test_images, arrays[mnist_mod.TEST_IMAGES])
    finally:
        shared.chmod(0o755)


# --- data and cache directories ---------------------------------------------------------


def test_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("SMTO_DATA", raising=False)
    assert paths.data_dir() == tmp_path / "xdg" / "smto"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert paths.data_dir() == Path.home() / ".cache" / "smto"
    monkeypatch.setenv("SMTO_DATA", str(tmp_path / "env"))
    assert paths.data_dir() == tmp_path / "env"
    assert paths.data_dir(tmp_path / "opt") == tmp_path / "opt"
    assert paths.data_dir(str(tmp_path / "opt")) == tmp_path / "opt"


def test_cache_dir_precedence_and_read_only_fallback(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    assert paths.cache_dir(data=data) == data / "cache"
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o555)
    try:
        assert paths.cache_dir(data=shared) == tmp_path / "xdg" / "smto" / "cache"
        assert not (shared / "cache").exists()
    finally:
        shared.chmod(0o755)
    monkeypatch.setenv("SMTO_CACHE", str(tmp_path / "c_env"))
    assert paths.cache_dir(data=data) == tmp_path / "c_env"
    assert paths.cache_dir(tmp_path / "c_opt", data=data) == tmp_path / "c_opt"
    assert (tmp_path / "c_opt").is_dir()


# --- the real files -----------------------------------------------------------------------


def real_data_root() -> Path:
    root = os.environ.get("SMTO_DATA")
    if not root or not all(
        (Path(root) / d / n).is_file() for d in ("mnist",) for n in mnist_mod.MNIST_MD5
    ):
        pytest.skip(
            "real MNIST not available: set SMTO_DATA to a directory holding mnist/ with the "
            "four MNIST .gz files (e.g. SMTO_DATA=../shared/data)"
        )
    return Path(root)


def test_real_mnist():
    data = load_mnist(real_data_root(), download=False)
    assert data.train_images.shape == (60_000, 28, 28) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (10_000, 28, 28) and data.test_images.dtype == np.uint8
    assert data.train_labels.shape == (60_000,) and data.train_labels.dtype == np.int64
    assert data.test_labels.shape == (10_000,) and data.test_labels.dtype == np.int64
    # well-known facts of the release: the first training digit is a 5, the first test a 7,
    # and the class counts of the training set
    assert data.train_labels[0] == 5 and data.test_labels[0] == 7
    counts = np.bincount(data.train_labels, minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert data.train_images.max() == 255 and data.train_images.min() == 0
