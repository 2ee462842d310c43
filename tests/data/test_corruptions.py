"""smto.data.corruptions: the ImageNet-C corruptions, seeded, checked against the published
definitions where reimplemented, and corrupted splits cached as checked .npz files."""

from __future__ import annotations

import functools
import importlib.util
import sys

import numpy as np
import pytest

from smto.data import corruptions as C
from smto.errors import ConfigError, MissingExtraError

HAS_PACKAGE = importlib.util.find_spec("imagecorruptions") is not None
needs_package = pytest.mark.skipif(
    not HAS_PACKAGE, reason="imagecorruptions is not installed (pip install 'smto[corruptions]')"
)
ALL = C.CORRUPTIONS + C.EXTRA_CORRUPTIONS
OWN = ("impulse_noise", "gaussian_blur", "glass_blur", "fog")  # computed without the package
HEAVY = {"glass_blur", "zoom_blur", "motion_blur", "elastic_transform"}


def scene(height: int = 40, width: int = 48) -> np.ndarray:
    """A natural-ish (H, W, 3) uint8 image: smooth colour gradients, a disc and a rectangle."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    image = np.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.5 + 0.3 * (x - y)], axis=-1)
    image[(x - 0.3) ** 2 + (y - 0.4) ** 2 < 0.04] = (0.9, 0.2, 0.1)
    image[(x > 0.55) & (x < 0.85) & (y > 0.5) & (y < 0.75)] = (0.1, 0.1, 0.8)
    return np.uint8(np.clip(image, 0, 1) * 255 + 0.5)


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b) ** 2))


def available(name: str) -> None:
    if name not in OWN and not HAS_PACKAGE:
        pytest.skip("imagecorruptions is not installed (pip install 'smto[corruptions]')")


# ------------------------------------------------------------------ names and validation


def test_the_names_are_the_15_imagenet_c_corruptions_in_four_groups():
    assert len(C.CORRUPTIONS) == 15 and len(set(ALL)) == 19
    groups = [C.GROUPS[g] for g in ("noise", "blur", "weather", "digital")]
    assert sum(groups, ()) == C.CORRUPTIONS
    assert [len(g) for g in groups] == [3, 4, 4, 4]
    assert C.SEVERITIES == (1, 2, 3, 4, 5)
    assert set(ALL) >= C.RANDOM_CORRUPTIONS


@pytest.mark.parametrize("name", ["gaussian", "Fog", "", "fgsm"])
def test_an_unknown_name_is_a_config_error_listing_the_valid_ones(name):
    with pytest.raises(ConfigError, match="valid: gaussian_noise, shot_noise") as error:
        C.corrupt(scene(), name, 1, 0)
    assert all(n in str(error.value) for n in ALL)
    with pytest.raises(ConfigError, match="unknown corruption"):
        C.corrupt_split(scene()[None], name, 1, 0, None)


@pytest.mark.parametrize("severity", [0, 6, -1, True, "1", 2.5])
def test_an_unknown_severity_is_a_config_error_listing_the_valid_ones(severity):
    with pytest.raises(ConfigError, match="valid: 1, 2, 3, 4, 5"):
        C.corrupt(scene(), "fog", severity, 0)
    with pytest.raises(ConfigError, match="valid: 1, 2, 3, 4, 5"):
        C.corrupt_split(scene()[None], "fog", severity, 0, None)


def test_bad_seeds_and_images_are_config_errors():
    with pytest.raises(ConfigError, match="seed"):
        C.corrupt(scene(), "fog", 1, -1)
    with pytest.raises(ConfigError, match="seed"):
        C.corrupt(scene(), "fog", 1, 1.5)
    with pytest.raises(ConfigError, match="uint8"):
        C.corrupt(scene().astype(np.float32), "fog", 1, 0)
    for bad in (scene()[..., 0], scene()[..., :2], scene(31, 48), scene(40, 20)):
        with pytest.raises(ConfigError, match=r"\(H, W, 3\)"):
            C.corrupt(bad, "fog", 1, 0)


# ------------------------------------------------------------------ every corruption


def _image_for(name: str) -> np.ndarray:
    return scene(32, 40) if name in HEAVY else scene()


@pytest.mark.parametrize("name", ALL)
def test_output_is_uint8_of_the_input_shape_and_the_input_is_not_changed(name):
    available(name)
    image = _image_for(name)
    clean = image.copy()
    for severity in (1, 5):
        out = C.corrupt(image, name, severity, 3)
        assert out.dtype == np.uint8 and out.shape == image.shape
        assert not np.shares_memory(out, image)
        assert mse(out, image) > 0, f"{name} {severity} left the image as it was"
    np.testing.assert_array_equal(image, clean)


@pytest.mark.parametrize("name", ALL)
def test_the_same_seed_gives_the_same_image_and_another_seed_another(name):
    available(name)
    image = _image_for(name)
    first = C.corrupt(image, name, 3, 11)
    np.testing.assert_array_equal(C.corrupt(image, name, 3, 11), first)
    other = C.corrupt(image, name, 3, 12)
    if name in C.RANDOM_CORRUPTIONS:
        assert not np.array_equal(other, first), f"{name}: seeds 11 and 12 gave the same image"
    else:
        np.testing.assert_array_equal(other, first)


@pytest.mark.parametrize("name", ALL)
def test_the_callers_global_numpy_state_is_unchanged(name):
    available(name)
    np.random.seed(2024)
    before = np.random.get_state()
    C.corrupt(_image_for(name), name, 2, 5)
    after = np.random.get_state()
    assert before[0] == after[0] and before[2:] == after[2:]
    np.testing.assert_array_equal(before[1], after[1])
    expected = np.random.RandomState(2024).random_sample(3)
    np.testing.assert_array_equal(np.random.random_sample(3), expected)


@pytest.mark.parametrize("name", ALL)
def test_severity_5_distorts_more_than_severity_1(name):
    """PSNR against the clean image, over a few seeds for the random corruptions (frost's
    crop, say, varies with the seed). saturate's levels 1-2 desaturate and 3-5 saturate:
    level 5 still changes this image more than level 1."""
    available(name)
    image = _image_for(name)
    seeds = range(3) if name in C.RANDOM_CORRUPTIONS else (0,)
    error = {
        s: np.mean([mse(C.corrupt(image, name, s, seed), image) for seed in seeds]) for s in (1, 5)
    }
    psnr = {s: 10 * np.log10(255**2 / error[s]) for s in error}
    assert psnr[1] > psnr[5], (name, psnr)


# ------------------------------------------------------------------ the reimplemented ones


@pytest.fixture
def package(monkeypatch):
    """imagecorruptions.corruptions, made runnable as published: skimage's gaussian accepting
    ``multichannel`` again and ``np.float_`` back (for this test only)."""
    if not HAS_PACKAGE:
        pytest.skip("imagecorruptions is not installed (pip install 'smto[corruptions]')")
    filters = pytest.importorskip("skimage.filters", reason="scikit-image is not installed")
    module = C.corruptions_module()

    def gaussian(image, sigma, multichannel=False, **kwargs):
        return filters.gaussian(image, sigma=sigma, channel_axis=-1 if multichannel else None)

    monkeypatch.setattr(module, "gaussian", gaussian)
    monkeypatch.setattr(np, "float_", np.float64, raising=False)
    return module


def _seeded(function, *args):
    state = np.random.get_state()
    try:
        np.random.seed(77)
        return np.uint8(function(*args))
    finally:
        np.random.set_state(state)


@pytest.mark.parametrize("name", ["gaussian_blur", "glass_blur", "fog"])
@pytest.mark.parametrize("severity", [1, 3, 5])
@pytest.mark.parametrize("shape", [(32, 40), (40, 32)])
def test_the_reimplemented_corruptions_are_the_published_ones(package, name, severity, shape):
    """With the same draws of numpy's global generator, the published function (run with its
    removed APIs put back) and ours give the same image."""
    image = scene(*shape)
    ours = _seeded(C._OWN[name], image, severity, np.random.default_rng(0))
    published = _seeded(getattr(package, name), image, severity)
    np.testing.assert_array_equal(ours, published)


@pytest.mark.parametrize("severity", [1, 5])
def test_impulse_noise_is_the_published_salt_and_pepper_with_a_seeded_generator(
    package, monkeypatch, severity
):
    util = pytest.importorskip("skimage.util")
    image = scene()
    seeded = functools.partial(util.random_noise, rng=np.random.default_rng(9))
    monkeypatch.setattr(util, "random_noise", seeded)
    published = np.uint8(package.impulse_noise(image, severity))
    ours = np.uint8(C._OWN["impulse_noise"](image, severity, np.random.default_rng(9)))
    np.testing.assert_array_equal(ours, published)


def test_without_the_package_the_reimplemented_ones_work_and_the_others_say_the_extra(
    monkeypatch,
):
    monkeypatch.setattr(C, "_PACKAGE", None)
    monkeypatch.setitem(sys.modules, "imagecorruptions", None)
    monkeypatch.setitem(sys.modules, "imagecorruptions.corruptions", None)
    for name in OWN:
        C.corrupt(scene(), name, 1, 0)
    with pytest.raises(MissingExtraError, match=r"pip install 'smto\[corruptions\]'"):
        C.corrupt(scene(), "frost", 1, 0)


@needs_package
def test_the_pkg_resources_stand_in_is_removed_after_the_import(monkeypatch):
    had = "pkg_resources" in sys.modules
    monkeypatch.setattr(C, "_PACKAGE", None)
    for name in [m for m in sys.modules if m.startswith("imagecorruptions")]:
        monkeypatch.delitem(sys.modules, name)
    module = C.corruptions_module()
    assert ("pkg_resources" in sys.modules) == had
    assert module.resource_filename(module.__name__, "./frost/frost1.png").endswith("frost1.png")
    C.corrupt(scene(), "frost", 1, 0)  # reads the frost images through it


# ------------------------------------------------------------------ splits and the cache


def _split(n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(1)
    base = scene(32, 36)
    shifts = rng.integers(-40, 40, size=(n, 1, 1, 3))
    return np.uint8(np.clip(base[None].astype(int) + shifts, 0, 255))


def test_a_split_is_corrupted_image_by_image_independently_of_the_others():
    images = _split()
    out = C.corrupt_split(images, "impulse_noise", 3, 5, None)
    assert out.dtype == np.uint8 and out.shape == images.shape
    for i in range(len(images)):
        alone = C.corrupt(images[i], "impulse_noise", 3, C.image_seed(5, i))
        np.testing.assert_array_equal(out[i], alone)
    changed = images.copy()
    changed[0] = 255 - changed[0]
    np.testing.assert_array_equal(
        C.corrupt_split(changed, "impulse_noise", 3, 5, None)[1:], out[1:]
    )
    assert len({C.image_seed(5, i) for i in range(100)} | {C.image_seed(6, 0)}) == 101


def test_the_cache_is_used_on_the_second_call_and_keyed(tmp_path, monkeypatch):
    images = _split()
    calls = []
    real = C.corrupt
    monkeypatch.setattr(C, "corrupt", lambda *a: calls.append(a) or real(*a))
    first = C.corrupt_split(images, "fog", 2, 1, tmp_path)
    assert len(calls) == len(images) and len(list(tmp_path.glob("fog-2-*.npz"))) == 1
    second = C.corrupt_split(images, "fog", 2, 1, tmp_path)
    assert len(calls) == len(images), "the cached split was corrupted again"
    np.testing.assert_array_equal(second, first)
    np.testing.assert_array_equal(second, C.corrupt_split(images, "fog", 2, 1, None))
    assert len(calls) == 2 * len(images)  # (without a cache: corrupted again)
    # Another seed, severity or set of images is another build.
    C.corrupt_split(images, "fog", 2, 2, tmp_path)
    C.corrupt_split(images, "fog", 3, 1, tmp_path)
    C.corrupt_split(images[:2], "fog", 2, 1, tmp_path)
    assert len(calls) == 2 * len(images) + 4 + 4 + 2 and len(list(tmp_path.glob("*.npz"))) == 4


def test_a_damaged_cache_file_is_rebuilt(tmp_path, monkeypatch):
    images = _split(3)
    first = C.corrupt_split(images, "glass_blur", 1, 0, tmp_path)
    (path,) = tmp_path.glob("*.npz")
    calls = []
    real = C.corrupt
    monkeypatch.setattr(C, "corrupt", lambda *a: calls.append(a) or real(*a))
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\0" * 64
    path.write_bytes(bytes(data))
    np.testing.assert_array_equal(C.corrupt_split(images, "glass_blur", 1, 0, tmp_path), first)
    assert len(calls) == len(images)
    path.write_bytes(b"not an npz")
    np.testing.assert_array_equal(C.corrupt_split(images, "glass_blur", 1, 0, tmp_path), first)
    assert len(calls) == 2 * len(images)
    # And the rebuilt file is good: the next call reads it.
    C.corrupt_split(images, "glass_blur", 1, 0, tmp_path)
    assert len(calls) == 2 * len(images)


def test_the_cache_key_covers_the_images_and_the_options():
    images = _split(2)
    key = C.cache_key(images, "fog", 1, 0)
    changed = images.copy()
    changed[1, 0, 0, 0] ^= 1
    others = {
        C.cache_key(changed, "fog", 1, 0),
        C.cache_key(images, "fog", 2, 0),
        C.cache_key(images, "fog", 1, 1),
        C.cache_key(images, "gaussian_blur", 1, 0),
        # The same bytes in another shape.
        C.cache_key(images.reshape(2, images.shape[2], images.shape[1], 3), "fog", 1, 0),
    }
    assert key not in others and len(others) == 5
    assert C.cache_key(images.copy(), "fog", 1, 0) == key


@needs_package
def test_the_cache_key_of_a_package_corruption_names_its_version(monkeypatch):
    images = _split(1)
    key = C.cache_key(images, "frost", 1, 0)
    monkeypatch.setattr(C, "package_version", lambda: "0.0.0")
    assert C.cache_key(images, "frost", 1, 0) != key


def test_random_choices_are_per_image_seeded_and_cover_the_options():
    names, severities = ("fog", "impulse_noise", "gaussian_blur"), (1, 3, 5)
    choices = C.random_choices(300, names, severities, 7)
    assert choices == C.random_choices(300, names, severities, 7)
    assert choices[:10] == C.random_choices(10, names, severities, 7)  # image i's own draw
    assert choices != C.random_choices(300, names, severities, 8)
    assert {c for c, _ in choices} == set(names) and {s for _, s in choices} == set(severities)
    counts = np.array([sum(c == name for c, _ in choices) for name in names])
    assert counts.min() > 60  # uniform: about 100 each
    with pytest.raises(ConfigError, match="unknown corruption"):
        C.random_choices(3, ("fog", "rain"), (1,), 0)
    with pytest.raises(ConfigError, match="at least one"):
        C.random_choices(3, (), (1,), 0)


def test_a_randomly_corrupted_split_applies_each_images_own_choice(tmp_path, monkeypatch):
    images = _split(6)
    names, severities = ("impulse_noise", "fog"), (1, 5)
    out = C.corrupt_randomly(images, names, severities, 3, tmp_path)
    for i, (name, severity) in enumerate(C.random_choices(6, names, severities, 3)):
        expected = C.corrupt(images[i], name, severity, C.image_seed(4, i))
        np.testing.assert_array_equal(out[i], expected)
    calls = []
    real = C.corrupt
    monkeypatch.setattr(C, "corrupt", lambda *a: calls.append(a) or real(*a))
    np.testing.assert_array_equal(C.corrupt_randomly(images, names, severities, 3, tmp_path), out)
    assert not calls, "the cached random split was corrupted again"
    C.corrupt_randomly(images, names, (1,), 3, tmp_path)
    assert len(calls) == 6 and len(list(tmp_path.glob("random-*.npz"))) == 2
