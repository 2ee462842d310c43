"""Multi-MNIST: composites against a hand-computed canvas, splits, the original pairing, cache."""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from data.idx_files import flip_byte
from smto.data import mnist as mnist_mod
from smto.data import multi_mnist as mm
from smto.data.multi_mnist import compose, load_multi_mnist, normalize
from smto.errors import ConfigError, DataError, MissingError

SIZES = {"train": 50_000, "val": 10_000, "test": 10_000}
LEFT_RANGES = {"train": (0, 50_000), "val": (50_000, 60_000), "test": (0, 10_000)}


# --- the composite, by hand -------------------------------------------------------------


def reference_composite(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """PROTOCOL.md with explicit loops: a 36x36 canvas, left at [0:28], right at [6:34], max
    where both cover a pixel, then nearest resize to 28x28 sampling pixel centres (PIL's
    convention): output i reads canvas floor((i + 1/2) * 36 / 28)."""
    canvas = [[0] * 36 for _ in range(36)]
    for r in range(28):
        for c in range(28):
            canvas[r][c] = int(left[r, c])
    for r in range(28):
        for c in range(28):
            canvas[r + 6][c + 6] = max(canvas[r + 6][c + 6], int(right[r, c]))
    src = [math.floor((Fraction(i) + Fraction(1, 2)) * Fraction(36, 28)) for i in range(28)]
    out = np.zeros((28, 28), np.uint8)
    for i in range(28):
        for j in range(28):
            out[i, j] = canvas[src[i]][src[j]]
    return out


def synthetic_pairs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    left = rng.integers(1, 256, (6, 28, 28), dtype=np.uint8)
    right = rng.integers(1, 256, (6, 28, 28), dtype=np.uint8)
    # distinct values per position make any wrong row/column pick visible
    grid = (np.arange(28)[:, None] * 28 + np.arange(28)[None, :]) % 127
    left[0] = 2 * grid.astype(np.uint8)  # even values 0..252
    right[0] = (2 * grid + 1).astype(np.uint8)  # odd values: never equal to the left's
    right[1] = 0  # composite = resampled left only
    left[2] = 0  # composite = resampled right only
    left[3], right[3] = 200, 100  # overlap keeps the left (max)
    left[4], right[4] = 100, 200  # overlap keeps the right (max)
    return left, right


def test_composite_equals_hand_computed_canvas():
    left, right = synthetic_pairs()
    got = compose(left, right)
    assert got.shape == (6, 28, 28) and got.dtype == np.uint8
    for k in range(len(left)):
        np.testing.assert_array_equal(got[k], reference_composite(left[k], right[k]), str(k))
    # a few facts visible directly: rows/cols 26.. read canvas 34, 35 (outside both digits)
    assert (got[:, 26:, :] == 0).all() and (got[:, :, 26:] == 0).all()
    assert got[3, 10, 10] == 200 and got[4, 10, 10] == 200 and got[4, 0, 0] == 100
    assert got[2, 0, 0] == 0 and got[1, 0, 0] == left[1, 0, 0]


def test_composite_matches_pil_as_the_study_calls_it():
    """The study: float64 canvas -> Image.fromarray (mode F) -> resize((28,28), NEAREST)."""
    image_mod = pytest.importorskip("PIL.Image")
    left, right = synthetic_pairs()
    got = compose(left, right)
    for k in range(len(left)):
        lim, rim = left[k], right[k]
        canvas = np.zeros((36, 36))
        canvas[0:28, 0:28] = lim
        canvas[6:34, 6:34] = rim
        canvas[6:28, 6:28] = np.maximum(lim[6:28, 6:28], rim[0:22, 0:22])
        pil = image_mod.fromarray(canvas).resize((28, 28), resample=image_mod.NEAREST)
        np.testing.assert_array_equal(got[k], np.asarray(pil).astype(np.uint8))


def test_compose_rejects_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        compose(np.zeros((2, 28, 28), np.uint8), np.zeros((2, 27, 28), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        compose(np.zeros((2, 28, 28)), np.zeros((2, 28, 28)))


def test_normalize_matches_totensor_then_normalize():
    x = torch.tensor([[0, 1, 128, 255]], dtype=torch.uint8)
    expected = (x.double() / 255.0 - 0.1307) / 0.3081
    got = normalize(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-6)


# --- right indices: seeded and from the study's files -------------------------------------


def test_seeded_right_indices_are_in_range_and_reproducible():
    a, b, c = mm.seeded_right_indices(0), mm.seeded_right_indices(0), mm.seeded_right_indices(1)
    for split, (start, stop) in LEFT_RANGES.items():
        assert a[split].shape == (SIZES[split],) and a[split].dtype == np.int64
        assert a[split].min() >= start and a[split].max() < stop
        assert a[split].max() - a[split].min() > 0.99 * (stop - start)  # spans the range
        np.testing.assert_array_equal(a[split], b[split])
        assert (a[split] != c[split]).mean() > 0.99


def write_split_files(directory: Path, val_lines: int = 60_000, seed: int = 0) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    values = {}
    for split, (start, stop) in LEFT_RANGES.items():
        n = val_lines if split == "val" else stop - start
        values[split] = rng.integers(start, stop, n)
        (directory / f"{split}_right_idx.txt").write_text("".join(f"{v}\n" for v in values[split]))
    return values


def test_split_files_parse_and_val_uses_first_lines(tmp_path):
    values = write_split_files(tmp_path)
    raw = mm._read_split_bytes(tmp_path)
    parsed = mm.parse_right_indices(raw, tmp_path)
    for split, n in SIZES.items():
        np.testing.assert_array_equal(parsed[split], values[split][:n])


def test_split_file_errors(tmp_path):
    write_split_files(tmp_path)
    raw = mm._read_split_bytes(tmp_path)
    lines = raw["val"].decode().split("\n")
    lines[41] = "123"  # a train-range index in the val file
    bad = {**raw, "val": "\n".join(lines).encode()}
    with pytest.raises(DataError, match=r"val_right_idx\.txt: line 42 holds 123, outside"):
        mm.parse_right_indices(bad, tmp_path)
    short = {**raw, "test": b"1\n2\n"}
    with pytest.raises(DataError, match=r"test_right_idx\.txt: 2 indices, at least 10000"):
        mm.parse_right_indices(short, tmp_path)
    words = {**raw, "train": b"x\n" * 50_000}
    with pytest.raises(DataError, match="not a file of integers"):
        mm.parse_right_indices(words, tmp_path)
    (tmp_path / "test_right_idx.txt").unlink()
    with pytest.raises(MissingError, match=r"test_right_idx\.txt.*right_indices='seed'"):
        load_multi_mnist(tmp_path, right_indices="original", split_dir=tmp_path)


def test_unknown_mode_is_rejected():
    with pytest.raises(ConfigError, match="right_indices must be"):
        load_multi_mnist(right_indices="random")  # type: ignore[arg-type]


def test_partial_mnist_is_a_data_error(fake_source):
    short = mnist_mod.MNIST(
        fake_source.train_images[:100],
        fake_source.train_labels[:100],
        fake_source.test_images,
        fake_source.test_labels,
    )
    with pytest.raises(DataError, match=r"full MNIST-train set \(60000 images\), got 100"):
        mm.build_arrays(short, mm.seeded_right_indices(0))


# --- the cache (in-memory MNIST stand-in, so no real data is needed) ----------------------


def assert_same_splits(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for split in a:
        for field in ("images", "left", "right", "left_labels", "right_labels"):
            assert torch.equal(getattr(a[split], field), getattr(b[split], field)), field
        for field in ("left_index", "right_index"):
            assert torch.equal(getattr(a[split], field), getattr(b[split], field)), field


def test_splits_from_fake_source(tmp_path, counted_source, fake_source):
    splits = load_multi_mnist(tmp_path, seed=3, cache_dir=tmp_path / "cache")
    right = mm.seeded_right_indices(3)
    for split, (start, stop) in LEFT_RANGES.items():
        s = splits[split]
        assert len(s) == SIZES[split]
        src = fake_source.test_images if split == "test" else fake_source.train_images
        lab = fake_source.test_labels if split == "test" else fake_source.train_labels
        assert torch.equal(s.left_index, torch.arange(start, stop))
        np.testing.assert_array_equal(s.right_index.numpy(), right[split])
        for i in (0, 1, SIZES[split] - 1):
            li, ri = start + i, int(right[split][i])
            np.testing.assert_array_equal(s.left[i].numpy(), src[li])
            np.testing.assert_array_equal(s.right[i].numpy(), src[ri])
            assert s.left_labels[i] == lab[li] and s.right_labels[i] == lab[ri]
            np.testing.assert_array_equal(
                s.images[i].numpy(), reference_composite(src[li], src[ri])
            )


def test_second_load_hits_the_cache(tmp_path, counted_source, monkeypatch):
    first = load_multi_mnist(tmp_path, seed=5, cache_dir=tmp_path / "cache")
    files = list((tmp_path / "cache" / "multi_mnist").glob("*.npz"))
    assert counted_source == {"load": 1, "build": 1} and len(files) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(mm, "build_arrays", refuse)
    monkeypatch.setattr(mnist_mod, "load_mnist", refuse)
    second = load_multi_mnist(tmp_path, seed=5, cache_dir=tmp_path / "cache")
    assert_same_splits(first, second)
    with pytest.raises(AssertionError, match="rebuilt"):  # another seed is another entry
        load_multi_mnist(tmp_path, seed=6, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("where", ["middle", "header", "end"])
def test_corrupted_cache_is_rebuilt(tmp_path, counted_source, where):
    first = load_multi_mnist(tmp_path, seed=5, cache_dir=tmp_path / "cache")
    (path,) = (tmp_path / "cache" / "multi_mnist").glob("*.npz")
    # "end": the central directory offset in the end record (most bytes of the
    # central directory, such as its entries' attributes, are never checked by zipfile)
    offset = {"middle": path.stat().st_size // 2, "header": 100, "end": -4}[where]
    flip_byte(path, offset)
    with pytest.warns(RuntimeWarning, match=r"Multi-MNIST cache .*: unreadable"):
        second = load_multi_mnist(tmp_path, seed=5, cache_dir=tmp_path / "cache")
    assert counted_source["build"] == 2
    assert_same_splits(first, second)
    third = load_multi_mnist(tmp_path, seed=5, cache_dir=tmp_path / "cache")  # repaired
    assert counted_source["build"] == 2
    assert_same_splits(first, third)


def test_truncated_cache_is_rebuilt(tmp_path, counted_source):
    load_multi_mnist(tmp_path, seed=5, cache_dir=tmp_path / "cache")
    (path,) = (tmp_path / "cache" / "multi_mnist").glob("*.npz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.warns(RuntimeWarning, match="unreadable"):
        load_multi_mnist(tmp_path, seed=5, cache_dir=tmp_path / "cache")
    assert counted_source["build"] == 2


def test_cache_is_keyed_by_split_file_contents(tmp_path, counted_source):
    split_dir = tmp_path / "splits"
    values = write_split_files(split_dir, val_lines=10_000)
    kwargs = {"right_indices": "original", "split_dir": split_dir, "cache_dir": tmp_path / "c"}
    first = load_multi_mnist(tmp_path, **kwargs)
    np.testing.assert_array_equal(first["val"].right_index.numpy(), values["val"])
    load_multi_mnist(tmp_path, **kwargs)
    assert counted_source["build"] == 1
    changed = write_split_files(split_dir, val_lines=10_000, seed=1)
    second = load_multi_mnist(tmp_path, **kwargs)
    assert counted_source["build"] == 2
    np.testing.assert_array_equal(second["test"].right_index.numpy(), changed["test"])


def test_no_cache_written_when_disabled(tmp_path, counted_source):
    load_multi_mnist(tmp_path, seed=5, cache_dir=tmp_path / "cache", use_cache=False)
    load_multi_mnist(tmp_path, seed=5, cache_dir=tmp_path / "cache", use_cache=False)
    assert counted_source["build"] == 2
    assert not (tmp_path / "cache" / "multi_mnist").exists()


# --- the real data (SMTO_DATA) ------------------------------------------------------------


def real_root(need_splits: bool = False) -> Path:
    root = os.environ.get("SMTO_DATA")
    reason = (
        "real MNIST not available: set SMTO_DATA to a directory holding mnist/ with the four "
        "MNIST .gz files (and seed_splits/multi_mnist/ for the original pairing), e.g. "
        "SMTO_DATA=../shared/data"
    )
    if not root or not all((Path(root) / "mnist" / n).is_file() for n in mnist_mod.MNIST_MD5):
        pytest.skip(reason)
    if need_splits and not (Path(root) / mm.SPLIT_SUBDIR / "val_right_idx.txt").is_file():
        pytest.skip(reason)
    return Path(root)


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("multi_mnist_cache")


@pytest.fixture(scope="module")
def real_mnist() -> mnist_mod.MNIST:
    return mnist_mod.load_mnist(real_root(), download=False)


def test_real_seeded_splits(real_cache, real_mnist):
    splits = load_multi_mnist(real_root(), seed=0, download=False, cache_dir=real_cache)
    assert {k: len(v) for k, v in splits.items()} == SIZES
    for split, (start, stop) in LEFT_RANGES.items():
        s = splits[split]
        n = SIZES[split]
        for field in ("images", "left", "right"):
            tensor = getattr(s, field)
            assert tensor.shape == (n, 28, 28) and tensor.dtype == torch.uint8, field
        for field in ("left_labels", "right_labels", "left_index", "right_index"):
            tensor = getattr(s, field)
            assert tensor.shape == (n,) and tensor.dtype == torch.int64, field
        assert torch.equal(s.left_index, torch.arange(start, stop))
        assert s.right_index.min() >= start and s.right_index.max() < stop
        labels = real_mnist.test_labels if split == "test" else real_mnist.train_labels
        np.testing.assert_array_equal(s.left_labels.numpy(), labels[start:stop])
        np.testing.assert_array_equal(s.right_labels.numpy(), labels[s.right_index.numpy()])


def test_real_original_pairing(real_cache, real_mnist):
    root = real_root(need_splits=True)
    splits = load_multi_mnist(root, right_indices="original", download=False, cache_dir=real_cache)
    for split, (start, _) in LEFT_RANGES.items():
        lines = (root / mm.SPLIT_SUBDIR / f"{split}_right_idx.txt").read_text().split()
        s = splits[split]
        n = SIZES[split]
        assert len(s) == n
        assert len(lines) == (60_000 if split == "val" else n)  # the val quirk
        file_values = np.array([int(v) for v in lines[:n]])
        np.testing.assert_array_equal(s.right_index.numpy(), file_values)
        source = real_mnist.test_images if split == "test" else real_mnist.train_images
        for i in range(3):
            li, ri = start + i, int(lines[i])
            assert int(s.left_index[i]) == li and int(s.right_index[i]) == ri
            np.testing.assert_array_equal(s.right[i].numpy(), source[ri])
            np.testing.assert_array_equal(
                s.images[i].numpy(), reference_composite(source[li], source[ri])
            )
    # the first pairs of the study's files, as published in ../shared/data
    assert [int(splits[s].right_index[0]) for s in ("train", "val", "test")] == [2732, 51506, 1811]
