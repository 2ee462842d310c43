"""Fixtures of the dataset tests: isolated cache directories and an in-memory MNIST.

(tests/data is a package, so that this conftest does not shadow the root one, which other
tests import as ``conftest``.)
"""

from __future__ import annotations

import numpy as np
import pytest

from smto.data import mnist as mnist_mod
from smto.data import multi_mnist as mm


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Keep every test away from the user's real cache and data directories."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SMTO_CACHE", raising=False)


@pytest.fixture(scope="session")
def fake_source() -> mnist_mod.MNIST:
    """Random MNIST-sized arrays (no real data needed)."""
    rng = np.random.default_rng(11)
    return mnist_mod.MNIST(
        train_images=rng.integers(0, 256, (60_000, 28, 28), dtype=np.uint8),
        train_labels=rng.integers(0, 10, 60_000).astype(np.int64),
        test_images=rng.integers(0, 256, (10_000, 28, 28), dtype=np.uint8),
        test_labels=rng.integers(0, 10, 10_000).astype(np.int64),
    )


@pytest.fixture
def counted_source(monkeypatch, fake_source):
    """Serve ``fake_source`` as MNIST and count builds."""
    calls = {"load": 0, "build": 0}
    real_build = mm.build_arrays

    def fake_load(root=None, download=True, **kwargs):
        calls["load"] += 1
        return fake_source

    def counting_build(source, right):
        calls["build"] += 1
        return real_build(source, right)

    monkeypatch.setattr(mnist_mod, "MNIST_MD5", {"fake": "0" * 32})
    monkeypatch.setattr(mnist_mod, "load_mnist", fake_load)
    monkeypatch.setattr(mm, "build_arrays", counting_build)
    return calls
