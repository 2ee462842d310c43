"""The CelebA loader on a fake tree in the official format: the lists, the splits, the task
names, the resize, the missing-file check, the cache and torchvision's layout."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from data import fake_celeba as fake
from smto.data import celeba as cb
from smto.errors import DataError, MissingError


@pytest.fixture
def tree(tmp_path) -> fake.FakeTree:
    return fake.write_tree(tmp_path / "celeba")


@pytest.fixture
def layout(tree) -> cb.Layout:
    return cb.find_layout(tree.root)


def rewrite(path, edit):
    lines = path.read_text().splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------ task names


def test_the_task_names_are_the_40_attributes_without_underscores_in_order():
    assert len(cb.ATTRIBUTES) == len(cb.TASKS) == len(set(cb.TASKS)) == 40
    assert all("_" not in t and t for t in cb.TASKS)
    assert cb.TASKS[:4] == ("5oClockShadow", "ArchedEyebrows", "Attractive", "BagsUnderEyes")
    assert cb.TASKS[20] == "Male" and cb.TASKS[31] == "Smiling" and cb.TASKS[-1] == "Young"
    assert cb.task_name("Mouth_Slightly_Open") == "MouthSlightlyOpen"
    assert [cb.task_name(a) for a in cb.ATTRIBUTES] == list(cb.TASKS)


# ------------------------------------------------------------------ the lists


def test_the_lists_give_each_split_its_images_and_attributes(tree, layout):
    splits = cb.read_splits(layout)
    assert [len(splits[s][0]) for s in ("train", "val", "test")] == [20, 5, 5]
    for split_id, split in enumerate(("train", "val", "test")):
        chosen = np.flatnonzero(tree.splits == split_id)
        names, attributes = splits[split]
        assert names == [tree.names[i] for i in chosen]  # in the lists' order
        assert attributes.dtype == np.uint8 and attributes.shape == (len(chosen), 40)
        assert np.array_equal(attributes, tree.attributes[chosen])


def test_the_official_row_format_with_its_padding(tmp_path):
    path = tmp_path / "list_attr_celeba.txt"
    row = ["-1"] * 40
    row[2] = "1"
    path.write_text("1\n" + " ".join(cb.ATTRIBUTES) + " \n000001.jpg " + "  ".join(row) + "\n")
    names, attributes = cb.read_attributes(path)
    assert names == ["000001.jpg"] and attributes[0].tolist() == [0, 0, 1] + [0] * 37


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: lines.__setitem__(0, "thirty"), r"line 1: 'thirty' is not the image count"),
        (lambda lines: lines.__setitem__(0, "31"), r"line 1 gives 31 images, the file lists 30"),
        (lambda lines: lines.__setitem__(1, lines[1].replace("Smiling ", "")), r"line 2: .*39"),
        (lambda lines: lines.__setitem__(4, lines[4] + " 1"), r"line 5: .*41 values"),
        (lambda lines: lines.__setitem__(3, lines[3].replace(" 1", " 0", 1)), r"line 4: .*-1, 1"),
        (lambda lines: lines.__setitem__(3, lines[3].replace(".jpg", ".png")), r"line 4: .*image"),
        (lambda lines: lines.__setitem__(3, lines[2]), r"lists an image twice"),
    ],
)
def test_a_malformed_attribute_list_is_a_data_error_naming_file_and_line(
    tree, layout, edit, message
):
    rewrite(layout.attributes, edit)
    with pytest.raises(DataError, match=message) as error:
        cb.read_attributes(layout.attributes)
    assert "list_attr_celeba.txt" in str(error.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda lines: lines.__setitem__(6, "000007.jpg 3"),
            r"line 7: expected '<image> <0\|1\|2>'",
        ),
        (lambda lines: lines.__setitem__(2, "000003.jpg"), r"line 3: expected"),
        (lambda lines: lines.__setitem__(2, "000003.jpg 0 1"), r"line 3: expected"),
    ],
)
def test_a_malformed_partition_is_a_data_error_naming_file_and_line(tree, layout, edit, message):
    rewrite(layout.partition, edit)
    with pytest.raises(DataError, match=message) as error:
        cb.read_partition(layout.partition)
    assert "list_eval_partition.txt" in str(error.value)


def test_the_two_lists_must_name_the_same_images(tree, layout):
    rewrite(layout.partition, lambda lines: lines.__setitem__(5, "999999.jpg 0"))
    with pytest.raises(
        DataError, match=r"not list the same images: 000006.jpg is only in list_attr"
    ):
        cb.read_splits(layout)


# ------------------------------------------------------------------ the layout and the files


def test_torchvisions_layout_is_found(tmp_path):
    fake.write_tree(tmp_path / "root", nested=True)
    layout = cb.find_layout(tmp_path / "root")
    assert layout.images == tmp_path / "root" / "celeba" / "img_align_celeba"
    assert len(cb.read_splits(layout)["train"][0]) == 20


def test_a_missing_list_or_directory_is_named(tmp_path, tree):
    with pytest.raises(MissingError, match="no CelebA directory"):
        cb.find_layout(tmp_path / "absent")
    (tree.root / "list_eval_partition.txt").unlink()
    with pytest.raises(MissingError, match=r"lacks list_eval_partition.txt"):
        cb.find_layout(tree.root)


def test_a_missing_image_is_one_error_before_decoding(tree, layout, monkeypatch):
    names = cb.read_splits(layout)["train"][0]
    (layout.images / names[3]).unlink()
    (layout.images / names[7]).unlink()
    monkeypatch.setattr(cb, "decode_image", lambda *a: pytest.fail("decoded before checking"))
    with pytest.raises(MissingError) as error:
        cb.check_images(layout, names, "train")
    text = str(error.value)
    assert str(layout.images / names[3]) in text and "train split" in text
    assert "2 files missing in all" in text


# ------------------------------------------------------------------ decoding and the cache


def test_the_whole_image_is_resized_bilinear_to_the_size(tree, layout):
    path = layout.images / tree.names[0]
    decoded = cb.decode_image(path, 64)
    assert decoded.shape == (64, 64, 3) and decoded.dtype == np.uint8
    with Image.open(path) as image:
        assert image.size == (178, 218)
        expected = np.asarray(image.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR))
    assert np.array_equal(decoded, expected)
    # no crop: the gradient's first column (x = 0, red ~0) is still the first column
    assert decoded[:, 0, 0].mean() < 30 and decoded[:, -1, 0].mean() > 220
    assert cb.decode_image(path, 32).shape == (32, 32, 3)


def test_a_corrupt_jpeg_is_a_data_error(tree, layout):
    path = layout.images / tree.names[0]
    path.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="cannot decode the CelebA image"):
        cb.decode_image(path, 64)


def test_the_cache_is_built_once_and_a_corrupt_one_rebuilt(tree, layout, tmp_path, monkeypatch):
    calls = []
    real = cb.decode_images
    monkeypatch.setattr(cb, "decode_images", lambda *a, **k: calls.append(1) or real(*a, **k))
    files = cb.check_images(layout, cb.read_splits(layout)["val"][0], "val")
    cache = tmp_path / "cache"
    first = cb.load_images(files, 64, cache, "val")
    again = cb.load_images(files, 64, cache, "val")
    assert len(calls) == 1 and np.array_equal(first, again)
    assert first.shape == (5, 64, 64, 3) and first.dtype == np.uint8
    (path,) = cache.glob("val-64-*.npz")
    path.write_bytes(path.read_bytes()[:-100])
    assert np.array_equal(cb.load_images(files, 64, cache, "val"), first) and len(calls) == 2
    cb.load_images(files, 32, cache, "val")  # another size: another file
    cb.load_images(files[:2], 64, cache, "val")  # other images: another file
    assert len(calls) == 4 and len(list(cache.glob("val-*.npz"))) == 3


def test_parallel_decoding_gives_the_same_images(tree, layout):
    files = cb.check_images(layout, cb.read_splits(layout)["train"][0], "train")
    assert np.array_equal(cb.decode_images(files, 64), cb.decode_images(files, 64, workers=2))


# ------------------------------------------------------------------ samples


def test_samples_and_batches_are_normalized_images_and_0_1_targets(tree, layout):
    names, attributes = cb.read_splits(layout)["train"]
    images = cb.decode_images(cb.check_images(layout, names, "train"), 64)
    split = cb.CelebASplit(images, attributes, ("Smiling", "5oClockShadow"))
    one = split[2]
    assert one["image"].shape == (3, 64, 64) and one["image"].dtype == torch.float32
    mean, std = torch.tensor(cb.IMAGENET_MEAN), torch.tensor(cb.IMAGENET_STD)
    pixel = torch.tensor(images[2, 5, 7], dtype=torch.float32) / 255
    assert torch.allclose(one["image"][:, 5, 7], (pixel - mean) / std)
    assert one["Smiling"].item() == attributes[2, fake.SMILING]
    assert one["5oClockShadow"].item() == attributes[2, 0]
    batch = split[[4, 0, 9]]
    assert batch["image"].shape == (3, 3, 64, 64) and batch["Smiling"].dtype == torch.float32
    assert batch["Smiling"].tolist() == attributes[[4, 0, 9], fake.SMILING].tolist()
    assert torch.equal(batch["image"][1], split[0]["image"])
    assert len(split.limited(3)) == 3 and split.limited(None) is split


def test_a_real_celeba_tree_when_present(tmp_path, monkeypatch):
    """With SMTO_CELEBA naming a real tree: the official split sizes, and the first images of
    each split at 64 x 64."""
    if not os.environ.get("SMTO_CELEBA"):
        pytest.skip("no real CelebA tree: set SMTO_CELEBA")
    layout = cb.find_layout(os.environ["SMTO_CELEBA"])
    splits = cb.read_splits(layout)
    assert [len(splits[s][0]) for s in ("train", "val", "test")] == [162_770, 19_867, 19_962]
    assert splits["train"][0][0] == "000001.jpg"
    images = cb.load_images(
        cb.check_images(layout, splits["test"][0][:4], "test"), 64, tmp_path, "test"
    )
    assert images.shape == (4, 64, 64, 3)
