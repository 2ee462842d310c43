"""The Cityscapes loader on a fake tree in the real formats, against values computed by hand."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data import fake_cityscapes as fake
from smto.data import cityscapes as cs
from smto.data.scale_crop import SCALES
from smto.errors import ConfigError, DataError, MissingError

SHAPE = (64, 32)  # half the fake tree's 128 x 64: nearest takes source pixel 2i + 1


@pytest.fixture
def tree(tmp_path) -> fake.FakeTree:
    return fake.write_tree(tmp_path / "cityscapes")


@pytest.fixture
def layout(tree) -> dict[str, Path]:
    return cs.find_layout(tree.root)


def arrays_of(layout, entries, cache, split="train"):
    return cs.load_split(cs.check_files(layout, entries, split), SHAPE, cache, split)


# ------------------------------------------------------------------ the label table


def test_train_ids_are_cityscapes_19_classes():
    table = cs.class_table(19)
    assert table[7] == 0 and table[23] == 10 and table[24] == 11 and table[33] == 18
    assert sorted(table[table >= 0].tolist()) == list(range(19))
    # void, and labels Cityscapes does not evaluate (parking, guard rail, caravan, ...)
    for label_id in (0, 4, 9, 10, 14, 15, 16, 18, 29, 30, 34, 255):
        assert table[label_id] == -1


def test_categories_are_the_7_evaluated_categories():
    table = cs.class_table(7)
    assert table[7] == table[8] == 0  # road, sidewalk: flat
    assert table[11] == 1 and table[17] == 2 and table[21] == 3 and table[23] == 4
    assert table[24] == table[25] == 5  # human
    assert table[26] == table[33] == 6  # vehicle
    assert table[9] == table[29] == table[4] == -1  # parking, caravan: not evaluated; void
    assert sorted(set(table[table >= 0].tolist())) == list(range(7))


def test_other_class_counts_are_refused():
    with pytest.raises(ConfigError, match=r"7 .* or 19"):
        cs.class_table(20)


# ------------------------------------------------------------------ files and layout


def test_archive_layout_is_found_too(tmp_path):
    for kind in cs.KINDS:
        (tmp_path / f"{kind}_trainvaltest" / kind).mkdir(parents=True)
    layout = cs.find_layout(tmp_path)
    assert layout["gtFine"] == tmp_path / "gtFine_trainvaltest" / "gtFine"


def test_a_missing_folder_is_named(tmp_path):
    (tmp_path / "leftImg8bit").mkdir()
    with pytest.raises(MissingError, match="lacks gtFine/, disparity/"):
        cs.find_layout(tmp_path)
    with pytest.raises(MissingError, match="no Cityscapes directory"):
        cs.find_layout(tmp_path / "absent")


def test_a_missing_file_is_one_error_naming_it_before_decoding(tree, layout, monkeypatch):
    entry = tree.entries["train"][3]
    missing = cs.sample_files(layout, entry).disparity
    missing.unlink()
    monkeypatch.setattr(cs, "decode_sample", lambda *a: pytest.fail("decoded before checking"))
    with pytest.raises(MissingError) as error:
        cs.check_files(layout, tree.entries["train"], "train")
    assert str(missing) in str(error.value) and "train split" in str(error.value)


def test_split_files_in_the_study_format(tmp_path, tree):
    splits = fake.write_split_files(tmp_path / "splits", tree)
    assert cs.read_split_file(tmp_path / "splits" / "val.txt") == splits["val"]
    (tmp_path / "bad.txt").write_text(fake.image_line(splits["val"][0]) + "\nnot/an/image.jpg\n")
    with pytest.raises(DataError, match="line 2"):
        cs.read_split_file(tmp_path / "bad.txt")
    with pytest.raises(MissingError, match="no split file"):
        cs.read_split_file(tmp_path / "nothing.txt")


def test_seeded_split_is_80_20_of_official_train_and_val_is_test(layout, tree):
    splits = cs.seeded_splits(layout, seed=3)
    train = set(tree.entries["train"])
    assert len(splits["train"]) == 8 and len(splits["val"]) == 2
    assert set(splits["train"]) | set(splits["val"]) == train
    assert not set(splits["train"]) & set(splits["val"])
    assert splits["test"] == sorted(tree.entries["val"])
    assert cs.seeded_splits(layout, seed=3) == splits != cs.seeded_splits(layout, seed=4)


def test_the_studys_split_files_when_present():
    data = os.environ.get("SMTO_DATA")
    folder = Path(data or "") / "seed_splits" / "cityscapes"
    if not data or not folder.is_dir():
        pytest.skip("the study's Cityscapes split files are not present (set SMTO_DATA)")
    splits = {s: cs.read_split_file(folder / f"{s}.txt") for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [2380, 595, 500]
    assert all(e.startswith("train/") for e in splits["train"] + splits["val"])
    assert all(e.startswith("val/") for e in splits["test"])
    assert not set(splits["train"]) & set(splits["val"])


# ------------------------------------------------------------------ decoding and targets


def test_nearest_resizing_takes_the_pixel_centre():
    assert cs.nearest_indices(128, 64).tolist() == [2 * i + 1 for i in range(64)]
    assert cs.nearest_indices(3, 2).tolist() == [0, 2]  # centres 0.75 and 2.25
    assert cs.nearest_indices(2, 4).tolist() == [0, 0, 1, 1]


def test_targets_without_augmentation_by_hand(tree, layout, tmp_path):
    entry = tree.entries["train"][0]
    arrays = arrays_of(layout, [entry], tmp_path / "cache")
    sample = cs.make_sample(arrays, 0, torch.from_numpy(cs.class_table(19)))
    label, _ = fake.label_maps(0)
    expected = cs.class_table(19)[label[1::2, 1::2]]
    assert torch.equal(sample["S"], torch.from_numpy(expected))
    # the car box (rows 30:46, cols 10:42 at full size) is rows 15..22, cols 5..20 here
    assert (sample["S"][15:23, 5:21] == 13).all()
    assert (sample["S"][25:30, 50:60] == -1).all()  # the caravan is not evaluated
    # instance offsets to the car's centroid (18.5, 12.5) and the person's (17.5, 41.5)
    assert sample["I"][:, 15, 5].tolist() == [3.5, 7.5]
    assert sample["I"][:, 22, 20].tolist() == [-3.5, -7.5]
    assert sample["I"][:, 10, 40].tolist() == [7.5, 1.5]
    thing = ~torch.isnan(sample["I"][0])
    assert thing.sum() == 8 * 16 + 16 * 4  # car and person pixels only, not caravan or road
    assert torch.isnan(sample["I"][:, 27, 55]).all()
    # disparity from the 16-bit PNG: (raw - 1) / (256 * 2048 / 64) where raw > 0
    raw = np.asarray(Image.open(cs.sample_files(layout, entry).disparity)).astype(np.float64)
    small = raw[1::2, 1::2]
    expected_d = np.where(small > 0, (small - 1) / (256 * 2048 / 64), np.nan)
    assert np.allclose(sample["D"].numpy(), expected_d, equal_nan=True, rtol=1e-6, atol=0)
    assert torch.isnan(sample["D"][:, :2]).all() and not torch.isnan(sample["D"][:, 2:]).any()
    # the image: ImageNet-standardized RGB of PIL's bilinear resize
    image = Image.open(cs.sample_files(layout, entry).image).resize(SHAPE, Image.BILINEAR)
    rgb = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
    mean = torch.tensor(cs.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(cs.IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(sample["image"], (rgb - mean) / std)


def test_categories_on_the_fake_tree(tree, layout, tmp_path):
    arrays = arrays_of(layout, tree.entries["train"][:1], tmp_path / "cache")
    sample = cs.make_sample(arrays, 0, torch.from_numpy(cs.class_table(7)))
    assert sample["S"][15, 5] == 6 and sample["S"][0, 0] == 4 and sample["S"][31, 0] == 0
    assert sample["S"][16, 40] == 5  # person: human


def test_instance_offsets_by_hand():
    ids = torch.tensor(
        [
            [26001, 26001, 0, 24002],
            [26001, 26001, 26, 24002],
            [29001, 26002, 26, 24002],
        ]
    )
    offsets = cs.instance_offsets(ids)
    assert offsets[:, 0, 0].tolist() == [0.5, 0.5]  # centroid (0.5, 0.5)
    assert offsets[:, 1, 1].tolist() == [-0.5, -0.5]
    assert offsets[:, 0, 3].tolist() == [1.0, 0.0]  # a person, centroid (1, 3)
    assert offsets[:, 2, 1].tolist() == [0.0, 0.0]  # a one-pixel instance: its own centroid
    for y, x in ((0, 2), (1, 2), (2, 0)):  # unlabelled, a crowd (26 < 1000), a caravan
        assert torch.isnan(offsets[:, y, x]).all()
    valid = torch.ones(3, 4, dtype=torch.bool)
    valid[0, 0] = False  # an ignored pixel leaves the instance and moves its centroid
    moved = cs.instance_offsets(ids, valid)
    assert torch.isnan(moved[:, 0, 0]).all()
    assert moved[:, 1, 1].tolist() == pytest.approx([-1 / 3, -1 / 3])


def test_the_flip_mirrors_every_target_and_negates_dx(tree, layout, tmp_path):
    arrays = arrays_of(layout, tree.entries["train"][:2], tmp_path / "cache")
    table = torch.from_numpy(cs.class_table(19))
    plain = cs.make_sample(arrays, 1, table)
    flipped = cs.make_sample(arrays, 1, table, cs.Augmentation(flip=True, angle=0.0))
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    assert torch.equal(flipped["S"], plain["S"].flip(-1))
    assert torch.equal(flipped["D"].nan_to_num(-1), plain["D"].flip(-1).nan_to_num(-1))
    dy, dx = plain["I"].flip(-1)
    assert torch.equal(flipped["I"][0].nan_to_num(99), dy.nan_to_num(99))
    assert torch.equal(flipped["I"][1].nan_to_num(99), (-dx).nan_to_num(99))
    assert (flipped["I"][1][~torch.isnan(dx)] != dx[~torch.isnan(dx)]).any()


def source_of(angle: float, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output pixel, the nearest source pixel (row, col) of a rotation by ``angle``
    about the image centre in pixel space, and whether it lies inside the image."""
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = x + 0.5 - width / 2, y + 0.5 - height / 2
    col = np.rint(c * u - s * v + width / 2 - 0.5).astype(int)
    row = np.rint(s * u + c * v + height / 2 - 0.5).astype(int)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    return row.clip(0, height - 1), col.clip(0, width - 1), inside


def test_rotation_ignores_rotated_in_pixels_and_moves_labels_without_shear(tree, layout, tmp_path):
    arrays = arrays_of(layout, tree.entries["train"][:1], tmp_path / "cache")
    table = torch.from_numpy(cs.class_table(19))
    plain = cs.make_sample(arrays, 0, table)
    rotated = cs.make_sample(arrays, 0, table, cs.Augmentation(flip=False, angle=10.0))
    row, col, inside = source_of(10.0, 32, 64)
    ignored = (rotated["S"] == -1).numpy()
    assert not inside.all() and ignored[~inside].all()
    assert torch.isnan(rotated["D"][torch.from_numpy(~inside)]).all()
    assert torch.isnan(rotated["I"][:, torch.from_numpy(~inside)]).all()
    for corner in ((0, 0), (0, 63), (31, 0), (31, 63)):
        assert rotated["S"][corner] == -1
    # inside, each label is the one at the rotated position (allow a rounding tie or two)
    expected = plain["S"].numpy()[row, col]
    mismatches = (rotated["S"].numpy() != expected) & inside
    assert mismatches.sum() <= 2


def test_augmentation_draws_are_the_studys_ranges():
    draws = [cs.Augmentation.draw(torch.Generator().manual_seed(s)) for s in range(400)]
    angles = np.array([d.angle for d in draws])
    assert angles.min() >= -10 and angles.max() <= 10 and angles.min() < -9 and angles.max() > 9
    assert 150 < sum(d.flip for d in draws) < 250


def test_a_split_is_augmented_only_with_an_epoch_seed(tree, layout, tmp_path):
    arrays = arrays_of(layout, tree.entries["train"], tmp_path / "cache")
    split = cs.CityscapesSplit(arrays, 19)
    first = split[2]
    assert torch.equal(split[2]["image"], first["image"])
    split.epoch_seed = 5
    augmented = [split[i] for i in range(len(split))]
    plain = cs.CityscapesSplit(arrays, 19)
    assert any(not torch.equal(a["S"], plain[i]["S"]) for i, a in enumerate(augmented))
    assert torch.equal(split[4]["S"], augmented[4]["S"])  # the same draw for (seed, index)
    split.epoch_seed = 6
    assert any(not torch.equal(split[i]["S"], augmented[i]["S"]) for i in range(len(split)))


# ------------------------------------------------------------------ the cache


def test_the_cache_is_built_once_and_a_corrupt_one_rebuilt(tree, layout, tmp_path, monkeypatch):
    calls = []
    real = cs.decode_split
    monkeypatch.setattr(cs, "decode_split", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = tmp_path / "cache"
    first = arrays_of(layout, tree.entries["train"], cache)
    again = arrays_of(layout, tree.entries["train"], cache)
    assert len(calls) == 1
    assert all(np.array_equal(first[k], again[k]) for k in cs.ARRAYS)
    (path,) = cache.glob("train-64x32-*.npz")
    path.write_bytes(path.read_bytes()[:-100])
    rebuilt = arrays_of(layout, tree.entries["train"], cache)
    assert len(calls) == 2 and np.array_equal(rebuilt["label"], first["label"])
    arrays_of(layout, tree.entries["train"][:3], cache)  # another image list: another file
    assert len(calls) == 3 and len(list(cache.glob("train-64x32-*.npz"))) == 2


def test_the_cache_holds_the_decoded_arrays(tree, layout, tmp_path):
    arrays = arrays_of(layout, tree.entries["train"][:2], tmp_path / "cache")
    assert arrays["image"].shape == (2, 32, 64, 3) and arrays["image"].dtype == np.uint8
    assert arrays["instance"].dtype == np.uint16 and arrays["disparity"].dtype == np.uint16
    label, instance = fake.label_maps(1)
    assert np.array_equal(arrays["label"][1], label[1::2, 1::2])
    assert np.array_equal(arrays["instance"][1], instance[1::2, 1::2])


def test_parallel_decoding_gives_the_same_arrays(tree, layout):
    files = cs.check_files(layout, tree.entries["train"], "train")
    serial = cs.decode_split(files, SHAPE, workers=0)
    parallel = cs.decode_split(files, SHAPE, workers=2)
    assert all(np.array_equal(serial[k], parallel[k]) for k in cs.ARRAYS)


def test_a_corrupt_png_is_a_data_error(tree, layout):
    files = cs.sample_files(layout, tree.entries["train"][0])
    files.label.write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot decode"):
        cs.decode_sample(files, SHAPE)


def test_a_real_cityscapes_tree_when_present(tmp_path, monkeypatch):
    """With SMTO_CITYSCAPES naming a real tree (and SMTO_DATA the study's split files), the
    first images of each split load at 256 x 128 with targets in their valid ranges."""
    root, data = os.environ.get("SMTO_CITYSCAPES"), os.environ.get("SMTO_DATA")
    if not root or not data:
        pytest.skip("no real Cityscapes tree: set SMTO_CITYSCAPES (and SMTO_DATA for the splits)")
    from smto.problems.cityscapes import Cityscapes

    monkeypatch.setenv("SMTO_CACHE", str(tmp_path / "cache"))
    problem = Cityscapes(shape=(256, 128), limits=(4, 4, 4), workers=0)
    batch = next(problem.batches("train", 4, torch.Generator().manual_seed(0)))
    assert batch.inputs.shape == (4, 3, 128, 256)
    segmentation, disparity, offsets = (batch.targets[t] for t in ("S", "D", "I"))
    assert segmentation.min() >= -1 and segmentation.max() <= 18
    assert (segmentation >= 0).float().mean() > 0.5
    labelled = disparity[~torch.isnan(disparity)]
    assert labelled.numel() > 0 and labelled.min() >= 0 and labelled.max() < 256 / 8
    assert (~torch.isnan(offsets)).any()


def test_scale_crop_follows_random_scale_crop(tree, layout, tmp_path):
    """Elich et al.'s augmentation (MTAN / CAGrad ``RandomScaleCrop``): a crop of
    (int(32 / 1.5), int(64 / 1.5)) = (21, 42) resized back by legacy nearest (source index
    floor(i * 21 / 32)) for the maps, the disparity divided by the scale."""
    arrays = arrays_of(layout, tree.entries["train"][:1], tmp_path / "cache")
    table = torch.from_numpy(cs.class_table(7))
    plain = cs.make_sample(arrays, 0, table)
    draw = cs.Augmentation(flip=False, scale=1.5, top=5, left=11)
    cropped = cs.make_sample(arrays, 0, table, draw)
    rows = 5 + np.floor(np.arange(32) * 21 / 32).astype(int)
    cols = 11 + np.floor(np.arange(64) * 42 / 64).astype(int)
    assert torch.equal(cropped["S"], plain["S"][rows[:, None], cols[None, :]])
    expected = plain["D"][rows[:, None], cols[None, :]] / 1.5
    assert torch.allclose(cropped["D"], expected, equal_nan=True)
    assert (cropped["S"] >= 0).sum() == (plain["S"][rows[:, None], cols[None, :]] >= 0).sum()
    # offsets are recomputed at the new scale: each instance's offsets average to zero
    instance = torch.from_numpy(arrays["instance"][0].astype(np.int64))[
        rows[:, None], cols[None, :]
    ]
    for instance_id in (26001, 24003):
        pixels = instance == instance_id
        assert pixels.any()
        assert cropped["I"][:, pixels].mean(dim=1).abs().max() < 1e-4
    flipped = cs.make_sample(arrays, 0, table, cs.Augmentation(True, scale=1.5, top=5, left=11))
    assert torch.equal(flipped["S"], cropped["S"].flip(-1))


def test_scale_crop_draws():
    draws = [
        cs.Augmentation.draw(torch.Generator().manual_seed(s), "scale_crop", (32, 64))
        for s in range(300)
    ]
    assert {d.scale for d in draws} == set(SCALES) and all(d.angle == 0 for d in draws)
    for d in draws:
        assert 0 <= d.top <= 32 - int(32 / d.scale) and 0 <= d.left <= 64 - int(64 / d.scale)
    assert all(d.top == d.left == 0 for d in draws if d.scale == 1.0)
    assert 100 < sum(d.flip for d in draws) < 200
    with pytest.raises(ConfigError, match="augmentation must be one of"):
        cs.Augmentation.draw(torch.Generator(), "mixup")
