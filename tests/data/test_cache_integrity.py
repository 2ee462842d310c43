"""The Multi-MNIST cache's content checksum: a forged, altered or old cache is rebuilt."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from smto.data import multi_mnist as mm
from smto.data import npz_cache
from smto.data.multi_mnist import load_multi_mnist

Arrays = dict[str, np.ndarray]


def shift_labels(arrays: Arrays) -> None:
    arrays["train_source_labels"] = np.roll(arrays["train_source_labels"], 1)


def edit_image(arrays: Arrays) -> None:
    arrays["val_images"][7, 10, 10] ^= 0xFF


def swap_right_digits(arrays: Arrays) -> None:
    arrays["test_right_index"][[0, 1]] = arrays["test_right_index"][[1, 0]]


def drop_checksum(arrays: Arrays) -> None:
    del arrays["checksum"]


def rewrite(path: Path, change: Callable[[Arrays], None]) -> None:
    """Rewrite the cache file with ``change`` applied to its arrays (a valid npz, same key)."""
    with np.load(path) as z:
        arrays = {name: z[name].copy() for name in z.files}
    change(arrays)
    with path.open("wb") as f:
        np.savez(f, **arrays)


def cached_file(tmp_path: Path) -> Path:
    (path,) = (tmp_path / "cache" / "multi_mnist").glob("*.npz")
    return path


def assert_correct(splits: dict, fake_source) -> None:
    """Labels, digits and composites as built from the source, whatever the cache held."""
    expected = mm.seeded_right_indices(5)
    for split, (src, start, stop) in mm.SPLITS.items():
        s = splits[split]
        images = fake_source.test_images if src == "test" else fake_source.train_images
        labels = fake_source.test_labels if src == "test" else fake_source.train_labels
        np.testing.assert_array_equal(s.right_index.numpy(), expected[split])
        np.testing.assert_array_equal(s.left_labels.numpy(), labels[start:stop])
        np.testing.assert_array_equal(s.right_labels.numpy(), labels[expected[split]])
        composites = mm.compose(images[start:stop], images[expected[split]])
        assert torch.equal(s.images, torch.from_numpy(composites)), split


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (shift_labels, "content checksum does not match"),
        (edit_image, "content checksum does not match"),
        (swap_right_digits, "content checksum does not match"),
        (drop_checksum, r"no content checksum \(written by an older smto\)"),
    ],
)
def test_forged_cache_is_detected_and_rebuilt(
    tmp_path, counted_source, fake_source, change, reason
):
    load_multi_mnist(tmp_path, seed=5, cache_dir=tmp_path / "cache")
    path = cached_file(tmp_path)
    rewrite(path, change)
    message = rf"Multi-MNIST cache {re.escape(str(path))}: .*{reason}.*; rebuilding it"
    with pytest.warns(RuntimeWarning, match=message):
        rebuilt = load_multi_mnist(tmp_path, seed=5, cache_dir=tmp_path / "cache")
    assert counted_source["build"] == 2
    assert_correct(rebuilt, fake_source)
    with warnings.catch_warnings():  # the rewritten cache verifies and is used
        warnings.simplefilter("error")
        again = load_multi_mnist(tmp_path, seed=5, cache_dir=tmp_path / "cache")
    assert counted_source["build"] == 2
    assert_correct(again, fake_source)


def test_checksum_covers_names_dtypes_shapes_and_bytes():
    base = {"a": np.arange(6, dtype=np.int64), "b": np.array("key")}
    same = npz_cache.content_checksum({"b": np.array("key"), "a": np.arange(6, dtype=np.int64)})
    assert npz_cache.content_checksum(base) == same
    variants = [
        {**base, "a": np.arange(6, dtype=np.int64).reshape(2, 3)},
        {**base, "a": np.arange(6, dtype=np.int64).view(np.uint64)},
        {"c": base["a"], "b": base["b"]},
        {**base, "a": np.array([0, 1, 2, 3, 4, 6], dtype=np.int64)},
    ]
    digests = {npz_cache.content_checksum(v) for v in variants}
    assert len(digests) == len(variants) and same not in digests


def test_a_cache_directory_that_cannot_be_made_is_a_clear_error(tmp_path, monkeypatch):
    from smto.data import paths
    from smto.errors import ConfigError

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(paths.CACHE_ENV, str(blocker / "cache"))
    with pytest.raises(ConfigError, match=r"cannot create the cache directory .*a-file/cache"):
        paths.cache_dir()


class _Killed(BaseException):
    """A kill at the cache's rename: nothing after it runs."""


@pytest.mark.parametrize("after", [False, True], ids=["before-rename", "after-rename"])
def test_a_kill_at_the_cache_write_leaves_a_usable_cache(
    tmp_path, monkeypatch, counted_source, fake_source, after
):
    real = os.replace

    def killing(src, dst):
        if str(dst).endswith(".npz"):
            if after:
                real(src, dst)
            raise _Killed
        return real(src, dst)

    monkeypatch.setattr(mm.os, "replace", killing)
    with pytest.raises(_Killed):
        load_multi_mnist(tmp_path, seed=5, cache_dir=tmp_path / "cache")
    monkeypatch.setattr(mm.os, "replace", real)
    leftovers = [p.name for p in (tmp_path / "cache" / "multi_mnist").iterdir()]
    assert all(name.endswith(".npz") for name in leftovers), leftovers  # no partial file
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splits = load_multi_mnist(tmp_path, seed=5, cache_dir=tmp_path / "cache")
    assert counted_source["build"] == (1 if after else 2)  # a complete cache is used
    assert_correct(splits, fake_source)
