"""The ImageNet-C corruptions (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness
to Common Corruptions and Perturbations", ICLR 2019), seeded, for images of any size >= 32.

Elich et al. ("Examining common paradigms in multi-task learning", App. A6) evaluate models
on test images corrupted this way: 15 corruptions in four groups (noise, blur, weather,
digital), each at 5 severities, plus the 4 extra ("validation") corruptions of the paper.

Most corruptions come from the ``imagecorruptions`` package (the ImageNet-C code adapted to
arbitrary image sizes; the ``corruptions`` extra). With numpy 2, scipy 1.17 and scikit-image
0.26 four of its functions cannot be used as they are, and are reimplemented here with numpy
and scipy, following the ImageNet-C definitions (``make_imagenet_c.py``) line by line:

* ``gaussian_blur`` and ``glass_blur`` call ``skimage.filters.gaussian(..., multichannel=True)``,
  an argument scikit-image removed (0.19); here a per-channel ``scipy.ndimage.gaussian_filter``
  with scikit-image's defaults (``mode="nearest"``, ``truncate=4``).
* ``fog``'s plasma fractal uses ``np.float_``, removed in numpy 2.0; here ``np.float64``.
* ``impulse_noise`` calls ``skimage.util.random_noise`` without a generator, which since
  scikit-image 0.21 draws from a fresh, unseeded ``default_rng()``: it cannot be seeded; here
  the same salt-and-pepper draws from a seeded generator.

The package also imports ``pkg_resources`` (gone from setuptools 81 on) for the path of its
frost images: when that module is missing, a stand-in providing only ``resource_filename`` is
put in ``sys.modules`` for the import and removed afterwards.

:func:`corrupt` is deterministic for a seed: the corruptions draw from numpy's global
(legacy) generator, as the published code does; it is seeded for the call and its previous
state restored afterwards, so the caller's ``np.random`` state is unchanged (this is not
thread-safe: do not corrupt images from several threads at once).
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import types
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from smto._optional import require
from smto.data import npz_cache
from smto.errors import ConfigError, DataError

NOISE = ("gaussian_noise", "shot_noise", "impulse_noise")
BLUR = ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur")
WEATHER = ("snow", "frost", "fog", "brightness")
DIGITAL = ("contrast", "elastic_transform", "pixelate", "jpeg_compression")
CORRUPTIONS: tuple[str, ...] = NOISE + BLUR + WEATHER + DIGITAL
"""The 15 ImageNet-C corruptions, grouped: noise, blur, weather, digital."""
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
"""The paper's 4 extra (validation) corruptions; :func:`corrupt` takes them too."""
GROUPS: dict[str, tuple[str, ...]] = {
    "noise": NOISE,
    "blur": BLUR,
    "weather": WEATHER,
    "digital": DIGITAL,
    "extra": EXTRA_CORRUPTIONS,
}
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
RANDOM_CORRUPTIONS = frozenset(
    {
        "gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow",
        "frost", "fog", "elastic_transform", "speckle_noise", "spatter",
    }
)  # fmt: skip
"""The corruptions that draw random numbers (the others depend on the image only)."""
FORMAT_VERSION = 1
"""Of the cache files of :func:`corrupt_split` (and of what this module computes)."""
MIN_SIDE = 32
"""The smallest height and width the corruptions take (imagecorruptions' limit)."""


# ------------------------------------------------------------------ reimplemented corruptions


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """``skimage.filters.gaussian(x, sigma, channel_axis=-1)`` of a float (H, W, 3) image."""
    return ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0), mode="nearest", truncate=4.0)


def _gaussian_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [1, 2, 3, 4, 6][severity - 1]
    return np.clip(_gaussian(image / 255.0, c), 0, 1) * 255


def _glass_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    # sigma, max_delta, iterations
    c = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][severity - 1]
    x = np.uint8(_gaussian(image / 255.0, c[0]) * 255)
    height, width = x.shape[:2]
    # Locally shuffle pixels, with the published code's draws (np.random.randint, bottom-right
    # to top-left) and its tuple "swap" of two numpy views, which copies the neighbour's pixel
    # onto (h, w) and leaves the neighbour as it was: kept as published.
    for _ in range(c[2]):
        for h in range(height - c[1], c[1], -1):
            for w in range(width - c[1], c[1], -1):
                dx, dy = np.random.randint(-c[1], c[1], size=(2,))
                h_prime, w_prime = h + dy, w + dx
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return np.clip(_gaussian(x / 255.0, c[0]), 0, 1) * 255


def _plasma_fractal(mapsize: int, wibbledecay: float) -> np.ndarray:
    """A (mapsize, mapsize) diamond-square heightmap in [0, 1] (mapsize a power of two)."""
    assert mapsize & (mapsize - 1) == 0
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array: np.ndarray) -> np.ndarray:
        return array / 4 + wibble * np.random.uniform(-wibble, wibble, array.shape)

    def fillsquares() -> None:
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[stepsize // 2 : mapsize : stepsize, stepsize // 2 : mapsize : stepsize] = (
            wibbledmean(squareaccum)
        )

    def filldiamonds() -> None:
        drgrid = maparray[stepsize // 2 : mapsize : stepsize, stepsize // 2 : mapsize : stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = drgrid + np.roll(drgrid, 1, axis=0) + ulgrid + np.roll(ulgrid, -1, axis=1)
        maparray[0:mapsize:stepsize, stepsize // 2 : mapsize : stepsize] = wibbledmean(ltsum)
        ttsum = drgrid + np.roll(drgrid, 1, axis=1) + ulgrid + np.roll(ulgrid, -1, axis=0)
        maparray[stepsize // 2 : mapsize : stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)

    while stepsize >= 2:
        fillsquares()
        filldiamonds()
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def _fog(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)][severity - 1]
    height, width = image.shape[:2]
    mapsize = 1 << (max(image.shape) - 1).bit_length()  # the next power of two
    x = image / 255.0
    max_val = x.max()
    x += c[0] * _plasma_fractal(mapsize, c[1])[:height, :width][..., np.newaxis]
    return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255


def _impulse_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    # skimage.util.random_noise(x, mode="s&p", amount=c, rng=rng): each value flipped with
    # probability c, to 1 (salt) or 0 (pepper) with probability 1/2 each.
    c = [0.03, 0.06, 0.09, 0.17, 0.27][severity - 1]
    x = image / 255.0
    flipped = rng.random(x.shape) <= c
    salted = rng.random(x.shape) <= 0.5
    x[flipped & salted] = 1.0
    x[flipped & ~salted] = 0.0
    return np.clip(x, 0, 1) * 255


_OWN: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "gaussian_blur": _gaussian_blur,
    "glass_blur": _glass_blur,
    "fog": _fog,
    "impulse_noise": _impulse_noise,
}
"""The corruptions computed here rather than by imagecorruptions (see the module's doc)."""


# ------------------------------------------------------------------ the package


_PACKAGE: types.ModuleType | None = None


def _resource_filename(package: str, resource: str) -> str:
    """pkg_resources.resource_filename for a package's data file (what imagecorruptions uses)."""
    return os.path.join(os.path.dirname(sys.modules[package].__file__ or ""), resource)


def corruptions_module() -> types.ModuleType:
    """``imagecorruptions.corruptions``, imported (with a stand-in for ``pkg_resources`` when
    setuptools does not provide it); MissingExtraError without the ``corruptions`` extra."""
    global _PACKAGE
    if _PACKAGE is None:
        stand_in = "pkg_resources" not in sys.modules and not _importable("pkg_resources")
        if stand_in:
            stub = types.ModuleType("pkg_resources")
            stub.resource_filename = _resource_filename  # type: ignore[attr-defined]
            sys.modules["pkg_resources"] = stub
        try:
            with warnings.catch_warnings():
                # scipy.ndimage.interpolation (deprecated namespace), pkg_resources.
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", UserWarning)
                _PACKAGE = require(
                    "imagecorruptions.corruptions", "corruptions", "smto.data.corruptions"
                )
        finally:
            if stand_in:
                sys.modules.pop("pkg_resources", None)
    return _PACKAGE


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def package_version() -> str:
    """The installed imagecorruptions version; MissingExtraError without it."""
    from importlib import metadata

    corruptions_module()
    return metadata.version("imagecorruptions")


# ------------------------------------------------------------------ corrupt


def _check(name: str, severity: int) -> None:
    if name not in CORRUPTIONS and name not in EXTRA_CORRUPTIONS:
        raise ConfigError(
            f"unknown corruption {name!r}; valid: {', '.join(CORRUPTIONS + EXTRA_CORRUPTIONS)}"
        )
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ConfigError(
            f"invalid corruption severity {severity!r}; valid: {', '.join(map(str, SEVERITIES))}"
        )


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"invalid corruption seed {seed!r}: a non-negative integer")


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ConfigError(f"the image to corrupt must be a uint8 numpy array, not {image!r:.60}")
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < MIN_SIDE:
        raise ConfigError(
            f"the image to corrupt must be (H, W, 3) with H, W >= {MIN_SIDE}, not {image.shape}"
        )


def _apply(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """The corruption, with numpy's global generator seeded from ``seed`` (restored after)."""
    legacy, generator = np.random.SeedSequence(int(seed)).spawn(2)
    rng = np.random.default_rng(generator)
    if name in _OWN:
        function: Callable[[], Any] = functools.partial(_OWN[name], image, severity, rng)
    else:
        published = getattr(corruptions_module(), name)
        pil = require("PIL.Image", "corruptions", "smto.data.corruptions").fromarray(image)
        function = functools.partial(published, pil, severity)
    state = np.random.get_state()
    try:
        np.random.set_state(np.random.RandomState(np.random.MT19937(legacy)).get_state())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            out = function()
    finally:
        np.random.set_state(state)
    # As imagecorruptions.corrupt (and ImageNet-C's np.uint8 of the result): truncation.
    return np.uint8(np.asarray(out))


def corrupt(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """The (H, W, 3) uint8 ``image`` with the ImageNet-C corruption ``name`` at ``severity``
    (1 to 5), an (H, W, 3) uint8 image (Hendrycks & Dietterich 2019); the same for the same
    ``seed`` (a non-negative integer). Unknown names and severities: ConfigError."""
    _check(name, severity)
    _check_seed(seed)
    _check_image(image)
    out = _apply(image, name, severity, seed)
    if out.shape != image.shape:  # not expected for images of at least MIN_SIDE pixels
        raise DataError(f"{name} returned shape {out.shape} for an image of {image.shape}")
    return out


def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index`` of a split corrupted with ``seed`` (by :func:`corrupt_split`)."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


# ------------------------------------------------------------------ splits and the cache


def _version(name: str) -> str:
    return "smto" if name in _OWN else f"imagecorruptions=={package_version()}"


def _images_digest(images: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(f"{images.dtype.str}{images.shape}\0".encode())
    digest.update(np.ascontiguousarray(images))
    return digest.hexdigest()


def cache_key(images: np.ndarray, name: str, severity: int, seed: int) -> str:
    """What a corrupted split was built from: a SHA-256 of the clean images (dtype, shape and
    bytes), the corruption, severity, seed, what computes it and the format version."""
    text = f"{_images_digest(images)}|{name}|{severity}|{seed}|{_version(name)}|{FORMAT_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()


def _check_split(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise ConfigError(f"the split to corrupt must be an (N, H, W, 3) array, not {images!r:.60}")


def _cached(cache: Path | None, stem: str, key: str, build: Callable[[], np.ndarray]) -> np.ndarray:
    """``build()``, or its checked ``.npz`` in ``cache`` (rebuilt when stale or damaged)."""
    if cache is None:
        return build()
    path = Path(cache) / f"{stem}-{key[:16]}.npz"
    if path.is_file():
        try:
            return npz_cache.read_verified(path, key, ("image",))["image"]
        except DataError:
            path.unlink(missing_ok=True)
    out = build()
    npz_cache.write_atomic(path, key, {"image": out})
    return out


def corrupt_split(
    images: np.ndarray, name: str, severity: int, seed: int, cache: Path | None
) -> np.ndarray:
    """The (N, H, W, 3) uint8 ``images``, each corrupted by :func:`corrupt` with the seed
    ``image_seed(seed, i)`` (so image i does not depend on the others), cached in the directory
    ``cache`` (a checked ``.npz``, rebuilt when missing, stale or damaged) when it is given."""
    _check(name, severity)
    _check_seed(seed)
    _check_split(images)

    def build() -> np.ndarray:
        out = np.empty_like(images)
        for i in range(len(images)):
            out[i] = corrupt(images[i], name, severity, image_seed(seed, i))
        return out

    return _cached(cache, f"{name}-{severity}", cache_key(images, name, severity, seed), build)


def random_choices(
    count: int, names: Sequence[str], severities: Sequence[int], seed: int
) -> list[tuple[str, int]]:
    """Image i's (corruption, severity) for :func:`corrupt_randomly`: each drawn uniformly
    from ``names`` and ``severities`` by a generator seeded with ``image_seed(seed, i)``."""
    if not names or not severities:
        raise ConfigError("random corruption needs at least one corruption and one severity")
    for name in names:
        for severity in severities:
            _check(name, severity)
    _check_seed(seed)
    choices = []
    for i in range(count):
        rng = np.random.default_rng(image_seed(seed, i))
        choices.append(
            (names[rng.integers(len(names))], int(severities[rng.integers(len(severities))]))
        )
    return choices


def corrupt_randomly(
    images: np.ndarray,
    names: Sequence[str],
    severities: Sequence[int],
    seed: int,
    cache: Path | None,
) -> np.ndarray:
    """The (N, H, W, 3) uint8 ``images``, image i corrupted by a corruption and severity of its
    own (:func:`random_choices`; Elich et al.'s App. A6 fine-tuning data), with the seed
    ``image_seed(seed + 1, i)``; cached like :func:`corrupt_split`."""
    _check_split(images)
    choices = random_choices(len(images), names, severities, seed)
    versions = ",".join(_version(name) for name in names)
    text = (
        f"{_images_digest(images)}|random|{','.join(names)}|{','.join(map(str, severities))}|"
        f"{seed}|{versions}|{FORMAT_VERSION}"
    )
    key = hashlib.sha256(text.encode()).hexdigest()

    def build() -> np.ndarray:
        out = np.empty_like(images)
        for i, (name, severity) in enumerate(choices):
            out[i] = corrupt(images[i], name, severity, image_seed(seed + 1, i))
        return out

    return _cached(cache, "random", key, build)


__all__ = [
    "CORRUPTIONS",
    "EXTRA_CORRUPTIONS",
    "GROUPS",
    "RANDOM_CORRUPTIONS",
    "SEVERITIES",
    "cache_key",
    "corrupt",
    "corrupt_randomly",
    "corrupt_split",
    "corruptions_module",
    "image_seed",
    "package_version",
    "random_choices",
]
